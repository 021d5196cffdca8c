//! What a node reports: its events and its counters.

use std::net::SocketAddr;

use libp2p::{Multiaddr, PeerId};
use swarm_core::link::Metric;
use swarm_core::place::LeaseStats;
use swarm_core::view::GossipCounters;

use crate::dataplane::DataPlaneStats;

/// Something that happened on a node.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// The node listens on a new address.
    Listening {
        /// The address.
        addr: Multiaddr,
    },
    /// A member of this namespace became known (by identify or by its record).
    PeerDiscovered {
        /// The peer.
        peer: PeerId,
    },
    /// A member is no longer known: no record and no connection.
    PeerLost {
        /// The peer.
        peer: PeerId,
    },
    /// A peer's record entered the view or was replaced by a newer one.
    RecordUpdated {
        /// The peer.
        peer: PeerId,
        /// Its sequence number.
        seq: u64,
    },
    /// A peer's record expired.
    RecordExpired {
        /// The peer.
        peer: PeerId,
    },
    /// This node's GPUs appeared or disappeared (a driver reset, an Xid error, a GPU
    /// off the bus); the new inventory is published at once.
    GpuInventoryChanged {
        /// Devices before.
        before: usize,
        /// Devices now.
        after: usize,
    },
    /// A tunnel to the peer carries data (its first handshake, or the first after it
    /// went down; rekeys every two minutes raise no event).
    TunnelUp {
        /// The peer.
        peer: PeerId,
        /// Where its packets go (`None` when relayed: see [`NodeEvent::TunnelPath`]).
        endpoint: Option<SocketAddr>,
    },
    /// The peer answered no probe for 1.5 s: it is gone, or every path to it is. Its
    /// tunnel was torn down and a new handshake begun; [`NodeEvent::TunnelUp`] says when
    /// it is back, [`NodeEvent::TunnelDown`] when the handshake gives up.
    PeerUnreachable {
        /// The peer.
        peer: PeerId,
        /// How long it had been silent.
        silent: std::time::Duration,
    },
    /// A tunnel stopped: its handshake gave up after 90 s, or it sat idle until its keys
    /// were erased.
    TunnelDown {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: &'static str,
    },
    /// A peer's authenticated packets come from a new address (roaming).
    TunnelEndpointChanged {
        /// The peer.
        peer: PeerId,
        /// The new address.
        endpoint: SocketAddr,
    },
    /// A tunnel's packets take another path: direct, or relayed through a member.
    TunnelPath {
        /// The peer.
        peer: PeerId,
        /// The path from now on.
        path: crate::api::Path,
    },
    /// The reflectors' verdict on this node's tunnel socket changed: what NAT it sits
    /// behind, and the public address peers reach it at (both announced in the record).
    NatDetected {
        /// What it sits behind.
        nat: swarm_core::nat::NatKind,
        /// Its public mapping, when the reflectors agree on one.
        mapped: Option<SocketAddr>,
    },
    /// A link passed an SLA target (see `swarm_core::link::SlaPolicy`).
    LinkDegraded {
        /// The peer at the other end.
        peer: PeerId,
        /// Latency, jitter, loss or throughput.
        metric: Metric,
        /// Its value in SI units: seconds for latency and jitter, a ratio for loss, bits
        /// per second for throughput.
        value: f64,
        /// The target, in the same unit.
        target: f64,
    },
    /// A link that a live placement held by this node constrained (origin to member, or
    /// member to member for a gang) passed the task's own limit (issue 16, part 2).
    PlacementLinkBreached {
        /// The task.
        task: String,
        /// The member at the far end of the link.
        member: PeerId,
        /// The other end: this node (the origin), or another member.
        other: PeerId,
        /// Whether `other` is the origin.
        from_origin: bool,
        /// `rtt`, `loss`, `jitter` or `throughput`, as placement judges them (the round
        /// trip at its median).
        metric: &'static str,
        /// Its value: ms for rtt and jitter, a ratio for loss, bits per second for
        /// throughput.
        value: f64,
        /// The task's limit, in the same unit.
        limit: f64,
        /// Nodes that could take `member`'s place, best first (as `Node::rank` ranks
        /// them, less the members, fitting the gang's member limits).
        alternatives: Vec<swarm_core::place::Scored>,
    },
    /// A breached placement link met its task's limits again (at 80 % of them).
    PlacementLinkRecovered {
        /// The task.
        task: String,
        /// The member at the far end.
        member: PeerId,
        /// The other end.
        other: PeerId,
    },
    /// A degraded link metric came back within its recovery margin and stayed there.
    LinkRecovered {
        /// The peer.
        peer: PeerId,
        /// The metric.
        metric: Metric,
        /// Its value, in SI units (see [`NodeEvent::LinkDegraded`]).
        value: f64,
        /// The target, in the same unit.
        target: f64,
    },
    /// A record was refused and its sender penalised.
    RecordRejected {
        /// The peer that forwarded it.
        from: PeerId,
        /// Why, as a stable short name.
        reason: &'static str,
    },
}

