//! Hostile input costs no large allocation: every length prefix is checked against its
//! bound before anything is allocated for it. Its own test binary, so the counting
//! allocator sees only this test.
#![allow(clippy::unwrap_used)]

use std::alloc::System;

use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use swarm_core::codec::{self, DEFAULT_MAX_MESSAGE_SIZE};
use swarm_core::record::NodeRecord;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// A varint claiming 2^63.
const HUGE: [u8; 9] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F];

fn peak_bytes_allocated(input: &[u8]) -> usize {
    let region = Region::new(GLOBAL);
    let result = codec::decode::<NodeRecord>(input, DEFAULT_MAX_MESSAGE_SIZE);
    assert!(result.is_err(), "hostile input is refused");
    drop(result);
    region.change().bytes_allocated
}

#[test]
fn length_bombs_allocate_nothing_large() {
    // Header [kind 1, version 1], then a peer id whose length claims 2^63 bytes.
    let mut peer_bomb = vec![1, 1];
    peer_bomb.extend_from_slice(&HUGE);
    // Header, then a plausible peer id (38 bytes of an Ed25519 id), then a namespace
    // string claiming 2^63 bytes.
    let peer = swarm_core::Keypair::ed25519_from_bytes([1; 32]).unwrap().public().to_peer_id().to_bytes();
    let mut ns_bomb = vec![1, 1, peer.len() as u8];
    ns_bomb.extend_from_slice(&peer);
    ns_bomb.extend_from_slice(&HUGE);
    // ... a good namespace, seq, timestamp, refresh, then a GPU list claiming 2^63 devices.
    let mut gpu_bomb = ns_bomb[..3 + peer.len()].to_vec();
    gpu_bomb.extend_from_slice(&[1, b'a', 1, 1, 1]);
    gpu_bomb.extend_from_slice(&HUGE);
    // Oversized input is refused before it is read.
    let oversized = vec![1u8; DEFAULT_MAX_MESSAGE_SIZE + 1];

    for (name, input) in
        [("peer", &peer_bomb), ("namespace", &ns_bomb), ("gpus", &gpu_bomb), ("oversized", &oversized)]
    {
        let bytes = peak_bytes_allocated(input);
        assert!(bytes < 4096, "{name}: {bytes} bytes allocated for a hostile input");
    }
}
