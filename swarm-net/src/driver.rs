//! The one task per node (STYLE.md 3): it owns the libp2p swarm, the tunnel socket and the
//! sans-IO cores, and moves bytes and events between them. Protocol decisions live in
//! `swarm-core` ([`ClusterView`], [`RecordPublisher`]) and [`DiscoverySchedule`].

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt as _;
use libp2p::core::transport::ListenerId;
use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::SwarmEvent;
use libp2p::{identify, kad, noise, tcp, yamux, Multiaddr, PeerId, Swarm};
use prometheus_client::registry::Registry;
use swarm_core::bounded::BoundedVec;
use swarm_core::codec;
use swarm_core::gpu::{GpuChange, GpuChangeFilter, GpuChangePolicy, GpuSnapshot};
use swarm_core::identity::MAX_UDP_ENDPOINTS;
use swarm_core::link::index::LinkIndex;
use swarm_core::link::vivaldi::Coordinate;
use swarm_core::publish::{LocalContent, RecordPublisher};
use swarm_core::time::UnixMillis;
use swarm_core::view::{ClusterView, Ingest, ViewEvent};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::behaviour::{records_topic, Behaviour, BehaviourEvent, KAD_PROTOCOL};
use crate::config::{BuildError, IdentitySource, NodeBuilder, NodeConfig};
use crate::dataplane::DataPlane;
use crate::discovery::DiscoverySchedule;
use crate::gpu_sampler;
use crate::host::{bandwidth_totals, bind_tunnel_sockets, host_cpu_cores, host_memory_bytes, multiaddr_ip};
use crate::identity::NodeIdentity;
use crate::lease::{LeaseCodec, Leases};

mod gossip;
mod leases;
use crate::node::{Command, Datagram, NodeError, NodeEvent, NodeStats};

/// How long `start` waits for the listeners to come up.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Capacity of the command channel.
const COMMAND_CAPACITY: usize = 64;
/// How often link summaries and the coordinate are refreshed in the local record (they
/// go out with its next publication).
const LINK_GOSSIP_INTERVAL: Duration = Duration::from_secs(1);
/// Application datagrams waiting to be sealed and sent.
const OUTGOING_CAPACITY: usize = 1024;
/// Application datagrams sealed per turn of the loop, at most.
const SEND_BATCH: usize = 64;

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
    /// Our network coordinate, moved by the round trips of our links.
    coordinate: Coordinate,
    next_link_gossip: Instant,
    leases: Leases,
    /// Bumped by every change of the view, for the placement cache.
    view_changes: u64,
    placement_view: Option<PlacementView>,
}

/// The view as placements read it: a snapshot and its decoded links, shared, rebuilt
/// when the view changed but at most as often as [`placement_view_max_age`] allows.
struct PlacementView {
    built: Instant,
    changes: u64,
    shared: crate::node::SharedView,
}

/// How stale the placement view may get while the view changes: 0.1 ms per record,
/// at most 1 s (so a large swarm re-decodes its summaries once a second at most).
fn placement_view_max_age(records: usize) -> Duration {
    Duration::from_micros(100 * records as u64).min(Duration::from_secs(1))
}

pub(crate) struct Spawned {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) outgoing: mpsc::Sender<(PeerId, Vec<u8>)>,
    pub(crate) events: crate::node::NodeEvents,
    pub(crate) datagrams: mpsc::Receiver<Datagram>,
    pub(crate) join: JoinHandle<()>,
    pub(crate) peer_id: PeerId,
}

