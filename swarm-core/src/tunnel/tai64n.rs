//! TAI64N timestamps, the payload of a handshake initiation. A responder accepts an
//! initiation only if its timestamp is strictly newer than the last one from that peer,
//! which stops a replayed initiation from resetting a session.

use core::time::Duration;

/// 12 bytes: big-endian seconds with the TAI64 label (2^62 + 10, as the Linux module
/// writes), then big-endian nanoseconds. Byte order is time order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Tai64N(pub [u8; 12]);

const TAI64_EPOCH: u64 = (1 << 62) + 10;
/// Nanoseconds are rounded down to this step (50 per second, as the Linux module does),
/// so the timestamp leaks no finer clock than the handshake rate limit allows.
const WHITENING_NS: u32 = 1_000_000_000 / 50;

impl Tai64N {
    /// The timestamp of `since_unix_epoch` (a wall-clock reading passed in).
    pub fn from_unix(since_unix_epoch: Duration) -> Self {
        let secs = TAI64_EPOCH.saturating_add(since_unix_epoch.as_secs());
        let nanos = since_unix_epoch.subsec_nanos() / WHITENING_NS * WHITENING_NS;
        let mut b = [0u8; 12];
        b[..8].copy_from_slice(&secs.to_be_bytes());
        b[8..].copy_from_slice(&nanos.to_be_bytes());
        Self(b)
    }

    /// Reads 12 bytes.
    pub fn from_bytes(bytes: [u8; 12]) -> Self {
        Self(bytes)
    }

    /// The next timestamp after `self` on the whitened grid: for a second initiation
    /// within one 20 ms step, which must still be strictly newer.
    pub fn next_step(&self) -> Self {
        let mut s = [0u8; 8];
        s.copy_from_slice(&self.0[..8]);
        let mut n = [0u8; 4];
        n.copy_from_slice(&self.0[8..]);
        let (mut secs, mut nanos) =
            (u64::from_be_bytes(s), u32::from_be_bytes(n) / WHITENING_NS * WHITENING_NS);
        nanos += WHITENING_NS;
        if nanos >= 1_000_000_000 {
            nanos = 0;
            secs = secs.saturating_add(1);
        }
        let mut b = [0u8; 12];
        b[..8].copy_from_slice(&secs.to_be_bytes());
        b[8..].copy_from_slice(&nanos.to_be_bytes());
        Self(b)
    }

    /// Whether this is a timestamp a responder may accept at all (not all zero, and its
    /// nanoseconds below one second).
    pub fn is_plausible(&self) -> bool {
        let mut n = [0u8; 4];
        n.copy_from_slice(&self.0[8..]);
        self.0 != [0; 12] && u32::from_be_bytes(n) < 1_000_000_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_order_is_time_order_and_whitened() {
        let t = |ms: u64| Tai64N::from_unix(Duration::from_millis(ms));
        let base = 1_800_000_000_000;
        assert!(t(base) < t(base + 20));
        assert!(t(base + 999) < t(base + 1000));
        assert_eq!(t(base + 1), t(base + 19), "20 ms whitening");
        assert!(t(base).is_plausible());
        assert!(!Tai64N::default().is_plausible());
        let mut bad = t(base).0;
        bad[8..].copy_from_slice(&1_000_000_000u32.to_be_bytes());
        assert!(!Tai64N::from_bytes(bad).is_plausible());
        assert_eq!(t(0).0[..8], TAI64_EPOCH.to_be_bytes());
        assert_eq!(t(base).next_step(), t(base + 20));
        assert_eq!(t(base + 990).next_step(), t(base + 1000));
    }
}
