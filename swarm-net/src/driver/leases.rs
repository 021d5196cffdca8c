//! The lease protocol's glue: requests of our own and of peers go to [`Leases`], answers
//! to their waiters, and what is leased into the local record.

use std::time::Instant;

use libp2p::request_response;
use libp2p::PeerId;
use swarm_core::place::wire::{LeaseRequest, LeaseResponse};

use super::Driver;
use crate::lease::LeaseWaiter;

impl Driver {
    /// Answers a lease request of our own at once; sends one to a peer.
    pub(super) fn lease_request(&mut self, peer: PeerId, request: LeaseRequest, reply: LeaseWaiter) {
        if peer == self.leases.local() {
            let (response, changed) = self.leases.handle_request(Instant::now(), peer, request);
            if changed {
                self.advertise_leases();
            }
            let _ = reply.send(Ok(response));
            return;
        }
        let id = self.swarm.behaviour_mut().lease.send_request(&peer, request);
        self.leases.wait(id, peer, reply);
    }

    pub(super) fn handle_lease(&mut self, event: request_response::Event<LeaseRequest, LeaseResponse>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    let (response, changed) = self.leases.handle_request(Instant::now(), peer, request);
                    if changed {
                        self.advertise_leases();
                    }
                    // Fails only if the requester is gone; a grant it never saw expires.
                    let _ = self.swarm.behaviour_mut().lease.send_response(channel, response);
                }
                request_response::Message::Response { request_id, response } => {
                    self.leases.answer(request_id, Ok(response));
                }
            },
            request_response::Event::OutboundFailure { request_id, error, .. } => {
                self.leases.answer(request_id, Err(error.to_string()));
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound lease request failed");
                self.leases.inbound_failed();
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// Puts the leased GPUs into the local record and publishes it soon.
    pub(super) fn advertise_leases(&mut self) {
        if let Some(ext) = self.leases.advert().to_extension() {
            let _ = self.publisher.set_extension(ext);
        }
    }
}
