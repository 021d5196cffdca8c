//! The tunnel's UDP sockets (data-flow stage 3, the I/O half): one per address family,
//! read and written in batches with quinn-udp (GRO and GSO where the kernel has them,
//! plain `recvmmsg`/`sendmsg` where not). Bytes only: what they mean is the tunnels'.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use quinn_udp::{RecvMeta, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams read per system call, at most.
pub(super) const BATCH: usize = 16;
/// Room for one received buffer: with GRO, several datagrams of one flow arrive as one.
pub(super) const RX_BUF: usize = 64 * 1024;

/// One socket and quinn-udp's state for it.
struct Sock {
    socket: UdpSocket,
    state: UdpSocketState,
}

/// What the kernel granted the sockets (the smallest over both families).
#[derive(Debug, Clone, Copy)]
pub(super) struct Granted {
    pub(super) recv_buffer: usize,
    pub(super) send_buffer: usize,
    pub(super) max_gso_segments: usize,
    pub(super) gro_segments: usize,
}

/// Why a send did not leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SendFailure {
    /// No socket of the destination's family.
    NoSocket,
    /// The socket buffer stayed full for a second.
    Stalled,
    /// The kernel refused it.
    Refused,
}

/// The IPv4 socket and the IPv6 socket (bound with `IPV6_V6ONLY`), where the node
/// listens on that family.
pub(super) struct Sockets {
    slots: [Option<Sock>; 2],
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

impl Sockets {
    /// Takes the bound sockets; asks for `buffer_bytes` of buffer on each.
    pub(super) fn new(sockets: Vec<UdpSocket>, buffer_bytes: usize) -> io::Result<(Self, Granted)> {
        let mut slots: [Option<Sock>; 2] = [None, None];
        let mut granted = Granted {
            recv_buffer: usize::MAX,
            send_buffer: usize::MAX,
            max_gso_segments: usize::MAX,
            gro_segments: usize::MAX,
        };
        for socket in sockets {
            let state = UdpSocketState::new((&socket).into())?;
            let (recv, send) = size_buffers(&state, &socket, buffer_bytes);
            granted.recv_buffer = granted.recv_buffer.min(recv);
            granted.send_buffer = granted.send_buffer.min(send);
            granted.max_gso_segments = granted.max_gso_segments.min(state.max_gso_segments());
            granted.gro_segments = granted.gro_segments.min(state.gro_segments());
            let family = usize::from(socket.local_addr()?.is_ipv6());
            slots[family] = Some(Sock { socket, state });
        }
        if slots.iter().all(Option::is_none) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no tunnel socket"));
        }
        Ok((Self { slots }, granted))
    }

    /// The bound address of each socket.
    pub(super) fn local_addrs(&self) -> Vec<SocketAddr> {
        self.slots.iter().flatten().filter_map(|s| s.socket.local_addr().ok()).collect()
    }

    /// The bound address of the socket for `addr`'s family.
    pub(super) fn local_addr_for(&self, addr: &SocketAddr) -> Option<SocketAddr> {
        self.slots[usize::from(addr.is_ipv6())].as_ref()?.socket.local_addr().ok()
    }

    /// Waits until a socket has something to read; says which.
    pub(super) async fn readable(&self) -> io::Result<usize> {
        match &self.slots {
            [Some(v4), Some(v6)] => tokio::select! {
                r = v4.socket.readable() => r.map(|()| 0),
                r = v6.socket.readable() => r.map(|()| 1),
            },
            [Some(v4), None] => v4.socket.readable().await.map(|()| 0),
            [None, Some(v6)] => v6.socket.readable().await.map(|()| 1),
            [None, None] => std::future::pending().await,
        }
    }

