//! Tunnels relayed through another node (issue 13, part 4), the sans-IO parts.
//!
//! When two nodes cannot punch a hole (a symmetric NAT on one side), their WireGuard
//! datagrams go over libp2p streams through a third node, a public member both hold a
//! connection to:
//!
//! 1. The opener opens a stream to the relay and writes [`RelayHeader::Connect`] naming
//!    the peer; the relay opens a stream to that peer and writes
//!    [`RelayHeader::From`] naming the opener. Each side answers with one
//!    [`RelayAnswer`] byte; the relay passes the peer's answer back to the opener.
//! 2. From then on both streams carry datagrams, each framed by its length (two bytes,
//!    big-endian, never zero), and the relay copies them across, counting bytes.
//!
//! The WireGuard layer is unchanged end to end: the relay sees only sealed datagrams.
//! A relayed path is named, inside the data plane, by a [`relay_endpoint`]: an address
//! in the discard-only prefix `100::/64` (RFC 6666) that no socket reaches, as
//! Tailscale names its DERP paths by a fake address. Datagrams from the network claiming
//! such a source, and records announcing one, are refused.
//!
//! [`RelayBook`] bounds what a relay carries: paths per opener and in all.
//!
//! The same streams carry *detours* (issue 16, part 1): a member whose direct path to a
//! peer breaches its SLA sends that tunnel's data through a third member with better
//! links to both (see [`crate::link::detour`]). The headers then say `detour`: any member
//! relays a detour (not only public relays), and the far end takes it as an extra way
//! in, never as the tunnel's endpoint (its probes stay on the direct path).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use libp2p_identity::PeerId;

/// The first 16 bits of every relay endpoint: `100::/64` is discard-only (RFC 6666).
const RELAY_SEGMENT: u16 = 0x0100;

/// The address naming relayed path number `slot` inside the data plane.
pub fn relay_endpoint(slot: u32) -> SocketAddr {
    let ip = Ipv6Addr::new(RELAY_SEGMENT, 0, 0, 0, 0, 0, (slot >> 16) as u16, slot as u16);
    SocketAddr::new(IpAddr::V6(ip), 1)
}

/// Whether `addr` names a relayed path (it lies in `100::/64`), not a socket address.
pub fn is_relay_endpoint(addr: &SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V6(ip) => ip.segments()[..4] == [RELAY_SEGMENT, 0, 0, 0],
        IpAddr::V4(_) => false,
    }
}

/// The slot of a relay endpoint.
pub fn relay_slot(addr: &SocketAddr) -> Option<u32> {
    match addr.ip() {
        IpAddr::V6(ip) if is_relay_endpoint(addr) => {
            let s = ip.segments();
            Some((u32::from(s[6]) << 16) | u32::from(s[7]))
        }
        _ => None,
    }
}

/// The version byte every header starts with.
const VERSION: u8 = 1;
/// A peer id's bytes, at most (an Ed25519 id is 38).
const MAX_PEER_ID: usize = 64;
/// A header's length, at most.
pub const MAX_HEADER_LEN: usize = 3 + MAX_PEER_ID;
/// A relayed datagram's length, at most (a UDP payload's limit).
pub const MAX_RELAYED: usize = u16::MAX as usize;

/// What a relay stream is for, written first on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayHeader {
    /// To a relay: carry my datagrams to `to`.
    Connect {
        /// The peer to carry datagrams to.
        to: PeerId,
        /// A detour around a breached direct path, not a path for want of one.
        detour: bool,
    },
    /// From a relay: `from` sends datagrams through me.
    From {
        /// The peer whose datagrams come.
        from: PeerId,
        /// A detour (see `Connect`).
        detour: bool,
    },
}

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Another version than ours.
    #[error("unknown relay header version {0}")]
    Version(u8),
    /// Neither `Connect` nor `From` (plain or detour).
    #[error("unknown relay header kind {0}")]
    Kind(u8),
    /// The peer id's length or bytes are wrong.
    #[error("the peer id is not valid")]
    PeerId,
    /// Fewer (or more) bytes than the header announces.
    #[error("the header is truncated")]
    Truncated,
}

