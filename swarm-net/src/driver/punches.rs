//! Hole punching for tunnels (issue 13, part 3), signalled over whatever libp2p
//! connection exists (relayed or direct) with `/swarm/punch/1`: when both ends of a
//! tunnel that is not up sit behind easy NATs, the lower `PeerId` offers its candidates
//! and a token, the other answers with its own, and both start the data plane's
//! [`Puncher`](swarm_core::nat::Puncher) at once (the initiator half a measured round
//! trip after sending `Go`). When to offer is the path planner's decision
//! ([`swarm_core::nat::plan`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use libp2p::request_response::{self, OutboundRequestId};
use libp2p::PeerId;
use rand::RngExt as _;
use swarm_core::bounded::BoundedVec;
use swarm_core::nat::punch::{PunchMessage, MAX_PUNCH_CANDIDATES};

use super::Driver;

/// Punches under way and their signalling.
#[derive(Debug, Default)]
pub(super) struct Punches {
    /// Our offers, waiting for an answer: the peer, the token, when sent.
    offers: HashMap<OutboundRequestId, (PeerId, [u8; 12], Instant)>,
    /// Offers we answered: the token and the initiator's candidates, until its `Go`.
    answered: HashMap<PeerId, ([u8; 12], Vec<SocketAddr>)>,
    /// The initiator's side between `Answer` and the start: the token and candidates.
    going: HashMap<OutboundRequestId, PeerId>,
}

impl Driver {
    /// Our candidate endpoints, as our record announces them (the NAT's mapping first).
    fn punch_candidates(&self) -> BoundedVec<SocketAddr, MAX_PUNCH_CANDIDATES> {
        let local = *self.swarm.local_peer_id();
        let mut c: Vec<SocketAddr> =
            self.view.get(&local).map(|e| e.tunnel.udp_endpoints.to_vec()).unwrap_or_default();
        c.truncate(MAX_PUNCH_CANDIDATES);
        BoundedVec::try_from_vec(c).unwrap_or_default()
    }

    /// Offers a hole punch to `peer` (the path planner decided it).
    pub(super) fn offer_punch(&mut self, now: Instant, peer: PeerId) {
        let token: [u8; 12] = rand::rng().random();
        let offer = PunchMessage::Offer { token, candidates: self.punch_candidates() };
        let id = self.swarm.behaviour_mut().punch.send_request(&peer, offer);
        tracing::debug!(%peer, "offering a hole punch");
        self.punches.offers.insert(id, (peer, token, now));
    }

    pub(super) fn handle_punch(&mut self, event: request_response::Event<PunchMessage, PunchMessage>) {
        let now = Instant::now();
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    let answer = self.on_punch_request(now, peer, request);
                    let _ = self.swarm.behaviour_mut().punch.send_response(channel, answer);
                }
                request_response::Message::Response { request_id, response } => {
                    self.on_punch_response(now, request_id, response);
                }
            },
            request_response::Event::OutboundFailure { peer, request_id, error, .. } => {
                // The signalling failed (say, on a relayed connection that DCUtR just
                // replaced), not the punch: offer again at the next record, not after RETRY.
                if self.punches.offers.remove(&request_id).is_some()
                    || self.punches.going.remove(&request_id).is_some()
                {
                    self.planner.punch_signalling_failed(peer);
                }
                tracing::debug!(%error, "punch signalling failed");
            }
            _ => {}
        }
    }

    fn on_punch_request(&mut self, now: Instant, peer: PeerId, request: PunchMessage) -> PunchMessage {
        if !self.members.contains(&peer) {
            // Only members punch: a stranger's offer would cost a prime and a slot.
            tracing::debug!(%peer, "punch offer from a non-member refused");
            return PunchMessage::Done;
        }
        match request {
            PunchMessage::Offer { token, candidates } => {
                self.dataplane.prime(token, &candidates);
                self.punches.answered.insert(peer, (token, candidates.to_vec()));
                PunchMessage::Answer { candidates: self.punch_candidates() }
            }
            PunchMessage::Go => {
                if let Some((token, candidates)) = self.punches.answered.remove(&peer) {
                    tracing::debug!(%peer, "hole punch starts (responder)");
                    self.planner.punch_answered(now, peer);
                    self.dataplane.punch(peer, token, &candidates, now);
                }
                PunchMessage::Done
            }
            _ => PunchMessage::Done,
        }
    }

    fn on_punch_response(&mut self, now: Instant, id: OutboundRequestId, response: PunchMessage) {
        if let Some((peer, token, sent)) = self.punches.offers.remove(&id) {
            let PunchMessage::Answer { candidates } = response else { return };
            let rtt = now.saturating_duration_since(sent);
            self.dataplane.prime(token, &candidates);
            let go = self.swarm.behaviour_mut().punch.send_request(&peer, PunchMessage::Go);
            self.punches.going.insert(go, peer);
            tracing::debug!(%peer, ?rtt, "hole punch starts (initiator)");
            self.dataplane.punch(peer, token, &candidates, now + rtt / 2);
        } else {
            self.punches.going.remove(&id);
        }
    }
}
