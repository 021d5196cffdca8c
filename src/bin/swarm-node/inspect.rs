//! What the operator's commands read from a running node through its control socket:
//! `status`, `peers`, `leases`, `rtt`, `join` and `monitor`. The node answers in JSON
//! (every value's unit in its key); the client prints that JSON with `--json`, or a
//! table.

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::Args;
use serde_json::{json, Value};
use swarm::core::link::summary::LinkAnswer;
use swarm::core::link::SlaState;
use swarm::net::{LinkReport, TunnelStatus};
use swarm::{Multiaddr, Node, NodeEvent, PeerId};
use tokio::sync::broadcast;

use crate::control::{call, ControlArgs};
use crate::table::short;

/// What the running node knows beyond its API: when its restart grace ends. Shared
/// with the control endpoint.
pub struct RunInfo {
    /// New leases are refused until then (a node restarted on an existing identity).
    pub grace_until: Option<Instant>,
    /// The node's events, as JSON lines, for `monitor`.
    pub events: broadcast::Sender<Value>,
}

/// Events a slow `monitor` may fall behind by before it is told how many it missed.
pub const MONITOR_BACKLOG: usize = 1024;

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Rounds to 3 decimals (a microsecond, for milliseconds): no float noise in JSON.
fn round3(x: f64) -> f64 {
    swarm::net::summary::round(x, 3)
}

fn ms(d: Option<Duration>) -> Value {
    d.map_or(Value::Null, |d| json!(round3(d.as_secs_f64() * 1e3)))
}

/// A node event as one JSON object: `event` names it, `time_unix_ms` stamps it.
pub fn event_json(event: &NodeEvent) -> Option<Value> {
    let (name, mut body) = match event {
        NodeEvent::PeerDiscovered { peer } => ("peer_discovered", json!({"peer": peer.to_string()})),
        NodeEvent::PeerLost { peer } => ("peer_lost", json!({"peer": peer.to_string()})),
        NodeEvent::RecordUpdated { peer, seq } => {
            ("record_updated", json!({"peer": peer.to_string(), "seq": seq.to_string()}))
        }
        NodeEvent::RecordExpired { peer } => ("record_expired", json!({"peer": peer.to_string()})),
        NodeEvent::RecordRejected { from, reason } => {
            ("record_rejected", json!({"peer": from.to_string(), "reason": reason}))
        }
        NodeEvent::GpuInventoryChanged { before, after } => {
            ("gpus_changed", json!({"gpus_before": before, "gpus_after": after}))
        }
        NodeEvent::TunnelUp { peer, endpoint } => {
            ("tunnel_up", json!({"peer": peer.to_string(), "endpoint": endpoint.map(|e| e.to_string())}))
        }
        NodeEvent::TunnelDown { peer, reason } => {
            ("tunnel_down", json!({"peer": peer.to_string(), "reason": reason}))
        }
        NodeEvent::PeerUnreachable { peer, silent } => {
            let silent_ms = swarm::net::summary::ms(*silent);
            ("peer_unreachable", json!({"peer": peer.to_string(), "silent_ms": silent_ms}))
        }
        NodeEvent::TunnelEndpointChanged { peer, endpoint } => {
            ("tunnel_endpoint", json!({"peer": peer.to_string(), "endpoint": endpoint.to_string()}))
        }
        NodeEvent::TunnelPath { peer, path } => (
            "tunnel_path",
            json!({"peer": peer.to_string(), "path": path.kind(), "via": path.via().map(|v| v.to_string())}),
        ),
        NodeEvent::NatDetected { nat, mapped } => {
            ("nat", json!({"nat": nat.as_str(), "mapped": mapped.map(|m| m.to_string())}))
        }
        NodeEvent::LinkDegraded { peer, metric, value, target }
        | NodeEvent::LinkRecovered { peer, metric, value, target } => {
            let name = if matches!(event, NodeEvent::LinkDegraded { .. }) {
                "link_degraded"
            } else {
                "link_recovered"
            };
            let unit = metric.si_unit();
            let mut body = json!({"peer": peer.to_string(), "metric": metric.as_str()});
            body[format!("value_{unit}")] = json!(*value);
            body[format!("target_{unit}")] = json!(*target);
            (name, body)
        }
        _ => return None,
    };
    body["event"] = json!(name);
    body["time_unix_ms"] = json!(unix_ms().to_string());
    Some(body)
}

