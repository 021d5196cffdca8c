//! The mesh VPN's stock WireGuard peers, as a gateway node reports them.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use swarm_core::overlay::Ipv4Range;

/// A stock WireGuard peer (a laptop running wg-quick, say) that this node is the gateway
/// of: it reaches every swarm node through this one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StockPeer {
    /// Its WireGuard static public key.
    pub public_key: [u8; 32],
    /// A name for people (may be empty).
    pub name: String,
    /// Its IPv6 overlay address (subnet 1, from its key).
    pub ipv6: Ipv6Addr,
    /// The IPv4 overlay address this gateway claims for it, when the node claims IPv4.
    pub ipv4: Option<Ipv4Addr>,
    /// The pre-shared key of this peer alone (never the swarm's).
    pub preshared_key: [u8; 32],
    /// Where its packets come from, once it has made a handshake.
    pub endpoint: Option<SocketAddr>,
    /// How long ago its session was made.
    pub last_handshake: Option<Duration>,
    /// Bytes received from it (whole datagrams).
    pub rx_bytes: u64,
    /// Bytes sent to it.
    pub tx_bytes: u64,
}

/// What a stock peer needs to know of its gateway: a wg-quick configuration's `[Peer]`
/// section and the overlay's prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Gateway {
    /// The gateway's WireGuard static public key.
    pub public_key: [u8; 32],
    /// Where its tunnel socket is reached (as its record announces it).
    pub endpoints: Vec<SocketAddr>,
    /// The swarm's IPv6 overlay prefix (a /48).
    pub ipv6_prefix: Ipv6Addr,
    /// The IPv4 range of the overlay, when the gateway claims IPv4.
    pub ipv4_range: Option<Ipv4Range>,
    /// The MTU of the gateway's VPN device, which the peer's should match.
    pub mtu: u16,
}
