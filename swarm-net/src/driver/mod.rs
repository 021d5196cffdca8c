//! The one task per node (STYLE.md 3): it owns the libp2p swarm, the data plane and the
//! sans-IO cores, and moves bytes and events between them. Protocol decisions live in
//! `swarm-core` ([`ClusterView`], [`RecordPublisher`], the link table and the lease
//! service) and in [`DiscoverySchedule`]; the inner modules report in their own types,
//! and only this module maps them to the public [`NodeEvent`] and [`NodeError`].
//!
//! - [`start`]: building the node (keys, GPUs, swarm, sockets, listeners);
//! - [`swarm`]: libp2p's events (gossip, identify, Kademlia, connections);
//! - [`records`]: the local record out, the view's changes in;
//! - [`tunnels`]: the data plane's events and link gossip;
//! - [`leases`]: the lease protocol's glue;
//! - [`overlay`]: overlay addresses, the IPv4 claim, the VPN device;
//! - [`gateway`]: stock WireGuard peers, ours and other gateways';
//! - [`relays`]: libp2p relays, reservations behind a NAT, DCUtR and AutoNAT;
//! - [`punches`]: hole punching for tunnels, and its signalling;
//! - [`relayed`]: tunnels relayed through a member where no hole can be punched;
//! - [`detours`]: a breached link's data through a better-placed member;
//! - [`watch`]: live placements watching the links their task constrained;
//! - [`commands`]: the [`Node`] handle's calls.

mod commands;
mod detours;
mod find;
mod gateway;
mod leases;
mod overlay;
mod punches;
mod records;
mod redial;
mod relayed;
mod relays;
mod routing;

mod start;
mod swarm;
mod sync;
mod tunnels;
mod watch;

use std::collections::{HashMap, HashSet};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use libp2p::request_response::OutboundRequestId;
use libp2p::{gossipsub, Multiaddr, PeerId, Swarm};
use prometheus_client::registry::Registry;
use swarm_core::gpu::{GpuChange, GpuChangeFilter, GpuSnapshot};
use swarm_core::overlay::{Ipv4Claimer, OverlayV6};
use swarm_core::publish::RecordPublisher;
use swarm_core::view::ClusterView;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::api::{Command, Node, NodeError, NodeEvent, NodeEvents, NodeStats};
use crate::behaviour::Behaviour;
use crate::config::{BuildError, NodeBuilder, NodeConfig};
use crate::dataplane::DataPlane;
use crate::lease::Leases;
use swarm_core::discovery::DiscoverySchedule;

/// Application datagrams sealed per turn of the loop, at most.
const SEND_BATCH: usize = 64;
/// Receive batches handled per turn of the loop, so that a flood cannot starve the rest
/// of the node (the loop comes back at once while the socket stays readable).
const READS_PER_TURN: usize = 8;
/// Swarm events handled in one turn of the loop, the one it woke for included: those
/// already waiting are taken at once, so the turn's fixed cost (the flush, the next
/// deadline, the `select!`, and above all the wait for the runtime to poll the loop
/// again) is paid once for a burst rather than once an event. On a busy host, one event
/// a turn left a node's swarm events waiting in line: a 64-node cold start on two cores
/// took 4.8 s (median of 13) with one, 3.5 s with this (`docs/self-healing.md`, "Swarm
/// events by the turn").
const SWARM_EVENTS_PER_TURN: usize = 64;

/// After VPN traffic, the loop keeps polling the data plane this long before it sleeps:
/// an answer that comes back within it (a ping's, an RPC's) is handled without a wake-up
/// from idle (with `cargo bench --bench vpn`: ping p50 0.446 -> 0.329 ms). Link probes
/// alone never start it, so an idle node does not spin.
const SPIN: Duration = Duration::from_micros(500);

/// A caller waiting for a peer's answer to a lease request.
type LeaseWaiter = oneshot::Sender<crate::api::LeaseAnswer>;
/// A caller waiting for a throughput test's figure.
type ThroughputWaiter = oneshot::Sender<Result<f64, NodeError>>;
/// A caller waiting for a ping's round trip.
type PingWaiter = oneshot::Sender<Result<Duration, NodeError>>;

