//! Why a call on a [`Node`](super::Node) failed.

use std::net::SocketAddr;

use libp2p::{Multiaddr, PeerId};

/// Why a call on a [`Node`](super::Node) failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The node has shut down.
    #[error("the node has shut down")]
    Shutdown,
    /// A throughput test could not run or got no answer.
    #[error("throughput test: {0}")]
    Throughput(String),
    /// A ping over the tunnel got no answer.
    #[error("ping failed")]
    Ping(#[source] swarm_core::link::PingError),
    /// The metrics endpoint could not listen.
    #[error("cannot serve metrics on {addr}: {detail}")]
    Metrics {
        /// The address.
        addr: SocketAddr,
        /// Why.
        detail: String,
    },
    /// The peer has no verified tunnel record in the cluster view.
    #[error("no verified tunnel record for {0}")]
    NoTunnel(PeerId),
    /// Dialing failed.
    #[error("cannot dial {addr}: {detail}")]
    Dial {
        /// The address.
        addr: Multiaddr,
        /// Why.
        detail: String,
    },
    /// A lease request got no answer (unreachable peer, timeout, bad reply).
    #[error("lease request to {peer}: {detail}")]
    Lease {
        /// The peer asked.
        peer: PeerId,
        /// Why.
        detail: String,
    },
    /// A task could not be placed.
    #[error(transparent)]
    Place(#[from] swarm_core::place::PlaceError),
    /// A VPN call could not be done (no VPN device, a full table, a bad key).
    #[error("VPN: {0}")]
    Vpn(String),
    /// A renewal or release was refused by a node of the placement.
    #[error("lease {lease} on {peer}: {reason}")]
    LeaseRefused {
        /// The node.
        peer: PeerId,
        /// The lease.
        lease: u64,
        /// Its answer.
        reason: String,
    },
}
