//! `swarm-node run`: one node until Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use swarm::core::overlay::Ipv4Range;
use swarm::net::VpnConfig;
use swarm::{Multiaddr, Node, NodeBuilder, NodeEvent};
use tokio::signal::unix::{signal, SignalKind};

use crate::gpus::{parse_gpus, GpuChoice};
use crate::table;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Read settings from this TOML file: every flag of `run` is a key (`tunnel-port =
    /// 4191`, `bootstrap = ["/ip4/..."]`, `vpn = true`); a flag on the command line wins
    /// over its key. `swarm-node config --print-default` prints one with every key.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the node keeps its identity and the addresses of the members it knew
    /// (dialed on restart) [default: $STATE_DIRECTORY under systemd, else
    /// $XDG_DATA_HOME/swarm-node, /var/lib/swarm-node (root) or
    /// ~/.local/share/swarm-node].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Listen address (repeatable) [default: QUIC on UDP and TCP, both on port 4190, all
    /// IPv4 addresses]. A fixed port that is taken is an error, with the OS's reason.
    #[arg(long, value_name = "MULTIADDR", default_values_t = default_listen(), hide_default_value = true)]
    listen: Vec<Multiaddr>,
    /// Bootstrap peer (repeatable), ideally ending in /p2p/<peer id>.
    #[arg(long, value_name = "MULTIADDR")]
    bootstrap: Vec<Multiaddr>,
    /// Make a new tunnel key when the identity exists but its <file>.wg does not (peers
    /// then see a new WireGuard key); without it that is an error.
    #[arg(long)]
    new_tunnel_key: bool,
    /// Identity key file, created on first run (mode 0600; locked while the node runs);
    /// the tunnel key goes beside it as <file>.wg [default: <state-dir>/identity.key].
    #[arg(long, value_name = "FILE")]
    identity: Option<PathBuf>,
    /// Swarm name: nodes see only members of their own namespace.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// GPU inventory: `auto` (NVML, else none), `none`, or a spec such as 2xA100-80GB,1xRTX4090-24GB.
    #[arg(long, value_name = "auto|SPEC", default_value = "auto", value_parser = parse_gpus)]
    gpus: GpuChoice,
    /// Label key=value (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    label: Vec<String>,
    /// Record heartbeat.
    #[arg(long, default_value = "5s", value_parser = crate::parse_duration)]
    heartbeat: Duration,
    /// Record time-to-live.
    #[arg(long, default_value = "30s", value_parser = crate::parse_duration)]
    ttl: Duration,
    /// How often the peer table is printed (at least 100ms).
    #[arg(long, default_value = "5s", value_parser = parse_refresh)]
    refresh: Duration,
    /// UDP port of the tunnel socket (0: any).
    #[arg(long, default_value_t = DEFAULT_TUNNEL_PORT)]
    tunnel_port: u16,
    /// Announce this tunnel endpoint instead of the socket's addresses (repeatable): a
    /// NAT's forwarded port, or a relay.
    #[arg(long, value_name = "IP:PORT")]
    tunnel_endpoint: Vec<std::net::SocketAddr>,
    /// The swarm's pre-shared key (a file as `wg genpsk` writes): only nodes holding it can
    /// open tunnels with this one.
    #[arg(long, value_name = "FILE")]
    psk_file: Option<PathBuf>,
    /// Serve metrics here: GET /metrics (OpenMetrics) and /links (JSON, read by
    /// `swarm-node links`). No authentication: keep it on loopback.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Serve the local control socket here (mode 0600; only this user and root may
    /// use it), which `status`, `peers`, `ping`, `monitor`, `place` and the other
    /// client commands read [default: $RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR/swarm-node,
    /// /run/swarm-node (root) or /tmp/swarm-node-UID, then control.sock]. A second node
    /// on one host needs its own.
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    /// Serve no control socket.
    #[arg(long, conflicts_with = "control")]
    no_control: bool,
    /// The longest lease this node grants on its GPUs.
    #[arg(long, default_value = "10m", value_parser = crate::parse_duration)]
    max_lease: Duration,
    /// After a restart with an existing identity, refuse new leases this long (leases
    /// live in memory; this waits out any granted before; 0: none). Default: --max-lease.
    #[arg(long, value_parser = crate::parse_duration_or_zero)]
    lease_grace: Option<Duration>,
    /// Relay libp2p connections for members behind NATs (circuit relay v2, and AutoNAT v2
    /// answers): `auto` once the node's tunnel socket proves public, `on`, or `off`.
    #[arg(long, value_name = "auto|on|off", default_value = "auto")]
    relay: swarm::net::RelayMode,
    /// Join the mesh VPN: a TUN device with this node's overlay addresses, every other
    /// node reachable at its own (needs CAP_NET_ADMIN; the device goes when the node stops).
    #[arg(long)]
    vpn: bool,
    /// The VPN's device name.
    #[arg(long, value_name = "NAME", default_value = "swarm0")]
    vpn_dev: String,
    /// The VPN device's MTU.
    #[arg(long, default_value_t = swarm::net::DEFAULT_VPN_MTU)]
    vpn_mtu: u16,
    /// The IPv4 range nodes claim overlay addresses in, or `none` for IPv6 only.
    #[arg(long, value_name = "CIDR|none", default_value = "100.64.0.0/10", value_parser = parse_ipv4_range)]
    vpn_ipv4: Ipv4Choice,
}

