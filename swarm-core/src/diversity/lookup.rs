//! An iterative Kademlia look-up whose candidates obey the routing table's range rule,
//! sans I/O (the node's look-ups for its namespace's providers, and the look-ups of
//! [`super::sim`]): at most [`LookupLimits::per_range`] peers of one address range among
//! the `k` closest it keeps, nearest first, as go-libp2p-kad-dht's queries do. Without
//! it, once a look-up asks one sybil, the sybils' answers (all closer than anything
//! honest) fill its `k` closest and it ends among them; with it, they hold 3 places.
//!
//! A candidate's range is that of the address the answer gives for it, the one the
//! look-up will dial: a sybil claiming an address in another range is not there when
//! dialed, and counts as failed.
//!
//! The caller feeds the first candidates (its routing table's closest) with
//! [`Lookup::offer`], asks each peer [`Lookup::poll_ask`] returns, and reports
//! [`Lookup::on_answer`] or [`Lookup::on_failure`], until [`Lookup::is_done`]; then
//! [`Lookup::closest`] holds the `k` closest that answered. `D` is the distance to the
//! target (any ordered type: Kademlia's 256-bit XOR distance in the node, 64 bits in the
//! simulation).
//!
//! ```
//! use swarm_core::diversity::lookup::{Lookup, LookupLimits};
//! let mut lookup: Lookup<u32, u64> = Lookup::new(LookupLimits { k: 2, ..LookupLimits::default() });
//! lookup.offer(1, 10, None);
//! while let Some(peer) = lookup.poll_ask() {
//!     // Peer 1 knows peer 2, closer to the target; peer 2 knows nobody.
//!     let closer = if peer == 1 { vec![(2, 5, None)] } else { vec![] };
//!     lookup.on_answer(&peer, closer);
//! }
//! assert!(lookup.is_done());
//! assert_eq!(lookup.closest().copied().collect::<Vec<_>>(), vec![2, 1]);
//! ```

use std::collections::HashSet;
use std::hash::Hash;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::bounded::{BoundedBytes, BoundedVec};
use crate::codec::WireMessage;
use crate::tally::Tally;

use super::Range;

/// The bounds of one look-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupLimits {
    /// How many closest peers it looks for (Kademlia's k, 20).
    pub k: usize,
    /// Peers asked at once (Kademlia's alpha, 3).
    pub alpha: usize,
    /// Peers of one range among the `k` closest kept (3: the routing table's per-table
    /// bound); `usize::MAX` for none.
    pub per_range: usize,
    /// Most peers asked in all, so a look-up that sybils keep feeding ends.
    pub max_asked: usize,
}

