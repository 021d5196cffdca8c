//! Tunnels relayed through a member (issue 13, part 4): where no hole can be punched,
//! a peer's WireGuard datagrams go over libp2p streams (`/swarm/tunnel-relay/1`)
//! through a public member both ends are connected to. The wire (headers, answers,
//! frames) and the relay's limits are [`swarm_core::nat::relay`]'s; this module does
//! the I/O:
//!
//! - [`serve`]: every node accepts the protocol. A `Connect` makes it the relay (only
//!   while its relay gate is open, only between members, within a [`RelayBook`]): it
//!   opens a stream to the named peer, passes the answer back, then copies bytes both
//!   ways and counts them. A `From` offers this node a path to a member, handed to the
//!   driver as a [`PathEvent`].
//! - [`open`]: the opener's side, run as a task by the driver.
//! - [`attach`]: a path's two pumps between its stream and the data plane. Datagrams to
//!   the peer wait in a bounded queue that drops the newest when full (counted as the
//!   data plane's `relay_dropped`, so the link's loss sees them); datagrams from the
//!   peer wait in the data plane's bounded inbox (the pump, not the data plane, waits).
//!
//! Detours (issue 16, part 1) take the same streams with a `detour` header: any member
//! relays them while it serves relays at all (relay mode `auto` or `on`, public or not),
//! within the same book, and the far end gets them as [`PathKind::DetourIn`].
//!
//! Nothing here blocks the driver: it only ever `try_send`s.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::Control;
use swarm_core::nat::relay::{
    frame_header, frame_len, RelayAnswer, RelayBook, RelayHeader, RelayLimits, MAX_HEADER_LEN,
};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use crate::behaviour::RelayGate;

/// The protocol of relayed tunnels.
pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new("/swarm/tunnel-relay/1");

/// How long a header, an answer or opening a stream may take.
const STEP: Duration = Duration::from_secs(5);
/// Streams whose header is still being read, at most (more are dropped at once).
const MAX_PENDING: usize = 64;
/// Datagrams waiting to go out on one path, at most (drop-tail beyond).
pub(crate) const PATH_QUEUE: usize = 512;
/// Bytes copied per read on a relay.
const COPY_BUF: usize = 16 * 1024;

/// What this node relayed for others' tunnels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayStats {
    /// Bytes relayed paths brought to this node (frames included), both ways.
    pub bytes_in: u64,
    /// Bytes this node passed on, both ways; short of `bytes_in` only by what was
    /// in flight when a path closed.
    pub bytes_out: u64,
    /// Paths relayed now.
    pub open: u64,
    /// Paths accepted, ever.
    pub accepted: u64,
    /// Paths refused: not members, relay closed, limits, unreachable peer, bad header.
    pub refused: u64,
}

/// What a relay carried, shared with its tasks.
#[derive(Debug, Default)]
pub(crate) struct RelayCounters {
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    /// Paths relayed now.
    pub(crate) open: AtomicU64,
    /// Paths accepted, ever.
    pub(crate) accepted: AtomicU64,
    /// Paths refused: not members, relay closed, limits, unreachable peer, bad header.
    pub(crate) refused: AtomicU64,
}

