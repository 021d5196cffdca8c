//! View synchronisation: what two nodes exchange when they connect, so that a joiner
//! (or the two sides of a healed partition) hold every record at once instead of after
//! every author's next heartbeat.
//!
//! The asking side sends a [`RecordDigest`]: the sequence number it holds of each record
//! (authors by a short id). The answering side returns, in a [`SyncAnswer`], the signed
//! records ([`super::SignedNodeRecord`]) the asker lacks (and its own when the asker
//! holds it older), within a byte budget, and says whether more remain; the asker then
//! asks again with its new digest.
//! Every record goes through the same checks as a gossiped one: the answering side
//! cannot forge or alter a record, only withhold one.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};

use crate::bounded::{BoundedBytes, BoundedVec};
use crate::codec::WireMessage;
use crate::ratelimit::{RateLimit, RateLimiter};

use super::signed::ENVELOPE_OVERHEAD;
use super::MAX_RECORD_SIZE;

/// Most entries in a digest (the view's default capacity).
pub const MAX_DIGEST_ENTRIES: usize = 20_000;
/// Most records in one answer.
pub const MAX_ANSWER_RECORDS: usize = 1024;
/// Bytes of records one answer carries at most (a larger first record still goes).
pub const ANSWER_BUDGET: usize = 512 * 1024;
/// Largest encoded digest: a header, a length and per entry an id and a sequence number.
pub const MAX_DIGEST_SIZE: usize = 16 + MAX_DIGEST_ENTRIES * (8 + 10);
/// Largest encoded answer.
pub const MAX_ANSWER_SIZE: usize =
    ANSWER_BUDGET + MAX_RECORD_SIZE + ENVELOPE_OVERHEAD + 16 + MAX_ANSWER_RECORDS * 3;

/// An author's short id in a digest: the last 8 bytes of its `PeerId` (key bytes for
/// Ed25519 identities). Two authors sharing one only cost a record fetched late (it
/// still comes by gossip), never a wrong record: every record is checked in full.
pub type ShortId = [u8; 8];

/// The short id of `peer`.
pub fn short_id(peer: &PeerId) -> ShortId {
    // The multihash's digest ends the peer id's bytes: no allocation per record.
    let bytes = peer.as_ref().digest();
    let mut id = [0u8; 8];
    let tail = &bytes[bytes.len().saturating_sub(8)..];
    id[8 - tail.len()..].copy_from_slice(tail);
    id
}

/// One record a node holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestEntry {
    /// The author.
    pub id: ShortId,
    /// The sequence number held.
    pub seq: u64,
}

/// What a node holds: the request of the sync protocol.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordDigest {
    /// One entry per record held.
    pub have: BoundedVec<DigestEntry, MAX_DIGEST_ENTRIES>,
}

impl WireMessage for RecordDigest {
    const KIND: u8 = 0x17;
    const VERSION: u8 = 1;
}

impl RecordDigest {
    /// The digest as a map from author to sequence number.
    pub fn to_map(&self) -> HashMap<ShortId, u64> {
        let mut map = HashMap::with_capacity(self.have.len());
        for entry in self.have.iter() {
            let seq = map.entry(entry.id).or_insert(entry.seq);
            *seq = (*seq).max(entry.seq);
        }
        map
    }
}

/// Records the asker lacks: the answer of the sync protocol.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncAnswer {
    /// Signed records, each as its envelope's wire bytes.
    pub records: BoundedVec<BoundedBytes<{ MAX_RECORD_SIZE + ENVELOPE_OVERHEAD }>, MAX_ANSWER_RECORDS>,
    /// Whether the answering side holds more the asker lacks.
    pub more: bool,
}

impl WireMessage for SyncAnswer {
    const KIND: u8 = 0x18;
    const VERSION: u8 = 1;
}

/// Most rounds one sync takes with one peer (each brings up to [`ANSWER_BUDGET`] bytes).
pub const MAX_ROUNDS: u32 = 64;

