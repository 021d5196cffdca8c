//! Sliding windows: an HdrHistogram window (microseconds, 2 significant figures) made of
//! a few rotating slots, and a window over cumulative counters.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Largest value a histogram holds, µs (10 s); larger samples are clamped to it.
pub const HISTOGRAM_MAX_US: u64 = 10_000_000;

/// Significant figures of the windows' histograms: values within 1 % (in fact within
/// 1/128: 1 µs steps up to 256 µs, 256 µs steps around 50 ms), 2 304 counters of 2 bytes
/// over 1 µs - 10 s. Three figures cost 15 360 counters (30 KB) per histogram, ten of
/// them per link; the accuracy tests' 5 % tolerance and the SLA's targets (50 ms, 1 ms)
/// do not need them.
pub const HISTOGRAM_SIGFIG: u8 = 2;

/// An empty histogram of the windows' shape: 1 µs to 10 s, [`HISTOGRAM_SIGFIG`]
/// significant figures, 16-bit counts (a slot never holds 65 535 samples in one bucket:
/// probes come at most 20 a second).
pub fn new_histogram() -> Histogram<u16> {
    // Valid bounds: 1 <= low, high >= 2 * low, sigfig <= 5.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, HISTOGRAM_SIGFIG).expect("valid histogram bounds")
}

/// Bytes of one histogram's counts.
pub fn histogram_bytes() -> usize {
    new_histogram().distinct_values() * core::mem::size_of::<u16>()
}

/// Samples of the last `window`, kept in `slots` histograms that each cover
/// `window / slots`; a snapshot merges the slots that overlap the window, so it covers
/// between `window * (slots - 1) / slots` and `window`.
pub struct WindowedHistogram {
    window: Duration,
    slot_len: Duration,
    /// (start, samples), oldest first.
    slots: VecDeque<(Instant, Histogram<u16>)>,
    capacity: usize,
}

impl core::fmt::Debug for WindowedHistogram {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WindowedHistogram")
            .field("window", &self.window)
            .field("slots", &self.slots.len())
            .finish()
    }
}

impl WindowedHistogram {
    /// A window of `window` in `slots` slots (at least 1).
    pub fn new(window: Duration, slots: usize) -> Self {
        let slots = slots.max(1);
        Self {
            window,
            slot_len: window / slots as u32,
            slots: VecDeque::with_capacity(slots),
            capacity: slots,
        }
    }

    /// The window's length.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Bytes held, once every slot is in use.
    pub fn memory_bytes(&self) -> usize {
        self.capacity * histogram_bytes() + core::mem::size_of::<Self>()
    }

    /// Records `value_us` at `now`.
    pub fn record(&mut self, now: Instant, value_us: u64) {
        let fresh =
            self.slots.back().is_some_and(|(start, _)| now.saturating_duration_since(*start) < self.slot_len);
        if !fresh {
            let mut h = if self.slots.len() >= self.capacity {
                self.slots.pop_front().map_or_else(new_histogram, |(_, h)| h)
            } else {
                new_histogram()
            };
            h.reset();
            self.slots.push_back((now, h));
        }
        if let Some((_, h)) = self.slots.back_mut() {
            h.saturating_record(value_us.clamp(1, HISTOGRAM_MAX_US));
        }
    }

    /// Merges the slots that overlap `[now - window, now]` into `into` (reset first).
    pub fn merge_into(&self, now: Instant, into: &mut Histogram<u16>) {
        into.reset();
        for (start, h) in &self.slots {
            if *start + self.slot_len + self.window > now {
                // Counts stay far below u16::MAX; a failed add would only lose samples.
                let _ = into.add(h);
            }
        }
    }
}

/// A window over cumulative counters: keeps `(time, value)` samples for `window` and
/// gives the increase over it.
#[derive(Debug, Clone)]
pub struct CounterWindow<const N: usize> {
    window: Duration,
    samples: VecDeque<(Instant, [u64; N])>,
    max_samples: usize,
}

impl<const N: usize> CounterWindow<N> {
    /// The window's length.
    pub fn window(&self) -> Duration {
        self.window
    }
}

impl<const N: usize> CounterWindow<N> {
    /// A window of `window`, keeping about `max_samples` samples: a new sample closer than
    /// `window / (max_samples - 1)` to the one before the last replaces the last.
    pub fn new(window: Duration, max_samples: usize) -> Self {
        let max_samples = max_samples.max(2);
        // Samples are at least a spacing apart but for the last, and one may precede the
        // window: never more than `max_samples + 2`, so the buffer never grows.
        Self { window, samples: VecDeque::with_capacity(max_samples + 2), max_samples }
    }

