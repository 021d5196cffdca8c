//! The local control endpoint of `swarm-node run`: a Unix socket that takes one JSON
//! request per line and answers one JSON line (`monitor` then streams event lines).
//! Every client command (`status`, `peers`, `ping`, `rtt`, `monitor`, `join`, `leases`,
//! `place`, `release`, `renew`, `placements`, `vpn ...`) talks to it, by default at the
//! same per-user runtime path `run` serves ([`default_path`]).
//!
//! Local users only: the socket is made mode 0600, and every connection's peer
//! credentials (SO_PEERCRED) are checked: only the socket's owner (the user running the
//! node) and root are served; anyone else gets an error line and is disconnected.
//! Bounded: 64 KiB per request line ("line too long" past it), 64 connections (more are
//! told so and closed), 30 s idle per connection, 1 024 placements held; a line that is
//! not UTF-8 or not JSON gets an error answer. A failing `accept()` (out of file
//! descriptors) is paced, not spun on.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use swarm::core::place::{LinkLimits, Placement, TaskSpec};
use swarm::core::record::Label;
use swarm::net::answers::{
    EventKind, GatewaySummary, LeaseSummary, MonitorEvent, PeerSummary, PingSummary, PlacementSummary,
    RttSummary, StatusSummary, StockPeerSummary,
};
use swarm::Node;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use crate::inspect::RunInfo;

/// Where `run` serves its control socket, and where client commands look for it,
/// unless given `--control PATH`: `$RUNTIME_DIRECTORY/control.sock` under systemd
/// (`RuntimeDirectory=swarm-node`), else `$XDG_RUNTIME_DIR/swarm-node/control.sock`,
/// else `/run/swarm-node/control.sock` for root, else `/tmp/swarm-node-UID/control.sock`.
pub fn default_path() -> PathBuf {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var("RUNTIME_DIRECTORY") {
        return dir.join("control.sock");
    }
    if let Some(dir) = var("XDG_RUNTIME_DIR") {
        return dir.join("swarm-node").join("control.sock");
    }
    match std::fs::metadata("/proc/self").map(|m| m.uid()) {
        Ok(0) => PathBuf::from("/run/swarm-node/control.sock"),
        Ok(uid) => std::env::temp_dir().join(format!("swarm-node-{uid}")).join("control.sock"),
        Err(_) => std::env::temp_dir().join("swarm-node").join("control.sock"),
    }
}

/// How a client command finds the node.
#[derive(Debug, Clone, Args)]
pub struct ControlArgs {
    /// The node's control socket [default: where `run` serves it: $RUNTIME_DIRECTORY,
    /// $XDG_RUNTIME_DIR/swarm-node, /run/swarm-node (root) or /tmp/swarm-node-UID,
    /// then control.sock]
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
}

impl ControlArgs {
    pub fn path(&self) -> PathBuf {
        self.control.clone().unwrap_or_else(default_path)
    }
}

/// Makes the socket's directory when missing (mode 0700); refuses one that another
/// user owns or that others may write to, where someone could stand in for the node.
fn prepare_dir(path: &Path) -> anyhow::Result<()> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else { return Ok(()) };
    if !dir.exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private", dir.display()))?;
        return Ok(());
    }
    let meta = std::fs::metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX);
    let shared_tmp = meta.mode() & 0o1000 != 0; // /tmp itself: sticky, anyone may add
    if !shared_tmp && meta.uid() != me && meta.uid() != 0 {
        bail!("{} belongs to uid {}, not to this user: give --control PATH", dir.display(), meta.uid());
    }
    Ok(())
}

/// Longest request line.
const MAX_LINE: u64 = 64 * 1024;
/// Connections served at once; more are told so and closed.
const MAX_CONNECTIONS: usize = 64;
/// A connection that sends no request this long is closed (`monitor` streams are not
/// idle: they are written to).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Placements the endpoint holds at once.
const MAX_HELD: usize = 1024;

