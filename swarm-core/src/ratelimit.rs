//! A per-source token bucket, kept as one theoretical arrival time per source (GCRA), in
//! a table of bounded size: handshake messages under load (WireGuard's 20 per second,
//! burst 5; IPv6 sources grouped by /64, as one host usually owns one), and view sync
//! answers per peer (`crate::record::sync`).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use libp2p_identity::PeerId;

/// What a rate limiter counts as one source.
pub trait Source: Copy + Eq + Hash {
    /// The source this key belongs to.
    fn source(self) -> Self;
}

impl Source for IpAddr {
    /// An IPv6 address's /64.
    fn source(self) -> Self {
        match self {
            IpAddr::V4(_) => self,
            IpAddr::V6(v6) => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::from(o)
            }
        }
    }
}

impl Source for PeerId {
    fn source(self) -> Self {
        self
    }
}

/// Limits of the rate limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained messages per second per source.
    pub per_second: u32,
    /// Messages a quiet source may send at once.
    pub burst: u32,
    /// Sources tracked at most; a new source beyond this is refused until the table
    /// empties (entries leave once their bucket is full again).
    pub max_sources: usize,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self { per_second: 20, burst: 5, max_sources: 16_384 }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct RateLimiter<K = IpAddr> {
    limit: RateLimit,
    interval: Duration,
    table: HashMap<K, Instant>,
    last_sweep: Option<Instant>,
}

impl<K: Source> RateLimiter<K> {
    /// An empty limiter.
    pub fn new(limit: RateLimit) -> Self {
        let interval = Duration::from_secs(1) / limit.per_second.max(1);
        Self { limit, interval, table: HashMap::new(), last_sweep: None }
    }

    /// Whether a message from `from` may be processed now; takes a token if so.
    pub fn allow(&mut self, now: Instant, from: K) -> bool {
        self.sweep(now);
        let k = from.source();
        let slack = self.interval * self.limit.burst.saturating_sub(1);
        let full = self.table.len() >= self.limit.max_sources;
        match self.table.get_mut(&k) {
            Some(tat) => {
                let base = (*tat).max(now);
                if base.saturating_duration_since(now) > slack {
                    return false;
                }
                *tat = base + self.interval;
                true
            }
            None if full => false,
            None => {
                self.table.insert(k, now + self.interval);
                true
            }
        }
    }

    /// Drops sources whose bucket is full again, at most once a second.
    fn sweep(&mut self, now: Instant) {
        if self.last_sweep.is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1)) {
            return;
        }
        self.last_sweep = Some(now);
        self.table.retain(|_, tat| *tat > now);
    }

    /// Sources tracked now.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_per_second_burst_five() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut l = RateLimiter::new(RateLimit::default());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let burst = (0..10).filter(|_| l.allow(t0, ip)).count();
        assert_eq!(burst, 5);
        // Over ten seconds at 1000 tries per second: 20 per second get through.
        let mut allowed = 0;
        for ms in 1..=10_000u64 {
            if l.allow(t0 + Duration::from_millis(ms), ip) {
                allowed += 1;
            }
        }
        assert!((199..=201).contains(&allowed), "{allowed}");
        assert!(l.allow(t0, "192.0.2.2".parse().unwrap()), "sources are independent");
    }

    #[test]
    fn the_table_is_bounded_and_empties() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut l = RateLimiter::new(RateLimit { max_sources: 100, ..RateLimit::default() });
        for i in 0..200u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            assert_eq!(l.allow(t0, ip), i < 100, "{i}");
        }
        assert_eq!(l.len(), 100);
        assert!(l.allow(t0 + Duration::from_secs(2), IpAddr::from([9, 9, 9, 9])));
        assert_eq!(l.len(), 1);
        // One /64 is one source.
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        let t = t0 + Duration::from_secs(10);
        let n = (0..10).filter(|i| l.allow(t, if i % 2 == 0 { a } else { b })).count();
        assert_eq!(n, 5);
    }
}
