//! Everything a node can be told before it starts, and the builder that tells it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use libp2p::Multiaddr;
use swarm_core::publish::PublishConfig;
use swarm_core::record::{InvalidLabel, InvalidNamespace, Label, Namespace};
use swarm_core::tunnel::TunnelConfig;
use swarm_core::view::ViewConfig;
use swarm_gpu::{GpuProbe, NoGpus};

use crate::identity::NodeIdentity;

/// Where a node's keys come from.
#[derive(Debug, Clone)]
pub enum IdentitySource {
    /// Fresh keys for this run only.
    Ephemeral,
    /// Keys loaded from (or created at) a file; see [`NodeIdentity::load_or_create`].
    File(PathBuf),
    /// Keys the caller already holds.
    Keys(Box<NodeIdentity>),
}

/// A node's settings, checked. Built by [`NodeBuilder`].
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The swarm's name.
    pub namespace: Namespace,
    /// libp2p listen addresses.
    pub listen: Vec<Multiaddr>,
    /// Peers to contact first.
    pub bootstrap: Vec<Multiaddr>,
    /// How the local record is published.
    pub publish: PublishConfig,
    /// How records of others are held.
    pub view: ViewConfig,
    /// Labels of this node.
    pub labels: Vec<Label>,
    /// Most inbound connections.
    pub max_inbound: u32,
    /// How many namespace members to keep connections to, at least.
    pub target_peers: usize,
    /// How often a Kademlia random walk looks for new peers.
    pub random_walk_interval: Duration,
    /// Longest wait between two provider look-ups for namespace members.
    pub discovery_interval_max: Duration,
    /// Lifetime of the provider record announcing membership.
    pub provider_ttl: Duration,
    /// Capacity of the event stream; events beyond it are dropped and counted.
    pub event_capacity: usize,
    /// UDP port of the tunnel socket (0: any).
    pub tunnel_port: u16,
    /// Whether mDNS runs (only with the `mdns` feature).
    pub mdns: bool,
    /// Settings of the WireGuard tunnels.
    pub tunnel: TunnelConfig,
    /// Tunnels opened as soon as a peer's record arrives, to this many peers; others
    /// open on their first datagram.
    pub eager_tunnels: usize,
    /// Send and receive buffer asked of the kernel for the tunnel socket.
    pub tunnel_buffer_bytes: usize,
    /// Received application datagrams held for the reader; more are dropped and counted.
    pub datagram_capacity: usize,
    /// Whether runs of datagrams leave in one GSO send where the kernel supports it.
    pub tunnel_gso: bool,
    /// Tunnel endpoints announced instead of the socket's own addresses (a NAT's
    /// forwarded port, a relay); empty: the socket's.
    pub tunnel_endpoints: Vec<std::net::SocketAddr>,
    /// How this node grants leases on its GPUs.
    pub leases: swarm_core::place::LeaseConfig,
    /// The IPv4 overlay range this node claims an address in (`None`: no IPv4 claim).
    pub overlay_ipv4: Option<swarm_core::overlay::Ipv4Range>,
    /// The TUN device that carries the overlay's IP packets (`None`: no VPN).
    pub vpn: Option<VpnConfig>,
    /// Whether this node relays libp2p connections for members behind NATs.
    pub relay: RelayMode,
}

/// Whether a node serves as a libp2p relay (circuit relay v2) and AutoNAT v2 server for
/// members of its namespace behind NATs. Every node is a relay client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RelayMode {
    /// Serve when the node listens on a public IP address.
    #[default]
    Auto,
    /// Always serve.
    On,
    /// Never serve.
    Off,
}

impl std::str::FromStr for RelayMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            other => Err(format!("{other:?} is not a relay mode (auto, on or off)")),
        }
    }
}

/// The mesh VPN's TUN device (see `docs/vpn.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpnConfig {
    /// The device's name; `swarm0` by default.
    pub device: String,
    /// The device's MTU; 1420 by default (room for WireGuard's 80 bytes of overhead
    /// over an IPv6 underlay with a 1 500-byte MTU).
    pub mtu: u16,
}

