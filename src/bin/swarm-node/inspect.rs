//! What the operator's commands read from a running node through its control socket:
//! `status`, `peers`, `leases`, `rtt`, `join` and `monitor`. The node answers with the
//! serde types of [`swarm::net::answers`] (every value's unit in its key); the client
//! prints that JSON with `--json`, or a table.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use swarm::net::answers::{
    EventKind, LeaseSummary, MetricValue, MonitorEvent, PeerSummary, RttSummary, StatusSummary,
};
use swarm::{Multiaddr, Node, PeerId};
use tokio::sync::broadcast;

use crate::control::{call, unexpected, Body, ControlArgs, Joined, Reply, Request};
use crate::table::short;

/// What the running node knows beyond its API: when its restart grace ends. Shared
/// with the control endpoint.
pub struct RunInfo {
    /// New leases are refused until then (a node restarted on an existing identity).
    pub grace_until: Option<Instant>,
    /// The node's events, for `monitor`.
    pub events: broadcast::Sender<MonitorEvent>,
}

impl RunInfo {
    /// How much longer new leases are refused.
    pub fn grace_left(&self) -> Duration {
        self.grace_until.map_or(Duration::ZERO, |u| u.saturating_duration_since(Instant::now()))
    }
}

/// Events a slow `monitor` may fall behind by before it is told how many it missed.
pub const MONITOR_BACKLOG: usize = 1024;

fn peer_arg(text: &str, which: &str) -> anyhow::Result<PeerId> {
    text.parse().map_err(|e| anyhow::anyhow!("{which}: {text:?} is not a peer id: {e}"))
}

/// The round trip between two nodes, measured by one of them or estimated from their
/// coordinates.
pub async fn rtt_between(node: &Node, a: &str, b: &str) -> anyhow::Result<RttSummary> {
    let (a, b) = (peer_arg(a, "a")?, peer_arg(b, "b")?);
    Ok(RttSummary::new(node.link_between(a, b).await?))
}

/// Dials `text` and waits (up to 10 s) until its peer is connected.
pub async fn join_addr(node: &Node, text: &str) -> anyhow::Result<Joined> {
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
            return Ok(Joined { joined: addr.to_string(), connected_peers: now.len() });
        }
        if Instant::now() >= deadline {
            anyhow::bail!("{addr} did not answer within 10 s (see the node's log for why)");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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

fn dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn peer_short(text: &str) -> String {
    text.parse::<PeerId>().map_or_else(|_| text.to_owned(), |p| short(&p))
}

fn peers_text(peers: &[PeerSummary]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:<5} {:<11} {:<24} {:<9} {:>9} {:>9} {:>8} {:<9} {:<16} GPUS",
        "PEER", "CONN", "TUNNEL", "PATH", "NAT", "RTT ms", "JITTER ms", "LOSS %", "SLA", "OVERLAY"
    );
    for p in peers {
        let t = &p.tunnel;
        let path = match (t.path.as_deref(), &t.via, &t.endpoint) {
            (Some("relayed"), Some(via), _) => format!("relayed via {}", peer_short(via)),
            (Some("detour"), Some(via), Some(endpoint)) => format!("{endpoint} via {}", peer_short(via)),
            (Some("detour"), Some(via), None) => format!("via {}", peer_short(via)),
            (Some(_), _, Some(endpoint)) => endpoint.clone(),
            (path, _, _) => path.unwrap_or("-").to_owned(),
        };
        let l = p.link.as_ref();
        let _ = writeln!(
            out,
            "{:<10} {:<5} {:<11} {:<24} {:<9} {:>9} {:>9} {:>8} {:<9} {:<16} {}",
            peer_short(&p.peer),
            if p.connected { "yes" } else { "no" },
            t.state,
            path,
            p.nat,
            dash(l.and_then(|l| l.rtt_p50_ms)),
            dash(l.and_then(|l| l.jitter_ms)),
            dash(l.and_then(|l| l.loss_ratio).map(|r| format!("{:.3}", r * 100.0))),
            l.map_or("-", |l| &l.sla),
            dash(p.overlay_ipv4.as_ref()),
            p.gpus,
        );
    }
    out
}

fn status_text(s: &StatusSummary) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "peer id    {}", s.peer_id);
    for a in &s.listen {
        let _ = writeln!(out, "listening  {a}");
    }
    let _ = writeln!(out, "tunnel     {} (UDP), NAT {}", s.tunnel_endpoints.join(", "), s.nat);
    let _ = writeln!(out, "overlay    {} {}", dash(s.overlay_ipv4.as_ref()), dash(s.overlay_ipv6.as_ref()));
    let _ = writeln!(out, "gpus       {}", dash(s.gpus.as_ref()));
    if s.lease_grace_left_s > 0 {
        let _ = writeln!(
            out,
            "leases     new leases refused for {} s more (restart grace)",
            s.lease_grace_left_s
        );
    }
    let _ = writeln!(
        out,
        "{} records, {} connected, {} tunnels up, {} paths relayed for others",
        s.records, s.connected_peers, s.tunnels_up, s.relayed_paths
    );
    out.push('\n');
    out.push_str(&peers_text(&s.peers));
    out
}

fn leases_text(leases: &[LeaseSummary]) -> String {
    if leases.is_empty() {
        return "no live leases granted by this node\n".to_owned();
    }
    let mut out =
        format!("{:<22} {:<20} {:<10} {:<10} {:>12}\n", "LEASE", "TASK", "HOLDER", "GPUS", "EXPIRES IN s");
    for l in leases {
        let gpus: Vec<String> = l.gpus.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            out,
            "{:<22} {:<20} {:<10} {:<10} {:>12}",
            l.lease,
            l.task,
            peer_short(&l.holder),
            gpus.join(","),
            l.expires_in_s
        );
    }
    out
}

