//! Building a node: its keys, its GPUs, the libp2p swarm, the tunnel sockets, the cores;
//! then the listeners are awaited and the bootstrap peers dialed before the driver task
//! starts.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt as _;
use libp2p::core::transport::ListenerId;
use libp2p::core::Transport as _;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{kad, noise, tcp, yamux, Multiaddr, PeerId, Swarm};
use prometheus_client::registry::Registry;
use swarm_core::bounded::BoundedVec;
use swarm_core::gpu::{GpuChangeFilter, GpuChangePolicy, GpuSnapshot};
use swarm_core::overlay::{Ipv4Claimer, OverlayV6};
use swarm_core::publish::{LocalContent, RecordPublisher};
use swarm_core::view::ClusterView;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{relays, Driver};
use crate::api::{Command, Node, NodeEvent, NodeEvents, NodeStats};
use crate::behaviour::{records_topic, Behaviour, Codecs, RelayGate};
use crate::config::{BuildError, IdentitySource, NodeBuilder, NodeConfig};
use crate::dataplane::{DataPlane, DataPlaneConfig, Inboxes};
use crate::gpu_sampler;
use crate::host::{bind_tunnel_sockets, host_cpu_cores, host_memory_bytes, wall_clock};
use crate::identity::{load_overlay_candidate, overlay_path, stock_peers_path, NodeIdentity};
use crate::lease::Leases;
use swarm_core::discovery::DiscoverySchedule;

/// How long `start` waits for the listeners to come up.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// A TCP dial (connect, Noise and yamux) that has not finished in this long fails.
/// libp2p-tcp has no limit of its own, so a SYN that a NAT drops waited out the
/// kernel's retries (about two minutes). An AutoNAT v2 server's dial-back to a NATed
/// node's TCP address then outlived the 10 s the request may take; the client took
/// that for a transport error and probed the same address again every 15 s, paying
/// 30-100 kB of dial data each time. With the limit the dial-back fails in time, the
/// server answers "not reachable" and the address is not probed again. QUIC has its
/// own handshake limit of the same length.
use libp2p::core::transport::timeout::TransportTimeout;

const TCP_DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an inbound TCP connection may take to authenticate and multiplex.
const TCP_INBOUND_UPGRADE_TIMEOUT: Duration = Duration::from_secs(3);
/// Capacity of the command channel.
const COMMAND_CAPACITY: usize = 64;
/// Application datagrams waiting to be sealed and sent.
const OUTGOING_CAPACITY: usize = 1024;
/// Datagrams from relayed paths waiting for the data plane, at most (their pumps wait
/// when it is full; the relay streams' flow control pushes back on the senders).
const RELAY_INBOX: usize = 1024;

/// An exclusive lock on `<identity file>.lock`, held for the node's life (the OS drops
/// it with the process, however it ends), so two processes never run one identity.
fn lock_identity(path: &std::path::Path) -> Result<std::fs::File, BuildError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let io = |source| {
        BuildError::Identity(crate::identity::IdentityError::Io {
            action: "lock",
            path: PathBuf::from(&lock_path),
            source,
        })
    };
    let file =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(BuildError::IdentityInUse { path: path.to_owned() }),
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

/// The node's keys; whether an earlier run of them may have granted leases; the
/// identity file, beside which the IPv4 overlay candidate and stock peers persist, and
/// its lock.
async fn identity(
    source: IdentitySource,
    grace_set: bool,
    new_tunnel_key: bool,
) -> Result<(NodeIdentity, bool, Option<PathBuf>, Option<std::fs::File>), BuildError> {
    let lock = match &source {
        IdentitySource::File(path) => Some(lock_identity(path)?),
        _ => None,
    };
    let restarted = match &source {
        IdentitySource::Ephemeral => false,
        IdentitySource::Keys(_) => grace_set,
        IdentitySource::File(path) => path.exists(),
    };
    let identity_file = match &source {
        IdentitySource::File(path) => Some(path.clone()),
        _ => None,
    };
    let identity = match source {
        IdentitySource::Ephemeral => NodeIdentity::generate(),
        IdentitySource::Keys(keys) => *keys,
        IdentitySource::File(path) => tokio::task::spawn_blocking(move || match new_tunnel_key {
            true => NodeIdentity::load_or_create_tunnel_key(&path),
            false => NodeIdentity::load_or_create(&path),
        })
        .await
        .map_err(network_error)??,
    };
    Ok((identity, restarted, identity_file, lock))
}

