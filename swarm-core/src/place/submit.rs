//! Submitting a task (sans-IO): which nodes to ask for leases, in what order, and when
//! to give up. The caller sends the reservations [`Submission::next`] asks for, feeds the
//! answers to [`Submission::on_reply`], and calls `next` again.
//!
//! - A single task goes to one node chosen by the power of `d` choices: `d` nodes drawn
//!   at random from the best `pool` feasible ones that score within `tolerance` of the
//!   best, the best-ranked of them asked. Many submitters reading the same (stale) view
//!   then spread over the near-best nodes instead of all asking the first one.
//! - A gang's members (from [`choose_gang`], on scores each lowered by a random share of
//!   up to `tolerance`, so concurrent gangs spread too) are asked together; unless all
//!   grant, the granted leases are released and the refusers left out of the next
//!   choice: a gang is reserved all or nothing.
//! - A node that refuses or does not answer is not asked again for this task. After
//!   `max_attempts` rounds the submission fails with the last refusal; leases granted in
//!   a failed round are always handed back for release.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::Duration;

use libp2p_identity::PeerId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::gang::{choose_gang, GangError};
use super::score::{Ranking, Rejection, Scored};
use super::task::{TaskError, TaskSpec};
use super::wire::{LeaseRequest, LeaseResponse};
use crate::link::index::LinkIndex;

/// How a submission chooses and retries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SubmitConfig {
    /// `d`: candidates drawn per single-task attempt.
    pub choices: usize,
    /// The draw is among this many of the best feasible nodes.
    pub pool: usize,
    /// Rounds of reservations at most.
    pub max_attempts: u32,
    /// Only nodes scoring within this share of the best remaining one are drawn, so
    /// spreading never costs more than this much score.
    pub tolerance: f64,
}

impl Default for SubmitConfig {
    fn default() -> Self {
        Self { choices: 2, pool: 8, max_attempts: 8, tolerance: 0.05 }
    }
}

/// A node's answer to a reservation.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Granted.
    Granted {
        /// The lease's number on that node.
        lease: u64,
        /// The GPU indices held.
        gpus: Vec<u32>,
        /// Until it expires unless renewed.
        expires_in: Duration,
    },
    /// Refused by the node.
    Rejected {
        /// Its reason.
        reason: String,
        /// Eligible GPUs it had free.
        free_now: u32,
    },
    /// No answer: unreachable, timed out, or an answer that makes no sense.
    Failed(String),
}

impl From<LeaseResponse> for Reply {
    /// A node's answer to a reservation; anything but a grant or a refusal makes no sense.
    fn from(response: LeaseResponse) -> Self {
        match response {
            LeaseResponse::Granted { lease, gpus, expires_in_ms } => Reply::Granted {
                lease,
                gpus: gpus.into_inner(),
                expires_in: Duration::from_millis(u64::from(expires_in_ms)),
            },
            LeaseResponse::Rejected { reason, free_now } => {
                Reply::Rejected { reason: reason.as_str().to_owned(), free_now }
            }
            other => Reply::Failed(format!("unexpected answer {other:?}")),
        }
    }
}

/// One node of a placement.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacedNode {
    /// The node.
    pub peer: PeerId,
    /// The lease's number on that node.
    pub lease: u64,
    /// The GPU indices it holds for the task.
    pub gpus: Vec<u32>,
    /// Its score when chosen.
    pub score: f64,
    /// Round trip to the origin, ms.
    pub rtt_ms: f64,
    /// Whether that round trip was measured.
    pub measured: bool,
}

/// Where a task went.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Placement {
    /// The task's id.
    pub task: String,
    /// Its nodes (one, or the gang's members), best first.
    pub nodes: Vec<PlacedNode>,
    /// The leases expire after this unless renewed.
    pub lease: Duration,
    /// Rounds of reservations it took.
    pub attempts: u32,
    /// For a gang: the worst round trip between two members, ms.
    pub worst_member_rtt_ms: Option<f64>,
}

impl Placement {
    /// The nodes.
    pub fn peers(&self) -> Vec<PeerId> {
        self.nodes.iter().map(|n| n.peer).collect()
    }

    /// (node, lease) pairs.
    pub fn leases(&self) -> Vec<(PeerId, u64)> {
        self.nodes.iter().map(|n| (n.peer, n.lease)).collect()
    }

    /// The scores, in node order.
    pub fn scores(&self) -> Vec<f64> {
        self.nodes.iter().map(|n| n.score).collect()
    }

