//! The punch protocol (`/swarm/punch/1`, libp2p request-response): the codec of
//! [`PunchMessage`]s, framed as the lease protocol's messages are.

use std::io;
use std::time::Duration;

use futures::{AsyncRead, AsyncWrite};
use libp2p::{request_response, StreamProtocol};
use swarm_core::codec;
use swarm_core::nat::punch::{PunchMessage, MAX_PUNCH_MESSAGE};

use crate::lease::{invalid, read_frame_max, write_frame};

/// The protocol's name.
pub(crate) const PUNCH_PROTOCOL: StreamProtocol = StreamProtocol::new("/swarm/punch/1");

/// Requests and responses are both [`PunchMessage`]s.
#[derive(Debug, Clone, Default)]
pub(crate) struct PunchCodec;

async fn read_message<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<PunchMessage> {
    codec::decode(&read_frame_max(io, MAX_PUNCH_MESSAGE).await?, MAX_PUNCH_MESSAGE).map_err(invalid)
}

async fn write_message<T: AsyncWrite + Unpin + Send>(io: &mut T, m: &PunchMessage) -> io::Result<()> {
    write_frame(io, &codec::encode(m, MAX_PUNCH_MESSAGE).map_err(invalid)?).await
}

impl request_response::Codec for PunchCodec {
    type Protocol = StreamProtocol;
    type Request = PunchMessage;
    type Response = PunchMessage;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<PunchMessage> {
        read_message(io).await
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<PunchMessage> {
        read_message(io).await
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        m: PunchMessage,
    ) -> io::Result<()> {
        write_message(io, &m).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        m: PunchMessage,
    ) -> io::Result<()> {
        write_message(io, &m).await
    }
}

pub(crate) type PunchBehaviour = request_response::Behaviour<PunchCodec>;

pub(crate) fn behaviour() -> PunchBehaviour {
    request_response::Behaviour::with_codec(
        PunchCodec,
        [(PUNCH_PROTOCOL, request_response::ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(Duration::from_secs(5)),
    )
}
