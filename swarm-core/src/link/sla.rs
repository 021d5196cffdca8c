//! Judging a link against a service level: by default the product's targets (latency
//! < 50 ms at the 99th percentile, jitter ≤ 1 ms, loss ≤ 0.01 %, throughput ≥ 1 Gbps).
//!
//! A metric is judged only when its window holds enough samples to mean something:
//! - latency needs `min_latency_samples` round trips in the short window (20: the p99 of
//!   fewer is just the maximum of a handful);
//! - jitter needs as many probe pairs;
//! - loss needs `1 / target` packets, so that a single lost packet is within the target:
//!   10 000 at 0.01 %. Only the passive transport counters reach that; probes alone do
//!   not. The short window is used when it holds enough, else the long one.
//! - throughput is judged only from an active measurement (the packet train of
//!   [`super::train`]), for 10 min after it (idle links are not slow).
//!
//! Hysteresis: a metric degrades when its value passes the target, and recovers only when
//! it has stayed at or below `recover_ratio` × target (80 %) for `recover_hold` (10 s).
//! A link held at the threshold therefore raises one event and does not flap.
//!
//! Time from onset to event: the judge runs at every probe interval (200 ms).
//! - A latency step shows in the first probe answered after it: within one probe
//!   interval plus the new round trip.
//! - A loss step shows once the lost packets in the window pass the target: with 1 %
//!   loss at 1 000 packets/s that is within about 0.2 s.
//! - Recovery takes `recover_hold` after the window has forgotten the bad samples: up to
//!   the short window (10 s) plus `recover_hold`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::monitor::{LinkStats, WindowStats};

/// A metric judged by the SLA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Round-trip time, at the policy's statistic.
    Latency,
    /// RFC 3550 jitter, the worse direction.
    Jitter,
    /// Packet loss, the worse direction.
    Loss,
    /// Throughput of an active measurement.
    Throughput,
}

impl Metric {
    /// Every metric.
    pub const ALL: [Metric; 4] = [Metric::Latency, Metric::Jitter, Metric::Loss, Metric::Throughput];

    /// A stable name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Latency => "latency",
            Metric::Jitter => "jitter",
            Metric::Loss => "loss",
            Metric::Throughput => "throughput",
        }
    }

    /// A value of this metric as the judge keeps it (ms for latency and jitter, a ratio
    /// for loss, bits per second for throughput) in SI units: seconds, ratio, bits per
    /// second.
    pub fn to_si(self, value: f64) -> f64 {
        match self {
            Metric::Latency | Metric::Jitter => value / 1e3,
            Metric::Loss | Metric::Throughput => value,
        }
    }

    /// The SI unit of [`to_si`](Self::to_si)'s values: `s`, `ratio` or `bit/s`.
    pub fn si_unit(self) -> &'static str {
        match self {
            Metric::Latency | Metric::Jitter => "s",
            Metric::Loss => "ratio",
            Metric::Throughput => "bit/s",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Which round-trip statistic latency is judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatencyStat {
    /// Median.
    P50,
    /// 90th percentile.
    P90,
    /// 99th percentile.
    P99,
    /// Largest.
    Max,
}

/// The service level a link is judged against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlaPolicy {
    /// Round-trip target (50 ms).
    pub latency: Duration,
    /// The statistic judged (p99).
    pub latency_stat: LatencyStat,
    /// Round trips needed before latency is judged (20).
    pub min_latency_samples: u64,
    /// Jitter target (1 ms).
    pub jitter: Duration,
    /// Probe pairs needed before jitter is judged (20).
    pub min_jitter_samples: u64,
    /// Loss target (0.0001 = 0.01 %).
    pub loss: f64,
    /// Throughput target, bits per second (1 Gbps).
    pub throughput_bps: f64,
    /// An active throughput result is judged for this long (10 min).
    pub throughput_valid: Duration,
    /// A degraded metric recovers at or below this share of its target (0.8).
    pub recover_ratio: f64,
    /// ... held this long (10 s).
    pub recover_hold: Duration,
}

impl Default for SlaPolicy {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(50),
            latency_stat: LatencyStat::P99,
            min_latency_samples: 20,
            jitter: Duration::from_millis(1),
            min_jitter_samples: 20,
            loss: 1e-4,
            throughput_bps: 1e9,
            throughput_valid: Duration::from_secs(600),
            recover_ratio: 0.8,
            recover_hold: Duration::from_secs(10),
        }
    }
}

impl SlaPolicy {
    /// Packets needed before loss is judged: one lost packet within the target.
    pub fn min_loss_packets(&self) -> u64 {
        (1.0 / self.loss.max(1e-9)).ceil() as u64
    }

    /// The target of a metric, in its unit (ms, ms, ratio, bits per second).
    pub fn target(&self, metric: Metric) -> f64 {
        match metric {
            Metric::Latency => self.latency.as_secs_f64() * 1e3,
            Metric::Jitter => self.jitter.as_secs_f64() * 1e3,
            Metric::Loss => self.loss,
            Metric::Throughput => self.throughput_bps,
        }
    }

