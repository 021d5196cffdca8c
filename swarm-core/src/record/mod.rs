//! The `NodeRecord` each node gossips about itself (data-flow stage 6), and the checks a
//! record from the network must pass before it enters a [`crate::view::ClusterView`].

use core::time::Duration;

use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};

use crate::bounded::{BoundedBytes, BoundedString, BoundedVec};
use crate::codec::{self, WireMessage};
use crate::gpu::{GpuSnapshot, GpuSnapshotError};
use crate::identity::{SignedTunnelRecord, TunnelRecord, TunnelRecordError, TunnelRecordPolicy};
use crate::time::UnixMillis;

pub mod ext;
pub mod signed;
pub mod sync;
pub use ext::{Extensions, LeasedGpus};
pub use signed::SignedNodeRecord;

/// Longest namespace name.
pub const MAX_NAMESPACE_LEN: usize = 64;
/// Most labels on one record.
pub const MAX_LABELS: usize = 32;
/// Longest label key.
pub const MAX_LABEL_KEY_LEN: usize = 64;
/// Longest label value.
pub const MAX_LABEL_VALUE_LEN: usize = 256;
/// Most extensions on one record.
pub const MAX_EXTENSIONS: usize = 8;
/// Largest extension body.
pub const MAX_EXTENSION_SIZE: usize = 16 * 1024;
/// Default cap on an encoded record (the codec's default).
pub const MAX_RECORD_SIZE: usize = codec::DEFAULT_MAX_MESSAGE_SIZE;

/// The name of one swarm. Several swarms can share one DHT; each sees only its own
/// members. 1–64 bytes of `a-z`, `0-9`, `-`, `_`, `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Namespace(BoundedString<MAX_NAMESPACE_LEN>);

/// Why a namespace name is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid namespace {name:?}: use 1-64 characters of a-z, 0-9, '-', '_', '.'")]
pub struct InvalidNamespace {
    /// The name that was offered.
    pub name: String,
}

impl Namespace {
    /// Checks and wraps `name`.
    pub fn new(name: &str) -> Result<Self, InvalidNamespace> {
        let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c);
        if name.is_empty() || !name.chars().all(ok_char) {
            return Err(InvalidNamespace { name: name.to_owned() });
        }
        BoundedString::try_new(name).map(Self).map_err(|_| InvalidNamespace { name: name.to_owned() })
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The gossipsub topic that carries this namespace's records.
    pub fn records_topic(&self) -> String {
        format!("/swarm/{}/records/1", self.as_str())
    }

    /// The DHT key under which members of this namespace announce themselves.
    pub fn provider_key(&self) -> Vec<u8> {
        format!("/swarm/ns/{}", self.as_str()).into_bytes()
    }

    /// The identify protocol version members of this namespace announce.
    pub fn identify_protocol(&self) -> String {
        format!("/swarm/{}/1.0.0", self.as_str())
    }
}

impl core::fmt::Display for Namespace {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `key=value` label such as `region=eu-west`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Label {
    /// The key.
    pub key: BoundedString<MAX_LABEL_KEY_LEN>,
    /// The value.
    pub value: BoundedString<MAX_LABEL_VALUE_LEN>,
}

/// Why a label is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid label {text:?}: expected key=value, key of 1-64 bytes without '=', value of at most 256 bytes"
)]
pub struct InvalidLabel {
    /// The text that was offered.
    pub text: String,
}

impl Label {
    /// Parses `key=value`.
    pub fn parse(text: &str) -> Result<Self, InvalidLabel> {
        let bad = || InvalidLabel { text: text.to_owned() };
        let (key, value) = text.split_once('=').ok_or_else(bad)?;
        if key.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            key: BoundedString::try_new(key).map_err(|_| bad())?,
            value: BoundedString::try_new(value).map_err(|_| bad())?,
        })
    }
}

/// Room for data later protocol stages add to a record (link summaries, network
/// coordinates). Each has its own kind and version; a node skips kinds it does not know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordExtension {
    /// What the body is.
    pub kind: u16,
    /// The version of the body's layout.
    pub version: u16,
    /// The body, itself a postcard encoding.
    pub body: BoundedBytes<MAX_EXTENSION_SIZE>,
}

