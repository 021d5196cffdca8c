//! NAT traversal in the NAT lab of `../shared/tools/natlab.sh`: how long two homes behind
//! easy NATs take to get a direct tunnel, how often they get one, and what a relayed
//! tunnel (one home behind a symmetric NAT) costs against a direct one.
//!
//! `sudo cargo bench --bench nat` (root: namespaces, nftables, TUN devices; needs
//! iproute2, nftables, python3, ping and iperf3). Without root it says so and measures
//! nothing. Knobs: `SWARM_BENCH_RUNS=10` (easy/easy runs), `SWARM_BENCH_SECONDS=5`
//! (each iperf3 run), `NATLAB_RELAY_RATE` (shapes the relay host's link, as natlab
//! does).
//!
//! 1. **Time to direct**: per run, a fresh lab; the public node starts, then both home
//!    nodes at once; the time from that start until home A's tunnel to home B is up at
//!    B's NAT address. Runs that are not direct within 60 s count as not direct.
//! 2. **Direct against relayed**: the VPN across easy/easy (direct) and random/easy
//!    (relayed through the public node): ping RTT (p50 of 20) and one iperf3 TCP
//!    stream, home A to home B over the overlay.
//!
//! The nodes are this program, re-executed with `SWARM_BENCH_CHILD=node`; they print
//! their peer id, overlay address and tunnel events as lines for the parent to read.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::natlab::{Lab, Setup};
use common::{spawn_in, wait_line, wait_line_within, Guard};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn main() {
    if std::env::var("SWARM_BENCH_CHILD").as_deref() == Ok("node") {
        return node();
    }
    if std::env::args().any(|a| a == "--list" || a == "--exact") {
        return; // `cargo test --benches` probes bench binaries; nothing to list.
    }
    if !is_root() {
        eprintln!("nat bench: skipped: needs root (network namespaces, nftables, TUN devices)");
        return;
    }
    for tool in ["ip", "nft", "python3", "ping", "iperf3"] {
        if !Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            eprintln!("nat bench: skipped: {tool} is missing");
            return;
        }
    }
    let runs: usize = env_or("SWARM_BENCH_RUNS", "10").parse().expect("SWARM_BENCH_RUNS");
    time_to_direct(runs);
    let rate: Option<&'static str> =
        std::env::var("NATLAB_RELAY_RATE").ok().map(|r| &*Box::leak(r.into_boxed_str()));
    println!();
    println!("{:<28} {:>12} {:>16}", "PATH (home A -> home B)", "RTT p50 ms", "goodput Mbit/s");
    for (label, mode_a) in [("direct (easy/easy)", "easy"), ("relayed (random/easy)", "random")] {
        let setup = Setup { name: "v", mode_a, mode_b: "easy", input: "drop", relay_rate: rate };
        match path_figures(&setup) {
            Ok((rtt, goodput)) => println!("{label:<28} {rtt:>12.3} {:>16.1}", goodput / 1e6),
            Err(why) => println!("{label:<28} failed: {why}"),
        }
    }
    if let Some(rate) = rate {
        println!("(the relay host's link shaped to {rate})");
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A node of the lab: its process and what it prints.
struct LabNode {
    _guard: Guard,
    out: Receiver<String>,
    id: String,
}

/// This program as a node in namespace `ns`.
fn spawn(lab: &Lab, ns: &str, env: &[(&str, String)]) -> LabNode {
    let mut c = lab.exec(ns);
    c.arg("env").arg("SWARM_BENCH_CHILD=node");
    for (k, v) in env {
        c.arg(format!("{k}={v}"));
    }
    c.arg(std::env::current_exe().unwrap());
    let (guard, out) = spawn_in(c, &[]);
    let id = wait_line(&out, |l| l.starts_with("peer id ")).trim_start_matches("peer id ").to_owned();
    LabNode { _guard: guard, out, id }
}

/// The public node, then both homes at once (with the VPN when `vpn`); the homes'
/// start time.
fn start(lab: &Lab, vpn: bool) -> (Vec<LabNode>, Instant) {
    let vpn = if vpn { "1" } else { "" }.to_owned();
    let relay = spawn(lab, "relay", &[("SWARM_BENCH_VPN", vpn.clone())]);
    let bootstrap = format!("/ip4/203.0.113.10/tcp/4001/p2p/{}", relay.id);
    let t0 = Instant::now();
    let env = [("SWARM_BENCH_BOOTSTRAP", bootstrap), ("SWARM_BENCH_VPN", vpn)];
    let a = spawn(lab, "home-a", &env);
    let b = spawn(lab, "home-b", &env);
    (vec![relay, a, b], t0)
}

/// `runs` fresh easy/easy labs: seconds until home A's tunnel to home B is up direct.
fn time_to_direct(runs: usize) {
    let mut times = Vec::new();
    for run in 1..=runs {
        let lab =
            Lab::up(&Setup { name: "t", mode_a: "easy", mode_b: "easy", input: "drop", relay_rate: None });
        let (nodes, t0) = start(&lab, false);
        let want = format!("up {} 192.0.2.2:", nodes[2].id);
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_line_within(&nodes[1].out, Duration::from_secs(60), |l| l.starts_with(&want));
        }));
        match got {
            Ok(()) => {
                let t = t0.elapsed().as_secs_f64();
                println!("run {run:>2}: direct after {t:.2} s");
                times.push(t);
            }
            Err(_) => println!("run {run:>2}: not direct within 60 s"),
        }
        drop(nodes);
        drop(lab);
    }
    times.sort_by(f64::total_cmp);
    if let (Some(min), Some(max)) = (times.first(), times.last()) {
        println!(
            "time to direct, easy/easy: median {:.2} s, min {min:.2} s, max {max:.2} s; direct in {} of {runs} runs",
            times[times.len() / 2],
            times.len()
        );
    }
}

