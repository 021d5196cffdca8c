//! The mesh VPN as a user runs it: `swarm-node run --vpn` on hosts in network namespaces,
//! reached with ping and TCP at their overlay addresses. Needs root, iproute2, ping and
//! iperf3; `.ci/run` installs them and runs these with `--include-ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{ip, spawn_in, swarm_node, wait_line, Guard, Lan};

/// A node's overlay addresses, as `run` prints them: `overlay <IPv6> and <IPv4> on <dev>`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Overlay {
    v6: String,
    v4: String,
}

fn parse_overlay(line: &str) -> Overlay {
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!((f.first(), f.get(2)), (Some(&"overlay"), Some(&"and")), "{line}");
    Overlay { v6: f[1].to_owned(), v4: f[3].to_owned() }
}

struct Running {
    guard: Guard,
    rx: std::sync::mpsc::Receiver<String>,
    overlay: Overlay,
    listen: String,
}

fn start(lan: &Lan, i: usize, key: &std::path::Path, bootstrap: Option<&str>) -> Running {
    start_with(lan, i, key, bootstrap, &[])
}

fn start_with(
    lan: &Lan,
    i: usize,
    key: &std::path::Path,
    bootstrap: Option<&str>,
    extra: &[&str],
) -> Running {
    let listen = format!("/ip4/10.204.0.{}/tcp/4100", i + 1);
    let mut args = vec![
        "run",
        "--identity",
        key.to_str().unwrap(),
        "--listen",
        &listen,
        "--refresh",
        "500ms",
        "--heartbeat",
        "1s",
        "--ttl",
        "5s",
        "--gpus",
        "none",
        "--vpn",
    ];
    if let Some(b) = bootstrap {
        args.extend(["--bootstrap", b]);
    }
    args.extend_from_slice(extra);
    let (guard, rx) = spawn_in(lan.node(i), &args);
    let overlay = parse_overlay(&wait_line(&rx, |l| l.starts_with("overlay ")));
    let listen =
        wait_line(&rx, |l| l.starts_with("listening on ")).trim_start_matches("listening on ").to_owned();
    Running { guard, rx, overlay, listen }
}

fn output(mut c: Command) -> Output {
    c.output().unwrap()
}

/// Pings `addr` from host `i` until 3 answers come in a row, for at most 20 s (the
/// first packets wait for the tunnel's handshake, and a peer's record may be a
/// heartbeat late) or `within`.
fn ping(lan: &Lan, i: usize, addr: &str) {
    ping_within(lan, i, addr, Duration::from_secs(20));
}

fn ping_within(lan: &Lan, i: usize, addr: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let mut c = lan.exec(i, "ping");
        c.args(["-c", "3", "-i", "0.2", "-W", "2", addr]);
        let out = output(c);
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "host {i} cannot ping {addr}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Sends 16 MiB over TCP from host `from` to an iperf3 server on host `to` at `addr`.
fn tcp_transfer(lan: &Lan, to: usize, from: usize, addr: &str) {
    let mut server = lan.exec(to, "iperf3");
    server.args(["-s", "-1"]).stdout(std::process::Stdio::null());
    let _server = Guard(server.spawn().unwrap());
    std::thread::sleep(Duration::from_millis(500));
    let mut client = lan.exec(from, "iperf3");
    client.args(["-c", addr, "-n", "16M"]);
    let out = output(client);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("receiver"), "TCP to {addr} failed: {text}");
}

fn stop(node: &mut Running) {
    let pid = node.guard.0.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    wait_line(&node.rx, |l| l == "shutting down");
    assert!(node.guard.0.wait().unwrap().success());
}

fn has_device(lan: &Lan, i: usize, name: &str) -> bool {
    Command::new("ip").args(["-n", &lan.hosts[i], "link", "show", name]).output().unwrap().status.success()
}

