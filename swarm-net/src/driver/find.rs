//! Namespace discovery by look-ups of our own (`crate::find`, the look-up is
//! `swarm_core::diversity::lookup::Lookup`): on the discovery schedule, the node walks
//! towards its namespace's provider key, asking the closest peers it knows for closer
//! ones and for the key's providers (members: dialed as found). At most 3 of one address
//! range are among the walk's closest, so sybils from one range cannot eclipse it, as
//! they can Kademlia's own queries. The first walk, and one every half provider TTL,
//! ends by announcing this node as a provider to the closest it found. We answer such
//! requests from Kademlia's routing table and provider store (the same range cap
//! applies to what we store).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::kad::store::RecordStore;
use libp2p::kad::{self, KBucketDistance, KBucketKey};
use libp2p::request_response::{self, Message, OutboundRequestId};
use libp2p::{Multiaddr, PeerId};
use swarm_core::bounded::{BoundedBytes, BoundedVec};
use swarm_core::diversity::lookup::{FindAnswer, FindRequest, Lookup, LookupLimits, MAX_FOUND};
use swarm_core::ratelimit::{RateLimit, RateLimiter};

use super::Driver;
use crate::admission::direct_ip;
use crate::find::{found_peer, read_addrs, read_found, wire_addrs};

/// A walk still running after this long is dropped (each request times out after 5 s:
/// only a bug would keep one this long).
const WALK_LIMIT: Duration = Duration::from_secs(60);

/// Answers per peer: 10 a second, 40 at once (a walk asks each peer once or twice).
const ANSWERS: RateLimit = RateLimit { per_second: 10, burst: 40, max_sources: 4096 };

/// One walk towards the provider key.
#[derive(Debug)]
struct Walk {
    /// The key looked for, as requests carry it, and as Kademlia measures distance to it
    /// (hashed once per walk, not per answer).
    key: BoundedBytes<{ swarm_core::diversity::lookup::MAX_KEY_LEN }>,
    target: KBucketKey<kad::RecordKey>,
    lookup: Lookup<PeerId, KBucketDistance>,
    /// The addresses answers gave for the candidates (to dial them).
    addrs: HashMap<PeerId, Vec<Multiaddr>>,
    /// Whether it ends by announcing us.
    announce: bool,
    started: Instant,
}

/// The driver's side of look-ups.
#[derive(Debug)]
pub(super) struct Finds {
    walk: Option<Walk>,
    /// Requests waiting for an answer: to whom, and whether for the walk (else an
    /// announcement).
    requests: HashMap<OutboundRequestId, (PeerId, bool)>,
    budget: RateLimiter<PeerId>,
    /// Messages that did not decode (shared with the codec).
    malformed: Arc<AtomicU64>,
}

impl Finds {
    pub(super) fn new(malformed: Arc<AtomicU64>) -> Self {
        Self { walk: None, requests: HashMap::new(), budget: RateLimiter::new(ANSWERS), malformed }
    }
}

impl Driver {
    /// Starts a walk towards the provider key, unless one is under way; with `announce`,
    /// it ends by announcing us (when the discovery schedule says so).
    pub(super) fn find_providers(&mut self, now: Instant, announce: bool) {
        if let Some(walk) = &self.finds.walk {
            if now.saturating_duration_since(walk.started) < WALK_LIMIT {
                return;
            }
            tracing::warn!(
                asked = walk.lookup.asked(),
                "look-up still running after {WALK_LIMIT:?}: dropped"
            );
        }
        let key = kad::RecordKey::new(&self.config.namespace.provider_key());
        let target = KBucketKey::new(key.clone());
        let mut walk = Walk {
            key: BoundedBytes::try_from_slice(key.as_ref()).unwrap_or_default(),
            target: target.clone(),
            lookup: Lookup::new(LookupLimits::default()),
            addrs: HashMap::new(),
            announce,
            started: now,
        };
        let kad = &mut self.swarm.behaviour_mut().kad;
        let closest: Vec<KBucketKey<PeerId>> = kad.get_closest_local_peers(&target).take(MAX_FOUND).collect();
        for peer in closest {
            let addrs = kad_addresses(kad, &peer);
            let id = *peer.preimage();
            // The connection's own address when connected (what the peer really comes
            // from), else the first it is known at.
            let ip = self.peer_ips.get(&id).copied().flatten().or_else(|| addrs.first().and_then(direct_ip));
            walk.lookup.offer(id, peer.distance(&target), ip);
            walk.addrs.insert(id, addrs);
        }
        self.stats.lookups += 1;
        self.finds.walk = Some(walk);
        self.find_step(now);
    }

    /// Asks whom the walk wants asked; ends it (announcing when due) once it is done.
    fn find_step(&mut self, now: Instant) {
        let Some(walk) = self.finds.walk.as_mut() else { return };
        while let Some(peer) = walk.lookup.poll_ask() {
            let request =
                FindRequest { key: walk.key.clone(), announce: false, addrs: BoundedVec::default() };
            let addrs = walk.addrs.get(&peer).cloned().unwrap_or_default();
            let id = self.swarm.behaviour_mut().find.send_request_with_addresses(&peer, request, addrs);
            self.finds.requests.insert(id, (peer, true));
            self.stats.lookup_asked += 1;
        }
        if !walk.lookup.is_done() {
            return;
        }
        let Some(walk) = self.finds.walk.take() else { return };
        let crowded = walk.lookup.crowded();
        self.stats.lookup_crowded += crowded as u64;
        tracing::debug!(asked = walk.lookup.asked(), crowded, "look-up done");
        if !walk.announce {
            return;
        }
        let closest: Vec<PeerId> = walk.lookup.closest().copied().collect();
        if closest.is_empty() {
            return; // nobody to announce to: the next walk will
        }
        let mut ours: Vec<Multiaddr> = self.swarm.external_addresses().cloned().collect();
        for addr in &self.listen_addrs {
            if !ours.contains(addr) {
                ours.push(addr.clone());
            }
        }
        for peer in closest {
            let request = FindRequest { key: walk.key.clone(), announce: true, addrs: wire_addrs(&ours) };
            let addrs = walk.addrs.get(&peer).cloned().unwrap_or_default();
            let id = self.swarm.behaviour_mut().find.send_request_with_addresses(&peer, request, addrs);
            self.finds.requests.insert(id, (peer, false));
            self.stats.lookup_announced += 1;
        }
        self.discovery.on_announced(now);
    }