/// Whether the asker asks again after `answer`, its `rounds`-th, of which `rejected`
/// records were refused: while the answer says more remain, not past [`MAX_ROUNDS`],
/// and never after a bad record or an empty answer that claims more.
pub fn ask_again(answer: &SyncAnswer, rejected: usize, rounds: u32) -> bool {
    answer.more && rejected == 0 && !answer.records.is_empty() && rounds < MAX_ROUNDS
}

/// Anti-entropy while the swarm is changing: one sync with a random member this often.
pub const SYNC_FAST: Duration = Duration::from_secs(1);
/// Anti-entropy once the swarm has settled.
pub const SYNC_SLOW: Duration = Duration::from_secs(30);
/// The swarm has settled when no new member's record arrived for this long.
pub const SETTLED_AFTER: Duration = Duration::from_secs(10);

/// When a node syncs with one random member besides the syncs on connecting
/// (anti-entropy): every [`SYNC_FAST`] while new members' records keep arriving (a node
/// that synced early in a join, with a peer that knew little, and opens no new
/// connection, would otherwise wait for every later joiner's heartbeat), every
/// [`SYNC_SLOW`] after [`SETTLED_AFTER`] without one.
#[derive(Debug, Clone)]
pub struct SyncSchedule {
    next: Instant,
    last_news: Instant,
}

impl SyncSchedule {
    /// A node started at `now`: the swarm is news.
    pub fn new(now: Instant) -> Self {
        Self { next: now + SYNC_FAST, last_news: now }
    }

    /// A new member's record entered the view at `now`.
    pub fn on_news(&mut self, now: Instant) {
        self.last_news = now;
        self.next = self.next.min(now + SYNC_FAST);
    }

    /// When the next sync is due.
    pub fn poll_timeout(&self) -> Instant {
        self.next
    }

    /// Whether a sync is due at `now`; if so the one after is scheduled.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        let settled = now.saturating_duration_since(self.last_news) >= SETTLED_AFTER;
        self.next = now + if settled { SYNC_SLOW } else { SYNC_FAST };
        true
    }
}

/// Syncs a node runs at once. Each sync asks its peer for every record the node lacks,
/// so syncs started together (a joiner's first connections, opened within a few hundred
/// milliseconds) bring the same records again and again: in a 64-node cold start, two
/// to three records that the view already held for each one it lacked. A sync that
/// waits for a slot sends its digest when it starts, holding what the earlier ones
/// brought, and is answered with what is still missing.
pub const MAX_SYNCS: usize = 2;
/// A sync whose peer has not answered a round for this long no longer holds a slot: a
/// busy peer (the bootstrap node of a cold start, say) must not hold up the others.
pub const SYNC_PATIENCE: Duration = Duration::from_millis(500);

/// Which view syncs run and which wait ([`MAX_SYNCS`] at once, [`SYNC_PATIENCE`]),
/// first come first served. Sans-IO and bounded by its caller: every peer in it is
/// connected, and leaves by [`Self::on_done`] when its sync ends or it disconnects.
#[derive(Debug, Clone)]
pub struct SyncSlots<P> {
    running: Vec<Running<P>>,
    waiting: VecDeque<P>,
}

#[derive(Debug, Clone)]
struct Running<P> {
    peer: P,
    /// Rounds asked so far.
    rounds: u32,
    /// When its last round was asked.
    asked: Instant,
    /// Past its patience: runs on, but holds no slot.
    overdue: bool,
}

impl<P: Copy + Eq> Default for SyncSlots<P> {
    fn default() -> Self {
        Self { running: Vec::new(), waiting: VecDeque::new() }
    }
}