/// What a node tells the swarm about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The author, whose key signs the record ([`SignedNodeRecord`]).
    pub peer_id: PeerId,
    /// The swarm it belongs to.
    pub namespace: Namespace,
    /// Grows with every publication; the highest wins.
    pub seq: u64,
    /// Wall-clock time of publication.
    pub timestamp: UnixMillis,
    /// The publisher's heartbeat when it published: its next record follows within
    /// this many milliseconds. Receivers keep the record for a multiple of it.
    pub refresh_ms: u32,
    /// GPU inventory and live use.
    pub gpus: GpuSnapshot,
    /// CPU cores.
    pub cpu_cores: u32,
    /// System memory in bytes.
    pub memory_bytes: u64,
    /// Labels, unique by key.
    pub labels: BoundedVec<Label, MAX_LABELS>,
    /// The node's signed tunnel key and endpoints.
    pub tunnel: SignedTunnelRecord,
    /// Data of later protocol stages.
    pub extensions: BoundedVec<RecordExtension, MAX_EXTENSIONS>,
}

impl WireMessage for NodeRecord {
    const KIND: u8 = 0x01;
    const VERSION: u8 = 1;
}

/// Limits applied to records from the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPolicy {
    /// Largest encoded record.
    pub max_size: usize,
    /// A record stamped further than this in the future is refused.
    pub max_clock_skew: Duration,
    /// Limits on the embedded tunnel record.
    pub tunnel: TunnelRecordPolicy,
    /// Longest heartbeat a record may announce.
    pub max_refresh: Duration,
}

impl Default for RecordPolicy {
    fn default() -> Self {
        Self {
            max_size: MAX_RECORD_SIZE,
            max_clock_skew: Duration::from_secs(60),
            tunnel: TunnelRecordPolicy::default(),
            max_refresh: Duration::from_secs(600),
        }
    }
}

/// Why a record from the network was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The bytes do not decode.
    #[error("record does not decode: {0}")]
    Decode(#[from] codec::DecodeError),
    /// The record claims another author than the message's signed source.
    #[error("record author does not match the message source")]
    WrongAuthor,
    /// The author's signature over the whole record does not verify.
    #[error("record signature does not verify")]
    BadSignature,
    /// The record belongs to another namespace.
    #[error("record belongs to another namespace")]
    WrongNamespace,
    /// The record's timestamp is too far in the future.
    #[error("record is stamped {ahead_ms} ms in the future")]
    FromFuture {
        /// How far ahead.
        ahead_ms: u64,
    },
    /// The announced heartbeat is zero or longer than the policy allows.
    #[error("record announces a heartbeat of {refresh_ms} ms")]
    BadRefresh {
        /// The announced heartbeat.
        refresh_ms: u32,
    },
    /// The GPU inventory is impossible.
    #[error("bad GPU inventory: {0}")]
    Gpu(#[from] GpuSnapshotError),
    /// Two labels share a key.
    #[error("duplicate label key")]
    DuplicateLabel,
    /// The embedded tunnel record does not verify.
    #[error("bad tunnel record: {0}")]
    Tunnel(#[from] TunnelRecordError),
}

impl RecordError {
    /// A short stable name for counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            RecordError::Decode(codec::DecodeError::Oversized { .. }) => "oversized",
            RecordError::Decode(_) => "malformed",
            RecordError::WrongAuthor => "wrong_author",
            RecordError::BadSignature => "bad_signature",
            RecordError::WrongNamespace => "wrong_namespace",
            RecordError::FromFuture { .. } => "from_future",
            RecordError::BadRefresh { .. } => "bad_refresh",
            RecordError::Gpu(_) => "bad_gpu_inventory",
            RecordError::DuplicateLabel => "duplicate_label",
            RecordError::Tunnel(TunnelRecordError::Expired { .. }) => "tunnel_record_expired",
            RecordError::Tunnel(_) => "bad_tunnel_record",
        }
    }
}

