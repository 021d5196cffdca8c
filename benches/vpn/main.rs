//! The mesh VPN against stock userspace WireGuard, in one run: two swarm nodes with the
//! VPN on, in two network namespaces joined by a veth pair, one core each (node and
//! iperf3 of side A on CPU 0, of side B on CPU 1); then, through
//! `../shared/tools/wg_baseline.sh` under the same pinning, boringtun-cli and
//! wireguard-go pairs and the bare veth. Prints, for each: one 10 s iperf3 TCP stream
//! (A sends to B), ping RTT (p50 and mean of 20), and for the overlay also 64-byte UDP
//! packets per second.
//!
//! `sudo cargo bench --bench vpn` (root: namespaces and TUN devices; needs iproute2,
//! iperf3, ping, taskset, and for the baselines wireguard-tools, wireguard-go,
//! boringtun-cli and python3). Without root it says so and measures nothing. Knobs:
//! `SWARM_BENCH_SECONDS=10`, `SWARM_BENCH_BASELINES=veth,bt-bt,wggo-wggo` (empty: none).
//!
//! The nodes are this program, re-executed with `SWARM_BENCH_CHILD=node` on a
//! single-threaded runtime. A last measurement (`SWARM_BENCH_CHILD=relay`) gives the floor
//! of any userspace VPN on the machine: IP packets between TUN and UDP, no crypto, always
//! polling. Namespaces and processes are removed at the end, also on failure.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../throughput/netns.rs"]
#[allow(dead_code)]
mod netns;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use netns::{Net, Procs, Side};
use serde_json::Value;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn main() {
    match std::env::var("SWARM_BENCH_CHILD").as_deref() {
        Ok("node") => return node(),
        Ok("relay") => return relay(),
        _ => {}
    }
    if std::env::args().any(|a| a == "--list" || a == "--exact") {
        return; // `cargo test --benches` probes bench binaries; nothing to list.
    }
    let seconds: u64 = env_or("SWARM_BENCH_SECONDS", "10").parse().expect("SWARM_BENCH_SECONDS");
    for tool in ["ip", "iperf3", "ping", "taskset"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map_or(true, |o| !o.status.success())
        {
            eprintln!("vpn bench: skipped: {tool} is missing");
            return;
        }
    }
    let net = match Net::setup("veth") {
        Ok(net) => net,
        Err(why) => {
            eprintln!("vpn bench: skipped: {why}");
            return;
        }
    };
    let mut rows = Vec::new();
    let mut veth_p50 = None;
    match overlay(&net, seconds) {
        Ok((row, veth)) => {
            rows.push(row);
            veth_p50 = Some(veth);
        }
        Err(e) => eprintln!("swarm overlay: {e}"),
    }
    let floor = relay_floor(&net);
    drop(net);
    rows.extend(baselines(seconds));
    print_table(&rows);
    match floor {
        Ok((relay, veth)) => println!(
            "floor of a userspace VPN here (TUN <-> UDP, no crypto, always polling), pings 2 ms apart: p50 {relay:.3} ms, {:.0} us added to the bare veth's {veth:.3} ms",
            (relay - veth) * 1e3
        ),
        Err(e) => eprintln!("relay floor: {e}"),
    }
    let ours = rows.first().filter(|r| r.name == "swarm overlay");
    if let (Some(r), Some((veth, veth_warm))) = (ours, veth_p50) {
        let added = |a: Option<f64>, b: f64| a.map_or("-".to_owned(), |a| format!("{:.0}", (a - b) * 1e3));
        println!(
            "ping p50 added by the overlay to the bare veth's (same namespaces, same run): {} us with pings 0.2 s apart (veth {veth:.3} ms), {} us with pings 2 ms apart (veth {veth_warm:.3} ms); target <= 50 us",
            added(r.ping_p50_ms, veth),
            added(r.warm_p50_ms, veth_warm)
        );
    }
}

/// One measured pair.
struct Row {
    name: String,
    tcp_gbps: Option<f64>,
    ping_p50_ms: Option<f64>,
    ping_mean_ms: Option<f64>,
    /// p50 of pings 2 ms apart (the processes stay warm).
    warm_p50_ms: Option<f64>,
    udp64_pps: Option<f64>,
}

