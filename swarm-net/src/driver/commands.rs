//! The [`Node`](crate::Node) handle's calls: each [`Command`] answered on its oneshot.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use libp2p::PeerId;
use swarm_core::link::summary::LinkAnswer;

use super::Driver;
use crate::api::{Command, NodeError, NodeStats, SharedIndex};
use crate::host::{bandwidth_totals, wall_clock};

impl Driver {
    pub(super) fn handle_command(&mut self, command: Command) {
        match command {
            Command::Dial(addr, reply) => {
                let result =
                    self.swarm.dial(addr.clone()).map_err(|e| NodeError::Dial { addr, source: Arc::new(e) });
                let _ = reply.send(result);
            }
            Command::OpenTunnel(peer, reply) => {
                let ok = self.dataplane.open(Instant::now(), &peer);
                let _ = reply.send(if ok { Ok(()) } else { Err(NodeError::NoTunnel(peer)) });
            }
            Command::CloseTunnel(peer, reply) => {
                let ok = self.dataplane.close(Instant::now(), &peer);
                let _ = reply.send(if ok { Ok(()) } else { Err(NodeError::NoTunnel(peer)) });
            }
            Command::MeasureThroughput(peer, reply) => self.measure_throughput(Instant::now(), peer, reply),
            Command::Ping(peer, reply) => self.ping(Instant::now(), peer, reply),
            Command::Libp2pMetrics(reply) => {
                let mut text = String::new();
                let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
                let _ = reply.send(text);
            }
            Command::ServeMetrics(addr, reply) => {
                let _ = reply.send(self.serve_metrics(addr));
            }
            Command::Lease(peer, request, reply) => self.lease_request(peer, request, reply),
            Command::AddStockPeer(key, name, reply) => {
                let _ = reply.send(self.add_stock_peer(key, name));
            }
            Command::RemoveStockPeer(key, reply) => {
                let _ = reply.send(self.remove_stock_peer(&key));
            }
            Command::Shutdown => {}
            query => self.answer_query(query),
        }
    }

    /// Calls that only read the node's state.
    fn answer_query(&mut self, query: Command) {
        match query {
            Command::ListenAddrs(reply) => {
                let _ = reply.send(self.listen_addrs.clone());
            }
            Command::ConnectedPeers(reply) => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::KnownAddresses(limit, reply) => {
                let _ = reply.send(self.known_addresses(limit));
            }
            Command::Snapshot(reply) => {
                let _ = reply.send(self.view.snapshot());
            }
            Command::WatchPlacement(w) => {
                let (task, placement) = *w;
                self.watch_placement(task, placement);
            }
            Command::PlacementRenewed(task, left) => self.placement_renewed(&task, left),
            Command::PlacementReleased(task) => self.placement_released(&task),
            Command::BlockPeer(peer, blocked, reply) => {
                let list = &mut self.swarm.behaviour_mut().blocked;
                if blocked {
                    list.block_peer(peer);
                } else {
                    list.unblock_peer(peer);
                }
                let _ = reply.send(());
            }
            Command::PlacementIndex(reply) => {
                let _ = reply.send(self.placement_index());
            }
            Command::RecordCount(reply) => {
                let _ = reply.send(self.view.len());
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
            Command::Tunnels(reply) => {
                let _ = reply.send(self.dataplane.status(Instant::now()));
            }
            Command::Links(reply) => {
                let _ = reply.send(self.dataplane.link_reports(Instant::now()));
            }
            Command::LinkBetween(a, b, reply) => {
                let _ = reply.send(self.link_between(&a, &b));
            }
            Command::StockPeers(reply) => {
                let _ = reply.send(self.stock_peers());
            }
            Command::Leases(reply) => {
                let _ = reply.send(self.leases.leases());
            }
            Command::Overlay(peer, reply) => {
                let _ = reply.send(self.overlay_addresses(&peer));
            }
            _ => {}
        }
    }

    /// The link between `a` and `b`, from the placement index's link index; a
    /// measurement's age counts to now.
    fn link_between(&mut self, a: &PeerId, b: &PeerId) -> Option<LinkAnswer> {
        self.placement.index().links().link_between_as_of(a, b, wall_clock())
    }

    /// The live placement index, with our lease table's GPUs as they are now.
    pub(super) fn placement_index(&mut self) -> SharedIndex {
        self.placement.set_own_leases(self.leases.leases().into_iter().flat_map(|l| l.gpus).collect());
        self.placement.shared()
    }

    /// Binds the metrics endpoint and runs it beside the driver (aborted with it).
    fn serve_metrics(&mut self, addr: SocketAddr) -> Result<SocketAddr, NodeError> {
        let err = |e: std::io::Error| NodeError::Metrics { addr, source: Arc::new(e) };
        let listener = std::net::TcpListener::bind(addr).map_err(err)?;
        listener.set_nonblocking(true).map_err(err)?;
        let bound = listener.local_addr().map_err(err)?;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(err)?;
        self.metrics_tasks
            .push(tokio::spawn(crate::serve::metrics::serve(listener, self.weak_commands.clone())));
        tracing::info!(%bound, "serving metrics");
        Ok(bound)
    }

    fn stats(&mut self) -> NodeStats {
        let (bytes_in, bytes_out) = bandwidth_totals(&self.registry);
        NodeStats {
            connected_peers: self.swarm.connected_peers().count(),
            records: self.view.len(),
            gossip: self.view.counters().clone(),
            bytes_in,
            bytes_out,
            dataplane: self.dataplane.stats(),
            tunnel_drops: self.dataplane.drops(),
            leases: self.leases.stats(),
            relay: self.relayed.counters.snapshot(),
            connections_denied: self.swarm.behaviour().admission.denied(),
            kad_peers: self.kad_peers(),
            kad_diversity_refused: self.diversity.refused(),
            kad_providers_refused: self.providers_refused,
            kad_refreshes: self.swarm.behaviour().kad.refreshed(),
            kad_bootstraps_ended: self.swarm.behaviour().kad.ended(),
            sync_malformed: self.sync_malformed(),
            lookup_malformed: self.find_malformed(),
            ..self.stats.clone()
        }
    }

    /// Dialable addresses of the members in Kademlia's routing table (which holds only
    /// addresses peers announced and that answered), each ending in `/p2p/<id>`: at most
    /// `limit`, connected peers first.
    fn known_addresses(&mut self, limit: usize) -> Vec<libp2p::Multiaddr> {
        let mut out = Vec::new();
        let mut later = Vec::new();
        for bucket in self.swarm.behaviour_mut().kad.kbuckets() {
            for entry in bucket.iter() {
                let peer = *entry.node.key.preimage();
                let connected = entry.status == libp2p::kad::NodeStatus::Connected;
                for addr in entry.node.value.iter() {
                    if let Ok(addr) = addr.clone().with_p2p(peer) {
                        if connected {
                            out.push(addr)
                        } else {
                            later.push(addr)
                        }
                    }
                }
            }
        }
        out.append(&mut later);
        out.truncate(limit);
        out
    }
}