/// `--refresh`: a duration of at least 100 ms (the table is printed that often).
fn parse_refresh(text: &str) -> Result<Duration, String> {
    let d = crate::parse_duration(text)?;
    if d < Duration::from_millis(100) {
        return Err(format!("{:?} is shorter than 100ms", text.trim()));
    }
    Ok(d)
}

/// `--vpn-ipv4`: a range, or none.
#[derive(Debug, Clone)]
pub struct Ipv4Choice(Option<Ipv4Range>);

fn parse_ipv4_range(s: &str) -> Result<Ipv4Choice, String> {
    if s == "none" {
        return Ok(Ipv4Choice(None));
    }
    s.parse().map(|r| Ipv4Choice(Some(r))).map_err(|e: swarm::core::overlay::Ipv4RangeError| e.to_string())
}

/// The libp2p port, for QUIC (UDP) and TCP alike: fixed, so the address given to other
/// machines and the firewall rules stay true across restarts.
pub const DEFAULT_PORT: u16 = 4190;
/// The tunnel socket's UDP port.
pub const DEFAULT_TUNNEL_PORT: u16 = 4191;
/// How often the members' addresses are saved (and when the node stops).
const SAVE_PEERS_EVERY: Duration = Duration::from_secs(60);
/// How long a node may find no peer before it says so.
const ALONE_WARNING: Duration = Duration::from_secs(30);

fn default_listen() -> Vec<Multiaddr> {
    [format!("/ip4/0.0.0.0/udp/{DEFAULT_PORT}/quic-v1"), format!("/ip4/0.0.0.0/tcp/{DEFAULT_PORT}")]
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect()
}

