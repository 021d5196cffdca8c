//! Detours around breached links (issue 16, part 1): the glue between the SLA judge's
//! events, the rule ([`swarm_core::link::detour`]) and the data plane.
//!
//! The rule is asked about a peer when its direct path's verdict changes, and then every
//! [`CHECK_EVERY`] while the peer is breached or detoured. Its inputs: the direct path's
//! summary, taken fresh from the link table; for every member we measure (our last
//! gossiped summaries, at most a second old), our hop to it and its hop to the peer as
//! the fresher of the two ends' gossiped claims, at most [`MAX_CLAIM_AGE`] old. A detour
//! is a relayed stream through that member ([`crate::tunnel_relay`], `detour` headers),
//! which the data plane takes for our data only.

use std::time::{Duration, Instant};

use libp2p::PeerId;
use swarm_core::link::detour::{Candidate, DetourAction, PathQuality};
use swarm_core::link::summary::{LinkSummaries, LinkSummary};
use swarm_core::link::Metric;

use super::Driver;
use crate::api::Path;
use crate::host::wall_clock;
use crate::tunnel_relay::{self, PathKind};

/// How often a breached or detoured peer is looked at again.
pub(super) const CHECK_EVERY: Duration = Duration::from_secs(1);
/// A gossiped claim about a second hop older than this is not used.
pub(super) const MAX_CLAIM_AGE: Duration = Duration::from_secs(30);

impl Driver {
    /// The SLA judge's verdict on `peer`'s direct path changed.
    pub(super) fn on_sla_for_detour(&mut self, now: Instant, peer: PeerId, metric: Metric, degraded: bool) {
        self.detours.handle_sla(peer, metric, degraded);
        self.check_detour(now, peer);
    }

    /// Our summaries of our links, as last gossiped: the first hops of detours, and the
    /// origin's links in placements.
    pub(super) fn set_own_links(&mut self, links: LinkSummaries) {
        let now = wall_clock();
        self.placement.set_own_links(links.clone(), now, now);
        self.own_links = Some((links, now));
    }

    /// Every breached or detoured peer, when due.
    pub(super) fn check_detours(&mut self, now: Instant) {
        if self.detour_check.is_some_and(|t| t > now) {
            return;
        }
        let peers: Vec<PeerId> = self.detours.active().copied().collect();
        for peer in &peers {
            self.check_detour(now, *peer);
        }
        self.detour_check = self.detours.active().next().map(|_| now + CHECK_EVERY);
    }

    /// When [`Self::check_detours`] wants to run.
    pub(super) fn detour_timeout(&self) -> Option<Instant> {
        self.detour_check
    }

    /// Asks the rule about `peer` and does what it says. A tunnel that is relayed for want
    /// of a direct path is not detoured (its probes measure the relayed path already).
    fn check_detour(&mut self, now: Instant, peer: PeerId) {
        if !matches!(self.dataplane.path(&peer), Some(Path::Direct | Path::Detour { .. })) {
            return;
        }
        let direct = self.dataplane.link_summary(now, &peer).as_ref().and_then(PathQuality::from_summary);
        let candidates = self.detour_candidates(now, &peer);
        match self.detours.poll(now, peer, direct, &candidates) {
            Some(DetourAction::Open { via }) => {
                tracing::info!(%peer, %via, ?direct, "direct path breached: opening a detour");
                let control = self.relayed.control.clone();
                let events = self.relayed.events_tx.clone();
                tokio::spawn(tunnel_relay::open(control, peer, via, true, events));
            }
            Some(DetourAction::Return { via }) => {
                tracing::info!(%peer, %via, "back to the direct path");
                self.dataplane.end_detour(now, &peer);
            }
            None => {}
        }
        if self.detour_check.is_none() && self.detours.active().next().is_some() {
            self.detour_check = Some(now + CHECK_EVERY);
        }
    }

    /// Members through which `peer` could be reached: both hops measured.
    fn detour_candidates(&self, now: Instant, peer: &PeerId) -> Vec<Candidate<PeerId>> {
        let Some((own, _)) = &self.own_links else { return Vec::new() };
        let local = *self.swarm.local_peer_id();
        own.links
            .iter()
            .filter(|l| l.peer != *peer && l.peer != local)
            .filter_map(|first| {
                let second = self.claimed(now, &first.peer, peer)?;
                Some(Candidate {
                    via: first.peer,
                    first: PathQuality::from_summary(first)?,
                    second: PathQuality::from_summary(&second)?,
                })
            })
            .collect()
    }

    /// The fresher of `a`'s and `b`'s gossiped claims about their link, when fresh.
    pub(super) fn claimed(&self, now: Instant, a: &PeerId, b: &PeerId) -> Option<LinkSummary> {
        let claim = |by: &PeerId, of: &PeerId| {
            let entry = self.view.get(by)?;
            let s = *entry.extensions.links.as_ref()?.links.iter().find(|l| l.peer == *of)?;
            let age =
                now.saturating_duration_since(entry.received_at) + Duration::from_millis(u64::from(s.age_ms));
            (age <= MAX_CLAIM_AGE).then_some((age, s))
        };
        match (claim(a, b), claim(b, a)) {
            (Some(x), Some(y)) => Some(if x.0 <= y.0 { x.1 } else { y.1 }),
            (x, y) => x.or(y).map(|c| c.1),
        }
    }

    /// Our detour path to `peer` through `via` opened: taken if the rule still wants
    /// it, else dropped (which closes it).
    pub(super) fn on_detour_opened(
        &mut self,
        now: Instant,
        peer: PeerId,
        via: PeerId,
        stream: libp2p::Stream,
    ) {
        if !self.detours.handle_opened(now, peer, via) {
            tracing::debug!(%peer, %via, "detour opened too late: closed");
            return;
        }
        if self.dataplane.add_relay_path(now, peer, via, stream, PathKind::DetourOut) {
            tracing::info!(%peer, %via, "detour taken");
        } else {
            self.detours.handle_closed(now, peer, via);
        }
    }

    /// Our detour closed under the traffic.
    pub(super) fn on_detour_closed(&mut self, now: Instant, peer: PeerId, via: PeerId) {
        tracing::info!(%peer, %via, "detour closed");
        self.detours.handle_closed(now, peer, via);
    }

    /// The peer's tunnel went down (or it left): its verdicts start over.
    pub(super) fn forget_detour(&mut self, now: Instant, peer: &PeerId) {
        if self.detours.remove(peer).is_some() {
            self.dataplane.end_detour(now, peer);
        }
    }
}
