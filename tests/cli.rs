//! The `swarm-node` program as a user runs it. `cargo test` builds the example first.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn swarm_node() -> Command {
    // target/<profile>/deps/cli-<hash> -> target/<profile>/examples/swarm-node
    let exe = std::env::current_exe().unwrap();
    let bin: PathBuf = exe.parent().unwrap().parent().unwrap().join("examples").join("swarm-node");
    assert!(bin.exists(), "{bin:?} is built by `cargo test`");
    Command::new(bin)
}

fn run(args: &[&str]) -> Output {
    swarm_node().args(args).output().unwrap()
}

#[test]
fn demo_json_reports_a_converged_mesh() {
    let out = run(&["demo", "--nodes", "4", "--json", "--transport", "tcp", "--heartbeat", "1s"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["converged"], true);
    assert!(v["converge_ms"].as_u64().is_some());
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 4);
    for n in nodes {
        assert_eq!(n["records_seen"], 4);
        assert!(n["id"].as_str().unwrap().starts_with("12D3Koo"));
        assert!(n["addresses"][0].as_str().unwrap().starts_with("/ip4/127.0.0.1/tcp/"));
        assert!(n["gpus"].is_string());
        assert_eq!(n["tunnels_up"], 3, "a WireGuard tunnel to each other node");
    }
    let rtt = v["tunnel_rtt_from_node_0"].as_array().unwrap();
    assert_eq!(rtt.len(), 3);
    for r in rtt {
        let ms = r["rtt_ms"].as_f64().expect("every datagram echoed over the tunnel");
        assert!(ms > 0.0 && ms < 1000.0, "{ms}");
    }
}

#[test]
fn bad_flags_are_clear_errors() {
    let cases: &[(&[&str], &str)] = &[
        (&["demo", "--nodes", "1"], "--nodes"),
        (&["demo", "--nodes", "many"], "many"),
        (&["demo", "--timeout", "5 parsecs"], "5 parsecs"),
        (&["run", "--gpus", "2xA100-80GB,1xA100-80TB"], "1xA100-80TB"),
        (&["run", "--listen", "not-an-address"], "not-an-address"),
        (&["fly"], "fly"),
    ];
    for (args, needle) in cases {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn bad_values_found_at_start_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("node.key");
    let out = run(&["run", "--namespace", "Bad Name", "--identity", key.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid namespace \"Bad Name\""));

    std::fs::write(&key, b"garbage").unwrap();
    let out = run(&["run", "--identity", key.to_str().unwrap(), "--listen", "/ip4/127.0.0.1/tcp/0"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("node.key") && err.contains("not a valid"), "{err}");
    assert_eq!(std::fs::read(&key).unwrap(), b"garbage", "a corrupt key is never replaced");
}

/// Kills the child on drop, so a failing test leaves no process behind.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_node(args: &[&str]) -> (Guard, mpsc::Receiver<String>) {
    let mut child = swarm_node().args(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
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
fn wait_line(rx: &mpsc::Receiver<String>, pred: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
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

#[test]
fn two_run_nodes_find_each_other_and_stop_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let key_a = dir.path().join("a.key");
    let key_b = dir.path().join("b.key");
    let common =
        ["--listen", "/ip4/127.0.0.1/tcp/0", "--refresh", "500ms", "--heartbeat", "1s", "--ttl", "5s"];
    let mut args_a = vec!["run", "--identity", key_a.to_str().unwrap(), "--gpus", "2xA100-80GB"];
    args_a.extend_from_slice(&common);
    let (mut a, rx_a) = spawn_node(&args_a);
    let addr = wait_line(&rx_a, |l| l.starts_with("listening on "));
    let addr = addr.trim_start_matches("listening on ").to_owned();

    let mut args_b =
        vec!["run", "--identity", key_b.to_str().unwrap(), "--bootstrap", &addr, "--label", "region=test"];
    args_b.extend_from_slice(&common);
    let (mut b, rx_b) = spawn_node(&args_b);
    wait_line(&rx_b, |l| l.starts_with("2 records, 1 connected"));
    let row = wait_line(&rx_a, |l| l.contains("region=test"));
    assert!(row.contains("conn"), "{row}");
    wait_line(&rx_b, |l| l.contains("2xA100-80GB"));

    for guard in [&mut a, &mut b] {
        let pid = guard.0.id().to_string();
        assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    }
    for (guard, rx) in [(&mut a, &rx_a), (&mut b, &rx_b)] {
        wait_line(rx, |l| l == "shutting down");
        let status = guard.0.wait().unwrap();
        assert!(status.success(), "clean exit on Ctrl-C: {status:?}");
    }
    assert!(key_a.exists() && swarm::net::tunnel_key_path(&key_a).exists());
}

#[test]
fn gpus_reports_static_and_missing_nvml_inventories() {
    let out = run(&["gpus", "--json", "--gpus", "2xH100-80GB,1xRTX4090-24GB"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["source"], "static");
    let devices = v["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 3);
    assert_eq!(devices[0]["name"], "H100");
    assert_eq!(devices[0]["memory_total_mib"], 81920);
    assert_eq!(devices[0]["compute_capability"], "9.0");
    assert_eq!(devices[2]["index"], 2);
    for key in
        ["uuid", "power_draw_w", "temperature_c", "ecc_corrected", "pcie_gen", "utilization_memory_pct"]
    {
        assert!(devices[0].get(key).is_some(), "{key} is part of the JSON shape");
    }

    // `auto` on a machine without the NVIDIA driver: no GPU, one clear log line, exit 0.
    if !std::path::Path::new("/proc/driver/nvidia").exists() {
        let out = run(&["gpus", "--json"]);
        assert!(out.status.success());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["source"], "none");
        assert_eq!(v["devices"].as_array().unwrap().len(), 0);
        let log = String::from_utf8_lossy(&out.stderr);
        assert_eq!(log.matches("no NVIDIA driver").count(), 1, "{log}");
    }
}