    /// One batch from the socket of `family` into `rx` (chunks of [`RX_BUF`]); how many
    /// buffers were filled, 0 when nothing was waiting.
    ///
    /// `spin`: ask the kernel even when the reactor has not seen the socket readable
    /// since the last empty read (a busy poll; the reactor still hears of what is left).
    pub(super) fn recv(
        &self,
        family: usize,
        rx: &mut [u8],
        meta: &mut [RecvMeta; BATCH],
        spin: bool,
    ) -> io::Result<usize> {
        let Some(sock) = self.slots.get(family).and_then(Option::as_ref) else { return Ok(0) };
        let mut chunks = rx.chunks_mut(RX_BUF);
        let mut bufs: [IoSliceMut<'_>; BATCH] =
            std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
        let state = &sock.state;
        let mut read = || state.recv((&sock.socket).into(), &mut bufs, meta);
        let result = if spin { read() } else { sock.socket.try_io(Interest::READABLE, read) };
        match result {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Datagrams the kernel dropped on these sockets (receive buffer full, or refused by
    /// a filter) since they were opened: the socket's drop counter, which `SO_RXQ_OVFL`
    /// reports per message and `/proc/net/udp` per socket, read from the latter (found by
    /// the socket's inode), so the node counts what never reached it.
    pub(super) fn kernel_drops(&self) -> u64 {
        use std::os::fd::AsRawFd as _;
        use std::os::unix::fs::MetadataExt as _;
        let inodes: Vec<u64> = self
            .slots
            .iter()
            .flatten()
            .filter_map(|s| std::fs::metadata(format!("/proc/self/fd/{}", s.socket.as_raw_fd())).ok())
            .map(|m| m.ino())
            .collect();
        ["/proc/self/net/udp", "/proc/self/net/udp6"]
            .iter()
            .filter_map(|path| std::fs::read_to_string(path).ok())
            .map(|table| udp_table_drops(&table, &inodes))
            .sum()
    }

    /// How many socket slots there are (one per address family).
    pub(super) fn families(&self) -> usize {
        self.slots.len()
    }

    /// Sends one datagram with a TTL (IPv6: hop limit) of `ttl`, restoring the socket's
    /// own afterwards (nothing else sends in between: the data plane is one task).
    /// Best effort: a full buffer drops it.
    pub(super) fn send_with_ttl(&self, destination: SocketAddr, contents: &[u8], ttl: u32) -> io::Result<()> {
        let sock = self.slots[usize::from(destination.is_ipv6())]
            .as_ref()
            .ok_or_else(|| io::Error::from(io::ErrorKind::AddrNotAvailable))?;
        let s = socket2::SockRef::from(&sock.socket);
        let v6 = destination.is_ipv6();
        let old = if v6 { s.unicast_hops_v6()? } else { s.ttl_v4()? };
        let set = |t: u32| if v6 { s.set_unicast_hops_v6(t) } else { s.set_ttl_v4(t) };
        set(ttl)?;
        let sent = sock.socket.try_send_to(contents, destination);
        set(old)?;
        sent.map(|_| ())
    }

    /// Sends `contents`: `segments` datagrams of `segment` bytes (the last may be
    /// shorter), from `src_ip` when given (a socket bound to every address answers
    /// from the one it was asked at), waiting for room in the socket buffer rather than
    /// dropping.
    pub(super) async fn send(
        &self,
        destination: SocketAddr,
        src_ip: Option<IpAddr>,
        contents: &[u8],
        segment: usize,
        segments: usize,
    ) -> Result<(), SendFailure> {
        let transmit = quinn_udp::Transmit {
            destination,
            ecn: None,
            contents,
            segment_size: (segments > 1).then_some(segment),
            src_ip,
        };
        let sock = self.slots[usize::from(destination.is_ipv6())].as_ref().ok_or(SendFailure::NoSocket)?;
        loop {
            let (state, socket) = (&sock.state, &sock.socket);
            match socket.try_io(Interest::WRITABLE, || state.send(socket.into(), &transmit)) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if tokio::time::timeout(Duration::from_secs(1), socket.writable()).await.is_err() {
                        return Err(SendFailure::Stalled);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, %destination, "tunnel send failed");
                    return Err(SendFailure::Refused);
                }
            }
        }
    }
}

/// The drops column of the sockets with `inodes` in a `/proc/net/udp` table (columns:
/// sl, local, remote, st, queues, tr, retrnsmt, uid, timeout, inode, ref, pointer, drops).
fn udp_table_drops(table: &str, inodes: &[u64]) -> u64 {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let inode: u64 = fields.get(9)?.parse().ok()?;
            inodes.contains(&inode).then(|| fields.get(12)?.parse::<u64>().ok()).flatten()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drops_column_is_read_for_our_sockets_only() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  1: 00000000:10F2 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 17
  2: 00000000:10F3 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4243 2 0000000000000000 5
";
        assert_eq!(udp_table_drops(table, &[4242]), 17);
        assert_eq!(udp_table_drops(table, &[4242, 4243]), 22);
        assert_eq!(udp_table_drops(table, &[1]), 0);
        assert_eq!(
            udp_table_drops(
                "garbage
more garbage",
                &[1]
            ),
            0
        );
    }

    #[tokio::test]
    async fn datagrams_the_kernel_drops_are_counted() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        // The smallest buffer the kernel grants, and nobody reading.
        let (sockets, _) = Sockets::new(vec![socket], 1).unwrap();
        assert_eq!(sockets.kernel_drops(), 0);
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..200 {
            let _ = sender.send_to(&[0u8; 1200], addr);
        }
        let drops = sockets.kernel_drops();
        assert!(drops > 100, "{drops} of 200 dropped by a full buffer");
    }
}
