//! Binding a tunnel key to a libp2p identity (data-flow stage 2).
//!
//! A node's X25519 tunnel key is trusted only through a [`SignedTunnelRecord`]: the
//! record's bytes signed by the node's Ed25519 identity key, verified against the public
//! key embedded in its `PeerId`. Nothing from the DHT or gossip is trusted unsigned.

use core::time::Duration;
use std::net::SocketAddr;

use libp2p_identity::{Keypair, PeerId, PublicKey};
use serde::{Deserialize, Serialize};

use crate::bounded::{BoundedBytes, BoundedVec};
use crate::codec::{self, WireMessage};
use crate::time::UnixMillis;

/// An X25519 public key of a WireGuard tunnel.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TunnelPublicKey(pub [u8; 32]);

impl TunnelPublicKey {
    /// The public key of a 32-byte X25519 secret.
    pub fn from_secret(secret: &[u8; 32]) -> Self {
        Self(crate::tunnel::noise::public_key(secret))
    }
}

impl core::fmt::Debug for TunnelPublicKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}

/// Most UDP endpoints one record may list.
pub const MAX_UDP_ENDPOINTS: usize = 8;
/// Largest encoded tunnel record body.
pub const MAX_TUNNEL_RECORD_SIZE: usize = 512;
/// Domain separation for tunnel record signatures.
const SIGNING_DOMAIN: &[u8] = b"swarm/tunnel-record/v1:";

/// Where and with which key a node accepts WireGuard tunnels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelRecord {
    /// The node this record speaks for.
    pub peer_id: PeerId,
    /// Its X25519 tunnel key.
    pub tunnel_pubkey: TunnelPublicKey,
    /// UDP endpoints where its tunnel socket listens, and the public mapping its NAT
    /// gives it (as reflectors see it), when it has one.
    pub udp_endpoints: BoundedVec<SocketAddr, MAX_UDP_ENDPOINTS>,
    /// What its tunnel socket sits behind, as its reflectors see it.
    pub nat: crate::nat::NatKind,
    /// When the record was signed.
    pub issued_at: UnixMillis,
}

impl TunnelRecord {
    /// Checks that the record is neither expired nor from the future at `now`.
    pub fn check_age(&self, now: UnixMillis, policy: &TunnelRecordPolicy) -> Result<(), TunnelRecordError> {
        if self.issued_at > now.saturating_add(policy.max_clock_skew) {
            return Err(TunnelRecordError::FromFuture { ahead_ms: self.issued_at.0 - now.0 });
        }
        let age = self.issued_at.age(now);
        if age > policy.max_age {
            return Err(TunnelRecordError::Expired { age_ms: age.as_millis() as u64 });
        }
        Ok(())
    }
}

impl WireMessage for TunnelRecord {
    const KIND: u8 = 0x02;
    // 2: with the NAT kind.
    const VERSION: u8 = 2;
}

/// A [`TunnelRecord`]'s exact bytes and the identity key's signature over them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTunnelRecord {
    body: BoundedBytes<MAX_TUNNEL_RECORD_SIZE>,
    signature: BoundedBytes<64>,
}

/// Limits applied when a tunnel record is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelRecordPolicy {
    /// A record older than this is expired.
    pub max_age: Duration,
    /// A record issued further than this in the future is refused.
    pub max_clock_skew: Duration,
}

impl Default for TunnelRecordPolicy {
    fn default() -> Self {
        Self { max_age: Duration::from_secs(3600), max_clock_skew: Duration::from_secs(60) }
    }
}

/// Why a tunnel record could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The record does not speak for the signing key.
    #[error("the record's peer id is not the signing key's")]
    NotOurRecord,
    /// The identity key cannot sign (not Ed25519).
    #[error("the identity key cannot sign")]
    KeyCannotSign,
    /// The record is too large to encode.
    #[error("encoding the record failed: {0}")]
    Encode(#[from] codec::EncodeError),
}

/// Why a tunnel record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TunnelRecordError {
    /// The body does not decode.
    #[error("record body does not decode: {0}")]
    Decode(#[from] codec::DecodeError),
    /// The record speaks for another peer than the one that sent it.
    #[error("record is for another peer")]
    WrongPeer,
    /// The peer id does not embed an Ed25519 public key.
    #[error("peer id does not embed a verifiable public key")]
    UnsupportedPeerId,
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// The record is older than the policy's maximum age.
    #[error("record is expired (issued {age_ms} ms ago)")]
    Expired {
        /// How old it is.
        age_ms: u64,
    },
    /// The record claims to be issued in the future beyond the allowed skew.
    #[error("record is issued {ahead_ms} ms in the future")]
    FromFuture {
        /// How far ahead.
        ahead_ms: u64,
    },
}

