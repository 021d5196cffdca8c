//! Our tunnel against boringtun, an independent WireGuard implementation, in process and
//! in both roles: handshake, IP packets both ways, a forced rekey with packets in flight
//! on the old session, replays, the pre-shared key, and cookie replies each way.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // tests own the clock

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519;
use swarm_core::tunnel::{DropReason, Payload, PeerHandle, Received, TunnelConfig, Tunnels};

const OURS: [u8; 32] = [0x11; 32];
const THEIRS: [u8; 32] = [0x22; 32];

fn our_addr() -> SocketAddr {
    "192.0.2.1:51820".parse().unwrap()
}
fn their_addr() -> SocketAddr {
    "192.0.2.2:51820".parse().unwrap()
}

fn public(private: [u8; 32]) -> [u8; 32] {
    x25519::PublicKey::from(&x25519::StaticSecret::from(private)).to_bytes()
}

fn unix() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

/// An IPv4 packet of `len` bytes whose body is `fill`.
fn ipv4(len: u16, fill: u8) -> Vec<u8> {
    let mut p = vec![fill; usize::from(len)];
    p[..20].fill(0);
    p[0] = 0x45;
    p[2..4].copy_from_slice(&len.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&[10, 0, 0, 2]);
    p
}

struct Pair {
    us: Tunnels,
    peer: PeerHandle,
    bt: Tunn,
    buf: Vec<u8>,
}

fn pair(config: TunnelConfig, psk: Option<[u8; 32]>, limiter: Option<u64>) -> Pair {
    let mut us = Tunnels::new(OURS, config, Instant::now(), unix(), [5; 32]);
    let peer = us.add_peer(public(THEIRS), Some(their_addr())).unwrap();
    let limiter = limiter.map(|n| Arc::new(RateLimiter::new(&x25519::PublicKey::from(public(THEIRS)), n)));
    let bt = Tunn::new(
        x25519::StaticSecret::from(THEIRS),
        x25519::PublicKey::from(public(OURS)),
        psk,
        None,
        7,
        limiter,
    );
    Pair { us, peer, bt, buf: vec![0; 4096] }
}

impl Pair {
    /// Everything we want to send.
    fn ours_out(&mut self) -> Vec<Vec<u8>> {
        let mut out = vec![];
        while let Some(t) = self.us.poll_transmit(Instant::now(), &mut self.buf) {
            assert_eq!(t.destination, their_addr());
            out.push(self.buf[..t.len].to_vec());
        }
        out
    }

    /// Feeds boringtun one datagram: what it sends back, and the IP packet it yields.
    fn deliver_bt(&mut self, datagram: &[u8]) -> (Vec<Vec<u8>>, Option<Vec<u8>>) {
        let mut dst = vec![0u8; 4096];
        let mut sent = vec![];
        let mut packet = None;
        match self.bt.decapsulate(Some(our_addr().ip()), datagram, &mut dst) {
            TunnResult::WriteToNetwork(d) => {
                sent.push(d.to_vec());
                // boringtun flushes what it queued during the handshake on empty calls.
                loop {
                    let mut more = vec![0u8; 4096];
                    match self.bt.decapsulate(None, &[], &mut more) {
                        TunnResult::WriteToNetwork(d) => sent.push(d.to_vec()),
                        _ => break,
                    }
                }
            }
            TunnResult::WriteToTunnelV4(p, src) => {
                assert_eq!(src, Ipv4Addr::new(10, 0, 0, 1));
                packet = Some(p.to_vec());
            }
            TunnResult::Done => {}
            TunnResult::Err(e) => panic!("boringtun refused our datagram: {e:?}"),
            TunnResult::WriteToTunnelV6(..) => panic!("unexpected IPv6"),
        }
        (sent, packet)
    }

    fn bt_error(&mut self, datagram: &[u8]) -> Option<WireGuardError> {
        let mut dst = vec![0u8; 4096];
        match self.bt.decapsulate(Some(our_addr().ip()), datagram, &mut dst) {
            TunnResult::Err(e) => Some(e),
            _ => None,
        }
    }

    /// Feeds us one datagram from boringtun; returns the IP packet if any.
    fn deliver_us(&mut self, datagram: &[u8]) -> Result<Option<Vec<u8>>, DropReason> {
        let mut d = datagram.to_vec();
        match self.us.handle_datagram(Instant::now(), their_addr(), &mut d)? {
            Received::Data { payload: Payload::Ipv4(p), peer } => {
                assert_eq!(peer, self.peer);
                Ok(Some(p.to_vec()))
            }
            _ => Ok(None),
        }
    }

