//! Overlay addresses (data-flow stage 8): the node's IPv4 claim kept free of clashes by
//! its [`Ipv4Claimer`](swarm_core::overlay::Ipv4Claimer), fed each peer's claim from the
//! view, and published in the record when it moves; everyone's IPv6 address computed
//! from the namespace and the `PeerId`.

use libp2p::PeerId;
use swarm_core::overlay::Ipv4Claim;
use swarm_core::record::ext::OverlayClaim;

use super::Driver;
use crate::api::OverlayAddresses;
use crate::identity::store_overlay_candidate;

impl Driver {
    /// Feeds `peer`'s claim as its record now says (none: the record left the view).
    pub(super) fn overlay_claim(&mut self, peer: PeerId) {
        let Some(claimer) = &mut self.overlay else { return };
        let claim = self.view.get(&peer).and_then(|e| e.extensions.overlay).and_then(|o| o.ipv4);
        claimer.handle_claim(peer, claim.map(|(addr, n)| Ipv4Claim { addr, n }));
        self.publish_overlay();
    }

    /// Puts our claim into the record when it changed (at start, and when outranked).
    pub(super) fn publish_overlay(&mut self) {
        let Some(claim) = self.overlay.as_mut().and_then(|c| c.poll_changed()) else { return };
        tracing::info!(addr = %claim.addr, n = claim.n, "overlay IPv4 address claimed");
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
