//! Link summaries in gossip: each node's record carries, as a versioned extension, its
//! Vivaldi coordinate and a compact summary of each link it measures (quantiles and
//! counts, not histograms), bounded to [`MAX_LINKS`] links. From them any node can answer
//! "RTT / loss / throughput between A and B: measured by whom, how old — or estimated"
//! ([`LinkIndex`](super::index::LinkIndex)). The record layer carries them
//! (`record::ext`); nothing here reads records or the view.

use std::time::Duration;

use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};

use super::vivaldi::Coordinate;
use crate::bounded::BoundedVec;
use crate::codec::{self, WireMessage};

/// The extension kind of link summaries.
pub const EXTENSION_KIND: u16 = 1;
/// Links summarised in one record at most (the freshest).
pub const MAX_LINKS: usize = 64;
/// A handshake this recent confirms that a node is alive and reachable (the reject time
/// of a WireGuard session).
pub const CONFIRMED_WITHIN: Duration = Duration::from_secs(180);

/// Bit of [`LinkSummary::degraded`] per SLA metric.
pub mod degraded {
    /// Latency past its target.
    pub const LATENCY: u8 = 1;
    /// Jitter past its target.
    pub const JITTER: u8 = 2;
    /// Loss past its target.
    pub const LOSS: u8 = 4;
    /// Throughput below its target.
    pub const THROUGHPUT: u8 = 8;
}

/// What a node measured of one of its links, when it published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkSummary {
    /// The node at the other end.
    pub peer: PeerId,
    /// Round-trip median over the short window, µs.
    pub rtt_p50_us: u32,
    /// Round-trip 99th percentile, µs.
    pub rtt_p99_us: u32,
    /// Round trips behind them.
    pub rtt_samples: u32,
    /// The worse RFC 3550 jitter of the two directions, µs.
    pub jitter_us: u32,
    /// Inbound loss, parts per million, with enough packets behind it; else `None`.
    pub loss_ppm: Option<u32>,
    /// Packets behind the loss figure.
    pub loss_packets: u32,
    /// Goodput received, kbit/s.
    pub rx_kbps: u32,
    /// Goodput sent, kbit/s.
    pub tx_kbps: u32,
    /// The last active throughput test (packet train), kbit/s, if any.
    pub capacity_kbps: Option<u32>,
    /// Seconds between the last confirmed handshake and publication.
    pub handshake_age_s: u32,
    /// Age of the measurement at publication, ms.
    pub age_ms: u32,
    /// SLA metrics past their target (bits of [`degraded`]).
    pub degraded: u8,
}

/// The extension body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkSummaries {
    /// The node's network coordinate.
    pub coordinate: Option<Coordinate>,
    /// Its links.
    pub links: BoundedVec<LinkSummary, MAX_LINKS>,
}

impl WireMessage for LinkSummaries {
    const KIND: u8 = 0x03;
    const VERSION: u8 = 1;
}

/// Why link summaries could not be read or built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SummaryError {
    /// The extension does not decode.
    #[error("link summaries do not decode: {0}")]
    Decode(#[from] codec::DecodeError),
    /// The coordinate is out of range.
    #[error("invalid network coordinate")]
    Coordinate,
    /// Too large to encode.
    #[error("link summaries do not fit an extension")]
    TooLarge,
}

/// What is known of the link between two nodes.
#[derive(Debug, Clone, Copy, PartialEq)]
#[allow(clippy::large_enum_variant)] // a plain value, made per query; boxing would cost more
pub enum LinkAnswer {
    /// One end measured it.
    Measured {
        /// Which end.
        by: PeerId,
        /// Its summary.
        summary: LinkSummary,
        /// How old the measurement is now.
        age: Duration,
    },
    /// Nobody measured it; both ends' coordinates predict this round trip.
    Estimated {
        /// The predicted round trip, ms.
        rtt_ms: f64,
        /// The larger of the two coordinates' relative error estimates.
        error: f64,
    },
}

/// Whether a round trip of `claim_ms` claimed by one end of a link is implausible next
/// to the Vivaldi estimate `estimate_ms` with relative error `error`: more than the
/// estimate's error (at least 30 %) and 0.5 ms below it.
pub fn implausible_claim(claim_ms: f64, estimate_ms: f64, error: f64) -> bool {
    let slack = (3.0 * error.clamp(0.0, 1.0)).max(0.3);
    claim_ms < estimate_ms * (1.0 - slack).max(0.0) - 0.5
}

/// The fresher of the two ends' measurements (or, when they disagree by more than 2x and
/// 1 ms, the one with the larger round trip: one end claims a link better than the other
/// sees it, issue 16's T11), else an estimate from the two coordinates `estimate` gives
/// (when both ends are confirmed).
pub(crate) fn combine(
    ab: Option<LinkAnswer>,
    ba: Option<LinkAnswer>,
    estimate: impl FnOnce() -> Option<(Coordinate, Coordinate)>,
) -> Option<LinkAnswer> {
    let fresher = match (ab, ba) {
        (
            Some(LinkAnswer::Measured { age: x, summary: sx, .. }),
            Some(LinkAnswer::Measured { age: y, summary: sy, .. }),
        ) => {
            let (rx, ry) = (f64::from(sx.rtt_p50_us), f64::from(sy.rtt_p50_us));
            let (lo, hi) = (rx.min(ry), rx.max(ry));
            if hi > 2.0 * lo && hi - lo > 1_000.0 {
                if rx >= ry {
                    ab
                } else {
                    ba
                }
            } else if x <= y {
                ab
            } else {
                ba
            }
        }
        (x, y) => x.or(y),
    };
    if fresher.is_some() {
        return fresher;
    }
    let (ca, cb) = estimate()?;
    Some(LinkAnswer::Estimated { rtt_ms: ca.distance_ms(&cb), error: ca.error.max(cb.error) })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A measured link of `rtt_ms` (tests here and in `place`).
    pub(crate) fn summary(peer: PeerId, rtt_ms: u32, handshake_age_s: u32, age_ms: u32) -> LinkSummary {
        LinkSummary {
            peer,
            rtt_p50_us: rtt_ms * 1000,
            rtt_p99_us: rtt_ms * 1200,
            rtt_samples: 50,
            jitter_us: 300,
            loss_ppm: Some(50),
            loss_packets: 20_000,
            rx_kbps: 1_000,
            tx_kbps: 2_000,
            capacity_kbps: None,
            handshake_age_s,
            age_ms,
            degraded: 0,
        }
    }

    /// The id of test node `seed`.
    pub(crate) fn id(seed: u8) -> PeerId {
        crate::identity::tests::keypair(seed).public().to_peer_id()
    }

    /// A coordinate `ms` along the first axis.
    pub(crate) fn at(ms: f64) -> Coordinate {
        Coordinate { vector: [ms, 0.0, 0.0, 0.0], height: 0.5, error: 0.1 }
    }
}
