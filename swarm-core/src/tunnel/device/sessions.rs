//! [`Sessions`]: one peer's transport sessions and their rotation (whitepaper §6.1). A
//! new session becomes `current`, the one it replaces `previous` (packets in flight on it
//! are still accepted), and the one before that `older` (when both sides rekey at once,
//! each promotes two sessions in a row); the responder's new session waits as `next`
//! until the initiator's first data packet confirms it. What falls off the end is handed
//! back, so its index can be retired.

use std::time::{Duration, Instant};

use super::super::session::Session;

/// See the module docs.
#[derive(Default, Clone)]
pub(super) struct Sessions {
    current: Option<Session>,
    previous: Option<Session>,
    older: Option<Session>,
    next: Option<Session>,
}

/// Where a received packet's session sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    Current,
    Previous,
    Older,
    /// The responder's unconfirmed session: the packet confirms it.
    Next,
}

impl Sessions {
    /// The session data is sent on.
    pub(super) fn current(&self) -> Option<&Session> {
        self.current.as_ref()
    }

    pub(super) fn current_mut(&mut self) -> Option<&mut Session> {
        self.current.as_mut()
    }

    /// Which session has local index `receiver`.
    pub(super) fn find(&self, receiver: u32) -> Option<Slot> {
        let is = |s: &Option<Session>| s.as_ref().is_some_and(|s| s.local_index == receiver);
        [
            (&self.current, Slot::Current),
            (&self.previous, Slot::Previous),
            (&self.older, Slot::Older),
            (&self.next, Slot::Next),
        ]
        .into_iter()
        .find_map(|(s, slot)| is(s).then_some(slot))
    }

    pub(super) fn get_mut(&mut self, slot: Slot) -> Option<&mut Session> {
        match slot {
            Slot::Current => self.current.as_mut(),
            Slot::Previous => self.previous.as_mut(),
            Slot::Older => self.older.as_mut(),
            Slot::Next => self.next.as_mut(),
        }
    }

    /// The initiator's new session becomes current; the dropped oldest comes back.
    #[must_use]
    pub(super) fn install(&mut self, session: Session) -> Option<Session> {
        let dropped = self.older.take();
        self.older = self.previous.take();
        self.previous = self.current.replace(session);
        dropped
    }

    /// The responder's new session waits for confirmation; a `next` it replaces comes
    /// back.
    #[must_use]
    pub(super) fn set_next(&mut self, session: Session) -> Option<Session> {
        self.next.replace(session)
    }

    /// The confirmed `next` becomes current; the dropped oldest comes back.
    #[must_use]
    pub(super) fn confirm_next(&mut self) -> Option<Session> {
        let dropped = self.older.take();
        self.older = self.previous.take();
        self.previous = self.current.take();
        self.current = self.next.take();
        dropped
    }

    /// Takes every session (keys erased, peer removed).
    pub(super) fn take_all(&mut self) -> [Option<Session>; 4] {
        [self.current.take(), self.previous.take(), self.older.take(), self.next.take()]
    }

    /// Takes the sessions older than `reject_after` at `now`.
    pub(super) fn take_expired(&mut self, now: Instant, reject_after: Duration) -> [Option<Session>; 4] {
        let expired = |s: &Option<Session>| {
            s.as_ref().is_some_and(|s| now.saturating_duration_since(s.created) >= reject_after)
        };
        [&mut self.current, &mut self.previous, &mut self.older, &mut self.next].map(|s| {
            if expired(s) {
                s.take()
            } else {
                None
            }
        })
    }

    /// When each session was made.
    pub(super) fn created(&self) -> impl Iterator<Item = Instant> + '_ {
        [&self.current, &self.previous, &self.older, &self.next].into_iter().flatten().map(|s| s.created)
    }
}
