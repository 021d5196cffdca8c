//! Where the two processes run: loopback, or two network namespaces joined by a veth
//! pair (made here, deleted on drop). Children are ended on drop too.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub enum Net {
    Loopback,
    Veth { a: String, b: String },
}

#[derive(Clone, Copy)]
pub enum Side {
    Sender,
    Receiver,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Net {
    pub fn setup(name: &str) -> Result<Net, String> {
        match name {
            "loopback" => Ok(Net::Loopback),
            "veth" => {
                let uid = std::fs::read_to_string("/proc/self/status")
                    .ok()
                    .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(str::to_owned))
                    .unwrap_or_default();
                if uid.split_whitespace().nth(1).is_none_or(|u| u != "0") {
                    return Err("network namespaces need root".to_owned());
                }
                let id = std::process::id();
                let (a, b) = (format!("swb-a-{id}"), format!("swb-b-{id}"));
                // From here on, drop deletes whatever was made.
                let net = Net::Veth { a: a.clone(), b: b.clone() };
                let (va, vb) = (format!("swba{id}"), format!("swbb{id}"));
                ip(&["netns", "add", &a])?;
                ip(&["netns", "add", &b])?;
                ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb])?;
                ip(&["link", "set", &va, "netns", &a])?;
                ip(&["link", "set", &vb, "netns", &b])?;
                ip(&["-n", &a, "addr", "add", "10.201.0.1/24", "dev", &va])?;
                ip(&["-n", &b, "addr", "add", "10.201.0.2/24", "dev", &vb])?;
                for (ns, dev) in [(&a, &va), (&b, &vb)] {
                    ip(&["-n", ns, "link", "set", dev, "up"])?;
                    ip(&["-n", ns, "link", "set", "lo", "up"])?;
                }
                Ok(net)
            }
            other => Err(format!("unknown net {other:?} (loopback or veth)")),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Net::Loopback => "loopback",
            Net::Veth { .. } => "veth",
        }
    }

    pub fn sender_ip(&self) -> &'static str {
        match self {
            Net::Loopback => "127.0.0.1",
            Net::Veth { .. } => "10.201.0.1",
        }
    }

    pub fn receiver_ip(&self) -> &'static str {
        match self {
            Net::Loopback => "127.0.0.1",
            Net::Veth { .. } => "10.201.0.2",
        }
    }

    /// This program, pinned to `cpu`, in the side's namespace.
    pub fn command(&self, cpu: u32, side: Side) -> Command {
        let exe = std::env::current_exe().expect("own path");
        let pinned = ["taskset".to_owned(), "-c".to_owned(), cpu.to_string(), exe.display().to_string()];
        let argv: Vec<String> = match self {
            Net::Loopback => pinned.to_vec(),
            Net::Veth { a, b } => {
                let ns = match side {
                    Side::Sender => a,
                    Side::Receiver => b,
                };
                ["ip".to_owned(), "netns".to_owned(), "exec".to_owned(), ns.clone()]
                    .into_iter()
                    .chain(pinned)
                    .collect()
            }
        };
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        c
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Net::Veth { a, b } = self {
            let _ = ip(&["netns", "del", a]);
            let _ = ip(&["netns", "del", b]);
        }
    }
}

/// Child processes, killed (by their id) if still running on drop.
#[derive(Default)]
pub struct Procs(Vec<Child>);

impl Procs {
    pub fn spawn(&mut self, mut c: Command) -> Result<&mut Child, String> {
        let child = c.spawn().map_err(|e| format!("cannot start {c:?}: {e}"))?;
        self.0.push(child);
        Ok(self.0.last_mut().expect("just pushed"))
    }

    pub fn wait_all(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for c in &mut self.0 {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}
