//! Nodes on loopback find each other and exchange records.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use swarm_net::NodeEvent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_two_knowing_only_the_first() {
    let (a, _ea) = start(builder("three")).await;
    let boot = first_addr(&a).await;
    let (b, mut eb) = start(builder("three").bootstrap(boot.clone())).await;
    let (c, _ec) = start(builder("three").bootstrap(boot)).await;
    let nodes = [a.clone(), b.clone(), c.clone()];

    let converged = eventually(Duration::from_secs(20), || async {
        for n in &nodes {
            if view_len(n).await != 3 {
                return false;
            }
        }
        true
    })
    .await;
    assert!(converged, "every node holds three records");

    // B learned of C although it was only told of A: through the DHT (provider record)
    // it connects to C directly.
    let b_to_c = eventually(Duration::from_secs(20), || async {
        b.connected_peers().await.unwrap().contains(&c.peer_id())
    })
    .await;
    assert!(b_to_c, "B dials C, found through the namespace provider record");

    // The records carry what each node said about itself.
    let view = b.cluster().await.unwrap();
    let rec_c = view.get(&c.peer_id()).expect("C's record");
    assert_eq!(rec_c.record.gpus.count(), 1);
    assert_eq!(rec_c.tunnel.peer_id, c.peer_id());
    assert!(!rec_c.tunnel.udp_endpoints.is_empty(), "tunnel endpoints are published");

    // B's events named both others.
    let mut discovered = HashSet::new();
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(100), eb.next()).await {
        if let NodeEvent::PeerDiscovered { peer } = event {
            discovered.insert(peer);
        }
    }
    assert!(discovered.contains(&a.peer_id()) && discovered.contains(&c.peer_id()), "{discovered:?}");
    shutdown_all(&nodes).await;
}

