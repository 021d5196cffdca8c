//! The timer half of [`super::Tunnels`] (whitepaper §6): handshake retries and
//! give-ups, keepalives, new handshakes for silent peers, session expiry, key erasure.

use std::time::Instant;

use super::peer::Control;
use super::{retire, DropReason, PeerHandle, TunnelEvent, Tunnels};

impl Tunnels {
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
}
