//! The JSON face of a running node, beyond its links ([`super::summary`]): what the
//! operator's commands (`status`, `peers`, `leases`, `rtt`, `ping`, `join`, `place`,
//! `monitor`) read from a node, as serde types any embedder can serve or parse.
//!
//! The conventions of [`super::summary`] hold in every type: ids are strings (a lease
//! id above 2^53 survives JavaScript and jq); every number carries its unit in its key
//! (`_ms`, `_s`, `_ratio`, `_bps`, `_bytes`); floats are rounded to what they resolve;
//! a value not known is `null`, a state not known is `"unknown"`.
//!
//! Each type has a constructor from the API's own types (or, for the ones that need
//! several reads, an async `gather` from a [`Node`]); parsing one back is
//! `serde_json::from_str`.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use swarm_core::link::summary::LinkAnswer;
use swarm_core::link::{Metric, SlaState};
use swarm_core::place::{Lease, Placement};
use swarm_core::view::ViewEntry;

use super::summary::{bps, ms, ratio, round, sla_state_name};
use super::{Node, NodeError, NodeEvent, OverlayAddresses};
use crate::dataplane::{LinkReport, TunnelStatus};

fn text<T: ToString>(v: T) -> String {
    v.to_string()
}

/// A tunnel as `peers` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TunnelSummary {
    /// `up`, `unreachable` (up, but no probe answered lately), `opening`, `down`, or
    /// `none` (no tunnel to this peer).
    pub state: String,
    /// `direct`, `relayed` or `closed`; `null` with no tunnel.
    pub path: Option<String>,
    /// The relay, when relayed.
    pub via: Option<String>,
    /// The peer's UDP endpoint, when direct.
    pub endpoint: Option<String>,
    /// Seconds since the last completed handshake.
    pub last_handshake_s: Option<u64>,
    /// Bytes sent through the tunnel.
    pub tx_bytes: u64,
    /// Bytes received through it.
    pub rx_bytes: u64,
}

impl TunnelSummary {
    /// The summary of `tunnel`; state `none` without one.
    pub fn new(tunnel: Option<&TunnelStatus>) -> TunnelSummary {
        let Some(t) = tunnel else {
            return TunnelSummary {
                state: "none".to_owned(),
                path: None,
                via: None,
                endpoint: None,
                last_handshake_s: None,
                tx_bytes: 0,
                rx_bytes: 0,
            };
        };
        let state = if t.unreachable {
            "unreachable"
        } else if t.established {
            "up"
        } else if t.handshake_in_progress {
            "opening"
        } else {
            "down"
        };
        TunnelSummary {
            state: state.to_owned(),
            path: Some(t.path.kind().to_owned()),
            via: t.path.via().map(text),
            endpoint: t.endpoint.map(text),
            last_handshake_s: t.last_handshake.map(|d| d.as_secs()),
            tx_bytes: t.tx_bytes,
            rx_bytes: t.rx_bytes,
        }
    }
}

/// A link in brief, as `peers` shows it (the whole of it is [`super::LinkJson`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LinkBrief {
    /// Round-trip time, median of the short window.
    pub rtt_p50_ms: Option<f64>,
    /// Its 99th percentile.
    pub rtt_p99_ms: Option<f64>,
    /// RFC 3550 jitter of the peer's probes, as this node receives them.
    pub jitter_ms: Option<f64>,
    /// Inbound packets lost (short window).
    pub loss_ratio: Option<f64>,
    /// Goodput received, bits per second.
    pub rx_bps: Option<f64>,
    /// Goodput sent, bits per second.
    pub tx_bps: Option<f64>,
    /// The worst verdict: `degraded`, `ok` or `unknown`.
    pub sla: String,
}

impl LinkBrief {
    /// The brief of `report`.
    pub fn new(report: &LinkReport) -> LinkBrief {
        let w = &report.stats.short;
        let worst = if report.sla.iter().any(|v| v.state == SlaState::Degraded) {
            SlaState::Degraded
        } else if report.sla.iter().any(|v| v.state == SlaState::Ok) {
            SlaState::Ok
        } else {
            SlaState::Unknown
        };
        LinkBrief {
            rtt_p50_ms: w.rtt.map(|q| ms(q.p50)),
            rtt_p99_ms: w.rtt.map(|q| ms(q.p99)),
            jitter_ms: report.stats.jitter_in.map(ms),
            loss_ratio: w.loss_in.map(|r| ratio(r.value)),
            rx_bps: w.rx_bps.map(bps),
            tx_bps: w.tx_bps.map(bps),
            sla: sla_state_name(worst).to_owned(),
        }
    }
}