impl<P: Copy + Eq> SyncSlots<P> {
    /// A sync with `peer` is wanted at `now`: `true` if it may start now (it then runs),
    /// else it waits for [`Self::poll_start`]. Asking again for a peer that runs or
    /// waits changes nothing (and says `false`).
    pub fn request(&mut self, now: Instant, peer: P) -> bool {
        if self.running.iter().any(|r| r.peer == peer) || self.waiting.contains(&peer) {
            return false;
        }
        self.mark_overdue(now);
        if self.busy() < MAX_SYNCS {
            self.running.push(Running { peer, rounds: 1, asked: now, overdue: false });
            return true;
        }
        self.waiting.push_back(peer);
        false
    }

    /// The sync with `peer` asks another round at `now`: its patience starts again.
    pub fn on_round(&mut self, now: Instant, peer: P) {
        if let Some(run) = self.running.iter_mut().find(|r| r.peer == peer) {
            run.rounds += 1;
            run.asked = now;
            run.overdue = false;
        }
    }

    /// Rounds the sync with `peer` has asked, if it runs (1 once started).
    pub fn rounds(&self, peer: P) -> Option<u32> {
        self.running.iter().find(|r| r.peer == peer).map(|r| r.rounds)
    }

    /// The sync with `peer` ended (its last answer, a failure, its connection closed),
    /// or `peer` left while it waited.
    pub fn on_done(&mut self, peer: P) {
        self.running.retain(|r| r.peer != peer);
        self.waiting.retain(|p| *p != peer);
    }

    /// The next waiting peer whose sync may start at `now`, if a slot is free: call
    /// until `None` after [`Self::on_done`] and at [`Self::poll_timeout`].
    pub fn poll_start(&mut self, now: Instant) -> Option<P> {
        self.mark_overdue(now);
        if self.busy() >= MAX_SYNCS {
            return None;
        }
        let peer = self.waiting.pop_front()?;
        self.running.push(Running { peer, rounds: 1, asked: now, overdue: false });
        Some(peer)
    }

    /// When a sync that holds a slot runs out of patience, so that a waiting one may
    /// start; `None` while none waits. Syncs [`Self::poll_start`] found past their
    /// patience hold no slot and set no deadline (theirs has passed: a caller woken for
    /// it would find nothing to do, again and again).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.waiting.is_empty() {
            return None;
        }
        self.running.iter().filter(|r| !r.overdue).map(|r| r.asked + SYNC_PATIENCE).min()
    }

    /// Syncs running or waiting.
    pub fn len(&self) -> usize {
        self.running.len() + self.waiting.len()
    }

    /// Whether no sync runs or waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn mark_overdue(&mut self, now: Instant) {
        for run in &mut self.running {
            if now >= run.asked + SYNC_PATIENCE {
                run.overdue = true;
            }
        }
    }

    /// Running syncs that hold a slot.
    fn busy(&self) -> usize {
        self.running.iter().filter(|r| !r.overdue).count()
    }
}

/// Answers one peer may have at once (a joiner of a 10 000-node swarm with 2 kB records
/// needs about 40 rounds).
pub const ANSWER_BURST: u32 = 64;
/// Answers a peer earns back per second.
pub const ANSWERS_PER_SECOND: u32 = 1;
/// Peers whose answer budgets are kept; a new peer beyond it gets none until an old
/// budget is full again and forgotten.
pub const MAX_BUDGETS: usize = 4096;

/// The answering side's limit: each answer is up to [`ANSWER_BUDGET`] bytes for a
/// request of a few, so each peer gets [`ANSWER_BURST`] answers at once and
/// [`ANSWERS_PER_SECOND`] after that, and at most [`MAX_BUDGETS`] peers are tracked (a
/// peer's budget is forgotten once full again).
pub type AnswerBudget = RateLimiter<PeerId>;

