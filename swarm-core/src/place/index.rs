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
use super::trust::{implausible_claim, Reliability, EXCLUDED_BELOW, SUSPECT_PENALTY};
use crate::gpu::GpuDevice;
use crate::link::index::LinkIndex;
use crate::link::summary::{LinkAnswer, LinkSummary};
use crate::record::Label;
use crate::time::UnixMillis;
use crate::view::ClusterSnapshot;

#[derive(Debug, Clone, Copy)]
struct GpuSlot {
    /// MiB, saturated at 4 TiB.
    memory_mib: u32,
    index: u32,
    /// Compute capability as `major << 8 | minor`; [`NO_CC`]: unknown.
    cc: u16,
    model: u16,
    util: u8,
    taken: bool,
}

const NO_CC: u16 = u16::MAX;
const NONE: u32 = u32::MAX;

/// What a pick reads of one node, compact so a scan of 10 000 stays in cache.
#[derive(Debug, Clone, Copy)]
struct NodeSlot {
    /// Its GPUs: `gpus[gpu_start..gpu_start + gpu_count]`.
    gpu_start: u32,
    /// Its labels: `labels[label_start..label_start + label_count]`.
    label_start: u32,
    /// Round trip to the origin, ms; NaN: no measured link and no estimate.
    rtt_ms: f32,
    /// The measured summary of that link in `summaries`, or [`NONE`].
    summary: u32,
    /// Its position in the view's entries.
    pos: u32,
    gpu_count: u8,
    label_count: u8,
    /// GPUs no lease holds, at most 255: fewer than a task wants rejects the node
    /// without reading its GPUs.
    untaken: u8,
    /// Its claim of its link to the origin was not believed (see [`super::trust`]).
    suspect: bool,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct PlacementIndex<'v> {
    view: &'v ClusterSnapshot,
    links: Cow<'v, LinkIndex>,
    origin: PeerId,
    /// Nearest to the origin first (no link last), laid out in that order so a scan
    /// reads memory in sequence.
    nodes: Vec<NodeSlot>,
    /// A view position's place in `nodes`.
    slot_of: Vec<u32>,
    /// Per interned label: the places in `nodes` of the nodes carrying it, nearest first.
    label_nodes: Vec<Vec<u32>>,
    gpus: Vec<GpuSlot>,
    summaries: Vec<LinkSummary>,
    /// Interned label ids of every node, by [`NodeSlot::label_start`].
    labels: Vec<u32>,
    label_ids: HashMap<Label, u32>,
    /// Interned model names.
    models: Vec<String>,
    /// The submitter's reliability score of each node (by place in `nodes`); empty: all 1.
    trust: Vec<f32>,
}

/// Why a node fails, cheaply (a label by its position in the task).
enum Fail {
    Gpus(u32),
    Label(usize),
    NotConfirmed,
    Link(Rejection),
    Unreliable(f64),
}

/// A task's models and labels, resolved against the index's interned ones.
struct Wanted {
    models: Vec<bool>,
    labels: Vec<Option<u32>>,
    /// Whether GPUs the adverts show leased count as taken.
    leases: bool,
}

/// The per-node arrays while they are built.
struct Parts {
    nodes: Vec<NodeSlot>,
    gpus: Vec<GpuSlot>,
    summaries: Vec<LinkSummary>,
    labels: Vec<u32>,
    label_ids: HashMap<Label, u32>,
    models: Vec<String>,
}

impl Parts {
    /// Appends a node's GPUs (models interned); where they start.
    fn add_gpus(&mut self, devices: &[GpuDevice], taken: &[u32]) -> u32 {
        let start = self.gpus.len() as u32;
        for d in devices {
            let name = d.model.as_str();
            let model = match self.models.iter().position(|m| m.eq_ignore_ascii_case(name)) {
                Some(m) => m,
                None => {
                    self.models.push(name.to_owned());
                    self.models.len() - 1
                }
            };
            self.gpus.push(GpuSlot {
                memory_mib: u32::try_from(d.memory_total_mib).unwrap_or(u32::MAX),
                index: d.index,
                cc: d.compute_capability.map_or(NO_CC, |c| u16::from(c.major) << 8 | u16::from(c.minor)),
                model: u16::try_from(model).unwrap_or(u16::MAX),
                util: d.utilization_pct,
                taken: taken.contains(&d.index),
            });
        }
        start
    }