#[test]
#[ignore = "needs root, iproute2, ping and iperf3; `.ci/run` runs it as root with --include-ignored"]
fn three_vpn_nodes_reach_each_other_at_their_overlay_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let lan = Lan::new(3);
    let keys: Vec<_> = (0..3).map(|i| dir.path().join(format!("n{i}.key"))).collect();
    let a = start(&lan, 0, &keys[0], None);
    let b = start(&lan, 1, &keys[1], Some(&a.listen));
    let mut c = start(&lan, 2, &keys[2], Some(&a.listen));
    for n in [&a, &b, &c] {
        wait_line(&n.rx, |l| l.starts_with("3 records"));
    }
    let overlays = [a.overlay.clone(), b.overlay.clone(), c.overlay.clone()];
    for (i, j) in [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)] {
        ping(&lan, i, &overlays[j].v4);
        ping(&lan, i, &overlays[j].v6);
    }
    tcp_transfer(&lan, 0, 2, &overlays[0].v4);
    tcp_transfer(&lan, 1, 0, &overlays[1].v6);

    // A second node cannot take the device name: a clear error, exit status 1, and the
    // first node's device still works.
    let mut second = lan.node(0);
    second.args(["run", "--identity", dir.path().join("x.key").to_str().unwrap(), "--gpus", "none", "--vpn"]);
    second.args(["--listen", "/ip4/127.0.0.1/tcp/0", "--tunnel-port", "0"]);
    let out = output(second);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("swarm0") && err.contains("exists already"), "{err}");
    ping(&lan, 1, &overlays[0].v4);

    // A restart with the same identity keeps both addresses; the device goes with the
    // process and comes back with it.
    stop(&mut c);
    assert!(!has_device(&lan, 2, "swarm0"), "the device outlived its node");
    let c = start(&lan, 2, &keys[2], Some(&a.listen));
    assert_eq!(c.overlay, overlays[2]);
    ping(&lan, 0, &overlays[2].v4);
    ping(&lan, 1, &overlays[2].v6);
    drop((a, b, c));
    // Killed outright, a node leaves no device either (the kernel removes it with the
    // descriptor).
    for i in 0..3 {
        assert!(!has_device(&lan, i, "swarm0"), "host {i} kept its device");
    }
}

