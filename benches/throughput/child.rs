//! The two ends of each measurement. A receiver prints `READY <address>` once it can be
//! reached, counts what arrives until 1.5 s of silence, and prints one JSON line; a
//! sender sends for the set time and prints one JSON line.

use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use serde_json::json;
use swarm::NodeBuilder;
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::env_or;

/// Silence that ends a receiver's count.
const QUIET: Duration = Duration::from_millis(1500);
/// A receiver gives up after this long without a first datagram.
const FIRST_WAIT: Duration = Duration::from_secs(60);

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces), from field 3 (state) on:
    // utime is field 14 and stime field 15, in clock ticks of 1/100 s.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (field(14) + field(15)) / 100.0
}

struct Meter {
    first: Option<Instant>,
    last: Instant,
    datagrams: u64,
    bytes: u64,
    cpu0: f64,
}

impl Meter {
    fn new() -> Self {
        Self { first: None, last: Instant::now(), datagrams: 0, bytes: 0, cpu0: cpu_seconds() }
    }
    fn add(&mut self, datagrams: u64, bytes: u64) {
        let now = Instant::now();
        if self.first.is_none() {
            self.first = Some(now);
            self.cpu0 = cpu_seconds();
        }
        self.last = now;
        self.datagrams += datagrams;
        self.bytes += bytes;
    }
    fn done(&self) -> bool {
        match self.first {
            Some(_) => self.last.elapsed() > QUIET,
            None => self.last.elapsed() > FIRST_WAIT,
        }
    }
    fn report(&self, note: &str) {
        let secs = self.first.map_or(0.0, |f| (self.last - f).as_secs_f64());
        let busy = cpu_seconds() - self.cpu0;
        // CPU over the receiving window: the quiet tail costs nothing.
        let cpu = if secs > 0.0 { busy / secs } else { 0.0 };
        println!(
            "{}",
            json!({ "datagrams": self.datagrams, "bytes": self.bytes, "secs": secs, "cpu": cpu.min(1.0), "note": note })
        );
    }
}

fn settings() -> (Duration, usize, SocketAddr) {
    let secs: u64 = env_or("SWARM_BENCH_SECONDS", "5").parse().expect("seconds");
    let size: usize = env_or("SWARM_BENCH_SIZE", "1420").parse().expect("size");
    let bind: SocketAddr = env_or("SWARM_BENCH_BIND", "127.0.0.1:0").parse().expect("bind address");
    (Duration::from_secs(secs), size, bind)
}

pub fn run(role: &str) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        match role {
            "udp-recv" | "udp-gso-recv" => udp_recv().await,
            "udp-send" => udp_send(false).await,
            "udp-gso-send" => udp_send(true).await,
            "tunnel-recv" | "tunnel-gso-recv" => tunnel_recv(role == "tunnel-gso-recv").await,
            "tunnel-send" => tunnel_send(false).await,
            "tunnel-gso-send" => tunnel_send(true).await,
            "quic-recv" => quic_recv().await,
            "quic-send" => quic_send().await,
            other => panic!("unknown role {other}"),
        }
    });
}

fn udp_socket(bind: SocketAddr) -> (UdpSocket, UdpSocketState) {
    let std = std::net::UdpSocket::bind(bind).expect("bind");
    std.set_nonblocking(true).expect("nonblocking");
    let socket = UdpSocket::from_std(std).expect("tokio socket");
    let state = UdpSocketState::new((&socket).into()).expect("quinn-udp state");
    let _ = state.set_recv_buffer_size((&socket).into(), 4 << 20);
    let _ = state.set_send_buffer_size((&socket).into(), 4 << 20);
    (socket, state)
}

async fn udp_recv() {
    let (_, _, bind) = settings();
    let (socket, state) = udp_socket(bind);
    println!("READY {}", socket.local_addr().expect("address"));
    let mut meter = Meter::new();
    let mut bufs = vec![vec![0u8; 64 * 1024]; 16];
    let mut meta = [RecvMeta::default(); 16];
    while !meter.done() {
        let Ok(Ok(())) = tokio::time::timeout(Duration::from_millis(200), socket.readable()).await else {
            continue;
        };
        loop {
            let mut slices: Vec<IoSliceMut<'_>> = bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            match socket.try_io(Interest::READABLE, || state.recv((&socket).into(), &mut slices, &mut meta)) {
                Ok(n) => {
                    for m in &meta[..n] {
                        let stride = m.stride.max(1);
                        meter.add(m.len.div_ceil(stride) as u64, m.len as u64);
                    }
                }
                Err(_) => break,
            }
        }
    }
    meter.report(&format!("gro {}", state.gro_segments()));
}

