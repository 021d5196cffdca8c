//! Text tables for the terminal.

use std::fmt::Write as _;

use std::time::Duration;

use swarm::core::link::{Metric, SlaState};
use swarm::core::view::ClusterSnapshot;
use swarm::net::LinkReport;
use swarm::net::OverlayAddresses;
use swarm::net::Path;
use swarm::{PeerId, TunnelStatus};

/// Shortens a peer id to its last 8 characters, as libp2p logs do.
pub fn short(peer: &PeerId) -> String {
    let s = peer.to_base58();
    format!("…{}", &s[s.len().saturating_sub(8)..])
}

/// The state of a tunnel in a few characters: `up 12s` (since its last handshake),
/// `unreach` (its probes went unanswered), `opening`, `down`, or `-` for none.
pub fn tunnel_state(t: Option<&TunnelStatus>) -> String {
    match t {
        Some(t) if t.unreachable => "unreach".to_owned(),
        Some(t) if t.established => {
            format!("up {}s", t.last_handshake.unwrap_or(Duration::ZERO).as_secs())
        }
        Some(t) if t.handshake_in_progress => "opening".to_owned(),
        Some(_) => "down".to_owned(),
        None => "-".to_owned(),
    }
}

/// Where a tunnel's packets go, in one column: its UDP endpoint, `relayed …via`, or
/// `ENDPOINT via …` while its data takes a detour.
pub fn path_column(t: &TunnelStatus) -> String {
    match (t.path, t.endpoint) {
        (Path::Detour { via }, Some(e)) => format!("{e} via {}", short(&via)),
        (Path::Detour { via }, None) => format!("via {}", short(&via)),
        (Path::Relayed { via }, _) => format!("relayed {}", short(&via)),
        (_, Some(e)) => e.to_string(),
        (_, None) => "-".to_owned(),
    }
}

/// A node's overlay addresses in one column: `IPv4 IPv6`, or `-`.
pub fn overlay_column(a: Option<&OverlayAddresses>) -> String {
    match a {
        Some(OverlayAddresses { ipv6, ipv4: Some(v4), .. }) => format!("{v4} {ipv6}"),
        Some(a) => a.ipv6.to_string(),
        None => "-".to_owned(),
    }
}

/// One row per record: who, what it has, how fresh, whether we are connected, the state
/// of our tunnel to it, and its overlay addresses.
pub fn peer_table(
    view: &ClusterSnapshot,
    connected: &[PeerId],
    tunnels: &[TunnelStatus],
    overlay: &[(PeerId, OverlayAddresses)],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:<28} {:>4} {:>8} {:>6} {:<6} {:<8} {:<22} {:<7} {:<44} LABELS",
        "PEER", "GPUS", "CPU", "MEM GiB", "AGE s", "LINK", "TUNNEL", "TUNNEL ENDPOINT", "NAT", "OVERLAY"
    );
    for e in &view.entries {
        let peer = e.record.peer_id;
        let link = if e.local {
            "self"
        } else if connected.contains(&peer) {
            "conn"
        } else {
            "gossip"
        };
        let tunnel = tunnels.iter().find(|t| t.peer == peer);
        let state = if e.local { "self".to_owned() } else { tunnel_state(tunnel) };
        let endpoint = match tunnel.filter(|t| t.endpoint.is_some() || t.path.via().is_some()) {
            Some(t) => path_column(t),
            None => e.tunnel.udp_endpoints.first().map_or("-".to_owned(), |a| a.to_string()),
        };
        let labels: Vec<String> =
            e.record.labels.iter().map(|l| format!("{}={}", l.key.as_str(), l.value.as_str())).collect();
        let age = e.received_at.elapsed().as_secs_f32();
        let addrs = overlay_column(overlay.iter().find(|(p, _)| *p == peer).map(|(_, a)| a));
        let _ = writeln!(
            out,
            "{:<10} {:<28} {:>4} {:>8.1} {:>6.1} {:<6} {:<8} {:<22} {:<7} {:<44} {}",
            short(&peer),
            e.record.gpus.summary(),
            e.record.cpu_cores,
            e.record.memory_bytes as f64 / (1u64 << 30) as f64,
            age,
            link,
            state,
            endpoint,
            e.tunnel.nat.as_str(),
            addrs,
            labels.join(",")
        );
    }
    out
}