impl SignedTunnelRecord {
    /// Signs `record` with `keypair`, which must be the key of `record.peer_id`.
    pub fn sign(record: &TunnelRecord, keypair: &Keypair) -> Result<Self, SignError> {
        if record.peer_id != keypair.public().to_peer_id() {
            return Err(SignError::NotOurRecord);
        }
        let body = codec::encode(record, MAX_TUNNEL_RECORD_SIZE)?;
        let signature = keypair.sign(&signing_input(&body)).map_err(|_| SignError::KeyCannotSign)?;
        Ok(Self {
            body: BoundedBytes::try_from_vec(body)
                .map_err(|e| codec::EncodeError::Oversized { len: e.len, max: e.max })?,
            signature: BoundedBytes::try_from_vec(signature).map_err(|_| SignError::KeyCannotSign)?,
        })
    }

    /// Checks that this record was signed by `expected_peer` and is fresh at `now`,
    /// and returns its content. Cheap checks run before the signature.
    pub fn verify(
        &self,
        expected_peer: &PeerId,
        now: UnixMillis,
        policy: &TunnelRecordPolicy,
    ) -> Result<TunnelRecord, TunnelRecordError> {
        let record: TunnelRecord = codec::decode(&self.body, MAX_TUNNEL_RECORD_SIZE)?;
        if record.peer_id != *expected_peer {
            return Err(TunnelRecordError::WrongPeer);
        }
        record.check_age(now, policy)?;
        let key = embedded_public_key(expected_peer).ok_or(TunnelRecordError::UnsupportedPeerId)?;
        if !key.verify(&signing_input(&self.body), &self.signature) {
            return Err(TunnelRecordError::BadSignature);
        }
        Ok(record)
    }

    /// Test and fuzz access: a record with arbitrary body and signature bytes.
    #[doc(hidden)]
    pub fn from_parts(body: &[u8], signature: &[u8]) -> Option<Self> {
        Some(Self {
            body: BoundedBytes::try_from_slice(body).ok()?,
            signature: BoundedBytes::try_from_slice(signature).ok()?,
        })
    }

    /// The signed body and the signature, as carried.
    #[doc(hidden)]
    pub fn parts(&self) -> (&[u8], &[u8]) {
        (&self.body, &self.signature)
    }
}

fn signing_input(body: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(SIGNING_DOMAIN.len() + body.len());
    input.extend_from_slice(SIGNING_DOMAIN);
    input.extend_from_slice(body);
    input
}