impl RelayCounters {
    pub(crate) fn snapshot(&self) -> RelayStats {
        RelayStats {
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            open: self.open.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

/// What a relayed path is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathKind {
    /// The tunnel's way to a peer no hole could be punched to (ours or offered).
    Fallback,
    /// Our detour around a breached direct path: carries our data to the peer.
    DetourOut,
    /// The peer's detour to us: an extra way in.
    DetourIn,
}

/// A relayed path came up or failed, for the driver.
#[derive(Debug)]
pub(crate) enum PathEvent {
    /// A stream to `peer` through `via`, past its header and answer.
    Opened { peer: PeerId, via: PeerId, stream: Stream, kind: PathKind },
    /// Our attempt to reach `peer` through `via` failed.
    Failed { peer: PeerId, via: PeerId, why: String, detour: bool },
}

/// What a path's reading pump hands the data plane.
#[derive(Debug)]
pub(crate) enum RelayIn {
    /// A datagram from the path named `addr` (a relay endpoint).
    Datagram { addr: SocketAddr, data: Vec<u8> },
    /// The path's stream ended.
    Closed { addr: SocketAddr },
}

/// Accepts the protocol for the node's lifetime: relays for members while `gate` is
/// open, and reports paths offered to this node on `events`. Each incoming stream's task
/// belongs to this one (a `JoinSet`, reaped as they end): when the node stops and this
/// task is aborted, the relays it runs go with it. Detached, a relay whose streams'
/// connections had closed with the node outlived it (seen: tasks still alive 60 s after
/// an 8-node mesh's shutdown, `docs/self-healing.md`).
pub(crate) async fn serve(
    mut control: Control,
    gate: Arc<RelayGate>,
    counters: Arc<RelayCounters>,
    events: mpsc::Sender<PathEvent>,
) {
    let Ok(mut incoming) = control.accept(PROTOCOL) else {
        tracing::error!("the tunnel relay protocol is already accepted elsewhere");
        return;
    };
    let book = Arc::new(Mutex::new(RelayBook::new(RelayLimits::default())));
    let pending = Arc::new(Semaphore::new(MAX_PENDING));
    let mut relays = JoinSet::new();
    loop {
        let (from, stream) = tokio::select! {
            next = incoming.next() => match next {
                Some(next) => next,
                None => break,
            },
            Some(_) = relays.join_next() => continue,
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let relay = Relay {
            control: control.clone(),
            gate: gate.clone(),
            counters: counters.clone(),
            book: book.clone(),
        };
        let events = events.clone();
        relays.spawn(async move {
            relay.incoming(from, stream, permit, events).await;
        });
    }
}

/// What one incoming stream's task needs.
struct Relay {
    control: Control,
    gate: Arc<RelayGate>,
    counters: Arc<RelayCounters>,
    book: Arc<Mutex<RelayBook<PeerId>>>,
}

impl Relay {
    async fn incoming(
        mut self,
        from: PeerId,
        mut stream: Stream,
        permit: tokio::sync::OwnedSemaphorePermit,
        events: mpsc::Sender<PathEvent>,
    ) {
        let header = match tokio::time::timeout(STEP, read_header(&mut stream)).await {
            Ok(Ok(h)) => h,
            _ => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                let _ = answer(&mut stream, RelayAnswer::Malformed).await;
                return;
            }
        };
        match header {
            RelayHeader::From { from: peer, detour } => {
                drop(permit);
                // Offered a path to `peer` through `from`: a member's, or nothing.
                let ok = self.gate.is_member(&peer) && self.gate.is_member(&from);
                let a = if ok { RelayAnswer::Ok } else { RelayAnswer::NotMember };
                if answer(&mut stream, a).await.is_ok() && ok {
                    let kind = if detour { PathKind::DetourIn } else { PathKind::Fallback };
                    let _ = events.send(PathEvent::Opened { peer, via: from, stream, kind }).await;
                }
            }
            RelayHeader::Connect { to, detour } => {
                let outcome = self.connect(from, to, detour, &mut stream).await;
                drop(permit);
                match outcome {
                    Ok(other) => self.copy(from, stream, other).await,
                    Err(a) => {
                        self.counters.refused.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%from, %to, why = %a, "relayed path refused");
                        let _ = answer(&mut stream, a).await;
                    }
                }
            }
        }
    }

    /// Checks a `Connect` from `from` to `to` and opens the stream to `to`; on success
    /// the opener has its answer and a place in the book.
    async fn connect(
        &mut self,
        from: PeerId,
        to: PeerId,
        detour: bool,
        stream: &mut Stream,
    ) -> Result<Stream, RelayAnswer> {
        let admits = |p: &PeerId| {
            if detour {
                self.gate.detours.load(Ordering::Relaxed) && self.gate.is_member(p)
            } else {
                self.gate.admits(p)
            }
        };
        if from == to || !admits(&from) || !admits(&to) {
            return Err(RelayAnswer::NotMember);
        }
        if !self.book.lock().map(|mut b| b.admit(from)).unwrap_or(false) {
            return Err(RelayAnswer::Busy);
        }
        let reached = async {
            let mut other =
                self.control.open_stream(to, PROTOCOL).await.map_err(|_| RelayAnswer::Unreachable)?;
            other
                .write_all(&RelayHeader::From { from, detour }.encode())
                .await
                .map_err(|_| RelayAnswer::Unreachable)?;
            other.flush().await.map_err(|_| RelayAnswer::Unreachable)?;
            let mut a = [0u8; 1];
            other.read_exact(&mut a).await.map_err(|_| RelayAnswer::Unreachable)?;
            match RelayAnswer::from_byte(a[0]) {
                RelayAnswer::Ok => Ok(other),
                refused => Err(refused),
            }
        };
        let result = match tokio::time::timeout(STEP, reached).await {
            Ok(Ok(other)) => match answer(stream, RelayAnswer::Ok).await {
                Ok(()) => return Ok(other),
                Err(_) => Err(RelayAnswer::Unreachable),
            },
            Ok(Err(a)) => Err(a),
            Err(_) => Err(RelayAnswer::Unreachable),
        };
        if let Ok(mut b) = self.book.lock() {
            b.release(from);
        }
        result
    }

    /// Copies bytes both ways until either side ends, counting them.
    async fn copy(self, opener: PeerId, a: Stream, b: Stream) {
        self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        self.counters.open.fetch_add(1, Ordering::Relaxed);
        let (ar, aw) = a.split();
        let (br, bw) = b.split();
        let there = pump_bytes(ar, bw, &self.counters);
        let back = pump_bytes(br, aw, &self.counters);
        futures::pin_mut!(there, back);
        futures::future::select(there, back).await;
        self.counters.open.fetch_sub(1, Ordering::Relaxed);
        if let Ok(mut b) = self.book.lock() {
            b.release(opener);
        }
    }
}

async fn pump_bytes(
    mut from: impl futures::AsyncRead + Unpin,
    mut to: impl futures::AsyncWrite + Unpin,
    count: &RelayCounters,
) {
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        count.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        if to.write_all(&buf[..n]).await.is_err() || to.flush().await.is_err() {
            break;
        }
        count.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }
    let _ = to.close().await;
}

