//! [`Puncher`]: UDP hole punching for tunnels, sans-IO. Both peers agree on a token and
//! a start time over an authenticated channel (libp2p), then each sends token-carrying
//! probes from its tunnel socket to every candidate endpoint of the other until one
//! gets through: a probe that arrives is acknowledged to where it came from, and the
//! first probe or acknowledgement to arrive names the peer's endpoint. A NAT with
//! endpoint-independent mapping lets the other side's probes in once its own have left
//! for that address, which is why the starts are synchronised; a probe with an unknown
//! token is ignored.
//!
//! A NAT that accepts unsolicited input (its own WAN input open) breaks that: a probe
//! arriving before our own first packet to its sender has left is confirmed in
//! conntrack, and our flow then clashes with it and gets another port. Synchronised
//! starts are not exact enough across a real network (milliseconds of skew against a
//! sub-millisecond one-way delay in a LAN-like lab), so each side also **primes** its
//! NAT as soon as it knows the other's candidates (the responder at the offer, the
//! initiator at the answer, both before any probe can arrive): one probe to each
//! candidate sent with a TTL of [`PRIME_TTL`], enough to pass our own NAT (creating the
//! mapping and its conntrack entry) and to expire before the other's.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::binding::{self, TransactionId, BINDING_LEN};
use crate::bounded::BoundedVec;
use crate::codec::WireMessage;

/// The TTL (IPv6: hop limit) of priming probes: past our own NAT (hop 1), expired
/// before the peer's.
pub const PRIME_TTL: u32 = 2;

/// Candidate endpoints in one punch message at most.
pub const MAX_PUNCH_CANDIDATES: usize = 8;
/// The largest punch message.
pub const MAX_PUNCH_MESSAGE: usize = 512;

/// The signalling of a punch, over an authenticated channel (libp2p request-response):
/// the initiator offers its candidates and a token, the responder answers with its own;
/// the initiator measures that round trip, sends `Go`, and starts half a round trip
/// later, when `Go` reaches the responder, which starts at once (as DCUtR does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PunchMessage {
    /// The initiator's token and candidates.
    Offer {
        /// Carried by every probe.
        token: TransactionId,
        /// Where the initiator may be reached.
        candidates: BoundedVec<SocketAddr, MAX_PUNCH_CANDIDATES>,
    },
    /// The responder's candidates.
    Answer {
        /// Where the responder may be reached.
        candidates: BoundedVec<SocketAddr, MAX_PUNCH_CANDIDATES>,
    },
    /// Start now.
    Go,
    /// Started (the answer to `Go`), or refused (to anything else out of turn).
    Done,
}

impl WireMessage for PunchMessage {
    const KIND: u8 = 0x15;
    const VERSION: u8 = 1;
}

/// How a [`Puncher`] probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PunchConfig {
    /// Time between rounds of probes.
    pub interval: Duration,
    /// How long a punch probes before it gives up.
    pub window: Duration,
    /// Candidate endpoints probed at most.
    pub max_candidates: usize,
}

impl Default for PunchConfig {
    fn default() -> Self {
        Self { interval: Duration::from_millis(100), window: Duration::from_secs(5), max_candidates: 8 }
    }
}

/// What became of a punch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PunchEvent<K> {
    /// A probe or its acknowledgement came through: the peer is reached at `endpoint`.
    Punched {
        /// The peer.
        peer: K,
        /// Where its probes come from, and ours get to.
        endpoint: SocketAddr,
    },
    /// Nothing came through in the window.
    Failed {
        /// The peer.
        peer: K,
    },
}

struct Session {
    token: TransactionId,
    candidates: Vec<SocketAddr>,
    next: Instant,
    until: Instant,
    punched: bool,
}

/// See the module docs.
pub struct Puncher<K> {
    config: PunchConfig,
    sessions: HashMap<K, Session>,
    by_token: HashMap<TransactionId, K>,
    transmits: VecDeque<(SocketAddr, [u8; BINDING_LEN])>,
    /// Priming probes, to be sent with [`PRIME_TTL`].
    primes: VecDeque<(SocketAddr, [u8; BINDING_LEN])>,
    events: VecDeque<PunchEvent<K>>,
}

impl<K> core::fmt::Debug for Puncher<K> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Puncher").field("sessions", &self.sessions.len()).finish()
    }
}

