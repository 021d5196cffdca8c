//! One remote peer's state inside [`super::Tunnels`]: its [`Sessions`], its pending
//! initiation, cookie, queue, [`TimerTable`] and counters.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use snow::HandshakeState;

use super::super::cookie::CookieJar;
use super::super::mac::{cookie_key, mac1_key};
use super::super::replay::REJECT_AFTER_MESSAGES;
use super::super::session::Session;
use super::super::tai64n::Tai64N;
use super::super::wire::INITIATION_LEN;
use super::sessions::Sessions;
use super::timer::TimerTable;
use super::{DropCounts, PeerHandle, Timers};

pub(super) struct PendingInitiation {
    pub(super) state: HandshakeState,
    pub(super) local_index: u32,
    pub(super) sent_at: Instant,
}

#[derive(Default, Clone, Copy)]
pub(super) struct Counters {
    pub(super) handshakes: u64,
    pub(super) tx_bytes: u64,
    pub(super) rx_bytes: u64,
    pub(super) tx_packets: u64,
    pub(super) rx_packets: u64,
    pub(super) rx_settled: u64,
    pub(super) rx_lost: u64,
}

pub(super) struct Peer {
    pub(super) public: [u8; 32],
    pub(super) mac1_key: [u8; 32],
    pub(super) cookie_key: [u8; 32],
    pub(super) endpoint: Option<SocketAddr>,
    pub(super) initiation: Option<PendingInitiation>,
    pub(super) sessions: Sessions,
    pub(super) last_timestamp: Option<Tai64N>,
    pub(super) last_sent_timestamp: Option<Tai64N>,
    pub(super) last_initiation_at: Option<Instant>,
    pub(super) jar: CookieJar,
    pub(super) queue: VecDeque<Vec<u8>>,
    pub(super) in_flush: bool,
    pub(super) attempts_since: Option<Instant>,
    pub(super) deadlines: TimerTable,
    pub(super) last_sent: Option<Instant>,
    pub(super) last_handshake: Option<Instant>,
    pub(super) counters: Counters,
    pub(super) drops: DropCounts,
}

impl Peer {
    pub(super) fn new(public: [u8; 32], endpoint: Option<SocketAddr>) -> Self {
        Self {
            public,
            mac1_key: mac1_key(&public),
            cookie_key: cookie_key(&public),
            endpoint,
            initiation: None,
            sessions: Sessions::default(),
            last_timestamp: None,
            last_sent_timestamp: None,
            last_initiation_at: None,
            jar: CookieJar::default(),
            queue: VecDeque::new(),
            in_flush: false,
            attempts_since: None,
            deadlines: TimerTable::default(),
            last_sent: None,
            last_handshake: None,
            counters: Counters::default(),
            drops: DropCounts::default(),
        }
    }

    pub(super) fn usable(&self, now: Instant, timers: &Timers) -> bool {
        self.sessions.current().is_some_and(|s| sendable(s, now, timers))
    }

    pub(super) fn deadline(&self, timers: &Timers, persistent: Option<Duration>) -> Option<Instant> {
        let sessions = self.sessions.created().map(|t| t + timers.reject_after_time);
        let persistent = match (persistent, self.sessions.current().is_some()) {
            (Some(iv), true) => self.last_sent.map(|t| t + iv),
            _ => None,
        };
        self.deadlines.next().into_iter().chain(persistent).chain(sessions).min()
    }
}

pub(super) fn sendable(s: &Session, now: Instant, timers: &Timers) -> bool {
    now.saturating_duration_since(s.created) < timers.reject_after_time
        && s.send_counter < REJECT_AFTER_MESSAGES
}

pub(super) enum Control {
    Handshake { destination: SocketAddr, peer: Option<PeerHandle>, len: usize, bytes: [u8; INITIATION_LEN] },
    Keepalive(PeerHandle),
}
