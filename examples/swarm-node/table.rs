//! Text tables for the terminal.

use std::fmt::Write as _;

use swarm::core::view::ClusterSnapshot;
use swarm::PeerId;

/// Shortens a peer id to its last 8 characters, as libp2p logs do.
pub fn short(peer: &PeerId) -> String {
    let s = peer.to_base58();
    format!("…{}", &s[s.len().saturating_sub(8)..])
}

/// One row per record: who, what it has, how fresh, whether we are connected.
pub fn peer_table(view: &ClusterSnapshot, connected: &[PeerId]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:<28} {:>4} {:>8} {:>6} {:<6} {:<22} LABELS",
        "PEER", "GPUS", "CPU", "MEM GiB", "AGE s", "LINK", "TUNNEL ENDPOINT"
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
        let endpoint = e.tunnel.udp_endpoints.first().map_or("-".to_owned(), |a| a.to_string());
        let labels: Vec<String> =
            e.record.labels.iter().map(|l| format!("{}={}", l.key.as_str(), l.value.as_str())).collect();
        let age = e.received_at.elapsed().as_secs_f32();
        let _ = writeln!(
            out,
            "{:<10} {:<28} {:>4} {:>8.1} {:>6.1} {:<6} {:<22} {}",
            short(&peer),
            e.record.gpus.summary(),
            e.record.cpu_cores,
            e.record.memory_bytes as f64 / (1u64 << 30) as f64,
            age,
            link,
            endpoint,
            labels.join(",")
        );
    }
    out
}
