//! The NAT lab of `../shared/tools/natlab.sh` (two homes behind NATs, a public host, a
//! router, in network namespaces), for the NAT tests and the NAT bench: building and
//! tearing it down, running commands in it, moving bytes across it, reading what a
//! node's metrics endpoint says there.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::{swarm_node, Guard};

/// One lab, its namespaces named after this process (so labs of parallel tests do not
/// meet); torn down on drop, also when the test fails (natlab's `down` kills what runs
/// in its namespaces).
pub struct Lab {
    pub prefix: String,
}

pub fn natlab() -> Command {
    Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/tools/natlab.sh"))
}

/// How a lab is built: each NAT's mode, what the NATs do with unsolicited input, and
/// the relay host's link rate (natlab's environment).
pub struct Setup {
    pub name: &'static str,
    pub mode_a: &'static str,
    pub mode_b: &'static str,
    pub input: &'static str,
    pub relay_rate: Option<&'static str>,
}

impl Lab {
    pub fn up(s: &Setup) -> Lab {
        let lab = Lab { prefix: format!("n{}{}", std::process::id(), s.name) };
        let mut c = natlab();
        c.arg("up")
            .env("NATLAB_PREFIX", &lab.prefix)
            .env("NATLAB_MODE_A", s.mode_a)
            .env("NATLAB_MODE_B", s.mode_b)
            .env("NATLAB_INPUT", s.input);
        if let Some(rate) = s.relay_rate {
            c.env("NATLAB_RELAY_RATE", rate);
        }
        let out = c.output().expect("natlab.sh runs");
        assert!(out.status.success(), "natlab up: {}", String::from_utf8_lossy(&out.stderr));
        lab
    }

    /// `swarm-node` in namespace `ns` of the lab (relay, home-a, home-b).
    pub fn node(&self, ns: &str) -> Command {
        let mut c = self.exec(ns);
        c.arg(swarm_node().get_program());
        super::own_runtime_dir(&mut c);
        c
    }

    /// A command run in namespace `ns` of the lab.
    pub fn exec(&self, ns: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &format!("{}-{ns}", self.prefix)]);
        c
    }

    /// Sends `bytes` over TCP from namespace `from` to port 5201 at `addr` in namespace
    /// `to`; the bytes the receiver counted, once the sender's stream ended.
    pub fn transfer(&self, from: &str, to: &str, addr: &str, bytes: usize) -> usize {
        let serve = "import socket\n\
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
s.bind(('::', 5201)); s.listen(1); s.settimeout(30); c, _ = s.accept(); c.settimeout(30); n = 0\n\
while True:\n    d = c.recv(1 << 16)\n    if not d: break\n    n += len(d)\n\
print(n)";
        let mut server =
            Guard(self.exec(to).args(["python3", "-c", serve]).stdout(Stdio::piped()).spawn().unwrap());
        std::thread::sleep(Duration::from_millis(500));
        let send = format!(
            "import socket\nc = socket.create_connection(('{addr}', 5201), timeout=30)\n\
c.sendall(b'x' * {bytes}); c.shutdown(socket.SHUT_WR); c.recv(1)"
        );
        let client = self.exec(from).args(["python3", "-c", &send]).output().unwrap();
        assert!(client.status.success(), "{}", String::from_utf8_lossy(&client.stderr));
        let mut out = String::new();
        std::io::Read::read_to_string(server.0.stdout.as_mut().unwrap(), &mut out).unwrap();
        out.trim().parse().unwrap()
    }

    /// TCP goodput from `from` to `addr` (in `to`) over 3 s, bits per second (iperf3).
    pub fn goodput(&self, from: &str, to: &str, addr: &str) -> f64 {
        let server = Guard(
            self.exec(to).args(["iperf3", "-s", "-1", "-p", "5202"]).stdout(Stdio::null()).spawn().unwrap(),
        );
        std::thread::sleep(Duration::from_millis(500));
        let out = self
            .exec(from)
            .args(["iperf3", "-c", addr, "-p", "5202", "-t", "3", "-J", "--connect-timeout", "5000"])
            .output()
            .unwrap();
        drop(server);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        report["end"]["sum_received"]["bits_per_second"].as_f64().unwrap()
    }

    /// Bytes through the relay host's interface so far, both ways.
    pub fn relay_wire_bytes(&self) -> u64 {
        ["rx_bytes", "tx_bytes"]
            .iter()
            .map(|f| {
                let out = self
                    .exec("relay")
                    .args(["cat", &format!("/sys/class/net/wan/statistics/{f}")])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).trim().parse::<u64>().unwrap()
            })
            .sum()
    }

    /// The body of `http://127.0.0.1:9100{path}` in namespace `ns` (a node's metrics).
    pub fn metrics(&self, ns: &str, path: &str) -> String {
        let url = format!("http://127.0.0.1:9100{path}");
        let script = format!("import urllib.request; print(urllib.request.urlopen('{url}').read().decode())");
        let out = self.exec(ns).args(["python3", "-c", &script]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = natlab().arg("down").env("NATLAB_PREFIX", &self.prefix).output();
    }
}
