//! Criterion: the parts of the WireGuard data plane that exist so far — rejecting garbage
//! datagrams, mac1 checks, the replay window.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use swarm::core::tunnel::mac;
use swarm::core::tunnel::replay::ReplayWindow;
use swarm::core::tunnel::wire::{Message, INITIATION_LEN};

fn benches(c: &mut Criterion) {
    // A datagram of a wrong type or length: refused by the parser alone.
    let junk = [0x17u8; 1200];
    c.bench_function("reject/garbage_datagram", |b| b.iter(|| Message::parse(black_box(&junk)).is_err()));

    // An initiation-shaped datagram with a wrong mac1: refused before any DH work.
    let mut forged = [0x5Au8; INITIATION_LEN];
    forged[..4].copy_from_slice(&[1, 0, 0, 0]);
    let key = mac::mac1_key(&[7; 32]);
    c.bench_function("reject/forged_initiation_mac1", |b| {
        b.iter(|| match Message::parse(black_box(&forged)) {
            Ok(Message::Initiation(m)) => !mac::verify(&key, m.mac1_input(), m.mac1()),
            _ => true,
        })
    });

    let mut group = c.benchmark_group("replay");
    group.throughput(Throughput::Elements(1));
    let mut window = ReplayWindow::new();
    let mut counter = 0u64;
    group.bench_function("mark_in_order", |b| {
        b.iter(|| {
            counter += 1;
            window.mark(black_box(counter)).unwrap()
        })
    });
    let window = {
        let mut w = ReplayWindow::new();
        for c in 0..10_000 {
            w.mark(c).unwrap();
        }
        w
    };
    group.bench_function("check_replayed", |b| b.iter(|| window.check(black_box(9_000)).is_err()));
    group.finish();
}

criterion_group!(group, benches);
criterion_main!(group);
