//! Placement on synthetic swarms of 1 000 and 10 000 nodes (`swarm::core::place::sim`:
//! 8 regions at known RTTs, heterogeneous GPUs, 30 % background load, views 1 s stale).
//!
//! Printed first: the decision time's distribution (p50 / p99 over many picks), what
//! building the indexes costs, placement quality against an oracle that sees the true
//! state, and success under contention. Then criterion: one pick, one full ranking,
//! one gang choice, one origin index, at each size.
//!
//! `SWARM_BENCH_QUICK=1` skips the 10 000-node job mix (the slowest part).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods, missing_docs)]

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use swarm::core::place::sim::{run_mix, sample_tasks, MixConfig, Policy, SimCluster, SimConfig};
use swarm::core::place::{choose_gang, PlacementIndex, ScoreWeights, SubmitConfig, TaskSpec};

fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort_unstable();
    samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)]
}

fn figures(n: usize, jobs: usize, mix: bool, contention: bool) {
    let started = Instant::now();
    let cluster = SimCluster::new(&SimConfig::new(n, 7), Instant::now());
    println!("\n== {n} nodes (built in {:.1} s) ==", started.elapsed().as_secs_f64());
    let t = Instant::now();
    let links = cluster.view.link_index(cluster.now);
    println!("link index (once per view change): {:.2} ms", t.elapsed().as_secs_f64() * 1e3);
    let w = ScoreWeights::default();
    let k = SubmitConfig::default().pool + SubmitConfig::default().max_attempts as usize;
    let (mut index_t, mut pick_t) = (Vec::new(), Vec::new());
    let tasks = sample_tasks();
    for round in 0..200 {
        let origin = &cluster.nodes[(round * 7919) % n].peer;
        let t = Instant::now();
        let index = PlacementIndex::with_links(&cluster.view, &links, origin, &HashMap::new());
        index_t.push(t.elapsed());
        for task in &tasks {
            for _ in 0..5 {
                let t = Instant::now();
                black_box(index.top(task, &w, k));
                pick_t.push(t.elapsed());
            }
        }
    }
    println!(
        "origin index (once per view change and origin): p50 {:.2} ms, p99 {:.2} ms",
        quantile(&mut index_t, 0.5).as_secs_f64() * 1e3,
        quantile(&mut index_t, 0.99).as_secs_f64() * 1e3
    );
    println!(
        "decision (pick the best {k} for a task): p50 {:.1} us, p99 {:.1} us over {} picks",
        quantile(&mut pick_t, 0.5).as_secs_f64() * 1e6,
        quantile(&mut pick_t, 0.99).as_secs_f64() * 1e6,
        pick_t.len()
    );
    upkeep(&cluster, &tasks, k);
    if !mix {
        return;
    }
    let oracle = run_mix(&cluster, &MixConfig::new(jobs, 0.8, 11), Policy::Oracle);
    let t = Instant::now();
    let swarm = run_mix(&cluster, &MixConfig::new(jobs, 0.8, 11), Policy::Swarm);
    let pct = |a: f64, b: f64| 100.0 * (a / b - 1.0);
    println!(
        "quality, {jobs} jobs at 80 % load (swarm vs oracle): mean origin RTT {:.3} vs {:.3} ms ({:+.1} %), \
         mean completion {:.2} vs {:.2} s ({:+.1} %), placed {} vs {} [{:.0} s]",
        swarm.mean_origin_rtt_ms,
        oracle.mean_origin_rtt_ms,
        pct(swarm.mean_origin_rtt_ms, oracle.mean_origin_rtt_ms),
        swarm.mean_completion_s,
        oracle.mean_completion_s,
        pct(swarm.mean_completion_s, oracle.mean_completion_s),
        swarm.placed,
        oracle.placed,
        t.elapsed().as_secs_f64()
    );
    if !contention {
        return;
    }
    for load in [0.5, 0.9, 1.2] {
        let s = run_mix(&cluster, &MixConfig::new(jobs, load, 13), Policy::Swarm);
        let o = run_mix(&cluster, &MixConfig::new(jobs, load, 13), Policy::Oracle);
        println!(
            "contention, load {:.0} %: swarm placed {:.1} % (oracle {:.1} %), {:.1} % at the first try, \
             {:.3} refusals per try, {:.3} lease rounds per placed job, double bookings {}",
            load * 100.0,
            100.0 * s.placed as f64 / jobs as f64,
            100.0 * o.placed as f64 / jobs as f64,
            100.0 * s.placed_first_try as f64 / jobs as f64,
            s.refusals as f64 / s.tries.max(1) as f64,
            s.mean_attempts,
            s.double_booked
        );
    }
}

