//! `swarm-node place | release | renew | placements`: place tasks through a running
//! node's control socket (`swarm-node run --control PATH`), release or renew them, and
//! list what it holds.

use std::time::Duration;

use clap::Args;

use crate::control::{call, unexpected, Body, Request, TaskRequest};

#[derive(Debug, Args)]
pub struct ControlArgs {
    #[command(flatten)]
    pub socket: crate::control::ControlArgs,
    /// Print JSON (errors too, as `{"ok": false, "error": ...}`).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PlaceArgs {
    #[command(flatten)]
    control: ControlArgs,
    /// The task's id (1-64 printable characters, unique among this node's placements).
    #[arg(long)]
    id: String,
    /// GPUs on each node.
    #[arg(long, default_value_t = 1)]
    gpus: u16,
    /// Nodes: 1 for a single task, k for a gang.
    #[arg(long, default_value_t = 1)]
    nodes: u16,
    /// Memory each GPU must have, MiB.
    #[arg(long, default_value_t = 0)]
    min_memory_mib: u64,
    /// Allowed GPU model (repeatable; case-insensitive), e.g. H100.
    #[arg(long)]
    model: Vec<String>,
    /// Label each node must carry, key=value (repeatable).
    #[arg(long)]
    label: Vec<String>,
    /// Largest round trip from this node to each node.
    #[arg(long, value_parser = crate::parse_duration)]
    max_rtt: Option<Duration>,
    /// Largest loss ratio (0-1) from this node to each node.
    #[arg(long)]
    max_loss: Option<f64>,
    /// Largest jitter from this node to each node.
    #[arg(long, value_parser = crate::parse_duration)]
    max_jitter: Option<Duration>,
    /// Smallest throughput from this node to each node, Mbit/s (needs a packet-train measurement).
    #[arg(long)]
    min_throughput_mbps: Option<f64>,
    /// Largest round trip between two gang members.
    #[arg(long, value_parser = crate::parse_duration)]
    member_max_rtt: Option<Duration>,
    /// Largest loss ratio between two gang members.
    #[arg(long)]
    member_max_loss: Option<f64>,
    /// Largest jitter between two gang members.
    #[arg(long, value_parser = crate::parse_duration)]
    member_max_jitter: Option<Duration>,
    /// Smallest throughput between two gang members, Mbit/s.
    #[arg(long)]
    member_min_throughput_mbps: Option<f64>,
    /// How long the leases last unless renewed (`swarm-node renew`).
    #[arg(long, default_value = "60s", value_parser = crate::parse_duration)]
    lease: Duration,
}

#[derive(Debug, Args)]
pub struct TaskIdArgs {
    #[command(flatten)]
    control: ControlArgs,
    /// The task's id.
    #[arg(long)]
    id: String,
}

fn ms(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1e3)
}

pub async fn place(args: PlaceArgs) -> anyhow::Result<()> {
    let task = TaskRequest {
        id: args.id,
        gpus: args.gpus,
        nodes: args.nodes,
        min_memory_mib: args.min_memory_mib,
        models: args.model,
        labels: args.label,
        max_rtt_ms: ms(args.max_rtt),
        max_loss: args.max_loss,
        max_jitter_ms: ms(args.max_jitter),
        min_throughput_mbps: args.min_throughput_mbps,
        member_max_rtt_ms: ms(args.member_max_rtt),
        member_max_loss: args.member_max_loss,
        member_max_jitter_ms: ms(args.member_max_jitter),
        member_min_throughput_mbps: args.member_min_throughput_mbps,
        lease_ms: args.lease.as_millis() as u64,
    };
    // Checked here too, so a bad flag fails before anything is sent.
    task.to_spec()?;
    let request = Request::Place { task };
    let placed = match call(&args.control.socket.path(), &request, args.control.json).await? {
        Body::Place(placed) => placed,
        other => return Err(unexpected(other)),
    };
    if args.control.json {
        println!("{}", serde_json::to_string_pretty(&placed)?);
        return Ok(());
    }
    let p = &placed.placement;
    print!("{}", p.explain);
    for n in &p.nodes {
        if let Some(o) = &n.overlay {
            let v4 = o.ipv4.map(|a| format!("{a} ")).unwrap_or_default();
            println!("  {} reachable at {v4}{}", n.peer, o.ipv6);
        }
    }
    println!("ranking (best first):");
    for line in &placed.ranking {
        println!("  {line}");
    }
    println!("leases expire in {} s unless renewed (swarm-node renew --id {})", p.lease_ms / 1000, p.task);
    Ok(())
}

/// `release` (or `renew` when `renew`).
pub async fn release(args: TaskIdArgs, renew: bool) -> anyhow::Result<()> {
    let request = if renew { Request::Renew { task: args.id } } else { Request::Release { task: args.id } };
    match call(&args.control.socket.path(), &request, args.control.json).await? {
        Body::Release(r) if args.control.json => println!("{}", serde_json::to_string_pretty(&r)?),
        Body::Renew(r) if args.control.json => println!("{}", serde_json::to_string_pretty(&r)?),
        Body::Release(r) => println!("released task {} ({} leases)", r.task, r.released),
        Body::Renew(r) => println!("renewed task {}: expires in {} ms", r.task, r.expires_in_ms),
        other => return Err(unexpected(other)),
    }
    Ok(())
}

pub async fn placements(args: ControlArgs) -> anyhow::Result<()> {
    let list = match call(&args.socket.path(), &Request::List, args.json).await? {
        Body::Placements(list) => list,
        other => return Err(unexpected(other)),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    for p in &list {
        print!("{}", p.explain);
    }
    println!("{} placements held", list.len());
    Ok(())
}
