//! Connection admission per source address: at most [`MAX_PENDING_PER_IP`] inbound
//! libp2p connections from one IP address may be in their upgrade (noise, yamux) at
//! once, over TCP and QUIC alike.
//!
//! `connection_limits` bounds the pending connections of the whole node (256), shared by
//! every source: a single host that opens 256 TCP connections and says nothing holds
//! every slot for the upgrade timeout, and no newcomer gets in. With this bound one
//! address holds at most 8 slots, so it takes 32 addresses (a /27) to fill the node,
//! and the upgrade timeout (3 s inbound) frees them soon.
//!
//! Established inbound connections per address are bounded too, generously
//! ([`MAX_ESTABLISHED_PER_IP`]: a farm of GPU machines behind one NAT shares an address,
//! and is welcome), so one host with many identities cannot take every inbound slot.
//! Not bounded: loopback (local tests and tools) and relayed connections (they all come
//! from their relay's address).

use std::collections::HashMap;
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

/// Inbound connections from one IP address in their upgrade at once.
pub const MAX_PENDING_PER_IP: usize = 8;

/// Established inbound connections from one IP address at once.
pub const MAX_ESTABLISHED_PER_IP: usize = 128;

/// Why an upgraded connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{established} connections from {ip} are already established (at most {MAX_ESTABLISHED_PER_IP})")]
pub struct TooManyEstablished {
    /// The source address.
    pub ip: IpAddr,
    /// Its established inbound connections.
    pub established: usize,
}

/// Why a connection was refused (the [`ConnectionDenied`]'s inner error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{pending} connections from {ip} are already being set up (at most {MAX_PENDING_PER_IP})")]
pub struct TooManyPending {
    /// The source address.
    pub ip: IpAddr,
    /// Its connections in their upgrade.
    pub pending: usize,
}

/// The behaviour: see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    /// Pending inbound connections, and the address each counts against.
    pending: HashMap<ConnectionId, IpAddr>,
    /// Pending inbound connections per address.
    per_ip: HashMap<IpAddr, usize>,
    /// Established inbound connections, and the address each counts against.
    established: HashMap<ConnectionId, IpAddr>,
    /// Established inbound connections per address.
    established_per_ip: HashMap<IpAddr, usize>,
    /// Connections refused so far.
    denied: u64,
}

impl Admission {
    /// Connections refused so far.
    pub(crate) fn denied(&self) -> u64 {
        self.denied
    }

    fn release(&mut self, connection_id: ConnectionId) {
        let Some(ip) = self.pending.remove(&connection_id) else { return };
        decrement(&mut self.per_ip, ip);
    }

    fn closed(&mut self, connection_id: ConnectionId) {
        let Some(ip) = self.established.remove(&connection_id) else { return };
        decrement(&mut self.established_per_ip, ip);
    }

    fn refuse(&mut self, ip: IpAddr, why: &'static str) {
        self.denied += 1;
        if self.denied.is_power_of_two() {
            tracing::info!(%ip, denied = self.denied, "refusing connections: {why}");
        }
    }
}

fn decrement(counts: &mut HashMap<IpAddr, usize>, ip: IpAddr) {
    if let Some(n) = counts.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            counts.remove(&ip);
        }
    }
}

