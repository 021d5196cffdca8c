//! Choosing a gang: `k` feasible nodes whose every pairwise link meets the task's member
//! limits, with the best total score. Greedy from each of the best few starting nodes
//! (each start adds the best-ranked nodes compatible with all chosen so far), keeping the
//! best complete set: O(starts × candidates × k) pair checks, deterministic.

use libp2p_identity::PeerId;

use super::score::{check_limits, Ranking, Rejection, Scored};
use super::task::TaskSpec;
use crate::link::index::LinkIndex;
use crate::link::summary::LinkAnswer;

/// Starting nodes tried.
const STARTS: usize = 16;

/// A chosen gang.
#[derive(Debug, Clone, PartialEq)]
pub struct Gang {
    /// Its members, best first.
    pub members: Vec<Scored>,
    /// The worst round trip between two members, ms.
    pub worst_rtt_ms: f64,
}

/// Why no gang could be formed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GangError {
    /// Fewer feasible nodes than members wanted.
    #[error("{feasible} feasible nodes, {wanted} wanted")]
    NotEnough {
        /// Feasible nodes.
        feasible: usize,
        /// Members wanted.
        wanted: u16,
    },
    /// No set of that size meets the member limits.
    #[error("no {wanted} nodes meet the member link limits (largest set: {largest}; e.g. {a} - {b}: {why})")]
    Limits {
        /// Members wanted.
        wanted: u16,
        /// The largest compatible set found.
        largest: usize,
        /// One pair that failed.
        a: Box<PeerId>,
        /// The other end.
        b: Box<PeerId>,
        /// Why.
        why: Box<Rejection>,
    },
}

/// The member link between `a` and `b`, checked: its RTT, or why it fails.
pub(crate) fn pair(links: &LinkIndex, task: &TaskSpec, a: &PeerId, b: &PeerId) -> Result<f64, Rejection> {
    let l = &task.member_limits;
    match links.link_between(a, b) {
        Some(LinkAnswer::Measured { summary, .. }) => {
            let rtt = f64::from(summary.rtt_p50_us) / 1e3;
            check_limits(l, rtt, Some(&summary)).map(|()| rtt)
        }
        Some(LinkAnswer::Estimated { rtt_ms, .. }) => {
            // An estimate knows nothing of loss, jitter or throughput.
            if l.max_loss.is_some() || l.max_jitter.is_some() || l.min_throughput_bps.is_some() {
                return Err(Rejection::NotConfirmed);
            }
            check_limits(l, rtt_ms, None).map(|()| rtt_ms)
        }
        None if l.any() => Err(Rejection::NotConfirmed),
        // No limits: any two confirmed members do; the RTT is unknown.
        None => Ok(f64::NAN),
    }
}

/// Chooses `task.nodes` members among `ranking.feasible`. See the module docs.
pub fn choose_gang(links: &LinkIndex, ranking: &Ranking, task: &TaskSpec) -> Result<Gang, GangError> {
    let k = usize::from(task.nodes);
    let cands = &ranking.feasible;
    if cands.len() < k {
        return Err(GangError::NotEnough { feasible: cands.len(), wanted: task.nodes });
    }
    let mut best: Option<(f64, Vec<usize>, f64)> = None;
    let mut largest = 0;
    let mut failure: Option<(PeerId, PeerId, Rejection)> = None;
    for start in 0..cands.len().min(STARTS) {
        let mut chosen = vec![start];
        let mut worst: f64 = 0.0;
        for j in 0..cands.len() {
            if chosen.len() == k {
                break;
            }
            if chosen.contains(&j) {
                continue;
            }
            let mut ok = true;
            let mut local_worst = worst;
            for &m in &chosen {
                match pair(links, task, &cands[m].peer, &cands[j].peer) {
                    Ok(rtt) => {
                        if rtt.is_finite() {
                            local_worst = local_worst.max(rtt);
                        }
                    }
                    Err(why) => {
                        failure.get_or_insert((cands[m].peer, cands[j].peer, why));
                        ok = false;
                        break;
                    }
                }
            }
            if ok {
                chosen.push(j);
                worst = local_worst;
            }
        }
        largest = largest.max(chosen.len());
        if chosen.len() == k {
            let total: f64 = chosen.iter().map(|&i| cands[i].score).sum();
            if best.as_ref().is_none_or(|(t, _, _)| total > *t) {
                best = Some((total, chosen, worst));
            }
        }
    }
    match best {
        Some((_, mut idx, worst)) => {
            idx.sort_unstable();
            Ok(Gang { members: idx.into_iter().map(|i| cands[i].clone()).collect(), worst_rtt_ms: worst })
        }
        None => {
            let (a, b, why) = failure.unwrap_or((cands[0].peer, cands[0].peer, Rejection::NotConfirmed));
            Err(GangError::Limits {
                wanted: task.nodes,
                largest,
                a: Box::new(a),
                b: Box::new(b),
                why: Box::new(why),
            })
        }
    }
}
