//! Live placements watching their links (issue 16, part 2), sans-IO.
//!
//! The node that holds a placement watches every link the task constrained: origin to
//! member (`origin_limits`), and member to member for a gang (`member_limits`). At each
//! check (the caller runs [`PlacementWatch::check`] at the link judge's interval, with
//! the freshest summary it has of each link: its own for the origin's links, the
//! members' gossiped claims for theirs), a link is judged by the same rule that chose
//! it ([`check_limits`]: round trip at the median, loss, jitter, measured throughput).
//! A link past a limit raises [`WatchEvent::Breached`] once; it recovers
//! ([`WatchEvent::Recovered`]) when it meets every limit scaled by [`RECOVER_RATIO`]
//! (the SLA judge's margin), so a link at the limit does not flap. An unmeasured link
//! (no summary) is not judged: the watch never invents a breach.
//!
//! A placement is watched until its leases expire unless renewed ([`PlacementWatch::renew`])
//! or it is released ([`PlacementWatch::unwatch`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p_identity::PeerId;

use super::gang::pair;
use super::score::{check_limits, Rejection, ScoreWeights, Scored};
use super::task::{LinkLimits, TaskSpec};
use super::Placement;
use super::PlacementIndex;
use crate::link::summary::LinkSummary;

/// A breached link recovers at this share of its limits (a throughput minimum is
/// divided by it).
pub const RECOVER_RATIO: f64 = 0.8;
/// Placements watched at most; more are refused (a node holds a handful).
pub const MAX_WATCHED: usize = 1024;

/// A constrained link past (or back within) a task's limit.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkBreach {
    /// The task.
    pub task: String,
    /// The member at the far end of the link.
    pub member: PeerId,
    /// The other end: the origin, or another member.
    pub other: PeerId,
    /// Whether `other` is the origin (else a gang member).
    pub from_origin: bool,
    /// `rtt`, `loss`, `jitter` or `throughput`.
    pub metric: &'static str,
    /// Its value (ms, ratio, ms, bits per second).
    pub value: f64,
    /// The task's limit, in the same unit.
    pub limit: f64,
}

/// What a check found.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    /// A constrained link passed a limit of its task.
    Breached(LinkBreach),
    /// A breached link met its task's limits again (with the margin).
    Recovered {
        /// The task.
        task: String,
        /// The member at the far end.
        member: PeerId,
        /// The other end.
        other: PeerId,
    },
}

/// Why a placement is not watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// [`MAX_WATCHED`] placements are watched already.
    #[error("too many placements watched")]
    Full,
}

#[derive(Debug, Clone)]
struct Watched {
    origin: PeerId,
    members: Vec<PeerId>,
    task: TaskSpec,
    until: Instant,
    /// Links in breach, by their two ends (member, other).
    breached: HashMap<(PeerId, PeerId), &'static str>,
}

/// The placements a node holds, and their breached links.
#[derive(Debug, Clone, Default)]
pub struct PlacementWatch {
    placements: HashMap<String, Watched>,
}

/// `l` with every limit scaled to `ratio` of itself (loosened for a minimum).
fn scaled(l: &LinkLimits, ratio: f64) -> LinkLimits {
    LinkLimits {
        max_rtt: l.max_rtt.map(|d| d.mul_f64(ratio)),
        min_throughput_bps: l.min_throughput_bps.map(|b| b / ratio),
        max_loss: l.max_loss.map(|x| x * ratio),
        max_jitter: l.max_jitter.map(|d| d.mul_f64(ratio)),
    }
}

impl PlacementWatch {
    /// Nothing watched.
    pub fn new() -> Self {
        Self::default()
    }

    /// Watches `placement` of `task`, held by `origin`, until `now` + its lease. A
    /// placement of the same task id replaces the last one.
    pub fn watch(
        &mut self,
        now: Instant,
        origin: PeerId,
        task: &TaskSpec,
        placement: &Placement,
    ) -> Result<(), WatchError> {
        if self.placements.len() >= MAX_WATCHED && !self.placements.contains_key(&placement.task) {
            return Err(WatchError::Full);
        }
        let watched = Watched {
            origin,
            members: placement.nodes.iter().map(|n| n.peer).collect(),
            task: task.clone(),
            until: now + placement.lease,
            breached: HashMap::new(),
        };
        self.placements.insert(placement.task.clone(), watched);
        Ok(())
    }

    /// The task's leases were renewed: watched until `now + left`.
    pub fn renew(&mut self, now: Instant, task: &str, left: Duration) {
        if let Some(w) = self.placements.get_mut(task) {
            w.until = now + left;
        }
    }

    /// The task was released: no longer watched.
    pub fn unwatch(&mut self, task: &str) -> bool {
        self.placements.remove(task).is_some()
    }

    /// Placements watched.
    pub fn len(&self) -> usize {
        self.placements.len()
    }

    /// Whether nothing is watched.
    pub fn is_empty(&self) -> bool {
        self.placements.is_empty()
    }

    /// A watched task's spec, members and origin.
    pub fn task(&self, task: &str) -> Option<(&TaskSpec, &[PeerId], PeerId)> {
        let w = self.placements.get(task)?;
        Some((&w.task, &w.members, w.origin))
    }

