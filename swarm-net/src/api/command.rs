//! What a [`Node`](super::Node) call asks of the driver task, with the oneshot its answer
//! goes back on.

use std::net::SocketAddr;
use std::sync::Arc;

use libp2p::{Multiaddr, PeerId};
use swarm_core::view::ClusterSnapshot;
use tokio::sync::oneshot;

use super::{Gateway, LinkReport, NodeError, NodeStats, OverlayAddresses, StockPeer, TunnelStatus};

/// A snapshot of the view and its decoded links, shared between placements.
pub(crate) type SharedView = Arc<(ClusterSnapshot, swarm_core::link::index::LinkIndex)>;

pub(crate) enum Command {
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    ConnectedPeers(oneshot::Sender<Vec<PeerId>>),
    KnownAddresses(usize, oneshot::Sender<Vec<Multiaddr>>),
    Snapshot(oneshot::Sender<ClusterSnapshot>),
    PlacementView(oneshot::Sender<SharedView>),
    Stats(oneshot::Sender<NodeStats>),
    RecordCount(oneshot::Sender<usize>),
    Dial(Multiaddr, oneshot::Sender<Result<(), NodeError>>),
    OpenTunnel(PeerId, oneshot::Sender<Result<(), NodeError>>),
    CloseTunnel(PeerId, oneshot::Sender<Result<(), NodeError>>),
    Tunnels(oneshot::Sender<Vec<TunnelStatus>>),
    Links(oneshot::Sender<Vec<LinkReport>>),
    LinkBetween(PeerId, PeerId, oneshot::Sender<Option<swarm_core::link::summary::LinkAnswer>>),
    MeasureThroughput(PeerId, oneshot::Sender<Result<f64, NodeError>>),
    Ping(PeerId, oneshot::Sender<Result<std::time::Duration, NodeError>>),
    ServeMetrics(SocketAddr, oneshot::Sender<Result<SocketAddr, NodeError>>),
    Lease(
        PeerId,
        swarm_core::place::wire::LeaseRequest,
        oneshot::Sender<Result<swarm_core::place::wire::LeaseResponse, NodeError>>,
    ),
    Leases(oneshot::Sender<Vec<swarm_core::place::Lease>>),
    Overlay(PeerId, oneshot::Sender<Option<OverlayAddresses>>),
    AddStockPeer([u8; 32], String, oneshot::Sender<Result<(StockPeer, Gateway), NodeError>>),
    RemoveStockPeer([u8; 32], oneshot::Sender<bool>),
    StockPeers(oneshot::Sender<Vec<StockPeer>>),
    /// libp2p's own metrics (bandwidth by transport), OpenMetrics text.
    Libp2pMetrics(oneshot::Sender<String>),
    Shutdown,
}
