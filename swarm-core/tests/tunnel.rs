//! Two `Tunnels` on a virtual network and virtual time: handshakes, data, rekeys without
//! loss, the timers, and hostile datagrams.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // tests own the clock

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use swarm_core::tunnel::{
    DropReason, FrameKind, Payload, PeerHandle, Received, SendError, Timers, TunnelConfig, TunnelEvent,
    Tunnels,
};
use x25519_dalek::{PublicKey, StaticSecret};

const UNIX: Duration = Duration::from_secs(1_800_000_000);

fn public(private: [u8; 32]) -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(private)).to_bytes()
}

struct Side {
    t: Tunnels,
    addr: SocketAddr,
    peer: PeerHandle,
    got: Vec<Vec<u8>>,
    events: Vec<TunnelEvent>,
}

/// Datagrams in flight: (deliver at, to side 0 or 1, from, bytes).
struct Net {
    now: Instant,
    s: [Side; 2],
    wire: VecDeque<(Instant, usize, SocketAddr, Vec<u8>)>,
    latency: Duration,
    /// When false, every datagram on the wire is lost.
    up: bool,
}

fn pair_with(config: TunnelConfig) -> Net {
    pair_with2(config.clone(), config)
}

fn pair_with2(config: TunnelConfig, config_b: TunnelConfig) -> Net {
    let t0 = Instant::now();
    let (ka, kb) = ([1u8; 32], [2u8; 32]);
    let (aa, ab): (SocketAddr, SocketAddr) =
        ("10.0.0.1:51820".parse().unwrap(), "10.0.0.2:51820".parse().unwrap());
    let mut a = Tunnels::new(ka, config.clone(), t0, UNIX, [11; 32]);
    let mut b = Tunnels::new(kb, config_b, t0, UNIX, [12; 32]);
    let pa = a.add_peer(public(kb), Some(ab)).unwrap();
    let pb = b.add_peer(public(ka), Some(aa)).unwrap();
    Net {
        now: t0,
        s: [
            Side { t: a, addr: aa, peer: pa, got: vec![], events: vec![] },
            Side { t: b, addr: ab, peer: pb, got: vec![], events: vec![] },
        ],
        wire: VecDeque::new(),
        latency: Duration::from_millis(1),
        up: true,
    }
}

fn pair() -> Net {
    pair_with(TunnelConfig::default())
}

impl Net {
    /// Moves everything each side wants to send onto the wire.
    fn collect(&mut self) {
        let mut buf = vec![0u8; 2048];
        for i in 0..2 {
            while let Some(t) = self.s[i].t.poll_transmit(self.now, &mut buf) {
                if self.up {
                    self.wire.push_back((
                        self.now + self.latency,
                        1 - i,
                        self.s[i].addr,
                        buf[..t.len].to_vec(),
                    ));
                }
            }
            while let Some(e) = self.s[i].t.poll_event() {
                self.s[i].events.push(e);
            }
        }
    }

    fn deliver(&mut self, to: usize, from: SocketAddr, mut bytes: Vec<u8>) -> Result<(), DropReason> {
        let now = self.now;
        let side = &mut self.s[to];
        match side.t.handle_datagram(now, from, &mut bytes)? {
            Received::Data { payload: Payload::Frame { kind, body }, .. } => {
                assert_eq!(kind, FrameKind::DATAGRAM);
                side.got.push(body.to_vec());
            }
            Received::Data { payload: Payload::Ipv4(p), .. } => side.got.push(p.to_vec()),
            _ => {}
        }
        Ok(())
    }

