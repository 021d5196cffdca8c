//! The tunnel's I/O (data-flow stage 3): one UDP socket per address family, read and written in batches with
//! quinn-udp (GRO and GSO where the kernel has them, plain `recvmmsg`/`sendmsg` where
//! not), feeding the sans-IO [`Tunnels`]. Owned by the node's driver task; it decides
//! nothing about the protocol.
//!
//! Peers come only from the cluster view: a tunnel key is added when a peer's record —
//! whose tunnel record was signature-checked against its `PeerId` — enters the view, and
//! removed when it expires. Tunnels open lazily on the first datagram, and eagerly to the
//! first `eager_tunnels` peers.

use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libp2p::PeerId;
use quinn_udp::{RecvMeta, UdpSocketState};
use swarm_core::identity::TunnelRecord;
use swarm_core::tunnel::{Payload, PeerHandle, Received, SendError, TunnelConfig, TunnelEvent, Tunnels};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::links::Links;
use crate::node::{Datagram, LinkReport, NodeEvent, TunnelStatus};
use swarm_core::link::{LinkConfig, SlaEvent, SlaPolicy};
use swarm_core::tunnel::FrameKind;

/// Datagrams read per system call, at most.
const BATCH: usize = 16;
/// Receive batches handled per turn of the driver loop.
const READS_PER_TURN: usize = 8;
/// Room for one received buffer: with GRO, several datagrams of one flow arrive as one.
const RX_BUF: usize = 64 * 1024;
/// The largest datagram the tunnel sends: an application datagram of `max_datagram`
/// bytes, its frame header, padding and WireGuard's overhead.
const TX_BUF: usize = 65_535;
/// Most bytes in one GSO send: a UDP datagram's payload limit (65 535 less the IPv6 and
/// UDP headers), rounded down.
const GSO_MAX_BYTES: usize = 64_000;
/// A swarm frame's header.
const FRAME_ROOM: usize = swarm_core::tunnel::frame::FRAME_HEADER_LEN;

/// Counters of the data plane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataPlaneStats {
    /// UDP datagrams received.
    pub udp_in: u64,
    /// UDP datagrams sent.
    pub udp_out: u64,
    /// Application datagrams delivered to the reader.
    pub datagrams_delivered: u64,
    /// Application datagrams dropped because the reader fell behind.
    pub datagrams_overflow: u64,
    /// Application datagrams for peers without a verified tunnel record.
    pub datagrams_unroutable: u64,
    /// Application datagrams refused by the tunnel (queue full, too large).
    pub datagrams_refused: u64,
    /// Socket errors other than a full buffer.
    pub socket_errors: u64,
    /// Receive buffer the kernel granted, bytes.
    pub recv_buffer: usize,
    /// Send buffer the kernel granted, bytes.
    pub send_buffer: usize,
    /// Largest GSO batch the socket supports (1: none).
    pub max_gso_segments: usize,
    /// Datagrams one GRO read can hold (1: none).
    pub gro_segments: usize,
}

/// One socket and quinn-udp's state for it.
struct Sock {
    socket: UdpSocket,
    state: UdpSocketState,
}

struct Known {
    handle: PeerHandle,
    key: [u8; 32],
    up: bool,
}

pub(crate) struct DataPlane {
    /// The IPv4 socket and the IPv6 socket (bound with `IPV6_V6ONLY`), where the node
    /// listens on that family.
    sockets: [Option<Sock>; 2],
    tunnels: Tunnels,
    peers: HashMap<PeerId, Known>,
    by_handle: HashMap<PeerHandle, PeerId>,
    rx: Vec<u8>,
    tx: Vec<u8>,
    inbox: mpsc::Sender<Datagram>,
    eager: usize,
    gso: bool,
    links: Links,
    sla_events: Vec<(PeerHandle, SlaEvent)>,
    pub(crate) stats: DataPlaneStats,
}