/// A record that passed every check, with its verified tunnel record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRecord {
    /// The record.
    pub record: NodeRecord,
    /// Its tunnel record, signature checked.
    pub tunnel: TunnelRecord,
}

impl NodeRecord {
    /// Decodes and checks a record published by `author` in `namespace` at `now`.
    pub fn decode_verified(
        bytes: &[u8],
        author: &PeerId,
        namespace: &Namespace,
        now: UnixMillis,
        policy: &RecordPolicy,
    ) -> Result<VerifiedRecord, RecordError> {
        let record: NodeRecord = codec::decode(bytes, policy.max_size)?;
        let tunnel = record.verify(author, namespace, now, policy, None)?;
        Ok(VerifiedRecord { record, tunnel })
    }

    /// Checks this record against its claimed `author`, the local `namespace` and time.
    /// `known` is a tunnel record verified earlier: when this record carries the very same
    /// signed bytes, only its age is checked again, not its signature.
    pub fn verify(
        &self,
        author: &PeerId,
        namespace: &Namespace,
        now: UnixMillis,
        policy: &RecordPolicy,
        known: Option<(&SignedTunnelRecord, &TunnelRecord)>,
    ) -> Result<TunnelRecord, RecordError> {
        if self.peer_id != *author {
            return Err(RecordError::WrongAuthor);
        }
        if self.namespace != *namespace {
            return Err(RecordError::WrongNamespace);
        }
        if self.timestamp > now.saturating_add(policy.max_clock_skew) {
            return Err(RecordError::FromFuture { ahead_ms: self.timestamp.0 - now.0 });
        }
        if self.refresh_ms == 0 || u128::from(self.refresh_ms) > policy.max_refresh.as_millis() {
            return Err(RecordError::BadRefresh { refresh_ms: self.refresh_ms });
        }
        self.gpus.validate()?;
        for (i, label) in self.labels.iter().enumerate() {
            if self.labels[..i].iter().any(|l| l.key == label.key) {
                return Err(RecordError::DuplicateLabel);
            }
        }
        match known {
            Some((signed, tunnel)) if *signed == self.tunnel && tunnel.peer_id == *author => {
                tunnel.check_age(now, &policy.tunnel)?;
                Ok(tunnel.clone())
            }
            _ => Ok(self.tunnel.verify(author, now, &policy.tunnel)?),
        }
    }

    /// The publisher's announced heartbeat.
    pub fn refresh(&self) -> Duration {
        Duration::from_millis(u64::from(self.refresh_ms))
    }

