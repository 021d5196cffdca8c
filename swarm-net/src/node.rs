//! The public face of a running node: a cheap cloneable [`Node`] handle whose calls travel
//! to the driver task with a oneshot reply, and a bounded stream of [`NodeEvent`]s.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use libp2p::{Multiaddr, PeerId};
use swarm_core::view::{ClusterSnapshot, GossipCounters};
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::task::JoinHandle;

use crate::config::{BuildError, NodeBuilder};
use crate::driver;

/// Something that happened on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

/// Why a call on a [`Node`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The node has shut down.
    #[error("the node has shut down")]
    Shutdown,
    /// Dialing failed.
    #[error("cannot dial {addr}: {detail}")]
    Dial {
        /// The address.
        addr: Multiaddr,
        /// Why.
        detail: String,
    },
}

pub(crate) enum Command {
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    ConnectedPeers(oneshot::Sender<Vec<PeerId>>),
    Snapshot(oneshot::Sender<ClusterSnapshot>),
    Stats(oneshot::Sender<NodeStats>),
    RecordCount(oneshot::Sender<usize>),
    Dial(Multiaddr, oneshot::Sender<Result<(), NodeError>>),
    Shutdown,
}

/// A handle to a running node. Clones share the node; dropping every clone, or calling
/// [`Node::shutdown`], stops it.
#[derive(Debug, Clone)]
pub struct Node {
    peer_id: PeerId,
    commands: mpsc::Sender<Command>,
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
        let (commands, events, join, peer_id) = driver::spawn(self, config).await?;
        let node = Node { peer_id, commands, driver: Arc::new(Mutex::new(Some(join))) };
        Ok((node, NodeEvents::new(events)))
    }
}

impl Node {
    /// This node's id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, NodeError> {
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
