//! A synthetic job mix on a [`SimCluster`], placed by swarm's way (each origin's view of
//! leases about a second stale, [`PlacementIndex`] and [`Submission`] against every
//! node's own [`LeaseService`], the one the node runs) or by an oracle that sees the true free GPUs and true
//! round trips and takes the nearest node that fits. Discrete events in simulated time.
//!
//! - Jobs arrive as a Poisson process at a random origin, want 1, 2, 4 or 8 GPUs (1 most
//!   often) for an exponential duration, and a fifth of them limit the origin RTT to
//!   30 ms. The arrival rate offers `load` times the swarm's free GPU capacity.
//! - A job's completion time: waiting for capacity (a job nothing takes tries again
//!   every `retry`, up to `max_wait`), the placement's round trips, moving its input
//!   from the origin (a 4 MiB TCP window: 32 Mbit per RTT, at most 10 Gbit/s), and its
//!   run.
//! - Liars (the cluster's [`Lie`]s): a fake-free node refuses every reservation; a
//!   dropper grants and drops, which the submitter finds when the job starts (it is
//!   placed again at once, up to [`MAX_BROKEN`] times per try); a fake-RTT node runs
//!   the job (at its true round trip). With `trust`, each origin keeps its own
//!   [`Reliability`] scores and the index cross-checks claims; the oracle places only
//!   on honest nodes.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use libp2p_identity::PeerId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{unit, Lie, SimCluster};
use crate::link::index::LinkIndex;
use crate::place::lease::{LeaseConfig, LeaseTable};
use crate::place::score::{Ranking, ScoreWeights};
use crate::place::service::LeaseService;
use crate::place::submit::{Reply, Step, Submission, SubmitConfig};
use crate::place::task::TaskSpec;
use crate::place::trust::Reliability;
use crate::place::wire::LeaseRequest;
use crate::place::PlacementIndex;

/// The job mix.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MixConfig {
    /// Jobs.
    pub jobs: usize,
    /// Offered load: GPU-seconds asked per second over the free GPUs.
    pub load: f64,
    /// Mean run time.
    pub mean_duration: Duration,
    /// Input moved from the origin to the node, MB.
    pub input_mb: f64,
    /// How long a job nothing takes waits before trying again.
    pub retry: Duration,
    /// A job not placed by then gives up.
    pub max_wait: Duration,
    /// The seed of the arrivals.
    pub seed: u64,
    /// How swarm scores.
    pub weights: ScoreWeights,
    /// How swarm submits.
    pub submit: SubmitConfig,
    /// Whether swarm's submitters keep reliability scores (issue 16, part 3).
    pub trust: bool,
}

impl MixConfig {
    /// `jobs` jobs at `load`, 60 s mean run, 1 GB input, retry every 5 s for 5 min.
    pub fn new(jobs: usize, load: f64, seed: u64) -> Self {
        Self {
            jobs,
            load,
            mean_duration: Duration::from_secs(60),
            input_mb: 1000.0,
            retry: Duration::from_secs(5),
            max_wait: Duration::from_secs(300),
            seed,
            weights: ScoreWeights::default(),
            submit: SubmitConfig::default(),
            trust: true,
        }
    }
}

/// Who places.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Each origin from its stale view, through leases.
    Swarm,
    /// Sees the truth, takes the nearest node that fits.
    Oracle,
}

/// What a run gave.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MixOutcome {
    /// Jobs placed.
    pub placed: usize,
    /// Jobs that gave up.
    pub gave_up: usize,
    /// Jobs placed at their first try (no wait).
    pub placed_first_try: usize,
    /// Mean true round trip from origin to node of the placed jobs, ms.
    pub mean_origin_rtt_ms: f64,
    /// Mean completion time of the placed jobs, s.
    pub mean_completion_s: f64,
    /// Placement tries (a job nothing takes tries again after `retry`).
    pub tries: usize,
    /// Reservations refused by nodes (their view was stale).
    pub refusals: usize,
    /// Lease rounds per placed job.
    pub mean_attempts: f64,
    /// GPUs granted twice at one moment (must stay 0).
    pub double_booked: usize,
    /// Placements the submitters accepted from lying nodes (a dropper's included).
    pub liar_grants: usize,
    /// Leases that droppers broke.
    pub broken: usize,
    /// Jobs that ran on a lying node (a fake-RTT one).
    pub on_liars: usize,
    /// Reservations refused by fake-free nodes.
    pub fake_free_refusals: usize,
}

