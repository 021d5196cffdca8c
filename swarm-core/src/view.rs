//! The `ClusterView`: every node's picture of its swarm, built from gossiped records.
//!
//! Sans-IO: feed it with [`ClusterView::handle_gossip`] (bytes from the network) and
//! [`ClusterView::insert_local`] (the node's own record), call
//! [`ClusterView::handle_timeout`] when [`ClusterView::poll_timeout`] is due, and drain
//! [`ClusterView::poll_event`] until it returns `None` after every call.
//!
//! A record's extensions (link summaries and coordinate, leased GPUs) are decoded once, as
//! it enters the view, into its [`ViewEntry`]; readers never decode them again.
//!
//! Rules: the highest sequence number wins; a record expires `ttl` (or three of its
//! publisher's heartbeats, if longer) after it was last received (local time, so clock
//! skew between nodes does not matter); the view holds at
//! most `max_records` records, so a flood of fresh identities cannot grow it unbounded.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use libp2p_identity::PeerId;

use crate::codec;
use crate::identity::TunnelRecord;
use crate::link::index::{IndexedNode, LinkIndex};
use crate::link::vivaldi::Coordinate;
use crate::record::{Extensions, Namespace, NodeRecord, RecordError, RecordPolicy, VerifiedRecord};
use crate::time::UnixMillis;

/// Settings of a [`ClusterView`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewConfig {
    /// How long a record lives after it was last received, at least.
    pub ttl: Duration,
    /// A record also lives this many times its publisher's announced heartbeat, when
    /// that is longer than `ttl` (a large swarm stretches its heartbeat).
    pub ttl_heartbeats: u32,
    /// Most records held; records of new peers beyond this are ignored.
    pub max_records: usize,
    /// Checks applied to records from the network.
    pub policy: RecordPolicy,
}

impl Default for ViewConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30),
            ttl_heartbeats: 3,
            max_records: 20_000,
            policy: RecordPolicy::default(),
        }
    }
}

/// One node's record as held in a view.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewEntry {
    /// The record.
    pub record: NodeRecord,
    /// Its tunnel record, signature verified.
    pub tunnel: TunnelRecord,
    /// When this version was received.
    pub received_at: Instant,
    /// When it expires unless a newer one arrives.
    pub expires_at: Instant,
    /// Whether this is the local node's own record.
    pub local: bool,
    /// The record's extensions, decoded when it entered the view (shared by snapshots).
    pub extensions: Arc<Extensions>,
}

impl ViewEntry {
    /// An entry for `record`, its extensions decoded.
    pub fn new(
        record: NodeRecord,
        tunnel: TunnelRecord,
        received_at: Instant,
        expires_at: Instant,
        local: bool,
    ) -> Self {
        // A record without extensions (most heartbeats of GPU-only nodes) shares one
        // empty value instead of allocating its own.
        static EMPTY: OnceLock<Arc<Extensions>> = OnceLock::new();
        let extensions = if record.extensions.is_empty() {
            EMPTY.get_or_init(Arc::default).clone()
        } else {
            Arc::new(Extensions::decode(&record))
        };
        Self { record, tunnel, received_at, expires_at, local, extensions }
    }

    /// The node's gossiped network coordinate.
    pub fn coordinate(&self) -> Option<Coordinate> {
        self.extensions.coordinate()
    }

    /// The entry as the link index takes it.
    pub(crate) fn indexed(&self) -> IndexedNode<'_> {
        IndexedNode {
            peer: self.record.peer_id,
            published: self.record.timestamp,
            summaries: self.extensions.links.as_ref(),
        }
    }
}

/// What happened to a view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewEvent {
    /// A peer's first record arrived.
    Inserted {
        /// The peer.
        peer: PeerId,
    },
    /// A peer's record was replaced by a newer one.
    Updated {
        /// The peer.
        peer: PeerId,
        /// The new sequence number.
        seq: u64,
    },
    /// A peer's record expired and was removed.
    Expired {
        /// The peer.
        peer: PeerId,
    },
}

/// What became of a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingest {
    /// It is the first record of its peer.
    Inserted,
    /// It replaced an older record.
    Updated,
    /// Its sequence number is not newer than the one held; ignored.
    Stale,
    /// The view is full; ignored.
    Full,
}

