//! [`NatProbe`]: rounds of binding requests to reflectors, and the verdict.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::binding::{self, TransactionId, BINDING_LEN};
use super::{is_public, NatKind};

/// How a [`NatProbe`] asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Time between rounds (NAT mappings time out and change).
    pub interval: Duration,
    /// Time before an unanswered request is sent again.
    pub retry: Duration,
    /// Sends of one request at most.
    pub attempts: u32,
    /// Reflector endpoints asked per round at most.
    pub max_reflectors: usize,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            retry: Duration::from_secs(1),
            attempts: 3,
            max_reflectors: 4,
        }
    }
}

/// How soon a round without a verdict is tried again.
const UNDECIDED_RETRY: Duration = Duration::from_secs(5);

/// What the reflectors say of this node's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reflexive {
    /// What it sits behind.
    pub kind: NatKind,
    /// The address peers reach it at, as the reflectors see it (when they agree).
    pub mapped: Option<SocketAddr>,
}

struct Pending {
    txid: TransactionId,
    to: SocketAddr,
    next_send: Instant,
    sends: u32,
}

/// See the module docs of [`super`].
pub struct NatProbe {
    config: ProbeConfig,
    rng: StdRng,
    /// Candidate reflector endpoints (public, not our own).
    candidates: BTreeSet<SocketAddr>,
    /// This round's requests.
    pending: Vec<Pending>,
    /// This round's answers: (reflector, mapped).
    answers: Vec<(SocketAddr, SocketAddr)>,
    next_round: Option<Instant>,
    transmits: VecDeque<(SocketAddr, [u8; BINDING_LEN])>,
    /// Our own socket addresses (a mapping equal to one of them means no NAT).
    own: Vec<SocketAddr>,
    verdict: Reflexive,
    changed: bool,
}

impl core::fmt::Debug for NatProbe {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NatProbe")
            .field("verdict", &self.verdict)
            .field("candidates", &self.candidates.len())
            .finish()
    }
}

impl NatProbe {
    /// A probe with no reflectors yet; `seed` makes its transaction ids.
    pub fn new(config: ProbeConfig, seed: [u8; 32]) -> Self {
        Self {
            config,
            rng: StdRng::from_seed(seed),
            candidates: BTreeSet::new(),
            pending: Vec::new(),
            answers: Vec::new(),
            next_round: None,
            transmits: VecDeque::new(),
            own: Vec::new(),
            verdict: Reflexive { kind: NatKind::Unknown, mapped: None },
            changed: false,
        }
    }

    /// Our own socket addresses (announced or bound).
    pub fn set_own(&mut self, own: Vec<SocketAddr>) {
        self.own = own;
    }

    /// A peer's tunnel endpoints: the public ones become candidate reflectors. The first
    /// candidates start a round at once, and so do new ones while the verdict is still
    /// unknown (a round that reached one reflector IP cannot tell easy from hard).
    pub fn add_reflectors(&mut self, now: Instant, endpoints: &[SocketAddr]) {
        let before = self.candidates.len();
        self.candidates.extend(endpoints.iter().filter(|e| is_public(&e.ip()) && !self.own.contains(e)));
        let added = self.candidates.len() > before;
        let undecided = self.verdict.kind == NatKind::Unknown && self.pending.is_empty();
        if added && (before == 0 || undecided) {
            self.next_round = Some(now);
        }
    }

    /// A peer's endpoints are no longer reflectors.
    pub fn remove_reflectors(&mut self, endpoints: &[SocketAddr]) {
        for e in endpoints {
            self.candidates.remove(e);
        }
    }

    /// The reflectors of a round: distinct IP addresses first (two of them tell an easy
    /// NAT from a hard one), then more endpoints, up to the configured number.
    fn pick(&self) -> Vec<SocketAddr> {
        let mut picked: Vec<SocketAddr> = Vec::new();
        for c in &self.candidates {
            if picked.len() < self.config.max_reflectors && !picked.iter().any(|p| p.ip() == c.ip()) {
                picked.push(*c);
            }
        }
        for c in &self.candidates {
            if picked.len() < self.config.max_reflectors && !picked.contains(c) {
                picked.push(*c);
            }
        }
        picked
    }

