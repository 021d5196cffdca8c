//! Control-plane figures, printed as a table: time for 8, 32 and 64 in-process nodes to
//! converge from a cold start (median of 5 runs), steady-state control traffic per node,
//! and memory per node.
//!
//! `cargo bench --bench convergence` (release build). Environment knobs:
//! `SWARM_BENCH_SIZES=8,32,64`, `SWARM_BENCH_RUNS=5`, `SWARM_BENCH_TRANSPORTS=quic,tcp`,
//! `SWARM_BENCH_WINDOW_S=20` (steady-state measuring window).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use swarm::net::mesh::{LocalMesh, MeshTransport};

const HEARTBEAT: Duration = Duration::from_secs(5);

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect()
}

fn rss_bytes() -> u64 {
    let text = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = text.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Steady {
    bytes_per_node_s: f64,
    record_bytes: usize,
}

async fn steady_state(mesh: &LocalMesh, window: Duration) -> Steady {
    // Let the join burst pass: two heartbeats.
    tokio::time::sleep(HEARTBEAT * 2).await;
    let total = |stats: Vec<swarm::NodeStats>| stats.iter().map(|s| s.bytes_in).sum::<u64>();
    let before = total(futures::future::try_join_all(mesh.nodes.iter().map(|n| n.stats())).await.unwrap());
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let after = total(futures::future::try_join_all(mesh.nodes.iter().map(|n| n.stats())).await.unwrap());
    let secs = t0.elapsed().as_secs_f64();
    let view = mesh.nodes[0].cluster().await.unwrap();
    let record_bytes = view
        .entries
        .iter()
        .map(|e| swarm::core::codec::encode(&e.record, 1 << 20).map(|b| b.len()).unwrap_or(0))
        .max()
        .unwrap_or(0);
    Steady { bytes_per_node_s: (after - before) as f64 / secs / mesh.nodes.len() as f64, record_bytes }
}

async fn bench() {
    let sizes: Vec<usize> =
        env_list("SWARM_BENCH_SIZES", "8,32,64").iter().filter_map(|s| s.parse().ok()).collect();
    let runs: usize = std::env::var("SWARM_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let window = Duration::from_secs(
        std::env::var("SWARM_BENCH_WINDOW_S").ok().and_then(|v| v.parse().ok()).unwrap_or(20),
    );
    println!("control-plane convergence, heartbeat {HEARTBEAT:?}, {runs} runs per size, median shown");
    println!(
        "{:<6} {:>5} {:>12} {:>12} {:>12} {:>14} {:>12} {:>10}",
        "proto", "nodes", "median ms", "min ms", "max ms", "ctl B/node/s", "RSS/node MiB", "record B"
    );
    let mut fits = Vec::new();
    for transport in env_list("SWARM_BENCH_TRANSPORTS", "quic,tcp") {
        let t = if transport == "tcp" { MeshTransport::Tcp } else { MeshTransport::Quic };
        for &n in &sizes {
            let mut times = Vec::new();
            let mut steady = None;
            let mut rss_per_node = 0.0;
            for run in 0..runs {
                let rss0 = rss_bytes();
                let started = Instant::now();
                let mesh = LocalMesh::start(n, "bench", t, HEARTBEAT).await.expect("mesh starts");
                let conv = mesh.wait_converged(Duration::from_secs(120)).await.expect("nodes answer");
                let elapsed = started.elapsed();
                assert!(conv.converged, "{n} nodes did not converge: {:?}", conv.counts);
                times.push(elapsed.as_secs_f64() * 1000.0);
                if run == 0 {
                    steady = Some(steady_state(&mesh, window).await);
                    rss_per_node = rss_bytes().saturating_sub(rss0) as f64 / n as f64 / (1 << 20) as f64;
                }
                mesh.shutdown().await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let s = steady.expect("measured on the first run");
            let min = times.iter().copied().fold(f64::MAX, f64::min);
            let max = times.iter().copied().fold(0.0, f64::max);
            println!(
                "{:<6} {:>5} {:>12.0} {:>12.0} {:>12.0} {:>14.0} {:>12.1} {:>10}",
                transport,
                n,
                median(times),
                min,
                max,
                s.bytes_per_node_s,
                rss_per_node,
                s.record_bytes
            );
            fits.push((transport.clone(), n, s.bytes_per_node_s));
        }
    }
    // Each node receives every record once per heartbeat, times a duplication factor:
    // control bytes per node grow linearly with the swarm. Extrapolate from the largest size.
    println!();
    for (transport, n, b) in fits.iter().filter(|(_, n, _)| Some(n) == sizes.iter().max()) {
        let per_node_per_peer = b / *n as f64;
        let at_10k = per_node_per_peer * 10_000.0;
        let share = at_10k * 8.0 / 1e9 * 100.0;
        println!(
            "{transport}: {per_node_per_peer:.0} B/s per node per peer at {n} nodes -> {:.2} MB/s per node at 10 000 nodes = {share:.2} % of 1 Gbps",
            at_10k / 1e6
        );
    }
}

fn main() {
    // `cargo test --benches` runs bench binaries with `--bench` absent: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(bench());
}
