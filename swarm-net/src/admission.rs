//! Connection admission per source address, as a libp2p behaviour: the rule is
//! swarm-core's [`swarm_core::admission`] (at most 8 inbound connections from one IP
//! address in their upgrade at once, at most 128 established, over TCP and QUIC alike);
//! this reads each connection's address and reports how connections end.
//!
//! `connection_limits` bounds the pending connections of the whole node (256), shared by
//! every source; with the bound per address one host holds at most 8 of those slots, so
//! it takes 32 addresses (a /27) to fill the node, and the upgrade timeout (3 s inbound)
//! frees them soon. Not bounded: loopback (local tests and tools) and relayed connections
//! (they all come from their relay's address).

use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::{ConnectionClosed, ConnectionEstablished, ListenFailure};
use libp2p::swarm::{
    dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};
use swarm_core::admission::{self, Refused};

/// The behaviour: see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    table: admission::Admission<ConnectionId>,
}

impl Admission {
    /// Connections refused so far.
    pub(crate) fn denied(&self) -> u64 {
        self.table.denied()
    }

    fn check(&mut self, result: Result<(), Refused>) -> Result<(), ConnectionDenied> {
        result.map_err(|refused| {
            let denied = self.table.denied();
            if denied.is_power_of_two() {
                tracing::info!(denied, "refusing connections: {refused}");
            }
            ConnectionDenied::new(refused)
        })
    }
}

/// The address a connection counts against: its IP, unless it is loopback or relayed.
fn counted_ip(remote: &Multiaddr) -> Option<IpAddr> {
    direct_ip(remote).and_then(admission::counted_ip)
}

impl NetworkBehaviour for Admission {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let result = self.table.pending(connection_id, counted_ip(remote));
        self.check(result)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _peer: PeerId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let result = self.table.established(connection_id, counted_ip(remote));
        self.check(result)?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionEstablished(ConnectionEstablished { connection_id, .. }) => {
                self.table.upgraded(&connection_id)
            }
            // Also an upgraded connection that a later behaviour refused: never
            // established, so no `ConnectionClosed` will come for it.
            FromSwarm::ListenFailure(ListenFailure { connection_id, .. })
            | FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) => {
                self.table.ended(&connection_id)
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(&mut self, _: PeerId, _: ConnectionId, event: THandlerOutEvent<Self>) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// The IP address an address reaches, unless it goes through a relay (its IP is the
/// relay's).
pub(crate) fn direct_ip(addr: &Multiaddr) -> Option<IpAddr> {
    if addr.iter().any(|p| p == Protocol::P2pCircuit) {
        return None;
    }
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(a) => Some(IpAddr::V4(a)),
        Protocol::Ip6(a) => Some(IpAddr::V6(a)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// The behaviour feeds the table: addresses read from multiaddrs (loopback and
    /// relayed not counted), refusals as `ConnectionDenied`, slots given back.
    #[test]
    fn connections_count_against_their_address_through_the_behaviour() {
        let mut a = Admission::default();
        let limit = a.table.limits().pending_per_ip;
        let (local, from) = (addr("/ip4/10.0.0.1/tcp/4190"), addr("/ip4/192.0.2.7/tcp/5555"));
        for i in 1..=limit {
            assert!(a
                .handle_pending_inbound_connection(ConnectionId::new_unchecked(i), &local, &from)
                .is_ok());
        }
        let denied = a.handle_pending_inbound_connection(ConnectionId::new_unchecked(100), &local, &from);
        let why = denied.err().and_then(|d| d.downcast::<Refused>().ok());
        assert!(matches!(why, Some(Refused::TooManyPending { .. })), "{why:?}");
        assert_eq!(a.denied(), 1);
        for other in [
            "/ip4/192.0.2.8/tcp/1",
            "/ip4/127.0.0.1/tcp/1",
            "/ip6/::ffff:127.0.0.1/tcp/1",
            "/ip4/198.51.100.1/tcp/4001/p2p/12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp/p2p-circuit",
        ] {
            assert!(
                a.handle_pending_inbound_connection(ConnectionId::new_unchecked(200), &local, &addr(other))
                    .is_ok(),
                "{other}"
            );
        }
        assert_eq!(counted_ip(&addr("/ip6/::ffff:192.0.2.7/tcp/1")), Some("192.0.2.7".parse().unwrap()));
        let peer = PeerId::random();
        assert!(a
            .handle_established_inbound_connection(ConnectionId::new_unchecked(1), peer, &local, &from)
            .is_ok());
        assert!(a.handle_pending_inbound_connection(ConnectionId::new_unchecked(101), &local, &from).is_ok());
        assert!(a
            .handle_pending_inbound_connection(ConnectionId::new_unchecked(102), &local, &from)
            .is_err());
        for i in (1..=limit).chain([101, 200]) {
            a.table.ended(&ConnectionId::new_unchecked(i));
        }
        assert!(a.table.is_empty(), "{:?}", a.table);
    }
}