impl Default for LookupLimits {
    fn default() -> Self {
        Self { k: 20, alpha: 3, per_range: super::DiversityLimits::default().per_table, max_asked: 100 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    New,
    Asking,
    Answered,
}

#[derive(Debug, Clone)]
struct Candidate<P, D> {
    peer: P,
    distance: D,
    range: Option<Range>,
    state: State,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Lookup<P, D> {
    limits: LookupLimits,
    /// Every candidate offered and not failed, nearest first (at most `k` per answer and
    /// `max_asked` answers).
    candidates: Vec<Candidate<P, D>>,
    /// Every peer offered (kept, dropped or failed): none is offered twice.
    seen: HashSet<P>,
    asking: usize,
    asked: usize,
}

impl<P: Hash + Eq + Clone, D: Ord + Copy> Lookup<P, D> {
    /// A look-up with no candidates yet.
    pub fn new(limits: LookupLimits) -> Self {
        Self {
            limits: LookupLimits { k: limits.k.max(1), alpha: limits.alpha.max(1), ..limits },
            candidates: Vec::new(),
            seen: HashSet::new(),
            asking: 0,
            asked: 0,
        }
    }

    /// `peer`, at `distance` from the target and reached at `ip` (`None`: unknown or
    /// not global, not limited), becomes a candidate unless it was offered before.
    pub fn offer(&mut self, peer: P, distance: D, ip: Option<IpAddr>) {
        if !self.seen.insert(peer.clone()) {
            return;
        }
        let at = self.candidates.partition_point(|c| c.distance <= distance);
        let range = ip.and_then(Range::of);
        self.candidates.insert(at, Candidate { peer, distance, range, state: State::New });
    }

    /// The look-up's `k` closest: the candidates, nearest first, that the range bound
    /// lets in (those of a range already holding its places are left out), at most `k`.
    fn window(&self) -> impl Iterator<Item = &Candidate<P, D>> {
        self.screened().filter_map(|(c, admitted)| admitted.then_some(c)).take(self.limits.k)
    }

    /// The candidates, nearest first, each with whether the range bound lets it into
    /// the closest (counting only those let in before it).
    fn screened(&self) -> impl Iterator<Item = (&Candidate<P, D>, bool)> {
        let mut per_range: Tally<Range> = Tally::default();
        let per = self.limits.per_range;
        self.candidates.iter().map(move |c| match c.range {
            Some(range) if per_range.get(&range) >= per => (c, false),
            Some(range) => {
                per_range.add(range);
                (c, true)
            }
            None => (c, true),
        })
    }

    /// The next peer to ask, if fewer than `alpha` are being asked, the `max_asked` bound
    /// is not reached and one of the `k` closest has not been asked.
    pub fn poll_ask(&mut self) -> Option<P> {
        if self.asking >= self.limits.alpha || self.asked >= self.limits.max_asked {
            return None;
        }
        let peer = self.window().find(|c| c.state == State::New)?.peer.clone();
        let c = self.candidates.iter_mut().find(|c| c.peer == peer)?;
        c.state = State::Asking;
        self.asking += 1;
        self.asked += 1;
        Some(peer)
    }

    /// `peer` answered with `closer` peers (each with its distance to the target and the
    /// address it will be dialed at; the first `k` are read). An answer from a peer not
    /// being asked is ignored.
    pub fn on_answer(&mut self, peer: &P, closer: impl IntoIterator<Item = (P, D, Option<IpAddr>)>) {
        let Some(c) = self.candidates.iter_mut().find(|c| c.peer == *peer && c.state == State::Asking) else {
            return;
        };
        c.state = State::Answered;
        self.asking -= 1;
        for (peer, distance, ip) in closer.into_iter().take(self.limits.k) {
            self.offer(peer, distance, ip);
        }
    }

    /// `peer` did not answer (unreachable, timed out, refused): it leaves the candidates.
    pub fn on_failure(&mut self, peer: &P) {
        let Some(at) = self.candidates.iter().position(|c| c.peer == *peer && c.state == State::Asking)
        else {
            return;
        };
        self.candidates.remove(at);
        self.asking -= 1;
    }

    /// Whether nothing is being asked and nothing more will be: the `k` closest have all
    /// answered, or `max_asked` were asked.
    pub fn is_done(&self) -> bool {
        self.asking == 0
            && (self.asked >= self.limits.max_asked || self.window().all(|c| c.state == State::Answered))
    }

    /// The `k` closest that answered, nearest first.
    pub fn closest(&self) -> impl Iterator<Item = &P> {
        self.window().filter(|c| c.state == State::Answered).map(|c| &c.peer)
    }

    /// Whether `peer` is being asked.
    pub fn is_asking(&self, peer: &P) -> bool {
        self.candidates.iter().any(|c| c.peer == *peer && c.state == State::Asking)
    }

    /// Peers asked so far.
    pub fn asked(&self) -> usize {
        self.asked
    }

    /// Candidates left out of the `k` closest for their range: those the range bound
    /// passed over before the `k` closest were complete.
    pub fn crowded(&self) -> usize {
        let mut admitted = 0;
        let mut crowded = 0;
        for (_, ok) in self.screened() {
            if admitted == self.limits.k {
                break;
            }
            if ok {
                admitted += 1;
            } else {
                crowded += 1;
            }
        }
        crowded
    }
}

/// Longest key a look-up may look for (a namespace's provider key is 32 bytes).
pub const MAX_KEY_LEN: usize = 64;
/// Longest peer id on the wire (an inlined Ed25519 key is 38 bytes).
pub const MAX_PEER_ID_LEN: usize = 64;
/// Longest address on the wire (a relayed one names two peers: about 90 bytes).
pub const MAX_ADDR_LEN: usize = 160;
/// Addresses given per peer.
pub const MAX_ADDRS: usize = 8;
/// Peers per list of an answer (Kademlia's k).
pub const MAX_FOUND: usize = 20;
/// Cap of a request on the wire.
pub const MAX_FIND_REQUEST_SIZE: usize = 4 * 1024;
/// Cap of an answer on the wire.
pub const MAX_FIND_ANSWER_SIZE: usize = 64 * 1024;

/// A peer as an answer names it: its libp2p `PeerId` and multiaddrs, as bytes (checked
/// by the node when it reads them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoundPeer {
    /// The peer's id.
    pub peer: BoundedBytes<MAX_PEER_ID_LEN>,
    /// Where it listens.
    pub addrs: BoundedVec<BoundedBytes<MAX_ADDR_LEN>, MAX_ADDRS>,
}

/// "Which peers do you know closest to `key`, and who provides it?", and with
/// `announce`, "store me as a provider of `key`, at `addrs`".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindRequest {
    /// What is looked for (a namespace's provider key).
    pub key: BoundedBytes<MAX_KEY_LEN>,
    /// Whether the asker announces itself as a provider of `key`.
    pub announce: bool,
    /// The asker's addresses, for its provider record.
    pub addrs: BoundedVec<BoundedBytes<MAX_ADDR_LEN>, MAX_ADDRS>,
}

impl WireMessage for FindRequest {
    const KIND: u8 = 0x19;
    const VERSION: u8 = 1;
}

/// The answer: the closest peers the answerer's routing table holds, and the providers
/// of the key it stores.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindAnswer {
    /// Up to k peers closest to the key.
    pub closer: BoundedVec<FoundPeer, MAX_FOUND>,
    /// Up to k providers of the key.
    pub providers: BoundedVec<FoundPeer, MAX_FOUND>,
}

