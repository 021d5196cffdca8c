//! Records (data-flow stage 6): the local record out when the publisher says so, and the
//! view's changes in: a peer's verified tunnel record and coordinate go to the data
//! plane, its arrival and departure to the member set and the node's events.

use std::time::Instant;

use libp2p::PeerId;
use swarm_core::identity::TunnelRecord;
use swarm_core::record::NodeRecord;
use swarm_core::view::ViewEvent;

use super::Driver;
use crate::api::NodeEvent;
use crate::host::wall_clock;

impl Driver {
    /// Publishes what the publisher has due and turns view changes into events.
    pub(super) fn flush_records(&mut self, now: Instant) {
        while let Some(built) = self.publisher.poll_publish(now, wall_clock()) {
            match built {
                Ok((record, tunnel)) => self.publish(now, record, tunnel),
                Err(e) => tracing::error!(error = %e, "cannot sign the local record"),
            }
        }
        let local = *self.swarm.local_peer_id();
        self.publisher.set_swarm_size(self.view.len());
        while let Some(event) = self.view.poll_event() {
            match &event {
                ViewEvent::Inserted { peer } | ViewEvent::Updated { peer, .. } => {
                    if let Some(entry) = self.view.get(peer) {
                        self.placement.upsert(entry, wall_clock());
                    }
                }
                ViewEvent::Expired { peer } => self.placement.remove(peer),
            }
            match event {
                ViewEvent::Inserted { peer } | ViewEvent::Updated { peer, .. } if peer == local => {}
                ViewEvent::Inserted { peer } => {
                    self.sync_news(now);
                    let seq = self.view.get(&peer).map_or(0, |e| e.record.seq);
                    self.tunnel_record(now, peer);
                    self.overlay_claim(peer);
                    self.gateway_routes(peer);
                    self.member_found(peer);
                    self.emit(NodeEvent::RecordUpdated { peer, seq });
                }
                ViewEvent::Updated { peer, seq } => {
                    self.maybe_redial(now, peer);
                    self.plan_path(now, peer);
                    self.tunnel_record(now, peer);
                    self.overlay_claim(peer);
                    self.gateway_routes(peer);
                    self.emit(NodeEvent::RecordUpdated { peer, seq });
                }
                ViewEvent::Expired { peer } => {
                    self.dataplane.remove_peer(&peer);
                    self.planner.forget(&peer);
                    self.overlay_claim(peer);
                    self.gateway_routes(peer);
                    self.emit(NodeEvent::RecordExpired { peer });
                    self.member_maybe_lost(peer);
                }
            }
        }
    }

    fn publish(&mut self, now: Instant, record: NodeRecord, tunnel: TunnelRecord) {
        let wire = match self.publisher.sign(&record, self.config.view.policy.max_size) {
            Ok(wire) => wire,
            Err(e) => {
                tracing::error!(error = %e, "local record does not encode or sign");
                return;
            }
        };
        self.view.insert_local(now, record, tunnel, wire.clone());
        match self.swarm.behaviour_mut().gossipsub.publish(self.topic.clone(), wire.to_vec()) {
            Ok(_) => self.stats.published += 1,
            Err(e) => {
                self.stats.publish_failures += 1;
                tracing::debug!(error = %e, "record not published");
            }
        }
    }

    /// Hands a peer's verified tunnel record and its coordinate (from the view) to the
    /// data plane.
    fn tunnel_record(&mut self, now: Instant, peer: PeerId) {
        if let Some(entry) = self.view.get(&peer) {
            self.dataplane.peer_record(now, peer, &entry.tunnel, entry.coordinate());
        }
    }

    pub(super) fn member_found(&mut self, peer: PeerId) {
        if self.members.insert(peer) {
            self.gate_member(peer, true);
            self.emit(NodeEvent::PeerDiscovered { peer });
        }
    }

    pub(super) fn member_maybe_lost(&mut self, peer: PeerId) {
        if !self.identified.contains(&peer) && self.view.get(&peer).is_none() && self.members.remove(&peer) {
            self.gate_member(peer, false);
            self.emit(NodeEvent::PeerLost { peer });
        }
    }
}