/// Counters of what a view accepted and refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GossipCounters {
    /// Records that entered the view.
    pub accepted: u64,
    /// Valid records ignored as not newer.
    pub stale: u64,
    /// Valid records ignored because the view is full.
    pub full: u64,
    /// Refused records by [`RecordError::reason`].
    pub rejected: BTreeMap<&'static str, u64>,
    /// Records that expired.
    pub expired: u64,
}

impl GossipCounters {
    /// All refused records.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

/// A node's picture of its swarm. See the module documentation.
#[derive(Debug)]
pub struct ClusterView {
    local: PeerId,
    namespace: Namespace,
    config: ViewConfig,
    entries: HashMap<PeerId, ViewEntry>,
    expiry: BTreeSet<(Instant, PeerId)>,
    events: VecDeque<ViewEvent>,
    counters: GossipCounters,
}

impl ClusterView {
    /// An empty view for node `local` in `namespace`.
    pub fn new(local: PeerId, namespace: Namespace, config: ViewConfig) -> Self {
        Self {
            local,
            namespace,
            config,
            entries: HashMap::new(),
            expiry: BTreeSet::new(),
            events: VecDeque::new(),
            counters: GossipCounters::default(),
        }
    }

    /// Feeds a record that arrived by gossip from signed `source` at `now` (local time)
    /// and `wall` (wall-clock time). An `Err` means the sender should be penalised.
    pub fn handle_gossip(
        &mut self,
        now: Instant,
        wall: UnixMillis,
        source: Option<&PeerId>,
        bytes: &[u8],
    ) -> Result<Ingest, RecordError> {
        let result = match source {
            None => Err(RecordError::Unsigned),
            Some(author) => self.check(wall, author, bytes),
        };
        match result {
            Ok(Some(verified)) => Ok(self.apply(now, verified.record, verified.tunnel, false)),
            Ok(None) => {
                self.counters.stale += 1;
                Ok(Ingest::Stale)
            }
            Err(e) => {
                *self.counters.rejected.entry(e.reason()).or_default() += 1;
                Err(e)
            }
        }
    }

    /// Decodes and checks a record; `None` if it is not newer than the one held, which
    /// then needs no further checking. A tunnel record identical to the held one is not
    /// verified again.
    fn check(
        &self,
        wall: UnixMillis,
        author: &PeerId,
        bytes: &[u8],
    ) -> Result<Option<VerifiedRecord>, RecordError> {
        let policy = &self.config.policy;
        let record: NodeRecord = codec::decode(bytes, policy.max_size)?;
        let held = self.entries.get(&record.peer_id).filter(|e| !e.local);
        if held.is_some_and(|e| e.record.seq >= record.seq) && record.peer_id == *author {
            return Ok(None);
        }
        let known = held.map(|e| (&e.record.tunnel, &e.tunnel));
        let tunnel = record.verify(author, &self.namespace, wall, policy, known)?;
        Ok(Some(VerifiedRecord { record, tunnel }))
    }

    /// Inserts or refreshes the local node's own record.
    pub fn insert_local(&mut self, now: Instant, record: NodeRecord, tunnel: TunnelRecord) {
        debug_assert_eq!(record.peer_id, self.local);
        self.apply(now, record, tunnel, true);
    }

    fn apply(&mut self, now: Instant, record: NodeRecord, tunnel: TunnelRecord, local: bool) -> Ingest {
        let peer = record.peer_id;
        if !local && peer == self.local {
            self.counters.stale += 1;
            return Ingest::Stale;
        }
        let expires_at = now + self.config.ttl.max(record.refresh() * self.config.ttl_heartbeats);
        let seq = record.seq;
        let outcome = match self.entries.get(&peer) {
            Some(old) if old.record.seq >= seq => {
                self.counters.stale += 1;
                return Ingest::Stale;
            }
            Some(old) => {
                self.expiry.remove(&(old.expires_at, peer));
                self.events.push_back(ViewEvent::Updated { peer, seq });
                Ingest::Updated
            }
            None if self.entries.len() >= self.config.max_records => {
                self.counters.full += 1;
                return Ingest::Full;
            }
            None => {
                self.events.push_back(ViewEvent::Inserted { peer });
                Ingest::Inserted
            }
        };
        self.counters.accepted += 1;
        self.expiry.insert((expires_at, peer));
        // Decoded once, here: every reader of the view uses the typed extensions.
        self.entries.insert(peer, ViewEntry::new(record, tunnel, now, expires_at, local));
        outcome
    }