impl RelayHeader {
    /// The header's bytes: version, kind, the peer id's length and its bytes.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, peer) = match *self {
            Self::Connect { ref to, detour } => (if detour { 3 } else { 1 }, to),
            Self::From { ref from, detour } => (if detour { 4 } else { 2 }, from),
        };
        let id = peer.to_bytes();
        let mut out = Vec::with_capacity(3 + id.len());
        out.extend_from_slice(&[VERSION, kind, id.len() as u8]);
        out.extend_from_slice(&id);
        out
    }

    /// The length of the whole header, from its first three bytes.
    pub fn len_from_prefix(prefix: [u8; 3]) -> Result<usize, HeaderError> {
        if prefix[0] != VERSION {
            return Err(HeaderError::Version(prefix[0]));
        }
        if !(1..=4).contains(&prefix[1]) {
            return Err(HeaderError::Kind(prefix[1]));
        }
        let n = usize::from(prefix[2]);
        if n == 0 || n > MAX_PEER_ID {
            return Err(HeaderError::PeerId);
        }
        Ok(3 + n)
    }

    /// Reads a whole header (as long as [`len_from_prefix`](Self::len_from_prefix) said).
    pub fn parse(bytes: &[u8]) -> Result<Self, HeaderError> {
        let prefix: [u8; 3] = bytes.get(..3).and_then(|p| p.try_into().ok()).ok_or(HeaderError::Truncated)?;
        let len = Self::len_from_prefix(prefix)?;
        if bytes.len() != len {
            return Err(HeaderError::Truncated);
        }
        let peer = PeerId::from_bytes(&bytes[3..]).map_err(|_| HeaderError::PeerId)?;
        Ok(match prefix[1] {
            1 => Self::Connect { to: peer, detour: false },
            2 => Self::From { from: peer, detour: false },
            3 => Self::Connect { to: peer, detour: true },
            _ => Self::From { from: peer, detour: true },
        })
    }
}

/// The one-byte answer to a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RelayAnswer {
    /// The path is open.
    #[error("accepted")]
    Ok,
    /// The opener or the peer is not a member, or the node does not relay.
    #[error("not a member of the namespace, or this node does not relay")]
    NotMember,
    /// The relay could not open a stream to the peer.
    #[error("the peer cannot be reached from the relay")]
    Unreachable,
    /// Over the relay's limits.
    #[error("the relay carries too many paths")]
    Busy,
    /// The header could not be read.
    #[error("the header was malformed")]
    Malformed,
}

impl RelayAnswer {
    /// The byte on the wire.
    pub fn to_byte(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::NotMember => 1,
            Self::Unreachable => 2,
            Self::Busy => 3,
            Self::Malformed => 4,
        }
    }

    /// Any byte reads as an answer; unknown ones as [`Malformed`](Self::Malformed).
    pub fn from_byte(b: u8) -> Self {
        match b {
            0 => Self::Ok,
            1 => Self::NotMember,
            2 => Self::Unreachable,
            3 => Self::Busy,
            _ => Self::Malformed,
        }
    }
}

/// A datagram's frame header on a relay stream: its length, big-endian.
pub fn frame_header(len: usize) -> Option<[u8; 2]> {
    (1..=MAX_RELAYED).contains(&len).then(|| (len as u16).to_be_bytes())
}

/// The length a frame header announces; `None` for 0, which no datagram has.
pub fn frame_len(header: [u8; 2]) -> Option<usize> {
    let n = usize::from(u16::from_be_bytes(header));
    (n > 0).then_some(n)
}

/// Limits of a relay: paths per opener, and in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayLimits {
    /// Paths one opener may hold open.
    pub per_peer: usize,
    /// Paths open at once, all openers together.
    pub total: usize,
}

impl Default for RelayLimits {
    /// 16 paths per member (one per peer it cannot punch to, plus slack for
    /// reconnections) and 1 024 in all.
    fn default() -> Self {
        Self { per_peer: 16, total: 1024 }
    }
}

/// The paths a relay carries, counted per opener, within [`RelayLimits`]; and what
/// they carried.
#[derive(Debug)]
pub struct RelayBook<P> {
    limits: RelayLimits,
    open: HashMap<P, usize>,
    total: usize,
    /// Paths accepted, ever.
    pub accepted: u64,
    /// Paths refused for the limits.
    pub refused: u64,
}

impl<P: Eq + Hash + Copy> RelayBook<P> {
    /// An empty book.
    pub fn new(limits: RelayLimits) -> Self {
        Self { limits, open: HashMap::new(), total: 0, accepted: 0, refused: 0 }
    }

