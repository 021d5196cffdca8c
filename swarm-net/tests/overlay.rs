//! Overlay addresses between nodes on loopback: every node computes every other node's
//! IPv6 address, and IPv4 claims that clash are settled by the claims themselves, with
//! every node agreeing on who holds what.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use common::*;
use swarm_core::overlay::{Ipv4Range, OverlayV6};
use swarm_core::record::Namespace;
use swarm_net::{Node, NodeIdentity};

/// Two seeds whose keys' first IPv4 candidates are the same address of `range`.
fn clashing_seeds(range: &Ipv4Range) -> ([u8; 32], [u8; 32]) {
    let mut first: HashMap<Ipv4Addr, [u8; 32]> = HashMap::new();
    for i in 0u32..10_000 {
        let mut seed = [7u8; 32];
        seed[..4].copy_from_slice(&i.to_be_bytes());
        let peer = NodeIdentity::from_seed(seed).keypair.public().to_peer_id();
        if let Some(other) = first.insert(range.candidate(&peer, 0).addr, seed) {
            return (other, seed);
        }
    }
    panic!("no clash among 10 000 keys in a /24");
}

/// Whether every node sees every node's addresses as that node sees its own.
async fn agree(nodes: &[Node]) -> bool {
    for x in nodes {
        for y in nodes {
            let own = y.overlay().await.unwrap();
            if x.overlay_of(y.peer_id()).await.unwrap() != Some(own) {
                return false;
            }
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clashing_ipv4_claims_settle_and_every_node_agrees() {
    let range: Ipv4Range = "10.77.0.0/24".parse().unwrap();
    let (s1, s2) = clashing_seeds(&range);
    let claiming = |seed| builder("overlay").overlay_ipv4(range).identity(NodeIdentity::from_seed(seed));
    let (a, _ea) = start(claiming(s1)).await;
    let boot = first_addr(&a).await;
    let (b, _eb) = start(claiming(s2).bootstrap(boot.clone())).await;
    let (c, _ec) = start(builder("overlay").overlay_ipv4(range).bootstrap(boot.clone())).await;
    // A node that claims no IPv4 address still has its IPv6 one.
    let (d, _ed) = start(builder("overlay").bootstrap(boot)).await;
    let nodes = [a.clone(), b.clone(), c.clone(), d.clone()];
    let first = range.candidate(&a.peer_id(), 0).addr;
    assert_eq!(first, range.candidate(&b.peer_id(), 0).addr, "both first claim one address");

    let settled = eventually(Duration::from_secs(30), || async {
        let [a4, b4] = [a.overlay().await.unwrap().ipv4, b.overlay().await.unwrap().ipv4];
        a4 != b4 && agree(&nodes[..3]).await
    })
    .await;
    assert!(settled, "the clash settles and every node agrees");

    let ns = OverlayV6::for_namespace(&Namespace::new("overlay").unwrap());
    let mut v4 = Vec::new();
    for n in &nodes {
        let own = n.overlay().await.unwrap();
        assert_eq!(own.ipv6, ns.node(&n.peer_id()), "computed from the namespace and the PeerId");
        assert!(ns.contains(&own.ipv6));
        if let Some(addr) = own.ipv4 {
            assert!(range.contains(&addr));
            v4.push(addr);
        }
    }
    assert_eq!(d.overlay().await.unwrap().ipv4, None);
    // The node without a claim computes everyone's IPv6 address (it tracks no IPv4).
    for n in &nodes {
        let seen = d.overlay_of(n.peer_id()).await.unwrap().unwrap();
        assert_eq!(seen.ipv6, n.overlay().await.unwrap().ipv6);
    }
    v4.sort();
    v4.dedup();
    assert_eq!(v4.len(), 3, "three claims, three addresses");
    // Exactly one of the two clashing nodes moved off its first candidate.
    let (now_a, now_b) = (a.overlay().await.unwrap(), b.overlay().await.unwrap());
    let kept = usize::from(now_a.ipv4 == Some(first)) + usize::from(now_b.ipv4 == Some(first));
    assert_eq!(kept, 1, "one keeps {first}, the other moved: {now_a:?} {now_b:?}");
    shutdown_all(&nodes).await;
}

/// The IPv4 candidate persists beside the identity file: a node restarted with the same
/// identity claims the same address, even one a clash had moved it to; another range,
/// or a garbled file, starts over at the first candidate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_keeps_its_ipv4_address() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("node.key");
    let file = swarm_net::overlay_path(&key);
    let range: Ipv4Range = "10.78.0.0/16".parse().unwrap();
    // A previous run of this identity had moved to candidate 5.
    std::fs::write(&file, format!("{range} 5\n")).unwrap();
    let node = |range: Ipv4Range| builder("persist").identity_file(&key).overlay_ipv4(range);
    let (a, _ea) = start(node(range)).await;
    let claimed = a.overlay().await.unwrap().ipv4.unwrap();
    assert_eq!(claimed, range.candidate(&a.peer_id(), 5).addr);
    a.shutdown().await;
    let rewritten = eventually(Duration::from_secs(5), || async {
        std::fs::read_to_string(&file).is_ok_and(|t| t == format!("{range} 5\n"))
    })
    .await;
    assert!(rewritten, "{:?}", std::fs::read_to_string(&file));

    let (b, _eb) = start(node(range)).await;
    assert_eq!(b.peer_id(), a.peer_id());
    assert_eq!(b.overlay().await.unwrap().ipv4, Some(claimed), "a restart keeps the address");
    b.shutdown().await;

    let other: Ipv4Range = "10.79.0.0/16".parse().unwrap();
    let (c, _ec) = start(node(other)).await;
    assert_eq!(c.overlay().await.unwrap().ipv4, Some(other.candidate(&c.peer_id(), 0).addr));
    c.shutdown().await;
    std::fs::write(&file, "garbage").unwrap();
    let (d, _ed) = start(node(range)).await;
    assert_eq!(d.overlay().await.unwrap().ipv4, Some(range.candidate(&d.peer_id(), 0).addr));
    d.shutdown().await;
}