/// The worst SLA state of a link: `degraded`, `ok`, or `unknown`.
fn sla_state(l: &LinkReport) -> &'static str {
    if l.sla.iter().any(|v| v.state == SlaState::Degraded) {
        "degraded"
    } else if l.sla.iter().any(|v| v.state == SlaState::Ok) {
        "ok"
    } else {
        "unknown"
    }
}

fn tunnel_json(t: Option<&TunnelStatus>) -> Value {
    let Some(t) = t else { return json!({"state": "none"}) };
    let state = if t.unreachable {
        "unreachable"
    } else if t.established {
        "up"
    } else if t.handshake_in_progress {
        "opening"
    } else {
        "down"
    };
    json!({
        "state": state,
        "path": t.path.kind(),
        "via": t.path.via().map(|v| v.to_string()),
        "endpoint": t.endpoint.map(|e| e.to_string()),
        "last_handshake_s": t.last_handshake.map(|d| d.as_secs()),
        "tx_bytes": t.tx_bytes,
        "rx_bytes": t.rx_bytes,
    })
}

fn link_json(l: Option<&LinkReport>) -> Value {
    let Some(l) = l else { return Value::Null };
    let w = &l.stats.short;
    json!({
        "rtt_p50_ms": ms(w.rtt.map(|q| q.p50)),
        "rtt_p99_ms": ms(w.rtt.map(|q| q.p99)),
        "jitter_ms": ms(l.stats.jitter_in),
        "loss_ratio": w.loss_in.map(|r| swarm::net::summary::ratio(r.value)),
        "rx_bps": w.rx_bps.map(|b| b.round()),
        "tx_bps": w.tx_bps.map(|b| b.round()),
        "sla": sla_state(l),
    })
}

/// Every peer in the node's view, with its tunnel and link.
pub async fn peers_json(node: &Node) -> anyhow::Result<Value> {
    let view = node.cluster().await?;
    let connected = node.connected_peers().await?;
    let tunnels = node.tunnels().await?;
    let links = node.links().await?;
    let mut rows = Vec::new();
    for e in view.entries.iter().filter(|e| !e.local) {
        let peer = e.record.peer_id;
        let overlay = node.overlay_of(peer).await?;
        rows.push(json!({
            "peer": peer.to_string(),
            "connected": connected.contains(&peer),
            "gpus": e.record.gpus.summary(),
            "nat": e.tunnel.nat.as_str(),
            "overlay_ipv6": overlay.map(|a| a.ipv6.to_string()),
            "overlay_ipv4": overlay.and_then(|a| a.ipv4).map(|a| a.to_string()),
            "record_age_s": round3(e.received_at.elapsed().as_secs_f64()),
            "tunnel": tunnel_json(tunnels.iter().find(|t| t.peer == peer)),
            "link": link_json(links.iter().find(|l| l.peer == peer)),
        }));
    }
    Ok(Value::Array(rows))
}

/// This node: id, addresses (the tunnel port included), NAT, overlay, grace, peers.
pub async fn status_json(node: &Node, info: &RunInfo) -> anyhow::Result<Value> {
    let view = node.cluster().await?;
    let own = view.entries.iter().find(|e| e.local);
    let listen: Vec<String> = node.listen_addrs().await?.iter().map(ToString::to_string).collect();
    let tunnels = node.tunnels().await?;
    let overlay = node.overlay().await.ok();
    let grace = info.grace_until.map_or(0, |u| u.saturating_duration_since(Instant::now()).as_secs());
    let stats = node.stats().await?;
    Ok(json!({
        "peer_id": node.peer_id().to_string(),
        "listen": listen,
        "tunnel_endpoints": own.map(|e| e.tunnel.udp_endpoints.iter().map(ToString::to_string).collect::<Vec<_>>()),
        "nat": own.map_or("unknown", |e| e.tunnel.nat.as_str()),
        "overlay_ipv6": overlay.map(|a| a.ipv6.to_string()),
        "overlay_ipv4": overlay.and_then(|a| a.ipv4).map(|a| a.to_string()),
        "gpus": own.map(|e| e.record.gpus.summary()),
        "lease_grace_left_s": grace,
        "records": view.len(),
        "connected_peers": stats.connected_peers,
        "tunnels_up": tunnels.iter().filter(|t| t.established && !t.unreachable).count(),
        "relayed_paths": stats.relay.open,
        "peers": peers_json(node).await?,
    }))
}

