//! The lease protocol's glue: requests of our own and of peers go to [`Leases`] (the
//! node's lease service), answers to their waiters, and what is leased into the local
//! record.
//!
//! [`Leases`]: crate::lease::Leases

use std::time::Instant;

use libp2p::request_response;
use libp2p::PeerId;
use swarm_core::place::wire::{LeaseRequest, LeaseResponse};
use swarm_core::place::LeasedGpus;

use super::{Driver, LeaseWaiter};
use crate::api::NodeError;

/// A lease request sent, waiting for its answer.
pub(crate) struct PendingLease {
    peer: PeerId,
    reply: LeaseWaiter,
    /// A renewal or release, kept to send again once on a fresh connection after a
    /// timeout or a lost connection or stream (renewing twice is renewing; a release
    /// that did arrive the first time is answered "unknown" the second, which counts as
    /// released). Reservations are not sent again: a lost answer's grant would be a
    /// second lease, and the placer's next round tries again.
    request: Option<LeaseRequest>,
    /// Whether this is the second sending.
    retried: bool,
}

impl Driver {
    /// Answers a lease request of our own at once; sends one to a peer.
    pub(super) fn lease_request(&mut self, peer: PeerId, request: LeaseRequest, reply: LeaseWaiter) {
        if peer == self.leases.local() {
            let (response, advert) = self.leases.handle_request(Instant::now(), peer, request);
            self.advertise_leases(advert);
            self.answer_lease_waiter(peer, reply, Ok(response));
            return;
        }
        let retry = (!matches!(request, LeaseRequest::Reserve { .. })).then(|| request.clone());
        let id = self.swarm.behaviour_mut().lease.send_request(&peer, request);
        self.lease_waiters.insert(id, PendingLease { peer, reply, request: retry, retried: false });
    }

    /// Hands a lease answer to its asker. A grant whose asker is gone (its `place` future
    /// was dropped) is released rather than left to expire: [`LeaseAnswer`]'s drop.
    ///
    /// [`LeaseAnswer`]: crate::api::LeaseAnswer
    fn answer_lease_waiter(
        &mut self,
        peer: PeerId,
        reply: LeaseWaiter,
        answer: Result<LeaseResponse, NodeError>,
    ) {
        let _ = reply.send(crate::api::LeaseAnswer::new(peer, answer, self.weak_commands.clone()));
    }

    pub(super) fn handle_lease(&mut self, event: request_response::Event<LeaseRequest, LeaseResponse>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    let (response, advert) = self.leases.handle_request(Instant::now(), peer, request);
                    self.advertise_leases(advert);
                    // Fails only if the requester is gone; a grant it never saw expires.
                    let _ = self.swarm.behaviour_mut().lease.send_response(channel, response);
                }
                request_response::Message::Response { request_id, response } => {
                    self.lease_answered(request_id, Ok(response));
                }
            },
            request_response::Event::OutboundFailure { request_id, error, .. } => {
                self.lease_answered(request_id, Err(error));
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound lease request failed");
                self.leases.inbound_failed();
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn lease_answered(
        &mut self,
        id: request_response::OutboundRequestId,
        answer: Result<LeaseResponse, request_response::OutboundFailure>,
    ) {
        let Some(mut pending) = self.lease_waiters.remove(&id) else { return };
        let peer = pending.peer;
        let retry = matches!(
            answer,
            Err(request_response::OutboundFailure::Timeout
                | request_response::OutboundFailure::ConnectionClosed)
        );
        if let (true, Some(request)) = (retry, pending.request.take()) {
            // A dead connection is closed by ping within 3 s (its requests fail as
            // `ConnectionClosed`), so this goes on a live or freshly dialled one.
            tracing::debug!(%peer, error = ?answer.as_ref().err(), "lease request retried on a fresh connection");
            self.stats.lease_retries += 1;
            pending.retried = matches!(request, LeaseRequest::Release { .. });
            let id = self.swarm.behaviour_mut().lease.send_request(&peer, request);
            self.lease_waiters.insert(id, pending);
            return;
        }
        let unknown = swarm_core::place::LeaseError::Unknown.to_string();
        let answer = match answer {
            // The first sending released it; its answer was what got lost.
            Ok(LeaseResponse::Failed { reason }) if pending.retried && reason.as_str() == unknown => {
                Ok(LeaseResponse::Released)
            }
            other => other,
        };
        let answer = answer.map_err(|e| NodeError::Lease { peer, source: std::sync::Arc::new(e) });
        self.answer_lease_waiter(peer, pending.reply, answer);
    }

    /// Puts the leased GPUs, when they changed, into the local record and publishes it
    /// soon.
    pub(super) fn advertise_leases(&mut self, advert: Option<LeasedGpus>) {
        if let Some(ext) = advert.and_then(|a| a.to_extension()) {
            let _ = self.publisher.set_extension(ext);
        }
    }
}
