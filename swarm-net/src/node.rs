//! The public face of a running node: a cheap cloneable [`Node`] handle whose calls travel
//! to the driver task with a oneshot reply, and a bounded stream of [`NodeEvent`]s.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use std::net::SocketAddr;
use std::time::Duration;

use futures::Stream;
use libp2p::{Multiaddr, PeerId};
use swarm_core::view::{ClusterSnapshot, GossipCounters};
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::task::JoinHandle;

use crate::config::{BuildError, NodeBuilder};
pub use crate::dataplane::DataPlaneStats;
use crate::driver;

/// Something that happened on a node.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// The node listens on a new address.
    Listening {
        /// The address.
        addr: Multiaddr,
    },
    /// A member of this namespace became known (by identify or by its record).
    PeerDiscovered {
        /// The peer.
        peer: PeerId,
    },
    /// A member is no longer known: no record and no connection.
    PeerLost {
        /// The peer.
        peer: PeerId,
    },
    /// A peer's record entered the view or was replaced by a newer one.
    RecordUpdated {
        /// The peer.
        peer: PeerId,
        /// Its sequence number.
        seq: u64,
    },
    /// A peer's record expired.
    RecordExpired {
        /// The peer.
        peer: PeerId,
    },
    /// This node's GPUs appeared or disappeared (a driver reset, an Xid error, a GPU
    /// off the bus); the new inventory is published at once.
    GpuInventoryChanged {
        /// Devices before.
        before: usize,
        /// Devices now.
        after: usize,
    },
    /// A tunnel to the peer carries data (its first handshake, or the first after it
    /// went down; rekeys every two minutes raise no event).
    TunnelUp {
        /// The peer.
        peer: PeerId,
        /// Where its packets go.
        endpoint: Option<SocketAddr>,
    },
    /// A tunnel stopped: its handshake gave up after 90 s, or it sat idle until its keys
    /// were erased.
    TunnelDown {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: &'static str,
    },
    /// A peer's authenticated packets come from a new address (roaming).
    TunnelEndpointChanged {
        /// The peer.
        peer: PeerId,
        /// The new address.
        endpoint: SocketAddr,
    },
    /// A link passed an SLA target (see `swarm_core::link::SlaPolicy`).
    LinkDegraded {
        /// The peer at the other end.
        peer: PeerId,
        /// `latency`, `jitter`, `loss` or `throughput`.
        metric: &'static str,
        /// Its value: ms for latency and jitter, a ratio for loss, bits per second.
        value: f64,
        /// The target, in the same unit.
        target: f64,
    },
    /// A degraded link metric came back within its recovery margin and stayed there.
    LinkRecovered {
        /// The peer.
        peer: PeerId,
        /// The metric.
        metric: &'static str,
        /// Its value.
        value: f64,
        /// The target.
        target: f64,
    },
    /// A record was refused and its sender penalised.
    RecordRejected {
        /// The peer that forwarded it.
        from: PeerId,
        /// Why, as a stable short name.
        reason: &'static str,
    },
}

/// Counters of a running node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Peers with at least one open connection.
    pub connected_peers: usize,
    /// Records in the view, the local one included.
    pub records: usize,
    /// What the view accepted and refused.
    pub gossip: GossipCounters,
    /// Records this node published.
    pub published: u64,
    /// Publications that found no subscribed peer or failed otherwise.
    pub publish_failures: u64,
    /// Events dropped because the event stream was full.
    pub events_dropped: u64,
    /// Bytes received over all libp2p connections.
    pub bytes_in: u64,
    /// Bytes sent over all libp2p connections.
    pub bytes_out: u64,
    /// The tunnel socket and its datagrams.
    pub dataplane: DataPlaneStats,
    /// Tunnel packets dropped, by reason (see `swarm_core::tunnel::DropReason`).
    pub tunnel_drops: Vec<(&'static str, u64)>,
    /// The lease service: what this node granted, refused, renewed, released.
    pub leases: crate::lease::LeaseStats,
}

/// An application datagram received over a tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Who sent it (authenticated by the tunnel).
    pub peer: PeerId,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// What is measured about the link to one peer, and how it stands against the SLA.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkReport {
    /// The peer.
    pub peer: PeerId,
    /// Round trips, jitter, loss and goodput over the short and long windows.
    pub stats: swarm_core::link::LinkStats,
    /// The verdict on each metric.
    pub sla: Vec<crate::links::SlaVerdict>,
}

