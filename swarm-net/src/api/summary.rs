//! The JSON face of a link: what `/links`, `swarm-node links --json`, `peers --json` and
//! `demo --json` print, as one serde type instead of objects built by hand at each place.
//!
//! Conventions, the same in every field: ids are strings; every number carries its unit
//! in its key (`_ms`, `_s`, `_ratio`, `_bps` for bits per second, `_packets`); floats are
//! rounded to what the measurement resolves (microseconds, parts per million, bits per
//! second), so no `0.09200000017881393`; a value not measured yet is `null`, and a
//! verdict that cannot be given yet is `"unknown"`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use swarm_core::link::{Metric, SlaState};

use super::OverlayAddresses;
use crate::dataplane::LinkReport;

/// One link as JSON: its path, round trips (short window), jitter, loss, goodput, and the
/// SLA verdict on each metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LinkJson {
    /// The peer.
    pub peer: String,
    /// `direct`, `relayed` or `closed`.
    pub path: String,
    /// The relay, when relayed.
    pub via: Option<String>,
    /// The peer's overlay addresses, where known.
    pub overlay: Option<OverlayAddresses>,
    /// The short window's length.
    pub window_s: f64,
    /// Round trips in the short window.
    pub rtt_samples: u64,
    /// Round-trip time, median of the short window.
    pub rtt_p50_ms: Option<f64>,
    /// Its 90th percentile.
    pub rtt_p90_ms: Option<f64>,
    /// Its 99th percentile.
    pub rtt_p99_ms: Option<f64>,
    /// Its largest.
    pub rtt_max_ms: Option<f64>,
    /// RFC 3550 jitter of the peer's probes, as this node receives them.
    pub jitter_in_ms: Option<f64>,
    /// RFC 3550 jitter of this node's probes, as the peer receives them.
    pub jitter_out_ms: Option<f64>,
    /// Inbound packets lost (short window, from the tunnel's counters).
    pub loss_in_ratio: Option<f64>,
    /// How many inbound packets that ratio is over.
    pub loss_in_packets: u64,
    /// This node's packets lost at the peer (its last report).
    pub loss_out_ratio: Option<f64>,
    /// Probes lost (short window).
    pub probe_loss_ratio: Option<f64>,
    /// Goodput received, bits per second (short window).
    pub rx_bps: Option<f64>,
    /// Goodput sent, bits per second (short window).
    pub tx_bps: Option<f64>,
    /// The last active throughput test, bits per second.
    pub throughput_bps: Option<f64>,
    /// Time since the last round trip was measured.
    pub age_ms: Option<f64>,
    /// The verdict on each metric.
    pub sla: SlaSummary,
}

/// The SLA verdict on each metric of a link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SlaSummary {
    /// Round-trip time against its target.
    pub latency: MsVerdict,
    /// Jitter against its target.
    pub jitter: MsVerdict,
    /// Loss against its target.
    pub loss: RatioVerdict,
    /// Throughput against its target.
    pub throughput: BpsVerdict,
}

/// A verdict on a metric in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MsVerdict {
    /// `ok`, `degraded` or `unknown` (not enough samples yet).
    pub state: String,
    /// The value judged.
    pub value_ms: Option<f64>,
    /// The target.
    pub target_ms: Option<f64>,
}

/// A verdict on a ratio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RatioVerdict {
    /// `ok`, `degraded` or `unknown`.
    pub state: String,
    /// The value judged.
    pub value_ratio: Option<f64>,
    /// The target.
    pub target_ratio: Option<f64>,
}

/// A verdict on a rate in bits per second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BpsVerdict {
    /// `ok`, `degraded` or `unknown`.
    pub state: String,
    /// The value judged.
    pub value_bps: Option<f64>,
    /// The target.
    pub target_bps: Option<f64>,
}

/// The one word for a verdict's state, in JSON, logs and tables alike.
pub fn sla_state_name(state: SlaState) -> &'static str {
    match state {
        SlaState::Ok => "ok",
        SlaState::Degraded => "degraded",
        SlaState::Unknown => "unknown",
    }
}