/// The GPUs now, and the filter that judges later samples against them.
async fn sample_gpus(
    probe: std::sync::Arc<dyn swarm_gpu::GpuProbe>,
) -> Result<(GpuSnapshot, GpuChangeFilter), BuildError> {
    let gpus = tokio::task::spawn_blocking(move || probe.sample()).await.map_err(network_error)??;
    let mut filter = GpuChangeFilter::new(GpuChangePolicy::default());
    filter.handle_sample(Instant::now(), &gpus);
    Ok((gpus, filter))
}

/// The data plane on fresh tunnel sockets; application datagrams go to `inbox`.
fn dataplane(
    identity: &NodeIdentity,
    config: &NodeConfig,
    inbox: mpsc::Sender<crate::api::Datagram>,
    relay_inbox: mpsc::Sender<crate::tunnel_relay::RelayIn>,
) -> Result<DataPlane, BuildError> {
    let sockets = bind_tunnel_sockets(config)?;
    let settings = DataPlaneConfig {
        tunnel: config.tunnel.clone(),
        buffer_bytes: config.tunnel_buffer_bytes,
        eager: config.eager_tunnels,
        gso: config.tunnel_gso,
    };
    let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    DataPlane::new(
        Instant::now(),
        unix,
        rand::random(),
        sockets,
        *identity.tunnel_secret(),
        settings,
        Inboxes { datagrams: inbox, relayed: relay_inbox },
    )
    .map_err(BuildError::TunnelSocket)
}

/// What the local record says of this node, before the first publication.
fn local_content(
    identity: &NodeIdentity,
    config: &NodeConfig,
    gpus: GpuSnapshot,
) -> Result<LocalContent, BuildError> {
    Ok(LocalContent {
        gpus,
        cpu_cores: host_cpu_cores(),
        memory_bytes: host_memory_bytes(),
        labels: BoundedVec::try_from_vec(config.labels.clone())
            .map_err(|e| BuildError::TooManyLabels { count: e.len, max: e.max })?,
        tunnel_pubkey: identity.tunnel_public_key(),
        udp_endpoints: BoundedVec::new(),
        nat: Default::default(),
        extensions: BoundedVec::new(),
    })
}

/// What a driver is made of, besides the state it starts empty.
struct Parts {
    swarm: Swarm<Behaviour>,
    config: NodeConfig,
    publisher: RecordPublisher,
    dataplane: DataPlane,
    leases: Leases,
    registry: Registry,
    commands: mpsc::Receiver<Command>,
    weak_commands: mpsc::WeakSender<Command>,
    events: mpsc::Sender<NodeEvent>,
    outgoing: mpsc::Receiver<(PeerId, Vec<u8>)>,
    gpu_samples: mpsc::Receiver<GpuSnapshot>,
    gpu_sampler: JoinHandle<()>,
    gpu_filter: GpuChangeFilter,
    /// The identity file, beside which the overlay candidate and stock peers persist.
    identity_file: Option<PathBuf>,
    /// Who the relay serves, kept current by the driver.
    gate: Arc<RelayGate>,
    /// Datagrams from relayed paths, for the data plane.
    relay_inbox: mpsc::Receiver<crate::tunnel_relay::RelayIn>,
    /// The identity file's lock, held while the node runs.
    identity_lock: Option<std::fs::File>,
    /// The sync codec's count of undecodable messages.
    sync_malformed: Arc<std::sync::atomic::AtomicU64>,
    /// The look-up codec's.
    find_malformed: Arc<std::sync::atomic::AtomicU64>,
}

