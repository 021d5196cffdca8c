//! Link metrics on a real network: two node processes in two network namespaces joined
//! by a veth pair, a seeded userspace impairment relay (delay, jitter, loss) in the
//! tunnel's path, and `tc tbf` for a rate limit (the kernel here has no netem). The
//! figures the nodes report must agree with what the relay and tbf impose.
//!
//! Needs root and iproute2, so it is `#[ignore]`d; `.ci/run` runs it as root. The test
//! binary re-executes itself for the relay and the nodes (`SWARM_NETEM_ROLE`); the
//! namespaces are deleted and the processes killed on drop, also when an assertion fails.
//!
//! `a_breached_link_detours_through_a_member_and_comes_back` runs three `swarm-node`
//! programs with the VPN and puts the same relay on the direct A-B path only (issue 16,
//! part 1).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use swarm::core::link::emulator::{LinkEmulator, LinkProfile};
use swarm::NodeBuilder;

const ROLE: &str = "SWARM_NETEM_ROLE";
const TEST: &str = "link_figures_match_the_relay_and_tbf";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("iproute2 is installed");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Two namespaces joined by veth: `a` at 10.204.0.1, `b` at 10.204.0.2.
struct Veth {
    a: String,
    b: String,
    dev_a: String,
}

impl Veth {
    fn new() -> Veth {
        let id = std::process::id();
        let v = Veth { a: format!("swn-a-{id}"), b: format!("swn-b-{id}"), dev_a: format!("swna{id}") };
        let dev_b = format!("swnb{id}");
        ip(&["netns", "add", &v.a]);
        ip(&["netns", "add", &v.b]);
        ip(&["link", "add", &v.dev_a, "type", "veth", "peer", "name", &dev_b]);
        ip(&["link", "set", &v.dev_a, "netns", &v.a]);
        ip(&["link", "set", &dev_b, "netns", &v.b]);
        ip(&["-n", &v.a, "addr", "add", "10.204.0.1/24", "dev", &v.dev_a]);
        ip(&["-n", &v.b, "addr", "add", "10.204.0.2/24", "dev", &dev_b]);
        for (ns, dev) in [(&v.a, &v.dev_a), (&v.b, &dev_b)] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        v
    }

    /// This test binary, as `role`, in namespace `ns`.
    fn spawn(
        &self,
        ns: &str,
        role: &str,
        vars: &[(&str, String)],
        procs: &mut Procs,
    ) -> mpsc::Receiver<String> {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns])
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", TEST, "--include-ignored", "--nocapture", "--test-threads", "1"])
            .env(ROLE, role)
            .envs(vars.iter().map(|(k, v)| (*k, v.clone())))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = c.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        procs.0.push(child);
        let (tx, rx) = mpsc::sync_channel(4096);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Children, killed by their id on drop.
#[derive(Default)]
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The rest of the first line that holds `prefix`, within `timeout`.
fn expect(rx: &mpsc::Receiver<String>, prefix: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            // libtest prints "test name ... " before the child's first line.
            Ok(line) if line.contains(prefix) => {
                let at = line.find(prefix).unwrap_or(0) + prefix.len();
                return line[at..].trim().to_owned();
            }
            Ok(_) => {}
            Err(e) => panic!("no {prefix:?} line ({e})"),
        }
    }
}

/// A packet held by the relay: (release time, tie-break, side it came from, bytes).
type Held = Reverse<(Instant, u64, usize, Vec<u8>)>;