pub(crate) struct Driver {
    swarm: Swarm<Behaviour>,
    config: NodeConfig,
    topic: gossipsub::IdentTopic,
    view: ClusterView,
    publisher: RecordPublisher,
    discovery: DiscoverySchedule,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NodeEvent>,
    listen_addrs: Vec<Multiaddr>,
    /// Namespace members known by identify or by their record.
    members: HashSet<PeerId>,
    /// Connected peers that identified as members of our namespace.
    identified: HashSet<PeerId>,
    /// Members we are dialing, so a burst of discoveries does not overshoot `target_peers`.
    dialing: HashSet<PeerId>,
    /// Address ranges' places in Kademlia's routing table (see `routing`).
    diversity: swarm_core::diversity::RoutingDiversity<PeerId>,
    /// Where each open connection comes from (`None`: through a relay).
    connection_ips: HashMap<libp2p::swarm::ConnectionId, Option<std::net::IpAddr>>,
    /// When the diversity table was last checked against Kademlia's.
    diversity_reconciled: Option<Instant>,
    /// Where each connected peer's latest connection comes from.
    peer_ips: HashMap<PeerId, Option<std::net::IpAddr>>,
    /// The range of each provider record stored, per key.
    provider_ranges: HashMap<libp2p::kad::RecordKey, HashMap<PeerId, Option<swarm_core::diversity::Range>>>,
    /// Provider records refused for their range.
    providers_refused: u64,
    dataplane: DataPlane,
    outgoing: mpsc::Receiver<(PeerId, Vec<u8>)>,
    outgoing_open: bool,
    registry: Registry,
    stats: NodeStats,
    gpu_samples: mpsc::Receiver<GpuSnapshot>,
    gpu_sampler: JoinHandle<()>,
    gpu_filter: GpuChangeFilter,
    /// What the metrics endpoint talks to the driver through, without keeping it alive.
    weak_commands: mpsc::WeakSender<Command>,
    metrics_tasks: Vec<JoinHandle<()>>,
    leases: Leases,
    /// Our lease requests to peers, waiting for their answer.
    lease_waiters: HashMap<OutboundRequestId, leases::PendingLease>,
    /// Throughput tests waiting for their figure.
    throughput_waiters: HashMap<PeerId, ThroughputWaiter>,
    /// Pings waiting for their answer (one per peer: a newer one replaces it).
    ping_waiters: HashMap<PeerId, PingWaiter>,
    /// The placement index, kept up to date from the view's changes, our own links
    /// and our lease table; placements rank it.
    placement: swarm_core::place::LiveIndex,
    /// The swarm's IPv6 overlay.
    overlay_v6: OverlayV6,
    /// Our IPv4 claim and everyone's, when the node claims one.
    overlay: Option<Ipv4Claimer>,
    /// Where our IPv4 candidate persists (beside the identity file).
    overlay_file: Option<std::path::PathBuf>,
    /// Where our stock peers persist (beside the identity file), and the task that
    /// writes them.
    stock_file: Option<std::path::PathBuf>,
    stock_saver: Option<tokio::sync::watch::Sender<Vec<crate::identity::SavedStockPeer>>>,
    /// The stock WireGuard peers we are the gateway of, by public key.
    stock: std::collections::BTreeMap<[u8; 32], gateway::Stock>,
    /// Other gateways' stock peers (by their claim identity): which gateway.
    stock_gateway: HashMap<PeerId, PeerId>,
    /// Who our relay serves (shared with the relay behaviour).
    gate: std::sync::Arc<crate::behaviour::RelayGate>,
    /// Relay candidates and our reservations.
    relays: relays::Relays,
    /// Relayed tunnels: the relay service and our paths.
    relayed: relayed::Relayed,
    /// The identity file's lock: two processes never run one identity.
    _identity_lock: Option<std::fs::File>,
    /// Dials to bootstrap addresses under way, so a failure names its address.
    bootstrap_dials: HashMap<libp2p::swarm::ConnectionId, Multiaddr>,
    /// When to punch and when to relay, per peer.
    planner: swarm_core::nat::plan::PathPlanner<PeerId>,
    /// Hole punches and their signalling.
    punches: punches::Punches,
    /// What the reflectors say of our tunnel socket's NAT.
    reflexive: swarm_core::nat::Reflexive,
    /// What each other gateway announces.
    remote_stock: HashMap<PeerId, Vec<swarm_core::record::ext::StockRoute>>,
    /// Which breached links take a detour, and through whom.
    detours: swarm_core::link::detour::Detours<PeerId>,
    /// When breached and detoured peers are looked at next.
    detour_check: Option<Instant>,
    /// Our links as last summarised (each second), and when: the first hops of detours,
    /// and the origin's links in placements.
    own_links: Option<(swarm_core::link::summary::LinkSummaries, swarm_core::time::UnixMillis)>,
    /// The placements this node holds, watching their links.
    watch: swarm_core::place::watch::PlacementWatch,
    /// When they are judged next.
    watch_check: Option<Instant>,
    /// View sync with members on connecting.
    syncs: sync::Syncs,
    /// Look-ups for the namespace's providers.
    finds: find::Finds,
    /// Members whose last connection closed, redialed for a while.
    redials: swarm_core::redial::Redials<PeerId, Vec<Multiaddr>>,
}

impl NodeBuilder {
    /// Starts the node on the current tokio runtime. Returns once every listen address
    /// is bound, so [`Node::listen_addrs`] is complete.
    pub async fn start(self) -> Result<(Node, NodeEvents), BuildError> {
        let config = self.config()?;
        start::spawn(self, config).await
    }
}