pub(crate) async fn spawn(builder: NodeBuilder, config: NodeConfig) -> Result<Spawned, BuildError> {
    // Keys from an earlier run: this node may have granted leases it no longer knows.
    let restarted = match &builder.identity {
        IdentitySource::Ephemeral => false,
        IdentitySource::Keys(_) => builder.grace_set,
        IdentitySource::File(path) => path.exists(),
    };
    let identity = match builder.identity {
        IdentitySource::Ephemeral => NodeIdentity::generate(),
        IdentitySource::Keys(keys) => *keys,
        IdentitySource::File(path) => {
            tokio::task::spawn_blocking(move || NodeIdentity::load_or_create(&path))
                .await
                .map_err(|e| BuildError::Network(e.to_string()))??
        }
    };
    let probe = builder.probe.clone();
    let gpus = tokio::task::spawn_blocking(move || probe.sample())
        .await
        .map_err(|e| BuildError::Network(e.to_string()))??;
    let mut gpu_filter = GpuChangeFilter::new(GpuChangePolicy::default());
    gpu_filter.handle_sample(Instant::now(), &gpus);

    let mut registry = Registry::default();
    let lease_codec = LeaseCodec::default();
    let mut swarm = build_swarm(&identity, &config, &mut registry, &lease_codec)?;
    let peer_id = *swarm.local_peer_id();
    let tunnel_sockets = bind_tunnel_sockets(&config)?;
    let (datagram_tx, datagram_rx) = mpsc::channel(config.datagram_capacity);
    let dataplane = DataPlane::new(
        tunnel_sockets,
        *identity.tunnel_secret(),
        config.tunnel.clone(),
        config.tunnel_buffer_bytes,
        config.eager_tunnels,
        config.tunnel_gso,
        datagram_tx,
    )
    .map_err(BuildError::TunnelSocket)?;
    let (outgoing_tx, outgoing_rx) = mpsc::channel(OUTGOING_CAPACITY);

    let mut listeners = Vec::new();
    for addr in &config.listen {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| BuildError::Listen { addr: addr.clone(), detail: e.to_string() })?;
        listeners.push((id, addr.clone()));
    }
    let topic = records_topic(&config.namespace);
    swarm.behaviour_mut().gossipsub.subscribe(&topic).map_err(|e| BuildError::Network(e.to_string()))?;
    if !config.listen.is_empty() {
        swarm.behaviour_mut().kad.set_mode(Some(kad::Mode::Server));
    }

    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_CAPACITY);
    let (event_tx, event_rx) = mpsc::channel(config.event_capacity);
    let leases =
        Leases::new(peer_id, Instant::now(), config.leases, restarted, gpus.devices.to_vec(), &lease_codec);
    let content = LocalContent {
        gpus,
        cpu_cores: host_cpu_cores(),
        memory_bytes: host_memory_bytes(),
        labels: BoundedVec::try_from_vec(config.labels.clone())
            .map_err(|e| BuildError::TooManyLabels { count: e.len, max: e.max })?,
        tunnel_pubkey: identity.tunnel_public_key(),
        udp_endpoints: BoundedVec::new(),
        extensions: BoundedVec::new(),
    };
    let publisher = RecordPublisher::new(
        identity.keypair.clone(),
        config.namespace.clone(),
        content,
        config.publish,
        wall_clock().0,
    );
    let (gpu_samples, gpu_sampler) = gpu_sampler::spawn(builder.probe.clone(), builder.gpu_sample_interval);
    let mut driver = Driver {
        view: ClusterView::new(peer_id, config.namespace.clone(), config.view),
        discovery: DiscoverySchedule::new(config.discovery_interval_max, config.random_walk_interval),
        swarm,
        topic,
        publisher,
        commands: cmd_rx,
        events: event_tx,
        listen_addrs: Vec::new(),
        members: HashSet::new(),
        identified: HashSet::new(),
        dialing: HashSet::new(),
        dataplane,
        outgoing: outgoing_rx,
        outgoing_open: true,
        registry,
        stats: NodeStats::default(),
        gpu_samples,
        gpu_sampler,
        gpu_filter,
        weak_commands: cmd_tx.downgrade(),
        metrics_tasks: Vec::new(),
        coordinate: Coordinate::default(),
        next_link_gossip: Instant::now() + LINK_GOSSIP_INTERVAL,
        leases,
        view_changes: 0,
        placement_view: None,
        config,
    };
    driver.wait_for_listeners(listeners).await?;
    driver.dial_bootstrap();
    let join = tokio::spawn(driver.run());
    Ok(Spawned {
        commands: cmd_tx,
        outgoing: outgoing_tx,
        events: crate::node::NodeEvents::new(event_rx),
        datagrams: datagram_rx,
        join,
        peer_id,
    })
}

