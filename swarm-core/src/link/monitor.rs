//! [`LinkMonitor`]: everything measured about one tunnel, sans-IO.
//!
//! - **RTT**: probes every `probe_interval` (200 ms), answered at once by the peer's
//!   monitor; the round trip less the replier's hold time goes into HdrHistograms over a
//!   short (10 s) and a long (60 s) window. After a surprising sample (a lost probe, or
//!   a round trip 25 % and 1 ms off the short-window median) the interval drops to a quarter for
//!   2 s, so a change is confirmed quickly (when its owner grants it: a
//!   [`crate::link::LinkTable`] lets [`MAX_FAST_LINKS`] links probe fast at once).
//! - **Jitter**: RFC 3550's estimator `J += (|D(i-1, i)| - J) / 16` over the probes the
//!   peer sends us (transit = arrival − the sender's timestamp, whose clock offset
//!   cancels in D), plus the plain mean of |D| per window; the peer reports its own
//!   estimate of our probes in every reply.
//! - **Loss**: probes unanswered after `probe_timeout`, and passively the gaps in the
//!   transport counters of all traffic from the peer (a reordered packet arrives late
//!   and fills its gap), which is what resolves 0.01 %.
//! - **Throughput**: goodput of the real traffic, from the tunnel's byte counters.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::probe::{Probe, ProbeError, ProbeReply, PROBE_LEN, REPLY_LEN};
use super::train::{TrainError, TrainReceiver, TrainSender, REPORT_LEN};
use super::window::{new_histogram, CounterWindow, WindowedHistogram};

/// Links of one node that probe at the quarter interval at once (see
/// [`LinkMonitor::grant_fast`]). A node whose every link looks surprising at once is
/// more likely itself the cause (a busy CPU delays every reply: a 64-node join on two
/// cores puts every link of every node into fast probing, which quadrupled the probe
/// load and slowed the join it was measuring); the rest keep the normal interval and
/// still see a change within their judge's window.
pub const MAX_FAST_LINKS: usize = 8;

/// Settings of a [`LinkMonitor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkConfig {
    /// Time between probes (200 ms).
    pub probe_interval: Duration,
    /// A probe unanswered this long is lost (2 s).
    pub probe_timeout: Duration,
    /// The short window (10 s): what SLA judgements use first.
    pub short_window: Duration,
    /// The long window (60 s).
    pub long_window: Duration,
    /// Probes awaiting an answer at most (64); older ones count as lost.
    pub max_outstanding: usize,
    /// Inbound packets the short window needs before the loss is reported to the peer
    /// (1 000).
    pub report_loss_after: u64,
    /// A link whose probes went unanswered this long is unreachable (1.5 s: seven
    /// probes in a row, which loss alone does not take at any sane rate).
    pub unreachable_after: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            probe_interval: Duration::from_millis(200),
            probe_timeout: Duration::from_secs(2),
            short_window: Duration::from_secs(10),
            long_window: Duration::from_secs(60),
            max_outstanding: 64,
            report_loss_after: 1_000,
            unreachable_after: Duration::from_millis(1_500),
        }
    }
}

/// Cumulative counters of a tunnel, as the data plane keeps them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassiveCounters {
    /// Transport packets received, among the settled counters.
    pub rx_packets: u64,
    /// Transport counters settled (received, or lost for good: see
    /// `PeerStatus::rx_settled`).
    pub rx_expected: u64,
    /// Bytes received (whole datagrams).
    pub rx_bytes: u64,
    /// Bytes sent (whole datagrams).
    pub tx_bytes: u64,
}

impl From<&crate::tunnel::PeerStatus> for PassiveCounters {
    /// The counters of a tunnel's status: settled counters less those lost are received.
    fn from(s: &crate::tunnel::PeerStatus) -> Self {
        Self {
            rx_packets: s.rx_settled - s.rx_lost,
            rx_expected: s.rx_settled,
            rx_bytes: s.rx_bytes,
            tx_bytes: s.tx_bytes,
        }
    }
}

/// RTT quantiles of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Quantiles {
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
    /// Samples behind them.
    pub samples: u64,
}

