//! [`PlacementIndex`]: a view prepared for placing tasks submitted at one origin. Built
//! once (O(records + links): summaries decoded, each node's link to the origin
//! resolved, GPUs flattened with models interned), it then ranks a task with
//! [`PlacementIndex::rank`] (every node, with reasons) or picks the best few with
//! [`PlacementIndex::top`] (no allocation per node), both deterministic and equal to
//! each other on the nodes they share.
//!
//! It is kept up to date record by record (issue 16, part 6): [`PlacementIndex::upsert`]
//! re-reads one node (its GPUs, labels, link to the origin, place in the nearest-first
//! order) in O(its GPUs + labels + log n), [`PlacementIndex::remove`] drops one, and
//! [`PlacementIndex::set_leased`] updates one node's advertised leases. A change of the
//! origin's own record re-resolves the nodes it measured (before and after); only a move
//! of its coordinate by more than [`COORDINATE_SLACK_MS`] re-resolves every node (the
//! estimates), O(n log n).
//! Nodes live in slots that a removal frees and an insertion reuses; the flat GPU and
//! label arrays are compacted when half of them is stale.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use libp2p_identity::PeerId;

use super::score::{check_limits, Ranking, Rejection, ScoreWeights, Scored};
use super::task::TaskSpec;
use super::trust::{implausible_claim, Reliability, EXCLUDED_BELOW, SUSPECT_PENALTY};
use crate::link::index::LinkIndex;
use crate::link::summary::{LinkAnswer, LinkSummary};
use crate::record::Label;
use crate::time::UnixMillis;
use crate::view::{ClusterSnapshot, ViewEntry};

#[derive(Debug, Clone, Copy, Default)]
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

/// How far the origin's coordinate may move before every estimated link is resolved
/// again, ms (an estimate is off by at most this meanwhile).
pub const COORDINATE_SLACK_MS: f64 = 0.5;

/// What a pick reads of one node, compact so a scan of 10 000 stays in cache.
#[derive(Debug, Clone, Copy, Default)]
struct NodeSlot {
    /// Its GPUs: `gpus[gpu_start..gpu_start + gpu_count]`.
    gpu_start: u32,
    /// Its labels: `labels[label_start..label_start + label_count]`.
    label_start: u32,
    /// Round trip to the origin, ms; NaN: no measured link and no estimate.
    rtt_ms: f32,
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
    links: Cow<'v, LinkIndex>,
    origin: PeerId,
    /// Each node's slot (free slots hold zero GPUs and labels).
    nodes: Vec<NodeSlot>,
    /// The node in each slot.
    peers: Vec<PeerId>,
    /// The measured summary of each slot's link to the origin.
    summaries: Vec<Option<LinkSummary>>,
    /// Live slots by peer (so a full ranking reads nodes in peer order, as a view lists
    /// them).
    by_peer: BTreeMap<PeerId, u32>,
    /// Slots freed by removals.
    free: Vec<u32>,
    /// Live slots nearest to the origin first (no link last; ties by peer).
    order: Vec<u32>,
    /// Per interned label: the live slots carrying it, in `order`'s order.
    label_nodes: Vec<Vec<u32>>,
    gpus: Vec<GpuSlot>,
    /// Interned label ids of every node, by [`NodeSlot::label_start`].
    labels: Vec<u32>,
    /// Entries of `gpus` and `labels` no slot points to any more.
    stale: usize,
    /// Slots that joined or moved in `order` since the last [`Self::relayout`] (each
    /// leaves the scan's memory order, which the next relayout restores).
    moved: usize,
    label_ids: HashMap<Label, u32>,
    /// Interned model names.
    models: Vec<String>,
    /// The submitter's reliability score of each slot; empty: all 1.
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
    /// Reliability scores by slot in place of the index's own.
    trust: Option<Vec<f32>>,
}