/// A peer in this node's view: its record, tunnel and link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PeerSummary {
    /// The peer.
    pub peer: String,
    /// Whether a libp2p connection to it is open.
    pub connected: bool,
    /// Its GPUs in brief (`2x H100 80GiB`).
    pub gpus: String,
    /// Its NAT, as its record says: `open`, `easy`, `symmetric` or `unknown`.
    pub nat: String,
    /// Its overlay IPv6 address.
    pub overlay_ipv6: Option<String>,
    /// Its overlay IPv4 address, when it claims one.
    pub overlay_ipv4: Option<String>,
    /// Age of its record here.
    pub record_age_s: f64,
    /// The tunnel to it.
    pub tunnel: TunnelSummary,
    /// The link to it, when measured.
    pub link: Option<LinkBrief>,
}

impl PeerSummary {
    /// Every peer in `node`'s view (itself left out).
    pub async fn gather(node: &Node) -> Result<Vec<PeerSummary>, NodeError> {
        let view = node.cluster().await?;
        let connected = node.connected_peers().await?;
        let tunnels = node.tunnels().await?;
        let links = node.links().await?;
        let mut rows = Vec::new();
        for e in view.entries.iter().filter(|e| !e.local) {
            let peer = e.record.peer_id;
            let overlay = node.overlay_of(peer).await?;
            rows.push(PeerSummary {
                peer: peer.to_string(),
                connected: connected.contains(&peer),
                gpus: e.record.gpus.summary(),
                nat: e.tunnel.nat.as_str().to_owned(),
                overlay_ipv6: overlay.map(|a| a.ipv6.to_string()),
                overlay_ipv4: overlay.and_then(|a| a.ipv4).map(text),
                record_age_s: round(e.received_at.elapsed().as_secs_f64(), 3),
                tunnel: TunnelSummary::new(tunnels.iter().find(|t| t.peer == peer)),
                link: links.iter().find(|l| l.peer == peer).map(LinkBrief::new),
            });
        }
        Ok(rows)
    }
}

/// The node itself: id, addresses (the tunnel port included), NAT, overlay, leases'
/// restart grace, and its peers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StatusSummary {
    /// This node.
    pub peer_id: String,
    /// Where it listens (libp2p).
    pub listen: Vec<String>,
    /// Its tunnel's UDP endpoints, as its record publishes them.
    pub tunnel_endpoints: Vec<String>,
    /// Its NAT: `open`, `easy`, `symmetric` or `unknown`.
    pub nat: String,
    /// Its overlay IPv6 address.
    pub overlay_ipv6: Option<String>,
    /// Its overlay IPv4 address, when it claims one.
    pub overlay_ipv4: Option<String>,
    /// Its GPUs in brief.
    pub gpus: Option<String>,
    /// New leases are refused this much longer (a node restarted on its identity).
    pub lease_grace_left_s: u64,
    /// Records in its view (itself included).
    pub records: usize,
    /// Open libp2p connections.
    pub connected_peers: usize,
    /// Tunnels up and answering.
    pub tunnels_up: usize,
    /// Tunnel paths it relays for others.
    pub relayed_paths: u64,
    /// Its peers.
    pub peers: Vec<PeerSummary>,
}