/// Sets the socket buffers to `want` bytes and says what the kernel granted.
fn size_buffers(state: &UdpSocketState, socket: &UdpSocket, want: usize) -> (usize, usize) {
    let _ = state.set_recv_buffer_size(socket.into(), want);
    let _ = state.set_send_buffer_size(socket.into(), want);
    let recv = state.recv_buffer_size(socket.into()).unwrap_or(0);
    let send = state.send_buffer_size(socket.into()).unwrap_or(0);
    // Linux reports twice what it accounts for the payload; compare like with like.
    if recv < want || send < want {
        tracing::warn!(
            wanted = want,
            recv,
            send,
            "the kernel granted smaller UDP buffers than asked: raise net.core.rmem_max and \
             net.core.wmem_max, or expect loss at high rates"
        );
    } else {
        tracing::info!(recv, send, "tunnel socket buffers");
    }
    (recv, send)
}

impl DataPlane {
    pub(crate) fn new(
        sockets: Vec<UdpSocket>,
        private_key: [u8; 32],
        config: TunnelConfig,
        buffer_bytes: usize,
        eager: usize,
        gso: bool,
        inbox: mpsc::Sender<Datagram>,
    ) -> io::Result<Self> {
        let mut slots: [Option<Sock>; 2] = [None, None];
        let (mut recv_buffer, mut send_buffer) = (usize::MAX, usize::MAX);
        let (mut max_gso_segments, mut gro_segments) = (usize::MAX, usize::MAX);
        for socket in sockets {
            let state = UdpSocketState::new((&socket).into())?;
            let (recv, send) = size_buffers(&state, &socket, buffer_bytes);
            recv_buffer = recv_buffer.min(recv);
            send_buffer = send_buffer.min(send);
            max_gso_segments = max_gso_segments.min(state.max_gso_segments());
            gro_segments = gro_segments.min(state.gro_segments());
            let family = usize::from(socket.local_addr()?.is_ipv6());
            slots[family] = Some(Sock { socket, state });
        }
        if slots.iter().all(Option::is_none) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no tunnel socket"));
        }
        let now = Instant::now();
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let tunnels = Tunnels::new(private_key, config, now, unix, rand::random());
        let stats = DataPlaneStats {
            recv_buffer,
            send_buffer,
            max_gso_segments,
            gro_segments,
            ..DataPlaneStats::default()
        };
        tracing::debug!(gso = stats.max_gso_segments, gro = stats.gro_segments, "tunnel socket offloads");
        Ok(Self {
            sockets: slots,
            tunnels,
            peers: HashMap::new(),
            by_handle: HashMap::new(),
            rx: vec![0; RX_BUF * BATCH],
            tx: vec![0; TX_BUF],
            inbox,
            eager,
            gso,
            links: Links::new(LinkConfig::default(), SlaPolicy::default()),
            sla_events: Vec::new(),
            stats,
        })
    }

    /// The bound address of each socket.
    pub(crate) fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets.iter().flatten().filter_map(|s| s.socket.local_addr().ok()).collect()
    }

    fn sock_for(&self, addr: &SocketAddr) -> Option<&Sock> {
        self.sockets[usize::from(addr.is_ipv6())].as_ref()
    }

    /// Waits until a socket has something to read; says which.
    pub(crate) async fn readable(&self) -> io::Result<usize> {
        match &self.sockets {
            [Some(v4), Some(v6)] => tokio::select! {
                r = v4.socket.readable() => r.map(|()| 0),
                r = v6.socket.readable() => r.map(|()| 1),
            },
            [Some(v4), None] => v4.socket.readable().await.map(|()| 0),
            [None, Some(v6)] => v6.socket.readable().await.map(|()| 1),
            [None, None] => std::future::pending().await,
        }
    }

    /// The endpoint of `record` to use: one of a family we have a socket for, IPv4
    /// first, loopback preferred when our socket of that family is on loopback.
    fn pick_endpoint(&self, record: &TunnelRecord) -> Option<SocketAddr> {
        let mut candidates: Vec<(bool, bool, SocketAddr)> = record
            .udp_endpoints
            .iter()
            .filter_map(|e| {
                let local = self.sock_for(e)?.socket.local_addr().ok()?;
                Some((e.is_ipv6(), e.ip().is_loopback() != local.ip().is_loopback(), *e))
            })
            .collect();
        candidates.sort();
        candidates.first().map(|c| c.2)
    }

    /// A peer's verified tunnel record entered the view or changed.
    pub(crate) fn peer_record(&mut self, now: Instant, peer: PeerId, record: &TunnelRecord) {
        let key = record.tunnel_pubkey.0;
        let endpoint = self.pick_endpoint(record);
        if let Some(known) = self.peers.get(&peer) {
            if known.key == key {
                // Keep a known endpoint (it may have roamed: authenticated packets know
                // better than a record); take the record's when there is none yet.
                let handle = known.handle;
                let has_endpoint = self.tunnels.status(handle, now).is_some_and(|s| s.endpoint.is_some());
                if let (false, Some(e)) = (has_endpoint, endpoint) {
                    self.tunnels.set_endpoint(handle, e);
                }
                return;
            }
            self.remove_peer(&peer);
        }
        let Ok(handle) = self.tunnels.add_peer(key, endpoint) else { return };
        self.peers.insert(peer, Known { handle, key, up: false });
        self.by_handle.insert(handle, peer);
        if self.peers.len() <= self.eager {
            self.tunnels.open(now, handle);
        }
    }

    /// A peer's record expired: its tunnel closes and its keys are erased.
    pub(crate) fn remove_peer(&mut self, peer: &PeerId) {
        if let Some(known) = self.peers.remove(peer) {
            self.links.down(known.handle);
            self.tunnels.remove_peer(known.handle);
            self.by_handle.remove(&known.handle);
        }
    }

    pub(crate) fn open(&mut self, now: Instant, peer: &PeerId) -> bool {
        let Some(known) = self.peers.get(peer) else { return false };
        self.tunnels.open(now, known.handle);
        true
    }

    /// Closes a tunnel: erases its sessions; the peer stays known, and the next datagram
    /// or `open` starts a new handshake.
    pub(crate) fn close(&mut self, peer: &PeerId) -> bool {
        let Some(known) = self.peers.remove(peer) else { return false };
        let endpoint = self.tunnels.status(known.handle, Instant::now()).and_then(|s| s.endpoint);
        self.links.down(known.handle);
        self.tunnels.remove_peer(known.handle);
        self.by_handle.remove(&known.handle);
        if let Ok(handle) = self.tunnels.add_peer(known.key, endpoint) {
            self.peers.insert(*peer, Known { handle, key: known.key, up: false });
            self.by_handle.insert(handle, *peer);
        }
        true
    }

    pub(crate) fn status(&self, now: Instant) -> Vec<TunnelStatus> {
        let mut out: Vec<TunnelStatus> = self
            .peers
            .iter()
            .filter_map(|(peer, known)| {
                let s = self.tunnels.status(known.handle, now)?;
                Some(TunnelStatus {
                    peer: *peer,
                    endpoint: s.endpoint,
                    established: s.established,
                    handshake_in_progress: s.handshake_in_progress,
                    last_handshake: s.last_handshake.map(|t| now.saturating_duration_since(t)),
                    handshakes: s.handshakes,
                    tx_bytes: s.tx_bytes,
                    rx_bytes: s.rx_bytes,
                    tx_packets: s.tx_packets,
                    rx_packets: s.rx_packets,
                    queued: s.queued,
                    drops: s.drops.nonzero().map(|(r, n)| (r.as_str(), n)).collect(),
                })
            })
            .collect();
        out.sort_by_key(|s| s.peer);
        out
    }

    /// Drops by reason over the whole data plane.
    pub(crate) fn drops(&self) -> Vec<(&'static str, u64)> {
        self.tunnels.drops().nonzero().map(|(r, n)| (r.as_str(), n)).collect()
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        [self.tunnels.poll_timeout(), self.links.poll_timeout()].into_iter().flatten().min()
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.tunnels.handle_timeout(now);
        let events = self.links.handle_timeout(now, &self.tunnels);
        self.sla_events.extend(events);
    }

    /// Summaries for gossip of `reports` (from [`Self::link_reports`]), freshest first,
    /// at most `MAX_LINKS`.
    pub(crate) fn link_summaries(
        &self,
        now: Instant,
        reports: &[LinkReport],
    ) -> Vec<swarm_core::link::summary::LinkSummary> {
        use swarm_core::link::summary::{degraded, LinkSummary, MAX_LINKS};
        use swarm_core::link::{Metric, SlaState};
        let us = |d: Duration| u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
        let mut out: Vec<(Duration, LinkSummary)> = reports
            .iter()
            .filter_map(|r| {
                let handle = self.peers.get(&r.peer)?.handle;
                let status = self.tunnels.status(handle, now)?;
                let q = r.stats.short.rtt?;
                let jitter =
                    [r.stats.jitter_in, r.stats.jitter_out].into_iter().flatten().max().unwrap_or_default();
                let loss = r.stats.short.loss_in.filter(|l| l.samples >= 1000);
                let mut bits = 0u8;
                for v in &r.sla {
                    if v.state == SlaState::Degraded {
                        bits |= match v.metric {
                            Metric::Latency => degraded::LATENCY,
                            Metric::Jitter => degraded::JITTER,
                            Metric::Loss => degraded::LOSS,
                            Metric::Throughput => degraded::THROUGHPUT,
                        };
                    }
                }
                let age = r.stats.age.unwrap_or_default();
                let kbps = |b: Option<f64>| b.map_or(0, |b| (b / 1e3) as u32);
                Some((
                    age,
                    LinkSummary {
                        peer: r.peer,
                        rtt_p50_us: us(q.p50),
                        rtt_p99_us: us(q.p99),
                        rtt_samples: u32::try_from(q.samples).unwrap_or(u32::MAX),
                        jitter_us: us(jitter),
                        loss_ppm: loss.map(|l| (l.value * 1e6) as u32),
                        loss_packets: loss.map_or(0, |l| u32::try_from(l.samples).unwrap_or(u32::MAX)),
                        rx_kbps: kbps(r.stats.short.rx_bps),
                        tx_kbps: kbps(r.stats.short.tx_bps),
                        capacity_kbps: r.stats.throughput.map(|(bps, _)| (bps / 1e3) as u32),
                        handshake_age_s: status.last_handshake.map_or(u32::MAX, |t| {
                            u32::try_from(now.saturating_duration_since(t).as_secs()).unwrap_or(u32::MAX)
                        }),
                        age_ms: u32::try_from(age.as_millis()).unwrap_or(u32::MAX),
                        degraded: bits,
                    },
                ))
            })
            .collect();
        out.sort_by_key(|(age, _)| *age);
        out.truncate(MAX_LINKS);
        out.into_iter().map(|(_, s)| s).collect()
    }

    /// Starts a throughput test to `peer`.
    pub(crate) fn measure_throughput(
        &mut self,
        now: Instant,
        peer: &PeerId,
        reply: tokio::sync::oneshot::Sender<Result<f64, crate::node::NodeError>>,
    ) {
        match self.peers.get(peer) {
            Some(known) => self.links.measure(now, known.handle, reply),
            None => {
                let _ = reply.send(Err(crate::node::NodeError::NoTunnel(*peer)));
            }
        }
    }

    /// Measurements and SLA verdicts of every measured link.
    pub(crate) fn link_reports(&mut self, now: Instant) -> Vec<LinkReport> {
        let mut out: Vec<LinkReport> = self
            .peers
            .iter()
            .filter_map(|(peer, known)| {
                let (stats, sla) = self.links.report(now, known.handle)?;
                Some(LinkReport { peer: *peer, stats, sla })
            })
            .collect();
        out.sort_by_key(|r| r.peer);
        out
    }

    /// Reads what the socket holds, in batches, and feeds the tunnels; stops after
    /// `READS_PER_TURN` batches so that a flood cannot starve the rest of the node (the
    /// driver comes back at once while the socket stays readable).
    pub(crate) fn handle_readable(&mut self, family: usize) {
        for _ in 0..READS_PER_TURN {
            let mut meta = [RecvMeta::default(); BATCH];
            let n = {
                let Some(sock) = self.sockets.get(family).and_then(Option::as_ref) else { return };
                let mut chunks = self.rx.chunks_mut(RX_BUF);
                let mut bufs: [IoSliceMut<'_>; BATCH] =
                    std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
                let state = &sock.state;
                match sock
                    .socket
                    .try_io(Interest::READABLE, || state.recv((&sock.socket).into(), &mut bufs, &mut meta))
                {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) => {
                        self.stats.socket_errors += 1;
                        tracing::debug!(error = %e, "tunnel socket receive failed");
                        return;
                    }
                }
            };
            let now = Instant::now();
            for (i, m) in meta.iter().enumerate().take(n) {
                let stride = m.stride.max(1);
                let base = i * RX_BUF;
                let mut at = 0;
                while at < m.len {
                    let end = (at + stride).min(m.len);
                    self.handle_one(now, m.addr, base + at, base + end);
                    at = end;
                }
            }
        }
    }

    fn handle_one(&mut self, now: Instant, src: SocketAddr, start: usize, end: usize) {
        self.stats.udp_in += 1;
        let datagram = &mut self.rx[start..end];
        let (peer, body) = match self.tunnels.handle_datagram(now, src, datagram) {
            Ok(Received::Data { peer, payload: Payload::Frame { kind, body } }) => match kind {
                FrameKind::DATAGRAM => (peer, body.to_vec()),
                FrameKind::PROBE => return self.links.on_probe(now, peer, body),
                FrameKind::PROBE_REPLY => return self.links.on_reply(now, peer, body),
                FrameKind::TRAIN => return self.links.on_train(now, peer, body),
                FrameKind::TRAIN_REPORT => return self.links.on_train_report(now, peer, body),
                _ => return,
            },
            // IP packets (from stock WireGuard peers) and keepalives: nothing for the
            // application.
            _ => return,
        };
        let Some(peer) = self.by_handle.get(&peer).copied() else { return };
        match self.inbox.try_send(Datagram { peer, data: body }) {
            Ok(()) => self.stats.datagrams_delivered += 1,
            Err(_) => self.stats.datagrams_overflow += 1,
        }
    }

    /// Seals and sends application datagrams. Consecutive datagrams of one size to one
    /// endpoint leave in one GSO send (one system call for up to 64 KiB) where the
    /// kernel supports it.
    pub(crate) async fn send_datagrams(&mut self, batch: &mut Vec<(PeerId, Vec<u8>)>) {
        let now = Instant::now();
        let max_segments = if self.gso { self.stats.max_gso_segments.max(1) } else { 1 };
        // The batch so far: tx[..filled], `segments` datagrams of `segment` bytes.
        let (mut filled, mut segments, mut segment) = (0usize, 0usize, 0usize);
        let mut destination: Option<SocketAddr> = None;
        for (peer, data) in batch.drain(..) {
            let Some(known) = self.peers.get(&peer) else {
                self.stats.datagrams_unroutable += 1;
                continue;
            };
            let handle = known.handle;
            let room = data.len() + swarm_core::tunnel::OVERHEAD + FRAME_ROOM;
            if segments > 0 && filled + room > GSO_MAX_BYTES {
                if let Some(d) = destination.take() {
                    self.send(d, filled, segment, segments).await;
                }
                (filled, segments) = (0, 0);
            }
            let t = match self.tunnels.send_datagram(now, handle, &data, &mut self.tx[filled..]) {
                Ok(Some(t)) => t,
                Ok(None) => continue,
                Err(SendError::NoEndpoint | SendError::UnknownPeer) => {
                    self.stats.datagrams_unroutable += 1;
                    continue;
                }
                Err(_) => {
                    self.stats.datagrams_refused += 1;
                    continue;
                }
            };
            let joins = destination == Some(t.destination) && t.len <= segment && segments < max_segments;
            if segments > 0 && !joins {
                // Send the batch, then move this datagram to the front.
                if let Some(d) = destination {
                    self.send(d, filled, segment, segments).await;
                }
                self.tx.copy_within(filled..filled + t.len, 0);
                (filled, segments) = (0, 0);
            }
            if segments == 0 {
                destination = Some(t.destination);
                segment = t.len;
            }
            filled += t.len;
            segments += 1;
            if t.len < segment {
                // A shorter datagram must be the last of its batch.
                if let Some(d) = destination.take() {
                    self.send(d, filled, segment, segments).await;
                }
                (filled, segments) = (0, 0);
            }
        }
        if let (Some(d), true) = (destination, segments > 0) {
            self.send(d, filled, segment, segments).await;
        }
    }

    /// Sends whatever the tunnels have queued (handshakes, keepalives, payloads that
    /// waited) and turns their events into node events.
    pub(crate) async fn flush(&mut self, events: &mut Vec<NodeEvent>) {
        let now = Instant::now();
        while let Some(t) = self.tunnels.poll_transmit(now, &mut self.tx) {
            self.send(t.destination, t.len, t.len, 1).await;
        }
        for f in self.links.take_pending() {
            if let Ok(Some(t)) = self.tunnels.send_frame(now, f.peer, f.kind, &f.body[..f.len], &mut self.tx)
            {
                self.send(t.destination, t.len, t.len, 1).await;
            }
        }
        for (peer, body) in self.links.take_trains() {
            if let Ok(Some(t)) = self.tunnels.send_frame(now, peer, FrameKind::TRAIN, &body, &mut self.tx) {
                self.send(t.destination, t.len, t.len, 1).await;
            }
        }
        while let Some(event) = self.tunnels.poll_event() {
            self.translate(now, event, events);
        }
        for (handle, e) in std::mem::take(&mut self.sla_events) {
            let Some(peer) = self.by_handle.get(&handle).copied() else { continue };
            events.push(match e {
                SlaEvent::Degraded { metric, value, target } => {
                    NodeEvent::LinkDegraded { peer, metric: metric.as_str(), value, target }
                }
                SlaEvent::Recovered { metric, value, target } => {
                    NodeEvent::LinkRecovered { peer, metric: metric.as_str(), value, target }
                }
            });
        }
    }

    fn translate(&mut self, now: Instant, event: TunnelEvent, events: &mut Vec<NodeEvent>) {
        let handle = match event {
            TunnelEvent::HandshakeCompleted { peer, .. }
            | TunnelEvent::HandshakeTimedOut { peer }
            | TunnelEvent::EndpointChanged { peer, .. }
            | TunnelEvent::KeysZeroed { peer } => peer,
            _ => return,
        };
        let Some(peer) = self.by_handle.get(&handle).copied() else { return };
        let Some(known) = self.peers.get_mut(&peer) else { return };
        match event {
            TunnelEvent::HandshakeCompleted { .. } => self.links.up(now, handle),
            TunnelEvent::HandshakeTimedOut { .. } | TunnelEvent::KeysZeroed { .. } => self.links.down(handle),
            _ => {}
        }
        match event {
            TunnelEvent::HandshakeCompleted { .. } if !known.up => {
                known.up = true;
                let endpoint = self.tunnels.status(handle, now).and_then(|s| s.endpoint);
                events.push(NodeEvent::TunnelUp { peer, endpoint });
            }
            TunnelEvent::HandshakeTimedOut { .. } => {
                known.up = false;
                events.push(NodeEvent::TunnelDown { peer, reason: "handshake timed out" });
            }
            TunnelEvent::KeysZeroed { .. } => {
                known.up = false;
                events.push(NodeEvent::TunnelDown { peer, reason: "idle: keys erased" });
            }
            TunnelEvent::EndpointChanged { endpoint, .. } => {
                events.push(NodeEvent::TunnelEndpointChanged { peer, endpoint });
            }
            _ => {}
        }
    }

    /// Sends `tx[..len]`: `segments` datagrams of `segment` bytes (the last may be
    /// shorter), waiting for room in the socket buffer rather than dropping.
    async fn send(&mut self, destination: SocketAddr, len: usize, segment: usize, segments: usize) {
        let transmit = quinn_udp::Transmit {
            destination,
            ecn: None,
            contents: &self.tx[..len],
            segment_size: (segments > 1).then_some(segment),
            src_ip: None,
        };
        let Some(sock) = self.sockets[usize::from(destination.is_ipv6())].as_ref() else {
            self.stats.socket_errors += 1;
            return;
        };
        loop {
            let (state, socket) = (&sock.state, &sock.socket);
            match socket.try_io(Interest::WRITABLE, || state.send(socket.into(), &transmit)) {
                Ok(()) => {
                    self.stats.udp_out += segments as u64;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if tokio::time::timeout(Duration::from_secs(1), socket.writable()).await.is_err() {
                        self.stats.socket_errors += 1;
                        return;
                    }
                }
                Err(e) => {
                    self.stats.socket_errors += 1;
                    tracing::debug!(error = %e, %destination, "tunnel send failed");
                    return;
                }
            }
        }
    }
}
