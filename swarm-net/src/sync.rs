//! The view sync protocol on a node (`/swarm/<namespace>/sync/1`, libp2p
//! request-response; the rules and messages are `swarm_core::record::sync`): when a
//! member's identify arrives, the node sends the digest of its view and feeds the signed
//! records that come back to its view like gossiped ones, asking again while the answer
//! says more remain. The protocol name carries the namespace, so only members ask and
//! answer.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use libp2p::request_response;
use libp2p::StreamProtocol;
use swarm_core::codec::{self, WireMessage};
use swarm_core::record::sync::{RecordDigest, SyncAnswer, MAX_ANSWER_SIZE, MAX_DIGEST_SIZE};
use swarm_core::record::Namespace;

/// How long a peer has to answer (an answer is up to half a megabyte).
pub(crate) const SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// The protocol's name for `namespace`.
pub(crate) fn protocol(namespace: &Namespace) -> StreamProtocol {
    StreamProtocol::try_from_owned(format!("/swarm/{}/sync/1", namespace.as_str()))
        .unwrap_or(StreamProtocol::new("/swarm/sync/1"))
}

/// Frames each message as a big-endian u32 length and the codec's bytes, at most the
/// message's cap; anything else is `InvalidData` and `malformed` counts it.
#[derive(Debug, Clone, Default)]
pub(crate) struct SyncCodec {
    pub(crate) malformed: Arc<AtomicU64>,
}

async fn read_message<T, M>(io: &mut T, max: usize, malformed: &AtomicU64) -> io::Result<M>
where
    T: AsyncRead + Unpin + Send,
    M: WireMessage + serde::de::DeserializeOwned,
{
    let read = async {
        let mut len = [0u8; 4];
        io.read_exact(&mut len).await?;
        let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
        if len > max {
            return Err(crate::lease::invalid("message too large"));
        }
        let mut buf = vec![0u8; len];
        io.read_exact(&mut buf).await?;
        codec::decode::<M>(&buf, max).map_err(crate::lease::invalid)
    };
    let message = read.await;
    if message.as_ref().is_err_and(|e| e.kind() == io::ErrorKind::InvalidData) {
        malformed.fetch_add(1, Ordering::Relaxed);
    }
    message
}

async fn write_message<T, M>(io: &mut T, message: &M, max: usize) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
    M: WireMessage + serde::Serialize,
{
    let bytes = codec::encode(message, max).map_err(crate::lease::invalid)?;
    let len = u32::try_from(bytes.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(&bytes).await?;
    io.close().await
}

impl request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = RecordDigest;
    type Response = SyncAnswer;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<RecordDigest> {
        read_message(io, MAX_DIGEST_SIZE, &self.malformed).await
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<SyncAnswer> {
        read_message(io, MAX_ANSWER_SIZE, &self.malformed).await
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        digest: RecordDigest,
    ) -> io::Result<()> {
        write_message(io, &digest, MAX_DIGEST_SIZE).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        answer: SyncAnswer,
    ) -> io::Result<()> {
        write_message(io, &answer, MAX_ANSWER_SIZE).await
    }
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

    #[tokio::test]
    async fn messages_round_trip_and_oversized_frames_are_refused() {
        let mut codec = SyncCodec::default();
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
