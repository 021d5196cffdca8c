//! The I/O side of swarm: libp2p discovery and gossip, the node driver, and the public
//! node API.
//!
//! Data flow of a node, as far as it goes today:
//! 1. **Discover** — libp2p (QUIC and TCP+Noise+yamux), Kademlia with bootstrap peers,
//!    random walks and a provider record under the namespace key; identify feeds
//!    Kademlia; mDNS with the `mdns` feature.
//! 2. **Bind identity** — keys from [`NodeIdentity`]; the tunnel key travels in a signed
//!    `TunnelRecord`.
//! 3. **Tunnel** — WireGuard tunnels (`swarm_core::tunnel`) to peers whose signed tunnel
//!    records are in the cluster view, over one batched UDP socket; application
//!    datagrams with [`Node::send_datagram`] and [`Node::datagrams`].
//! 4. **Gossip** — gossipsub with strict signing carries each node's `NodeRecord`; every
//!    record is validated in `swarm-core` before it is forwarded, and bad ones penalise
//!    their sender.
//!
//! ```no_run
//! use std::sync::Arc;
//! use swarm_net::{NodeBuilder, NodeEvent};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let (node, mut events) = NodeBuilder::new("my-swarm")
//!     .listen("/ip4/0.0.0.0/udp/0/quic-v1".parse()?)
//!     .bootstrap("/ip4/192.0.2.1/udp/4001/quic-v1".parse()?)
//!     .gpu_probe(Arc::new("2xA100-80GB".parse::<swarm_gpu::StaticProbe>()?))
//!     .start()
//!     .await?;
//! while let Some(event) = events.next().await {
//!     if let NodeEvent::RecordUpdated { peer, .. } = event {
//!         let view = node.cluster().await?;
//!         println!("{peer} updated; {} nodes known", view.len());
//!     }
//! }
//! node.shutdown().await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod admission;
mod api;
mod autonat_client;
mod behaviour;
mod config;
mod dataplane;
mod driver;
mod find;
mod framed;
mod gpu_sampler;
mod host;
mod identity;
mod kademlia;
mod lease;
pub mod mesh;
mod punch;
mod serve;
mod sync;
pub use serve::AcceptBackoff;
mod tunnel_relay;
mod wrapped;

pub use api::{answers, summary};
pub use api::{
    sla_state_name, AutonatStats, BpsVerdict, DataPlaneStats, Datagram, Datagrams, Gateway, LinkJson,
    LinkReport, MsVerdict, Node, NodeError, NodeEvent, NodeEvents, NodeStats, OverlayAddresses, Path,
    RatioVerdict, RelayStats, SlaSummary, StockPeer, TunnelStatus, VpnDrops,
};
pub use config::{
    BuildError, IdentitySource, NodeBuilder, NodeConfig, RelayMode, VpnConfig, DEFAULT_VPN_MTU, MIN_HEARTBEAT,
};
pub use dataplane::tun::{TunError, TunStats};
pub use identity::{load_psk, overlay_path, tunnel_key_path, IdentityError, NodeIdentity};
pub use libp2p::{Multiaddr, PeerId};
pub use swarm_core::link::SlaVerdict;
pub use swarm_core::place::LeaseStats;