/// A task as the endpoint takes it (durations in ms, throughput in Mbit/s).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TaskRequest {
    pub id: String,
    pub gpus: u16,
    pub nodes: u16,
    pub min_memory_mib: u64,
    pub models: Vec<String>,
    pub labels: Vec<String>,
    pub max_rtt_ms: Option<f64>,
    pub max_loss: Option<f64>,
    pub max_jitter_ms: Option<f64>,
    pub min_throughput_mbps: Option<f64>,
    pub member_max_rtt_ms: Option<f64>,
    pub member_max_loss: Option<f64>,
    pub member_max_jitter_ms: Option<f64>,
    pub member_min_throughput_mbps: Option<f64>,
    pub lease_ms: u64,
}

fn ms(v: Option<f64>, what: &str) -> anyhow::Result<Option<Duration>> {
    match v {
        None => Ok(None),
        Some(x) if x.is_finite() && (0.0..=86_400_000.0).contains(&x) => {
            Ok(Some(Duration::from_secs_f64(x / 1e3)))
        }
        Some(x) => bail!("{what} {} ms is out of range (0 to 86400000 ms)", short_number(x)),
    }
}

/// A number as people read it: `1e308`, not 309 digits.
fn short_number(x: f64) -> String {
    if x.is_finite() && x.abs() < 1e9 {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

impl TaskRequest {
    /// The spec, validated.
    pub fn to_spec(&self) -> anyhow::Result<TaskSpec> {
        let limits = |rtt, loss, jitter, mbps: Option<f64>, side: &str| -> anyhow::Result<LinkLimits> {
            Ok(LinkLimits {
                max_rtt: ms(rtt, &format!("{side} RTT"))?,
                max_loss: loss,
                max_jitter: ms(jitter, &format!("{side} jitter"))?,
                min_throughput_bps: mbps.map(|m| m * 1e6),
            })
        };
        let mut spec = TaskSpec::new(&self.id, self.gpus);
        spec.nodes = self.nodes;
        spec.min_gpu_memory_mib = self.min_memory_mib;
        spec.gpu_models = self.models.clone();
        spec.labels = self
            .labels
            .iter()
            .map(|l| Label::parse(l).map_err(|e| anyhow::anyhow!("label {l:?}: {e}")))
            .collect::<anyhow::Result<_>>()?;
        spec.origin_limits =
            limits(self.max_rtt_ms, self.max_loss, self.max_jitter_ms, self.min_throughput_mbps, "origin")?;
        spec.member_limits = limits(
            self.member_max_rtt_ms,
            self.member_max_loss,
            self.member_max_jitter_ms,
            self.member_min_throughput_mbps,
            "member",
        )?;
        spec.lease = Duration::from_millis(self.lease_ms);
        spec.validate()?;
        Ok(spec)
    }
}

/// One request line of the control protocol: `{"op": "status"}`, `{"op": "rtt", "a":
/// ID, "b": ID}`, ...
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// This node and its peers.
    Status,
    /// Its peers.
    Peers,
    /// The leases it granted.
    Leases,
    /// The round trip between two nodes.
    Rtt { a: String, b: String },
    /// Dial a member.
    Join { addr: String },
    /// One ping over a tunnel.
    Ping { peer: String },
    /// Stream events (the connection then serves nothing else).
    Monitor,
    /// Place a task; the endpoint holds the placement.
    Place { task: TaskRequest },
    /// Release a held placement.
    Release { task: String },
    /// Renew a held placement's leases.
    Renew { task: String },
    /// The placements held.
    List,
    /// Add a stock WireGuard peer.
    VpnAddPeer {
        pubkey: String,
        #[serde(default)]
        name: Option<String>,
    },
    /// Remove one.
    VpnRemovePeer { pubkey: String },
    /// List them.
    VpnPeers,
}

/// A placement, with the ranking that chose it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Placed {
    #[serde(flatten)]
    pub placement: PlacementSummary,
    /// The best candidates, one line each.
    pub ranking: Vec<String>,
}