/// The state of one tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelStatus {
    /// The peer.
    pub peer: PeerId,
    /// Where its packets go.
    pub endpoint: Option<SocketAddr>,
    /// Whether a session carries data now.
    pub established: bool,
    /// Whether a handshake of ours awaits its answer.
    pub handshake_in_progress: bool,
    /// How long ago the session in use was established.
    pub last_handshake: Option<Duration>,
    /// Completed handshakes (the first and every rekey).
    pub handshakes: u64,
    /// Bytes sent, whole UDP datagrams.
    pub tx_bytes: u64,
    /// Bytes received and authenticated, whole UDP datagrams.
    pub rx_bytes: u64,
    /// Datagrams sent.
    pub tx_packets: u64,
    /// Datagrams received and authenticated.
    pub rx_packets: u64,
    /// Datagrams waiting for the handshake.
    pub queued: usize,
    /// Packets of this peer dropped, by reason.
    pub drops: Vec<(&'static str, u64)>,
}

/// Application datagrams received over the node's tunnels; see [`Node::datagrams`].
/// Bounded: when the reader falls behind, datagrams are dropped and counted in
/// [`DataPlaneStats::datagrams_overflow`].
#[derive(Debug)]
pub struct Datagrams {
    rx: mpsc::Receiver<Datagram>,
}

impl Datagrams {
    /// The next datagram, or `None` once the node has stopped.
    pub async fn next(&mut self) -> Option<Datagram> {
        self.rx.recv().await
    }

    /// Up to `limit` datagrams at once (at least one, unless the node stopped).
    pub async fn next_batch(&mut self, into: &mut Vec<Datagram>, limit: usize) -> usize {
        self.rx.recv_many(into, limit).await
    }
}

impl Stream for Datagrams {
    type Item = Datagram;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Datagram>> {
        self.rx.poll_recv(cx)
    }
}

/// Why a call on a [`Node`] failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The node has shut down.
    #[error("the node has shut down")]
    Shutdown,
    /// A throughput test could not run or got no answer.
    #[error("throughput test: {0}")]
    Throughput(String),
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

/// A snapshot of the view and its decoded links, shared between placements.
pub(crate) type SharedView = Arc<(ClusterSnapshot, swarm_core::link::index::LinkIndex)>;

pub(crate) enum Command {
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    ConnectedPeers(oneshot::Sender<Vec<PeerId>>),
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
    ServeMetrics(SocketAddr, oneshot::Sender<Result<SocketAddr, NodeError>>),
    Lease(
        PeerId,
        swarm_core::place::wire::LeaseRequest,
        oneshot::Sender<Result<swarm_core::place::wire::LeaseResponse, NodeError>>,
    ),
    Leases(oneshot::Sender<Vec<swarm_core::place::Lease>>),
    Shutdown,
}

/// A handle to a running node. Clones share the node; dropping every clone, or calling
/// [`Node::shutdown`], stops it.
#[derive(Debug, Clone)]
pub struct Node {
    peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    outgoing: mpsc::Sender<(PeerId, Vec<u8>)>,
    datagrams: Arc<std::sync::Mutex<Option<Datagrams>>>,
    driver: Arc<Mutex<Option<JoinHandle<()>>>>,
}

/// The node's events. Bounded: when the reader falls behind, new events are dropped and
/// counted in [`NodeStats::events_dropped`]; the node never waits for the reader.
#[derive(Debug)]
pub struct NodeEvents {
    rx: mpsc::Receiver<NodeEvent>,
}

impl NodeEvents {
    pub(crate) fn new(rx: mpsc::Receiver<NodeEvent>) -> Self {
        Self { rx }
    }

    /// The next event, or `None` once the node has stopped.
    pub async fn next(&mut self) -> Option<NodeEvent> {
        self.rx.recv().await
    }
}

impl Stream for NodeEvents {
    type Item = NodeEvent;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<NodeEvent>> {
        self.rx.poll_recv(cx)
    }
}

impl NodeBuilder {
    /// Starts the node on the current tokio runtime. Returns once every listen address
    /// is bound, so [`Node::listen_addrs`] is complete.
    pub async fn start(self) -> Result<(Node, NodeEvents), BuildError> {
        let config = self.config()?;
        let spawned = driver::spawn(self, config).await?;
        let node = Node {
            peer_id: spawned.peer_id,
            commands: spawned.commands,
            outgoing: spawned.outgoing,
            datagrams: Arc::new(std::sync::Mutex::new(Some(Datagrams { rx: spawned.datagrams }))),
            driver: Arc::new(Mutex::new(Some(spawned.join))),
        };
        let events = spawned.events;
        Ok((node, events))
    }
}

