//! [`PlacementIndex`]: a view prepared for placing tasks submitted at one origin. Built
//! once per view (O(records + links): summaries decoded, each node's link to the origin
//! resolved, GPUs flattened with models interned), it then ranks a task with
//! [`PlacementIndex::rank`] (every node, with reasons) or picks the best few with
//! [`PlacementIndex::top`] (no allocation per node), both deterministic and equal to
//! each other on the nodes they share.

use std::borrow::Cow;
use std::collections::HashMap;

use libp2p_identity::PeerId;

use super::score::{check_limits, Ranking, Rejection, ScoreWeights, Scored};
use super::task::TaskSpec;
use crate::link::index::LinkIndex;
use crate::link::summary::{LinkAnswer, LinkSummary};
use crate::time::UnixMillis;
use crate::view::ClusterSnapshot;

#[derive(Debug, Clone, Copy)]
struct GpuSlot {
    index: u32,
    memory_mib: u64,
    cc: Option<(u8, u8)>,
    util: u8,
    taken: bool,
    model: u16,
}

/// The link from the origin to a node: round trip (ms) and its measured summary.
type OriginLink = Option<(f64, Option<LinkSummary>)>;

/// See the module docs.
#[derive(Debug, Clone)]
pub struct PlacementIndex<'v> {
    view: &'v ClusterSnapshot,
    links: Cow<'v, LinkIndex>,
    origin: PeerId,
    to_origin: Vec<OriginLink>,
    gpus: Vec<GpuSlot>,
    /// Per node: its GPUs in `gpus`.
    spans: Vec<(u32, u32)>,
    /// Interned model names, lower case.
    models: Vec<String>,
}

/// Why a node fails, cheaply (a label by its position in the task).
enum Fail {
    Gpus(u32),
    Label(usize),
    NotConfirmed,
    Link(Rejection),
}

/// A feasible node before its GPU list is made.
#[derive(Debug, Clone, Copy)]
struct Cand {
    node: usize,
    score: f64,
    rtt_ms: f64,
    measured: bool,
    degraded: bool,
}

impl<'v> PlacementIndex<'v> {
    /// Prepares `view` for tasks submitted at `origin` as of `now`; `leased` lists GPU
    /// indices known to be leased per node (they count as taken).
    pub fn new(
        view: &'v ClusterSnapshot,
        origin: &PeerId,
        leased: &HashMap<PeerId, Vec<u32>>,
        now: UnixMillis,
    ) -> Self {
        Self::build(view, Cow::Owned(LinkIndex::new(view, now)), origin, leased)
    }

    /// [`Self::new`] with the view's [`LinkIndex`] already built (it does not depend on
    /// the origin): O(records) lookups instead of decoding every summary again.
    pub fn with_links(
        view: &'v ClusterSnapshot,
        links: &'v LinkIndex,
        origin: &PeerId,
        leased: &HashMap<PeerId, Vec<u32>>,
    ) -> Self {
        Self::build(view, Cow::Borrowed(links), origin, leased)
    }

    fn build(
        view: &'v ClusterSnapshot,
        links: Cow<'v, LinkIndex>,
        origin: &PeerId,
        leased: &HashMap<PeerId, Vec<u32>>,
    ) -> Self {
        let at = links.position(origin);
        let mut models: Vec<String> = Vec::new();
        let mut gpus = Vec::new();
        let mut spans = Vec::with_capacity(view.entries.len());
        let mut to_origin = Vec::with_capacity(view.entries.len());
        for (i, e) in view.entries.iter().enumerate() {
            let r = &e.record;
            let taken = leased.get(&r.peer_id).map(Vec::as_slice).unwrap_or_default();
            let start = gpus.len() as u32;
            for d in r.gpus.devices.iter() {
                let name = d.model.as_str().to_ascii_lowercase();
                let model = match models.iter().position(|m| *m == name) {
                    Some(m) => m,
                    None => {
                        models.push(name);
                        models.len() - 1
                    }
                };
                gpus.push(GpuSlot {
                    index: d.index,
                    memory_mib: d.memory_total_mib,
                    cc: d.compute_capability.map(|c| (c.major, c.minor)),
                    util: d.utilization_pct,
                    taken: taken.contains(&d.index),
                    model: u16::try_from(model).unwrap_or(u16::MAX),
                });
            }
            spans.push((start, gpus.len() as u32));
            let link = if r.peer_id == *origin {
                Some((0.0, None))
            } else {
                at.and_then(|o| links.link_between_at(o, i)).map(|answer| match answer {
                    LinkAnswer::Measured { summary, .. } => {
                        (f64::from(summary.rtt_p50_us) / 1e3, Some(summary))
                    }
                    LinkAnswer::Estimated { rtt_ms, .. } => (rtt_ms, None),
                })
            };
            to_origin.push(link);
        }
        Self { view, links, origin: *origin, to_origin, gpus, spans, models }
    }

    /// The decoded links, for pairwise checks (gangs).
    pub fn links(&self) -> &LinkIndex {
        &self.links
    }

    /// The snapshot indexed.
    pub fn view(&self) -> &ClusterSnapshot {
        self.view
    }

    /// Which interned models the task allows (all when it names none).
    fn allowed_models(&self, task: &TaskSpec) -> Vec<bool> {
        self.models
            .iter()
            .map(|m| {
                task.gpu_models.is_empty() || task.gpu_models.iter().any(|w| w.trim().eq_ignore_ascii_case(m))
            })
            .collect()
    }