/// The live leases this node granted: to whom, for which task, until when.
pub async fn leases_json(node: &Node) -> anyhow::Result<Value> {
    let now = Instant::now();
    let rows: Vec<Value> = node
        .leases()
        .await?
        .iter()
        .map(|l| {
            json!({
                "lease": l.id.0.to_string(),
                "task": l.task,
                "holder": l.holder.to_string(),
                "gpus": l.gpus,
                "expires_in_s": round3(l.expires.saturating_duration_since(now).as_secs_f64()),
            })
        })
        .collect();
    Ok(Value::Array(rows))
}

fn peer_arg(request: &Value, key: &str) -> anyhow::Result<PeerId> {
    let text = request[key].as_str().with_context(|| format!("which peer ({key})?"))?;
    text.parse().map_err(|e| anyhow::anyhow!("{text:?} is not a peer id: {e}"))
}

/// The round trip between two nodes, measured by one of them or estimated from their
/// coordinates.
pub async fn rtt_json(node: &Node, request: &Value) -> anyhow::Result<Value> {
    let (a, b) = (peer_arg(request, "a")?, peer_arg(request, "b")?);
    Ok(match node.link_between(a, b).await? {
        Some(LinkAnswer::Measured { by, summary, age }) => json!({
            "kind": "measured",
            "measured_by": by.to_string(),
            "rtt_p50_ms": round3(f64::from(summary.rtt_p50_us) / 1e3),
            "rtt_p99_ms": round3(f64::from(summary.rtt_p99_us) / 1e3),
            "jitter_ms": round3(f64::from(summary.jitter_us) / 1e3),
            "loss_ratio": summary.loss_ppm.map(|p| swarm::net::summary::ratio(f64::from(p) / 1e6)),
            "age_s": round3(age.as_secs_f64()),
        }),
        Some(LinkAnswer::Estimated { rtt_ms, error }) => {
            json!({"kind": "estimated", "rtt_ms": round3(rtt_ms), "relative_error": round3(error)})
        }
        None => json!({"kind": "unknown"}),
    })
}