/// A swarm node with the VPN on, until killed: prints its overlay IPv4 address and its
/// listen address.
fn node() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let listen: swarm::Multiaddr = env_or("SWARM_BENCH_LISTEN", "/ip4/127.0.0.1/tcp/0").parse().unwrap();
        let mut builder = swarm::NodeBuilder::new("vpn-bench")
            .listen(listen)
            .vpn(swarm::net::VpnConfig::default())
            .overlay_ipv4(swarm::core::overlay::DEFAULT_IPV4_RANGE.parse().unwrap());
        if let Ok(b) = std::env::var("SWARM_BENCH_BOOTSTRAP") {
            builder = builder.bootstrap(b.parse().unwrap());
        }
        let (node, _events) = builder.start().await.expect("node starts");
        let overlay = node.overlay().await.unwrap();
        println!("overlay {}", overlay.ipv4.unwrap());
        for a in node.listen_addrs().await.unwrap() {
            println!("listening {a}");
        }
        std::future::pending::<()>().await;
    });
}

/// The floor of any userspace VPN on this machine: IP packets between a TUN device and a
/// UDP socket, one by one, no crypto, polling both without ever sleeping (always warm).
/// `SWARM_BENCH_RELAY=<own overlay address> <peer's underlay address>`; port 40999.
fn relay() {
    let spec = env_or("SWARM_BENCH_RELAY", "");
    let (own, peer) = spec.split_once(' ').expect("SWARM_BENCH_RELAY=<overlay ip> <peer ip>");
    let own: std::net::Ipv4Addr = own.parse().unwrap();
    let dev = tun_rs::DeviceBuilder::new().name("relay0").mtu(1420).ipv4(own, 24, None).build_sync().unwrap();
    dev.set_nonblocking(true).unwrap();
    let sock = std::net::UdpSocket::bind("0.0.0.0:40999").unwrap();
    sock.connect((peer, 40999)).unwrap();
    sock.set_nonblocking(true).unwrap();
    println!("relay up");
    let mut buf = vec![0u8; 65_536];
    loop {
        if let Ok(n) = dev.recv(&mut buf) {
            let _ = sock.send(&buf[..n]);
        }
        if let Ok(n) = sock.recv(&mut buf) {
            let _ = dev.send(&buf[..n]);
        }
        std::hint::spin_loop();
    }
}

/// p50 of pings 2 ms apart through two [`relay`]s, and on the bare veth beside them.
fn relay_floor(net: &Net) -> Result<(f64, f64), String> {
    let mut procs = Procs::default();
    let mut rx = Vec::new();
    for (side, own, peer) in
        [(Side::Sender, "10.99.0.1", net.receiver_ip()), (Side::Receiver, "10.99.0.2", net.sender_ip())]
    {
        rx.push(spawn_child(
            &mut procs,
            net,
            side,
            "relay",
            &[("SWARM_BENCH_RELAY", format!("{own} {peer}"))],
        )?);
    }
    for r in &rx {
        line(r, "relay up")?;
    }
    let _ = in_side(net, Side::Sender, "ping").args(["-c", "3", "-i", "0.2", "10.99.0.2"]).output();
    let (relay, _) = ping_every(net, "10.99.0.2", "500", "0.002")?;
    let (veth, _) = ping_every(net, net.receiver_ip(), "500", "0.002")?;
    Ok((relay, veth))
}

/// The first line of `child`'s output that starts with `prefix`, within 20 s.
fn line(rx: &mpsc::Receiver<String>, prefix: &str) -> Result<String, String> {
    loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) if l.starts_with(prefix) => return Ok(l[prefix.len()..].trim().to_owned()),
            Ok(_) => {}
            Err(_) => return Err(format!("no {prefix:?} line from a node")),
        }
    }
}

/// This program as `role` (`node`, `relay`) in the side's namespace, pinned to its
/// core, with `envs`; its stdout, line by line.
fn spawn_child(
    procs: &mut Procs,
    net: &Net,
    side: Side,
    role: &str,
    envs: &[(&str, String)],
) -> Result<mpsc::Receiver<String>, String> {
    let mut c = net.command(if matches!(side, Side::Sender) { 0 } else { 1 }, side);
    c.env("SWARM_BENCH_CHILD", role).stdout(Stdio::piped()).stderr(Stdio::null());
    for (k, v) in envs {
        c.env(k, v);
    }
    let child = procs.spawn(c)?;
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::sync_channel(1024);
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// `program args` inside the side's namespace, pinned to its core.
fn in_side(net: &Net, side: Side, program: &str) -> Command {
    let Net::Veth { a, b } = net else { unreachable!("the VPN bench runs on veth") };
    let (ns, cpu) = match side {
        Side::Sender => (a, "0"),
        Side::Receiver => (b, "1"),
    };
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, "taskset", "-c", cpu, program]);
    c
}

