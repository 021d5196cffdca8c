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
use super::super::wire::{INITIATION_LEN, RESPONSE_LEN, TRANSPORT_HEADER_LEN};
use super::sessions::{Sessions, Slot};
use super::timer::{Timer, TimerTable};
use super::DropReason;
use super::{DropCounts, PeerHandle, Timers};

pub(super) struct PendingInitiation {
    pub(super) state: HandshakeState,
    pub(super) local_index: u32,
    pub(super) sent_at: Instant,
}

/// The last response this node sent as responder, kept until a session confirms it, so
/// that a cookie reply to it (the initiator is under load) brings it again at once with
/// mac2, instead of the initiator's retry 5 s later.
#[derive(Clone)]
pub(super) struct SentResponse {
    pub(super) local_index: u32,
    pub(super) destination: SocketAddr,
    pub(super) sent_at: Instant,
    pub(super) bytes: [u8; RESPONSE_LEN],
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
    /// When an authenticated packet last came from `endpoint`.
    pub(super) endpoint_seen: Option<Instant>,
    pub(super) initiation: Option<PendingInitiation>,
    pub(super) response: Option<Box<SentResponse>>,
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
    /// This peer's own pre-shared key, instead of the node's (a stock WireGuard peer's).
    pub(super) psk: Option<zeroize::Zeroizing<[u8; 32]>>,
}

impl Peer {
    /// A copy, unless a handshake is under way (its Noise state cannot be copied).
    pub(super) fn try_clone(&self) -> Option<Peer> {
        if self.initiation.is_some() {
            return None;
        }
        Some(Peer {
            public: self.public,
            mac1_key: self.mac1_key,
            cookie_key: self.cookie_key,
            endpoint: self.endpoint,
            endpoint_seen: self.endpoint_seen,
            initiation: None,
            response: self.response.clone(),
            sessions: self.sessions.clone(),
            last_timestamp: self.last_timestamp,
            last_sent_timestamp: self.last_sent_timestamp,
            last_initiation_at: self.last_initiation_at,
            jar: self.jar.clone(),
            queue: self.queue.clone(),
            in_flush: self.in_flush,
            attempts_since: self.attempts_since,
            deadlines: self.deadlines,
            last_sent: self.last_sent,
            last_handshake: self.last_handshake,
            counters: self.counters,
            drops: self.drops,
            psk: self.psk.clone(),
        })
    }

    pub(super) fn new(public: [u8; 32], endpoint: Option<SocketAddr>) -> Self {
        Self {
            public,
            mac1_key: mac1_key(&public),
            cookie_key: cookie_key(&public),
            endpoint,
            endpoint_seen: None,
            initiation: None,
            response: None,
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
            psk: None,
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

impl Peer {
    /// Opens a transport `datagram` on the session in `slot`: checks the session's age,
    /// decrypts in place, counts the datagram and the counters it settled. The
    /// plaintext, or why the datagram is dropped.
    pub(super) fn open<'a>(
        &mut self,
        now: Instant,
        slot: Option<Slot>,
        counter: u64,
        datagram: &'a mut [u8],
        timers: &Timers,
    ) -> Result<&'a mut [u8], DropReason> {
        let len = datagram.len() as u64;
        let session = slot.and_then(|slot| self.sessions.get_mut(slot)).ok_or(DropReason::UnknownIndex)?;
        if now.saturating_duration_since(session.created) >= timers.reject_after_time {
            return Err(DropReason::SessionExpired);
        }
        let (settled, lost) = (session.settled, session.lost);
        let plain = session.open(counter, &mut datagram[TRANSPORT_HEADER_LEN..])?;
        // Passive loss: counters settle once they are REORDER_MARGIN behind the
        // highest, as received or lost; a late packet before that fills its gap.
        self.counters.rx_settled += session.settled - settled;
        self.counters.rx_lost += session.lost - lost;
        self.counters.rx_bytes += len;
        self.counters.rx_packets += 1;
        Ok(plain)
    }

    /// The responder's `next` session is confirmed (the initiator's first data packet
    /// came on it): it becomes current. The session that fell off the end, and whether
    /// the payloads that waited must be flushed now.
    pub(super) fn confirm_next(&mut self, now: Instant, timers: &Timers) -> (Option<Session>, bool) {
        let dropped = self.sessions.confirm_next();
        self.last_handshake = Some(now);
        self.deadlines.set(Timer::Zero, now + timers.reject_after_time * 3);
        self.counters.handshakes += 1;
        let flush = !self.queue.is_empty() && !self.in_flush;
        self.in_flush |= flush;
        (dropped, flush)
    }

    /// Timers after an authenticated packet (`data`: not a keepalive). The next
    /// deadline, and whether the initiator's session nears its end so that a new
    /// handshake is due.
    pub(super) fn on_received(
        &mut self,
        now: Instant,
        data: bool,
        timers: &Timers,
        persistent: Option<Duration>,
    ) -> (Option<Instant>, bool) {
        self.deadlines.stop(Timer::NewHandshake);
        if data && !self.deadlines.is_set(Timer::Keepalive) {
            self.deadlines.set(Timer::Keepalive, now + timers.keepalive_timeout);
        }
        let renew_after =
            timers.reject_after_time.saturating_sub(timers.keepalive_timeout + timers.rekey_timeout);
        let renew = self.initiation.is_none()
            && self
                .sessions
                .current()
                .is_some_and(|s| s.initiator && now.saturating_duration_since(s.created) >= renew_after);
        (self.deadline(timers, persistent), renew)
    }
}

pub(super) fn sendable(s: &Session, now: Instant, timers: &Timers) -> bool {
    now.saturating_duration_since(s.created) < timers.reject_after_time
        && s.send_counter < REJECT_AFTER_MESSAGES
}

#[derive(Clone)]
pub(super) enum Control {
    Handshake { destination: SocketAddr, peer: Option<PeerHandle>, len: usize, bytes: [u8; INITIATION_LEN] },
    Keepalive(PeerHandle),
}
