//! The libp2p behaviours a node runs (data-flow stages 1 and 6): connection limits,
//! identify, Kademlia and gossipsub, plus mDNS behind the `mdns` feature; and for NATs
//! (issue 13), the circuit relay v2 client on every node, the relay server and the
//! AutoNAT v2 server where the node is public, the AutoNAT v2 client and DCUtR.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    allow_block_list, autonat, connection_limits, dcutr, gossipsub, identify, kad, ping, relay, PeerId,
    StreamProtocol,
};
use swarm_core::record::Namespace;

use crate::config::{NodeConfig, RelayMode};

/// Who the relay serves: members of the node's namespace (known by identify or by their
/// record), and only while the node relays (always with [`RelayMode::On`]; with
/// [`RelayMode::Auto`] once its reflectors say its socket is public). Shared with the
/// driver, which keeps it current.
#[derive(Debug, Default)]
pub(crate) struct RelayGate {
    pub(crate) members: RwLock<HashSet<PeerId>>,
    pub(crate) open: AtomicBool,
    /// Whether this node carries members' detours (relay mode `auto` or `on`).
    pub(crate) detours: AtomicBool,
}

impl RelayGate {
    /// Whether the relay serves `peer` now.
    pub(crate) fn admits(&self, peer: &PeerId) -> bool {
        self.open.load(Ordering::Relaxed) && self.is_member(peer)
    }

    /// Whether `peer` is a member of the namespace.
    pub(crate) fn is_member(&self, peer: &PeerId) -> bool {
        self.members.read().map(|m| m.contains(peer)).unwrap_or(false)
    }
}

/// The Kademlia protocol all swarms share; namespaces are told apart by provider keys.
pub(crate) const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/swarm/kad/1.0.0");

#[cfg(feature = "mdns")]
pub(crate) type Mdns = libp2p::swarm::behaviour::toggle::Toggle<libp2p::mdns::tokio::Behaviour>;
#[cfg(not(feature = "mdns"))]
pub(crate) type Mdns = libp2p::swarm::dummy::Behaviour;

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    /// Peers the operator cut off (`Node::block_peer`): their connections are closed
    /// and refused, both ways. First of all: a blocked peer costs nothing more.
    pub(crate) blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    /// First: a connection it refuses takes no slot of `limits`.
    pub(crate) admission: crate::admission::Admission,
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) identify: identify::Behaviour,
    /// A ping every 5 s on every connection; one unanswered for 5 s closes the
    /// connection, so a dead one (a partition, a peer gone without a FIN) is replaced
    /// within seconds rather than after TCP's retransmission backoff.
    pub(crate) ping: ping::Behaviour,
    pub(crate) kad: crate::kademlia::Kademlia,
    pub(crate) gossipsub: gossipsub::Behaviour,
    pub(crate) mdns: Mdns,
    pub(crate) lease: crate::lease::LeaseBehaviour,
    /// View sync with each member on connecting (`crate::sync`).
    pub(crate) sync: crate::sync::SyncBehaviour,
    /// Look-ups for the namespace's providers (`crate::find`).
    pub(crate) find: crate::find::FindBehaviour,
    pub(crate) relay_client: relay::client::Behaviour,
    pub(crate) relay: Toggle<relay::Behaviour>,
    pub(crate) dcutr: dcutr::Behaviour,
    pub(crate) autonat: crate::autonat_client::AutonatClient,
    pub(crate) autonat_server: Toggle<autonat::v2::server::Behaviour>,
    pub(crate) punch: crate::punch::PunchBehaviour,
    /// Raw streams: relayed tunnels (`crate::tunnel_relay`).
    pub(crate) streams: libp2p_stream::Behaviour,
}

/// How often each connection is pinged (a member of a large swarm holds many
/// connections: pings are cheap, not free).
pub(crate) const PING_INTERVAL: Duration = Duration::from_secs(5);
/// A ping unanswered this long closes its connection (not shorter: a node busy with a
/// flood, or 32 nodes sharing two cores in a test, must not lose healthy connections).
pub(crate) const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// The codecs of the request-response protocols (each counts what did not decode).
#[derive(Clone)]
pub(crate) struct Codecs {
    pub(crate) lease: crate::lease::LeaseCodec,
    pub(crate) sync: crate::sync::SyncCodec,
    pub(crate) find: crate::find::FindCodec,
}

impl Codecs {
    pub(crate) fn new() -> Self {
        Self {
            lease: crate::lease::LeaseCodec::default(),
            sync: crate::sync::codec(),
            find: crate::find::codec(),
        }
    }
}

/// Why the behaviours could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up {what}: {detail}")]
pub struct BehaviourError {
    what: &'static str,
    detail: String,
}