    fn eligible(&self, g: &GpuSlot, task: &TaskSpec, allowed: &[bool], busy: u8) -> bool {
        let cc = match (task.min_compute_capability, g.cc) {
            (None, _) => true,
            (Some(min), Some(have)) => have >= (min.major, min.minor),
            (Some(_), None) => false,
        };
        !g.taken
            && g.util <= busy
            && g.memory_mib >= task.min_gpu_memory_mib
            && cc
            && allowed.get(usize::from(g.model)).copied().unwrap_or(false)
    }

    fn evaluate(&self, i: usize, task: &TaskSpec, w: &ScoreWeights, allowed: &[bool]) -> Result<Cand, Fail> {
        let (start, end) = self.spans[i];
        let slots = &self.gpus[start as usize..end as usize];
        let (mut eligible, mut util) = (0u32, 0u32);
        for g in slots {
            if self.eligible(g, task, allowed, w.busy_pct) {
                eligible += 1;
                util += u32::from(g.util);
            }
        }
        if eligible < u32::from(task.gpus_per_node) {
            return Err(Fail::Gpus(eligible));
        }
        let record = &self.view.entries[i].record;
        if !task.labels.is_empty() {
            if let Some(k) =
                task.labels.iter().position(|want| !record.labels.iter().any(|have| have == want))
            {
                return Err(Fail::Label(k));
            }
        }
        let Some((rtt_ms, summary)) = self.to_origin[i] else { return Err(Fail::NotConfirmed) };
        let is_origin = record.peer_id == self.origin;
        if !is_origin {
            check_limits(&task.origin_limits, rtt_ms, summary.as_ref()).map_err(Fail::Link)?;
        }
        let measured = is_origin || summary.is_some();
        let degraded = summary.is_some_and(|s| s.degraded != 0);
        let capacity = f64::from(eligible) / slots.len().max(1) as f64;
        let idle = 1.0 - f64::from(util) / f64::from(eligible.max(1)) / 100.0;
        let mut link = 1.0 / (1.0 + rtt_ms / w.link_scale_ms.max(1e-3));
        if !measured {
            link *= 1.0 - w.estimate_penalty;
        }
        let mut score = w.capacity * capacity + w.idleness * idle + w.link * link;
        if degraded {
            score *= 1.0 - w.degraded_penalty;
        }
        Ok(Cand { node: i, score, rtt_ms, measured, degraded })
    }

    fn scored(&self, c: Cand, task: &TaskSpec, w: &ScoreWeights, allowed: &[bool]) -> Scored {
        let (start, end) = self.spans[c.node];
        let mut gpus: Vec<u32> = self.gpus[start as usize..end as usize]
            .iter()
            .filter(|g| self.eligible(g, task, allowed, w.busy_pct))
            .map(|g| g.index)
            .collect();
        gpus.sort_unstable();
        Scored {
            peer: self.view.entries[c.node].record.peer_id,
            score: c.score,
            gpus,
            rtt_ms: c.rtt_ms,
            measured: c.measured,
            degraded: c.degraded,
        }
    }

    fn better(&self, a: &Cand, b: &Cand) -> bool {
        let peer = |c: &Cand| &self.view.entries[c.node].record.peer_id;
        a.score > b.score || (a.score == b.score && peer(a) < peer(b))
    }

    /// Every node: the feasible ones best first (ties by peer id), the others with the
    /// constraint they fail.
    pub fn rank(&self, task: &TaskSpec, w: &ScoreWeights) -> Ranking {
        let allowed = self.allowed_models(task);
        let mut ranking = Ranking::default();
        for i in 0..self.spans.len() {
            let peer = self.view.entries[i].record.peer_id;
            match self.evaluate(i, task, w, &allowed) {
                Ok(c) => ranking.feasible.push(self.scored(c, task, w, &allowed)),
                Err(fail) => {
                    let why = match fail {
                        Fail::Gpus(eligible) => Rejection::Gpus { eligible, wanted: task.gpus_per_node },
                        Fail::Label(k) => {
                            let l = &task.labels[k];
                            Rejection::Label(format!("{}={}", l.key.as_str(), l.value.as_str()))
                        }
                        Fail::NotConfirmed => Rejection::NotConfirmed,
                        Fail::Link(why) => why,
                    };
                    ranking.rejected.push((peer, why));
                }
            }
        }
        ranking.feasible.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.peer.cmp(&b.peer)));
        ranking
    }

    /// The `k` best feasible nodes, best first: the head of [`Self::rank`]'s feasible
    /// list, without its work for the rest.
    pub fn top(&self, task: &TaskSpec, w: &ScoreWeights, k: usize) -> Vec<Scored> {
        let allowed = self.allowed_models(task);
        let mut best: Vec<Cand> = Vec::with_capacity(k + 1);
        for i in 0..self.spans.len() {
            let Ok(c) = self.evaluate(i, task, w, &allowed) else { continue };
            if best.len() == k && best.last().is_some_and(|last| !self.better(&c, last)) {
                continue;
            }
            let at = best.iter().position(|b| self.better(&c, b)).unwrap_or(best.len());
            best.insert(at, c);
            best.truncate(k);
        }
        best.into_iter().map(|c| self.scored(c, task, w, &allowed)).collect()
    }
}