#[test]
#[ignore = "needs root and iproute2 (ip netns); `.ci/run` runs it as root with --include-ignored"]
fn vpn_setup_errors_are_clear_and_leave_nothing_behind() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let lan = Lan::new(1);
    let key = dir.path().join("n.key");
    let key = key.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut c = lan.node(0);
        c.args(["run", "--identity", key, "--gpus", "none", "--vpn"]).args(extra);
        output(c)
    };
    let expect = |out: Output, words: &[&str]| {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{err}");
        for w in words {
            assert!(err.contains(w), "{w:?} missing from: {err}");
        }
    };
    // A device name Linux does not take.
    expect(run(&["--vpn-dev", "a/b"]), &["invalid VPN device name"]);
    // A name another device has.
    ip(&["-n", &lan.hosts[0], "link", "add", "taken0", "type", "veth", "peer", "name", "taken1"]);
    expect(run(&["--vpn-dev", "taken0"]), &["taken0", "exists already"]);
    // A range the host routes elsewhere already.
    ip(&["-n", &lan.hosts[0], "addr", "add", "100.64.0.1/10", "dev", "taken0"]);
    ip(&["-n", &lan.hosts[0], "link", "set", "taken0", "up"]);
    ip(&["-n", &lan.hosts[0], "link", "set", "taken1", "up"]);
    expect(run(&[]), &["100.64.0.0/10", "taken0", "another IPv4 range"]);
    // An MTU out of range.
    expect(run(&["--vpn-ipv4", "none", "--vpn-mtu", "100"]), &["MTU"]);
    assert!(!has_device(&lan, 0, "swarm0"), "a refused start left its device");

    // Without CAP_NET_ADMIN (uid 65534, no capabilities).
    let bin = dir.path().join("swarm-node");
    std::fs::copy(swarm_node().get_program(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = lan.exec(0, "setpriv");
    c.args(["--reuid", "65534", "--regid", "65534", "--clear-groups", "--inh-caps=-all"])
        .arg(&bin)
        .args(["run", "--identity", dir.path().join("u.key").to_str().unwrap(), "--gpus", "none"])
        .args(["--vpn", "--vpn-ipv4", "none"]);
    expect(output(c), &["CAP_NET_ADMIN"]);
    assert!(!has_device(&lan, 0, "swarm0"));
}

/// A stock WireGuard daemon brought up by wg-quick in a namespace; taken down (and its
/// daemon killed) on drop, also when the test fails.
struct WgQuick {
    ns: String,
    conf: std::path::PathBuf,
    pids: Vec<String>,
}

impl WgQuick {
    fn up(lan: &Lan, i: usize, conf: &std::path::Path, implementation: &str) -> WgQuick {
        let mut c = lan.exec(i, "wg-quick");
        c.args(["up", conf.to_str().unwrap()])
            .env("WG_QUICK_USERSPACE_IMPLEMENTATION", implementation)
            .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")
            .env("WG_SUDO", "true")
            .env("PATH", path_with_cargo_bin());
        let out = output(c);
        let mut up = WgQuick { ns: lan.hosts[i].clone(), conf: conf.to_owned(), pids: Vec::new() };
        let mut ss = lan.exec(i, "ss");
        ss.arg("-Huanp");
        let text = String::from_utf8_lossy(&output(ss).stdout).into_owned();
        up.pids = text.split("pid=").skip(1).filter_map(|s| s.split(',').next()).map(str::to_owned).collect();
        assert!(out.status.success(), "wg-quick up: {}", String::from_utf8_lossy(&out.stderr));
        up
    }
}

impl Drop for WgQuick {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "exec", &self.ns, "wg-quick", "down", self.conf.to_str().unwrap()])
            .env("WG_SUDO", "true")
            .output();
        for pid in &self.pids {
            let _ = Command::new("kill").arg(pid).status();
        }
        // Wait for the daemons to go (SIGKILL after 5 s), so none outlives the test.
        for pid in &self.pids {
            let proc = std::path::PathBuf::from(format!("/proc/{pid}"));
            let deadline = Instant::now() + Duration::from_secs(5);
            while proc.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if proc.exists() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
    }
}

fn path_with_cargo_bin() -> String {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    format!("{}:{home}/.cargo/bin", std::env::var("PATH").unwrap_or_default())
}