    fn bt_encapsulate(&mut self, packet: &[u8]) -> Vec<u8> {
        let mut dst = vec![0u8; 4096];
        match self.bt.encapsulate(packet, &mut dst) {
            TunnResult::WriteToNetwork(d) => d.to_vec(),
            other => panic!("boringtun could not send: {other:?}"),
        }
    }

    fn us_send(&mut self, packet: &[u8]) -> Option<Vec<u8>> {
        let mut out = vec![0u8; 4096];
        let t = self.us.send_ip(Instant::now(), self.peer, packet, &mut out).unwrap()?;
        Some(out[..t.len].to_vec())
    }

    fn handshakes(&self) -> u64 {
        self.us.status(self.peer, Instant::now()).unwrap().handshakes
    }

    /// Data both ways over whatever sessions are current.
    fn exchange(&mut self, fill: u8) {
        for len in [20u16, 64, 555, 1420] {
            let p = ipv4(len, fill);
            let d = self.us_send(&p).expect("a session");
            assert_eq!(self.deliver_bt(&d).1, Some(p.clone()), "boringtun decrypted our {len}-byte packet");
            let d = self.bt_encapsulate(&p);
            assert_eq!(self.deliver_us(&d).unwrap(), Some(p), "we decrypted boringtun's {len}-byte packet");
        }
    }
}

/// We initiate; boringtun responds.
fn handshake_as_initiator(p: &mut Pair) {
    let first = ipv4(100, 0xA1);
    assert_eq!(p.us_send(&first), None, "queued behind the handshake");
    let out = p.ours_out();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].len(), 148);
    let (resp, _) = p.deliver_bt(&out[0]);
    assert_eq!(resp.len(), 1, "boringtun answered our initiation");
    assert_eq!(resp[0].len(), 92);
    p.deliver_us(&resp[0]).unwrap();
    let queued = p.ours_out();
    assert_eq!(queued.len(), 1, "the queued packet follows the handshake");
    assert_eq!(p.deliver_bt(&queued[0]).1, Some(first));
}

#[test]
fn we_initiate_boringtun_responds() {
    let mut p = pair(TunnelConfig::default(), None, None);
    handshake_as_initiator(&mut p);
    assert_eq!(p.handshakes(), 1);
    p.exchange(1);

    // Replays, both ways.
    let d = p.bt_encapsulate(&ipv4(60, 9));
    assert!(p.deliver_us(&d).unwrap().is_some());
    assert_eq!(p.deliver_us(&d), Err(DropReason::Replayed));
    let mine = p.us_send(&ipv4(60, 10)).unwrap();
    assert!(p.deliver_bt(&mine).1.is_some());
    assert!(matches!(p.bt_error(&mine), Some(WireGuardError::DuplicateCounter)));

    // A forced rekey with packets sealed under the old session still in flight.
    let in_flight: Vec<_> = (0..5).map(|i| p.us_send(&ipv4(80, 0x30 + i)).unwrap()).collect();
    let bt_in_flight: Vec<_> = (0..5).map(|i| p.bt_encapsulate(&ipv4(80, 0x40 + i))).collect();
    p.us.force_rekey(Instant::now(), p.peer);
    let init = p.ours_out();
    assert_eq!(init.len(), 1);
    let (resp, _) = p.deliver_bt(&init[0]);
    p.deliver_us(&resp[0]).unwrap();
    assert_eq!(p.handshakes(), 2);
    // Our keepalive confirms the new session to boringtun.
    for d in p.ours_out() {
        p.deliver_bt(&d);
    }
    p.exchange(2);
    for (i, d) in in_flight.iter().enumerate() {
        assert_eq!(
            p.deliver_bt(d).1,
            Some(ipv4(80, 0x30 + i as u8)),
            "old-session packet {i} reached boringtun"
        );
    }
    for (i, d) in bt_in_flight.iter().enumerate() {
        assert_eq!(
            p.deliver_us(d).unwrap(),
            Some(ipv4(80, 0x40 + i as u8)),
            "old-session packet {i} reached us"
        );
    }
    assert_eq!(p.us.drops().total(), 1, "only the replay: {:?}", p.us.drops());
}

