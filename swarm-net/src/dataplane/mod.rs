//! The data plane (data-flow stages 3 to 5): the tunnel sockets ([`socket`]), the
//! sans-IO [`Tunnels`] (WireGuard) and [`LinkTable`] (probes, SLA, summaries). A datagram
//! goes socket -> tunnels -> either the application's inbox or the link table; what the
//! link table wants sent goes back through the tunnels to the socket. Owned by the
//! node's driver task; it decides nothing about the protocol, reads no clock (every
//! method takes `now`), and reports in its own [`DataPlaneEvent`]s.
//!
//! Peers come only from the cluster view: a tunnel key is added when a peer's record —
//! whose tunnel record was signature-checked against its `PeerId` — enters the view, and
//! removed when it expires. Tunnels open lazily on the first datagram, and eagerly to the
//! first `eager_tunnels` peers.
//!
//! With the VPN on, IP packets read from the [`tun`] device go to the peer whose overlay
//! address (in `routes`, longest prefix first) is their destination, opening its tunnel
//! when needed; IP packets decrypted from a peer go to the device when their source is
//! one of that peer's addresses, and are dropped and counted otherwise.
//!
//! Where no hole can be punched, a peer's datagrams take a relayed path (a libp2p stream
//! through a member, [`crate::tunnel_relay`]), named inside the data plane by a relay
//! endpoint (`swarm_core::nat::relay`): the tunnels send to it as to any address, and
//! [`DataPlane::send`] hands its datagrams to the path's bounded queue instead of the
//! socket. A relayed datagram never replaces a direct endpoint that carried an
//! authenticated packet within [`DIRECT_FRESH`]; each path change restarts the link's
//! measurement windows and is reported.
//!
//! A *detour* (issue 16, part 1) is a relayed path taken by choice: while the direct
//! path breaches its SLA, the driver (by `swarm_core::link::detour`) opens one through a
//! better-placed member and [`DataPlane::add_relay_path`] takes it as
//! [`PathKind::DetourOut`]: application datagrams and IP packets to that peer go over it,
//! while the tunnel's endpoint, its handshakes, keepalives and link probes stay on the
//! direct path, so the link monitor keeps judging the direct path. The peer's own
//! detour to us ([`PathKind::DetourIn`]) is one more way in, never an endpoint. The path
//! reads `via <member>` ([`Path::Detour`]); taking or leaving a detour does not restart
//! the link's windows (what they measure did not move).

mod report;
mod socket;
pub(crate) mod tun;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use quinn_udp::RecvMeta;
use swarm_core::identity::TunnelRecord;
use swarm_core::link::vivaldi::Coordinate;
use swarm_core::link::{
    LinkConfig, LinkEvent, LinkGossip, LinkTable, PassiveCounters, SlaPolicy, ThroughputError,
};
use swarm_core::nat::binding::{self, Binding, BINDING_LEN};
use swarm_core::nat::relay::{is_relay_endpoint, relay_endpoint};
use swarm_core::nat::{
    is_public, NatKind, NatProbe, ProbeConfig, PunchConfig, PunchEvent, Puncher, Reflexive,
};
use swarm_core::overlay::routes::endpoints;
use swarm_core::overlay::{AllowedIps, IpPrefix};
use swarm_core::tunnel::ratelimit::{RateLimit, RateLimiter};
use swarm_core::tunnel::{
    FrameKind, Payload, PeerHandle, Received, SendError, Transmit, TunnelConfig, TunnelEvent, Tunnels,
};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

pub use report::{DataPlaneStats, Datagram, LinkReport, Path, TunnelStatus, VpnDrops};
use socket::{SendFailure, Sockets, BATCH, RX_BUF};
use swarm_core::tunnel::handshakes::{is_handshake, HandshakeQueue, HANDSHAKE_BUDGET};
use tun::Tun;

use crate::tunnel_relay::{self, PathKind, Pumps, RelayIn};

/// A direct endpoint that carried an authenticated packet this recently, or was punched
/// this recently, is kept: a datagram that came through a relay does not replace it.
const DIRECT_FRESH: Duration = Duration::from_secs(5);

/// The largest datagram the tunnel sends: an application datagram of `max_datagram`
/// bytes, its frame header, padding and WireGuard's overhead.
const TX_BUF: usize = 65_535;
/// Most bytes in one GSO send: a UDP datagram's payload limit (65 535 less the IPv6 and
/// UDP headers), rounded down.
const GSO_MAX_BYTES: usize = 64_000;
/// A swarm frame's header.
const FRAME_ROOM: usize = swarm_core::tunnel::frame::FRAME_HEADER_LEN;

/// What the data plane saw happen, for the driver to pass on.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum DataPlaneEvent {
    /// A tunnel carries data (its first handshake, or the first after it went down).
    TunnelUp { peer: PeerId, endpoint: Option<SocketAddr> },
    /// A tunnel stopped.
    TunnelDown { peer: PeerId, reason: &'static str },
    /// A peer's authenticated packets come from a new address.
    EndpointChanged { peer: PeerId, endpoint: SocketAddr },
    /// A link's SLA verdict changed, or a throughput test ended.
    Link(LinkEvent),
    /// The reflectors' verdict on this node's NAT changed.
    Reflexive(Reflexive),
    /// A hole punch ended.
    Punch(PunchEvent<PeerId>),
    /// A tunnel's packets take another path.
    PathChanged { peer: PeerId, path: Path },
    /// Our detour to `peer` through `via` closed under the traffic (its stream ended, or
    /// the tunnel went with its peer): the data is direct again.
    DetourClosed { peer: PeerId, via: PeerId },
}

/// Why a throughput test did not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MeasureError {
    /// The peer has no verified tunnel record.
    UnknownPeer,
    /// The link table refused.
    Link(ThroughputError),
}

/// Settings of a [`DataPlane`], from the node's configuration.
pub(crate) struct DataPlaneConfig {
    pub(crate) tunnel: TunnelConfig,
    pub(crate) buffer_bytes: usize,
    pub(crate) eager: usize,
    pub(crate) gso: bool,
}

/// Where the data plane delivers: application datagrams to the node's reader, and (from
/// relayed paths' pumps) tunnel datagrams back to itself, through the driver.
pub(crate) struct Inboxes {
    pub(crate) datagrams: mpsc::Sender<Datagram>,
    pub(crate) relayed: mpsc::Sender<RelayIn>,
}

struct Known {
    handle: PeerHandle,
    key: [u8; 32],
    up: bool,
    /// A stock WireGuard peer of this gateway: IP packets only, never a swarm frame.
    stock: bool,
    /// The endpoints its record announces (reflector candidates while public).
    endpoints: Vec<SocketAddr>,
    /// What its record says it sits behind.
    nat: NatKind,
    /// Its relayed path's endpoint, while it has one.
    relay: Option<SocketAddr>,
    /// Our detour to it (its relay endpoint), while our data to it takes one.
    detour: Option<SocketAddr>,
    /// Its detour to us, while it has one.
    detour_in: Option<SocketAddr>,
    /// When a punch last set a direct endpoint.
    punched: Option<Instant>,
    /// The path last reported.
    path: Path,
}

impl Known {
    fn new(handle: PeerHandle, key: [u8; 32], stock: bool, endpoints: Vec<SocketAddr>) -> Self {
        let (up, relay, punched, path, nat) = (false, None, None, Path::Direct, NatKind::Unknown);
        let (detour, detour_in) = (None, None);
        Self { handle, key, up, stock, endpoints, nat, relay, detour, detour_in, punched, path }
    }
}

/// A relayed path to a peer, through a member.
struct RelayedPath {
    peer: PeerId,
    via: PeerId,
    kind: PathKind,
    pumps: Pumps,
}

/// IP packets a gateway forwards between a stock peer and another peer, waiting to be
/// sealed at the next flush; their buffers are reused.
#[derive(Default)]
struct Forward {
    queue: VecDeque<(PeerHandle, Vec<u8>)>,
    spare: Vec<Vec<u8>>,
}