/// Dials `addr` and waits (up to 10 s) until its peer is connected.
pub async fn join_json(node: &Node, request: &Value) -> anyhow::Result<Value> {
    let text = request["addr"].as_str().context("which address?")?;
    let addr: Multiaddr = text.parse().map_err(|e| anyhow::anyhow!("{text:?} is not a multiaddr: {e}"))?;
    // The peer the address names, if it does (`.../p2p/<id>`).
    let peer = text.rsplit_once("/p2p/").and_then(|(_, id)| id.split('/').next()?.parse::<PeerId>().ok());
    let before = node.connected_peers().await?;
    node.dial(addr.clone()).await.with_context(|| format!("cannot dial {addr}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = node.connected_peers().await?;
        let joined = match peer {
            Some(p) => now.contains(&p),
            None => now.iter().any(|p| !before.contains(p)),
        };
        if joined {
            return Ok(json!({"joined": addr.to_string(), "connected_peers": now.len()}));
        }
        if Instant::now() >= deadline {
            anyhow::bail!("{addr} did not answer within 10 s (see the node's log for why)");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Lease changes as monitor events: what appeared and what went since `known`.
pub async fn lease_events(
    node: &Node,
    known: &mut Vec<(String, String, String)>,
) -> anyhow::Result<Vec<Value>> {
    let now: Vec<(String, String, String)> = node
        .leases()
        .await?
        .iter()
        .map(|l| (l.id.0.to_string(), l.task.clone(), l.holder.to_string()))
        .collect();
    let mut out = Vec::new();
    for (name, from, to) in [("lease_granted", &now, &*known), ("lease_ended", &*known, &now)] {
        for (id, task, holder) in from.iter().filter(|l| !to.contains(l)) {
            out.push(json!({
                "event": name, "lease": id, "task": task, "holder": holder, "time_unix_ms": unix_ms().to_string()
            }));
        }
    }
    *known = now;
    Ok(out)
}

/// `status`, `peers`, `leases`: one answer, printed.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub control: ControlArgs,
    /// Print the node's JSON answer instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `rtt A B`.
#[derive(Debug, Args)]
pub struct RttArgs {
    /// One end (a peer id).
    pub a: String,
    /// The other end.
    pub b: String,
    #[command(flatten)]
    pub show: ShowArgs,
}

/// `join MULTIADDR`.
#[derive(Debug, Args)]
pub struct JoinArgs {
    /// A member's address, e.g. /ip4/203.0.113.7/udp/4190/quic-v1/p2p/12D3...
    pub addr: String,
    #[command(flatten)]
    pub show: ShowArgs,
}

fn or_dash(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

fn peer_short(v: &Value) -> String {
    v.as_str().and_then(|s| s.parse::<PeerId>().ok()).map_or_else(|| or_dash(v), |p| short(&p))
}

fn peers_text(peers: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:<5} {:<8} {:<24} {:<7} {:>9} {:>9} {:>8} {:<9} {:<16} GPUS",
        "PEER", "CONN", "TUNNEL", "PATH", "NAT", "RTT ms", "JITTER ms", "LOSS %", "SLA", "OVERLAY"
    );
    for p in peers.as_array().into_iter().flatten() {
        let t = &p["tunnel"];
        let path = match (t["path"].as_str(), t["via"].as_str()) {
            (Some("relayed"), Some(_)) => format!("relayed via {}", peer_short(&t["via"])),
            (Some(_), _) if !t["endpoint"].is_null() => or_dash(&t["endpoint"]),
            (p, _) => p.unwrap_or("-").to_owned(),
        };
        let l = &p["link"];
        let loss = l["loss_ratio"].as_f64().map_or("-".to_owned(), |r| format!("{:.3}", r * 100.0));
        let _ = writeln!(
            out,
            "{:<10} {:<5} {:<8} {:<24} {:<7} {:>9} {:>9} {:>8} {:<9} {:<16} {}",
            peer_short(&p["peer"]),
            if p["connected"] == json!(true) { "yes" } else { "no" },
            or_dash(&t["state"]),
            path,
            or_dash(&p["nat"]),
            or_dash(&l["rtt_p50_ms"]),
            or_dash(&l["jitter_ms"]),
            loss,
            or_dash(&l["sla"]),
            or_dash(&p["overlay_ipv4"]),
            or_dash(&p["gpus"]),
        );
    }
    out
}

fn status_text(s: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "peer id    {}", or_dash(&s["peer_id"]));
    for a in s["listen"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "listening  {}", or_dash(a));
    }
    let endpoints: Vec<String> =
        s["tunnel_endpoints"].as_array().into_iter().flatten().map(or_dash).collect();
    let _ = writeln!(out, "tunnel     {} (UDP), NAT {}", endpoints.join(", "), or_dash(&s["nat"]));
    let _ = writeln!(out, "overlay    {} {}", or_dash(&s["overlay_ipv4"]), or_dash(&s["overlay_ipv6"]));
    let _ = writeln!(out, "gpus       {}", or_dash(&s["gpus"]));
    let grace = s["lease_grace_left_s"].as_u64().unwrap_or(0);
    if grace > 0 {
        let _ = writeln!(out, "leases     new leases refused for {grace} s more (restart grace)");
    }
    let _ = writeln!(
        out,
        "{} records, {} connected, {} tunnels up, {} paths relayed for others",
        or_dash(&s["records"]),
        or_dash(&s["connected_peers"]),
        or_dash(&s["tunnels_up"]),
        or_dash(&s["relayed_paths"])
    );
    out.push('\n');
    out.push_str(&peers_text(&s["peers"]));
    out
}

fn leases_text(leases: &Value) -> String {
    let rows = leases.as_array().map_or(&[][..], Vec::as_slice);
    if rows.is_empty() {
        return "no live leases granted by this node\n".to_owned();
    }
    let mut out =
        format!("{:<22} {:<20} {:<10} {:<10} {:>12}\n", "LEASE", "TASK", "HOLDER", "GPUS", "EXPIRES IN s");
    for l in rows {
        let gpus: Vec<String> = l["gpus"].as_array().into_iter().flatten().map(or_dash).collect();
        let _ = writeln!(
            out,
            "{:<22} {:<20} {:<10} {:<10} {:>12}",
            or_dash(&l["lease"]),
            or_dash(&l["task"]),
            peer_short(&l["holder"]),
            gpus.join(","),
            or_dash(&l["expires_in_s"])
        );
    }
    out
}

fn rtt_text(r: &Value) -> String {
    match r["kind"].as_str() {
        Some("measured") => format!(
            "{} ms (p50; p99 {} ms, jitter {} ms), measured by {} {} s ago\n",
            or_dash(&r["rtt_p50_ms"]),
            or_dash(&r["rtt_p99_ms"]),
            or_dash(&r["jitter_ms"]),
            or_dash(&r["measured_by"]),
            or_dash(&r["age_s"])
        ),
        Some("estimated") => format!(
            "{} ms, estimated from the nodes' coordinates (nobody measured it; relative error {})\n",
            or_dash(&r["rtt_ms"]),
            or_dash(&r["relative_error"])
        ),
        _ => "unknown: not measured, and no coordinates for both nodes\n".to_owned(),
    }
}

/// One line per monitor event, for a terminal.
pub fn event_text(e: &Value) -> String {
    let mut parts = vec![or_dash(&e["event"])];
    if let Some(obj) = e.as_object() {
        for (k, v) in obj {
            if k != "event" && k != "time_unix_ms" && !v.is_null() {
                let v = if k == "peer" || k == "holder" || k == "via" { peer_short(v) } else { or_dash(v) };
                parts.push(format!("{k}={v}"));
            }
        }
    }
    parts.join(" ")
}

/// Prints `answer[key]` as JSON or as `text` renders it.
fn print(answer: &Value, key: &str, json: bool, text: fn(&Value) -> String) -> anyhow::Result<()> {
    let v = &answer[key];
    if json {
        println!("{}", serde_json::to_string_pretty(v)?);
    } else {
        print!("{}", text(v));
    }
    Ok(())
}

pub async fn status(args: ShowArgs) -> anyhow::Result<()> {
    let answer = call(&args.control.path(), &json!({"op": "status"}), args.json).await?;
    print(&answer, "status", args.json, status_text)
}

pub async fn peers(args: ShowArgs) -> anyhow::Result<()> {
    let answer = call(&args.control.path(), &json!({"op": "peers"}), args.json).await?;
    print(&answer, "peers", args.json, peers_text)
}

pub async fn leases(args: ShowArgs) -> anyhow::Result<()> {
    let answer = call(&args.control.path(), &json!({"op": "leases"}), args.json).await?;
    print(&answer, "leases", args.json, leases_text)
}

pub async fn rtt(args: RttArgs) -> anyhow::Result<()> {
    let request = json!({"op": "rtt", "a": args.a, "b": args.b});
    let answer = call(&args.show.control.path(), &request, args.show.json).await?;
    print(&answer, "rtt", args.show.json, rtt_text)
}

pub async fn join(args: JoinArgs) -> anyhow::Result<()> {
    let request = json!({"op": "join", "addr": args.addr});
    let answer = call(&args.show.control.path(), &request, args.show.json).await?;
    print(&answer, "join", args.show.json, |j| {
        format!("joined {}: {} peers connected\n", or_dash(&j["joined"]), or_dash(&j["connected_peers"]))
    })
}

/// `monitor`: the node's events as they happen (degraded and recovered links, records,
/// tunnels and their paths, leases), one line each, until Ctrl-C or the node stops.
pub async fn monitor(args: ShowArgs) -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
    let path = args.control.path();
    let stream = match crate::control::connect(&path).await {
        Ok(s) => s,
        Err(e) => {
            if args.json {
                println!("{}", json!({"ok": false, "error": format!("{e:#}")}));
            }
            return Err(e);
        }
    };
    let (read, mut write) = stream.into_split();
    write.write_all(format!("{}\n", json!({"op": "monitor"})).as_bytes()).await?;
    let mut lines = BufReader::new(read).lines();
    let first = lines.next_line().await?.context("the node closed the connection without an answer")?;
    let answer: Value = serde_json::from_str(&first).context("the node's answer is not JSON")?;
    if answer["ok"] != json!(true) {
        if args.json {
            println!("{answer}");
        }
        anyhow::bail!("{}", answer["error"].as_str().unwrap_or("the node refused"));
    }
    while let Some(line) = lines.next_line().await? {
        if args.json {
            println!("{line}");
        } else if let Ok(event) = serde_json::from_str::<Value>(&line) {
            println!("{}", event_text(&event));
        }
    }
    Ok(())
}