impl<K: Copy + Eq + Hash> Puncher<K> {
    /// No punches yet.
    pub fn new(config: PunchConfig) -> Self {
        Self {
            config,
            sessions: HashMap::new(),
            by_token: HashMap::new(),
            transmits: VecDeque::new(),
            primes: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Primes our NAT for a punch with `token` to `candidates` (see the module docs):
    /// one probe to each, to be sent with [`PRIME_TTL`] (from
    /// [`poll_prime`](Self::poll_prime)).
    pub fn prime(&mut self, token: TransactionId, candidates: &[SocketAddr]) {
        for c in candidates.iter().take(self.config.max_candidates) {
            if self.primes.len() < 4 * self.config.max_candidates {
                self.primes.push_back((*c, binding::probe(&token)));
            }
        }
    }

    /// The next priming probe, to send with a TTL of [`PRIME_TTL`].
    pub fn poll_prime(&mut self) -> Option<(SocketAddr, [u8; BINDING_LEN])> {
        self.primes.pop_front()
    }

    /// Punches to `peer` at its `candidates`, starting at `at` (the agreed start) and
    /// probing for the configured window; replaces a punch to `peer` under way.
    pub fn start(&mut self, peer: K, token: TransactionId, candidates: &[SocketAddr], at: Instant) {
        self.cancel(&peer);
        let mut candidates: Vec<SocketAddr> = candidates.to_vec();
        candidates.dedup();
        candidates.truncate(self.config.max_candidates);
        self.by_token.insert(token, peer);
        let until = at + self.config.window;
        self.sessions.insert(peer, Session { token, candidates, next: at, until, punched: false });
    }

    /// Stops punching to `peer`.
    pub fn cancel(&mut self, peer: &K) {
        if let Some(s) = self.sessions.remove(peer) {
            self.by_token.remove(&s.token);
        }
    }

    /// Whether a punch to `peer` is under way.
    pub fn is_punching(&self, peer: &K) -> bool {
        self.sessions.get(peer).is_some_and(|s| !s.punched)
    }

    /// A probe came from `from`: acknowledged, and the peer is reached there. Returns
    /// whether the token was known (else it is ignored).
    pub fn handle_probe(&mut self, from: SocketAddr, token: &TransactionId) -> bool {
        let Some(peer) = self.by_token.get(token).copied() else { return false };
        self.transmits.push_back((from, binding::probe_ack(token)));
        self.reached(peer, from);
        true
    }

    /// An acknowledgement of one of our probes came from `from`.
    pub fn handle_ack(&mut self, from: SocketAddr, token: &TransactionId) -> bool {
        let Some(peer) = self.by_token.get(token).copied() else { return false };
        self.reached(peer, from);
        true
    }

    fn reached(&mut self, peer: K, endpoint: SocketAddr) {
        if let Some(s) = self.sessions.get_mut(&peer) {
            if !s.punched {
                // Keep answering probes until the window ends, so the other side gets
                // its acknowledgement too; send no more probes.
                s.punched = true;
                self.events.push_back(PunchEvent::Punched { peer, endpoint });
            }
        }
    }

    /// Sends the probes that are due; ends punches whose window passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut ended = Vec::new();
        for (peer, s) in &mut self.sessions {
            if now >= s.until {
                ended.push((*peer, s.punched));
                continue;
            }
            if !s.punched && now >= s.next {
                for c in &s.candidates {
                    self.transmits.push_back((*c, binding::probe(&s.token)));
                }
                s.next = now + self.config.interval;
            }
        }
        for (peer, punched) in ended {
            self.cancel(&peer);
            if !punched {
                self.events.push_back(PunchEvent::Failed { peer });
            }
        }
    }

    /// The next deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sessions.values().map(|s| if s.punched { s.until } else { s.next.min(s.until) }).min()
    }

    /// The next probe or acknowledgement to send.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, [u8; BINDING_LEN])> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<PunchEvent<K>> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::nat::binding::{parse, Binding};

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A NAT with endpoint-independent mapping and address-and-port-dependent
    /// filtering (Linux's masquerade): its host's packets leave from `public`; a packet
    /// to `public` gets in only from an address the host has sent to.
    struct Nat {
        public: SocketAddr,
        sent_to: HashSet<SocketAddr>,
    }