    /// Appends a node's labels (interned); where they start.
    fn add_labels(&mut self, labels: &[Label]) -> u32 {
        let start = self.labels.len() as u32;
        for l in labels {
            let next = self.label_ids.len() as u32;
            let id = *self.label_ids.entry(l.clone()).or_insert(next);
            self.labels.push(id);
        }
        start
    }

    /// A node's link to the origin: its round trip (NaN: none) and measured summary.
    fn add_link(&mut self, link: Option<LinkAnswer>) -> (f32, u32) {
        match link {
            None => (f32::NAN, NONE),
            Some(LinkAnswer::Estimated { rtt_ms, .. }) => (rtt_ms as f32, NONE),
            Some(LinkAnswer::Measured { summary, .. }) => {
                self.summaries.push(summary);
                (summary.rtt_p50_us as f32 / 1e3, (self.summaries.len() - 1) as u32)
            }
        }
    }

    /// The nodes nearest first, their GPUs laid out in that order, and the label lists.
    fn laid_out<'v>(
        self,
        view: &'v ClusterSnapshot,
        links: Cow<'v, LinkIndex>,
        origin: PeerId,
    ) -> PlacementIndex<'v> {
        let Parts { nodes: unsorted, gpus: unsorted_gpus, summaries, labels, label_ids, models } = self;
        let mut order: Vec<u32> = (0..unsorted.len() as u32).collect();
        order.sort_by(|&a, &b| {
            let (x, y) = (unsorted[a as usize].rtt_ms, unsorted[b as usize].rtt_ms);
            x.is_nan().cmp(&y.is_nan()).then(x.total_cmp(&y))
        });
        let mut nodes = Vec::with_capacity(unsorted.len());
        let mut gpus = Vec::with_capacity(unsorted_gpus.len());
        let mut slot_of = vec![0u32; unsorted.len()];
        let mut label_nodes = vec![Vec::new(); label_ids.len()];
        for (place, &pos) in order.iter().enumerate() {
            let mut node = unsorted[pos as usize];
            let start = node.gpu_start as usize;
            node.gpu_start = gpus.len() as u32;
            gpus.extend_from_slice(&unsorted_gpus[start..start + usize::from(node.gpu_count)]);
            let first = node.label_start as usize;
            for &id in &labels[first..first + usize::from(node.label_count)] {
                label_nodes[id as usize].push(place as u32);
            }
            slot_of[pos as usize] = place as u32;
            nodes.push(node);
        }
        PlacementIndex {
            view,
            links,
            origin,
            nodes,
            slot_of,
            label_nodes,
            gpus,
            summaries,
            labels,
            label_ids,
            models,
            trust: Vec::new(),
        }
    }
}

/// The link from the origin (position `o`) to the node at `i` as a submitter believes
/// it: its own measurement first; else the far end's claim unless the Vivaldi estimate
/// makes it implausible (then the estimate, and `true`: suspect); else what the index
/// knows.
fn origin_link(links: &LinkIndex, o: usize, i: usize) -> (Option<LinkAnswer>, bool) {
    if let Some((summary, age)) = links.claim_at(o, i) {
        let by = links.peer_at(o);
        return (by.map(|by| LinkAnswer::Measured { by, summary, age }), false);
    }
    match links.link_between_at(o, i) {
        Some(LinkAnswer::Measured { summary, .. }) => match links.estimate_at(o, i) {
            Some((rtt_ms, error))
                if implausible_claim(f64::from(summary.rtt_p50_us) / 1e3, rtt_ms, error) =>
            {
                (Some(LinkAnswer::Estimated { rtt_ms, error }), true)
            }
            _ => (links.link_between_at(o, i), false),
        },
        other => (other, false),
    }
}

