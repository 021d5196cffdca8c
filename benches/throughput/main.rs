//! Data-plane throughput between two processes, one core each: a WireGuard tunnel between
//! two swarm nodes, next to raw UDP through the same harness and a libp2p QUIC stream, in
//! the same run — on loopback, and (as root, with iproute2) between two network
//! namespaces joined by a veth pair. Prints Gbps of application payload, datagrams per
//! second, loss and CPU per side.
//!
//! `cargo bench --bench throughput`. Knobs: `SWARM_BENCH_SECONDS=5`,
//! `SWARM_BENCH_SIZE=1420` (payload bytes per datagram), `SWARM_BENCH_NETS=loopback,veth`,
//! `SWARM_BENCH_MODES=udp,udp-gso,tunnel,tunnel-gso,quic`.
//!
//! Each measurement runs a receiver and a sender process (this program, re-executed
//! with `SWARM_BENCH_CHILD=<mode>-recv|<mode>-send`), pinned with `taskset` to CPU 1 and
//! CPU 0, each on a single-threaded runtime. The namespaces are deleted and the
//! processes ended when the program finishes, also on failure.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod child;
mod netns;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use netns::{Net, Procs};
use serde_json::Value;

pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn main() {
    if let Ok(role) = std::env::var("SWARM_BENCH_CHILD") {
        child::run(&role);
        return;
    }
    if std::env::args().any(|a| a == "--list" || a == "--exact") {
        return; // `cargo test --benches` probes bench binaries; nothing to list.
    }
    let seconds: u64 = env_or("SWARM_BENCH_SECONDS", "5").parse().expect("SWARM_BENCH_SECONDS");
    let size: usize = env_or("SWARM_BENCH_SIZE", "1420").parse().expect("SWARM_BENCH_SIZE");
    let modes: Vec<String> = env_or("SWARM_BENCH_MODES", "udp,udp-gso,tunnel,tunnel-gso,quic")
        .split(',')
        .map(str::to_owned)
        .collect();
    let mut rows = Vec::new();
    for net in env_or("SWARM_BENCH_NETS", "loopback,veth").split(',') {
        let net = match Net::setup(net) {
            Ok(net) => net,
            Err(why) => {
                eprintln!("skipping {net}: {why}");
                continue;
            }
        };
        for (i, mode) in modes.iter().enumerate() {
            let port = 41_000 + i as u16;
            match measure(&net, mode, port, seconds, size) {
                Ok(row) => rows.push(row),
                Err(e) => eprintln!("{} {mode}: {e}", net.name()),
            }
        }
        // `net` drops here: namespaces deleted.
    }
    print_table(&rows, seconds, size);
}

struct Row {
    net: String,
    mode: String,
    gbps: f64,
    pps: f64,
    loss: Option<f64>,
    cpu_send: f64,
    cpu_recv: f64,
    note: String,
}

fn measure(net: &Net, mode: &str, port: u16, seconds: u64, size: usize) -> Result<Row, String> {
    let mut procs = Procs::default();
    let env = [("SWARM_BENCH_SECONDS", seconds.to_string()), ("SWARM_BENCH_SIZE", size.to_string())];
    let mut recv = net.command(1, netns::Side::Receiver);
    recv.env("SWARM_BENCH_CHILD", format!("{mode}-recv"))
        .env("SWARM_BENCH_BIND", format!("{}:{port}", net.receiver_ip()))
        .envs(env.clone())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let recv = procs.spawn(recv)?;
    let mut out = BufReader::new(recv.stdout.take().ok_or("no stdout")?);
    let mut ready = String::new();
    out.read_line(&mut ready).map_err(|e| e.to_string())?;
    let target =
        ready.strip_prefix("READY ").ok_or_else(|| format!("receiver said {ready:?}"))?.trim().to_owned();

    let mut send = net.command(0, netns::Side::Sender);
    send.env("SWARM_BENCH_CHILD", format!("{mode}-send"))
        .env("SWARM_BENCH_TARGET", &target)
        .env("SWARM_BENCH_BIND", format!("{}:0", net.sender_ip()))
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let sender = procs.spawn(send)?;
    let sent = read_json(sender.stdout.take().ok_or("no stdout")?, seconds + 60)?;
    let mut line = String::new();
    out.read_line(&mut line).map_err(|e| e.to_string())?;
    let got: Value = serde_json::from_str(&line).map_err(|e| format!("receiver: {e}: {line:?}"))?;
    procs.wait_all(Duration::from_secs(10));

    let received = got["datagrams"].as_f64().unwrap_or(0.0);
    let bytes = got["bytes"].as_f64().unwrap_or(0.0);
    let secs = got["secs"].as_f64().unwrap_or(0.0).max(1e-9);
    let sent_n = sent["datagrams"].as_f64().unwrap_or(0.0);
    let reliable = mode == "quic";
    Ok(Row {
        net: net.name().to_owned(),
        mode: mode.to_owned(),
        gbps: bytes * 8.0 / secs / 1e9,
        pps: received / secs,
        loss: (!reliable && sent_n > 0.0).then(|| (1.0 - received / sent_n).max(0.0)),
        cpu_send: sent["cpu"].as_f64().unwrap_or(0.0),
        cpu_recv: got["cpu"].as_f64().unwrap_or(0.0),
        note: match sent["socket_errors"].as_u64() {
            Some(errors) if errors > 0 => {
                format!("{}; sender socket errors {errors}", got["note"].as_str().unwrap_or(""))
            }
            _ => got["note"].as_str().unwrap_or("").to_owned(),
        },
    })
}

fn read_json(stdout: std::process::ChildStdout, _timeout_s: u64) -> Result<Value, String> {
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).map_err(|e| e.to_string())?;
    serde_json::from_str(&line).map_err(|e| format!("sender: {e}: {line:?}"))
}

fn print_table(rows: &[Row], seconds: u64, size: usize) {
    println!();
    println!(
        "data plane: {size}-byte datagrams for {seconds} s, one core per side (Gbps of payload received)"
    );
    println!(
        "{:<9} {:<11} {:>8} {:>10} {:>9} {:>9} {:>9}  NOTE",
        "NET", "MODE", "Gbps", "kpps", "loss %", "cpu send", "cpu recv"
    );
    for r in rows {
        println!(
            "{:<9} {:<11} {:>8.2} {:>10.1} {:>9} {:>9.2} {:>9.2}  {}",
            r.net,
            r.mode,
            r.gbps,
            r.pps / 1e3,
            r.loss.map_or("-".to_owned(), |l| format!("{:.3}", l * 100.0)),
            r.cpu_send,
            r.cpu_recv,
            r.note
        );
    }
    let find = |net: &str, mode: &str| rows.iter().find(|r| r.net == net && r.mode == mode).map(|r| r.gbps);
    for net in ["loopback", "veth"] {
        let ratio = |a: &str, b: &str| match (find(net, a), find(net, b)) {
            (Some(x), Some(y)) if y > 0.0 => format!("{:.2}", x / y),
            _ => "-".to_owned(),
        };
        if find(net, "tunnel").is_some() || find(net, "tunnel-gso").is_some() {
            println!(
                "{net}: tunnel/udp {}  tunnel-gso/udp-gso {}  tunnel/quic {}  tunnel-gso/quic {}",
                ratio("tunnel", "udp"),
                ratio("tunnel-gso", "udp-gso"),
                ratio("tunnel", "quic"),
                ratio("tunnel-gso", "quic")
            );
        }
    }
}

/// `Command` for this program.
pub fn self_command() -> Command {
    Command::new(std::env::current_exe().expect("own path"))
}