/// What one link's monitor may hold, at most, with the default [`LinkConfig`]: 1 000
/// measured links stay under 64 MiB.
pub const MAX_LINK_MEMORY: usize = 64 * 1024;

/// Upper bounds of [`RttBuckets`]: 0.25 ms to 2.5 s, for loopback, a LAN, a region and
/// the far side of the world (the SLA's 50 ms is one of them).
pub const RTT_BUCKET_BOUNDS: [Duration; 14] = [
    Duration::from_micros(250),
    Duration::from_micros(500),
    Duration::from_millis(1),
    Duration::from_micros(2_500),
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_millis(2_500),
    Duration::MAX,
];

/// Every round trip of a link counted into fixed buckets since its tunnel came up: a
/// Prometheus histogram (cumulative, so rates and quantiles over any range can be
/// computed from scrapes), where the windows' quantiles only tell the last seconds.
/// Unlike the windows it goes on across path changes and rekeys; a tunnel that goes down
/// (or a restart) starts it over from zero, a counter reset as Prometheus' `rate()` and
/// `increase()` expect.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RttBuckets {
    /// Samples at or below each bound of [`RTT_BUCKET_BOUNDS`] and above the one before
    /// (not cumulative).
    pub counts: [u64; RTT_BUCKET_BOUNDS.len()],
    /// All samples.
    pub count: u64,
    /// Their sum.
    pub sum: Duration,
}

impl RttBuckets {
    /// Counts one round trip.
    pub fn record(&mut self, rtt: Duration) {
        let i = RTT_BUCKET_BOUNDS.partition_point(|b| *b < rtt);
        self.counts[i.min(RTT_BUCKET_BOUNDS.len() - 1)] += 1;
        self.count += 1;
        self.sum = self.sum.saturating_add(rtt);
    }
}

/// A ratio and the number of events behind it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratio {
    /// The ratio, 0 to 1.
    pub value: f64,
    /// Events counted (packets or probes).
    pub samples: u64,
}

/// What one window says.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WindowStats {
    /// The window's length.
    pub window: Duration,
    /// Round trips.
    pub rtt: Option<Quantiles>,
    /// Mean |D| of the peer's probes in the window, and how many.
    pub jitter_mean: Option<(Duration, u64)>,
    /// Probes lost.
    pub probe_loss: Option<Ratio>,
    /// Inbound packets lost, from the transport counters.
    pub loss_in: Option<Ratio>,
    /// Goodput received, bits per second.
    pub rx_bps: Option<f64>,
    /// Goodput sent, bits per second.
    pub tx_bps: Option<f64>,
}

/// A snapshot of one link.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LinkStats {
    /// The short window.
    pub short: WindowStats,
    /// The long window.
    pub long: WindowStats,
    /// RFC 3550 jitter of the peer's probes, as we receive them.
    pub jitter_in: Option<Duration>,
    /// RFC 3550 jitter of our probes, as the peer receives them (its last report).
    pub jitter_out: Option<Duration>,
    /// Loss of our packets at the peer (its last report over its short window).
    pub loss_out: Option<f64>,
    /// The last round trip.
    pub last_rtt: Option<Duration>,
    /// Time since the last round trip was measured.
    pub age: Option<Duration>,
    /// The last active throughput test (bits per second of frame bodies) and its age.
    pub throughput: Option<(f64, Duration)>,
    /// Every round trip since the tunnel came up, in fixed buckets (filled by
    /// [`LinkTable::report`](super::LinkTable::report); empty from a bare monitor).
    pub rtt_buckets: RttBuckets,
}

/// RFC 3550 §6.4.1 and A.8: the smoothed mean of |D(i-1, i)|.
#[derive(Debug, Clone, Default)]
struct Rfc3550 {
    last_transit_us: Option<i64>,
    /// The sequence number of the last probe.
    last_seq: Option<u32>,
    j_us: f64,
    samples: u64,
    sum_abs_d_us: u64,
}

/// A change of transit time between two probes larger than this is a discontinuity of
/// the prober's clock (it restarted), not jitter: no probe waits that long.
const MAX_D_US: u64 = 1_000_000;

