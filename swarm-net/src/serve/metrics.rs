//! The node's metrics over HTTP, for Prometheus and for `swarm-node links`:
//! - `GET /metrics`: OpenMetrics text (prometheus-client) with per-peer link metrics,
//!   SLA verdicts, tunnel counters and drops, and gossip counters;
//! - `GET /links`: the same links as JSON.
//!
//! HTTP/1.1 by hyper: connections are served concurrently (up to [`MAX_CONNECTIONS`];
//! more wait in the kernel's backlog), with keep-alive, `HEAD`, and `405` with `Allow`
//! for other methods. Each connection has its own limits (headers within 5 s, idle
//! keep-alive closed after 5 s, at most 8 KiB of headers), so an idle or slow client
//! never delays another scrape. The endpoint binds where it is told (loopback in the
//! node program's examples) and holds no strong handle on the node: when the node
//! stops, so does it, and its connections with it.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use swarm_core::link::{RttBuckets, SlaState, RTT_BUCKET_BOUNDS};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::api::{Command, LinkReport, NodeStats, OverlayAddresses, TunnelStatus};

type Labels = Vec<(&'static str, String)>;
type GaugeF = Family<Labels, Gauge<f64, AtomicU64>>;
type CounterU = Family<Labels, Counter<u64>>;

/// Most header bytes a request may carry.
const MAX_REQUEST: usize = 8 * 1024;
/// A request's headers must arrive within this, and an idle keep-alive connection is
/// closed after it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is closed after this long whatever it does (a client that trickles
/// requests forever holds no task forever).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);
/// Connections served at once; more wait to be accepted.
pub(crate) const MAX_CONNECTIONS: usize = 64;

/// Asks the driver without keeping it alive.
async fn ask<T>(
    commands: &mpsc::WeakSender<Command>,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Option<T> {
    let tx = commands.upgrade()?;
    let (reply, rx) = oneshot::channel();
    tx.send(make(reply)).await.ok()?;
    drop(tx);
    rx.await.ok()
}

pub(crate) async fn serve(listener: TcpListener, commands: mpsc::WeakSender<Command>) {
    // Dropping the set (when this task is aborted with the node) aborts every connection.
    let mut connections = JoinSet::new();
    let mut backoff = super::AcceptBackoff::new("metrics");
    loop {
        while connections.try_join_next().is_some() {}
        if connections.len() >= MAX_CONNECTIONS {
            connections.join_next().await;
            continue;
        }
        let Some((stream, _)) = backoff.check(listener.accept().await).await else { continue };
        if commands.upgrade().is_none() {
            return;
        }
        let commands = commands.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let commands = commands.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(request, &commands).await) }
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(REQUEST_TIMEOUT)
                .max_buf_size(MAX_REQUEST)
                .keep_alive(true);
            let connection = http.serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
        });
    }
}

fn response(status: StatusCode, kind: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(kind));
    r
}

