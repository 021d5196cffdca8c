//! Live placements watching their links (issue 16, part 2): the glue around
//! [`swarm_core::place::watch::PlacementWatch`].
//!
//! Every placement this node makes is watched until its leases expire or it is
//! released. Every [`WATCH_EVERY`] (the link judge's interval), each link its task
//! constrained is judged against the task's limits: this node's own links by a fresh
//! summary of their short window, the members' links among themselves by the fresher of
//! the two ends' gossiped claims. A breach becomes [`NodeEvent::PlacementLinkBreached`],
//! with up to [`ALTERNATIVES`] nodes that could take the member's place, ranked from the
//! placement view (a ranking of the view, once per breach).

use std::time::{Duration, Instant};

use libp2p::PeerId;
use swarm_core::link::summary::LinkSummary;
use swarm_core::place::watch::{alternatives, WatchEvent};
use swarm_core::place::{Placement, ScoreWeights, TaskSpec};

use super::Driver;
use crate::api::NodeEvent;

/// How often watched placements' links are judged: the link judge's interval (a probe
/// interval).
pub(super) const WATCH_EVERY: Duration = Duration::from_millis(200);
/// Alternatives offered with a breach, at most.
pub(super) const ALTERNATIVES: usize = 3;

impl Driver {
    /// Starts watching a placement this node made.
    pub(super) fn watch_placement(&mut self, task: TaskSpec, placement: Placement) {
        let now = Instant::now();
        let local = *self.swarm.local_peer_id();
        match self.watch.watch(now, local, &task, &placement) {
            Ok(()) => {
                self.watch_check.get_or_insert(now + WATCH_EVERY);
            }
            Err(e) => tracing::warn!(task = %placement.task, error = %e, "placement not watched"),
        }
    }

    /// A watched placement's leases were renewed.
    pub(super) fn placement_renewed(&mut self, task: &str, left: Duration) {
        self.watch.renew(Instant::now(), task, left);
    }

    /// A watched placement was released.
    pub(super) fn placement_released(&mut self, task: &str) {
        self.watch.unwatch(task);
    }

    /// When [`Self::check_placements`] wants to run.
    pub(super) fn watch_timeout(&self) -> Option<Instant> {
        self.watch_check
    }

    /// Judges the watched placements' links when due, and reports what changed.
    pub(super) fn check_placements(&mut self, now: Instant) {
        if self.watch_check.is_none_or(|t| t > now) {
            return;
        }
        let mut watch = std::mem::take(&mut self.watch);
        let events = watch.check(now, |a, b| self.placement_link(now, a, b));
        self.watch = watch;
        self.watch_check = (!self.watch.is_empty()).then(|| now + WATCH_EVERY);
        for event in events {
            match event {
                WatchEvent::Breached(b) => {
                    let alternatives = self.alternatives_for(&b.task, &b.member);
                    tracing::warn!(task = %b.task, member = %b.member, other = %b.other, metric = b.metric,
                        value = b.value, limit = b.limit, "placement link breached");
                    self.emit(NodeEvent::PlacementLinkBreached {
                        task: b.task,
                        member: b.member,
                        other: b.other,
                        from_origin: b.from_origin,
                        metric: b.metric,
                        value: b.value,
                        limit: b.limit,
                        alternatives,
                    });
                }
                WatchEvent::Recovered { task, member, other } => {
                    tracing::info!(%task, %member, %other, "placement link recovered");
                    self.emit(NodeEvent::PlacementLinkRecovered { task, member, other });
                }
            }
        }
    }

    /// The freshest summary of the link between `a` and `b`: our own measurement when
    /// one end is this node, else the ends' gossiped claims.
    fn placement_link(&mut self, now: Instant, a: &PeerId, b: &PeerId) -> Option<LinkSummary> {
        let local = *self.swarm.local_peer_id();
        if *a == local {
            self.dataplane.link_summary(now, b)
        } else if *b == local {
            self.dataplane.link_summary(now, a)
        } else {
            self.claimed(now, a, b)
        }
    }

    /// Nodes that could replace `member` in the watched `task`.
    fn alternatives_for(&mut self, task: &str, member: &PeerId) -> Vec<swarm_core::place::Scored> {
        let Some((spec, members, origin)) = self.watch.task(task).map(|(t, m, o)| (t.clone(), m.to_vec(), o))
        else {
            return Vec::new();
        };
        // Placements watched here are this node's own: the live index's origin.
        let index = self.placement_index();
        alternatives(&index, &spec, &members, member, &origin, &ScoreWeights::default(), ALTERNATIVES)
    }
}
