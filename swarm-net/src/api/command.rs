//! What a [`Node`](super::Node) call asks of the driver task, with the oneshot its answer
//! goes back on.

use std::net::SocketAddr;
use std::sync::Arc;

use libp2p::{Multiaddr, PeerId};
use swarm_core::view::ClusterSnapshot;
use tokio::sync::oneshot;

use super::{Gateway, LinkReport, NodeError, NodeStats, OverlayAddresses, StockPeer, TunnelStatus};

/// The driver's live placement index, shared with placements.
pub(crate) type SharedIndex = Arc<swarm_core::place::PlacementIndex<'static>>;

pub(crate) enum Command {
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    ConnectedPeers(oneshot::Sender<Vec<PeerId>>),
    KnownAddresses(usize, oneshot::Sender<Vec<Multiaddr>>),
    Snapshot(oneshot::Sender<ClusterSnapshot>),
    PlacementIndex(oneshot::Sender<SharedIndex>),
    Stats(oneshot::Sender<NodeStats>),
    RecordCount(oneshot::Sender<usize>),
    Dial(Multiaddr, oneshot::Sender<Result<(), NodeError>>),
    BlockPeer(PeerId, bool, oneshot::Sender<()>),
    OpenTunnel(PeerId, oneshot::Sender<Result<(), NodeError>>),
    CloseTunnel(PeerId, oneshot::Sender<Result<(), NodeError>>),
    Tunnels(oneshot::Sender<Vec<TunnelStatus>>),
    Links(oneshot::Sender<Vec<LinkReport>>),
    LinkBetween(PeerId, PeerId, oneshot::Sender<Option<swarm_core::link::summary::LinkAnswer>>),
    MeasureThroughput(PeerId, oneshot::Sender<Result<f64, NodeError>>),
    Ping(PeerId, oneshot::Sender<Result<std::time::Duration, NodeError>>),
    ServeMetrics(SocketAddr, oneshot::Sender<Result<SocketAddr, NodeError>>),
    Lease(PeerId, swarm_core::place::wire::LeaseRequest, oneshot::Sender<LeaseAnswer>),
    Leases(oneshot::Sender<Vec<swarm_core::place::Lease>>),
    /// A placement this node holds now: watch its constrained links.
    WatchPlacement(Box<(swarm_core::place::TaskSpec, swarm_core::place::Placement)>),
    /// A watched placement was renewed: its leases last this much longer.
    PlacementRenewed(String, std::time::Duration),
    /// A watched placement was released.
    PlacementReleased(String),
    Overlay(PeerId, oneshot::Sender<Option<OverlayAddresses>>),
    AddStockPeer([u8; 32], String, oneshot::Sender<Result<(StockPeer, Gateway), NodeError>>),
    RemoveStockPeer([u8; 32], oneshot::Sender<bool>),
    StockPeers(oneshot::Sender<Vec<StockPeer>>),
    /// libp2p's own metrics (bandwidth by transport), OpenMetrics text.
    Libp2pMetrics(oneshot::Sender<String>),
    Shutdown,
}

/// A lease answer on its way to its asker. A grant that is dropped unread (the asker's
/// future was dropped, before or after the answer reached its channel) is released: it
/// sends the driver a release of its own as it drops, so a cancelled placement leaks no
/// lease until its expiry.
#[derive(Debug)]
pub(crate) struct LeaseAnswer {
    result: Option<Result<swarm_core::place::wire::LeaseResponse, NodeError>>,
    peer: PeerId,
    commands: tokio::sync::mpsc::WeakSender<Command>,
}

impl LeaseAnswer {
    pub(crate) fn new(
        peer: PeerId,
        result: Result<swarm_core::place::wire::LeaseResponse, NodeError>,
        commands: tokio::sync::mpsc::WeakSender<Command>,
    ) -> Self {
        Self { result: Some(result), peer, commands }
    }

    /// The answer, now the asker's to act on.
    pub(crate) fn take(mut self) -> Result<swarm_core::place::wire::LeaseResponse, NodeError> {
        self.result.take().unwrap_or(Err(NodeError::Shutdown))
    }
}

impl Drop for LeaseAnswer {
    fn drop(&mut self) {
        use swarm_core::place::wire::{LeaseRequest, LeaseResponse};
        let Some(Ok(LeaseResponse::Granted { lease, .. })) = self.result.take() else { return };
        let Some(commands) = self.commands.upgrade() else { return };
        // The release's own answer is dropped unread: it grants nothing.
        let (reply, _) = oneshot::channel();
        let release = Command::Lease(self.peer, LeaseRequest::Release { lease }, reply);
        match commands.try_send(release) {
            Ok(()) => tracing::debug!(peer = %self.peer, lease, "a grant no one took: released"),
            Err(_) => tracing::debug!(peer = %self.peer, lease, "a grant no one took expires (queue full)"),
        }
    }
}
