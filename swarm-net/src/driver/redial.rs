//! Redialing members whose last connection closed (`swarm_core::redial`): a healed
//! partition reconnects within seconds instead of at the next provider look-up. Blocked
//! peers (`Node::block_peer`) stay on the list: their dials are refused locally until
//! they are unblocked, as dials across a partition fail until it heals.

use std::time::Instant;

use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId};

use super::Driver;

impl Driver {
    /// The last connection to `peer` closed: a member is redialed.
    pub(super) fn redial_later(&mut self, now: Instant, peer: PeerId) {
        if !self.members.contains(&peer) {
            return;
        }
        let addresses = self.kad_addresses(&peer);
        self.redials.lost(now, peer, addresses);
    }

    /// Redials the lost members that are due, past the `target_peers` bound (they are
    /// few: `swarm_core::redial::MAX_LOST`).
    pub(super) fn redial_due(&mut self, now: Instant) {
        for (peer, addresses) in self.redials.due(now) {
            if self.swarm.is_connected(&peer) {
                self.redials.connected(&peer);
                continue;
            }
            let opts = DialOpts::peer_id(peer)
                .addresses(addresses)
                .extend_addresses_through_behaviour()
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::trace!(%peer, error = %e, "not redialing member");
            }
        }
    }

    /// Where Kademlia's routing table has `peer`.
    fn kad_addresses(&mut self, peer: &PeerId) -> Vec<Multiaddr> {
        let kad = &mut self.swarm.behaviour_mut().kad;
        let Some(bucket) = kad.kbucket(*peer) else { return Vec::new() };
        let found = bucket
            .iter()
            .find(|e| e.node.key.preimage() == peer)
            .map(|e| e.node.value.iter().cloned().collect())
            .unwrap_or_default();
        found
    }
}