impl Rfc3550 {
    /// Probe `seq` arrived `transit_us` after the prober's clock said it left. A probe
    /// that does not follow the last one (its sequence went back: the prober restarted,
    /// or the probe was reordered) or whose transit jumped by more than [`MAX_D_US`]
    /// starts the differences over instead of counting: the estimate stays the link's
    /// (RFC 3550 resets its estimator likewise when a source's SSRC changes).
    fn on_arrival(&mut self, seq: u32, transit_us: i64) {
        let follows = self.last_seq.is_none_or(|last| seq > last);
        if let (Some(prev), true) = (self.last_transit_us, follows) {
            let d = (transit_us - prev).unsigned_abs();
            if d <= MAX_D_US {
                self.j_us += (d as f64 - self.j_us) / 16.0;
                self.samples += 1;
                self.sum_abs_d_us = self.sum_abs_d_us.saturating_add(d);
            }
        }
        self.last_transit_us = Some(transit_us);
        self.last_seq = Some(seq);
    }

    fn value(&self) -> Option<Duration> {
        (self.samples > 0).then(|| Duration::from_nanos((self.j_us * 1000.0) as u64))
    }
}

/// One window's worth of each cumulative counter.
#[derive(Debug, Clone)]
struct Windows {
    /// (probes resolved, probes lost)
    probes: CounterWindow<2>,
    /// (sum |D| µs, D samples)
    jitter: CounterWindow<2>,
    /// (rx packets, rx expected, rx bytes, tx bytes)
    passive: CounterWindow<4>,
}

impl Windows {
    /// Bytes held once full.
    fn memory_bytes(&self) -> usize {
        self.probes.memory_bytes() + self.jitter.memory_bytes() + self.passive.memory_bytes()
    }

    /// Samples per counter window: 16 (a sample every 4 s in the long window, every
    /// counter reading of the data plane's 1 s in the short one), so a window's increase
    /// spans its length plus at most a spacing.
    const SAMPLES: usize = 16;

    fn new(window: Duration) -> Self {
        Self {
            probes: CounterWindow::new(window, Self::SAMPLES),
            jitter: CounterWindow::new(window, Self::SAMPLES),
            passive: CounterWindow::new(window, Self::SAMPLES),
        }
    }
}

/// Measures one link. See the module docs. Feed it with `handle_*`, send what
/// [`Self::poll_probe`] returns, and read [`Self::snapshot`].
pub struct LinkMonitor {
    config: LinkConfig,
    epoch: Instant,
    next_probe: Instant,
    /// Until when a surprise asks for fast probing.
    fast_until: Option<Instant>,
    /// Whether fast probing is allowed (by the node's [`MAX_FAST_LINKS`]).
    fast_granted: bool,
    seq: u32,
    outstanding: VecDeque<(u32, Instant)>,
    rtt: [WindowedHistogram; 2],
    scratch: Histogram<u16>,
    windows: [Windows; 2],
    jitter: Rfc3550,
    probes_resolved: u64,
    probes_lost: u64,
    peer_jitter_us: Option<u32>,
    peer_loss_ppm: Option<u32>,
    last_rtt: Option<(Instant, Duration)>,
    median_cache: Option<(Instant, Option<Duration>)>,
    train_tx: TrainSender,
    train_rx: TrainReceiver,
}

impl core::fmt::Debug for LinkMonitor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LinkMonitor")
            .field("seq", &self.seq)
            .field("last_rtt", &self.last_rtt)
            .finish_non_exhaustive()
    }
}

