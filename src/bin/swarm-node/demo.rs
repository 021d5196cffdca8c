//! `swarm-node demo`: a local mesh of N nodes on loopback, in this process.

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Args, ValueEnum};
use swarm::core::place::{Placement, TaskSpec};
use swarm::net::mesh::{Convergence, LocalMesh, MeshTransport};
use swarm::{Node, PeerId};
use tokio::task::JoinHandle;

use crate::table;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// QUIC (quinn) over UDP.
    Quic,
    /// TCP with Noise and yamux.
    Tcp,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(2..=512))]
    nodes: u16,
    /// Print a machine-readable summary instead of tables.
    #[arg(long)]
    json: bool,
    /// Give up if the views have not converged by then.
    #[arg(long, default_value = "60s", value_parser = crate::parse_duration)]
    timeout: Duration,
    /// Transport between the nodes.
    #[arg(long, value_enum, default_value_t = Transport::Quic)]
    transport: Transport,
    /// Record heartbeat.
    #[arg(long, default_value = "5s", value_parser = crate::parse_duration)]
    heartbeat: Duration,
}

pub async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let n = usize::from(args.nodes);
    let transport = match args.transport {
        Transport::Quic => MeshTransport::Quic,
        Transport::Tcp => MeshTransport::Tcp,
    };
    let started = Instant::now();
    let mesh = LocalMesh::start(n, "demo", transport, args.heartbeat).await?;
    tracing::info!(ms = started.elapsed().as_millis() as u64, "all nodes started");
    let remaining = args.timeout.saturating_sub(started.elapsed());
    let mut result = mesh.wait_converged(remaining).await?;
    result.elapsed = started.elapsed();
    // Every node opens WireGuard tunnels to the peers whose signed records it holds.
    let tunnels_up = wait_tunnels(&mesh, args.timeout.saturating_sub(started.elapsed())).await?;
    let tunnels_ms = started.elapsed().as_millis() as u64;
    let echoes = start_echoes(&mesh.nodes[1..]);
    let rtts = ping_over_tunnels(&mesh.nodes[0], &mesh.nodes[1..]).await;
    // Every tunnel is probed five times a second; wait until node 0's links are judged.
    let links = wait_links(&mesh.nodes[0], n - 1, args.timeout.saturating_sub(started.elapsed())).await?;
    // An active throughput test (a 150 KB packet train) on each of node 0's links.
    for l in &links {
        if let Err(e) = mesh.nodes[0].measure_throughput(l.peer).await {
            tracing::warn!(peer = %l.peer, error = %e, "throughput test failed");
        }
    }
    let links = mesh.nodes[0].links().await?;
    // Node 0 places a batch of tasks and gangs on the mesh, from its own view.
    let placed = place_batch(&mesh.nodes[0], n).await;
    let released = release_batch(&mesh, &placed).await?;

    if args.json {
        print_json(&mesh, &result, &tunnels_up, tunnels_ms, &rtts, &links, (&placed, released)).await?;
    } else {
        let view = mesh.nodes[0].cluster().await?;
        let connected = mesh.nodes[0].connected_peers().await?;
        let tunnels = mesh.nodes[0].tunnels().await?;
        let overlay = crate::run::overlay_of_view(&mesh.nodes[0], &view).await?;
        println!("cluster view of node 0 ({} records):", view.len());
        print!("{}", table::peer_table(&view, &connected, &tunnels, &overlay));
        println!();
        println!("tunnels of node 0 (WireGuard; RTT: median of {PINGS} datagrams echoed over the tunnel):");
        print!("{}", table::tunnel_table(&tunnels, &rtts));
        println!();
        println!("links of node 0 (probes over each tunnel, last 10 s; times in ms; SLA: p99 < 50 ms, jitter <= 1 ms, loss <= 0.01 %, throughput >= 1 Gbps by a packet train):");
        print!("{}", table::link_table(&links));
        println!();
        if result.converged {
            println!(
                "{n} nodes converged in {} ms from a cold start: every node holds {n} records",
                result.elapsed.as_millis()
            );
        }
        let total: usize = tunnels_up.iter().sum();
        println!("{total} of {} tunnel ends up after {tunnels_ms} ms", n * (n - 1));
        println!();
        println!("placement from node 0 (its own view; leases over /swarm/lease/1, no coordinator):");
        for p in &placed {
            match &p.result {
                Ok(placement) => {
                    println!(
                        "{} [{}] placed in {:.1} ms, {} attempt(s):",
                        p.name, p.what, p.ms, placement.attempts
                    );
                    for line in placement.explain().lines() {
                        println!("    {line}");
                    }
                }
                Err(e) => println!("{} [{}] not placed in {:.1} ms: {e}", p.name, p.what, p.ms),
            }
        }
        let ok = placed.iter().filter(|p| p.result.is_ok()).count();
        println!("{ok} of {} placed; all {released} leases released, none left on any node", placed.len());
    }
    let stopping = Instant::now();
    mesh.shutdown().await;
    for echo in echoes {
        echo.abort();
    }
    tracing::info!(ms = stopping.elapsed().as_millis() as u64, "all nodes stopped");
    if !result.converged {
        bail!("not converged after {:?}: records per node {:?}", args.timeout, result.counts);
    }
    if tunnels_up.iter().any(|&up| up + 1 < n) {
        bail!("tunnels not all up after {:?}: per node {tunnels_up:?}", args.timeout);
    }
    if rtts.iter().any(|(_, r)| r.is_none()) {
        bail!("a datagram over a tunnel went unanswered");
    }
    if let Some(p) = placed.iter().find(|p| p.expect_ok != p.result.is_ok()) {
        bail!("task {} placed: {}, expected {}", p.name, p.result.is_ok(), p.expect_ok);
    }
    Ok(())
}