impl StatusSummary {
    /// Reads `node`; `lease_grace_left` is what the caller knows of the restart grace.
    pub async fn gather(node: &Node, lease_grace_left: Duration) -> Result<StatusSummary, NodeError> {
        let view = node.cluster().await?;
        let own: Option<&ViewEntry> = view.entries.iter().find(|e| e.local);
        let listen = node.listen_addrs().await?;
        let tunnels = node.tunnels().await?;
        let overlay = node.overlay().await.ok();
        let stats = node.stats().await?;
        Ok(StatusSummary {
            peer_id: node.peer_id().to_string(),
            listen: listen.iter().map(Multiaddr::to_string).collect(),
            tunnel_endpoints: own
                .map_or_else(Vec::new, |e| e.tunnel.udp_endpoints.iter().map(text).collect()),
            nat: own.map_or("unknown", |e| e.tunnel.nat.as_str()).to_owned(),
            overlay_ipv6: overlay.map(|a| a.ipv6.to_string()),
            overlay_ipv4: overlay.and_then(|a| a.ipv4).map(text),
            gpus: own.map(|e| e.record.gpus.summary()),
            lease_grace_left_s: lease_grace_left.as_secs(),
            records: view.len(),
            connected_peers: stats.connected_peers,
            tunnels_up: tunnels.iter().filter(|t| t.established && !t.unreachable).count(),
            relayed_paths: stats.relay.open,
            peers: PeerSummary::gather(node).await?,
        })
    }
}

/// A lease this node granted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LeaseSummary {
    /// Its number (a string: it is 64 bits).
    pub lease: String,
    /// The task.
    pub task: String,
    /// Who holds it.
    pub holder: String,
    /// The GPU indices it holds.
    pub gpus: Vec<u32>,
    /// It expires in this many seconds unless renewed.
    pub expires_in_s: f64,
}

impl LeaseSummary {
    /// `lease` as of `now`.
    pub fn new(lease: &Lease, now: Instant) -> LeaseSummary {
        LeaseSummary {
            lease: lease.id.0.to_string(),
            task: lease.task.clone(),
            holder: lease.holder.to_string(),
            gpus: lease.gpus.clone(),
            expires_in_s: round(lease.expires.saturating_duration_since(now).as_secs_f64(), 3),
        }
    }

    /// The live leases `node` granted.
    pub async fn gather(node: &Node) -> Result<Vec<LeaseSummary>, NodeError> {
        let now = Instant::now();
        Ok(node.leases().await?.iter().map(|l| LeaseSummary::new(l, now)).collect())
    }
}

/// The round trip between two nodes: measured by one of them, estimated from their
/// coordinates, or unknown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RttSummary {
    /// One end measured it.
    Measured {
        /// Which end.
        measured_by: String,
        /// Median round trip.
        rtt_p50_ms: f64,
        /// Its 99th percentile.
        rtt_p99_ms: f64,
        /// Jitter.
        jitter_ms: f64,
        /// Loss, when measured.
        loss_ratio: Option<f64>,
        /// How old the measurement is.
        age_s: f64,
    },
    /// Nobody measured it; the two nodes' coordinates predict it.
    Estimated {
        /// The predicted round trip.
        rtt_ms: f64,
        /// The coordinates' relative error estimate.
        relative_error: f64,
    },
    /// Neither.
    Unknown,
}

impl RttSummary {
    /// What [`Node::link_between`] answered.
    pub fn new(answer: Option<LinkAnswer>) -> RttSummary {
        let us = |v: u32| round(f64::from(v) / 1e3, 3);
        match answer {
            Some(LinkAnswer::Measured { by, summary, age }) => RttSummary::Measured {
                measured_by: by.to_string(),
                rtt_p50_ms: us(summary.rtt_p50_us),
                rtt_p99_ms: us(summary.rtt_p99_us),
                jitter_ms: us(summary.jitter_us),
                loss_ratio: summary.loss_ppm.map(|p| ratio(f64::from(p) / 1e6)),
                age_s: round(age.as_secs_f64(), 3),
            },
            Some(LinkAnswer::Estimated { rtt_ms, error }) => {
                RttSummary::Estimated { rtt_ms: round(rtt_ms, 3), relative_error: round(error, 3) }
            }
            None => RttSummary::Unknown,
        }
    }
}

/// One ping over a tunnel, with the path it took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PingSummary {
    /// The peer.
    pub peer: String,
    /// The round trip.
    pub rtt_ms: f64,
    /// `direct`, `relayed` or `closed`.
    pub path: String,
    /// The relay, when relayed.
    pub via: Option<String>,
    /// The peer's UDP endpoint.
    pub endpoint: Option<String>,
}

impl PingSummary {
    /// A ping to `peer` answered in `rtt`, over `tunnel`.
    pub fn new(peer: PeerId, rtt: Duration, tunnel: Option<&TunnelStatus>) -> PingSummary {
        PingSummary {
            peer: peer.to_string(),
            rtt_ms: ms(rtt),
            path: tunnel.map_or("closed", |t| t.path.kind()).to_owned(),
            via: tunnel.and_then(|t| t.path.via()).map(text),
            endpoint: tunnel.and_then(|t| t.endpoint).map(text),
        }
    }
}

