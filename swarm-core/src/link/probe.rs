//! Probe frames (swarm frames of kinds 2 and 3 inside the tunnel): fixed layouts, read
//! through checked parsers, versioned.
//!
//! | frame | bytes | fields (big-endian) |
//! |-------|-------|---------------------|
//! | probe | 13 | version (1), sequence (u32), sender's clock in µs (u64) |
//! | reply | 25 | version (1), sequence (u32), echoed clock (u64), hold µs (u32), replier's inbound jitter in µs (u32, `u32::MAX`: none yet), replier's inbound loss in ppm (u32, `u32::MAX`: none yet) |
//!
//! The hold time (probe received → reply sent) is subtracted from the round trip, so a
//! busy replier does not inflate it. The replier's figures tell the prober how its
//! outbound path looks from the other end.

/// The only version so far.
pub const VERSION: u8 = 1;
/// Length of a probe body.
pub const PROBE_LEN: usize = 13;
/// Length of a reply body.
pub const REPLY_LEN: usize = 25;
const NONE: u32 = u32::MAX;

/// A probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Sequence number, per prober and peer.
    pub seq: u32,
    /// The prober's clock when it sent the probe, µs since its own epoch.
    pub sent_us: u64,
}

/// The answer to a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeReply {
    /// The probe's sequence number.
    pub seq: u32,
    /// The probe's clock, echoed.
    pub echo_us: u64,
    /// Time the replier held the probe before answering, µs.
    pub hold_us: u32,
    /// The replier's RFC 3550 jitter of the probes it receives from us, µs.
    pub jitter_in_us: Option<u32>,
    /// The replier's loss of the packets it receives from us, parts per million.
    pub loss_in_ppm: Option<u32>,
}

/// Why a probe body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// Wrong length for its kind.
    #[error("probe body of {0} bytes")]
    BadLength(usize),
    /// A version this node does not speak.
    #[error("probe version {0}")]
    UnknownVersion(u8),
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

fn check(body: &[u8], len: usize) -> Result<(), ProbeError> {
    if body.len() != len {
        return Err(ProbeError::BadLength(body.len()));
    }
    match body[0] {
        VERSION => Ok(()),
        v => Err(ProbeError::UnknownVersion(v)),
    }
}

impl Probe {
    /// Reads a probe body.
    pub fn parse(body: &[u8]) -> Result<Self, ProbeError> {
        check(body, PROBE_LEN)?;
        Ok(Self { seq: be32(body, 1), sent_us: be64(body, 5) })
    }

    /// Writes the body.
    pub fn emit(&self) -> [u8; PROBE_LEN] {
        let mut b = [0u8; PROBE_LEN];
        b[0] = VERSION;
        b[1..5].copy_from_slice(&self.seq.to_be_bytes());
        b[5..13].copy_from_slice(&self.sent_us.to_be_bytes());
        b
    }
}

impl ProbeReply {
    /// Reads a reply body.
    pub fn parse(body: &[u8]) -> Result<Self, ProbeError> {
        check(body, REPLY_LEN)?;
        let opt = |v: u32| (v != NONE).then_some(v);
        Ok(Self {
            seq: be32(body, 1),
            echo_us: be64(body, 5),
            hold_us: be32(body, 13),
            jitter_in_us: opt(be32(body, 17)),
            loss_in_ppm: opt(be32(body, 21)),
        })
    }

    /// Writes the body.
    pub fn emit(&self) -> [u8; REPLY_LEN] {
        let mut b = [0u8; REPLY_LEN];
        b[0] = VERSION;
        b[1..5].copy_from_slice(&self.seq.to_be_bytes());
        b[5..13].copy_from_slice(&self.echo_us.to_be_bytes());
        b[13..17].copy_from_slice(&self.hold_us.to_be_bytes());
        b[17..21].copy_from_slice(&self.jitter_in_us.unwrap_or(NONE).to_be_bytes());
        b[21..25].copy_from_slice(&self.loss_in_ppm.unwrap_or(NONE).to_be_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let p = Probe { seq: 7, sent_us: 123_456_789 };
        assert_eq!(Probe::parse(&p.emit()), Ok(p));
        let r = ProbeReply { seq: 7, echo_us: 1, hold_us: 20, jitter_in_us: Some(300), loss_in_ppm: None };
        assert_eq!(ProbeReply::parse(&r.emit()), Ok(r));
        for len in 0..40 {
            let b = vec![VERSION; len];
            assert_eq!(Probe::parse(&b).is_ok(), len == PROBE_LEN);
            assert_eq!(ProbeReply::parse(&b).is_ok(), len == REPLY_LEN);
        }
        let mut bad = p.emit();
        bad[0] = 9;
        assert_eq!(Probe::parse(&bad), Err(ProbeError::UnknownVersion(9)));
    }
}