/// One task of the demo's batch and what became of it.
pub struct Placed {
    name: &'static str,
    what: &'static str,
    expect_ok: bool,
    ms: f64,
    result: Result<Placement, swarm::NodeError>,
}

/// The batch: single tasks with model, memory, label and RTT constraints, two gangs with
/// member limits, and one task nothing can take. GPUs per node follow
/// `swarm::net::mesh::INVENTORIES` (node 0: 8 x H100, node 1: 4 x A100 80 GB in us-east,
/// node 2: 3 GPUs, ...), and every lease is held until the batch ends, so the order is
/// chosen to fit any mesh of 3 or more nodes.
async fn place_batch(node: &Node, nodes: usize) -> Vec<Placed> {
    let ms = |x: u64| Some(Duration::from_millis(x));
    let gangs = nodes >= 3;
    let mut batch: Vec<(&'static str, &'static str, bool, TaskSpec)> = Vec::new();
    let mut t = TaskSpec::new("train-h100", 4);
    t.gpu_models = vec!["H100".into()];
    batch.push(("train-h100", "4 x H100", true, t));
    let mut t = TaskSpec::new("us-east", 1);
    t.labels = vec![swarm::core::record::Label::parse("region=us-east").unwrap_or_else(|_| unreachable!())];
    batch.push(("us-east", "1 GPU labelled region=us-east", true, t));
    let mut t = TaskSpec::new("finetune-a100", 2);
    t.gpu_models = vec!["A100".into()];
    t.min_gpu_memory_mib = 80 * 1024;
    batch.push(("finetune-a100", "2 x A100 with 80 GB", true, t));
    let mut t = TaskSpec::new("gang-2x2", 2);
    t.nodes = 2;
    t.member_limits.max_rtt = ms(50);
    batch.push(("gang-2x2", "gang of 2 nodes x 2 GPUs, members < 50 ms apart", gangs, t));
    let mut t = TaskSpec::new("gang-3x1", 1);
    t.nodes = 3;
    t.member_limits.max_rtt = ms(50);
    batch.push(("gang-3x1", "gang of 3 nodes x 1 GPU, members < 50 ms apart", gangs, t));
    let mut t = TaskSpec::new("infer-1", 1);
    t.origin_limits.max_rtt = ms(50);
    batch.push(("infer-1", "1 GPU, RTT to node 0 < 50 ms", true, t));
    let mut t = TaskSpec::new("h200", 1);
    t.gpu_models = vec!["H200".into()];
    batch.push(("h200", "1 x H200: no node has one", false, t));
    let mut out = Vec::new();
    for (name, what, expect_ok, task) in batch {
        let started = Instant::now();
        let result = node.place(task).await;
        out.push(Placed { name, what, expect_ok, ms: started.elapsed().as_secs_f64() * 1e3, result });
    }
    out
}

/// Releases every placement and checks no node holds a lease after; the leases released.
async fn release_batch(mesh: &LocalMesh, placed: &[Placed]) -> anyhow::Result<usize> {
    let mut released = 0;
    for p in placed {
        if let Ok(placement) = &p.result {
            mesh.nodes[0].release(placement).await?;
            released += placement.nodes.len();
        }
    }
    for node in &mesh.nodes {
        let left = node.leases().await?;
        if !left.is_empty() {
            bail!("{} still holds {} leases after release", node.peer_id(), left.len());
        }
    }
    Ok(released)
}

/// Datagrams sent to each peer to measure the tunnel's round trip.
const PINGS: usize = 20;