    pub(super) fn handle_find(&mut self, event: request_response::Event<FindRequest, FindAnswer>) {
        let now = Instant::now();
        match event {
            request_response::Event::Message {
                peer,
                message: Message::Request { request, channel, .. },
                ..
            } => {
                if !self.finds.budget.allow(now, peer) {
                    // Dropping the channel closes the stream: the peer sees a failure.
                    self.stats.lookup_refused += 1;
                    return;
                }
                let answer = self.find_answer(peer, &request, now);
                let _ = self.swarm.behaviour_mut().find.send_response(channel, answer);
            }
            request_response::Event::Message {
                peer,
                message: Message::Response { request_id, response },
                ..
            } => {
                let walked = self.finds.requests.remove(&request_id).is_some_and(|(_, walk)| walk);
                self.find_answered(peer, response, walked);
                self.find_step(now);
            }
            request_response::Event::OutboundFailure { peer, request_id, error, .. } => {
                let walked = self.finds.requests.remove(&request_id).is_some_and(|(_, walk)| walk);
                self.stats.lookup_failed += 1;
                tracing::debug!(%peer, %error, "look-up request failed");
                if let Some(walk) = self.finds.walk.as_mut().filter(|_| walked) {
                    walk.lookup.on_failure(&peer);
                }
                self.find_step(now);
            }
            request_response::Event::InboundFailure { .. } | request_response::Event::ResponseSent { .. } => {
            }
        }
    }

    /// `peer`'s answer: closer peers for the walk, providers dialed as members.
    fn find_answered(&mut self, peer: PeerId, answer: FindAnswer, walked: bool) {
        let local = *self.swarm.local_peer_id();
        for found in answer.providers.iter() {
            let Some((provider, addrs)) = read_found(found) else { continue };
            if provider != local {
                self.stats.lookup_providers += 1;
                self.dial_member_at(provider, addrs);
            }
        }
        let Some(walk) = self.finds.walk.as_mut().filter(|w| walked && w.lookup.is_asking(&peer)) else {
            return;
        };
        let target = &walk.target;
        let mut closer = Vec::with_capacity(answer.closer.len());
        for found in answer.closer.iter() {
            let Some((id, addrs)) = read_found(found) else { continue };
            if id == local {
                continue;
            }
            let ip = addrs.first().and_then(direct_ip);
            closer.push((id, KBucketKey::from(id).distance(target), ip));
            // Bounded: the look-up reads at most k peers of at most `max_asked` answers.
            walk.addrs.entry(id).or_insert(addrs);
        }
        walk.lookup.on_answer(&peer, closer);
    }

    /// What we answer `peer`: the closest peers our routing table holds (not the
    /// asker) and the key's providers we store; stores the asker as a provider when it
    /// announces itself (under the range cap).
    fn find_answer(&mut self, peer: PeerId, request: &FindRequest, now: Instant) -> FindAnswer {
        let key = kad::RecordKey::new(&request.key.to_vec());
        if request.announce {
            let record = kad::ProviderRecord {
                key: key.clone(),
                provider: peer,
                expires: Some(now + self.config.provider_ttl),
                addresses: read_addrs(&request.addrs),
            };
            self.on_add_provider(record);
        }
        let target = KBucketKey::new(key.clone());
        let kad = &mut self.swarm.behaviour_mut().kad;
        let closest: Vec<KBucketKey<PeerId>> =
            kad.get_closest_local_peers(&target).filter(|k| *k.preimage() != peer).take(MAX_FOUND).collect();
        let closer: Vec<_> =
            closest.iter().filter_map(|k| found_peer(k.preimage(), &kad_addresses(kad, k))).collect();
        let providers: Vec<_> = kad
            .store_mut()
            .providers(&key)
            .iter()
            .filter(|r| !r.is_expired(now) && r.provider != peer)
            .filter_map(|r| found_peer(&r.provider, &r.addresses))
            .take(MAX_FOUND)
            .collect();
        self.stats.lookup_answers += 1;
        FindAnswer {
            closer: BoundedVec::try_from_vec(closer).unwrap_or_default(),
            providers: BoundedVec::try_from_vec(providers).unwrap_or_default(),
        }
    }

    /// Look-up messages that did not decode.
    pub(super) fn find_malformed(&self) -> u64 {
        self.finds.malformed.load(Ordering::Relaxed)
    }
}

/// The addresses Kademlia's routing table holds for `peer`.
fn kad_addresses(
    kad: &mut kad::Behaviour<kad::store::MemoryStore>,
    peer: &KBucketKey<PeerId>,
) -> Vec<Multiaddr> {
    let Some(bucket) = kad.kbucket(*peer.preimage()) else { return Vec::new() };
    let addrs = bucket.iter().find(|e| e.node.key == peer).map(|e| e.node.value.iter().cloned().collect());
    addrs.unwrap_or_default()
}