impl WireMessage for FindAnswer {
    const KIND: u8 = 0x1A;
    const VERSION: u8 = 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn limits(k: usize) -> LookupLimits {
        LookupLimits { k, alpha: 2, per_range: 3, max_asked: 100 }
    }

    #[test]
    fn asks_alpha_at_a_time_the_closest_first_until_the_k_closest_answered() {
        let mut l: Lookup<u32, u64> = Lookup::new(limits(3));
        for (p, d) in [(1, 50), (2, 40), (3, 30), (4, 60)] {
            l.offer(p, d, None);
        }
        assert_eq!(l.poll_ask(), Some(3));
        assert_eq!(l.poll_ask(), Some(2));
        assert_eq!(l.poll_ask(), None, "alpha = 2 in flight");
        // 3 knows 5, the closest yet, and 1 again (offered once only).
        l.on_answer(&3, [(5, 10, None), (1, 50, None)]);
        assert_eq!(l.poll_ask(), Some(5));
        l.on_failure(&2);
        // 2 failed: 1 is among the 3 closest now, 4 is not.
        assert_eq!(l.poll_ask(), Some(1));
        l.on_answer(&5, []);
        assert!(!l.is_done(), "1 is still being asked");
        l.on_answer(&1, [(4, 60, None)]);
        assert!(l.is_done());
        assert_eq!(l.closest().copied().collect::<Vec<_>>(), vec![5, 3, 1]);
        assert_eq!(l.asked(), 4);
        // A late or unsolicited answer changes nothing.
        l.on_answer(&2, [(9, 1, None)]);
        assert_eq!(l.closest().copied().collect::<Vec<_>>(), vec![5, 3, 1]);
    }

    #[test]
    fn one_range_holds_at_most_three_of_the_closest_however_close_its_peers_are() {
        let mut l: Lookup<u32, u64> = Lookup::new(limits(5));
        for p in 0..5 {
            l.offer(p, 100 + u64::from(p), ip(&format!("11.0.{p}.1")));
        }
        let first = l.poll_ask().unwrap();
        // A sybil answer: ten peers of one /24, all closer than anyone honest (the first
        // k = 5 are read).
        l.on_answer(&first, (10..20).map(|p| (p, u64::from(p), ip(&format!("203.0.114.{p}")))));
        let kept: Vec<u32> = l.window().map(|c| c.peer).collect();
        assert_eq!(kept, vec![10, 11, 12, 0, 1], "{kept:?}");
        assert_eq!(l.crowded(), 2);
        while let Some(p) = l.poll_ask() {
            l.on_answer(&p, []);
        }
        assert!(l.is_done());
        assert_eq!(l.closest().copied().collect::<Vec<_>>(), vec![10, 11, 12, 0, 1]);
        // Local addresses are not limited.
        let mut lan: Lookup<u32, u64> = Lookup::new(limits(5));
        for p in 0..8 {
            lan.offer(p, u64::from(p), ip("10.0.0.1"));
        }
        assert_eq!(lan.window().count(), 5);
        assert_eq!(lan.crowded(), 0);
    }

    #[test]
    fn a_full_answer_fits_its_cap() {
        let addr = BoundedBytes::try_from_vec(vec![0xAB; MAX_ADDR_LEN]).unwrap();
        let peer = FoundPeer {
            peer: BoundedBytes::try_from_vec(vec![1; MAX_PEER_ID_LEN]).unwrap(),
            addrs: BoundedVec::try_from_vec(vec![addr; MAX_ADDRS]).unwrap(),
        };
        let list = BoundedVec::try_from_vec(vec![peer; MAX_FOUND]).unwrap();
        let answer = FindAnswer { closer: list.clone(), providers: list };
        let bytes = crate::codec::encode(&answer, MAX_FIND_ANSWER_SIZE).unwrap();
        assert_eq!(crate::codec::decode::<FindAnswer>(&bytes, MAX_FIND_ANSWER_SIZE).unwrap(), answer);
        let request = FindRequest {
            key: BoundedBytes::try_from_vec(vec![2; MAX_KEY_LEN]).unwrap(),
            announce: true,
            addrs: answer.closer[0].addrs.clone(),
        };
        crate::codec::encode(&request, MAX_FIND_REQUEST_SIZE).unwrap();
    }

    #[test]
    fn a_look_up_fed_without_end_stops_at_max_asked() {
        let mut l: Lookup<u64, u64> =
            Lookup::new(LookupLimits { k: 2, alpha: 1, per_range: usize::MAX, max_asked: 10 });
        l.offer(u64::MAX, u64::MAX, None);
        let mut next = u64::MAX - 1;
        while let Some(p) = l.poll_ask() {
            // Every answer names one peer closer still.
            l.on_answer(&p, [(next, next, None)]);
            next -= 1;
        }
        assert!(l.is_done());
        assert_eq!(l.asked(), 10);
        assert_eq!(l.seen.len(), 11);
        assert!(l.candidates.len() <= 11);
    }
}
