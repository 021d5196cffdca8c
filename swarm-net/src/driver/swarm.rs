//! libp2p's events (data-flow stages 1 and 6): gossip into the view, identify and
//! Kademlia into discovery, connections into the member set; and the tunnel endpoints
//! the local record announces, from the listen addresses.

use std::net::SocketAddr;
use std::time::Instant;

use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::SwarmEvent;
use libp2p::{identify, kad, PeerId};
use swarm_core::bounded::BoundedVec;
use swarm_core::identity::MAX_UDP_ENDPOINTS;
use swarm_core::view::Ingest;

use super::Driver;
use crate::api::NodeEvent;
use crate::behaviour::{BehaviourEvent, KAD_PROTOCOL};
use crate::host::{multiaddr_ip, wall_clock};

impl Driver {
    pub(super) fn handle_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(e)) => self.handle_gossip(e),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(e)) => self.handle_identify(e),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(libp2p::ping::Event {
                peer,
                connection,
                result: Err(error @ (libp2p::ping::Failure::Timeout | libp2p::ping::Failure::Other { .. })),
            })) => {
                // Dead (or too slow to matter): closed, so requests and discovery use a
                // fresh connection rather than wait out TCP's backoff on this one. A peer
                // that does not speak ping (`Unsupported`) keeps its connection.
                tracing::debug!(%peer, %error, "ping failed: closing the connection");
                self.stats.dead_connections += 1;
                self.swarm.close_connection(connection);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(e)) => self.handle_kad(e),
            SwarmEvent::Behaviour(BehaviourEvent::Lease(e)) => self.handle_lease(e),
            SwarmEvent::Behaviour(BehaviourEvent::Sync(e)) => self.handle_sync(e),
            SwarmEvent::Behaviour(BehaviourEvent::Find(e)) => self.handle_find(e),
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(e)) => self.on_relay_client(e),
            SwarmEvent::Behaviour(BehaviourEvent::Relay(e)) => self.on_relay_server(e),
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(e)) => self.on_dcutr(e),
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(e)) => self.on_autonat(e),
            SwarmEvent::Behaviour(BehaviourEvent::Punch(e)) => self.handle_punch(e),
            SwarmEvent::ListenerClosed { listener_id, reason, addresses } => {
                if let Err(e) = reason {
                    tracing::debug!(?addresses, error = %e, "listener closed");
                }
                self.relay_listener_closed(Instant::now(), listener_id);
            }
            #[cfg(feature = "mdns")]
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(libp2p::mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    self.kad_insert(peer, &[addr], None);
                    self.dial_member(peer);
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                let full = address.clone().with(Protocol::P2p(*self.swarm.local_peer_id()));
                tracing::info!(addr = %full, "listening");
                if !self.listen_addrs.contains(&full) {
                    self.listen_addrs.push(full.clone());
                }
                self.update_tunnel_endpoints();
                self.emit(NodeEvent::Listening { addr: full });
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                let full = address.with(Protocol::P2p(*self.swarm.local_peer_id()));
                self.listen_addrs.retain(|a| *a != full);
                self.update_tunnel_endpoints();
            }
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. } => {
                self.stats.connections_opened += 1;
                self.dialing.remove(&peer_id);
                self.bootstrap_dials.remove(&connection_id);
                self.connection_opened(peer_id, connection_id, &endpoint);
                self.redials.connected(&peer_id);
            }
            SwarmEvent::ConnectionClosed { peer_id, connection_id, num_established, .. } => {
                self.connection_gone(connection_id);
                if num_established == 0 {
                    self.redial_later(Instant::now(), peer_id);
                    self.peer_gone(&peer_id);
                    self.identified.remove(&peer_id);
                    self.sync_gone(Instant::now(), &peer_id);
                    self.member_maybe_lost(peer_id);
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, connection_id } => {
                self.stats.dials_failed += 1;
                match self.bootstrap_dials.remove(&connection_id) {
                    Some(addr) => {
                        let error = super::start::error_chain(&error);
                        tracing::warn!(%addr, %error, "bootstrap peer unreachable");
                    }
                    None => tracing::debug!(?peer_id, %error, "dial failed"),
                }
                if let Some(peer) = peer_id {
                    self.dialing.remove(&peer);
                }
            }
            _ => {}
        }
    }

    fn handle_gossip(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message { propagation_source, message_id, message } => {
                let acceptance = if message.topic != self.topic.hash() {
                    MessageAcceptance::Reject
                } else {
                    let now = Instant::now();
                    match self.view.handle_record(now, wall_clock(), &message.data) {
                        Ok(Ingest::Inserted | Ingest::Updated) => MessageAcceptance::Accept,
                        Ok(Ingest::Stale | Ingest::Full) => MessageAcceptance::Ignore,
                        Err(e) => {
                            tracing::debug!(from = %propagation_source, error = %e, "record rejected");
                            self.emit(NodeEvent::RecordRejected {
                                from: propagation_source,
                                reason: e.reason(),
                            });
                            MessageAcceptance::Reject
                        }
                    }
                };
                self.swarm.behaviour_mut().gossipsub.report_message_validation_result(
                    &message_id,
                    &propagation_source,
                    acceptance,
                );
            }
            gossipsub::Event::SlowPeer { failed_messages, .. } => {
                let dropped = failed_messages.priority + failed_messages.non_priority;
                self.stats.gossip_send_dropped += dropped as u64;
            }
            gossipsub::Event::Subscribed { peer_id, topic } if topic == self.topic.hash() => {
                tracing::trace!(peer = %peer_id, "peer subscribed to our records");
                self.publisher.on_subscriber(self.stats.published);
            }
            _ => {}
        }
    }

    fn handle_identify(&mut self, event: identify::Event) {
        let identify::Event::Received { peer_id, info, connection_id } = event else { return };
        if info.protocols.contains(&KAD_PROTOCOL) {
            self.kad_insert(peer_id, &info.listen_addrs, Some(connection_id));
        }
        if info.protocol_version == self.config.namespace.identify_protocol() {
            self.identified.insert(peer_id);
            self.member_found(peer_id);
            self.sync_on_connect(Instant::now(), peer_id);
            self.relay_identified(peer_id, &info);
        }
    }

    fn handle_kad(&mut self, event: kad::Event) {
        self.on_kad_routing(&event);
        if let kad::Event::RoutingUpdated { .. } = event {
            self.discovery.on_routing_peer(Instant::now());
        }
    }

    /// Dials a namespace member we are not connected to, up to `target_peers`: at the
    /// addresses the behaviours know, and through the relays we know when its record
    /// says it is behind a NAT (a relayed connection that DCUtR may then upgrade).
    pub(super) fn dial_member(&mut self, peer: PeerId) {
        self.dial_member_at(peer, Vec::new());
    }

    /// [`Self::dial_member`], at `addrs` too (where a look-up says it provides).
    pub(super) fn dial_member_at(&mut self, peer: PeerId, addrs: Vec<libp2p::Multiaddr>) {
        if peer == *self.swarm.local_peer_id() || self.swarm.is_connected(&peer) {
            return;
        }
        if self.swarm.connected_peers().count() + self.dialing.len() >= self.config.target_peers {
            return;
        }
        let natted = self.view.get(&peer).is_some_and(|e| {
            matches!(e.tunnel.nat, swarm_core::nat::NatKind::Easy | swarm_core::nat::NatKind::Hard)
        });
        let mut addrs = addrs;
        if natted {
            addrs.extend(self.circuits_to(peer));
        }
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .extend_addresses_through_behaviour()
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.dialing.insert(peer);
            }
            Err(e) => tracing::trace!(%peer, error = %e, "not dialing member"),
        }
    }

    /// The tunnel record lists each tunnel socket at every IP of its family we listen
    /// on (or at its own address, when bound to one), and the public mapping of a NAT
    /// in front of it, as the reflectors see it.
    pub(super) fn update_tunnel_endpoints(&mut self) {
        if !self.config.tunnel_endpoints.is_empty() {
            self.dataplane.set_own_endpoints(&self.config.tunnel_endpoints);
            if let Ok(endpoints) = BoundedVec::try_from_vec(self.config.tunnel_endpoints.clone()) {
                self.publisher.set_udp_endpoints(endpoints);
            }
            return;
        }
        let mut endpoints = Vec::new();
        for bound in self.dataplane.local_addrs() {
            if bound.ip().is_unspecified() {
                endpoints.extend(
                    self.listen_addrs
                        .iter()
                        .filter(|a| !super::relays::is_circuit(a))
                        .filter_map(multiaddr_ip)
                        .filter(|ip| !ip.is_unspecified() && ip.is_ipv6() == bound.is_ipv6())
                        .map(|ip| SocketAddr::new(ip, bound.port())),
                );
            } else {
                endpoints.push(bound);
            }
        }
        endpoints.sort();
        endpoints.dedup();
        self.dataplane.set_own_endpoints(&endpoints);
        if let Some(mapped) = self.reflexive.mapped.filter(|m| !endpoints.contains(m)) {
            // First, so a peer behind another NAT tries it before our private addresses.
            endpoints.insert(0, mapped);
        }
        endpoints.truncate(MAX_UDP_ENDPOINTS);
        if let Ok(endpoints) = BoundedVec::try_from_vec(endpoints) {
            self.publisher.set_udp_endpoints(endpoints);
        }
    }
}