/// The overlay's row, and the bare veth's ping p50 in the same namespaces (sparse, warm).
fn overlay(net: &Net, seconds: u64) -> Result<(Row, (f64, f64)), String> {
    let mut procs = Procs::default();
    let rx_b = spawn_child(
        &mut procs,
        net,
        Side::Receiver,
        "node",
        &[("SWARM_BENCH_LISTEN", format!("/ip4/{}/tcp/0", net.receiver_ip()))],
    )?;
    let b_ip = line(&rx_b, "overlay ")?;
    let b_listen = line(&rx_b, "listening ")?;
    let rx_a = spawn_child(
        &mut procs,
        net,
        Side::Sender,
        "node",
        &[
            ("SWARM_BENCH_LISTEN", format!("/ip4/{}/tcp/0", net.sender_ip())),
            ("SWARM_BENCH_BOOTSTRAP", b_listen),
        ],
    )?;
    line(&rx_a, "overlay ")?;
    // The overlay is up once A's record reached B and a ping gets through.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ok = in_side(net, Side::Sender, "ping")
            .args(["-c", "1", "-W", "1", &b_ip])
            .output()
            .map_err(|e| e.to_string())?;
        if ok.status.success() {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err("the overlay did not come up in 20 s".into());
        }
    }
    let (p50, mean) = ping(net, &b_ip)?;
    let tcp = iperf(net, &b_ip, seconds, &[])?;
    let udp = iperf(net, &b_ip, seconds.min(5), &["-u", "-l", "64", "-b", "0"])?;
    let udp_pps = udp["end"]["sum"]["packets"]
        .as_f64()
        .zip(udp["end"]["sum"]["lost_packets"].as_f64())
        .map(|(p, l)| (p - l) / seconds.min(5) as f64);
    // The underlay's own RTT, measured in this run beside the overlay's.
    let (veth_p50, _) = ping(net, net.receiver_ip())?;
    // Pings 2 ms apart: the processes stay warm (no wake-up from idle between pings).
    let (warm, _) = ping_every(net, &b_ip, "500", "0.002")?;
    let (veth_warm, _) = ping_every(net, net.receiver_ip(), "500", "0.002")?;
    Ok((
        Row {
            name: "swarm overlay".into(),
            tcp_gbps: tcp["end"]["sum_received"]["bits_per_second"].as_f64().map(|b| b / 1e9),
            ping_p50_ms: Some(p50),
            ping_mean_ms: Some(mean),
            warm_p50_ms: Some(warm),
            udp64_pps: udp_pps,
        },
        (veth_p50, veth_warm),
    ))
}

/// p50 and mean RTT of 20 pings 0.2 s apart, after 3 to warm up.
fn ping(net: &Net, dst: &str) -> Result<(f64, f64), String> {
    let _ = in_side(net, Side::Sender, "ping").args(["-c", "3", "-i", "0.2", dst]).output();
    ping_every(net, dst, "20", "0.2")
}

/// p50 and mean RTT of `count` pings `interval` seconds apart.
fn ping_every(net: &Net, dst: &str, count: &str, interval: &str) -> Result<(f64, f64), String> {
    let out = in_side(net, Side::Sender, "ping")
        .args(["-c", count, "-i", interval, dst])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    p50_and_mean(text.lines()).ok_or_else(|| format!("no ping answers from {dst}"))
}

/// p50 and mean of the `time=` of ping's reply lines.
fn p50_and_mean<'a>(lines: impl Iterator<Item = &'a str>) -> Option<(f64, f64)> {
    let mut rtts: Vec<f64> =
        lines.filter_map(|l| l.split("time=").nth(1)?.split_whitespace().next()?.parse().ok()).collect();
    if rtts.is_empty() {
        return None;
    }
    rtts.sort_by(f64::total_cmp);
    let mean = rtts.iter().sum::<f64>() / rtts.len() as f64;
    Some((rtts[rtts.len() / 2], mean))
}

