//! Why a call on a [`Node`](super::Node) failed.

use std::net::SocketAddr;
use std::sync::Arc;

use libp2p::{Multiaddr, PeerId};

/// Why a call on a [`Node`](super::Node) failed. The underlying error, where there is
/// one, is the [`source`](std::error::Error::source) (shared, so the error stays `Clone`).
#[derive(Debug, Clone, thiserror::Error)]
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
    #[error("cannot serve metrics on {addr}")]
    Metrics {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The peer has no verified tunnel record in the cluster view.
    #[error("no verified tunnel record for {0}")]
    NoTunnel(PeerId),
    /// Dialing failed.
    #[error("cannot dial {addr}")]
    Dial {
        /// The address.
        addr: Multiaddr,
        /// Why.
        #[source]
        source: Arc<libp2p::swarm::DialError>,
    },
    /// A lease request got no answer (unreachable peer, timeout, bad reply).
    #[error("lease request to {peer} got no answer")]
    Lease {
        /// The peer asked.
        peer: PeerId,
        /// Why.
        #[source]
        source: Arc<libp2p::request_response::OutboundFailure>,
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
