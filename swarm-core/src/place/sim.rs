//! A synthetic swarm for placement benchmarks and tests (seeded, deterministic):
//! regions at known places on a map, nodes with heterogeneous GPUs and background load,
//! link summaries and Vivaldi coordinates in their records as the network would gossip
//! them, and the true round trip of every pair for an oracle to compare against.
//!
//! - A region's centre lies on a 2-D map in milliseconds; nodes sit within 2 ms of it,
//!   each with an access delay (its height) of 0.2-2 ms. The true round trip of a pair
//!   is their distance plus both heights, times a per-pair factor of 0.9-1.1 (routes are
//!   not straight lines).
//! - Every node gossips `links_per_node` measured links (three quarters in its own
//!   region) with the true median ± 3 %, and a coordinate off the truth by up to 0.25 ms
//!   per axis (a converged Vivaldi's median error is about 5 %; see `link::vivaldi`).
//! - GPUs: 1, 2, 4 or 8 of H100 80 GB, A100 80 GB, A100 40 GB, L40S 48 GB or RTX 4090
//!   24 GB; `background_load` of them are busy (95-100 %), the rest 0-40 %.
//! - Liars (threat T11, [`SimCluster::add_liars`]): a share of the nodes lie in one of
//!   the three ways of [`Lie`]; the job mix runs against them (`place::sim::mix`).

mod mix;

pub use mix::{run_mix, MixConfig, MixOutcome, Policy};

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use libp2p_identity::{Keypair, PeerId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::bounded::{BoundedString, BoundedVec};
use crate::gpu::{ComputeCapability, GpuDevice, GpuSnapshot};
use crate::identity::{SignedTunnelRecord, TunnelPublicKey, TunnelRecord};
use crate::link::summary::{LinkSummaries, LinkSummary};
use crate::link::vivaldi::Coordinate;
use crate::record::{Label, Namespace, NodeRecord};
use crate::time::UnixMillis;
use crate::view::{ClusterSnapshot, ViewEntry};

/// The shape of a synthetic swarm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimConfig {
    /// Nodes.
    pub nodes: usize,
    /// Regions (at most 12).
    pub regions: usize,
    /// Measured links each node gossips (at most 64).
    pub links_per_node: usize,
    /// Share of GPUs busy with work outside the swarm.
    pub background_load: f64,
    /// How old the view is: records were published this long before `now`.
    pub staleness: Duration,
    /// The seed.
    pub seed: u64,
}

impl SimConfig {
    /// `nodes` nodes in 8 regions, 16 links each, 30 % background load, 1 s stale.
    pub fn new(nodes: usize, seed: u64) -> Self {
        Self {
            nodes,
            regions: 8,
            links_per_node: 16,
            background_load: 0.3,
            staleness: Duration::from_secs(1),
            seed,
        }
    }
}

/// Region centres on the map, ms: four continents of two or three regions each.
const CENTRES: [(f64, f64); 12] = [
    (0.0, 0.0),
    (8.0, 3.0),
    (4.0, 10.0),
    (70.0, 5.0),
    (78.0, 12.0),
    (140.0, 40.0),
    (150.0, 30.0),
    (60.0, 90.0),
    (15.0, -12.0),
    (85.0, -4.0),
    (145.0, 48.0),
    (66.0, 98.0),
];

/// GPU kinds: model, MiB, compute capability.
const KINDS: [(&str, u64, (u8, u8)); 5] = [
    ("H100", 81_920, (9, 0)),
    ("A100", 81_920, (8, 0)),
    ("A100", 40_960, (8, 0)),
    ("L40S", 49_152, (8, 9)),
    ("RTX4090", 24_576, (8, 9)),
];