impl MixOutcome {
    /// Share of the placements the submitters accepted that went to honest nodes.
    pub fn honest_share(&self) -> f64 {
        let accepted = self.placed + self.broken;
        1.0 - self.liar_grants as f64 / accepted.max(1) as f64
    }
}

/// Placements a dropper may break in one try before the job waits for its retry.
pub const MAX_BROKEN: usize = 3;

#[derive(Debug, Clone)]
struct Job {
    origin: usize,
    gpus: u16,
    duration: f64,
    max_rtt: Option<Duration>,
    arrival: f64,
}

/// A simulated time, ordered totally.
#[derive(Debug, Clone, Copy)]
struct At(f64);
impl PartialEq for At {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o).is_eq()
    }
}
impl Eq for At {}
impl PartialOrd for At {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for At {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

/// Leased GPUs per node.
type Leased = HashMap<PeerId, Vec<u32>>;

/// What the swarm advertises: leased GPUs per node, refreshed each second (`fresh`, as
/// of `at`), read a second late (`stale`).
#[derive(Default)]
struct Adverts {
    at: f64,
    stale: Leased,
    fresh: Leased,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// Job `n` tries to get placed.
    Try(usize),
    /// Job on node `node` ends; release its lease.
    End { node: usize, lease: u64, holder: usize },
}

fn jobs(cluster: &SimCluster, mix: &MixConfig, weights: &ScoreWeights) -> Vec<Job> {
    let mut rng = StdRng::seed_from_u64(mix.seed);
    let free: usize = cluster
        .nodes
        .iter()
        .map(|n| n.gpus.iter().filter(|g| g.utilization_pct <= weights.busy_pct).count())
        .sum();
    let sizes = [1u16, 1, 1, 1, 2, 2, 4, 8];
    let mean_gpus = sizes.iter().map(|&s| f64::from(s)).sum::<f64>() / sizes.len() as f64;
    let mean = mix.mean_duration.as_secs_f64();
    let rate = mix.load * free as f64 / (mean_gpus * mean);
    let mut t = 0.0;
    // Submitters are honest nodes (liars' own jobs are not what T11 is about).
    let origins: Vec<usize> = (0..cluster.nodes.len()).filter(|&i| cluster.lies[i].is_none()).collect();
    (0..mix.jobs)
        .map(|_| {
            t += -(1.0 - unit(&mut rng)).ln() / rate.max(1e-9);
            Job {
                origin: origins[(rng.next_u64() % origins.len().max(1) as u64) as usize],
                gpus: sizes[(rng.next_u32() as usize) % sizes.len()],
                duration: (-(1.0 - unit(&mut rng)).ln() * mean).clamp(mean / 20.0, mean * 10.0),
                max_rtt: (rng.next_u32() % 5 == 0).then_some(Duration::from_millis(30)),
                arrival: t,
            }
        })
        .collect()
}

/// Seconds to move `mb` megabytes over a path of `rtt_ms`.
fn transfer_s(mb: f64, rtt_ms: f64) -> f64 {
    let mbps = (32.0 / (rtt_ms.max(0.05) / 1e3)).min(10_000.0);
    mb * 8.0 / mbps
}

/// One run: every node's lease table, the adverts, and the running sums.
struct Run<'c> {
    cluster: &'c SimCluster,
    mix: &'c MixConfig,
    epoch: Instant,
    /// Each node's lease service, as the node runs it.
    services: Vec<LeaseService>,
    /// GPUs each node offers (not busy outside the swarm), for the oracle.
    eligible: Vec<Vec<u32>>,
    pos: HashMap<PeerId, usize>,
    links: LinkIndex,
    adverts: Adverts,
    /// GPUs held per node, to refresh adverts cheaply.
    held: Vec<u32>,
    out: MixOutcome,
    sums: (f64, f64, u64),
    /// Each origin's reliability scores of the others.
    reliability: HashMap<usize, Reliability>,
}

/// A job placed: node, lease, the placement's round trips (ms), lease rounds.
type Placed = (usize, u64, f64, u32);

impl<'c> Run<'c> {
    fn new(cluster: &'c SimCluster, mix: &'c MixConfig) -> Self {
        let n = cluster.nodes.len();
        let config = LeaseConfig {
            max_lease: Duration::from_secs(24 * 3600),
            max_per_holder: 1 << 20,
            ..LeaseConfig::default()
        };
        let busy = mix.weights.busy_pct;
        Self {
            cluster,
            mix,
            epoch: cluster.epoch,
            services: cluster
                .nodes
                .iter()
                .map(|node| {
                    LeaseService::new(LeaseTable::new_first_start(cluster.epoch, config), node.gpus.clone())
                })
                .collect(),
            eligible: cluster
                .nodes
                .iter()
                .map(|node| node.gpus.iter().filter(|g| g.utilization_pct <= busy).map(|g| g.index).collect())
                .collect(),
            pos: cluster.nodes.iter().enumerate().map(|(i, n)| (n.peer, i)).collect(),
            links: cluster.view.link_index(cluster.now),
            adverts: Adverts::default(),
            held: vec![0; n],
            out: MixOutcome::default(),
            sums: (0.0, 0.0, 0),
            reliability: HashMap::new(),
        }
    }

