//! Scoring the nodes of a view for a task (pure, deterministic for a given view): a
//! feasibility filter, then a score from free capacity, GPU utilization and the link to
//! the task's origin, with every rejection explained by the constraint that failed.
//!
//! - Links: a measured link (either end's gossiped summary) is taken as it is; an
//!   estimate (Vivaldi) is used for the RTT limit and the score, with the score reduced by
//!   `estimate_penalty`; a node with neither (no handshake confirmed in the last 180 s)
//!   is excluded. The RTT judged is the measured median.
//! - A link whose SLA is degraded scores `degraded_penalty` less.
//! - Ties break by peer id, so every node ranks a view the same way.

use std::collections::HashMap;
use std::fmt::Write as _;

use libp2p_identity::PeerId;

use super::task::{LinkLimits, TaskSpec};
use crate::link::summary::LinkSummary;
use crate::time::UnixMillis;
use crate::view::ClusterSnapshot;

/// How the score is made.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreWeights {
    /// Weight of free capacity (eligible free GPUs over the node's GPUs).
    pub capacity: f64,
    /// Weight of idleness (100 % − mean utilization of the eligible GPUs).
    pub idleness: f64,
    /// Weight of the link to the origin (1 / (1 + RTT / `link_scale_ms`)).
    pub link: f64,
    /// The round trip that halves the link's score, ms.
    pub link_scale_ms: f64,
    /// Share of the link score an estimated link loses.
    pub estimate_penalty: f64,
    /// Share of the whole score a link with a degraded SLA loses.
    pub degraded_penalty: f64,
    /// A GPU busier than this (percent) counts as taken.
    pub busy_pct: u8,
}

impl Default for ScoreWeights {
    fn default() -> Self {
        Self {
            capacity: 0.1,
            idleness: 0.1,
            link: 0.8,
            link_scale_ms: 1.0,
            estimate_penalty: 0.2,
            degraded_penalty: 0.5,
            busy_pct: 90,
        }
    }
}

/// A feasible node and why it scores what it scores.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// The node.
    pub peer: PeerId,
    /// Its score (higher is better), 0 to 1.
    pub score: f64,
    /// Eligible free GPU indices (the task takes the first ones).
    pub gpus: Vec<u32>,
    /// The round trip to the origin, ms (0 for the origin itself).
    pub rtt_ms: f64,
    /// Whether that round trip was measured (not estimated).
    pub measured: bool,
    /// Whether the link's SLA is degraded.
    pub degraded: bool,
    /// The submitter's reliability score of the node, 0 to 1 (see
    /// [`trust`](super::trust)); its score was multiplied by it.
    pub reliability: f64,
    /// Whether the node's claim of its link to the origin was not believed (the Vivaldi
    /// estimate was used, and its score lost [`SUSPECT_PENALTY`](super::trust::SUSPECT_PENALTY)).
    pub suspect: bool,
}

/// Why a node cannot take the task.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Rejection {
    /// Not enough GPUs that meet the task's demands and are free.
    Gpus {
        /// GPUs that meet the demands and are free.
        eligible: u32,
        /// GPUs wanted.
        wanted: u16,
    },
    /// A required label is missing.
    Label(String),
    /// Nothing is known of its link to the origin: no measurement, and no handshake
    /// confirmed recently enough to trust an estimate.
    NotConfirmed,
    /// A link limit is exceeded.
    Link {
        /// `rtt`, `loss`, `jitter` or `throughput`.
        metric: &'static str,
        /// The value (ms, ratio, ms, bits per second).
        value: f64,
        /// The limit.
        limit: f64,
        /// Whether the value is an estimate.
        estimated: bool,
    },
    /// A throughput limit, but no active measurement of the link.
    ThroughputUnknown,
    /// The submitter's reliability score of the node is below
    /// [`EXCLUDED_BELOW`](super::trust::EXCLUDED_BELOW) (see [`super::trust`]).
    Unreliable {
        /// The score.
        reliability: f64,
    },
}

