//! The handshake half of [`super::Tunnels`]: initiations sent, and initiations,
//! responses and cookie replies received. mac1 is checked before any Diffie-Hellman
//! work; under load, mac2 (or a cookie reply) and the per-source bucket come next.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng;
use snow::HandshakeState;
use zeroize::Zeroizing;

use super::super::session::Session;
use super::super::tai64n::Tai64N;
use super::super::wire::{
    CookieReply, Initiation, Response, COOKIE_REPLY_LEN, INITIATION_LEN, RESPONSE_LEN, TYPE_INITIATION,
    TYPE_RESPONSE,
};
use super::peer::{Control, PendingInitiation, SentResponse};
use super::timer::Timer;
use super::{new_index, retire, slot_mut, DropReason, PeerHandle, Received, TunnelEvent, Tunnels};

/// Handshake messages in one second, to tell whether the node is under load.
#[derive(Default, Clone)]
pub(super) struct LoadMeter {
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

/// A peer's initiations closer together than this are refused (50 per second).
const INITIATION_MIN_INTERVAL: Duration = Duration::from_millis(20);

impl Tunnels {
    /// Puts the node under load for the next second, whatever the handshake rate: the
    /// caller's handshake queue is filling up (WireGuard's "queue over half full").
    pub fn mark_loaded(&mut self, now: Instant) {
        self.load.loaded_until = Some(now + Duration::from_secs(1));
    }

    /// Sends a handshake initiation, at most one per rekey timeout unless `force`.
    pub(super) fn initiate(&mut self, now: Instant, h: PeerHandle, force: bool) {
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
        peer.deadlines.set(Timer::Retry, now + timers.rekey_timeout + jitter);
        let retry_at = peer.deadlines.get(Timer::Retry);
        let Some(destination) = peer.endpoint else {
            self.count(Some(h), DropReason::NoEndpoint);
            self.wake_at(retry_at);
            return;
        };
        let Ok(mut state) = self.noise.initiator(&peer.public, seed, peer.psk.as_deref()) else { return };
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
        peer.deadlines.stop(Timer::Keepalive);
        peer.counters.tx_bytes += INITIATION_LEN as u64;
        peer.counters.tx_packets += 1;
        self.push_control(Control::Handshake { destination, peer: Some(h), len: INITIATION_LEN, bytes });
        self.wake_at(retry_at);
    }

    /// mac1, then under load mac2 (or a cookie reply) and the per-source bucket.
    pub(super) fn admit(
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
            let all = std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
            if !self.cookie_per_source.allow(now, src.ip()) || !self.cookie_total.allow(now, all) {
                return Err(self.count(None, DropReason::CookieCapped));
            }
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

    /// An authenticated packet came from `src`: the peer's endpoint moves there (unless
    /// the datagram is being handled without roaming), and is marked seen.
    pub(super) fn roam(&mut self, now: Instant, h: PeerHandle, src: SocketAddr) {
        let roaming = self.roaming;
        if let Some(peer) = slot_mut(&mut self.slots, h) {
            if peer.endpoint == Some(src) {
                peer.endpoint_seen = Some(now);
            } else if roaming {
                peer.endpoint = Some(src);
                peer.endpoint_seen = Some(now);
                self.events.push_back(TunnelEvent::EndpointChanged { peer: h, endpoint: src });
            }
        }
    }

    /// Admits an initiation and reads it: the responder's state, the known peer it comes
    /// from, its timestamp (newer than the last, and not part of a flood).
    fn read_initiation(
        &mut self,
        now: Instant,
        src: SocketAddr,
        m: &Initiation<'_>,
    ) -> Result<(HandshakeState, PeerHandle, Tai64N), DropReason> {
        self.admit(now, src, m.bytes(), 116, m.sender())?;
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
            if let Some(key) = remote {
                // Authenticated (the timestamp decrypted under the sender's static key):
                // kept briefly in case its record is on its way.
                self.keep_pending(now, key, src, m.bytes());
            }
            return Err(self.count(None, DropReason::UnknownPeer));
        };
        let mut stamp = [0u8; 12];
        stamp.copy_from_slice(&ts[..12]);
        let ts = Tai64N::from_bytes(stamp);
        let Some(peer) = slot_mut(&mut self.slots, h) else { return Err(DropReason::UnknownPeer) };
        if let Some(psk) = &peer.psk {
            // IKpsk2 mixes the key in only with the response, which is still to write.
            if state.set_psk(2, &psk[..]).is_err() {
                return Err(self.count(Some(h), DropReason::HandshakeFailed));
            }
        }
        if !ts.is_plausible() || peer.last_timestamp.is_some_and(|last| ts <= last) {
            return Err(self.count(Some(h), DropReason::StaleTimestamp));
        }
        if peer.last_initiation_at.is_some_and(|t| now.saturating_duration_since(t) < INITIATION_MIN_INTERVAL)
        {
            return Err(self.count(Some(h), DropReason::InitiationFlood));
        }
        Ok((state, h, ts))
    }

