//! The active throughput test: a bounded packet train. The prober sends `count` packets
//! of one size back to back (kind 4 frames); the receiver times the train from its first
//! to its last packet and answers with a report (kind 5); the capacity estimate is the
//! bytes after the first packet over that span (packet dispersion: the train leaves at
//! the sender's speed and arrives spread out by the slowest hop).
//!
//! It cannot starve real traffic: a train is at most [`MAX_PACKETS`] packets of at most
//! [`MAX_PACKET`] bytes (about 360 KB: 3 ms of a 1 Gbps link), only on demand, at most
//! one in flight per link, and not more often than [`MIN_INTERVAL`].
//!
//! | frame | bytes | fields (big-endian) |
//! |-------|-------|---------------------|
//! | train packet | 9 + padding | version, train id (u32), index (u16), count (u16) |
//! | report | 17 | version, train id (u32), received (u16), count (u16), span µs (u32), bytes after the first (u32) |

use std::time::{Duration, Instant};

use super::probe::{ProbeError, VERSION};

/// Packets in a train at most.
pub const MAX_PACKETS: u16 = 256;
/// Bytes of a train packet's body at most.
pub const MAX_PACKET: usize = 1400;
/// Smallest train packet body.
pub const MIN_PACKET: usize = 9;
/// Length of a report body.
pub const REPORT_LEN: usize = 17;
/// Trains of one link start at least this far apart.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// A train whose report has not come after this is given up (and the receiver reports
/// a train whose last packet was lost after this).
pub const TRAIN_TIMEOUT: Duration = Duration::from_secs(2);

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

/// The body of train packet `index` of `count`, `size` bytes long.
pub fn packet(train: u32, index: u16, count: u16, size: usize) -> Vec<u8> {
    let mut b = vec![0u8; size.clamp(MIN_PACKET, MAX_PACKET)];
    emit_packet(train, index, count, &mut b);
    b
}

/// Writes train packet `index` of `count` into `out` (as long as `out`, clamped to
/// [`MIN_PACKET`]..=[`MAX_PACKET`]; the padding is zeros); its length. Writes nothing into
/// an `out` shorter than [`MIN_PACKET`] and returns 0.
pub fn emit_packet(train: u32, index: u16, count: u16, out: &mut [u8]) -> usize {
    let len = out.len().min(MAX_PACKET);
    if len < MIN_PACKET {
        return 0;
    }
    let b = &mut out[..len];
    b.fill(0);
    b[0] = VERSION;
    b[1..5].copy_from_slice(&train.to_be_bytes());
    b[5..7].copy_from_slice(&index.to_be_bytes());
    b[7..9].copy_from_slice(&count.to_be_bytes());
    len
}

/// What the receiver reports of a train.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainReport {
    /// The train.
    pub train: u32,
    /// Packets received.
    pub received: u16,
    /// Packets sent.
    pub count: u16,
    /// First to last packet received, µs.
    pub span_us: u32,
    /// Bytes of the packets after the first.
    pub bytes: u32,
}

impl TrainReport {
    /// Reads a report body.
    pub fn parse(b: &[u8]) -> Result<Self, ProbeError> {
        if b.len() != REPORT_LEN {
            return Err(ProbeError::BadLength(b.len()));
        }
        if b[0] != VERSION {
            return Err(ProbeError::UnknownVersion(b[0]));
        }
        Ok(Self {
            train: be32(b, 1),
            received: be16(b, 5),
            count: be16(b, 7),
            span_us: be32(b, 9),
            bytes: be32(b, 13),
        })
    }

    /// Writes the body.
    pub fn emit(&self) -> [u8; REPORT_LEN] {
        let mut b = [0u8; REPORT_LEN];
        b[0] = VERSION;
        b[1..5].copy_from_slice(&self.train.to_be_bytes());
        b[5..7].copy_from_slice(&self.received.to_be_bytes());
        b[7..9].copy_from_slice(&self.count.to_be_bytes());
        b[9..13].copy_from_slice(&self.span_us.to_be_bytes());
        b[13..17].copy_from_slice(&self.bytes.to_be_bytes());
        b
    }

    /// The capacity estimate, bits per second (of frame bodies), when the span says
    /// anything.
    pub fn bits_per_second(&self) -> Option<f64> {
        (self.received >= 2 && self.span_us > 0)
            .then(|| f64::from(self.bytes) * 8.0 / (f64::from(self.span_us) / 1e6))
    }
}

/// The receiving end: times the current train.
#[derive(Debug, Clone, Default)]
pub struct TrainReceiver {
    current: Option<(TrainReport, Instant, Instant)>,
    reports: Vec<[u8; REPORT_LEN]>,
}

