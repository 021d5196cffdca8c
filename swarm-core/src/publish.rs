//! When a node publishes its own [`NodeRecord`]: on change (debounced) and on a heartbeat.
//!
//! Sans-IO: change the content with the `set_*` methods or [`RecordPublisher::request_publish`],
//! wait until [`RecordPublisher::poll_timeout`], then call [`RecordPublisher::poll_publish`]
//! until it returns `None`. Every publication carries a new sequence number, so gossip never
//! drops a refresh as a duplicate and receivers always keep the newest.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p_identity::Keypair;

use crate::bounded::BoundedVec;
use crate::gpu::GpuSnapshot;
use crate::identity::{SignError, SignedTunnelRecord, TunnelPublicKey, TunnelRecord, MAX_UDP_ENDPOINTS};
use crate::record::{
    Label, Namespace, NodeRecord, RecordExtension, SignedNodeRecord, MAX_EXTENSIONS, MAX_LABELS,
};
use crate::time::UnixMillis;

/// Settings of a [`RecordPublisher`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishConfig {
    /// A record is republished at least this often, changed or not, in a swarm small
    /// enough for the gossip budget.
    pub heartbeat: Duration,
    /// The longest the heartbeat stretches to in a large swarm.
    pub max_heartbeat: Duration,
    /// Gossip budget: how many records per second a node should have to receive from
    /// the swarm's heartbeats. The heartbeat stretches to `swarm size / budget` seconds
    /// (between `heartbeat` and `max_heartbeat`), so heartbeat traffic per node stays
    /// flat as the swarm grows instead of growing with it.
    pub records_per_second: u32,
    /// Changes closer together than this are coalesced into one publication.
    pub debounce: Duration,
    /// The signed tunnel record is renewed when it is older than this.
    pub tunnel_refresh: Duration,
}

impl Default for PublishConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(5),
            max_heartbeat: Duration::from_secs(300),
            records_per_second: 200,
            debounce: Duration::from_secs(1),
            tunnel_refresh: Duration::from_secs(30 * 60),
        }
    }
}

/// What a node says about itself, apart from sequence numbers and signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalContent {
    /// GPU inventory.
    pub gpus: GpuSnapshot,
    /// CPU cores.
    pub cpu_cores: u32,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Labels, unique by key.
    pub labels: BoundedVec<Label, MAX_LABELS>,
    /// The tunnel public key.
    pub tunnel_pubkey: TunnelPublicKey,
    /// UDP endpoints of the tunnel socket.
    pub udp_endpoints: BoundedVec<SocketAddr, MAX_UDP_ENDPOINTS>,
    /// What the tunnel socket sits behind.
    pub nat: crate::nat::NatKind,
    /// Extensions of later stages.
    pub extensions: BoundedVec<RecordExtension, MAX_EXTENSIONS>,
}

/// Decides when the local record is published and builds it. See the module docs.
#[derive(Debug)]
pub struct RecordPublisher {
    keypair: Keypair,
    namespace: Namespace,
    content: LocalContent,
    config: PublishConfig,
    seq: u64,
    tunnel: Option<(SignedTunnelRecord, TunnelRecord)>,
    last_publish: Option<Instant>,
    dirty: bool,
    swarm_size: usize,
}

impl RecordPublisher {
    /// A publisher whose first sequence number follows `first_seq`. Pass the wall-clock
    /// milliseconds at start, so a restarted node's records outrank its old ones.
    pub fn new(
        keypair: Keypair,
        namespace: Namespace,
        content: LocalContent,
        config: PublishConfig,
        first_seq: u64,
    ) -> Self {
        Self {
            keypair,
            namespace,
            content,
            config,
            seq: first_seq,
            tunnel: None,
            last_publish: None,
            dirty: true,
            swarm_size: 1,
        }
    }

    /// Tells the publisher how many records the swarm holds; the heartbeat follows.
    pub fn set_swarm_size(&mut self, records: usize) {
        self.swarm_size = records.max(1);
    }