    /// Removes every record whose time is up at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, peer)) = self.expiry.first() {
            if at > now {
                break;
            }
            self.expiry.pop_first();
            self.entries.remove(&peer);
            self.counters.expired += 1;
            self.events.push_back(ViewEvent::Expired { peer });
        }
    }

    /// The next moment a record expires.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expiry.first().map(|(at, _)| *at)
    }

    /// The next event; drain until `None`.
    pub fn poll_event(&mut self) -> Option<ViewEvent> {
        self.events.pop_front()
    }

    /// The record of `peer`.
    pub fn get(&self, peer: &PeerId) -> Option<&ViewEntry> {
        self.entries.get(peer)
    }

    /// All records, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &ViewEntry> {
        self.entries.values()
    }

    /// How many records the view holds, the local one included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the view holds no record.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The counters.
    pub fn counters(&self) -> &GossipCounters {
        &self.counters
    }

    /// The namespace this view belongs to.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// A copy of the records, sorted by peer id, for readers outside the driver.
    pub fn snapshot(&self) -> ClusterSnapshot {
        let mut entries: Vec<ViewEntry> = self.entries.values().cloned().collect();
        entries.sort_by_key(|e| e.record.peer_id);
        ClusterSnapshot { local: self.local, entries }
    }
}

/// A point-in-time copy of a [`ClusterView`].
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSnapshot {
    /// The node that took it.
    pub local: PeerId,
    /// Its records, sorted by peer id.
    pub entries: Vec<ViewEntry>,
}

impl ClusterSnapshot {
    /// The record of `peer`.
    pub fn get(&self, peer: &PeerId) -> Option<&ViewEntry> {
        self.entries.binary_search_by(|e| e.record.peer_id.cmp(peer)).ok().map(|i| &self.entries[i])
    }

    /// How many records it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The peers it holds, sorted.
    pub fn peers(&self) -> Vec<PeerId> {
        self.entries.iter().map(|e| e.record.peer_id).collect()
    }