/// Kademlia's own bootstraps (on every peer that enters a small routing table) are ended
/// as they start; the node refreshes its table itself, one walk interval after joining.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routing_table_is_refreshed_on_the_nodes_schedule() {
    let walk = Duration::from_secs(2);
    let (a, _ea) = start(builder("refresh").random_walk_interval(walk)).await;
    let boot = first_addr(&a).await;
    let mut nodes = vec![a];
    let mut events = Vec::new();
    for _ in 0..4 {
        let (n, e) = start(builder("refresh").random_walk_interval(walk).bootstrap(boot.clone())).await;
        nodes.push(n);
        events.push(e);
    }
    let joined = eventually(Duration::from_secs(20), || async {
        for n in &nodes {
            if view_len(n).await != nodes.len() {
                return false;
            }
        }
        true
    })
    .await;
    assert!(joined, "every node holds five records");
    let refreshed = eventually(Duration::from_secs(20), || async {
        for n in &nodes {
            let s = n.stats().await.unwrap();
            if s.kad_refreshes == 0 || s.kad_peers < nodes.len() - 1 {
                return false;
            }
        }
        true
    })
    .await;
    let stats = futures::future::try_join_all(nodes.iter().map(|n| n.stats())).await.unwrap();
    let summary: Vec<_> =
        stats.iter().map(|s| (s.kad_refreshes, s.kad_bootstraps_ended, s.kad_peers)).collect();
    assert!(
        refreshed,
        "every node's own refresh walked to the end and its table holds every other: (refreshes, ended, table) {summary:?}"
    );
    for (i, s) in stats.iter().enumerate() {
        // Each joiner's table was under 20 peers as they came: kad started bootstraps.
        assert!(i == 0 || s.kad_bootstraps_ended > 0, "node {i}: kad's own bootstraps ended: {summary:?}");
    }
    shutdown_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_nodes_converge_too() {
    let (a, _ea) = start(builder("quic").listen(quic())).await;
    let quic_addr = a
        .listen_addrs()
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.to_string().contains("quic"))
        .expect("a QUIC address");
    let (b, _eb) = start(swarm_net::NodeBuilder::new("quic").listen(quic()).bootstrap(quic_addr)).await;
    let nodes = [a.clone(), b.clone()];
    let ok =
        eventually(Duration::from_secs(20), || async { view_len(&a).await == 2 && view_len(&b).await == 2 })
            .await;
    assert!(ok, "two QUIC nodes exchange records");
    shutdown_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_namespace_is_never_in_the_view() {
    let (a, _ea) = start(builder("blue")).await;
    let boot = first_addr(&a).await;
    let (b, _eb) = start(builder("blue").bootstrap(boot.clone())).await;
    // Shares the DHT (bootstraps to A) but belongs to another swarm.
    let (red, _er) = start(builder("red").bootstrap(boot.clone())).await;
    let (red2, _er2) = start(builder("red").bootstrap(boot)).await;
    let nodes = [a.clone(), b.clone(), red.clone(), red2.clone()];

    let ok = eventually(Duration::from_secs(20), || async {
        view_len(&a).await == 2
            && view_len(&b).await == 2
            && view_len(&red).await == 2
            && view_len(&red2).await == 2
    })
    .await;
    assert!(ok, "each swarm converges on its own two members");
    // The red nodes know only A, of another namespace: they found each other by their
    // look-ups (`/swarm/find/1`), which A answered from the provider records they
    // announced to it. Whichever looked up after the other's announcement reached A
    // found it (on a busy host the second red node's first look-up can come first).
    let (red1_stats, red2_stats) = (red.stats().await.unwrap(), red2.stats().await.unwrap());
    let a_stats = a.stats().await.unwrap();
    assert!(red1_stats.lookups >= 1 && red2_stats.lookups >= 1, "{red1_stats:?} {red2_stats:?}");
    assert!(red1_stats.lookup_providers + red2_stats.lookup_providers >= 1, "{red1_stats:?} {red2_stats:?}");
    assert!(a_stats.lookup_answers >= 2, "{a_stats:?}");
    assert_eq!(
        (red1_stats.lookup_malformed, red2_stats.lookup_malformed, a_stats.lookup_malformed),
        (0, 0, 0)
    );
    // Give gossip a few more heartbeats to leak, if it would.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for n in [&a, &b] {
        let peers = n.cluster().await.unwrap().peers();
        assert!(!peers.contains(&red.peer_id()) && !peers.contains(&red2.peer_id()));
    }
    for n in [&red, &red2] {
        let peers = n.cluster().await.unwrap().peers();
        assert!(!peers.contains(&a.peer_id()) && !peers.contains(&b.peer_id()));
    }
    shutdown_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_expires_everywhere() {
    let ttl = Duration::from_secs(3);
    let heartbeat = Duration::from_millis(500);
    let (a, _ea) = start(builder("expiry")).await;
    let boot = first_addr(&a).await;
    let (b, mut eb) = start(builder("expiry").bootstrap(boot.clone())).await;
    let (c, _ec) = start(builder("expiry").bootstrap(boot)).await;
    let ok = eventually(Duration::from_secs(20), || async {
        view_len(&a).await == 3 && view_len(&b).await == 3 && view_len(&c).await == 3
    })
    .await;
    assert!(ok);
    while tokio::time::timeout(Duration::from_millis(10), eb.next()).await.is_ok() {}

    let gone = c.peer_id();
    c.shutdown().await;
    let stopped = tokio::time::Instant::now();
    let expired = eventually(ttl + heartbeat + Duration::from_secs(2), || async {
        view_len(&a).await == 2 && view_len(&b).await == 2
    })
    .await;
    let took = stopped.elapsed();
    assert!(expired, "C's record is gone everywhere");
    assert!(took <= ttl + heartbeat + Duration::from_millis(500), "expired after {took:?}");
    let mut saw_expired = false;
    let mut saw_lost = false;
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(200), eb.next()).await {
        saw_expired |= event == NodeEvent::RecordExpired { peer: gone };
        saw_lost |= event == NodeEvent::PeerLost { peer: gone };
    }
    assert!(saw_expired && saw_lost);
    shutdown_all(&[a, b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_replaces_its_old_record_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("b.key");
    let long_ttl = Duration::from_secs(60);
    let (a, _ea) = start(builder("restart").record_ttl(long_ttl)).await;
    let boot = first_addr(&a).await;
    let (b, _eb) =
        start(builder("restart").record_ttl(long_ttl).identity_file(&key).bootstrap(boot.clone())).await;
    let b_id = b.peer_id();
    assert!(eventually(Duration::from_secs(20), || async { view_len(&a).await == 2 }).await);
    let old = a.cluster().await.unwrap().get(&b_id).unwrap().clone();
    b.shutdown().await;

    let (b2, _eb2) = start(builder("restart").record_ttl(long_ttl).identity_file(&key).bootstrap(boot)).await;
    assert_eq!(b2.peer_id(), b_id, "same identity file, same peer id");
    let replaced = eventually(Duration::from_secs(15), || async {
        let view = a.cluster().await.unwrap();
        view.get(&b_id).is_some_and(|e| {
            e.record.seq > old.record.seq && e.tunnel.udp_endpoints != old.tunnel.udp_endpoints
        })
    })
    .await;
    assert!(replaced, "the new record (new endpoints) wins well before the old one's {long_ttl:?} TTL");
    shutdown_all(&[a, b2]).await;
}