/// Waits until every node has a tunnel up to every other node, or `timeout`; returns
/// the tunnels up per node.
async fn wait_tunnels(mesh: &LocalMesh, timeout: Duration) -> anyhow::Result<Vec<usize>> {
    let started = Instant::now();
    let n = mesh.nodes.len();
    loop {
        let mut up = Vec::with_capacity(n);
        for node in &mesh.nodes {
            up.push(node.tunnels().await?.iter().filter(|t| t.established).count());
        }
        if up.iter().all(|&u| u + 1 >= n) || started.elapsed() >= timeout {
            return Ok(up);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `node` has `peers` links with 20 round trips and a latency verdict.
async fn wait_links(
    node: &Node,
    peers: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<swarm::net::LinkReport>> {
    let started = Instant::now();
    loop {
        let links = node.links().await?;
        let judged = links
            .iter()
            .filter(|l| table::sla_state(l, swarm::core::link::Metric::Latency) != "unknown")
            .count();
        if judged >= peers || started.elapsed() >= timeout {
            return Ok(links);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each node sends every datagram it receives back to its sender.
fn start_echoes(nodes: &[Node]) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for node in nodes {
        let Some(mut inbox) = node.datagrams() else { continue };
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(d) = inbox.next().await {
                if node.send_datagram(d.peer, d.data).await.is_err() {
                    break;
                }
            }
        }));
    }
    tasks
}

/// Median round trip of `PINGS` datagrams from `from` to each peer and back.
async fn ping_over_tunnels(from: &Node, peers: &[Node]) -> Vec<(PeerId, Option<Duration>)> {
    let Some(mut inbox) = from.datagrams() else { return Vec::new() };
    let mut out = Vec::new();
    for peer in peers {
        let mut samples = Vec::new();
        for seq in 0..PINGS as u32 {
            let sent = Instant::now();
            if from.send_datagram(peer.peer_id(), seq.to_be_bytes().to_vec()).await.is_err() {
                break;
            }
            let reply = tokio::time::timeout(Duration::from_secs(1), async {
                while let Some(d) = inbox.next().await {
                    if d.peer == peer.peer_id() && d.data == seq.to_be_bytes() {
                        return true;
                    }
                }
                false
            })
            .await;
            if matches!(reply, Ok(true)) {
                samples.push(sent.elapsed());
            }
        }
        samples.sort();
        let median = (samples.len() == PINGS).then(|| samples[PINGS / 2]);
        out.push((peer.peer_id(), median));
    }
    out
}

/// What `demo --json` prints.
#[derive(serde::Serialize)]
struct DemoJson {
    namespace: &'static str,
    placements: Vec<PlacedJson>,
    leases_released: usize,
    nodes: Vec<DemoNodeJson>,
    converged: bool,
    converge_ms: u64,
    tunnels_ms: u64,
    tunnel_rtt_from_node_0: Vec<PingJson>,
    links_of_node_0: Vec<swarm::net::LinkJson>,
}

#[derive(serde::Serialize)]
struct DemoNodeJson {
    id: String,
    addresses: Vec<String>,
    overlay: swarm::net::OverlayAddresses,
    gpus: &'static str,
    records_seen: usize,
    tunnels_up: usize,
}

#[derive(serde::Serialize)]
struct PingJson {
    peer: String,
    rtt_ms: Option<f64>,
}

/// A placement of the batch, or why it failed, with how long it took.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum PlacedJson {
    Placed {
        #[serde(flatten)]
        placement: swarm::net::answers::PlacementSummary,
        ms: f64,
    },
    Failed {
        task: &'static str,
        error: String,
        ms: f64,
    },
}

async fn print_json(
    mesh: &LocalMesh,
    result: &Convergence,
    tunnels_up: &[usize],
    tunnels_ms: u64,
    rtts: &[(PeerId, Option<Duration>)],
    links: &[swarm::net::LinkReport],
    (placed, released): (&[Placed], usize),
) -> anyhow::Result<()> {
    let mut nodes = Vec::new();
    for (i, node) in mesh.nodes.iter().enumerate() {
        nodes.push(DemoNodeJson {
            id: node.peer_id().to_string(),
            addresses: node.listen_addrs().await?.iter().map(ToString::to_string).collect(),
            overlay: node.overlay().await?,
            gpus: mesh.inventories[i],
            records_seen: result.counts[i],
            tunnels_up: tunnels_up[i],
        });
    }
    let mut placements = Vec::with_capacity(placed.len());
    for p in placed {
        placements.push(match &p.result {
            Ok(placement) => PlacedJson::Placed {
                placement: swarm::net::answers::PlacementSummary::gather(&mesh.nodes[0], placement).await?,
                ms: p.ms,
            },
            Err(e) => PlacedJson::Failed { task: p.name, error: e.to_string(), ms: p.ms },
        });
    }
    let summary = DemoJson {
        namespace: "demo",
        placements,
        leases_released: released,
        nodes,
        converged: result.converged,
        converge_ms: result.elapsed.as_millis() as u64,
        tunnels_ms,
        tunnel_rtt_from_node_0: rtts
            .iter()
            .map(|(peer, r)| PingJson { peer: peer.to_string(), rtt_ms: r.map(swarm::net::summary::ms) })
            .collect(),
        links_of_node_0: links.iter().map(|l| swarm::net::LinkJson::new(l, None)).collect(),
    };
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
