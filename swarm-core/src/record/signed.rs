//! A [`NodeRecord`] signed as a whole by its author's identity key: what travels, by
//! gossip or by a direct fetch ([`super::sync`]). The signature makes a record
//! self-authenticating, so a node may pass on records of others: a joiner fetches the
//! whole view from its first peer instead of waiting for every author's heartbeat.
//!
//! The envelope is the record's exact bytes and an Ed25519 signature over a domain tag
//! and those bytes, checked against the public key inlined in the record's `PeerId`.

use std::sync::Arc;

use libp2p_identity::{Keypair, PeerId};
use serde::{Deserialize, Serialize};

use super::{NodeRecord, RecordError, MAX_RECORD_SIZE};
use crate::bounded::BoundedBytes;
use crate::codec::{self, WireMessage};
use crate::identity::{embedded_public_key, SignError};

/// Domain separation for whole-record signatures.
const SIGNING_DOMAIN: &[u8] = b"swarm/node-record/v1:";

/// Bytes the envelope adds to the record's own: the codec's header, two length
/// prefixes and the signature.
pub const ENVELOPE_OVERHEAD: usize = 2 + 3 + 1 + 64;

/// A record's exact bytes and its author's signature over them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedNodeRecord {
    body: BoundedBytes<MAX_RECORD_SIZE>,
    signature: BoundedBytes<64>,
}

impl WireMessage for SignedNodeRecord {
    const KIND: u8 = 0x16;
    const VERSION: u8 = 1;
}

/// A record taken out of its envelope, its signature not yet checked.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenedRecord {
    /// The record.
    pub record: NodeRecord,
    envelope: SignedNodeRecord,
}

impl OpenedRecord {
    /// Checks the signature against the key inlined in the record's author.
    pub fn check_signature(&self) -> Result<(), RecordError> {
        let key = embedded_public_key(&self.record.peer_id).ok_or(RecordError::BadSignature)?;
        if key.verify(&signing_input(&self.envelope.body), &self.envelope.signature) {
            Ok(())
        } else {
            Err(RecordError::BadSignature)
        }
    }

    /// The record's author.
    pub fn author(&self) -> &PeerId {
        &self.record.peer_id
    }
}

impl SignedNodeRecord {
    /// Encodes `record` (at most `max_size` bytes) and signs it with `keypair`, which
    /// must be the key of `record.peer_id`. Returns the envelope's wire bytes.
    pub fn sign(record: &NodeRecord, keypair: &Keypair, max_size: usize) -> Result<Arc<[u8]>, SignError> {
        if record.peer_id != keypair.public().to_peer_id() {
            return Err(SignError::NotOurRecord);
        }
        let body = codec::encode(record, max_size.min(MAX_RECORD_SIZE))?;
        let signature = keypair.sign(&signing_input(&body)).map_err(|_| SignError::KeyCannotSign)?;
        let envelope = Self {
            body: BoundedBytes::try_from_vec(body)
                .map_err(|e| codec::EncodeError::Oversized { len: e.len, max: e.max })?,
            signature: BoundedBytes::try_from_vec(signature).map_err(|_| SignError::KeyCannotSign)?,
        };
        Ok(codec::encode(&envelope, max_size.min(MAX_RECORD_SIZE) + ENVELOPE_OVERHEAD)?.into())
    }

    /// Decodes an envelope of at most `max_size` record bytes and the record in it;
    /// the signature is checked by [`OpenedRecord::check_signature`], after the cheap
    /// checks (a record that is not newer needs none).
    pub fn open(bytes: &[u8], max_size: usize) -> Result<OpenedRecord, RecordError> {
        let envelope: SignedNodeRecord = codec::decode(bytes, max_size.saturating_add(ENVELOPE_OVERHEAD))?;
        let record: NodeRecord = codec::decode(&envelope.body, max_size)?;
        Ok(OpenedRecord { record, envelope })
    }

    /// Fuzz access: `body` (any bytes) signed by `keypair`, as an envelope.
    #[cfg(any(fuzzing, test))]
    pub(crate) fn sign_body(body: &[u8], keypair: &Keypair) -> Option<Vec<u8>> {
        Self::from_parts(body, &keypair.sign(&signing_input(body)).ok()?)
    }