/// A released placement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Released {
    pub task: String,
    /// Leases given back.
    pub released: usize,
}

/// A renewed placement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Renewed {
    pub task: String,
    pub expires_in_ms: u64,
}

/// A dialled member.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Joined {
    pub joined: String,
    pub connected_peers: usize,
}

/// A stock peer added, and the gateway it is to configure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StockPeerAdded {
    pub peer: StockPeerSummary,
    pub gateway: GatewaySummary,
}

/// What a request answers, under its own key: `{"ok": true, "status": {...}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    Status(StatusSummary),
    Peers(Vec<PeerSummary>),
    Leases(Vec<LeaseSummary>),
    Rtt(RttSummary),
    Join(Joined),
    Ping(PingSummary),
    /// The stream of [`MonitorEvent`] lines follows.
    Monitor(bool),
    Place(Placed),
    Release(Released),
    Renew(Renewed),
    Placements(Vec<PlacementSummary>),
    StockPeerAdded(StockPeerAdded),
    StockPeerRemoved(bool),
    StockPeers(Vec<StockPeerSummary>),
}

/// One answer line: `{"ok": true, <body>}` or `{"ok": false, "error": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(flatten)]
    pub body: Option<Body>,
}

impl Reply {
    pub fn ok(body: Body) -> Reply {
        Reply { ok: true, error: None, body: Some(body) }
    }

    pub fn error(error: impl Into<String>) -> Reply {
        Reply { ok: false, error: Some(error.into()), body: None }
    }

