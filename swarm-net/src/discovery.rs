//! When a node looks for other members of its namespace (data-flow stage 1).
//!
//! Two timers: the provider look-up (who announced the namespace key: `driver::find`,
//! whose first walk also announces us), which runs as soon as the routing table has a
//! peer and then backs off, doubling from 1 s to `max` (a joining node finds the members
//! in its first look-up; later look-ups only catch what changed, and newcomers find us
//! themselves); and the Kademlia random walk, which keeps the routing table fresh.

use std::time::{Duration, Instant};

const FIRST_LOOKUP: Duration = Duration::from_secs(1);

/// The discovery timers of one node. Time is passed in.
#[derive(Debug)]
pub(crate) struct DiscoverySchedule {
    lookup_interval: Duration,
    max_interval: Duration,
    next_lookup: Option<Instant>,
    walk_interval: Duration,
    next_walk: Option<Instant>,
}

/// What is due now.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Due {
    pub(crate) lookup: bool,
    pub(crate) walk: bool,
}

impl DiscoverySchedule {
    pub(crate) fn new(max_interval: Duration, walk_interval: Duration) -> Self {
        Self {
            lookup_interval: FIRST_LOOKUP,
            max_interval: max_interval.max(FIRST_LOOKUP),
            next_lookup: None,
            walk_interval,
            next_walk: None,
        }
    }

    /// The routing table gained a peer: the first look-up is due now.
    pub(crate) fn on_routing_peer(&mut self, now: Instant) {
        if self.next_lookup.is_none() {
            self.next_lookup = Some(now);
            self.next_walk = Some(now + self.walk_interval);
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        match (self.next_lookup, self.next_walk) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Due {
        let mut due = Due::default();
        if self.next_lookup.is_some_and(|t| t <= now) {
            due.lookup = true;
            self.next_lookup = Some(now + self.lookup_interval);
            self.lookup_interval = (self.lookup_interval * 2).min(self.max_interval);
        }
        if self.next_walk.is_some_and(|t| t <= now) {
            due.walk = true;
            self.next_walk = Some(now + self.walk_interval);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_until_routing_then_backs_off() {
        let t0 = Instant::now();
        let mut d = DiscoverySchedule::new(Duration::from_secs(30), Duration::from_secs(60));
        assert_eq!(d.poll_timeout(), None);
        d.on_routing_peer(t0);
        d.on_routing_peer(t0 + Duration::from_millis(500));
        assert_eq!(d.handle_timeout(t0), Due { lookup: true, walk: false });
        let mut t = t0;
        let mut gaps = Vec::new();
        for _ in 0..10 {
            let next = d.poll_timeout().unwrap();
            gaps.push(next - t);
            t = next;
            d.handle_timeout(t);
        }
        assert_eq!(gaps[0], Duration::from_secs(1));
        assert_eq!(gaps[1], Duration::from_secs(2));
        assert!(gaps.iter().all(|g| *g <= Duration::from_secs(30)));
        assert!(gaps.contains(&Duration::from_secs(30)));
    }
}