/// Where a node's `count` entries go in a flat array that held its `old` (start, count):
/// over them when they fit, else at the end; what no longer counts is added to `stale`.
fn room<T: Default + Clone>(flat: &mut Vec<T>, stale: &mut usize, old: (u32, u8), count: usize) -> usize {
    let (start, had) = (old.0 as usize, usize::from(old.1));
    if count <= had {
        *stale += had - count;
        start
    } else {
        *stale += had;
        flat.resize(flat.len() + count, T::default());
        flat.len() - count
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

    /// An index of no node yet, for tasks submitted at `origin`, that owns its link
    /// index: to be kept up to date with [`Self::upsert`] and [`Self::remove`] (see
    /// [`super::live::LiveIndex`]).
    pub fn empty(origin: &PeerId, now: UnixMillis) -> PlacementIndex<'static> {
        let view = ClusterSnapshot { local: *origin, entries: Vec::new() };
        PlacementIndex::build(&view, Cow::Owned(LinkIndex::new([], now)), origin, &HashMap::new())
    }

    fn build(
        view: &ClusterSnapshot,
        links: Cow<'v, LinkIndex>,
        origin: &PeerId,
        leased: &HashMap<PeerId, Vec<u32>>,
    ) -> Self {
        let n = view.entries.len();
        let mut index = Self {
            links,
            origin: *origin,
            nodes: Vec::with_capacity(n),
            peers: Vec::with_capacity(n),
            summaries: Vec::with_capacity(n),
            by_peer: BTreeMap::new(),
            free: Vec::new(),
            order: Vec::with_capacity(n),
            label_nodes: Vec::new(),
            gpus: Vec::with_capacity(n * 4),
            labels: Vec::with_capacity(n),
            stale: 0,
            moved: 0,
            label_ids: HashMap::new(),
            models: Vec::new(),
            trust: Vec::new(),
        };
        let at = index.links.position(origin);
        for e in &view.entries {
            let r = &e.record;
            let taken = leased.get(&r.peer_id).map(Vec::as_slice).unwrap_or_default();
            let slot = index.new_slot(r.peer_id);
            index.fill(slot, e, taken);
            index.resolve_at(slot, at);
        }
        index.reorder();
        index
    }

    /// Node `peer`'s record is new or changed (`leased`: GPU indices its advert shows
    /// leased): its node is re-read and put back in order; with the origin's own record,
    /// every node's link to the origin is resolved again. `now`: when ages are judged.
    /// The index's link index is updated too (cloned first if it was borrowed: keep an
    /// index that is to be updated built by [`Self::new`]).
    pub fn upsert(&mut self, entry: &ViewEntry, leased: &[u32], now: UnixMillis) {
        let peer = entry.record.peer_id;
        let own = peer == self.origin;
        let before = match self.links.position(&self.origin) {
            Some(o) if own => Some((self.links.linked_peers(o), self.links.coordinate_at(o))),
            _ => None,
        };
        self.links.to_mut().upsert(entry.indexed(), now);
        let (slot, rtt) = match self.by_peer.get(&peer) {
            Some(&slot) => {
                self.unlink(slot);
                (slot, Some(self.nodes[slot as usize].rtt_ms))
            }
            None => (self.new_slot(peer), None),
        };
        self.fill(slot, entry, leased);
        self.resolve(slot);
        self.link(slot);
        if rtt.is_none_or(|r| r.to_bits() != self.nodes[slot as usize].rtt_ms.to_bits()) {
            self.moved += 1;
        }
        if own {
            let at = self.links.position(&self.origin);
            let after = at.map(|o| (self.links.linked_peers(o), self.links.coordinate_at(o)));
            let moved = match (before.as_ref().and_then(|b| b.1), after.as_ref().and_then(|a| a.1)) {
                (Some(x), Some(y)) => {
                    let d: f64 = x.vector.iter().zip(&y.vector).map(|(a, b)| (a - b) * (a - b)).sum();
                    d.sqrt() + (x.height - y.height).abs() > COORDINATE_SLACK_MS
                }
                (None, None) => false,
                _ => true,
            };
            if moved || before.is_none() {
                let slots: Vec<u32> = self.by_peer.values().copied().collect();
                for s in slots {
                    self.resolve_at(s, at);
                }
                self.reorder();
            } else {
                let mut peers: Vec<PeerId> = before.map(|b| b.0).unwrap_or_default();
                peers.extend(after.map(|a| a.0).unwrap_or_default());
                peers.sort_unstable();
                peers.dedup();
                for p in peers {
                    let Some(&s) = self.by_peer.get(&p) else { continue };
                    self.unlink(s);
                    self.resolve_at(s, at);
                    self.link(s);
                    self.moved += 1;
                }
            }
        }
        self.tidy();
    }

    /// Node `peer` left the view.
    pub fn remove(&mut self, peer: &PeerId) -> bool {
        let Some(slot) = self.by_peer.get(peer).copied() else { return false };
        self.unlink(slot);
        self.by_peer.remove(peer);
        let node = &mut self.nodes[slot as usize];
        self.stale += usize::from(node.gpu_count) + usize::from(node.label_count);
        *node = NodeSlot { rtt_ms: f32::NAN, ..NodeSlot::default() };
        self.summaries[slot as usize] = None;
        self.free.push(slot);
        self.links.to_mut().remove(peer);
        if *peer == self.origin {
            for s in self.by_peer.values().copied().collect::<Vec<_>>() {
                self.resolve(s);
            }
            self.reorder();
        }
        self.tidy();
        true
    }

    /// Node `peer`'s advert now shows these GPU indices leased.
    pub fn set_leased(&mut self, peer: &PeerId, leased: &[u32]) {
        let Some(&slot) = self.by_peer.get(peer) else { return };
        let node = self.nodes[slot as usize];
        let start = node.gpu_start as usize;
        let mut untaken = 0usize;
        for g in &mut self.gpus[start..start + usize::from(node.gpu_count)] {
            g.taken = leased.contains(&g.index);
            untaken += usize::from(!g.taken);
        }
        self.nodes[slot as usize].untaken = u8::try_from(untaken).unwrap_or(u8::MAX);
    }

    /// Whether `peer` is indexed.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.by_peer.contains_key(peer)
    }

    /// Live nodes.
    pub fn len(&self) -> usize {
        self.by_peer.len()
    }

    /// Whether no node is indexed.
    pub fn is_empty(&self) -> bool {
        self.by_peer.is_empty()
    }

    fn new_slot(&mut self, peer: PeerId) -> u32 {
        let slot = match self.free.pop() {
            Some(s) => {
                self.peers[s as usize] = peer;
                s
            }
            None => {
                self.nodes.push(NodeSlot { rtt_ms: f32::NAN, ..NodeSlot::default() });
                self.peers.push(peer);
                self.summaries.push(None);
                if !self.trust.is_empty() {
                    self.trust.push(1.0);
                }
                (self.nodes.len() - 1) as u32
            }
        };
        if let Some(t) = self.trust.get_mut(slot as usize) {
            *t = 1.0;
        }
        self.by_peer.insert(peer, slot);
        slot
    }

    /// Reads a node's GPUs (models interned; `taken`: leased indices) and labels into
    /// `slot`: over its old ones when they fit, else at the end.
    fn fill(&mut self, slot: u32, entry: &ViewEntry, taken: &[u32]) {
        let r = &entry.record;
        let old = self.nodes[slot as usize];
        let devices = &r.gpus.devices;
        let count = devices.len().min(usize::from(u8::MAX));
        let gpu_start = room(&mut self.gpus, &mut self.stale, (old.gpu_start, old.gpu_count), count);
        for (k, d) in devices.iter().take(count).enumerate() {
            let name = d.model.as_str();
            let model = match self.models.iter().position(|m| m.eq_ignore_ascii_case(name)) {
                Some(m) => m,
                None => {
                    self.models.push(name.to_owned());
                    self.models.len() - 1
                }
            };
            self.gpus[gpu_start + k] = GpuSlot {
                memory_mib: u32::try_from(d.memory_total_mib).unwrap_or(u32::MAX),
                index: d.index,
                cc: d.compute_capability.map_or(NO_CC, |c| u16::from(c.major) << 8 | u16::from(c.minor)),
                model: u16::try_from(model).unwrap_or(u16::MAX),
                util: d.utilization_pct,
                taken: taken.contains(&d.index),
            };
        }
        let labels = &r.labels;
        let lcount = labels.len().min(usize::from(u8::MAX));
        let label_start = room(&mut self.labels, &mut self.stale, (old.label_start, old.label_count), lcount);
        for (k, l) in labels.iter().take(lcount).enumerate() {
            let id = match self.label_ids.get(l) {
                Some(&id) => id,
                None => {
                    let id = self.label_ids.len() as u32;
                    self.label_ids.insert(l.clone(), id);
                    id
                }
            };
            if self.label_nodes.len() <= id as usize {
                self.label_nodes.resize(id as usize + 1, Vec::new());
            }
            self.labels[label_start + k] = id;
        }
        let mine = &self.gpus[gpu_start..gpu_start + count];
        let node = &mut self.nodes[slot as usize];
        node.gpu_start = gpu_start as u32;
        node.gpu_count = count as u8;
        node.label_start = label_start as u32;
        node.label_count = lcount as u8;
        node.untaken = u8::try_from(mine.iter().filter(|g| !g.taken).count()).unwrap_or(u8::MAX);
    }

    /// Resolves `slot`'s link to the origin from the link index.
    fn resolve(&mut self, slot: u32) {
        self.resolve_at(slot, self.links.position(&self.origin));
    }

    /// [`Self::resolve`] with the origin's position in the link index known.
    fn resolve_at(&mut self, slot: u32, at: Option<usize>) {
        let peer = self.peers[slot as usize];
        let (rtt_ms, summary, suspect) = if peer == self.origin {
            (0.0, None, false)
        } else {
            let i = self.links.position(&peer);
            let (link, suspect) = match (at, i) {
                (Some(o), Some(i)) => origin_link(&self.links, o, i),
                _ => (None, false),
            };
            let lies = i.is_some_and(|i| self.links.lies_at(i));
            match link {
                None => (f32::NAN, None, suspect || lies),
                Some(LinkAnswer::Estimated { rtt_ms, .. }) => (rtt_ms as f32, None, suspect || lies),
                Some(LinkAnswer::Measured { summary, .. }) => {
                    (summary.rtt_p50_us as f32 / 1e3, Some(summary), suspect || lies)
                }
            }
        };
        let node = &mut self.nodes[slot as usize];
        node.rtt_ms = rtt_ms;
        node.suspect = suspect;
        self.summaries[slot as usize] = summary;
    }

    /// Nearest first, no link last, ties by peer.
    fn cmp_slots(&self, a: u32, b: u32) -> Ordering {
        let (x, y) = (self.nodes[a as usize].rtt_ms, self.nodes[b as usize].rtt_ms);
        x.is_nan()
            .cmp(&y.is_nan())
            .then(x.total_cmp(&y))
            .then_with(|| self.peers[a as usize].cmp(&self.peers[b as usize]))
    }

    /// Where `slot` goes in `list` (sorted by [`Self::cmp_slots`]).
    fn place_in(&self, list: &[u32], slot: u32) -> usize {
        list.partition_point(|&x| self.cmp_slots(x, slot) == Ordering::Less)
    }

    /// The node's labels, as interned ids.
    fn label_ids_of(&self, slot: u32) -> Vec<u32> {
        let n = &self.nodes[slot as usize];
        self.labels[n.label_start as usize..n.label_start as usize + usize::from(n.label_count)].to_vec()
    }

    /// Takes `slot` out of the order and its labels' lists (before its key changes).
    fn unlink(&mut self, slot: u32) {
        let at = self.place_in(&self.order, slot);
        if self.order.get(at) == Some(&slot) {
            self.order.remove(at);
        } else if let Some(k) = self.order.iter().position(|&s| s == slot) {
            self.order.remove(k);
        }
        for id in self.label_ids_of(slot) {
            let at = self.place_in(&self.label_nodes[id as usize], slot);
            let list = &mut self.label_nodes[id as usize];
            if list.get(at) == Some(&slot) {
                list.remove(at);
            } else if let Some(k) = list.iter().position(|&s| s == slot) {
                list.remove(k);
            }
        }
    }

    /// Puts `slot` into the order and its labels' lists.
    fn link(&mut self, slot: u32) {
        let at = self.place_in(&self.order, slot);
        self.order.insert(at, slot);
        for id in self.label_ids_of(slot) {
            let at = self.place_in(&self.label_nodes[id as usize], slot);
            self.label_nodes[id as usize].insert(at, slot);
        }
    }

    /// Sorts every live slot again, and rebuilds the label lists.
    fn reorder(&mut self) {
        let mut order: Vec<u32> = self.by_peer.values().copied().collect();
        order.sort_by(|&a, &b| self.cmp_slots(a, b));
        for list in &mut self.label_nodes {
            list.clear();
        }
        for &slot in &order {
            for id in self.label_ids_of(slot) {
                self.label_nodes[id as usize].push(slot);
            }
        }
        self.order = order;
        self.relayout();
    }

    /// Lays the live slots out in `order` (slot = place: nearest first), their GPUs and
    /// labels in the same order, without free slots and stale entries, so a pick's
    /// nearest-first scan reads memory in sequence (read through `order` in slot order
    /// instead, a deep scan of 10 000 nodes misses the cache on every node: p99 of a
    /// pick 4x).
    fn relayout(&mut self) {
        let n = self.order.len();
        let mut new_slot = vec![u32::MAX; self.nodes.len()];
        let mut nodes = Vec::with_capacity(n);
        let mut peers = Vec::with_capacity(n);
        let mut summaries = Vec::with_capacity(n);
        let mut trust = Vec::with_capacity(if self.trust.is_empty() { 0 } else { n });
        let live = self.gpus.len().saturating_sub(self.stale);
        let (mut gpus, mut labels) = (Vec::with_capacity(live), Vec::with_capacity(self.labels.len()));
        for (place, &slot) in self.order.iter().enumerate() {
            let s = slot as usize;
            new_slot[s] = place as u32;
            let mut node = self.nodes[s];
            let (g, l) = (node.gpu_start as usize, node.label_start as usize);
            node.gpu_start = gpus.len() as u32;
            gpus.extend_from_slice(&self.gpus[g..g + usize::from(node.gpu_count)]);
            node.label_start = labels.len() as u32;
            labels.extend_from_slice(&self.labels[l..l + usize::from(node.label_count)]);
            nodes.push(node);
            peers.push(self.peers[s]);
            summaries.push(self.summaries[s].take());
            if let Some(&t) = self.trust.get(s) {
                trust.push(t);
            }
        }
        for slot in self.by_peer.values_mut() {
            *slot = new_slot[*slot as usize];
        }
        for list in &mut self.label_nodes {
            for slot in list.iter_mut() {
                *slot = new_slot[*slot as usize];
            }
        }
        self.order = (0..n as u32).collect();
        (self.nodes, self.peers, self.summaries, self.gpus, self.labels) =
            (nodes, peers, summaries, gpus, labels);
        if !self.trust.is_empty() {
            self.trust = trust;
        }
        (self.free, self.stale, self.moved) = (Vec::new(), 0, 0);
    }

    /// Lays the index out again ([`Self::relayout`]) once an eighth of its nodes joined or
    /// moved since the last time (amortised: O(1) per change), or its GPU and label
    /// arrays are half stale.
    fn tidy(&mut self) {
        let stale = self.stale >= 1024 && self.stale * 2 >= self.gpus.len() + self.labels.len();
        if stale || self.moved * 8 > self.order.len().max(64) {
            self.relayout();
        }
    }

    /// Applies the submitter's reliability scores as of `now`: each node's score is
    /// multiplied by its own (see [`super::trust`]).
    pub fn with_reliability(mut self, reliability: &Reliability, now: std::time::Instant) -> Self {
        self.trust = self.trust_of(reliability, now);
        self
    }

    /// Each slot's reliability score: 1 but for the peers `reliability` knows (a few),
    /// so O(slots) writes and O(known) lookups, not a lookup per node.
    fn trust_of(&self, reliability: &Reliability, now: std::time::Instant) -> Vec<f32> {
        let mut trust = vec![1.0; self.nodes.len()];
        for peer in reliability.known() {
            if let Some(&slot) = self.by_peer.get(peer) {
                trust[slot as usize] = reliability.score(now, peer) as f32;
            }
        }
        trust
    }

    /// Nodes whose claim of their link to the origin was not believed (for the
    /// submitter's reliability scores).
    pub fn suspects(&self) -> impl Iterator<Item = PeerId> + '_ {
        // Free slots are reset, so never suspect.
        self.nodes.iter().zip(&self.peers).filter(|(n, _)| n.suspect).map(|(_, p)| *p)
    }

    /// Nodes some of whose GPUs are known leased (as the index was last told:
    /// [`Self::upsert`], [`Self::set_leased`]; for other nodes, their adverts).
    pub fn advertised_leases(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.nodes
            .iter()
            .zip(&self.peers)
            .filter(|(n, _)| self.gpu_slots(n).iter().any(|g| g.taken))
            .map(|(_, p)| *p)
    }

    /// The decoded links, for pairwise checks (gangs).
    pub fn links(&self) -> &LinkIndex {
        &self.links
    }

    fn wanted(&self, task: &TaskSpec) -> Wanted {
        Wanted {
            models: self.allowed_models(task),
            labels: self.wanted_labels(task),
            leases: true,
            trust: None,
        }
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
        let summary = self.summaries[i].as_ref();
        let is_origin = rtt_ms == 0.0 && summary.is_none() && self.peers[i] == self.origin;
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
        let trust = want.trust.as_deref().unwrap_or(&self.trust);
        let reliability = trust.get(i).map_or(1.0, |&t| f64::from(t));
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
            peer: self.peers[c.node],
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
        let peer = |c: &Cand| &self.peers[c.node];
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
        self.rank_submission(task, w, exact, self.wanted(task))
    }

    /// [`Self::rank_for_submission`] with the submitter's reliability scores as of `now`
    /// applied, as [`Self::with_reliability`] applies them, without copying the index
    /// (a node's live index is shared by its placements).
    pub fn rank_trusting(
        &self,
        task: &TaskSpec,
        w: &ScoreWeights,
        exact: &PeerId,
        reliability: &Reliability,
        now: std::time::Instant,
    ) -> Ranking {
        let want = Wanted { trust: Some(self.trust_of(reliability, now)), ..self.wanted(task) };
        self.rank_submission(task, w, exact, want)
    }

    fn rank_submission(
        &self,
        task: &TaskSpec,
        w: &ScoreWeights,
        exact: &PeerId,
        mut want: Wanted,
    ) -> Ranking {
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
        for (&peer, &i) in &self.by_peer {
            let i = i as usize;
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
        self.top_wanting(task, w, k, self.wanted(task))
    }

    /// [`Self::top`] with the submitter's reliability scores as of `now` applied, as
    /// [`Self::rank_trusting`] applies them (a score only lowers a node's, so the scan
    /// still stops where `top`'s does).
    pub fn top_trusting(
        &self,
        task: &TaskSpec,
        w: &ScoreWeights,
        k: usize,
        reliability: &Reliability,
        now: std::time::Instant,
    ) -> Vec<Scored> {
        let want = Wanted { trust: Some(self.trust_of(reliability, now)), ..self.wanted(task) };
        self.top_wanting(task, w, k, want)
    }

    fn top_wanting(&self, task: &TaskSpec, w: &ScoreWeights, k: usize, want: Wanted) -> Vec<Scored> {
        let mut best: Vec<Cand> = Vec::with_capacity(k + 1);
        let gain = (1.0 - w.estimate_penalty).max(1.0) * (1.0 - w.degraded_penalty).max(1.0);
        let ceiling = w.capacity.max(0.0) + w.idleness.max(0.0);
        // A labelled task reads only the nodes with its first label.
        let places: Box<dyn Iterator<Item = u32> + '_> = match want.labels.first() {
            None => Box::new(self.order.iter().copied()),
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

    /// Record changes applied one by one give the index a rebuild from the changed view
    /// gives: GPUs and load, links (the origin's own too), labels, a node leaving and
    /// coming back, leases.
    #[test]
    fn updates_record_by_record_match_a_rebuild() {
        use crate::link::summary::LinkSummaries;
        use crate::place::sim::{sample_tasks, SimCluster, SimConfig};
        #[allow(clippy::disallowed_methods)]
        let epoch = std::time::Instant::now();
        let cluster = SimCluster::new(&SimConfig::new(300, 21), epoch);
        let now = cluster.now;
        let mut view = cluster.view.clone();
        let origin = cluster.nodes[7].peer;
        let none = HashMap::new();
        let mut live = PlacementIndex::new(&cluster.view, &origin, &none, now);
        let w = ScoreWeights::default();
        let check =
            |live: &PlacementIndex<'_>, view: &ClusterSnapshot, leased: &HashMap<PeerId, Vec<u32>>| {
                let fresh = PlacementIndex::new(view, &origin, leased, now);
                assert_eq!(live.len(), view.entries.len());
                for task in sample_tasks() {
                    assert_eq!(live.rank(&task, &w), fresh.rank(&task, &w), "{}", task.id);
                    assert_eq!(live.top(&task, &w, 8), fresh.top(&task, &w, 8), "{}", task.id);
                }
            };
        let reissue =
            |view: &mut ClusterSnapshot, k: usize, edit: &dyn Fn(&mut crate::record::NodeRecord)| {
                let e = &view.entries[k];
                let mut record = e.record.clone();
                edit(&mut record);
                let (tunnel, at) = (e.tunnel.clone(), e.received_at);
                view.entries[k] = ViewEntry::new(record, tunnel, at, at, false);
                view.entries[k].clone()
            };
        let pos = |view: &ClusterSnapshot, p: &PeerId| {
            view.entries.iter().position(|e| e.record.peer_id == *p).unwrap()
        };
        // 1. A node's GPUs get busy, and one more appears.
        let k = 11;
        let e = reissue(&mut view, k, &|r| {
            let mut gpus = r.gpus.devices.to_vec();
            for g in &mut gpus {
                g.utilization_pct = 97;
            }
            let mut extra = gpus[0].clone();
            extra.index = 9;
            extra.utilization_pct = 0;
            gpus.push(extra);
            r.gpus.devices = crate::bounded::BoundedVec::try_from_vec(gpus).unwrap();
        });
        live.upsert(&e, &[], now);
        check(&live, &view, &none);
        // 2. A node's links change (every round trip doubles), and the origin's own.
        let twice = |r: &mut crate::record::NodeRecord| {
            let mut s = LinkSummaries::from_record(r).unwrap().unwrap();
            let mut links = s.links.to_vec();
            for l in &mut links {
                l.rtt_p50_us *= 2;
            }
            s.links = crate::bounded::BoundedVec::try_from_vec(links).unwrap();
            r.extensions = vec![s.to_extension().unwrap()].try_into().unwrap();
        };
        for k in [23, pos(&view, &origin)] {
            let e = reissue(&mut view, k, &twice);
            live.upsert(&e, &[], now);
            check(&live, &view, &none);
        }
        // 3. A label changes.
        let e = reissue(&mut view, 40, &|r| {
            r.labels =
                crate::bounded::BoundedVec::try_from_vec(vec![Label::parse("region=elsewhere").unwrap()])
                    .unwrap();
        });
        live.upsert(&e, &[], now);
        check(&live, &view, &none);
        // 4. A node leaves, another leaves, the first comes back.
        let gone = view.entries.remove(50);
        assert!(live.remove(&gone.record.peer_id));
        let second = view.entries.remove(60);
        assert!(live.remove(&second.record.peer_id));
        check(&live, &view, &none);
        view.entries.insert(50, gone.clone());
        live.upsert(&gone, &[], now);
        check(&live, &view, &none);
        // 5. Leases advertised.
        let leased_peer = view.entries[3].record.peer_id;
        let leased: HashMap<PeerId, Vec<u32>> = [(leased_peer, vec![0])].into_iter().collect();
        live.set_leased(&leased_peer, &[0]);
        check(&live, &view, &leased);
        assert!(!live.remove(&second.record.peer_id), "already gone");
    }

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