    /// Bytes held (the sample buffer, allocated once).
    pub fn memory_bytes(&self) -> usize {
        self.samples.capacity().max(self.max_samples + 2) * core::mem::size_of::<(Instant, [u64; N])>()
            + core::mem::size_of::<Self>()
    }

    /// Adds a sample of the cumulative counters.
    pub fn push(&mut self, now: Instant, values: [u64; N]) {
        let spacing = self.window / (self.max_samples as u32 - 1).max(1);
        let n = self.samples.len();
        if n >= 2 && now.saturating_duration_since(self.samples[n - 2].0) < spacing {
            self.samples[n - 1] = (now, values);
        } else {
            self.samples.push_back((now, values));
        }
        // Keep one sample at or before the window's start, so the increase covers it.
        while self.samples.len() >= 2 && self.samples[1].0 + self.window <= now {
            self.samples.pop_front();
        }
    }

    /// The increase of each counter and the time it spans, over the window.
    pub fn delta(&self) -> Option<([u64; N], Duration)> {
        let (t0, first) = self.samples.front()?;
        let (t1, last) = self.samples.back()?;
        if t1 <= t0 {
            return None;
        }
        let mut d = [0u64; N];
        for i in 0..N {
            d[i] = last[i].saturating_sub(first[i]);
        }
        Some((d, t1.saturating_duration_since(*t0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_window_forgets_old_samples() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut w = WindowedHistogram::new(Duration::from_secs(10), 5);
        let mut scratch = new_histogram();
        for i in 0..100u64 {
            w.record(t0 + Duration::from_millis(i * 100), 1000); // 10 s of 1 ms
        }
        for i in 100..150u64 {
            w.record(t0 + Duration::from_millis(i * 100), 80_000); // then 5 s of 80 ms
        }
        let now = t0 + Duration::from_millis(15_000);
        w.merge_into(now, &mut scratch);
        assert!(scratch.len() >= 80 && scratch.len() <= 100, "{}", scratch.len());
        assert_eq!(scratch.value_at_quantile(0.99) / 1000, 80);
        // Ten more seconds of 80 ms: the 1 ms samples are gone.
        for i in 150..250u64 {
            w.record(t0 + Duration::from_millis(i * 100), 80_000);
        }
        w.merge_into(t0 + Duration::from_millis(25_000), &mut scratch);
        assert_eq!(scratch.value_at_quantile(0.01) / 1000, 80);
        // Two significant figures: within 1 % anywhere in the range, exact below 256 µs.
        let mut h = new_histogram();
        for us in [1u64, 255, 12_345, 50_000, 49_700, 999_999, HISTOGRAM_MAX_US] {
            h.reset();
            h.record(us).unwrap();
            let v = h.value_at_quantile(0.5) as f64;
            assert!((v - us as f64).abs() / us as f64 <= 0.01, "{us}: {v}");
        }
        assert_eq!(h.value_at_quantile(0.5), h.highest_equivalent(HISTOGRAM_MAX_US));
        h.reset();
        h.record(255).unwrap();
        assert_eq!(h.value_at_quantile(0.5), 255);
        assert_eq!(histogram_bytes(), 2_304 * 2);
    }

    #[test]
    fn the_counter_window_spans_its_length() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut w = CounterWindow::<1>::new(Duration::from_secs(10), 64);
        for s in 0..=30u64 {
            w.push(t0 + Duration::from_secs(s), [s * 100]);
        }
        let (d, span) = w.delta().unwrap();
        assert_eq!((d[0], span), (1000, Duration::from_secs(10)));
        // Thinned to about 6 samples, the span stays between the window and a spacing more.
        let mut w = CounterWindow::<1>::new(Duration::from_secs(10), 6);
        for ms in 0..=30_000u64 {
            w.push(t0 + Duration::from_millis(ms), [ms]);
            assert!(w.samples.len() <= 8);
        }
        assert_eq!(w.samples.capacity(), 8, "never grew");
        let (d, span) = w.delta().unwrap();
        assert_eq!(d[0], span.as_millis() as u64);
        assert!(span >= Duration::from_secs(10) && span <= Duration::from_secs(12), "{span:?}");
    }
}
