//! NAT traversal in the NAT lab of `../shared/tools/natlab.sh` (two homes behind NATs, a
//! public host): what each node learns of its NAT from reflectors, the control plane
//! across the NATs (relay reservations, relayed connections, DCUtR), and tunnels
//! between easy NATs by hole punching. Needs root,
//! iproute2, nftables and python3; `.ci/run` installs them and runs these with
//! `--include-ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use std::time::Duration;

use common::{spawn_in, swarm_node, wait_line, wait_line_within, Guard};

/// One lab, its namespaces named after this process (so labs of parallel tests do not
/// meet); torn down on drop, also when the test fails (natlab's `down` kills what runs
/// in its namespaces).
struct Lab {
    prefix: String,
}

fn natlab() -> Command {
    Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/tools/natlab.sh"))
}

impl Lab {
    fn up(name: &str, mode_a: &str, mode_b: &str) -> Lab {
        let lab = Lab { prefix: format!("n{}{name}", std::process::id()) };
        let out = natlab()
            .arg("up")
            .env("NATLAB_PREFIX", &lab.prefix)
            .env("NATLAB_MODE_A", mode_a)
            .env("NATLAB_MODE_B", mode_b)
            .output()
            .expect("natlab.sh runs");
        assert!(out.status.success(), "natlab up: {}", String::from_utf8_lossy(&out.stderr));
        lab
    }

    /// `swarm-node` in namespace `ns` of the lab (relay, home-a, home-b).
    fn node(&self, ns: &str) -> Command {
        let mut c = self.exec(ns);
        c.arg(swarm_node().get_program());
        c
    }

    /// A command run in namespace `ns` of the lab.
    fn exec(&self, ns: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &format!("{}-{ns}", self.prefix)]);
        c
    }

    /// Sends `bytes` over TCP from namespace `from` to port 5201 at `addr` in namespace
    /// `to`; the bytes the receiver counted, once the sender's stream ended.
    fn transfer(&self, from: &str, to: &str, addr: &str, bytes: usize) -> usize {
        let serve = "import socket\n\
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
s.bind(('::', 5201)); s.listen(1); s.settimeout(30); c, _ = s.accept(); c.settimeout(30); n = 0\n\
while True:\n    d = c.recv(1 << 16)\n    if not d: break\n    n += len(d)\n\
print(n)";
        let server = self
            .exec(to)
            .args(["python3", "-c", serve])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let server = Guard(server);
        std::thread::sleep(Duration::from_millis(500));
        let send = format!(
            "import socket\nc = socket.create_connection(('{addr}', 5201), timeout=30)\n\
c.sendall(b'x' * {bytes}); c.shutdown(socket.SHUT_WR); c.recv(1)"
        );
        let client = self.exec(from).args(["python3", "-c", &send]).output().unwrap();
        assert!(client.status.success(), "{}", String::from_utf8_lossy(&client.stderr));
        let mut server = server;
        let mut out = String::new();
        std::io::Read::read_to_string(server.0.stdout.as_mut().unwrap(), &mut out).unwrap();
        out.trim().parse().unwrap()
    }

    /// The body of `http://127.0.0.1:9100{path}` in namespace `ns` (a node's metrics).
    fn metrics(&self, ns: &str, path: &str) -> String {
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

const COMMON: [&str; 8] = ["--gpus", "none", "--refresh", "500ms", "--heartbeat", "1s", "--ttl", "5s"];

/// Starts the public node in `relay` and one node in each home, bootstrapped from it,
/// each with `extra` arguments; returns them (relay first) and the relay's peer id.
fn start_with(
    lab: &Lab,
    dir: &std::path::Path,
    extra: &[&str],
) -> (Vec<(Guard, std::sync::mpsc::Receiver<String>)>, String) {
    let key = |n: &str| dir.join(format!("{n}.key")).to_str().unwrap().to_owned();
    let relay_key = key("relay");
    let mut args = vec!["run", "--identity", &relay_key, "--listen", "/ip4/0.0.0.0/tcp/4001"];
    args.extend(COMMON);
    args.extend(extra);
    let (relay, rx) = spawn_in(lab.node("relay"), &args);
    let id = wait_line(&rx, |l| l.starts_with("peer id ")).trim_start_matches("peer id ").to_owned();
    let bootstrap = format!("/ip4/203.0.113.10/tcp/4001/p2p/{id}");
    let mut nodes = vec![(relay, rx)];
    for home in ["home-a", "home-b"] {
        let k = key(home);
        let mut args =
            vec!["run", "--identity", &k, "--listen", "/ip4/0.0.0.0/tcp/4001", "--bootstrap", &bootstrap];
        args.extend(COMMON);
        args.extend(extra);
        nodes.push(spawn_in(lab.node(home), &args));
    }
    (nodes, id)
}

fn start(lab: &Lab, dir: &std::path::Path) -> Vec<(Guard, std::sync::mpsc::Receiver<String>)> {
    start_with(lab, dir, &[]).0
}

/// Behind Linux's default masquerade (endpoint-independent mapping) both home nodes
/// learn an easy NAT and their public mapping at their NAT's address; the public node
/// sees both in its peer table, signed in their tunnel records.
#[test]
#[ignore = "needs root, iproute2, nftables and python3; `.ci/run` runs it as root"]
fn reflectors_tell_an_easy_nat() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::up("e", "easy", "easy");
    let nodes = start(&lab, dir.path());
    let a = wait_line(&nodes[1].1, |l| l.starts_with("tunnel socket: "));
    assert!(a.starts_with("tunnel socket: easy NAT, reached at 198.51.100.2:"), "{a}");
    let b = wait_line(&nodes[2].1, |l| l.starts_with("tunnel socket: "));
    assert!(b.starts_with("tunnel socket: easy NAT, reached at 192.0.2.2:"), "{b}");
    // The public node's table shows a home node's record: its NAT kind and mapping.
    let row = wait_line(&nodes[0].1, |l| l.contains("198.51.100.2:") && l.contains(" easy "));
    assert!(row.contains("gossip") || row.contains("conn"), "{row}");
    // The home nodes reserve on the public one, reach each other through it, and DCUtR
    // upgrades that connection: each holds the other's record, connected.
    wait_line(&nodes[1].1, |l| l.contains("10.0.2.2:") && l.contains(" conn "));
    wait_line(&nodes[2].1, |l| l.contains("10.0.1.2:") && l.contains(" conn "));
    // Over that connection they agree on a hole punch: the WireGuard tunnel between the
    // homes comes up directly, each at the other NAT's public address.
    // (Under load a punch may fail once and be retried, hence the longer wait.)
    let punched = Duration::from_secs(60);
    wait_line_within(&nodes[1].1, punched, |l| {
        l.contains(" up ") && l.contains("192.0.2.2:") && l.contains(" easy ")
    });
    wait_line_within(&nodes[2].1, punched, |l| {
        l.contains(" up ") && l.contains("198.51.100.2:") && l.contains(" easy ")
    });
}