    /// Judges every constrained link of every live placement; `link(a, b)` is the
    /// freshest summary of the link between `a` and `b`, if measured. Expired
    /// placements are dropped first.
    pub fn check(
        &mut self,
        now: Instant,
        mut link: impl FnMut(&PeerId, &PeerId) -> Option<LinkSummary>,
    ) -> Vec<WatchEvent> {
        self.placements.retain(|_, w| w.until > now);
        let mut events = Vec::new();
        for (task, w) in &mut self.placements {
            let mut pairs: Vec<(PeerId, PeerId, LinkLimits, bool)> = Vec::new();
            let (origin_limits, member_limits) = (w.task.origin_limits, w.task.member_limits);
            if origin_limits.any() {
                pairs.extend(
                    w.members.iter().filter(|m| **m != w.origin).map(|m| (*m, w.origin, origin_limits, true)),
                );
            }
            if member_limits.any() {
                for (i, a) in w.members.iter().enumerate() {
                    pairs.extend(w.members[i + 1..].iter().map(|b| (*b, *a, member_limits, false)));
                }
            }
            for (member, other, limits, from_origin) in pairs {
                let Some(s) = link(&member, &other) else { continue };
                let rtt_ms = f64::from(s.rtt_p50_us) / 1e3;
                let key = (member, other);
                if w.breached.contains_key(&key) {
                    if check_limits(&scaled(&limits, RECOVER_RATIO), rtt_ms, Some(&s)).is_ok() {
                        w.breached.remove(&key);
                        events.push(WatchEvent::Recovered { task: task.clone(), member, other });
                    }
                    continue;
                }
                // A throughput limit on a link never measured actively is not a breach.
                if let Err(Rejection::Link { metric, value, limit, .. }) =
                    check_limits(&limits, rtt_ms, Some(&s))
                {
                    w.breached.insert(key, metric);
                    events.push(WatchEvent::Breached(LinkBreach {
                        task: task.clone(),
                        member,
                        other,
                        from_origin,
                        metric,
                        value,
                        limit,
                    }));
                }
            }
        }
        events
    }
}

