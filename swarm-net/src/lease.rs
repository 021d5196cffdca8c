//! The lease protocol on a node (`/swarm/lease/1`, libp2p request-response): the codec,
//! and the node's [`LeaseTable`] answering requests from peers and from itself. The table
//! is the sole authority over this node's GPUs; what it holds is advertised in the record
//! ([`LeasedGpus`]) so submitters rank by what is really free.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::{PeerId, StreamProtocol};
use swarm_core::bounded::{BoundedString, BoundedVec};
use swarm_core::gpu::GpuDevice;
use swarm_core::place::wire::{GpuDemand, LeaseRequest, LeaseResponse, MAX_LEASE_MESSAGE};
use swarm_core::place::{Lease, LeaseConfig, LeaseError, LeaseId, LeaseTable, LeasedGpus, ScoreWeights};
use tokio::sync::oneshot;

use crate::node::NodeError;

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

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    io.read_exact(&mut len).await?;
    let len = usize::from(u16::from_be_bytes(len));
    if len > MAX_LEASE_MESSAGE {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "lease message too large"));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    let len = u16::try_from(bytes.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(bytes).await?;
    io.close().await
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
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

/// Counters of the lease service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseStats {
    /// Reservations granted.
    pub granted: u64,
    /// Reservations refused.
    pub refused: u64,
    /// Renewals granted.
    pub renewed: u64,
    /// Leases released by their holder.
    pub released: u64,
    /// Leases that expired unrenewed.
    pub expired: u64,
    /// Renewals or releases of unknown leases, or of someone else's.
    pub failed: u64,
    /// Inbound requests that did not decode (cut short, oversized, malformed): dropped
    /// unanswered.
    pub malformed: u64,
    /// Inbound requests whose answer could not be sent (timeouts, closed streams).
    pub inbound_failures: u64,
}

pub(crate) type LeaseWaiter = oneshot::Sender<Result<LeaseResponse, NodeError>>;

/// This node's side of the protocol.
pub(crate) struct Leases {
    local: PeerId,
    table: LeaseTable,
    devices: Vec<GpuDevice>,
    waiting: HashMap<OutboundRequestId, (PeerId, LeaseWaiter)>,
    stats: LeaseStats,
    malformed: Arc<AtomicU64>,
}