impl core::fmt::Display for Rejection {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Rejection::Gpus { eligible, wanted } => {
                write!(f, "{eligible} eligible free GPUs, {wanted} wanted")
            }
            Rejection::Label(l) => write!(f, "label {l} missing"),
            Rejection::NotConfirmed => f.write_str("no measured link and no recently confirmed handshake"),
            Rejection::Link { metric, value, limit, estimated } => {
                let how = if *estimated { "estimated" } else { "measured" };
                write!(f, "{metric} {value:.3} ({how}) over the limit {limit:.3}")
            }
            Rejection::ThroughputUnknown => {
                f.write_str("throughput limit, but the link was never measured actively")
            }
            Rejection::Unreliable { reliability } => {
                write!(f, "reliability {reliability:.2}: refused, broke leases or lied about its links")
            }
        }
    }
}

impl Rejection {
    /// The constraint that failed, in one word: `gpus`, `label`, `unconfirmed`, `rtt`,
    /// `loss`, `jitter`, `throughput` or `reliability`.
    pub fn constraint(&self) -> &'static str {
        match self {
            Rejection::Gpus { .. } => "gpus",
            Rejection::Label(_) => "label",
            Rejection::NotConfirmed => "unconfirmed",
            Rejection::Link { metric, .. } => metric,
            Rejection::ThroughputUnknown => "throughput",
            Rejection::Unreliable { .. } => "reliability",
        }
    }

    /// How close the node came to being feasible: the later the check it failed (GPUs,
    /// labels, confirmation, then links), the nearer; within a check, by the share of the
    /// limit it met.
    fn nearness(&self) -> (u8, f64) {
        match self {
            Rejection::Gpus { eligible, wanted } => (0, f64::from(*eligible) / f64::from((*wanted).max(1))),
            Rejection::Label(_) => (1, 0.0),
            Rejection::NotConfirmed => (2, 0.0),
            Rejection::ThroughputUnknown => (3, 0.0),
            Rejection::Unreliable { reliability } => (2, *reliability),
            Rejection::Link { metric, value, limit, .. } => {
                let met = if *metric == "throughput" { value / limit } else { limit / value };
                (3, if met.is_finite() { met } else { 0.0 })
            }
        }
    }
}

/// Every node of a view, feasible (best first) or rejected with its reason.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ranking {
    /// Feasible nodes, best first.
    pub feasible: Vec<Scored>,
    /// Rejected nodes and why.
    pub rejected: Vec<(PeerId, Rejection)>,
}

impl Ranking {
    /// The rejected node that came nearest to fitting (see [`Rejection`]'s order), for
    /// an error that tells the user what to relax.
    pub fn nearest(&self) -> Option<&(PeerId, Rejection)> {
        self.rejected.iter().max_by(|(pa, a), (pb, b)| {
            let (sa, na) = a.nearness();
            let (sb, nb) = b.nearness();
            sa.cmp(&sb).then(na.total_cmp(&nb)).then(pb.cmp(pa))
        })
    }