    /// Runs virtual time forward by `d`, delivering datagrams and firing timers.
    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            self.collect();
            let next_wire = self.wire.front().map(|w| w.0);
            let next_timer = self.s.iter().filter_map(|s| s.t.poll_timeout()).min();
            let next = [next_wire, next_timer].into_iter().flatten().min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    while self.wire.front().is_some_and(|w| w.0 <= self.now) {
                        let (_, to, from, bytes) = self.wire.pop_front().unwrap();
                        let _ = self.deliver(to, from, bytes);
                    }
                    for s in &mut self.s {
                        s.t.handle_timeout(self.now);
                    }
                }
                _ => break,
            }
        }
        self.now = end;
        for s in &mut self.s {
            s.t.handle_timeout(self.now);
        }
        self.collect();
    }

    fn send(&mut self, from: usize, data: &[u8]) -> Result<(), SendError> {
        let mut out = vec![0u8; data.len() + 64];
        let now = self.now;
        let side = &mut self.s[from];
        if let Some(t) = side.t.send_datagram(now, side.peer, data, &mut out)? {
            if self.up {
                self.wire.push_back((now + self.latency, 1 - from, side.addr, out[..t.len].to_vec()));
            }
        }
        Ok(())
    }
}

#[test]
fn handshake_then_datagrams_both_ways() {
    let mut n = pair();
    n.send(0, b"first, queued behind the handshake").unwrap();
    n.run_for(Duration::from_millis(50));
    assert_eq!(n.s[1].got, vec![b"first, queued behind the handshake".to_vec()]);
    assert!(n.s[0].events.contains(&TunnelEvent::HandshakeCompleted { peer: n.s[0].peer, initiator: true }));
    assert!(n.s[1].events.contains(&TunnelEvent::HandshakeCompleted { peer: n.s[1].peer, initiator: false }));
    n.send(1, b"reply").unwrap();
    n.send(0, &[0x55; 1420]).unwrap();
    n.run_for(Duration::from_millis(50));
    assert_eq!(n.s[0].got, vec![b"reply".to_vec()]);
    assert_eq!(n.s[1].got[1], vec![0x55; 1420]);
    let st = n.s[0].t.status(n.s[0].peer, n.now).unwrap();
    assert!(st.established && st.handshakes == 1 && st.drops.total() == 0, "{st:?}");
    assert_eq!(n.s[0].t.drops().total() + n.s[1].t.drops().total(), 0);
}

#[test]
fn a_replayed_packet_is_dropped_and_counted() {
    let mut n = pair();
    n.send(0, b"x").unwrap();
    n.run_for(Duration::from_millis(50));
    let mut out = [0u8; 128];
    let t = n.s[0].t.send_datagram(n.now, n.s[0].peer, b"once", &mut out).unwrap().unwrap();
    let pkt = out[..t.len].to_vec();
    let from = n.s[0].addr;
    n.deliver(1, from, pkt.clone()).unwrap();
    for _ in 0..1000 {
        assert_eq!(n.deliver(1, from, pkt.clone()), Err(DropReason::Replayed));
    }
    assert_eq!(n.s[1].got.iter().filter(|g| g.as_slice() == b"once").count(), 1);
    assert_eq!(n.s[1].t.drops().get(DropReason::Replayed), 1000);
    assert_eq!(n.s[1].t.status(n.s[1].peer, n.now).unwrap().drops.get(DropReason::Replayed), 1000);
}

/// Continuous traffic both ways across many rekeys (by message count and by time), with
/// packets in flight during each: every packet arrives.
#[test]
fn no_packet_is_lost_across_rekeys() {
    let timers = Timers { rekey_after_messages: 5000, ..Timers::default() };
    let mut n = pair_with(TunnelConfig { timers, ..TunnelConfig::default() });
    n.latency = Duration::from_millis(20);
    // The first handshake (the queue before it is bounded), then continuous traffic.
    n.s[0].t.open(n.now, n.s[0].peer);
    n.run_for(Duration::from_millis(100));
    let mut sent = [0u64; 2];
    // 400 s of traffic: one datagram each way per millisecond (past several 120 s rekeys
    // and 180 s rejects).
    for ms in 0..400_000u64 {
        for (side, count) in sent.iter_mut().enumerate() {
            n.send(side, &ms.to_le_bytes()).unwrap();
            *count += 1;
        }
        n.run_for(Duration::from_millis(1));
    }
    n.run_for(Duration::from_secs(1));
    for (side, &count) in sent.iter().enumerate() {
        let got = n.s[1 - side].got.len() as u64;
        assert_eq!(got, count, "side {side}: drops {:?}", n.s[1 - side].t.drops());
    }
    let handshakes = n.s[0].t.status(n.s[0].peer, n.now).unwrap().handshakes;
    assert!(handshakes >= 100, "rekeyed {handshakes} times");
    assert_eq!(n.s[0].t.drops().total() + n.s[1].t.drops().total(), 0);
}