async fn respond(request: Request<Incoming>, commands: &mpsc::WeakSender<Command>) -> Response<Full<Bytes>> {
    let wants_openmetrics = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut r = response(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET or HEAD only\n".to_owned());
        r.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match request.uri().path() {
        "/metrics" => match openmetrics(commands).await {
            Some(body) if wants_openmetrics => {
                response(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", body)
            }
            Some(body) => {
                response(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", classic_text(&body))
            }
            None => {
                response(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "the node is stopping\n".to_owned())
            }
        },
        "/links" => {
            let Some(links) = ask(commands, Command::Links).await else {
                return response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "the node is stopping\n".to_owned(),
                );
            };
            let mut overlay = Vec::with_capacity(links.len());
            for l in &links {
                overlay.push(ask(commands, |tx| Command::Overlay(l.peer, tx)).await.flatten());
            }
            response(StatusCode::OK, "application/json", links_json(&links, &overlay))
        }
        _ => response(StatusCode::NOT_FOUND, "text/plain", "try /metrics or /links\n".to_owned()),
    }
}

fn secs(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64())
}

/// A registry filled from one snapshot of the node.
async fn openmetrics(commands: &mpsc::WeakSender<Command>) -> Option<String> {
    let links = ask(commands, Command::Links).await?;
    let tunnels = ask(commands, Command::Tunnels).await?;
    let stats = ask(commands, Command::Stats).await?;
    let leases = ask(commands, Command::Leases).await?;
    let view = ask(commands, Command::Snapshot).await?;
    let libp2p = ask(commands, Command::Libp2pMetrics).await?;
    let mut registry = Registry::with_prefix("swarm");
    register_links(&mut registry, &links);
    register_tunnels(&mut registry, &tunnels, &stats);
    register_node(&mut registry, &stats);
    register_vpn(&mut registry, &stats);
    register_gpus(&mut registry, &view, &leases);
    let build = gauge(&mut registry, "build_info", "The running build: 1, labelled with its version");
    build.get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_owned())]).set(1.0);
    let mut text = String::new();
    encode(&mut text, &registry).ok()?;
    // libp2p's own families (bandwidth by protocol stack) after ours: one exposition.
    if let Some(ours) = text.strip_suffix("# EOF\n") {
        text = format!("{ours}{libp2p}");
    }
    Some(text)
}

/// This node's GPUs (from its own record) and what its leases hold of them.
fn register_gpus(
    registry: &mut Registry,
    view: &swarm_core::view::ClusterSnapshot,
    leases: &[swarm_core::place::Lease],
) {
    let memory = gauge(registry, "gpu_memory_bytes", "GPU memory, by device and use (used, total)");
    let util = gauge(registry, "gpu_utilization_ratio", "GPU utilization, by device");
    let count = gauge(registry, "gpus", "This node's GPUs, by state (leased, free)");
    let held = gauge(registry, "live_leases", "Live leases this node granted");
    let Some(own) = view.entries.iter().find(|e| e.local) else { return };
    let leased: std::collections::HashSet<u32> = leases.iter().flat_map(|l| l.gpus.iter().copied()).collect();
    for d in own.record.gpus.devices.iter() {
        let dev = |what: &str| vec![("gpu", d.index.to_string()), ("use", what.to_owned())];
        memory.get_or_create(&dev("used")).set(d.memory_used_mib as f64 * 1048576.0);
        memory.get_or_create(&dev("total")).set(d.memory_total_mib as f64 * 1048576.0);
        util.get_or_create(&vec![("gpu", d.index.to_string())]).set(f64::from(d.utilization_pct) / 100.0);
    }
    let total = own.record.gpus.devices.len();
    let busy = own.record.gpus.devices.iter().filter(|d| leased.contains(&d.index)).count();
    count.get_or_create(&vec![("state", "leased".to_owned())]).set(busy as f64);
    count.get_or_create(&vec![("state", "free".to_owned())]).set((total - busy) as f64);
    held.get_or_create(&vec![]).set(leases.len() as f64);
}

/// The OpenMetrics text in Prometheus's classic text format (0.0.4), for scrapers that
/// do not ask for OpenMetrics (and for `promtool check metrics`): a counter's `HELP`
/// and `TYPE` name its `_total` samples, `info` becomes a gauge, `# UNIT` and `# EOF`
/// go.
pub(crate) fn classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        openmetrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            if counters.contains(name) {
                return Some(format!("{prefix}{name}_total {tail}"));
            }
            (tail == "info").then(|| format!("{prefix}{name}_info gauge"))
        });
        match rewritten {
            Some(l) => out.push_str(&l),
            None => out.push_str(line.split(" # {").next().unwrap_or(line)),
        }
        out.push('\n');
    }
    out
}

fn gauge(registry: &mut Registry, name: &str, help: &str) -> GaugeF {
    let f = GaugeF::default();
    registry.register(name, help, f.clone());
    f
}

fn counter(registry: &mut Registry, name: &str, help: &str) -> CounterU {
    let f = CounterU::default();
    registry.register(name, help, f.clone());
    f
}