impl Behaviour {
    pub(crate) fn new(
        key: &Keypair,
        config: &NodeConfig,
        codecs: Codecs,
        relay_client: relay::client::Behaviour,
        gate: Arc<RelayGate>,
    ) -> Result<Self, BehaviourError> {
        let peer_id = key.public().to_peer_id();
        // Four per peer: a relayed and a direct connection overlap while DCUtR upgrades,
        // and both sides may dial at once.
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established_incoming(Some(config.max_inbound))
            .with_max_pending_incoming(Some(config.max_inbound))
            .with_max_established_per_peer(Some(4));
        let serve = config.relay != RelayMode::Off;
        gate.open.store(config.relay == RelayMode::On, Ordering::Relaxed);
        gate.detours.store(config.relay != RelayMode::Off, Ordering::Relaxed);

        let identify = identify::Behaviour::new(
            identify::Config::new(config.namespace.identify_protocol(), key.public())
                .with_agent_version(format!("swarm/{}", env!("CARGO_PKG_VERSION")))
                .with_push_listen_addr_updates(true),
        );

        let mut kad_config = kad::Config::new(KAD_PROTOCOL);
        kad_config
            .set_query_timeout(Duration::from_secs(30))
            .set_provider_record_ttl(Some(config.provider_ttl))
            .set_provider_publication_interval(Some(config.provider_ttl / 2))
            // Refreshes are the node's (`crate::kademlia`, `swarm_core::discovery`).
            .set_periodic_bootstrap_interval(None)
            // Every insertion goes through the driver's diversity rule (`driver::routing`).
            .set_kbucket_inserts(kad::BucketInserts::Manual)
            // Provider records are stored by the driver, at most 2 per address range and
            // key (`swarm_core::diversity::PROVIDERS_PER_RANGE`).
            .set_record_filtering(kad::StoreInserts::FilterBoth);
        let kad = crate::kademlia::Kademlia::new(kad::Behaviour::with_config(
            peer_id,
            kad::store::MemoryStore::new(peer_id),
            kad_config,
        ));

        // Records carry their author's signature (`SignedNodeRecord`): gossipsub's own,
        // per message and checked on every copy, would add nothing but a second check.
        let mut gossipsub =
            gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, gossipsub_config(config)?)
                .map_err(|e| BehaviourError { what: "gossipsub", detail: e.to_owned() })?;
        let (params, thresholds) = gossip_scoring();
        gossipsub
            .with_peer_score(params, thresholds)
            .map_err(|detail| BehaviourError { what: "gossipsub peer scoring", detail })?;

        Ok(Self {
            blocked: allow_block_list::Behaviour::default(),
            admission: crate::admission::Admission::default(),
            limits: connection_limits::Behaviour::new(limits),
            identify,
            ping: ping::Behaviour::new(
                ping::Config::new().with_interval(PING_INTERVAL).with_timeout(PING_TIMEOUT),
            ),
            kad,
            gossipsub,
            mdns: mdns(config, peer_id)?,
            lease: crate::lease::behaviour(codecs.lease),
            sync: crate::sync::behaviour(&config.namespace, codecs.sync),
            find: crate::find::behaviour(codecs.find),
            relay_client,
            relay: serve.then(|| relay_server(peer_id, gate)).into(),
            dcutr: dcutr::Behaviour::new(peer_id),
            autonat: crate::autonat_client::AutonatClient::default(),
            autonat_server: serve.then(autonat::v2::server::Behaviour::default).into(),
            punch: crate::punch::behaviour(),
            streams: libp2p_stream::Behaviour::new(),
        })
    }
}

/// The relay server, advertising the hop protocol from the start (who it serves is the
/// gate's decision, and only public members are used as relays: `driver/relays.rs`).
///
/// Fixed rather than automatic because libp2p-relay 0.22, on each automatic status
/// change (an external address confirmed or expired), notifies every connection's
/// handler, relayed ones included, whose handler is a dummy: `unreachable!` in
/// `Either::on_behaviour_event` kills that connection's task (seen in the NAT lab: a
/// home's direct connection to the other home died as its circuit address was
/// confirmed). Set before any connection exists, the status never changes.
fn relay_server(peer_id: PeerId, gate: Arc<RelayGate>) -> relay::Behaviour {
    let mut server = relay::Behaviour::new(peer_id, relay_config(gate));
    server.set_status(Some(relay::Status::Enable));
    server
}

/// Circuit relay v2 sized for a swarm's control plane: reservations and circuits only
/// for members of the namespace, circuits long and large enough for gossip, Kademlia
/// and leases (bulk data never crosses the libp2p relay: tunnels have their own path).
fn relay_config(gate: Arc<RelayGate>) -> relay::Config {
    let member = move |peer: PeerId, _: &libp2p::Multiaddr, _: std::time::Instant| gate.admits(&peer);
    let mut config = relay::Config {
        max_reservations: 512,
        max_reservations_per_peer: 2,
        max_circuits: 1024,
        max_circuits_per_peer: 16,
        max_circuit_duration: Duration::from_secs(3600),
        max_circuit_bytes: 256 << 20,
        ..relay::Config::default()
    };
    config.reservation_rate_limiters.push(Box::new(member.clone()));
    config.circuit_src_rate_limiters.push(Box::new(member));
    config
}

