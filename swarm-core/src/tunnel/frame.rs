//! What a decrypted payload is (DESIGN.md, stage 4). A payload whose first nibble is 4 or
//! 6 is an IP packet, as any WireGuard peer sends; one whose first byte is below 0x40 is
//! a swarm frame: `[kind, body length (u16, big-endian), body]`. Both are trimmed of
//! WireGuard's padding by their own length field. An empty payload is a keepalive.

/// Bytes before a frame's body.
pub const FRAME_HEADER_LEN: usize = 3;

/// The kind of a swarm frame (the first byte, 1..0x40).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameKind(u8);

impl FrameKind {
    /// An application datagram ([`crate::tunnel::Tunnels::send_datagram`]).
    pub const DATAGRAM: Self = Self(0x01);
    /// A link probe (issue 4).
    pub const PROBE: Self = Self(0x02);
    /// The answer to a probe.
    pub const PROBE_REPLY: Self = Self(0x03);
    /// A packet of an active throughput test (`link::train`).
    pub const TRAIN: Self = Self(0x04);
    /// The receiver's report on a throughput test.
    pub const TRAIN_REPORT: Self = Self(0x05);

    /// A kind from its byte: 1 to 0x3f.
    pub const fn new(byte: u8) -> Option<Self> {
        if byte >= 1 && byte < 0x40 {
            Some(Self(byte))
        } else {
            None
        }
    }

    /// The byte on the wire.
    pub const fn byte(self) -> u8 {
        self.0
    }
}

/// The header of a frame with a body of `body_len` bytes (at most 65 535).
pub fn frame_header(kind: FrameKind, body_len: u16) -> [u8; FRAME_HEADER_LEN] {
    let l = body_len.to_be_bytes();
    [kind.0, l[0], l[1]]
}

/// A classified payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload<'a> {
    /// An empty payload.
    Keepalive,
    /// An IPv4 packet, trimmed to its total length.
    Ipv4(&'a [u8]),
    /// An IPv6 packet, trimmed to its header and payload length.
    Ipv6(&'a [u8]),
    /// A swarm frame.
    Frame {
        /// Its kind.
        kind: FrameKind,
        /// Its body, trimmed to the header's length.
        body: &'a [u8],
    },
}

/// Why a payload was not understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The first byte is neither an IP version nor a frame kind.
    #[error("unknown payload type {0:#04x}")]
    UnknownType(u8),
    /// A length field claims more than the payload holds.
    #[error("length field exceeds the payload")]
    Truncated,
}

fn be16(b: &[u8], at: usize) -> Option<usize> {
    Some(usize::from(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?])))
}

/// Classifies a decrypted payload (padding included).
pub fn classify(p: &[u8]) -> Result<Payload<'_>, PayloadError> {
    let Some(&first) = p.first() else { return Ok(Payload::Keepalive) };
    let take = |len: Option<usize>| match len {
        Some(n) if n <= p.len() => Ok(&p[..n]),
        _ => Err(PayloadError::Truncated),
    };
    match first >> 4 {
        4 => {
            let total = be16(p, 2).filter(|&n| n >= 20);
            take(total).map(Payload::Ipv4)
        }
        6 => take(be16(p, 4).map(|n| n + 40)).map(Payload::Ipv6),
        _ => match FrameKind::new(first) {
            Some(kind) => {
                let body = take(be16(p, 1).map(|n| n + FRAME_HEADER_LEN))?;
                Ok(Payload::Frame { kind, body: &body[FRAME_HEADER_LEN..] })
            }
            None => Err(PayloadError::UnknownType(first)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demux() {
        assert_eq!(classify(&[]), Ok(Payload::Keepalive));
        let mut v4 = [0u8; 48];
        v4[0] = 0x45;
        v4[2..4].copy_from_slice(&28u16.to_be_bytes());
        assert_eq!(classify(&v4), Ok(Payload::Ipv4(&v4[..28])));
        v4[2..4].copy_from_slice(&49u16.to_be_bytes());
        assert_eq!(classify(&v4), Err(PayloadError::Truncated));
        v4[2..4].copy_from_slice(&3u16.to_be_bytes());
        assert_eq!(classify(&v4), Err(PayloadError::Truncated), "shorter than an IPv4 header");
        let mut v6 = [0u8; 64];
        v6[0] = 0x60;
        v6[4..6].copy_from_slice(&8u16.to_be_bytes());
        assert_eq!(classify(&v6), Ok(Payload::Ipv6(&v6[..48])));
        let mut f = [0u8; 32];
        f[..3].copy_from_slice(&frame_header(FrameKind::DATAGRAM, 5));
        f[3..8].copy_from_slice(b"hello");
        assert_eq!(classify(&f), Ok(Payload::Frame { kind: FrameKind::DATAGRAM, body: b"hello" }));
        f[..3].copy_from_slice(&frame_header(FrameKind::DATAGRAM, 30));
        assert_eq!(classify(&f), Err(PayloadError::Truncated));
        assert_eq!(classify(&[0x00, 0, 0]), Err(PayloadError::UnknownType(0)));
        assert_eq!(classify(&[0x80]), Err(PayloadError::UnknownType(0x80)));
        assert_eq!(classify(&[0x01]), Err(PayloadError::Truncated));
        assert_eq!(classify(&[0x45]), Err(PayloadError::Truncated));
    }
}
