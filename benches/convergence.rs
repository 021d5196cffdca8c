//! Control-plane figures, printed as a table: time for 8, 32 and 64 in-process nodes to
//! converge from a cold start (median of 5 runs), steady-state control traffic per node,
//! and memory per node.
//!
//! `cargo bench --bench convergence` (release build). Environment knobs:
//! `SWARM_BENCH_SIZES=8,32,64`, `SWARM_BENCH_RUNS=5`, `SWARM_BENCH_TRANSPORTS=quic,tcp`,
//! `SWARM_BENCH_WINDOW_S=20` (steady-state measuring window), `SWARM_BENCH_HEARTBEAT_S=5`,
//! `SWARM_BENCH_TRACE=1` (the join every 250 ms on stderr: records missing, the node
//! slowest to answer a command and its delay, the node with the fewest records and whom
//! it is connected to, records synced and synced twice, connections opened; run the child directly to see
//! it: `SWARM_BENCH_CHILD=tcp:64 SWARM_BENCH_RUNS=1 target/release/deps/convergence-* --bench`),
//! `SWARM_BENCH_TRACE_MISSING=1` (with the trace, once under 600 records are missing:
//! each author whose record is missing and the nodes that lack it),
//! `SWARM_BENCH_PARTITION_S=60` (the partition's length; 0: none).
//!
//! Each run also prints (stderr, passed on by the parent) its time, the CPU time the join
//! took and the UDP datagrams the kernel dropped; the first run the cores the mesh keeps
//! busy once converged. Before the next run the bench waits (at most 60 s) until every
//! task of the shut-down mesh has ended, and prints how long that took: each run starts
//! on a quiet runtime, as a cold start should.
//!
//! Partition (largest size only, after the first run's steady state): the two halves of
//! the mesh block each other (`Node::block_peer`: every connection across closed and
//! refused, as a cut network would), the other half's records expire (TTL: six
//! heartbeats), and after `SWARM_BENCH_PARTITION_S` the blocks are lifted; printed is the
//! time until every node holds every record again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use swarm::net::mesh::{LocalMesh, MeshTransport};

fn heartbeat() -> Duration {
    Duration::from_secs(
        std::env::var("SWARM_BENCH_HEARTBEAT_S").ok().and_then(|v| v.parse().ok()).unwrap_or(5),
    )
}

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

/// UDP datagrams the kernel dropped so far because a socket's receive buffer was full
/// (all sockets of the host: `RcvbufErrors` in /proc/net/snmp; 0 where unreadable). A
/// QUIC mesh whose nodes share two cores loses datagrams this way during a join.
fn udp_receive_drops() -> u64 {
    let text = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else { return 0 };
    let at = names.split_whitespace().position(|n| n == "RcvbufErrors");
    at.and_then(|i| values.split_whitespace().nth(i)?.parse().ok()).unwrap_or(0)
}

/// CPU time this process used so far (user and system, all threads), from
/// /proc/self/stat; zero where unreadable. Two cores give a join at most twice its
/// wall time: the figure says whether a slow join waited or worked.
fn cpu_seconds() -> f64 {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) end with ')'.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn partition_length() -> Duration {
    Duration::from_secs(
        std::env::var("SWARM_BENCH_PARTITION_S").ok().and_then(|v| v.parse().ok()).unwrap_or(60),
    )
}