    /// The heartbeat for the current swarm size: `heartbeat` up to
    /// `heartbeat * records_per_second` records, then growing linearly with the swarm,
    /// up to `max_heartbeat`.
    pub fn effective_heartbeat(&self) -> Duration {
        let budget = f64::from(self.config.records_per_second.max(1));
        let stretched = Duration::from_secs_f64(self.swarm_size as f64 / budget);
        stretched.clamp(self.config.heartbeat, self.config.max_heartbeat.max(self.config.heartbeat))
    }

    /// The content as it stands.
    pub fn content(&self) -> &LocalContent {
        &self.content
    }

    /// Replaces the GPU snapshot; publishes if it changed.
    pub fn set_gpus(&mut self, gpus: GpuSnapshot) {
        if self.content.gpus != gpus {
            self.content.gpus = gpus;
            self.dirty = true;
        }
    }

    /// Replaces the tunnel endpoints; re-signs the tunnel record and publishes if they changed.
    pub fn set_udp_endpoints(&mut self, endpoints: BoundedVec<SocketAddr, MAX_UDP_ENDPOINTS>) {
        if self.content.udp_endpoints != endpoints {
            self.content.udp_endpoints = endpoints;
            self.tunnel = None;
            self.dirty = true;
        }
    }

    /// What the tunnel socket sits behind (from its reflectors); re-signs the tunnel
    /// record and publishes if it changed.
    pub fn set_nat(&mut self, nat: crate::nat::NatKind) {
        if self.content.nat != nat {
            self.content.nat = nat;
            self.tunnel = None;
            self.dirty = true;
        }
    }

    /// Replaces or adds the extension of `extension.kind`; publishes if it changed.
    pub fn set_extension(&mut self, extension: RecordExtension) -> Result<(), RecordExtension> {
        if self.replace_extension(extension)? {
            self.dirty = true;
        }
        Ok(())
    }

    /// Replaces or adds the extension of `extension.kind` without publishing: it goes out
    /// with the next publication (at the latest the heartbeat). For data that changes
    /// all the time, such as link measurements.
    pub fn set_extension_quiet(&mut self, extension: RecordExtension) -> Result<(), RecordExtension> {
        self.replace_extension(extension).map(|_| ())
    }

