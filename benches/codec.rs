//! Criterion: encode, decode and verify a `NodeRecord`; sign one as a whole; ingest one
//! into a `ClusterView`; a view's sync answer to a joiner.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use swarm::core::bounded::BoundedVec;
use swarm::core::codec;
use swarm::core::identity::{SignedTunnelRecord, TunnelPublicKey, TunnelRecord};
use swarm::core::record::sync::RecordDigest;
use swarm::core::record::{Label, Namespace, NodeRecord, RecordPolicy, SignedNodeRecord, MAX_RECORD_SIZE};
use swarm::core::time::UnixMillis;
use swarm::core::view::{ClusterView, ViewConfig};
use swarm::core::Keypair;
use swarm::gpu::{GpuProbe, StaticProbe};

const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

fn record(seed: u8, seq: u64) -> (Keypair, NodeRecord) {
    let key = Keypair::ed25519_from_bytes([seed; 32]).unwrap();
    let tunnel = TunnelRecord {
        peer_id: key.public().to_peer_id(),
        tunnel_pubkey: TunnelPublicKey::from_secret(&[seed; 32]),
        udp_endpoints: BoundedVec::try_from_vec(vec!["192.0.2.10:51820".parse().unwrap()]).unwrap(),
        nat: Default::default(),
        issued_at: NOW,
    };
    let gpus = "8xH100-80GB".parse::<StaticProbe>().unwrap().sample().unwrap();
    let record = NodeRecord {
        peer_id: key.public().to_peer_id(),
        namespace: Namespace::new("bench").unwrap(),
        seq,
        timestamp: NOW,
        refresh_ms: 5000,
        gpus,
        cpu_cores: 96,
        memory_bytes: 1 << 40,
        labels: BoundedVec::try_from_vec(vec![Label::parse("region=eu-west").unwrap()]).unwrap(),
        tunnel: SignedTunnelRecord::sign(&tunnel, &key).unwrap(),
        extensions: BoundedVec::new(),
    };
    (key, record)
}

fn benches(c: &mut Criterion) {
    let (key, rec) = record(1, 1);
    let peer = key.public().to_peer_id();
    let ns = Namespace::new("bench").unwrap();
    let bytes = codec::encode(&rec, MAX_RECORD_SIZE).unwrap();
    println!("NodeRecord with 8 GPUs and one label: {} bytes", bytes.len());
    let policy = RecordPolicy::default();

    c.bench_function("record/encode", |b| {
        b.iter(|| codec::encode(black_box(&rec), MAX_RECORD_SIZE).unwrap())
    });
    c.bench_function("record/decode", |b| {
        b.iter(|| codec::decode::<NodeRecord>(black_box(&bytes), MAX_RECORD_SIZE).unwrap())
    });
    c.bench_function("record/decode_and_verify", |b| {
        b.iter(|| NodeRecord::decode_verified(black_box(&bytes), &peer, &ns, NOW, &policy).unwrap())
    });

    c.bench_function("record/sign_whole", |b| {
        b.iter(|| SignedNodeRecord::sign(black_box(&rec), &key, MAX_RECORD_SIZE).unwrap())
    });

    // A heartbeat (new seq, same signed tunnel record) encoded, signed and ingested into
    // a view of 250 records.
    let t0 = Instant::now();
    let mut view = ClusterView::new(peer, ns.clone(), ViewConfig::default());
    let mut others = Vec::new();
    for seed in 2..=251u8 {
        let (k, r) = record(seed, 1);
        let b = SignedNodeRecord::sign(&r, &k, MAX_RECORD_SIZE).unwrap();
        view.handle_record(t0, NOW, &b).unwrap();
        others.push((k, r));
    }
    c.bench_function("view/answer_a_joiner_250", |b| {
        b.iter(|| view.answer(black_box(&RecordDigest::default())).records.len())
    });
    let (k, mut r) = others.pop().unwrap();
    let mut seq = 1;
    c.bench_function("view/encode_and_ingest_heartbeat", |b| {
        b.iter(|| {
            seq += 1;
            r.seq = seq;
            let b = SignedNodeRecord::sign(&r, &k, MAX_RECORD_SIZE).unwrap();
            view.handle_record(t0, NOW, black_box(&b)).unwrap()
        })
    });
}

criterion_group!(group, benches);
criterion_main!(group);
