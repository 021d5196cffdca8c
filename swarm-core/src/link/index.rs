//! [`LinkIndex`]: every node's link summaries, arranged once for many queries. Building it
//! is O(nodes + links); [`LinkIndex::link_between`], the one answer to "what is known of
//! the link between A and B", is then two binary searches. A view builds it from the
//! summaries it decoded at ingest (`ClusterSnapshot::link_index`).
//!
//! It holds times, not ages: each link's measurement time and each node's confirmation
//! deadline, judged against the index's "as of" moment when asked. So an index kept
//! alive record by record ([`LinkIndex::upsert`], [`LinkIndex::advance`]) answers as a
//! fresh build at the same moment would: a measurement ages, and a node whose last
//! handshake anyone saw is older than [`CONFIRMED_WITHIN`] is no longer confirmed.

use std::collections::HashMap;
use std::time::Duration;

use libp2p_identity::PeerId;

use super::summary::{combine, implausible_claim, LinkAnswer, LinkSummaries, LinkSummary, CONFIRMED_WITHIN};
use super::vivaldi::Coordinate;
use crate::time::UnixMillis;

/// One node as the index takes it: its id, when its record was published, and the
/// summaries in it.
#[derive(Debug, Clone, Copy)]
pub struct IndexedNode<'a> {
    /// The node.
    pub peer: PeerId,
    /// When its record was published (summaries age from then).
    pub published: UnixMillis,
    /// Its summaries and coordinate, if it gossips any.
    pub summaries: Option<&'a LinkSummaries>,
}

#[derive(Debug, Clone)]
struct Indexed {
    peer: PeerId,
    coordinate: Option<Coordinate>,
    /// Sorted by peer, each with when it was measured.
    links: Vec<(LinkSummary, UnixMillis)>,
    /// Until when some record's handshake confirms it (the latest such deadline).
    confirmed_until: UnixMillis,
    /// Its claims that the coordinates' estimate shows far too low (see
    /// [`implausible_claim`]).
    implausible: u16,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct LinkIndex {
    pos: HashMap<PeerId, u32>,
    nodes: Vec<Indexed>,
    /// Positions of removed nodes, for new ones to take.
    free: Vec<u32>,
    /// The moment ages and confirmations are judged at.
    now: UnixMillis,
}

/// A node's entry: its links sorted by peer, first summary of a peer winning, with when
/// each was measured; and the peers its links confirm, with until when. A link confirms
/// both ends for [`CONFIRMED_WITHIN`] after its last handshake.
fn indexed(node: &IndexedNode<'_>, confirms: &mut Vec<(PeerId, UnixMillis)>) -> Indexed {
    let mut confirmed_until = UnixMillis(0);
    let mut links = Vec::new();
    for l in node.summaries.iter().flat_map(|s| s.links.iter()) {
        let handshake = node.published.saturating_sub(Duration::from_secs(u64::from(l.handshake_age_s)));
        let until = handshake.saturating_add(CONFIRMED_WITHIN);
        confirmed_until = confirmed_until.max(until);
        confirms.push((l.peer, until));
        links.push((*l, node.published.saturating_sub(Duration::from_millis(u64::from(l.age_ms)))));
    }
    // The first summary of a peer wins, as a linear search would find it.
    links.sort_by_key(|l| l.0.peer);
    links.dedup_by(|later, first| later.0.peer == first.0.peer);
    let coordinate = node.summaries.and_then(|s| s.coordinate);
    Indexed { peer: node.peer, coordinate, links, confirmed_until, implausible: 0 }
}

impl LinkIndex {
    /// Indexes `nodes` as of `now` (ages and handshake freshness are judged then); a
    /// node's position is its place in `nodes`.
    pub fn new<'a>(nodes: impl IntoIterator<Item = IndexedNode<'a>>, now: UnixMillis) -> Self {
        let nodes = nodes.into_iter();
        let mut pos = HashMap::with_capacity(nodes.size_hint().0);
        let mut indexed = Vec::with_capacity(nodes.size_hint().0);
        let mut confirmed_peers = Vec::new();
        for (i, node) in nodes.enumerate() {
            pos.insert(node.peer, i as u32);
            indexed.push(self::indexed(&node, &mut confirmed_peers));
        }
        for (peer, until) in confirmed_peers {
            if let Some(&i) = pos.get(&peer) {
                let n: &mut Indexed = &mut indexed[i as usize];
                n.confirmed_until = n.confirmed_until.max(until);
            }
        }
        let mut index = Self { pos, nodes: indexed, free: Vec::new(), now };
        index.cross_check();
        index
    }