fn rtt_text(r: &RttSummary) -> String {
    match r {
        RttSummary::Measured { measured_by, rtt_p50_ms, rtt_p99_ms, jitter_ms, age_s, .. } => format!(
            "{rtt_p50_ms} ms (p50; p99 {rtt_p99_ms} ms, jitter {jitter_ms} ms), measured by {measured_by} {age_s} s ago\n"
        ),
        RttSummary::Estimated { rtt_ms, relative_error } => format!(
            "{rtt_ms} ms, estimated from the nodes' coordinates (nobody measured it; relative error {relative_error})\n"
        ),
        _ => "unknown: not measured, and no coordinates for both nodes\n".to_owned(),
    }
}

/// One line per monitor event, for a terminal: its name, then `key=value` pairs (peers
/// shortened as the tables show them).
pub fn event_text(e: &MonitorEvent) -> String {
    let mut parts = Vec::new();
    if let Ok(serde_json::Value::Object(obj)) = serde_json::to_value(e) {
        parts.push(obj.get("event").and_then(|v| v.as_str()).unwrap_or("?").to_owned());
        for (k, v) in &obj {
            let text = match v {
                serde_json::Value::Null => continue,
                serde_json::Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            match k.as_str() {
                "event" | "time_unix_ms" => {}
                "peer" | "holder" | "via" | "member" | "other" => {
                    parts.push(format!("{k}={}", peer_short(&text)))
                }
                "alternatives" => {
                    let peers: Vec<String> = v
                        .as_array()
                        .map(|a| a.iter().filter_map(|x| x["peer"].as_str()).map(peer_short).collect())
                        .unwrap_or_default();
                    parts.push(format!(
                        "{k}={}",
                        if peers.is_empty() { "-".to_owned() } else { peers.join(",") }
                    ));
                }
                _ => parts.push(format!("{k}={text}")),
            }
        }
    }
    // Degradations and recoveries read as sentences too.
    if let EventKind::LinkDegraded { value, .. } | EventKind::LinkRecovered { value, .. } = &e.kind {
        let (v, t, unit) = match *value {
            MetricValue::Ms { value_ms, target_ms } => (value_ms, target_ms, " ms"),
            MetricValue::Ratio { value_ratio, target_ratio } => (value_ratio, target_ratio, ""),
            MetricValue::Bps { value_bps, target_bps } => (value_bps, target_bps, " bit/s"),
            _ => return parts.join(" "),
        };
        parts.push(format!("({v}{unit} against {t}{unit})"));
    }
    parts.join(" ")
}

/// Prints `value` as JSON, or as `text` renders it.
fn print<T: serde::Serialize>(value: &T, json: bool, text: impl Fn(&T) -> String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", text(value));
    }
    Ok(())
}

pub async fn status(args: ShowArgs) -> anyhow::Result<()> {
    match call(&args.control.path(), &Request::Status, args.json).await? {
        Body::Status(s) => print(&s, args.json, status_text),
        other => Err(unexpected(other)),
    }
}

pub async fn peers(args: ShowArgs) -> anyhow::Result<()> {
    match call(&args.control.path(), &Request::Peers, args.json).await? {
        Body::Peers(p) => print(&p, args.json, |p| peers_text(p)),
        other => Err(unexpected(other)),
    }
}

pub async fn leases(args: ShowArgs) -> anyhow::Result<()> {
    match call(&args.control.path(), &Request::Leases, args.json).await? {
        Body::Leases(l) => print(&l, args.json, |l| leases_text(l)),
        other => Err(unexpected(other)),
    }
}

pub async fn rtt(args: RttArgs) -> anyhow::Result<()> {
    let request = Request::Rtt { a: args.a, b: args.b };
    match call(&args.show.control.path(), &request, args.show.json).await? {
        Body::Rtt(r) => print(&r, args.show.json, rtt_text),
        other => Err(unexpected(other)),
    }
}

pub async fn join(args: JoinArgs) -> anyhow::Result<()> {
    let request = Request::Join { addr: args.addr };
    match call(&args.show.control.path(), &request, args.show.json).await? {
        Body::Join(j) => print(&j, args.show.json, |j| {
            format!("joined {}: {} peers connected\n", j.joined, j.connected_peers)
        }),
        other => Err(unexpected(other)),
    }
}

/// `monitor`: the node's events as they happen (degraded and recovered links, records,
/// tunnels and their paths, leases), one line each, until Ctrl-C or the node stops.
pub async fn monitor(args: ShowArgs) -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
    let fail = |e: anyhow::Error| {
        if args.json {
            print!("{}", Reply::error(format!("{e:#}")).line());
        }
        e
    };
    let path = args.control.path();
    let stream = crate::control::connect(&path).await.map_err(fail)?;
    let (read, mut write) = stream.into_split();
    let mut request = serde_json::to_string(&Request::Monitor)?;
    request.push('\n');
    write.write_all(request.as_bytes()).await?;
    let mut lines = BufReader::new(read).lines();
    let first = lines.next_line().await?.context("the node closed the connection without an answer");
    match first.and_then(|line| crate::control::read_reply(&line)).map_err(fail)? {
        Body::Monitor(true) => {}
        other => return Err(unexpected(other)),
    }
    while let Some(line) = lines.next_line().await? {
        if args.json {
            println!("{line}");
        } else {
            match serde_json::from_str::<MonitorEvent>(&line) {
                Ok(event) => println!("{}", event_text(&event)),
                // An event this program does not know (a newer node): shown as it came.
                Err(_) => println!("{line}"),
            }
        }
    }
    Ok(())
}
