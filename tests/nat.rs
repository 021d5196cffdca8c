//! NAT traversal in the NAT lab of `../shared/tools/natlab.sh` (two homes behind NATs, a
//! public host, all in network namespaces): what each node learns of its NAT from
//! reflectors, the control plane across the NATs (relay reservations, relayed
//! connections, DCUtR), tunnels between easy NATs by hole punching, and tunnels relayed
//! through the public node where a NAT is symmetric; the VPN over each path, what the
//! relay host carries, and placement over a relayed link. Needs root, iproute2,
//! nftables, python3 and iperf3; `.ci/run` installs them and runs these with
//! `--include-ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Stdio;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use common::natlab::{Lab, Setup};
use common::{spawn_in, swarm_node, wait_line, wait_line_within, Guard};

const COMMON: [&str; 6] = ["--refresh", "500ms", "--heartbeat", "1s", "--ttl", "5s"];

/// A running node of the lab: its process, its output, its peer id, and (when started
/// with the VPN) its overlay IPv6 address.
struct LabNode {
    _guard: Guard,
    out: Receiver<String>,
    id: String,
    overlay: Option<String>,
}

/// Starts the public node in `relay` and one node in each home, bootstrapped from it,
/// each with the common arguments, `all` and `extra[i]` (`--gpus none` unless that names
/// GPUs); returns them relay first.
fn start_with(lab: &Lab, dir: &std::path::Path, all: &[&str], extra: [&[&str]; 3]) -> Vec<LabNode> {
    let mut nodes: Vec<LabNode> = Vec::new();
    for (i, ns) in ["relay", "home-a", "home-b"].into_iter().enumerate() {
        let key = dir.join(format!("{ns}.key")).to_str().unwrap().to_owned();
        let mut args = vec!["run", "--identity", &key, "--listen", "/ip4/0.0.0.0/tcp/4001"];
        let bootstrap = nodes.first().map(|r| format!("/ip4/203.0.113.10/tcp/4001/p2p/{}", r.id));
        if let Some(b) = &bootstrap {
            args.extend(["--bootstrap", b]);
        }
        args.extend(COMMON);
        args.extend(all);
        args.extend(extra[i]);
        if !extra[i].contains(&"--gpus") {
            args.extend(["--gpus", "none"]);
        }
        let (guard, out) = spawn_in(lab.node(ns), &args);
        let id = wait_line(&out, |l| l.starts_with("peer id ")).trim_start_matches("peer id ").to_owned();
        let overlay = all.contains(&"--vpn").then(|| {
            let l = wait_line(&out, |l| l.starts_with("overlay "));
            l.split_whitespace().nth(1).unwrap().to_owned()
        });
        nodes.push(LabNode { _guard: guard, out, id, overlay });
    }
    nodes
}

