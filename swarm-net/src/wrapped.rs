//! Behaviours that wrap one of libp2p's and change only what it is told or what it
//! does on its own (`autonat_client`, `kademlia`): the connection methods pass through.

/// The `NetworkBehaviour` methods that set up connections and carry their handlers'
/// events, passed to the wrapped behaviour in `$field`. The wrapper writes
/// `on_swarm_event` and `poll` itself.
macro_rules! pass_connections_to {
    ($field:tt) => {
        fn handle_pending_inbound_connection(
            &mut self,
            connection_id: ::libp2p::swarm::ConnectionId,
            local_addr: &::libp2p::Multiaddr,
            remote_addr: &::libp2p::Multiaddr,
        ) -> Result<(), ::libp2p::swarm::ConnectionDenied> {
            self.$field.handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
        }

        fn handle_established_inbound_connection(
            &mut self,
            connection_id: ::libp2p::swarm::ConnectionId,
            peer: ::libp2p::PeerId,
            local_addr: &::libp2p::Multiaddr,
            remote_addr: &::libp2p::Multiaddr,
        ) -> Result<::libp2p::swarm::THandler<Self>, ::libp2p::swarm::ConnectionDenied> {
            self.$field.handle_established_inbound_connection(connection_id, peer, local_addr, remote_addr)
        }

        fn handle_pending_outbound_connection(
            &mut self,
            connection_id: ::libp2p::swarm::ConnectionId,
            maybe_peer: Option<::libp2p::PeerId>,
            addresses: &[::libp2p::Multiaddr],
            effective_role: ::libp2p::core::Endpoint,
        ) -> Result<Vec<::libp2p::Multiaddr>, ::libp2p::swarm::ConnectionDenied> {
            self.$field.handle_pending_outbound_connection(
                connection_id,
                maybe_peer,
                addresses,
                effective_role,
            )
        }

        fn handle_established_outbound_connection(
            &mut self,
            connection_id: ::libp2p::swarm::ConnectionId,
            peer: ::libp2p::PeerId,
            addr: &::libp2p::Multiaddr,
            role_override: ::libp2p::core::Endpoint,
            port_use: ::libp2p::core::transport::PortUse,
        ) -> Result<::libp2p::swarm::THandler<Self>, ::libp2p::swarm::ConnectionDenied> {
            self.$field.handle_established_outbound_connection(
                connection_id,
                peer,
                addr,
                role_override,
                port_use,
            )
        }

        fn on_connection_handler_event(
            &mut self,
            peer_id: ::libp2p::PeerId,
            connection_id: ::libp2p::swarm::ConnectionId,
            event: ::libp2p::swarm::THandlerOutEvent<Self>,
        ) {
            self.$field.on_connection_handler_event(peer_id, connection_id, event)
        }
    };
}

pub(crate) use pass_connections_to;