async fn udp_send(gso: bool) {
    let (duration, size, bind) = settings();
    let target: SocketAddr = env_or("SWARM_BENCH_TARGET", "").parse().expect("target");
    let (socket, state) = udp_socket(bind);
    let segments = if gso { state.max_gso_segments().min(65_000 / size).max(1) } else { 1 };
    let buf = vec![0x5Au8; size * segments];
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < duration {
        let t = Transmit {
            destination: target,
            ecn: None,
            contents: &buf,
            segment_size: (segments > 1).then_some(size),
            src_ip: None,
        };
        match socket.try_io(Interest::WRITABLE, || state.send((&socket).into(), &t)) {
            Ok(()) => sent += segments as u64,
            Err(_) => {
                let _ = socket.writable().await;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{}", json!({ "datagrams": sent, "secs": secs, "cpu": (cpu_seconds() - cpu0) / secs }));
}

fn node_builder(bind: SocketAddr, gso: bool) -> NodeBuilder {
    NodeBuilder::new("throughput")
        .listen(format!("/ip4/{}/tcp/0", bind.ip()).parse().expect("multiaddr"))
        .tunnel_port(bind.port())
        .tunnel_gso(gso)
        .datagram_capacity(65_536)
}

async fn tunnel_recv(gso: bool) {
    let (_, _, bind) = settings();
    let (node, _events) = node_builder(bind, gso).start().await.expect("receiver node");
    let mut inbox = node.datagrams().expect("datagrams");
    let addr = node.listen_addrs().await.expect("addresses").into_iter().next().expect("an address");
    println!("READY {addr}");
    let mut meter = Meter::new();
    let mut batch = Vec::with_capacity(256);
    while !meter.done() {
        batch.clear();
        match tokio::time::timeout(Duration::from_millis(200), inbox.next_batch(&mut batch, 256)).await {
            Ok(0) => break,
            Ok(_) => {
                let bytes: usize = batch.iter().map(|d| d.data.len()).sum();
                meter.add(batch.len() as u64, bytes as u64);
            }
            Err(_) => {}
        }
    }
    let stats = node.stats().await.expect("stats");
    let d = stats.dataplane;
    let note = format!(
        "udp in {} overflow {} drops {:?} gro {} gso {}",
        d.udp_in, d.datagrams_overflow, stats.tunnel_drops, d.gro_segments, d.max_gso_segments
    );
    meter.report(&note);
    node.shutdown().await;
}

async fn tunnel_send(gso: bool) {
    let (duration, size, bind) = settings();
    let target: swarm::Multiaddr = env_or("SWARM_BENCH_TARGET", "").parse().expect("target");
    let (node, _events) = node_builder(SocketAddr::new(bind.ip(), 0), gso)
        .bootstrap(target)
        .start()
        .await
        .expect("sender node");
    // Wait for the receiver's record and an established tunnel.
    let peer = loop {
        let tunnels = node.tunnels().await.expect("tunnels");
        if let Some(t) = tunnels.iter().find(|t| t.established) {
            break t.peer;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let payload = vec![0x5Au8; size];
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < duration {
        for _ in 0..64 {
            node.send_datagram(peer, payload.clone()).await.expect("send");
        }
        sent += 64;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = (cpu_seconds() - cpu0) / secs;
    // Let the queue drain before the node goes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stats = node.stats().await.expect("stats");
    println!(
        "{}",
        json!({
            "datagrams": sent,
            "secs": secs,
            "cpu": cpu,
            "udp_out": stats.dataplane.udp_out,
            "socket_errors": stats.dataplane.socket_errors,
            "refused": stats.dataplane.datagrams_refused,
        })
    );
    node.shutdown().await;
}

const QUIC_PROTOCOL: libp2p::StreamProtocol = libp2p::StreamProtocol::new("/swarm-bench/1");

fn quic_swarm() -> libp2p::Swarm<libp2p_stream::Behaviour> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

async fn quic_recv() {
    let (_, _, bind) = settings();
    let mut swarm = quic_swarm();
    let mut incoming = swarm.behaviour().new_control().accept(QUIC_PROTOCOL).expect("accept");
    swarm
        .listen_on(format!("/ip4/{}/udp/{}/quic-v1", bind.ip(), bind.port()).parse().expect("addr"))
        .expect("listen");
    let addr = loop {
        if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address.with(libp2p::multiaddr::Protocol::P2p(*swarm.local_peer_id()));
        }
    };
    println!("READY {addr}");
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    let Some((_, mut stream)) = incoming.next().await else { return };
    let (size, mut meter) = (settings().1, Meter::new());
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match tokio::time::timeout(QUIET, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => meter.add(0, n as u64),
        }
    }
    meter.datagrams = meter.bytes / size as u64;
    meter.report("reliable stream");
}

async fn quic_send() {
    let (duration, size, bind) = settings();
    let target: libp2p::Multiaddr = env_or("SWARM_BENCH_TARGET", "").parse().expect("target");
    let Some(libp2p::multiaddr::Protocol::P2p(peer)) = target.iter().last() else {
        panic!("no /p2p in target")
    };
    let mut swarm = quic_swarm();
    swarm.listen_on(format!("/ip4/{}/udp/0/quic-v1", bind.ip()).parse().expect("addr")).expect("listen");
    swarm.dial(target).expect("dial");
    let mut control = swarm.behaviour().new_control();
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    let mut stream = loop {
        match control.open_stream(peer, QUIC_PROTOCOL).await {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let chunk = vec![0x5Au8; size];
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < duration {
        stream.write_all(&chunk).await.expect("write");
        sent += 1;
    }
    let _ = stream.close().await;
    let secs = start.elapsed().as_secs_f64();
    println!("{}", json!({ "datagrams": sent, "secs": secs, "cpu": (cpu_seconds() - cpu0) / secs }));
}
