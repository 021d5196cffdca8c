//! `swarm-node ping PEER`: the round trip to a peer over its tunnel, each time, like
//! `tailscale ping`: one link probe per ping, sent at once, answered by the peer's
//! data plane.

use std::time::Duration;

use clap::Args;
use swarm::net::answers::PingSummary;
use swarm::{Node, PeerId};

use crate::control::{call, unexpected, Body, ControlArgs, Request};

#[derive(Debug, Args)]
pub struct PingArgs {
    /// The peer: its id, or the end of it as the tables show it (`…k7Xq2mPa`).
    pub peer: String,
    /// How many pings (0: until Ctrl-C).
    #[arg(long, short = 'c', default_value_t = 4)]
    pub count: u32,
    /// Time between pings, e.g. 200ms or 1s.
    #[arg(long, short = 'i', default_value = "1s", value_parser = crate::parse_duration)]
    pub interval: Duration,
    #[command(flatten)]
    pub control: ControlArgs,
    /// One JSON object per ping.
    #[arg(long)]
    pub json: bool,
}

/// A peer named by its id or by a unique end of it, among the peers in `node`'s view.
pub async fn resolve_peer(node: &Node, text: &str) -> anyhow::Result<PeerId> {
    if let Ok(peer) = text.parse::<PeerId>() {
        return Ok(peer);
    }
    let tail = text.trim_start_matches('…');
    if tail.len() < 4 {
        anyhow::bail!("{text:?} is not a peer id (give the id, or at least its last 4 characters)");
    }
    let view = node.cluster().await?;
    let matches: Vec<PeerId> =
        view.entries.iter().map(|e| e.record.peer_id).filter(|p| p.to_base58().ends_with(tail)).collect();
    match matches.as_slice() {
        [one] => Ok(*one),
        [] => anyhow::bail!("no peer in this node's view ends with {tail:?}"),
        _ => anyhow::bail!("{} peers end with {tail:?}: give more of the id", matches.len()),
    }
}

/// The node's side: one ping, with the path it took.
pub async fn ping_once(node: &Node, peer: &str) -> anyhow::Result<PingSummary> {
    let peer = resolve_peer(node, peer).await?;
    let rtt = node.ping(peer).await?;
    let tunnel = node.tunnels().await?.into_iter().find(|t| t.peer == peer);
    Ok(PingSummary::new(peer, rtt, tunnel.as_ref()))
}

pub async fn ping(args: PingArgs) -> anyhow::Result<()> {
    let path = args.control.path();
    let mut answered = 0u32;
    let mut sent = 0u32;
    let mut last_error = None;
    while args.count == 0 || sent < args.count {
        if sent > 0 {
            tokio::time::sleep(args.interval).await;
        }
        sent += 1;
        let answer = match call(&path, &Request::Ping { peer: args.peer.clone() }, args.json).await {
            Ok(Body::Ping(p)) => Ok(p),
            Ok(other) => Err(unexpected(other)),
            Err(e) => Err(e),
        };
        match answer {
            Ok(p) => {
                answered += 1;
                if args.json {
                    println!("{}", serde_json::to_string(&p)?);
                } else {
                    let route = match (&p.via, &p.endpoint) {
                        (Some(via), _) => format!("relayed via {via}"),
                        (None, Some(e)) => format!("direct {e}"),
                        _ => "-".to_owned(),
                    };
                    println!("pong from {} ({route}) in {} ms", p.peer, p.rtt_ms);
                }
            }
            Err(e) => {
                if !args.json {
                    println!("no pong: {e:#}");
                }
                last_error = Some(e);
            }
        }
    }
    if answered == 0 {
        return Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no ping sent")));
    }
    Ok(())
}
