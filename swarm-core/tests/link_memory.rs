//! What measuring a link costs in memory: a monitor whose windows are full holds at most
//! `MAX_LINK_MEMORY` (64 KiB), so 1 000 measured links stay under 64 MiB. Counted by the
//! allocator (its own test binary, so the counting allocator sees only this test), not
//! estimated.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::alloc::System;
use std::time::{Duration, Instant};

use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use swarm_core::link::{LinkConfig, LinkMonitor, PassiveCounters, MAX_LINK_MEMORY};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Feeds `m` two minutes of probes (every 200 ms, answered with a varying round trip),
/// counters every second, snapshots now and then: every window and slot gets used.
fn fill(m: &mut LinkMonitor, peer: &mut LinkMonitor, t0: Instant, salt: u64) {
    let mut now = t0;
    for i in 0..600u64 {
        now = t0 + Duration::from_millis(200 * i);
        m.handle_timeout(now);
        while let Some(probe) = m.poll_probe(now) {
            let back = now + Duration::from_micros(1_000 + (i * 7919 + salt * 104_729) % 90_000);
            let reply = peer.handle_probe(back, &probe).unwrap();
            m.handle_reply(back, &reply).unwrap();
        }
        if i % 5 == 0 {
            let n = i / 5;
            m.handle_counters(
                now,
                PassiveCounters {
                    rx_packets: n * 990,
                    rx_expected: n * 1000,
                    rx_bytes: n << 20,
                    tx_bytes: n << 19,
                },
            );
        }
        if i % 50 == 0 {
            let _ = m.snapshot(now);
        }
    }
    let _ = m.snapshot(now);
}

#[test]
fn a_thousand_measured_links_fit_in_64_mib() {
    let t0 = Instant::now();
    let config = LinkConfig::default();
    let mut peer = LinkMonitor::new(t0, config);
    fill(&mut LinkMonitor::new(t0, config), &mut peer, t0, 0);

    let region = Region::new(GLOBAL);
    let mut monitors: Vec<LinkMonitor> = Vec::with_capacity(1000);
    for i in 0..1000u64 {
        let mut m = LinkMonitor::new(t0, config);
        fill(&mut m, &mut peer, t0, i);
        monitors.push(m);
    }
    let stats = region.change();
    let held = stats.bytes_allocated - stats.bytes_deallocated;
    let per_link = held / monitors.len();
    println!("1 000 links with full windows: {held} bytes on the heap, {per_link} per link");
    assert!(held < 64 << 20, "{held} bytes for 1 000 links");
    assert!(per_link <= MAX_LINK_MEMORY, "{per_link} bytes per link");
    // The monitor's own account is honest: not below what the allocator saw.
    let claimed = monitors[0].memory_bytes();
    assert!(claimed <= MAX_LINK_MEMORY, "memory_bytes {claimed}");
    assert!(claimed >= per_link, "memory_bytes {claimed} < measured {per_link}");
}