/// A node of a placement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PlacedNodeSummary {
    /// The node.
    pub peer: String,
    /// The GPU indices leased on it.
    pub gpus: Vec<u32>,
    /// The lease's number there (a string: it is 64 bits).
    pub lease: String,
    /// Its score when chosen.
    pub score: f64,
    /// Round trip from the placing node.
    pub rtt_ms: f64,
    /// Whether that round trip was measured (else estimated).
    pub measured: bool,
    /// Where the task's programs reach it over the VPN, when known.
    pub overlay: Option<OverlayAddresses>,
}

/// Where a task went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PlacementSummary {
    /// The task.
    pub task: String,
    /// Rounds of reservations it took.
    pub attempts: u32,
    /// The leases' length.
    pub lease_ms: u64,
    /// For a gang: the worst round trip between two members.
    pub worst_member_rtt_ms: Option<f64>,
    /// Its nodes, best first.
    pub nodes: Vec<PlacedNodeSummary>,
    /// Why these nodes, in words.
    pub explain: String,
}

impl PlacementSummary {
    /// `placement`, each node with its overlay addresses as `node` knows them.
    pub async fn gather(node: &Node, placement: &Placement) -> Result<PlacementSummary, NodeError> {
        let mut nodes = Vec::with_capacity(placement.nodes.len());
        for n in &placement.nodes {
            nodes.push(PlacedNodeSummary {
                peer: n.peer.to_string(),
                gpus: n.gpus.clone(),
                lease: n.lease.to_string(),
                score: round(n.score, 6),
                rtt_ms: round(n.rtt_ms, 3),
                measured: n.measured,
                overlay: node.overlay_of(n.peer).await?,
            });
        }
        Ok(PlacementSummary {
            task: placement.task.clone(),
            attempts: placement.attempts,
            lease_ms: placement.lease.as_millis() as u64,
            worst_member_rtt_ms: placement.worst_member_rtt_ms.filter(|w| w.is_finite()).map(|w| round(w, 3)),
            nodes,
            explain: placement.explain(),
        })
    }
}

/// A stock WireGuard peer of this node's VPN gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StockPeerSummary {
    /// Its WireGuard public key, base64.
    pub public_key: String,
    /// Its name.
    pub name: String,
    /// Its overlay IPv6 address.
    pub ipv6: String,
    /// Its overlay IPv4 address, when the swarm has an IPv4 range.
    pub ipv4: Option<String>,
    /// Where its packets last came from.
    pub endpoint: Option<String>,
    /// Seconds since its last handshake.
    pub last_handshake_s: Option<u64>,
    /// Bytes received from it.
    pub rx_bytes: u64,
    /// Bytes sent to it.
    pub tx_bytes: u64,
    /// The pre-shared key, base64: only in the answer that created the peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preshared_key: Option<String>,
}

impl StockPeerSummary {
    /// `peer`; its pre-shared key only when `secret`.
    pub fn new(peer: &super::StockPeer, secret: bool) -> StockPeerSummary {
        use base64::Engine as _;
        let b64 = |k: &[u8; 32]| base64::engine::general_purpose::STANDARD.encode(k);
        StockPeerSummary {
            public_key: b64(&peer.public_key),
            name: peer.name.clone(),
            ipv6: peer.ipv6.to_string(),
            ipv4: peer.ipv4.map(text),
            endpoint: peer.endpoint.map(text),
            last_handshake_s: peer.last_handshake.map(|d| d.as_secs()),
            rx_bytes: peer.rx_bytes,
            tx_bytes: peer.tx_bytes,
            preshared_key: secret.then(|| b64(&peer.preshared_key)),
        }
    }
}

/// The gateway a stock peer configures as its one WireGuard peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GatewaySummary {
    /// The gateway's WireGuard public key, base64.
    pub public_key: String,
    /// Its tunnel endpoints.
    pub endpoints: Vec<String>,
    /// The swarm's IPv6 prefix (`fdxx:.../48`).
    pub ipv6_prefix: String,
    /// The swarm's IPv4 range, when it has one.
    pub ipv4_range: Option<String>,
    /// The MTU to use.
    pub mtu: u16,
}