    fn at(&self, t: f64) -> Instant {
        self.epoch + Duration::from_secs_f64(t)
    }

    /// Publishes the leased GPUs each whole second; placements read the previous ones.
    fn refresh_adverts(&mut self, t: f64) {
        while self.adverts.at + 1.0 <= t {
            self.adverts.at += 1.0;
            let fresh = (0..self.services.len())
                .filter(|&i| self.held[i] > 0)
                .map(|i| (self.cluster.nodes[i].peer, self.services[i].table().held().collect()))
                .collect();
            self.adverts.stale = std::mem::replace(&mut self.adverts.fresh, fresh);
        }
    }

    fn reserve(&mut self, now: Instant, i: usize, holder: PeerId, task: &TaskSpec) -> Reply {
        let reply = Reply::from(self.services[i].handle(now, holder, LeaseRequest::reserve(task)));
        if matches!(reply, Reply::Rejected { .. }) {
            self.out.refusals += 1;
            if self.cluster.lies[i] == Some(Lie::FakeFree) {
                self.out.fake_free_refusals += 1;
            }
        }
        reply
    }

    fn release(&mut self, now: Instant, leases: Vec<(PeerId, u64)>, holder: &PeerId) {
        for (p, lease) in leases {
            let _ = self.services[self.pos[&p]].handle(now, *holder, LeaseRequest::Release { lease });
        }
    }

    /// The nearest node that truly fits, reserved.
    fn oracle(&mut self, now: Instant, job: &Job, task: &TaskSpec) -> Option<Placed> {
        let c = self.cluster;
        let fits = |i: usize| {
            let free = self.eligible[i]
                .iter()
                .filter(|g| !self.services[i].table().held().any(|h| h == **g))
                .count();
            c.lies[i].is_none()
                && free >= usize::from(job.gpus)
                && job.max_rtt.is_none_or(|m| c.true_rtt(job.origin, i) <= m.as_secs_f64() * 1e3)
        };
        let best = (0..c.nodes.len())
            .filter(|&i| fits(i))
            .min_by(|&a, &b| c.true_rtt(job.origin, a).total_cmp(&c.true_rtt(job.origin, b)))?;
        match self.reserve(now, best, c.nodes[job.origin].peer, task) {
            Reply::Granted { lease, .. } => Some((best, lease, c.true_rtt(job.origin, best), 1)),
            _ => None,
        }
    }

    /// As a node would: its stale view, the best few, a submission against the tables;
    /// placed again when a dropper broke the lease.
    fn swarm(&mut self, now: Instant, k: usize, job: &Job, task: &TaskSpec) -> Option<Placed> {
        for _ in 0..=MAX_BROKEN {
            let (i, lease, rtt, attempts) = self.submit(now, k, job, task)?;
            let peer = self.cluster.nodes[i].peer;
            match self.cluster.lies[i] {
                Some(Lie::Dropper) => {
                    // It forgets the lease; the job finds no GPU when it starts.
                    let _ = self.services[i].handle(now, peer, LeaseRequest::Release { lease });
                    self.out.broken += 1;
                    self.out.liar_grants += 1;
                    if self.mix.trust {
                        self.reliability.entry(job.origin).or_default().broken(now, peer);
                    }
                    continue;
                }
                lie => {
                    if lie.is_some() {
                        self.out.liar_grants += 1;
                        self.out.on_liars += 1;
                    }
                    if self.mix.trust {
                        self.reliability.entry(job.origin).or_default().kept(now, peer);
                    }
                    return Some((i, lease, rtt, attempts));
                }
            }
        }
        None
    }