/// Issue 16, part 6: the index kept up to date record by record. Each round one node's
/// record changes (its GPUs' load, and its links' round trips by ±20 %), the origin's
/// index takes it (`upsert`), and a task is placed (`top`): the decision including the
/// index's upkeep. Every 100th change is the origin's own record (it re-resolves every
/// node).
fn upkeep(cluster: &SimCluster, tasks: &[TaskSpec], k: usize) {
    use swarm::core::link::summary::LinkSummaries;
    use swarm::core::view::ViewEntry;
    let n = cluster.nodes.len();
    let origin = cluster.nodes[0].peer;
    let mut index = PlacementIndex::new(&cluster.view, &origin, &HashMap::new(), cluster.now);
    let w = ScoreWeights::default();
    let (mut upsert_t, mut total_t, mut own_t) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..2_000usize {
        let i = if round % 100 == 99 { 0 } else { (round * 7919 + 13) % n };
        let e = &cluster.view.entries[i];
        let mut record = e.record.clone();
        let mut gpus = record.gpus.devices.to_vec();
        for g in &mut gpus {
            g.utilization_pct = ((round * 37 + usize::from(g.utilization_pct)) % 101) as u8;
        }
        record.gpus.devices = gpus.try_into().unwrap();
        if let Ok(Some(mut s)) = LinkSummaries::from_record(&record) {
            let mut links = s.links.to_vec();
            for l in &mut links {
                l.rtt_p50_us = (f64::from(l.rtt_p50_us) * (0.8 + 0.4 * ((round % 11) as f64 / 10.0))) as u32;
            }
            s.links = links.try_into().unwrap();
            record.extensions = vec![s.to_extension().unwrap()].try_into().unwrap();
        }
        let entry = ViewEntry::new(record, e.tunnel.clone(), e.received_at, e.expires_at, false);
        let task = &tasks[round % tasks.len()];
        let t = Instant::now();
        index.upsert(&entry, &[], cluster.now);
        let upserted = t.elapsed();
        black_box(index.top(task, &w, k));
        let total = t.elapsed();
        if i == 0 {
            own_t.push(upserted);
        } else {
            upsert_t.push(upserted);
        }
        total_t.push(total);
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "incremental index: one record's update p50 {:.1} us, p99 {:.1} us; the origin's own record p50 {:.0} us; \
         decision including upkeep p50 {:.1} us, p99 {:.1} us over {} changes",
        us(quantile(&mut upsert_t, 0.5)),
        us(quantile(&mut upsert_t, 0.99)),
        us(quantile(&mut own_t, 0.5)),
        us(quantile(&mut total_t, 0.5)),
        us(quantile(&mut total_t, 0.99)),
        total_t.len()
    );
}

fn bench(c: &mut Criterion) {
    let quick = std::env::var_os("SWARM_BENCH_QUICK").is_some();
    figures(1000, 3000, true, true);
    // Each swarm decision at 10 000 nodes rebuilds the origin's index (about 10 ms), so
    // the mix there is smaller and contention is measured at 1 000 only.
    figures(10_000, 2000, !quick, false);
    let w = ScoreWeights::default();
    for n in [1000, 10_000] {
        let cluster = SimCluster::new(&SimConfig::new(n, 7), Instant::now());
        let links = cluster.view.link_index(cluster.now);
        let origin = cluster.nodes[0].peer;
        let index = PlacementIndex::with_links(&cluster.view, &links, &origin, &HashMap::new());
        let one = TaskSpec::new("one", 1);
        c.bench_function(&format!("place/pick/{n}"), |b| b.iter(|| black_box(index.top(&one, &w, 16))));
        c.bench_function(&format!("place/rank/{n}"), |b| b.iter(|| black_box(index.rank(&one, &w))));
        c.bench_function(&format!("place/origin_index/{n}"), |b| {
            b.iter(|| black_box(PlacementIndex::with_links(&cluster.view, &links, &origin, &HashMap::new())))
        });
        let mut gang = TaskSpec::new("gang", 1);
        gang.nodes = 8;
        gang.member_limits.max_rtt = Some(Duration::from_millis(10));
        let ranking = index.rank(&gang, &w);
        c.bench_function(&format!("place/gang8/{n}"), |b| {
            b.iter(|| black_box(choose_gang(&links, &ranking, &gang).unwrap()))
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
