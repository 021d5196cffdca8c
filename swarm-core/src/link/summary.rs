//! Link summaries in gossip: each node's record carries, as a versioned extension, its
//! Vivaldi coordinate and a compact summary of each link it measures (quantiles and
//! counts, not histograms), bounded to [`MAX_LINKS`] links. From them any node can answer
//! "RTT / loss / throughput between A and B: measured by whom, how old — or estimated".

use std::time::Duration;

use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};

use super::vivaldi::Coordinate;
use crate::bounded::{BoundedBytes, BoundedVec};
use crate::codec::{self, WireMessage};
use crate::record::{NodeRecord, RecordExtension, MAX_EXTENSION_SIZE};
use crate::time::UnixMillis;
use crate::view::{ClusterSnapshot, ClusterView};

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

impl LinkSummaries {
    /// The record extension carrying these summaries.
    pub fn to_extension(&self) -> Result<RecordExtension, SummaryError> {
        let bytes = codec::encode(self, MAX_EXTENSION_SIZE).map_err(|_| SummaryError::TooLarge)?;
        let body = BoundedBytes::try_from_vec(bytes).map_err(|_| SummaryError::TooLarge)?;
        Ok(RecordExtension { kind: EXTENSION_KIND, version: 1, body })
    }

    /// The summaries in `record`, checked; `Ok(None)` when it carries none (or a version
    /// this node does not read).
    pub fn from_record(record: &NodeRecord) -> Result<Option<Self>, SummaryError> {
        let Some(ext) = record.extension(EXTENSION_KIND).filter(|e| e.version == 1) else { return Ok(None) };
        let s: Self = codec::decode(&ext.body, MAX_EXTENSION_SIZE)?;
        if let Some(c) = &s.coordinate {
            c.validate().map_err(|_| SummaryError::Coordinate)?;
        }
        Ok(Some(s))
    }
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

/// How records are looked up: a view or a snapshot of one.
trait Records {
    fn record(&self, peer: &PeerId) -> Option<&NodeRecord>;
    fn all(&self) -> Box<dyn Iterator<Item = &NodeRecord> + '_>;
}

impl Records for ClusterView {
    fn record(&self, peer: &PeerId) -> Option<&NodeRecord> {
        self.get(peer).map(|e| &e.record)
    }
    fn all(&self) -> Box<dyn Iterator<Item = &NodeRecord> + '_> {
        Box::new(self.iter().map(|e| &e.record))
    }
}

impl Records for ClusterSnapshot {
    fn record(&self, peer: &PeerId) -> Option<&NodeRecord> {
        self.get(peer).map(|e| &e.record)
    }
    fn all(&self) -> Box<dyn Iterator<Item = &NodeRecord> + '_> {
        Box::new(self.entries.iter().map(|e| &e.record))
    }
}

fn summaries(r: &NodeRecord) -> Option<LinkSummaries> {
    LinkSummaries::from_record(r).ok().flatten()
}

/// How old a summary in `record` is at `now`.
pub(crate) fn age(record: &NodeRecord, s: &LinkSummary, now: UnixMillis) -> Duration {
    record.timestamp.age(now) + Duration::from_millis(u64::from(s.age_ms))
}

fn measured(view: &impl Records, by: &PeerId, of: &PeerId, now: UnixMillis) -> Option<LinkAnswer> {
    let record = view.record(by)?;
    let s = summaries(record)?.links.iter().copied().find(|l| l.peer == *of)?;
    Some(LinkAnswer::Measured { by: *by, summary: s, age: age(record, &s, now) })
}

/// Whether `s`, in `record`, shows a handshake confirmed within [`CONFIRMED_WITHIN`].
pub(crate) fn handshake_fresh(record: &NodeRecord, s: &LinkSummary, now: UnixMillis) -> bool {
    record.timestamp.age(now) + Duration::from_secs(u64::from(s.handshake_age_s)) <= CONFIRMED_WITHIN
}

/// Whether some record shows a handshake with `peer` confirmed within
/// [`CONFIRMED_WITHIN`]: its own (with anyone), or anyone's with it.
fn confirmed(view: &impl Records, peer: &PeerId, now: UnixMillis) -> bool {
    let fresh = |record: &NodeRecord, s: &LinkSummary| handshake_fresh(record, s, now);
    let own = view.record(peer).and_then(|r| summaries(r).map(|s| s.links.iter().any(|l| fresh(r, l))));
    own.unwrap_or(false)
        || view
            .all()
            .any(|r| summaries(r).is_some_and(|s| s.links.iter().any(|l| l.peer == *peer && fresh(r, l))))
}

fn link_between(view: &impl Records, a: &PeerId, b: &PeerId, now: UnixMillis) -> Option<LinkAnswer> {
    combine(measured(view, a, b, now), measured(view, b, a, now), || {
        if !(confirmed(view, a, now) && confirmed(view, b, now)) {
            return None;
        }
        Some((summaries(view.record(a)?)?.coordinate?, summaries(view.record(b)?)?.coordinate?))
    })
}