/// The public key inlined in a `PeerId` (an identity multihash, as for Ed25519 keys).
pub fn embedded_public_key(peer: &PeerId) -> Option<PublicKey> {
    const IDENTITY_MULTIHASH: u64 = 0x00;
    let multihash = peer.as_ref();
    if multihash.code() != IDENTITY_MULTIHASH {
        return None;
    }
    PublicKey::try_decode_protobuf(multihash.digest()).ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn keypair(seed: u8) -> Keypair {
        Keypair::ed25519_from_bytes([seed; 32]).unwrap()
    }

    pub(crate) fn record_for(key: &Keypair, issued_at: u64) -> TunnelRecord {
        TunnelRecord {
            peer_id: key.public().to_peer_id(),
            tunnel_pubkey: TunnelPublicKey::from_secret(&[7; 32]),
            udp_endpoints: BoundedVec::try_from_vec(vec!["127.0.0.1:51820".parse().unwrap()]).unwrap(),
            nat: Default::default(),
            issued_at: UnixMillis(issued_at),
        }
    }

    const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

    #[test]
    fn signed_record_verifies() {
        let key = keypair(1);
        let record = record_for(&key, NOW.0);
        let signed = SignedTunnelRecord::sign(&record, &key).unwrap();
        let policy = TunnelRecordPolicy::default();
        assert_eq!(signed.verify(&key.public().to_peer_id(), NOW, &policy), Ok(record));
    }

    #[test]
    fn cannot_sign_for_another_peer() {
        let record = record_for(&keypair(1), NOW.0);
        assert_eq!(SignedTunnelRecord::sign(&record, &keypair(2)), Err(SignError::NotOurRecord));
    }

    #[test]
    fn forged_record_is_rejected() {
        // Mallory signs a record that claims to be Alice's, with Mallory's key.
        let alice = keypair(1);
        let mallory = keypair(2);
        let claimed = record_for(&alice, NOW.0);
        let body = codec::encode(&claimed, MAX_TUNNEL_RECORD_SIZE).unwrap();
        let sig = mallory.sign(&signing_input(&body)).unwrap();
        let forged = SignedTunnelRecord::from_parts(&body, &sig).unwrap();
        let policy = TunnelRecordPolicy::default();
        assert_eq!(
            forged.verify(&alice.public().to_peer_id(), NOW, &policy),
            Err(TunnelRecordError::BadSignature)
        );
    }

    #[test]
    fn tampered_record_is_rejected() {
        let key = keypair(1);
        let signed = SignedTunnelRecord::sign(&record_for(&key, NOW.0), &key).unwrap();
        let (body, sig) = signed.parts();
        let policy = TunnelRecordPolicy::default();
        // Flip every bit of the tail of the body (the key and endpoints) one at a time.
        for i in (body.len() - 40)..body.len() {
            for bit in 0..8 {
                let mut b = body.to_vec();
                b[i] ^= 1 << bit;
                let t = SignedTunnelRecord::from_parts(&b, sig).unwrap();
                assert!(t.verify(&key.public().to_peer_id(), NOW, &policy).is_err());
            }
        }
        let mut s = sig.to_vec();
        s[0] ^= 1;
        let t = SignedTunnelRecord::from_parts(body, &s).unwrap();
        assert_eq!(t.verify(&key.public().to_peer_id(), NOW, &policy), Err(TunnelRecordError::BadSignature));
    }

    #[test]
    fn wrong_peer_is_rejected() {
        let key = keypair(1);
        let signed = SignedTunnelRecord::sign(&record_for(&key, NOW.0), &key).unwrap();
        let other = keypair(2).public().to_peer_id();
        let policy = TunnelRecordPolicy::default();
        assert_eq!(signed.verify(&other, NOW, &policy), Err(TunnelRecordError::WrongPeer));
    }

    #[test]
    fn expired_and_future_records_are_rejected() {
        let key = keypair(1);
        let peer = key.public().to_peer_id();
        let policy = TunnelRecordPolicy::default();
        let old = NOW.0 - policy.max_age.as_millis() as u64 - 1;
        let signed = SignedTunnelRecord::sign(&record_for(&key, old), &key).unwrap();
        assert!(matches!(signed.verify(&peer, NOW, &policy), Err(TunnelRecordError::Expired { .. })));
        let edge = NOW.0 - policy.max_age.as_millis() as u64;
        let signed = SignedTunnelRecord::sign(&record_for(&key, edge), &key).unwrap();
        assert!(signed.verify(&peer, NOW, &policy).is_ok());
        let future = NOW.0 + policy.max_clock_skew.as_millis() as u64 + 1;
        let signed = SignedTunnelRecord::sign(&record_for(&key, future), &key).unwrap();
        assert_eq!(
            signed.verify(&peer, NOW, &policy),
            Err(TunnelRecordError::FromFuture { ahead_ms: future - NOW.0 })
        );
    }

    #[test]
    fn garbage_body_is_a_decode_error() {
        let t = SignedTunnelRecord::from_parts(&[0x02, 0x01, 0xFF], &[0; 64]).unwrap();
        let peer = keypair(1).public().to_peer_id();
        assert!(matches!(
            t.verify(&peer, NOW, &TunnelRecordPolicy::default()),
            Err(TunnelRecordError::Decode(_))
        ));
    }

    #[test]
    fn public_key_matches_x25519() {
        // RFC 7748 section 6.1: Alice's key pair.
        let secret: [u8; 32] = [
            0x77, 0x07, 0x6d, 0x0a, 0x73, 0x18, 0xa5, 0x7d, 0x3c, 0x16, 0xc1, 0x72, 0x51, 0xb2, 0x66, 0x45,
            0xdf, 0x4c, 0x2f, 0x87, 0xeb, 0xc0, 0x99, 0x2a, 0xb1, 0x77, 0xfb, 0xa5, 0x1d, 0xb9, 0x2c, 0x2a,
        ];
        let public = TunnelPublicKey::from_secret(&secret);
        assert_eq!(public.0[..4], [0x85, 0x20, 0xf0, 0x09]);
        assert_eq!(public.0[28..], [0xaa, 0x9b, 0x4e, 0x6a]);
    }
}
