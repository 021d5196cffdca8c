//! Redialing members whose last connection closed (issue 16, part 5: a healed partition
//! reconverges in seconds).
//!
//! A partition closes every connection across it and, after the record TTL, expires the
//! other side's records. Nothing else dials across again until the next provider
//! look-up (up to the discovery interval's maximum, 30 s by default) or random walk. So
//! a node keeps the last [`MAX_LOST`] members it lost, with where they were, and dials
//! them again with backoff ([`FIRST_REDIAL`] doubling to [`MAX_BACKOFF`]) for
//! [`REDIAL_FOR`], until a connection to them is back. A handful is enough to bridge a
//! healed partition: the view sync on each new connection brings the other side's
//! records, and gossip meshes across it form again. A member that left for good costs
//! [`REDIAL_FOR`] / [`MAX_BACKOFF`] failed dials at most.
//!
//! Sans-IO and generic over the peer (`K`) and what a dial needs (`A`, the addresses).

use std::time::{Duration, Instant};

/// Members kept for redialing, the most recently lost.
pub const MAX_LOST: usize = 8;
/// The first redial, after the loss.
pub const FIRST_REDIAL: Duration = Duration::from_secs(1);
/// The backoff between redials doubles up to this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(4);
/// How long after the loss a member is redialed.
pub const REDIAL_FOR: Duration = Duration::from_secs(180);

#[derive(Debug, Clone)]
struct Lost<K, A> {
    peer: K,
    addresses: A,
    lost_at: Instant,
    next: Instant,
    backoff: Duration,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Redials<K, A> {
    lost: Vec<Lost<K, A>>,
}

impl<K, A> Default for Redials<K, A> {
    fn default() -> Self {
        Self { lost: Vec::new() }
    }
}

impl<K: PartialEq + Clone, A: Clone> Redials<K, A> {
    /// Nobody lost.
    pub fn new() -> Self {
        Self::default()
    }

    /// The last connection to member `peer` closed at `now`; it was reachable at
    /// `addresses`. The oldest loss gives way when [`MAX_LOST`] are kept.
    pub fn lost(&mut self, now: Instant, peer: K, addresses: A) {
        self.lost.retain(|l| l.peer != peer);
        if self.lost.len() >= MAX_LOST {
            if let Some(oldest) = (0..self.lost.len()).min_by_key(|&i| self.lost[i].lost_at) {
                self.lost.swap_remove(oldest);
            }
        }
        self.lost.push(Lost {
            peer,
            addresses,
            lost_at: now,
            next: now + FIRST_REDIAL,
            backoff: FIRST_REDIAL,
        });
    }

    /// A connection to `peer` is up: no more redials.
    pub fn connected(&mut self, peer: &K) {
        self.lost.retain(|l| l.peer != *peer);
    }

    /// The next redial, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.lost.iter().map(|l| l.next).min()
    }

    /// The members to dial at `now`, with their addresses; each is rescheduled with a
    /// doubled backoff. Members lost more than [`REDIAL_FOR`] ago are forgotten.
    pub fn due(&mut self, now: Instant) -> Vec<(K, A)> {
        self.lost.retain(|l| now.saturating_duration_since(l.lost_at) < REDIAL_FOR);
        let mut out = Vec::new();
        for l in &mut self.lost {
            if l.next <= now {
                out.push((l.peer.clone(), l.addresses.clone()));
                l.backoff = (l.backoff * 2).min(MAX_BACKOFF);
                l.next = now + l.backoff;
            }
        }
        out
    }

    /// Members kept.
    pub fn len(&self) -> usize {
        self.lost.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.lost.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_member_is_redialed_with_backoff_until_connected_or_given_up() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut r: Redials<u32, &str> = Redials::new();
        r.lost(t0, 7, "addr");
        assert_eq!(r.poll_timeout(), Some(t0 + FIRST_REDIAL));
        assert!(r.due(t0).is_empty());
        let s = Duration::from_secs;
        // Dials at 1, 3, 7, 11, 15 ... s: 1 s doubling, capped at 4 s.
        let mut at = Vec::new();
        let mut t = t0;
        while t < t0 + s(20) {
            if !r.due(t).is_empty() {
                at.push((t - t0).as_secs());
            }
            t += Duration::from_millis(500);
        }
        assert_eq!(at, vec![1, 3, 7, 11, 15, 19]);
        // Given up after REDIAL_FOR.
        assert!(!r.due(t0 + REDIAL_FOR - s(1)).is_empty());
        assert!(r.due(t0 + REDIAL_FOR).is_empty());
        assert!(r.is_empty());
        // Connected again: no more redials.
        r.lost(t0, 8, "a");
        r.connected(&8);
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn only_the_most_recently_lost_are_kept() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut r: Redials<u32, ()> = Redials::new();
        for i in 0..20u32 {
            r.lost(t0 + Duration::from_millis(u64::from(i)), i, ());
        }
        assert_eq!(r.len(), MAX_LOST);
        let mut due: Vec<u32> = r.due(t0 + Duration::from_secs(2)).into_iter().map(|d| d.0).collect();
        due.sort_unstable();
        assert_eq!(due, (20 - MAX_LOST as u32..20).collect::<Vec<_>>());
        // Lost again: kept once, its schedule restarted.
        r.lost(t0 + Duration::from_secs(3), 19, ());
        assert_eq!(r.len(), MAX_LOST);
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(2) + Duration::from_secs(2)));
    }
}
