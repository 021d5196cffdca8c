//! When a node looks for other members of its namespace (data-flow stage 1), sans-IO:
//! the driver (`swarm-net`) passes the time in and does what is due.
//!
//! Two timers: the provider look-up (who announced the namespace key: swarm-net's walk,
//! whose first walk also announces us), which runs as soon as the routing table has a
//! peer and then backs off, doubling from 1 s to `max` (a joining node finds the members
//! in its first look-up; later look-ups only catch what changed, and newcomers find us
//! themselves); and the routing table's upkeep: a refresh (Kademlia's bootstrap: a walk
//! to our own key, then one per bucket) one walk interval after the first look-up and
//! every [`REFRESH_EVERY`] after, a walk to a random key every walk interval between.
//! Not at once: at a cold start every node's refresh would walk the whole swarm while
//! every node looks up the namespace (swarm-net's `kademlia` ends Kademlia's own
//! bootstraps, which did just that).

use std::time::{Duration, Instant};

const FIRST_LOOKUP: Duration = Duration::from_secs(1);
/// How often the routing table is refreshed in full (libp2p-kad's own period).
pub const REFRESH_EVERY: Duration = Duration::from_secs(300);

/// The discovery timers of one node. Time is passed in.
#[derive(Debug)]
pub struct DiscoverySchedule {
    lookup_interval: Duration,
    max_interval: Duration,
    next_lookup: Option<Instant>,
    walk_interval: Duration,
    next_walk: Option<Instant>,
    next_refresh: Option<Instant>,
    announce_every: Duration,
    /// When our provider record is announced again (`None`: by the next look-up).
    next_announce: Option<Instant>,
}

/// What is due now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Due {
    /// A look-up for the namespace's providers.
    pub lookup: bool,
    /// The look-up ends by announcing us ([`DiscoverySchedule::on_announced`] once it
    /// did; until then it is due again every second).
    pub announce: bool,
    /// A walk to a random key.
    pub walk: bool,
    /// A refresh of the routing table (it walks too: `walk` is then false).
    pub refresh: bool,
}

impl DiscoverySchedule {
    /// Look-ups back off up to `max_interval`; random walks every `walk_interval`; our
    /// provider record announced every `announce_every` (half its lifetime).
    pub fn new(max_interval: Duration, walk_interval: Duration, announce_every: Duration) -> Self {
        Self {
            lookup_interval: FIRST_LOOKUP,
            max_interval: max_interval.max(FIRST_LOOKUP),
            next_lookup: None,
            walk_interval,
            next_walk: None,
            next_refresh: None,
            announce_every: announce_every.max(FIRST_LOOKUP),
            next_announce: None,
        }
    }

    /// A look-up announced us at `now`.
    pub fn on_announced(&mut self, now: Instant) {
        self.next_announce = Some(now + self.announce_every);
    }

    /// The routing table gained a peer: the first look-up is due now.
    pub fn on_routing_peer(&mut self, now: Instant) {
        if self.next_lookup.is_none() {
            self.next_lookup = Some(now);
            self.next_walk = Some(now + self.walk_interval);
            self.next_refresh = self.next_walk;
        }
    }

    /// When something is due next (`None` until the routing table has a peer).
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.next_lookup, self.next_walk, self.next_refresh, self.next_announce].into_iter().flatten().min()
    }

    /// What is due at `now`; the timers move on.
    pub fn handle_timeout(&mut self, now: Instant) -> Due {
        let mut due = Due::default();
        if self.next_lookup.is_some_and(|t| t <= now) {
            due.lookup = true;
            self.next_lookup = Some(now + self.lookup_interval);
            self.lookup_interval = (self.lookup_interval * 2).min(self.max_interval);
            due.announce = self.next_announce.is_none();
        }
        if self.next_announce.is_some_and(|t| t <= now) {
            (due.lookup, due.announce) = (true, true);
            // Again in a second unless a look-up announces us meanwhile (one under way
            // takes no other).
            self.next_announce = Some(now + FIRST_LOOKUP);
        }
        if self.next_refresh.is_some_and(|t| t <= now) {
            due.refresh = true;
            self.next_refresh = Some(now + REFRESH_EVERY);
            self.next_walk = Some(now + self.walk_interval);
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
    #[allow(clippy::disallowed_methods)] // the test's epoch
    fn idle_until_routing_then_backs_off() {
        let t0 = Instant::now();
        let mut d = DiscoverySchedule::new(
            Duration::from_secs(30),
            Duration::from_secs(60),
            Duration::from_secs(300),
        );
        assert_eq!(d.poll_timeout(), None);
        d.on_routing_peer(t0);
        d.on_routing_peer(t0 + Duration::from_millis(500));
        assert_eq!(d.handle_timeout(t0), Due { lookup: true, announce: true, walk: false, refresh: false });
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

    #[test]
    #[allow(clippy::disallowed_methods)] // the test's epoch
    fn the_table_is_refreshed_a_walk_interval_after_joining_then_walked_between_refreshes() {
        let t0 = Instant::now();
        let walk = Duration::from_secs(30);
        let mut d = DiscoverySchedule::new(Duration::from_secs(30), walk, Duration::from_secs(3600));
        d.on_routing_peer(t0);
        let (mut refreshes, mut walks) = (Vec::new(), Vec::new());
        while let Some(t) = d.poll_timeout().filter(|t| *t <= t0 + Duration::from_secs(700)) {
            let due = d.handle_timeout(t);
            assert!(!(due.refresh && due.walk), "a refresh walks: no walk beside it");
            if due.refresh {
                refreshes.push(t - t0);
            }
            if due.walk {
                walks.push(t - t0);
            }
        }
        assert_eq!(refreshes, [walk, walk + REFRESH_EVERY, walk + 2 * REFRESH_EVERY]);
        // Nothing walks at the join: its look-up does.
        assert_eq!(walks.first(), Some(&(2 * walk)));
        let mut all: Vec<Duration> = refreshes.iter().chain(&walks).copied().collect();
        all.sort_unstable();
        assert!(all.windows(2).all(|w| w[1] - w[0] == walk), "one walk or refresh every interval: {all:?}");
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // the test's epoch
    fn look_ups_announce_until_one_did_then_every_half_lifetime() {
        let t0 = Instant::now();
        let every = Duration::from_secs(300);
        let mut d = DiscoverySchedule::new(Duration::from_secs(30), Duration::from_secs(600), every);
        // Runs the timers until a look-up is due to announce; when.
        let next_announcement = |d: &mut DiscoverySchedule| loop {
            let t = d.poll_timeout().unwrap();
            let due = d.handle_timeout(t);
            assert!(!due.announce || due.lookup);
            if due.announce {
                return t;
            }
        };
        d.on_routing_peer(t0);
        assert_eq!(next_announcement(&mut d), t0, "the first look-up announces");
        // It reached nobody: the next look-up announces.
        let t1 = next_announcement(&mut d);
        assert_eq!(t1, t0 + Duration::from_secs(1));
        d.on_announced(t1);
        let at = next_announcement(&mut d);
        assert_eq!(at, t1 + every, "again at half the record's lifetime");
        // Not announced (a look-up was under way): due again a second later.
        assert_eq!(next_announcement(&mut d), at + Duration::from_secs(1));
        d.on_announced(at + Duration::from_secs(1));
        assert_eq!(next_announcement(&mut d), at + Duration::from_secs(1) + every);
    }
}
