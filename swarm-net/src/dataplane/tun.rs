//! The mesh VPN's TUN device (Linux): created with the kernel's offloads (a
//! virtio-net header on every read and write, TSO/USO super-packets split on read, TCP
//! and UDP runs coalesced on write, through tun-rs's port of wireguard-go's code), the
//! node's overlay addresses on it, and the overlay's prefixes routed to it by the
//! kernel's connected routes. The device is not persistent: the kernel removes it, its
//! addresses and its routes when the descriptor closes, whatever ends the process.
//!
//! Reads and writes are batched into buffers allocated once (8 MiB for the writes: 128
//! buffers, each room for a coalesced 64 KiB super-packet).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use swarm_core::overlay::IpPrefix;
use tun_rs::{AsyncDevice, DeviceBuilder, GROTable, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

/// Room before each packet in a write buffer, for the virtio-net header.
const HEADROOM: usize = 16;
const _: () = assert!(HEADROOM >= VIRTIO_NET_HDR_LEN);
/// One read: a virtio-net header and a super-packet of up to 64 KiB.
const RAW_LEN: usize = VIRTIO_NET_HDR_LEN + 65_535;
/// The longest interface name Linux takes (IFNAMSIZ less the NUL).
const MAX_NAME: usize = 15;

/// Why the TUN device could not be set up. Each says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TunError {
    /// The device name is not one Linux takes.
    #[error("invalid VPN device name {0:?}: 1 to 15 characters, none of them '/', ':' or white space")]
    BadName(String),
    /// The kernel has no TUN driver here.
    #[error("/dev/net/tun is missing: load the tun module (`modprobe tun`), or give the container the device (`--device /dev/net/tun`)")]
    NoTunDriver,
    /// The process may not create network devices.
    #[error("creating the VPN device {0} needs CAP_NET_ADMIN: run the node as root, or grant the capability (`setcap cap_net_admin+ep <binary>`)")]
    Permission(String),
    /// A device of that name exists.
    #[error("a network device named {0} exists already: choose another name for the VPN device, or remove that one (`ip link del {0}`)")]
    NameTaken(String),
    /// The host routes the overlay's prefix elsewhere already.
    #[error("the overlay prefix {prefix} is already routed to {device}: choose another IPv4 range for the overlay (or none), or remove that route")]
    RouteClash {
        /// The overlay prefix.
        prefix: IpPrefix,
        /// The device the host routes it to.
        device: String,
    },
    /// Anything else the kernel refused.
    #[error("cannot set up the VPN device {device}: {error}")]
    Io {
        /// The device.
        device: String,
        /// What failed.
        error: io::Error,
    },
}

/// Checks a device name before anything is created.
pub(crate) fn check_name(name: &str) -> Result<(), TunError> {
    let bad = |c: char| c == '/' || c == ':' || c.is_whitespace() || c.is_control();
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(bad) || name == "." || name == ".." {
        return Err(TunError::BadName(name.to_owned()));
    }
    Ok(())
}

/// One route of the host: its prefix and its device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostRoute {
    pub(crate) prefix: IpPrefix,
    pub(crate) device: String,
}

/// The host's IPv4 routes from `/proc/net/route`'s text (addresses in the kernel's
/// byte order, hexadecimal).
pub(crate) fn parse_routes_v4(text: &str) -> Vec<HostRoute> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            // The kernel prints the network-order word as a native integer.
            let addr = Ipv4Addr::from(dest.to_ne_bytes());
            let len = u8::try_from(mask.count_ones()).ok()?;
            let prefix = IpPrefix::new(IpAddr::V4(addr), len).ok()?;
            Some(HostRoute { prefix, device: (*f.first()?).to_owned() })
        })
        .collect()
}

/// The host's IPv6 routes from `/proc/net/ipv6_route`'s text.
pub(crate) fn parse_routes_v6(text: &str) -> Vec<HostRoute> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let addr = Ipv6Addr::from(u128::from_str_radix(f.first()?, 16).ok()?);
            let len = u8::from_str_radix(f.get(1)?, 16).ok()?;
            let prefix = IpPrefix::new(IpAddr::V6(addr), len).ok()?;
            Some(HostRoute { prefix, device: (*f.get(9)?).to_owned() })
        })
        .collect()
}

/// Whether two prefixes share an address.
fn overlaps(a: &IpPrefix, b: &IpPrefix) -> bool {
    a.contains(&b.addr()) || b.contains(&a.addr())
}