impl GatewaySummary {
    /// `gateway`.
    pub fn new(gateway: &super::Gateway) -> GatewaySummary {
        use base64::Engine as _;
        GatewaySummary {
            public_key: base64::engine::general_purpose::STANDARD.encode(gateway.public_key),
            endpoints: gateway.endpoints.iter().map(text).collect(),
            ipv6_prefix: format!("{}/48", gateway.ipv6_prefix),
            ipv4_range: gateway.ipv4_range.map(text),
            mtu: gateway.mtu,
        }
    }
}

/// A metric's value and target, each under its unit's key.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum MetricValue {
    /// Latency or jitter.
    Ms {
        /// The value.
        value_ms: f64,
        /// The target.
        target_ms: f64,
    },
    /// Loss.
    Ratio {
        /// The value.
        value_ratio: f64,
        /// The target.
        target_ratio: f64,
    },
    /// Throughput.
    Bps {
        /// The value.
        value_bps: f64,
        /// The target.
        target_bps: f64,
    },
}

impl MetricValue {
    /// `value` and `target` of `metric` in SI units (as [`NodeEvent`] carries them).
    pub fn from_si(metric: Metric, value: f64, target: f64) -> MetricValue {
        match metric {
            Metric::Latency | Metric::Jitter => {
                MetricValue::Ms { value_ms: round(value * 1e3, 3), target_ms: round(target * 1e3, 3) }
            }
            Metric::Loss => MetricValue::Ratio { value_ratio: ratio(value), target_ratio: ratio(target) },
            Metric::Throughput => MetricValue::Bps { value_bps: bps(value), target_bps: bps(target) },
        }
    }
}

/// A node that could take a breached member's place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Alternative {
    /// The node.
    pub peer: String,
    /// Its score for the task, 0 to 1.
    pub score: f64,
    /// Its round trip to the origin, ms.
    pub rtt_ms: f64,
    /// Whether that round trip was measured.
    pub measured: bool,
}

/// What happened, in a [`MonitorEvent`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A peer connected for the first time.
    PeerDiscovered {
        /// The peer.
        peer: String,
    },
    /// A peer's last connection closed.
    PeerLost {
        /// The peer.
        peer: String,
    },
    /// A newer record of a peer arrived.
    RecordUpdated {
        /// The peer.
        peer: String,
        /// The record's sequence number (a string: 64 bits).
        seq: String,
    },
    /// A peer's record expired.
    RecordExpired {
        /// The peer.
        peer: String,
    },
    /// A record was refused.
    RecordRejected {
        /// Who sent it.
        peer: String,
        /// Why.
        reason: String,
    },
    /// This node's GPUs changed.
    GpusChanged {
        /// How many before.
        gpus_before: usize,
        /// How many now.
        gpus_after: usize,
    },
    /// A tunnel came up.
    TunnelUp {
        /// The peer.
        peer: String,
        /// Its endpoint, when direct.
        endpoint: Option<String>,
    },
    /// A tunnel closed.
    TunnelDown {
        /// The peer.
        peer: String,
        /// Why.
        reason: String,
    },
    /// A peer stopped answering probes.
    PeerUnreachable {
        /// The peer.
        peer: String,
        /// For how long.
        silent_ms: f64,
    },
    /// A tunnel's endpoint moved.
    TunnelEndpoint {
        /// The peer.
        peer: String,
        /// The new endpoint.
        endpoint: String,
    },
    /// A tunnel's path changed.
    TunnelPath {
        /// The peer.
        peer: String,
        /// `direct` or `relayed`.
        path: String,
        /// The relay, when relayed.
        via: Option<String>,
    },
    /// This node's NAT was found.
    Nat {
        /// `open`, `easy`, `symmetric` or `unknown`.
        nat: String,
        /// The address the NAT maps it to.
        mapped: Option<String>,
    },
    /// A link broke its target.
    LinkDegraded {
        /// The peer.
        peer: String,
        /// `latency`, `jitter`, `loss` or `throughput`.
        metric: String,
        /// Its value and target.
        #[serde(flatten)]
        value: MetricValue,
    },
    /// A link that a placement held by this node constrained passed the task's limit.
    PlacementLinkBreached {
        /// The task.
        task: String,
        /// The member at the far end of the link.
        member: String,
        /// The other end: this node (the origin) or another member.
        other: String,
        /// Whether `other` is the origin.
        from_origin: bool,
        /// `rtt`, `loss`, `jitter` or `throughput`.
        metric: String,
        /// Its value, in `unit`.
        value: f64,
        /// The task's limit, in `unit`.
        limit: f64,
        /// `ms`, `ratio` or `bit/s`.
        unit: String,
        /// Nodes that could take the member's place, best first.
        alternatives: Vec<Alternative>,
    },
    /// A breached placement link met its task's limits again.
    PlacementLinkRecovered {
        /// The task.
        task: String,
        /// The member at the far end.
        member: String,
        /// The other end.
        other: String,
    },
    /// A link met its target again.
    LinkRecovered {
        /// The peer.
        peer: String,
        /// `latency`, `jitter`, `loss` or `throughput`.
        metric: String,
        /// Its value and target.
        #[serde(flatten)]
        value: MetricValue,
    },
    /// This node granted a lease.
    LeaseGranted {
        /// The lease's number.
        lease: String,
        /// The task.
        task: String,
        /// Who holds it.
        holder: String,
    },
    /// A lease this node granted ended (released or expired).
    LeaseEnded {
        /// The lease's number.
        lease: String,
        /// The task.
        task: String,
        /// Who held it.
        holder: String,
    },
    /// A slow reader missed this many events.
    Missed {
        /// How many.
        events: u64,
    },
}