#[test]
fn retries_every_five_seconds_then_gives_up_after_ninety() {
    let mut n = pair();
    n.up = false;
    n.send(0, b"lost").unwrap();
    n.collect();
    let t0 = n.now;
    let mut initiations = 0;
    let mut buf = [0u8; 256];
    while n.now < t0 + Duration::from_secs(100) {
        let Some(next) = n.s[0].t.poll_timeout() else { break };
        n.now = next;
        n.s[0].t.handle_timeout(next);
        while let Some(t) = n.s[0].t.poll_transmit(n.now, &mut buf) {
            assert_eq!(t.len, 148);
            initiations += 1;
        }
    }
    // The first initiation went out in collect(); then one per 5-5.33 s for 90 s.
    assert!((16..=18).contains(&initiations), "{initiations} retries");
    let mut timed_out = false;
    while let Some(e) = n.s[0].t.poll_event() {
        timed_out |= matches!(e, TunnelEvent::HandshakeTimedOut { .. });
    }
    assert!(timed_out);
    assert_eq!(n.s[0].t.drops().get(DropReason::HandshakeTimeout), 1, "the queued datagram");
    assert!(!n.s[0].t.status(n.s[0].peer, n.now).unwrap().handshake_in_progress);
}

#[test]
fn keepalive_after_ten_quiet_seconds_and_keys_erased_after_540() {
    let mut n = pair();
    n.send(0, b"hello").unwrap();
    n.run_for(Duration::from_millis(10));
    let rx_before = n.s[0].t.status(n.s[0].peer, n.now).unwrap().rx_packets;
    n.run_for(Duration::from_secs(11));
    let rx_after = n.s[0].t.status(n.s[0].peer, n.now).unwrap().rx_packets;
    assert_eq!(rx_after, rx_before + 1, "B answered the data with one keepalive");
    n.run_for(Duration::from_secs(200));
    assert!(!n.s[0].t.status(n.s[0].peer, n.now).unwrap().established, "expired after 180 s");
    n.run_for(Duration::from_secs(400));
    assert!(n.s[0].events.contains(&TunnelEvent::KeysZeroed { peer: n.s[0].peer }));
    // A new datagram opens a new session.
    n.send(0, b"again").unwrap();
    n.run_for(Duration::from_millis(50));
    assert_eq!(n.s[1].got.last().unwrap(), b"again");
}

#[test]
fn replayed_initiations_and_strangers_get_no_answer() {
    let mut n = pair();
    n.s[0].t.open(n.now, n.s[0].peer);
    let mut buf = [0u8; 256];
    let t = n.s[0].t.poll_transmit(n.now, &mut buf).unwrap();
    let init = buf[..t.len].to_vec();
    let from = n.s[0].addr;
    n.deliver(1, from, init.clone()).unwrap();
    assert!(n.s[1].t.poll_transmit(n.now, &mut buf).is_some(), "a response");
    n.now += Duration::from_secs(1);
    assert_eq!(n.deliver(1, from, init.clone()), Err(DropReason::StaleTimestamp));
    assert!(n.s[1].t.poll_transmit(n.now, &mut buf).is_none());

    // A node B does not know: its initiation carries a valid mac1 (B's key is public).
    let t0 = n.now;
    let mut stranger = Tunnels::new([9; 32], TunnelConfig::default(), t0, UNIX, [3; 32]);
    let p = stranger.add_peer(public([2; 32]), Some(n.s[1].addr)).unwrap();
    stranger.open(t0, p);
    let t = stranger.poll_transmit(t0, &mut buf).unwrap();
    assert_eq!(
        n.deliver(1, "10.9.9.9:1".parse().unwrap(), buf[..t.len].to_vec()),
        Err(DropReason::UnknownPeer)
    );
    assert!(n.s[1].t.poll_transmit(n.now, &mut buf).is_none());

    // Bit flips anywhere in an initiation: no answer, no panic.
    for i in 0..init.len() {
        let mut bad = init.clone();
        bad[i] ^= 0x40;
        assert!(n.deliver(1, from, bad).is_err(), "byte {i}");
        assert!(n.s[1].t.poll_transmit(n.now, &mut buf).is_none(), "byte {i}");
    }
}

