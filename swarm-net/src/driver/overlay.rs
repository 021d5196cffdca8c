//! Overlay addresses (data-flow stage 8): the node's IPv4 claim kept free of clashes by
//! its [`Ipv4Claimer`](swarm_core::overlay::Ipv4Claimer), fed each peer's claim from the
//! view, and published in the record when it moves; everyone's IPv6 address computed
//! from the namespace and the `PeerId`.

use std::net::{IpAddr, Ipv4Addr};

use libp2p::PeerId;
use swarm_core::overlay::{IpPrefix, Ipv4Claim};
use swarm_core::record::ext::OverlayClaim;

use super::Driver;
use crate::api::OverlayAddresses;
use crate::config::BuildError;
use crate::dataplane::tun::Tun;
use crate::identity::store_overlay_candidate;

/// The length of the swarm's IPv6 overlay prefix.
const IPV6_PREFIX_LEN: u8 = 48;

impl Driver {
    /// Creates the VPN device when the node has one, with our addresses on it.
    pub(super) fn start_vpn(&mut self) -> Result<(), BuildError> {
        let Some(vpn) = &self.config.vpn else { return Ok(()) };
        let local = *self.swarm.local_peer_id();
        let ipv6 = (self.overlay_v6.node(&local), IPV6_PREFIX_LEN);
        let ipv4 = self.overlay.as_ref().and_then(|c| Some((c.claim()?.addr, c.range().prefix_len())));
        let tun = Tun::open(&vpn.device, vpn.mtu, ipv6, ipv4)?;
        tracing::info!(device = tun.name(), ipv6 = %ipv6.0, ipv4 = ?ipv4.map(|a| a.0), "VPN device up");
        self.dataplane.attach_vpn(tun);
        self.restore_stock_peers();
        Ok(())
    }

    /// Feeds `peer`'s claim as its record now says (none: the record left the view), and
    /// routes the peer's overlay addresses to it while its record is in the view.
    pub(super) fn overlay_claim(&mut self, peer: PeerId) {
        let present = self.view.get(&peer).is_some();
        let v6 = IpPrefix::host(IpAddr::V6(self.overlay_v6.node(&peer)));
        self.dataplane.route(v6, present.then_some(peer));
        let Some(claimer) = &mut self.overlay else { return };
        let before = claimer.address_of(&peer);
        let claim = self.view.get(&peer).and_then(|e| e.extensions.overlay).and_then(|o| o.ipv4);
        claimer.handle_claim(peer, claim.map(|(addr, n)| Ipv4Claim { addr, n }));
        // Only a claim that came or went can change who holds an address.
        for addr in [before, claim.map(|c| c.0)].into_iter().flatten() {
            self.route_ipv4(addr);
        }
        self.publish_overlay();
        self.reclaim_stock();
    }

    /// Routes `addr` to the peer that holds it now (none when we do, or no one): a
    /// node, a stock peer of ours, or the gateway of another's stock peer.
    pub(super) fn route_ipv4(&mut self, addr: Ipv4Addr) {
        let Some(claimer) = &self.overlay else { return };
        let local = *self.swarm.local_peer_id();
        let holder = claimer.holder(&addr).filter(|h| *h != local);
        let to = holder.map(|h| self.stock_gateway.get(&h).copied().unwrap_or(h));
        self.dataplane.route(IpPrefix::host(IpAddr::V4(addr)), to);
    }

    /// Puts our claim into the record when it changed (at start, and when outranked),
    /// and onto the VPN device.
    pub(super) fn publish_overlay(&mut self) {
        let Some(claimer) = self.overlay.as_mut() else { return };
        let Some(claim) = claimer.poll_changed() else { return };
        let prefix_len = claimer.range().prefix_len();
        tracing::info!(addr = %claim.addr, n = claim.n, "overlay IPv4 address claimed");
        self.dataplane.set_vpn_ipv4(claim.addr, prefix_len);
        // The address we left was routed to its new holder when that peer's claim came.
        self.route_ipv4(claim.addr);
        if let (Some(path), Some(range)) =
            (self.overlay_file.clone(), self.overlay.as_ref().map(|c| c.range()))
        {
            // A small write, off the driver's thread; a failure only costs the address
            // on the next restart.
            tokio::task::spawn_blocking(move || {
                if let Err(e) = store_overlay_candidate(&path, &range, claim.n) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot persist the overlay candidate");
                }
            });
        }
        if let Some(ext) = (OverlayClaim { ipv4: Some((claim.addr, claim.n)) }).to_extension() {
            let _ = self.publisher.set_extension(ext);
        }
    }

    /// The overlay addresses of `peer` (this node or one in the view).
    pub(super) fn overlay_addresses(&self, peer: &PeerId) -> Option<OverlayAddresses> {
        if *peer != *self.swarm.local_peer_id() && self.view.get(peer).is_none() {
            return None;
        }
        Some(OverlayAddresses {
            ipv6: self.overlay_v6.node(peer),
            ipv4: self.overlay.as_ref().and_then(|c| c.address_of(peer)),
        })
    }
}