/// A feasible node before its GPU list is made.
#[derive(Debug, Clone, Copy)]
struct Cand {
    node: usize,
    score: f64,
    rtt_ms: f64,
    measured: bool,
    degraded: bool,
    reliability: f64,
    suspect: bool,
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
        Self::build(view, Cow::Owned(view.link_index(now)), origin, leased)
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
        let n = view.entries.len();
        let mut parts = Parts {
            nodes: Vec::with_capacity(n),
            gpus: Vec::with_capacity(n * 4),
            summaries: Vec::new(),
            labels: Vec::with_capacity(n),
            label_ids: HashMap::new(),
            models: Vec::new(),
        };
        for (i, e) in view.entries.iter().enumerate() {
            let r = &e.record;
            let taken = if leased.is_empty() {
                &[][..]
            } else {
                leased.get(&r.peer_id).map(Vec::as_slice).unwrap_or_default()
            };
            let gpu_start = parts.add_gpus(&r.gpus.devices, taken);
            let label_start = parts.add_labels(&r.labels);
            let (rtt_ms, summary, suspect) = if r.peer_id == *origin {
                (0.0, NONE, false)
            } else {
                let (link, suspect) = at.map_or((None, false), |o| origin_link(&links, o, i));
                let (rtt_ms, summary) = parts.add_link(link);
                (rtt_ms, summary, suspect || links.lies_at(i))
            };
            let mine = &parts.gpus[gpu_start as usize..];
            parts.nodes.push(NodeSlot {
                pos: i as u32,
                gpu_start,
                label_start,
                rtt_ms,
                summary,
                gpu_count: u8::try_from(mine.len()).unwrap_or(u8::MAX),
                label_count: u8::try_from(parts.labels.len() - label_start as usize).unwrap_or(u8::MAX),
                untaken: u8::try_from(mine.iter().filter(|g| !g.taken).count()).unwrap_or(u8::MAX),
                suspect,
            });
        }
        parts.laid_out(view, links, *origin)
    }

    /// Applies the submitter's reliability scores as of `now`: each node's score is
    /// multiplied by its own (see [`super::trust`]).
    pub fn with_reliability(mut self, reliability: &Reliability, now: std::time::Instant) -> Self {
        self.trust = self
            .nodes
            .iter()
            .map(|n| reliability.score(now, &self.view.entries[n.pos as usize].record.peer_id) as f32)
            .collect();
        self
    }

    /// Nodes whose claim of their link to the origin was not believed (for the
    /// submitter's reliability scores).
    pub fn suspects(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.nodes.iter().filter(|n| n.suspect).map(|n| self.view.entries[n.pos as usize].record.peer_id)
    }

    /// The decoded links, for pairwise checks (gangs).
    pub fn links(&self) -> &LinkIndex {
        &self.links
    }

    /// The snapshot indexed.
    pub fn view(&self) -> &ClusterSnapshot {
        self.view
    }

    fn wanted(&self, task: &TaskSpec) -> Wanted {
        Wanted { models: self.allowed_models(task), labels: self.wanted_labels(task), leases: true }
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

    /// The interned id of each of the task's labels (`None`: no node has it).
    fn wanted_labels(&self, task: &TaskSpec) -> Vec<Option<u32>> {
        task.labels.iter().map(|l| self.label_ids.get(l).copied()).collect()
    }

    fn eligible(&self, g: &GpuSlot, task: &TaskSpec, want: &Wanted, busy: u8) -> bool {
        let cc = match task.min_compute_capability {
            None => true,
            Some(min) => g.cc != NO_CC && g.cc >= (u16::from(min.major) << 8 | u16::from(min.minor)),
        };
        !(want.leases && g.taken)
            && g.util <= busy
            && u64::from(g.memory_mib) >= task.min_gpu_memory_mib
            && cc
            && want.models.get(usize::from(g.model)).copied().unwrap_or(false)
    }

    fn gpu_slots(&self, node: &NodeSlot) -> &[GpuSlot] {
        let start = node.gpu_start as usize;
        &self.gpus[start..start + usize::from(node.gpu_count)]
    }

    fn evaluate(&self, i: usize, task: &TaskSpec, w: &ScoreWeights, want: &Wanted) -> Result<Cand, Fail> {
        let node = &self.nodes[i];
        if want.leases && u16::from(node.untaken) < task.gpus_per_node && node.untaken < u8::MAX {
            return Err(Fail::Gpus(
                self.gpu_slots(node).iter().filter(|g| self.eligible(g, task, want, w.busy_pct)).count()
                    as u32,
            ));
        }
        let slots = self.gpu_slots(node);
        let (mut eligible, mut util) = (0u32, 0u32);
        for g in slots {
            if self.eligible(g, task, want, w.busy_pct) {
                eligible += 1;
                util += u32::from(g.util);
            }
        }
        if eligible < u32::from(task.gpus_per_node) {
            return Err(Fail::Gpus(eligible));
        }
        if !want.labels.is_empty() {
            let start = node.label_start as usize;
            let have = &self.labels[start..start + usize::from(node.label_count)];
            if let Some(k) = want.labels.iter().position(|id| id.is_none_or(|id| !have.contains(&id))) {
                return Err(Fail::Label(k));
            }
        }
        let rtt_ms = f64::from(node.rtt_ms);
        if rtt_ms.is_nan() {
            return Err(Fail::NotConfirmed);
        }
        let summary = (node.summary != NONE).then(|| &self.summaries[node.summary as usize]);
        let is_origin = rtt_ms == 0.0
            && summary.is_none()
            && self.view.entries[node.pos as usize].record.peer_id == self.origin;
        if !is_origin {
            check_limits(&task.origin_limits, rtt_ms, summary).map_err(Fail::Link)?;
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
        if node.suspect {
            score *= 1.0 - SUSPECT_PENALTY;
        }
        let reliability = self.trust.get(i).map_or(1.0, |&t| f64::from(t));
        if reliability < EXCLUDED_BELOW {
            return Err(Fail::Unreliable(reliability));
        }
        score *= reliability;
        Ok(Cand { node: i, score, rtt_ms, measured, degraded, reliability, suspect: node.suspect })
    }

    fn scored(&self, c: Cand, task: &TaskSpec, w: &ScoreWeights, want: &Wanted) -> Scored {
        let mut gpus: Vec<u32> = self
            .gpu_slots(&self.nodes[c.node])
            .iter()
            .filter(|g| self.eligible(g, task, want, w.busy_pct))
            .map(|g| g.index)
            .collect();
        gpus.sort_unstable();
        Scored {
            peer: self.view.entries[self.nodes[c.node].pos as usize].record.peer_id,
            score: c.score,
            gpus,
            rtt_ms: c.rtt_ms,
            measured: c.measured,
            degraded: c.degraded,
            reliability: c.reliability,
            suspect: c.suspect,
        }
    }

    fn better(&self, a: &Cand, b: &Cand) -> bool {
        let peer = |c: &Cand| &self.view.entries[self.nodes[c.node].pos as usize].record.peer_id;
        a.score > b.score || (a.score == b.score && peer(a) < peer(b))
    }

    /// Every node: the feasible ones best first (ties by peer id), the others with the
    /// constraint they fail.
    pub fn rank(&self, task: &TaskSpec, w: &ScoreWeights) -> Ranking {
        self.rank_wanting(task, w, &self.wanted(task))
    }

    /// The ranking a submission starts from: [`Self::rank`]; and when the adverts leave
    /// fewer feasible nodes than the task needs, after those, the nodes that fit but for
    /// advertised leases (an advert is up to a heartbeat old; the node's own table
    /// decides), with the rejections as they stand without adverts. `exact` is a node
    /// whose leases are known exactly (the submitter itself): it is never added.
    pub fn rank_for_submission(&self, task: &TaskSpec, w: &ScoreWeights, exact: &PeerId) -> Ranking {
        let mut want = self.wanted(task);
        let mut ranking = self.rank_wanting(task, w, &want);
        if ranking.feasible.len() >= usize::from(task.nodes) {
            return ranking;
        }
        want.leases = false;
        let all = self.rank_wanting(task, w, &want);
        let known: Vec<PeerId> = ranking.feasible.iter().map(|s| s.peer).collect();
        let before = ranking.feasible.len();
        ranking
            .feasible
            .extend(all.feasible.into_iter().filter(|s| s.peer != *exact && !known.contains(&s.peer)));
        if ranking.feasible.len() > before {
            ranking.rejected = all.rejected;
        }
        ranking
    }

    fn rank_wanting(&self, task: &TaskSpec, w: &ScoreWeights, want: &Wanted) -> Ranking {
        let mut ranking = Ranking::default();
        for (pos, &i) in self.slot_of.iter().enumerate() {
            let i = i as usize;
            let peer = self.view.entries[pos].record.peer_id;
            match self.evaluate(i, task, w, want) {
                Ok(c) => ranking.feasible.push(self.scored(c, task, w, want)),
                Err(fail) => {
                    let why = match fail {
                        Fail::Gpus(eligible) => Rejection::Gpus { eligible, wanted: task.gpus_per_node },
                        Fail::Label(k) => {
                            let l = &task.labels[k];
                            Rejection::Label(format!("{}={}", l.key.as_str(), l.value.as_str()))
                        }
                        Fail::NotConfirmed => Rejection::NotConfirmed,
                        Fail::Unreliable(reliability) => Rejection::Unreliable { reliability },
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
    /// list, without its work for the rest. Nodes are read nearest first, and the scan
    /// stops once no farther node could score above the k-th best (a node's score is
    /// at most capacity + idleness + the link part of its round trip).
    pub fn top(&self, task: &TaskSpec, w: &ScoreWeights, k: usize) -> Vec<Scored> {
        let want = self.wanted(task);
        let mut best: Vec<Cand> = Vec::with_capacity(k + 1);
        let gain = (1.0 - w.estimate_penalty).max(1.0) * (1.0 - w.degraded_penalty).max(1.0);
        let ceiling = w.capacity.max(0.0) + w.idleness.max(0.0);
        // A labelled task reads only the nodes with its first label.
        let all = 0..self.nodes.len() as u32;
        let places: Box<dyn Iterator<Item = u32> + '_> = match want.labels.first() {
            None => Box::new(all),
            Some(None) => Box::new(std::iter::empty()),
            Some(Some(id)) => Box::new(self.label_nodes[*id as usize].iter().copied()),
        };
        for i in places {
            let i = i as usize;
            if k > 0 && best.len() == k {
                let rtt = f64::from(self.nodes[i].rtt_ms);
                let bound = (ceiling + w.link.max(0.0) / (1.0 + rtt / w.link_scale_ms.max(1e-3))) * gain;
                if rtt.is_nan() || bound < best[k - 1].score {
                    break;
                }
            }
            let Ok(c) = self.evaluate(i, task, w, &want) else { continue };
            if best.len() == k && best.last().is_some_and(|last| !self.better(&c, last)) {
                continue;
            }
            let at = best.iter().position(|b| self.better(&c, b)).unwrap_or(best.len());
            best.insert(at, c);
            best.truncate(k);
        }
        best.into_iter().map(|c| self.scored(c, task, w, &want)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::place::score::tests::{id, view};
    use crate::record::tests::NOW;

    #[test]
    fn stale_adverts_are_asked_last_but_never_for_the_exact_node() {
        let v = view();
        let mut us = TaskSpec::new("us", 1);
        us.labels = vec![Label::parse("region=us").unwrap()];
        // Node 3, the only one in us, advertises both its GPUs leased.
        let leased: HashMap<PeerId, Vec<u32>> = [(id(3), vec![0, 1])].into_iter().collect();
        let index = PlacementIndex::new(&v, &id(1), &leased, NOW);
        let w = ScoreWeights::default();
        assert!(index.rank(&us, &w).feasible.is_empty());
        let r = index.rank_for_submission(&us, &w, &id(1));
        assert_eq!(r.feasible.iter().map(|s| s.peer).collect::<Vec<_>>(), vec![id(3)]);
        assert_eq!(r.feasible[0].gpus, vec![0, 1], "its GPUs as they stand without adverts");
        assert!(index.rank_for_submission(&us, &w, &id(3)).feasible.is_empty(), "its own table is exact");
        // Enough feasible by the adverts: nothing is added.
        let any = TaskSpec::new("any", 1);
        assert_eq!(index.rank_for_submission(&any, &w, &id(1)), index.rank(&any, &w));
    }
}