/// The value of the OpenMetrics sample `name` (with its labels) in `text`; 0 if absent.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(name)?;
            rest.strip_prefix("{} ").or_else(|| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The peer id's short form in tables (its last 8 characters).
fn short(id: &str) -> String {
    format!("…{}", &id[id.len() - 8..])
}

/// Behind a symmetric NAT (a port per destination) the reflectors disagree: a hard
/// NAT, and no mapping is announced; the other home stays easy. No hole can be punched,
/// so the homes' tunnel is relayed through the public node: it comes up, the VPN carries
/// ping and 10 MB of TCP over it, the relay counts at least twice the bytes moved (in
/// and out), and the link is measured on the relayed path.
#[test]
#[ignore = "needs root, iproute2, nftables, python3 and iperf3; `.ci/run` runs it as root"]
fn a_symmetric_nat_is_relayed() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::up("s", "random", "easy");
    let (nodes, relay) = start_with(&lab, dir.path(), &["--vpn", "--metrics", "127.0.0.1:9100"]);
    let overlay_b = wait_line(&nodes[2].1, |l| l.starts_with("overlay "));
    let overlay_b = overlay_b.split_whitespace().nth(1).unwrap().to_owned();
    let a = wait_line(&nodes[1].1, |l| l.starts_with("tunnel socket: "));
    assert_eq!(a, "tunnel socket: hard NAT");
    let b = wait_line(&nodes[2].1, |l| l.starts_with("tunnel socket: "));
    assert!(b.starts_with("tunnel socket: easy NAT, reached at 192.0.2.2:"), "{b}");
    // No direct path for libp2p either: the homes stay connected through the relay
    // (each sees the other's record, connected, with its NAT kind).
    wait_line(&nodes[1].1, |l| l.contains(" easy ") && l.contains(" conn "));
    wait_line(&nodes[2].1, |l| l.contains(" hard ") && l.contains(" conn "));
    // The tunnel comes up relayed via the public node, on both sides.
    let via = format!("relayed {}", short(&relay));
    let relayed = |l: &str| l.contains(" up ") && l.contains(&via) && !l.contains(" self ");
    wait_line_within(&nodes[1].1, Duration::from_secs(45), relayed);
    wait_line_within(&nodes[2].1, Duration::from_secs(45), relayed);
    // The VPN carries ping and TCP over it.
    let ping = lab.exec("home-a").args(["ping", "-6", "-c", "5", "-W", "3", &overlay_b]).output().unwrap();
    assert!(ping.status.success(), "{}", String::from_utf8_lossy(&ping.stdout));
    let before = lab.metrics("relay", "/metrics");
    let moved = 10_000_000.0;
    let received = lab.transfer("home-a", "home-b", &overlay_b, 10_000_000);
    assert_eq!(received, 10_000_000);
    let after = lab.metrics("relay", "/metrics");
    let grew = |name: &str| sample(&after, name) - sample(&before, name);
    let (grew_in, grew_out) = (
        grew(r#"swarm_relay_bytes_total{direction="in"}"#),
        grew(r#"swarm_relay_bytes_total{direction="out"}"#),
    );
    println!("relay bytes in {grew_in}, out {grew_out} for {moved} bytes moved");
    assert!(grew_in + grew_out >= 2.0 * moved, "in {grew_in} out {grew_out}");
    assert_eq!(sample(&after, "swarm_relay_paths"), 1.0, "one path relayed");
    // Home A measures the link on the relayed path.
    let links = lab.metrics("home-a", "/links");
    let links: serde_json::Value = serde_json::from_str(&links).unwrap();
    let link = links.as_array().unwrap().iter().find(|l| l["path"] == "relayed").expect("a relayed link");
    assert_eq!(link["via"], relay.as_str());
    assert!(link["rtt_samples"].as_u64().unwrap() > 0, "{link}");
}