pub(super) async fn spawn(
    builder: NodeBuilder,
    config: NodeConfig,
) -> Result<(Node, NodeEvents), BuildError> {
    let (identity, restarted, identity_file, identity_lock) =
        identity(builder.identity, builder.grace_set, builder.new_tunnel_key).await?;
    let (gpus, gpu_filter) = sample_gpus(builder.probe.clone()).await?;
    let mut registry = Registry::default();
    let codecs = Codecs::new();
    let gate = Arc::new(RelayGate::default());
    let mut swarm = build_swarm(&identity, &config, &mut registry, &codecs, &gate)?;
    let peer_id = *swarm.local_peer_id();
    let (datagram_tx, datagram_rx) = mpsc::channel(config.datagram_capacity);
    let (relay_tx, relay_inbox) = mpsc::channel(RELAY_INBOX);
    let dataplane = dataplane(&identity, &config, datagram_tx, relay_tx)?;
    let listeners = listen(&mut swarm, &config)?;
    // Lease numbers start at this run's start time (ms << 16), above any number an
    // earlier run of this node handed out unless it granted 65 536 leases a ms.
    let first_lease = wall_clock().0 << 16;
    let devices = gpus.devices.to_vec();
    let leases =
        Leases::new(peer_id, Instant::now(), config.leases, restarted, first_lease, devices, &codecs.lease);
    let content = local_content(&identity, &config, gpus)?;
    let publisher = RecordPublisher::new(
        identity.keypair.clone(),
        config.namespace.clone(),
        content,
        config.publish,
        wall_clock().0,
    );

    let (cmd_tx, commands) = mpsc::channel(COMMAND_CAPACITY);
    let (events, event_rx) = mpsc::channel(config.event_capacity);
    let (outgoing_tx, outgoing) = mpsc::channel(OUTGOING_CAPACITY);
    let (gpu_samples, gpu_sampler) = gpu_sampler::spawn(builder.probe.clone(), builder.gpu_sample_interval);
    let parts = Parts {
        swarm,
        config,
        publisher,
        dataplane,
        leases,
        registry,
        commands,
        weak_commands: cmd_tx.downgrade(),
        events,
        outgoing,
        gpu_samples,
        gpu_sampler,
        gpu_filter,
        identity_file,
        gate,
        relay_inbox,
        identity_lock,
        sync_malformed: codecs.sync.malformed.clone(),
        find_malformed: codecs.find.malformed.clone(),
    };
    let mut driver = Driver::new(parts);
    driver.start_vpn()?;
    driver.publish_overlay();
    driver.wait_for_listeners(listeners).await?;
    driver.dial_bootstrap();
    let join = tokio::spawn(driver.run());
    Ok((Node::new(peer_id, cmd_tx, outgoing_tx, datagram_rx, join), NodeEvents::new(event_rx)))
}