    /// Takes a path for `opener` within the limits; whether it may open.
    pub fn admit(&mut self, opener: P) -> bool {
        let n = self.open.get(&opener).copied().unwrap_or(0);
        if n >= self.limits.per_peer || self.total >= self.limits.total {
            self.refused += 1;
            return false;
        }
        self.open.insert(opener, n + 1);
        self.total += 1;
        self.accepted += 1;
        true
    }

    /// A path of `opener` closed.
    pub fn release(&mut self, opener: P) {
        if let Some(n) = self.open.get_mut(&opener) {
            *n -= 1;
            self.total -= 1;
            if *n == 0 {
                self.open.remove(&opener);
            }
        }
    }

    /// Paths open now.
    pub fn open(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_endpoints_round_trip_and_are_told_apart() {
        for slot in [0, 1, 0xffff, 0x1_0000, u32::MAX] {
            let e = relay_endpoint(slot);
            assert!(is_relay_endpoint(&e));
            assert_eq!(relay_slot(&e), Some(slot));
        }
        for other in ["127.0.0.1:1", "[::1]:1", "[2001:db8::1]:51820", "[100:0:0:1::1]:1"] {
            let a: SocketAddr = other.parse().unwrap();
            assert!(!is_relay_endpoint(&a), "{a}");
            assert_eq!(relay_slot(&a), None);
        }
    }

    #[test]
    fn headers_round_trip_and_bad_ones_are_refused() {
        let peer = crate::overlay::tests::peer(7);
        for detour in [false, true] {
            for h in [RelayHeader::Connect { to: peer, detour }, RelayHeader::From { from: peer, detour }] {
                let bytes = h.encode();
                assert!(bytes.len() <= MAX_HEADER_LEN);
                let prefix: [u8; 3] = bytes[..3].try_into().unwrap();
                assert_eq!(RelayHeader::len_from_prefix(prefix), Ok(bytes.len()));
                assert_eq!(RelayHeader::parse(&bytes), Ok(h));
            }
        }
        assert_eq!(RelayHeader::len_from_prefix([2, 1, 38]), Err(HeaderError::Version(2)));
        assert_eq!(RelayHeader::len_from_prefix([1, 0, 38]), Err(HeaderError::Kind(0)));
        assert_eq!(RelayHeader::len_from_prefix([1, 5, 38]), Err(HeaderError::Kind(5)));
        assert_eq!(RelayHeader::len_from_prefix([1, 1, 0]), Err(HeaderError::PeerId));
        assert_eq!(RelayHeader::len_from_prefix([1, 1, 200]), Err(HeaderError::PeerId));
        assert_eq!(RelayHeader::parse(&[1, 1, 3, 0, 0, 0]), Err(HeaderError::PeerId));
        assert_eq!(RelayHeader::parse(&[1, 1]), Err(HeaderError::Truncated));
        assert_eq!(RelayHeader::parse(&[1, 1, 5, 0]), Err(HeaderError::Truncated));
        for b in 0..=255u8 {
            let a = RelayAnswer::from_byte(b);
            assert!(a.to_byte() == b || a == RelayAnswer::Malformed);
        }
    }

    #[test]
    fn frames_carry_one_to_65535_bytes() {
        assert_eq!(frame_header(0), None);
        assert_eq!(frame_header(MAX_RELAYED + 1), None);
        assert_eq!(frame_header(1500).map(frame_len), Some(Some(1500)));
        assert_eq!(frame_header(MAX_RELAYED).map(frame_len), Some(Some(MAX_RELAYED)));
        assert_eq!(frame_len([0, 0]), None);
    }

    #[test]
    fn the_book_bounds_paths_per_opener_and_in_all() {
        let mut book = RelayBook::new(RelayLimits { per_peer: 2, total: 3 });
        assert!(book.admit(1));
        assert!(book.admit(1));
        assert!(!book.admit(1), "a third path of one opener");
        assert!(book.admit(2));
        assert!(!book.admit(3), "the fourth path in all");
        assert_eq!((book.open(), book.accepted, book.refused), (3, 3, 2));
        book.release(1);
        assert!(book.admit(3));
        book.release(9); // never opened: nothing changes
        assert_eq!(book.open(), 3);
        for p in [1, 2, 3] {
            book.release(p);
        }
        assert_eq!(book.open(), 0);
        assert!(book.open.is_empty());
    }
}