fn gossipsub_config(config: &NodeConfig) -> Result<gossipsub::Config, BehaviourError> {
    gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        .validate_messages()
        // A record is capped at `max_record_size`; leave room for the RPC framing.
        .max_transmit_size(config.view.policy.max_size + 4096)
        .heartbeat_interval(Duration::from_secs(1))
        // Records go to the mesh, not to every connected peer: each node then hears a
        // record about D times instead of once per connection of its publisher.
        .flood_publish(false)
        // A smaller mesh than libp2p's default (6, up to 12): every node forwards each
        // record to each mesh peer, so the mesh size is the duplication factor. Records
        // are republished every heartbeat, and IHAVE/IWANT repairs the rare miss.
        .mesh_n(4)
        .mesh_n_low(3)
        .mesh_n_high(6)
        .mesh_outbound_min(2)
        .gossip_lazy(4)
        // Every record is worth an IDONTWANT: it tells mesh peers not to send copies.
        .idontwant_message_size_threshold(128)
        .message_id_fn(compact_message_id)
        .build()
        .map_err(|e| BehaviourError { what: "gossipsub", detail: e.to_string() })
}

/// Peers from one IP address beyond which gossipsub's score falls.
pub(crate) const GOSSIP_PEERS_PER_IP: f64 = 16.0;

/// Gossipsub peer scoring for its IP-colocation factor: the score of every peer sharing
/// an IP address with more than [`GOSSIP_PEERS_PER_IP`] others falls with the square of
/// the surplus (weight -0.5): 20 peers behind one NAT score -8 (out of the mesh, still
/// sent gossip), 30 score -98 (graylisted: ignored), a sybil farm of thousands on one
/// address far below. Loopback is exempt (a mesh of local nodes, the tests). Gossipsub's
/// other penalties (broken IWANT promises, slow peers) are off: a node busy with a join
/// burst would lose its mesh for them. Topic scores are not used: invalid records are
/// already penalised through validation.
fn gossip_scoring() -> (gossipsub::PeerScoreParams, gossipsub::PeerScoreThresholds) {
    let params = gossipsub::PeerScoreParams {
        ip_colocation_factor_weight: -0.5,
        ip_colocation_factor_threshold: GOSSIP_PEERS_PER_IP,
        ip_colocation_factor_whitelist: [
            std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST),
            std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ]
        .into_iter()
        .collect(),
        behaviour_penalty_weight: 0.0,
        slow_peer_weight: 0.0,
        ..Default::default()
    };
    (params, gossipsub::PeerScoreThresholds::default())
}

/// A record's content id (`swarm_core::record::signed::content_id`, 20 bytes), which
/// every IHAVE, IWANT and IDONTWANT repeats. Over the content: gossip messages carry no
/// source or sequence number, and a forged message must not shadow a genuine one by
/// sharing its id.
fn compact_message_id(message: &gossipsub::Message) -> gossipsub::MessageId {
    gossipsub::MessageId::new(&swarm_core::record::signed::content_id(&message.data))
}

#[cfg(feature = "mdns")]
fn mdns(config: &NodeConfig, peer_id: libp2p::PeerId) -> Result<Mdns, BehaviourError> {
    if !config.mdns {
        return Ok(None.into());
    }
    libp2p::mdns::tokio::Behaviour::new(libp2p::mdns::Config::default(), peer_id)
        .map(|m| Some(m).into())
        .map_err(|e| BehaviourError { what: "mDNS", detail: e.to_string() })
}

#[cfg(not(feature = "mdns"))]
fn mdns(_: &NodeConfig, _: libp2p::PeerId) -> Result<Mdns, BehaviourError> {
    Ok(libp2p::swarm::dummy::Behaviour)
}

/// The topic carrying `namespace`'s records.
pub(crate) fn records_topic(namespace: &Namespace) -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(namespace.records_topic())
}

#[cfg(test)]
mod tests {
    #[test]
    fn gossip_scoring_is_valid_and_spares_loopback() {
        let (params, thresholds) = super::gossip_scoring();
        params.validate().unwrap();
        thresholds.validate().unwrap();
        assert!(params.ip_colocation_factor_whitelist.contains(&std::net::Ipv4Addr::LOCALHOST.into()));
        // 30 peers on one address (14 over the threshold) are graylisted; 20 only leave
        // the mesh.
        let penalty =
            |peers: f64| params.ip_colocation_factor_weight * (peers - super::GOSSIP_PEERS_PER_IP).powi(2);
        assert!(penalty(30.0) < thresholds.graylist_threshold);
        assert!(penalty(20.0) > thresholds.gossip_threshold && penalty(20.0) < 0.0);
    }
}