fn wg(args: &[&str], input: Option<&str>) -> String {
    use std::io::Write as _;
    let mut c = Command::new("wg");
    c.args(args).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
    let mut child = c.spawn().expect("wireguard-tools is installed");
    if let Some(input) = input {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A stock WireGuard peer (`implementation` under wg-quick, from the configuration `vpn
/// add-peer` printed) reaches its gateway and, through it, another swarm node, over
/// IPv4 and IPv6, with ping and TCP; the other node reaches it back.
fn stock_peer_joins_through_its_gateway(implementation: &str, ifname: &str) {
    let dir = tempfile::tempdir().unwrap();
    let lan = Lan::new(3);
    let sock = dir.path().join("gw.sock");
    let (k0, k1) = (dir.path().join("n0.key"), dir.path().join("n1.key"));
    // A fixed tunnel port: the stock peer's configuration names it, across restarts.
    let gw_args = ["--control", sock.to_str().unwrap(), "--tunnel-port", "51820"];
    let mut gw = start_with(&lan, 0, &k0, None, &gw_args);
    let other = start(&lan, 1, &k1, Some(&gw.listen));
    for n in [&gw, &other] {
        wait_line(&n.rx, |l| l.starts_with("2 records"));
    }
    let private = wg(&["genkey"], None);
    let public = wg(&["pubkey"], Some(&private));
    let out = common::run(&[
        "vpn",
        "add-peer",
        "--control",
        sock.to_str().unwrap(),
        "--pubkey",
        &public,
        "--name",
        "laptop",
    ]);
    let conf = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for field in [
        "[Interface]",
        "Address = ",
        "MTU = 1420",
        "[Peer]",
        "PresharedKey = ",
        "Endpoint = 10.204.0.1:",
        "AllowedIPs = 100.64.0.0/10, fd",
        "PersistentKeepalive = 25",
    ] {
        assert!(conf.contains(field), "{field:?} missing from:\n{conf}");
    }
    let addresses = conf.lines().find_map(|l| l.strip_prefix("Address = ")).unwrap().to_owned();
    let (v4, v6) = addresses.split_once(", ").unwrap();
    let (v4, v6) = (v4.trim_end_matches("/32").to_owned(), v6.trim_end_matches("/128").to_owned());
    let conf = conf
        .lines()
        .map(
            |l| if l.starts_with("PrivateKey = ") { format!("PrivateKey = {private}") } else { l.to_owned() },
        )
        .collect::<Vec<_>>()
        .join("\n");
    let path = dir.path().join(format!("{ifname}.conf"));
    std::fs::write(&path, conf + "\n").unwrap();
    let _up = WgQuick::up(&lan, 2, &path, implementation);
    for addr in [&gw.overlay.v4, &gw.overlay.v6, &other.overlay.v4, &other.overlay.v6] {
        ping(&lan, 2, addr);
    }
    ping(&lan, 1, &v4);
    ping(&lan, 1, &v6);
    tcp_transfer(&lan, 1, 2, &other.overlay.v4);
    tcp_transfer(&lan, 2, 1, &v6);
    // The gateway lists it, with a handshake and traffic.
    let out = common::run(&["vpn", "peers", "--control", sock.to_str().unwrap(), "--json"]);
    let peers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(peers[0]["public_key"], public.as_str());
    assert_eq!(peers[0]["ipv4"], v4.as_str());
    assert!(peers[0]["rx_bytes"].as_u64().unwrap() > 1 << 20, "{peers}");
    assert!(peers[0].get("preshared_key").is_none(), "the listing shows no secret");
    // The gateway restarts: its stock peer is still registered, at the same addresses,
    // and its tunnel comes back (the peer retries its handshake after 15 s of silence).
    stop(&mut gw);
    let _gw = start_with(&lan, 0, &k0, Some(&other.listen), &gw_args);
    ping_within(&lan, 2, &other.overlay.v4, Duration::from_secs(40));
    ping(&lan, 1, &v6);
    let out = common::run(&["vpn", "peers", "--control", sock.to_str().unwrap(), "--json"]);
    let peers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((peers[0]["ipv4"].as_str(), peers[0]["name"].as_str()), (Some(v4.as_str()), Some("laptop")));
    // Removed, it is unreachable.
    let out = common::run(&["vpn", "remove-peer", "--control", sock.to_str().unwrap(), "--pubkey", &public]);
    assert!(out.status.success());
    let mut c = lan.exec(2, "ping");
    c.args(["-c", "2", "-W", "1", &other.overlay.v4]);
    assert!(!output(c).status.success(), "a removed stock peer still reaches the swarm");
}

#[test]
#[ignore = "needs root, iproute2, ping, iperf3, wireguard-tools and wireguard-go; `.ci/run` runs it as root"]
fn a_wireguard_go_peer_joins_through_its_gateway() {
    stock_peer_joins_through_its_gateway("wireguard-go", "swgo");
}

#[test]
#[ignore = "needs root, iproute2, ping, iperf3, wireguard-tools and boringtun-cli; `.ci/run` runs it as root"]
fn a_boringtun_peer_joins_through_its_gateway() {
    stock_peer_joins_through_its_gateway("boringtun-cli", "swbt");
}

/// The Python of the virtualenv that holds Ray: `$SWARM_RAY_VENV`, by default
/// `/tmp/swarm-ray-venv` (`.ci/run` makes it: `python3 -m venv ... && pip install ray`).
fn ray_venv() -> std::path::PathBuf {
    let venv = std::path::PathBuf::from(
        std::env::var("SWARM_RAY_VENV").unwrap_or_else(|_| "/tmp/swarm-ray-venv".into()),
    );
    assert!(
        venv.join("bin/ray").exists(),
        "Ray is not installed in {venv:?}: python3 -m venv {venv:?} && {venv:?}/bin/pip install ray"
    );
    venv
}

/// A process started in its own process group, which is killed whole on drop (Ray's
/// `start --block` leaves daemons behind when only its own process goes).
struct Group(std::process::Child);

impl Drop for Group {
    fn drop(&mut self) {
        let pgid = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-TERM", "--", &pgid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &pgid]).status();
        let _ = self.0.wait();
    }
}

fn ray_start(lan: &Lan, i: usize, venv: &std::path::Path, args: &[&str], temp: &std::path::Path) -> Group {
    use std::os::unix::process::CommandExt as _;
    let mut c = lan.exec(i, venv.join("bin/ray").to_str().unwrap());
    c.arg("start")
        .args(args)
        .args(["--block", "--disable-usage-stats", "--num-cpus", "1", "--object-store-memory", "200000000"])
        .arg("--temp-dir")
        .arg(temp)
        .env("RAY_USAGE_STATS_ENABLED", "0")
        .env("PATH", format!("{}:{}", venv.join("bin").display(), std::env::var("PATH").unwrap_or_default()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    Group(c.spawn().unwrap())
}

/// Ray across the overlay: a head on one VPN node and a worker on another, each started
/// with `--node-ip-address` set to its overlay IPv4 address; a task that must run on the
/// worker returns a 64 MiB object to the driver on the head.
#[test]
#[ignore = "needs root, iproute2 and Ray in a virtualenv; `.ci/run` installs it and runs this as root"]
fn ray_runs_across_the_overlay() {
    let venv = ray_venv();
    let dir = tempfile::tempdir().unwrap();
    let lan = Lan::new(2);
    let a = start(&lan, 0, &dir.path().join("a.key"), None);
    let b = start(&lan, 1, &dir.path().join("b.key"), Some(&a.listen));
    ping(&lan, 1, &a.overlay.v4);
    // Short socket paths: Ray's Unix sockets live under the temp dir.
    let id = std::process::id();
    let (ta, tb) = (
        std::path::PathBuf::from(format!("/tmp/rs{id}a")),
        std::path::PathBuf::from(format!("/tmp/rs{id}b")),
    );
    let _head = ray_start(
        &lan,
        0,
        &venv,
        &["--head", "--node-ip-address", &a.overlay.v4, "--port", "6379", "--include-dashboard", "false"],
        &ta,
    );
    let head = format!("{}:6379", a.overlay.v4);
    let _worker = ray_start(
        &lan,
        1,
        &venv,
        &["--address", &head, "--node-ip-address", &b.overlay.v4, "--resources", r#"{"swarm_worker": 1}"#],
        &tb,
    );
    let script = format!(
        r#"
import ray, time
ray.init(address="{head}", _node_ip_address="{a4}")
deadline = time.time() + 90
while time.time() < deadline and not any(n["Alive"] and n["Resources"].get("swarm_worker") for n in ray.nodes()):
    time.sleep(1)

@ray.remote(resources={{"swarm_worker": 1}})
def big():
    return ray.util.get_node_ip_address(), bytes(64 << 20)

where, data = ray.get(big.remote(), timeout=120)
print("ran on", where, "returned", len(data))
"#,
        a4 = a.overlay.v4
    );
    let mut driver = lan.exec(0, venv.join("bin/python").to_str().unwrap());
    driver.args(["-c", &script]).env("RAY_USAGE_STATS_ENABLED", "0");
    let out = output(driver);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the Ray driver failed: {text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("ran on {} returned {}", b.overlay.v4, 64 << 20)), "{text}");
    drop((_worker, _head));
    let _ = std::fs::remove_dir_all(&ta);
    let _ = std::fs::remove_dir_all(&tb);
}
