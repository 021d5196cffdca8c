//! Criterion: the cost of link measurement — recording a probe reply, answering a
//! probe, taking a snapshot, judging it, a Vivaldi update — and, printed first, memory
//! per link, the gossip bytes of 64 link summaries, and Vivaldi's error on a synthetic
//! topology.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use swarm::core::bounded::BoundedVec;
use swarm::core::link::summary::{LinkSummaries, LinkSummary};
use swarm::core::link::vivaldi::{self, Coordinate};
use swarm::core::link::{LinkConfig, LinkMonitor, PassiveCounters, SlaJudge, SlaPolicy};

/// A monitor with full windows: 60 s of probes every 200 ms and counters.
fn busy_monitor() -> (LinkMonitor, Instant) {
    let t0 = Instant::now();
    let mut m = LinkMonitor::new(t0, LinkConfig::default());
    let mut peer = LinkMonitor::new(t0, LinkConfig::default());
    let mut now = t0;
    for i in 0..300u64 {
        now = t0 + Duration::from_millis(200 * i);
        m.handle_timeout(now);
        if let Some(probe) = m.poll_probe(now) {
            let back = now + Duration::from_micros(20_000 + (i * 7919) % 3000);
            let reply = peer.handle_probe(back, &probe).unwrap();
            m.handle_reply(back, &reply).unwrap();
        }
        m.handle_counters(
            now,
            PassiveCounters {
                rx_packets: i * 990,
                rx_expected: i * 1000,
                rx_bytes: (i * 3) << 20,
                tx_bytes: i << 20,
            },
        );
    }
    (m, now + Duration::from_millis(100))
}

fn figures() {
    let (m, _) = busy_monitor();
    println!("memory per link (monitor with full windows): {} bytes", m.memory_bytes());
    let peer = |i: u8| swarm::core::Keypair::ed25519_from_bytes([i; 32]).unwrap().public().to_peer_id();
    let links: Vec<LinkSummary> = (0..64u8)
        .map(|i| LinkSummary {
            peer: peer(i + 1),
            rtt_p50_us: 20_000 + u32::from(i) * 997,
            rtt_p99_us: 31_000 + u32::from(i) * 1013,
            rtt_samples: 50,
            jitter_us: 412,
            loss_ppm: Some(120),
            loss_packets: 48_000,
            rx_kbps: 183_000,
            tx_kbps: 95_000,
            capacity_kbps: Some(940_000),
            handshake_age_s: 73,
            age_ms: 840,
            degraded: 0,
        })
        .collect();
    let s = LinkSummaries {
        coordinate: Some(Coordinate { vector: [12.5, -3.25, 40.0, 0.5], height: 1.5, error: 0.08 }),
        links: BoundedVec::try_from_vec(links).unwrap(),
    };
    println!("link-summary gossip for 64 peers: {} bytes per record", s.to_extension().unwrap().body.len());
    for (nodes, neighbours) in [(200, 8), (1000, 8), (1000, 16)] {
        let r = vivaldi::simulate(nodes, neighbours, 200, 0x5EED);
        println!(
            "vivaldi, {nodes} nodes measuring {neighbours} peers each: median relative error {:.1} % (p90 {:.1} %) over {} unmeasured pairs",
            r.median * 100.0,
            r.p90 * 100.0,
            r.pairs
        );
    }
}

fn benches(c: &mut Criterion) {
    figures();
    let (m, now) = busy_monitor();
    let mut peer = LinkMonitor::new(now, LinkConfig::default());
    // Probes and their replies made ahead (setup is not timed), then recorded.
    let m = std::cell::RefCell::new(m);
    let t = std::cell::Cell::new(now);
    c.bench_function("link/record_probe_reply", |b| {
        b.iter_batched(
            || {
                t.set(t.get() + Duration::from_millis(200));
                let probe = m.borrow_mut().poll_probe(t.get()).unwrap();
                (peer.handle_probe(t.get(), &probe).unwrap(), t.get())
            },
            |(reply, at)| {
                let rtt =
                    m.borrow_mut().handle_reply(at + Duration::from_millis(20), black_box(&reply)).unwrap();
                assert!(rtt.is_some(), "a probe of ours");
            },
            // One at a time: a batch of probes made ahead would overflow the 64 outstanding.
            BatchSize::PerIteration,
        )
    });
    let (mut m, t) = (m.into_inner(), t.get());
    let probe = m.poll_probe(t + Duration::from_secs(1)).unwrap();
    c.bench_function("link/answer_probe", |b| b.iter(|| peer.handle_probe(t, black_box(&probe)).unwrap()));
    let (mut m, now) = busy_monitor();
    c.bench_function("link/snapshot", |b| b.iter(|| m.snapshot(black_box(now))));
    let stats = m.snapshot(now);
    let mut judge = SlaJudge::new(SlaPolicy::default());
    c.bench_function("link/sla_judge", |b| b.iter(|| judge.judge(now, black_box(&stats))));
    let mut coord = Coordinate::default();
    let other = Coordinate { vector: [10.0, 2.0, 0.0, 1.0], height: 1.0, error: 0.2 };
    c.bench_function("link/vivaldi_update", |b| b.iter(|| coord.update(black_box(23.0), &other, 7)));
}

criterion_group!(group, benches);
criterion_main!(group);