#[test]
fn garbage_is_dropped_silently_by_reason() {
    let mut n = pair();
    n.send(0, b"x").unwrap();
    n.run_for(Duration::from_millis(50));
    let from = n.s[0].addr;
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut buf = [0u8; 256];
    for i in 0..20_000usize {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let len = (state % 200) as usize;
        let mut d: Vec<u8> = (0..len).map(|j| (state >> (j % 8 * 8)) as u8 ^ j as u8).collect();
        if len >= 4 && i % 2 == 0 {
            d[..4].copy_from_slice(&[(i % 4 + 1) as u8, 0, 0, 0]);
        }
        assert!(n.deliver(1, from, d).is_err());
        assert!(n.s[1].t.poll_transmit(n.now, &mut buf).is_none());
    }
    let drops = n.s[1].t.drops();
    assert_eq!(drops.total(), 20_000);
    assert!(drops.get(DropReason::Malformed) > 0 && drops.get(DropReason::UnknownIndex) > 0, "{drops:?}");
    // Forged data for a live session: the tag fails, the window does not move.
    let mut out = [0u8; 128];
    let t = n.s[0].t.send_datagram(n.now, n.s[0].peer, b"real", &mut out).unwrap().unwrap();
    let mut forged = out[..t.len].to_vec();
    forged[8..16].copy_from_slice(&u64::MAX.wrapping_sub(1 << 14).to_le_bytes());
    assert_eq!(n.deliver(1, from, forged), Err(DropReason::Decrypt));
    n.deliver(1, from, out[..t.len].to_vec()).unwrap();
    assert_eq!(n.s[1].got.last().unwrap(), b"real");
}

#[test]
fn under_load_a_cookie_is_required_then_honoured() {
    // B, the responder, is under load from the first handshake on.
    let config = TunnelConfig { load_threshold: 0, ..TunnelConfig::default() };
    let mut n = pair_with2(TunnelConfig::default(), config);
    n.send(0, b"behind a cookie").unwrap();
    n.run_for(Duration::from_millis(10));
    assert_eq!(n.s[1].t.drops().get(DropReason::CookieRequired), 1);
    // The cookie reply brings a retry with mac2 at once (not at the 5 s retransmission),
    // which gets through: the datagram arrives within a few round trips.
    n.run_for(Duration::from_millis(20));
    assert_eq!(
        n.s[1].got,
        vec![b"behind a cookie".to_vec()],
        "{:?} {:?}",
        n.s[1].t.drops(),
        n.s[0].t.drops()
    );
    // A source flooding with valid cookies is held to its token bucket (burst 5).
    let from = n.s[0].addr;
    let mut accepted = 0;
    for _ in 0..50 {
        n.now += Duration::from_millis(21);
        n.s[0].t.force_rekey(n.now, n.s[0].peer);
        let mut buf = [0u8; 256];
        let t = n.s[0].t.poll_transmit(n.now, &mut buf).unwrap();
        if n.deliver(1, from, buf[..t.len].to_vec()).is_ok() {
            accepted += 1;
        }
        while n.s[1].t.poll_transmit(n.now, &mut buf).is_some() {}
    }
    // 50 initiations over 1.05 s: the burst of 5, then 20 per second.
    assert!((20..=27).contains(&accepted), "{accepted}");
    assert!(n.s[1].t.drops().get(DropReason::RateLimited) > 0);
}