fn text<const N: usize>(s: &str) -> BoundedString<N> {
    let cut: String = s.chars().take(N).collect();
    BoundedString::try_new(&cut).unwrap_or_default()
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

impl Leases {
    /// `restarted`: whether this node may have granted leases in an earlier run (it then
    /// waits out `config.restart_grace` before granting new ones).
    pub(crate) fn new(
        local: PeerId,
        now: Instant,
        config: LeaseConfig,
        restarted: bool,
        devices: Vec<GpuDevice>,
        codec: &LeaseCodec,
    ) -> Self {
        let table =
            if restarted { LeaseTable::new(now, config) } else { LeaseTable::new_first_start(now, config) };
        // Lease numbers start at this run's start time (ms << 16), above any number an
        // earlier run of this node handed out unless it granted 65 536 leases a ms.
        let table = table.with_first_id(crate::driver::wall_clock().0 << 16);
        Self {
            local,
            table,
            devices,
            waiting: HashMap::new(),
            stats: LeaseStats::default(),
            malformed: codec.malformed.clone(),
        }
    }

    pub(crate) fn stats(&self) -> LeaseStats {
        LeaseStats { malformed: self.malformed.load(Ordering::Relaxed), ..self.stats }
    }

    pub(crate) fn inbound_failed(&mut self) {
        self.stats.inbound_failures += 1;
    }

    pub(crate) fn set_devices(&mut self, devices: Vec<GpuDevice>) {
        self.devices = devices;
    }

    /// Answers `holder`'s request. The second value: whether the leased GPUs changed.
    pub(crate) fn handle_request(
        &mut self,
        now: Instant,
        holder: PeerId,
        request: LeaseRequest,
    ) -> (LeaseResponse, bool) {
        self.expire(now);
        match request {
            LeaseRequest::Reserve { task, demand, ttl_ms } => {
                self.reserve(now, holder, &task, &demand, ttl_ms)
            }
            LeaseRequest::Renew { lease, ttl_ms } => (self.renew(now, holder, lease, ttl_ms), false),
            LeaseRequest::Release { lease } => match self.table.release(now, LeaseId(lease), &holder) {
                Ok(()) => {
                    self.stats.released += 1;
                    (LeaseResponse::Released, true)
                }
                Err(e) => self.failed(&e),
            },
        }
    }

    fn reserve(
        &mut self,
        now: Instant,
        holder: PeerId,
        task: &str,
        demand: &GpuDemand,
        ttl_ms: u32,
    ) -> (LeaseResponse, bool) {
        // A GPU busy with work outside the swarm is not offered (as submitters judge it:
        // `ScoreWeights::busy_pct`).
        let busy = ScoreWeights::default().busy_pct;
        let eligible: Vec<u32> = self
            .devices
            .iter()
            .filter(|d| demand.fits(d) && d.utilization_pct <= busy)
            .map(|d| d.index)
            .collect();
        let ttl = Duration::from_millis(u64::from(ttl_ms));
        match self.table.reserve(now, holder, task, &eligible, u32::from(demand.count), ttl) {
            Ok(lease) => {
                self.stats.granted += 1;
                tracing::debug!(%holder, task, lease = lease.id.0, gpus = ?lease.gpus, "lease granted");
                let gpus = BoundedVec::try_from_vec(lease.gpus).unwrap_or_default();
                (LeaseResponse::Granted { lease: lease.id.0, gpus, expires_in_ms: ttl_ms }, true)
            }
            Err(refusal) => {
                self.stats.refused += 1;
                let held: Vec<u32> = self.table.held().collect();
                let free_now = eligible.iter().filter(|g| !held.contains(g)).count() as u32;
                (LeaseResponse::Rejected { reason: text(&refusal.to_string()), free_now }, false)
            }
        }
    }

    fn renew(&mut self, now: Instant, holder: PeerId, lease: u64, ttl_ms: u32) -> LeaseResponse {
        let ttl = Duration::from_millis(u64::from(ttl_ms));
        match self.table.renew(now, LeaseId(lease), &holder, ttl) {
            Ok(expires) => {
                self.stats.renewed += 1;
                LeaseResponse::Renewed { expires_in_ms: millis(expires.saturating_duration_since(now)) }
            }
            Err(e) => self.failed(&e).0,
        }
    }

    fn failed(&mut self, e: &LeaseError) -> (LeaseResponse, bool) {
        self.stats.failed += 1;
        (LeaseResponse::Failed { reason: text(&e.to_string()) }, false)
    }

    /// Drops expired leases; whether any expired.
    pub(crate) fn expire(&mut self, now: Instant) -> bool {
        let gone = self.table.expire(now);
        self.stats.expired += gone.len() as u64;
        for lease in &gone {
            tracing::debug!(holder = %lease.holder, task = %lease.task, lease = lease.id.0, "lease expired");
        }
        !gone.is_empty()
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.table.poll_timeout()
    }

    /// What the record advertises.
    pub(crate) fn advert(&self) -> LeasedGpus {
        let mut gpus: Vec<u32> = self.table.held().collect();
        gpus.sort_unstable();
        gpus.truncate(swarm_core::place::wire::MAX_LEASE_GPUS);
        LeasedGpus {
            gpus: BoundedVec::try_from_vec(gpus).unwrap_or_default(),
            leases: self.table.leases().count() as u32,
        }
    }

    pub(crate) fn leases(&self) -> Vec<Lease> {
        self.table.leases().cloned().collect()
    }

    pub(crate) fn local(&self) -> PeerId {
        self.local
    }

    pub(crate) fn wait(&mut self, id: OutboundRequestId, peer: PeerId, reply: LeaseWaiter) {
        self.waiting.insert(id, (peer, reply));
    }

    pub(crate) fn answer(&mut self, id: OutboundRequestId, answer: Result<LeaseResponse, String>) {
        if let Some((peer, reply)) = self.waiting.remove(&id) {
            let _ = reply.send(answer.map_err(|detail| NodeError::Lease { peer, detail }));
        }
    }
}
