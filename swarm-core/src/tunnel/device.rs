//! [`Tunnels`]: every WireGuard tunnel of one node, as one sans-IO state machine.
//!
//! Feed it with [`Tunnels::handle_datagram`] (each UDP datagram received) and
//! [`Tunnels::handle_timeout`] (when [`Tunnels::poll_timeout`] says), send with
//! [`Tunnels::send_datagram`] / [`Tunnels::send_ip`], and drain it with
//! [`Tunnels::poll_transmit`] and [`Tunnels::poll_event`] until they return `None`.
//! Time comes in as `now`; the wall clock (for TAI64N timestamps) is read once, at
//! construction, and advanced with `now`; randomness comes from a caller's seed.
//!
//! The transport path allocates nothing: sealing writes into the caller's buffer and
//! opening decrypts the received datagram in place. Packets that fail any check are
//! dropped without an answer and counted by [`DropReason`], globally and per peer (a
//! cookie reply to a handshake with a valid mac1 under load is the one answer an
//! unauthenticated sender can get).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::config::{Timers, TunnelConfig};
use super::cookie::CookieChecker;
use super::drops::{DropCounts, DropReason};
use super::frame::{classify, frame_header, FrameKind, Payload};
use super::noise::NoiseFactory;
use super::ratelimit::{RateLimit, RateLimiter};
use super::session::{SealError, Session};
use super::wire::Message;
use handshake::LoadMeter;
use peer::{sendable, Control, Peer};
use sessions::Slot;
use timer::Timer;

mod handshake;
mod peer;
mod sessions;
mod timer;
mod timers;

/// A peer of a [`Tunnels`]. Handles of removed peers are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerHandle {
    slot: u32,
    generation: u32,
}

/// Something that happened to a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TunnelEvent {
    /// A new session is in use.
    HandshakeCompleted {
        /// The peer.
        peer: PeerHandle,
        /// Whether we sent the initiation.
        initiator: bool,
    },
    /// The handshake was retried for the rekey-attempt time and gave up; queued
    /// payloads were dropped.
    HandshakeTimedOut {
        /// The peer.
        peer: PeerHandle,
    },
    /// Authenticated packets now come from another address, and replies go there.
    EndpointChanged {
        /// The peer.
        peer: PeerHandle,
        /// The new address.
        endpoint: SocketAddr,
    },
    /// No handshake for three times the reject time: every key of the peer was erased.
    KeysZeroed {
        /// The peer.
        peer: PeerHandle,
    },
}

/// A datagram to send, written into the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub destination: SocketAddr,
    /// Bytes written at the start of the buffer.
    pub len: usize,
    /// The peer it belongs to; `None` for a cookie reply.
    pub peer: Option<PeerHandle>,
}

/// What a datagram turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received<'a> {
    /// Authenticated transport data.
    Data {
        /// From whom.
        peer: PeerHandle,
        /// The payload, classified and trimmed; it lies in the datagram's buffer.
        payload: Payload<'a>,
    },
    /// A handshake message or cookie reply was consumed; [`Tunnels::poll_transmit`] may
    /// have an answer.
    Handshake {
        /// The peer.
        peer: PeerHandle,
    },
}

/// Why a payload could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// No such peer.
    #[error("unknown peer")]
    UnknownPeer,
    /// The peer has no known endpoint.
    #[error("the peer has no known endpoint")]
    NoEndpoint,
    /// The handshake is under way and the peer's queue is full.
    #[error("the handshake queue is full")]
    QueueFull,
    /// The payload is larger than allowed.
    #[error("payload of {0} bytes is too large")]
    TooLarge(usize),
    /// The output buffer cannot hold the sealed message.
    #[error("the output buffer is too small")]
    BufferTooSmall,
    /// An IP packet that does not start with version 4 or 6.
    #[error("not an IPv4 or IPv6 packet")]
    NotIp,
}

/// Why a peer could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddPeerError {
    /// The peer table is full.
    #[error("the peer table is full")]
    Full,
    /// The key is our own.
    #[error("a node cannot be its own peer")]
    OwnKey,
}