/// The fresher of the two ends' measurements, else an estimate from the two coordinates
/// `estimate` gives (when both ends are confirmed).
pub(crate) fn combine(
    ab: Option<LinkAnswer>,
    ba: Option<LinkAnswer>,
    estimate: impl FnOnce() -> Option<(Coordinate, Coordinate)>,
) -> Option<LinkAnswer> {
    let fresher = match (ab, ba) {
        (Some(LinkAnswer::Measured { age: x, .. }), Some(LinkAnswer::Measured { age: y, .. })) => {
            if x <= y {
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

impl ClusterView {
    /// The link between `a` and `b`: the fresher of the two ends' measurements, else a
    /// Vivaldi estimate when both ends have a coordinate and a handshake confirmed
    /// within [`CONFIRMED_WITHIN`], else nothing.
    pub fn link_between(&self, a: &PeerId, b: &PeerId, now: UnixMillis) -> Option<LinkAnswer> {
        link_between(self, a, b, now)
    }
}

impl ClusterSnapshot {
    /// See [`ClusterView::link_between`].
    pub fn link_between(&self, a: &PeerId, b: &PeerId, now: UnixMillis) -> Option<LinkAnswer> {
        link_between(self, a, b, now)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::identity::tests::{keypair, record_for};
    use crate::record::tests::{node_record, NOW};
    use crate::view::ViewEntry;

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

    fn entry(seed: u8, coordinate: Option<Coordinate>, links: Vec<LinkSummary>) -> ViewEntry {
        let key = keypair(seed);
        let mut record = node_record(&key, 1);
        let s = LinkSummaries { coordinate, links: BoundedVec::try_from_vec(links).unwrap() };
        record.extensions = BoundedVec::try_from_vec(vec![s.to_extension().unwrap()]).unwrap();
        #[allow(clippy::disallowed_methods)]
        let now = std::time::Instant::now();
        ViewEntry { record, tunnel: record_for(&key, NOW.0), received_at: now, expires_at: now, local: false }
    }

    fn id(seed: u8) -> PeerId {
        keypair(seed).public().to_peer_id()
    }

    fn at(ms: f64) -> Coordinate {
        Coordinate { vector: [ms, 0.0, 0.0, 0.0], height: 0.5, error: 0.1 }
    }

    #[test]
    fn measured_estimated_or_nothing() {
        let (a, b, c, d, e) = (id(1), id(2), id(3), id(4), id(5));
        let mut snapshot = ClusterSnapshot {
            local: a,
            entries: vec![
                // A measured B (2 s ago) and D; B measured A (500 ms ago).
                entry(1, Some(at(0.0)), vec![summary(b, 10, 5, 2000), summary(d, 30, 5, 0)]),
                entry(2, Some(at(10.0)), vec![summary(a, 11, 5, 500)]),
                // C talks to someone (a fresh handshake) but nobody measured C-D.
                entry(3, Some(at(40.0)), vec![summary(e, 5, 10, 0)]),
                entry(4, Some(at(30.0)), vec![]),
                // E's only handshake, as C reports it, is 10 s old: fine. F is unknown.
                entry(5, Some(at(50.0)), vec![]),
            ],
        };
        snapshot.entries.sort_by_key(|e| e.record.peer_id);
        match snapshot.link_between(&a, &b, NOW).unwrap() {
            LinkAnswer::Measured { by, summary, age } => {
                assert_eq!((by, summary.rtt_p50_us), (b, 11_000), "the fresher end wins");
                assert_eq!(age, Duration::from_millis(500));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(snapshot.link_between(&d, &a, NOW), Some(LinkAnswer::Measured { by, .. }) if by == a)
        );
        match snapshot.link_between(&c, &d, NOW).unwrap() {
            LinkAnswer::Estimated { rtt_ms, error } => assert_eq!((rtt_ms, error), (11.0, 0.1)),
            other => panic!("{other:?}"),
        }
        // Later, every handshake is older than 180 s: no estimates, measurements stay.
        let later = NOW.saturating_add(Duration::from_secs(200));
        assert_eq!(snapshot.link_between(&c, &d, later), None);
        assert!(snapshot.link_between(&a, &b, later).is_some());
        assert_eq!(snapshot.link_between(&a, &id(9), NOW), None, "an unknown node");
        // The index answers exactly what the snapshot answers, for every pair.
        for when in [NOW, later] {
            let index = crate::link::index::LinkIndex::new(&snapshot, when);
            for x in [1, 2, 3, 4, 5, 6, 9] {
                for y in [1, 2, 3, 4, 5, 6, 9] {
                    let (x, y) = (id(x), id(y));
                    assert_eq!(index.link_between(&x, &y), snapshot.link_between(&x, &y, when), "{x} {y}");
                }
            }
        }
    }

    #[test]
    fn a_full_summary_is_small_and_bounded() {
        let links: Vec<LinkSummary> = (0..64).map(|i| summary(id(i as u8 + 10), 20 + i, 30, 100)).collect();
        let s = LinkSummaries { coordinate: Some(at(12.5)), links: BoundedVec::try_from_vec(links).unwrap() };
        let ext = s.to_extension().unwrap();
        println!("link summaries of 64 peers: {} bytes", ext.body.len());
        assert!(ext.body.len() < 4096, "{}", ext.body.len());
        let too_many: Vec<LinkSummary> = (0..65).map(|i| summary(id(i as u8 + 10), 20, 30, 100)).collect();
        assert!(BoundedVec::<LinkSummary, MAX_LINKS>::try_from_vec(too_many).is_err());
        // A hostile coordinate is refused on reading.
        let mut record = node_record(&keypair(1), 1);
        let bad = LinkSummaries {
            coordinate: Some(Coordinate { height: f64::NAN, ..at(1.0) }),
            links: BoundedVec::new(),
        };
        record.extensions = BoundedVec::try_from_vec(vec![bad.to_extension().unwrap()]).unwrap();
        assert_eq!(LinkSummaries::from_record(&record), Err(SummaryError::Coordinate));
    }
}
