//! The timer half of [`super::Tunnels`] (whitepaper §6): handshake retries and
//! give-ups, keepalives, new handshakes for silent peers, session expiry, key erasure.
//! Each peer's timers are one [`TimerTable`] (quinn-proto's shape: an enum of timers and
//! an array of deadlines; the next deadline is their minimum).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::peer::{Control, Peer};
use super::{retire, DropCounts, DropReason, PeerHandle, Timers, TunnelEvent, Tunnels};

/// One peer's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// Retry the handshake (rekey timeout plus jitter), or give up after the rekey
    /// attempt time.
    Retry = 0,
    /// Send a keepalive: data came in and nothing went out since.
    Keepalive = 1,
    /// Start a new handshake: data went out and nothing came back.
    NewHandshake = 2,
    /// Erase the keys: no new session for three reject times.
    Zero = 3,
}

impl Timer {
    /// Every timer, in the order they are handled when due together.
    const VALUES: [Timer; 4] = [Timer::Retry, Timer::Keepalive, Timer::NewHandshake, Timer::Zero];
}

/// A deadline per [`Timer`].
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct TimerTable([Option<Instant>; 4]);

impl TimerTable {
    pub(super) fn set(&mut self, timer: Timer, at: Instant) {
        self.0[timer as usize] = Some(at);
    }

    pub(super) fn get(&self, timer: Timer) -> Option<Instant> {
        self.0[timer as usize]
    }

    pub(super) fn is_set(&self, timer: Timer) -> bool {
        self.get(timer).is_some()
    }

    pub(super) fn stop(&mut self, timer: Timer) {
        self.0[timer as usize] = None;
    }

    /// Stops `timer` and says so if it was due at `now`.
    fn expire(&mut self, timer: Timer, now: Instant) -> bool {
        let due = self.get(timer).is_some_and(|t| t <= now);
        if due {
            self.stop(timer);
        }
        due
    }

    /// The earliest deadline.
    pub(super) fn next(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
    }
}

/// What a peer's due timers ask of the tunnels once every peer has been looked at.
#[derive(Debug, Default, Clone, Copy)]
struct Due {
    initiations: u8,
    keepalives: u8,
}

/// The parts of [`Tunnels`] a peer's timers touch, besides the peer.
struct TimeoutCx<'a> {
    now: Instant,
    timers: Timers,
    by_index: &'a mut HashMap<u32, PeerHandle>,
    drops: &'a mut DropCounts,
    events: &'a mut VecDeque<TunnelEvent>,
}

impl TimeoutCx<'_> {
    /// Drops what waited for a handshake that will not come.
    fn drop_queue(&mut self, peer: &mut Peer) {
        for _ in peer.queue.drain(..) {
            peer.drops.add(DropReason::HandshakeTimeout);
            self.drops.add(DropReason::HandshakeTimeout);
        }
    }

    fn on_timer(&mut self, h: PeerHandle, peer: &mut Peer, timer: Timer, due: &mut Due) {
        match timer {
            Timer::Retry => self.on_retry(h, peer, due),
            Timer::Keepalive => due.keepalives += 1,
            Timer::NewHandshake => due.initiations += 1,
            Timer::Zero => self.on_zero(h, peer),
        }
    }

    /// Retries the handshake, or gives up once the rekey attempt time has passed.
    fn on_retry(&mut self, h: PeerHandle, peer: &mut Peer, due: &mut Due) {
        let gave_up = peer
            .attempts_since
            .is_some_and(|s| self.now.saturating_duration_since(s) >= self.timers.rekey_attempt_time);
        if gave_up {
            if let Some(p) = peer.initiation.take() {
                self.by_index.remove(&p.local_index);
            }
            peer.attempts_since = None;
            self.drop_queue(peer);
            self.events.push_back(TunnelEvent::HandshakeTimedOut { peer: h });
        } else if peer.initiation.is_some() || !peer.queue.is_empty() || peer.endpoint.is_none() {
            due.initiations += 1;
        } else {
            peer.attempts_since = None;
        }
    }

    /// Erases every key of the peer.
    fn on_zero(&mut self, h: PeerHandle, peer: &mut Peer) {
        for s in peer.sessions.take_all() {
            retire(self.by_index, s);
        }
        if let Some(p) = peer.initiation.take() {
            self.by_index.remove(&p.local_index);
        }
        peer.deadlines = TimerTable::default();
        peer.attempts_since = None;
        self.drop_queue(peer);
        self.events.push_back(TunnelEvent::KeysZeroed { peer: h });
    }
}

/// Whether a persistent keepalive is due: a usable session and nothing sent for `every`.
fn persistent_due(peer: &Peer, now: Instant, timers: &Timers, every: Option<Duration>) -> bool {
    every.is_some_and(|iv| {
        peer.usable(now, timers) && peer.last_sent.is_none_or(|t| now.saturating_duration_since(t) >= iv)
    })
}

impl Tunnels {
    /// Runs the timers: handshake retries and give-ups, keepalives, rekeys for silent
    /// peers, session expiry and key erasure.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.earliest.is_some_and(|t| now < t) {
            return;
        }
        let persistent = self.config.persistent_keepalive;
        let mut cx = TimeoutCx {
            now,
            timers: self.config.timers,
            by_index: &mut self.by_index,
            drops: &mut self.drops,
            events: &mut self.events,
        };
        let (mut actions, mut earliest) = (Vec::new(), None::<Instant>);
        for (slot, (generation, entry)) in self.slots.iter_mut().enumerate() {
            let Some(peer) = entry else { continue };
            let h = PeerHandle { slot: slot as u32, generation: *generation };
            let mut due = Due::default();
            if persistent_due(peer, now, &cx.timers, persistent) {
                due.keepalives += 1;
            }
            for timer in Timer::VALUES {
                if peer.deadlines.expire(timer, now) {
                    cx.on_timer(h, peer, timer, &mut due);
                }
            }
            for s in peer.sessions.take_expired(now, cx.timers.reject_after_time) {
                retire(cx.by_index, s);
            }
            earliest = earliest.into_iter().chain(peer.deadline(&cx.timers, persistent)).min();
            actions.push((h, due));
        }
        self.earliest = earliest;
        for (h, due) in &actions {
            for _ in 0..due.keepalives {
                self.push_control(Control::Keepalive(*h));
            }
        }
        for (h, due) in actions {
            for _ in 0..due.initiations {
                self.initiate(now, h, false);
            }
        }
    }
}