/// The task kinds benchmarks and tests pick for: 1 and 4 GPUs of any kind, 2 × H100
/// within 30 ms of the origin, and 1 GPU of 40 GB or more in region `r2`.
pub fn sample_tasks() -> Vec<crate::place::TaskSpec> {
    use crate::place::TaskSpec;
    let mut out = vec![TaskSpec::new("one", 1), TaskSpec::new("four", 4)];
    let mut t = TaskSpec::new("h100-near", 2);
    t.gpu_models = vec!["H100".into()];
    t.origin_limits.max_rtt = Some(Duration::from_millis(30));
    out.push(t);
    let mut t = TaskSpec::new("region", 1);
    t.labels = Label::parse("region=r2").ok().into_iter().collect();
    t.min_gpu_memory_mib = 40_000;
    out.push(t);
    out
}

/// One node as it truly is.
#[derive(Debug, Clone)]
pub struct SimNode {
    /// Its id.
    pub peer: PeerId,
    /// Its region.
    pub region: usize,
    /// Its place on the map, ms.
    pub pos: (f64, f64),
    /// Its access delay, ms.
    pub height: f64,
    /// Its GPUs (utilization is the background load).
    pub gpus: Vec<GpuDevice>,
}

/// How a lying node lies (threat T11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lie {
    /// Advertises eight free H100s it does not have (it has no GPU, and refuses every
    /// reservation).
    FakeFree,
    /// Claims 0.3 ms to 64 nodes anywhere in its link summaries (its GPUs are real).
    FakeRtt,
    /// Grants leases and drops them (the task finds no GPU).
    Dropper,
}

/// A synthetic swarm: the truth, and one view of it as gossip delivers it.
#[derive(Debug, Clone)]
pub struct SimCluster {
    /// The nodes, in the view's order (sorted by peer id).
    pub nodes: Vec<SimNode>,
    /// The records every node holds (the same for all).
    pub view: ClusterSnapshot,
    /// The time the view is judged at.
    pub now: UnixMillis,
    /// The local clock's reading at `now` (the simulation's epoch).
    pub epoch: Instant,
    /// How each node lies, by position (`None`: honest).
    pub lies: Vec<Option<Lie>>,
    seed: u64,
}

