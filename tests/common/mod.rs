//! Helpers of the integration tests that run the `swarm-node` program: finding it,
//! running it (a child is killed on drop), reading its output, and hosts in network
//! namespaces (deleted on drop).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod natlab;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub fn swarm_node() -> Command {
    let mut c = Command::new(swarm_node_path());
    own_runtime_dir(&mut c);
    c
}

/// The `swarm-node` binary cargo built for these tests.
pub fn swarm_node_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_swarm-node"))
}

/// Gives `command` (a node, or a client of it) a runtime directory of its own, so
/// nodes started at once do not share the default control socket. Returns it.
pub fn own_runtime_dir(command: &mut Command) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("run-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The state directory (identity, saved peers) too, when no --identity is given.
    command
        .env("XDG_RUNTIME_DIR", &dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env_remove("RUNTIME_DIRECTORY")
        .env_remove("STATE_DIRECTORY")
        .env_remove("NOTIFY_SOCKET");
    dir
}

pub fn run(args: &[&str]) -> Output {
    swarm_node().args(args).output().unwrap()
}

/// Kills the child on drop, so a failing test leaves no process behind.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn spawn_node(args: &[&str]) -> (Guard, mpsc::Receiver<String>) {
    spawn_in(swarm_node(), args)
}

pub fn spawn_in(mut command: Command, args: &[&str]) -> (Guard, mpsc::Receiver<String>) {
    // `SWARM_TEST_STDERR=DIR` keeps each child's log (stderr) in DIR, for debugging.
    let stderr = match std::env::var_os("SWARM_TEST_STDERR") {
        Some(dir) => {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = PathBuf::from(dir).join(format!("child-{}-{n}.log", std::process::id()));
            Stdio::from(std::fs::File::create(path).unwrap())
        }
        None => Stdio::null(),
    };
    let mut child = command.args(args).stdout(Stdio::piped()).stderr(stderr).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::sync_channel(1024);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (Guard(child), rx)
}

/// The first line that satisfies `pred`, within 30 s; panics (with the last lines seen)
/// otherwise.
pub fn wait_line(rx: &mpsc::Receiver<String>, pred: impl FnMut(&str) -> bool) -> String {
    wait_line_within(rx, Duration::from_secs(30), pred)
}

/// The first line that satisfies `pred`, within `within`.
pub fn wait_line_within(
    rx: &mpsc::Receiver<String>,
    within: Duration,
    mut pred: impl FnMut(&str) -> bool,
) -> String {
    let deadline = std::time::Instant::now() + within;
    let mut seen = std::collections::VecDeque::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if pred(&line) => return line,
            Ok(line) => {
                seen.push_back(line);
                if seen.len() > 20 {
                    seen.pop_front();
                }
            }
            Err(e) => panic!("expected output did not come ({e}); last lines: {seen:#?}"),
        }
    }
}

/// Two network namespaces joined by a veth pair (10.203.0.1 and 10.203.0.2), deleted on
/// drop, also when the test fails.
pub struct Veth {
    pub a: String,
    pub b: String,
}

pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("iproute2 is installed");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Veth {
    pub fn new() -> Veth {
        let id = std::process::id();
        let v = Veth { a: format!("swc-a-{id}"), b: format!("swc-b-{id}") };
        let (va, vb) = (format!("swca{id}"), format!("swcb{id}"));
        ip(&["netns", "add", &v.a]);
        ip(&["netns", "add", &v.b]);
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb]);
        ip(&["link", "set", &va, "netns", &v.a]);
        ip(&["link", "set", &vb, "netns", &v.b]);
        ip(&["-n", &v.a, "addr", "add", "10.203.0.1/24", "dev", &va]);
        ip(&["-n", &v.b, "addr", "add", "10.203.0.2/24", "dev", &vb]);
        for (ns, dev) in [(&v.a, &va), (&v.b, &vb)] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        v
    }

    /// `swarm-node` inside namespace `ns`.
    pub fn node(&self, ns: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(swarm_node().get_program());
        own_runtime_dir(&mut c);
        c
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Hosts in network namespaces on one Ethernet segment (a bridge in a namespace of its
/// own): host `i` is 10.204.0.(i+1)/24 (or the addresses given). Every namespace is
/// deleted on drop, also when the test fails.
pub struct Lan {
    pub hub: String,
    pub hosts: Vec<String>,
    /// Each host's interface on the segment.
    pub devs: Vec<String>,
}

impl Lan {
    pub fn new(n: usize) -> Lan {
        let addrs: Vec<String> = (0..n).map(|i| format!("10.204.0.{}/24", i + 1)).collect();
        Lan::with_addrs(&addrs.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// One host per address (with its prefix length, e.g. `11.204.0.1/16`).
    pub fn with_addrs(addrs: &[&str]) -> Lan {
        let n = addrs.len();
        static LANS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let lans = LANS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("{}{lans}", std::process::id());
        let lan = Lan {
            hub: format!("swv-hub-{id}"),
            hosts: (0..n).map(|i| format!("swv-{i}-{id}")).collect(),
            devs: (0..n).map(|i| format!("svn{i}-{id}")).collect(),
        };
        ip(&["netns", "add", &lan.hub]);
        ip(&["-n", &lan.hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &lan.hub, "link", "set", "br0", "up"]);
        for (i, ns) in lan.hosts.iter().enumerate() {
            let (h, v) = (format!("svh{i}-{id}"), format!("svn{i}-{id}"));
            ip(&["netns", "add", ns]);
            ip(&["link", "add", &h, "type", "veth", "peer", "name", &v]);
            ip(&["link", "set", &h, "netns", &lan.hub]);
            ip(&["-n", &lan.hub, "link", "set", &h, "master", "br0", "up"]);
            ip(&["link", "set", &v, "netns", ns]);
            ip(&["-n", ns, "addr", "add", addrs[i], "dev", &v]);
            ip(&["-n", ns, "link", "set", &v, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        lan
    }

    /// `program` run inside host `i`'s namespace.
    pub fn exec(&self, i: usize, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.hosts[i], program]);
        c
    }

    pub fn node(&self, i: usize) -> Command {
        let mut c = self.exec(i, swarm_node().get_program().to_str().unwrap());
        own_runtime_dir(&mut c);
        c
    }
}

impl Drop for Lan {
    /// Ends every process still in the namespaces (Ray's workers, a daemon that escaped
    /// its group: all ours, as only the test starts processes there), then deletes them.
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain([&self.hub]) {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
