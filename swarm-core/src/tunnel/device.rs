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
use snow::HandshakeState;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::cookie::{CookieChecker, CookieJar};
use super::frame::{classify, frame_header, FrameKind, Payload};
use super::mac::{cookie_key, mac1_key};
use super::noise::NoiseFactory;
use super::ratelimit::{RateLimit, RateLimiter};
use super::replay::REJECT_AFTER_MESSAGES;
use super::session::{SealError, Session};
use super::tai64n::Tai64N;
use super::wire::{
    CookieReply, Initiation, Message, Response, COOKIE_REPLY_LEN, INITIATION_LEN, RESPONSE_LEN,
    TRANSPORT_HEADER_LEN, TYPE_INITIATION, TYPE_RESPONSE,
};

/// The whitepaper's timers (§6.1). Tests shorten them; nodes keep the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// A session the initiator started is renewed after this long (120 s).
    pub rekey_after_time: Duration,
    /// A session is not used after this long (180 s).
    pub reject_after_time: Duration,
    /// A handshake is retried for this long before giving up (90 s).
    pub rekey_attempt_time: Duration,
    /// Time between initiations to one peer, plus up to 333 ms jitter (5 s).
    pub rekey_timeout: Duration,
    /// A keepalive follows received data after this long with nothing sent (10 s).
    pub keepalive_timeout: Duration,
    /// A session is renewed after sending this many messages (2^60).
    pub rekey_after_messages: u64,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            rekey_after_time: Duration::from_secs(120),
            reject_after_time: Duration::from_secs(180),
            rekey_attempt_time: Duration::from_secs(90),
            rekey_timeout: Duration::from_secs(5),
            keepalive_timeout: Duration::from_secs(10),
            rekey_after_messages: 1 << 60,
        }
    }
}

/// Settings of a [`Tunnels`].
#[derive(Debug, Clone)]
pub struct TunnelConfig {
    /// The swarm's pre-shared key, mixed into every handshake; `None` is WireGuard's
    /// all-zero key.
    pub psk: Option<[u8; 32]>,
    /// Handshake messages per second above which the node is under load: it then
    /// answers handshakes without a valid mac2 with a cookie reply, and rate-limits each
    /// source address.
    pub load_threshold: u32,
    /// The per-source limit applied under load.
    pub rate_limit: RateLimit,
    /// Payloads kept per peer while its handshake is under way.
    pub queue_per_peer: usize,
    /// Peers at most.
    pub max_peers: usize,
    /// Send a keepalive when nothing was sent for this long (for peers behind NAT).
    pub persistent_keepalive: Option<Duration>,
    /// Largest application datagram [`Tunnels::send_datagram`] accepts.
    pub max_datagram: usize,
    /// The protocol's timers.
    pub timers: Timers,
}

impl Default for TunnelConfig {
    fn default() -> Self {
        Self {
            psk: None,
            load_threshold: 1000,
            rate_limit: RateLimit::default(),
            queue_per_peer: 64,
            max_peers: 65_536,
            persistent_keepalive: None,
            max_datagram: 65_000,
            timers: Timers::default(),
        }
    }
}

/// A peer of a [`Tunnels`]. Handles of removed peers are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerHandle {
    slot: u32,
    generation: u32,
}

/// Why a datagram (or a payload to send) was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// Not a WireGuard message: unknown type, bad length.
    Malformed,
    /// A receiver index we did not hand out (or no longer use).
    UnknownIndex,
    /// A handshake message whose mac1 is not ours.
    BadMac1,
    /// Under load, a handshake without a valid mac2: answered with a cookie reply.
    CookieRequired,
    /// Under load, the source sent handshakes faster than its token bucket allows.
    RateLimited,
    /// The Noise part of a handshake message did not authenticate.
    HandshakeFailed,
    /// An initiation from a static key that is not one of our peers.
    UnknownPeer,
    /// An initiation whose timestamp is not newer than the last one from that peer.
    StaleTimestamp,
    /// A second initiation from one peer within 20 ms.
    InitiationFlood,
    /// A cookie reply that did not authenticate.
    BadCookieReply,
    /// Data for a session older than the reject time.
    SessionExpired,
    /// A counter already received.
    Replayed,
    /// A counter behind the replay window.
    TooOld,
    /// A counter past the message limit.
    CounterLimit,
    /// Data whose tag did not verify.
    Decrypt,
    /// Authenticated data that is neither an IP packet nor a swarm frame.
    BadPayload,
    /// A payload to send found the peer's handshake queue full.
    QueueFull,
    /// Queued payloads dropped because the handshake gave up or keys were erased.
    HandshakeTimeout,
    /// A payload or handshake for a peer without a known endpoint.
    NoEndpoint,
}