/// A snapshot of one peer's tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's static public key.
    pub public_key: [u8; 32],
    /// Where its packets go.
    pub endpoint: Option<SocketAddr>,
    /// When an authenticated packet last came from `endpoint` (`None`: not since it was
    /// set).
    pub endpoint_seen: Option<Instant>,
    /// When the session in use was established.
    pub last_handshake: Option<Instant>,
    /// Whether a session can carry data now.
    pub established: bool,
    /// Whether an initiation of ours awaits its response.
    pub handshake_in_progress: bool,
    /// Completed handshakes, both roles.
    pub handshakes: u64,
    /// Bytes sent (whole datagrams, handshakes included).
    pub tx_bytes: u64,
    /// Bytes received and authenticated (whole datagrams).
    pub rx_bytes: u64,
    /// Datagrams sent.
    pub tx_packets: u64,
    /// Datagrams received and authenticated.
    pub rx_packets: u64,
    /// Transport counters settled: at least 128 behind the highest received of their
    /// session, so each was either received (within the reordering margin) or is lost.
    pub rx_settled: u64,
    /// Of those, the ones never received: `rx_lost / rx_settled` is the inbound loss.
    pub rx_lost: u64,
    /// Payloads waiting for the handshake.
    pub queued: usize,
    /// Drops attributed to this peer.
    pub drops: DropCounts,
}

/// Control messages waiting to be sent at most; more are dropped (they are retried).
const MAX_CONTROL: usize = 4096;

/// Every tunnel of one node. See the module docs.
pub struct Tunnels {
    config: TunnelConfig,
    public: [u8; 32],
    noise: NoiseFactory,
    checker: CookieChecker,
    limiter: RateLimiter,
    /// Cookie replies per source, and in all (keyed by the unspecified address).
    cookie_per_source: RateLimiter,
    cookie_total: RateLimiter,
    load: LoadMeter,
    rng: StdRng,
    anchor: (Instant, Duration),
    slots: Vec<(u32, Option<Peer>)>,
    free_slots: Vec<u32>,
    by_key: HashMap<[u8; 32], PeerHandle>,
    by_index: HashMap<u32, PeerHandle>,
    control: VecDeque<Control>,
    flush: VecDeque<PeerHandle>,
    events: VecDeque<TunnelEvent>,
    drops: DropCounts,
    earliest: Option<Instant>,
    /// Whether authenticated packets move their peer's endpoint (off while a pinned
    /// datagram is handled).
    roaming: bool,
    /// Authenticated initiations from static keys not (yet) known: a new member whose
    /// first initiation outran its signed record. Bounded; see
    /// [`Tunnels::take_pending_initiation`].
    pending: VecDeque<KeptInitiation>,
}

/// An initiation kept for a key that is not a peer yet.
#[derive(Debug, Clone)]
struct KeptInitiation {
    key: [u8; 32],
    src: SocketAddr,
    bytes: Vec<u8>,
    at: Instant,
}

/// Initiations from unknown keys kept at most.
pub const MAX_PENDING_INITIATIONS: usize = 64;
/// How long one is kept: an initiator retries after 5 s (REKEY_TIMEOUT) with a new
/// ephemeral key, which the answer to an older initiation would not match.
pub const PENDING_INITIATION_TTL: Duration = Duration::from_secs(5);

impl core::fmt::Debug for Tunnels {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Tunnels").field("peers", &self.by_key.len()).field("drops", &self.drops).finish()
    }
}

fn slot_mut(slots: &mut [(u32, Option<Peer>)], h: PeerHandle) -> Option<&mut Peer> {
    match slots.get_mut(h.slot as usize) {
        Some((generation, Some(peer))) if *generation == h.generation => Some(peer),
        _ => None,
    }
}

fn new_index(rng: &mut StdRng, by_index: &mut HashMap<u32, PeerHandle>, h: PeerHandle) -> u32 {
    loop {
        let i = rng.next_u32();
        if let std::collections::hash_map::Entry::Vacant(e) = by_index.entry(i) {
            e.insert(h);
            return i;
        }
    }
}

