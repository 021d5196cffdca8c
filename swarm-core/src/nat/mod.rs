//! What NAT a node sits behind, learned on its own tunnel socket (data-flow stage 3, the
//! NAT-traversal part of issue 13), sans-IO:
//!
//! - [`binding`]: a small binding request and its answer, STUN-like, told apart from
//!   WireGuard's messages by their first byte; any node answers with the address the
//!   request came from, never with more bytes than it got;
//! - [`NatProbe`]: asks reflectors (other nodes' public tunnel endpoints, at two IP
//!   addresses at least) where they see this socket, and says what that makes the NAT:
//!   none (the socket is public), `easy` (one mapping for every destination: punchable)
//!   or `hard` (a mapping per destination: symmetric, relayed);
//! - [`Puncher`]: hole punching between two tunnel sockets, with token-carrying probes
//!   from a synchronised start;
//! - [`plan::PathPlanner`]: when to punch, when to relay and through whom, per peer;
//! - [`relay`]: tunnels relayed through a third node where no hole can be punched: the
//!   streams' headers and framing, the relay's limits, the addresses naming relayed
//!   paths.

pub mod binding;
pub mod plan;
mod probe;
pub mod punch;
pub mod relay;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use probe::{NatProbe, ProbeConfig, Reflexive};
pub use punch::{PunchConfig, PunchEvent, Puncher};

/// What a node's tunnel socket sits behind, as its reflectors see it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NatKind {
    /// Not known yet (no reflector answered, or only one did).
    #[default]
    Unknown,
    /// No NAT: reflectors see the socket's own address.
    Public,
    /// Endpoint-independent mapping: every reflector sees the same public address, so a
    /// peer can punch to it.
    Easy,
    /// Endpoint-dependent mapping (symmetric): each destination sees another port, so
    /// punching fails and the tunnel is relayed.
    Hard,
}

impl NatKind {
    /// The name in reports and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Public => "public",
            Self::Easy => "easy",
            Self::Hard => "hard",
        }
    }
}

/// Whether `ip` may be reachable from other networks: not loopback, link-local,
/// private (RFC 1918, unique local), shared (RFC 6598) or unspecified. A node asks only
/// such endpoints to reflect, since a private one sees the private address.
pub fn is_public(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || (o[0] == 100 && (o[1] & 0xc0) == 64))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_addresses() {
        for p in ["203.0.113.10", "8.8.8.8", "2001:db8::1", "192.0.2.2"] {
            assert!(is_public(&p.parse().unwrap()), "{p}");
        }
        for p in [
            "10.0.1.2",
            "192.168.1.1",
            "172.16.0.1",
            "127.0.0.1",
            "100.64.0.1",
            "169.254.1.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(!is_public(&p.parse().unwrap()), "{p}");
        }
    }
}