fn pair_factor(seed: u64, a: usize, b: usize) -> f64 {
    let (x, y) = if a < b { (a, b) } else { (b, a) };
    let mut h = seed
        ^ (x as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (y as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    0.9 + 0.2 * ((h >> 11) as f64 / (1u64 << 53) as f64)
}

/// Node `i` as it truly is, and its key.
fn sim_node(config: &SimConfig, i: usize, regions: usize, rng: &mut StdRng) -> (SimNode, Keypair) {
    let mut secret = [0u8; 32];
    secret[..8].copy_from_slice(&config.seed.to_le_bytes());
    secret[8..16].copy_from_slice(&(i as u64).to_le_bytes());
    let key = Keypair::ed25519_from_bytes(&mut secret).unwrap_or_else(|_| unreachable!("32 bytes"));
    let region = i % regions;
    let (cx, cy) = CENTRES[region];
    let pos = (cx + 4.0 * unit(rng) - 2.0, cy + 4.0 * unit(rng) - 2.0);
    let height = 0.2 + 1.8 * unit(rng);
    let count = [1, 2, 2, 4, 4, 8][(rng.next_u32() % 6) as usize];
    let (model, mib, (major, minor)) = KINDS[(rng.next_u32() % KINDS.len() as u32) as usize];
    let gpus = (0..count)
        .map(|g| GpuDevice {
            index: g,
            model: BoundedString::try_new(model).unwrap_or_default(),
            memory_total_mib: mib,
            memory_used_mib: 0,
            utilization_pct: if unit(rng) < config.background_load {
                95 + (rng.next_u32() % 6) as u8
            } else {
                (rng.next_u32() % 41) as u8
            },
            compute_capability: Some(ComputeCapability { major, minor }),
        })
        .collect();
    (SimNode { peer: key.public().to_peer_id(), region, pos, height, gpus }, key)
}

fn unit(rng: &mut StdRng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

impl SimCluster {
    /// Builds the swarm `config` describes; `epoch` is the local clock at the view's
    /// time (simulated time runs from it).
    pub fn new(config: &SimConfig, epoch: Instant) -> Self {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let regions = config.regions.clamp(1, CENTRES.len());
        let now = UnixMillis(1_800_000_000_000);
        // Truth first; sorted by peer id as a view is.
        let mut nodes: Vec<(SimNode, Keypair)> =
            (0..config.nodes).map(|i| sim_node(config, i, regions, &mut rng)).collect();
        nodes.sort_by_key(|(n, _)| n.peer);
        let local = match nodes.first() {
            Some((n, _)) => n.peer,
            None => Keypair::ed25519_from_bytes([0; 32])
                .map_or_else(|_| unreachable!(), |k| k.public().to_peer_id()),
        };
        let mut cluster = Self {
            nodes: nodes.iter().map(|(n, _)| n.clone()).collect(),
            view: ClusterSnapshot { local, entries: Vec::new() },
            now,
            epoch,
            lies: vec![None; config.nodes],
            seed: config.seed,
        };
        let by_region: Vec<Vec<usize>> = (0..regions)
            .map(|r| (0..config.nodes).filter(|&i| cluster.nodes[i].region == r).collect())
            .collect();
        let published = UnixMillis(now.0 - config.staleness.as_millis() as u64);
        for (i, (_, key)) in nodes.iter().enumerate() {
            let want = config.links_per_node.min(64).min(config.nodes.saturating_sub(1));
            let links = cluster.links_of(i, want, &by_region, &mut rng);
            let node = &cluster.nodes[i];
            let off = |rng: &mut StdRng| 0.5 * unit(rng) - 0.25;
            let coordinate = Coordinate {
                vector: [node.pos.0 + off(&mut rng), node.pos.1 + off(&mut rng), 0.0, 0.0],
                height: node.height,
                error: 0.1,
            };
            let summaries = LinkSummaries {
                coordinate: Some(coordinate),
                links: BoundedVec::try_from_vec(links).unwrap_or_default(),
            };
            if let Some(entry) = cluster.entry(i, key, &summaries, published) {
                cluster.view.entries.push(entry);
            }
        }
        cluster
    }

    /// `want` measured links of node `i`: three quarters in its region.
    fn links_of(
        &self,
        i: usize,
        want: usize,
        by_region: &[Vec<usize>],
        rng: &mut StdRng,
    ) -> Vec<LinkSummary> {
        let mut links: Vec<LinkSummary> = Vec::new();
        let mut tries = 0;
        while links.len() < want && tries < want * 20 {
            tries += 1;
            let near = links.len() * 4 < want * 3;
            let pool = if near {
                &by_region[self.nodes[i].region]
            } else {
                &by_region[(rng.next_u32() as usize) % by_region.len()]
            };
            let j = pool[(rng.next_u32() as usize) % pool.len()];
            if j == i || links.iter().any(|l| l.peer == self.nodes[j].peer) {
                continue;
            }
            let rtt = self.true_rtt(i, j) * (0.97 + 0.06 * unit(rng));
            links.push(LinkSummary {
                peer: self.nodes[j].peer,
                rtt_p50_us: (rtt * 1e3) as u32,
                rtt_p99_us: (rtt * 1.2e3) as u32,
                rtt_samples: 50,
                jitter_us: 100 + rng.next_u32() % 1900,
                loss_ppm: Some(rng.next_u32() % 200),
                loss_packets: 20_000,
                rx_kbps: 1_000,
                tx_kbps: 1_000,
                capacity_kbps: Some(if near { 10_000_000 } else { 1_000_000 }),
                handshake_age_s: 5,
                age_ms: 500,
                degraded: 0,
            });
        }
        links
    }

    /// Node `i`'s record, signed with `key`, as gossip delivers it.
    fn entry(
        &self,
        i: usize,
        key: &Keypair,
        summaries: &LinkSummaries,
        published: UnixMillis,
    ) -> Option<ViewEntry> {
        let node = &self.nodes[i];
        let tunnel = TunnelRecord {
            peer_id: node.peer,
            tunnel_pubkey: TunnelPublicKey([i as u8; 32]),
            udp_endpoints: BoundedVec::try_from_vec(vec![SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8),
                51820,
            ))])
            .unwrap_or_default(),
            nat: Default::default(),
            issued_at: published,
        };
        let signed = SignedTunnelRecord::sign(&tunnel, key).ok()?;
        let label = Label::parse(&format!("region=r{}", node.region)).ok().into_iter().collect();
        let record = NodeRecord {
            peer_id: node.peer,
            namespace: Namespace::new("sim").ok()?,
            seq: 1,
            timestamp: published,
            refresh_ms: 5000,
            gpus: GpuSnapshot { devices: BoundedVec::try_from_vec(node.gpus.clone()).unwrap_or_default() },
            cpu_cores: 64,
            memory_bytes: 512 << 30,
            labels: BoundedVec::try_from_vec(label).unwrap_or_default(),
            tunnel: signed,
            extensions: summaries
                .to_extension()
                .ok()
                .into_iter()
                .collect::<Vec<_>>()
                .try_into()
                .unwrap_or_default(),
        };
        Some(ViewEntry::new(record, tunnel, self.epoch, self.epoch, false))
    }

    /// The true round trip between nodes `a` and `b` (positions in [`Self::nodes`]), ms.
    pub fn true_rtt(&self, a: usize, b: usize) -> f64 {
        if a == b {
            return 0.0;
        }
        let (na, nb) = (&self.nodes[a], &self.nodes[b]);
        let d = ((na.pos.0 - nb.pos.0).powi(2) + (na.pos.1 - nb.pos.1).powi(2)).sqrt();
        (d + na.height + nb.height) * pair_factor(self.seed, a, b)
    }

    /// Makes `share` of the nodes liars (chosen by `seed`), the three [`Lie`]s in turn,
    /// and rewrites their records as they would publish them.
    pub fn add_liars(&mut self, share: f64, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = self.nodes.len();
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        let count = ((n as f64) * share.clamp(0.0, 1.0)).round() as usize;
        for (k, &i) in order.iter().take(count).enumerate() {
            let lie = [Lie::FakeFree, Lie::FakeRtt, Lie::Dropper][k % 3];
            self.lies[i] = Some(lie);
            let Some(pos) = self.view.entries.iter().position(|e| e.record.peer_id == self.nodes[i].peer)
            else {
                continue;
            };
            let e = &self.view.entries[pos];
            let mut record = e.record.clone();
            match lie {
                Lie::FakeFree => {
                    let h100 = |index: u32| GpuDevice {
                        index,
                        model: BoundedString::try_new("H100").unwrap_or_default(),
                        memory_total_mib: 81_920,
                        memory_used_mib: 0,
                        utilization_pct: 0,
                        compute_capability: Some(ComputeCapability { major: 9, minor: 0 }),
                    };
                    record.gpus.devices =
                        BoundedVec::try_from_vec((0..8).map(h100).collect()).unwrap_or_default();
                    self.nodes[i].gpus.clear();
                }
                Lie::FakeRtt => {
                    let Some(mut s) = e.extensions.links.clone() else { continue };
                    let mut links: Vec<LinkSummary> = Vec::with_capacity(64);
                    while links.len() < 64.min(n - 1) {
                        let j = (rng.next_u64() % n as u64) as usize;
                        let peer = self.nodes[j].peer;
                        if j == i || links.iter().any(|l| l.peer == peer) {
                            continue;
                        }
                        let template = s.links.first().copied();
                        let Some(t) = template else { break };
                        links.push(LinkSummary {
                            peer,
                            rtt_p50_us: 300,
                            rtt_p99_us: 400,
                            jitter_us: 50,
                            ..t
                        });
                    }
                    s.links = BoundedVec::try_from_vec(links).unwrap_or_default();
                    record.extensions =
                        s.to_extension().ok().into_iter().collect::<Vec<_>>().try_into().unwrap_or_default();
                }
                Lie::Dropper => continue,
            }
            let (tunnel, at) = (e.tunnel.clone(), e.received_at);
            self.view.entries[pos] = ViewEntry::new(record, tunnel, at, at, false);
        }
    }

    /// The view as `origin` holds it.
    pub fn view_of(&self, origin: usize) -> ClusterSnapshot {
        ClusterSnapshot { local: self.nodes[origin].peer, entries: self.view.entries.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::place::{choose_gang, PlacementIndex, ScoreWeights, TaskSpec};
    use std::collections::HashMap;

    #[allow(clippy::disallowed_methods)] // the tests' epoch
    fn epoch() -> Instant {
        Instant::now()
    }

    fn tasks() -> Vec<TaskSpec> {
        let mut out = sample_tasks();
        out.push(TaskSpec::new("eight", 8));
        out
    }

    #[test]
    fn the_top_pick_is_the_head_of_the_full_ranking() {
        let cluster = SimCluster::new(&SimConfig::new(300, 1), epoch());
        let w = ScoreWeights::default();
        let leased: HashMap<PeerId, Vec<u32>> =
            cluster.nodes.iter().step_by(7).map(|n| (n.peer, vec![0])).collect();
        for origin in [0, 17, 299] {
            let index = PlacementIndex::new(&cluster.view, &cluster.nodes[origin].peer, &leased, cluster.now);
            for task in tasks() {
                let full = index.rank(&task, &w);
                assert_eq!(full.feasible.len() + full.rejected.len(), 300);
                let top = index.top(&task, &w, 12);
                let n = full.feasible.len().min(12);
                assert_eq!(top, full.feasible[..n].to_vec(), "{}", task.id);
                // The index ranks exactly as the plain function does.
                assert_eq!(
                    full,
                    crate::place::rank(
                        &cluster.view,
                        &cluster.nodes[origin].peer,
                        &task,
                        &leased,
                        cluster.now,
                        &w
                    )
                );
            }
        }
    }

    #[test]
    fn gangs_in_a_simulated_topology_meet_their_pairwise_limits() {
        let cluster = SimCluster::new(&SimConfig::new(1000, 2), epoch());
        let links = cluster.view.link_index(cluster.now);
        let w = ScoreWeights::default();
        let pos: HashMap<PeerId, usize> =
            cluster.nodes.iter().enumerate().map(|(i, n)| (n.peer, i)).collect();
        let (mut formed, mut worst_truth) = (0, 0.0f64);
        for (origin, limit_ms, k) in [(0, 10, 4), (5, 10, 8), (123, 25, 6), (999, 5, 3), (42, 60, 16)] {
            let mut task = TaskSpec::new("gang", 1);
            task.nodes = k;
            task.member_limits.max_rtt = Some(Duration::from_millis(limit_ms));
            let index = PlacementIndex::with_links(
                &cluster.view,
                &links,
                &cluster.nodes[origin].peer,
                &HashMap::new(),
            );
            let ranking = index.rank(&task, &w);
            let gang = choose_gang(&links, &ranking, &task).unwrap();
            assert_eq!(gang.members.len(), usize::from(k));
            formed += 1;
            for (x, a) in gang.members.iter().enumerate() {
                for b in &gang.members[x + 1..] {
                    assert_ne!(a.peer, b.peer);
                    let known = match links.link_between(&a.peer, &b.peer).unwrap() {
                        crate::link::summary::LinkAnswer::Measured { summary, .. } => {
                            f64::from(summary.rtt_p50_us) / 1e3
                        }
                        crate::link::summary::LinkAnswer::Estimated { rtt_ms, .. } => rtt_ms,
                    };
                    assert!(known <= f64::from(limit_ms as u32), "{known} ms > {limit_ms} ms");
                    let truth = cluster.true_rtt(pos[&a.peer], pos[&b.peer]);
                    worst_truth = worst_truth.max(truth / f64::from(limit_ms as u32));
                }
            }
        }
        println!("{formed} gangs; worst true member RTT / limit: {worst_truth:.3}");
        // What the swarm knows meets the limits; the truth is off only by measurement and
        // coordinate error.
        assert!(worst_truth < 1.25, "{worst_truth}");
        // Sixteen members within 1 ms of each other do not exist: a clear error.
        let mut task = TaskSpec::new("tight", 1);
        task.nodes = 16;
        task.member_limits.max_rtt = Some(Duration::from_millis(1));
        let index =
            PlacementIndex::with_links(&cluster.view, &links, &cluster.nodes[0].peer, &HashMap::new());
        let err = choose_gang(&links, &index.rank(&task, &w), &task).unwrap_err();
        assert!(err.to_string().contains("member link limits"), "{err}");
    }

    /// T11: a fifth of the nodes lie (fake free GPUs, fake round trips, dropped leases).
    #[test]
    fn liars_are_found_out_and_placement_stays_near_the_oracle() {
        let mut cluster = SimCluster::new(&SimConfig::new(500, 5), epoch());
        cluster.add_liars(0.2, 9);
        let mix = MixConfig::new(3000, 0.5, 6);
        let naive = run_mix(&cluster, &MixConfig { trust: false, ..mix }, Policy::Swarm);
        let swarm = run_mix(&cluster, &mix, Policy::Swarm);
        let oracle = run_mix(&cluster, &mix, Policy::Oracle);
        for (name, o) in [("no trust", &naive), ("trust", &swarm), ("oracle", &oracle)] {
            println!(
                "{name:9} placed {} gave up {} honest {:.2} % (liar grants {}, broken {}, ran on liars {}, fake-free refusals {}) RTT {:.3} ms completion {:.2} s",
                o.placed,
                o.gave_up,
                100.0 * o.honest_share(),
                o.liar_grants,
                o.broken,
                o.on_liars,
                o.fake_free_refusals,
                o.mean_origin_rtt_ms,
                o.mean_completion_s
            );
        }
        assert_eq!(swarm.double_booked, 0);
        assert!(swarm.honest_share() >= 0.99, "an honest node for 99 % of the placements");
        assert!(naive.honest_share() < 0.9, "without reliability scores, droppers keep winning");
        assert!(swarm.mean_completion_s <= 1.05 * oracle.mean_completion_s);
        assert!(swarm.mean_origin_rtt_ms <= 1.05 * oracle.mean_origin_rtt_ms);
        assert!(swarm.placed as f64 >= 0.98 * oracle.placed as f64);
        assert_eq!(swarm.on_liars, 0, "no job ran on a node that lied about its links");
    }

    #[test]
    fn a_contended_job_mix_never_double_books_and_tracks_the_oracle() {
        let cluster = SimCluster::new(&SimConfig::new(200, 3), epoch());
        let mix = MixConfig::new(600, 0.8, 4);
        let swarm = run_mix(&cluster, &mix, Policy::Swarm);
        let oracle = run_mix(&cluster, &mix, Policy::Oracle);
        println!("swarm  {swarm:?}\noracle {oracle:?}");
        assert_eq!(swarm.double_booked + oracle.double_booked, 0);
        assert_eq!(swarm.placed + swarm.gave_up, 600);
        assert!(swarm.placed as f64 >= 0.95 * oracle.placed as f64, "{} vs {}", swarm.placed, oracle.placed);
        // A sanity bound at this small size (25 nodes a region); the goal (5 %) is judged
        // at 1 000 and 10 000 nodes by `cargo bench --bench placement`.
        assert!(swarm.mean_completion_s <= 1.05 * oracle.mean_completion_s);
        assert!(swarm.mean_origin_rtt_ms <= 2.0 * oracle.mean_origin_rtt_ms);
    }
}