/// The address a connection counts against: its IP, unless it is loopback or relayed.
fn counted_ip(remote: &Multiaddr) -> Option<IpAddr> {
    if remote.iter().any(|p| p == Protocol::P2pCircuit) {
        return None;
    }
    let ip = remote.iter().find_map(|p| match p {
        Protocol::Ip4(a) => Some(IpAddr::V4(a)),
        Protocol::Ip6(a) => Some(IpAddr::V6(a)),
        _ => None,
    })?;
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    (!ip.is_loopback()).then_some(ip)
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
        let Some(ip) = counted_ip(remote) else { return Ok(()) };
        let pending = self.per_ip.get(&ip).copied().unwrap_or(0);
        if pending >= MAX_PENDING_PER_IP {
            self.refuse(ip, "too many pending from one address");
            return Err(ConnectionDenied::new(TooManyPending { ip, pending }));
        }
        *self.per_ip.entry(ip).or_default() += 1;
        self.pending.insert(connection_id, ip);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _peer: PeerId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.release(connection_id);
        if let Some(ip) = counted_ip(remote) {
            let established = self.established_per_ip.get(&ip).copied().unwrap_or(0);
            if established >= MAX_ESTABLISHED_PER_IP {
                self.refuse(ip, "too many established from one address");
                return Err(ConnectionDenied::new(TooManyEstablished { ip, established }));
            }
            *self.established_per_ip.entry(ip).or_default() += 1;
            self.established.insert(connection_id, ip);
        }
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
                self.release(connection_id)
            }
            // Also an upgraded connection that a later behaviour refused: never
            // established, so no `ConnectionClosed` will come for it.
            FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.release(connection_id);
                self.closed(connection_id);
            }
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) => self.closed(connection_id),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn one_address_holds_at_most_its_share_and_gets_it_back() {
        let mut a = Admission::default();
        let (local, from) = (addr("/ip4/10.0.0.1/tcp/4190"), addr("/ip4/192.0.2.7/tcp/5555"));
        for i in 1..=MAX_PENDING_PER_IP {
            assert!(a
                .handle_pending_inbound_connection(ConnectionId::new_unchecked(i), &local, &from)
                .is_ok());
        }
        let denied = a.handle_pending_inbound_connection(ConnectionId::new_unchecked(100), &local, &from);
        assert!(denied.is_err());
        assert_eq!(a.denied(), 1);
        // Another address, loopback, and relayed connections are not held back.
        for other in [
            "/ip4/192.0.2.8/tcp/1",
            "/ip4/127.0.0.1/tcp/1",
            "/ip4/198.51.100.1/tcp/4001/p2p/12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp/p2p-circuit",
        ] {
            assert!(
                a.handle_pending_inbound_connection(ConnectionId::new_unchecked(200), &local, &addr(other))
                    .is_ok(),
                "{other}"
            );
        }
        // One upgrade ends (established): one more fits.
        let peer = PeerId::random();
        assert!(a
            .handle_established_inbound_connection(ConnectionId::new_unchecked(1), peer, &local, &from)
            .is_ok());
        assert!(a.handle_pending_inbound_connection(ConnectionId::new_unchecked(101), &local, &from).is_ok());
        assert!(a
            .handle_pending_inbound_connection(ConnectionId::new_unchecked(102), &local, &from)
            .is_err());
        // Every pending one ends: nothing is left behind.
        for i in (2..=MAX_PENDING_PER_IP).chain([101]) {
            a.release(ConnectionId::new_unchecked(i));
        }
        assert!(!a.per_ip.contains_key(&"192.0.2.7".parse::<IpAddr>().unwrap()), "{:?}", a.per_ip);
        assert_eq!(counted_ip(&addr("/ip6/::ffff:192.0.2.7/tcp/1")), Some("192.0.2.7".parse().unwrap()));
    }

    #[test]
    fn established_connections_per_address_are_bounded_and_given_back() {
        let mut a = Admission::default();
        let (local, from) = (addr("/ip4/10.0.0.1/tcp/4190"), addr("/ip4/192.0.2.7/tcp/5555"));
        let establish = |a: &mut Admission, i: usize, remote: &Multiaddr| {
            let id = ConnectionId::new_unchecked(i);
            a.handle_pending_inbound_connection(id, &local, remote)?;
            a.handle_established_inbound_connection(id, PeerId::random(), &local, remote).map(drop)
        };
        for i in 0..MAX_ESTABLISHED_PER_IP {
            assert!(establish(&mut a, i, &from).is_ok(), "{i}");
        }
        assert!(establish(&mut a, 1000, &from).is_err(), "one more from the same address");
        assert!(establish(&mut a, 1001, &addr("/ip4/192.0.2.8/tcp/1")).is_ok(), "another address");
        assert!(establish(&mut a, 1002, &addr("/ip4/127.0.0.1/tcp/1")).is_ok(), "loopback");
        // One closes: one more fits; every one closes: nothing is left behind.
        a.closed(ConnectionId::new_unchecked(0));
        assert!(establish(&mut a, 2000, &from).is_ok());
        for i in (1..MAX_ESTABLISHED_PER_IP).chain([2000, 1001]) {
            a.closed(ConnectionId::new_unchecked(i));
        }
        assert!(a.established.is_empty() && a.established_per_ip.is_empty(), "{:?}", a.established_per_ip);
        assert!(a.pending.is_empty(), "upgrades ended");
    }
}
