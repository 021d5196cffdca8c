//! # swarm
//!
//! A decentralized GPU cloud: GPU owners run a node; nodes find each other with no
//! central server (libp2p Kademlia), gossip signed records of their GPUs, CPU, memory and
//! tunnel keys, each keeps an expiring [`ClusterView`](core::view::ClusterView) of its
//! swarm, and they talk over WireGuard tunnels opened from those records
//! ([`Node::send_datagram`], [`Node::datagrams`]). This facade re-exports the workspace's crates:
//!
//! - [`core`] (`swarm-core`): pure protocol logic, no I/O;
//! - [`net`] (`swarm-net`): the libp2p node, its driver and public API;
//! - [`gpu`] (`swarm-gpu`): GPU probes.
//!
//! ```no_run
//! use std::sync::Arc;
//! use swarm::{NodeBuilder, NodeEvent};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let (node, mut events) = NodeBuilder::new("my-swarm")
//!         .listen("/ip4/0.0.0.0/tcp/0".parse()?)
//!         .bootstrap("/ip4/192.0.2.1/tcp/4001".parse()?)
//!         .gpu_probe(Arc::new("2xA100-80GB".parse::<swarm::gpu::StaticProbe>()?))
//!         .label("region=eu-west")
//!         .start()
//!         .await?;
//!     println!("I am {}", node.peer_id());
//!     while let Some(event) = events.next().await {
//!         if let NodeEvent::RecordUpdated { peer, seq } = event {
//!             let view = node.cluster().await?;
//!             println!("{peer} is at seq {seq}; {} nodes known", view.len());
//!         }
//!     }
//!     node.shutdown().await;
//!     Ok(())
//! }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use swarm_core as core;
pub use swarm_gpu as gpu;
pub use swarm_net as net;

pub use swarm_net::{
    BuildError, Datagram, Datagrams, Multiaddr, Node, NodeBuilder, NodeError, NodeEvent, NodeEvents,
    NodeIdentity, NodeStats, PeerId, TunnelStatus,
};