impl Driver {
    async fn run(mut self) {
        let mut batch = Vec::with_capacity(SEND_BATCH);
        loop {
            self.flush(Instant::now()).await;
            let deadline = self.next_deadline();
            tokio::select! {
                command = self.commands.recv() => match command {
                    None | Some(Command::Shutdown) => break,
                    Some(command) => self.handle_command(command),
                },
                Ok(family) = self.dataplane.readable() => {
                    let vpn_before = self.dataplane.vpn_packets();
                    for _ in 0..READS_PER_TURN {
                        if !self.dataplane.handle_readable(Instant::now(), family) {
                            break;
                        }
                    }
                    // Handshakes after the data they arrived with, within a budget.
                    self.dataplane.handle_handshakes(Instant::now());
                    if self.dataplane.vpn_packets() != vpn_before {
                        self.spin().await;
                    }
                    // Let the datagram reader (often on this thread) run before the next
                    // batch, so a flood fills the socket buffer rather than the inbox.
                    tokio::task::yield_now().await;
                }
                Ok(()) = self.dataplane.vpn_readable() => {
                    for _ in 0..READS_PER_TURN {
                        if !self.dataplane.handle_vpn_readable(Instant::now()).await {
                            break;
                        }
                    }
                    self.spin().await;
                }
                n = self.outgoing.recv_many(&mut batch, SEND_BATCH), if self.outgoing_open => {
                    if n == 0 {
                        self.outgoing_open = false;
                    }
                    self.dataplane.send_datagrams(Instant::now(), &mut batch).await;
                }
                event = self.swarm.select_next_some() => {
                    self.handle_swarm_event(event);
                    self.drain_swarm().await;
                }
                Some(event) = self.relayed.events.recv() => self.on_path_event(event),
                Some(message) = self.relayed.inbox.recv() => self.on_relayed(message),
                Some(sample) = self.gpu_samples.recv() => self.handle_gpu_sample(sample),
                _ = tokio::time::sleep_until(deadline.into()) => self.handle_timeout(Instant::now()),
            }
        }
        tracing::debug!(peer_id = %self.swarm.local_peer_id(), "node driver stopped");
        // Dropping `self` closes every listener, connection and socket.
    }

    /// Handles the swarm events that are ready now, up to [`SWARM_EVENTS_PER_TURN`] with
    /// the one the turn began with. Polled with the loop's own waker, so a swarm found
    /// empty wakes the loop when its next event comes.
    async fn drain_swarm(&mut self) {
        for _ in 1..SWARM_EVENTS_PER_TURN {
            let next = std::future::poll_fn(|cx| Poll::Ready(self.swarm.poll_next_unpin(cx))).await;
            let Poll::Ready(Some(event)) = next else { break };
            self.handle_swarm_event(event);
        }
    }

    /// Polls the data plane for [`SPIN`] without sleeping (see there), sending what it
    /// queues as it goes. Bounded, so the rest of the node waits at most that long.
    async fn spin(&mut self) {
        let until = Instant::now() + SPIN;
        loop {
            let now = Instant::now();
            if now >= until {
                break;
            }
            if self.dataplane.poll_once(now).await {
                self.dataplane.flush(now).await;
            } else {
                std::hint::spin_loop();
            }
        }
    }

    /// Publishes what is due, sends what the data plane has queued, and passes the
    /// cores' events on.
    async fn flush(&mut self, now: Instant) {
        self.flush_records(now);
        self.dataplane.flush(now).await;
        self.flush_dataplane(now);
    }

    fn handle_gpu_sample(&mut self, sample: GpuSnapshot) {
        match self.gpu_filter.handle_sample(Instant::now(), &sample) {
            GpuChange::Quiet => {}
            GpuChange::Usage => {
                self.leases.set_devices(sample.devices.to_vec());
                self.publisher.set_gpus(sample);
            }
            GpuChange::Inventory { before, after } => {
                self.leases.set_devices(sample.devices.to_vec());
                tracing::warn!(before, after, "GPU inventory changed");
                self.publisher.set_gpus(sample);
                self.emit(NodeEvent::GpuInventoryChanged { before, after });
            }
        }
    }

    fn next_deadline(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        [
            self.view.poll_timeout(),
            self.publisher.poll_timeout(),
            self.discovery.poll_timeout(),
            self.dataplane.poll_timeout(),
            self.leases.poll_timeout(),
            self.relays.poll_timeout(),
            self.detour_timeout(),
            self.watch_timeout(),
            Some(self.sync_timeout()),
            self.redials.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .fold(far, Instant::min)
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.view.handle_timeout(now);
        self.dataplane.handle_timeout(now);
        self.relays_timeout(now);
        self.check_detours(now);
        self.check_placements(now);
        self.sync_due(now);
        self.redial_due(now);
        let advert = self.leases.handle_timeout(now);
        self.advertise_leases(advert);
        let due = self.discovery.handle_timeout(now);
        if due.lookup {
            self.find_providers(now, due.announce);
        }
        if due.refresh {
            self.swarm.behaviour_mut().kad.refresh();
        } else if due.walk {
            self.swarm.behaviour_mut().kad.get_closest_peers(PeerId::random());
        }
    }

    fn emit(&mut self, event: NodeEvent) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.events.try_send(event) {
            self.stats.events_dropped += 1;
        }
    }
}

impl Drop for Driver {
    /// The sampler would stop at its next tick on its own (its channel closes); stop it
    /// now, on every path out, a failed start included.
    fn drop(&mut self) {
        self.gpu_sampler.abort();
        for task in &self.metrics_tasks {
            task.abort();
        }
    }
}
