//! What the data plane reports: its counters, each tunnel's state, each link's
//! measurements, and the application datagrams it delivers.

use std::net::SocketAddr;
use std::time::Duration;

use libp2p::PeerId;
use swarm_core::link::{LinkStats, SlaVerdict};

/// Counters of the data plane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DataPlaneStats {
    /// UDP datagrams received.
    pub udp_in: u64,
    /// UDP datagrams sent.
    pub udp_out: u64,
    /// Application datagrams delivered to the reader.
    pub datagrams_delivered: u64,
    /// Application datagrams dropped because the reader fell behind.
    pub datagrams_overflow: u64,
    /// Application datagrams sealed and sent, or queued for the handshake (empty ones
    /// included: every datagram given to the node is counted once, here or below).
    pub datagrams_sent: u64,
    /// Application datagrams for peers without a verified tunnel record.
    pub datagrams_unroutable: u64,
    /// Application datagrams refused by the tunnel (queue full, too large).
    pub datagrams_refused: u64,
    /// Initiations from a key that was no peer yet, kept and answered when its record
    /// arrived.
    pub initiations_answered_late: u64,
    /// Socket errors other than a full buffer.
    pub socket_errors: u64,
    /// Handshake messages waiting for their turn after data.
    pub handshakes_queued: usize,
    /// Binding requests not answered (rate limit, full queue) or malformed.
    pub bindings_refused: u64,
    /// Receive buffer the kernel granted, bytes.
    pub recv_buffer: usize,
    /// Send buffer the kernel granted, bytes.
    pub send_buffer: usize,
    /// Largest GSO batch the socket supports (1: none).
    pub max_gso_segments: usize,
    /// Datagrams one GRO read can hold (1: none).
    pub gro_segments: usize,
    /// The VPN device's packets and bytes.
    pub tun: super::tun::TunStats,
    /// IP packets of the VPN dropped, by reason.
    pub vpn_drops: VpnDrops,
    /// Tunnel datagrams received over relayed paths.
    pub relay_in: u64,
    /// Tunnel datagrams queued on relayed paths.
    pub relay_out: u64,
    /// Tunnel datagrams for a relayed path dropped: its queue was full, or it closed.
    pub relay_dropped: u64,
    /// Datagrams refused for claiming a relayed path's address from the network, and
    /// binding messages that came through a relay.
    pub relay_refused: u64,
}

/// Which way a tunnel's packets go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Path {
    /// Straight to the peer's UDP endpoint (through NATs, punched where needed).
    #[default]
    Direct,
    /// Over libp2p streams through a member that relays.
    Relayed {
        /// The relaying member.
        via: PeerId,
    },
    /// Its relayed path closed, and no direct endpoint is known yet.
    Closed,
    /// Direct, but our data takes a detour through a member while the direct path
    /// breaches its SLA (probes stay on the direct path).
    Detour {
        /// The member the data goes through.
        via: PeerId,
    },
}

impl Path {
    /// The name in metrics and JSON: `direct`, `relayed`, `closed` or `detour`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Relayed { .. } => "relayed",
            Self::Closed => "closed",
            Self::Detour { .. } => "detour",
        }
    }

    /// The member the packets go through, when relayed or detoured.
    pub fn via(&self) -> Option<PeerId> {
        match self {
            Self::Relayed { via } | Self::Detour { via } => Some(*via),
            _ => None,
        }
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Relayed { via } => write!(f, "relayed via {via}"),
            Self::Detour { via } => write!(f, "via {via}"),
            other => f.write_str(other.kind()),
        }
    }
}

/// IP packets of the VPN dropped, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VpnDrops {
    /// From the device, to an address no peer holds (or to a peer with no endpoint).
    pub no_route: u64,
    /// From a peer, with a source address that is not one of the peer's.
    pub spoofed_source: u64,
    /// Not an IPv4 or IPv6 packet.
    pub not_ip: u64,
    /// Larger than a tunnel carries.
    pub too_large: u64,
    /// The peer's queue behind its handshake was full.
    pub queue_full: u64,
    /// From a peer, while this node has no VPN device.
    pub no_device: u64,
    /// To be forwarded by this gateway while its forwarding queue was full.
    pub forward_queue_full: u64,
    /// From the device, to a multicast or broadcast address (the overlay carries none).
    pub multicast: u64,
}

impl VpnDrops {
    /// Each reason with its count, in a fixed order (for metrics and JSON).
    pub fn by_reason(&self) -> [(&'static str, u64); 8] {
        [
            ("no_route", self.no_route),
            ("spoofed_source", self.spoofed_source),
            ("not_ip", self.not_ip),
            ("too_large", self.too_large),
            ("queue_full", self.queue_full),
            ("no_device", self.no_device),
            ("forward_queue_full", self.forward_queue_full),
            ("multicast", self.multicast),
        ]
    }
}

/// An application datagram received over a tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Datagram {
    /// Who sent it (authenticated by the tunnel).
    pub peer: PeerId,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// What is measured about the link to one peer, and how it stands against the SLA.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LinkReport {
    /// The peer.
    pub peer: PeerId,
    /// Round trips, jitter, loss and goodput over the short and long windows.
    pub stats: LinkStats,
    /// The verdict on each metric.
    pub sla: Vec<SlaVerdict>,
    /// The path the link's packets take (its windows restart when it changes).
    pub path: Path,
}

/// The state of one tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TunnelStatus {
    /// The peer.
    pub peer: PeerId,
    /// Where its packets go, when straight to a UDP endpoint.
    pub endpoint: Option<SocketAddr>,
    /// Direct, or relayed through a member.
    pub path: Path,
    /// Whether a session carries data now.
    pub established: bool,
    /// Its probes went unanswered (1.5 s): the tunnel was torn down and is being
    /// re-established; until then the peer is unreachable, not `up`.
    pub unreachable: bool,
    /// Whether a handshake of ours awaits its answer.
    pub handshake_in_progress: bool,
    /// How long ago the session in use was established.
    pub last_handshake: Option<Duration>,
    /// Completed handshakes (the first and every rekey).
    pub handshakes: u64,
    /// Bytes sent, whole UDP datagrams.
    pub tx_bytes: u64,
    /// Bytes received and authenticated, whole UDP datagrams.
    pub rx_bytes: u64,
    /// Datagrams sent.
    pub tx_packets: u64,
    /// Datagrams received and authenticated.
    pub rx_packets: u64,
    /// Datagrams waiting for the handshake.
    pub queued: usize,
    /// Packets of this peer dropped, by reason.
    pub drops: Vec<(&'static str, u64)>,
}
