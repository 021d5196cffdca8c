//! A seeded link emulator for the deterministic simulator: one direction of a link with
//! a one-way delay (base plus normally distributed jitter, never negative), random loss,
//! occasional extra delay that reorders packets, and a rate limit with a bounded queue.
//! The same seed and the same calls give the same deliveries.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What one direction of a link does to packets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkProfile {
    /// Base one-way delay.
    pub delay: Duration,
    /// Standard deviation of the normally distributed delay added to each packet.
    pub jitter: Duration,
    /// Probability that a packet is lost.
    pub loss: f64,
    /// Probability that a packet is held back by `reorder_delay` (so later ones pass it).
    pub reorder: f64,
    /// The extra delay of a reordered packet.
    pub reorder_delay: Duration,
    /// Bits per second; `None` for no limit.
    pub rate_bps: Option<u64>,
    /// Longest queue before the rate limit drops (tail drop).
    pub queue: Duration,
}

impl Default for LinkProfile {
    fn default() -> Self {
        Self {
            delay: Duration::from_millis(10),
            jitter: Duration::ZERO,
            loss: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(5),
            rate_bps: None,
            queue: Duration::from_millis(50),
        }
    }
}

impl LinkProfile {
    /// The RFC 3550 jitter this profile produces: E|X(i) - X(i-1)| for two independent
    /// normal delays of deviation σ is 2σ/√π (while the delay stays clear of zero).
    pub fn expected_rfc3550_jitter(&self) -> Duration {
        self.jitter.mul_f64(2.0 / core::f64::consts::PI.sqrt())
    }
}

/// One direction of an emulated link.
#[derive(Debug)]
pub struct LinkEmulator {
    profile: LinkProfile,
    rng: StdRng,
    busy_until: Option<Instant>,
    /// Packets offered, lost by chance, dropped by the queue, delivered.
    pub counts: EmulatorCounts,
}

/// What an emulator did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmulatorCounts {
    /// Packets offered.
    pub offered: u64,
    /// Lost by the loss probability.
    pub lost: u64,
    /// Dropped because the rate limit's queue was full.
    pub dropped: u64,
}

impl LinkEmulator {
    /// An emulator with `profile`, seeded.
    pub fn new(profile: LinkProfile, seed: u64) -> Self {
        Self {
            profile,
            rng: StdRng::seed_from_u64(seed),
            busy_until: None,
            counts: EmulatorCounts::default(),
        }
    }

    /// Changes the profile from now on (a step change).
    pub fn set_profile(&mut self, profile: LinkProfile) {
        self.profile = profile;
    }

    /// The profile.
    pub fn profile(&self) -> &LinkProfile {
        &self.profile
    }

    fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal sample (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * core::f64::consts::PI * u2).cos()
    }

    /// Offers a packet of `len` bytes at `now`: when it arrives, or `None` if lost.
    pub fn transmit(&mut self, now: Instant, len: usize) -> Option<Instant> {
        self.counts.offered += 1;
        let mut departure = now;
        if let Some(rate) = self.profile.rate_bps.filter(|r| *r > 0) {
            let start = self.busy_until.map_or(now, |b| b.max(now));
            if start.saturating_duration_since(now) > self.profile.queue {
                self.counts.dropped += 1;
                return None;
            }
            departure = start + Duration::from_secs_f64(len as f64 * 8.0 / rate as f64);
            self.busy_until = Some(departure);
        }
        if self.profile.loss > 0.0 && self.uniform() < self.profile.loss {
            self.counts.lost += 1;
            return None;
        }
        let jitter = self.profile.jitter.as_secs_f64() * self.normal();
        let mut delay = (self.profile.delay.as_secs_f64() + jitter).max(0.0);
        if self.profile.reorder > 0.0 && self.uniform() < self.profile.reorder {
            delay += self.profile.reorder_delay.as_secs_f64();
        }
        Some(departure + Duration::from_secs_f64(delay))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_and_faithful() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let p = LinkProfile {
            delay: Duration::from_millis(20),
            jitter: Duration::from_millis(2),
            loss: 0.01,
            ..LinkProfile::default()
        };
        let run = |seed| {
            let mut e = LinkEmulator::new(p, seed);
            (0..100_000u64).map(|i| e.transmit(t0 + Duration::from_millis(i), 100)).collect::<Vec<_>>()
        };
        let a = run(1);
        assert_eq!(a, run(1), "same seed, same deliveries");
        assert_ne!(a, run(2));
        let lost = a.iter().filter(|d| d.is_none()).count();
        assert!((900..1100).contains(&lost), "{lost}");
        let delays: Vec<f64> = a
            .iter()
            .enumerate()
            .filter_map(|(i, d)| d.map(|d| (d - (t0 + Duration::from_millis(i as u64))).as_secs_f64() * 1e3))
            .collect();
        let mean = delays.iter().sum::<f64>() / delays.len() as f64;
        assert!((mean - 20.0).abs() < 0.05, "{mean}");
        let mean_abs_d =
            delays.windows(2).map(|w| (w[1] - w[0]).abs()).sum::<f64>() / (delays.len() - 1) as f64;
        let expected = p.expected_rfc3550_jitter().as_secs_f64() * 1e3;
        assert!((mean_abs_d - expected).abs() / expected < 0.02, "{mean_abs_d} vs {expected}");
    }

    #[test]
    fn the_rate_limit_queues_then_drops() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let p = LinkProfile { delay: Duration::ZERO, rate_bps: Some(8_000_000), ..LinkProfile::default() };
        let mut e = LinkEmulator::new(p, 1);
        // 1000-byte packets at 8 Mbit/s: 1 ms each; a burst of 100 queues 50 ms, then drops.
        let got: Vec<_> = (0..100).map(|_| e.transmit(t0, 1000)).collect();
        assert_eq!(got[0], Some(t0 + Duration::from_millis(1)));
        let delivered = got.iter().flatten().count();
        assert!((50..=52).contains(&delivered), "{delivered}");
        assert_eq!(e.counts.dropped as usize, 100 - delivered);
    }
}