/// Packets waiting to be forwarded at most; more are dropped and counted.
const MAX_FORWARD: usize = 1024;

impl Forward {
    fn push(&mut self, to: PeerHandle, packet: &[u8]) -> bool {
        if self.queue.len() >= MAX_FORWARD {
            return false;
        }
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(packet);
        self.queue.push_back((to, buf));
        true
    }
}

pub(crate) struct DataPlane {
    sockets: Sockets,
    tunnels: Tunnels,
    links: LinkTable,
    peers: HashMap<PeerId, Known>,
    by_handle: HashMap<PeerHandle, PeerId>,
    rx: Vec<u8>,
    tx: Vec<u8>,
    inbox: mpsc::Sender<Datagram>,
    eager: usize,
    gso: bool,
    events: VecDeque<DataPlaneEvent>,
    /// The VPN's device, when the node has one.
    vpn: Option<Tun>,
    /// Which peer each overlay prefix belongs to (cryptokey routing).
    routes: AllowedIps<PeerId>,
    forward: Forward,
    /// What NAT the tunnel socket sits behind, from reflectors' answers.
    nat: NatProbe,
    /// Hole punches to peers behind NATs.
    puncher: Puncher<PeerId>,
    /// Handshake messages waiting for their turn after data.
    handshakes: HandshakeQueue,
    /// Answers to binding requests, waiting for the next flush (bounded).
    bindings: VecDeque<(SocketAddr, Option<IpAddr>, [u8; BINDING_LEN])>,
    /// Binding requests answered per source, at most.
    binding_limiter: RateLimiter,
    /// Relayed paths, by their relay endpoint.
    relayed: HashMap<SocketAddr, RelayedPath>,
    /// Peers whose data takes a detour, and its relay endpoint (see `Known::detour`).
    detours: HashMap<PeerHandle, SocketAddr>,
    /// Peers whose probes went unanswered, until their tunnel is up again.
    unreachable: std::collections::HashSet<PeerId>,
    next_relay_slot: u32,
    /// Where relayed paths' pumps deliver.
    relay_inbox: mpsc::Sender<RelayIn>,
    /// Whether one of our own tunnel endpoints (bound or announced) is at a public IP.
    own_public: bool,
    /// Our own tunnel endpoints, bound and announced: never a peer's.
    own: Vec<SocketAddr>,
    pub(crate) stats: DataPlaneStats,
}

/// Answers to binding requests waiting to be sent at most; more are dropped.
const MAX_BINDING_ANSWERS: usize = 256;

impl DataPlane {
    /// `unix`: wall-clock time at `now` (for handshake timestamps); `seed`: randomness for
    /// the tunnels' indices and cookie secrets.
    pub(crate) fn new(
        now: Instant,
        unix: Duration,
        seed: [u8; 32],
        sockets: Vec<UdpSocket>,
        private_key: [u8; 32],
        config: DataPlaneConfig,
        inboxes: Inboxes,
    ) -> io::Result<Self> {
        let (sockets, granted) = Sockets::new(sockets, config.buffer_bytes)?;
        let stats = DataPlaneStats {
            recv_buffer: granted.recv_buffer,
            send_buffer: granted.send_buffer,
            max_gso_segments: granted.max_gso_segments,
            gro_segments: granted.gro_segments,
            ..DataPlaneStats::default()
        };
        tracing::debug!(gso = stats.max_gso_segments, gro = stats.gro_segments, "tunnel socket offloads");
        Ok(Self {
            sockets,
            tunnels: Tunnels::new(private_key, config.tunnel, now, unix, seed),
            links: LinkTable::new(now, LinkConfig::default(), SlaPolicy::default()),
            peers: HashMap::new(),
            by_handle: HashMap::new(),
            rx: vec![0; RX_BUF * BATCH],
            tx: vec![0; TX_BUF],
            inbox: inboxes.datagrams,
            eager: config.eager,
            gso: config.gso,
            events: VecDeque::new(),
            vpn: None,
            routes: AllowedIps::default(),
            forward: Forward::default(),
            nat: NatProbe::new(ProbeConfig::default(), seed),
            puncher: Puncher::new(PunchConfig::default()),
            handshakes: HandshakeQueue::default(),
            bindings: VecDeque::new(),
            binding_limiter: RateLimiter::new(RateLimit { per_second: 10, burst: 5, max_sources: 4096 }),
            relayed: HashMap::new(),
            detours: HashMap::new(),
            unreachable: std::collections::HashSet::new(),
            next_relay_slot: 0,
            relay_inbox: inboxes.relayed,
            own_public: false,
            own: Vec::new(),
            stats,
        })
    }

    /// Carries IP packets between `tun` and the tunnels from now on.
    pub(crate) fn attach_vpn(&mut self, tun: Tun) {
        self.vpn = Some(tun);
    }

    /// IP packets the VPN device has carried, both ways (0 without one).
    pub(crate) fn vpn_packets(&self) -> u64 {
        self.vpn.as_ref().map_or(0, |t| t.stats.read_packets + t.stats.written_packets)
    }

    /// The counters, the VPN device's included.
    pub(crate) fn stats(&self) -> DataPlaneStats {
        let mut stats = self.stats;
        stats.handshakes_queued = self.handshakes.len();
        if let Some(tun) = &self.vpn {
            stats.tun = tun.stats;
        }
        stats
    }

    /// Moves the VPN device's IPv4 address.
    pub(crate) fn set_vpn_ipv4(&mut self, addr: Ipv4Addr, len: u8) {
        if let Some(tun) = &mut self.vpn {
            if let Err(e) = tun.set_ipv4(addr, len) {
                tracing::warn!(device = tun.name(), %addr, error = %e, "cannot move the VPN device's IPv4 address");
            }
        }
    }

    /// Routes `prefix` to `peer`'s tunnel (`None`: to no one).
    pub(crate) fn route(&mut self, prefix: IpPrefix, peer: Option<PeerId>) {
        match peer {
            Some(peer) => self.routes.insert(prefix, peer),
            None => self.routes.remove(&prefix),
        };
    }