/// An [`AnswerBudget`] with the limits above.
pub fn answer_budget() -> AnswerBudget {
    RateLimiter::new(RateLimit {
        per_second: ANSWERS_PER_SECOND,
        burst: ANSWER_BURST,
        max_sources: MAX_BUDGETS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    #[test]
    #[allow(clippy::disallowed_methods)]
    fn syncs_wait_for_a_slot_and_a_slow_peer_gives_its_slot_up() {
        let t0 = Instant::now();
        let mut slots = SyncSlots::default();
        assert!(slots.request(t0, 1));
        assert!(slots.request(t0, 2));
        assert!(!slots.request(t0, 3), "both slots are taken");
        assert!(!slots.request(t0, 4));
        assert!(!slots.request(t0, 3), "asked twice, waits once");
        assert!(!slots.request(t0, 1), "already running");
        assert_eq!(slots.len(), 4);
        assert_eq!(slots.poll_start(t0), None);

        // An answer frees a slot: the first waiting peer starts, the next still waits.
        slots.on_done(1);
        assert_eq!(slots.poll_start(t0), Some(3));
        assert_eq!(slots.poll_start(t0), None);

        // Peer 2 answers a round and asks another: its patience starts again.
        let t1 = t0 + SYNC_PATIENCE / 2;
        assert_eq!(slots.rounds(2), Some(1));
        slots.on_round(t1, 2);
        assert_eq!((slots.rounds(2), slots.rounds(4)), (Some(2), None), "4 waits");
        assert_eq!(slots.poll_timeout(), Some(t0 + SYNC_PATIENCE), "peer 3's, the earlier");
        // Peer 3 never answers: past its patience, peer 4 starts beside it.
        let t2 = t0 + SYNC_PATIENCE;
        assert_eq!(slots.poll_start(t2), Some(4));
        assert_eq!(slots.poll_timeout(), None, "nobody waits");
        assert_eq!(slots.poll_start(t2), None);

        // Two hold slots again (4 fresh, 2 renewed), 3 is overdue: a waiting peer's
        // deadline is a running one's patience, never the overdue one's, already past.
        assert!(!slots.request(t2, 7));
        assert_eq!(slots.poll_timeout(), Some(t1 + SYNC_PATIENCE));
        assert_eq!(slots.poll_start(t1 + SYNC_PATIENCE), Some(7), "2 ran out as well");
        assert_eq!(slots.poll_timeout(), None);
        slots.on_done(7);

        // One slot is free (4 holds the other); then a waiting peer that disconnects
        // leaves, and so do the running ones.
        assert!(slots.request(t2, 5));
        assert!(!slots.request(t2, 8));
        slots.on_done(8);
        assert_eq!(slots.poll_timeout(), None, "8 left");
        for peer in [2, 3, 4, 5] {
            slots.on_done(peer);
        }
        assert!(slots.is_empty());
        assert!(slots.request(t2, 6), "all slots free again");
    }

    #[test]
    fn the_largest_digest_and_answer_fit_their_caps() {
        let have = (0..MAX_DIGEST_ENTRIES)
            .map(|i| DigestEntry { id: (i as u64).to_be_bytes(), seq: u64::MAX })
            .collect::<Vec<_>>();
        let digest = RecordDigest { have: BoundedVec::try_from_vec(have).unwrap() };
        let bytes = codec::encode(&digest, MAX_DIGEST_SIZE).unwrap();
        assert_eq!(codec::decode::<RecordDigest>(&bytes, MAX_DIGEST_SIZE).unwrap(), digest);

        // The budget filled with small records, then one of the largest.
        let small = BoundedBytes::try_from_vec(vec![7u8; 512]).unwrap();
        let mut records = vec![small; ANSWER_BUDGET / 512 - 1];
        records.push(BoundedBytes::try_from_vec(vec![7u8; MAX_RECORD_SIZE + ENVELOPE_OVERHEAD]).unwrap());
        let answer = SyncAnswer { records: BoundedVec::try_from_vec(records).unwrap(), more: true };
        let bytes = codec::encode(&answer, MAX_ANSWER_SIZE).unwrap();
        assert_eq!(codec::decode::<SyncAnswer>(&bytes, MAX_ANSWER_SIZE).unwrap(), answer);
    }

    #[test]
    fn a_sync_goes_on_while_more_remain_and_the_peer_behaves() {
        let record = BoundedBytes::try_from_vec(vec![1u8; 8]).unwrap();
        let more = SyncAnswer { records: BoundedVec::try_from_vec(vec![record]).unwrap(), more: true };
        assert!(ask_again(&more, 0, 1));
        assert!(!ask_again(&more, 1, 1), "a bad record ends it");
        assert!(!ask_again(&more, 0, MAX_ROUNDS), "at most MAX_ROUNDS");
        assert!(!ask_again(&SyncAnswer { more: true, ..SyncAnswer::default() }, 0, 1), "empty but more");
        assert!(!ask_again(&SyncAnswer { more: false, ..more }, 0, 1), "done");
    }

    #[test]
    fn short_ids_differ_and_a_digest_keeps_the_highest_seq() {
        let a = crate::identity::tests::keypair(1).public().to_peer_id();
        let b = crate::identity::tests::keypair(2).public().to_peer_id();
        assert_ne!(short_id(&a), short_id(&b));
        assert_eq!(short_id(&a)[..], a.to_bytes()[a.to_bytes().len() - 8..], "the id's last 8 bytes");
        let have = vec![
            DigestEntry { id: short_id(&a), seq: 3 },
            DigestEntry { id: short_id(&a), seq: 9 },
            DigestEntry { id: short_id(&b), seq: 1 },
        ];
        let map = RecordDigest { have: BoundedVec::try_from_vec(have).unwrap() }.to_map();
        assert_eq!(map[&short_id(&a)], 9);
        assert_eq!(map[&short_id(&b)], 1);
    }

    #[test]
    fn answers_are_budgeted_per_peer_and_the_budgets_are_bounded() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut budget = answer_budget();
        let mut next = 0;
        let mut fresh = || {
            next += 1;
            crate::overlay::tests::peer(next)
        };
        let a = fresh();
        for _ in 0..ANSWER_BURST {
            assert!(budget.allow(t0, a));
        }
        assert!(!budget.allow(t0, a), "the burst is spent");
        assert!(budget.allow(t0, fresh()), "others have their own");
        assert!(!budget.allow(t0 + Duration::from_millis(900), a));
        assert!(budget.allow(t0 + Duration::from_millis(1000), a), "one a second comes back");
        assert!(!budget.allow(t0 + Duration::from_millis(1000), a));
        // A flood of identities: at most MAX_BUDGETS tracked, newcomers refused...
        for _ in 0..MAX_BUDGETS {
            budget.allow(t0, fresh());
        }
        assert_eq!(budget.len(), MAX_BUDGETS);
        assert!(!budget.allow(t0, fresh()));
        // ...until the old budgets are full again and forgotten.
        let later = t0 + Duration::from_secs(65);
        assert!(budget.allow(later, fresh()));
        assert!(budget.len() < 10, "{}", budget.len());
    }

    #[test]
    fn anti_entropy_is_fast_while_members_arrive_and_slow_after() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut schedule = SyncSchedule::new(t0);
        assert!(!schedule.handle_timeout(at(999)));
        let mut syncs = Vec::new();
        for ms in (0..60_000).step_by(100) {
            if ms == 3_000 {
                schedule.on_news(at(ms));
            }
            if schedule.handle_timeout(at(ms)) {
                syncs.push(ms);
            }
        }
        // Every second until 10 s after the last news (at 3 s), then every 30 s.
        assert_eq!(syncs[..3], [1_000, 2_000, 3_000]);
        assert_eq!(*syncs.iter().rfind(|&&t| t <= 13_000).unwrap(), 13_000);
        assert_eq!(syncs.iter().filter(|&&t| t > 13_000).copied().collect::<Vec<_>>(), vec![43_000]);
        // News while slow brings the next sync within a second.
        schedule.on_news(at(50_000));
        assert_eq!(schedule.poll_timeout(), at(51_000));
    }
}
