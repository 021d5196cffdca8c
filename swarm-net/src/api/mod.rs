//! The public face of a running node: a cheap cloneable [`Node`] handle whose calls travel
//! to the driver task with a oneshot reply, and a bounded stream of [`NodeEvent`]s.
//!
//! - [`event`]: what a node reports ([`NodeEvent`], [`NodeStats`]);
//! - [`error`]: why a call failed ([`NodeError`]);
//! - `command`: what a call asks of the driver;
//! - `placing`: placing tasks ([`Node::place`]) over the lease protocol;
//! - [`summary`] and [`answers`]: the JSON the node's commands and endpoints print.

pub mod answers;
mod command;
mod error;
mod event;
mod placing;
pub mod summary;
mod vpn;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use std::net::SocketAddr;

use futures::Stream;
use libp2p::{Multiaddr, PeerId};
use swarm_core::view::ClusterSnapshot;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::task::JoinHandle;

pub use crate::dataplane::{DataPlaneStats, Datagram, LinkReport, Path, TunnelStatus, VpnDrops};
pub use crate::tunnel_relay::RelayStats;
pub(crate) use command::{Command, LeaseAnswer, SharedIndex};
pub use error::NodeError;
pub use event::{AutonatStats, NodeEvent, NodeStats, OverlayAddresses};
pub use summary::{sla_state_name, BpsVerdict, LinkJson, MsVerdict, RatioVerdict, SlaSummary};
pub use vpn::{Gateway, StockPeer};

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

/// A handle to a running node. Clones share the node; dropping every clone, or calling
/// [`Node::shutdown`], stops it.
///
/// # Cancellation
///
/// Every async method is cancel-safe in this sense: it sends one message to the node's
/// driver task and awaits the answer, so dropping the future at any await drops the
/// answer, never the node's state, and never leaves it half-changed.
///
/// - Reads ([`listen_addrs`](Node::listen_addrs), [`cluster`](Node::cluster),
///   [`stats`](Node::stats), [`tunnels`](Node::tunnels), [`links`](Node::links),
///   [`leases`](Node::leases), [`rank`](Node::rank), ...) have no effect to undo.
/// - An action whose message was sent still happens: a [`dial`](Node::dial) goes on, a
///   tunnel opens or closes, a stock peer is added or removed, the metrics endpoint binds
///   (and serves until the node stops), a [`ping`](Node::ping) or throughput probe is
///   sent and its answer discarded. Dropped before the message was sent (the driver's
///   queue was full), nothing happens.
/// - [`place`](Node::place) (and `place_with`, `place_explained`) leaves no lease behind:
///   grants it had received are released by a task it spawns as it drops, and grants
///   still in flight are released by the driver when their answer finds no one waiting.
/// - [`renew`](Node::renew) and [`release`](Node::release) ask every node of the
///   placement at once: a dropped call leaves each lease as the requests already sent
///   made it; a lease neither renewed nor released expires after its lease time.
/// - [`send_datagram`](Node::send_datagram) either queued the datagram or did not.
/// - [`shutdown`](Node::shutdown) dropped after its message went out still stops the
///   node; only the wait for the driver to finish is cut short.
#[derive(Debug, Clone)]
pub struct Node {
    peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    outgoing: mpsc::Sender<(PeerId, Vec<u8>)>,
    datagrams: Arc<std::sync::Mutex<Option<Datagrams>>>,
    driver: Arc<Mutex<Option<JoinHandle<()>>>>,
    /// This node's reliability scores of the others, from its placements' outcomes
    /// (`swarm_core::place::trust`).
    reliability: Arc<std::sync::Mutex<swarm_core::place::trust::Reliability>>,
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

impl Node {
    /// The handle of a node whose driver was just spawned.
    pub(crate) fn new(
        peer_id: PeerId,
        commands: mpsc::Sender<Command>,
        outgoing: mpsc::Sender<(PeerId, Vec<u8>)>,
        datagrams: mpsc::Receiver<Datagram>,
        driver: JoinHandle<()>,
    ) -> Self {
        Self {
            peer_id,
            commands,
            outgoing,
            datagrams: Arc::new(std::sync::Mutex::new(Some(Datagrams { rx: datagrams }))),
            driver: Arc::new(Mutex::new(Some(driver))),
            reliability: Arc::default(),
        }
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

    /// Up to `limit` dialable addresses of members this node knows (Kademlia's routing
    /// table, connected peers first), each ending in `/p2p/<id>`: what to save so that a
    /// restart can rejoin without a bootstrap address.
    pub async fn known_addresses(&self, limit: usize) -> Result<Vec<Multiaddr>, NodeError> {
        self.ask(|tx| Command::KnownAddresses(limit, tx)).await
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

    /// Cuts `peer` off the control plane (`blocked`) or lets it back: its libp2p
    /// connections are closed and refused both ways while blocked. Its records may still
    /// reach this node through others, and tunnels are not closed by it. For an operator
    /// to shut out a misbehaving peer, and for tests and benchmarks to partition a swarm.
    pub async fn block_peer(&self, peer: PeerId, blocked: bool) -> Result<(), NodeError> {
        self.ask(|tx| Command::BlockPeer(peer, blocked, tx)).await
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

    /// This node's overlay addresses (IPv4 only with
    /// [`NodeBuilder::overlay_ipv4`](crate::NodeBuilder::overlay_ipv4)).
    pub async fn overlay(&self) -> Result<OverlayAddresses, NodeError> {
        let me = self.peer_id;
        // The driver always answers for the node itself.
        self.ask(|tx| Command::Overlay(me, tx)).await?.ok_or(NodeError::Shutdown)
    }

    /// The overlay addresses of `peer`, from its record; `None` when the view has no
    /// record of it. Its IPv4 address is the one its claim holds, known when this node
    /// claims in the same range ([`NodeBuilder::overlay_ipv4`](crate::NodeBuilder::overlay_ipv4)).
    pub async fn overlay_of(&self, peer: PeerId) -> Result<Option<OverlayAddresses>, NodeError> {
        self.ask(|tx| Command::Overlay(peer, tx)).await
    }

    /// Registers a stock WireGuard peer by its public key: this node becomes its gateway
    /// (it needs the VPN on). Gives the peer's addresses and pre-shared key, and what it
    /// needs of the gateway: everything of a wg-quick configuration but its private key.
    /// Registering a key again returns the same.
    pub async fn add_stock_peer(
        &self,
        public_key: [u8; 32],
        name: impl Into<String>,
    ) -> Result<(StockPeer, Gateway), NodeError> {
        let name = name.into();
        self.ask(|tx| Command::AddStockPeer(public_key, name, tx)).await?
    }

    /// Removes a stock peer; whether it was one.
    pub async fn remove_stock_peer(&self, public_key: [u8; 32]) -> Result<bool, NodeError> {
        self.ask(|tx| Command::RemoveStockPeer(public_key, tx)).await
    }

    /// The stock WireGuard peers this node is the gateway of.
    pub async fn stock_peers(&self) -> Result<Vec<StockPeer>, NodeError> {
        self.ask(Command::StockPeers).await
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

    /// The round trip to `peer` over its tunnel, now: one link probe sent at once and
    /// its answer awaited (at most [`swarm_core::link::PING_TIMEOUT`]), like
    /// `tailscale ping`. The sample also counts in the link's statistics. Dropping the
    /// future forgets the answer; nothing else is held.
    pub async fn ping(&self, peer: PeerId) -> Result<std::time::Duration, NodeError> {
        self.ask(|tx| Command::Ping(peer, tx)).await?
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