    pub(super) fn on_initiation(
        &mut self,
        now: Instant,
        src: SocketAddr,
        m: Initiation<'_>,
    ) -> Result<Received<'static>, DropReason> {
        let sender = m.sender();
        let (mut state, h, ts) = self.read_initiation(now, src, &m)?;
        let local = new_index(&mut self.rng, &mut self.by_index, h);
        let mut bytes = [0u8; INITIATION_LEN];
        bytes[0] = TYPE_RESPONSE;
        bytes[4..8].copy_from_slice(&local.to_le_bytes());
        bytes[8..12].copy_from_slice(&sender.to_le_bytes());
        if !matches!(state.write_message(&[], &mut bytes[12..60]), Ok(48)) {
            self.by_index.remove(&local);
            return Err(self.count(Some(h), DropReason::HandshakeFailed));
        }
        let Some(peer) = slot_mut(&mut self.slots, h) else { return Err(DropReason::UnknownPeer) };
        peer.jar.stamp(now, &peer.mac1_key, &mut bytes[..RESPONSE_LEN]);
        let mut kept = [0u8; RESPONSE_LEN];
        kept.copy_from_slice(&bytes[..RESPONSE_LEN]);
        peer.response =
            Some(Box::new(SentResponse { local_index: local, destination: src, sent_at: now, bytes: kept }));
        let (i2r, r2i) = state.dangerously_get_raw_split();
        let (i2r, r2i) = (Zeroizing::new(i2r), Zeroizing::new(r2i));
        let session = Session::new(local, sender, &r2i, &i2r, now, false);
        let old = peer.sessions.set_next(session);
        peer.last_timestamp = Some(ts);
        peer.last_initiation_at = Some(now);
        peer.last_sent = Some(now);
        peer.deadlines.stop(Timer::Keepalive);
        peer.counters.tx_bytes += RESPONSE_LEN as u64;
        peer.counters.tx_packets += 1;
        peer.counters.rx_bytes += INITIATION_LEN as u64;
        peer.counters.rx_packets += 1;
        let deadline = peer.deadline(&self.config.timers, self.config.persistent_keepalive);
        retire(&mut self.by_index, old);
        self.roam(now, h, src);
        self.push_control(Control::Handshake { destination: src, peer: Some(h), len: RESPONSE_LEN, bytes });
        self.wake_at(deadline);
        Ok(Received::Handshake { peer: h })
    }

    pub(super) fn on_response(
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
        let older = peer.sessions.install(session);
        peer.attempts_since = None;
        peer.deadlines.stop(Timer::Retry);
        peer.last_handshake = Some(now);
        peer.deadlines.set(Timer::Zero, now + timers.reject_after_time * 3);
        peer.counters.handshakes += 1;
        peer.counters.rx_bytes += RESPONSE_LEN as u64;
        peer.counters.rx_packets += 1;
        peer.deadlines.stop(Timer::NewHandshake);
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
        self.roam(now, h, src);
        self.events.push_back(TunnelEvent::HandshakeCompleted { peer: h, initiator: true });
        self.wake_at(deadline);
        Ok(Received::Handshake { peer: h })
    }

    pub(super) fn on_cookie_reply(
        &mut self,
        now: Instant,
        m: CookieReply<'_>,
    ) -> Result<Received<'static>, DropReason> {
        let Some(&h) = self.by_index.get(&m.receiver()) else {
            return Err(self.count(None, DropReason::UnknownIndex));
        };
        let Some(peer) = slot_mut(&mut self.slots, h) else { return Err(DropReason::UnknownIndex) };
        if !peer.jar.open_reply(now, &peer.cookie_key, m) {
            return Err(self.count(Some(h), DropReason::BadCookieReply));
        }
        // The responder is under load and refused our initiation for want of mac2: retry
        // at once with it, rather than at the 5 s retransmission (one retry per valid
        // reply, which only the responder can make for our last initiation).
        if peer.initiation.as_ref().is_some_and(|p| p.local_index == m.receiver()) {
            self.initiate(now, h, true);
            return Ok(Received::Handshake { peer: h });
        }
        // The initiator is under load and refused our response for want of mac2: send it
        // again with mac2, once, while its initiation can still be waiting for it.
        let fresh = |r: &SentResponse| {
            r.local_index == m.receiver() && now < r.sent_at + self.config.timers.rekey_timeout
        };
        if let Some(mut r) = peer.response.take().filter(|r| fresh(r)) {
            peer.jar.stamp(now, &peer.mac1_key, &mut r.bytes);
            let mut bytes = [0u8; INITIATION_LEN];
            bytes[..RESPONSE_LEN].copy_from_slice(&r.bytes);
            peer.counters.tx_bytes += RESPONSE_LEN as u64;
            peer.counters.tx_packets += 1;
            peer.last_sent = Some(now);
            self.push_control(Control::Handshake {
                destination: r.destination,
                peer: Some(h),
                len: RESPONSE_LEN,
                bytes,
            });
        }
        Ok(Received::Handshake { peer: h })
    }
}