    /// The bound address of each socket.
    pub(crate) fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets.local_addrs()
    }

    /// Waits until a socket has something to read; says which.
    pub(crate) async fn readable(&self) -> io::Result<usize> {
        self.sockets.readable().await
    }

    /// Whether `addr` is one of our own sockets: one of our endpoints, or a loopback
    /// address at the port of a socket of ours bound to every address. A peer in another
    /// network namespace or behind another NAT may announce the very same address (two
    /// homes' `192.168.1.10:4191`, or loopback with the default port); sending there
    /// would reach ourselves.
    fn is_own(&self, addr: &SocketAddr) -> bool {
        self.own.contains(addr)
            || self.sockets.local_addrs().iter().any(|l| {
                l.port() == addr.port()
                    && (l.ip() == addr.ip() || (l.ip().is_unspecified() && addr.ip().is_loopback()))
            })
    }

    /// Whether this node's socket sits behind a NAT, as far as it knows: its reflectors
    /// say so, or (before they say anything) none of its own addresses is public.
    fn behind_nat(&self) -> bool {
        match self.nat.verdict().kind {
            NatKind::Easy | NatKind::Hard => true,
            NatKind::Public => false,
            NatKind::Unknown => !self.own_public,
        }
    }

    /// Whether a peer whose record says `nat` may be sent to at its public mapping only
    /// by a punch (or not at all): both of us sit behind NATs. A packet arriving at a
    /// NAT before its own side has sent to us is dropped by most NATs, and makes one that
    /// accepts unsolicited input pick another port for that flow (breaking the
    /// mapping's independence: the reflectors would then call it hard, and a punch
    /// fail). So neither handshakes nor binding requests go there unsolicited.
    fn shielded(&self, nat: NatKind) -> bool {
        matches!(nat, NatKind::Easy | NatKind::Hard) && self.behind_nat()
    }

    /// Where to send to a peer whose record says `nat` and announces `endpoints`, before
    /// anything came from it: [`pick_endpoint`](Self::pick_endpoint), without its public
    /// addresses when [`shielded`](Self::shielded) (its private ones stay: a peer behind
    /// the same NAT is reached there).
    fn reachable(&self, nat: NatKind, endpoints: &[SocketAddr]) -> Option<SocketAddr> {
        if self.shielded(nat) {
            let private: Vec<SocketAddr> =
                endpoints.iter().filter(|e| !is_public(&e.ip())).copied().collect();
            return self.pick_endpoint(&private);
        }
        self.pick_endpoint(endpoints)
    }

    /// The endpoint of `record` to use: one of a family we have a socket for, IPv4
    /// first, loopback preferred when our socket of that family is on loopback.
    fn pick_endpoint(&self, endpoints: &[SocketAddr]) -> Option<SocketAddr> {
        let mut candidates: Vec<(bool, bool, SocketAddr)> = endpoints
            .iter()
            .filter(|e| !self.is_own(e))
            .filter_map(|e| {
                let local = self.sockets.local_addr_for(e)?;
                Some((e.is_ipv6(), e.ip().is_loopback() != local.ip().is_loopback(), *e))
            })
            .collect();
        candidates.sort();
        candidates.first().map(|c| c.2)
    }

    /// A peer's verified tunnel record (and its gossiped coordinate) entered the view or
    /// changed.
    pub(crate) fn peer_record(
        &mut self,
        now: Instant,
        peer: PeerId,
        record: &TunnelRecord,
        coordinate: Option<Coordinate>,
    ) {
        self.links.handle_coordinate(peer, coordinate);
        let key = record.tunnel_pubkey.0;
        // A record cannot name a relayed path: those are ours.
        let announced: Vec<SocketAddr> =
            record.udp_endpoints.iter().filter(|e| !is_relay_endpoint(e)).copied().collect();
        let endpoint = self.reachable(record.nat, &announced);
        if self.shielded(record.nat) {
            self.nat.remove_reflectors(&announced);
        } else {
            self.nat.add_reflectors(now, &announced);
        }
        if let Some(known) = self.peers.get_mut(&peer) {
            known.nat = record.nat;
            if known.endpoints != announced {
                let old = std::mem::replace(&mut known.endpoints, announced.clone());
                let gone: Vec<SocketAddr> = old.into_iter().filter(|e| !announced.contains(e)).collect();
                self.nat.remove_reflectors(&gone);
            }
            let known = &self.peers[&peer];
            if known.key == key {
                // Keep a known endpoint (it may have roamed: authenticated packets know
                // better than a record); take the record's when there is none yet.
                let handle = known.handle;
                let has_endpoint = self.tunnels.status(handle, now).is_some_and(|s| s.endpoint.is_some());
                if let (false, Some(e)) = (has_endpoint, endpoint) {
                    self.tunnels.set_endpoint(handle, e);
                }
                return;
            }
            self.forget(&peer);
        }
        let Ok(handle) = self.tunnels.add_peer(key, endpoint) else { return };
        self.peers.insert(peer, Known { nat: record.nat, ..Known::new(handle, key, false, announced) });
        self.by_handle.insert(handle, peer);
        if self.answer_pending_initiation(now, &key) {
            return;
        }
        if self.peers.len() <= self.eager {
            self.tunnels.open(now, handle);
        }
    }

    /// A new peer whose initiation came before its record (and was kept): it is handled
    /// again now, so its tunnel is up within a round trip of the record instead of at
    /// the initiator's 5 s retry. Whether there was one.
    fn answer_pending_initiation(&mut self, now: Instant, key: &[u8; 32]) -> bool {
        let Some((src, bytes)) = self.tunnels.take_pending_initiation(now, key) else { return false };
        if is_relay_endpoint(&src) {
            // Came over a relayed path: handled as that path's datagrams are.
            let len = bytes.len().min(self.rx.len());
            self.rx[..len].copy_from_slice(&bytes[..len]);
            self.handle_one(now, src, None, (0, len), true);
        } else {
            // Counted when it arrived; it takes its turn with the other handshakes.
            self.handshakes.push(now, src, &bytes);
        }
        self.stats.initiations_answered_late += 1;
        true
    }

    /// A stock WireGuard peer of this gateway, known as `id` in the routes: a tunnel
    /// with its own pre-shared key, waiting for the peer's first handshake (its endpoint
    /// comes from its authenticated packets). Whether the tunnel table took it.
    pub(crate) fn add_stock_peer(&mut self, id: PeerId, key: [u8; 32], psk: [u8; 32]) -> bool {
        if self.peers.get(&id).is_some_and(|k| k.key == key) {
            return true;
        }
        self.forget(&id);
        let Ok(handle) = self.tunnels.add_peer(key, None) else { return false };
        self.tunnels.set_psk(handle, psk);
        self.peers.insert(id, Known::new(handle, key, true, Vec::new()));
        self.by_handle.insert(handle, id);
        true
    }

    /// A peer's record expired: its tunnel closes and its keys are erased.
    pub(crate) fn remove_peer(&mut self, peer: &PeerId) {
        self.unreachable.remove(peer);
        self.forget(peer);
        self.routes.retain(|p| p != peer);
        self.links.handle_coordinate(*peer, None);
    }

    /// Drops the peer's tunnel and link; the known peer, if it was known.
    fn forget(&mut self, peer: &PeerId) -> Option<Known> {
        let known = self.peers.remove(peer)?;
        for addr in [known.relay, known.detour_in].into_iter().flatten() {
            self.relayed.remove(&addr);
        }
        if let Some(path) = known.detour.and_then(|addr| self.relayed.remove(&addr)) {
            self.events.push_back(DataPlaneEvent::DetourClosed { peer: *peer, via: path.via });
        }
        self.detours.remove(&known.handle);
        self.nat.remove_reflectors(&known.endpoints);
        self.links.handle_tunnel_down(peer);
        self.tunnels.remove_peer(known.handle);
        self.by_handle.remove(&known.handle);
        self.drain_links();
        Some(known)
    }

    pub(crate) fn open(&mut self, now: Instant, peer: &PeerId) -> bool {
        let Some(known) = self.peers.get(peer) else { return false };
        self.tunnels.open(now, known.handle);
        true
    }

    /// Closes a tunnel: erases its sessions; the peer stays known, and the next datagram
    /// or `open` starts a new handshake.
    pub(crate) fn close(&mut self, now: Instant, peer: &PeerId) -> bool {
        let endpoint = self.peers.get(peer).and_then(|k| self.tunnels.status(k.handle, now)?.endpoint);
        let Some(known) = self.forget(peer) else { return false };
        // A relayed path goes with the tunnel (the driver opens another when needed).
        let endpoint = endpoint
            .filter(|e| !is_relay_endpoint(e))
            .or_else(|| self.reachable(known.nat, &known.endpoints));
        if let Ok(handle) = self.tunnels.add_peer(known.key, endpoint) {
            let nat = known.nat;
            self.peers
                .insert(*peer, Known { nat, ..Known::new(handle, known.key, known.stock, known.endpoints) });
            self.by_handle.insert(handle, *peer);
        }
        true
    }

    /// The peer's probes went unanswered ([`LinkEvent::Unreachable`]): its tunnel is torn
    /// down (sessions erased, so nothing more is sent on a dead session) and a new
    /// handshake begins at once, retried as WireGuard does; the peer shows
    /// `unreachable` until a handshake completes. Whether the peer was a measured one.
    pub(crate) fn handle_unreachable(&mut self, now: Instant, peer: &PeerId) -> bool {
        if self.peers.get(peer).is_none_or(|k| k.stock) {
            return false;
        }
        self.unreachable.insert(*peer);
        self.close(now, peer);
        self.open(now, peer);
        true
    }

    pub(crate) fn status(&self, now: Instant) -> Vec<TunnelStatus> {
        let mut out: Vec<TunnelStatus> = self.peers.keys().filter_map(|p| self.status_of(p, now)).collect();
        out.sort_by_key(|s| s.peer);
        out
    }

    /// The state of one peer's tunnel.
    pub(crate) fn status_of(&self, peer: &PeerId, now: Instant) -> Option<TunnelStatus> {
        let known = self.peers.get(peer)?;
        let s = self.tunnels.status(known.handle, now)?;
        let relayed = s.endpoint.filter(is_relay_endpoint);
        Some(TunnelStatus {
            peer: *peer,
            endpoint: if relayed.is_some() { None } else { s.endpoint },
            path: known.path,
            established: s.established,
            unreachable: self.unreachable.contains(peer),
            handshake_in_progress: s.handshake_in_progress,
            last_handshake: s.last_handshake.map(|t| now.saturating_duration_since(t)),
            handshakes: s.handshakes,
            tx_bytes: s.tx_bytes,
            rx_bytes: s.rx_bytes,
            tx_packets: s.tx_packets,
            rx_packets: s.rx_packets,
            queued: s.queued,
            drops: s.drops.nonzero().map(|(r, n)| (r.as_str(), n)).collect(),
        })
    }

    /// This node's WireGuard static public key.
    pub(crate) fn public_key(&self) -> [u8; 32] {
        self.tunnels.public_key()
    }

    /// Drops by reason over the whole data plane: the tunnels', the handshake queue's
    /// (`handshake_queue_full`), and the kernel's on the tunnel sockets
    /// (`socket_receive_buffer`: datagrams that never reached the node).
    pub(crate) fn drops(&self) -> Vec<(&'static str, u64)> {
        let mut drops: Vec<_> = self.tunnels.drops().nonzero().map(|(r, n)| (r.as_str(), n)).collect();
        drops.push(("handshake_queue_full", self.handshakes.dropped));
        drops.push(("socket_receive_buffer", self.sockets.kernel_drops()));
        drops.retain(|(_, n)| *n > 0);
        drops
    }

    /// Handles queued handshake messages for at most [`HANDSHAKE_BUDGET`]; what is left
    /// waits for the next turn (see [`Self::poll_timeout`]).
    pub(crate) fn handle_handshakes(&mut self, now: Instant) {
        if self.handshakes.loaded() {
            self.tunnels.mark_loaded(now);
        }
        let tunnels = &mut self.tunnels;
        self.handshakes.drain(HANDSHAKE_BUDGET, Instant::now, |mut queued| {
            // Handshakes, cookie replies and their drops: nothing to deliver, only to
            // send (flushed with the rest) and count (by the tunnels).
            let (src, kind) = (queued.src, queued.bytes()[0]);
            let result = tunnels.handle_datagram(now, src, queued.bytes()).map(|_| ());
            tracing::trace!(%src, kind, ?result, "handshake message");
        });
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        [
            self.handshakes.poll_timeout(),
            self.tunnels.poll_timeout(),
            self.links.poll_timeout(),
            self.nat.poll_timeout(),
            self.puncher.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Tunnel timers, then the links: their counters when the judge is due, probes,
    /// judgements.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.handle_handshakes(now);
        self.tunnels.handle_timeout(now);
        self.nat.handle_timeout(now);
        self.puncher.handle_timeout(now);
        self.fail_over(now);
        if self.links.counters_due(now) {
            // Only measured links: a large view knows many more peers than it has tunnels.
            let counters: Vec<_> = self
                .links
                .peers()
                .filter_map(|peer| {
                    let s = self.tunnels.status(self.peers.get(peer)?.handle, now)?;
                    Some((*peer, PassiveCounters::from(&s), s.last_handshake))
                })
                .collect();
            for (peer, c, last_handshake) in counters {
                self.links.handle_counters(now, &peer, c, last_handshake);
            }
        }
        self.links.handle_timeout(now);
        self.drain_links();
    }

    /// Summaries and coordinate for the record, when due.
    pub(crate) fn poll_gossip(&mut self, now: Instant) -> Option<LinkGossip> {
        self.links.poll_gossip(now)
    }

    /// The summary of the link to `peer` now (its short window).
    pub(crate) fn link_summary(
        &mut self,
        now: Instant,
        peer: &PeerId,
    ) -> Option<swarm_core::link::summary::LinkSummary> {
        self.links.summary(now, peer)
    }

    /// Pings `peer` over its tunnel; the answer comes as a [`DataPlaneEvent::Link`].
    pub(crate) fn ping(&mut self, now: Instant, peer: &PeerId) -> Result<(), swarm_core::link::PingError> {
        self.links.ping(now, *peer)
    }

    /// Starts a throughput test to `peer`; its result comes as a [`DataPlaneEvent::Link`].
    pub(crate) fn measure_throughput(&mut self, now: Instant, peer: &PeerId) -> Result<(), MeasureError> {
        if !self.peers.contains_key(peer) {
            return Err(MeasureError::UnknownPeer);
        }
        self.links.measure(now, *peer).map_err(MeasureError::Link)
    }

    /// Measurements and SLA verdicts of every measured link.
    pub(crate) fn link_reports(&mut self, now: Instant) -> Vec<LinkReport> {
        let peers: Vec<PeerId> = self.links.peers().filter(|p| self.peers.contains_key(p)).copied().collect();
        let mut out: Vec<LinkReport> = peers
            .into_iter()
            .filter_map(|peer| {
                let (stats, sla) = self.links.report(now, &peer)?;
                let path = self.peers.get(&peer).map_or(Path::Direct, |k| k.path);
                Some(LinkReport { peer, stats, sla, path })
            })
            .collect();
        out.sort_by_key(|r| r.peer);
        out
    }

    /// Reads one batch from the socket of `family` into the tunnels; whether the socket
    /// had anything. The driver calls it a bounded number of times per turn, so that a
    /// flood cannot starve the rest of the node, and with a fresh `now` each time.
    pub(crate) fn handle_readable(&mut self, now: Instant, family: usize) -> bool {
        self.read_socket(now, family, false)
    }

    /// One non-blocking pass over every socket and the VPN device, asking the kernel
    /// directly; whether anything came. The driver spins on it briefly after traffic, so
    /// that an answer coming back within microseconds is taken without a wake-up from
    /// idle (tens of microseconds each on a virtual machine).
    pub(crate) async fn poll_once(&mut self, now: Instant) -> bool {
        let mut any = false;
        for family in 0..self.sockets.families() {
            any |= self.read_socket(now, family, true);
        }
        any | self.read_vpn(now, true).await
    }

    fn read_socket(&mut self, now: Instant, family: usize, spin: bool) -> bool {
        let mut meta = [RecvMeta::default(); BATCH];
        let n = match self.sockets.recv(family, &mut self.rx, &mut meta, spin) {
            Ok(n) => n,
            Err(e) => {
                self.stats.socket_errors += 1;
                tracing::debug!(error = %e, "tunnel socket receive failed");
                return false;
            }
        };
        for (i, m) in meta.iter().enumerate().take(n) {
            let stride = m.stride.max(1);
            let base = i * RX_BUF;
            let mut at = 0;
            while at < m.len {
                let end = (at + stride).min(m.len);
                self.handle_one(now, m.addr, m.dst_ip, (base + at, base + end), false);
                at = end;
            }
        }
        if let Some(tun) = &mut self.vpn {
            tun.flush();
        }
        n > 0
    }

    /// One datagram at `rx[start..end]` from `src`: from the socket, or (`pinned`) from
    /// a relayed path, whose datagrams move no endpoint.
    fn handle_one(
        &mut self,
        now: Instant,
        src: SocketAddr,
        dst: Option<IpAddr>,
        (start, end): (usize, usize),
        pinned: bool,
    ) {
        let datagram = &mut self.rx[start..end];
        if pinned {
            if binding::is_binding(datagram) {
                // Bindings and punch probes belong to the socket's own path.
                self.stats.relay_refused += 1;
                return;
            }
        } else {
            self.stats.udp_in += 1;
            if is_relay_endpoint(&src) {
                // From the network, claiming one of our relayed paths as its source.
                self.stats.relay_refused += 1;
                return;
            }
            if binding::is_binding(datagram) {
                return self.on_binding(now, src, dst, start, end);
            }
            if is_handshake(datagram) {
                // After the data, within a budget (see `handshakes`).
                self.handshakes.push(now, src, datagram);
                return;
            }
        }
        let received = if pinned {
            self.tunnels.handle_datagram_pinned(now, src, datagram)
        } else {
            self.tunnels.handle_datagram(now, src, datagram)
        };
        let (handle, kind, body) = match received {
            Ok(Received::Data { peer, payload: Payload::Frame { kind, body } }) => (peer, kind, body),
            Ok(Received::Data { peer, payload: Payload::Ipv4(packet) | Payload::Ipv6(packet) }) => {
                let Some(peer) = self.by_handle.get(&peer) else { return };
                let mut out = IpOut {
                    vpn: &mut self.vpn,
                    forward: &mut self.forward,
                    drops: &mut self.stats.vpn_drops,
                };
                return deliver_ip(&self.routes, &self.peers, &mut out, peer, packet);
            }
            // Keepalives, handshakes and drops (counted by the tunnels).
            _ => return,
        };
        let Some(peer) = self.by_handle.get(&handle).copied() else { return };
        if kind != FrameKind::DATAGRAM {
            return self.links.handle_frame(now, peer, kind, body);
        }
        match self.inbox.try_send(Datagram { peer, data: body.to_vec() }) {
            Ok(()) => self.stats.datagrams_delivered += 1,
            Err(_) => self.stats.datagrams_overflow += 1,
        }
    }

    /// A binding request is answered with the address it came from (rate-limited per
    /// source, never larger than the request); an answer goes to the NAT probe.
    fn on_binding(&mut self, now: Instant, src: SocketAddr, dst: Option<IpAddr>, start: usize, end: usize) {
        match binding::parse(&self.rx[start..end]) {
            Some(Binding::Request(txid)) => {
                if self.bindings.len() < MAX_BINDING_ANSWERS && self.binding_limiter.allow(now, src.ip()) {
                    if let Some(bound) = self.sockets.local_addr_for(&src) {
                        self.nat
                            .handle_request(src, SocketAddr::new(dst.unwrap_or(bound.ip()), bound.port()));
                    }
                    self.bindings.push_back((src, dst, binding::answer(&txid, src)));
                } else {
                    self.stats.bindings_refused += 1;
                }
            }
            Some(Binding::Answer(txid, mapped)) => self.nat.handle_answer(&txid, mapped),
            Some(Binding::Probe(token)) => {
                if !self.puncher.handle_probe(src, &token) {
                    self.stats.bindings_refused += 1;
                }
            }
            Some(Binding::ProbeAck(token)) => {
                if !self.puncher.handle_ack(src, &token) {
                    self.stats.bindings_refused += 1;
                }
            }
            None => self.stats.bindings_refused += 1,
        }
    }

    /// Punches a hole to `peer` at its `candidates` from `at` (the start both sides
    /// agreed on, with `token`); the result comes as a [`DataPlaneEvent::Punch`].
    pub(crate) fn punch(&mut self, peer: PeerId, token: [u8; 12], candidates: &[SocketAddr], at: Instant) {
        let candidates: Vec<SocketAddr> =
            candidates.iter().filter(|c| !is_relay_endpoint(c) && !self.is_own(c)).copied().collect();
        self.puncher.start(peer, token, &candidates, at);
    }

    /// Primes our NAT for a punch with `token` to `candidates` (the peer's), before any
    /// of its probes can arrive (see [`Puncher::prime`]).
    pub(crate) fn prime(&mut self, token: [u8; 12], candidates: &[SocketAddr]) {
        let candidates: Vec<SocketAddr> =
            candidates.iter().filter(|c| !is_relay_endpoint(c) && !self.is_own(c)).copied().collect();
        self.puncher.prime(token, &candidates);
    }

    /// A punch came through: the tunnel's packets go to the punched endpoint, and its
    /// handshake starts; or it failed.
    fn on_punch(&mut self, now: Instant, event: PunchEvent<PeerId>) {
        if let PunchEvent::Punched { peer, endpoint } = event {
            if let Some(known) = self.peers.get_mut(&peer) {
                known.punched = Some(now);
                let handle = known.handle;
                self.tunnels.set_endpoint(handle, endpoint);
                self.handshake_now(now, handle);
                self.update_path(now, peer);
            }
        }
        self.events.push_back(DataPlaneEvent::Punch(event));
    }

    /// A tunnel that just got a usable path handshakes over it now: a tunnel that is not
    /// up and has an initiation in flight (sent where nothing arrives) starts a new one
    /// instead of waiting up to 5 s for the retry; one that is up keeps its session.
    fn handshake_now(&mut self, now: Instant, handle: PeerHandle) {
        match self.tunnels.status(handle, now) {
            Some(s) if s.established => {}
            Some(s) if s.handshake_in_progress => self.tunnels.force_rekey(now, handle),
            _ => self.tunnels.open(now, handle),
        }
    }

    /// Whether `peer`'s tunnel has a direct endpoint that carried an authenticated
    /// packet, or was punched, within [`DIRECT_FRESH`].
    pub(crate) fn direct_fresh(&self, now: Instant, peer: &PeerId) -> bool {
        let Some(known) = self.peers.get(peer) else { return false };
        let Some(s) = self.tunnels.status(known.handle, now) else { return false };
        let fresh = |t: Option<Instant>| t.is_some_and(|t| now.saturating_duration_since(t) < DIRECT_FRESH);
        s.endpoint.is_some_and(|e| !is_relay_endpoint(&e)) && (fresh(s.endpoint_seen) || fresh(known.punched))
    }

    /// Whether `peer` has a relayed path now.
    pub(crate) fn has_relay_path(&self, peer: &PeerId) -> bool {
        self.peers.get(peer).is_some_and(|k| k.relay.is_some())
    }

    /// The path `peer`'s packets take.
    pub(crate) fn path(&self, peer: &PeerId) -> Option<Path> {
        self.peers.get(peer).map(|k| k.path)
    }

    /// A relayed path to `peer` through `via` is open on `stream`. It replaces the
    /// peer's last one of its kind. A fallback path carries the tunnel unless a direct
    /// endpoint is fresh; our detour carries our data (see the module docs); the peer's
    /// detour is one more way in. Whether the peer was known (else the stream is
    /// dropped).
    pub(crate) fn add_relay_path(
        &mut self,
        now: Instant,
        peer: PeerId,
        via: PeerId,
        stream: libp2p::Stream,
        kind: PathKind,
    ) -> bool {
        let Some(known) = self.peers.get_mut(&peer).filter(|k| !k.stock) else { return false };
        let addr = relay_endpoint(self.next_relay_slot);
        self.next_relay_slot = self.next_relay_slot.wrapping_add(1);
        let slot = match kind {
            PathKind::Fallback => &mut known.relay,
            PathKind::DetourOut => &mut known.detour,
            PathKind::DetourIn => &mut known.detour_in,
        };
        if let Some(old) = slot.replace(addr) {
            self.relayed.remove(&old);
        }
        let handle = known.handle;
        let pumps = tunnel_relay::attach(stream, addr, self.relay_inbox.clone());
        self.relayed.insert(addr, RelayedPath { peer, via, kind, pumps });
        match kind {
            PathKind::Fallback if !self.direct_fresh(now, &peer) => {
                self.tunnels.set_endpoint(handle, addr);
                self.handshake_now(now, handle);
            }
            PathKind::DetourOut => {
                self.detours.insert(handle, addr);
            }
            _ => {}
        }
        self.update_path(now, peer);
        true
    }

    /// Our data to `peer` goes straight again: its detour, if any, is closed (the
    /// intermediate and the peer see the stream end). Whether there was one.
    pub(crate) fn end_detour(&mut self, now: Instant, peer: &PeerId) -> bool {
        let Some(known) = self.peers.get_mut(peer) else { return false };
        let Some(addr) = known.detour.take() else { return false };
        self.detours.remove(&known.handle);
        self.relayed.remove(&addr);
        self.update_path(now, *peer);
        true
    }

    /// Where a datagram just sealed for a peer goes: over its detour while it has one,
    /// else where the tunnel said.
    fn detoured(&self, mut t: Transmit) -> Transmit {
        if self.detours.is_empty() || is_relay_endpoint(&t.destination) {
            return t;
        }
        if let Some(addr) = t.peer.and_then(|h| self.detours.get(&h)) {
            t.destination = *addr;
        }
        t
    }

    /// What a relayed path's pumps delivered: a datagram, handled as from the socket
    /// but moving no endpoint (the path is taken only while no direct one is fresh); or
    /// the end of the path.
    pub(crate) fn handle_relayed(&mut self, now: Instant, message: RelayIn) {
        match message {
            RelayIn::Datagram { addr, data } => {
                let Some((peer, kind)) = self.relayed.get(&addr).map(|p| (p.peer, p.kind)) else { return };
                let Some(handle) = self.peers.get(&peer).map(|k| k.handle) else { return };
                self.stats.relay_in += 1;
                let len = data.len().min(self.rx.len());
                self.rx[..len].copy_from_slice(&data[..len]);
                let before = self.tunnels.status(handle, now).map(|s| s.rx_packets);
                self.handle_one(now, addr, None, (0, len), true);
                let status = self.tunnels.status(handle, now);
                let authenticated = status.as_ref().map(|s| s.rx_packets) > before;
                let here = status.and_then(|s| s.endpoint) == Some(addr);
                // A detour (either way) never becomes the endpoint: the direct path stays
                // measured.
                if kind == PathKind::Fallback && authenticated && !here && !self.direct_fresh(now, &peer) {
                    self.tunnels.set_endpoint(handle, addr);
                    self.update_path(now, peer);
                }
                if let Some(tun) = &mut self.vpn {
                    tun.flush();
                }
            }
            RelayIn::Closed { addr } => {
                let Some(path) = self.relayed.remove(&addr) else { return };
                tracing::debug!(peer = %path.peer, via = %path.via, kind = ?path.kind, "relayed path closed");
                let Some(known) = self.peers.get_mut(&path.peer) else { return };
                match path.kind {
                    PathKind::DetourIn => {
                        if known.detour_in == Some(addr) {
                            known.detour_in = None;
                        }
                        return;
                    }
                    PathKind::DetourOut => {
                        if known.detour == Some(addr) {
                            known.detour = None;
                            self.detours.remove(&known.handle);
                            self.events
                                .push_back(DataPlaneEvent::DetourClosed { peer: path.peer, via: path.via });
                            self.update_path(now, path.peer);
                        }
                        return;
                    }
                    PathKind::Fallback => {}
                }
                if known.relay == Some(addr) {
                    known.relay = None;
                }
                let handle = known.handle;
                let (nat, endpoints) = (known.nat, known.endpoints.clone());
                let direct = self.reachable(nat, &endpoints);
                let on_it = self.tunnels.status(handle, now).and_then(|s| s.endpoint) == Some(addr);
                if let (true, Some(e)) = (on_it, direct) {
                    self.tunnels.set_endpoint(handle, e);
                }
                self.update_path(now, path.peer);
            }
        }
    }

    /// Peers with a relayed path whose direct endpoint went quiet (no authenticated
    /// packet for [`DIRECT_FRESH`]) move to the relayed path: the other side, hearing
    /// nothing direct either, does the same, so neither waits for the other.
    fn fail_over(&mut self, now: Instant) {
        let quiet: Vec<(PeerId, SocketAddr)> = self
            .relayed
            .iter()
            .filter(|(addr, p)| {
                self.peers.get(&p.peer).is_some_and(|k| k.relay == Some(**addr))
                    && !self.direct_fresh(now, &p.peer)
                    && matches!(self.path(&p.peer), Some(Path::Direct | Path::Detour { .. }))
            })
            .map(|(addr, p)| (p.peer, *addr))
            .collect();
        for (peer, addr) in quiet {
            if let Some(handle) = self.peers.get(&peer).map(|k| k.handle) {
                tracing::debug!(%peer, "direct path quiet: relayed");
                self.tunnels.set_endpoint(handle, addr);
                self.update_path(now, peer);
            }
        }
    }

    /// Reports `peer`'s path when it changed, and restarts its link's windows when what
    /// they measure moved (not for a detour: probes stay on the direct path).
    fn update_path(&mut self, now: Instant, peer: PeerId) {
        let Some(known) = self.peers.get(&peer) else { return };
        let endpoint = self.tunnels.status(known.handle, now).and_then(|s| s.endpoint);
        let detour = known.detour.and_then(|d| self.relayed.get(&d)).map(|p| p.via);
        let path = match (endpoint.and_then(|e| self.relayed.get(&e)), detour) {
            (Some(p), _) => Path::Relayed { via: p.via },
            (None, _) if endpoint.is_some_and(|e| is_relay_endpoint(&e)) => Path::Closed,
            (None, Some(via)) => Path::Detour { via },
            (None, None) => Path::Direct,
        };
        let Some(known) = self.peers.get_mut(&peer) else { return };
        if known.path != path {
            let measured = |p: Path| if let Path::Detour { .. } = p { Path::Direct } else { p };
            if measured(known.path) != measured(path) {
                self.links.handle_path_change(now, &peer);
            }
            known.path = path;
            self.events.push_back(DataPlaneEvent::PathChanged { peer, path });
        }
    }

    /// Our announced tunnel endpoints: with the sockets' bound addresses, a reflector
    /// that sees one of them says the socket is public.
    pub(crate) fn set_own_endpoints(&mut self, announced: &[SocketAddr]) {
        let mut own = announced.to_vec();
        own.extend(self.sockets.local_addrs());
        self.own_public = own.iter().any(|e| is_public(&e.ip()));
        self.own = own.clone();
        self.nat.set_own(own);
    }

    /// Seals and sends application datagrams. Consecutive datagrams of one size to one
    /// endpoint leave in one GSO send (one system call for up to 64 KiB) where the
    /// kernel supports it.
    pub(crate) async fn send_datagrams(&mut self, now: Instant, batch: &mut Vec<(PeerId, Vec<u8>)>) {
        let mut gso = GsoBatch::default();
        for (peer, data) in batch.drain(..) {
            let Some(known) = self.peers.get(&peer) else {
                self.stats.datagrams_unroutable += 1;
                continue;
            };
            let handle = known.handle;
            self.make_room(&mut gso, data.len() + FRAME_ROOM).await;
            match self.tunnels.send_datagram(now, handle, &data, &mut self.tx[gso.filled..]) {
                Ok(Some(t)) => {
                    self.stats.datagrams_sent += 1;
                    let t = self.detoured(t);
                    self.stage(&mut gso, t).await;
                }
                Ok(None) => self.stats.datagrams_sent += 1,
                Err(SendError::NoEndpoint | SendError::UnknownPeer) => self.stats.datagrams_unroutable += 1,
                Err(_) => self.stats.datagrams_refused += 1,
            }
        }
        self.send_batch(&mut gso).await;
    }

    /// Waits until the VPN device has packets (never, without one).
    pub(crate) async fn vpn_readable(&self) -> io::Result<()> {
        match &self.vpn {
            Some(tun) => tun.readable().await,
            None => std::future::pending().await,
        }
    }

    /// Reads one batch of IP packets from the VPN device and sends each to the peer its
    /// destination routes to, in GSO batches; whether there was anything.
    pub(crate) async fn handle_vpn_readable(&mut self, now: Instant) -> bool {
        self.read_vpn(now, false).await
    }

    async fn read_vpn(&mut self, now: Instant, spin: bool) -> bool {
        let Some(tun) = &mut self.vpn else { return false };
        let n = tun.recv(spin);
        let mut gso = GsoBatch::default();
        for i in 0..n {
            let Some(tun) = &self.vpn else { break };
            let packet = tun.packet(i);
            let dst = endpoints(packet).map(|(_, dst)| dst);
            let Some(handle) = dst
                .and_then(|d| self.routes.lookup(&d))
                .and_then(|peer| self.peers.get(peer))
                .map(|k| k.handle)
            else {
                // The host's own multicast (IPv6 router solicitations, MLD) has no peer
                // to go to: counted apart from packets to an address no one holds.
                match dst {
                    Some(d) if d.is_multicast() || d == std::net::Ipv4Addr::BROADCAST => {
                        self.stats.vpn_drops.multicast += 1;
                    }
                    _ => self.stats.vpn_drops.no_route += 1,
                }
                continue;
            };
            let len = packet.len();
            self.make_room(&mut gso, len).await;
            let Some(tun) = &self.vpn else { break };
            match self.tunnels.send_ip(now, handle, tun.packet(i), &mut self.tx[gso.filled..]) {
                Ok(Some(t)) => {
                    let t = self.detoured(t);
                    self.stage(&mut gso, t).await
                }
                Ok(None) => {}
                Err(SendError::NoEndpoint | SendError::UnknownPeer) => self.stats.vpn_drops.no_route += 1,
                Err(SendError::NotIp) => self.stats.vpn_drops.not_ip += 1,
                Err(SendError::TooLarge(_) | SendError::BufferTooSmall) => {
                    self.stats.vpn_drops.too_large += 1
                }
                Err(_) => self.stats.vpn_drops.queue_full += 1,
            }
        }
        self.send_batch(&mut gso).await;
        n > 0
    }

    /// Sends the GSO batch first when a payload of `len` bytes, sealed, would take it
    /// past one GSO send.
    async fn make_room(&mut self, gso: &mut GsoBatch, len: usize) {
        let room = len + swarm_core::tunnel::OVERHEAD;
        if gso.segments > 0 && gso.filled + room > GSO_MAX_BYTES {
            self.send_batch(gso).await;
        }
    }

    /// Adds a datagram just sealed at `tx[gso.filled..]` to the GSO batch, sending the
    /// batch first when it cannot join (another destination, a longer datagram, the
    /// socket's segment limit) and after it when it is shorter than the batch's.
    async fn stage(&mut self, gso: &mut GsoBatch, t: Transmit) {
        let max_segments = if self.gso { self.stats.max_gso_segments.max(1) } else { 1 };
        if gso.segments > 0 && !gso.joins(t.destination, t.len, max_segments) {
            // Send the batch, then move this datagram to the front.
            let filled = gso.filled;
            self.send_batch(gso).await;
            self.tx.copy_within(filled..filled + t.len, 0);
        }
        if gso.push(t.destination, t.len) {
            // A shorter datagram must be the last of its batch.
            self.send_batch(gso).await;
        }
    }

    async fn send_batch(&mut self, gso: &mut GsoBatch) {
        if let (Some(d), true) = (gso.destination.take(), gso.segments > 0) {
            self.send(d, gso.filled, gso.segment, gso.segments).await;
        }
        (gso.filled, gso.segments) = (0, 0);
    }

    /// Sends whatever the tunnels and the links have queued (handshakes, keepalives,
    /// payloads that waited, probes, trains) and turns the tunnels' events into
    /// [`DataPlaneEvent`]s.
    pub(crate) async fn flush(&mut self, now: Instant) {
        while let Some((to, packet)) = self.forward.queue.pop_front() {
            match self.tunnels.send_ip(now, to, &packet, &mut self.tx) {
                Ok(Some(t)) => {
                    let t = self.detoured(t);
                    self.send(t.destination, t.len, t.len, 1).await
                }
                Ok(None) => {}
                Err(_) => self.stats.vpn_drops.no_route += 1,
            }
            self.forward.spare.push(packet);
        }
        while let Some(t) = self.tunnels.poll_transmit(now, &mut self.tx) {
            self.send(t.destination, t.len, t.len, 1).await;
        }
        let answers = std::iter::from_fn(|| self.bindings.pop_front()).collect::<Vec<_>>();
        for (to, from, m) in answers {
            self.tx[..BINDING_LEN].copy_from_slice(&m);
            self.send_from(to, from, BINDING_LEN).await;
        }
        while let Some((to, m)) = self.puncher.poll_prime() {
            match self.sockets.send_with_ttl(to, &m, swarm_core::nat::punch::PRIME_TTL) {
                Ok(()) => self.stats.udp_out += 1,
                Err(_) => self.stats.socket_errors += 1,
            }
        }
        while let Some((to, m)) = self.nat.poll_transmit().or_else(|| self.puncher.poll_transmit()) {
            self.tx[..BINDING_LEN].copy_from_slice(&m);
            self.send(to, BINDING_LEN, BINDING_LEN, 1).await;
        }
        if let Some(verdict) = self.nat.poll_changed() {
            self.events.push_back(DataPlaneEvent::Reflexive(verdict));
        }
        while let Some(event) = self.puncher.poll_event() {
            self.on_punch(now, event);
        }
        while let Some(f) = self.links.poll_transmit() {
            let Some(known) = self.peers.get(&f.peer) else { continue };
            let sealed = self.tunnels.send_frame(now, known.handle, f.kind, f.body, &mut self.tx);
            if let Ok(Some(t)) = sealed {
                self.send(t.destination, t.len, t.len, 1).await;
            }
        }
        while let Some(event) = self.tunnels.poll_event() {
            self.on_tunnel_event(now, event);
        }
        self.drain_links();
    }

    /// The next event; drain until `None` after every call.
    pub(crate) fn poll_event(&mut self) -> Option<DataPlaneEvent> {
        self.events.pop_front()
    }

    fn drain_links(&mut self) {
        while let Some(e) = self.links.poll_event() {
            self.events.push_back(DataPlaneEvent::Link(e));
        }
    }

    fn on_tunnel_event(&mut self, now: Instant, event: TunnelEvent) {
        let handle = match event {
            TunnelEvent::HandshakeCompleted { peer, .. }
            | TunnelEvent::HandshakeTimedOut { peer }
            | TunnelEvent::EndpointChanged { peer, .. }
            | TunnelEvent::KeysZeroed { peer } => peer,
            _ => return,
        };
        let Some(peer) = self.by_handle.get(&handle).copied() else { return };
        let Some(known) = self.peers.get_mut(&peer) else { return };
        if known.stock {
            // Stock peers are not measured (they speak no swarm frames) and are not
            // swarm members: their state shows in `vpn peers`.
            match event {
                TunnelEvent::HandshakeCompleted { .. } => known.up = true,
                TunnelEvent::HandshakeTimedOut { .. } | TunnelEvent::KeysZeroed { .. } => known.up = false,
                _ => {}
            }
            return;
        }
        let event = match event {
            TunnelEvent::HandshakeCompleted { .. } => {
                self.links.handle_tunnel_up(now, peer);
                if known.up {
                    return;
                }
                known.up = true;
                self.unreachable.remove(&peer);
                // A relay endpoint names no address the caller could use: the path says it.
                let endpoint = self
                    .tunnels
                    .status(handle, now)
                    .and_then(|s| s.endpoint)
                    .filter(|e| !is_relay_endpoint(e));
                DataPlaneEvent::TunnelUp { peer, endpoint }
            }
            TunnelEvent::HandshakeTimedOut { .. } | TunnelEvent::KeysZeroed { .. } => {
                known.up = false;
                self.links.handle_tunnel_down(&peer);
                let reason = match event {
                    TunnelEvent::HandshakeTimedOut { .. } => "handshake timed out",
                    _ => "idle: keys erased",
                };
                DataPlaneEvent::TunnelDown { peer, reason }
            }
            TunnelEvent::EndpointChanged { endpoint, .. } => {
                self.update_path(now, peer);
                DataPlaneEvent::EndpointChanged { peer, endpoint }
            }
            _ => return,
        };
        self.events.push_back(event);
    }

    /// Sends `tx[..len]`: `segments` datagrams of `segment` bytes (the last may be
    /// shorter).
    async fn send(&mut self, destination: SocketAddr, len: usize, segment: usize, segments: usize) {
        if is_relay_endpoint(&destination) {
            return self.send_relayed(destination, len, segment);
        }
        match self.sockets.send(destination, None, &self.tx[..len], segment, segments).await {
            Ok(()) => self.stats.udp_out += segments as u64,
            Err(SendFailure::NoSocket | SendFailure::Stalled | SendFailure::Refused) => {
                self.stats.socket_errors += 1;
            }
        }
    }

    /// Queues `tx[..len]`, datagrams of `segment` bytes, on the relayed path named
    /// `destination`; what does not fit its queue (or finds no path) is dropped and
    /// counted, so the link's loss sees it.
    fn send_relayed(&mut self, destination: SocketAddr, len: usize, segment: usize) {
        let path = self.relayed.get(&destination);
        for datagram in self.tx[..len].chunks(segment.max(1)) {
            if path.is_some_and(|p| p.pumps.send(datagram)) {
                self.stats.relay_out += 1;
            } else {
                self.stats.relay_dropped += 1;
            }
        }
    }

    /// Sends `tx[..len]`, one datagram, from `src_ip` when given.
    async fn send_from(&mut self, destination: SocketAddr, src_ip: Option<IpAddr>, len: usize) {
        match self.sockets.send(destination, src_ip, &self.tx[..len], len, 1).await {
            Ok(()) => self.stats.udp_out += 1,
            Err(SendFailure::NoSocket | SendFailure::Stalled | SendFailure::Refused) => {
                self.stats.socket_errors += 1;
            }
        }
    }
}

