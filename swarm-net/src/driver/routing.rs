//! Kademlia's routing table under swarm-core's diversity rule
//! ([`swarm_core::diversity`]): Kademlia inserts nothing by itself
//! (`BucketInserts::Manual`); every insertion comes through [`Driver::kad_insert`], which
//! asks the rule first, with the address range the peer's connection comes from. One
//! address range then holds at most 2 places of a bucket and 3 of the table, however
//! many identities it makes.

use std::time::{Duration, Instant};

use libp2p::core::ConnectedPoint;
use libp2p::kad::store::RecordStore;
use libp2p::kad::{self, KBucketKey, RoutingUpdate};
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};

use swarm_core::diversity::{provider_admitted, Range};

use super::Driver;
use crate::admission::direct_ip;

/// The diversity table is checked against Kademlia's own at most this often (only when a
/// peer is refused: a place held by a peer Kademlia dropped without an event is given
/// back then).
const RECONCILE_EVERY: Duration = Duration::from_secs(1);

impl Driver {
    /// Remembers where a connection comes from (the range its peer counts against).
    pub(super) fn connection_opened(&mut self, peer: PeerId, id: ConnectionId, endpoint: &ConnectedPoint) {
        let ip = direct_ip(endpoint.get_remote_address());
        self.connection_ips.insert(id, ip);
        self.peer_ips.insert(peer, ip);
    }

    /// The peer has no connection left.
    pub(super) fn peer_gone(&mut self, peer: &PeerId) {
        self.peer_ips.remove(peer);
    }

    pub(super) fn connection_gone(&mut self, id: ConnectionId) {
        self.connection_ips.remove(&id);
    }

    /// Puts `peer`'s `addrs` into Kademlia's routing table if the diversity rule lets it
    /// into its bucket. The range is that of the connection `via` (the address the peer
    /// really comes from) when there is one, else of the first address. Whether it went
    /// in.
    pub(super) fn kad_insert(
        &mut self,
        peer: PeerId,
        addrs: &[Multiaddr],
        via: Option<ConnectionId>,
    ) -> bool {
        let local = *self.swarm.local_peer_id();
        let Some(bucket) = KBucketKey::from(peer).distance(&KBucketKey::from(local)).ilog2() else {
            return false;
        };
        let ip = match via.and_then(|c| self.connection_ips.get(&c)) {
            Some(ip) => *ip,
            None => addrs.first().and_then(direct_ip),
        };
        if let Some(ip) = ip {
            let bucket = bucket as u16;
            let mut verdict = self.diversity.admit(peer, bucket, ip);
            if verdict.is_err() && self.reconcile_diversity(Instant::now()) {
                verdict = self.diversity.admit(peer, bucket, ip);
            }
            if let Err(crowded) = verdict {
                if self.diversity.refused().is_power_of_two() {
                    tracing::info!(%peer, %ip, refused = self.diversity.refused(), "routing table: {crowded}");
                }
                return false;
            }
        }
        let mut inserted = false;
        for addr in addrs {
            match self.swarm.behaviour_mut().kad.add_address(&peer, addr.clone()) {
                RoutingUpdate::Success | RoutingUpdate::Pending => inserted = true,
                RoutingUpdate::Failed => {}
            }
        }
        if !inserted {
            self.diversity.removed(&peer);
        }
        inserted
    }

    /// Kademlia evicted `peer` (its place went to another).
    pub(super) fn kad_evicted(&mut self, peer: &PeerId) {
        self.diversity.removed(peer);
    }

    /// Gives back the places of peers no longer in Kademlia's table, at most once per
    /// [`RECONCILE_EVERY`]; whether it looked.
    fn reconcile_diversity(&mut self, now: Instant) -> bool {
        if self.diversity_reconciled.is_some_and(|t| now.saturating_duration_since(t) < RECONCILE_EVERY) {
            return false;
        }
        self.diversity_reconciled = Some(now);
        let mut present = std::collections::HashSet::new();
        for bucket in self.swarm.behaviour_mut().kad.kbuckets() {
            for entry in bucket.iter() {
                present.insert(*entry.node.key.preimage());
            }
        }
        self.diversity.retain(|p| present.contains(p));
        true
    }

    /// Peers in Kademlia's routing table.
    pub(super) fn kad_peers(&mut self) -> usize {
        self.swarm.behaviour_mut().kad.kbuckets().map(|b| b.num_entries()).sum()
    }

    /// A peer asks this node to store its provider record (Kademlia hands them over:
    /// `StoreInserts::FilterBoth`): stored unless the key already holds
    /// [`PROVIDERS_PER_RANGE`](swarm_core::diversity::PROVIDERS_PER_RANGE) providers from the range the peer is connected from.
    /// (Value records are not used by swarm, and are not stored.)
    pub(super) fn on_add_provider(&mut self, record: kad::ProviderRecord) {
        let range = self.peer_ips.get(&record.provider).copied().flatten().and_then(Range::of);
        let held = self.swarm.behaviour_mut().kad.store_mut().providers(&record.key);
        let ranges = self.provider_ranges.entry(record.key.clone()).or_default();
        ranges.retain(|p, _| held.iter().any(|h| h.provider == *p));
        let others = held.iter().filter(|h| h.provider != record.provider);
        if !provider_admitted(others.map(|h| ranges.get(&h.provider).copied().flatten()), range) {
            self.providers_refused += 1;
            if self.providers_refused.is_power_of_two() {
                tracing::info!(provider = %record.provider, ?range, refused = self.providers_refused, "provider record refused: its range holds its share");
            }
            return;
        }
        let provider = record.provider;
        match self.swarm.behaviour_mut().kad.store_mut().add_provider(record) {
            Ok(()) => {
                ranges.insert(provider, range);
            }
            Err(e) => tracing::debug!(%provider, error = %e, "provider record not stored"),
        }
    }

    /// A Kademlia event about the table itself, or a provider record to store.
    pub(super) fn on_kad_routing(&mut self, event: &kad::Event) {
        match event {
            kad::Event::InboundRequest { request: kad::InboundRequest::AddProvider { record: Some(r) } } => {
                self.on_add_provider(r.clone())
            }
            kad::Event::RoutingUpdated { old_peer: Some(old), .. } => self.kad_evicted(old),
            kad::Event::RoutablePeer { peer, address }
            | kad::Event::PendingRoutablePeer { peer, address } => {
                let (peer, addrs) = (*peer, [address.clone()]);
                self.kad_insert(peer, &addrs, None);
            }
            _ => {}
        }
    }
}