#[test]
fn boringtun_initiates_we_respond() {
    let mut p = pair(TunnelConfig::default(), None, None);
    let mut dst = vec![0u8; 256];
    let TunnResult::WriteToNetwork(init) = p.bt.format_handshake_initiation(&mut dst, false) else {
        panic!("boringtun initiation")
    };
    let init = init.to_vec();
    p.deliver_us(&init).unwrap();
    let resp = p.ours_out();
    assert_eq!(resp.len(), 1);
    assert_eq!(resp[0].len(), 92);
    let (keepalive, _) = p.deliver_bt(&resp[0]);
    assert_eq!(keepalive.len(), 1, "boringtun confirms with a keepalive");
    assert_eq!(keepalive[0].len(), 32);
    assert_eq!(p.deliver_us(&keepalive[0]).unwrap(), None);
    assert_eq!(p.handshakes(), 1);
    p.exchange(3);

    // The same initiation again: its timestamp is not newer.
    assert_eq!(p.deliver_us(&init), Err(DropReason::StaleTimestamp));
    assert!(p.ours_out().is_empty());

    // boringtun forces a rekey; its in-flight packets on the old session still arrive.
    let bt_in_flight = p.bt_encapsulate(&ipv4(90, 0x55));
    std::thread::sleep(Duration::from_millis(25)); // past our 20 ms initiation flood guard
    let TunnResult::WriteToNetwork(init2) = p.bt.format_handshake_initiation(&mut dst, true) else {
        panic!("boringtun re-initiation")
    };
    let init2 = init2.to_vec();
    p.deliver_us(&init2).unwrap();
    let resp = p.ours_out();
    let (confirm, _) = p.deliver_bt(&resp[0]);
    for d in &confirm {
        p.deliver_us(d).unwrap();
    }
    assert_eq!(p.handshakes(), 2);
    p.exchange(4);
    assert_eq!(p.deliver_us(&bt_in_flight).unwrap(), Some(ipv4(90, 0x55)));
    let d = p.bt_encapsulate(&ipv4(33, 1));
    p.deliver_us(&d).unwrap();
    assert_eq!(p.deliver_us(&d), Err(DropReason::Replayed));
}

#[test]
fn with_a_preshared_key_in_both_roles() {
    let psk = [0x5A; 32];
    let config = TunnelConfig { psk: Some(psk), ..TunnelConfig::default() };
    let mut p = pair(config.clone(), Some(psk), None);
    handshake_as_initiator(&mut p);
    p.exchange(5);
    // A mismatched key: boringtun cannot read our response... and we cannot read theirs.
    let mut q = pair(config, Some([0x5B; 32]), None);
    q.us_send(&ipv4(40, 1));
    let out = q.ours_out();
    let (resp, _) = q.deliver_bt(&out[0]);
    assert_eq!(q.deliver_us(&resp[0]), Err(DropReason::HandshakeFailed));
}

/// Cookie replies each way: our XChaCha20-Poly1305 cookie opened by boringtun, theirs by
/// us, and mac2 computed from each accepted by the other.
#[test]
fn cookie_replies_both_ways() {
    // We are under load from the first handshake message on.
    let config = TunnelConfig { load_threshold: 0, ..TunnelConfig::default() };
    let mut p = pair(config, None, None);
    let mut dst = vec![0u8; 256];
    let TunnResult::WriteToNetwork(init) = p.bt.format_handshake_initiation(&mut dst, false) else {
        panic!()
    };
    let init = init.to_vec();
    assert_eq!(p.deliver_us(&init), Err(DropReason::CookieRequired));
    let reply = p.ours_out();
    assert_eq!(reply.len(), 1);
    assert_eq!(reply[0].len(), 64);
    assert!(p.bt_error(&reply[0]).is_none(), "boringtun accepted our cookie reply");
    let TunnResult::WriteToNetwork(init) = p.bt.format_handshake_initiation(&mut dst, true) else { panic!() };
    let init = init.to_vec();
    p.deliver_us(&init).expect("boringtun's mac2 made with our cookie");
    let resp = p.ours_out();
    assert_eq!(resp[0].len(), 92);

    // boringtun under load (limit 0) answers our initiation with a cookie reply.
    let mut q = pair(TunnelConfig::default(), None, Some(0));
    q.us_send(&ipv4(40, 2));
    let out = q.ours_out();
    let (reply, _) = q.deliver_bt(&out[0]);
    assert_eq!(reply.len(), 1);
    assert_eq!(reply[0].len(), 64, "a cookie reply");
    q.deliver_us(&reply[0]).expect("we opened boringtun's cookie");
    // The cookie brings a retry at once, with mac2.
    let out = q.ours_out();
    assert_eq!(out.len(), 1, "one retry");
    let (resp, _) = q.deliver_bt(&out[0]);
    assert_eq!(resp[0].len(), 92, "our mac2 passed boringtun's check");
    q.deliver_us(&resp[0]).unwrap();
    let queued = q.ours_out();
    assert_eq!(q.deliver_bt(&queued[0]).1, Some(ipv4(40, 2)));
}