/// How `prefix` meets the host's `routes`: a route of exactly that prefix to another
/// device is a clash (the kernel would route the overlay there); routes that overlap
/// it otherwise, other than default routes and the loopback's, are returned to warn
/// about.
pub(crate) fn check_routes(
    prefix: &IpPrefix,
    own_device: &str,
    routes: &[HostRoute],
) -> Result<Vec<HostRoute>, TunError> {
    let mut overlapping = Vec::new();
    for r in routes.iter().filter(|r| r.device != own_device && r.device != "lo" && !r.prefix.is_empty()) {
        if r.prefix == *prefix {
            return Err(TunError::RouteClash { prefix: *prefix, device: r.device.clone() });
        }
        if overlaps(&r.prefix, prefix) {
            overlapping.push(r.clone());
        }
    }
    Ok(overlapping)
}

/// The host's routes, both families; empty where `/proc` cannot be read.
fn host_routes() -> Vec<HostRoute> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let mut routes = parse_routes_v4(&read("/proc/net/route"));
    routes.extend(parse_routes_v6(&read("/proc/net/ipv6_route")));
    routes
}

/// Packets and bytes through the device, from the node's side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunStats {
    /// IP packets read from the device (the host sends them into the overlay).
    pub read_packets: u64,
    /// Their bytes.
    pub read_bytes: u64,
    /// IP packets written to the device (the overlay delivers them to the host).
    pub written_packets: u64,
    /// Their bytes.
    pub written_bytes: u64,
    /// Reads or writes the kernel refused.
    pub errors: u64,
}

/// The open device and its buffers.
pub(crate) struct Tun {
    dev: AsyncDevice,
    name: String,
    ipv4: Option<(Ipv4Addr, u8)>,
    raw: Vec<u8>,
    segments: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    out: Vec<Vec<u8>>,
    queued: usize,
    gro: GROTable,
    pub(crate) stats: TunStats,
}

impl Tun {
    /// Creates the device with `ipv6` (and `ipv4`) on it, their prefixes routed to it.
    /// Checks first what would make it fail or misroute, so that a refusal leaves
    /// nothing behind; overlapping routes are logged as warnings, naming them.
    pub(crate) fn open(
        name: &str,
        mtu: u16,
        ipv6: (Ipv6Addr, u8),
        ipv4: Option<(Ipv4Addr, u8)>,
    ) -> Result<Self, TunError> {
        let name = name.to_owned();
        check_name(&name)?;
        if !Path::new("/dev/net/tun").exists() {
            return Err(TunError::NoTunDriver);
        }
        if Path::new("/sys/class/net").join(&name).exists() {
            return Err(TunError::NameTaken(name));
        }
        let routes = host_routes();
        let mut prefixes = vec![IpPrefix::new(IpAddr::V6(ipv6.0), ipv6.1).map_err(|e| io_err(&name, e))?];
        if let Some((a, len)) = ipv4 {
            prefixes.push(IpPrefix::new(IpAddr::V4(a), len).map_err(|e| io_err(&name, e))?);
        }
        for p in &prefixes {
            for r in check_routes(p, &name, &routes)? {
                tracing::warn!(overlay = %p, route = %r.prefix, device = %r.device, "the overlay range overlaps a route the host already has");
            }
        }
        let mut builder =
            DeviceBuilder::new().name(&name).mtu(mtu).offload(true).ipv6(ipv6.0, ipv6.1).enable(true);
        if let Some((a, len)) = ipv4 {
            builder = builder.ipv4(a, len, None);
        }
        let dev = builder.build_async().map_err(|e| match e.kind() {
            io::ErrorKind::PermissionDenied => TunError::Permission(name.clone()),
            _ if e.raw_os_error() == Some(16) => TunError::NameTaken(name.clone()),
            _ => TunError::Io { device: name.clone(), error: e },
        })?;
        let segment = usize::from(mtu) + 64;
        tracing::debug!(device = %name, tcp_gso = dev.tcp_gso(), udp_gso = dev.udp_gso(), "VPN device up");
        Ok(Self {
            dev,
            name,
            ipv4,
            raw: vec![0; RAW_LEN],
            segments: (0..IDEAL_BATCH_SIZE).map(|_| vec![0; segment]).collect(),
            sizes: vec![0; IDEAL_BATCH_SIZE],
            // Each write buffer can hold a coalesced 64 KiB super-packet (tun-rs coalesces
            // only into a buffer with that capacity, never reallocating).
            out: (0..IDEAL_BATCH_SIZE).map(|_| Vec::with_capacity(2 * HEADROOM + 65_535)).collect(),
            queued: 0,
            gro: GROTable::default(),
            stats: TunStats::default(),
        })
    }

    /// The device's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Moves the device's IPv4 address (the claim moved).
    pub(crate) fn set_ipv4(&mut self, addr: Ipv4Addr, len: u8) -> io::Result<()> {
        if self.ipv4 == Some((addr, len)) {
            return Ok(());
        }
        if let Some((old, _)) = self.ipv4.take() {
            self.dev.remove_address(IpAddr::V4(old))?;
        }
        self.dev.add_address_v4(addr, len)?;
        self.ipv4 = Some((addr, len));
        Ok(())
    }