/// The `q` quantile of `h`, µs: the middle of the bucket that holds it (HdrHistogram
/// answers with the bucket's top, up to 1/128 above a sample with two significant
/// figures; the middle halves that error and does not lean upwards, toward a breach).
fn quantile_us(h: &Histogram<u16>, q: f64) -> u64 {
    h.median_equivalent(h.value_at_quantile(q))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl LinkMonitor {
    /// A monitor whose first probe is due at `now`.
    pub fn new(now: Instant, config: LinkConfig) -> Self {
        Self {
            epoch: now,
            next_probe: now,
            fast_until: None,
            fast_granted: true,
            seq: 0,
            outstanding: VecDeque::new(),
            rtt: [
                WindowedHistogram::new(config.short_window, 5),
                WindowedHistogram::new(config.long_window, 4),
            ],
            scratch: new_histogram(),
            windows: [Windows::new(config.short_window), Windows::new(config.long_window)],
            jitter: Rfc3550::default(),
            probes_resolved: 0,
            probes_lost: 0,
            peer_jitter_us: None,
            peer_loss_ppm: None,
            last_rtt: None,
            median_cache: None,
            train_tx: TrainSender::default(),
            train_rx: TrainReceiver::default(),
            config,
        }
    }

    /// The settings.
    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// Bytes this monitor holds once its windows are full (histograms, counter windows,
    /// outstanding probes). At most [`MAX_LINK_MEMORY`] with the default settings.
    pub fn memory_bytes(&self) -> usize {
        let counters = self.windows.iter().map(Windows::memory_bytes).sum::<usize>();
        core::mem::size_of::<Self>()
            + self.rtt.iter().map(WindowedHistogram::memory_bytes).sum::<usize>()
            + super::window::histogram_bytes()
            + counters
            + self.config.max_outstanding * core::mem::size_of::<(u32, Instant)>()
    }

    fn clock_us(&self, now: Instant) -> u64 {
        micros(now.saturating_duration_since(self.epoch))
    }

    fn interval(&self, now: Instant) -> Duration {
        if self.probing_fast(now) {
            self.config.probe_interval / 4
        } else {
            self.config.probe_interval
        }
    }

    /// Whether a recent surprise (a lost probe, an odd round trip) asks for probing at
    /// a quarter of the interval at `now`.
    pub fn wants_fast(&self, now: Instant) -> bool {
        self.fast_until.is_some_and(|t| now < t)
    }

    /// Whether it probes at a quarter of the interval at `now` (wanted and granted).
    pub fn probing_fast(&self, now: Instant) -> bool {
        self.fast_granted && self.wants_fast(now)
    }

    /// Allows or forbids fast probing (allowed from the start). A forbidden monitor
    /// that wants it probes at the normal interval. Takes effect from the next probe.
    pub fn grant_fast(&mut self, granted: bool) {
        self.fast_granted = granted;
    }

    /// A probe body to send now, if one is due.
    pub fn poll_probe(&mut self, now: Instant) -> Option<[u8; PROBE_LEN]> {
        if now < self.next_probe {
            return None;
        }
        self.seq = self.seq.wrapping_add(1);
        if self.outstanding.len() >= self.config.max_outstanding.max(1) {
            self.outstanding.pop_front();
            self.probe_lost(now);
        }
        self.outstanding.push_back((self.seq, now));
        self.next_probe = now + self.interval(now);
        Some(Probe { seq: self.seq, sent_us: self.clock_us(now) }.emit())
    }

    /// A probe to send now, whatever the schedule (an operator's ping): returns its
    /// sequence number with its body. Its reply is a sample like any other.
    pub fn probe_now(&mut self, now: Instant) -> (u32, [u8; PROBE_LEN]) {
        self.next_probe = now;
        let body = self
            .poll_probe(now)
            .unwrap_or_else(|| Probe { seq: self.seq, sent_us: self.clock_us(now) }.emit());
        (self.seq, body)
    }

    fn probe_lost(&mut self, now: Instant) {
        self.probes_resolved += 1;
        self.probes_lost += 1;
        self.fast_until = Some(now + Duration::from_secs(2));
    }

    /// The peer's probe: updates the inbound jitter and returns the reply to send.
    pub fn handle_probe(&mut self, now: Instant, body: &[u8]) -> Result<[u8; REPLY_LEN], ProbeError> {
        let probe = Probe::parse(body)?;
        let transit = self.clock_us(now) as i64 - probe.sent_us as i64;
        self.jitter.on_arrival(probe.seq, transit);
        let jitter_in_us = self.jitter.value().map(|j| u32::try_from(j.as_micros()).unwrap_or(u32::MAX - 1));
        let loss_in_ppm = self.windows[0].passive.delta().and_then(|(d, _)| {
            let (rx, expected) = (d[0], d[1]);
            (expected >= self.config.report_loss_after)
                .then(|| ((expected.saturating_sub(rx)) as f64 / expected as f64 * 1e6) as u32)
        });
        Ok(ProbeReply { seq: probe.seq, echo_us: probe.sent_us, hold_us: 0, jitter_in_us, loss_in_ppm }
            .emit())
    }

    /// The peer's reply to one of our probes: a round-trip sample, returned.
    pub fn handle_reply(&mut self, now: Instant, body: &[u8]) -> Result<Option<Duration>, ProbeError> {
        let reply = ProbeReply::parse(body)?;
        self.peer_jitter_us = reply.jitter_in_us;
        self.peer_loss_ppm = reply.loss_in_ppm;
        // A reply to a probe already counted lost (or never sent) gives no sample.
        let Some(i) = self.outstanding.iter().position(|(s, _)| *s == reply.seq) else { return Ok(None) };
        self.outstanding.remove(i);
        let elapsed_us = self.clock_us(now).saturating_sub(reply.echo_us);
        let rtt_us = elapsed_us.saturating_sub(u64::from(reply.hold_us)).max(1);
        let rtt = Duration::from_micros(rtt_us);
        let median = self.short_median(now);
        for w in &mut self.rtt {
            w.record(now, rtt_us);
        }
        self.probes_resolved += 1;
        if let Some(m) = median {
            // Surprising: 25 % off the median, and at least 1 ms (loopback round trips
            // of tens of µs vary by more than 25 % all the time).
            let (m, r) = (m.as_secs_f64(), rtt.as_secs_f64());
            if (r - m).abs() > (0.25 * m).max(1e-3) {
                self.fast_until = Some(now + Duration::from_secs(2));
            }
        }
        self.last_rtt = Some((now, rtt));
        self.push_windows(now);
        Ok(Some(rtt))
    }

    /// The short window's median, recomputed at most once a second (merging the
    /// window's histograms costs ~20 µs; a sample costs well under 1 µs without it).
    fn short_median(&mut self, now: Instant) -> Option<Duration> {
        if let Some((at, median)) = self.median_cache {
            if now.saturating_duration_since(at) < Duration::from_secs(1) {
                return median;
            }
        }
        self.rtt[0].merge_into(now, &mut self.scratch);
        let median =
            (self.scratch.len() >= 5).then(|| Duration::from_micros(quantile_us(&self.scratch, 0.5)));
        self.median_cache = Some((now, median));
        median
    }

    /// The tunnel's cumulative counters, sampled (every probe interval is plenty).
    pub fn handle_counters(&mut self, now: Instant, c: PassiveCounters) {
        for w in &mut self.windows {
            w.passive.push(now, [c.rx_packets, c.rx_expected, c.rx_bytes, c.tx_bytes]);
        }
    }

    fn push_windows(&mut self, now: Instant) {
        let probes = [self.probes_resolved, self.probes_lost];
        let jitter = [self.jitter.sum_abs_d_us, self.jitter.samples];
        for w in &mut self.windows {
            w.probes.push(now, probes);
            w.jitter.push(now, jitter);
        }
    }

    /// Starts an active throughput test (see [`super::train`]): the train's id, whose
    /// packets the caller builds with [`super::train::packet`] and sends back to back.
    pub fn start_train(&mut self, now: Instant) -> Result<u32, TrainError> {
        self.train_tx.start(now)
    }

    /// A train packet from the peer.
    pub fn handle_train_packet(&mut self, now: Instant, body: &[u8]) -> Result<(), ProbeError> {
        self.train_rx.on_packet(now, body)
    }

    /// A report body to send back for a train the peer sent us.
    pub fn poll_train_report(&mut self) -> Option<[u8; REPORT_LEN]> {
        self.train_rx.poll_report()
    }

    /// The peer's report on our train: the throughput estimate, bits per second.
    pub fn handle_train_report(&mut self, now: Instant, body: &[u8]) -> Result<Option<f64>, ProbeError> {
        self.train_tx.on_report(now, body)
    }

    /// Counts probes unanswered past the timeout as lost.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.train_rx.handle_timeout(now);
        while let Some(&(_, sent)) = self.outstanding.front() {
            if now.saturating_duration_since(sent) < self.config.probe_timeout {
                break;
            }
            self.outstanding.pop_front();
            self.probe_lost(now);
        }
        self.push_windows(now);
    }

    /// When the next probe is due or the oldest probe times out.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timeout = self.outstanding.front().map(|(_, sent)| *sent + self.config.probe_timeout);
        Some(timeout.map_or(self.next_probe, |t| t.min(self.next_probe)))
    }

    fn window_stats(&mut self, now: Instant, i: usize) -> WindowStats {
        self.rtt[i].merge_into(now, &mut self.scratch);
        let h = &self.scratch;
        let q = |v: f64| Duration::from_micros(quantile_us(h, v));
        let rtt = (!h.is_empty()).then(|| Quantiles {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            max: Duration::from_micros(h.max()),
            samples: h.len(),
        });
        let w = &self.windows[i];
        let jitter_mean = w.jitter.delta().and_then(|(d, _)| {
            (d[1] > 0).then(|| (Duration::from_nanos(d[0].saturating_mul(1000) / d[1]), d[1]))
        });
        let probe_loss = w
            .probes
            .delta()
            .and_then(|(d, _)| (d[0] > 0).then(|| Ratio { value: d[1] as f64 / d[0] as f64, samples: d[0] }));
        let passive = w.passive.delta();
        let loss_in = passive.and_then(|(d, _)| {
            (d[1] > 0).then(|| Ratio { value: d[1].saturating_sub(d[0]) as f64 / d[1] as f64, samples: d[1] })
        });
        let rate = |bytes: u64, span: Duration| bytes as f64 * 8.0 / span.as_secs_f64();
        WindowStats {
            window: self.rtt[i].window(),
            rtt,
            jitter_mean,
            probe_loss,
            loss_in,
            rx_bps: passive.map(|(d, span)| rate(d[2], span)),
            tx_bps: passive.map(|(d, span)| rate(d[3], span)),
        }
    }

    /// What the monitor knows now.
    pub fn snapshot(&mut self, now: Instant) -> LinkStats {
        LinkStats {
            short: self.window_stats(now, 0),
            long: self.window_stats(now, 1),
            jitter_in: self.jitter.value(),
            jitter_out: self.peer_jitter_us.map(|us| Duration::from_micros(u64::from(us))),
            loss_out: self.peer_loss_ppm.map(|ppm| f64::from(ppm) / 1e6),
            last_rtt: self.last_rtt.map(|(_, r)| r),
            age: self.last_rtt.map(|(at, _)| now.saturating_duration_since(at)),
            throughput: self.train_tx.last().map(|(at, bps)| (bps, now.saturating_duration_since(at))),
            rtt_buckets: RttBuckets::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_trip_lands_in_the_first_bucket_that_holds_it() {
        let mut b = RttBuckets::default();
        for us in [1, 250, 251, 50_000, 50_001, 2_500_000, 2_500_001, u64::MAX / 2] {
            b.record(Duration::from_micros(us));
        }
        let at = |bound: Duration| b.counts[RTT_BUCKET_BOUNDS.iter().position(|x| *x == bound).unwrap()];
        assert_eq!(at(Duration::from_micros(250)), 2);
        assert_eq!(at(Duration::from_micros(500)), 1);
        assert_eq!(at(Duration::from_millis(50)), 1);
        assert_eq!(at(Duration::from_millis(100)), 1);
        assert_eq!(at(Duration::from_millis(2_500)), 1);
        assert_eq!(at(Duration::MAX), 2, "beyond 2.5 s: the +Inf bucket");
        assert_eq!(b.count, 8);
        assert_eq!(b.counts.iter().sum::<u64>(), 8);
    }
}
