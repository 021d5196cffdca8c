//! Placing tasks from a node: [`Node::place`] ranks the node's own view, asks nodes for
//! leases over `/swarm/lease/1` as a [`Submission`] directs (power-of-d choices, retries,
//! gangs all or nothing), and returns the [`Placement`]; [`Node::renew`] and
//! [`Node::release`] act on all its leases.
//!
//! Cancellation: every method here may be dropped at any await. A `place` future dropped
//! mid-way leaves no lease behind: grants it had received are released by a task it
//! spawns as it drops ([`Unclaimed`]), and grants still in flight are released by the
//! driver when their answer finds no one waiting. A dropped `renew` or `release` leaves
//! the leases as the requests that were sent made them (they expire if not renewed).

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::BuildHasher as _;
use std::time::Duration;

use futures::future::join_all;
use libp2p::PeerId;
use swarm_core::place::wire::{LeaseRequest, LeaseResponse};
use swarm_core::place::{
    Lease, Placement, Ranking, Reply, ScoreWeights, Step, Submission, SubmitConfig, TaskSpec,
};

use super::{Command, Node, NodeError, SharedIndex};

impl Node {
    /// Places `task` with the default [`SubmitConfig`]. See [`Node::place_with`].
    pub async fn place(&self, task: TaskSpec) -> Result<Placement, NodeError> {
        self.place_with(task, SubmitConfig::default()).await
    }

    /// Places `task` from this node's view: ranks every node (this one is the task's
    /// origin), then reserves leases on the chosen node, or on every member of a gang at
    /// once, retrying elsewhere on refusal up to `config.max_attempts` rounds. A gang is
    /// all or nothing: a round's partial grants are released before the next. The
    /// leases are held by this node and expire after `task.lease` unless renewed
    /// ([`Node::renew`]); [`Node::release`] ends them.
    pub async fn place_with(&self, task: TaskSpec, config: SubmitConfig) -> Result<Placement, NodeError> {
        Ok(self.submit(task, config, false).await?.0)
    }

    /// Has the driver watch a placement this node holds (issue 16, part 2): its
    /// constrained links raise [`NodeEvent::PlacementLinkBreached`](crate::NodeEvent).
    async fn watch(&self, task: TaskSpec, placement: &Placement) {
        let _ = self.commands.send(Command::WatchPlacement(Box::new((task, placement.clone())))).await;
    }

    /// [`Node::place`], and the ranking the placement was chosen from (to explain it
    /// without ranking the view a second time).
    pub async fn place_explained(&self, task: TaskSpec) -> Result<(Placement, Ranking), NodeError> {
        let (placement, ranking) = self.submit(task, SubmitConfig::default(), true).await?;
        Ok((placement, ranking.unwrap_or_default()))
    }

    async fn submit(
        &self,
        task: TaskSpec,
        config: SubmitConfig,
        keep_ranking: bool,
    ) -> Result<(Placement, Option<Ranking>), NodeError> {
        task.validate().map_err(|e| NodeError::Place(e.into()))?;
        // A single node's placement reads only the few best nodes (what the submission
        // draws from); a gang, or a placement to explain, ranks every node.
        let few = (task.nodes == 1 && !keep_ranking).then_some(config.pool + config.max_attempts as usize);
        let (index, ranking, leased) = self.ranked(&task, few).await?;
        let seed = RandomState::new().hash_one(&task.id);
        let spec = task.clone();
        let mut submission = Submission::new(task, ranking, config, seed)?;
        let request = submission.request();
        // Every grant is in `unclaimed` from the poll that takes it out of its channel
        // until the caller has the placement (or the grant is released).
        let unclaimed = Unclaimed { node: self.clone(), leases: std::sync::Mutex::new(Vec::new()) };
        loop {
            match submission.next(index.links()) {
                Step::Reserve { peers, release } => {
                    self.release_all(&release).await;
                    unclaimed.forget(&release);
                    let asks = peers.iter().map(|&peer| {
                        let (request, unclaimed) = (request.clone(), &unclaimed);
                        async move {
                            let answer = self.lease_request(peer, request).await;
                            if let Ok(LeaseResponse::Granted { lease, .. }) = &answer {
                                unclaimed.hold(peer, *lease);
                            }
                            answer
                        }
                    });
                    for (peer, answer) in peers.iter().zip(join_all(asks).await) {
                        self.record_outcome(*peer, &answer, &leased);
                        submission.on_reply(*peer, reply_of(answer));
                    }
                }
                Step::Done(placement) => {
                    // Watched before the grants are handed over: dropped at this await,
                    // the grants are still released (a watch alone expires with them).
                    self.watch(spec.clone(), &placement).await;
                    // The caller holds them now.
                    unclaimed.forget(&placement.leases());
                    return Ok((placement, keep_ranking.then(|| submission.ranking().clone())));
                }
                Step::Failed { error, release } => {
                    self.release_all(&release).await;
                    unclaimed.forget(&release);
                    return Err(error.into());
                }
            }
        }
    }