/// One iperf3 run from A to a server on B; its JSON.
fn iperf(net: &Net, dst: &str, seconds: u64, extra: &[&str]) -> Result<Value, String> {
    let mut procs = Procs::default();
    let mut server = in_side(net, Side::Receiver, "iperf3");
    server.args(["-s", "-1"]).stdout(Stdio::null()).stderr(Stdio::null());
    procs.spawn(server)?;
    std::thread::sleep(Duration::from_millis(500));
    let out = in_side(net, Side::Sender, "iperf3")
        .args(["-c", dst, "-t", &seconds.to_string(), "-J"])
        .args(extra)
        .output()
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&out.stdout).map_err(|e| format!("iperf3 said no JSON ({e})"))
}

/// The shared baseline script on `pairs`, pinned, with `envs`; its output.
fn wg_baseline(pairs: &str, envs: &[(&str, String)]) -> Option<String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/tools/wg_baseline.sh");
    let home = env_or("HOME", "/root");
    let mut c = Command::new("bash");
    c.arg(script)
        .args(pairs.split(','))
        .env("PIN", "1")
        .env("PATH", format!("{}:{home}/.cargo/bin", env_or("PATH", "")));
    for (k, v) in envs {
        c.env(k, v);
    }
    let out = c.output().map_err(|e| eprintln!("baselines: cannot run {script}: {e}")).ok()?;
    if !out.status.success() {
        eprintln!("baselines: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The stock daemons and the bare veth, through the shared baseline script: its
/// throughput and mean RTT, then (a second pass, with the script's RUN hook) ping p50
/// sparse and warm, as the overlay's are measured.
fn baselines(seconds: u64) -> Vec<Row> {
    let pairs = env_or("SWARM_BENCH_BASELINES", "veth,bt-bt,wggo-wggo");
    if pairs.is_empty() {
        return Vec::new();
    }
    let Some(text) = wg_baseline(&pairs, &[("JSON", "1".into()), ("DURATION", seconds.to_string())]) else {
        return Vec::new();
    };
    for l in text.lines().filter(|l| l.starts_with('#')) {
        eprintln!("{l}");
    }
    let run = "P=\"ip netns exec $NSA taskset -c 0 ping\"; echo \"pair $NSA\"; \
               $P -c 3 -i 0.2 $OB >/dev/null; $P -c 20 -i 0.2 $OB | sed s/^/sparse:/; \
               $P -c 500 -i 0.002 $OB | sed s/^/warm:/";
    let pings = wg_baseline(&pairs, &[("RUN", run.into())]).unwrap_or_default();
    // The RUN output comes in the order of the pairs, one "pair" line before each.
    let mut sections = pings.split("\npair ").skip(1);
    let mut rows = Vec::new();
    for v in text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()) {
        let section = sections.next().unwrap_or_default();
        let p50 = |tag: &str| p50_and_mean(section.lines().filter_map(|l| l.strip_prefix(tag))).map(|p| p.0);
        let num = |k: &str| v[k].as_str().and_then(|s| s.parse::<f64>().ok());
        let name = match v["pair"].as_str().unwrap_or("?") {
            "veth" => "bare veth".to_owned(),
            "bt-bt" => "boringtun-cli".to_owned(),
            "wggo-wggo" => "wireguard-go".to_owned(),
            other => other.to_owned(),
        };
        rows.push(Row {
            name,
            tcp_gbps: num("tcp_mbps_median").map(|m| m / 1e3),
            ping_p50_ms: p50("sparse:"),
            ping_mean_ms: num("ping_avg_ms"),
            warm_p50_ms: p50("warm:"),
            udp64_pps: None,
        });
    }
    rows
}

fn print_table(rows: &[Row]) {
    let f = |v: Option<f64>, d: usize| v.map_or("-".to_owned(), |v| format!("{v:.d$}"));
    println!(
        "{:<16} {:>10} {:>14} {:>15} {:>18} {:>12}",
        "PATH", "TCP Gbps", "ping p50 ms", "ping mean ms", "2ms-ping p50 ms", "UDP64 pps"
    );
    for r in rows {
        println!(
            "{:<16} {:>10} {:>14} {:>15} {:>18} {:>12}",
            r.name,
            f(r.tcp_gbps, 2),
            f(r.ping_p50_ms, 3),
            f(r.ping_mean_ms, 3),
            f(r.warm_p50_ms, 3),
            f(r.udp64_pps, 0)
        );
    }
    let gbps = |n: &str| rows.iter().find(|r| r.name == n).and_then(|r| r.tcp_gbps);
    if let (Some(ours), Some(bt)) = (gbps("swarm overlay"), gbps("boringtun-cli")) {
        println!("swarm overlay / boringtun-cli TCP throughput: {:.2}x (target >= 2x)", ours / bt);
    }
}