/// The initiator is the one under load: the responder's response wants mac2, and comes
/// again with it at once after the cookie reply, so the tunnel is up within round trips,
/// not after the initiator's 5 s retry.
#[test]
fn an_initiator_under_load_gets_the_response_again_with_mac2() {
    let loaded = TunnelConfig { load_threshold: 0, ..TunnelConfig::default() };
    let mut n = pair_with2(loaded, TunnelConfig::default());
    n.send(0, b"from a loaded node").unwrap();
    n.run_for(Duration::from_millis(30));
    assert_eq!(n.s[0].t.drops().get(DropReason::CookieRequired), 1, "{:?}", n.s[0].t.drops());
    assert_eq!(
        n.s[1].got,
        vec![b"from a loaded node".to_vec()],
        "{:?} {:?}",
        n.s[0].t.drops(),
        n.s[1].t.drops()
    );
}

/// A copy of two tunnels after their handshake carries on like the original (the same
/// sessions, the same counters), independently of it; no copy while a handshake is
/// under way.
#[test]
fn a_copy_of_established_tunnels_carries_on_independently() {
    let mut n = pair();
    n.s[0].t.open(n.now, n.s[0].peer);
    assert!(n.s[0].t.try_clone([9; 32]).is_none(), "a handshake is under way");
    n.send(0, b"before").unwrap();
    n.run_for(Duration::from_millis(50));
    assert_eq!(n.s[1].got, vec![b"before".to_vec()]);
    let (mut a2, mut b2) = (n.s[0].t.try_clone([9; 32]).unwrap(), n.s[1].t.try_clone([10; 32]).unwrap());
    let (pa, from) = (n.s[0].peer, n.s[0].addr);
    // Both the original and the copy send the same next counter; each receiver takes its own.
    let mut out = [0u8; 256];
    let [s0, s1] = &mut n.s;
    for (a, b) in [(&mut a2, &mut b2), (&mut s0.t, &mut s1.t)] {
        let t = a.send_datagram(n.now, pa, b"after", &mut out).unwrap().unwrap();
        let mut d = out[..t.len].to_vec();
        assert!(
            matches!(b.handle_datagram(n.now, from, &mut d), Ok(Received::Data { .. })),
            "the copy and the original each accept their packet"
        );
    }
}

/// A valid-mac1 flood (random content, the victim's mac1 key) under load gets few cookie
/// replies: 5 at once and 20 a second per source, 2 000 a second in all; the rest is
/// dropped as `cookie_capped`, and a fresh source still gets its reply.
#[test]
fn cookie_replies_are_capped_per_source_and_in_all() {
    let t0 = Instant::now();
    let config = TunnelConfig { load_threshold: 0, ..TunnelConfig::default() };
    let mut victim = Tunnels::new([2; 32], config, t0, UNIX, [2; 32]);
    let mac1_key = swarm_core::tunnel::mac::mac1_key(&public([2; 32]));
    let forged = |i: u32| {
        let mut m = vec![0u8; 148];
        m[0] = 1;
        m[4..8].copy_from_slice(&i.to_le_bytes());
        for (j, b) in m[8..116].iter_mut().enumerate() {
            *b = (i as usize * 31 + j * 7) as u8;
        }
        let mac1 = swarm_core::tunnel::mac::mac(&mac1_key, &m[..116]);
        m[116..132].copy_from_slice(&mac1);
        m
    };
    let mut buf = [0u8; 256];
    let mut replies = |victim: &mut Tunnels, now: Instant| {
        let mut n = 0;
        while victim.poll_transmit(now, &mut buf).is_some() {
            n += 1;
        }
        n
    };
    // One source, 10 000 initiations within a second: the burst, then 20 a second.
    let one: SocketAddr = "10.0.0.9:9".parse().unwrap();
    let mut answered = 0;
    for i in 0..10_000u32 {
        let now = t0 + Duration::from_micros(u64::from(i) * 100);
        let _ = victim.handle_datagram(now, one, &mut forged(i));
        answered += replies(&mut victim, now);
    }
    assert!((5..=26).contains(&answered), "{answered} replies to one source in 1 s");
    assert!(victim.drops().get(DropReason::CookieCapped) >= 9_970, "{:?}", victim.drops());
    // 20 000 sources within a second: at most the global burst and rate.
    let t1 = t0 + Duration::from_secs(10);
    let mut answered = 0;
    for i in 0..20_000u32 {
        let now = t1 + Duration::from_micros(u64::from(i) * 50);
        let src = SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 9));
        let _ = victim.handle_datagram(now, src, &mut forged(i));
        answered += replies(&mut victim, now);
    }
    assert!((200..=2_300).contains(&answered), "{answered} replies to 20 000 sources in 1 s");
    // A quiet second later a new source is answered again.
    let later = t1 + Duration::from_secs(3);
    let _ = victim.handle_datagram(later, "10.2.0.1:9".parse().unwrap(), &mut forged(1));
    assert_eq!(replies(&mut victim, later), 1);
}