/// Counters of a running node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// Peers with at least one open connection.
    pub connected_peers: usize,
    /// Records in the view, the local one included.
    pub records: usize,
    /// What the view accepted and refused.
    pub gossip: GossipCounters,
    /// Records this node published.
    pub published: u64,
    /// Publications that found no subscribed peer or failed otherwise.
    pub publish_failures: u64,
    /// Gossip messages (records published or forwarded, control messages) gossipsub
    /// dropped before a peer's connection took them: its send queue was full, or a
    /// record waited there past gossipsub's queue duration (the peer or this node was
    /// too busy). The record still comes later, by gossip repair, sync or heartbeat.
    pub gossip_send_dropped: u64,
    /// Events dropped because the event stream was full.
    pub events_dropped: u64,
    /// Bytes received over all libp2p connections.
    pub bytes_in: u64,
    /// Bytes sent over all libp2p connections.
    pub bytes_out: u64,
    /// The tunnel socket and its datagrams.
    pub dataplane: DataPlaneStats,
    /// Tunnel packets dropped, by reason (see `swarm_core::tunnel::DropReason`).
    pub tunnel_drops: Vec<(&'static str, u64)>,
    /// The lease service: what this node granted, refused, renewed, released.
    pub leases: LeaseStats,
    /// What this node relayed for others' tunnels.
    pub relay: crate::api::RelayStats,
    /// AutoNAT v2 probes of this node's own addresses.
    pub autonat: AutonatStats,
    /// Inbound connections refused: too many from one address were being set up.
    pub connections_denied: u64,
    /// libp2p connections closed because a ping went unanswered for 5 s or failed.
    pub dead_connections: u64,
    /// libp2p connections established so far, inbound and outbound (each costs a
    /// handshake and the behaviours' greetings: identify, subscriptions, a view sync).
    pub connections_opened: u64,
    /// Outbound libp2p dials that failed (unreachable, handshake timed out, refused).
    pub dials_failed: u64,
    /// Peers in Kademlia's routing table.
    pub kad_peers: usize,
    /// Peers kept out of Kademlia's routing table because their address range already
    /// held its places (2 per bucket, 3 in all: `swarm_core::diversity`).
    pub kad_diversity_refused: u64,
    /// Namespace provider records not stored because their key already held 2 from the
    /// provider's address range.
    pub kad_providers_refused: u64,
    /// Refreshes of Kademlia's routing table this node completed (a walk to its own key,
    /// then one per bucket farther out), started on its discovery schedule.
    pub kad_refreshes: u64,
    /// Bootstraps Kademlia started by itself and the node ended at their first requests
    /// (its refreshes are its own: `kademlia.rs`).
    pub kad_bootstraps_ended: u64,
    /// Lease requests sent again on a fresh connection after the first timed out or
    /// lost its connection.
    pub lease_retries: u64,
    /// Records that entered the view by view sync (fetched on connecting) rather than
    /// by gossip.
    pub sync_records: u64,
    /// Records a view sync answer brought that the view already held as new or newer
    /// (another sync or gossip delivered them first): the sync's wasted bytes.
    pub sync_duplicates: u64,
    /// View sync answers this node gave.
    pub sync_answers: u64,
    /// View sync requests this node sent (each round counts).
    pub sync_asked: u64,
    /// View sync requests of this node that failed (timeout, connection closed, refused).
    pub sync_failed: u64,
    /// View sync requests refused: the peer had spent its answer budget.
    pub sync_refused: u64,
    /// View sync messages that did not decode.
    pub sync_malformed: u64,
    /// Look-ups for the namespace's providers started (`/swarm/find/1`).
    pub lookups: u64,
    /// Look-up requests sent (each peer a walk asks).
    pub lookup_asked: u64,
    /// Look-up requests that failed (unreachable, timed out, refused).
    pub lookup_failed: u64,
    /// Candidates that finished look-ups left out of their closest 20 because their
    /// address range held its 3 places there (`swarm_core::diversity::lookup`).
    pub lookup_crowded: u64,
    /// Providers the look-ups' answers named (dialed as members).
    pub lookup_providers: u64,
    /// Announcements of this node as a provider, sent.
    pub lookup_announced: u64,
    /// Look-up requests this node answered.
    pub lookup_answers: u64,
    /// Look-up requests refused: the peer asked too often.
    pub lookup_refused: u64,
    /// Look-up messages that did not decode.
    pub lookup_malformed: u64,
}

/// AutoNAT v2 probes this node asked for: each asks a public member to dial one of our
/// candidate addresses back, and may cost 30-100 kB of dial data first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AutonatStats {
    /// Probes that confirmed an address as reachable.
    pub confirmed: u64,
    /// Probes whose server could not dial the address back.
    pub unreachable: u64,
    /// Dial data sent to servers, bytes.
    pub dial_data_bytes: u64,
}

/// A node's addresses on the mesh VPN's overlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct OverlayAddresses {
    /// In the swarm's /48 unique local prefix, from the node's `PeerId`.
    pub ipv6: std::net::Ipv6Addr,
    /// The IPv4 address its claim holds, when it claims one.
    pub ipv4: Option<std::net::Ipv4Addr>,
}