/// One row per tunnel: state, traffic, drops, and a round-trip time measured over it.
pub fn tunnel_table(tunnels: &[TunnelStatus], rtt: &[(PeerId, Option<Duration>)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:<8} {:<22} {:>4} {:>8} {:>8} {:>10} {:>10} {:>9} DROPS",
        "PEER", "TUNNEL", "ENDPOINT", "HS", "TX PKT", "RX PKT", "TX BYTES", "RX BYTES", "RTT ms"
    );
    for t in tunnels {
        let rtt = rtt
            .iter()
            .find(|(p, _)| *p == t.peer)
            .and_then(|(_, r)| *r)
            .map_or("-".to_owned(), |r| format!("{:.3}", r.as_secs_f64() * 1e3));
        let drops: Vec<String> = t.drops.iter().map(|(r, n)| format!("{r}={n}")).collect();
        let _ = writeln!(
            out,
            "{:<10} {:<8} {:<22} {:>4} {:>8} {:>8} {:>10} {:>10} {:>9} {}",
            short(&t.peer),
            tunnel_state(Some(t)),
            path_column(t),
            t.handshakes,
            t.tx_packets,
            t.rx_packets,
            t.tx_bytes,
            t.rx_bytes,
            rtt,
            if drops.is_empty() { "-".to_owned() } else { drops.join(",") }
        );
    }
    out
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".to_owned(), |d| format!("{:.3}", d.as_secs_f64() * 1e3))
}

/// `ok`, `DEGRADED` or `?` (not enough samples) for one metric.
pub fn sla_state(report: &LinkReport, metric: Metric) -> &'static str {
    swarm::net::sla_state_name(
        report.sla.iter().find(|v| v.metric == metric).map_or(SlaState::Unknown, |v| v.state),
    )
}

/// One row per measured link: round trips (short window), jitter each way, loss, goodput
/// and the SLA verdict per metric.
pub fn link_table(links: &[LinkReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:<17} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9}  SLA latency/jitter/loss/throughput",
        "PEER", "PATH", "N", "RTT p50", "RTT p99", "RTT max", "JIT in", "JIT out", "LOSS %", "RX Mbps", "TPUT Mbps"
    );
    for l in links {
        let w = &l.stats.short;
        let loss = w.loss_in.filter(|r| r.samples > 0).or(w.probe_loss);
        let _ = writeln!(
            out,
            "{:<10} {:<17} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9}  {}/{}/{}/{}",
            short(&l.peer),
            match l.path.via() {
                Some(via) => format!("relayed {}", short(&via)),
                None => l.path.kind().to_owned(),
            },
            w.rtt.map_or(0, |q| q.samples),
            ms(w.rtt.map(|q| q.p50)),
            ms(w.rtt.map(|q| q.p99)),
            ms(w.rtt.map(|q| q.max)),
            ms(l.stats.jitter_in),
            ms(l.stats.jitter_out),
            loss.map_or("-".to_owned(), |r| format!("{:.3}", r.value * 100.0)),
            w.rx_bps.map_or("-".to_owned(), |b| format!("{:.3}", b / 1e6)),
            l.stats.throughput.map_or("-".to_owned(), |(b, _)| format!("{:.0}", b / 1e6)),
            sla_state(l, Metric::Latency),
            sla_state(l, Metric::Jitter),
            sla_state(l, Metric::Loss),
            sla_state(l, Metric::Throughput),
        );
    }
    out
}