fn retire(by_index: &mut HashMap<u32, PeerHandle>, session: Option<Session>) {
    if let Some(s) = session {
        by_index.remove(&s.local_index);
    }
}

impl Tunnels {
    /// The tunnels of the node whose static private key is `private_key`. `now` and
    /// `unix_now` are the same moment on the monotonic and the wall clock; `seed` feeds
    /// every random choice (ephemeral keys, indices, cookie secrets, jitter) and must
    /// come from a cryptographic source in production.
    pub fn new(
        private_key: [u8; 32],
        config: TunnelConfig,
        now: Instant,
        unix_now: Duration,
        seed: [u8; 32],
    ) -> Self {
        let public = super::noise::public_key(&private_key);
        Self {
            noise: NoiseFactory::new(private_key, config.psk),
            checker: CookieChecker::new(&public),
            limiter: RateLimiter::new(config.rate_limit),
            cookie_per_source: RateLimiter::new(config.cookie_replies_per_source),
            cookie_total: RateLimiter::new(RateLimit {
                per_second: config.cookie_replies_per_second.max(1),
                burst: (config.cookie_replies_per_second / 10).max(1),
                max_sources: 1,
            }),
            load: LoadMeter::default(),
            rng: StdRng::from_seed(seed),
            anchor: (now, unix_now),
            public,
            config,
            slots: Vec::new(),
            free_slots: Vec::new(),
            by_key: HashMap::new(),
            pending: VecDeque::new(),
            by_index: HashMap::new(),
            control: VecDeque::new(),
            flush: VecDeque::new(),
            events: VecDeque::new(),
            drops: DropCounts::default(),
            earliest: None,
            roaming: true,
        }
    }

    /// A copy of every tunnel, to restore later (fuzzing from a prepared state, tests
    /// that branch), its randomness from `seed` from then on; `None` while a handshake of
    /// ours is under way, as its Noise state cannot be copied.
    pub fn try_clone(&self, seed: [u8; 32]) -> Option<Tunnels> {
        let mut slots = Vec::with_capacity(self.slots.len());
        for (generation, peer) in &self.slots {
            let peer = match peer {
                Some(p) => Some(p.try_clone()?),
                None => None,
            };
            slots.push((*generation, peer));
        }
        Some(Tunnels {
            config: self.config.clone(),
            public: self.public,
            noise: self.noise.clone(),
            checker: self.checker.clone(),
            limiter: self.limiter.clone(),
            cookie_per_source: self.cookie_per_source.clone(),
            cookie_total: self.cookie_total.clone(),
            load: self.load.clone(),
            rng: StdRng::from_seed(seed),
            anchor: self.anchor,
            slots,
            free_slots: self.free_slots.clone(),
            by_key: self.by_key.clone(),
            by_index: self.by_index.clone(),
            control: self.control.clone(),
            flush: self.flush.clone(),
            events: self.events.clone(),
            drops: self.drops,
            earliest: self.earliest,
            roaming: self.roaming,
            pending: self.pending.clone(),
        })
    }

    /// Our static public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// Keeps an authenticated initiation from `key`, not a peer yet (the newest per key;
    /// the oldest goes when [`MAX_PENDING_INITIATIONS`] are kept).
    pub(crate) fn keep_pending(&mut self, now: Instant, key: [u8; 32], src: SocketAddr, bytes: &[u8]) {
        self.pending.retain(|p| p.key != key && now.saturating_duration_since(p.at) < PENDING_INITIATION_TTL);
        if self.pending.len() >= MAX_PENDING_INITIATIONS {
            self.pending.pop_front();
        }
        self.pending.push_back(KeptInitiation { key, src, bytes: bytes.to_vec(), at: now });
    }

    /// The initiation `key` sent before it was a peer, if one came in the last
    /// [`PENDING_INITIATION_TTL`]: where it came from and its bytes, to be handled again
    /// now that the peer is added (the initiator then has its answer at once instead of
    /// after its 5 s retry).
    pub fn take_pending_initiation(&mut self, now: Instant, key: &[u8; 32]) -> Option<(SocketAddr, Vec<u8>)> {
        let i = self.pending.iter().position(|p| p.key == *key)?;
        let p = self.pending.remove(i)?;
        (now.saturating_duration_since(p.at) < PENDING_INITIATION_TTL).then_some((p.src, p.bytes))
    }

