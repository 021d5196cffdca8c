//! The wire codec: postcard behind a two-byte header and a size cap.
//!
//! Every message that crosses the network is `[kind, version, postcard body]`. [`decode`]
//! is the one way bytes from the network become values: it refuses oversized input
//! before looking at it, an unknown kind or version before decoding the body, and any
//! trailing bytes after it. Variable-length fields are [`crate::bounded`] types, so a
//! hostile length prefix fails without a large allocation.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The default cap on one decoded message: 64 KiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024;

/// Length of the `[kind, version]` header.
pub const HEADER_LEN: usize = 2;

/// A message type that crosses the network.
pub trait WireMessage: Serialize + DeserializeOwned {
    /// The first byte on the wire: which message this is.
    const KIND: u8;
    /// The second byte on the wire: the version of its layout.
    const VERSION: u8;
}

/// Why bytes from the network did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is longer than the cap; nothing was read.
    #[error("message of {len} bytes exceeds the cap of {max}")]
    Oversized {
        /// Length of the input.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The input is shorter than the two-byte header.
    #[error("message of {len} bytes is shorter than its header")]
    TooShort {
        /// Length of the input.
        len: usize,
    },
    /// The header names another message kind.
    #[error("expected message kind {expected}, found {found}")]
    WrongKind {
        /// The kind the caller asked for.
        expected: u8,
        /// The kind on the wire.
        found: u8,
    },
    /// The header names a version this build does not speak.
    #[error("message kind {kind} version {found} is not supported (this build speaks {supported})")]
    UnsupportedVersion {
        /// The message kind.
        kind: u8,
        /// The version on the wire.
        found: u8,
        /// The version this build speaks.
        supported: u8,
    },
    /// The body is truncated, malformed or breaks a bound.
    #[error("malformed body: {0}")]
    Malformed(#[from] postcard::Error),
    /// The body decoded but bytes were left over.
    #[error("{count} trailing bytes after the body")]
    TrailingBytes {
        /// How many bytes were left.
        count: usize,
    },
}

/// Why a value could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The serializer failed.
    #[error("encoding failed: {0}")]
    Serialize(#[from] postcard::Error),
    /// The encoded message would be larger than the cap its receivers apply.
    #[error("encoded message of {len} bytes exceeds the cap of {max}")]
    Oversized {
        /// Length of the encoding.
        len: usize,
        /// The cap.
        max: usize,
    },
}

/// Encodes `message` with its header, refusing results larger than `max_size`.
pub fn encode<M: WireMessage>(message: &M, max_size: usize) -> Result<Vec<u8>, EncodeError> {
    let out = postcard::to_extend(message, vec![M::KIND, M::VERSION])?;
    if out.len() > max_size {
        return Err(EncodeError::Oversized { len: out.len(), max: max_size });
    }
    Ok(out)
}

/// Decodes one `M` from `bytes`, which must hold exactly one message of at most
/// `max_size` bytes. This is the only decode path for bytes from the network.
pub fn decode<M: WireMessage>(bytes: &[u8], max_size: usize) -> Result<M, DecodeError> {
    if bytes.len() > max_size {
        return Err(DecodeError::Oversized { len: bytes.len(), max: max_size });
    }
    let (header, body) = match bytes.split_first_chunk::<HEADER_LEN>() {
        Some(split) => split,
        None => return Err(DecodeError::TooShort { len: bytes.len() }),
    };
    let [kind, version] = *header;
    if kind != M::KIND {
        return Err(DecodeError::WrongKind { expected: M::KIND, found: kind });
    }
    if version != M::VERSION {
        return Err(DecodeError::UnsupportedVersion { kind, found: version, supported: M::VERSION });
    }
    let (message, rest) = postcard::take_from_bytes::<M>(body)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes { count: rest.len() });
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounded::{BoundedBytes, BoundedString, BoundedVec};
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        id: u64,
        name: BoundedString<16>,
        items: BoundedVec<u32, 8>,
        blob: BoundedBytes<32>,
    }

    impl WireMessage for Sample {
        const KIND: u8 = 0xEE;
        const VERSION: u8 = 3;
    }

    fn sample() -> Sample {
        Sample {
            id: 42,
            name: BoundedString::try_new("node-a").unwrap(),
            items: BoundedVec::try_from_vec(vec![1, 2, 3]).unwrap(),
            blob: BoundedBytes::try_from_slice(&[9; 10]).unwrap(),
        }
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&sample(), DEFAULT_MAX_MESSAGE_SIZE).unwrap();
        assert_eq!(&bytes[..2], &[0xEE, 3]);
        assert_eq!(decode::<Sample>(&bytes, DEFAULT_MAX_MESSAGE_SIZE).unwrap(), sample());
    }

    #[test]
    fn every_truncation_is_a_clean_error() {
        let bytes = encode(&sample(), DEFAULT_MAX_MESSAGE_SIZE).unwrap();
        for len in 0..bytes.len() {
            let err = decode::<Sample>(&bytes[..len], DEFAULT_MAX_MESSAGE_SIZE).unwrap_err();
            if len < HEADER_LEN {
                assert_eq!(err, DecodeError::TooShort { len });
            } else {
                assert!(matches!(err, DecodeError::Malformed(_)), "len {len}: {err:?}");
            }
        }
    }

    #[test]
    fn oversized_input_is_refused_unread() {
        let bytes = vec![0xEE; DEFAULT_MAX_MESSAGE_SIZE + 1];
        assert_eq!(
            decode::<Sample>(&bytes, DEFAULT_MAX_MESSAGE_SIZE),
            Err(DecodeError::Oversized { len: bytes.len(), max: DEFAULT_MAX_MESSAGE_SIZE })
        );
    }

    #[test]
    fn oversized_output_is_refused() {
        let err = encode(&sample(), 8).unwrap_err();
        assert!(matches!(err, EncodeError::Oversized { max: 8, .. }));
    }

    #[test]
    fn unknown_kind_and_version_are_refused() {
        let mut bytes = encode(&sample(), DEFAULT_MAX_MESSAGE_SIZE).unwrap();
        bytes[1] = 4;
        assert_eq!(
            decode::<Sample>(&bytes, DEFAULT_MAX_MESSAGE_SIZE),
            Err(DecodeError::UnsupportedVersion { kind: 0xEE, found: 4, supported: 3 })
        );
        bytes[0] = 1;
        assert_eq!(
            decode::<Sample>(&bytes, DEFAULT_MAX_MESSAGE_SIZE),
            Err(DecodeError::WrongKind { expected: 0xEE, found: 1 })
        );
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(&sample(), DEFAULT_MAX_MESSAGE_SIZE).unwrap();
        bytes.extend_from_slice(&[0, 0]);
        assert_eq!(
            decode::<Sample>(&bytes, DEFAULT_MAX_MESSAGE_SIZE),
            Err(DecodeError::TrailingBytes { count: 2 })
        );
    }

    /// A length prefix claiming 2^63 elements, or 2^32 bytes, fails at once.
    #[test]
    fn length_bombs_fail_cleanly() {
        let huge = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F];
        // id, then a name claiming 2^63 bytes.
        let mut bytes = vec![0xEE, 3, 42];
        bytes.extend_from_slice(&huge);
        assert!(matches!(decode::<Sample>(&bytes, DEFAULT_MAX_MESSAGE_SIZE), Err(DecodeError::Malformed(_))));
        // id, a good name, then items claiming 2^63 elements.
        let mut bytes = vec![0xEE, 3, 42, 1, b'a'];
        bytes.extend_from_slice(&huge);
        assert!(matches!(decode::<Sample>(&bytes, DEFAULT_MAX_MESSAGE_SIZE), Err(DecodeError::Malformed(_))));
        // items claiming 9 elements (one over the bound) with all of them present.
        let mut bytes = vec![0xEE, 3, 42, 1, b'a', 9];
        bytes.extend_from_slice(&[1; 9]);
        bytes.push(0);
        assert!(matches!(decode::<Sample>(&bytes, DEFAULT_MAX_MESSAGE_SIZE), Err(DecodeError::Malformed(_))));
    }
}