fn build_swarm(
    identity: &NodeIdentity,
    config: &NodeConfig,
    registry: &mut Registry,
    lease_codec: &LeaseCodec,
) -> Result<Swarm<Behaviour>, BuildError> {
    let net_err = |e: &dyn std::fmt::Display| BuildError::Network(e.to_string());
    let swarm = libp2p::SwarmBuilder::with_existing_identity(identity.keypair.clone())
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .map_err(|e| net_err(&e))?
        .with_quic()
        .with_bandwidth_metrics(registry)
        .with_behaviour(|key| {
            Behaviour::new(key, config, lease_codec.clone())
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })
        .map_err(|e| net_err(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    Ok(swarm)
}

impl Driver {
    /// Runs the swarm until every listener has an address, so `start` can return them.
    async fn wait_for_listeners(
        &mut self,
        mut pending: Vec<(ListenerId, Multiaddr)>,
    ) -> Result<(), BuildError> {
        let deadline = tokio::time::Instant::now() + LISTEN_TIMEOUT;
        while !pending.is_empty() {
            let event = tokio::time::timeout_at(deadline, self.swarm.select_next_some()).await;
            let event = match event {
                Ok(event) => event,
                Err(_) => {
                    let (_, addr) = pending.swap_remove(0);
                    return Err(BuildError::Listen { addr, detail: "timed out".to_owned() });
                }
            };
            match &event {
                SwarmEvent::NewListenAddr { listener_id, .. } => pending.retain(|(id, _)| id != listener_id),
                SwarmEvent::ListenerClosed { listener_id, reason, .. } => {
                    if let Some((_, addr)) = pending.iter().find(|(id, _)| id == listener_id) {
                        let detail = match reason {
                            Err(e) => e.to_string(),
                            Ok(()) => "closed".to_owned(),
                        };
                        return Err(BuildError::Listen { addr: addr.clone(), detail });
                    }
                }
                SwarmEvent::ListenerError { listener_id, error } => {
                    if let Some((_, addr)) = pending.iter().find(|(id, _)| id == listener_id) {
                        return Err(BuildError::Listen { addr: addr.clone(), detail: error.to_string() });
                    }
                }
                _ => {}
            }
            self.handle_swarm_event(event);
        }
        Ok(())
    }

    fn dial_bootstrap(&mut self) {
        for addr in self.config.bootstrap.clone() {
            if let Some(Protocol::P2p(peer)) = addr.iter().last() {
                let mut bare = addr.clone();
                bare.pop();
                self.swarm.behaviour_mut().kad.add_address(&peer, bare);
            }
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::warn!(%addr, error = %e, "cannot dial bootstrap peer");
            }
        }
    }

    async fn run(mut self) {
        let mut batch = Vec::with_capacity(SEND_BATCH);
        loop {
            self.flush(Instant::now());
            self.flush_tunnels().await;
            let deadline = self.next_deadline();
            tokio::select! {
                command = self.commands.recv() => match command {
                    None | Some(Command::Shutdown) => break,
                    Some(command) => self.handle_command(command),
                },
                Ok(family) = self.dataplane.readable() => {
                    self.dataplane.handle_readable(family);
                    // Let the datagram reader (often on this thread) run before the next
                    // batch, so a flood fills the socket buffer rather than the inbox.
                    tokio::task::yield_now().await;
                }
                n = self.outgoing.recv_many(&mut batch, SEND_BATCH), if self.outgoing_open => {
                    if n == 0 {
                        self.outgoing_open = false;
                    }
                    self.dataplane.send_datagrams(&mut batch).await;
                }
                event = self.swarm.select_next_some() => self.handle_swarm_event(event),
                Some(sample) = self.gpu_samples.recv() => self.handle_gpu_sample(sample),
                _ = tokio::time::sleep_until(deadline.into()) => self.handle_timeout(Instant::now()),
            }
        }
        tracing::debug!(peer_id = %self.swarm.local_peer_id(), "node driver stopped");
        // Dropping `self` closes every listener, connection and socket.
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

    /// Sends what the tunnels have queued and passes their events on.
    async fn flush_tunnels(&mut self) {
        let mut events = Vec::new();
        self.dataplane.flush(&mut events).await;
        for event in events {
            if matches!(event, NodeEvent::LinkDegraded { .. } | NodeEvent::LinkRecovered { .. }) {
                // An SLA verdict changed: the swarm hears it now, not at the heartbeat.
                self.gossip_links(Instant::now());
                self.publisher.request_publish();
            }
            self.emit(event);
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
            Some(self.next_link_gossip),
        ]
        .into_iter()
        .flatten()
        .fold(far, Instant::min)
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.view.handle_timeout(now);
        self.dataplane.handle_timeout(now);
        if self.leases.expire(now) {
            self.advertise_leases();
        }
        if now >= self.next_link_gossip {
            self.next_link_gossip = now + LINK_GOSSIP_INTERVAL;
            self.gossip_links(now);
        }
        let due = self.discovery.handle_timeout(now);
        if due.lookup {
            let key = kad::RecordKey::new(&self.config.namespace.provider_key());
            self.swarm.behaviour_mut().kad.get_providers(key);
        }
        if due.walk {
            self.swarm.behaviour_mut().kad.get_closest_peers(PeerId::random());
        }
    }

    /// Publishes what the publisher has due and turns view changes into events.
    fn flush(&mut self, now: Instant) {
        while let Some(built) = self.publisher.poll_publish(now, wall_clock()) {
            match built {
                Ok((record, tunnel)) => self.publish(now, record, tunnel),
                Err(e) => tracing::error!(error = %e, "cannot sign the local record"),
            }
        }
        let local = *self.swarm.local_peer_id();
        self.publisher.set_swarm_size(self.view.len());
        while let Some(event) = self.view.poll_event() {
            self.view_changes += 1;
            match event {
                ViewEvent::Inserted { peer } | ViewEvent::Updated { peer, .. } if peer == local => {}
                ViewEvent::Inserted { peer } => {
                    let seq = self.view.get(&peer).map_or(0, |e| e.record.seq);
                    self.tunnel_record(now, peer);
                    self.member_found(peer);
                    self.emit(NodeEvent::RecordUpdated { peer, seq });
                }
                ViewEvent::Updated { peer, seq } => {
                    self.tunnel_record(now, peer);
                    self.emit(NodeEvent::RecordUpdated { peer, seq });
                }
                ViewEvent::Expired { peer } => {
                    self.dataplane.remove_peer(&peer);
                    self.emit(NodeEvent::RecordExpired { peer });
                    self.member_maybe_lost(peer);
                }
            }
        }
    }

    fn publish(
        &mut self,
        now: Instant,
        record: swarm_core::record::NodeRecord,
        tunnel: swarm_core::identity::TunnelRecord,
    ) {
        let bytes = match codec::encode(&record, self.config.view.policy.max_size) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!(error = %e, "local record does not encode");
                return;
            }
        };
        self.view.insert_local(now, record, tunnel);
        match self.swarm.behaviour_mut().gossipsub.publish(self.topic.clone(), bytes) {
            Ok(_) => self.stats.published += 1,
            Err(e) => {
                self.stats.publish_failures += 1;
                tracing::debug!(error = %e, "record not published");
            }
        }
    }

    /// Hands a peer's verified tunnel record (from the view) to the data plane.
    fn tunnel_record(&mut self, now: Instant, peer: PeerId) {
        if let Some(entry) = self.view.get(&peer) {
            self.dataplane.peer_record(now, peer, &entry.tunnel);
        }
    }

    fn emit(&mut self, event: NodeEvent) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.events.try_send(event) {
            self.stats.events_dropped += 1;
        }
    }

    fn member_found(&mut self, peer: PeerId) {
        if self.members.insert(peer) {
            self.emit(NodeEvent::PeerDiscovered { peer });
        }
    }

    fn member_maybe_lost(&mut self, peer: PeerId) {
        if !self.identified.contains(&peer) && self.view.get(&peer).is_none() && self.members.remove(&peer) {
            self.emit(NodeEvent::PeerLost { peer });
        }
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::ListenAddrs(reply) => {
                let _ = reply.send(self.listen_addrs.clone());
            }
            Command::ConnectedPeers(reply) => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::Snapshot(reply) => {
                let _ = reply.send(self.view.snapshot());
            }
            Command::PlacementView(reply) => {
                let _ = reply.send(self.placement_view());
            }
            Command::RecordCount(reply) => {
                let _ = reply.send(self.view.len());
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
            Command::Dial(addr, reply) => {
                let result = self
                    .swarm
                    .dial(addr.clone())
                    .map_err(|e| NodeError::Dial { addr, detail: e.to_string() });
                let _ = reply.send(result);
            }
            Command::OpenTunnel(peer, reply) => {
                let ok = self.dataplane.open(Instant::now(), &peer);
                let _ = reply.send(if ok { Ok(()) } else { Err(NodeError::NoTunnel(peer)) });
            }
            Command::CloseTunnel(peer, reply) => {
                let ok = self.dataplane.close(&peer);
                let _ = reply.send(if ok { Ok(()) } else { Err(NodeError::NoTunnel(peer)) });
            }
            Command::Tunnels(reply) => {
                let _ = reply.send(self.dataplane.status(Instant::now()));
            }
            Command::Links(reply) => {
                let _ = reply.send(self.dataplane.link_reports(Instant::now()));
            }
            Command::MeasureThroughput(peer, reply) => {
                self.dataplane.measure_throughput(Instant::now(), &peer, reply);
            }
            Command::LinkBetween(a, b, reply) => {
                let _ = reply.send(self.view.link_between(&a, &b, wall_clock()));
            }
            Command::ServeMetrics(addr, reply) => {
                let _ = reply.send(self.serve_metrics(addr));
            }
            Command::Lease(peer, request, reply) => self.lease_request(peer, request, reply),
            Command::Leases(reply) => {
                let _ = reply.send(self.leases.leases());
            }
            Command::Shutdown => {}
        }
    }

    fn placement_view(&mut self) -> crate::node::SharedView {
        let now = Instant::now();
        let max_age = placement_view_max_age(self.view.len());
        match &self.placement_view {
            Some(p) if p.changes == self.view_changes || now < p.built + max_age => p.shared.clone(),
            _ => {
                let snapshot = self.view.snapshot();
                let links = LinkIndex::new(&snapshot, wall_clock());
                let shared = std::sync::Arc::new((snapshot, links));
                self.placement_view =
                    Some(PlacementView { built: now, changes: self.view_changes, shared: shared.clone() });
                shared
            }
        }
    }

    /// Binds the metrics endpoint and runs it beside the driver (aborted with it).
    fn serve_metrics(&mut self, addr: SocketAddr) -> Result<SocketAddr, NodeError> {
        let err = |e: std::io::Error| NodeError::Metrics { addr, detail: e.to_string() };
        let listener = std::net::TcpListener::bind(addr).map_err(err)?;
        listener.set_nonblocking(true).map_err(err)?;
        let bound = listener.local_addr().map_err(err)?;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(err)?;
        self.metrics_tasks.push(tokio::spawn(crate::metrics::serve(listener, self.weak_commands.clone())));
        tracing::info!(%bound, "serving metrics");
        Ok(bound)
    }

    fn stats(&self) -> NodeStats {
        let (bytes_in, bytes_out) = bandwidth_totals(&self.registry);
        NodeStats {
            connected_peers: self.swarm.connected_peers().count(),
            records: self.view.len(),
            gossip: self.view.counters().clone(),
            bytes_in,
            bytes_out,
            dataplane: self.dataplane.stats,
            tunnel_drops: self.dataplane.drops(),
            leases: self.leases.stats(),
            ..self.stats.clone()
        }
    }

    fn handle_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(e)) => self.handle_gossip(e),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(e)) => self.handle_identify(e),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(e)) => self.handle_kad(e),
            SwarmEvent::Behaviour(BehaviourEvent::Lease(e)) => self.handle_lease(e),
            #[cfg(feature = "mdns")]
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(libp2p::mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr);
                    self.dial_member(peer);
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                let full = address.clone().with(Protocol::P2p(*self.swarm.local_peer_id()));
                tracing::info!(addr = %full, "listening");
                if !self.listen_addrs.contains(&full) {
                    self.listen_addrs.push(full.clone());
                }
                self.update_tunnel_endpoints();
                self.emit(NodeEvent::Listening { addr: full });
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                let full = address.with(Protocol::P2p(*self.swarm.local_peer_id()));
                self.listen_addrs.retain(|a| *a != full);
                self.update_tunnel_endpoints();
            }
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                self.dialing.remove(&peer_id);
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                self.identified.remove(&peer_id);
                self.member_maybe_lost(peer_id);
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(?peer_id, %error, "dial failed");
                if let Some(peer) = peer_id {
                    self.dialing.remove(&peer);
                }
            }
            _ => {}
        }
    }

    fn handle_gossip(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message { propagation_source, message_id, message } => {
                let acceptance = if message.topic != self.topic.hash() {
                    MessageAcceptance::Reject
                } else {
                    let now = Instant::now();
                    match self.view.handle_gossip(now, wall_clock(), message.source.as_ref(), &message.data) {
                        Ok(Ingest::Inserted | Ingest::Updated) => MessageAcceptance::Accept,
                        Ok(Ingest::Stale | Ingest::Full) => MessageAcceptance::Ignore,
                        Err(e) => {
                            tracing::debug!(from = %propagation_source, error = %e, "record rejected");
                            self.emit(NodeEvent::RecordRejected {
                                from: propagation_source,
                                reason: e.reason(),
                            });
                            MessageAcceptance::Reject
                        }
                    }
                };
                self.swarm.behaviour_mut().gossipsub.report_message_validation_result(
                    &message_id,
                    &propagation_source,
                    acceptance,
                );
            }
            gossipsub::Event::Subscribed { peer_id, topic } if topic == self.topic.hash() => {
                tracing::trace!(peer = %peer_id, "peer subscribed to our records");
                self.publisher.on_subscriber(self.stats.published);
            }
            _ => {}
        }
    }

    fn handle_identify(&mut self, event: identify::Event) {
        let identify::Event::Received { peer_id, info, .. } = event else { return };
        if info.protocols.contains(&KAD_PROTOCOL) {
            for addr in info.listen_addrs {
                self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
            }
        }
        if info.protocol_version == self.config.namespace.identify_protocol() {
            self.identified.insert(peer_id);
            self.member_found(peer_id);
        }
    }

    fn handle_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::RoutingUpdated { .. } if self.discovery.on_routing_peer(Instant::now()) => {
                let key = kad::RecordKey::new(&self.config.namespace.provider_key());
                if let Err(e) = self.swarm.behaviour_mut().kad.start_providing(key) {
                    tracing::warn!(error = %e, "cannot announce namespace membership");
                }
                // No explicit bootstrap: Kademlia bootstraps by itself while its routing
                // table holds fewer than k peers, and then every 5 minutes.
            }
            kad::Event::OutboundQueryProgressed {
                result:
                    kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders { providers, .. })),
                ..
            } => {
                for peer in providers {
                    self.dial_member(peer);
                }
            }
            _ => {}
        }
    }

    /// Dials a namespace member we are not connected to, up to `target_peers`.
    fn dial_member(&mut self, peer: PeerId) {
        if peer == *self.swarm.local_peer_id() || self.swarm.is_connected(&peer) {
            return;
        }
        if self.swarm.connected_peers().count() + self.dialing.len() >= self.config.target_peers {
            return;
        }
        let opts = DialOpts::peer_id(peer).condition(PeerCondition::DisconnectedAndNotDialing).build();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.dialing.insert(peer);
            }
            Err(e) => tracing::trace!(%peer, error = %e, "not dialing member"),
        }
    }

    /// The tunnel record lists each tunnel socket at every IP of its family we listen
    /// on (or at its own address, when bound to one).
    fn update_tunnel_endpoints(&mut self) {
        if !self.config.tunnel_endpoints.is_empty() {
            if let Ok(endpoints) = BoundedVec::try_from_vec(self.config.tunnel_endpoints.clone()) {
                self.publisher.set_udp_endpoints(endpoints);
            }
            return;
        }
        let mut endpoints = Vec::new();
        for bound in self.dataplane.local_addrs() {
            if bound.ip().is_unspecified() {
                endpoints.extend(
                    self.listen_addrs
                        .iter()
                        .filter_map(multiaddr_ip)
                        .filter(|ip| !ip.is_unspecified() && ip.is_ipv6() == bound.is_ipv6())
                        .map(|ip| SocketAddr::new(ip, bound.port())),
                );
            } else {
                endpoints.push(bound);
            }
        }
        endpoints.sort();
        endpoints.dedup();
        endpoints.truncate(MAX_UDP_ENDPOINTS);
        if let Ok(endpoints) = BoundedVec::try_from_vec(endpoints) {
            self.publisher.set_udp_endpoints(endpoints);
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

/// Wall-clock time, the only clock a record carries.
pub(crate) fn wall_clock() -> UnixMillis {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    UnixMillis(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}
