//! One peer's timers, in the shared [`TimerTable`](crate::timer::TimerTable).

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

impl From<Timer> for usize {
    fn from(t: Timer) -> usize {
        t as usize
    }
}

/// A deadline per [`Timer`].
pub(super) type TimerTable = crate::timer::TimerTable<Timer, 4>;
