//! The AutoNAT v2 client, shown only the address candidates a server can dial back.
//!
//! AutoNAT v2 makes a client pay for each probe of an address other than the one the
//! server observes on the probing connection: the server asks for 30 to 100 kB of
//! "dial data" first (amplification protection). Identify reports the observed address
//! of every connection as a candidate, relayed ones included, so a node behind a NAT
//! also probed its `/p2p-circuit` addresses (and bare `/p2p/<id>` ones) at up to 100 kB
//! each, to a public node that can never dial them back: that was the 30-410 kB of
//! control traffic seen through the NAT lab's relay host during a direct transfer.
//! Such candidates are dropped here; every other event passes through unchanged.

use std::task::{Context, Poll};

use libp2p::multiaddr::Protocol;
use libp2p::swarm::{FromSwarm, NetworkBehaviour, THandlerInEvent, ToSwarm};
use libp2p::{autonat, Multiaddr};

/// [`autonat::v2::client::Behaviour`], fed only dialable candidates ([`dialable`]).
#[derive(Default)]
pub(crate) struct AutonatClient(autonat::v2::client::Behaviour);

/// An address a server can dial back: an IP (or DNS name) and a transport port, not
/// through a relay.
pub(crate) fn dialable(addr: &Multiaddr) -> bool {
    let mut parts = addr.iter();
    let host = matches!(
        parts.next(),
        Some(Protocol::Ip4(_) | Protocol::Ip6(_) | Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_))
    );
    let port = matches!(parts.next(), Some(Protocol::Tcp(_) | Protocol::Udp(_)));
    host && port && !addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

impl NetworkBehaviour for AutonatClient {
    type ConnectionHandler = <autonat::v2::client::Behaviour as NetworkBehaviour>::ConnectionHandler;
    type ToSwarm = autonat::v2::client::Event;

    crate::wrapped::pass_connections_to!(0);

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        if let FromSwarm::NewExternalAddrCandidate(candidate) = &event {
            if !dialable(candidate.addr) {
                tracing::trace!(addr = %candidate.addr, "not an AutoNAT candidate");
                return;
            }
        }
        self.0.on_swarm_event(event)
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        self.0.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_direct_transport_addresses_are_candidates() {
        let yes =
            ["/ip4/198.51.100.2/udp/4190/quic-v1", "/ip6/2001:db8::1/tcp/4190", "/dns4/a.example/tcp/1"];
        for a in yes {
            assert!(dialable(&a.parse().unwrap()), "{a}");
        }
        let relay = "12D3KooWDyroaN7Y6dntP6n4A3ygEZwrsAof9qqEqpPFe9Jhx9JY";
        let no = [
            format!("/ip4/203.0.113.10/tcp/4001/p2p/{relay}/p2p-circuit"),
            format!("/p2p/{relay}"),
            "/ip4/10.0.0.1".to_owned(),
            "/memory/5".to_owned(),
        ];
        for a in no {
            assert!(!dialable(&a.parse().unwrap()), "{a}");
        }
    }
}