impl DropReason {
    /// Number of reasons.
    pub const COUNT: usize = 19;
    /// Every reason, in counter order.
    pub const ALL: [DropReason; Self::COUNT] = [
        Self::Malformed,
        Self::UnknownIndex,
        Self::BadMac1,
        Self::CookieRequired,
        Self::RateLimited,
        Self::HandshakeFailed,
        Self::UnknownPeer,
        Self::StaleTimestamp,
        Self::InitiationFlood,
        Self::BadCookieReply,
        Self::SessionExpired,
        Self::Replayed,
        Self::TooOld,
        Self::CounterLimit,
        Self::Decrypt,
        Self::BadPayload,
        Self::QueueFull,
        Self::HandshakeTimeout,
        Self::NoEndpoint,
    ];

    /// A stable snake_case name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnknownIndex => "unknown_index",
            Self::BadMac1 => "bad_mac1",
            Self::CookieRequired => "cookie_required",
            Self::RateLimited => "rate_limited",
            Self::HandshakeFailed => "handshake_failed",
            Self::UnknownPeer => "unknown_peer",
            Self::StaleTimestamp => "stale_timestamp",
            Self::InitiationFlood => "initiation_flood",
            Self::BadCookieReply => "bad_cookie_reply",
            Self::SessionExpired => "session_expired",
            Self::Replayed => "replayed",
            Self::TooOld => "too_old",
            Self::CounterLimit => "counter_limit",
            Self::Decrypt => "decrypt",
            Self::BadPayload => "bad_payload",
            Self::QueueFull => "queue_full",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::NoEndpoint => "no_endpoint",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

impl core::fmt::Display for DropReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Drop counters by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts([u64; DropReason::COUNT]);

impl DropCounts {
    /// Drops for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.index()]
    }
    /// All drops.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
    /// Nonzero counters.
    pub fn nonzero(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().zip(self.0).filter(|(_, n)| *n > 0).map(|(r, n)| (*r, n))
    }
    fn add(&mut self, reason: DropReason) {
        self.0[reason.index()] += 1;
    }
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
    /// Payloads waiting for the handshake.
    pub queued: usize,
    /// Drops attributed to this peer.
    pub drops: DropCounts,
}

struct PendingInitiation {
    state: HandshakeState,
    local_index: u32,
    sent_at: Instant,
}

#[derive(Default, Clone, Copy)]
struct Counters {
    handshakes: u64,
    tx_bytes: u64,
    rx_bytes: u64,
    tx_packets: u64,
    rx_packets: u64,
}

struct Peer {
    public: [u8; 32],
    mac1_key: [u8; 32],
    cookie_key: [u8; 32],
    endpoint: Option<SocketAddr>,
    initiation: Option<PendingInitiation>,
    current: Option<Session>,
    previous: Option<Session>,
    /// The session before `previous`: when both sides rekey at once, each promotes two
    /// sessions in a row, and packets still in flight on the oldest must not be lost.
    older: Option<Session>,
    /// The responder's new session, until the initiator's first data packet confirms it.
    next: Option<Session>,
    last_timestamp: Option<Tai64N>,
    last_sent_timestamp: Option<Tai64N>,
    last_initiation_at: Option<Instant>,
    jar: CookieJar,
    queue: VecDeque<Vec<u8>>,
    in_flush: bool,
    attempts_since: Option<Instant>,
    retry_at: Option<Instant>,
    keepalive_at: Option<Instant>,
    new_handshake_at: Option<Instant>,
    zero_at: Option<Instant>,
    last_sent: Option<Instant>,
    last_handshake: Option<Instant>,
    counters: Counters,
    drops: DropCounts,
}