/// Ping p50 (ms) and TCP goodput (bit/s) from home A to home B over the VPN, once the
/// tunnel between them is up (direct or relayed).
fn path_figures(setup: &Setup) -> Result<(f64, f64), String> {
    let lab = Lab::up(setup);
    let (nodes, t0) = start(&lab, true);
    let overlay_b =
        wait_line(&nodes[2].out, |l| l.starts_with("overlay ")).trim_start_matches("overlay ").to_owned();
    let up = format!("up {} ", nodes[2].id);
    let path = format!("path {} ", nodes[2].id);
    // The path is reported before the tunnel's first handshake completes over it.
    let mut last_path = None;
    wait_line_within(&nodes[1].out, Duration::from_secs(60), |l| {
        if l.starts_with(&path) {
            last_path = Some(l.trim_start_matches(&path).to_owned());
        }
        l.starts_with(&up)
    });
    println!(
        "  (up {:.2} s after the homes started, {})",
        t0.elapsed().as_secs_f64(),
        last_path.as_deref().unwrap_or("direct")
    );
    // Let the path settle before measuring.
    std::thread::sleep(Duration::from_secs(2));
    let ping = lab
        .exec("home-a")
        .args(["ping", "-6", "-c", "20", "-i", "0.2", "-W", "2", &overlay_b])
        .output()
        .map_err(|e| e.to_string())?;
    let mut rtts: Vec<f64> = String::from_utf8_lossy(&ping.stdout)
        .lines()
        .filter_map(|l| l.split("time=").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect();
    if rtts.is_empty() {
        return Err("no ping answered".into());
    }
    rtts.sort_by(f64::total_cmp);
    let seconds = env_or("SWARM_BENCH_SECONDS", "5");
    let server = Guard(
        lab.exec("home-b").args(["iperf3", "-s", "-1", "-p", "5202"]).stdout(Stdio::null()).spawn().unwrap(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let out = lab
        .exec("home-a")
        .args(["iperf3", "-c", &overlay_b, "-p", "5202", "-t", &seconds, "-J", "--connect-timeout", "5000"])
        .output()
        .map_err(|e| e.to_string())?;
    drop(server);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let goodput = report["end"]["sum_received"]["bits_per_second"].as_f64().ok_or("no iperf3 figure")?;
    Ok((rtts[rtts.len() / 2], goodput))
}

/// A node: TCP on 4001, relay auto, the VPN when `SWARM_BENCH_VPN=1`, bootstrapped from
/// `SWARM_BENCH_BOOTSTRAP`; prints `peer id`, `overlay`, and per tunnel `up PEER
/// ENDPOINT|-` and `path PEER PATH`.
fn node() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut builder = swarm::NodeBuilder::new("nat-bench")
            .listen("/ip4/0.0.0.0/tcp/4001".parse().unwrap())
            .gpu_probe(std::sync::Arc::new("none".parse::<swarm::gpu::StaticProbe>().unwrap()))
            .heartbeat(Duration::from_secs(1))
            .record_ttl(Duration::from_secs(5));
        if let Ok(b) = std::env::var("SWARM_BENCH_BOOTSTRAP") {
            builder = builder.bootstrap(b.parse().unwrap());
        }
        let vpn = std::env::var("SWARM_BENCH_VPN").as_deref() == Ok("1");
        if vpn {
            builder = builder.vpn(swarm::net::VpnConfig::default());
        }
        let (node, mut events) = builder.start().await.expect("node starts");
        println!("peer id {}", node.peer_id());
        if vpn {
            println!("overlay {}", node.overlay().await.unwrap().ipv6);
        }
        while let Some(event) = events.next().await {
            match event {
                swarm::NodeEvent::TunnelUp { peer, endpoint } => {
                    println!("up {peer} {}", endpoint.map_or("-".to_owned(), |e| e.to_string()))
                }
                swarm::NodeEvent::TunnelPath { peer, path } => println!("path {peer} {path}"),
                _ => {}
            }
        }
    });
}