    /// One line per node: where and why.
    pub fn explain(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let how = if n.measured { "measured" } else { "estimated" };
            let _ = writeln!(
                out,
                "{} -> {} GPUs {:?} (score {:.3}, RTT {:.2} ms {how})",
                self.task, n.peer, n.gpus, n.score, n.rtt_ms
            );
        }
        if let Some(w) = self.worst_member_rtt_ms.filter(|w| w.is_finite()) {
            let _ = writeln!(out, "{}: worst RTT between members {w:.2} ms", self.task);
        }
        out
    }
}

/// Why a task could not be placed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PlaceError {
    /// The spec is invalid.
    #[error(transparent)]
    Invalid(#[from] TaskError),
    /// No node meets the task's constraints.
    #[error("no node can take task {task}: {}", infeasible(*.considered, .rejected_by, .nearest.as_deref()))]
    Infeasible {
        /// The task.
        task: String,
        /// Nodes in the view.
        considered: usize,
        /// Nodes rejected per constraint, most first.
        rejected_by: Vec<(&'static str, usize)>,
        /// The node nearest to fitting, and what it failed.
        nearest: Option<Box<(PeerId, Rejection)>>,
    },
    /// Enough nodes, but no gang of them meets the member limits.
    #[error("no gang for task {task}: {error}")]
    Gang {
        /// The task.
        task: String,
        /// Why.
        error: GangError,
    },
    /// Every node asked refused or did not answer.
    #[error("task {task} not placed after {attempts} attempts; last: {last}")]
    Exhausted {
        /// The task.
        task: String,
        /// Rounds tried.
        attempts: u32,
        /// The last refusal.
        last: String,
    },
}

fn infeasible(
    considered: usize,
    by: &[(&'static str, usize)],
    nearest: Option<&(PeerId, Rejection)>,
) -> String {
    if considered == 0 {
        return "the view holds no node".to_owned();
    }
    let mut out = format!("{considered} nodes rejected (");
    for (i, (c, n)) in by.iter().enumerate() {
        let _ = write!(out, "{}{c}: {n}", if i > 0 { ", " } else { "" });
    }
    out.push(')');
    if let Some((peer, why)) = nearest {
        let _ = write!(out, "; nearest {peer}: {why}");
    }
    out
}

/// What to do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Release `release` (a failed round's grants), then ask each of `peers` for a lease
    /// ([`Submission::request`]) and feed every answer to [`Submission::on_reply`].
    Reserve {
        /// Nodes to ask.
        peers: Vec<PeerId>,
        /// Leases to hand back first.
        release: Vec<(PeerId, u64)>,
    },
    /// Placed.
    Done(Placement),
    /// Not placed; release `release`.
    Failed {
        /// Why.
        error: PlaceError,
        /// Leases to hand back.
        release: Vec<(PeerId, u64)>,
    },
}

/// See the module docs.
#[derive(Debug)]
pub struct Submission {
    task: TaskSpec,
    ranking: Ranking,
    config: SubmitConfig,
    rng: StdRng,
    excluded: HashSet<PeerId>,
    attempts: u32,
    /// The round in flight: asked nodes and their answers.
    round: Vec<(Scored, Option<Reply>)>,
    worst_member_rtt_ms: Option<f64>,
    last: Option<String>,
}

impl Submission {
    /// A submission of `task` ranked by `ranking` (from [`rank`](super::rank)); `seed`
    /// drives the power-of-d draw.
    pub fn new(
        task: TaskSpec,
        ranking: Ranking,
        config: SubmitConfig,
        seed: u64,
    ) -> Result<Self, PlaceError> {
        task.validate()?;
        Ok(Self {
            task,
            ranking,
            config,
            rng: StdRng::seed_from_u64(seed),
            excluded: HashSet::new(),
            attempts: 0,
            round: Vec::new(),
            worst_member_rtt_ms: None,
            last: None,
        })
    }

    /// The task.
    pub fn task(&self) -> &TaskSpec {
        &self.task
    }

    /// The ranking the submission chooses from.
    pub fn ranking(&self) -> &Ranking {
        &self.ranking
    }

    /// The reservation to send to each node of a [`Step::Reserve`].
    pub fn request(&self) -> LeaseRequest {
        LeaseRequest::reserve(&self.task)
    }

    /// Records `peer`'s answer to the round in flight (others are ignored).
    pub fn on_reply(&mut self, peer: PeerId, reply: Reply) {
        if let Some((_, slot)) = self.round.iter_mut().find(|(s, r)| s.peer == peer && r.is_none()) {
            *slot = Some(reply);
        }
    }

    /// The next step; call it first, then after each round's answers. A node of the
    /// round that has not answered counts as failed.
    pub fn next(&mut self, links: &LinkIndex) -> Step {
        let mut release = Vec::new();
        if !self.round.is_empty() {
            let round = std::mem::take(&mut self.round);
            let all_granted = round.iter().all(|(_, r)| matches!(r, Some(Reply::Granted { .. })));
            if all_granted {
                return Step::Done(self.placement(round));
            }
            for (scored, reply) in round {
                match reply {
                    Some(Reply::Granted { lease, .. }) => release.push((scored.peer, lease)),
                    Some(Reply::Rejected { reason, free_now }) => {
                        self.last = Some(format!("{} refused: {reason} ({free_now} free)", scored.peer));
                        self.excluded.insert(scored.peer);
                    }
                    Some(Reply::Failed(why)) => {
                        self.last = Some(format!("{} did not answer: {why}", scored.peer));
                        self.excluded.insert(scored.peer);
                    }
                    None => {
                        self.last = Some(format!("{} did not answer", scored.peer));
                        self.excluded.insert(scored.peer);
                    }
                }
            }
            if self.attempts >= self.config.max_attempts {
                return Step::Failed { error: self.exhausted(), release };
            }
        }
        match self.choose(links) {
            Ok(chosen) => {
                self.attempts += 1;
                let peers = chosen.iter().map(|s| s.peer).collect();
                self.round = chosen.into_iter().map(|s| (s, None)).collect();
                Step::Reserve { peers, release }
            }
            Err(error) => Step::Failed { error, release },
        }
    }

    fn exhausted(&self) -> PlaceError {
        PlaceError::Exhausted {
            task: self.task.id.clone(),
            attempts: self.attempts,
            last: self.last.clone().unwrap_or_else(|| "no candidate left".to_owned()),
        }
    }

    /// The nodes of the next round, or why there are none.
    fn choose(&mut self, links: &LinkIndex) -> Result<Vec<Scored>, PlaceError> {
        let left: Vec<&Scored> =
            self.ranking.feasible.iter().filter(|s| !self.excluded.contains(&s.peer)).collect();
        if self.task.nodes == 1 {
            if left.is_empty() {
                return Err(if self.attempts == 0 { self.infeasible(links.len()) } else { self.exhausted() });
            }
            let floor = left[0].score * (1.0 - self.config.tolerance);
            let near = left.iter().take_while(|s| s.score >= floor).count().max(1);
            let pool = near.min(self.config.pool.max(1));
            let mut best = pool - 1;
            for _ in 0..self.config.choices.max(1) {
                best = best.min((self.rng.next_u64() % pool as u64) as usize);
            }
            return Ok(vec![left[best].clone()]);
        }
        // Each score is lowered by a random share of up to `tolerance` for the choice
        // only, so concurrent submitters of gangs spread over near-equal nodes too.
        let mut jittered: Vec<Scored> = left.iter().map(|s| (*s).clone()).collect();
        for s in &mut jittered {
            let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            s.score *= 1.0 - self.config.tolerance.clamp(0.0, 1.0) * u;
        }
        jittered.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.peer.cmp(&b.peer)));
        let filtered = Ranking { feasible: jittered, rejected: Vec::new() };
        match choose_gang(links, &filtered, &self.task) {
            Ok(gang) => {
                self.worst_member_rtt_ms = Some(gang.worst_rtt_ms);
                // Report the members with their true scores.
                Ok(gang
                    .members
                    .iter()
                    .filter_map(|m| left.iter().find(|s| s.peer == m.peer).map(|s| (*s).clone()))
                    .collect())
            }
            Err(_) if self.attempts > 0 => Err(self.exhausted()),
            Err(GangError::NotEnough { .. }) if !self.ranking.rejected.is_empty() => {
                Err(self.infeasible(links.len()))
            }
            Err(error) => Err(PlaceError::Gang { task: self.task.id.clone(), error }),
        }
    }

    fn infeasible(&self, considered: usize) -> PlaceError {
        PlaceError::Infeasible {
            task: self.task.id.clone(),
            considered,
            rejected_by: self.ranking.rejected_by(),
            nearest: self.ranking.nearest().cloned().map(Box::new),
        }
    }

    fn placement(&self, round: Vec<(Scored, Option<Reply>)>) -> Placement {
        let nodes = round
            .into_iter()
            .filter_map(|(s, r)| match r {
                Some(Reply::Granted { lease, gpus, .. }) => Some(PlacedNode {
                    peer: s.peer,
                    lease,
                    gpus,
                    score: s.score,
                    rtt_ms: s.rtt_ms,
                    measured: s.measured,
                }),
                _ => None,
            })
            .collect();
        Placement {
            task: self.task.id.clone(),
            nodes,
            lease: self.task.lease,
            attempts: self.attempts,
            worst_member_rtt_ms: if self.task.nodes > 1 { self.worst_member_rtt_ms } else { None },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::place::lease::{LeaseConfig, LeaseTable};
    use crate::place::score::tests::{id, view};
    use crate::place::score::{rank, ScoreWeights};
    use crate::record::tests::NOW;
    use crate::view::ClusterSnapshot;
    use std::collections::HashMap;
    use std::time::Instant;

    /// Each node's table and its GPU indices.
    struct Nodes {
        tables: HashMap<PeerId, LeaseTable>,
        at: Instant,
    }

    impl Nodes {
        fn new(view: &ClusterSnapshot) -> Self {
            #[allow(clippy::disallowed_methods)]
            let at = Instant::now();
            let tables = view
                .entries
                .iter()
                .map(|e| (e.record.peer_id, LeaseTable::new_first_start(at, LeaseConfig::default())))
                .collect();
            Self { tables, at }
        }

        fn reserve(
            &mut self,
            view: &ClusterSnapshot,
            peer: PeerId,
            task: &TaskSpec,
            holder: PeerId,
        ) -> Reply {
            let eligible: Vec<u32> = view
                .get(&peer)
                .unwrap()
                .record
                .gpus
                .devices
                .iter()
                .filter(|d| task.gpu_fits(d))
                .map(|d| d.index)
                .collect();
            let table = self.tables.get_mut(&peer).unwrap();
            match table.reserve(
                self.at,
                holder,
                &task.id,
                &eligible,
                u32::from(task.gpus_per_node),
                task.lease,
            ) {
                Ok(l) => Reply::Granted { lease: l.id.0, gpus: l.gpus, expires_in: task.lease },
                Err(e) => Reply::Rejected { reason: e.to_string(), free_now: 0 },
            }
        }

        fn release(&mut self, leases: &[(PeerId, u64)], holder: PeerId) {
            for (peer, lease) in leases {
                self.tables
                    .get_mut(peer)
                    .unwrap()
                    .release(self.at, crate::place::LeaseId(*lease), &holder)
                    .unwrap();
            }
        }

        fn held(&self, peer: PeerId) -> usize {
            self.tables[&peer].held().count()
        }

        /// Runs a submission to its end against the tables.
        fn submit(
            &mut self,
            view: &ClusterSnapshot,
            task: TaskSpec,
            config: SubmitConfig,
        ) -> Result<Placement, PlaceError> {
            let origin = id(1);
            let ranking = rank(view, &origin, &task, &HashMap::new(), NOW, &ScoreWeights::default());
            let mut sub = Submission::new(task.clone(), ranking, config, 7)?;
            loop {
                match sub.next(&view.link_index(NOW)) {
                    Step::Reserve { peers, release } => {
                        self.release(&release, origin);
                        for p in peers {
                            let reply = self.reserve(view, p, &task, origin);
                            sub.on_reply(p, reply);
                        }
                    }
                    Step::Done(p) => return Ok(p),
                    Step::Failed { error, release } => {
                        self.release(&release, origin);
                        return Err(error);
                    }
                }
            }
        }
    }

    fn one_choice() -> SubmitConfig {
        SubmitConfig { choices: 1, pool: 1, max_attempts: 8, tolerance: 0.05 }
    }

    #[test]
    fn a_refusal_moves_the_task_to_the_next_node() {
        let v = view();
        let mut nodes = Nodes::new(&v);
        // The origin (best ranked) is full, and its advert has not reached the view yet.
        let other = id(9);
        let origin_gpus: Vec<u32> = vec![0];
        let at = nodes.at;
        nodes
            .tables
            .get_mut(&id(1))
            .unwrap()
            .reserve(at, other, "x", &origin_gpus, 1, Duration::from_secs(60))
            .unwrap();
        let p = nodes.submit(&v, TaskSpec::new("t", 1), one_choice()).unwrap();
        assert_eq!(p.attempts, 2);
        assert_ne!(p.nodes[0].peer, id(1));
        assert_eq!(nodes.held(p.nodes[0].peer), 1);
        assert!(p.explain().contains("GPUs [0]") && p.explain().contains("measured"), "{}", p.explain());
    }

    #[test]
    fn power_of_d_spreads_submitters_over_the_best_nodes() {
        let v = view();
        let ranking =
            rank(&v, &id(1), &TaskSpec::new("t", 1), &HashMap::new(), NOW, &ScoreWeights::default());
        let first = |config: SubmitConfig| {
            let mut asked = HashSet::new();
            for seed in 0..32 {
                let mut sub = Submission::new(TaskSpec::new("t", 1), ranking.clone(), config, seed).unwrap();
                let Step::Reserve { peers, .. } = sub.next(&v.link_index(NOW)) else { panic!() };
                asked.insert(peers[0]);
            }
            asked
        };
        let any = first(SubmitConfig { tolerance: 1.0, ..SubmitConfig::default() });
        assert!(any.len() >= 3, "32 submitters all asked {any:?}");
        // With the default tolerance only nodes within 5 % of the best are drawn.
        let best = ranking.feasible[0].score;
        for peer in first(SubmitConfig::default()) {
            let s = ranking.feasible.iter().find(|s| s.peer == peer).unwrap().score;
            assert!(s >= best * 0.95, "{s} vs {best}");
        }
    }

    #[test]
    fn gang_submitters_spread_within_the_tolerance() {
        let v = view();
        let mut task = TaskSpec::new("g", 1);
        task.nodes = 2;
        let ranking = rank(&v, &id(1), &task, &HashMap::new(), NOW, &ScoreWeights::default());
        let links = v.link_index(NOW);
        let sets = |tolerance: f64| {
            let mut sets = HashSet::new();
            for seed in 0..32 {
                let config = SubmitConfig { tolerance, ..SubmitConfig::default() };
                let mut sub = Submission::new(task.clone(), ranking.clone(), config, seed).unwrap();
                let Step::Reserve { mut peers, .. } = sub.next(&links) else { panic!() };
                peers.sort();
                sets.insert(peers);
            }
            sets
        };
        assert_eq!(sets(0.0).len(), 1, "no tolerance: one choice");
        assert!(sets(1.0).len() >= 2, "{:?}", sets(1.0));
    }

    #[test]
    fn a_gang_is_all_or_nothing() {
        let v = view();
        let mut nodes = Nodes::new(&v);
        let mut task = TaskSpec::new("gang", 1);
        task.nodes = 3;
        task.member_limits.max_rtt = Some(Duration::from_millis(20));
        // Node 4 is full: 1 and 2 grant, 4 refuses, and without 4 no three nodes are
        // within 20 ms of each other.
        let at = nodes.at;
        nodes
            .tables
            .get_mut(&id(4))
            .unwrap()
            .reserve(at, id(9), "x", &[0, 1], 2, Duration::from_secs(60))
            .unwrap();
        let err = nodes.submit(&v, task.clone(), one_choice()).unwrap_err();
        assert!(matches!(err, PlaceError::Exhausted { attempts: 1, .. }), "{err}");
        assert!(err.to_string().contains("refused"), "{err}");
        assert_eq!(nodes.held(id(1)) + nodes.held(id(2)), 0, "the partial grants were released");
        // With node 4 free again the gang is placed whole.
        nodes.tables.insert(id(4), LeaseTable::new_first_start(at, LeaseConfig::default()));
        let p = nodes.submit(&v, task, one_choice()).unwrap();
        assert_eq!(p.nodes.len(), 3);
        assert!(p.worst_member_rtt_ms.unwrap() <= 20.0);
        for n in &p.nodes {
            assert_eq!(nodes.held(n.peer), 1);
        }
    }

    #[test]
    fn an_impossible_task_names_the_constraint_and_the_nearest_node() {
        let v = view();
        let mut nodes = Nodes::new(&v);
        let err = nodes.submit(&v, TaskSpec::new("huge", 3), one_choice()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("no node can take task huge") && text.contains("gpus: 6"), "{text}");
        assert!(text.contains("nearest") && text.contains("2 eligible free GPUs, 3 wanted"), "{text}");
        let mut far = TaskSpec::new("far", 1);
        far.origin_limits.max_rtt = Some(Duration::from_micros(1));
        far.gpu_models = vec!["A100".into()];
        let text = nodes.submit(&v, far, one_choice()).unwrap_err().to_string();
        assert!(text.contains("nearest") && text.contains("rtt 40.000 (measured)"), "{text}");
        let bad = nodes.submit(&v, TaskSpec::new("", 1), one_choice()).unwrap_err();
        assert!(matches!(bad, PlaceError::Invalid(_)));
    }
}