/// Nodes that could take `replacing`'s place in `task` (its members `members`), best
/// first, at most `max`: ranked as [`Node::rank`](PlacementIndex::rank_for_submission)
/// ranks the task for one node from the index's origin, less the current members, and
/// for a gang only those whose links to every remaining member meet `member_limits`.
pub fn alternatives(
    index: &PlacementIndex<'_>,
    task: &TaskSpec,
    members: &[PeerId],
    replacing: &PeerId,
    origin: &PeerId,
    weights: &ScoreWeights,
    max: usize,
) -> Vec<Scored> {
    let one = TaskSpec { nodes: 1, ..task.clone() };
    let ranking = index.rank_for_submission(&one, weights, origin);
    let staying: Vec<&PeerId> = members.iter().filter(|m| *m != replacing).collect();
    ranking
        .feasible
        .into_iter()
        .filter(|s| !members.contains(&s.peer))
        .filter(|s| staying.iter().all(|m| pair(index.links(), task, &s.peer, m).is_ok()))
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::summary::tests::summary;
    use crate::overlay::tests::peer;
    use crate::place::PlacedNode;

    #[allow(clippy::disallowed_methods)] // the tests' epoch
    fn t0() -> Instant {
        Instant::now()
    }

    fn placed(task: &str, members: &[PeerId], lease: Duration) -> Placement {
        Placement {
            task: task.to_owned(),
            nodes: members
                .iter()
                .map(|p| PlacedNode {
                    peer: *p,
                    lease: 1,
                    gpus: vec![0],
                    score: 1.0,
                    rtt_ms: 1.0,
                    measured: true,
                })
                .collect(),
            lease,
            attempts: 1,
            worst_member_rtt_ms: None,
        }
    }

    fn gang_task(origin_rtt_ms: u64, member_rtt_ms: u64) -> TaskSpec {
        let mut t = TaskSpec::new("train", 1);
        t.nodes = 2;
        t.origin_limits.max_rtt = Some(Duration::from_millis(origin_rtt_ms));
        t.member_limits.max_rtt = Some(Duration::from_millis(member_rtt_ms));
        t
    }

    #[test]
    fn a_breached_member_link_is_reported_once_and_recovers_with_a_margin() {
        let (origin, b, c) = (peer(1), peer(2), peer(3));
        let mut w = PlacementWatch::new();
        let task = gang_task(20, 10);
        w.watch(t0(), origin, &task, &placed("train", &[b, c], Duration::from_secs(60))).unwrap();
        let mut rtts: HashMap<(PeerId, PeerId), u32> = HashMap::new();
        rtts.insert((b, origin), 5);
        rtts.insert((c, origin), 5);
        rtts.insert((c, b), 4);
        let link = |rtts: &HashMap<(PeerId, PeerId), u32>| {
            let rtts = rtts.clone();
            move |a: &PeerId, b: &PeerId| {
                let ms = rtts.get(&(*a, *b)).or_else(|| rtts.get(&(*b, *a)))?;
                Some(summary(*b, *ms, 1, 0))
            }
        };
        assert_eq!(w.check(t0(), link(&rtts)), vec![]);
        // The two members' link passes the gang's 10 ms.
        rtts.insert((c, b), 12);
        let events = w.check(t0(), link(&rtts));
        assert_eq!(events.len(), 1, "{events:?}");
        let WatchEvent::Breached(breach) = &events[0] else { panic!("{events:?}") };
        assert_eq!((breach.member, breach.other, breach.from_origin), (c, b, false));
        assert_eq!((breach.metric, breach.value, breach.limit), ("rtt", 12.0, 10.0));
        // Once only; at 9 ms (within the limit, not within the margin) still breached.
        assert_eq!(w.check(t0(), link(&rtts)), vec![]);
        rtts.insert((c, b), 9);
        assert_eq!(w.check(t0(), link(&rtts)), vec![]);
        rtts.insert((c, b), 7);
        assert_eq!(
            w.check(t0(), link(&rtts)),
            vec![WatchEvent::Recovered { task: "train".into(), member: c, other: b }]
        );
        // The origin's link to b: its own limit (20 ms).
        rtts.insert((b, origin), 25);
        let events = w.check(t0(), link(&rtts));
        assert!(
            matches!(&events[..], [WatchEvent::Breached(LinkBreach { member, from_origin: true, .. })] if *member == b)
        );
    }

    #[test]
    fn unmeasured_links_expired_and_released_placements_raise_nothing() {
        let (origin, b) = (peer(1), peer(2));
        let mut w = PlacementWatch::new();
        let task = gang_task(20, 10);
        let start = t0();
        w.watch(start, origin, &task, &placed("train", &[b], Duration::from_secs(60))).unwrap();
        assert_eq!(w.check(start, |_, _| None), vec![]);
        let bad = |_: &PeerId, b: &PeerId| Some(summary(*b, 500, 1, 0));
        // Renewed: still watched after the first lease.
        w.renew(start + Duration::from_secs(50), "train", Duration::from_secs(60));
        assert_eq!(w.check(start + Duration::from_secs(70), bad).len(), 1);
        // Expired: dropped.
        assert_eq!(w.check(start + Duration::from_secs(111), bad), vec![]);
        assert!(w.is_empty());
        w.watch(start, origin, &task, &placed("train", &[b], Duration::from_secs(60))).unwrap();
        assert!(w.unwatch("train"));
        assert_eq!(w.check(start, bad), vec![]);
        // A task without link limits has nothing to watch.
        let free = TaskSpec::new("free", 1);
        w.watch(start, origin, &free, &placed("free", &[b], Duration::from_secs(60))).unwrap();
        assert_eq!(w.check(start, bad), vec![]);
    }

    #[test]
    fn alternatives_leave_out_members_and_keep_the_gang_within_its_limits() {
        use crate::place::score::tests::{id, view};
        use crate::record::tests::NOW;
        let v = view();
        let links = v.link_index(NOW);
        let index = PlacementIndex::with_links(&v, &links, &id(1), &HashMap::new());
        let mut task = TaskSpec::new("gang", 1);
        task.nodes = 2;
        task.member_limits.max_rtt = Some(Duration::from_millis(20));
        // Members 2 and 4; replacing 4: node 1 (5 ms from 2) fits, node 3 (about 36 ms
        // from 2 by their coordinates) does not, and neither member is offered.
        let w = ScoreWeights::default();
        let alt = alternatives(&index, &task, &[id(2), id(4)], &id(4), &id(1), &w, 3);
        assert_eq!(alt.iter().map(|s| s.peer).collect::<Vec<_>>(), vec![id(1)]);
        // A single-node task: every other feasible node, best first, at most `max`.
        let single = TaskSpec::new("one", 1);
        let alt = alternatives(&index, &single, &[id(2)], &id(2), &id(1), &w, 2);
        assert_eq!(alt.len(), 2);
        assert!(alt.iter().all(|s| s.peer != id(2)));
        assert!(alt[0].score >= alt[1].score);
    }

    #[test]
    fn throughput_limits_judge_only_measured_capacity() {
        let (origin, b) = (peer(1), peer(2));
        let mut w = PlacementWatch::new();
        let mut task = TaskSpec::new("bulk", 1);
        task.origin_limits.min_throughput_bps = Some(1e9);
        w.watch(t0(), origin, &task, &placed("bulk", &[b], Duration::from_secs(60))).unwrap();
        let unmeasured = |_: &PeerId, b: &PeerId| Some(summary(*b, 1, 1, 0));
        assert_eq!(w.check(t0(), unmeasured), vec![]);
        let slow = |_: &PeerId, b: &PeerId| {
            Some(LinkSummary { capacity_kbps: Some(400_000), ..summary(*b, 1, 1, 0) })
        };
        let events = w.check(t0(), slow);
        assert!(
            matches!(&events[..], [WatchEvent::Breached(LinkBreach { metric: "throughput", value, .. })] if *value == 4e8)
        );
    }
}