    /// Two punchers behind such NATs, with `skew` between their starts, every packet
    /// taking 5 ms. Returns their events.
    fn punch(
        skew: Duration,
        b_candidates_for_a: &[SocketAddr],
    ) -> (Vec<PunchEvent<u8>>, Vec<PunchEvent<u8>>) {
        #[allow(clippy::disallowed_methods)] // the tests' epoch
        let t0 = Instant::now();
        let mut nats = [
            Nat { public: addr("198.51.100.2:40000"), sent_to: HashSet::new() },
            Nat { public: addr("192.0.2.2:50000"), sent_to: HashSet::new() },
        ];
        let mut p = [Puncher::new(PunchConfig::default()), Puncher::new(PunchConfig::default())];
        let token = [9u8; 12];
        p[0].start(1, token, b_candidates_for_a, t0);
        p[1].start(0, token, &[addr("10.0.1.2:40000"), nats[0].public], t0 + skew);
        let mut wire: VecDeque<(Instant, usize, SocketAddr, [u8; BINDING_LEN])> = VecDeque::new();
        let mut events = (Vec::new(), Vec::new());
        let mut now = t0;
        while now < t0 + Duration::from_secs(6) {
            for (i, side) in p.iter_mut().enumerate() {
                side.handle_timeout(now);
                while let Some((to, m)) = side.poll_transmit() {
                    nats[i].sent_to.insert(to);
                    let j = 1 - i;
                    if to == nats[j].public {
                        wire.push_back((now + Duration::from_millis(5), j, nats[i].public, m));
                    }
                }
            }
            while wire.front().is_some_and(|w| w.0 <= now) {
                let Some((_, j, from, m)) = wire.pop_front() else { break };
                if !nats[j].sent_to.contains(&from) {
                    continue; // filtered: the host has not sent there yet
                }
                match parse(&m) {
                    Some(Binding::Probe(t)) => assert!(p[j].handle_probe(from, &t)),
                    Some(Binding::ProbeAck(t)) => assert!(p[j].handle_ack(from, &t)),
                    _ => panic!("not a punch message"),
                }
            }
            for (i, side) in p.iter_mut().enumerate() {
                while let Some(e) = side.poll_event() {
                    if i == 0 {
                        events.0.push(e)
                    } else {
                        events.1.push(e)
                    }
                }
            }
            now += Duration::from_millis(1);
        }
        events
    }

    #[test]
    fn synchronised_punches_meet_at_the_public_mappings() {
        let (a, b) = punch(Duration::ZERO, &[addr("10.0.2.2:50000"), addr("192.0.2.2:50000")]);
        assert_eq!(a, vec![PunchEvent::Punched { peer: 1, endpoint: addr("192.0.2.2:50000") }]);
        assert_eq!(b, vec![PunchEvent::Punched { peer: 0, endpoint: addr("198.51.100.2:40000") }]);
        // A second late by a second still meets: the first side keeps probing.
        let (a, b) = punch(Duration::from_secs(1), &[addr("192.0.2.2:50000")]);
        assert!(matches!(a[..], [PunchEvent::Punched { peer: 1, .. }]), "{a:?}");
        assert!(matches!(b[..], [PunchEvent::Punched { peer: 0, .. }]), "{b:?}");
    }

    #[test]
    fn a_wrong_candidate_fails_after_the_window_and_strangers_are_ignored() {
        let (a, _) = punch(Duration::ZERO, &[addr("10.0.2.2:50000")]);
        assert_eq!(a, vec![PunchEvent::Failed { peer: 1 }]);
        let mut p: Puncher<u8> = Puncher::new(PunchConfig::default());
        assert!(!p.handle_probe(addr("203.0.113.9:1"), &[1; 12]));
        assert!(!p.handle_ack(addr("203.0.113.9:1"), &[1; 12]));
        assert!(p.poll_transmit().is_none() && p.poll_event().is_none());
    }

    /// Priming sends one token-carrying probe per candidate (bounded), apart from the
    /// probes of the punch itself, and starts nothing.
    #[test]
    fn priming_sends_one_probe_per_candidate() {
        let mut p: Puncher<u8> = Puncher::new(PunchConfig::default());
        let candidates = [addr("192.0.2.2:50000"), addr("10.0.2.2:50000")];
        p.prime([7; 12], &candidates);
        let primes: Vec<_> = std::iter::from_fn(|| p.poll_prime()).collect();
        assert_eq!(primes.iter().map(|(a, _)| *a).collect::<Vec<_>>(), candidates);
        assert!(primes.iter().all(|(_, m)| parse(m) == Some(Binding::Probe([7; 12]))));
        assert!(p.poll_transmit().is_none() && p.poll_timeout().is_none());
        assert!(!p.handle_probe(addr("192.0.2.2:50000"), &[7; 12]), "priming is no punch");
        for _ in 0..100 {
            p.prime([7; 12], &candidates);
        }
        assert_eq!(std::iter::from_fn(|| p.poll_prime()).count(), 32, "bounded");
    }
}
