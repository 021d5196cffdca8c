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
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &format!("{}-{ns}", self.prefix)]).arg(swarm_node().get_program());
        c
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = natlab().arg("down").env("NATLAB_PREFIX", &self.prefix).output();
    }
}

const COMMON: [&str; 8] = ["--gpus", "none", "--refresh", "500ms", "--heartbeat", "1s", "--ttl", "5s"];

/// Starts the public node in `relay` and one node in each home, bootstrapped from it;
/// returns them (relay first) once each has printed its peer id.
fn start(lab: &Lab, dir: &std::path::Path) -> Vec<(Guard, std::sync::mpsc::Receiver<String>)> {
    let key = |n: &str| dir.join(format!("{n}.key")).to_str().unwrap().to_owned();
    let relay_key = key("relay");
    let mut args = vec!["run", "--identity", &relay_key, "--listen", "/ip4/0.0.0.0/tcp/4001"];
    args.extend(COMMON);
    let (relay, rx) = spawn_in(lab.node("relay"), &args);
    let id = wait_line(&rx, |l| l.starts_with("peer id ")).trim_start_matches("peer id ").to_owned();
    let bootstrap = format!("/ip4/203.0.113.10/tcp/4001/p2p/{id}");
    let mut nodes = vec![(relay, rx)];
    for home in ["home-a", "home-b"] {
        let k = key(home);
        let mut args =
            vec!["run", "--identity", &k, "--listen", "/ip4/0.0.0.0/tcp/4001", "--bootstrap", &bootstrap];
        args.extend(COMMON);
        nodes.push(spawn_in(lab.node(home), &args));
    }
    nodes
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

/// Behind a symmetric NAT (a port per destination) the reflectors disagree: a hard
/// NAT, and no mapping is announced; the other home stays easy.
#[test]
#[ignore = "needs root, iproute2, nftables and python3; `.ci/run` runs it as root"]
fn reflectors_tell_a_symmetric_nat() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::up("s", "random", "easy");
    let nodes = start(&lab, dir.path());
    let a = wait_line(&nodes[1].1, |l| l.starts_with("tunnel socket: "));
    assert_eq!(a, "tunnel socket: hard NAT");
    let b = wait_line(&nodes[2].1, |l| l.starts_with("tunnel socket: "));
    assert!(b.starts_with("tunnel socket: easy NAT, reached at 192.0.2.2:"), "{b}");
    // No direct path for libp2p either: the homes stay connected through the relay.
    wait_line(&nodes[1].1, |l| l.contains("10.0.2.2:") && l.contains(" conn "));
    wait_line(&nodes[2].1, |l| l.contains("10.0.1.2:") && l.contains(" conn "));
}