    /// Moves the moment ages and confirmations are judged at to `now` (never back).
    pub fn advance(&mut self, now: UnixMillis) {
        self.now = self.now.max(now);
    }

    /// The moment ages and confirmations are judged at.
    pub fn now(&self) -> UnixMillis {
        self.now
    }

    /// A node's record is new or changed: its entry is replaced in O(its links x log),
    /// not rebuilt with the others (issue 16, part 6), and the index advances to `now`.
    /// Its links confirm their peers, as at a build (a confirmation lasts until its
    /// deadline, whoever gave it); other nodes' counts of implausible claims are not
    /// revisited. Returns its position.
    pub fn upsert(&mut self, node: IndexedNode<'_>, now: UnixMillis) -> usize {
        self.advance(now);
        let mut confirms = Vec::new();
        let entry = indexed(&node, &mut confirms);
        let at = match self.pos.get(&node.peer) {
            Some(&i) => {
                let was = self.nodes[i as usize].confirmed_until;
                let n = &mut self.nodes[i as usize];
                *n = entry;
                n.confirmed_until = n.confirmed_until.max(was);
                i as usize
            }
            None => {
                let i = match self.free.pop() {
                    Some(i) => {
                        self.nodes[i as usize] = entry;
                        i as usize
                    }
                    None => {
                        self.nodes.push(entry);
                        self.nodes.len() - 1
                    }
                };
                self.pos.insert(node.peer, i as u32);
                i
            }
        };
        for (peer, until) in confirms {
            if let Some(&j) = self.pos.get(&peer) {
                let n = &mut self.nodes[j as usize];
                n.confirmed_until = n.confirmed_until.max(until);
            }
        }
        self.nodes[at].implausible = self.implausible_of(at);
        at
    }

    /// A node left the view: its entry goes (its position is reused by the next new one).
    pub fn remove(&mut self, peer: &PeerId) -> bool {
        let Some(i) = self.pos.remove(peer) else { return false };
        let n = &mut self.nodes[i as usize];
        n.links.clear();
        (n.coordinate, n.confirmed_until, n.implausible) = (None, UnixMillis(0), 0);
        self.free.push(i);
        true
    }

    /// Counts each node's implausible claims: far below the two ends' Vivaldi estimate.
    /// O(links). (Checking each claim against the other end's own claim too cost 210 ms
    /// at 10 000 nodes, in cache misses; two ends that disagree are taken at the larger
    /// round trip where a link is looked up instead, see `combine`.)
    fn cross_check(&mut self) {
        let counts: Vec<u16> = (0..self.nodes.len()).map(|i| self.implausible_of(i)).collect();
        for (n, c) in self.nodes.iter_mut().zip(counts) {
            n.implausible = c;
        }
    }

    /// The implausible claims of the node at `i`.
    fn implausible_of(&self, i: usize) -> u16 {
        let node = &self.nodes[i];
        let bad = node.links.iter().filter(|(l, _)| {
            let Some(&j) = self.pos.get(&l.peer) else { return false };
            let claim = f64::from(l.rtt_p50_us) / 1e3;
            self.estimate_at(i, j as usize).is_some_and(|(est, err)| implausible_claim(claim, est, err))
        });
        u16::try_from(bad.count()).unwrap_or(u16::MAX)
    }

    /// Whether the node at `i` makes implausible link claims: at least 2, and a tenth
    /// of its claims (one odd measurement is not a lie).
    pub fn lies_at(&self, i: usize) -> bool {
        self.nodes
            .get(i)
            .is_some_and(|n| n.implausible >= 2 && usize::from(n.implausible) * 10 >= n.links.len())
    }