/// A histogram whose buckets were counted elsewhere ([`RttBuckets`]: the link table
/// keeps them), encoded as a Prometheus histogram.
#[derive(Debug, Default)]
struct CountedHistogram(std::sync::Mutex<RttBuckets>);

impl prometheus_client::metrics::TypedMetric for CountedHistogram {
    const TYPE: prometheus_client::metrics::MetricType = prometheus_client::metrics::MetricType::Histogram;
}

impl prometheus_client::encoding::EncodeMetric for CountedHistogram {
    fn encode(&self, mut encoder: prometheus_client::encoding::MetricEncoder<'_>) -> std::fmt::Result {
        let b = self.0.lock().map_err(|_| std::fmt::Error)?.clone();
        let buckets: Vec<(f64, u64)> = RTT_BUCKET_BOUNDS
            .iter()
            .zip(b.counts)
            .map(|(bound, n)| (if *bound == Duration::MAX { f64::INFINITY } else { bound.as_secs_f64() }, n))
            .collect();
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            b.sum.as_secs_f64(),
            b.count,
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        <Self as prometheus_client::metrics::TypedMetric>::TYPE
    }
}

fn register_links(registry: &mut Registry, links: &[LinkReport]) {
    let histogram = Family::<Labels, CountedHistogram>::default();
    registry.register(
        "link_rtt_seconds",
        "Round-trip time of every probe since the tunnel came up (across path changes)",
        histogram.clone(),
    );
    let rtt = gauge(
        registry,
        "link_rtt_window_seconds",
        "Round-trip time over the short window (10 s), by percentile (100: the largest)",
    );
    let samples = gauge(registry, "link_rtt_window_samples", "Round trips in the short window");
    let jitter = gauge(registry, "link_jitter_seconds", "RFC 3550 jitter, inbound and outbound");
    let loss = gauge(registry, "link_loss_ratio", "Packet loss over the short window, by source");
    let rate =
        gauge(registry, "link_goodput_bytes_per_second", "Goodput of real traffic over the short window");
    let sla = gauge(registry, "link_sla_degraded", "1 when the metric is past its SLA target, 0 when within");
    let path = gauge(
        registry,
        "link_path",
        "1 for the path the link's packets take (direct, relayed, detour; via the member)",
    );
    for l in links {
        let peer = l.peer.to_string();
        let with = |extra: &[(&'static str, &str)]| {
            let mut v: Labels = vec![("peer", peer.clone())];
            v.extend(extra.iter().map(|(k, x)| (*k, (*x).to_owned())));
            v
        };
        let via = l.path.via().map(|v| v.to_string()).unwrap_or_default();
        path.get_or_create(&with(&[("path", l.path.kind()), ("via", &via)])).set(1.0);
        if l.stats.rtt_buckets.count > 0 {
            if let Ok(mut h) = histogram.get_or_create(&with(&[])).0.lock() {
                *h = l.stats.rtt_buckets.clone();
            }
        }
        let w = &l.stats.short;
        if let Some(q) = w.rtt {
            for (name, d) in [("50", q.p50), ("90", q.p90), ("99", q.p99), ("100", q.max)] {
                rtt.get_or_create(&with(&[("percentile", name)])).set(d.as_secs_f64());
            }
            samples.get_or_create(&with(&[])).set(q.samples as f64);
        }
        for (dir, j) in [("in", secs(l.stats.jitter_in)), ("out", secs(l.stats.jitter_out))] {
            if let Some(j) = j {
                jitter.get_or_create(&with(&[("direction", dir)])).set(j);
            }
        }
        let sources = [
            ("passive_in", w.loss_in.map(|r| r.value)),
            ("peer_reported_out", l.stats.loss_out),
            ("probes", w.probe_loss.map(|r| r.value)),
        ];
        for (source, v) in sources {
            if let Some(v) = v {
                loss.get_or_create(&with(&[("source", source)])).set(v);
            }
        }
        for (dir, v) in [("rx", w.rx_bps), ("tx", w.tx_bps)] {
            if let Some(v) = v {
                rate.get_or_create(&with(&[("direction", dir)])).set(v / 8.0);
            }
        }
        for v in &l.sla {
            let value = match v.state {
                SlaState::Ok => 0.0,
                SlaState::Degraded => 1.0,
                SlaState::Unknown => continue,
            };
            sla.get_or_create(&with(&[("metric", v.metric.as_str())])).set(value);
        }
    }
}

fn register_tunnels(registry: &mut Registry, tunnels: &[TunnelStatus], stats: &NodeStats) {
    let up = gauge(registry, "tunnel_up", "1 when the tunnel carries data (and its peer answers probes)");
    let unreachable = gauge(
        registry,
        "tunnel_unreachable",
        "1 while the peer answers no probe and its tunnel is being re-established",
    );
    let bytes = counter(registry, "tunnel_bytes", "Bytes through the tunnel (whole UDP datagrams)");
    let packets = counter(registry, "tunnel_packets", "Datagrams through the tunnel");
    let handshakes = counter(registry, "tunnel_handshakes", "Completed handshakes (first and rekeys)");
    let last = gauge(registry, "tunnel_last_handshake_age_seconds", "Time since the session in use was made");
    let drops = counter(registry, "tunnel_drops", "Tunnel packets dropped, by reason");
    for t in tunnels {
        let peer = t.peer.to_string();
        let l = |extra: Option<(&'static str, &str)>| {
            let mut v: Labels = vec![("peer", peer.clone())];
            v.extend(extra.map(|(k, x)| (k, x.to_owned())));
            v
        };
        up.get_or_create(&l(None)).set(if t.established && !t.unreachable { 1.0 } else { 0.0 });
        unreachable.get_or_create(&l(None)).set(if t.unreachable { 1.0 } else { 0.0 });
        bytes.get_or_create(&l(Some(("direction", "tx")))).inc_by(t.tx_bytes);
        bytes.get_or_create(&l(Some(("direction", "rx")))).inc_by(t.rx_bytes);
        packets.get_or_create(&l(Some(("direction", "tx")))).inc_by(t.tx_packets);
        packets.get_or_create(&l(Some(("direction", "rx")))).inc_by(t.rx_packets);
        handshakes.get_or_create(&l(None)).inc_by(t.handshakes);
        if let Some(age) = t.last_handshake {
            last.get_or_create(&l(None)).set(age.as_secs_f64());
        }
    }
    for (reason, n) in &stats.tunnel_drops {
        drops.get_or_create(&vec![("reason", (*reason).to_owned())]).inc_by(*n);
    }
    let relayed =
        counter(registry, "tunnel_relayed_datagrams", "Tunnel datagrams over relayed paths, by outcome");
    let d = &stats.dataplane;
    for (what, n) in
        [("in", d.relay_in), ("out", d.relay_out), ("dropped", d.relay_dropped), ("refused", d.relay_refused)]
    {
        relayed.get_or_create(&vec![("what", what.to_owned())]).inc_by(n);
    }
    let r = &stats.relay;
    let bytes = counter(registry, "relay_bytes", "Bytes of other members' relayed tunnels through this node");
    bytes.get_or_create(&vec![("direction", "in".to_owned())]).inc_by(r.bytes_in);
    bytes.get_or_create(&vec![("direction", "out".to_owned())]).inc_by(r.bytes_out);
    gauge(registry, "relay_paths", "Tunnel paths this node relays now")
        .get_or_create(&vec![])
        .set(r.open as f64);
    let paths = counter(registry, "relay_path_requests", "Requests to relay a tunnel path, by outcome");
    paths.get_or_create(&vec![("outcome", "accepted".to_owned())]).inc_by(r.accepted);
    paths.get_or_create(&vec![("outcome", "refused".to_owned())]).inc_by(r.refused);
    let a = &stats.autonat;
    let probes = counter(registry, "autonat_probes", "AutoNAT v2 probes of this node's addresses, by result");
    probes.get_or_create(&vec![("result", "confirmed".to_owned())]).inc_by(a.confirmed);
    probes.get_or_create(&vec![("result", "unreachable".to_owned())]).inc_by(a.unreachable);
    counter(registry, "autonat_dial_data_bytes", "Dial data this node sent to AutoNAT v2 servers")
        .get_or_create(&vec![])
        .inc_by(a.dial_data_bytes);
}

/// The VPN device's traffic (`in`: read from the device into the overlay; `out`:
/// delivered from the overlay to the device) and its drops by reason.
fn register_vpn(registry: &mut Registry, stats: &NodeStats) {
    let packets = counter(registry, "vpn_tun_packets", "IP packets through the VPN device");
    let bytes = counter(registry, "vpn_tun_bytes", "Bytes of IP packets through the VPN device");
    let drops = counter(registry, "vpn_drops", "IP packets of the VPN dropped, by reason");
    let t = &stats.dataplane.tun;
    let dir = |d: &str| vec![("direction", d.to_owned())];
    packets.get_or_create(&dir("in")).inc_by(t.read_packets);
    packets.get_or_create(&dir("out")).inc_by(t.written_packets);
    bytes.get_or_create(&dir("in")).inc_by(t.read_bytes);
    bytes.get_or_create(&dir("out")).inc_by(t.written_bytes);
    for (reason, n) in stats.dataplane.vpn_drops.by_reason() {
        drops.get_or_create(&vec![("reason", reason.to_owned())]).inc_by(n);
    }
    drops.get_or_create(&vec![("reason", "device_error".to_owned())]).inc_by(t.errors);
}

fn register_node(registry: &mut Registry, stats: &NodeStats) {
    let one = |registry: &mut Registry, name: &str, help: &str, v: f64| {
        gauge(registry, name, help).get_or_create(&vec![]).set(v);
    };
    let dir = |d: &str| vec![("direction", d.to_owned())];
    one(
        registry,
        "connected_peers",
        "Peers with at least one open libp2p connection",
        stats.connected_peers as f64,
    );
    one(registry, "records", "Records in the view, this node's own included", stats.records as f64);
    one(registry, "kad_routing_table_peers", "Peers in Kademlia's routing table", stats.kad_peers as f64);
    gauge(registry, "tunnel_handshakes_queued", "Handshake messages waiting for their turn after data")
        .get_or_create(&vec![])
        .set(stats.dataplane.handshakes_queued as f64);
    let buffers = gauge(registry, "udp_buffer_bytes", "The tunnel socket's kernel buffers, by direction");
    buffers.get_or_create(&dir("recv")).set(stats.dataplane.recv_buffer as f64);
    buffers.get_or_create(&dir("send")).set(stats.dataplane.send_buffer as f64);
    let n = |registry: &mut Registry, name: &str, help: &str, v: u64| {
        counter(registry, name, help).get_or_create(&vec![]).inc_by(v);
    };
    n(registry, "records_published", "Records this node published", stats.published);
    n(registry, "records_rejected", "Records refused by the view", stats.gossip.rejected_total());
    n(registry, "events_dropped", "Node events dropped because the reader fell behind", stats.events_dropped);
    n(
        registry,
        "connections_denied",
        "Inbound libp2p connections refused: too many from one address were being set up",
        stats.connections_denied,
    );
    n(
        registry,
        "libp2p_dead_connections_closed",
        "libp2p connections closed because a ping went unanswered for 5 s or failed",
        stats.dead_connections,
    );
    n(registry, "libp2p_connections_opened", "libp2p connections established", stats.connections_opened);
    n(
        registry,
        "gossip_send_dropped",
        "gossip messages dropped before a peer's connection took them (queue full or waited too long)",
        stats.gossip_send_dropped,
    );
    n(registry, "libp2p_dials_failed", "Outbound libp2p dials that failed", stats.dials_failed);
    n(
        registry,
        "kad_diversity_refused",
        "Peers kept out of Kademlia's routing table: their address range (/24, /48) held 2 places of the bucket or 3 of the table",
        stats.kad_diversity_refused,
    );
    n(
        registry,
        "kad_providers_refused",
        "Provider records not stored: their key already held 2 from the provider's address range",
        stats.kad_providers_refused,
    );
    n(
        registry,
        "kad_refreshes",
        "Refreshes of Kademlia's routing table completed (own key, then each bucket)",
        stats.kad_refreshes,
    );
    n(
        registry,
        "kad_bootstraps_ended",
        "Bootstraps Kademlia started by itself, ended at their first requests (refreshes are the node's)",
        stats.kad_bootstraps_ended,
    );
    n(registry, "lookups", "Look-ups for the namespace's providers started (/swarm/find/1)", stats.lookups);
    n(
        registry,
        "lookup_crowded",
        "Look-up candidates left out of a look-up's closest 20: their address range held 3 places there",
        stats.lookup_crowded,
    );
    n(
        registry,
        "lookup_requests_failed",
        "Look-up requests that failed (unreachable, timed out)",
        stats.lookup_failed,
    );
    n(registry, "lookup_answers", "Look-up requests this node answered", stats.lookup_answers);
    n(registry, "lookup_refused", "Look-up requests refused: the peer asked too often", stats.lookup_refused);
    n(
        registry,
        "lease_requests_retried",
        "Lease requests sent again on a fresh connection after a timeout or a lost connection",
        stats.lease_retries,
    );
    let bytes = counter(registry, "libp2p_bytes", "Bytes over all libp2p connections, by direction");
    bytes.get_or_create(&dir("in")).inc_by(stats.bytes_in);
    bytes.get_or_create(&dir("out")).inc_by(stats.bytes_out);
    let datagrams =
        counter(registry, "tunnel_socket_datagrams", "UDP datagrams through the tunnel socket, by direction");
    datagrams.get_or_create(&dir("in")).inc_by(stats.dataplane.udp_in);
    datagrams.get_or_create(&dir("out")).inc_by(stats.dataplane.udp_out);
    counter(
        registry,
        "tunnel_initiations_answered_late",
        "Initiations from a key that was no peer yet, kept and answered when its record came",
    )
    .get_or_create(&vec![])
    .inc_by(stats.dataplane.initiations_answered_late);
    let app =
        counter(registry, "app_datagrams", "Application datagrams, by outcome: received (delivered, overflow) and sent (sent, unroutable, refused)");
    let d = &stats.dataplane;
    for (outcome, n) in [
        ("delivered", d.datagrams_delivered),
        ("overflow", d.datagrams_overflow),
        ("sent", d.datagrams_sent),
        ("unroutable", d.datagrams_unroutable),
        ("refused", d.datagrams_refused),
    ] {
        app.get_or_create(&vec![("outcome", outcome.to_owned())]).inc_by(n);
    }
    let leases = counter(registry, "lease_requests", "Lease requests this node answered, by outcome");
    let l = &stats.leases;
    for (outcome, n) in [
        ("granted", l.granted),
        ("refused", l.refused),
        ("renewed", l.renewed),
        ("released", l.released),
        ("expired", l.expired),
        ("failed", l.failed),
        ("malformed", l.malformed),
        ("inbound_failures", l.inbound_failures),
    ] {
        leases.get_or_create(&vec![("outcome", outcome.to_owned())]).inc_by(n);
    }
}

/// The links as JSON, each with its peer's overlay addresses (`overlay[i]` for
/// `links[i]`): what `swarm-node links` reads.
pub(crate) fn links_json(links: &[LinkReport], overlay: &[Option<OverlayAddresses>]) -> String {
    let rows: Vec<crate::LinkJson> = links
        .iter()
        .enumerate()
        .map(|(i, l)| crate::LinkJson::new(l, overlay.get(i).and_then(Option::as_ref)))
        .collect();
    serde_json::to_string(&rows).unwrap_or_else(|_| "[]".to_owned())
}