#[test]
fn a_wrong_preshared_key_never_completes() {
    let t0 = Instant::now();
    let a_cfg = TunnelConfig { psk: Some([7; 32]), ..TunnelConfig::default() };
    let mut a = Tunnels::new([1; 32], a_cfg, t0, UNIX, [1; 32]);
    let mut b = Tunnels::new(
        [2; 32],
        TunnelConfig { psk: Some([8; 32]), ..TunnelConfig::default() },
        t0,
        UNIX,
        [2; 32],
    );
    let ab: SocketAddr = "10.0.0.2:1".parse().unwrap();
    let aa: SocketAddr = "10.0.0.1:1".parse().unwrap();
    let p = a.add_peer(public([2; 32]), Some(ab)).unwrap();
    b.add_peer(public([1; 32]), Some(aa)).unwrap();
    a.open(t0, p);
    let mut buf = [0u8; 256];
    let t = a.poll_transmit(t0, &mut buf).unwrap();
    let mut init = buf[..t.len].to_vec();
    b.handle_datagram(t0, aa, &mut init).unwrap();
    let t = b.poll_transmit(t0, &mut buf).unwrap();
    let mut resp = buf[..t.len].to_vec();
    assert_eq!(a.handle_datagram(t0, ab, &mut resp), Err(DropReason::HandshakeFailed));
    assert!(!a.status(p, t0).unwrap().established);
}

/// A peer with its own pre-shared key (a stock WireGuard peer's) handshakes with that
/// key, from either side, while the node's own key stays for everyone else; a side
/// without it fails.
#[test]
fn a_per_peer_preshared_key_replaces_the_nodes() {
    let swarm = TunnelConfig { psk: Some([7; 32]), ..TunnelConfig::default() };
    for initiator in [0, 1] {
        let mut n = pair_with2(swarm.clone(), TunnelConfig::default());
        // Node 0 holds the swarm's key but gives peer 1 its own; peer 1 knows only that.
        let (t, p) = (&mut n.s[0].t, n.s[0].peer);
        assert!(t.set_psk(p, [9; 32]));
        n.s[1].t = {
            let mut t = Tunnels::new(
                [2; 32],
                TunnelConfig { psk: Some([9; 32]), ..TunnelConfig::default() },
                n.now,
                UNIX,
                [5; 32],
            );
            n.s[1].peer = t.add_peer(public([1; 32]), Some(n.s[0].addr)).unwrap();
            t
        };
        n.send(initiator, b"over the peer's own key").unwrap();
        n.run_for(Duration::from_millis(50));
        assert_eq!(
            n.s[1 - initiator].got,
            vec![b"over the peer's own key".to_vec()],
            "initiator {initiator}"
        );
    }
    // Without the per-peer key, node 0 uses the swarm's, and the handshake fails.
    let mut n = pair_with2(swarm, TunnelConfig { psk: Some([9; 32]), ..TunnelConfig::default() });
    n.send(0, b"never").unwrap();
    n.run_for(Duration::from_millis(50));
    assert!(n.s[1].got.is_empty());
    assert!(!n.s[0].t.status(n.s[0].peer, n.now).unwrap().established);
}