/// One line of `monitor`: an event, stamped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MonitorEvent {
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
    /// When this node saw it, Unix milliseconds (a string, like every 64-bit number).
    pub time_unix_ms: String,
}

impl MonitorEvent {
    /// `kind`, stamped now.
    pub fn now(kind: EventKind) -> MonitorEvent {
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        MonitorEvent { kind, time_unix_ms: ms.to_string() }
    }

    /// `event`, stamped now; `None` for events `monitor` does not show (`Listening`).
    pub fn from_event(event: &NodeEvent) -> Option<MonitorEvent> {
        let kind = match event {
            NodeEvent::PeerDiscovered { peer } => EventKind::PeerDiscovered { peer: text(peer) },
            NodeEvent::PeerLost { peer } => EventKind::PeerLost { peer: text(peer) },
            NodeEvent::RecordUpdated { peer, seq } => {
                EventKind::RecordUpdated { peer: text(peer), seq: text(seq) }
            }
            NodeEvent::RecordExpired { peer } => EventKind::RecordExpired { peer: text(peer) },
            NodeEvent::RecordRejected { from, reason } => {
                EventKind::RecordRejected { peer: text(from), reason: (*reason).to_owned() }
            }
            NodeEvent::GpuInventoryChanged { before, after } => {
                EventKind::GpusChanged { gpus_before: *before, gpus_after: *after }
            }
            NodeEvent::TunnelUp { peer, endpoint } => {
                EventKind::TunnelUp { peer: text(peer), endpoint: endpoint.map(text) }
            }
            NodeEvent::TunnelDown { peer, reason } => {
                EventKind::TunnelDown { peer: text(peer), reason: (*reason).to_owned() }
            }
            NodeEvent::PeerUnreachable { peer, silent } => {
                EventKind::PeerUnreachable { peer: text(peer), silent_ms: ms(*silent) }
            }
            NodeEvent::TunnelEndpointChanged { peer, endpoint } => {
                EventKind::TunnelEndpoint { peer: text(peer), endpoint: endpoint.to_string() }
            }
            NodeEvent::TunnelPath { peer, path } => EventKind::TunnelPath {
                peer: text(peer),
                path: path.kind().to_owned(),
                via: path.via().map(text),
            },
            NodeEvent::NatDetected { nat, mapped } => EventKind::Nat {
                nat: nat.as_str().to_owned(),
                mapped: mapped.map(|m: SocketAddr| m.to_string()),
            },
            NodeEvent::LinkDegraded { peer, metric, value, target } => EventKind::LinkDegraded {
                peer: text(peer),
                metric: metric.as_str().to_owned(),
                value: MetricValue::from_si(*metric, *value, *target),
            },
            NodeEvent::LinkRecovered { peer, metric, value, target } => EventKind::LinkRecovered {
                peer: text(peer),
                metric: metric.as_str().to_owned(),
                value: MetricValue::from_si(*metric, *value, *target),
            },
            NodeEvent::PlacementLinkBreached {
                task,
                member,
                other,
                from_origin,
                metric,
                value,
                limit,
                alternatives,
            } => EventKind::PlacementLinkBreached {
                task: task.clone(),
                member: text(member),
                other: text(other),
                from_origin: *from_origin,
                metric: (*metric).to_owned(),
                value: *value,
                limit: *limit,
                unit: match *metric {
                    "loss" => "ratio",
                    "throughput" => "bit/s",
                    _ => "ms",
                }
                .to_owned(),
                alternatives: alternatives
                    .iter()
                    .map(|s| Alternative {
                        peer: text(s.peer),
                        score: s.score,
                        rtt_ms: s.rtt_ms,
                        measured: s.measured,
                    })
                    .collect(),
            },
            NodeEvent::PlacementLinkRecovered { task, member, other } => EventKind::PlacementLinkRecovered {
                task: task.clone(),
                member: text(member),
                other: text(other),
            },
            NodeEvent::Listening { .. } => return None,
        };
        Some(MonitorEvent::now(kind))
    }

