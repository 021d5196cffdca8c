//! Criterion: the WireGuard data plane on one core, through the public `Tunnels` API —
//! sealing and opening payloads of 64, 512 and 1420 bytes, full handshakes, the replay
//! window, and the rejection of garbage and forged datagrams.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods, missing_docs)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use swarm::core::tunnel::replay::ReplayWindow;
use swarm::core::tunnel::wire::INITIATION_LEN;
use swarm::core::tunnel::{PeerHandle, TunnelConfig, Tunnels};

const UNIX: Duration = Duration::from_secs(1_800_000_000);

fn public(private: [u8; 32]) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(private)).to_bytes()
}

struct Pair {
    a: Tunnels,
    b: Tunnels,
    pa: PeerHandle,
    aa: SocketAddr,
    ab: SocketAddr,
    now: Instant,
}

/// Two tunnels with an established session, at a frozen `now`.
fn established() -> Pair {
    let now = Instant::now();
    let (aa, ab): (SocketAddr, SocketAddr) = ("10.0.0.1:1".parse().unwrap(), "10.0.0.2:1".parse().unwrap());
    let mut a = Tunnels::new([1; 32], TunnelConfig::default(), now, UNIX, [1; 32]);
    let mut b = Tunnels::new([2; 32], TunnelConfig::default(), now, UNIX, [2; 32]);
    let pa = a.add_peer(public([2; 32]), Some(ab)).unwrap();
    b.add_peer(public([1; 32]), Some(aa)).unwrap();
    let mut p = Pair { a, b, pa, aa, ab, now };
    p.a.open(now, pa);
    p.shuttle();
    assert!(p.a.status(pa, now).unwrap().established);
    p
}

impl Pair {
    /// Delivers datagrams both ways until both sides are quiet.
    fn shuttle(&mut self) {
        let mut buf = vec![0u8; 2048];
        loop {
            let mut moved = false;
            while let Some(t) = self.a.poll_transmit(self.now, &mut buf) {
                let _ = self.b.handle_datagram(self.now, self.aa, &mut buf[..t.len]);
                moved = true;
            }
            while let Some(t) = self.b.poll_transmit(self.now, &mut buf) {
                let _ = self.a.handle_datagram(self.now, self.ab, &mut buf[..t.len]);
                moved = true;
            }
            if !moved {
                break;
            }
        }
    }
}

fn ipv4(len: usize) -> Vec<u8> {
    let mut p = vec![0xABu8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p
}

fn benches(c: &mut Criterion) {
    let mut p = established();

    let mut group = c.benchmark_group("seal");
    for len in [64usize, 512, 1420] {
        let packet = ipv4(len);
        let mut out = vec![0u8; 2048];
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(format!("{len}B"), |bench| {
            bench.iter(|| p.a.send_ip(p.now, p.pa, black_box(&packet), &mut out).unwrap().unwrap().len)
        });
    }
    group.finish();

    let mut group = c.benchmark_group("open");
    for len in [64usize, 512, 1420] {
        let packet = ipv4(len);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(format!("{len}B"), |bench| {
            bench.iter_batched_ref(
                || {
                    let mut out = vec![0u8; 2048];
                    let t = p.a.send_ip(p.now, p.pa, &packet, &mut out).unwrap().unwrap();
                    out.truncate(t.len);
                    out
                },
                |datagram| p.b.handle_datagram(p.now, p.aa, black_box(datagram)).is_ok(),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();

    let mut group = c.benchmark_group("handshake");
    group.throughput(Throughput::Elements(1));
    // Initiation, response and the initiator's processing of it: both sides' work.
    group.bench_function("initiation_response_pair", |bench| {
        bench.iter(|| {
            p.now += Duration::from_millis(21);
            p.a.force_rekey(p.now, p.pa);
            p.shuttle();
        })
    });
    // The responder's part alone: check mac1, read the initiation, write the response.
    let now = std::cell::Cell::new(p.now);
    group.bench_function("responder", |bench| {
        bench.iter_batched_ref(
            || {
                now.set(now.get() + Duration::from_millis(21));
                p.a.force_rekey(now.get(), p.pa);
                let mut buf = vec![0u8; 256];
                let t = p.a.poll_transmit(now.get(), &mut buf).unwrap();
                buf.truncate(t.len);
                (buf, now.get())
            },
            |(init, at)| {
                let ok = p.b.handle_datagram(*at, p.aa, init).is_ok();
                let mut out = [0u8; 256];
                while p.b.poll_transmit(*at, &mut out).is_some() {}
                ok
            },
            BatchSize::SmallInput,
        )
    });
    p.now = now.get();
    assert_eq!(
        p.a.drops().total() + p.b.drops().total(),
        0,
        "every handshake above completed: {:?} {:?}",
        p.a.drops(),
        p.b.drops()
    );
    group.finish();

    // A datagram of a wrong type or length.
    let mut junk = [0x17u8; 1200];
    c.bench_function("reject/garbage_datagram", |bench| {
        bench.iter(|| p.b.handle_datagram(p.now, p.aa, black_box(&mut junk)).is_err())
    });
    // An initiation-shaped datagram with a wrong mac1: refused before any DH work.
    let mut forged = [0x5Au8; INITIATION_LEN];
    forged[..4].copy_from_slice(&[1, 0, 0, 0]);
    c.bench_function("reject/forged_initiation_mac1", |bench| {
        bench.iter(|| p.b.handle_datagram(p.now, p.aa, black_box(&mut forged)).is_err())
    });
    // Transport data for an index nobody handed out.
    let mut stray = [0u8; 64];
    stray[0] = 4;
    c.bench_function("reject/unknown_index", |bench| {
        bench.iter(|| p.b.handle_datagram(p.now, p.aa, black_box(&mut stray)).is_err())
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