#[test]
fn the_endpoint_follows_authenticated_packets() {
    let mut n = pair();
    n.send(0, b"x").unwrap();
    n.run_for(Duration::from_millis(50));
    let roamed: SocketAddr = "10.0.0.99:4000".parse().unwrap();
    n.s[0].addr = roamed;
    n.send(0, b"from a new address").unwrap();
    n.run_for(Duration::from_millis(50));
    let peer = n.s[1].peer;
    assert!(n.s[1].events.contains(&TunnelEvent::EndpointChanged { peer, endpoint: roamed }));
    assert_eq!(n.s[1].t.status(peer, n.now).unwrap().endpoint, Some(roamed));
    // A forged packet from elsewhere moves nothing.
    let mut junk = vec![4u8, 0, 0, 0];
    junk.extend_from_slice(&[0; 44]);
    assert!(n.deliver(1, "10.6.6.6:6".parse().unwrap(), junk).is_err());
    assert_eq!(n.s[1].t.status(peer, n.now).unwrap().endpoint, Some(roamed));
}

#[test]
fn memory_per_peer_is_within_64_kib() {
    let mut n = pair();
    n.send(0, b"x").unwrap();
    n.run_for(Duration::from_millis(50));
    n.s[0].t.force_rekey(n.now, n.s[0].peer);
    n.run_for(Duration::from_millis(50));
    let bytes = n.s[0].t.peer_memory(n.s[0].peer).unwrap();
    println!("memory per peer with live sessions: {bytes} bytes");
    assert!(bytes <= 64 * 1024, "{bytes} bytes");
    // A full handshake queue (default limits) still fits, with small or large payloads.
    for size in [1420, 9000, 60_000] {
        let mut m = pair();
        m.up = false;
        for _ in 0..40 {
            let _ = m.send(0, &vec![1; size]);
        }
        let full = m.s[0].t.peer_memory(m.s[0].peer).unwrap();
        println!("memory per peer with a full queue of {size}-byte payloads: {full} bytes");
        assert!(full <= 64 * 1024, "{full} bytes with a full queue");
        assert!(m.s[0].t.drops().get(DropReason::QueueFull) > 0);
    }
}

/// A datagram handled pinned (one that came through a relay) is authenticated and
/// delivered, but moves no endpoint; packets from the endpoint mark it seen.
#[test]
fn a_pinned_datagram_does_not_move_the_endpoint() {
    let mut n = pair();
    n.send(0, b"x").unwrap();
    n.run_for(Duration::from_millis(50));
    let peer = n.s[1].peer;
    let seen = n.s[1].t.status(peer, n.now).unwrap().endpoint_seen.unwrap();
    n.run_for(Duration::from_millis(50));
    // Seal one datagram at side 0 and hand it to side 1 as if relayed.
    let mut out = vec![0u8; 128];
    let t = n.s[0].t.send_datagram(n.now, n.s[0].peer, b"relayed", &mut out).unwrap().unwrap();
    let relay: SocketAddr = "[100::1]:1".parse().unwrap();
    let now = n.now;
    let got = n.s[1].t.handle_datagram_pinned(now, relay, &mut out[..t.len]).unwrap();
    assert!(matches!(got, Received::Data { .. }));
    let s = n.s[1].t.status(peer, n.now).unwrap();
    assert_eq!(s.endpoint, Some(n.s[0].addr), "the direct endpoint stays");
    assert_eq!(s.endpoint_seen, Some(seen), "and was not seen by the relayed datagram");
    // A direct one marks it seen; setting another endpoint clears the mark.
    n.send(0, b"direct").unwrap();
    n.run_for(Duration::from_millis(50));
    assert!(n.s[1].t.status(peer, n.now).unwrap().endpoint_seen.unwrap() > seen);
    n.s[1].t.set_endpoint(peer, relay);
    assert_eq!(n.s[1].t.status(peer, n.now).unwrap().endpoint_seen, None);
}