/// Cuts the mesh in two halves for `length`, lifts the cut, and returns how long until
/// every node held every record again, with the fewest and most records any node held
/// just before (half of them when the cut held and the other half's records expired).
async fn partition(mesh: &LocalMesh, length: Duration) -> (Duration, usize, usize) {
    let ids: Vec<_> = mesh.nodes.iter().map(|n| n.peer_id()).collect();
    let half = ids.len() / 2;
    let cut = |blocked: bool| {
        let ids = &ids;
        let calls = mesh.nodes.iter().enumerate().flat_map(move |(i, node)| {
            let across = if i < half { &ids[half..] } else { &ids[..half] };
            across.iter().map(move |p| node.block_peer(*p, blocked))
        });
        futures::future::try_join_all(calls)
    };
    cut(true).await.unwrap();
    tokio::time::sleep(length).await;
    let counts = futures::future::try_join_all(mesh.nodes.iter().map(|n| n.record_count())).await.unwrap();
    let healed = Instant::now();
    cut(false).await.unwrap();
    if std::env::var_os("SWARM_BENCH_TRACE").is_some() {
        trace(mesh, healed).await;
    }
    let conv = mesh.wait_converged(Duration::from_secs(120)).await.unwrap();
    assert!(conv.converged, "the partition did not heal in 120 s: {:?}", conv.counts);
    let (fewest, most) =
        (counts.iter().min().copied().unwrap_or(0), counts.iter().max().copied().unwrap_or(0));
    (healed.elapsed(), fewest, most)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Steady {
    bytes_per_node_s: f64,
    publications_per_node_s: f64,
    record_bytes: usize,
    /// Cores the whole mesh kept busy in the window.
    cores: f64,
    /// Connections per node at the window's end (peers connected).
    peers: f64,
}

async fn steady_state(mesh: &LocalMesh, window: Duration) -> Steady {
    // Let the join burst pass: two heartbeats.
    tokio::time::sleep(heartbeat() * 2).await;
    let total = |stats: Vec<swarm::NodeStats>| {
        (stats.iter().map(|s| s.bytes_in).sum::<u64>(), stats.iter().map(|s| s.published).sum::<u64>())
    };
    let (before, pub_before) =
        total(futures::future::try_join_all(mesh.nodes.iter().map(|n| n.stats())).await.unwrap());
    let t0 = Instant::now();
    let cpu0 = cpu_seconds();
    tokio::time::sleep(window).await;
    let cpu = cpu_seconds() - cpu0;
    let stats = futures::future::try_join_all(mesh.nodes.iter().map(|n| n.stats())).await.unwrap();
    let peers = stats.iter().map(|s| s.connected_peers).sum::<usize>() as f64 / stats.len().max(1) as f64;
    let (after, pub_after) = total(stats);
    let secs = t0.elapsed().as_secs_f64();
    let view = mesh.nodes[0].cluster().await.unwrap();
    let record_bytes = view
        .entries
        .iter()
        .map(|e| swarm::core::codec::encode(&e.record, 1 << 20).map(|b| b.len()).unwrap_or(0))
        .max()
        .unwrap_or(0);
    let n = mesh.nodes.len() as f64;
    Steady {
        bytes_per_node_s: (after - before) as f64 / secs / n,
        publications_per_node_s: (pub_after - pub_before) as f64 / secs / n,
        record_bytes,
        cores: cpu / secs,
        peers,
    }
}

/// With `SWARM_BENCH_TRACE=1`: how the join went, every 250 ms (records missing in
/// all, the fewest any node holds, publications and failed publications so far).
async fn trace(mesh: &LocalMesh, started: Instant) {
    let n = mesh.nodes.len();
    let first = mesh.nodes[0].listen_addrs().await.unwrap_or_default();
    eprintln!("started {n} nodes in {:.2} s; node 0 listens at {first:?}", started.elapsed().as_secs_f64());
    loop {
        let asked = Instant::now();
        let timed = futures::future::try_join_all(mesh.nodes.iter().map(|n| async move {
            let count = n.record_count().await?;
            Ok::<_, swarm::net::NodeError>((count, asked.elapsed()))
        }))
        .await
        .unwrap();
        let counts: Vec<usize> = timed.iter().map(|t| t.0).collect();
        // The node slowest to answer a command: its event loop's delay.
        let (slowest, delay) =
            timed.iter().enumerate().max_by_key(|(_, t)| t.1).map_or((0, Duration::ZERO), |(i, t)| (i, t.1));
        let stats = futures::future::try_join_all(mesh.nodes.iter().map(|n| n.stats())).await.unwrap();
        let missing: usize = counts.iter().map(|&c| n.saturating_sub(c)).sum();
        let fewest = counts.iter().min().copied().unwrap_or(0);
        // One counter summed over the nodes.
        let sum = |counter: fn(&swarm::NodeStats) -> u64| stats.iter().map(counter).sum::<u64>();
        let published = sum(|s| s.published);
        let failed = sum(|s| s.publish_failures);
        let gossip_dropped = sum(|s| s.gossip_send_dropped);
        let synced = sum(|s| s.sync_records);
        let duplicates = sum(|s| s.sync_duplicates);
        let opened = sum(|s| s.connections_opened);
        let dials_failed = sum(|s| s.dials_failed);
        let last = counts.iter().enumerate().min_by_key(|(_, &c)| c).map_or(0, |(i, _)| i);
        let s = &stats[last];
        let ids: Vec<_> = mesh.nodes.iter().map(|n| n.peer_id()).collect();
        let peers = mesh.nodes[last].connected_peers().await.unwrap_or_default();
        let mut at: Vec<usize> = peers.iter().filter_map(|p| ids.iter().position(|i| i == p)).collect();
        at.sort_unstable();
        eprintln!(
            "{:>6.2} s missing {missing:>5} fewest {fewest:>3} (node {last}: {} peers, asked {} failed {}, {} synced, {} answers, \
             {} accepted, {} stale, {} expired, {:?} rejected) published {published:>4} failed {failed:>4} gossip dropped {gossip_dropped} \
             synced {synced} ({duplicates} duplicates); connections {opened} ({dials_failed} dials failed); node {slowest} answered in {delay:.0?}; node {last} is connected to {at:?}",
            started.elapsed().as_secs_f64(),
            s.connected_peers,
            s.sync_asked,
            s.sync_failed,
            s.sync_records,
            s.sync_answers,
            s.gossip.accepted,
            s.gossip.stale,
            s.gossip.expired,
            s.gossip.rejected,
        );
        if missing == 0 || started.elapsed() > Duration::from_secs(60) {
            let mut out: Vec<u64> = stats.iter().map(|s| s.bytes_out).collect();
            let mut inn: Vec<u64> = stats.iter().map(|s| s.bytes_in).collect();
            let hub = (out[0], inn[0], stats[0].sync_answers);
            out.sort_unstable();
            inn.sort_unstable();
            eprintln!(
                "    node 0 sent {} kB, received {} kB, answered {} syncs; the median node sent {} kB, received {} kB",
                hub.0 / 1000,
                hub.1 / 1000,
                hub.2,
                out[n / 2] / 1000,
                inn[n / 2] / 1000
            );
            return;
        }
        // Whose records are missing, and where: the tail of a join is one late author's
        // record or one starved node's view.
        if missing < 600 && std::env::var_os("SWARM_BENCH_TRACE_MISSING").is_some() {
            let snaps = futures::future::try_join_all(mesh.nodes.iter().map(|n| n.cluster())).await.unwrap();
            let mut lacking = vec![Vec::new(); n];
            for (holder, snap) in snaps.iter().enumerate() {
                for (author, id) in ids.iter().enumerate() {
                    if snap.get(id).is_none() {
                        lacking[author].push(holder);
                    }
                }
            }
            for (author, holders) in lacking.iter().enumerate().filter(|(_, h)| !h.is_empty()) {
                let peers = stats[author].connected_peers;
                eprintln!(
                    "    record of {author} ({peers} peers, published {}) missing at {} nodes: {:?}",
                    stats[author].published,
                    holders.len(),
                    &holders[..holders.len().min(12)]
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Tasks alive on the runtime.
fn alive_tasks() -> usize {
    tokio::runtime::Handle::current().metrics().num_alive_tasks()
}

/// Waits until the runtime holds no more tasks than `before`, at most `limit`: how long
/// that took, and how many more were left. A mesh's connection tasks end only as their
/// connections finish closing (a QUIC connection drains for three probe timeouts after
/// its close, seconds on a loaded host), and a run started among thousands of them
/// would share the cores with the last run's teardown: each run is a cold start.
async fn settle(before: usize, limit: Duration) -> (Duration, usize) {
    let started = Instant::now();
    loop {
        let left = alive_tasks().saturating_sub(before);
        if left == 0 || started.elapsed() >= limit {
            return (started.elapsed(), left);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One row: `runs` cold starts of `n` nodes, steady state and memory on the first.
/// Runs in a fresh process per row, so the memory figure is not another row's leftover.
async fn row(transport: &str, n: usize, runs: usize, window: Duration) {
    let t = if transport == "tcp" { MeshTransport::Tcp } else { MeshTransport::Quic };
    let mut times = Vec::new();
    let mut steady = None;
    let mut rss_per_node = 0.0;
    let mut healing = None;
    for run in 0..runs {
        let tasks0 = alive_tasks();
        let rss0 = rss_bytes();
        let drops0 = udp_receive_drops();
        let cpu0 = cpu_seconds();
        let started = Instant::now();
        let mesh = LocalMesh::start(n, "bench", t, heartbeat()).await.expect("mesh starts");
        if std::env::var_os("SWARM_BENCH_TRACE").is_some() {
            trace(&mesh, started).await;
        }
        let conv = mesh.wait_converged(Duration::from_secs(120)).await.expect("nodes answer");
        let elapsed = started.elapsed();
        assert!(conv.converged, "{n} nodes did not converge: {:?}", conv.counts);
        times.push(elapsed.as_secs_f64() * 1000.0);
        let drops = udp_receive_drops().saturating_sub(drops0);
        let cpu = cpu_seconds() - cpu0;
        eprintln!(
            "{transport} {n} run {run}: {:.0} ms, {cpu:.1} CPU s, {drops} UDP datagrams dropped by the kernel",
            elapsed.as_secs_f64() * 1000.0
        );
        if run == 0 {
            let s = steady_state(&mesh, window).await;
            eprintln!(
                "{transport} {n} steady state: {:.2} cores busy, {:.1} peers connected per node",
                s.cores, s.peers
            );
            steady = Some(s);
            rss_per_node = rss_bytes().saturating_sub(rss0) as f64 / n as f64 / (1 << 20) as f64;
            let length = partition_length();
            if std::env::var_os("SWARM_BENCH_PARTITION").is_some() && !length.is_zero() {
                let (healed, fewest, most) = partition(&mesh, length).await;
                healing = Some(format!(
                    "{transport} {n}: a {} s partition into two halves healed in {:.0} ms \
                     (records held just before: {fewest} to {most} of {n})",
                    length.as_secs(),
                    healed.as_secs_f64() * 1000.0
                ));
            }
        }
        mesh.shutdown().await;
        drop(mesh);
        if run + 1 < runs {
            let (took, left) = settle(tasks0, Duration::from_secs(60)).await;
            eprintln!(
                "{transport} {n} run {run}: the mesh's tasks ended {:.1} s after its shutdown ({left} left)",
                took.as_secs_f64()
            );
        }
    }
    let s = steady.expect("measured on the first run");
    let min = times.iter().copied().fold(f64::MAX, f64::min);
    let max = times.iter().copied().fold(0.0, f64::max);
    println!(
        "{:<6} {:>5} {:>10.0} {:>8.0} {:>8.0} {:>13.0} {:>10.3} {:>12.1} {:>9}",
        transport,
        n,
        median(times),
        min,
        max,
        s.bytes_per_node_s,
        s.publications_per_node_s,
        rss_per_node,
        s.record_bytes
    );
    println!("FIT {transport} {n} {}", s.bytes_per_node_s);
    if let Some(line) = healing {
        println!("PARTITION {line}");
    }
}

fn parent(runs: usize) {
    let sizes: Vec<usize> =
        env_list("SWARM_BENCH_SIZES", "8,32,64").iter().filter_map(|s| s.parse().ok()).collect();
    println!("control-plane convergence, heartbeat {:?}, {runs} runs per size, median shown", heartbeat());
    println!(
        "{:<6} {:>5} {:>10} {:>8} {:>8} {:>13} {:>10} {:>12} {:>9}",
        "proto",
        "nodes",
        "median ms",
        "min ms",
        "max ms",
        "ctl B/node/s",
        "pub/node/s",
        "RSS/node MiB",
        "record B"
    );
    let exe = std::env::current_exe().expect("own path");
    let mut fits: Vec<(String, usize, f64)> = Vec::new();
    let mut healings = Vec::new();
    let largest = sizes.iter().copied().max().unwrap_or(0);
    for transport in env_list("SWARM_BENCH_TRANSPORTS", "quic,tcp") {
        for &n in &sizes {
            let mut child = std::process::Command::new(&exe);
            child.arg("--bench").env("SWARM_BENCH_CHILD", format!("{transport}:{n}"));
            if n == largest {
                child.env("SWARM_BENCH_PARTITION", "1");
            }
            let out = child.output().expect("bench child runs");
            let text = String::from_utf8_lossy(&out.stdout);
            for line in text.lines() {
                match line.strip_prefix("FIT ").map(|l| l.split(' ').collect::<Vec<_>>()) {
                    Some(f) if f.len() == 3 => {
                        fits.push((f[0].to_owned(), f[1].parse().unwrap_or(0), f[2].parse().unwrap_or(0.0)))
                    }
                    _ => match line.strip_prefix("PARTITION ") {
                        Some(healing) => healings.push(healing.to_owned()),
                        None => println!("{line}"),
                    },
                }
            }
            let errors = String::from_utf8_lossy(&out.stderr);
            if out.status.success() {
                // Each run's own line, so a row's median can be read against its runs.
                let own = format!("{transport} {n} ");
                for line in errors.lines().filter(|l| l.starts_with(&own)) {
                    eprintln!("{line}");
                }
            } else {
                println!("{transport} {n}: failed: {errors}");
            }
        }
    }
    if !healings.is_empty() {
        println!();
        for line in &healings {
            println!("{line}");
        }
    }
    // Control bytes per node = a fixed part (Kademlia, identify, gossip control per
    // connection) + a part per peer (each record heard about D times per heartbeat).
    // Fit both from the two largest sizes and extrapolate to 10 000 nodes.
    println!();
    let mut sorted = sizes.clone();
    sorted.sort_unstable();
    if let [.., small, large] = sorted[..] {
        for transport in env_list("SWARM_BENCH_TRANSPORTS", "quic,tcp") {
            let at = |n| fits.iter().find(|(t, m, _)| *t == transport && *m == n).map(|f| f.2);
            if let (Some(b_small), Some(b_large)) = (at(small), at(large)) {
                let per_peer = (b_large - b_small) / (large - small) as f64;
                let fixed = b_large - per_peer * large as f64;
                // Bytes a node receives per record of another node (copies and gossip
                // control included), measured at the benchmark's heartbeat.
                let per_record = per_peer * heartbeat().as_secs_f64();
                let flat = fixed + per_peer * 10_000.0;
                let publish = swarm::core::publish::PublishConfig::default();
                let stretched = Duration::from_secs_f64(10_000.0 / f64::from(publish.records_per_second))
                    .clamp(publish.heartbeat, publish.max_heartbeat);
                let adaptive = fixed + per_record * 10_000.0 / stretched.as_secs_f64();
                println!(
                    "{transport}: {fixed:.0} B/s fixed + {per_record:.0} B per record heard; at 10 000 nodes: \
                     {:.2} MB/s per node ({:.2} % of 1 Gbps) with a fixed {:?} heartbeat, \
                     {:.3} MB/s ({:.2} %) with the heartbeat stretched to {stretched:?}",
                    flat / 1e6,
                    flat * 8.0 / 1e9 * 100.0,
                    heartbeat(),
                    adaptive / 1e6,
                    adaptive * 8.0 / 1e9 * 100.0,
                );
            }
        }
    }
}

fn main() {
    // `cargo test --benches` runs bench binaries with `--bench` absent: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runs: usize = std::env::var("SWARM_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let window = Duration::from_secs(
        std::env::var("SWARM_BENCH_WINDOW_S").ok().and_then(|v| v.parse().ok()).unwrap_or(20),
    );
    match std::env::var("SWARM_BENCH_CHILD").ok().and_then(|c| {
        let (t, n) = c.split_once(':')?;
        Some((t.to_owned(), n.parse::<usize>().ok()?))
    }) {
        Some((transport, n)) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
            runtime.block_on(row(&transport, n, runs, window));
        }
        None => parent(runs),
    }
}
