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
    /// Relays whose circuit address our transport refused, skipped from then on.
    refused: Vec<PeerId>,
    /// Relays whose reservation closed or failed: not asked again before the instant.
    /// Without it a node whose relay went away redialed it in a tight loop.
    wait_until: HashMap<PeerId, std::time::Instant>,
    /// The last wait per relay, doubled on each further loss, forgotten once a
    /// reservation there is accepted.
    backoff: HashMap<PeerId, std::time::Duration>,
    /// When we last dialed a member behind a NAT that we are not connected to.
    last_dial: HashMap<PeerId, std::time::Instant>,
}

/// A member behind a NAT that we cannot reach is dialed again (through relays) at most
/// this often.
const REDIAL: std::time::Duration = std::time::Duration::from_secs(2);

/// The first wait before reserving again on a relay whose reservation closed; it
/// doubles up to [`RESERVE_BACKOFF_MAX`].
const RESERVE_BACKOFF: std::time::Duration = std::time::Duration::from_secs(1);
const RESERVE_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(60);

impl Relays {
    /// When a relay in backoff may be asked again.
    pub(super) fn poll_timeout(&self) -> Option<std::time::Instant> {
        self.wait_until.values().min().copied()
    }

    /// A reservation on `relay` closed or failed at `now`: wait before asking again.
    fn back_off(&mut self, now: std::time::Instant, relay: PeerId) {
        let delay = self.backoff.get(&relay).map_or(RESERVE_BACKOFF, |d| (*d * 2).min(RESERVE_BACKOFF_MAX));
        self.backoff.insert(relay, delay);
        self.wait_until.insert(relay, now + delay);
    }
}

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
        let now = std::time::Instant::now();
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
            .filter(|(p, _)| self.relays.wait_until.get(p).is_none_or(|at| *at <= now))
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

    /// A listener closed: when it was a reservation, reserve elsewhere at once, and on
    /// the same relay again after a backoff (a relay that restarts is used again).
    pub(super) fn relay_listener_closed(&mut self, now: std::time::Instant, id: ListenerId) {
        let Some(relay) = self.relays.reserved.iter().find(|(_, l)| **l == id).map(|(p, _)| *p) else {
            return;
        };
        self.relays.reserved.remove(&relay);
        self.relays.back_off(now, relay);
        self.reserve_relays();
    }

    /// A relay in backoff may be due again.
    pub(super) fn relays_timeout(&mut self, now: std::time::Instant) {
        if self.relays.poll_timeout().is_some_and(|at| at <= now) {
            self.relays.wait_until.retain(|_, at| *at > now);
            self.reserve_relays();
        }
    }

    pub(super) fn on_relay_client(&mut self, event: relay::client::Event) {
        match event {
            relay::client::Event::ReservationReqAccepted { relay_peer_id, renewal, .. } => {
                self.relays.backoff.remove(&relay_peer_id);
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
        let stats = &mut self.stats.autonat;
        stats.dial_data_bytes += event.bytes_sent as u64;
        match event.result {
            Ok(()) => {
                stats.confirmed += 1;
                tracing::info!(addr = %event.tested_addr, server = %event.server, bytes_sent = event.bytes_sent, "external address confirmed")
            }
            Err(e) => {
                stats.unreachable += 1;
                tracing::debug!(addr = %event.tested_addr, error = %e, bytes_sent = event.bytes_sent, "external address not reachable")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_reservation_is_asked_again_later_and_later() {
        let mut relays = Relays::default();
        let relay = PeerId::random();
        #[allow(clippy::disallowed_methods)] // the tests' epoch
        let t0 = std::time::Instant::now();
        assert_eq!(relays.poll_timeout(), None);
        let mut waits = Vec::new();
        for _ in 0..9 {
            relays.back_off(t0, relay);
            waits.push(relays.poll_timeout().unwrap() - t0);
        }
        let secs: Vec<u64> = waits.iter().map(|d| d.as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