    /// The value of label `key`, if present.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|l| l.key.as_str() == key).map(|l| l.value.as_str())
    }

    /// The extension of `kind`, if present.
    pub fn extension(&self, kind: u16) -> Option<&RecordExtension> {
        self.extensions.iter().find(|e| e.kind == kind)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::gpu::{ComputeCapability, GpuDevice};
    use crate::identity::tests::{keypair, record_for};
    use libp2p_identity::Keypair;

    pub(crate) const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

    pub(crate) fn ns() -> Namespace {
        Namespace::new("test").unwrap()
    }

    pub(crate) fn node_record(key: &Keypair, seq: u64) -> NodeRecord {
        let tunnel = SignedTunnelRecord::sign(&record_for(key, NOW.0), key).unwrap();
        NodeRecord {
            peer_id: key.public().to_peer_id(),
            namespace: ns(),
            seq,
            timestamp: NOW,
            refresh_ms: 5000,
            gpus: GpuSnapshot {
                devices: BoundedVec::try_from_vec(vec![GpuDevice {
                    index: 0,
                    model: BoundedString::try_new("H100").unwrap(),
                    memory_total_mib: 81920,
                    memory_used_mib: 0,
                    utilization_pct: 0,
                    compute_capability: Some(ComputeCapability { major: 9, minor: 0 }),
                }])
                .unwrap(),
            },
            cpu_cores: 16,
            memory_bytes: 64 << 30,
            labels: BoundedVec::try_from_vec(vec![Label::parse("region=eu").unwrap()]).unwrap(),
            tunnel,
            extensions: BoundedVec::new(),
        }
    }

    fn check(bytes: &[u8], author: &PeerId) -> Result<VerifiedRecord, RecordError> {
        NodeRecord::decode_verified(bytes, author, &ns(), NOW, &RecordPolicy::default())
    }

    #[test]
    fn good_record_verifies() {
        let key = keypair(1);
        let record = node_record(&key, 5);
        let bytes = codec::encode(&record, MAX_RECORD_SIZE).unwrap();
        let verified = check(&bytes, &key.public().to_peer_id()).unwrap();
        assert_eq!(verified.record, record);
        assert_eq!(verified.record.label("region"), Some("eu"));
    }

    #[test]
    fn namespace_names_are_checked() {
        assert!(Namespace::new("prod-eu.1_a").is_ok());
        for bad in ["", "Prod", "a b", "ü", &"x".repeat(65)] {
            assert!(Namespace::new(bad).is_err(), "{bad:?}");
        }
        assert!(Namespace::new(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn labels_parse() {
        assert_eq!(Label::parse("a=b=c").unwrap().value.as_str(), "b=c");
        assert!(Label::parse("=v").is_err());
        assert!(Label::parse("novalue").is_err());
        assert!(Label::parse(&format!("{}=v", "k".repeat(65))).is_err());
    }

    #[test]
    fn malformed_records_are_refused_with_a_reason() {
        let key = keypair(1);
        let peer = key.public().to_peer_id();
        let bytes = codec::encode(&node_record(&key, 1), MAX_RECORD_SIZE).unwrap();
        for len in 0..bytes.len() {
            let err = check(&bytes[..len], &peer).unwrap_err();
            assert_eq!(err.reason(), "malformed", "len {len}");
        }
        let huge = vec![0u8; MAX_RECORD_SIZE + 1];
        assert_eq!(check(&huge, &peer).unwrap_err().reason(), "oversized");
    }

    #[test]
    fn semantic_checks() {
        let key = keypair(1);
        let peer = key.public().to_peer_id();
        let enc = |r: &NodeRecord| codec::encode(r, MAX_RECORD_SIZE).unwrap();

        let other = keypair(2).public().to_peer_id();
        assert_eq!(check(&enc(&node_record(&key, 1)), &other), Err(RecordError::WrongAuthor));

        let mut r = node_record(&key, 1);
        r.namespace = Namespace::new("other").unwrap();
        assert_eq!(check(&enc(&r), &peer), Err(RecordError::WrongNamespace));

        let mut r = node_record(&key, 1);
        r.timestamp = UnixMillis(NOW.0 + 61_000);
        assert_eq!(check(&enc(&r), &peer), Err(RecordError::FromFuture { ahead_ms: 61_000 }));

        for refresh_ms in [0, 600_001] {
            let mut r = node_record(&key, 1);
            r.refresh_ms = refresh_ms;
            assert_eq!(check(&enc(&r), &peer), Err(RecordError::BadRefresh { refresh_ms }));
        }

        let mut r = node_record(&key, 1);
        let mut labels = r.labels.clone().into_inner();
        labels.push(Label::parse("region=us").unwrap());
        r.labels = BoundedVec::try_from_vec(labels).unwrap();
        assert_eq!(check(&enc(&r), &peer), Err(RecordError::DuplicateLabel));

        let mut r = node_record(&key, 1);
        let mut devices = r.gpus.devices.clone().into_inner();
        devices[0].memory_used_mib = u64::MAX;
        r.gpus.devices = BoundedVec::try_from_vec(devices).unwrap();
        assert!(matches!(check(&enc(&r), &peer), Err(RecordError::Gpu(_))));
    }

    #[test]
    fn a_record_carrying_someone_elses_tunnel_record_is_refused() {
        let alice = keypair(1);
        let mallory = keypair(2);
        let mut r = node_record(&mallory, 1);
        r.tunnel = node_record(&alice, 1).tunnel;
        let bytes = codec::encode(&r, MAX_RECORD_SIZE).unwrap();
        assert_eq!(
            check(&bytes, &mallory.public().to_peer_id()),
            Err(RecordError::Tunnel(TunnelRecordError::WrongPeer))
        );
    }
}