impl Peer {
    fn new(public: [u8; 32], endpoint: Option<SocketAddr>) -> Self {
        Self {
            public,
            mac1_key: mac1_key(&public),
            cookie_key: cookie_key(&public),
            endpoint,
            initiation: None,
            current: None,
            previous: None,
            older: None,
            next: None,
            last_timestamp: None,
            last_sent_timestamp: None,
            last_initiation_at: None,
            jar: CookieJar::default(),
            queue: VecDeque::new(),
            in_flush: false,
            attempts_since: None,
            retry_at: None,
            keepalive_at: None,
            new_handshake_at: None,
            zero_at: None,
            last_sent: None,
            last_handshake: None,
            counters: Counters::default(),
            drops: DropCounts::default(),
        }
    }

    fn usable(&self, now: Instant, timers: &Timers) -> bool {
        self.current.as_ref().is_some_and(|s| sendable(s, now, timers))
    }

    fn deadline(&self, timers: &Timers, persistent: Option<Duration>) -> Option<Instant> {
        let sessions = [&self.current, &self.previous, &self.older, &self.next]
            .into_iter()
            .flatten()
            .map(|s| s.created + timers.reject_after_time);
        let persistent = match (persistent, self.current.is_some()) {
            (Some(iv), true) => self.last_sent.map(|t| t + iv),
            _ => None,
        };
        [self.retry_at, self.keepalive_at, self.new_handshake_at, self.zero_at, persistent]
            .into_iter()
            .flatten()
            .chain(sessions)
            .min()
    }
}

fn sendable(s: &Session, now: Instant, timers: &Timers) -> bool {
    now.saturating_duration_since(s.created) < timers.reject_after_time
        && s.send_counter < REJECT_AFTER_MESSAGES
}

enum Control {
    Handshake { destination: SocketAddr, peer: Option<PeerHandle>, len: usize, bytes: [u8; INITIATION_LEN] },
    Keepalive(PeerHandle),
}

/// Handshake messages in one second, to tell whether the node is under load.
#[derive(Default)]
struct LoadMeter {
    window_start: Option<Instant>,
    count: u32,
    loaded_until: Option<Instant>,
}