    /// The position of `peer` (its index in the snapshot's entries).
    pub fn position(&self, peer: &PeerId) -> Option<usize> {
        self.pos.get(peer).map(|&i| i as usize)
    }

    /// Nodes indexed.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node is indexed.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether some record shows a handshake of the node at `i` within
    /// [`CONFIRMED_WITHIN`] of the index's moment.
    pub fn confirmed_at(&self, i: usize) -> bool {
        self.nodes.get(i).is_some_and(|n| self.now <= n.confirmed_until)
    }

    fn measured(&self, by: usize, of: usize) -> Option<LinkAnswer> {
        let node = &self.nodes[by];
        let of = &self.nodes[of].peer;
        let k = node.links.binary_search_by(|(l, _)| l.peer.cmp(of)).ok()?;
        let (summary, at) = node.links[k];
        Some(LinkAnswer::Measured { by: node.peer, summary, age: at.age(self.now) })
    }

    /// The peers the node at position `i` measured.
    pub fn linked_peers(&self, i: usize) -> Vec<PeerId> {
        self.nodes.get(i).map(|n| n.links.iter().map(|(l, _)| l.peer).collect()).unwrap_or_default()
    }

    /// The coordinate of the node at position `i`.
    pub fn coordinate_at(&self, i: usize) -> Option<Coordinate> {
        self.nodes.get(i)?.coordinate
    }

    /// The node at position `i`.
    pub fn peer_at(&self, i: usize) -> Option<PeerId> {
        self.nodes.get(i).map(|n| n.peer)
    }

    /// What the node at position `by` claims of its link to the node at `of`: its
    /// summary and age, if it measured it.
    pub fn claim_at(&self, by: usize, of: usize) -> Option<(LinkSummary, std::time::Duration)> {
        if by >= self.nodes.len() || of >= self.nodes.len() {
            return None;
        }
        match self.measured(by, of)? {
            LinkAnswer::Measured { summary, age, .. } => Some((summary, age)),
            LinkAnswer::Estimated { .. } => None,
        }
    }

    /// The Vivaldi estimate of the round trip between the nodes at `a` and `b`, ms, and
    /// its relative error, when both have a coordinate (whether or not confirmed).
    pub fn estimate_at(&self, a: usize, b: usize) -> Option<(f64, f64)> {
        let (ca, cb) = (self.nodes.get(a)?.coordinate?, self.nodes.get(b)?.coordinate?);
        Some((ca.distance_ms(&cb), ca.error.max(cb.error)))
    }

    /// [`Self::link_between`] for the nodes at positions `a` and `b`.
    pub fn link_between_at(&self, a: usize, b: usize) -> Option<LinkAnswer> {
        if a >= self.nodes.len() || b >= self.nodes.len() {
            return None;
        }
        combine(self.measured(a, b), self.measured(b, a), || {
            let (na, nb) = (&self.nodes[a], &self.nodes[b]);
            if !(self.confirmed_at(a) && self.confirmed_at(b)) {
                return None;
            }
            Some((na.coordinate?, nb.coordinate?))
        })
    }

    /// [`Self::link_between`] asked at `now`, after the index's moment: a measurement's
    /// age counts to `now` (freshness of handshakes stays as judged at the index's moment).
    pub fn link_between_as_of(&self, a: &PeerId, b: &PeerId, now: UnixMillis) -> Option<LinkAnswer> {
        match self.link_between(a, b)? {
            LinkAnswer::Measured { by, summary, age } => {
                Some(LinkAnswer::Measured { by, summary, age: age + self.now.age(now) })
            }
            estimated => Some(estimated),
        }
    }

    /// The link between `a` and `b`: the fresher of the two ends' measurements, else a
    /// Vivaldi estimate when both ends have a coordinate and a handshake confirmed within
    /// [`CONFIRMED_WITHIN`](super::summary::CONFIRMED_WITHIN) (by their own record or
    /// anyone's), else nothing.
    pub fn link_between(&self, a: &PeerId, b: &PeerId) -> Option<LinkAnswer> {
        self.link_between_at(self.position(a)?, self.position(b)?)
    }
}