    /// The next deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retries = self.pending.iter().map(|p| p.next_send).min();
        [self.next_round, retries].into_iter().flatten().min()
    }

    /// Starts a round when due, sends requests again when unanswered, and judges a
    /// round once every request is answered or given up.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_round.is_some_and(|t| now >= t) {
            self.judge();
            self.pending.clear();
            self.answers.clear();
            for to in self.pick() {
                let mut txid = [0u8; 12];
                self.rng.fill_bytes(&mut txid);
                self.pending.push(Pending { txid, to, next_send: now, sends: 0 });
            }
            self.next_round = (!self.candidates.is_empty()).then(|| now + self.config.interval);
        }
        let attempts = self.config.attempts;
        for p in &mut self.pending {
            if now >= p.next_send && p.sends < attempts {
                self.transmits.push_back((p.to, binding::request(&p.txid)));
                p.sends += 1;
                p.next_send = now + self.config.retry;
            }
        }
        let before = self.pending.len();
        self.pending.retain(|p| p.sends < attempts || now < p.next_send);
        if before > 0 && self.pending.is_empty() {
            self.judge();
            self.retry_if_undecided(now);
        }
    }

    /// A round that ended without a verdict (no answer, or answers from one reflector
    /// IP) is tried again soon rather than at the next interval.
    fn retry_if_undecided(&mut self, now: Instant) {
        if self.verdict.kind == NatKind::Unknown && !self.candidates.is_empty() {
            let soon = now + UNDECIDED_RETRY;
            self.next_round = Some(self.next_round.map_or(soon, |t| t.min(soon)));
        }
    }

    /// A binding answer; one we did not ask for is ignored. It is matched by its
    /// transaction id alone (96 random bits), not by where it came from: a reflector
    /// bound to several addresses may answer from another one.
    pub fn handle_answer(&mut self, txid: &TransactionId, mapped: SocketAddr) {
        let Some(i) = self.pending.iter().position(|p| p.txid == *txid) else { return };
        let asked = self.pending.swap_remove(i).to;
        self.answers.push((asked, mapped));
        if self.pending.is_empty() {
            self.judge();
        }
    }

    /// The next request to send.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, [u8; BINDING_LEN])> {
        self.transmits.pop_front()
    }

    /// The verdict now.
    pub fn verdict(&self) -> Reflexive {
        self.verdict
    }

    /// Another node's binding request reached our socket at `local` (the address it
    /// was sent to) from `from`, a peer we never asked: nothing in front of the socket
    /// drops unsolicited input there. While no reflector has told anything, that makes
    /// the socket public at `local` (a node whose peers all sit behind symmetric NATs
    /// has no reflector to ask: their records announce no mapping). A reflector's
    /// answer in a later round overrules it.
    pub fn handle_request(&mut self, from: SocketAddr, local: SocketAddr) {
        let unsolicited = !self.candidates.contains(&from) && !self.pending.iter().any(|p| p.to == from);
        if self.verdict.kind == NatKind::Unknown
            && self.verdict.mapped.is_none()
            && unsolicited
            && is_public(&local.ip())
            && self.own.contains(&local)
        {
            self.verdict = Reflexive { kind: NatKind::Public, mapped: Some(local) };
            self.changed = true;
        }
    }

    /// The verdict, once after each change of it.
    pub fn poll_changed(&mut self) -> Option<Reflexive> {
        std::mem::take(&mut self.changed).then_some(self.verdict)
    }

    /// Judges this round's answers (a round with none keeps the last verdict: the
    /// reflectors may be gone, not the NAT changed).
    fn judge(&mut self) {
        let Some(&(_, first)) = self.answers.first() else { return };
        let ips: BTreeSet<_> = self.answers.iter().map(|(r, _)| r.ip()).collect();
        let same = self.answers.iter().all(|(_, m)| *m == first);
        let verdict = if self.answers.iter().any(|(_, m)| self.own.contains(m)) {
            Reflexive { kind: NatKind::Public, mapped: Some(first) }
        } else if !same {
            Reflexive { kind: NatKind::Hard, mapped: None }
        } else if ips.len() >= 2 {
            Reflexive { kind: NatKind::Easy, mapped: Some(first) }
        } else {
            Reflexive { kind: NatKind::Unknown, mapped: Some(first) }
        };
        if verdict != self.verdict {
            self.verdict = verdict;
            self.changed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::binding::{parse, Binding};

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Runs one round against reflectors that map us with `map(reflector)`.
    fn round(
        p: &mut NatProbe,
        now: Instant,
        map: impl Fn(SocketAddr) -> Option<SocketAddr>,
    ) -> Vec<SocketAddr> {
        p.handle_timeout(now);
        let mut asked = Vec::new();
        while let Some((to, m)) = p.poll_transmit() {
            let Some(Binding::Request(txid)) = parse(&m) else { panic!("not a request") };
            asked.push(to);
            if let Some(mapped) = map(to) {
                p.handle_answer(&txid, mapped);
            }
        }
        asked
    }

    #[test]
    fn easy_hard_public_and_unknown() {
        #[allow(clippy::disallowed_methods)] // the tests' epoch
        let t0 = Instant::now();
        let reflectors = [addr("203.0.113.10:51820"), addr("203.0.113.11:51820"), addr("10.0.0.9:51820")];
        // Easy: both reflector IPs see one mapping. Private endpoints are never asked.
        let mut p = NatProbe::new(ProbeConfig::default(), [1; 32]);
        p.set_own(vec![addr("10.0.1.2:40000")]);
        p.add_reflectors(t0, &reflectors);
        let asked = round(&mut p, t0, |_| Some(addr("198.51.100.2:40000")));
        assert_eq!(asked, reflectors[..2].to_vec());
        assert_eq!(
            p.poll_changed(),
            Some(Reflexive { kind: NatKind::Easy, mapped: Some(addr("198.51.100.2:40000")) })
        );
        assert_eq!(p.poll_changed(), None);
        // Hard: a port per destination.
        let later = t0 + ProbeConfig::default().interval;
        let port_per_reflector = |r: SocketAddr| match r.ip() {
            std::net::IpAddr::V4(v4) => {
                Some(SocketAddr::new("198.51.100.2".parse().unwrap(), 30_000 + u16::from(v4.octets()[3])))
            }
            std::net::IpAddr::V6(_) => None,
        };
        round(&mut p, later, port_per_reflector);
        assert_eq!(p.poll_changed().map(|v| v.kind), Some(NatKind::Hard));
        // Public: the reflectors see our own address.
        let mut p = NatProbe::new(ProbeConfig::default(), [2; 32]);
        p.set_own(vec![addr("203.0.113.20:51820")]);
        p.add_reflectors(t0, &reflectors);
        round(&mut p, t0, |_| Some(addr("203.0.113.20:51820")));
        assert_eq!(p.verdict().kind, NatKind::Public);
        // One reflector IP: the mapping is known, the kind is not.
        let mut p = NatProbe::new(ProbeConfig::default(), [3; 32]);
        p.add_reflectors(t0, &reflectors[..1]);
        round(&mut p, t0, |_| Some(addr("198.51.100.2:1")));
        assert_eq!(p.verdict(), Reflexive { kind: NatKind::Unknown, mapped: Some(addr("198.51.100.2:1")) });
        // A second reflector IP, announced later, is asked at once: now it can tell.
        let soon = t0 + Duration::from_secs(2);
        p.add_reflectors(soon, &reflectors[1..2]);
        assert_eq!(p.poll_timeout(), Some(soon));
        round(&mut p, soon, |_| Some(addr("198.51.100.2:1")));
        assert_eq!(p.verdict().kind, NatKind::Easy);
    }

    #[test]
    fn unanswered_requests_are_retried_then_given_up_and_strangers_ignored() {
        #[allow(clippy::disallowed_methods)] // the tests' epoch
        let t0 = Instant::now();
        let cfg = ProbeConfig::default();
        let mut p = NatProbe::new(cfg, [4; 32]);
        let r = [addr("203.0.113.10:1"), addr("203.0.113.11:1")];
        p.add_reflectors(t0, &r);
        let asked = round(&mut p, t0, |_| None);
        assert_eq!(asked.len(), 2);
        // An answer with another transaction id counts for nothing.
        p.handle_answer(&[0; 12], addr("198.51.100.2:7"));
        let mut sends = 2;
        let mut now = t0;
        let first_round_end = t0 + cfg.retry * cfg.attempts;
        while let Some(t) = p.poll_timeout().filter(|t| *t <= first_round_end) {
            now = t;
            p.handle_timeout(now);
            while p.poll_transmit().is_some() {
                sends += 1;
            }
        }
        assert_eq!(sends, 2 * cfg.attempts as usize);
        assert_eq!(p.verdict().kind, NatKind::Unknown);
        assert_eq!(now, first_round_end);
        // A round without a verdict is tried again soon, not at the interval.
        assert_eq!(p.poll_timeout(), Some(first_round_end + UNDECIDED_RETRY));
    }

    /// A request from a peer we never asked, at one of our own public addresses, makes
    /// an undecided socket public; one from a reflector we asked, or at an address that
    /// is not ours or not public, does not; reflectors' answers overrule it.
    #[test]
    fn unsolicited_requests_tell_a_public_socket() {
        #[allow(clippy::disallowed_methods)] // the tests' epoch
        let now = Instant::now();
        let own = addr("203.0.113.10:51820");
        let mut p = NatProbe::new(ProbeConfig::default(), [3; 32]);
        p.set_own(vec![own, addr("10.0.0.1:51820")]);
        p.add_reflectors(now, &[addr("198.51.100.7:4000")]);
        p.handle_request(addr("198.51.100.7:4000"), own);
        p.handle_request(addr("192.0.2.9:1234"), addr("10.0.0.1:51820"));
        p.handle_request(addr("192.0.2.9:1234"), addr("203.0.113.99:51820"));
        assert_eq!(p.verdict().kind, NatKind::Unknown);
        assert!(p.poll_changed().is_none());
        p.handle_request(addr("192.0.2.9:1234"), own);
        assert_eq!(p.verdict(), Reflexive { kind: NatKind::Public, mapped: Some(own) });
        assert!(p.poll_changed().is_some());
        // Reflectors that see another address say otherwise.
        round(&mut p, now, |_| Some(addr("198.51.100.2:40000")));
        p.handle_timeout(now + Duration::from_secs(10));
        assert_ne!(p.verdict().kind, NatKind::Public);
    }
}