    /// The reply as one line, newline included.
    pub fn line(&self) -> String {
        let mut line = serde_json::to_string(self)
            .unwrap_or_else(|e| format!(r#"{{"ok":false,"error":"cannot write the answer: {e}"}}"#));
        line.push('\n');
        line
    }
}

struct Held {
    placement: Placement,
    until: Instant,
}

/// The running endpoint; dropping it stops it and removes the socket.
pub struct Control {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl Drop for Control {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the endpoint at `path` and serves `node` until the returned handle drops. Only a
/// stale socket (one nobody answers on) at `path` is replaced; anything else there is an
/// error.
pub async fn serve(node: Node, path: &Path, info: Arc<RunInfo>) -> anyhow::Result<Control> {
    use std::os::unix::fs::FileTypeExt as _;
    prepare_dir(path)?;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            bail!(
                "{} exists and is not a socket: not replacing it (give --control another path)",
                path.display()
            );
        }
        if UnixStream::connect(path).await.is_ok() {
            bail!(
                "the control socket {} is in use by another running node: give this one --control PATH (or --no-control)",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path).with_context(|| format!("cannot bind {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let owner = std::fs::metadata(path)?.uid();
    let held: Arc<Mutex<HashMap<String, Held>>> = Arc::default();
    let task = tokio::spawn(async move {
        // Dropping the set (when the endpoint stops) ends every connection.
        let mut connections = tokio::task::JoinSet::new();
        let mut backoff = swarm::net::AcceptBackoff::new("control socket");
        loop {
            while connections.try_join_next().is_some() {}
            let Some((mut stream, _)) = backoff.check(listener.accept().await).await else { continue };
            if connections.len() >= MAX_CONNECTIONS {
                // Told why, briefly, without a task of its own.
                let line =
                    Reply::error(format!("{MAX_CONNECTIONS} control connections are open: try again later"));
                let _ = tokio::time::timeout(
                    Duration::from_millis(100),
                    stream.write_all(line.line().as_bytes()),
                )
                .await;
                continue;
            }
            let (node, held, info) = (node.clone(), held.clone(), info.clone());
            connections.spawn(async move {
                if let Err(e) = connection(stream, owner, node, held, info).await {
                    tracing::debug!(error = %e, "control connection ended");
                }
            });
        }
    });
    Ok(Control { path: path.to_owned(), task })
}

/// One request line read, or why none was.
enum Line {
    /// A complete line (without its newline), as UTF-8.
    Text(String),
    /// A line that is not UTF-8.
    NotUtf8(std::str::Utf8Error),
    /// A line longer than [`MAX_LINE`]: the connection cannot find the next one.
    TooLong,
    /// The client closed (a last line without its newline counts as a line).
    Closed,
}

/// Reads one line of at most [`MAX_LINE`] bytes.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Line> {
    buf.clear();
    let n = (&mut *reader).take(MAX_LINE + 1).read_until(b'\n', buf).await?;
    if n == 0 {
        return Ok(Line::Closed);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if n as u64 > MAX_LINE {
        return Ok(Line::TooLong);
    }
    Ok(match std::str::from_utf8(buf) {
        Ok(text) => Line::Text(text.to_owned()),
        Err(e) => Line::NotUtf8(e),
    })
}

async fn connection(
    mut stream: UnixStream,
    owner: u32,
    node: Node,
    held: Arc<Mutex<HashMap<String, Held>>>,
    info: Arc<RunInfo>,
) -> anyhow::Result<()> {
    let uid = stream.peer_cred()?.uid();
    if uid != owner && uid != 0 {
        let line = Reply::error(format!("uid {uid} may not control this node"));
        stream.write_all(line.line().as_bytes()).await?;
        stream.shutdown().await?;
        // Take what it sent (bounded, briefly) so closing does not reset the refusal away.
        let mut sink = Vec::new();
        let mut limited = (&mut stream).take(MAX_LINE);
        let _ = tokio::time::timeout(Duration::from_secs(1), limited.read_to_end(&mut sink)).await;
        return Ok(());
    }
    let (read, mut write) = stream.split();
    let mut lines = BufReader::new(read);
    let mut buf = Vec::new();
    loop {
        let line = match tokio::time::timeout(IDLE_TIMEOUT, read_line(&mut lines, &mut buf)).await {
            Err(_) => {
                let error = format!("idle for {} s: closing", IDLE_TIMEOUT.as_secs());
                write.write_all(Reply::error(error).line().as_bytes()).await?;
                return Ok(());
            }
            Ok(line) => line?,
        };
        let line = match line {
            Line::Text(line) => line,
            Line::Closed => return Ok(()),
            Line::NotUtf8(e) => {
                let error = format!("the request is not UTF-8: {e}");
                write.write_all(Reply::error(error).line().as_bytes()).await?;
                continue;
            }
            Line::TooLong => {
                let error = format!("request line too long (more than {MAX_LINE} bytes): closing");
                write.write_all(Reply::error(error).line().as_bytes()).await?;
                return Ok(());
            }
        };
        let request = match serde_json::from_str::<Request>(&line) {
            Ok(Request::Monitor) => {
                // Streams until the client goes away; the connection serves nothing else.
                write.write_all(Reply::ok(Body::Monitor(true)).line().as_bytes()).await?;
                return monitor(&node, &info, write).await;
            }
            Ok(request) => request,
            Err(e) => {
                let error = match serde_json::from_str::<Value>(&line) {
                    Ok(_) => format!("bad request: {e} (ops: {OPS})"),
                    Err(e) => format!("not a JSON request: {e}"),
                };
                write.write_all(Reply::error(error).line().as_bytes()).await?;
                continue;
            }
        };
        let answer = match handle(&node, &held, &info, request).await {
            Ok(body) => Reply::ok(body),
            Err(e) => Reply::error(format!("{e:#}")),
        };
        write.write_all(answer.line().as_bytes()).await?;
    }
}

/// The ops a request may name.
const OPS: &str = "status, peers, leases, rtt, join, ping, monitor, place, release, renew, list, vpn-add-peer, vpn-remove-peer, vpn-peers";

/// Writes the node's events (and lease changes, looked at every second) as JSON lines
/// until the client closes. A client that falls more than [`MONITOR_BACKLOG`] events
/// behind is told how many it missed.
///
/// [`MONITOR_BACKLOG`]: crate::inspect::MONITOR_BACKLOG
async fn monitor(
    node: &Node,
    info: &RunInfo,
    mut write: tokio::net::unix::WriteHalf<'_>,
) -> anyhow::Result<()> {
    let mut events = info.events.subscribe();
    let mut known = node.leases().await?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let lines = tokio::select! {
            e = events.recv() => match e {
                Ok(e) => vec![e],
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    vec![MonitorEvent::now(EventKind::Missed { events: n })]
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
            },
            _ = tick.tick() => {
                let now = node.leases().await?;
                let changes = MonitorEvent::lease_changes(&known, &now);
                known = now;
                changes
            }
        };
        for line in lines {
            let mut text = serde_json::to_string(&line)?;
            text.push('\n');
            write.write_all(text.as_bytes()).await?;
        }
    }
}

async fn handle(
    node: &Node,
    held: &Mutex<HashMap<String, Held>>,
    info: &RunInfo,
    request: Request,
) -> anyhow::Result<Body> {
    Ok(match request {
        Request::Status => Body::Status(StatusSummary::gather(node, info.grace_left()).await?),
        Request::Peers => Body::Peers(PeerSummary::gather(node).await?),
        Request::Leases => Body::Leases(LeaseSummary::gather(node).await?),
        Request::Rtt { a, b } => Body::Rtt(crate::inspect::rtt_between(node, &a, &b).await?),
        Request::Join { addr } => Body::Join(crate::inspect::join_addr(node, &addr).await?),
        Request::Ping { peer } => Body::Ping(crate::ping::ping_once(node, &peer).await?),
        Request::Monitor => bail!("monitor streams on a connection of its own"),
        Request::Place { task } => Body::Place(place(node, held, &task).await?),
        Request::Release { task } => {
            let placement = take_held(held, &task, true)?;
            node.release(&placement).await?;
            Body::Release(Released { task, released: placement.nodes.len() })
        }
        Request::Renew { task } => {
            let placement = take_held(held, &task, false)?;
            let left = node.renew(&placement).await?;
            if let Some(h) = live(held)?.get_mut(&task) {
                h.until = Instant::now() + left;
            }
            Body::Renew(Renewed { task, expires_in_ms: left.as_millis() as u64 })
        }
        Request::List => {
            let list: Vec<Placement> = live(held)?.values().map(|h| h.placement.clone()).collect();
            let mut out = Vec::with_capacity(list.len());
            for p in &list {
                out.push(PlacementSummary::gather(node, p).await?);
            }
            Body::Placements(out)
        }
        Request::VpnAddPeer { pubkey, name } => {
            let (peer, gateway) =
                crate::vpn::add_peer(node, &pubkey, name.as_deref().unwrap_or_default()).await?;
            Body::StockPeerAdded(StockPeerAdded {
                peer: StockPeerSummary::new(&peer, true),
                gateway: GatewaySummary::new(&gateway),
            })
        }
        Request::VpnRemovePeer { pubkey } => {
            Body::StockPeerRemoved(node.remove_stock_peer(crate::vpn::key_arg(&pubkey)?).await?)
        }
        Request::VpnPeers => Body::StockPeers(
            node.stock_peers().await?.iter().map(|p| StockPeerSummary::new(p, false)).collect(),
        ),
    })
}

/// A held placement of `task` (taken out of the table when `remove`), or why none.
fn take_held(held: &Mutex<HashMap<String, Held>>, task: &str, remove: bool) -> anyhow::Result<Placement> {
    let mut held = live(held)?;
    let placement = match held.get(task) {
        Some(h) => h.placement.clone(),
        None => bail!("no live placement of task {task}"),
    };
    if remove {
        held.remove(task);
    }
    Ok(placement)
}

/// The placements held, with the expired ones dropped.
fn live(
    held: &Mutex<HashMap<String, Held>>,
) -> anyhow::Result<std::sync::MutexGuard<'_, HashMap<String, Held>>> {
    let mut held = held.lock().map_err(|_| anyhow::anyhow!("the placement table is poisoned"))?;
    let now = Instant::now();
    held.retain(|_, h| h.until > now);
    Ok(held)
}

async fn place(
    node: &Node,
    held: &Mutex<HashMap<String, Held>>,
    task: &TaskRequest,
) -> anyhow::Result<Placed> {
    let spec = task.to_spec()?;
    {
        let held = live(held)?;
        if held.contains_key(&spec.id) {
            bail!("task {} is already placed; release it first", spec.id);
        }
        if held.len() >= MAX_HELD {
            bail!("{MAX_HELD} placements held; release some first");
        }
    }
    let (placement, ranking) = node.place_explained(spec).await?;
    let out = Placed {
        placement: PlacementSummary::gather(node, &placement).await?,
        ranking: ranking.explain().lines().take(8).map(str::to_owned).collect(),
    };
    let until = Instant::now() + placement.lease;
    let duplicate = {
        let mut held = live(held)?;
        let duplicate = held.contains_key(&placement.task);
        if !duplicate {
            held.insert(placement.task.clone(), Held { placement: placement.clone(), until });
        }
        duplicate
    };
    if duplicate {
        // Another request placed the same id meanwhile: this one gives its leases back.
        node.release(&placement).await?;
        bail!("task {} was placed by another request meanwhile", placement.task);
    }
    Ok(out)
}

/// Sends one request to the endpoint at `path` and returns its answer; an answer with
/// `ok: false` becomes an error. With `json`, a failure is also printed on stdout as
/// `{"ok": false, "error": ...}`, so scripts parse one format.
pub async fn call(path: &Path, request: &Request, json: bool) -> anyhow::Result<Body> {
    let answer = call_inner(path, request).await;
    if let (true, Err(e)) = (json, &answer) {
        print!("{}", Reply::error(format!("{e:#}")).line());
    }
    answer
}

/// Connects to the endpoint at `path`: a socket of this user or root only, so nobody
/// else can stand in for the node.
pub async fn connect(path: &Path) -> anyhow::Result<UnixStream> {
    let stream = UnixStream::connect(path).await.with_context(|| {
        format!(
            "cannot reach the node's control socket {} (is `swarm-node run` running? give --control PATH if it serves another)",
            path.display()
        )
    })?;
    let owner = std::fs::metadata(path)?.uid();
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX);
    // Root talks to any node (a systemd unit's runs as its own user); others only to
    // their own, or root's.
    if owner != me && owner != 0 && me != 0 {
        bail!("{} belongs to uid {owner}, not to this user or root: not talking to it", path.display());
    }
    Ok(stream)
}

async fn call_inner(path: &Path, request: &Request) -> anyhow::Result<Body> {
    let mut stream = connect(path).await?;
    // A refusal may come before the request is read (the socket then closes): read the
    // answer even when writing failed.
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    let written = stream.write_all(line.as_bytes()).await;
    let mut line = String::new();
    BufReader::new((&mut stream).take(16 << 20)).read_line(&mut line).await?;
    if line.is_empty() {
        written?;
        bail!("the node closed the connection without an answer");
    }
    read_reply(&line)
}

/// The body of one answer line, or its error.
pub fn read_reply(line: &str) -> anyhow::Result<Body> {
    let reply: Reply =
        serde_json::from_str(line).context("the node's answer is not one this program knows")?;
    match reply {
        Reply { ok: true, body: Some(body), .. } => Ok(body),
        Reply { error, .. } => bail!("{}", error.as_deref().unwrap_or("the node refused")),
    }
}

/// The error for an answer of the wrong kind (a node of another version).
pub fn unexpected(body: Body) -> anyhow::Error {
    anyhow::anyhow!("the node answered something else: {body:?}")
}