    /// Whether the extension changed.
    fn replace_extension(&mut self, extension: RecordExtension) -> Result<bool, RecordExtension> {
        let mut list = self.content.extensions.clone().into_inner();
        match list.iter().position(|e| e.kind == extension.kind) {
            Some(i) if list[i] == extension => return Ok(false),
            Some(i) => list[i] = extension,
            None if list.len() >= MAX_EXTENSIONS => return Err(extension),
            None => list.push(extension),
        }
        match BoundedVec::try_from_vec(list) {
            Ok(extensions) => {
                self.content.extensions = extensions;
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    /// Asks for a publication soon: within the debounce interval of the last one.
    pub fn request_publish(&mut self) {
        self.dirty = true;
    }

    /// Asks for a publication at once, debounce or not (the first subscriber appeared
    /// after earlier publications reached nobody, say).
    pub fn request_publish_now(&mut self) {
        self.dirty = true;
        self.last_publish = None;
    }

    /// A peer subscribed to our records; `delivered` is how many publications have
    /// reached at least one peer so far. The first subscriber gets the record at once;
    /// peers whose meshes form later fetch it by view sync when they connect, or from
    /// anyone who holds it, and hear it again on the heartbeat. (One publication per new
    /// subscriber makes a cold start of N nodes cost O(N^3) messages; a second one, a
    /// debounce later, was a fifth of a 64-node cold start's publications before view
    /// sync made it redundant.)
    pub fn on_subscriber(&mut self, delivered: u64) {
        if delivered == 0 {
            self.request_publish_now();
        }
    }

    /// When [`Self::poll_publish`] will next have something.
    pub fn poll_timeout(&self) -> Option<Instant> {
        // `None`: due at once, the caller polls right away.
        let last = self.last_publish?;
        if self.dirty {
            Some(last + self.config.debounce)
        } else {
            Some(last + self.effective_heartbeat())
        }
    }

    /// The record to publish now, if one is due. `wall` stamps the record and its
    /// tunnel record.
    pub fn poll_publish(
        &mut self,
        now: Instant,
        wall: UnixMillis,
    ) -> Option<Result<(NodeRecord, TunnelRecord), SignError>> {
        if let Some(due) = self.poll_timeout() {
            if now < due {
                return None;
            }
        }
        self.dirty = false;
        self.last_publish = Some(now);
        Some(self.build(wall))
    }

    /// `record` (one [`Self::poll_publish`] built) signed as a whole, as it travels
    /// ([`SignedNodeRecord`]), at most `max_size` record bytes.
    pub fn sign(&self, record: &NodeRecord, max_size: usize) -> Result<Arc<[u8]>, SignError> {
        SignedNodeRecord::sign(record, &self.keypair, max_size)
    }

    fn build(&mut self, wall: UnixMillis) -> Result<(NodeRecord, TunnelRecord), SignError> {
        let stale = match &self.tunnel {
            Some((_, t)) => t.issued_at.age(wall) >= self.config.tunnel_refresh || t.issued_at > wall,
            None => true,
        };
        if stale {
            let record = TunnelRecord {
                peer_id: self.keypair.public().to_peer_id(),
                tunnel_pubkey: self.content.tunnel_pubkey,
                udp_endpoints: self.content.udp_endpoints.clone(),
                nat: self.content.nat,
                issued_at: wall,
            };
            let signed = SignedTunnelRecord::sign(&record, &self.keypair)?;
            self.tunnel = Some((signed, record));
        }
        let (signed, tunnel) = match &self.tunnel {
            Some(pair) => pair.clone(),
            None => return Err(SignError::KeyCannotSign),
        };
        self.seq += 1;
        let record = NodeRecord {
            peer_id: self.keypair.public().to_peer_id(),
            namespace: self.namespace.clone(),
            seq: self.seq,
            timestamp: wall,
            refresh_ms: u32::try_from(self.effective_heartbeat().as_millis()).unwrap_or(u32::MAX),
            gpus: self.content.gpus.clone(),
            cpu_cores: self.content.cpu_cores,
            memory_bytes: self.content.memory_bytes,
            labels: self.content.labels.clone(),
            tunnel: signed,
            extensions: self.content.extensions.clone(),
        };
        Ok((record, tunnel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::tests::keypair;
    use crate::record::tests::{ns, NOW};

    fn content() -> LocalContent {
        LocalContent {
            gpus: GpuSnapshot::default(),
            cpu_cores: 8,
            memory_bytes: 1 << 34,
            labels: BoundedVec::new(),
            tunnel_pubkey: TunnelPublicKey::from_secret(&[3; 32]),
            udp_endpoints: BoundedVec::try_from_vec(vec!["127.0.0.1:1".parse().unwrap()]).unwrap(),
            nat: Default::default(),
            extensions: BoundedVec::new(),
        }
    }

    fn publisher() -> RecordPublisher {
        RecordPublisher::new(keypair(1), ns(), content(), PublishConfig::default(), 1000)
    }

    #[test]
    fn publishes_at_once_then_on_heartbeat() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut p = publisher();
        let (r1, t1) = p.poll_publish(t0, NOW).unwrap().unwrap();
        assert_eq!(r1.seq, 1001);
        assert_eq!(r1.tunnel.verify(&r1.peer_id, NOW, &Default::default()).unwrap(), t1);
        assert!(p.poll_publish(t0, NOW).is_none());
        let hb = t0 + Duration::from_secs(5);
        assert_eq!(p.poll_timeout(), Some(hb));
        assert!(p.poll_publish(hb - Duration::from_millis(1), NOW).is_none());
        let (r2, _) = p.poll_publish(hb, NOW).unwrap().unwrap();
        assert_eq!(r2.seq, 1002);
    }

    #[test]
    fn the_heartbeat_stretches_with_the_swarm() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut p = publisher();
        let five = Duration::from_secs(5);
        for (size, expected) in [
            (1, five),
            (1000, five),
            (2000, Duration::from_secs(10)),
            (10_000, Duration::from_secs(50)),
            (100_000, Duration::from_secs(300)),
        ] {
            p.set_swarm_size(size);
            assert_eq!(p.effective_heartbeat(), expected, "{size} records");
        }
        p.set_swarm_size(20_000);
        let (r, _) = p.poll_publish(t0, NOW).unwrap().unwrap();
        assert_eq!(r.refresh_ms, 100_000);
        assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_secs(100)));
    }

    #[test]
    fn changes_are_debounced() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut p = publisher();
        p.poll_publish(t0, NOW).unwrap().unwrap();
        // Setting the same value is no change.
        p.set_gpus(GpuSnapshot::default());
        assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_secs(5)));
        p.request_publish();
        p.request_publish();
        assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_secs(1)));
        assert!(p.poll_publish(t0 + Duration::from_millis(500), NOW).is_none());
        assert!(p.poll_publish(t0 + Duration::from_secs(1), NOW).is_some());
        assert!(p.poll_publish(t0 + Duration::from_millis(1200), NOW).is_none());
        p.request_publish_now();
        assert_eq!(p.poll_timeout(), None);
        assert!(p.poll_publish(t0 + Duration::from_millis(1200), NOW).is_some());
    }

    #[test]
    fn only_the_first_subscriber_triggers_an_early_publication() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut p = publisher();
        p.poll_publish(t0, NOW).unwrap().unwrap(); // reached nobody
        p.on_subscriber(0);
        assert_eq!(p.poll_timeout(), None, "the first subscriber: at once");
        p.poll_publish(t0, NOW).unwrap().unwrap();
        p.on_subscriber(1);
        assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_secs(5)), "then only the heartbeat");
    }

    #[test]
    fn tunnel_record_is_resigned_on_endpoint_change_and_when_old() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut p = publisher();
        let (_, t1) = p.poll_publish(t0, NOW).unwrap().unwrap();
        let later = UnixMillis(NOW.0 + 1000);
        let (_, t2) = p.poll_publish(t0 + Duration::from_secs(5), later).unwrap().unwrap();
        assert_eq!(t1, t2, "unchanged endpoints keep the signed record");
        p.set_udp_endpoints(BoundedVec::try_from_vec(vec!["127.0.0.1:2".parse().unwrap()]).unwrap());
        let (r3, t3) = p.poll_publish(t0 + Duration::from_secs(6), later).unwrap().unwrap();
        assert_eq!(t3.issued_at, later);
        assert_eq!(t3.udp_endpoints[0].port(), 2);
        assert_eq!(r3.tunnel.verify(&r3.peer_id, later, &Default::default()).unwrap(), t3);
        let much_later = UnixMillis(NOW.0 + 31 * 60 * 1000);
        let (_, t4) = p.poll_publish(t0 + Duration::from_secs(60), much_later).unwrap().unwrap();
        assert_eq!(t4.issued_at, much_later);
    }

    #[test]
    fn extensions_replace_by_kind_and_are_bounded() {
        let mut p = publisher();
        let ext = |kind, byte| RecordExtension {
            kind,
            version: 1,
            body: crate::bounded::BoundedBytes::try_from_slice(&[byte]).unwrap(),
        };
        p.set_extension(ext(1, 1)).unwrap();
        p.set_extension(ext(1, 2)).unwrap();
        assert_eq!(p.content().extensions.len(), 1);
        for k in 2..=MAX_EXTENSIONS as u16 {
            p.set_extension(ext(k, 0)).unwrap();
        }
        assert!(p.set_extension(ext(99, 0)).is_err());
    }
}