/// Where a decrypted IP packet can go: the VPN device, or (at a gateway) another
/// peer's tunnel; and what is dropped.
struct IpOut<'a> {
    vpn: &'a mut Option<Tun>,
    forward: &'a mut Forward,
    drops: &'a mut VpnDrops,
}

/// Takes an IP packet decrypted from `peer` when its source is one of the peer's
/// addresses (else drops and counts it): to the peer its destination routes to when
/// this node is the gateway between them (one of the two is its stock peer), to the
/// VPN device otherwise.
fn deliver_ip(
    routes: &AllowedIps<PeerId>,
    peers: &HashMap<PeerId, Known>,
    out: &mut IpOut<'_>,
    peer: &PeerId,
    packet: &[u8],
) {
    let Some((src, dst)) = endpoints(packet) else {
        out.drops.not_ip += 1;
        return;
    };
    if !routes.allows(peer, &src) {
        out.drops.spoofed_source += 1;
        return;
    }
    let from_stock = peers.get(peer).is_some_and(|k| k.stock);
    if let Some(to) = routes.lookup(&dst).filter(|to| *to != peer).and_then(|to| peers.get(to)) {
        if to.stock || from_stock {
            if !out.forward.push(to.handle, packet) {
                out.drops.forward_queue_full += 1;
            }
            return;
        }
    }
    match out.vpn {
        Some(tun) => tun.queue(packet),
        None => out.drops.no_device += 1,
    }
}

