//! [`TimerTable`]: a core's timers as one table (quinn-proto's `connection/timer.rs`
//! shape). Each core names its timers with an enum; the table holds a deadline per timer,
//! and the next deadline is their minimum. The tunnels (per peer) and the link table use
//! it.

use std::marker::PhantomData;
use std::time::Instant;

/// A deadline per timer `T` (an enum whose `usize` values are `0..N`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TimerTable<T, const N: usize> {
    deadlines: [Option<Instant>; N],
    timers: PhantomData<T>,
}

impl<T, const N: usize> Default for TimerTable<T, N> {
    fn default() -> Self {
        Self { deadlines: [None; N], timers: PhantomData }
    }
}

impl<T: Copy + Into<usize>, const N: usize> TimerTable<T, N> {
    /// Arms `timer` for `at`.
    pub(crate) fn set(&mut self, timer: T, at: Instant) {
        self.deadlines[timer.into()] = Some(at);
    }

    /// When `timer` is due, if armed.
    pub(crate) fn get(&self, timer: T) -> Option<Instant> {
        self.deadlines[timer.into()]
    }

    /// Whether `timer` is armed.
    pub(crate) fn is_set(&self, timer: T) -> bool {
        self.get(timer).is_some()
    }

    /// Whether `timer` is armed and due at `now`.
    pub(crate) fn is_due(&self, timer: T, now: Instant) -> bool {
        self.get(timer).is_some_and(|t| t <= now)
    }

    /// Disarms `timer`.
    pub(crate) fn stop(&mut self, timer: T) {
        self.deadlines[timer.into()] = None;
    }

    /// Disarms `timer` and says so if it was due at `now`.
    pub(crate) fn expire(&mut self, timer: T, now: Instant) -> bool {
        let due = self.is_due(timer, now);
        if due {
            self.stop(timer);
        }
        due
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Debug, Clone, Copy)]
    enum T {
        A,
        B,
    }

    impl From<T> for usize {
        fn from(t: T) -> usize {
            t as usize
        }
    }

    #[test]
    fn the_next_deadline_is_the_earliest_armed_one() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut t: TimerTable<T, 2> = TimerTable::default();
        assert_eq!(t.next(), None);
        t.set(T::B, t0 + Duration::from_secs(2));
        t.set(T::A, t0 + Duration::from_secs(1));
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(1)));
        assert!(!t.expire(T::A, t0), "not due yet");
        assert!(t.expire(T::A, t0 + Duration::from_secs(1)));
        assert!(!t.is_set(T::A), "expiring disarms");
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(2)));
        t.stop(T::B);
        assert_eq!(t.next(), None);
    }
}