impl Node {
    /// This node's id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    pub(crate) async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| NodeError::Shutdown)?;
        rx.await.map_err(|_| NodeError::Shutdown)
    }

    /// The addresses the node listens on, each ending in `/p2p/<id>`.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NodeError> {
        self.ask(Command::ListenAddrs).await
    }

    /// Peers with an open connection.
    pub async fn connected_peers(&self) -> Result<Vec<PeerId>, NodeError> {
        self.ask(Command::ConnectedPeers).await
    }

    /// A copy of the cluster view.
    pub async fn cluster(&self) -> Result<ClusterSnapshot, NodeError> {
        self.ask(Command::Snapshot).await
    }

    /// How many records the cluster view holds, its own included. Cheaper than
    /// [`Node::cluster`].
    pub async fn record_count(&self) -> Result<usize, NodeError> {
        self.ask(Command::RecordCount).await
    }

    /// The node's counters.
    pub async fn stats(&self) -> Result<NodeStats, NodeError> {
        self.ask(Command::Stats).await
    }

    /// Dials `addr`.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NodeError> {
        self.ask(|tx| Command::Dial(addr, tx)).await?
    }

    /// Starts a tunnel handshake with `peer` unless its tunnel is up or opening. The
    /// peer must have a verified tunnel record in the view; [`NodeEvent::TunnelUp`]
    /// follows when the tunnel carries data.
    pub async fn open_tunnel(&self, peer: PeerId) -> Result<(), NodeError> {
        self.ask(|tx| Command::OpenTunnel(peer, tx)).await?
    }

    /// Closes the tunnel to `peer` and erases its keys; a later datagram or
    /// [`Node::open_tunnel`] opens a new one.
    pub async fn close_tunnel(&self, peer: PeerId) -> Result<(), NodeError> {
        self.ask(|tx| Command::CloseTunnel(peer, tx)).await?
    }

    /// The state of every tunnel.
    pub async fn tunnels(&self) -> Result<Vec<TunnelStatus>, NodeError> {
        self.ask(Command::Tunnels).await
    }

    /// What is measured about each link with a live tunnel, and its SLA verdicts.
    pub async fn links(&self) -> Result<Vec<LinkReport>, NodeError> {
        self.ask(Command::Links).await
    }

    /// The link between any two nodes, from the gossiped link summaries: measured by
    /// one end (and how old), or a Vivaldi estimate when both ends had a handshake
    /// confirmed in the last 180 s, or `None`.
    pub async fn link_between(
        &self,
        a: PeerId,
        b: PeerId,
    ) -> Result<Option<swarm_core::link::summary::LinkAnswer>, NodeError> {
        self.ask(|tx| Command::LinkBetween(a, b, tx)).await
    }

    /// Measures the throughput of the link to `peer` with a bounded packet train (128 x
    /// 1200 bytes, at most one per second per link): bits per second of payload. The
    /// result also feeds the link's throughput SLA for 10 minutes.
    pub async fn measure_throughput(&self, peer: PeerId) -> Result<f64, NodeError> {
        self.ask(|tx| Command::MeasureThroughput(peer, tx)).await?
    }

    /// Serves the node's metrics over HTTP on `addr` until the node stops: `GET /metrics`
    /// (OpenMetrics: links, SLA verdicts, tunnels, gossip) and `GET /links` (JSON).
    /// Returns the bound address (useful with port 0). Bind it to loopback unless a
    /// scraper elsewhere needs it: it has no authentication.
    pub async fn serve_metrics(&self, addr: SocketAddr) -> Result<SocketAddr, NodeError> {
        self.ask(|tx| Command::ServeMetrics(addr, tx)).await?
    }

    /// Sends an application datagram to `peer` over its tunnel, opening the tunnel if
    /// needed. Like UDP, delivery is not guaranteed; this waits only for room in the
    /// node's send queue. Datagrams to peers without a verified tunnel record, or
    /// larger than 65 000 bytes, are dropped and counted in [`NodeStats::dataplane`].
    pub async fn send_datagram(&self, peer: PeerId, data: Vec<u8>) -> Result<(), NodeError> {
        self.outgoing.send((peer, data)).await.map_err(|_| NodeError::Shutdown)
    }

    /// The receiver of application datagrams. There is one per node: the first call
    /// takes it, later calls get `None`.
    pub fn datagrams(&self) -> Option<Datagrams> {
        self.datagrams.lock().ok()?.take()
    }

    /// Stops the node and waits until its task, sockets and connections are gone.
    /// Calling it again, or from a clone, is harmless.
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown).await;
        let join = self.driver.lock().await.take();
        if let Some(join) = join {
            if let Err(e) = join.await {
                tracing::error!(error = %e, "node driver task failed");
            }
        }
    }
}
