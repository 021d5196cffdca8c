//! The timer half of [`super::Tunnels`] (whitepaper §6): handshake retries and
//! give-ups, keepalives, new handshakes for silent peers, session expiry, key erasure.
//! Each peer's timers are one [`TimerTable`]; [`Tunnels::handle_timeout`] calls one method
//! per due [`Timer`].

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::peer::{Control, Peer};
use super::timer::{Timer, TimerTable};
use super::{retire, DropCounts, DropReason, PeerHandle, Timers, TunnelEvent, Tunnels};

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
