//! A scripted GPU probe: live-use jitter stays out of gossip, a vanished GPU is reported
//! and published at once, and peers see it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use swarm_core::gpu::GpuSnapshot;
use swarm_gpu::{GpuProbe, ProbeError, StaticProbe};
use swarm_net::NodeEvent;

/// Two H100s with utilization jitter; from sample `lose_at` on, GPU 1 is gone.
#[derive(Debug)]
struct Scripted {
    samples: AtomicUsize,
    lose_at: usize,
}

impl GpuProbe for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }
    fn sample(&self) -> Result<GpuSnapshot, ProbeError> {
        let n = self.samples.fetch_add(1, Ordering::SeqCst);
        let mut snap = "2xH100-80GB".parse::<StaticProbe>().unwrap().sample()?;
        let mut devices = snap.devices.clone().into_inner();
        for d in &mut devices {
            d.utilization_pct = (n % 5) as u8; // below the 10-point threshold
        }
        if n >= self.lose_at {
            devices.pop();
        }
        snap.devices = devices.try_into().unwrap();
        Ok(snap)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_gpu_is_reported_and_gossiped_but_jitter_is_not() {
    let probe = Arc::new(Scripted { samples: AtomicUsize::new(0), lose_at: 15 });
    let (a, mut events) = start(
        builder("gpus")
            .gpu_probe(probe.clone())
            .gpu_sample_interval(Duration::from_millis(100))
            .heartbeat(Duration::from_secs(5))
            .record_ttl(Duration::from_secs(30)),
    )
    .await;
    let boot = first_addr(&a).await;
    let (b, _eb) = start(builder("gpus").bootstrap(boot)).await;
    assert!(eventually(Duration::from_secs(20), || async { view_len(&b).await == 2 }).await);
    let published_before = a.stats().await.unwrap().published;

    // Samples 1..15 only jitter: no new record. Then GPU 1 vanishes.
    let lost = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.next().await {
                Some(NodeEvent::GpuInventoryChanged { before, after }) => return (before, after),
                Some(_) => {}
                None => panic!("node stopped"),
            }
        }
    })
    .await
    .expect("the vanished GPU is reported");
    assert_eq!(lost, (2, 1));
    assert!(probe.samples.load(Ordering::SeqCst) >= 15);
    let published_after = a.stats().await.unwrap().published;
    assert!(
        published_after - published_before <= 2,
        "jitter below the thresholds is not published ({published_before} -> {published_after})"
    );
    let seen = eventually(Duration::from_secs(5), || async {
        b.cluster().await.unwrap().get(&a.peer_id()).is_some_and(|e| e.record.gpus.count() == 1)
    })
    .await;
    assert!(seen, "peers see the smaller inventory within a debounce");
    shutdown_all(&[a, b]).await;
}