    /// Its link summaries arranged for [`LinkIndex::link_between`], as of `now`; a
    /// node's position in the index is its position in `entries`.
    pub fn link_index(&self, now: UnixMillis) -> LinkIndex {
        LinkIndex::new(self.entries.iter().map(ViewEntry::indexed), now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounded::BoundedVec;
    use crate::identity::tests::keypair;
    use crate::link::summary::tests::{at, id, summary};
    use crate::link::summary::{LinkAnswer, LinkSummaries, LinkSummary};
    use crate::record::tests::{node_record, ns, NOW};
    use crate::record::MAX_RECORD_SIZE;

    fn entry(seed: u8, coordinate: Option<Coordinate>, links: Vec<LinkSummary>) -> ViewEntry {
        let key = keypair(seed);
        let mut record = crate::record::tests::node_record(&key, 1);
        let s = LinkSummaries { coordinate, links: BoundedVec::try_from_vec(links).unwrap() };
        record.extensions = BoundedVec::try_from_vec(vec![s.to_extension().unwrap()]).unwrap();
        #[allow(clippy::disallowed_methods)]
        let now = std::time::Instant::now();
        ViewEntry::new(record, crate::identity::tests::record_for(&key, NOW.0), now, now, false)
    }

    #[test]
    fn measured_estimated_or_nothing() {
        let (a, b, c, d, e) = (id(1), id(2), id(3), id(4), id(5));
        let mut snapshot = ClusterSnapshot {
            local: a,
            entries: vec![
                // A measured B (2 s ago) and D; B measured A (500 ms ago).
                entry(1, Some(at(0.0)), vec![summary(b, 10, 5, 2000), summary(d, 30, 5, 0)]),
                entry(2, Some(at(10.0)), vec![summary(a, 11, 5, 500)]),
                // C talks to someone (a fresh handshake) but nobody measured C-D.
                entry(3, Some(at(40.0)), vec![summary(e, 5, 10, 0)]),
                entry(4, Some(at(30.0)), vec![]),
                // E's only handshake, as C reports it, is 10 s old: fine. F is unknown.
                entry(5, Some(at(50.0)), vec![]),
            ],
        };
        snapshot.entries.sort_by_key(|e| e.record.peer_id);
        let links = snapshot.link_index(NOW);
        match links.link_between(&a, &b).unwrap() {
            LinkAnswer::Measured { by, summary, age } => {
                assert_eq!((by, summary.rtt_p50_us), (b, 11_000), "the fresher end wins");
                assert_eq!(age, Duration::from_millis(500));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(links.link_between(&d, &a), Some(LinkAnswer::Measured { by, .. }) if by == a));
        // Asked later, a measurement is older by as much.
        let later = NOW.saturating_add(Duration::from_secs(3));
        assert!(matches!(
            links.link_between_as_of(&a, &b, later),
            Some(LinkAnswer::Measured { age, .. }) if age == Duration::from_millis(3_500)
        ));
        match links.link_between(&c, &d).unwrap() {
            LinkAnswer::Estimated { rtt_ms, error } => assert_eq!((rtt_ms, error), (11.0, 0.1)),
            other => panic!("{other:?}"),
        }
        // Later, every handshake is older than 180 s: no estimates, measurements stay.
        let later = NOW.saturating_add(Duration::from_secs(200));
        let later_links = snapshot.link_index(later);
        assert_eq!(later_links.link_between(&c, &d), None);
        assert!(later_links.link_between(&a, &b).is_some());
        assert_eq!(links.link_between(&a, &id(9)), None, "an unknown node");
        // By id and by position, the index answers alike, for every pair; unknown nodes
        // get nothing.
        for index in [&links, &later_links] {
            for (i, x) in snapshot.entries.iter().enumerate() {
                for (j, y) in snapshot.entries.iter().enumerate() {
                    let (x, y) = (x.record.peer_id, y.record.peer_id);
                    assert_eq!(index.link_between(&x, &y), index.link_between_at(i, j), "{x} {y}");
                }
                assert_eq!(index.link_between(&x.record.peer_id, &id(6)), None);
            }
        }
    }

    fn view(local_seed: u8, config: ViewConfig) -> ClusterView {
        ClusterView::new(keypair(local_seed).public().to_peer_id(), ns(), config)
    }

    fn gossip(view: &mut ClusterView, now: Instant, seed: u8, seq: u64) -> Result<Ingest, RecordError> {
        let key = keypair(seed);
        let bytes = codec::encode(&node_record(&key, seq), MAX_RECORD_SIZE).unwrap();
        view.handle_gossip(now, NOW, Some(&key.public().to_peer_id()), &bytes)
    }

    fn drain(view: &mut ClusterView) -> Vec<ViewEvent> {
        std::iter::from_fn(|| view.poll_event()).collect()
    }

    #[test]
    fn highest_sequence_wins() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut v = view(0, ViewConfig::default());
        let peer = keypair(1).public().to_peer_id();
        assert_eq!(gossip(&mut v, t0, 1, 5), Ok(Ingest::Inserted));
        assert_eq!(gossip(&mut v, t0, 1, 5), Ok(Ingest::Stale));
        assert_eq!(gossip(&mut v, t0, 1, 4), Ok(Ingest::Stale));
        assert_eq!(gossip(&mut v, t0, 1, 6), Ok(Ingest::Updated));
        assert_eq!(v.get(&peer).unwrap().record.seq, 6);
        assert_eq!(drain(&mut v), vec![ViewEvent::Inserted { peer }, ViewEvent::Updated { peer, seq: 6 }]);
        assert_eq!(v.counters().accepted, 2);
        assert_eq!(v.counters().stale, 2);
    }

    #[test]
    fn records_expire_after_ttl_from_last_receipt() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let ttl = Duration::from_secs(30);
        let mut v = view(0, ViewConfig { ttl, ..ViewConfig::default() });
        let peer = keypair(1).public().to_peer_id();
        gossip(&mut v, t0, 1, 1).unwrap();
        assert_eq!(v.poll_timeout(), Some(t0 + ttl));
        // A newer record 10 s later pushes the expiry out.
        gossip(&mut v, t0 + Duration::from_secs(10), 1, 2).unwrap();
        assert_eq!(v.poll_timeout(), Some(t0 + Duration::from_secs(40)));
        drain(&mut v);
        v.handle_timeout(t0 + Duration::from_secs(39));
        assert_eq!(v.len(), 1);
        v.handle_timeout(t0 + Duration::from_secs(40));
        assert!(v.is_empty());
        assert_eq!(v.poll_timeout(), None);
        assert_eq!(drain(&mut v), vec![ViewEvent::Expired { peer }]);
        // It may come back.
        assert_eq!(gossip(&mut v, t0 + Duration::from_secs(41), 1, 3), Ok(Ingest::Inserted));
    }

    #[test]
    fn an_unchanged_tunnel_record_still_expires() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut v = view(0, ViewConfig::default());
        let key = keypair(1);
        let peer = key.public().to_peer_id();
        let first = node_record(&key, 1);
        let bytes = codec::encode(&first, MAX_RECORD_SIZE).unwrap();
        assert_eq!(v.handle_gossip(t0, NOW, Some(&peer), &bytes), Ok(Ingest::Inserted));
        // Same signed tunnel record, newer seq, two hours later: the age check still runs.
        let mut later = first.clone();
        later.seq = 2;
        later.timestamp = UnixMillis(NOW.0 + 7_200_000);
        let bytes = codec::encode(&later, MAX_RECORD_SIZE).unwrap();
        let err = v.handle_gossip(t0, UnixMillis(NOW.0 + 7_200_000), Some(&peer), &bytes).unwrap_err();
        assert_eq!(err.reason(), "tunnel_record_expired");
        // A stale record is ignored without further checks.
        let mut stale = first;
        stale.cpu_cores = 1;
        let bytes = codec::encode(&stale, MAX_RECORD_SIZE).unwrap();
        assert_eq!(v.handle_gossip(t0, NOW, Some(&peer), &bytes), Ok(Ingest::Stale));
        assert_eq!(v.get(&peer).unwrap().record.cpu_cores, 16);
    }

