//! The `ClusterView`: every node's picture of its swarm, built from gossiped records.
//!
//! Sans-IO: feed it with [`ClusterView::handle_record`] (signed records from the
//! network, by gossip or fetched by [`crate::record::sync`]) and
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

use crate::bounded::{BoundedBytes, BoundedVec};
use crate::identity::TunnelRecord;
use crate::link::index::{IndexedNode, LinkIndex};
use crate::link::summary::LinkSummaries;
use crate::link::vivaldi::Coordinate;
use crate::record::signed::SignedNodeRecord;
use crate::record::sync::{self, DigestEntry, RecordDigest, SyncAnswer};
use crate::record::{Extensions, Namespace, NodeRecord, RecordError, RecordPolicy, VerifiedRecord};
use crate::time::UnixMillis;

/// Settings of a [`ClusterView`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewConfig {
    /// How long a record lives after it was issued (its timestamp), at least.
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

    /// Puts `links`, measured at `measured` (wall clock), in place of the record's link
    /// summaries when they are newer than the record; whether they were. (A node's own
    /// entry with its links as it knows them now, not as it last published them.)
    pub fn take_newer_links(&mut self, links: &LinkSummaries, measured: UnixMillis) -> bool {
        if measured <= self.record.timestamp {
            return false;
        }
        let mut extensions = (*self.extensions).clone();
        extensions.links = Some(links.clone());
        self.extensions = Arc::new(extensions);
        // Summary ages count from the record's time: now the measurement's.
        self.record.timestamp = measured;
        true
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
    /// Each entry's signed record as it travels, passed on by [`Self::answer`].
    wires: HashMap<PeerId, Arc<[u8]>>,
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
            wires: HashMap::new(),
            expiry: BTreeSet::new(),
            events: VecDeque::new(),
            counters: GossipCounters::default(),
        }
    }

    /// Feeds a signed record ([`SignedNodeRecord`]) that arrived from the network at
    /// `now` (local time) and `wall` (wall-clock time), by gossip or fetched from any
    /// peer: the author's signature vouches for it, not the sender. An `Err` means the
    /// sender should be penalised.
    pub fn handle_record(
        &mut self,
        now: Instant,
        wall: UnixMillis,
        bytes: &[u8],
    ) -> Result<Ingest, RecordError> {
        match self.check(wall, bytes) {
            Ok(Some((verified, left))) => {
                Ok(self.apply(now, left, verified.record, verified.tunnel, bytes.into(), false))
            }
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

    /// Decodes and checks a record, and says how long it has left to live; `None` if it
    /// is not newer than the one held or has no life left, which then needs no further
    /// checking (its signature neither: an old record changes nothing, whoever made it).
    /// A tunnel record identical to the held one is not verified again.
    fn check(
        &self,
        wall: UnixMillis,
        bytes: &[u8],
    ) -> Result<Option<(VerifiedRecord, Duration)>, RecordError> {
        let policy = &self.config.policy;
        let opened = SignedNodeRecord::open(bytes, policy.max_size)?;
        let record = &opened.record;
        let held = self.entries.get(&record.peer_id).filter(|e| !e.local);
        if held.is_some_and(|e| e.record.seq >= record.seq) || record.peer_id == self.local {
            return Ok(None);
        }
        let left = self.lifetime_left(record, wall);
        if left.is_zero() {
            return Ok(None);
        }
        let known = held.map(|e| (&e.record.tunnel, &e.tunnel));
        let tunnel = record.verify(opened.author(), &self.namespace, wall, policy, known)?;
        opened.check_signature()?;
        Ok(Some((VerifiedRecord { record: opened.record, tunnel }, left)))
    }

    /// Inserts or refreshes the local node's own record; `wire` is its signed form
    /// ([`SignedNodeRecord::sign`]), as published.
    pub fn insert_local(&mut self, now: Instant, record: NodeRecord, tunnel: TunnelRecord, wire: Arc<[u8]>) {
        debug_assert_eq!(record.peer_id, self.local);
        let left = self.lifetime(&record);
        self.apply(now, left, record, tunnel, wire, true);
    }

    /// What this view holds, for a peer's [`Self::answer`].
    pub fn digest(&self) -> RecordDigest {
        let have = self
            .entries
            .values()
            .take(sync::MAX_DIGEST_ENTRIES)
            .map(|e| DigestEntry { id: sync::short_id(&e.record.peer_id), seq: e.record.seq })
            .collect::<Vec<_>>();
        RecordDigest { have: BoundedVec::try_from_vec(have).unwrap_or_default() }
    }

    /// The signed records a peer whose view is `digest` lacks, and this node's own when
    /// the peer holds it older (first), within [`sync::ANSWER_BUDGET`] bytes; `more`
    /// says whether some were left for the next round. Newer versions of other records
    /// the peer holds are not sent: their authors' gossip and heartbeats bring them, and
    /// in a join, when every record changes each second, sending them tripled what went
    /// across (12 801 records synced in a 64-node cold start against 4 985).
    pub fn answer(&self, digest: &RecordDigest) -> SyncAnswer {
        let theirs = digest.to_map();
        let held = |e: &ViewEntry| theirs.get(&sync::short_id(&e.record.peer_id)).copied();
        let own = self.entries.get(&self.local).filter(|e| held(e).is_none_or(|seq| seq < e.record.seq));
        let others = self.entries.values().filter(|e| !e.local && held(e).is_none());
        let mut records = Vec::new();
        let mut bytes = 0;
        let mut more = false;
        for entry in own.into_iter().chain(others) {
            let Some(wire) = self.wires.get(&entry.record.peer_id) else { continue };
            if records.len() == sync::MAX_ANSWER_RECORDS
                || (bytes > 0 && bytes + wire.len() > sync::ANSWER_BUDGET)
            {
                more = true;
                break;
            }
            let Ok(record) = BoundedBytes::try_from_slice(wire) else { continue };
            bytes += wire.len();
            records.push(record);
        }
        SyncAnswer { records: BoundedVec::try_from_vec(records).unwrap_or_default(), more }
    }

    /// How long `record` lives from its timestamp: `ttl`, or its author's heartbeats.
    fn lifetime(&self, record: &NodeRecord) -> Duration {
        self.config.ttl.max(record.refresh() * self.config.ttl_heartbeats)
    }

    /// What is left at `wall` of `record`'s lifetime, counted from its timestamp, not
    /// from its arrival: a record passed on late (by a view sync from a peer that got it
    /// late itself, or replayed) must not live again, or a departed node's record would
    /// circulate for as long as some view still held it. Clocks may differ by the
    /// policy's skew, at most one lifetime: a record lives at most twice its lifetime
    /// after its timestamp by the receiver's clock.
    fn lifetime_left(&self, record: &NodeRecord, wall: UnixMillis) -> Duration {
        let lifetime = self.lifetime(record);
        let age = record.timestamp.age(wall).saturating_sub(self.config.policy.max_clock_skew.min(lifetime));
        lifetime.saturating_sub(age)
    }

    fn apply(
        &mut self,
        now: Instant,
        lifetime_left: Duration,
        record: NodeRecord,
        tunnel: TunnelRecord,
        wire: Arc<[u8]>,
        local: bool,
    ) -> Ingest {
        let peer = record.peer_id;
        if !local && peer == self.local {
            self.counters.stale += 1;
            return Ingest::Stale;
        }
        let expires_at = now + lifetime_left;
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
        self.wires.insert(peer, wire);
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
            self.wires.remove(&peer);
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

    /// Puts the local node's own link summaries, measured at `measured` (wall clock),
    /// in place of those of its last published record when they are newer: the node's
    /// own links as it knows them now, not as it last told the swarm (up to a heartbeat
    /// ago). Placement reads a node's own links first, so a tunnel that came up since
    /// the last heartbeat counts at once.
    pub fn with_own_links(mut self, links: &LinkSummaries, measured: UnixMillis) -> Self {
        let local = self.local;
        if let Ok(i) = self.entries.binary_search_by(|e| e.record.peer_id.cmp(&local)) {
            self.entries[i].take_newer_links(links, measured);
        }
        self
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
    use crate::codec;
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

    #[test]
    fn a_snapshot_takes_the_local_nodes_newer_own_links() {
        let (a, b, c) = (id(1), id(2), id(3));
        let mut snapshot = ClusterSnapshot {
            local: a,
            // A's record (published at NOW) knows only B; B's knows nobody.
            entries: vec![
                entry(1, None, vec![summary(b, 10, 5, 0)]),
                entry(2, None, vec![]),
                entry(3, None, vec![]),
            ],
        };
        snapshot.entries.sort_by_key(|e| e.record.peer_id);
        let later = NOW.saturating_add(Duration::from_secs(2));
        assert!(!matches!(
            snapshot.link_index(later).link_between(&a, &c),
            Some(LinkAnswer::Measured { .. })
        ));
        // A's link table, a second after the record: B and a new tunnel to C.
        let measured = NOW.saturating_add(Duration::from_secs(1));
        let own = LinkSummaries {
            coordinate: None,
            links: BoundedVec::try_from_vec(vec![summary(b, 12, 5, 0), summary(c, 3, 1, 200)]).unwrap(),
        };
        let fresh = snapshot.clone().with_own_links(&own, measured);
        let links = fresh.link_index(later);
        match links.link_between(&a, &c) {
            Some(LinkAnswer::Measured { by, summary, age }) => {
                assert_eq!((by, summary.rtt_p50_us), (a, 3_000));
                assert_eq!(age, Duration::from_millis(1_200), "aged from the measurement");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(links.link_between(&a, &b), Some(LinkAnswer::Measured { summary, .. }) if summary.rtt_p50_us == 12_000)
        );
        // Other records and the rest of the local one are untouched; an older
        // measurement than the record changes nothing.
        assert_eq!(fresh.get(&b), snapshot.get(&b));
        assert_eq!(fresh.get(&a).unwrap().record.seq, snapshot.get(&a).unwrap().record.seq);
        let stale = snapshot.clone().with_own_links(&own, UnixMillis(NOW.0 - 1));
        assert_eq!(stale, snapshot);
    }

    fn view(local_seed: u8, config: ViewConfig) -> ClusterView {
        ClusterView::new(keypair(local_seed).public().to_peer_id(), ns(), config)
    }

    fn signed(record: &NodeRecord, seed: u8) -> Arc<[u8]> {
        SignedNodeRecord::sign(record, &keypair(seed), MAX_RECORD_SIZE).unwrap()
    }

    fn gossip(view: &mut ClusterView, now: Instant, seed: u8, seq: u64) -> Result<Ingest, RecordError> {
        view.handle_record(now, NOW, &signed(&node_record(&keypair(seed), seq), seed))
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
        assert_eq!(v.handle_record(t0, NOW, &signed(&first, 1)), Ok(Ingest::Inserted));
        // Same signed tunnel record, newer seq, two hours later: the age check still runs.
        let mut later = first.clone();
        later.seq = 2;
        later.timestamp = UnixMillis(NOW.0 + 7_200_000);
        let err = v.handle_record(t0, UnixMillis(NOW.0 + 7_200_000), &signed(&later, 1)).unwrap_err();
        assert_eq!(err.reason(), "tunnel_record_expired");
        // A stale record is ignored without further checks.
        let mut stale = first;
        stale.cpu_cores = 1;
        assert_eq!(v.handle_record(t0, NOW, &signed(&stale, 1)), Ok(Ingest::Stale));
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
        v.handle_record(t0, NOW, &signed(&r, 1)).unwrap();
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
        let record = node_record(&key, 1);
        // Key 2 signs a record of key 1; an unsigned record; a truncated one.
        let body = codec::encode(&record, MAX_RECORD_SIZE).unwrap();
        let forged = keypair(2).sign(&body).unwrap();
        let forged = SignedNodeRecord::from_parts(&body, &forged).unwrap();
        assert_eq!(v.handle_record(t0, NOW, &forged), Err(RecordError::BadSignature));
        assert_eq!(v.handle_record(t0, NOW, &body).unwrap_err().reason(), "malformed");
        assert!(v.handle_record(t0, NOW, &signed(&record, 1)[..10]).is_err());
        let mut other_ns = record;
        other_ns.namespace = Namespace::new("other").unwrap();
        assert_eq!(v.handle_record(t0, NOW, &signed(&other_ns, 1)), Err(RecordError::WrongNamespace));
        assert_eq!(v.counters().rejected_total(), 4);
        assert_eq!(v.counters().rejected.get("malformed"), Some(&2));
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
        let wire = signed(&rec, 0);
        v.insert_local(t0, rec, tunnel, wire);
        // Our own record looping back through gossip is not applied as a remote record.
        assert_eq!(gossip(&mut v, t0, 0, 9), Ok(Ingest::Stale));
        assert!(v.get(&local.public().to_peer_id()).unwrap().local);
        let snap = v.snapshot();
        assert_eq!(snap.len(), 1);
        assert!(snap.get(&local.public().to_peer_id()).is_some());
    }

    /// Syncs `to` from `from` until `from` has nothing more, as the sync protocol's
    /// asker does; returns the rounds and what each answer carried.
    fn sync(from: &ClusterView, to: &mut ClusterView, now: Instant) -> Vec<(usize, bool)> {
        let mut rounds = Vec::new();
        loop {
            let answer = from.answer(&to.digest());
            rounds.push((answer.records.len(), answer.more));
            for record in answer.records.iter() {
                to.handle_record(now, NOW, record).unwrap();
            }
            if !answer.more || rounds.len() > 100 {
                return rounds;
            }
        }
    }

    #[test]
    fn a_joiner_fetches_every_record_a_peer_holds_and_only_what_it_lacks() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut old = view(0, ViewConfig::default());
        let own = node_record(&keypair(0), 1);
        let tunnel = own.tunnel.verify(&own.peer_id, NOW, &Default::default()).unwrap();
        old.insert_local(t0, own.clone(), tunnel, signed(&own, 0));
        for seed in 1..=20 {
            gossip(&mut old, t0, seed, 5).unwrap();
        }
        // A joiner holds an old record of node 3 (and no own record yet).
        let mut joiner = view(30, ViewConfig::default());
        gossip(&mut joiner, t0, 3, 2).unwrap();
        let answer = old.answer(&joiner.digest());
        assert_eq!(answer.records.len(), 20, "19 others it lacks and the answerer's own");
        assert!(!answer.more);
        let first = SignedNodeRecord::open(&answer.records[0], MAX_RECORD_SIZE).unwrap();
        assert_eq!(first.author(), &own.peer_id, "the answerer's own record first");
        assert_eq!(sync(&old, &mut joiner, t0), vec![(20, false)]);
        assert_eq!(joiner.len(), 21);
        // Node 3's newer record is not sent: its author's gossip brings it.
        assert_eq!(joiner.get(&keypair(3).public().to_peer_id()).unwrap().record.seq, 2);
        // Synced: nothing more either way.
        assert_eq!(old.answer(&joiner.digest()).records.len(), 0);
        assert_eq!(joiner.answer(&old.digest()).records.len(), 0, "the joiner holds no own record yet");
        // The answerer's own record goes across when the asker holds it older.
        let newer = node_record(&keypair(0), 2);
        let tunnel = newer.tunnel.verify(&newer.peer_id, NOW, &Default::default()).unwrap();
        old.insert_local(t0, newer.clone(), tunnel, signed(&newer, 0));
        assert_eq!(sync(&old, &mut joiner, t0), vec![(1, false)]);
        assert_eq!(joiner.get(&newer.peer_id).unwrap().record.seq, 2);
    }

    #[test]
    fn a_large_view_goes_across_in_budgeted_rounds() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut big = view(0, ViewConfig::default());
        // Records of ~6 KiB (labels), 100 of them: two answers of at most 512 KiB.
        for seed in 1..=100u8 {
            let key = keypair(seed);
            let mut record = node_record(&key, 1);
            let labels = (0..24)
                .map(|i| crate::record::Label::parse(&format!("k{i}={}", "v".repeat(250))).unwrap())
                .collect::<Vec<_>>();
            record.labels = BoundedVec::try_from_vec(labels).unwrap();
            big.handle_record(t0, NOW, &signed(&record, seed)).unwrap();
        }
        let mut joiner = view(200, ViewConfig::default());
        let rounds = sync(&big, &mut joiner, t0);
        assert_eq!(joiner.len(), 100);
        assert!(rounds.len() >= 2, "{rounds:?}");
        assert!(rounds[..rounds.len() - 1].iter().all(|&(n, more)| n > 0 && more), "{rounds:?}");
        assert_eq!(rounds.iter().map(|r| r.0).sum::<usize>(), 100);
        let answer = big.answer(&RecordDigest::default());
        let bytes: usize = answer.records.iter().map(|r| r.len()).sum();
        assert!(bytes <= sync::ANSWER_BUDGET, "{bytes}");
    }

    #[test]
    fn a_record_lives_from_its_timestamp_not_from_its_arrival() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let later = |secs: u64| UnixMillis(NOW.0 + secs * 1000);
        // Default: 30 s lifetime (heartbeats of test records are shorter), clock skew
        // allowance 30 s (the policy's 60 s, at most a lifetime).
        let bytes = signed(&node_record(&keypair(1), 1), 1);
        let peer = keypair(1).public().to_peer_id();
        // Arriving 40 s after its timestamp: 20 s left.
        let mut v = view(0, ViewConfig::default());
        assert_eq!(v.handle_record(t0, later(40), &bytes), Ok(Ingest::Inserted));
        assert_eq!(v.get(&peer).unwrap().expires_at, t0 + s(20));
        // 60 s after it (a sync passing on what it got late, a replay): not taken at all.
        let mut late = view(0, ViewConfig::default());
        assert_eq!(late.handle_record(t0, later(60), &bytes), Ok(Ingest::Stale));
        assert!(late.is_empty());
        // So views passing it on, each just before its copy expires, cannot keep it: by
        // 60 s after its timestamp (lifetime and clock allowance) no copy is left.
        let mut holder = view(2, ViewConfig::default());
        holder.handle_record(t0, NOW, &bytes).unwrap();
        let mut at = 0;
        for seed in 3..10 {
            let next_at = holder.get(&peer).map_or(at, |e| (e.expires_at - t0).as_secs().saturating_sub(1));
            let mut next = view(seed, ViewConfig::default());
            for record in holder.answer(&next.digest()).records.iter() {
                next.handle_record(t0 + s(next_at), later(next_at), record).unwrap();
            }
            (holder, at) = (next, next_at);
        }
        assert!(at <= 59, "passed on at {at} s");
        holder.handle_timeout(t0 + s(60));
        assert!(holder.get(&peer).is_none(), "a copy outlived 60 s");
    }

    #[test]
    fn expired_records_are_not_passed_on() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut v = view(0, ViewConfig::default());
        gossip(&mut v, t0, 1, 1).unwrap();
        v.handle_timeout(t0 + Duration::from_secs(31));
        assert!(v.is_empty());
        assert_eq!(v.answer(&RecordDigest::default()).records.len(), 0);
        assert!(v.wires.is_empty());
    }
}