/// The relay: packets that reach `listen_a` (from A) go out of `listen_b` to `to_b`
/// after the emulator's delay, unless it drops them; and the other way round. With
/// `MODE_FILE`, it impairs only while that file says `impair` (read every 100 ms), and
/// passes packets straight otherwise.
async fn relay() {
    let a: SocketAddr = env("LISTEN_A").parse().unwrap();
    let b: SocketAddr = env("LISTEN_B").parse().unwrap();
    let to = [env("TO_B").parse::<SocketAddr>().unwrap(), env("TO_A").parse::<SocketAddr>().unwrap()];
    let profile = LinkProfile {
        delay: Duration::from_millis(env("DELAY_MS").parse().unwrap()),
        jitter: Duration::from_millis(env("JITTER_MS").parse().unwrap()),
        loss: env("LOSS").parse().unwrap(),
        ..LinkProfile::default()
    };
    let clean = LinkProfile { delay: Duration::ZERO, ..LinkProfile::default() };
    let mode_file = std::env::var("MODE_FILE").ok();
    let impaired = |mode_file: &Option<String>| {
        mode_file.as_ref().is_none_or(|f| std::fs::read_to_string(f).is_ok_and(|m| m.trim() == "impair"))
    };
    let (mut impairing, mut mode_read) = (impaired(&mode_file), Instant::now());
    let emulators_for = |impairing: bool, seed: u64| {
        let p = if impairing { profile } else { clean };
        [LinkEmulator::new(p, seed), LinkEmulator::new(p, seed + 1)]
    };
    let mut emulators = emulators_for(impairing, 1);
    let sockets =
        [tokio::net::UdpSocket::bind(a).await.unwrap(), tokio::net::UdpSocket::bind(b).await.unwrap()];
    println!("READY relay");
    let mut queue: BinaryHeap<Held> = BinaryHeap::new();
    let (mut bufs, mut seq) = ([vec![0u8; 65_536], vec![0u8; 65_536]], 0u64);
    loop {
        let next = queue.peek().map(|Reverse((at, ..))| *at);
        let sleep =
            tokio::time::sleep_until(next.unwrap_or_else(|| Instant::now() + Duration::from_secs(1)).into());
        let (got, from_side) = {
            let [buf_a, buf_b] = &mut bufs;
            tokio::select! {
                r = sockets[0].recv_from(buf_a) => (r.ok().map(|(n, _)| n), 0),
                r = sockets[1].recv_from(buf_b) => (r.ok().map(|(n, _)| n), 1),
                _ = sleep => (None, 2),
            }
        };
        let now = Instant::now();
        if now.duration_since(mode_read) >= Duration::from_millis(100) {
            mode_read = now;
            let m = impaired(&mode_file);
            if m != impairing {
                impairing = m;
                emulators = emulators_for(m, seq + 3);
                println!("MODE {}", if m { "impair" } else { "clean" });
            }
        }
        if let (Some(n), side @ (0 | 1)) = (got, from_side) {
            if let Some(at) = emulators[side].transmit(now, n) {
                seq += 1;
                queue.push(Reverse((at, seq, side, bufs[side][..n].to_vec())));
            }
        }
        while queue.peek().is_some_and(|Reverse((at, ..))| *at <= Instant::now()) {
            let Reverse((_, _, side, bytes)) = queue.pop().unwrap();
            // From A's side it leaves by B's socket, and the other way round.
            let _ = sockets[1 - side].send_to(&bytes, to[side]).await;
        }
    }
}