impl Default for VpnConfig {
    fn default() -> Self {
        Self { device: "swarm0".to_owned(), mtu: DEFAULT_VPN_MTU }
    }
}

impl VpnConfig {
    /// Checks the MTU and the device name before anything is created.
    fn check(&self) -> Result<(), BuildError> {
        if !(MIN_VPN_MTU..=MAX_VPN_MTU).contains(&self.mtu) {
            return Err(BuildError::Setting(format!(
                "the VPN MTU ({}) must lie between {MIN_VPN_MTU} and {MAX_VPN_MTU}",
                self.mtu
            )));
        }
        Ok(crate::dataplane::tun::check_name(&self.device)?)
    }
}

/// The TUN device's MTU unless set.
pub const DEFAULT_VPN_MTU: u16 = 1420;
/// The smallest TUN MTU (IPv6's minimum link MTU).
pub const MIN_VPN_MTU: u16 = 1280;
/// The largest TUN MTU: a jumbo frame's.
pub const MAX_VPN_MTU: u16 = 9000;

/// The shortest record heartbeat: every node re-gossips each record at about this rate,
/// so a shorter one multiplies the whole swarm's gossip.
pub const MIN_HEARTBEAT: Duration = Duration::from_millis(100);

/// Why a node could not be configured or started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The namespace name is not valid.
    #[error(transparent)]
    Namespace(#[from] InvalidNamespace),
    /// A label is not valid.
    #[error(transparent)]
    Label(#[from] InvalidLabel),
    /// Too many labels.
    #[error("at most {max} labels are allowed, got {count}")]
    TooManyLabels {
        /// Labels given.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Setting(String),
    /// The keys could not be loaded.
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    /// The GPU probe failed at start.
    #[error("GPU probe failed: {0}")]
    Gpu(#[from] swarm_gpu::ProbeError),
    /// The transports or behaviours could not be set up (the libp2p error is the source).
    #[error("cannot set up the network stack")]
    Network(#[source] std::sync::Arc<dyn std::error::Error + Send + Sync>),
    /// A listen address could not be bound. The OS's reason is the [`source`]; print
    /// the chain (`{:#}` with anyhow) to see it.
    ///
    /// [`source`]: std::error::Error::source
    #[error("cannot listen on {addr}{hint}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// A hint for people (`" (is another node using that port?)"`), or empty.
        hint: &'static str,
        /// Why.
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
    /// Another process runs a node on this identity file (it holds `<file>.lock`).
    #[error("{path} is in use by another running node (it holds {path}.lock); stop it, or give this node its own --identity")]
    IdentityInUse {
        /// The identity file.
        path: PathBuf,
    },
    /// The tunnel UDP socket could not be set up.
    #[error("cannot set up the tunnel UDP socket: {0}")]
    TunnelSocket(std::io::Error),
    /// The tunnel UDP socket could not be bound at its address.
    #[error("cannot bind the tunnel UDP socket to {addr}: {error} (is another node using that port? choose one with --tunnel-port, 0 for any)")]
    TunnelBind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        error: std::io::Error,
    },
    /// The VPN's TUN device could not be set up.
    #[error(transparent)]
    Vpn(#[from] crate::dataplane::tun::TunError),
}

/// Builds a node: `NodeBuilder::new("my-swarm").listen(addr).bootstrap(addr).start().await`.
///
/// Every setting has a default: no listen address (add at least one for others to reach
/// you), no bootstrap peer, fresh keys, no GPU, a 5 s heartbeat and a 30 s record TTL.
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    pub(crate) namespace: String,
    pub(crate) listen: Vec<Multiaddr>,
    pub(crate) bootstrap: Vec<Multiaddr>,
    pub(crate) identity: IdentitySource,
    pub(crate) probe: Arc<dyn GpuProbe>,
    pub(crate) gpu_sample_interval: Duration,
    pub(crate) labels: Vec<String>,
    pub(crate) heartbeat: Duration,
    pub(crate) max_heartbeat: Duration,
    pub(crate) gossip_budget: u32,
    pub(crate) ttl: Duration,
    pub(crate) max_inbound: u32,
    pub(crate) target_peers: usize,
    pub(crate) max_records: usize,
    pub(crate) random_walk_interval: Duration,
    pub(crate) event_capacity: usize,
    pub(crate) tunnel_port: u16,
    pub(crate) mdns: bool,
    pub(crate) new_tunnel_key: bool,
    pub(crate) tunnel_psk: Option<[u8; 32]>,
    pub(crate) eager_tunnels: usize,
    pub(crate) tunnel_buffer_bytes: usize,
    pub(crate) datagram_capacity: usize,
    pub(crate) tunnel_gso: bool,
    pub(crate) tunnel_endpoints: Vec<std::net::SocketAddr>,
    pub(crate) leases: swarm_core::place::LeaseConfig,
    pub(crate) overlay_ipv4: Option<swarm_core::overlay::Ipv4Range>,
    pub(crate) vpn: Option<VpnConfig>,
    pub(crate) relay: RelayMode,
    /// Whether `lease_restart_grace` was called.
    pub(crate) grace_set: bool,
}

impl NodeBuilder {
    /// A builder for a node of swarm `namespace`.
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            listen: Vec::new(),
            bootstrap: Vec::new(),
            identity: IdentitySource::Ephemeral,
            probe: Arc::new(NoGpus),
            gpu_sample_interval: Duration::from_secs(2),
            labels: Vec::new(),
            heartbeat: Duration::from_secs(5),
            max_heartbeat: PublishConfig::default().max_heartbeat,
            gossip_budget: PublishConfig::default().records_per_second,
            ttl: Duration::from_secs(30),
            max_inbound: 256,
            target_peers: 16,
            max_records: ViewConfig::default().max_records,
            random_walk_interval: Duration::from_secs(30),
            event_capacity: 1024,
            tunnel_port: 0,
            mdns: false,
            new_tunnel_key: false,
            tunnel_psk: None,
            eager_tunnels: 8,
            tunnel_buffer_bytes: 4 << 20,
            datagram_capacity: 4096,
            tunnel_gso: true,
            tunnel_endpoints: Vec::new(),
            leases: swarm_core::place::LeaseConfig::default(),
            overlay_ipv4: None,
            vpn: None,
            relay: RelayMode::Auto,
            grace_set: false,
        }
    }

    /// Adds a libp2p listen address, e.g. `/ip4/0.0.0.0/udp/4001/quic-v1` or `/ip4/127.0.0.1/tcp/0`.
    pub fn listen(mut self, addr: Multiaddr) -> Self {
        self.listen.push(addr);
        self
    }

    /// Adds a bootstrap peer. With a `/p2p/<id>` suffix it also seeds Kademlia directly.
    pub fn bootstrap(mut self, addr: Multiaddr) -> Self {
        self.bootstrap.push(addr);
        self
    }

    /// Loads the keys from `path` (created on first run).
    pub fn identity_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.identity = IdentitySource::File(path.into());
        self
    }

    /// Lets [`identity_file`](Self::identity_file) make a new tunnel key when the
    /// identity exists but its `.wg` file does not (peers then see a new WireGuard key);
    /// without it that is an error. Off by default.
    pub fn new_tunnel_key(mut self, on: bool) -> Self {
        self.new_tunnel_key = on;
        self
    }

    /// Uses keys the caller holds.
    pub fn identity(mut self, identity: NodeIdentity) -> Self {
        self.identity = IdentitySource::Keys(Box::new(identity));
        self
    }

    /// Sets the GPU probe.
    pub fn gpu_probe(mut self, probe: Arc<dyn GpuProbe>) -> Self {
        self.probe = probe;
        self
    }

    /// How often the GPU probe is sampled (default 2 s). Live-use changes reach gossip
    /// only past thresholds and at most every 10 s; inventory changes at once.
    pub fn gpu_sample_interval(mut self, every: Duration) -> Self {
        self.gpu_sample_interval = every;
        self
    }

    /// Adds a `key=value` label.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.labels.push(label.into());
        self
    }

    /// How often the record is republished unchanged (default 5 s).
    pub fn heartbeat(mut self, heartbeat: Duration) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    /// The longest the heartbeat stretches to in a large swarm (default 300 s).
    pub fn max_heartbeat(mut self, max: Duration) -> Self {
        self.max_heartbeat = max;
        self
    }

    /// Heartbeat records per second a node should have to receive (default 200): beyond
    /// `heartbeat * budget` nodes the heartbeat grows with the swarm, up to
    /// `max_heartbeat`, and record TTLs follow.
    pub fn gossip_budget(mut self, records_per_second: u32) -> Self {
        self.gossip_budget = records_per_second;
        self
    }

    /// How long a record lives without a refresh (default 30 s; at least three
    /// heartbeats of its publisher).
    pub fn record_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Most inbound connections (default 256).
    pub fn max_inbound(mut self, max: u32) -> Self {
        self.max_inbound = max;
        self
    }

    /// How many connections to keep when dialing discovered members (default 16).
    pub fn target_peers(mut self, n: usize) -> Self {
        self.target_peers = n;
        self
    }

    /// Most records held in the cluster view (default 20 000).
    pub fn max_records(mut self, n: usize) -> Self {
        self.max_records = n;
        self
    }

    /// Interval of Kademlia random walks (default 30 s).
    pub fn random_walk_interval(mut self, interval: Duration) -> Self {
        self.random_walk_interval = interval;
        self
    }

    /// Capacity of the event stream (default 1024).
    pub fn event_capacity(mut self, n: usize) -> Self {
        self.event_capacity = n;
        self
    }

    /// UDP port of the tunnel socket (default 0: any free port).
    pub fn tunnel_port(mut self, port: u16) -> Self {
        self.tunnel_port = port;
        self
    }

    /// The swarm's pre-shared key, mixed into every tunnel handshake (WireGuard's PSK):
    /// only nodes that hold it can open tunnels with each other. Default: none.
    pub fn tunnel_psk(mut self, psk: [u8; 32]) -> Self {
        self.tunnel_psk = Some(psk);
        self
    }

    /// Opens tunnels as soon as their records arrive, to this many peers (default 8);
    /// the rest open on their first datagram.
    pub fn eager_tunnels(mut self, n: usize) -> Self {
        self.eager_tunnels = n;
        self
    }

    /// Send and receive buffers asked for the tunnel socket (default 4 MiB; at 1 Gbps the
    /// kernel's defaults lose packets). What the kernel granted is logged and in
    /// [`crate::NodeStats`].
    pub fn tunnel_buffer_bytes(mut self, bytes: usize) -> Self {
        self.tunnel_buffer_bytes = bytes;
        self
    }

    /// Received application datagrams held for the reader (default 4096).
    pub fn datagram_capacity(mut self, n: usize) -> Self {
        self.datagram_capacity = n;
        self
    }

    /// Whether runs of same-size datagrams to one peer leave in one GSO send (default
    /// on, where the kernel supports UDP GSO; receiving uses GRO the same way).
    pub fn tunnel_gso(mut self, on: bool) -> Self {
        self.tunnel_gso = on;
        self
    }

    /// Announces `addr` as a tunnel endpoint instead of the socket's own addresses
    /// (repeatable): for a node behind a NAT with a forwarded port, or behind a relay.
    /// Peers send their first packets there; after that, replies follow the source of
    /// authenticated packets either way.
    pub fn tunnel_endpoint(mut self, addr: std::net::SocketAddr) -> Self {
        self.tunnel_endpoints.push(addr);
        self
    }

    /// Claims an IPv4 overlay address in `range` (for example
    /// [`swarm_core::overlay::DEFAULT_IPV4_RANGE`]), announced signed in the record and
    /// moved when a peer's claim outranks it (see [`swarm_core::overlay`]). Off by
    /// default. Every node's IPv6 overlay address needs no claim.
    pub fn overlay_ipv4(mut self, range: swarm_core::overlay::Ipv4Range) -> Self {
        self.overlay_ipv4 = Some(range);
        self
    }

    /// Carries the overlay's IP packets on a TUN device (needs `CAP_NET_ADMIN`): the
    /// node's IPv6 overlay address (and its IPv4 claim, with [`Self::overlay_ipv4`]) on
    /// the device, the overlay's prefixes routed to it, and every packet sent to the peer
    /// whose address it is. The device goes when the node stops.
    pub fn vpn(mut self, vpn: VpnConfig) -> Self {
        self.vpn = Some(vpn);
        self
    }

    /// Whether this node relays libp2p connections (circuit relay v2, for members of its
    /// namespace only) and answers AutoNAT v2 probes; [`RelayMode::Auto`] by default.
    pub fn relay(mut self, mode: RelayMode) -> Self {
        self.relay = mode;
        self
    }

    /// The longest lease (and renewal) this node grants on its GPUs; 10 minutes by
    /// default. Also the restart grace unless [`Self::lease_restart_grace`] sets one.
    pub fn max_lease(mut self, max: Duration) -> Self {
        self.leases.max_lease = max;
        self.leases.restart_grace = max;
        self
    }

    /// How long a node that restarts with its keys from an existing identity file
    /// refuses new leases: leases are held in memory only, so it waits out those it
    /// may have granted before (see `swarm_core::place::LeaseTable`). Default: the
    /// longest lease. A node with fresh keys has nothing outstanding and never waits; a
    /// node given its keys by [`Self::identity`] waits only when this is set.
    pub fn lease_restart_grace(mut self, grace: Duration) -> Self {
        self.leases.restart_grace = grace;
        self.grace_set = true;
        self
    }

    /// Turns mDNS discovery on; it needs the `mdns` cargo feature.
    pub fn mdns(mut self, on: bool) -> Self {
        self.mdns = on;
        self
    }

    /// Checks the settings.
    pub(crate) fn config(&self) -> Result<NodeConfig, BuildError> {
        let namespace = Namespace::new(&self.namespace)?;
        let labels = self.labels.iter().map(|l| Label::parse(l)).collect::<Result<Vec<_>, _>>()?;
        if labels.len() > swarm_core::record::MAX_LABELS {
            return Err(BuildError::TooManyLabels {
                count: labels.len(),
                max: swarm_core::record::MAX_LABELS,
            });
        }
        for (i, l) in labels.iter().enumerate() {
            if labels[..i].iter().any(|o| o.key == l.key) {
                return Err(BuildError::Setting(format!("label key {:?} given twice", l.key.as_str())));
            }
        }
        if self.heartbeat < MIN_HEARTBEAT {
            return Err(BuildError::Setting(format!(
                "a heartbeat of {:?} is below the least, {MIN_HEARTBEAT:?} (every node re-gossips each record at that rate)",
                self.heartbeat
            )));
        }
        for e in &self.tunnel_endpoints {
            if e.ip().is_unspecified() || e.port() == 0 || e.ip().is_multicast() {
                return Err(BuildError::Setting(format!(
                    "tunnel endpoint {e} is not an address peers can send to (it needs a unicast IP and a port)"
                )));
            }
        }
        if let Some(psk) = &self.tunnel_psk {
            if psk.iter().all(|b| *b == 0) {
                return Err(BuildError::Setting(
                    "an all-zero pre-shared key is no key (the same as none): make one with `swarm-node genpsk`"
                        .to_owned(),
                ));
            }
        }
        let mut listen: Vec<Multiaddr> = Vec::with_capacity(self.listen.len());
        for addr in &self.listen {
            if listen.contains(addr) {
                tracing::warn!(%addr, "listen address given twice: listening once");
            } else {
                listen.push(addr.clone());
            }
        }
        if self.heartbeat.is_zero() || self.ttl <= self.heartbeat {
            return Err(BuildError::Setting(format!(
                "the record TTL ({:?}) must be longer than the heartbeat ({:?})",
                self.ttl, self.heartbeat
            )));
        }
        let max_refresh = swarm_core::record::RecordPolicy::default().max_refresh;
        if self.max_heartbeat < self.heartbeat || self.max_heartbeat > max_refresh {
            return Err(BuildError::Setting(format!(
                "the maximum heartbeat ({:?}) must lie between the heartbeat ({:?}) and {max_refresh:?}",
                self.max_heartbeat, self.heartbeat
            )));
        }
        if self.event_capacity == 0
            || self.max_records == 0
            || self.max_inbound == 0
            || self.gossip_budget == 0
            || self.datagram_capacity == 0
        {
            return Err(BuildError::Setting("capacities must be at least 1".to_owned()));
        }
        if self.tunnel_endpoints.len() > swarm_core::identity::MAX_UDP_ENDPOINTS {
            return Err(BuildError::Setting(format!(
                "at most {} tunnel endpoints can be announced",
                swarm_core::identity::MAX_UDP_ENDPOINTS
            )));
        }
        if self.leases.max_lease < swarm_core::place::MIN_LEASE {
            return Err(BuildError::Setting(format!(
                "the longest lease ({:?}) must be at least {:?}",
                self.leases.max_lease,
                swarm_core::place::MIN_LEASE
            )));
        }
        if self.mdns && !cfg!(feature = "mdns") {
            return Err(BuildError::Setting("mDNS needs the `mdns` cargo feature".to_owned()));
        }
        if let Some(vpn) = &self.vpn {
            vpn.check()?;
        }
        let publish = PublishConfig {
            heartbeat: self.heartbeat,
            max_heartbeat: self.max_heartbeat,
            records_per_second: self.gossip_budget,
            debounce: PublishConfig::default().debounce.min(self.heartbeat),
            ..PublishConfig::default()
        };
        let view = ViewConfig { ttl: self.ttl, max_records: self.max_records, ..ViewConfig::default() };
        Ok(NodeConfig {
            namespace,
            listen,
            bootstrap: self.bootstrap.clone(),
            publish,
            view,
            labels,
            max_inbound: self.max_inbound,
            target_peers: self.target_peers,
            random_walk_interval: self.random_walk_interval,
            discovery_interval_max: Duration::from_secs(30),
            provider_ttl: Duration::from_secs(600),
            event_capacity: self.event_capacity,
            tunnel_port: self.tunnel_port,
            mdns: self.mdns,
            tunnel: TunnelConfig { psk: self.tunnel_psk, ..TunnelConfig::default() },
            eager_tunnels: self.eager_tunnels,
            tunnel_buffer_bytes: self.tunnel_buffer_bytes,
            datagram_capacity: self.datagram_capacity,
            tunnel_gso: self.tunnel_gso,
            tunnel_endpoints: self.tunnel_endpoints.clone(),
            leases: self.leases,
            overlay_ipv4: self.overlay_ipv4,
            vpn: self.vpn.clone(),
            relay: self.relay,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = NodeBuilder::new("demo").config().unwrap();
        assert_eq!(c.publish.heartbeat, Duration::from_secs(5));
        assert_eq!(c.view.ttl, Duration::from_secs(30));
    }

    #[test]
    fn bad_settings_are_clear_errors() {
        let err = NodeBuilder::new("Bad Name").config().unwrap_err();
        assert!(err.to_string().contains("Bad Name"), "{err}");
        let err = NodeBuilder::new("ok").label("novalue").config().unwrap_err();
        assert!(err.to_string().contains("novalue"), "{err}");
        let err = NodeBuilder::new("ok").label("a=1").label("a=2").config().unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
        let err = NodeBuilder::new("ok")
            .heartbeat(Duration::from_secs(10))
            .record_ttl(Duration::from_secs(5))
            .config()
            .unwrap_err();
        assert!(err.to_string().contains("TTL"), "{err}");
        assert!(NodeBuilder::new("ok").event_capacity(0).config().is_err());
    }
}
