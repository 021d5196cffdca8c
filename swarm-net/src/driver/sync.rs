//! View sync (`crate::sync`): a member identified on a new connection gets our view's
//! digest and sends back the signed records we lack, round after round while it says
//! more remain; we answer its digest likewise, within its answer budget. At most
//! `MAX_SYNCS` run at once (`SyncSlots`): the others wait, and their digests then hold
//! what the earlier ones brought. Besides, one random connected member is synced with on
//! `SyncSchedule`'s beat (anti-entropy).
//! Records that come this way enter the view through the same checks as gossiped ones.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rand::RngExt as _;

use libp2p::request_response::{self, Message};
use libp2p::PeerId;
use swarm_core::record::sync::{
    answer_budget, ask_again, AnswerBudget, RecordDigest, SyncAnswer, SyncSchedule, SyncSlots,
};
use swarm_core::view::Ingest;

use super::Driver;
use crate::api::NodeEvent;
use crate::host::wall_clock;

/// The driver's side of view sync.
#[derive(Debug)]
pub(super) struct Syncs {
    /// Peers synced since their first connection opened. Forgotten when their last
    /// connection closes, so a reconnection syncs again.
    synced: HashSet<PeerId>,
    /// Which syncs run (and their rounds) and which wait for a slot.
    slots: SyncSlots<PeerId>,
    /// When to sync with a random member.
    schedule: SyncSchedule,
    /// What each peer may still ask of us.
    budget: AnswerBudget,
    /// Messages that did not decode (shared with the codec).
    pub(super) malformed: Arc<AtomicU64>,
}

impl Syncs {
    /// Nothing synced yet at `now`; `malformed` is the codec's counter.
    pub(super) fn new(now: Instant, malformed: Arc<AtomicU64>) -> Self {
        Self {
            synced: HashSet::new(),
            slots: SyncSlots::default(),
            schedule: SyncSchedule::new(now),
            budget: answer_budget(),
            malformed,
        }
    }
}

impl Driver {
    /// Starts a sync with member `peer` unless one ran since it connected (or queues it
    /// for a slot).
    pub(super) fn sync_on_connect(&mut self, now: Instant, peer: PeerId) {
        if self.syncs.synced.insert(peer) {
            self.sync_request(now, peer);
        }
    }

    fn sync_request(&mut self, now: Instant, peer: PeerId) {
        if self.syncs.slots.request(now, peer) {
            self.sync_with(peer);
        }
    }

    /// Starts the syncs that waited for a slot, while slots are free.
    fn sync_start_waiting(&mut self, now: Instant) {
        while let Some(peer) = self.syncs.slots.poll_start(now) {
            self.sync_with(peer);
        }
    }

    /// The sync with `peer` ended (answered in full, failed, or its connection closed).
    fn sync_ended(&mut self, now: Instant, peer: &PeerId) {
        self.syncs.slots.on_done(*peer);
        self.sync_start_waiting(now);
    }

    /// Sends `peer` our digest: a sync's first round (its slot taken).
    fn sync_with(&mut self, peer: PeerId) {
        let digest = self.view.digest();
        self.stats.sync_asked += 1;
        self.swarm.behaviour_mut().sync.send_request(&peer, digest);
    }

    /// `peer`'s last connection closed.
    pub(super) fn sync_gone(&mut self, now: Instant, peer: &PeerId) {
        self.syncs.synced.remove(peer);
        self.sync_ended(now, peer);
    }

    /// A new member's record entered the view.
    pub(super) fn sync_news(&mut self, now: Instant) {
        self.syncs.schedule.on_news(now);
    }

    pub(super) fn sync_timeout(&self) -> Instant {
        let beat = self.syncs.schedule.poll_timeout();
        self.syncs.slots.poll_timeout().map_or(beat, |slot| slot.min(beat))
    }

    /// Syncs that waited for a slot a slow one held; and anti-entropy: a sync with one
    /// random connected member when one is due, among those no sync is under way with
    /// (one that is slow to answer would take the turn).
    pub(super) fn sync_due(&mut self, now: Instant) {
        self.sync_start_waiting(now);
        if !self.syncs.schedule.handle_timeout(now) {
            return;
        }
        let slots = &self.syncs.slots;
        let idle: Vec<PeerId> =
            self.identified.iter().filter(|p| slots.rounds(**p).is_none()).copied().collect();
        if idle.is_empty() {
            return;
        }
        let peer = idle[rand::rng().random_range(0..idle.len())];
        self.sync_request(now, peer);
    }

    pub(super) fn handle_sync(&mut self, event: request_response::Event<RecordDigest, SyncAnswer>) {
        match event {
            request_response::Event::Message {
                peer,
                message: Message::Request { request, channel, .. },
                ..
            } => {
                if !self.syncs.budget.allow(Instant::now(), peer) {
                    // Dropping the channel closes the stream: the peer sees a failure.
                    self.stats.sync_refused += 1;
                    return;
                }
                let answer = self.view.answer(&request);
                self.stats.sync_answers += 1;
                let _ = self.swarm.behaviour_mut().sync.send_response(channel, answer);
            }
            request_response::Event::Message {
                peer, message: Message::Response { response, .. }, ..
            } => {
                self.sync_answer(peer, response);
            }
            request_response::Event::OutboundFailure { peer, error, .. } => {
                self.stats.sync_failed += 1;
                self.sync_ended(Instant::now(), &peer);
                tracing::debug!(%peer, %error, "view sync failed");
            }
            request_response::Event::InboundFailure { .. } | request_response::Event::ResponseSent { .. } => {
            }
        }
    }

    fn sync_answer(&mut self, peer: PeerId, answer: SyncAnswer) {
        let now = Instant::now();
        let wall = wall_clock();
        let mut rejected = 0;
        for record in answer.records.iter() {
            match self.view.handle_record(now, wall, record) {
                Ok(Ingest::Inserted | Ingest::Updated) => self.stats.sync_records += 1,
                Ok(Ingest::Stale) => self.stats.sync_duplicates += 1,
                Ok(Ingest::Full) => {}
                Err(e) => {
                    rejected += 1;
                    tracing::debug!(%peer, error = %e, "synced record rejected");
                    // As for gossip: `swarm-node monitor` shows who sent a bad record.
                    self.emit(NodeEvent::RecordRejected { from: peer, reason: e.reason() });
                }
            }
        }
        let Some(rounds) = self.syncs.slots.rounds(peer) else { return };
        if ask_again(&answer, rejected, rounds) {
            self.syncs.slots.on_round(now, peer);
            let digest = self.view.digest();
            self.stats.sync_asked += 1;
            self.swarm.behaviour_mut().sync.send_request(&peer, digest);
        } else {
            self.sync_ended(now, &peer);
        }
    }

    /// Sync messages that did not decode.
    pub(super) fn sync_malformed(&self) -> u64 {
        self.syncs.malformed.load(Ordering::Relaxed)
    }
}