    /// The settings.
    pub fn config(&self) -> &TunnelConfig {
        &self.config
    }

    /// Adds the peer with static key `public_key`, or returns the existing one (whose
    /// endpoint is updated when `endpoint` is given).
    pub fn add_peer(
        &mut self,
        public_key: [u8; 32],
        endpoint: Option<SocketAddr>,
    ) -> Result<PeerHandle, AddPeerError> {
        if public_key == self.public {
            return Err(AddPeerError::OwnKey);
        }
        if let Some(&h) = self.by_key.get(&public_key) {
            if let (Some(e), Some(peer)) = (endpoint, slot_mut(&mut self.slots, h)) {
                peer.endpoint = Some(e);
            }
            return Ok(h);
        }
        if self.by_key.len() >= self.config.max_peers {
            return Err(AddPeerError::Full);
        }
        let peer = Some(Peer::new(public_key, endpoint));
        let h = match self.free_slots.pop() {
            Some(slot) => {
                let entry = &mut self.slots[slot as usize];
                entry.0 = entry.0.wrapping_add(1);
                entry.1 = peer;
                PeerHandle { slot, generation: entry.0 }
            }
            None => {
                let slot = u32::try_from(self.slots.len()).map_err(|_| AddPeerError::Full)?;
                self.slots.push((0, peer));
                PeerHandle { slot, generation: 0 }
            }
        };
        self.by_key.insert(public_key, h);
        Ok(h)
    }

    /// Gives a peer its own pre-shared key instead of the node's (a stock WireGuard peer
    /// that must never learn the swarm's); the next handshake uses it.
    pub fn set_psk(&mut self, h: PeerHandle, psk: [u8; 32]) -> bool {
        let Some(peer) = slot_mut(&mut self.slots, h) else { return false };
        peer.psk = Some(zeroize::Zeroizing::new(psk));
        true
    }

    /// Removes a peer, erasing its keys; its handle becomes invalid.
    pub fn remove_peer(&mut self, h: PeerHandle) -> bool {
        let Some(peer) = slot_mut(&mut self.slots, h) else { return false };
        let public = peer.public;
        let sessions = peer.sessions.take_all();
        let initiation = peer.initiation.take();
        for s in sessions {
            retire(&mut self.by_index, s);
        }
        if let Some(i) = initiation {
            self.by_index.remove(&i.local_index);
        }
        self.slots[h.slot as usize].1 = None;
        self.free_slots.push(h.slot);
        self.by_key.remove(&public);
        self.flush.retain(|p| *p != h);
        true
    }

    /// The peer with static key `public_key`.
    pub fn peer(&self, public_key: &[u8; 32]) -> Option<PeerHandle> {
        self.by_key.get(public_key).copied()
    }

    /// Every peer.
    pub fn peers(&self) -> impl Iterator<Item = PeerHandle> + '_ {
        self.by_key.values().copied()
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether there is no peer.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Sets where a peer's packets go (authenticated packets from elsewhere move it).
    pub fn set_endpoint(&mut self, h: PeerHandle, endpoint: SocketAddr) -> bool {
        let Some(peer) = slot_mut(&mut self.slots, h) else { return false };
        if peer.endpoint != Some(endpoint) {
            peer.endpoint = Some(endpoint);
            peer.endpoint_seen = None;
        }
        true
    }