    #[test]
    fn a_stretched_heartbeat_stretches_the_ttl() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut v = view(0, ViewConfig::default());
        let key = keypair(1);
        let mut r = node_record(&key, 1);
        r.refresh_ms = 100_000;
        let bytes = codec::encode(&r, MAX_RECORD_SIZE).unwrap();
        v.handle_gossip(t0, NOW, Some(&key.public().to_peer_id()), &bytes).unwrap();
        assert_eq!(v.poll_timeout(), Some(t0 + Duration::from_secs(300)));
    }

    #[test]
    fn the_view_is_bounded() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut v = view(0, ViewConfig { max_records: 2, ..ViewConfig::default() });
        assert_eq!(gossip(&mut v, t0, 1, 1), Ok(Ingest::Inserted));
        assert_eq!(gossip(&mut v, t0, 2, 1), Ok(Ingest::Inserted));
        assert_eq!(gossip(&mut v, t0, 3, 1), Ok(Ingest::Full));
        // Known peers still update.
        assert_eq!(gossip(&mut v, t0, 2, 2), Ok(Ingest::Updated));
        assert_eq!(v.counters().full, 1);
    }

    #[test]
    fn bad_records_are_counted_by_reason() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut v = view(0, ViewConfig::default());
        let key = keypair(1);
        let bytes = codec::encode(&node_record(&key, 1), MAX_RECORD_SIZE).unwrap();
        let other = keypair(2).public().to_peer_id();
        assert_eq!(v.handle_gossip(t0, NOW, Some(&other), &bytes), Err(RecordError::WrongAuthor));
        assert_eq!(v.handle_gossip(t0, NOW, None, &bytes), Err(RecordError::Unsigned));
        assert!(v.handle_gossip(t0, NOW, Some(&other), &bytes[..10]).is_err());
        assert_eq!(v.counters().rejected_total(), 3);
        assert_eq!(v.counters().rejected.get("malformed"), Some(&1));
        assert!(v.is_empty());
    }

    #[test]
    fn a_peer_cannot_overwrite_the_local_record() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let local = keypair(0);
        let mut v = view(0, ViewConfig::default());
        let rec = node_record(&local, 1);
        let tunnel = rec.tunnel.verify(&rec.peer_id, NOW, &Default::default()).unwrap();
        v.insert_local(t0, rec, tunnel);
        // Our own record looping back through gossip is not applied as a remote record.
        assert_eq!(gossip(&mut v, t0, 0, 9), Ok(Ingest::Stale));
        assert!(v.get(&local.public().to_peer_id()).unwrap().local);
        let snap = v.snapshot();
        assert_eq!(snap.len(), 1);
        assert!(snap.get(&local.public().to_peer_id()).is_some());
    }
}