/// A node: once its tunnel is up, sends `PPS` datagrams of `SIZE` bytes a second for
/// `SECONDS`, then prints its measurements of the link.
async fn node() {
    let ip_addr = env("LISTEN");
    let mut b = NodeBuilder::new("netem")
        .listen(format!("/ip4/{ip_addr}/tcp/0").parse().unwrap())
        .tunnel_port(env("TUNNEL_PORT").parse().unwrap())
        .heartbeat(Duration::from_secs(1))
        .record_ttl(Duration::from_secs(10));
    if let Ok(endpoint) = env("ADVERTISE").parse() {
        b = b.tunnel_endpoint(endpoint);
    }
    if let Ok(boot) = env("BOOTSTRAP").parse() {
        b = b.bootstrap(boot);
    }
    let (node, _events) = b.start().await.unwrap();
    let mut inbox = node.datagrams().unwrap();
    tokio::spawn(async move { while inbox.next().await.is_some() {} });
    println!("READY {}", node.listen_addrs().await.unwrap()[0]);
    let peer = loop {
        if let Some(t) = node.tunnels().await.unwrap().into_iter().find(|t| t.established) {
            break t.peer;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (pps, size, secs): (u64, usize, u64) =
        (env("PPS").parse().unwrap(), env("SIZE").parse().unwrap(), env("SECONDS").parse().unwrap());
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        tick.tick().await;
        let due = pps * start.elapsed().as_millis() as u64 / 1000;
        while sent < due {
            node.send_datagram(peer, vec![0x42; size]).await.unwrap();
            sent += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let link =
        node.links().await.unwrap().into_iter().find(|l| l.peer == peer).expect("the link is measured");
    let (long, short) = (&link.stats.long, &link.stats.short);
    let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e3);
    let result = serde_json::json!({
        "sent": sent,
        "rtt_p50_ms": ms(long.rtt.map(|q| q.p50)),
        "rtt_p99_ms": ms(long.rtt.map(|q| q.p99)),
        "rtt_samples": long.rtt.map(|q| q.samples),
        "jitter_mean_ms": ms(long.jitter_mean.map(|(j, _)| j)),
        "loss_in": long.loss_in.map(|r| r.value),
        "loss_in_packets": long.loss_in.map(|r| r.samples),
        "rx_bps_short": short.rx_bps,
    });
    println!("RESULT {result}");
    node.shutdown().await;
}

fn run_role(role: &str) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    match role {
        "relay" => rt.block_on(async {
            let _ =
                tokio::time::timeout(Duration::from_secs(env("LIFETIME").parse().unwrap()), relay()).await;
        }),
        _ => rt.block_on(node()),
    }
}

fn within(what: &str, measured: f64, truth: f64, tolerance: f64) {
    println!("{what}: measured {measured:.4}, truth {truth:.4}, tolerance ±{tolerance:.4}");
    assert!((measured - truth).abs() <= tolerance, "{what}: {measured} vs {truth} ± {tolerance}");
}

#[test]
#[ignore = "needs root and iproute2 (ip netns, tc); `.ci/run` runs it as root with --include-ignored"]
fn link_figures_match_the_relay_and_tbf() {
    if let Ok(role) = std::env::var(ROLE) {
        return run_role(&role);
    }
    let veth = Veth::new();
    let v = |s: &str| s.to_owned();

    // 1. Delay 15 ms, jitter N(0, 3 ms) and 1 % loss each way, through the relay (in b).
    //    A sends to the relay at 10.204.0.2:7101, which delivers to B's tunnel (7202)
    //    from 7102; B's replies take the way back.
    {
        let mut procs = Procs::default();
        let relay = veth.spawn(
            &veth.b,
            "relay",
            &[
                ("LISTEN_A", v("10.204.0.2:7101")),
                ("LISTEN_B", v("10.204.0.2:7102")),
                ("TO_A", v("10.204.0.1:7201")),
                ("TO_B", v("10.204.0.2:7202")),
                ("DELAY_MS", v("15")),
                ("JITTER_MS", v("3")),
                ("LOSS", v("0.01")),
                ("LIFETIME", v("120")),
            ],
            &mut procs,
        );
        expect(&relay, "READY", Duration::from_secs(10));
        let common = [("PPS", v("500")), ("SIZE", v("200")), ("SECONDS", v("65"))];
        let mut vars_b = vec![
            ("LISTEN", v("10.204.0.2")),
            ("TUNNEL_PORT", v("7202")),
            ("ADVERTISE", v("10.204.0.2:7101")),
        ];
        vars_b.extend(common.iter().cloned());
        let b = veth.spawn(&veth.b, "node", &vars_b, &mut procs);
        let boot = expect(&b, "READY", Duration::from_secs(20));
        let mut vars_a = vec![
            ("LISTEN", v("10.204.0.1")),
            ("TUNNEL_PORT", v("7201")),
            ("ADVERTISE", v("10.204.0.2:7102")),
            ("BOOTSTRAP", boot),
        ];
        vars_a.extend(common.iter().cloned());
        let a = veth.spawn(&veth.a, "node", &vars_a, &mut procs);
        for (name, rx) in [("A", &a), ("B", &b)] {
            let r: serde_json::Value =
                serde_json::from_str(&expect(rx, "RESULT", Duration::from_secs(150))).unwrap();
            println!("node {name}: {r}");
            let f = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{name}: no {k} in {r}"));
            // Truth: RTT = two one-way delays of 15 ms + N(0, 3 ms). The relay's timer
            // (1 ms granularity), the hops and the nodes add up to 2 ms: tolerance 5 %
            // + 2 ms.
            let (p50, p99) = (30.0, 30.0 + 2.326 * 3.0 * 2f64.sqrt());
            within(&format!("{name} RTT p50 ms"), f("rtt_p50_ms"), p50 + 1.0, p50 * 0.05 + 1.0);
            within(&format!("{name} RTT p99 ms"), f("rtt_p99_ms"), p99 + 1.0, p99 * 0.05 + 1.0);
            // RFC 3550 mean |D| of normal delays: 2σ/√π = 3.385 ms; ±20 %.
            let jitter = 2.0 * 3.0 / std::f64::consts::PI.sqrt();
            within(&format!("{name} jitter ms"), f("jitter_mean_ms"), jitter, jitter * 0.2);
            // Loss: 1 %, from the transport counters of ~30 000 packets; ±20 % relative.
            assert!(f("loss_in_packets") > 20_000.0, "{r}");
            within(&format!("{name} loss"), f("loss_in"), 0.01, 0.002);
        }
    }

    // 2. No relay; tbf limits A's side of the veth to 20 Mbit/s. A sends 1400-byte
    //    datagrams at 3 000 a second (34 Mbit/s): B receives what tbf lets through.
    {
        let mut procs = Procs::default();
        let tbf = Command::new("ip")
            .args(["netns", "exec", &veth.a, "tc", "qdisc", "add", "dev", &veth.dev_a, "root"])
            .args(["tbf", "rate", "20mbit", "burst", "32kb", "latency", "50ms"])
            .output()
            .unwrap();
        assert!(tbf.status.success(), "tc: {}", String::from_utf8_lossy(&tbf.stderr));
        let b = veth.spawn(
            &veth.b,
            "node",
            &[
                ("LISTEN", v("10.204.0.2")),
                ("TUNNEL_PORT", v("7302")),
                ("PPS", v("0")),
                ("SIZE", v("1400")),
                // Reports while A still sends (A sends for 17 s): its short window
                // (10 s) is all traffic.
                ("SECONDS", v("15")),
            ],
            &mut procs,
        );
        let boot = expect(&b, "READY", Duration::from_secs(20));
        let _a = veth.spawn(
            &veth.a,
            "node",
            &[
                ("LISTEN", v("10.204.0.1")),
                ("TUNNEL_PORT", v("7301")),
                ("BOOTSTRAP", boot),
                ("PPS", v("3000")),
                ("SIZE", v("1400")),
                ("SECONDS", v("17")),
            ],
            &mut procs,
        );
        let r: serde_json::Value =
            serde_json::from_str(&expect(&b, "RESULT", Duration::from_secs(90))).unwrap();
        println!("node B under tbf: {r}");
        // tbf counts Ethernet frames: a 1400-byte datagram is a 1440-byte UDP payload in
        // the tunnel (16 + 1408 padded + 16) + 8 UDP + 20 IP + 14 Ethernet = 1482 bytes.
        let truth = 20e6 * 1440.0 / 1482.0;
        within("B goodput under tbf, bit/s", r["rx_bps_short"].as_f64().unwrap(), truth, truth * 0.1);
    }
}

const DETOUR_TEST: &str = "a_breached_link_detours_through_a_member_and_comes_back";

/// Milliseconds since the Unix epoch.
fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// `monitor --json` events, read as they come and kept.
struct Events {
    rx: mpsc::Receiver<String>,
    seen: Vec<serde_json::Value>,
}

impl Events {
    /// The first event (seen before or coming within `within`) of kind `kind` with
    /// `key` equal to `value` that `pred` accepts, with its time (Unix ms).
    fn find(
        &mut self,
        kind: &str,
        (key, value): (&str, &str),
        pred: impl Fn(&serde_json::Value) -> bool,
        within: Duration,
    ) -> (u64, serde_json::Value) {
        let ok = |v: &serde_json::Value| v["event"] == kind && v[key] == value && pred(v);
        let found = match self.seen.iter().find(|v| ok(v)) {
            Some(v) => v.clone(),
            None => {
                let mut got = None;
                let seen = &mut self.seen;
                common::wait_line_within(&self.rx, within, |l| {
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else { return false };
                    let hit = ok(&v);
                    if hit {
                        got = Some(v.clone());
                    }
                    seen.push(v);
                    hit
                });
                got.unwrap()
            }
        };
        (found["time_unix_ms"].as_str().unwrap().parse().unwrap(), found)
    }
}

/// One reply of `ping -D`: (Unix ms it came, icmp_seq, round trip ms).
fn ping_reply(line: &str) -> Option<(u64, u64, f64)> {
    let at = line.strip_prefix('[')?.split(']').next()?.parse::<f64>().ok()?;
    let seq = line.split("icmp_seq=").nth(1)?.split_whitespace().next()?.parse().ok()?;
    let rtt = line.split("time=").nth(1)?.split_whitespace().next()?.parse().ok()?;
    Some(((at * 1e3) as u64, seq, rtt))
}

/// Issue 16, parts 1 and 2, as a user runs it: `swarm-node run --vpn` on one LAN (A, B,
/// C, and later D), the seeded relay on the direct A-B tunnel path only (nftables in A's
/// namespace sends A's tunnel datagrams for B to it), A pinging B's overlay address ten
/// times a second throughout, and holding a gang of two (B and C, each with a GPU; D
/// comes after, with one too) limited to 20 ms from A and between members.
///
/// When the relay starts impairing (40 ms each way, 1 % loss), A's tunnel to B breaches
/// its SLA and its traffic goes via C or D within 2 s of the breach event; the pings' round
/// trip falls back under the 50 ms target while A's link monitor still measures the
/// direct path; the intermediate counts the path it relays. When A's measured RTT to B passes the
/// gang's 20 ms, A's placement event names B, the metric and the value, with D as the
/// alternative, within one judge interval (200 ms, + 100 ms for this test's polling).
/// When the relay is clean again, the placement link recovers and the traffic comes back
/// to the direct path within the judge's recovery time (short window 10 s + hold 10 s,
/// + 5 s), not before the hold.
#[test]
#[ignore = "needs root, iproute2, nftables and ping; `.ci/run` runs it as root with --include-ignored"]
fn a_breached_link_detours_through_a_member_and_comes_back() {
    if let Ok(role) = std::env::var(ROLE) {
        return run_role(&role);
    }
    let lan = common::Lan::new(4);
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let mode = path("mode");
    std::fs::write(&mode, "clean").unwrap();

    // The relay sits in B's namespace: A's datagrams for B (10.204.0.2:7200) reach it at
    // 7301 (DNAT in A's namespace) and leave from 7302 to B; B's replies to 7302 go back
    // to A from 7301 (which conntrack shows A as coming from B). B's own datagrams straight
    // to A are dropped, so the whole A-B tunnel takes the relay.
    let nft = "table ip detour {
            chain out { type nat hook output priority -100; ip daddr 10.204.0.2 udp dport 7200 dnat to 10.204.0.2:7301; }
            chain in { type filter hook input priority 0; ip saddr 10.204.0.2 udp sport 7200 ct state new drop; }
        }";
    let mut c = lan.exec(0, "nft");
    c.args(["-f", "-"]).stdin(Stdio::piped());
    let mut child = c.spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), nft.as_bytes()).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success(), "nft rules in A's namespace");

    let mut relay = lan.exec(1, std::env::current_exe().unwrap().to_str().unwrap());
    relay
        .args(["--exact", DETOUR_TEST, "--include-ignored", "--nocapture", "--test-threads", "1"])
        .env(ROLE, "relay")
        .envs([
            ("LISTEN_A", "10.204.0.2:7301"),
            ("LISTEN_B", "10.204.0.2:7302"),
            ("TO_A", "10.204.0.1:7200"),
            ("TO_B", "10.204.0.2:7200"),
            ("DELAY_MS", "40"),
            ("JITTER_MS", "0"),
            ("LOSS", "0.01"),
            ("LIFETIME", "300"),
            ("MODE_FILE", mode.as_str()),
        ]);
    let (_relay, relay_rx) = common::spawn_in(relay, &[]);
    common::wait_line(&relay_rx, |l| l.contains("READY relay"));

    let node = |i: usize, bootstrap: Option<&str>| {
        let mut c = lan.node(i);
        let listen = format!("/ip4/10.204.0.{}/tcp/4100", i + 1);
        let gpus = if i == 0 { "none" } else { "1xA100-80GB" };
        c.args(["run", "--identity", &path(&format!("{i}.key")), "--gpus", gpus, "--vpn"]);
        c.args(["--listen", &listen, "--tunnel-port", "7200", "--control", &path(&format!("{i}.sock"))]);
        c.args(["--heartbeat", "1s", "--ttl", "5s", "--refresh", "500ms"]);
        if let Some(b) = bootstrap {
            c.args(["--bootstrap", b]);
        }
        let (guard, rx) = common::spawn_in(c, &[]);
        let id =
            common::wait_line(&rx, |l| l.starts_with("peer id ")).trim_start_matches("peer id ").to_owned();
        let overlay = common::wait_line(&rx, |l| l.starts_with("overlay "));
        let v6 = overlay.split_whitespace().nth(1).unwrap().to_owned();
        let addr = common::wait_line(&rx, |l| l.starts_with("listening on /ip4/"));
        (guard, rx, id, v6, addr.trim_start_matches("listening on ").to_owned())
    };
    let (_b, b_rx, b_id, b_v6, boot) = node(1, None);
    let (_c, c_rx, c_id, _, _) = node(2, Some(&boot));
    let (_a, a_rx, a_id, _, _) = node(0, Some(&boot));
    for rx in [&a_rx, &b_rx, &c_rx] {
        common::wait_line(rx, |l| l.starts_with("3 records"));
    }
    let control = |i: usize, args: &[&str]| -> serde_json::Value {
        let sock = path(&format!("{i}.sock"));
        let out = common::run(&[args, &["--control", sock.as_str(), "--json"]].concat());
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    };
    let tunnel_of = |i: usize, peer: &str| -> serde_json::Value {
        let peers = control(i, &["peers"]);
        peers.as_array().and_then(|a| a.iter().find(|p| p["peer"] == peer).cloned()).unwrap_or_default()
    };
    let start = Instant::now();
    while [tunnel_of(0, &b_id), tunnel_of(0, &c_id), tunnel_of(2, &b_id)]
        .iter()
        .any(|p| p["tunnel"]["state"] != "up")
    {
        assert!(start.elapsed() < Duration::from_secs(30), "tunnels come up");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut monitor = lan.exec(0, common::swarm_node_path().to_str().unwrap());
    monitor.args(["monitor", "--json", "--control", &path("0.sock")]);
    let (_monitor, events) = common::spawn_in(monitor, &[]);
    let mut events = Events { rx: events, seen: Vec::new() };
    // The gang: B and C (A has no GPU), within 20 ms of A and of each other.
    let sock0 = path("0.sock");
    // Placed once A's link table has summarised its new links to B and C (each second;
    // the records arrive by view sync before that).
    let place = || {
        common::run(&[
            "place",
            "--control",
            &sock0,
            "--id",
            "gang",
            "--gpus",
            "1",
            "--nodes",
            "2",
            "--max-rtt",
            "20ms",
            "--member-max-rtt",
            "20ms",
            "--lease",
            "300s",
            "--json",
        ])
    };
    let start = Instant::now();
    let mut placed = place();
    while !placed.status.success() && start.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(250));
        placed = place();
    }
    assert!(placed.status.success(), "{}", String::from_utf8_lossy(&placed.stderr));
    let placed: serde_json::Value = serde_json::from_slice(&placed.stdout).unwrap();
    let mut members: Vec<&str> =
        placed["nodes"].as_array().unwrap().iter().map(|n| n["peer"].as_str().unwrap()).collect();
    members.sort();
    let mut want = vec![b_id.as_str(), c_id.as_str()];
    want.sort();
    assert_eq!(members, want, "{placed}");
    // D, a node that could take a member's place.
    let (_d, d_rx, d_id, _, _) = node(3, Some(&boot));
    for rx in [&a_rx, &d_rx] {
        common::wait_line(rx, |l| l.starts_with("4 records"));
    }
    while tunnel_of(0, &d_id)["tunnel"]["state"] != "up" {
        assert!(start.elapsed() < Duration::from_secs(60), "A's tunnel to D comes up");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut ping = lan.exec(0, "ping");
    ping.args(["-D", "-n", "-i", "0.1", "-W", "1", &b_v6]);
    let (_ping, pings) = common::spawn_in(ping, &[]);
    // Links measured for a while, and summaries gossiped, before the impairment.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(tunnel_of(0, &b_id)["tunnel"]["path"], "direct");

    // When A's own measurement of its RTT to B (the short window's median, which the
    // placement's limit is judged on) first shows over 20 ms.
    let crossed = std::sync::Arc::new(std::sync::Mutex::new(None::<(u64, f64)>));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (crossed, stop, sock0, b_id) = (crossed.clone(), stop.clone(), sock0.clone(), b_id.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let out = common::run(&["peers", "--control", &sock0, "--json"]);
                let at = unix_ms();
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
                let rtt = v
                    .as_array()
                    .and_then(|a| a.iter().find(|p| p["peer"] == b_id.as_str()))
                    .and_then(|p| p["link"]["rtt_p50_ms"].as_f64());
                if let Some(rtt) = rtt.filter(|r| *r > 20.0) {
                    crossed.lock().unwrap().get_or_insert((at, rtt));
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    std::fs::write(&mode, "impair").unwrap();
    let impaired_at = unix_ms();
    let (breach, degraded) = events.find("link_degraded", ("peer", &b_id), |_| true, Duration::from_secs(20));
    // Signed: on a busy machine a jitter breach may come just before the impairment.
    println!("breach {} ms after the impairment: {degraded}", breach as i64 - impaired_at as i64);
    let (detour, path_event) =
        events.find("tunnel_path", ("peer", &b_id), |v| v["path"] == "detour", Duration::from_secs(10));
    println!("detour {} ms after the breach: {path_event}", detour.saturating_sub(breach));
    // Through C or D: both have clean links to A and B.
    let via = path_event["via"].as_str().unwrap().to_owned();
    let via_host = if via == c_id { 2 } else { 3 };
    assert!(via == c_id || via == d_id, "the detour goes through C or D: {path_event}");
    assert!(detour.saturating_sub(breach) <= 2_000, "the detour within 2 s of the breach");
    let tunnel = tunnel_of(0, &b_id);
    assert_eq!(
        (tunnel["tunnel"]["path"].as_str(), tunnel["tunnel"]["via"].as_str()),
        (Some("detour"), Some(via.as_str())),
        "{tunnel}"
    );
    let peers_text =
        String::from_utf8_lossy(&common::run(&["peers", "--control", &path("0.sock")]).stdout).into_owned();
    println!("{peers_text}");
    assert!(peers_text.contains(" via …"), "the peers table shows the detour: {peers_text}");
    let via_status = control(via_host, &["status"]);
    println!("the intermediate relays: {}", via_status["relayed_paths"]);
    assert!(
        via_status["relayed_paths"].as_u64().unwrap_or(0) >= 1,
        "the intermediate counts the path it relays: {via_status}"
    );

    // Traffic on the detour for 8 s, then the relay is clean again. Meanwhile the link
    // monitor still measures the direct path (its probes stay there).
    std::thread::sleep(Duration::from_secs(5));
    let measured = tunnel_of(0, &b_id)["link"]["rtt_p50_ms"].as_f64().unwrap_or(0.0);
    println!("A's link to B while detoured: RTT p50 {measured:.2} ms (the direct path)");
    assert!(measured > 60.0, "the direct path is still measured while the traffic is detoured");
    std::thread::sleep(Duration::from_secs(3));

    // The placement's event: B, from the origin, its RTT over the gang's 20 ms, D offered.
    let (placement_at, placement_event) =
        events.find("placement_link_breached", ("member", &b_id), |_| true, Duration::from_secs(20));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    poller.join().unwrap();
    let (crossed_at, crossed_rtt) = crossed.lock().unwrap().expect("A's RTT to B passed 20 ms");
    println!("placement event {placement_event}");
    println!(
        "placement event {} ms after A's RTT to B was first seen over 20 ms ({crossed_rtt:.2} ms), {} ms after the impairment",
        placement_at as i64 - crossed_at as i64,
        placement_at - impaired_at
    );
    assert_eq!(placement_event["task"], "gang");
    assert_eq!(
        (placement_event["other"].as_str(), placement_event["from_origin"].as_bool()),
        (Some(a_id.as_str()), Some(true))
    );
    assert_eq!(
        (placement_event["metric"].as_str(), placement_event["limit"].as_f64()),
        (Some("rtt"), Some(20.0))
    );
    assert!(placement_event["value"].as_f64().unwrap() > 20.0, "{placement_event}");
    let alternatives: Vec<&str> = placement_event["alternatives"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["peer"].as_str())
        .collect();
    assert_eq!(alternatives, vec![d_id.as_str()], "D is the alternative: {placement_event}");
    assert!(
        placement_at <= crossed_at + 300,
        "the placement event within one judge interval of the crossing"
    );

    std::fs::write(&mode, "clean").unwrap();
    let cleaned_at = unix_ms();
    let (back, _) =
        events.find("tunnel_path", ("peer", &b_id), |v| v["path"] == "direct", Duration::from_secs(40));
    let (recovered_at, _) =
        events.find("placement_link_recovered", ("member", &b_id), |_| true, Duration::from_secs(20));
    println!("placement link recovered {} ms after the relay is clean", recovered_at - cleaned_at);
    println!(
        "direct again {} ms after the relay is clean ({} ms after the detour)",
        back - cleaned_at,
        back - detour
    );
    assert!(back - cleaned_at <= 25_000, "back to direct within the recovery time");
    assert!(back - detour >= 10_000, "a path is held at least the judge's recovery hold");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(tunnel_of(0, &b_id)["tunnel"]["path"], "direct");

    // The pings: round trips on the detour, and losses around the two switches.
    let replies: Vec<(u64, u64, f64)> = pings.try_iter().filter_map(|l| ping_reply(&l)).collect();
    assert!(replies.len() > 200, "{} ping replies", replies.len());
    let (first_seq, last_seq) = (replies[0].1, replies[replies.len() - 1].1);
    let seqs: std::collections::HashSet<u64> = replies.iter().map(|r| r.1).collect();
    // A reply's send time: when it came less its round trip.
    let sent_at = |r: &(u64, u64, f64)| r.0 - r.2 as u64;
    let rtts = |from: u64, to: u64| -> Vec<f64> {
        let mut v: Vec<f64> =
            replies.iter().filter(|r| (from..to).contains(&sent_at(r))).map(|r| r.2).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let quantile = |v: &[f64], q: f64| v[((v.len() - 1) as f64 * q) as usize];
    let before = rtts(impaired_at - 5_000, impaired_at);
    let on_detour = rtts(detour + 1_000, cleaned_at);
    let after = rtts(back + 1_000, unix_ms());
    println!(
        "ping RTT ms: clean direct p50 {:.2} ({} replies); on the detour p50 {:.2} p90 {:.2} max {:.2} ({} replies); direct again p50 {:.2}",
        quantile(&before, 0.5),
        before.len(),
        quantile(&on_detour, 0.5),
        quantile(&on_detour, 0.9),
        on_detour[on_detour.len() - 1],
        on_detour.len(),
        quantile(&after, 0.5),
    );
    assert!(quantile(&on_detour, 0.9) < 50.0, "traffic on the detour is back under the 50 ms target");
    // Sequence numbers are sent every 100 ms: a missing one sent within 1 s of a switch
    // was lost there. The relay drops 1 % each way (about 0.4 of the 20 pings around the
    // first switch); the second switch happens with the relay clean.
    let seq_at = |t: u64| replies.iter().min_by_key(|r| sent_at(r).abs_diff(t)).map(|r| r.1).unwrap();
    for (name, t) in [("detour", detour), ("direct", back)] {
        let s = seq_at(t);
        let lost = (s.saturating_sub(10).max(first_seq)..=(s + 10).min(last_seq))
            .filter(|q| !seqs.contains(q))
            .count();
        println!("pings lost within 1 s of the switch to {name}: {lost}");
        assert!(lost <= 1, "no loss at the switch to {name} beyond the relay's own");
    }
    let lost_total = (first_seq..=last_seq).filter(|q| !seqs.contains(q)).count();
    println!("pings: {} sent, {} lost in all", last_seq - first_seq + 1, lost_total);
}