    /// The lease changes between `before` and `now` (as (id, task, holder)), stamped.
    pub fn lease_changes(before: &[Lease], now: &[Lease]) -> Vec<MonitorEvent> {
        let key = |l: &Lease| (l.id, l.holder);
        let fields = |l: &Lease| (l.id.0.to_string(), l.task.clone(), l.holder.to_string());
        let mut out = Vec::new();
        for l in now.iter().filter(|l| !before.iter().any(|b| key(b) == key(l))) {
            let (lease, task, holder) = fields(l);
            out.push(MonitorEvent::now(EventKind::LeaseGranted { lease, task, holder }));
        }
        for l in before.iter().filter(|b| !now.iter().any(|l| key(l) == key(b))) {
            let (lease, task, holder) = fields(l);
            out.push(MonitorEvent::now(EventKind::LeaseEnded { lease, task, holder }));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_their_units_in_their_keys_and_parse_back() {
        let peer = PeerId::random();
        let degraded = NodeEvent::LinkDegraded { peer, metric: Metric::Latency, value: 0.0731, target: 0.05 };
        let e = MonitorEvent::from_event(&degraded).unwrap();
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["event"], "link_degraded");
        assert_eq!(v["value_ms"], 73.1);
        assert_eq!(v["target_ms"], 50.0);
        assert!(v["time_unix_ms"].is_string());
        let back: MonitorEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);

        let loss = NodeEvent::LinkRecovered { peer, metric: Metric::Loss, value: 0.00005, target: 0.0001 };
        let v = serde_json::to_value(MonitorEvent::from_event(&loss).unwrap()).unwrap();
        assert_eq!((v["value_ratio"].as_f64(), v["target_ratio"].as_f64()), (Some(0.00005), Some(0.0001)));
        let rate = NodeEvent::LinkDegraded { peer, metric: Metric::Throughput, value: 4.5e8, target: 1e9 };
        let v = serde_json::to_value(MonitorEvent::from_event(&rate).unwrap()).unwrap();
        assert_eq!(v["value_bps"], 450_000_000.0);
    }

    #[test]
    fn rtt_answers_name_their_kind() {
        let v = serde_json::to_value(RttSummary::new(None)).unwrap();
        assert_eq!(v, serde_json::json!({"kind": "unknown"}));
        let est = RttSummary::new(Some(LinkAnswer::Estimated { rtt_ms: 12.345_678, error: 0.2 }));
        let v = serde_json::to_value(&est).unwrap();
        assert_eq!(v, serde_json::json!({"kind": "estimated", "rtt_ms": 12.346, "relative_error": 0.2}));
        assert_eq!(serde_json::from_value::<RttSummary>(v).unwrap(), est);
    }

    #[test]
    fn a_missing_tunnel_is_none_not_absent() {
        let v = serde_json::to_value(TunnelSummary::new(None)).unwrap();
        assert_eq!(v["state"], "none");
        assert!(v["path"].is_null());
    }
}
