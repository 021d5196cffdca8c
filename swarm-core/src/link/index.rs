//! [`LinkIndex`]: a snapshot's link summaries decoded once, for many queries. Building it
//! is O(records + links); [`LinkIndex::link_between`] is then two binary searches instead
//! of [`ClusterSnapshot::link_between`]'s decoding and scan of every record. It answers
//! exactly what the snapshot answers (tested over every pair).

use std::collections::HashMap;

use libp2p_identity::PeerId;

use super::summary::{age, combine, handshake_fresh, LinkAnswer, LinkSummaries, LinkSummary};
use super::vivaldi::Coordinate;
use crate::time::UnixMillis;
use crate::view::ClusterSnapshot;

#[derive(Debug, Clone)]
struct Indexed {
    peer: PeerId,
    coordinate: Option<Coordinate>,
    /// Sorted by peer.
    links: Vec<(LinkSummary, std::time::Duration)>,
    confirmed: bool,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct LinkIndex {
    pos: HashMap<PeerId, u32>,
    nodes: Vec<Indexed>,
}

impl LinkIndex {
    /// Indexes `view` as of `now` (ages and handshake freshness are judged then).
    pub fn new(view: &ClusterSnapshot, now: UnixMillis) -> Self {
        let mut pos = HashMap::with_capacity(view.entries.len());
        let mut nodes = Vec::with_capacity(view.entries.len());
        let mut confirmed_peers = Vec::new();
        for (i, e) in view.entries.iter().enumerate() {
            let r = &e.record;
            pos.insert(r.peer_id, i as u32);
            let s = LinkSummaries::from_record(r).ok().flatten();
            let mut confirmed = false;
            let mut links = Vec::new();
            if let Some(s) = &s {
                for l in s.links.iter() {
                    if handshake_fresh(r, l, now) {
                        confirmed = true;
                        confirmed_peers.push(l.peer);
                    }
                    links.push((*l, age(r, l, now)));
                }
            }
            // The first summary of a peer wins, as a linear search would find it.
            links.sort_by_key(|l| l.0.peer);
            links.dedup_by(|later, first| later.0.peer == first.0.peer);
            nodes.push(Indexed {
                peer: r.peer_id,
                coordinate: s.and_then(|s| s.coordinate),
                links,
                confirmed,
            });
        }
        for peer in confirmed_peers {
            if let Some(&i) = pos.get(&peer) {
                nodes[i as usize].confirmed = true;
            }
        }
        Self { pos, nodes }
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

    /// Whether some record shows a recently confirmed handshake of the node at `i`.
    pub fn confirmed_at(&self, i: usize) -> bool {
        self.nodes.get(i).is_some_and(|n| n.confirmed)
    }

    fn measured(&self, by: usize, of: usize) -> Option<LinkAnswer> {
        let node = &self.nodes[by];
        let of = &self.nodes[of].peer;
        let k = node.links.binary_search_by(|(l, _)| l.peer.cmp(of)).ok()?;
        let (summary, age) = node.links[k];
        Some(LinkAnswer::Measured { by: node.peer, summary, age })
    }

    /// [`ClusterSnapshot::link_between`] for the nodes at positions `a` and `b`.
    pub fn link_between_at(&self, a: usize, b: usize) -> Option<LinkAnswer> {
        if a >= self.nodes.len() || b >= self.nodes.len() {
            return None;
        }
        combine(self.measured(a, b), self.measured(b, a), || {
            let (na, nb) = (&self.nodes[a], &self.nodes[b]);
            if !(na.confirmed && nb.confirmed) {
                return None;
            }
            Some((na.coordinate?, nb.coordinate?))
        })
    }

    /// [`ClusterSnapshot::link_between`], from the index.
    pub fn link_between(&self, a: &PeerId, b: &PeerId) -> Option<LinkAnswer> {
        self.link_between_at(self.position(a)?, self.position(b)?)
    }
}