    /// A snapshot of a peer's tunnel.
    pub fn status(&self, h: PeerHandle, now: Instant) -> Option<PeerStatus> {
        let peer = match self.slots.get(h.slot as usize) {
            Some((generation, Some(peer))) if *generation == h.generation => peer,
            _ => return None,
        };
        Some(PeerStatus {
            public_key: peer.public,
            endpoint: peer.endpoint,
            endpoint_seen: peer.endpoint_seen,
            last_handshake: peer.last_handshake,
            established: peer.usable(now, &self.config.timers),
            handshake_in_progress: peer.initiation.is_some(),
            handshakes: peer.counters.handshakes,
            tx_bytes: peer.counters.tx_bytes,
            rx_bytes: peer.counters.rx_bytes,
            tx_packets: peer.counters.tx_packets,
            rx_packets: peer.counters.rx_packets,
            rx_settled: peer.counters.rx_settled,
            rx_lost: peer.counters.rx_lost,
            queued: peer.queue.len(),
            drops: peer.drops,
        })
    }

    /// Drops by reason, over all peers and unattributed datagrams.
    pub fn drops(&self) -> DropCounts {
        self.drops
    }

    fn count(&mut self, h: Option<PeerHandle>, reason: DropReason) -> DropReason {
        self.drops.add(reason);
        if let Some(peer) = h.and_then(|h| slot_mut(&mut self.slots, h)) {
            peer.drops.add(reason);
        }
        reason
    }

    fn wall(&self, now: Instant) -> Duration {
        let (i, u) = self.anchor;
        match now.checked_duration_since(i) {
            Some(d) => u + d,
            None => u.saturating_sub(i.saturating_duration_since(now)),
        }
    }

    fn wake_at(&mut self, at: Option<Instant>) {
        if let Some(t) = at {
            self.earliest = Some(self.earliest.map_or(t, |e| e.min(t)));
        }
    }

    fn push_control(&mut self, c: Control) {
        if self.control.len() < MAX_CONTROL {
            self.control.push_back(c);
        }
    }

    /// Starts a handshake with the peer unless a session is usable or one is under way.
    /// Tunnels also open by themselves when a payload is sent.
    pub fn open(&mut self, now: Instant, h: PeerHandle) {
        let timers = self.config.timers;
        if let Some(peer) = slot_mut(&mut self.slots, h) {
            if !peer.usable(now, &timers) && peer.initiation.is_none() {
                self.initiate(now, h, false);
            }
        }
    }

    /// Starts a new handshake now, even with a usable session (a manual rekey).
    pub fn force_rekey(&mut self, now: Instant, h: PeerHandle) {
        self.initiate(now, h, true);
    }

