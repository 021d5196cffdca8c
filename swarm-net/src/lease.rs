//! The lease protocol on a node (`/swarm/lease/1`, libp2p request-response): the codec,
//! and the node's [`LeaseTable`] answering requests from peers and from itself. The table
//! is the sole authority over this node's GPUs; what it holds is advertised in the record
//! ([`LeasedGpus`]) so submitters rank by what is really free.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use libp2p::request_response;
use libp2p::{PeerId, StreamProtocol};
use swarm_core::gpu::GpuDevice;
use swarm_core::place::wire::{LeaseRequest, LeaseResponse, MAX_LEASE_MESSAGE};
use swarm_core::place::{Lease, LeaseConfig, LeaseEvent, LeaseService, LeaseStats, LeaseTable, LeasedGpus};

/// The protocol's name.
pub(crate) const LEASE_PROTOCOL: StreamProtocol = StreamProtocol::new("/swarm/lease/1");
/// How long a peer has to answer.
pub(crate) const LEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Frames each message as a big-endian u16 length and the codec's bytes, at most
/// [`MAX_LEASE_MESSAGE`]; anything else is `InvalidData`, the stream is dropped and
/// `malformed` counts it (libp2p reports no event for a request that fails to read).
#[derive(Debug, Clone, Default)]
pub(crate) struct LeaseCodec {
    pub(crate) malformed: Arc<AtomicU64>,
}

pub(crate) async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    read_frame_max(io, MAX_LEASE_MESSAGE).await
}

/// A frame of at most `max` bytes.
pub(crate) async fn read_frame_max<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    io.read_exact(&mut len).await?;
    let len = usize::from(u16::from_be_bytes(len));
    if len > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "message too large"));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

pub(crate) async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    let len = u16::try_from(bytes.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(bytes).await?;
    io.close().await
}

pub(crate) fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl request_response::Codec for LeaseCodec {
    type Protocol = StreamProtocol;
    type Request = LeaseRequest;
    type Response = LeaseResponse;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<LeaseRequest> {
        let request = match read_frame(io).await {
            Ok(bytes) => LeaseRequest::decode(&bytes).map_err(invalid),
            Err(e) => Err(e),
        };
        if request.is_err() {
            self.malformed.fetch_add(1, Ordering::Relaxed);
        }
        request
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<LeaseResponse> {
        LeaseResponse::decode(&read_frame(io).await?).map_err(invalid)
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: LeaseRequest,
    ) -> io::Result<()> {
        write_frame(io, &req.encode().map_err(invalid)?).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: LeaseResponse,
    ) -> io::Result<()> {
        write_frame(io, &res.encode().map_err(invalid)?).await
    }
}

/// The behaviour carrying the protocol.
pub(crate) type LeaseBehaviour = request_response::Behaviour<LeaseCodec>;

pub(crate) fn behaviour(codec: LeaseCodec) -> LeaseBehaviour {
    request_response::Behaviour::with_codec(
        codec,
        [(LEASE_PROTOCOL, request_response::ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(LEASE_TIMEOUT),
    )
}

/// This node's side of the protocol: the [`LeaseService`] that answers requests, and the
/// transport's count of malformed ones.
pub(crate) struct Leases {
    local: PeerId,
    service: LeaseService,
    malformed: Arc<AtomicU64>,
}

impl Leases {
    /// `restarted`: whether this node may have granted leases in an earlier run (it then
    /// waits out `config.restart_grace` before granting new ones). Lease numbers start at
    /// `first_id` (the run's start time, so no earlier run used them).
    pub(crate) fn new(
        local: PeerId,
        now: Instant,
        config: LeaseConfig,
        restarted: bool,
        first_id: u64,
        devices: Vec<GpuDevice>,
        codec: &LeaseCodec,
    ) -> Self {
        let table =
            if restarted { LeaseTable::new(now, config) } else { LeaseTable::new_first_start(now, config) };
        Self {
            local,
            service: LeaseService::new(table.with_first_id(first_id), devices),
            malformed: codec.malformed.clone(),
        }
    }

    pub(crate) fn stats(&self) -> LeaseStats {
        LeaseStats { malformed: self.malformed.load(Ordering::Relaxed), ..self.service.stats() }
    }

    pub(crate) fn inbound_failed(&mut self) {
        self.service.inbound_failed();
    }

    pub(crate) fn set_devices(&mut self, devices: Vec<GpuDevice>) {
        self.service.set_devices(devices);
    }

    /// Answers `holder`'s request; the new advert when the leased GPUs changed.
    pub(crate) fn handle_request(
        &mut self,
        now: Instant,
        holder: PeerId,
        request: LeaseRequest,
    ) -> (LeaseResponse, Option<LeasedGpus>) {
        let response = self.service.handle(now, holder, request);
        self.log_events();
        (response, self.service.poll_advert())
    }

    /// Drops expired leases; the new advert when any expired.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Option<LeasedGpus> {
        self.service.handle_timeout(now);
        self.log_events();
        self.service.poll_advert()
    }

    fn log_events(&mut self) {
        while let Some(event) = self.service.poll_event() {
            match event {
                LeaseEvent::Granted(l) => {
                    tracing::debug!(holder = %l.holder, task = %l.task, lease = l.id.0, gpus = ?l.gpus, "lease granted");
                }
                LeaseEvent::Expired(l) => {
                    tracing::debug!(holder = %l.holder, task = %l.task, lease = l.id.0, "lease expired");
                }
                _ => {}
            }
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.service.poll_timeout()
    }

    pub(crate) fn leases(&self) -> Vec<Lease> {
        self.service.table().leases().cloned().collect()
    }

    pub(crate) fn local(&self) -> PeerId {
        self.local
    }
}
