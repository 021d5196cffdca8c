//! One peer's timers as a table (quinn-proto's `connection/timer.rs` shape): an enum of
//! timers and an array of deadlines; the next deadline is their minimum.

use std::time::Instant;

/// One peer's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// Retry the handshake (rekey timeout plus jitter), or give up after the rekey
    /// attempt time.
    Retry = 0,
    /// Send a keepalive: data came in and nothing went out since.
    Keepalive = 1,
    /// Start a new handshake: data went out and nothing came back.
    NewHandshake = 2,
    /// Erase the keys: no new session for three reject times.
    Zero = 3,
}

impl Timer {
    /// Every timer, in the order they are handled when due together.
    pub(super) const VALUES: [Timer; 4] = [Timer::Retry, Timer::Keepalive, Timer::NewHandshake, Timer::Zero];
}

/// A deadline per [`Timer`].
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct TimerTable([Option<Instant>; 4]);

impl TimerTable {
    pub(super) fn set(&mut self, timer: Timer, at: Instant) {
        self.0[timer as usize] = Some(at);
    }

    pub(super) fn get(&self, timer: Timer) -> Option<Instant> {
        self.0[timer as usize]
    }

    pub(super) fn is_set(&self, timer: Timer) -> bool {
        self.get(timer).is_some()
    }

    pub(super) fn stop(&mut self, timer: Timer) {
        self.0[timer as usize] = None;
    }

    /// Stops `timer` and says so if it was due at `now`.
    pub(super) fn expire(&mut self, timer: Timer, now: Instant) -> bool {
        let due = self.get(timer).is_some_and(|t| t <= now);
        if due {
            self.stop(timer);
        }
        due
    }

    /// The earliest deadline.
    pub(super) fn next(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
    }
}
