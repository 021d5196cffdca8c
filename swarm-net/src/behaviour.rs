//! The libp2p behaviours a node runs (data-flow stages 1 and 6): connection limits,
//! identify, Kademlia and gossipsub, plus mDNS behind the `mdns` feature.

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{connection_limits, gossipsub, identify, kad, StreamProtocol};
use swarm_core::record::Namespace;

use crate::config::NodeConfig;

/// The Kademlia protocol all swarms share; namespaces are told apart by provider keys.
pub(crate) const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/swarm/kad/1.0.0");

#[cfg(feature = "mdns")]
pub(crate) type Mdns = libp2p::swarm::behaviour::toggle::Toggle<libp2p::mdns::tokio::Behaviour>;
#[cfg(not(feature = "mdns"))]
pub(crate) type Mdns = libp2p::swarm::dummy::Behaviour;

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) identify: identify::Behaviour,
    pub(crate) kad: kad::Behaviour<kad::store::MemoryStore>,
    pub(crate) gossipsub: gossipsub::Behaviour,
    pub(crate) mdns: Mdns,
}

/// Why the behaviours could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up {what}: {detail}")]
pub struct BehaviourError {
    what: &'static str,
    detail: String,
}

impl Behaviour {
    pub(crate) fn new(key: &Keypair, config: &NodeConfig) -> Result<Self, BehaviourError> {
        let peer_id = key.public().to_peer_id();
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established_incoming(Some(config.max_inbound))
            .with_max_pending_incoming(Some(config.max_inbound))
            .with_max_established_per_peer(Some(2));

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
            .set_periodic_bootstrap_interval(Some(Duration::from_secs(300)));
        let kad = kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);

        let gossipsub = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            gossipsub_config(config)?,
        )
        .map_err(|e| BehaviourError { what: "gossipsub", detail: e.to_owned() })?;

        Ok(Self {
            limits: connection_limits::Behaviour::new(limits),
            identify,
            kad,
            gossipsub,
            mdns: mdns(config, peer_id)?,
        })
    }
}

fn gossipsub_config(config: &NodeConfig) -> Result<gossipsub::Config, BehaviourError> {
    gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        // A record is capped at `max_record_size`; leave room for the RPC framing.
        .max_transmit_size(config.view.policy.max_size + 4096)
        .heartbeat_interval(Duration::from_millis(700))
        .build()
        .map_err(|e| BehaviourError { what: "gossipsub", detail: e.to_string() })
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
