//! A mesh of nodes on loopback in one process: for the demo, benchmarks and tests.
//!
//! Node `i` gets the GPU inventory `INVENTORIES[i % 8]` and the label
//! `region=REGIONS[i % 3]`, so the cluster is heterogeneous; every node but the first
//! bootstraps from the first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use swarm_gpu::StaticProbe;

use crate::api::{Node, NodeError, NodeEvents};
use crate::config::{BuildError, NodeBuilder};

/// GPU inventories handed out round-robin.
pub const INVENTORIES: [&str; 8] = [
    "8xH100-80GB",
    "4xA100-80GB",
    "2xA100-40GB,1xRTX4090-24GB",
    "1xRTX4090-24GB",
    "4xL40S-48GB",
    "none",
    "2xV100-32GB",
    "8xA100-80GB",
];
/// Region labels handed out round-robin.
pub const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];

/// The transport between the mesh's nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeshTransport {
    /// QUIC (quinn) over UDP.
    Quic,
    /// TCP with Noise and yamux.
    Tcp,
}

impl MeshTransport {
    fn listen_addr(self) -> Multiaddr {
        let text = match self {
            MeshTransport::Quic => "/ip4/127.0.0.1/udp/0/quic-v1",
            MeshTransport::Tcp => "/ip4/127.0.0.1/tcp/0",
        };
        text.parse().unwrap_or_else(|_| Multiaddr::empty())
    }
}

/// Nodes of one namespace on loopback.
#[derive(Debug)]
pub struct LocalMesh {
    /// The nodes; the first is everyone's bootstrap peer.
    pub nodes: Vec<Node>,
    /// Their event streams (kept open; events beyond capacity are dropped and counted).
    pub events: Vec<NodeEvents>,
    /// The GPU spec of each node.
    pub inventories: Vec<&'static str>,
}

/// How far a mesh got in [`LocalMesh::wait_converged`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Convergence {
    /// Whether every node holds every node's record.
    pub converged: bool,
    /// Records held by each node at the end.
    pub counts: Vec<usize>,
    /// Time from the call to the end.
    pub elapsed: Duration,
}

impl LocalMesh {
    /// Starts `n` nodes of namespace `namespace`.
    pub async fn start(
        n: usize,
        namespace: &str,
        transport: MeshTransport,
        heartbeat: Duration,
    ) -> Result<Self, BuildError> {
        let mut mesh = Self { nodes: Vec::new(), events: Vec::new(), inventories: Vec::new() };
        let mut bootstrap: Option<Multiaddr> = None;
        for i in 0..n {
            let spec = INVENTORIES[i % INVENTORIES.len()];
            let probe: StaticProbe = spec.parse().map_err(|e| BuildError::Setting(format!("{e}")))?;
            let mut builder = NodeBuilder::new(namespace)
                .listen(transport.listen_addr())
                .gpu_probe(Arc::new(probe))
                .label(format!("region={}", REGIONS[i % REGIONS.len()]))
                .heartbeat(heartbeat)
                .record_ttl(heartbeat * 6);
            if let Some(addr) = &bootstrap {
                builder = builder.bootstrap(addr.clone());
            }
            let (node, events) = builder.start().await?;
            if bootstrap.is_none() {
                bootstrap = node.listen_addrs().await.ok().and_then(|a| a.into_iter().next());
            }
            mesh.nodes.push(node);
            mesh.events.push(events);
            mesh.inventories.push(spec);
        }
        Ok(mesh)
    }

    /// Waits until every node holds every record, or `timeout` passes.
    pub async fn wait_converged(&self, timeout: Duration) -> Result<Convergence, NodeError> {
        let started = Instant::now();
        let n = self.nodes.len();
        loop {
            let counts = futures::future::try_join_all(self.nodes.iter().map(Node::record_count)).await?;
            let converged = counts.iter().all(|&c| c == n);
            let missing: usize = counts.iter().map(|&c| n.saturating_sub(c)).sum();
            tracing::debug!(missing, "convergence progress");
            if converged || started.elapsed() >= timeout {
                return Ok(Convergence { converged, counts, elapsed: started.elapsed() });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops every node, all at once, and waits for them.
    pub async fn shutdown(&self) {
        futures::future::join_all(self.nodes.iter().map(Node::shutdown)).await;
    }
}
