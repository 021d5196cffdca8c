//! What the driver asks of the host: tunnel sockets, CPU and memory sizes, the wall
//! clock, libp2p's bandwidth counters.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use prometheus_client::registry::Registry;
use tokio::net::UdpSocket;

use crate::config::{BuildError, NodeConfig};

/// One tunnel socket per address family the node listens on (IPv4 when it listens on
/// nothing): bound to the first listen IP of that family, or to the unspecified address
/// (IPv6 with `IPV6_V6ONLY`, so both families can share one port).
pub(crate) fn bind_tunnel_sockets(config: &NodeConfig) -> Result<Vec<UdpSocket>, BuildError> {
    let ips: Vec<IpAddr> = config.listen.iter().filter_map(multiaddr_ip).collect();
    let v4 = ips.iter().find(|ip| ip.is_ipv4()).copied();
    let v6 = ips.iter().find(|ip| ip.is_ipv6()).copied();
    let mut wanted = Vec::new();
    if v4.is_some() || v6.is_none() {
        wanted.push(v4.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
    }
    if let Some(ip) = v6 {
        wanted.push(ip);
    }
    wanted
        .into_iter()
        .map(|ip| {
            let addr = SocketAddr::new(ip, config.tunnel_port);
            bind_udp(addr).map_err(|error| BuildError::TunnelBind { addr, error })
        })
        .collect()
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol as SockProtocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(SockProtocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

pub(crate) fn multiaddr_ip(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

pub(crate) fn host_cpu_cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

pub(crate) fn host_memory_bytes() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/meminfo") else { return 0 };
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Sums the bandwidth counters libp2p keeps per transport stack: (inbound, outbound).
pub(crate) fn bandwidth_totals(registry: &Registry) -> (u64, u64) {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
        return (0, 0);
    }
    let (mut inbound, mut outbound) = (0, 0);
    for line in text.lines().filter(|l| l.starts_with("libp2p_bandwidth_bytes_total{")) {
        let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) as u64;
        if line.contains("direction=\"Inbound\"") {
            inbound += value;
        } else if line.contains("direction=\"Outbound\"") {
            outbound += value;
        }
    }
    (inbound, outbound)
}

/// Wall-clock time, the only clock a record carries.
pub(crate) fn wall_clock() -> swarm_core::time::UnixMillis {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    swarm_core::time::UnixMillis(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}