impl LoadMeter {
    fn record(&mut self, now: Instant, threshold: u32) -> bool {
        let second = Duration::from_secs(1);
        if self.window_start.is_none_or(|t| now.saturating_duration_since(t) >= second) {
            self.window_start = Some(now);
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        if self.count > threshold {
            self.loaded_until = Some(now + second);
        }
        self.loaded_until.is_some_and(|t| now < t)
    }
}

/// Control messages waiting to be sent at most; more are dropped (they are retried).
const MAX_CONTROL: usize = 4096;
/// A peer's initiations closer together than this are refused (50 per second).
const INITIATION_MIN_INTERVAL: Duration = Duration::from_millis(20);

/// Every tunnel of one node. See the module docs.
pub struct Tunnels {
    config: TunnelConfig,
    public: [u8; 32],
    noise: NoiseFactory,
    checker: CookieChecker,
    limiter: RateLimiter,
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
}

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
        let secret = StaticSecret::from(private_key);
        let public = PublicKey::from(&secret).to_bytes();
        Self {
            noise: NoiseFactory::new(private_key, config.psk),
            checker: CookieChecker::new(&public),
            limiter: RateLimiter::new(config.rate_limit),
            load: LoadMeter::default(),
            rng: StdRng::from_seed(seed),
            anchor: (now, unix_now),
            public,
            config,
            slots: Vec::new(),
            free_slots: Vec::new(),
            by_key: HashMap::new(),
            by_index: HashMap::new(),
            control: VecDeque::new(),
            flush: VecDeque::new(),
            events: VecDeque::new(),
            drops: DropCounts::default(),
            earliest: None,
        }
    }

    /// Our static public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public
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

    /// Removes a peer, erasing its keys; its handle becomes invalid.
    pub fn remove_peer(&mut self, h: PeerHandle) -> bool {
        let Some(peer) = slot_mut(&mut self.slots, h) else { return false };
        let public = peer.public;
        let sessions = [peer.current.take(), peer.previous.take(), peer.older.take(), peer.next.take()];
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
        slot_mut(&mut self.slots, h).map(|p| p.endpoint = Some(endpoint)).is_some()
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
            last_handshake: peer.last_handshake,
            established: peer.usable(now, &self.config.timers),
            handshake_in_progress: peer.initiation.is_some(),
            handshakes: peer.counters.handshakes,
            tx_bytes: peer.counters.tx_bytes,
            rx_bytes: peer.counters.rx_bytes,
            tx_packets: peer.counters.tx_packets,
            rx_packets: peer.counters.rx_packets,
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

    /// Sends a handshake initiation, at most one per rekey timeout unless `force`.
    fn initiate(&mut self, now: Instant, h: PeerHandle, force: bool) {
        let timers = self.config.timers;
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let jitter = Duration::from_millis(u64::from(self.rng.next_u32() % 334));
        let wall = Tai64N::from_unix(self.wall(now));
        let Some(peer) = slot_mut(&mut self.slots, h) else { return };
        if let Some(p) = &peer.initiation {
            if !force && now < p.sent_at + timers.rekey_timeout {
                return;
            }
        }
        peer.attempts_since.get_or_insert(now);
        peer.retry_at = Some(now + timers.rekey_timeout + jitter);
        let retry_at = peer.retry_at;
        let Some(destination) = peer.endpoint else {
            self.count(Some(h), DropReason::NoEndpoint);
            self.wake_at(retry_at);
            return;
        };
        let Ok(mut state) = self.noise.initiator(&peer.public, seed) else { return };
        if let Some(old) = peer.initiation.take() {
            self.by_index.remove(&old.local_index);
        }
        let local = new_index(&mut self.rng, &mut self.by_index, h);
        let ts = match peer.last_sent_timestamp {
            Some(last) if wall <= last => last.next_step(),
            _ => wall,
        };
        let mut bytes = [0u8; INITIATION_LEN];
        bytes[0] = TYPE_INITIATION;
        bytes[4..8].copy_from_slice(&local.to_le_bytes());
        if !matches!(state.write_message(&ts.0, &mut bytes[8..116]), Ok(108)) {
            self.by_index.remove(&local);
            return;
        }
        peer.jar.stamp(now, &peer.mac1_key, &mut bytes);
        peer.last_sent_timestamp = Some(ts);
        peer.initiation = Some(PendingInitiation { state, local_index: local, sent_at: now });
        peer.last_sent = Some(now);
        peer.keepalive_at = None;
        peer.counters.tx_bytes += INITIATION_LEN as u64;
        peer.counters.tx_packets += 1;
        self.push_control(Control::Handshake { destination, peer: Some(h), len: INITIATION_LEN, bytes });
        self.wake_at(retry_at);
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

    /// mac1, then under load mac2 (or a cookie reply) and the per-source bucket.
    fn admit(
        &mut self,
        now: Instant,
        src: SocketAddr,
        msg: &[u8],
        mac1_at: usize,
        sender: u32,
    ) -> Result<(), DropReason> {
        let mac2_at = mac1_at + 16;
        if !self.checker.check_mac1(&msg[..mac1_at], &msg[mac1_at..mac2_at]) {
            return Err(self.count(None, DropReason::BadMac1));
        }
        if !self.load.record(now, self.config.load_threshold) {
            return Ok(());
        }
        if !self.checker.check_mac2(now, &mut self.rng, src, &msg[..mac2_at], &msg[mac2_at..]) {
            let mut reply = [0u8; COOKIE_REPLY_LEN];
            self.checker.seal_reply(now, &mut self.rng, src, sender, &msg[mac1_at..mac2_at], &mut reply);
            let mut bytes = [0u8; INITIATION_LEN];
            bytes[..COOKIE_REPLY_LEN].copy_from_slice(&reply);
            self.push_control(Control::Handshake {
                destination: src,
                peer: None,
                len: COOKIE_REPLY_LEN,
                bytes,
            });
            return Err(self.count(None, DropReason::CookieRequired));
        }
        if !self.limiter.allow(now, src.ip()) {
            return Err(self.count(None, DropReason::RateLimited));
        }
        Ok(())
    }

    fn roam(&mut self, h: PeerHandle, src: SocketAddr) {
        if let Some(peer) = slot_mut(&mut self.slots, h) {
            if peer.endpoint != Some(src) {
                peer.endpoint = Some(src);
                self.events.push_back(TunnelEvent::EndpointChanged { peer: h, endpoint: src });
            }
        }
    }

    fn on_initiation(
        &mut self,
        now: Instant,
        src: SocketAddr,
        m: Initiation<'_>,
    ) -> Result<Received<'static>, DropReason> {
        let sender = m.sender();
        self.admit(now, src, m.bytes(), 116, sender)?;
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let Ok(mut state) = self.noise.responder(seed) else {
            return Err(self.count(None, DropReason::HandshakeFailed));
        };
        let mut ts = [0u8; 32];
        if !matches!(state.read_message(m.noise(), &mut ts), Ok(12)) {
            return Err(self.count(None, DropReason::HandshakeFailed));
        }
        let remote: Option<[u8; 32]> = state.get_remote_static().and_then(|k| k.try_into().ok());
        let Some(h) = remote.and_then(|k| self.by_key.get(&k).copied()) else {
            return Err(self.count(None, DropReason::UnknownPeer));
        };
        let mut stamp = [0u8; 12];
        stamp.copy_from_slice(&ts[..12]);
        let ts = Tai64N::from_bytes(stamp);
        let Some(peer) = slot_mut(&mut self.slots, h) else { return Err(DropReason::UnknownPeer) };
        if !ts.is_plausible() || peer.last_timestamp.is_some_and(|last| ts <= last) {
            return Err(self.count(Some(h), DropReason::StaleTimestamp));
        }
        if peer.last_initiation_at.is_some_and(|t| now.saturating_duration_since(t) < INITIATION_MIN_INTERVAL)
        {
            return Err(self.count(Some(h), DropReason::InitiationFlood));
        }
        let local = new_index(&mut self.rng, &mut self.by_index, h);
        let mut bytes = [0u8; INITIATION_LEN];
        bytes[0] = TYPE_RESPONSE;
        bytes[4..8].copy_from_slice(&local.to_le_bytes());
        bytes[8..12].copy_from_slice(&sender.to_le_bytes());
        if !matches!(state.write_message(&[], &mut bytes[12..60]), Ok(48)) {
            self.by_index.remove(&local);
            return Err(self.count(Some(h), DropReason::HandshakeFailed));
        }
        peer.jar.stamp(now, &peer.mac1_key, &mut bytes[..RESPONSE_LEN]);
        let (i2r, r2i) = state.dangerously_get_raw_split();
        let (i2r, r2i) = (Zeroizing::new(i2r), Zeroizing::new(r2i));
        let session = Session::new(local, sender, &r2i, &i2r, now, false);
        let old = peer.next.replace(session);
        peer.last_timestamp = Some(ts);
        peer.last_initiation_at = Some(now);
        peer.last_sent = Some(now);
        peer.keepalive_at = None;
        peer.counters.tx_bytes += RESPONSE_LEN as u64;
        peer.counters.tx_packets += 1;
        peer.counters.rx_bytes += INITIATION_LEN as u64;
        peer.counters.rx_packets += 1;
        let deadline = peer.deadline(&self.config.timers, self.config.persistent_keepalive);
        retire(&mut self.by_index, old);
        self.roam(h, src);
        self.push_control(Control::Handshake { destination: src, peer: Some(h), len: RESPONSE_LEN, bytes });
        self.wake_at(deadline);
        Ok(Received::Handshake { peer: h })
    }

    fn on_response(
        &mut self,
        now: Instant,
        src: SocketAddr,
        m: Response<'_>,
    ) -> Result<Received<'static>, DropReason> {
        let (sender, receiver) = (m.sender(), m.receiver());
        self.admit(now, src, m.bytes(), 60, sender)?;
        let Some(&h) = self.by_index.get(&receiver) else {
            return Err(self.count(None, DropReason::UnknownIndex));
        };
        let timers = self.config.timers;
        let Some(peer) = slot_mut(&mut self.slots, h) else { return Err(DropReason::UnknownIndex) };
        let Some(pending) = peer.initiation.as_mut().filter(|p| p.local_index == receiver) else {
            return Err(self.count(Some(h), DropReason::UnknownIndex));
        };
        let mut empty = [0u8; 16];
        if !matches!(pending.state.read_message(m.noise(), &mut empty), Ok(0)) {
            return Err(self.count(Some(h), DropReason::HandshakeFailed));
        }
        let (i2r, r2i) = pending.state.dangerously_get_raw_split();
        let (i2r, r2i) = (Zeroizing::new(i2r), Zeroizing::new(r2i));
        peer.initiation = None;
        let session = Session::new(receiver, sender, &i2r, &r2i, now, true);
        let older = peer.older.take();
        peer.older = peer.previous.take();
        peer.previous = peer.current.replace(session);
        peer.attempts_since = None;
        peer.retry_at = None;
        peer.last_handshake = Some(now);
        peer.zero_at = Some(now + timers.reject_after_time * 3);
        peer.counters.handshakes += 1;
        peer.counters.rx_bytes += RESPONSE_LEN as u64;
        peer.counters.rx_packets += 1;
        peer.new_handshake_at = None;
        let has_queue = !peer.queue.is_empty();
        if has_queue && !peer.in_flush {
            peer.in_flush = true;
            self.flush.push_back(h);
        }
        let deadline = peer.deadline(&timers, self.config.persistent_keepalive);
        retire(&mut self.by_index, older);
        if !has_queue {
            // Confirms the session to the responder, which cannot send before.
            self.push_control(Control::Keepalive(h));
        }
        self.roam(h, src);
        self.events.push_back(TunnelEvent::HandshakeCompleted { peer: h, initiator: true });
        self.wake_at(deadline);
        Ok(Received::Handshake { peer: h })
    }

    fn on_cookie_reply(&mut self, now: Instant, m: CookieReply<'_>) -> Result<Received<'static>, DropReason> {
        let Some(&h) = self.by_index.get(&m.receiver()) else {
            return Err(self.count(None, DropReason::UnknownIndex));
        };
        let Some(peer) = slot_mut(&mut self.slots, h) else { return Err(DropReason::UnknownIndex) };
        if !peer.jar.open_reply(now, &peer.cookie_key, m) {
            return Err(self.count(Some(h), DropReason::BadCookieReply));
        }
        Ok(Received::Handshake { peer: h })
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
        let timers = self.config.timers;
        let persistent = self.config.persistent_keepalive;
        let len = datagram.len() as u64;
        let Some(peer) = slot_mut(&mut self.slots, h) else { return Err(DropReason::UnknownIndex) };
        let (session, is_next) = if peer.current.as_ref().is_some_and(|s| s.local_index == receiver) {
            (peer.current.as_mut(), false)
        } else if peer.previous.as_ref().is_some_and(|s| s.local_index == receiver) {
            (peer.previous.as_mut(), false)
        } else if peer.older.as_ref().is_some_and(|s| s.local_index == receiver) {
            (peer.older.as_mut(), false)
        } else if peer.next.as_ref().is_some_and(|s| s.local_index == receiver) {
            (peer.next.as_mut(), true)
        } else {
            (None, false)
        };
        let Some(session) = session else { return Err(self.count(Some(h), DropReason::UnknownIndex)) };
        if now.saturating_duration_since(session.created) >= timers.reject_after_time {
            return Err(self.count(Some(h), DropReason::SessionExpired));
        }
        let plain = match session.open(counter, &mut datagram[TRANSPORT_HEADER_LEN..]) {
            Ok(p) => p,
            Err(reason) => return Err(self.count(Some(h), reason)),
        };
        let mut completed = false;
        let mut older = None;
        if is_next {
            older = peer.older.take();
            peer.older = peer.previous.take();
            peer.previous = peer.current.take();
            peer.current = peer.next.take();
            peer.last_handshake = Some(now);
            peer.zero_at = Some(now + timers.reject_after_time * 3);
            peer.counters.handshakes += 1;
            if !peer.queue.is_empty() && !peer.in_flush {
                peer.in_flush = true;
                self.flush.push_back(h);
            }
            completed = true;
        }
        peer.counters.rx_bytes += len;
        peer.counters.rx_packets += 1;
        peer.new_handshake_at = None;
        let payload = classify(plain);
        if !matches!(payload, Ok(Payload::Keepalive)) && peer.keepalive_at.is_none() {
            peer.keepalive_at = Some(now + timers.keepalive_timeout);
        }
        let renew = peer.initiation.is_none()
            && peer.current.as_ref().is_some_and(|s| {
                s.initiator
                    && now.saturating_duration_since(s.created)
                        >= timers
                            .reject_after_time
                            .saturating_sub(timers.keepalive_timeout + timers.rekey_timeout)
            });
        let deadline = peer.deadline(&timers, persistent);
        retire(&mut self.by_index, older);
        if completed {
            self.events.push_back(TunnelEvent::HandshakeCompleted { peer: h, initiator: false });
        }
        self.roam(h, src);
        self.wake_at(deadline);
        if renew {
            self.initiate(now, h, false);
        }
        match payload {
            Ok(payload) => Ok(Received::Data { peer: h, payload }),
            Err(_) => Err(self.count(Some(h), DropReason::BadPayload)),
        }
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
        let cap = self.config.queue_per_peer;
        let Some(peer) = slot_mut(&mut self.slots, h) else { return Err(SendError::UnknownPeer) };
        let Some(destination) = peer.endpoint else {
            self.count(Some(h), DropReason::NoEndpoint);
            return Err(SendError::NoEndpoint);
        };
        if peer.usable(now, &timers) {
            return self.seal_for(now, h, parts, out).map(Some);
        }
        let _ = destination;
        if peer.queue.len() >= cap {
            self.count(Some(h), DropReason::QueueFull);
            return Err(SendError::QueueFull);
        }
        let total = parts.iter().map(|p| p.len()).sum();
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
        let Some(session) = peer.current.as_mut().filter(|s| sendable(s, now, &timers)) else {
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
        peer.keepalive_at = None;
        peer.counters.tx_bytes += len as u64;
        peer.counters.tx_packets += 1;
        let data = parts.iter().any(|p| !p.is_empty());
        if data && peer.new_handshake_at.is_none() {
            peer.new_handshake_at = Some(now + timers.keepalive_timeout + timers.rekey_timeout);
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

    /// Runs the timers: handshake retries and give-ups, keepalives, rekeys for silent
    /// peers, session expiry and key erasure.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.earliest.is_some_and(|t| now < t) {
            return;
        }
        let timers = self.config.timers;
        let persistent = self.config.persistent_keepalive;
        let mut initiate = Vec::new();
        let mut keepalive = Vec::new();
        let mut earliest: Option<Instant> = None;
        for (slot, (generation, entry)) in self.slots.iter_mut().enumerate() {
            let Some(peer) = entry else { continue };
            let h = PeerHandle { slot: slot as u32, generation: *generation };
            let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
            if due(peer.retry_at) {
                peer.retry_at = None;
                let gave_up = peer
                    .attempts_since
                    .is_some_and(|s| now.saturating_duration_since(s) >= timers.rekey_attempt_time);
                if gave_up {
                    if let Some(p) = peer.initiation.take() {
                        self.by_index.remove(&p.local_index);
                    }
                    peer.attempts_since = None;
                    for _ in peer.queue.drain(..) {
                        peer.drops.add(DropReason::HandshakeTimeout);
                        self.drops.add(DropReason::HandshakeTimeout);
                    }
                    self.events.push_back(TunnelEvent::HandshakeTimedOut { peer: h });
                } else if peer.initiation.is_some() || !peer.queue.is_empty() || peer.endpoint.is_none() {
                    initiate.push(h);
                } else {
                    peer.attempts_since = None;
                }
            }
            if due(peer.keepalive_at) {
                peer.keepalive_at = None;
                keepalive.push(h);
            }
            if due(peer.new_handshake_at) {
                peer.new_handshake_at = None;
                initiate.push(h);
            }
            if let (Some(iv), true) = (persistent, peer.usable(now, &timers)) {
                if peer.last_sent.is_none_or(|t| now.saturating_duration_since(t) >= iv) {
                    keepalive.push(h);
                }
            }
            if due(peer.zero_at) {
                peer.zero_at = None;
                for s in [peer.current.take(), peer.previous.take(), peer.older.take(), peer.next.take()] {
                    retire(&mut self.by_index, s);
                }
                if let Some(p) = peer.initiation.take() {
                    self.by_index.remove(&p.local_index);
                }
                peer.retry_at = None;
                peer.attempts_since = None;
                peer.keepalive_at = None;
                peer.new_handshake_at = None;
                for _ in peer.queue.drain(..) {
                    peer.drops.add(DropReason::HandshakeTimeout);
                    self.drops.add(DropReason::HandshakeTimeout);
                }
                self.events.push_back(TunnelEvent::KeysZeroed { peer: h });
            }
            for s in [&mut peer.current, &mut peer.previous, &mut peer.older, &mut peer.next] {
                if s.as_ref()
                    .is_some_and(|s| now.saturating_duration_since(s.created) >= timers.reject_after_time)
                {
                    retire(&mut self.by_index, s.take());
                }
            }
            if let Some(t) = peer.deadline(&timers, persistent) {
                earliest = Some(earliest.map_or(t, |e| e.min(t)));
            }
        }
        self.earliest = earliest;
        for h in keepalive {
            self.push_control(Control::Keepalive(h));
        }
        for h in initiate {
            self.initiate(now, h, false);
        }
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