    /// Waits until the device has packets to read.
    pub(crate) async fn readable(&self) -> io::Result<()> {
        self.dev.readable().await
    }

    /// Reads one batch (a super-packet split into segments, or one packet); the number
    /// of packets, each then at [`Self::packet`]; 0: nothing to read. `spin`: ask the
    /// kernel even when the reactor has not seen the device readable again (a busy poll).
    pub(crate) fn recv(&mut self, spin: bool) -> usize {
        let read = if spin {
            let dev: &tun_rs::DeviceImpl = &self.dev;
            dev.recv_multiple(&mut self.raw, &mut self.segments, &mut self.sizes, 0)
        } else {
            self.dev.try_recv_multiple(&mut self.raw, &mut self.segments, &mut self.sizes, 0)
        };
        match read {
            Ok(n) => {
                self.stats.read_packets += n as u64;
                self.stats.read_bytes += self.sizes[..n].iter().sum::<usize>() as u64;
                n
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => {
                self.stats.errors += 1;
                tracing::debug!(device = %self.name, error = %e, "VPN device read failed");
                0
            }
        }
    }

    /// The `i`th packet of the last [`Self::recv`].
    pub(crate) fn packet(&self, i: usize) -> &[u8] {
        &self.segments[i][..self.sizes[i]]
    }

    /// Queues a packet for the device; written with the rest at [`Self::flush`], or at
    /// once when the batch is full.
    pub(crate) fn queue(&mut self, packet: &[u8]) {
        let buf = &mut self.out[self.queued];
        buf.clear();
        buf.resize(HEADROOM, 0);
        buf.extend_from_slice(packet);
        self.queued += 1;
        if self.queued == self.out.len() {
            self.flush();
        }
    }

    /// Writes the queued packets, coalescing runs of one TCP or UDP flow into one
    /// super-packet where the device offloads them.
    pub(crate) fn flush(&mut self) {
        if self.queued == 0 {
            return;
        }
        let n = std::mem::take(&mut self.queued);
        let bytes: usize = self.out[..n].iter().map(|b| b.len() - HEADROOM).sum();
        // The device's own (non-blocking) write: a full queue is an error, never a wait.
        let dev: &tun_rs::DeviceImpl = &self.dev;
        match dev.send_multiple(&mut self.gro, &mut self.out[..n], HEADROOM) {
            Ok(_) => {
                self.stats.written_packets += n as u64;
                self.stats.written_bytes += bytes as u64;
            }
            Err(e) => {
                self.stats.errors += 1;
                tracing::debug!(device = %self.name, error = %e, "VPN device write failed");
            }
        }
    }
}

fn io_err(device: &str, e: impl std::fmt::Display) -> TunError {
    TunError::Io { device: device.to_owned(), error: io::Error::other(e.to_string()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
tailscale0\t00004064\t00000000\t0001\t0\t0\t0\t0000C0FF\t0\t0\t0
";
    const ROUTE6: &str = "fd7a115ca1e0ab120000000000000000 30 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 tailscale0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
";

    #[test]
    fn host_routes_parse() {
        let v4 = parse_routes_v4(ROUTE);
        assert_eq!(v4.len(), 3);
        assert_eq!(v4[1].prefix.to_string(), "192.168.1.0/24");
        assert_eq!(v4[2].prefix.to_string(), "100.64.0.0/10");
        assert_eq!(v4[2].device, "tailscale0");
        let v6 = parse_routes_v6(ROUTE6);
        assert_eq!(v6[0].prefix.to_string(), "fd7a:115c:a1e0::/48");
        assert_eq!(v6[0].device, "tailscale0");
    }

    #[test]
    fn an_exact_route_elsewhere_clashes_and_an_overlap_warns() {
        let routes = parse_routes_v4(ROUTE);
        let overlay: IpPrefix = "100.64.0.0/10".parse().unwrap();
        let err = check_routes(&overlay, "swarm0", &routes).unwrap_err();
        assert!(err.to_string().contains("tailscale0"), "{err}");
        // Our own device's route is no clash; the default route is no overlap.
        assert!(check_routes(&overlay, "tailscale0", &routes).unwrap().is_empty());
        let narrower: IpPrefix = "100.64.0.0/24".parse().unwrap();
        let warn = check_routes(&narrower, "swarm0", &routes).unwrap();
        assert_eq!(warn.len(), 1);
        assert_eq!(warn[0].device, "tailscale0");
        let apart: IpPrefix = "10.0.0.0/8".parse().unwrap();
        assert!(check_routes(&apart, "swarm0", &routes).unwrap().is_empty());
    }

    #[test]
    fn device_names_are_checked() {
        assert!(check_name("swarm0").is_ok());
        for bad in ["", "a/b", "a b", "sixteen-chars-xx", "a:1", ".."] {
            assert!(matches!(check_name(bad), Err(TunError::BadName(_))), "{bad}");
        }
    }
}