/// The node `run`'s flags describe.
fn builder(args: &RunArgs, identity: &std::path::Path) -> anyhow::Result<NodeBuilder> {
    let mut builder = NodeBuilder::new(&args.namespace)
        .identity_file(identity)
        .gpu_probe(args.gpus.probe())
        .heartbeat(args.heartbeat)
        .record_ttl(args.ttl)
        .tunnel_port(args.tunnel_port)
        .relay(args.relay)
        .new_tunnel_key(args.new_tunnel_key)
        .max_lease(args.max_lease);
    if let Some(grace) = args.lease_grace {
        builder = builder.lease_restart_grace(grace);
    }
    if let Some(path) = &args.psk_file {
        builder = builder.tunnel_psk(swarm::net::load_psk(path)?);
    }
    for addr in &args.listen {
        builder = builder.listen(addr.clone());
    }
    for addr in &args.bootstrap {
        builder = builder.bootstrap(addr.clone());
    }
    for endpoint in &args.tunnel_endpoint {
        builder = builder.tunnel_endpoint(*endpoint);
    }
    for label in &args.label {
        builder = builder.label(label.clone());
    }
    if args.vpn {
        builder = builder.vpn(VpnConfig { device: args.vpn_dev.clone(), mtu: args.vpn_mtu });
        if let Some(range) = args.vpn_ipv4.0 {
            builder = builder.overlay_ipv4(range);
        }
    }
    Ok(builder)
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    // The state directory holds the identity unless --identity says where; then it only
    // keeps the members' addresses, and a default one that cannot be made is no reason
    // not to run.
    let (state, identity) = match (&args.state_dir, &args.identity) {
        (None, Some(path)) => {
            let state = crate::state::open(None)
                .inspect_err(|e| {
                    let error = format!("{e:#}");
                    tracing::warn!(error, "no state directory: the members' addresses are not saved");
                })
                .ok();
            (state, path.clone())
        }
        (dir, path) => {
            let state = crate::state::open(dir.as_deref())?;
            let identity = path.clone().unwrap_or_else(|| state.join(crate::state::IDENTITY_FILE));
            (Some(state), identity)
        }
    };
    // A node restarted on an existing identity may have granted leases it forgot.
    let restarted = identity.exists();
    let builder = builder(&args, &identity)?;
    let (node, mut events) = builder.start().await.context("cannot start the node")?;
    println!("peer id {}", node.peer_id());
    match &state {
        Some(dir) => println!("state directory {} (identity {})", dir.display(), identity.display()),
        None => println!("identity {}", identity.display()),
    }
    if args.vpn {
        print_overlay(&node, &args.vpn_dev).await?;
    }
    if let Some(addr) = args.metrics {
        let bound = node.serve_metrics(addr).await.context("cannot serve metrics")?;
        println!("metrics on http://{bound}/metrics");
    }
    let grace = args.lease_grace.unwrap_or(args.max_lease);
    let grace_until = (restarted && !grace.is_zero()).then(|| std::time::Instant::now() + grace);
    let (event_lines, _) = tokio::sync::broadcast::channel(crate::inspect::MONITOR_BACKLOG);
    let info = std::sync::Arc::new(crate::inspect::RunInfo { grace_until, events: event_lines.clone() });
    let _control = if args.no_control {
        None
    } else {
        let path = args.control.clone().unwrap_or_else(crate::control::default_path);
        let control = crate::control::serve(node.clone(), &path, info).await?;
        println!("control socket {}", path.display());
        Some(control)
    };
    for addr in node.listen_addrs().await? {
        println!("listening on {addr}");
    }
    print_tunnel_socket(&node).await?;
    let saved = state.as_deref().map(crate::state::load_peers).unwrap_or_default();
    if !saved.is_empty() {
        println!("dialing {} members saved by the last run", saved.len());
    }
    for addr in saved {
        if let Err(e) = node.dial(addr.clone()).await {
            tracing::info!(%addr, error = %e, "cannot dial a saved member");
        }
    }
    if grace_until.is_some() {
        println!(
            "restarted on an existing identity: new leases refused for {} s (--lease-grace)",
            grace.as_secs()
        );
    }
    let started = tokio::time::Instant::now();
    let mut alone_said = false;
    crate::notify::notify(&format!("READY=1\nSTATUS=peer id {}", node.peer_id()));
    let mut save_peers = tokio::time::interval(SAVE_PEERS_EVERY);
    save_peers.tick().await;

    // Listen for Ctrl-C (SIGINT) and SIGTERM from here on: a stream made once misses no
    // signal, while a `ctrl_c()` future made per loop turn misses one that arrives while
    // the table is being printed.
    let mut sigint = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut ticker = tokio::time::interval(args.refresh);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = save_peers.tick() => {
                if let Err(e) = crate::state::save_peers(&node, state.as_deref()).await {
                    tracing::warn!(error = %format!("{e:#}"), "cannot save the members' addresses");
                }
            }
            _ = ticker.tick() => {
                let view = node.cluster().await?;
                let connected = node.connected_peers().await?;
                if connected.is_empty() && !alone_said && started.elapsed() >= ALONE_WARNING {
                    alone_said = true;
                    tracing::warn!(
                        seconds = ALONE_WARNING.as_secs(),
                        bootstrap = args.bootstrap.len(),
                        "no peer connected: check --bootstrap (the warnings above say why each failed) and the firewall"
                    );
                }
                let stats = node.stats().await?;
                let tunnels = node.tunnels().await?;
                let overlay = overlay_of_view(&node, &view).await?;
                println!();
                print!("{}", table::peer_table(&view, &connected, &tunnels, &overlay));
                let summary = format!(
                    "{} records, {} connected, {} tunnels up, {} published, {} rejected",
                    view.len(),
                    connected.len(),
                    tunnels.iter().filter(|t| t.established).count(),
                    stats.published,
                    stats.gossip.rejected_total()
                );
                println!("{summary}");
                crate::notify::notify(&format!("STATUS={summary}"));
            }
            event = events.next() => match event {
                Some(event) => {
                    if let Some(line) = swarm::net::answers::MonitorEvent::from_event(&event) {
                        // No monitor listening is fine.
                        let _ = event_lines.send(line);
                    }
                    log_event(event)
                }
                None => break,
            },
        }
    }
    println!("shutting down");
    crate::notify::notify("STOPPING=1");
    if let Err(e) = crate::state::save_peers(&node, state.as_deref()).await {
        tracing::warn!(error = %format!("{e:#}"), "cannot save the members' addresses");
    }
    node.shutdown().await;
    Ok(())
}