impl TrainReceiver {
    /// A train packet arrived.
    pub fn on_packet(&mut self, now: Instant, body: &[u8]) -> Result<(), ProbeError> {
        if body.len() < MIN_PACKET || body.len() > MAX_PACKET {
            return Err(ProbeError::BadLength(body.len()));
        }
        if body[0] != VERSION {
            return Err(ProbeError::UnknownVersion(body[0]));
        }
        let (train, index, count) = (be32(body, 1), be16(body, 5), be16(body, 7));
        if count == 0 || count > MAX_PACKETS || index >= count {
            return Err(ProbeError::BadLength(body.len()));
        }
        match &mut self.current {
            Some((r, _, last)) if r.train == train => {
                r.received = r.received.saturating_add(1).min(r.count);
                r.bytes = r.bytes.saturating_add(body.len() as u32);
                *last = now;
            }
            _ => {
                self.finish();
                let r = TrainReport { train, received: 1, count, span_us: 0, bytes: 0 };
                self.current = Some((r, now, now));
            }
        }
        if index + 1 == count {
            self.finish();
        }
        Ok(())
    }

    fn finish(&mut self) {
        if let Some((mut r, first, last)) = self.current.take() {
            r.span_us = u32::try_from(last.saturating_duration_since(first).as_micros()).unwrap_or(u32::MAX);
            self.reports.push(r.emit());
        }
    }

    /// Reports a train whose last packet never came.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self
            .current
            .as_ref()
            .is_some_and(|(_, _, last)| now.saturating_duration_since(*last) >= TRAIN_TIMEOUT)
        {
            self.finish();
        }
    }

    /// A report to send back.
    pub fn poll_report(&mut self) -> Option<[u8; REPORT_LEN]> {
        self.reports.pop()
    }
}

/// The probing end: at most one train in flight, the last result kept.
#[derive(Debug, Clone, Default)]
pub struct TrainSender {
    next_id: u32,
    in_flight: Option<(u32, Instant)>,
    last_start: Option<Instant>,
    last: Option<(Instant, f64)>,
}

/// Why a train was not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// One is in flight.
    #[error("a throughput test is already running on this link")]
    Busy,
    /// The last one started less than a second ago.
    #[error("throughput tests on one link are at least 1 s apart")]
    TooSoon,
}

impl TrainSender {
    /// Starts a train: its id, to build its packets with [`packet`].
    pub fn start(&mut self, now: Instant) -> Result<u32, TrainError> {
        if let Some((_, at)) = self.in_flight {
            if now.saturating_duration_since(at) < TRAIN_TIMEOUT {
                return Err(TrainError::Busy);
            }
        }
        if self.last_start.is_some_and(|t| now.saturating_duration_since(t) < MIN_INTERVAL) {
            return Err(TrainError::TooSoon);
        }
        self.next_id = self.next_id.wrapping_add(1);
        self.in_flight = Some((self.next_id, now));
        self.last_start = Some(now);
        Ok(self.next_id)
    }

    /// The receiver's report: the estimate, when it answers our train in flight.
    pub fn on_report(&mut self, now: Instant, body: &[u8]) -> Result<Option<f64>, ProbeError> {
        let report = TrainReport::parse(body)?;
        match self.in_flight {
            Some((id, _)) if id == report.train => {
                self.in_flight = None;
                let bps = report.bits_per_second();
                if let Some(bps) = bps {
                    self.last = Some((now, bps));
                }
                Ok(bps)
            }
            _ => Ok(None),
        }
    }

    /// The last estimate and when it was made.
    pub fn last(&self) -> Option<(Instant, f64)> {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_train_is_timed_and_reported() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut tx = TrainSender::default();
        let mut rx = TrainReceiver::default();
        let id = tx.start(t0).unwrap();
        assert_eq!(tx.start(t0), Err(TrainError::Busy));
        // 100 packets of 1000 bytes, one every 100 µs: 80 Mbit/s.
        for i in 0..100u16 {
            rx.on_packet(t0 + Duration::from_micros(u64::from(i) * 100), &packet(id, i, 100, 1000)).unwrap();
        }
        let report = rx.poll_report().unwrap();
        let bps = tx.on_report(t0, &report).unwrap().unwrap();
        assert!((bps - 80e6).abs() < 1e3, "{bps}");
        assert_eq!(tx.start(t0 + Duration::from_millis(10)), Err(TrainError::TooSoon));
        assert!(tx.start(t0 + MIN_INTERVAL).is_ok());
        // A train whose tail is lost is reported after the timeout.
        for i in 0..10u16 {
            rx.on_packet(t0 + Duration::from_micros(u64::from(i) * 100), &packet(9, i, 50, 500)).unwrap();
        }
        assert!(rx.poll_report().is_none());
        rx.handle_timeout(t0 + TRAIN_TIMEOUT + Duration::from_millis(1));
        let r = TrainReport::parse(&rx.poll_report().unwrap()).unwrap();
        assert_eq!((r.received, r.count, r.bytes, r.span_us), (10, 50, 4500, 900));
        // Bad input.
        assert!(rx.on_packet(t0, &[VERSION; 3]).is_err());
        assert!(rx.on_packet(t0, &packet(1, 5, 3, 100)).is_err(), "index past count");
        assert!(TrainReport::parse(&[0; 16]).is_err());
    }
}