/// A new member's first initiation outruns its record: it is dropped as `unknown_peer`
/// but kept, and handled when the peer is added, so the handshake completes within a
/// round trip of the record instead of at the initiator's 5 s retry. Kept ones are
/// bounded, per key the newest, and forgotten after 5 s.
#[test]
fn an_initiation_before_its_record_is_answered_when_the_record_comes() {
    let mut buf = [0u8; 256];
    let t0 = Instant::now();
    let (ka, kb) = ([1u8; 32], [2u8; 32]);
    let (aa, ab): (SocketAddr, SocketAddr) =
        ("10.0.0.1:51820".parse().unwrap(), "10.0.0.2:51820".parse().unwrap());
    let mut a = Tunnels::new(ka, TunnelConfig::default(), t0, UNIX, [11; 32]);
    let mut b = Tunnels::new(kb, TunnelConfig::default(), t0, UNIX, [12; 32]);
    let pa = a.add_peer(public(kb), Some(ab)).unwrap();
    a.open(t0, pa);
    let t = a.poll_transmit(t0, &mut buf).unwrap();
    let init = buf[..t.len].to_vec();
    assert!(matches!(b.handle_datagram(t0, aa, &mut init.clone()), Err(DropReason::UnknownPeer)));
    assert!(b.poll_transmit(t0, &mut buf).is_none(), "no answer to a stranger");
    // 300 ms later A's record arrives at B.
    let now = t0 + Duration::from_millis(300);
    b.add_peer(public(ka), Some(aa)).unwrap();
    let (src, mut kept) = b.take_pending_initiation(now, &public(ka)).expect("kept");
    assert_eq!(src, aa);
    assert!(b.take_pending_initiation(now, &public(ka)).is_none(), "taken once");
    b.handle_datagram(now, src, &mut kept).unwrap();
    let t = b.poll_transmit(now, &mut buf).expect("the response");
    let mut response = buf[..t.len].to_vec();
    a.handle_datagram(now, ab, &mut response).unwrap();
    assert!(a.status(pa, now).unwrap().established, "up within one round trip of the record");

    // Too old: an initiator has retried with a new ephemeral key by then.
    let mut c = Tunnels::new([3; 32], TunnelConfig::default(), t0, UNIX, [13; 32]);
    let pc = c.add_peer(public(kb), Some(ab)).unwrap();
    c.open(t0, pc);
    let t = c.poll_transmit(t0, &mut buf).unwrap();
    let _ = b.handle_datagram(t0, "10.0.0.3:1".parse().unwrap(), &mut buf[..t.len].to_vec());
    assert!(b.take_pending_initiation(t0 + Duration::from_secs(6), &public([3; 32])).is_none());

    // Bounded: 100 strangers leave at most MAX_PENDING_INITIATIONS kept, the newest.
    for i in 0..100u8 {
        let key = [100u8.wrapping_add(i); 32];
        let mut s = Tunnels::new(key, TunnelConfig::default(), t0, UNIX, [i; 32]);
        let p = s.add_peer(public(kb), Some(ab)).unwrap();
        s.open(t0, p);
        let t = s.poll_transmit(t0, &mut buf).unwrap();
        let src: SocketAddr = format!("10.0.{i}.1:1").parse().unwrap();
        let _ = b.handle_datagram(t0, src, &mut buf[..t.len].to_vec());
    }
    let kept: Vec<u8> = (0..100u8)
        .filter(|i| b.take_pending_initiation(t0, &public([100u8.wrapping_add(*i); 32])).is_some())
        .collect();
    assert_eq!(kept.len(), swarm_core::tunnel::MAX_PENDING_INITIATIONS);
    assert_eq!(kept[0], 100 - swarm_core::tunnel::MAX_PENDING_INITIATIONS as u8, "the oldest went first");
}