fn build_swarm(
    identity: &NodeIdentity,
    config: &NodeConfig,
    registry: &mut Registry,
    codecs: &Codecs,
    gate: &Arc<RelayGate>,
) -> Result<Swarm<Behaviour>, BuildError> {
    let net_err = |e: &dyn std::fmt::Display| network_error(e.to_string());
    let swarm = libp2p::SwarmBuilder::with_existing_identity(identity.keypair.clone())
        .with_tokio()
        // QUIC carries the control plane only (records, syncs, look-ups, leases: small
        // messages; tunnels have their own UDP path), so its 1 200-byte minimum packets
        // cost little, while path MTU discovery sends padded probes on every new
        // connection: in a 64-node join on two cores (about 2 000 connections) they
        // overflowed the bootstrap node's socket and made the join take 1.7 times as
        // long (median of an A/B, docs/self-healing.md, "Path MTU discovery").
        .with_quic_config(|c| c.disable_path_mtu_discovery())
        .with_other_transport(|key| {
            let upgraded = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                .upgrade(libp2p::core::upgrade::Version::V1Lazy)
                .authenticate(noise::Config::new(key)?)
                .multiplex(yamux::Config::default());
            // An inbound connection that has not authenticated within 3 s gives its slot
            // back (a silent one otherwise holds it for the whole dial timeout).
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(TransportTimeout::with_ingoing_timeout(
                TransportTimeout::with_outgoing_timeout(upgraded, TCP_DIAL_TIMEOUT),
                TCP_INBOUND_UPGRADE_TIMEOUT,
            ))
        })
        .map_err(|e| net_err(&e))?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| net_err(&e))?
        .with_bandwidth_metrics(registry)
        .with_behaviour(|key, relay_client| {
            Behaviour::new(key, config, codecs.clone(), relay_client, gate.clone())
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })
        .map_err(|e| net_err(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    Ok(swarm)
}

/// Starts every listener and subscribes to the records topic.
fn listen(
    swarm: &mut Swarm<Behaviour>,
    config: &NodeConfig,
) -> Result<Vec<(ListenerId, Multiaddr)>, BuildError> {
    let mut listeners = Vec::new();
    for addr in &config.listen {
        probe_tcp_port(addr)?;
        let id = swarm.listen_on(addr.clone()).map_err(|e| listen_error(addr, "", transport_error(e)))?;
        listeners.push((id, addr.clone()));
    }
    let topic = records_topic(&config.namespace);
    swarm.behaviour_mut().gossipsub.subscribe(&topic).map_err(network_error)?;
    if !config.listen.is_empty() {
        swarm.behaviour_mut().kad.set_mode(Some(kad::Mode::Server));
    }
    Ok(listeners)
}

impl Driver {
    fn new(p: Parts) -> Self {
        let peer_id = *p.swarm.local_peer_id();
        let control = p.swarm.behaviour().streams.new_control();
        let relayed = super::relayed::Relayed::start(control, p.gate.clone(), p.relay_inbox);
        Self {
            view: ClusterView::new(peer_id, p.config.namespace.clone(), p.config.view),
            discovery: DiscoverySchedule::new(
                p.config.discovery_interval_max,
                p.config.random_walk_interval,
                p.config.provider_ttl / 2,
            ),
            topic: records_topic(&p.config.namespace),
            swarm: p.swarm,
            publisher: p.publisher,
            commands: p.commands,
            events: p.events,
            listen_addrs: Vec::new(),
            members: HashSet::new(),
            identified: HashSet::new(),
            dialing: HashSet::new(),
            diversity: swarm_core::diversity::RoutingDiversity::new(Default::default()),
            connection_ips: HashMap::new(),
            diversity_reconciled: None,
            peer_ips: HashMap::new(),
            provider_ranges: HashMap::new(),
            providers_refused: 0,
            dataplane: p.dataplane,
            outgoing: p.outgoing,
            outgoing_open: true,
            registry: p.registry,
            stats: NodeStats::default(),
            gpu_samples: p.gpu_samples,
            gpu_sampler: p.gpu_sampler,
            gpu_filter: p.gpu_filter,
            weak_commands: p.weak_commands,
            metrics_tasks: Vec::new(),
            leases: p.leases,
            lease_waiters: HashMap::new(),
            throughput_waiters: HashMap::new(),
            ping_waiters: HashMap::new(),
            placement: swarm_core::place::LiveIndex::new(peer_id, crate::host::wall_clock()),
            overlay_v6: OverlayV6::for_namespace(&p.config.namespace),
            overlay: p.config.overlay_ipv4.map(|range| {
                let from = p
                    .identity_file
                    .as_deref()
                    .map_or(0, |f| load_overlay_candidate(&overlay_path(f), &range));
                Ipv4Claimer::new(range, peer_id, from)
            }),
            overlay_file: p.identity_file.as_deref().map(overlay_path),
            stock_file: p.identity_file.as_deref().map(stock_peers_path),
            stock_saver: None,
            gate: p.gate,
            relays: relays::Relays::default(),
            relayed,
            planner: swarm_core::nat::plan::PathPlanner::default(),
            bootstrap_dials: HashMap::new(),
            _identity_lock: p.identity_lock,
            punches: super::punches::Punches::default(),
            stock: std::collections::BTreeMap::new(),
            stock_gateway: HashMap::new(),
            reflexive: swarm_core::nat::Reflexive { kind: swarm_core::nat::NatKind::Unknown, mapped: None },
            remote_stock: HashMap::new(),
            detours: swarm_core::link::detour::Detours::new(swarm_core::link::detour::DetourPolicy::default()),
            detour_check: None,
            own_links: None,
            watch: swarm_core::place::watch::PlacementWatch::new(),
            watch_check: None,
            syncs: super::sync::Syncs::new(Instant::now(), p.sync_malformed),
            finds: super::find::Finds::new(p.find_malformed),
            redials: swarm_core::redial::Redials::new(),
            config: p.config,
        }
    }

    /// Runs the swarm until every listener has an address, so `start` can return them.
    async fn wait_for_listeners(
        &mut self,
        mut pending: Vec<(ListenerId, Multiaddr)>,
    ) -> Result<(), BuildError> {
        let deadline = tokio::time::Instant::now() + LISTEN_TIMEOUT;
        while !pending.is_empty() {
            let Ok(event) = tokio::time::timeout_at(deadline, self.swarm.select_next_some()).await else {
                let (_, addr) = pending.swap_remove(0);
                let timeout =
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "no listener came up in time");
                return Err(listen_error(&addr, "", timeout));
            };
            if let Some(e) = listen_failure(&pending, &event) {
                return Err(e);
            }
            if let SwarmEvent::NewListenAddr { listener_id, .. } = &event {
                pending.retain(|(id, _)| id != listener_id);
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
            let opts = libp2p::swarm::dial_opts::DialOpts::from(addr.clone());
            let id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    self.bootstrap_dials.insert(id, addr);
                }
                Err(e) => tracing::warn!(%addr, error = %error_chain(&e), "cannot dial bootstrap peer"),
            }
        }
    }
}

