//! Relays (issue 13, part 1): members that serve as circuit relays (identify lists the
//! hop protocol, at a public address); reservations on two of them, listened on as
//! `/p2p-circuit` addresses, while this node's reflectors say it is behind a NAT; the
//! relay gate (members only, open on a public node); and what the relay client, DCUtR
//! and AutoNAT v2 report.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::{autonat, dcutr, identify, relay, Multiaddr, PeerId};
use swarm_core::nat::{is_public, NatKind};

use super::Driver;
use crate::config::RelayMode;
use crate::host::multiaddr_ip;

/// Reservations a node behind a NAT holds.
const RESERVATIONS: usize = 2;

/// See the module docs.
#[derive(Debug, Default)]
pub(super) struct Relays {
    /// Members that serve as relays, with their public addresses.
    candidates: HashMap<PeerId, Vec<Multiaddr>>,
    /// Relays we listen through (or asked to).
    pub(super) reserved: HashMap<PeerId, ListenerId>,
    /// Relays that refused or failed us, skipped from then on.
    refused: Vec<PeerId>,
    /// When we last dialed a member behind a NAT that we are not connected to.
    last_dial: HashMap<PeerId, std::time::Instant>,
}

/// A member behind a NAT that we cannot reach is dialed again (through relays) at most
/// this often.
const REDIAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether `addr` goes through a relay.
pub(super) fn is_circuit(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

impl Driver {
    /// The relays we hold (or asked for) a reservation on and are connected to.
    pub(super) fn reserved_relays(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.relays.reserved.keys().copied().filter(|r| self.swarm.is_connected(r))
    }

    /// A member identified itself: a relay candidate when it speaks the hop protocol at
    /// a public address.
    pub(super) fn relay_identified(&mut self, peer: PeerId, info: &identify::Info) {
        if !info.protocols.contains(&relay::HOP_PROTOCOL_NAME) {
            return;
        }
        let public: Vec<Multiaddr> = info
            .listen_addrs
            .iter()
            .filter(|a| !is_circuit(a) && multiaddr_ip(a).is_some_and(|ip| is_public(&ip)))
            .cloned()
            .collect();
        if !public.is_empty() {
            self.relays.candidates.insert(peer, public);
            self.reserve_relays();
        }
    }

    /// Addresses of `peer` through each relay we know (it may hold a reservation there).
    pub(super) fn circuits_to(&self, peer: PeerId) -> Vec<Multiaddr> {
        self.relays
            .candidates
            .iter()
            .filter(|(r, _)| **r != peer)
            .filter_map(|(r, addrs)| {
                Some(
                    addrs
                        .first()?
                        .clone()
                        .with(Protocol::P2p(*r))
                        .with(Protocol::P2pCircuit)
                        .with(Protocol::P2p(peer)),
                )
            })
            .collect()
    }

    /// A member's record came or changed: dial it when we are not connected (at most
    /// every [`REDIAL`]), so a member that reserved on a relay after our first attempt
    /// is still reached.
    pub(super) fn maybe_redial(&mut self, now: std::time::Instant, peer: PeerId) {
        if self.swarm.is_connected(&peer) || self.relays.candidates.is_empty() {
            return;
        }
        if self.relays.last_dial.get(&peer).is_some_and(|t| now.saturating_duration_since(*t) < REDIAL) {
            return;
        }
        self.relays.last_dial.insert(peer, now);
        self.relays.last_dial.retain(|_, t| now.saturating_duration_since(*t) < REDIAL * 6);
        self.dial_member(peer);
    }

    /// A member came or went: the relay gate follows.
    pub(super) fn gate_member(&mut self, peer: PeerId, member: bool) {
        if let Ok(mut m) = self.gate.members.write() {
            if member {
                m.insert(peer);
            } else {
                m.remove(&peer);
            }
        }
    }

    /// Opens the relay on a public node ([`RelayMode::Auto`]), and reserves on relays
    /// while the node is behind a NAT.
    pub(super) fn reserve_relays(&mut self) {
        let kind = self.reflexive.kind;
        if self.config.relay == RelayMode::Auto {
            self.gate.open.store(kind == NatKind::Public, Ordering::Relaxed);
        }
        if kind == NatKind::Public || self.config.relay == RelayMode::On {
            self.confirm_public_addrs();
        }
        if !matches!(kind, NatKind::Easy | NatKind::Hard) {
            return;
        }
        let mut choices: Vec<(PeerId, Multiaddr)> = self
            .relays
            .candidates
            .iter()
            .filter(|(p, _)| !self.relays.reserved.contains_key(p) && !self.relays.refused.contains(p))
            .filter_map(|(p, addrs)| Some((*p, addrs.first()?.clone())))
            .collect();
        choices.sort();
        for (relay, addr) in choices.into_iter().take(RESERVATIONS.saturating_sub(self.relays.reserved.len()))
        {
            let circuit = addr.with(Protocol::P2p(relay)).with(Protocol::P2pCircuit);
            match self.swarm.listen_on(circuit.clone()) {
                Ok(id) => {
                    tracing::info!(%relay, addr = %circuit, "reserving on a relay");
                    self.relays.reserved.insert(relay, id);
                }
                Err(e) => {
                    tracing::debug!(%relay, error = %e, "cannot listen through relay");
                    self.relays.refused.push(relay);
                }
            }
        }
    }

    /// Our listen addresses at public IPs are external addresses: the reflectors saw
    /// the tunnel socket's own address, so nothing translates ours. A relay serves only
    /// once the swarm has a confirmed external address (libp2p's relay advertises the hop
    /// protocol from then on).
    pub(super) fn confirm_public_addrs(&mut self) {
        let local = *self.swarm.local_peer_id();
        let public: Vec<Multiaddr> = self
            .listen_addrs
            .iter()
            .filter(|a| !is_circuit(a) && multiaddr_ip(a).is_some_and(|ip| is_public(&ip)))
            .map(|a| a.iter().filter(|p| *p != Protocol::P2p(local)).collect())
            .collect();
        for addr in public {
            if !self.swarm.external_addresses().any(|a| *a == addr) {
                tracing::info!(%addr, "external address (public socket)");
                self.swarm.add_external_address(addr);
            }
        }
    }

    /// A listener closed: when it was a reservation, reserve elsewhere (or again).
    pub(super) fn relay_listener_closed(&mut self, id: ListenerId, failed: bool) {
        let Some(relay) = self.relays.reserved.iter().find(|(_, l)| **l == id).map(|(p, _)| *p) else {
            return;
        };
        self.relays.reserved.remove(&relay);
        if failed {
            self.relays.refused.push(relay);
        }
        self.reserve_relays();
    }

    pub(super) fn on_relay_client(&mut self, event: relay::client::Event) {
        match event {
            relay::client::Event::ReservationReqAccepted { relay_peer_id, renewal, .. } => {
                tracing::info!(relay = %relay_peer_id, renewal, "relay reservation accepted");
            }
            relay::client::Event::OutboundCircuitEstablished { relay_peer_id, .. } => {
                tracing::debug!(relay = %relay_peer_id, "relayed connection out");
            }
            relay::client::Event::InboundCircuitEstablished { src_peer_id, .. } => {
                tracing::debug!(from = %src_peer_id, "relayed connection in");
            }
        }
    }

    pub(super) fn on_relay_server(&mut self, event: relay::Event) {
        tracing::debug!(?event, "relay");
    }

    pub(super) fn on_dcutr(&mut self, event: dcutr::Event) {
        match event.result {
            Ok(connection) => {
                tracing::info!(peer = %event.remote_peer_id, ?connection, "relayed connection upgraded to direct")
            }
            Err(e) => {
                tracing::debug!(peer = %event.remote_peer_id, error = %e, "direct connection upgrade failed")
            }
        }
    }

    pub(super) fn on_autonat(&mut self, event: autonat::v2::client::Event) {
        match event.result {
            Ok(()) => {
                tracing::info!(addr = %event.tested_addr, server = %event.server, "external address confirmed")
            }
            Err(e) => {
                tracing::debug!(addr = %event.tested_addr, error = %e, "external address not reachable")
            }
        }
    }
}
