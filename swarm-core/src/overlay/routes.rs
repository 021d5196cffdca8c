//! Cryptokey routing (WireGuard's allowed IPs): a longest-prefix table from overlay
//! prefixes to peers. Outbound, a packet's destination picks the peer whose tunnel
//! carries it; inbound, a packet decrypted from a peer is delivered only if the table
//! maps its source back to that same peer.
//!
//! One hash map per prefix length in use, searched longest first: a mesh holds mostly
//! host routes (/32, /128) and a few prefixes, so a lookup is a handful of hash probes
//! and allocates nothing.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP prefix with its host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

/// Why a prefix is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PrefixError {
    /// Not `ADDRESS/LEN`.
    #[error("{0:?} is not an IP prefix: write it as ADDRESS/LEN")]
    Syntax(String),
    /// Longer than the address.
    #[error("/{len} is longer than a {bits}-bit address")]
    Length {
        /// The length given.
        len: u8,
        /// The address's bits.
        bits: u8,
    },
}

fn bits(addr: &IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

fn key(addr: &IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(*a)),
        IpAddr::V6(a) => u128::from(*a),
    }
}

/// `key` with all but its first `len` of `bits` bits cleared.
fn masked(key: u128, len: u8, bits: u8) -> u128 {
    if len == 0 {
        return 0;
    }
    let host = u32::from(bits - len);
    let mask = if host >= 128 { 0 } else { u128::MAX << host };
    key & mask & if bits == 32 { u128::from(u32::MAX) } else { u128::MAX }
}

impl IpPrefix {
    /// The prefix of `len` bits containing `addr` (host bits are cleared).
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, PrefixError> {
        let b = bits(&addr);
        if len > b {
            return Err(PrefixError::Length { len, bits: b });
        }
        let k = masked(key(&addr), len, b);
        let addr = match addr {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(k as u32)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(k)),
        };
        Ok(Self { addr, len })
    }

    /// The host route of `addr` (/32 or /128).
    pub fn host(addr: IpAddr) -> Self {
        Self { addr, len: bits(&addr) }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether this is the zero-length prefix (everything of its family).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `addr` is inside.
    pub fn contains(&self, addr: &IpAddr) -> bool {
        addr.is_ipv4() == self.addr.is_ipv4() && masked(key(addr), self.len, bits(addr)) == key(&self.addr)
    }
}

impl FromStr for IpPrefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || PrefixError::Syntax(s.to_owned());
        let (addr, len) = s.trim().split_once('/').ok_or_else(syntax)?;
        Self::new(addr.parse().map_err(|_| syntax())?, len.parse().map_err(|_| syntax())?)
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// One family's routes: a map per prefix length, longest first.
#[derive(Debug, Clone)]
struct Family<T> {
    bits: u8,
    by_len: Vec<(u8, HashMap<u128, T>)>,
}

impl<T> Family<T> {
    fn new(bits: u8) -> Self {
        Self { bits, by_len: Vec::new() }
    }

    fn insert(&mut self, key: u128, len: u8, value: T) -> Option<T> {
        let at = match self.by_len.binary_search_by(|(l, _)| len.cmp(l)) {
            Ok(at) => at,
            Err(at) => {
                self.by_len.insert(at, (len, HashMap::new()));
                at
            }
        };
        self.by_len[at].1.insert(key, value)
    }

    fn remove(&mut self, key: u128, len: u8) -> Option<T> {
        let at = self.by_len.binary_search_by(|(l, _)| len.cmp(l)).ok()?;
        let old = self.by_len[at].1.remove(&key);
        if self.by_len[at].1.is_empty() {
            self.by_len.remove(at);
        }
        old
    }

    fn lookup(&self, key: u128) -> Option<&T> {
        self.by_len.iter().find_map(|(len, map)| map.get(&masked(key, *len, self.bits)))
    }

    fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        for (_, map) in &mut self.by_len {
            map.retain(|_, v| keep(v));
        }
        self.by_len.retain(|(_, map)| !map.is_empty());
    }

    fn len(&self) -> usize {
        self.by_len.iter().map(|(_, m)| m.len()).sum()
    }
}

/// A longest-prefix table from IP prefixes to `T` (a peer). See the module docs.
#[derive(Debug, Clone)]
pub struct AllowedIps<T> {
    v4: Family<T>,
    v6: Family<T>,
}

impl<T> Default for AllowedIps<T> {
    fn default() -> Self {
        Self { v4: Family::new(32), v6: Family::new(128) }
    }
}

impl<T> AllowedIps<T> {
    fn family(&mut self, addr: &IpAddr) -> &mut Family<T> {
        if addr.is_ipv4() {
            &mut self.v4
        } else {
            &mut self.v6
        }
    }

    /// Routes `prefix` to `value`; the value it routed to before, if any.
    pub fn insert(&mut self, prefix: IpPrefix, value: T) -> Option<T> {
        let k = key(&prefix.addr);
        self.family(&prefix.addr).insert(k, prefix.len, value)
    }

    /// Removes `prefix`; the value it routed to.
    pub fn remove(&mut self, prefix: &IpPrefix) -> Option<T> {
        let k = key(&prefix.addr);
        self.family(&prefix.addr).remove(k, prefix.len)
    }

    /// Keeps only the routes whose value passes `keep` (remove a peer: `|p| p != peer`).
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.v4.retain(&mut keep);
        self.v6.retain(keep);
    }

    /// The value of the longest prefix containing `addr`.
    pub fn lookup(&self, addr: &IpAddr) -> Option<&T> {
        match addr {
            IpAddr::V4(_) => self.v4.lookup(key(addr)),
            IpAddr::V6(_) => self.v6.lookup(key(addr)),
        }
    }

    /// Routes held.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether no route is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T: PartialEq> AllowedIps<T> {
    /// Whether a packet from `source`, decrypted from `peer`'s tunnel, may be delivered:
    /// the table routes `source` to that same peer.
    pub fn allows(&self, peer: &T, source: &IpAddr) -> bool {
        self.lookup(source) == Some(peer)
    }
}

