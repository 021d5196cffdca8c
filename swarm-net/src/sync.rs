//! The view sync protocol on a node (`/swarm/<namespace>/sync/1`, libp2p
//! request-response; the rules and messages are `swarm_core::record::sync`): when a
//! member's identify arrives, the node sends the digest of its view and feeds the signed
//! records that come back to its view like gossiped ones, asking again while the answer
//! says more remain. The protocol name carries the namespace, so only members ask and
//! answer.

use std::time::Duration;

use libp2p::request_response;
use libp2p::StreamProtocol;
use swarm_core::record::sync::{RecordDigest, SyncAnswer, MAX_ANSWER_SIZE, MAX_DIGEST_SIZE};
use swarm_core::record::Namespace;

use crate::framed::FramedCodec;

/// How long a peer has to answer (an answer is up to half a megabyte).
pub(crate) const SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// The protocol's name for `namespace`.
pub(crate) fn protocol(namespace: &Namespace) -> StreamProtocol {
    StreamProtocol::try_from_owned(format!("/swarm/{}/sync/1", namespace.as_str()))
        .unwrap_or(StreamProtocol::new("/swarm/sync/1"))
}

/// The protocol's messages, framed (`crate::framed`).
pub(crate) type SyncCodec = FramedCodec<RecordDigest, SyncAnswer>;

/// A codec with the protocol's caps and a fresh `malformed` counter.
pub(crate) fn codec() -> SyncCodec {
    FramedCodec::new(MAX_DIGEST_SIZE, MAX_ANSWER_SIZE)
}

pub(crate) type SyncBehaviour = request_response::Behaviour<SyncCodec>;

pub(crate) fn behaviour(namespace: &Namespace, codec: SyncCodec) -> SyncBehaviour {
    request_response::Behaviour::with_codec(
        codec,
        [(protocol(namespace), request_response::ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(SYNC_TIMEOUT)
            .with_max_concurrent_streams(16),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use request_response::Codec as _;
    use std::io;
    use std::sync::atomic::Ordering;

    #[tokio::test]
    async fn messages_round_trip_and_oversized_frames_are_refused() {
        let mut codec = codec();
        let p = protocol(&Namespace::new("test").unwrap());
        assert_eq!(p.as_ref(), "/swarm/test/sync/1");
        let mut buf = Vec::new();
        let answer = SyncAnswer { more: true, ..SyncAnswer::default() };
        codec.write_response(&p, &mut futures::io::Cursor::new(&mut buf), answer.clone()).await.unwrap();
        let read = codec.read_response(&p, &mut futures::io::Cursor::new(&buf)).await.unwrap();
        assert_eq!(read, answer);
        // A length beyond the cap is refused before anything is allocated.
        let huge = u32::try_from(MAX_DIGEST_SIZE + 1).unwrap().to_be_bytes();
        let err = codec.read_request(&p, &mut futures::io::Cursor::new(&huge[..])).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // Garbage of a valid length.
        let mut junk = 8u32.to_be_bytes().to_vec();
        junk.extend_from_slice(&[0xFF; 8]);
        assert!(codec.read_request(&p, &mut futures::io::Cursor::new(&junk)).await.is_err());
        assert_eq!(codec.malformed.load(Ordering::Relaxed), 2);
    }
}
