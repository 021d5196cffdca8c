//! 32 nodes in one process converge to identical cluster views.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_nodes_converge_to_identical_views() {
    const N: usize = 32;
    let (first, _e0) =
        start(builder("big").heartbeat(Duration::from_secs(2)).record_ttl(Duration::from_secs(30))).await;
    let boot = first_addr(&first).await;
    let mut nodes = vec![first];
    let mut streams = Vec::new();
    for _ in 1..N {
        let (n, e) = start(
            builder("big")
                .heartbeat(Duration::from_secs(2))
                .record_ttl(Duration::from_secs(30))
                .bootstrap(boot.clone()),
        )
        .await;
        nodes.push(n);
        streams.push(e);
    }
    let ok = eventually(Duration::from_secs(60), || async {
        for n in &nodes {
            if view_len(n).await != N {
                return false;
            }
        }
        true
    })
    .await;
    let lens: Vec<usize> = futures::future::join_all(nodes.iter().map(view_len)).await;
    assert!(ok, "every node holds {N} records: {lens:?}");

    // Identical: the same peers, each with its own tunnel key, in every view.
    let reference = nodes[0].cluster().await.unwrap();
    for n in &nodes[1..] {
        let view = n.cluster().await.unwrap();
        assert_eq!(view.peers(), reference.peers());
        for (a, b) in view.entries.iter().zip(&reference.entries) {
            assert_eq!(a.tunnel.tunnel_pubkey, b.tunnel.tunnel_pubkey);
            assert_eq!(a.record.gpus, b.record.gpus);
        }
    }
    shutdown_all(&nodes).await;
}