    /// One submission from the origin's view (with its reliability scores when `trust`).
    fn submit(&mut self, now: Instant, k: usize, job: &Job, task: &TaskSpec) -> Option<Placed> {
        let holder = self.cluster.nodes[job.origin].peer;
        let submit = self.mix.submit;
        let mut index =
            PlacementIndex::with_links(&self.cluster.view, &self.links, &holder, &self.adverts.stale);
        if self.mix.trust {
            let reliability = self.reliability.entry(job.origin).or_default();
            for suspect in index.suspects() {
                reliability.suspect_claim(now, suspect);
            }
            index = index.with_reliability(reliability, now);
        }
        let top = index.top(task, &self.mix.weights, submit.pool + submit.max_attempts as usize);
        drop(index);
        let ranking = Ranking { feasible: top, rejected: Vec::new() };
        let mut sub = Submission::new(task.clone(), ranking, submit, self.mix.seed ^ k as u64).ok()?;
        let mut rounds_rtt = 0.0;
        loop {
            match sub.next(&self.links) {
                Step::Reserve { peers, release } => {
                    self.release(now, release, &holder);
                    for p in peers {
                        let i = self.pos[&p];
                        rounds_rtt += self.cluster.true_rtt(job.origin, i);
                        let reply = self.reserve(now, i, holder, task);
                        // Refused although its advert (as the origin read it) showed no lease.
                        if self.mix.trust
                            && matches!(reply, Reply::Rejected { .. })
                            && !self.adverts.stale.contains_key(&p)
                        {
                            self.reliability.entry(job.origin).or_default().refused_free(now, p);
                        }
                        sub.on_reply(p, reply);
                    }
                }
                Step::Done(p) => {
                    return Some((self.pos[&p.nodes[0].peer], p.nodes[0].lease, rounds_rtt, p.attempts))
                }
                Step::Failed { release, .. } => {
                    self.release(now, release, &holder);
                    return None;
                }
            }
        }
    }

    /// Books a placed job: its completion, and its end as an event.
    fn placed(&mut self, t: f64, job: &Job, (i, lease, rounds_rtt_ms, attempts): Placed) -> (At, Event) {
        self.held[i] = self.services[i].table().held().count() as u32;
        if self.held[i] as usize > self.eligible[i].len() {
            self.out.double_booked += 1;
        }
        let rtt = self.cluster.true_rtt(job.origin, i);
        let start = t + rounds_rtt_ms / 1e3;
        let end = start + transfer_s(self.mix.input_mb, rtt) + job.duration;
        self.out.placed += 1;
        if t == job.arrival {
            self.out.placed_first_try += 1;
        }
        self.sums.0 += rtt;
        self.sums.1 += end - job.arrival;
        self.sums.2 += u64::from(attempts);
        (At(end), Event::End { node: i, lease, holder: job.origin })
    }
}

/// Runs `mix` on `cluster` placed by `policy`.
pub fn run_mix(cluster: &SimCluster, mix: &MixConfig, policy: Policy) -> MixOutcome {
    let jobs = jobs(cluster, mix, &mix.weights);
    let mut run = Run::new(cluster, mix);
    let mut queue: BinaryHeap<Reverse<(At, Event)>> =
        jobs.iter().enumerate().map(|(k, j)| Reverse((At(j.arrival), Event::Try(k)))).collect();
    while let Some(Reverse((At(t), event))) = queue.pop() {
        let now = run.at(t);
        let k = match event {
            Event::End { node, lease, holder } => {
                let _ = run.services[node].handle(
                    now,
                    cluster.nodes[holder].peer,
                    LeaseRequest::Release { lease },
                );
                run.held[node] = run.services[node].table().held().count() as u32;
                continue;
            }
            Event::Try(k) => k,
        };
        let job = &jobs[k];
        run.out.tries += 1;
        run.refresh_adverts(t);
        let mut task = TaskSpec::new(format!("job-{k}"), job.gpus);
        task.origin_limits.max_rtt = job.max_rtt;
        task.lease = Duration::from_secs(24 * 3600);
        let placed = match policy {
            Policy::Oracle => run.oracle(now, job, &task),
            Policy::Swarm => run.swarm(now, k, job, &task),
        };
        match placed {
            Some(p) => queue.push(Reverse(run.placed(t, job, p))),
            None if t - job.arrival + mix.retry.as_secs_f64() <= mix.max_wait.as_secs_f64() => {
                queue.push(Reverse((At(t + mix.retry.as_secs_f64()), Event::Try(k))));
            }
            None => run.out.gave_up += 1,
        }
    }
    let mut out = run.out;
    let placed = out.placed.max(1) as f64;
    out.mean_origin_rtt_ms = run.sums.0 / placed;
    out.mean_completion_s = run.sums.1 / placed;
    out.mean_attempts = run.sums.2 as f64 / placed;
    out
}