    /// How this node ranks every node of its view for `task` (the task's origin is this
    /// node): the feasible ones best first, and why each other one is rejected.
    /// [`Ranking::explain`] prints it.
    pub async fn rank(&self, task: &TaskSpec) -> Result<Ranking, NodeError> {
        Ok(self.ranked(task, None).await?.1)
    }

    /// Ranks `task` from this node's view, its own measurements first, claims
    /// cross-checked and its reliability scores applied (`swarm_core::place::trust`);
    /// also the nodes whose adverts show leases. The driver's live index is ranked as
    /// it stands (adverts are advisory and up to a heartbeat old; this node's own lease
    /// table, which the driver put in, is exact). With `few`, only that many best
    /// feasible nodes are ranked (no rejections), unless none is.
    async fn ranked(
        &self,
        task: &TaskSpec,
        few: Option<usize>,
    ) -> Result<(SharedIndex, Ranking, HashSet<PeerId>), NodeError> {
        let index = self.ask(Command::PlacementIndex).await?;
        let weights = ScoreWeights::default();
        let origin = self.peer_id();
        let now = std::time::Instant::now();
        let ranking = {
            let mut reliability = self.reliability.lock().unwrap_or_else(|e| e.into_inner());
            for suspect in index.suspects() {
                reliability.suspect_claim(now, suspect);
            }
            let top = few.map(|k| index.top_trusting(task, &weights, k, &reliability, now));
            match top {
                Some(feasible) if !feasible.is_empty() => Ranking { feasible, rejected: Vec::new() },
                // None feasible: the full ranking, which also tries the nodes whose
                // adverts show leases (`rank_for_submission`), and says why.
                _ => index.rank_trusting(task, &weights, &origin, &reliability, now),
            }
        };
        let advertised = index.advertised_leases().collect();
        Ok((index, ranking, advertised))
    }

    /// Keeps a lease answer's lesson: a grant, or a refusal from a node whose advert
    /// showed no lease (a liar refuses what it advertised free).
    fn record_outcome(
        &self,
        peer: PeerId,
        answer: &Result<LeaseResponse, NodeError>,
        leased: &HashSet<PeerId>,
    ) {
        let now = std::time::Instant::now();
        let mut reliability = self.reliability.lock().unwrap_or_else(|e| e.into_inner());
        match answer {
            Ok(LeaseResponse::Granted { .. }) => reliability.kept(now, peer),
            Ok(LeaseResponse::Rejected { .. }) if !leased.contains(&peer) => {
                reliability.refused_free(now, peer)
            }
            _ => {}
        }
    }

    /// Extends every lease of `placement` by its lease length; the earliest expiry among
    /// them. Fails if any node refuses (the lease expired, or the node restarted): the
    /// task must then be placed again.
    pub async fn renew(&self, placement: &Placement) -> Result<Duration, NodeError> {
        let ttl_ms = u32::try_from(placement.lease.as_millis()).unwrap_or(u32::MAX);
        let asks = placement.leases().into_iter().map(|(peer, lease)| async move {
            (peer, lease, self.lease_request(peer, LeaseRequest::Renew { lease, ttl_ms }).await)
        });
        let mut earliest = placement.lease;
        for (peer, lease, answer) in join_all(asks).await {
            if let Ok(LeaseResponse::Failed { .. }) = &answer {
                // It granted this lease and no longer holds it.
                let mut reliability = self.reliability.lock().unwrap_or_else(|e| e.into_inner());
                reliability.broken(std::time::Instant::now(), peer);
            }
            match answer? {
                LeaseResponse::Renewed { expires_in_ms } => {
                    earliest = earliest.min(Duration::from_millis(u64::from(expires_in_ms)));
                }
                other => return Err(refused(peer, lease, &other)),
            }
        }
        let _ = self.commands.send(Command::PlacementRenewed(placement.task.clone(), earliest)).await;
        Ok(earliest)
    }