/// Datagrams sealed into the send buffer, waiting to leave in one GSO send:
/// `tx[..filled]`, `segments` datagrams of `segment` bytes to `destination`.
#[derive(Debug, Default)]
struct GsoBatch {
    filled: usize,
    segments: usize,
    segment: usize,
    destination: Option<SocketAddr>,
}

impl GsoBatch {
    /// Whether a datagram of `len` bytes to `destination` may join the batch.
    fn joins(&self, destination: SocketAddr, len: usize, max_segments: usize) -> bool {
        self.destination == Some(destination) && len <= self.segment && self.segments < max_segments
    }

    /// Adds a datagram sealed at `tx[filled..]`; whether it was shorter than the batch's
    /// segments (it must then be the last).
    fn push(&mut self, destination: SocketAddr, len: usize) -> bool {
        if self.segments == 0 {
            self.destination = Some(destination);
            self.segment = len;
        }
        self.filled += len;
        self.segments += 1;
        len < self.segment
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    /// An IPv4 packet header (20 bytes) from `src` to `dst`.
    fn packet(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&28u16.to_be_bytes());
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p
    }

    fn host(a: [u8; 4]) -> IpPrefix {
        IpPrefix::host(IpAddr::from(a))
    }

    /// Cryptokey routing of decrypted packets: a source that is not the sender's is
    /// dropped and counted; a packet between a stock peer and another peer is forwarded
    /// by the gateway; anything else goes to the device (here none, so counted so).
    #[test]
    fn decrypted_packets_are_checked_forwarded_or_delivered() {
        let mut tunnels =
            Tunnels::new([1; 32], TunnelConfig::default(), Instant::now(), Duration::ZERO, [0; 32]);
        let (node, stock) = (PeerId::random(), PeerId::random());
        let mut peers = HashMap::new();
        let h_node = tunnels.add_peer([2; 32], None).unwrap();
        let h_stock = tunnels.add_peer([3; 32], None).unwrap();
        peers.insert(node, Known { up: true, ..Known::new(h_node, [2; 32], false, Vec::new()) });
        peers.insert(stock, Known { up: true, ..Known::new(h_stock, [3; 32], true, Vec::new()) });
        let mut routes = AllowedIps::default();
        routes.insert(host([100, 64, 0, 2]), node);
        routes.insert(host([100, 64, 0, 3]), stock);
        let (mut vpn, mut forward, mut drops) = (None, Forward::default(), VpnDrops::default());
        let mut out = IpOut { vpn: &mut vpn, forward: &mut forward, drops: &mut drops };
        // A node claiming a stock peer's source: spoofed.
        deliver_ip(&routes, &peers, &mut out, &node, &packet([100, 64, 0, 3], [100, 64, 0, 1]));
        // The stock peer to the node: forwarded to the node's tunnel.
        deliver_ip(&routes, &peers, &mut out, &stock, &packet([100, 64, 0, 3], [100, 64, 0, 2]));
        // The node to the stock peer: forwarded too.
        deliver_ip(&routes, &peers, &mut out, &node, &packet([100, 64, 0, 2], [100, 64, 0, 3]));
        // The node to us: for the device (none here).
        deliver_ip(&routes, &peers, &mut out, &node, &packet([100, 64, 0, 2], [100, 64, 0, 1]));
        // Not IP.
        deliver_ip(&routes, &peers, &mut out, &node, &[0x10; 8]);
        assert_eq!(
            (drops.spoofed_source, drops.no_device, drops.not_ip, drops.forward_queue_full),
            (1, 1, 1, 0)
        );
        let to: Vec<PeerHandle> = forward.queue.iter().map(|(h, _)| *h).collect();
        assert_eq!(to, vec![h_node, h_stock]);
        // The forwarding queue is bounded; its buffers are reused.
        let p = packet([100, 64, 0, 3], [100, 64, 0, 2]);
        for _ in 0..MAX_FORWARD {
            let mut out = IpOut { vpn: &mut vpn, forward: &mut forward, drops: &mut drops };
            deliver_ip(&routes, &peers, &mut out, &stock, &p);
        }
        assert_eq!(forward.queue.len(), MAX_FORWARD);
        assert_eq!(drops.forward_queue_full, 2);
    }
}
