//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use swarm_net::{Multiaddr, Node, NodeBuilder, NodeEvents};

pub fn tcp() -> Multiaddr {
    "/ip4/127.0.0.1/tcp/0".parse().unwrap()
}

pub fn quic() -> Multiaddr {
    "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()
}

/// A test node: TCP on loopback, fast heartbeat.
pub fn builder(namespace: &str) -> NodeBuilder {
    NodeBuilder::new(namespace)
        .listen(tcp())
        .heartbeat(Duration::from_millis(500))
        .record_ttl(Duration::from_secs(3))
        .gpu_probe(Arc::new("1xA100-80GB".parse::<swarm_gpu::StaticProbe>().unwrap()))
}

pub async fn start(builder: NodeBuilder) -> (Node, NodeEvents) {
    builder.start().await.expect("node starts")
}

pub async fn first_addr(node: &Node) -> Multiaddr {
    node.listen_addrs().await.unwrap().into_iter().next().expect("a listen address")
}

/// Polls `check` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn view_len(node: &Node) -> usize {
    node.record_count().await.unwrap_or(0)
}

pub async fn shutdown_all(nodes: &[Node]) {
    for n in nodes {
        n.shutdown().await;
    }
}