    /// Whether `value` is worse than `target` for `metric` (throughput: lower is worse).
    fn breaches(metric: Metric, value: f64, target: f64) -> bool {
        match metric {
            Metric::Throughput => value < target,
            _ => value > target,
        }
    }

    fn recovered(&self, metric: Metric, value: f64, target: f64) -> bool {
        match metric {
            Metric::Throughput => value >= target / self.recover_ratio.max(1e-9),
            _ => value <= target * self.recover_ratio,
        }
    }

    fn latency_of(&self, w: &WindowStats) -> Option<f64> {
        let q = w.rtt.filter(|q| q.samples >= self.min_latency_samples)?;
        let d = match self.latency_stat {
            LatencyStat::P50 => q.p50,
            LatencyStat::P90 => q.p90,
            LatencyStat::P99 => q.p99,
            LatencyStat::Max => q.max,
        };
        Some(d.as_secs_f64() * 1e3)
    }

    /// The value of each metric that has enough samples to be judged, in its unit.
    pub fn values(&self, stats: &LinkStats) -> [Option<f64>; 4] {
        let latency = self.latency_of(&stats.short);
        let enough_jitter = stats.short.jitter_mean.is_some_and(|(_, n)| n >= self.min_jitter_samples);
        let jitter = enough_jitter
            .then(|| {
                [stats.jitter_in, stats.jitter_out]
                    .into_iter()
                    .flatten()
                    .map(|j| j.as_secs_f64() * 1e3)
                    .reduce(f64::max)
            })
            .flatten();
        let need = self.min_loss_packets();
        let inbound = [&stats.short, &stats.long]
            .into_iter()
            .find_map(|w| w.loss_in.filter(|r| r.samples >= need))
            .map(|r| r.value);
        let loss = [inbound, stats.loss_out].into_iter().flatten().reduce(f64::max);
        let throughput =
            stats.throughput.filter(|(_, age)| *age <= self.throughput_valid).map(|(bps, _)| bps);
        [latency, jitter, loss, throughput]
    }
}

/// The verdict on one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlaState {
    /// Not enough samples yet.
    Unknown,
    /// Within the target.
    Ok,
    /// Past the target.
    Degraded,
}

/// A change of verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SlaEvent {
    /// A metric passed its target.
    Degraded {
        /// Which.
        metric: Metric,
        /// Its value (ms, ms, ratio, bits per second).
        value: f64,
        /// The target, in the same unit.
        target: f64,
    },
    /// A degraded metric came back within the recovery margin and stayed there.
    Recovered {
        /// Which.
        metric: Metric,
        /// Its value.
        value: f64,
        /// The target.
        target: f64,
    },
}

#[derive(Debug, Clone, Copy)]
struct MetricState {
    state: SlaState,
    good_since: Option<Instant>,
    value: Option<f64>,
}

/// Judges one link over time: feed it snapshots, read events. See the module docs.
#[derive(Debug, Clone)]
pub struct SlaJudge {
    policy: SlaPolicy,
    metrics: [MetricState; 4],
    events: VecDeque<SlaEvent>,
}

impl SlaJudge {
    /// A judge with every metric unknown.
    pub fn new(policy: SlaPolicy) -> Self {
        let unknown = MetricState { state: SlaState::Unknown, good_since: None, value: None };
        Self { policy, metrics: [unknown; 4], events: VecDeque::new() }
    }

    /// The policy.
    pub fn policy(&self) -> &SlaPolicy {
        &self.policy
    }

    /// Judges a snapshot taken at `now`.
    pub fn judge(&mut self, now: Instant, stats: &LinkStats) {
        let values = self.policy.values(stats);
        for metric in Metric::ALL {
            let target = self.policy.target(metric);
            let m = &mut self.metrics[metric.index()];
            m.value = values[metric.index()];
            let Some(value) = m.value else { continue };
            let breach = SlaPolicy::breaches(metric, value, target);
            let good = self.policy.recovered(metric, value, target);
            match m.state {
                SlaState::Unknown | SlaState::Ok if breach => {
                    m.state = SlaState::Degraded;
                    m.good_since = None;
                    self.events.push_back(SlaEvent::Degraded { metric, value, target });
                }
                SlaState::Unknown => m.state = SlaState::Ok,
                SlaState::Ok => {}
                SlaState::Degraded if good => {
                    let since = *m.good_since.get_or_insert(now);
                    if now.saturating_duration_since(since) >= self.policy.recover_hold {
                        m.state = SlaState::Ok;
                        m.good_since = None;
                        self.events.push_back(SlaEvent::Recovered { metric, value, target });
                    }
                }
                SlaState::Degraded => m.good_since = None,
            }
        }
    }

    /// The verdict on a metric.
    pub fn state(&self, metric: Metric) -> SlaState {
        self.metrics[metric.index()].state
    }

    /// The last value judged for a metric.
    pub fn value(&self, metric: Metric) -> Option<f64> {
        self.metrics[metric.index()].value
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<SlaEvent> {
        self.events.pop_front()
    }
}