    /// Feeds one received datagram that came by another path than the peer's endpoint
    /// (a relay): like [`handle_datagram`](Self::handle_datagram), but an authenticated
    /// packet does not move the peer's endpoint; the caller decides the path. Answers to
    /// handshakes still go back to `src`.
    pub fn handle_datagram_pinned<'a>(
        &mut self,
        now: Instant,
        src: SocketAddr,
        datagram: &'a mut [u8],
    ) -> Result<Received<'a>, DropReason> {
        self.roaming = false;
        let r = self.handle_datagram(now, src, datagram);
        self.roaming = true;
        r
    }

    /// Feeds one received datagram. Data is decrypted in place: the returned payload
    /// borrows `datagram`.
    pub fn handle_datagram<'a>(
        &mut self,
        now: Instant,
        src: SocketAddr,
        datagram: &'a mut [u8],
    ) -> Result<Received<'a>, DropReason> {
        let transport = match Message::parse(datagram) {
            Err(_) => return Err(self.count(None, DropReason::Malformed)),
            Ok(Message::Transport(t)) => Some((t.receiver(), t.counter())),
            Ok(Message::Initiation(m)) => return self.on_initiation(now, src, m),
            Ok(Message::Response(m)) => return self.on_response(now, src, m),
            Ok(Message::CookieReply(m)) => return self.on_cookie_reply(now, m),
        };
        match transport {
            Some((receiver, counter)) => self.on_transport(now, src, receiver, counter, datagram),
            None => Err(DropReason::Malformed),
        }
    }

    fn on_transport<'a>(
        &mut self,
        now: Instant,
        src: SocketAddr,
        receiver: u32,
        counter: u64,
        datagram: &'a mut [u8],
    ) -> Result<Received<'a>, DropReason> {
        let Some(&h) = self.by_index.get(&receiver) else {
            return Err(self.count(None, DropReason::UnknownIndex));
        };
        let (timers, persistent) = (self.config.timers, self.config.persistent_keepalive);
        let Some(peer) = slot_mut(&mut self.slots, h) else { return Err(DropReason::UnknownIndex) };
        let slot = peer.sessions.find(receiver);
        let plain = match peer.open(now, slot, counter, datagram, &timers) {
            Ok(plain) => plain,
            Err(reason) => return Err(self.count(Some(h), reason)),
        };
        let confirmed = (slot == Some(Slot::Next)).then(|| peer.confirm_next(now, &timers));
        let payload = classify(plain);
        let data = !matches!(payload, Ok(Payload::Keepalive));
        let (deadline, renew) = peer.on_received(now, data, &timers, persistent);
        if let Some((dropped, flush)) = confirmed {
            retire(&mut self.by_index, dropped);
            if flush {
                self.flush.push_back(h);
            }
            self.events.push_back(TunnelEvent::HandshakeCompleted { peer: h, initiator: false });
        }
        self.roam(now, h, src);
        self.wake_at(deadline);
        if renew {
            self.initiate(now, h, false);
        }
        payload
            .map(|payload| Received::Data { peer: h, payload })
            .map_err(|_| self.count(Some(h), DropReason::BadPayload))
    }

    /// Sends an application datagram to a peer. Returns the transmit written into
    /// `out`, or `None` when the payload was queued behind a handshake (which this
    /// starts); [`Self::poll_transmit`] sends it once the tunnel is up.
    pub fn send_datagram(
        &mut self,
        now: Instant,
        h: PeerHandle,
        data: &[u8],
        out: &mut [u8],
    ) -> Result<Option<Transmit>, SendError> {
        self.send_frame(now, h, FrameKind::DATAGRAM, data, out)
    }

    /// Sends a swarm frame of any kind (see [`FrameKind`]).
    pub fn send_frame(
        &mut self,
        now: Instant,
        h: PeerHandle,
        kind: FrameKind,
        body: &[u8],
        out: &mut [u8],
    ) -> Result<Option<Transmit>, SendError> {
        let len = u16::try_from(body.len()).map_err(|_| SendError::TooLarge(body.len()))?;
        if body.len() > self.config.max_datagram {
            return Err(SendError::TooLarge(body.len()));
        }
        let header = frame_header(kind, len);
        self.send_parts(now, h, &[&header, body], out)
    }

    /// Sends an IP packet to a peer (as any WireGuard peer expects).
    pub fn send_ip(
        &mut self,
        now: Instant,
        h: PeerHandle,
        packet: &[u8],
        out: &mut [u8],
    ) -> Result<Option<Transmit>, SendError> {
        if !matches!(packet.first().map(|b| b >> 4), Some(4 | 6)) {
            return Err(SendError::NotIp);
        }
        if packet.len() > usize::from(u16::MAX) {
            return Err(SendError::TooLarge(packet.len()));
        }
        self.send_parts(now, h, &[packet], out)
    }

    fn send_parts(
        &mut self,
        now: Instant,
        h: PeerHandle,
        parts: &[&[u8]],
        out: &mut [u8],
    ) -> Result<Option<Transmit>, SendError> {
        let timers = self.config.timers;
        let (cap, cap_bytes) = (self.config.queue_per_peer, self.config.queue_bytes_per_peer);
        let Some(peer) = slot_mut(&mut self.slots, h) else { return Err(SendError::UnknownPeer) };
        if peer.endpoint.is_none() {
            self.count(Some(h), DropReason::NoEndpoint);
            return Err(SendError::NoEndpoint);
        }
        if peer.usable(now, &timers) {
            return self.seal_for(now, h, parts, out).map(Some);
        }
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let queued: usize = peer.queue.iter().map(Vec::len).sum();
        if peer.queue.len() >= cap || queued + total > cap_bytes {
            self.count(Some(h), DropReason::QueueFull);
            return Err(SendError::QueueFull);
        }
        let mut v = Vec::with_capacity(total);
        for p in parts {
            v.extend_from_slice(p);
        }
        peer.queue.push_back(v);
        self.initiate(now, h, false);
        Ok(None)
    }

    /// Seals `parts` for the peer's current session into `out`, with the bookkeeping of
    /// a sent packet (timers, counters, rekey).
    fn seal_for(
        &mut self,
        now: Instant,
        h: PeerHandle,
        parts: &[&[u8]],
        out: &mut [u8],
    ) -> Result<Transmit, SendError> {
        let timers = self.config.timers;
        let persistent = self.config.persistent_keepalive;
        let Some(peer) = slot_mut(&mut self.slots, h) else { return Err(SendError::UnknownPeer) };
        let Some(destination) = peer.endpoint else { return Err(SendError::NoEndpoint) };
        let Some(session) = peer.sessions.current_mut().filter(|s| sendable(s, now, &timers)) else {
            return Err(SendError::QueueFull);
        };
        let len = match session.seal(parts, out) {
            Ok(len) => len,
            Err(SealError::BufferTooSmall) => return Err(SendError::BufferTooSmall),
            Err(SealError::Exhausted) => return Err(SendError::QueueFull),
        };
        let rekey = session.send_counter >= timers.rekey_after_messages
            || (session.initiator
                && now.saturating_duration_since(session.created) >= timers.rekey_after_time);
        peer.last_sent = Some(now);
        peer.deadlines.stop(Timer::Keepalive);
        peer.counters.tx_bytes += len as u64;
        peer.counters.tx_packets += 1;
        let data = parts.iter().any(|p| !p.is_empty());
        if data && !peer.deadlines.is_set(Timer::NewHandshake) {
            peer.deadlines.set(Timer::NewHandshake, now + timers.keepalive_timeout + timers.rekey_timeout);
        }
        let deadline = peer.deadline(&timers, persistent);
        let rekey = rekey && peer.initiation.is_none();
        self.wake_at(deadline);
        if rekey {
            self.initiate(now, h, false);
        }
        Ok(Transmit { destination, len, peer: Some(h) })
    }

    /// The next datagram to send (handshake messages, cookie replies, keepalives, and
    /// payloads that waited for a handshake), written into `buf` (at least 148 bytes,
    /// and room for the largest queued payload plus 32).
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        while let Some(c) = self.control.pop_front() {
            match c {
                Control::Handshake { destination, peer, len, bytes } => {
                    let Some(out) = buf.get_mut(..len) else { continue };
                    out.copy_from_slice(&bytes[..len]);
                    return Some(Transmit { destination, len, peer });
                }
                Control::Keepalive(h) => {
                    if let Ok(t) = self.seal_for(now, h, &[], buf) {
                        return Some(t);
                    }
                }
            }
        }
        let timers = self.config.timers;
        while let Some(&h) = self.flush.front() {
            let Some(peer) = slot_mut(&mut self.slots, h) else {
                self.flush.pop_front();
                continue;
            };
            if !peer.usable(now, &timers) || peer.endpoint.is_none() || peer.queue.is_empty() {
                peer.in_flush = false;
                self.flush.pop_front();
                continue;
            }
            let Some(payload) = peer.queue.pop_front() else { continue };
            if peer.queue.is_empty() {
                peer.in_flush = false;
                self.flush.pop_front();
            }
            match self.seal_for(now, h, &[&payload], buf) {
                Ok(t) => return Some(t),
                Err(_) => {
                    self.count(Some(h), DropReason::QueueFull);
                }
            }
        }
        None
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<TunnelEvent> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.earliest
    }

    /// Bytes held for one peer: its state (three sessions with their replay windows,
    /// timers, counters) and queued payloads. snow's handshake state, while one is under
    /// way, adds about 1 KiB on the heap.
    pub fn peer_memory(&self, h: PeerHandle) -> Option<usize> {
        let peer = match self.slots.get(h.slot as usize) {
            Some((generation, Some(peer))) if *generation == h.generation => peer,
            _ => return None,
        };
        let queued: usize = peer.queue.iter().map(|v| v.capacity()).sum();
        Some(core::mem::size_of::<Peer>() + queued + peer.queue.capacity() * core::mem::size_of::<Vec<u8>>())
    }
}
