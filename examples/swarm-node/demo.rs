//! `swarm-node demo`: a local mesh of N nodes on loopback, in this process.

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Args, ValueEnum};
use swarm::net::mesh::{Convergence, LocalMesh, MeshTransport};

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

    if args.json {
        print_json(&mesh, &result).await?;
    } else {
        let view = mesh.nodes[0].cluster().await?;
        let connected = mesh.nodes[0].connected_peers().await?;
        println!("cluster view of node 0 ({} records):", view.len());
        print!("{}", table::peer_table(&view, &connected));
        println!();
        if result.converged {
            println!(
                "{n} nodes converged in {} ms from a cold start: every node holds {n} records",
                result.elapsed.as_millis()
            );
        }
    }
    let stopping = Instant::now();
    mesh.shutdown().await;
    tracing::info!(ms = stopping.elapsed().as_millis() as u64, "all nodes stopped");
    if !result.converged {
        bail!("not converged after {:?}: records per node {:?}", args.timeout, result.counts);
    }
    Ok(())
}

async fn print_json(mesh: &LocalMesh, result: &Convergence) -> anyhow::Result<()> {
    let mut nodes = Vec::new();
    for (i, node) in mesh.nodes.iter().enumerate() {
        let addrs: Vec<String> = node.listen_addrs().await?.iter().map(ToString::to_string).collect();
        nodes.push(serde_json::json!({
            "id": node.peer_id().to_string(),
            "addresses": addrs,
            "gpus": mesh.inventories[i],
            "records_seen": result.counts[i],
        }));
    }
    let summary = serde_json::json!({
        "namespace": "demo",
        "nodes": nodes,
        "converged": result.converged,
        "converge_ms": result.elapsed.as_millis() as u64,
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