fn start(lab: &Lab, dir: &std::path::Path) -> Vec<LabNode> {
    start_with(lab, dir, &[], [&[], &[], &[]])
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

/// Home A's link to the other home, from its `/links`: path, via, RTT samples.
fn link_to(lab: &Lab, peer: &str) -> serde_json::Value {
    let links: serde_json::Value = serde_json::from_str(&lab.metrics("home-a", "/links")).unwrap();
    links.as_array().unwrap().iter().find(|l| l["peer"] == peer).cloned().expect("a link to the other home")
}

/// Both homes behind easy NATs (Linux's masquerade: endpoint-independent mapping),
/// dropping unsolicited input or (`input`) accepting it; the relay host's link shaped
/// to 100 Mbit/s. Each home learns an easy NAT and its mapping; the homes reach each
/// other through the relay, DCUtR upgrades that connection, and over it they agree on
/// a hole punch: the tunnel comes up direct, at the other NAT's public address. The VPN
/// carries 10 MB over it with next to nothing through the relay host, faster than the
/// relay's link allows, and the link is measured on the direct path.
fn easy_nats_punch(input: &'static str) {
    let dir = tempfile::tempdir().unwrap();
    // One lab per test: the two inputs' tests run at once.
    let name = if input == "drop" { "e" } else { "eo" };
    let setup = Setup { name, mode_a: "easy", mode_b: "easy", input, relay_rate: Some("100mbit") };
    let lab = Lab::up(&setup);
    let nodes = start_with(&lab, dir.path(), &["--vpn", "--metrics", "127.0.0.1:9100"], [&[], &[], &[]]);
    let a = wait_line(&nodes[1].out, |l| l.starts_with("tunnel socket: "));
    assert!(a.starts_with("tunnel socket: easy NAT, reached at 198.51.100.2:"), "{a}");
    let b = wait_line(&nodes[2].out, |l| l.starts_with("tunnel socket: "));
    assert!(b.starts_with("tunnel socket: easy NAT, reached at 192.0.2.2:"), "{b}");
    // The public node's table shows a home node's record: its NAT kind and mapping.
    let row = wait_line(&nodes[0].out, |l| l.contains("198.51.100.2:") && l.contains(" easy "));
    assert!(row.contains("gossip") || row.contains("conn"), "{row}");
    // Each home holds the other's record, connected; the punched tunnel comes up at
    // the other NAT's public address. (Under load a punch may fail once and be
    // retried, hence the longer wait.)
    let punched = Duration::from_secs(60);
    wait_line_within(&nodes[1].out, punched, |l| {
        l.contains(" conn ") && l.contains(" up ") && l.contains("192.0.2.2:") && l.contains(" easy ")
    });
    wait_line_within(&nodes[2].out, punched, |l| {
        l.contains(" conn ") && l.contains(" up ") && l.contains("198.51.100.2:") && l.contains(" easy ")
    });
    let overlay_b = nodes[2].overlay.as_deref().unwrap();
    let ping = lab.exec("home-a").args(["ping", "-6", "-c", "3", "-W", "3", overlay_b]).output().unwrap();
    assert!(ping.status.success(), "{}", String::from_utf8_lossy(&ping.stdout));
    // Each home probes its address at the NAT (AutoNAT v2) once, paying 30-100 kB of
    // dial data to the public node, and never again once the answer is "unreachable".
    // Wait for that answer so the transfer below sees the steady state.
    for home in ["home-a", "home-b"] {
        let probed =
            || sample(&lab.metrics(home, "/metrics"), "swarm_autonat_probes_total{result=\"unreachable\"}");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while probed() < 1.0 {
            assert!(std::time::Instant::now() < deadline, "{home} never finished its AutoNAT probe");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let before = lab.relay_wire_bytes();
    let relayed_before = lab.metrics("relay", "/metrics");
    assert_eq!(lab.transfer("home-a", "home-b", overlay_b, 10_000_000), 10_000_000);
    let through_relay = lab.relay_wire_bytes() - before;
    let relayed_after = lab.metrics("relay", "/metrics");
    println!("10 MB direct: {through_relay} bytes through the relay host (its own libp2p traffic included)");
    // Not one tunnel byte through the relay; the relay host's interface carries the
    // control plane's own traffic only (records, gossip, keepalives: 13-26 kB).
    for direction in ["in", "out"] {
        let name = format!("swarm_relay_bytes_total{{direction=\"{direction}\"}}");
        assert_eq!(sample(&relayed_after, &name), sample(&relayed_before, &name), "tunnel bytes relayed");
    }
    assert!(through_relay < 64_000, "{through_relay} bytes through the relay host");
    let goodput = lab.goodput("home-a", "home-b", overlay_b);
    println!("direct goodput {:.0} Mbit/s (relay link 100 Mbit/s)", goodput / 1e6);
    assert!(goodput > 150e6, "direct goodput {goodput}");
    let link = link_to(&lab, &nodes[2].id);
    assert_eq!(link["path"], "direct", "{link}");
    assert!(link["rtt_samples"].as_u64().unwrap() > 0, "{link}");
}

#[test]
#[ignore = "needs root, iproute2, nftables, python3 and iperf3; `.ci/run` runs it as root"]
fn easy_nats_get_a_direct_tunnel() {
    easy_nats_punch("drop");
}

/// With NATs that accept unsolicited input, a probe arriving before our own first
/// packet would make masquerade pick another port: the synchronised start keeps the
/// punch working.
#[test]
#[ignore = "needs root, iproute2, nftables, python3 and iperf3; `.ci/run` runs it as root"]
fn easy_nats_open_to_input_still_punch() {
    easy_nats_punch("open");
}

/// No hole can be punched through a symmetric NAT (a port per destination): the homes'
/// tunnel is relayed through the public node. It comes up relayed on both sides, the
/// VPN carries ping and 10 MB of TCP over it, the relay counts at least twice the bytes
/// moved (in and out), the link is measured on the relayed path, and a placement from
/// one home onto the other's GPU goes over it. With the relay host's link shaped, the
/// relayed goodput stays under its rate. Returns nothing; panics on failure.
fn symmetric_nat_relays(setup: &Setup) {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::up(setup);
    let control = dir.path().join("a.sock");
    let control = control.to_str().unwrap();
    let nodes = start_with(
        &lab,
        dir.path(),
        &["--vpn", "--metrics", "127.0.0.1:9100"],
        [&[], &["--control", control], &["--gpus", "1xA100-80GB"]],
    );
    let kind = |mode: &str| if mode == "easy" { "easy" } else { "hard" };
    let a = wait_line(&nodes[1].out, |l| l.starts_with("tunnel socket: "));
    assert!(a.starts_with(&format!("tunnel socket: {} NAT", kind(setup.mode_a))), "{a}");
    let b = wait_line(&nodes[2].out, |l| l.starts_with("tunnel socket: "));
    assert!(b.starts_with(&format!("tunnel socket: {} NAT", kind(setup.mode_b))), "{b}");
    // The tunnel comes up relayed via the public node, on both sides, with each home
    // holding the other's record and a (relayed) libp2p connection to it.
    let via = format!("relayed {}", short(&nodes[0].id));
    for (i, other) in [(1, 2), (2, 1)] {
        let row = short(&nodes[other].id);
        wait_line_within(&nodes[i].out, Duration::from_secs(45), |l| {
            l.starts_with(&row) && l.contains(" conn ") && l.contains(" up ") && l.contains(&via)
        });
    }
    // The VPN carries ping and TCP over it; the relay counts what it carries.
    let overlay_b = nodes[2].overlay.as_deref().unwrap();
    let ping = lab.exec("home-a").args(["ping", "-6", "-c", "5", "-W", "3", overlay_b]).output().unwrap();
    assert!(ping.status.success(), "{}", String::from_utf8_lossy(&ping.stdout));
    let before = lab.metrics("relay", "/metrics");
    let moved = 10_000_000;
    assert_eq!(lab.transfer("home-a", "home-b", overlay_b, moved), moved);
    let after = lab.metrics("relay", "/metrics");
    let grew = |name: &str| sample(&after, name) - sample(&before, name);
    let relayed = grew(r#"swarm_relay_bytes_total{direction="in"}"#)
        + grew(r#"swarm_relay_bytes_total{direction="out"}"#);
    println!("10 MB relayed: the relay counted {relayed} bytes (in + out)");
    assert!(relayed >= 2.0 * moved as f64, "{relayed}");
    assert_eq!(sample(&after, "swarm_relay_paths"), 1.0, "one path relayed");
    // Home A measures the link on the relayed path, and places onto home B over it.
    let link = link_to(&lab, &nodes[2].id);
    assert_eq!(link["path"], "relayed", "{link}");
    assert_eq!(link["via"], nodes[0].id.as_str());
    assert!(link["rtt_samples"].as_u64().unwrap() > 0, "{link}");
    println!("relayed link: rtt p50 {} ms", link["rtt_p50_ms"]);
    let place = swarm_node()
        .args(["place", "--control", control, "--id", "t1", "--gpus", "1", "--max-rtt", "200ms", "--json"])
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&place.stdout);
    assert!(place.status.success() && answer.contains(&nodes[2].id), "{answer}");
    if let Some(rate) = setup.relay_rate {
        let goodput = lab.goodput("home-a", "home-b", overlay_b);
        println!("relayed goodput {:.1} Mbit/s (relay link {rate})", goodput / 1e6);
        assert!(goodput < 100e6 && goodput > 1e6, "relayed goodput {goodput}");
    }
}

#[test]
#[ignore = "needs root, iproute2, nftables, python3 and iperf3; `.ci/run` runs it as root"]
fn a_symmetric_nat_is_relayed() {
    symmetric_nat_relays(&Setup {
        name: "s",
        mode_a: "random",
        mode_b: "easy",
        input: "drop",
        relay_rate: None,
    });
}

#[test]
#[ignore = "needs root, iproute2, nftables, python3 and iperf3; `.ci/run` runs it as root"]
fn two_symmetric_nats_are_relayed_within_the_relay_rate() {
    let setup = Setup {
        name: "ss",
        mode_a: "fully-random",
        mode_b: "random",
        input: "drop",
        relay_rate: Some("100mbit"),
    };
    symmetric_nat_relays(&setup);
}

/// Without the VPN, the homes still learn their NATs (the records say so) and keep
/// their control plane connected through the relay.
#[test]
#[ignore = "needs root, iproute2, nftables, python3 and iperf3; `.ci/run` runs it as root"]
fn reflectors_tell_the_nat_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let lab =
        Lab::up(&Setup { name: "k", mode_a: "random", mode_b: "easy", input: "drop", relay_rate: None });
    let nodes = start(&lab, dir.path());
    let a = wait_line(&nodes[1].out, |l| l.starts_with("tunnel socket: "));
    assert_eq!(a, "tunnel socket: hard NAT");
    let b = wait_line(&nodes[2].out, |l| l.starts_with("tunnel socket: "));
    assert!(b.starts_with("tunnel socket: easy NAT, reached at 192.0.2.2:"), "{b}");
    let row = short(&nodes[1].id);
    wait_line(&nodes[0].out, |l| l.starts_with(&row) && l.contains(" hard "));
    wait_line(&nodes[1].out, |l| l.contains(" easy ") && l.contains(" conn "));
}

/// The direct path between two easy NATs is lost (the router drops UDP between them),
/// then comes back: the tunnel moves to the relay within seconds and back to direct
/// at the next re-probe, reported as such at each step, and carries the VPN throughout.
#[test]
#[ignore = "needs root, iproute2, nftables, python3 and iperf3; `.ci/run` runs it as root"]
fn a_lost_direct_path_fails_over_to_the_relay_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::up(&Setup { name: "f", mode_a: "easy", mode_b: "easy", input: "drop", relay_rate: None });
    let nodes = start_with(&lab, dir.path(), &["--vpn", "--metrics", "127.0.0.1:9100"], [&[], &[], &[]]);
    let row = short(&nodes[2].id);
    let direct = |l: &str| l.starts_with(&row) && l.contains(" up ") && l.contains("192.0.2.2:");
    wait_line_within(&nodes[1].out, Duration::from_secs(60), direct);
    let overlay_b = nodes[2].overlay.as_deref().unwrap();
    let ping = |lab: &Lab| {
        let out = lab.exec("home-a").args(["ping", "-6", "-c", "3", "-W", "3", overlay_b]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    };
    ping(&lab);
    // The router drops UDP between the two NATs: the punched path is lost.
    let nft = |rules: &str| {
        let out =
            lab.exec("inet").args(["nft", "-f", "-"]).stdin(Stdio::piped()).spawn().and_then(|mut c| {
                use std::io::Write as _;
                c.stdin.take().unwrap().write_all(rules.as_bytes())?;
                c.wait_with_output()
            });
        assert!(out.unwrap().status.success(), "nft {rules}");
    };
    nft("table inet cut {\n chain forward_udp {\n  type filter hook forward priority 0;\n  \
         ip saddr 198.51.100.2 ip daddr 192.0.2.2 meta l4proto udp drop\n  \
         ip saddr 192.0.2.2 ip daddr 198.51.100.2 meta l4proto udp drop\n }\n}\n");
    let via = format!("relayed {}", short(&nodes[0].id));
    let relayed = |l: &str| l.starts_with(&row) && l.contains(" up ") && l.contains(&via);
    wait_line_within(&nodes[1].out, Duration::from_secs(40), relayed);
    assert_eq!(link_to(&lab, &nodes[2].id)["path"], "relayed");
    ping(&lab);
    // The path comes back: the next re-probe (every 45 s while relayed) finds it.
    nft("delete table inet cut\n");
    wait_line_within(&nodes[1].out, Duration::from_secs(70), direct);
    assert_eq!(link_to(&lab, &nodes[2].id)["path"], "direct");
    ping(&lab);
}