    /// Test and fuzz access: an envelope with arbitrary body and signature bytes.
    #[doc(hidden)]
    pub fn from_parts(body: &[u8], signature: &[u8]) -> Option<Vec<u8>> {
        let envelope = Self {
            body: BoundedBytes::try_from_slice(body).ok()?,
            signature: BoundedBytes::try_from_slice(signature).ok()?,
        };
        codec::encode(&envelope, MAX_RECORD_SIZE + ENVELOPE_OVERHEAD).ok()
    }
}

/// A signed record's gossip message id: 20 bytes of a BLAKE2s hash of its wire bytes.
/// Taken over the content (gossip carries no sender signature: the record's own does
/// the work), so a forged message cannot shadow the genuine one by sharing its id.
pub fn content_id(wire: &[u8]) -> [u8; 20] {
    use blake2::{Blake2s256, Digest};
    let hash = Blake2s256::digest(wire);
    let mut id = [0u8; 20];
    id.copy_from_slice(&hash[..20]);
    id
}

fn signing_input(body: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(SIGNING_DOMAIN.len() + body.len());
    input.extend_from_slice(SIGNING_DOMAIN);
    input.extend_from_slice(body);
    input
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::tests::keypair;
    use crate::record::tests::node_record;

    #[test]
    fn a_signed_record_opens_and_verifies() {
        let key = keypair(1);
        let record = node_record(&key, 3);
        let wire = SignedNodeRecord::sign(&record, &key, MAX_RECORD_SIZE).unwrap();
        let opened = SignedNodeRecord::open(&wire, MAX_RECORD_SIZE).unwrap();
        assert_eq!(opened.record, record);
        assert_eq!(opened.author(), &key.public().to_peer_id());
        assert_eq!(opened.check_signature(), Ok(()));
        let plain = codec::encode(&record, MAX_RECORD_SIZE).unwrap();
        assert!(wire.len() <= plain.len() + ENVELOPE_OVERHEAD, "{} vs {}", wire.len(), plain.len());
    }

    #[test]
    fn another_key_or_a_changed_byte_fails_the_signature() {
        let key = keypair(1);
        assert_eq!(
            SignedNodeRecord::sign(&node_record(&key, 1), &keypair(2), MAX_RECORD_SIZE),
            Err(SignError::NotOurRecord)
        );
        // A record claiming key 1's identity, signed by key 2.
        let record = node_record(&key, 1);
        let body = codec::encode(&record, MAX_RECORD_SIZE).unwrap();
        let forged = keypair(2).sign(&signing_input(&body)).unwrap();
        let wire = SignedNodeRecord::from_parts(&body, &forged).unwrap();
        let opened = SignedNodeRecord::open(&wire, MAX_RECORD_SIZE).unwrap();
        assert_eq!(opened.check_signature(), Err(RecordError::BadSignature));
        // The signature of sequence number 1 over a body saying 2.
        let signature = key.sign(&signing_input(&body)).unwrap();
        let replayed = codec::encode(&node_record(&key, 2), MAX_RECORD_SIZE).unwrap();
        let wire = SignedNodeRecord::from_parts(&replayed, &signature).unwrap();
        let opened = SignedNodeRecord::open(&wire, MAX_RECORD_SIZE).unwrap();
        assert_eq!(opened.record.seq, 2);
        assert_eq!(opened.check_signature(), Err(RecordError::BadSignature));
    }

    #[test]
    fn content_ids_tell_records_apart() {
        let key = keypair(1);
        let one = SignedNodeRecord::sign(&node_record(&key, 1), &key, MAX_RECORD_SIZE).unwrap();
        let two = SignedNodeRecord::sign(&node_record(&key, 2), &key, MAX_RECORD_SIZE).unwrap();
        assert_eq!(content_id(&one), content_id(&one[..]));
        assert_ne!(content_id(&one), content_id(&two));
    }

    #[test]
    fn truncated_envelopes_are_refused() {
        let key = keypair(1);
        let wire = SignedNodeRecord::sign(&node_record(&key, 1), &key, MAX_RECORD_SIZE).unwrap();
        for len in 0..wire.len() {
            assert!(SignedNodeRecord::open(&wire[..len], MAX_RECORD_SIZE).is_err(), "len {len}");
        }
    }
}