/// An error and its sources, `a: b: c` (libp2p's transport errors keep the OS reason in
/// a source, and say nothing of it in their own text).
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out = if out.is_empty() { text } else { format!("{out}: {text}") };
        }
        source = s.source();
    }
    out
}

/// A TCP listen address with a fixed port must be free: libp2p-tcp listens with
/// `SO_REUSEPORT`, so a second node on the same port would share it silently. A plain
/// bind there fails with the OS's reason when anything listens on it.
fn probe_tcp_port(addr: &Multiaddr) -> Result<(), BuildError> {
    let mut ip = None;
    let mut port = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(v4) => ip = Some(std::net::IpAddr::V4(v4)),
            Protocol::Ip6(v6) => ip = Some(std::net::IpAddr::V6(v6)),
            Protocol::Tcp(p) => port = Some(p),
            _ => {}
        }
    }
    match (ip, port) {
        (Some(ip), Some(port)) if port != 0 => std::net::TcpListener::bind((ip, port))
            .map(drop)
            .map_err(|e| listen_error(addr, " (is another node using that port?)", e)),
        _ => Ok(()),
    }
}

/// The error of a pending listener that `event` says closed or failed.
fn listen_failure<E>(pending: &[(ListenerId, Multiaddr)], event: &SwarmEvent<E>) -> Option<BuildError> {
    let (listener_id, error) = match event {
        SwarmEvent::ListenerClosed { listener_id, reason, .. } => {
            let error = match reason {
                Err(e) => std::io::Error::new(e.kind(), error_chain(e)),
                Ok(()) => std::io::Error::other("the listener closed"),
            };
            (listener_id, error)
        }
        SwarmEvent::ListenerError { listener_id, error } => {
            (listener_id, std::io::Error::new(error.kind(), error_chain(error)))
        }
        _ => return None,
    };
    let (_, addr) = pending.iter().find(|(id, _)| id == listener_id)?;
    Some(listen_error(addr, "", error))
}

fn network_error(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> BuildError {
    BuildError::Network(std::sync::Arc::from(e.into()))
}

fn listen_error(addr: &Multiaddr, hint: &'static str, source: std::io::Error) -> BuildError {
    BuildError::Listen { addr: addr.clone(), hint, source: std::sync::Arc::new(source) }
}

/// A transport's refusal as the I/O error it carries (or says it is).
fn transport_error(e: libp2p::TransportError<std::io::Error>) -> std::io::Error {
    match e {
        libp2p::TransportError::Other(e) => e,
        libp2p::TransportError::MultiaddrNotSupported(addr) => std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!("no transport for {addr} (use /ip4|ip6/.../tcp/PORT or .../udp/PORT/quic-v1)"),
        ),
    }
}