/// The node's events, in its log.
fn log_event(event: NodeEvent) {
    match event {
        NodeEvent::PeerDiscovered { peer } => tracing::info!(%peer, "discovered"),
        NodeEvent::PeerLost { peer } => tracing::info!(%peer, "lost"),
        NodeEvent::RecordRejected { from, reason } => tracing::warn!(%from, reason, "record rejected"),
        NodeEvent::TunnelUp { peer, endpoint } => tracing::info!(%peer, ?endpoint, "tunnel up"),
        NodeEvent::TunnelDown { peer, reason } => tracing::info!(%peer, reason, "tunnel down"),
        NodeEvent::PeerUnreachable { peer, silent } => {
            let silent_ms = swarm::net::summary::ms(silent);
            tracing::warn!(%peer, silent_ms, "peer unreachable: no probe answered; re-establishing its tunnel");
        }
        NodeEvent::TunnelPath { peer, path } => tracing::info!(%peer, %path, "tunnel path"),
        NodeEvent::NatDetected { nat, mapped } => match mapped {
            Some(m) => println!("tunnel socket: {} NAT, reached at {m}", nat.as_str()),
            None => println!("tunnel socket: {} NAT", nat.as_str()),
        },
        NodeEvent::LinkDegraded { peer, metric, value, target } => {
            let unit = metric.si_unit();
            tracing::warn!(%peer, metric = metric.as_str(), value, target, unit, "link degraded");
        }
        // At the level of the degradation, so an operator who sees one sees the other.
        NodeEvent::LinkRecovered { peer, metric, value, target } => {
            let unit = metric.si_unit();
            tracing::warn!(%peer, metric = metric.as_str(), value, target, unit, "link recovered");
        }
        _ => {}
    }
}

/// Where the tunnel socket listens (its port goes in firewall rules beside the libp2p
/// port), from the node's own record.
async fn print_tunnel_socket(node: &Node) -> anyhow::Result<()> {
    let view = node.cluster().await?;
    let own = view.entries.iter().find(|e| e.local);
    let endpoints: Vec<String> =
        own.map(|e| e.tunnel.udp_endpoints.iter().map(ToString::to_string).collect()).unwrap_or_default();
    println!(
        "tunnel socket (UDP) at {}",
        if endpoints.is_empty() { "-".to_owned() } else { endpoints.join(", ") }
    );
    Ok(())
}

/// The node's overlay addresses, as the VPN device carries them.
async fn print_overlay(node: &Node, device: &str) -> anyhow::Result<()> {
    let a = node.overlay().await?;
    match a.ipv4 {
        Some(v4) => println!("overlay {} and {v4} on {device}", a.ipv6),
        None => println!("overlay {} on {device}", a.ipv6),
    }
    Ok(())
}

/// The overlay addresses of every node in `view`.
pub async fn overlay_of_view(
    node: &Node,
    view: &swarm::core::view::ClusterSnapshot,
) -> anyhow::Result<Vec<(swarm::PeerId, swarm::net::OverlayAddresses)>> {
    let mut out = Vec::with_capacity(view.entries.len());
    for e in &view.entries {
        if let Some(a) = node.overlay_of(e.record.peer_id).await? {
            out.push((e.record.peer_id, a));
        }
    }
    Ok(out)
}