/// The source and destination of an IP packet that `tunnel::frame::classify` accepted
/// (an IPv4 packet of at least 20 bytes or an IPv6 packet of at least 40); `None` for
/// anything shorter.
pub fn endpoints(packet: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => {
            let v4 = |at: usize| {
                IpAddr::V4(Ipv4Addr::new(packet[at], packet[at + 1], packet[at + 2], packet[at + 3]))
            };
            Some((v4(12), v4(16)))
        }
        6 if packet.len() >= 40 => {
            let v6 = |at: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&packet[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(b))
            };
            Some((v6(8), v6(24)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn p(s: &str) -> IpPrefix {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_parse_and_clear_host_bits() {
        assert_eq!(p("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(p("fd12:3456:789a::1/48").to_string(), "fd12:3456:789a::/48");
        assert_eq!(p("0.0.0.0/0").len(), 0);
        assert!(p("0.0.0.0/0").contains(&ip("203.0.113.9")));
        assert!(!p("0.0.0.0/0").contains(&ip("::1")), "families do not mix");
        assert_eq!("10.0.0.0/33".parse::<IpPrefix>(), Err(PrefixError::Length { len: 33, bits: 32 }));
        assert!(matches!("10.0.0.0".parse::<IpPrefix>(), Err(PrefixError::Syntax(_))));
        assert!(matches!("x/8".parse::<IpPrefix>(), Err(PrefixError::Syntax(_))));
    }

    #[test]
    fn the_longest_prefix_wins_and_sources_are_checked() {
        let mut t = AllowedIps::default();
        t.insert(p("100.64.0.0/10"), "gateway");
        t.insert(IpPrefix::host(ip("100.64.0.7")), "a");
        t.insert(p("fd00:1:2::/48"), "gateway");
        t.insert(IpPrefix::host(ip("fd00:1:2::7")), "a");
        assert_eq!(t.lookup(&ip("100.64.0.7")), Some(&"a"));
        assert_eq!(t.lookup(&ip("100.64.0.8")), Some(&"gateway"));
        assert_eq!(t.lookup(&ip("100.128.0.1")), None);
        assert_eq!(t.lookup(&ip("fd00:1:2::7")), Some(&"a"));
        assert_eq!(t.lookup(&ip("fd00:1:2::8")), Some(&"gateway"));
        assert!(t.allows(&"a", &ip("100.64.0.7")));
        assert!(!t.allows(&"a", &ip("100.64.0.8")), "a spoofed source");
        assert_eq!(t.len(), 4);
        t.retain(|v| *v != "a");
        assert_eq!(t.lookup(&ip("100.64.0.7")), Some(&"gateway"));
        assert_eq!(t.remove(&p("100.64.0.0/10")), Some("gateway"));
        assert_eq!(t.lookup(&ip("100.64.0.7")), None);
        assert_eq!(t.len(), 1);
    }

    /// Against a brute-force model: random prefixes of both families, random lookups.
    #[test]
    fn lookups_match_a_linear_scan() {
        let mut rng = StdRng::seed_from_u64(11);
        let mut t = AllowedIps::default();
        let mut model: Vec<(IpPrefix, u32)> = Vec::new();
        let random_ip = |rng: &mut StdRng, v6: bool| -> IpAddr {
            if v6 {
                let mut b = [0u8; 16];
                b[0] = 0xfd;
                b[1] = (rng.next_u32() % 4) as u8;
                b[15] = rng.next_u32() as u8;
                IpAddr::V6(Ipv6Addr::from(b))
            } else {
                IpAddr::V4(Ipv4Addr::new(10, (rng.next_u32() % 4) as u8, 0, rng.next_u32() as u8))
            }
        };
        for i in 0..400u32 {
            let v6 = i % 2 == 0;
            let len = if v6 {
                [8u8, 16, 48, 120, 128][i as usize % 5]
            } else {
                [8u8, 16, 24, 30, 32][i as usize % 5]
            };
            let prefix = IpPrefix::new(random_ip(&mut rng, v6), len).unwrap();
            t.insert(prefix, i);
            model.retain(|(q, _)| *q != prefix);
            model.push((prefix, i));
        }
        for _ in 0..5_000 {
            let v6 = rng.next_u32() % 2 == 0;
            let addr = random_ip(&mut rng, v6);
            let expected =
                model.iter().filter(|(q, _)| q.contains(&addr)).max_by_key(|(q, _)| q.len()).map(|(_, v)| v);
            assert_eq!(t.lookup(&addr), expected, "{addr}");
        }
    }

    #[test]
    fn endpoints_of_packets() {
        let mut v4 = [0u8; 20];
        v4[0] = 0x45;
        v4[12..16].copy_from_slice(&[100, 64, 0, 1]);
        v4[16..20].copy_from_slice(&[100, 64, 0, 2]);
        assert_eq!(endpoints(&v4), Some((ip("100.64.0.1"), ip("100.64.0.2"))));
        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        v6[8] = 0xfd;
        v6[24] = 0xfd;
        v6[39] = 2;
        assert_eq!(endpoints(&v6), Some((ip("fd00::"), ip("fd00::2"))));
        assert_eq!(endpoints(&v4[..19]), None);
        assert_eq!(endpoints(&[]), None);
        assert_eq!(endpoints(&[0x12; 40]), None);
    }
}