async fn read_header(stream: &mut Stream) -> Result<RelayHeader, ()> {
    let mut buf = [0u8; MAX_HEADER_LEN];
    stream.read_exact(&mut buf[..3]).await.map_err(|_| ())?;
    let len = RelayHeader::len_from_prefix([buf[0], buf[1], buf[2]]).map_err(|_| ())?;
    stream.read_exact(&mut buf[3..len]).await.map_err(|_| ())?;
    RelayHeader::parse(&buf[..len]).map_err(|_| ())
}

async fn answer(stream: &mut Stream, a: RelayAnswer) -> std::io::Result<()> {
    stream.write_all(&[a.to_byte()]).await?;
    stream.flush().await
}

/// Opens a path to `peer` through `via` (a detour, or a fallback path); its outcome
/// comes on `events`.
pub(crate) async fn open(
    mut control: Control,
    peer: PeerId,
    via: PeerId,
    detour: bool,
    events: mpsc::Sender<PathEvent>,
) {
    let attempt = async {
        let mut stream = control.open_stream(via, PROTOCOL).await.map_err(|e| e.to_string())?;
        let header = RelayHeader::Connect { to: peer, detour };
        stream.write_all(&header.encode()).await.map_err(|e| e.to_string())?;
        stream.flush().await.map_err(|e| e.to_string())?;
        let mut a = [0u8; 1];
        stream.read_exact(&mut a).await.map_err(|e| e.to_string())?;
        match RelayAnswer::from_byte(a[0]) {
            RelayAnswer::Ok => Ok(stream),
            refused => Err(refused.to_string()),
        }
    };
    // The relay takes up to a step to reach the peer, after our own step.
    let kind = if detour { PathKind::DetourOut } else { PathKind::Fallback };
    let event = match tokio::time::timeout(STEP * 2, attempt).await {
        Ok(Ok(stream)) => PathEvent::Opened { peer, via, stream, kind },
        Ok(Err(why)) => PathEvent::Failed { peer, via, why, detour },
        Err(_) => PathEvent::Failed { peer, via, why: "timed out".into(), detour },
    };
    let _ = events.send(event).await;
}

/// A path's pumps; dropping it stops both (and closes the stream).
#[derive(Debug)]
pub(crate) struct Pumps {
    out: mpsc::Sender<Vec<u8>>,
    tasks: [JoinHandle<()>; 2],
}

impl Pumps {
    /// Queues a datagram for the peer; false when the queue is full (dropped).
    pub(crate) fn send(&self, datagram: &[u8]) -> bool {
        self.out.try_send(datagram.to_vec()).is_ok()
    }
}

impl Drop for Pumps {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts the pumps of a path named `addr`: datagrams framed onto the stream from a
/// bounded queue, and frames off the stream into `inbox`.
pub(crate) fn attach(stream: Stream, addr: SocketAddr, inbox: mpsc::Sender<RelayIn>) -> Pumps {
    let (mut reader, mut writer) = stream.split();
    let (out, mut queue) = mpsc::channel::<Vec<u8>>(PATH_QUEUE);
    let write = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(64);
        let mut buf = Vec::with_capacity(64 * 1024);
        while queue.recv_many(&mut batch, 64).await > 0 {
            buf.clear();
            for d in batch.drain(..) {
                if let Some(h) = frame_header(d.len()) {
                    buf.extend_from_slice(&h);
                    buf.extend_from_slice(&d);
                }
            }
            if writer.write_all(&buf).await.is_err() || writer.flush().await.is_err() {
                break;
            }
        }
        let _ = writer.close().await;
    });
    let read = tokio::spawn(async move {
        loop {
            let mut h = [0u8; 2];
            if reader.read_exact(&mut h).await.is_err() {
                break;
            }
            let Some(len) = frame_len(h) else { break };
            let mut data = vec![0u8; len];
            if reader.read_exact(&mut data).await.is_err() {
                break;
            }
            if inbox.send(RelayIn::Datagram { addr, data }).await.is_err() {
                return;
            }
        }
        let _ = inbox.send(RelayIn::Closed { addr }).await;
    });
    Pumps { out, tasks: [write, read] }
}