/// `value` rounded to `digits` decimals (what the measurement resolves).
pub fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    let r = (value * scale).round() / scale;
    // -0.0 prints as "-0.0".
    if r == 0.0 {
        0.0
    } else {
        r
    }
}

/// A duration in milliseconds, to the microsecond.
pub fn ms(d: Duration) -> f64 {
    round(d.as_secs_f64() * 1e3, 3)
}

/// A ratio, to the part per million.
pub fn ratio(r: f64) -> f64 {
    round(r, 6)
}

/// A rate in bits per second, to the bit.
pub fn bps(r: f64) -> f64 {
    round(r, 0)
}

impl LinkJson {
    /// The summary of `report`, with the peer's overlay addresses if known.
    pub fn new(report: &LinkReport, overlay: Option<&OverlayAddresses>) -> LinkJson {
        let w = &report.stats.short;
        let verdict = |metric: Metric| report.sla.iter().find(|v| v.metric == metric);
        let state = |metric: Metric| {
            sla_state_name(verdict(metric).map_or(SlaState::Unknown, |v| v.state)).to_owned()
        };
        // The judge keeps latency and jitter in ms, loss as a ratio, throughput in bit/s.
        let value = |metric: Metric| verdict(metric).and_then(|v| v.value);
        let target = |metric: Metric| verdict(metric).map(|v| v.target);
        let ms_verdict = |metric: Metric| MsVerdict {
            state: state(metric),
            value_ms: value(metric).map(|v| round(v, 3)),
            target_ms: target(metric).map(|v| round(v, 3)),
        };
        LinkJson {
            peer: report.peer.to_string(),
            path: report.path.kind().to_owned(),
            via: report.path.via().map(|p| p.to_string()),
            overlay: overlay.copied(),
            window_s: round(w.window.as_secs_f64(), 3),
            rtt_samples: w.rtt.map_or(0, |q| q.samples),
            rtt_p50_ms: w.rtt.map(|q| ms(q.p50)),
            rtt_p90_ms: w.rtt.map(|q| ms(q.p90)),
            rtt_p99_ms: w.rtt.map(|q| ms(q.p99)),
            rtt_max_ms: w.rtt.map(|q| ms(q.max)),
            jitter_in_ms: report.stats.jitter_in.map(ms),
            jitter_out_ms: report.stats.jitter_out.map(ms),
            loss_in_ratio: w.loss_in.map(|r| ratio(r.value)),
            loss_in_packets: w.loss_in.map_or(0, |r| r.samples),
            loss_out_ratio: report.stats.loss_out.map(ratio),
            probe_loss_ratio: w.probe_loss.map(|r| ratio(r.value)),
            rx_bps: w.rx_bps.map(bps),
            tx_bps: w.tx_bps.map(bps),
            throughput_bps: report.stats.throughput.map(|(b, _)| bps(b)),
            age_ms: report.stats.age.map(ms),
            sla: SlaSummary {
                latency: ms_verdict(Metric::Latency),
                jitter: ms_verdict(Metric::Jitter),
                loss: RatioVerdict {
                    state: state(Metric::Loss),
                    value_ratio: value(Metric::Loss).map(ratio),
                    target_ratio: target(Metric::Loss).map(ratio),
                },
                throughput: BpsVerdict {
                    state: state(Metric::Throughput),
                    value_bps: value(Metric::Throughput).map(bps),
                    target_bps: target(Metric::Throughput).map(bps),
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_leaves_no_float_noise() {
        assert_eq!(serde_json::to_string(&round(0.092_000_000_178_813_93, 3)).unwrap(), "0.092");
        assert_eq!(ms(Duration::from_nanos(92_000_178)), 92.0);
        assert_eq!(ratio(0.000_100_000_1), 0.0001);
        assert_eq!(round(-0.000_01, 3).to_string(), "0");
    }
}