    /// Ends every lease of `placement`. All are asked; the first failure is returned.
    pub async fn release(&self, placement: &Placement) -> Result<(), NodeError> {
        let _ = self.commands.send(Command::PlacementReleased(placement.task.clone())).await;
        let mut first = None;
        for (peer, lease, answer) in self.release_leases(&placement.leases()).await {
            let err = match answer {
                Ok(LeaseResponse::Released) => continue,
                Ok(other) => refused(peer, lease, &other),
                Err(e) => e,
            };
            first.get_or_insert(err);
        }
        first.map_or(Ok(()), Err)
    }

    /// The leases this node has granted and that are live.
    pub async fn leases(&self) -> Result<Vec<Lease>, NodeError> {
        self.ask(Command::Leases).await
    }

    /// Sends one lease request to `peer` (this node answers its own).
    pub async fn lease_request(
        &self,
        peer: PeerId,
        request: LeaseRequest,
    ) -> Result<LeaseResponse, NodeError> {
        self.ask(|tx| Command::Lease(peer, request, tx)).await?.take()
    }

    async fn release_leases(
        &self,
        leases: &[(PeerId, u64)],
    ) -> Vec<(PeerId, u64, Result<LeaseResponse, NodeError>)> {
        let asks = leases.iter().map(|&(peer, lease)| async move {
            (peer, lease, self.lease_request(peer, LeaseRequest::Release { lease }).await)
        });
        join_all(asks).await
    }

    /// Releases a failed round's grants; a lease whose release is lost expires.
    async fn release_all(&self, leases: &[(PeerId, u64)]) {
        for (peer, lease, answer) in self.release_leases(leases).await {
            if !matches!(answer, Ok(LeaseResponse::Released)) {
                tracing::debug!(%peer, lease, ?answer, "release failed; the lease will expire");
            }
        }
    }
}

/// Leases a placement in progress was granted and has not handed to its caller: released
/// (by a spawned task) if the placement's future is dropped before it returns.
struct Unclaimed {
    node: Node,
    leases: std::sync::Mutex<Vec<(PeerId, u64)>>,
}

impl Unclaimed {
    fn hold(&self, peer: PeerId, lease: u64) {
        if let Ok(mut held) = self.leases.lock() {
            held.push((peer, lease));
        }
    }

    fn forget(&self, leases: &[(PeerId, u64)]) {
        if let Ok(mut held) = self.leases.lock() {
            held.retain(|l| !leases.contains(l));
        }
    }
}

impl Drop for Unclaimed {
    fn drop(&mut self) {
        let leases = std::mem::take(self.leases.get_mut().unwrap_or_else(|e| e.into_inner()));
        if leases.is_empty() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let node = self.node.clone();
                tracing::debug!(leases = leases.len(), "placement dropped: releasing its grants");
                runtime.spawn(async move { node.release_all(&leases).await });
            }
            // No runtime to send from: the leases expire after their lease time.
            Err(_) => tracing::debug!(leases = leases.len(), "placement dropped outside a runtime"),
        }
    }
}

fn refused(peer: PeerId, lease: u64, answer: &LeaseResponse) -> NodeError {
    let reason = match answer {
        LeaseResponse::Failed { reason } | LeaseResponse::Rejected { reason, .. } => {
            reason.as_str().to_owned()
        }
        other => format!("unexpected answer {other:?}"),
    };
    NodeError::LeaseRefused { peer, lease, reason }
}

fn reply_of(answer: Result<LeaseResponse, NodeError>) -> Reply {
    answer.map_or_else(|e| Reply::Failed(e.to_string()), Reply::from)
}
