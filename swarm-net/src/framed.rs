//! The request-response codec of swarm's own protocols (view sync, look-ups): each
//! message framed as a big-endian u32 length and `swarm_core::codec`'s bytes, at most the
//! message's cap; anything else is `InvalidData` and `malformed` counts it.

use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use libp2p::request_response;
use libp2p::StreamProtocol;
use serde::de::DeserializeOwned;
use serde::Serialize;
use swarm_core::codec::{self, WireMessage};

/// Requests `Req` of at most `max_request` bytes, answered by `Resp` of at most
/// `max_response`.
#[derive(Debug)]
pub(crate) struct FramedCodec<Req, Resp> {
    pub(crate) malformed: Arc<AtomicU64>,
    max_request: usize,
    max_response: usize,
    messages: PhantomData<fn() -> (Req, Resp)>,
}

impl<Req, Resp> FramedCodec<Req, Resp> {
    pub(crate) fn new(max_request: usize, max_response: usize) -> Self {
        Self { malformed: Arc::default(), max_request, max_response, messages: PhantomData }
    }
}

impl<Req, Resp> Clone for FramedCodec<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            malformed: self.malformed.clone(),
            max_request: self.max_request,
            max_response: self.max_response,
            messages: PhantomData,
        }
    }
}

async fn read_message<T, M>(io: &mut T, max: usize, malformed: &AtomicU64) -> io::Result<M>
where
    T: AsyncRead + Unpin + Send,
    M: WireMessage + DeserializeOwned,
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
    M: WireMessage + Serialize,
{
    let bytes = codec::encode(message, max).map_err(crate::lease::invalid)?;
    let len = u32::try_from(bytes.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(&bytes).await?;
    io.close().await
}

impl<Req, Resp> request_response::Codec for FramedCodec<Req, Resp>
where
    Req: WireMessage + Serialize + DeserializeOwned + Send + Sync + 'static,
    Resp: WireMessage + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Req;
    type Response = Resp;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Req> {
        read_message(io, self.max_request, &self.malformed).await
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Resp> {
        read_message(io, self.max_response, &self.malformed).await
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Req,
    ) -> io::Result<()> {
        write_message(io, &request, self.max_request).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Resp,
    ) -> io::Result<()> {
        write_message(io, &response, self.max_response).await
    }
}