    /// How many nodes each constraint rejected, most first.
    pub fn rejected_by(&self) -> Vec<(&'static str, usize)> {
        let mut counts: Vec<(&'static str, usize)> = Vec::new();
        for (_, why) in &self.rejected {
            match counts.iter_mut().find(|(c, _)| *c == why.constraint()) {
                Some((_, n)) => *n += 1,
                None => counts.push((why.constraint(), 1)),
            }
        }
        counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        counts
    }

    /// One line per node: chosen order and score, or the constraint that failed.
    pub fn explain(&self) -> String {
        let mut out = String::new();
        for (i, s) in self.feasible.iter().enumerate() {
            let how = if s.measured { "measured" } else { "estimated" };
            let _ = writeln!(
                out,
                "#{} {} score {:.3}: GPUs {:?}, RTT {:.2} ms ({how}){}{}{}",
                i + 1,
                s.peer,
                s.score,
                s.gpus,
                s.rtt_ms,
                if s.degraded { ", SLA degraded" } else { "" },
                if s.suspect { ", its link claim not believed (estimate used)" } else { "" },
                if s.reliability < 1.0 {
                    format!(
                        ", reliability {:.2}{}",
                        s.reliability,
                        if s.reliability < super::trust::DEMOTED_BELOW { " (demoted)" } else { "" }
                    )
                } else {
                    String::new()
                }
            );
        }
        for (peer, why) in &self.rejected {
            let _ = writeln!(out, "rejected {peer}: {why}");
        }
        out
    }
}

/// Checks one link (its RTT, and its measured summary if any) against `l`.
pub(crate) fn check_limits(
    l: &LinkLimits,
    rtt_ms: f64,
    summary: Option<&LinkSummary>,
) -> Result<(), Rejection> {
    let estimated = summary.is_none();
    if let Some(max) = l.max_rtt {
        let limit = max.as_secs_f64() * 1e3;
        if rtt_ms > limit {
            return Err(Rejection::Link { metric: "rtt", value: rtt_ms, limit, estimated });
        }
    }
    if let (Some(max), Some(s)) = (l.max_loss, summary) {
        let loss = s.loss_ppm.map_or(0.0, |p| f64::from(p) / 1e6);
        if loss > max {
            return Err(Rejection::Link { metric: "loss", value: loss, limit: max, estimated: false });
        }
    }
    if let (Some(max), Some(s)) = (l.max_jitter, summary) {
        let (jitter, limit) = (f64::from(s.jitter_us) / 1e3, max.as_secs_f64() * 1e3);
        if jitter > limit {
            return Err(Rejection::Link { metric: "jitter", value: jitter, limit, estimated: false });
        }
    }
    if let Some(min) = l.min_throughput_bps {
        let Some(bps) = summary.and_then(|s| s.capacity_kbps).map(|k| f64::from(k) * 1e3) else {
            return Err(Rejection::ThroughputUnknown);
        };
        if bps < min {
            return Err(Rejection::Link { metric: "throughput", value: bps, limit: min, estimated: false });
        }
    }
    Ok(())
}

/// Ranks every node of `view` for `task` submitted at `origin`. `leased` lists, per node,
/// GPU indices known to be leased (by the node's own report); GPUs busier than
/// `weights.busy_pct` count as taken too. For many tasks on one view, build a
/// [`PlacementIndex`](super::PlacementIndex) once instead.
pub fn rank(
    view: &ClusterSnapshot,
    origin: &PeerId,
    task: &TaskSpec,
    leased: &HashMap<PeerId, Vec<u32>>,
    now: UnixMillis,
    weights: &ScoreWeights,
) -> Ranking {
    super::PlacementIndex::new(view, origin, leased, now).rank(task, weights)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bounded::{BoundedString, BoundedVec};
    use crate::gpu::{ComputeCapability, GpuDevice};
    use crate::identity::tests::{keypair, record_for};
    use crate::link::summary::tests::summary;
    use crate::link::summary::LinkSummaries;
    use crate::link::vivaldi::Coordinate;
    use crate::record::tests::{node_record, NOW};
    use crate::record::Label;
    use crate::view::ViewEntry;
    use std::time::Duration;

    fn gpu(index: u32, model: &str, mib: u64, util: u8) -> GpuDevice {
        GpuDevice {
            index,
            model: BoundedString::try_new(model).unwrap(),
            memory_total_mib: mib,
            memory_used_mib: 0,
            utilization_pct: util,
            compute_capability: Some(ComputeCapability { major: 9, minor: 0 }),
        }
    }

    fn link(peer: PeerId, rtt_ms: u32, degraded: u8) -> LinkSummary {
        LinkSummary { capacity_kbps: Some(900_000), degraded, ..summary(peer, rtt_ms, 5, 100) }
    }

    fn node(seed: u8, gpus: Vec<GpuDevice>, region: &str, coord: f64, links: Vec<LinkSummary>) -> ViewEntry {
        let key = keypair(seed);
        let mut record = node_record(&key, 1);
        record.gpus.devices = BoundedVec::try_from_vec(gpus).unwrap();
        record.labels =
            BoundedVec::try_from_vec(vec![Label::parse(&format!("region={region}")).unwrap()]).unwrap();
        let s = LinkSummaries {
            coordinate: Some(Coordinate { vector: [coord, 0.0, 0.0, 0.0], height: 0.5, error: 0.1 }),
            links: BoundedVec::try_from_vec(links).unwrap(),
        };
        record.extensions = BoundedVec::try_from_vec(vec![s.to_extension().unwrap()]).unwrap();
        #[allow(clippy::disallowed_methods)]
        let now = std::time::Instant::now();
        ViewEntry::new(record, record_for(&key, NOW.0), now, now, false)
    }

    pub(crate) fn id(seed: u8) -> PeerId {
        keypair(seed).public().to_peer_id()
    }

    /// Origin 1 measured 2 (5 ms) and 3 (40 ms, degraded); 4 is confirmed by its own link
    /// to 3 and estimated from coordinates; 5 has no confirmed handshake; 6 lacks GPUs.
    pub(crate) fn view() -> ClusterSnapshot {
        let mut v = ClusterSnapshot {
            local: id(1),
            entries: vec![
                node(
                    1,
                    vec![gpu(0, "H100", 81920, 0)],
                    "eu",
                    0.0,
                    vec![link(id(2), 5, 0), link(id(3), 40, 1)],
                ),
                node(2, vec![gpu(0, "H100", 81920, 10), gpu(1, "H100", 81920, 95)], "eu", 5.0, vec![]),
                node(3, vec![gpu(0, "A100", 81920, 0), gpu(1, "A100", 81920, 0)], "us", 40.0, vec![]),
                node(
                    4,
                    vec![gpu(0, "H100", 81920, 0), gpu(1, "H100", 81920, 0)],
                    "eu",
                    12.0,
                    vec![link(id(3), 30, 0)],
                ),
                node(5, vec![gpu(0, "H100", 81920, 0)], "eu", 3.0, vec![]),
                node(6, vec![], "eu", 1.0, vec![]),
            ],
        };
        v.entries.sort_by_key(|e| e.record.peer_id);
        v
    }

    #[test]
    fn feasible_nodes_rank_and_rejections_say_why() {
        let v = view();
        let task = TaskSpec::new("t", 1);
        let r = rank(&v, &id(1), &task, &HashMap::new(), NOW, &ScoreWeights::default());
        let order: Vec<PeerId> = r.feasible.iter().map(|s| s.peer).collect();
        println!("{}", r.explain());
        assert_eq!(order[0], id(1), "the origin itself: no link to cross");
        assert!(order.contains(&id(2)) && order.contains(&id(3)) && order.contains(&id(4)));
        let pos = |p: PeerId| order.iter().position(|x| *x == p).unwrap();
        assert!(pos(id(2)) < pos(id(3)), "5 ms beats 40 ms and degraded");
        let four = r.feasible.iter().find(|s| s.peer == id(4)).unwrap();
        assert!(!four.measured && (four.rtt_ms - 13.0).abs() < 1e-9, "estimated: 12 + 0.5 + 0.5");
        let why = |p: PeerId| r.rejected.iter().find(|(x, _)| *x == p).map(|(_, w)| w.clone());
        assert_eq!(why(id(5)), Some(Rejection::NotConfirmed));
        assert_eq!(why(id(6)), Some(Rejection::Gpus { eligible: 0, wanted: 1 }));
        assert!(r.explain().contains("rejected"));
        // Deterministic: the same view ranks the same.
        assert_eq!(r, rank(&v, &id(1), &task, &HashMap::new(), NOW, &ScoreWeights::default()));
    }

    #[test]
    fn constraints_filter_with_their_reason() {
        let v = view();
        let none = HashMap::new();
        let w = ScoreWeights::default();
        // Two GPUs: node 2 has one busy GPU (95 %), so only one is eligible.
        let two = TaskSpec::new("t", 2);
        let r = rank(&v, &id(1), &two, &none, NOW, &w);
        assert!(r
            .rejected
            .iter()
            .any(|(p, why)| *p == id(2) && *why == Rejection::Gpus { eligible: 1, wanted: 2 }));
        // A model and a label.
        let mut a100 = TaskSpec::new("t", 1);
        a100.gpu_models = vec!["a100".into()];
        let r = rank(&v, &id(1), &a100, &none, NOW, &w);
        assert_eq!(r.feasible.iter().map(|s| s.peer).collect::<Vec<_>>(), vec![id(3)]);
        let mut us = TaskSpec::new("t", 1);
        us.labels = vec![Label::parse("region=us").unwrap()];
        let r = rank(&v, &id(1), &us, &none, NOW, &w);
        assert!(r
            .rejected
            .iter()
            .any(|(p, why)| *p == id(2) && *why == Rejection::Label("region=us".into())));
        // An RTT limit of 20 ms: node 3 (40 ms measured) is out, with its value.
        let mut near = TaskSpec::new("t", 1);
        near.origin_limits.max_rtt = Some(Duration::from_millis(20));
        let r = rank(&v, &id(1), &near, &none, NOW, &w);
        assert!(r.rejected.iter().any(|(p, why)| *p == id(3)
            && matches!(why, Rejection::Link { metric: "rtt", value, estimated: false, .. } if *value == 40.0)));
        // A throughput limit: estimated links cannot show one.
        let mut fat = TaskSpec::new("t", 1);
        fat.origin_limits.min_throughput_bps = Some(1e9);
        let r = rank(&v, &id(1), &fat, &none, NOW, &w);
        assert!(r.rejected.iter().any(|(p, why)| *p == id(4) && *why == Rejection::ThroughputUnknown));
        assert!(r
            .rejected
            .iter()
            .any(|(p, why)| *p == id(2) && matches!(why, Rejection::Link { metric: "throughput", .. })));
        // Leased GPUs are not free.
        let leased: HashMap<PeerId, Vec<u32>> = [(id(1), vec![0])].into_iter().collect();
        let r = rank(&v, &id(1), &TaskSpec::new("t", 1), &leased, NOW, &w);
        assert!(r.rejected.iter().any(|(p, _)| *p == id(1)));
    }

    #[test]
    fn gangs_respect_pairwise_limits() {
        use crate::place::gang::{choose_gang, GangError};
        let v = view();
        let mut task = TaskSpec::new("gang", 1);
        task.nodes = 3;
        task.member_limits.max_rtt = Some(Duration::from_millis(20));
        let r = rank(&v, &id(1), &task, &HashMap::new(), NOW, &ScoreWeights::default());
        let gang = choose_gang(&v.link_index(NOW), &r, &task).unwrap();
        let mut members: Vec<PeerId> = gang.members.iter().map(|m| m.peer).collect();
        members.sort();
        let mut want = vec![id(1), id(2), id(4)];
        want.sort();
        assert_eq!(members, want, "node 3 is 30-40 ms from the others");
        assert!(gang.worst_rtt_ms <= 20.0, "{}", gang.worst_rtt_ms);
        // Four members cannot all be within 20 ms of each other.
        task.nodes = 4;
        let r = rank(&v, &id(1), &task, &HashMap::new(), NOW, &ScoreWeights::default());
        let err = choose_gang(&v.link_index(NOW), &r, &task).unwrap_err();
        assert!(matches!(err, GangError::Limits { largest: 3, .. }), "{err}");
        assert!(err.to_string().contains("rtt"), "{err}");
        task.nodes = 9;
        assert!(matches!(
            choose_gang(&v.link_index(NOW), &r, &task),
            Err(GangError::NotEnough { feasible: 4, wanted: 9 })
        ));
    }
}
