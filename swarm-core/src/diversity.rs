//! Address-range diversity of a Kademlia routing table, sans I/O, as go-libp2p-kad-dht
//! does since CVE-2020-10937: at most [`DiversityLimits::per_bucket`] peers of one
//! address range (an IPv4 /24, an IPv6 /48) in one bucket, and at most
//! [`DiversityLimits::per_table`] in the whole table. An attacker with one range then
//! cannot fill a victim's table with identities (an eclipse), however many it makes:
//! look-ups keep meeting honest nodes.
//!
//! Addresses that are not global (loopback, private, link-local, shared, documentation)
//! are not limited: a LAN of GPU machines, or a test on one host, shares one range, and
//! an attacker who reaches a node from inside its LAN has other means anyway.
//!
//! The caller (the node's driver, or [`crate::diversity::sim`]) asks [`RoutingDiversity::admit`]
//! before it inserts a peer into a bucket, and reports [`RoutingDiversity::removed`] when
//! the table drops one (an eviction, a failure).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;

use crate::tally::Tally;

pub mod lookup;
pub mod sim;

/// An address range: the first 24 bits of an IPv4 address, or the first 48 of an IPv6
/// one (an IPv4 address mapped into IPv6 counts as the IPv4 address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Range {
    /// An IPv4 /24.
    V4([u8; 3]),
    /// An IPv6 /48.
    V6([u16; 3]),
}

impl Range {
    /// The range of `ip`, or `None` when `ip` is not a global address (not limited).
    pub fn of(ip: IpAddr) -> Option<Self> {
        match crate::admission::unmapped(ip) {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                let shared = o[0] == 100 && (o[1] & 0xC0) == 64; // 100.64.0.0/10, carrier NAT
                let benchmarking = o[0] == 198 && (o[1] & 0xFE) == 18; // 198.18.0.0/15
                let local = v4.is_private()
                    || v4.is_loopback()
                    || v4.is_link_local()
                    || v4.is_unspecified()
                    || v4.is_broadcast()
                    || v4.is_documentation()
                    || v4.is_multicast()
                    || shared
                    || benchmarking
                    || o[0] == 0
                    || o[0] >= 240;
                (!local).then_some(Self::V4([o[0], o[1], o[2]]))
            }
            IpAddr::V6(v6) => {
                let s = v6.segments();
                // Global unicast is 2000::/3; documentation 2001:db8::/32 is not.
                let global = (s[0] & 0xE000) == 0x2000 && !(s[0] == 0x2001 && s[1] == 0x0db8);
                global.then_some(Self::V6([s[0], s[1], s[2]]))
            }
        }
    }
}

/// The bounds. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiversityLimits {
    /// Peers of one range in one bucket (2, as go-libp2p-kad-dht).
    pub per_bucket: usize,
    /// Peers of one range in the whole table (3, as go-libp2p-kad-dht).
    pub per_table: usize,
}

impl Default for DiversityLimits {
    fn default() -> Self {
        Self { per_bucket: 2, per_table: 3 }
    }
}

/// Why a peer was kept out of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Crowded {
    /// Its bucket already holds the limit of its range.
    #[error("bucket {bucket} already holds {held} peers of {range:?} (at most {limit})")]
    Bucket {
        /// The bucket.
        bucket: u16,
        /// The range.
        range: Range,
        /// Peers of the range in the bucket.
        held: usize,
        /// The bound.
        limit: usize,
    },
    /// The table already holds the limit of its range.
    #[error("the table already holds {held} peers of {range:?} (at most {limit})")]
    Table {
        /// The range.
        range: Range,
        /// Peers of the range in the table.
        held: usize,
        /// The bound.
        limit: usize,
    },
}

/// See the module docs. `P`: how the caller names peers.
#[derive(Debug, Clone)]
pub struct RoutingDiversity<P> {
    limits: DiversityLimits,
    /// Each counted peer's bucket and range.
    peers: HashMap<P, (u16, Range)>,
    per_bucket: Tally<(u16, Range)>,
    per_table: Tally<Range>,
    refused: u64,
}

impl<P: Hash + Eq + Clone> RoutingDiversity<P> {
    /// An empty table with these bounds.
    pub fn new(limits: DiversityLimits) -> Self {
        Self {
            limits,
            peers: HashMap::new(),
            per_bucket: Tally::default(),
            per_table: Tally::default(),
            refused: 0,
        }
    }

    /// Whether `peer`, reached at `ip`, may go into `bucket`; if so it is counted there
    /// until [`Self::removed`]. A peer already counted is moved (a new address).
    pub fn admit(&mut self, peer: P, bucket: u16, ip: IpAddr) -> Result<(), Crowded> {
        self.removed(&peer);
        let Some(range) = Range::of(ip) else { return Ok(()) };
        let in_bucket = self.per_bucket.get(&(bucket, range));
        if in_bucket >= self.limits.per_bucket {
            self.refused += 1;
            return Err(Crowded::Bucket { bucket, range, held: in_bucket, limit: self.limits.per_bucket });
        }
        let in_table = self.per_table.get(&range);
        if in_table >= self.limits.per_table {
            self.refused += 1;
            return Err(Crowded::Table { range, held: in_table, limit: self.limits.per_table });
        }
        self.per_bucket.add((bucket, range));
        self.per_table.add(range);
        self.peers.insert(peer, (bucket, range));
        Ok(())
    }

    /// The table dropped `peer`: its place is given back. Unknown peers are ignored.
    pub fn removed(&mut self, peer: &P) {
        let Some((bucket, range)) = self.peers.remove(peer) else { return };
        self.per_bucket.remove(&(bucket, range));
        self.per_table.remove(&range);
    }

    /// Keeps the places of the peers `keep` says are still in the table; the others'
    /// are given back (a table that dropped peers without saying so).
    pub fn retain(&mut self, mut keep: impl FnMut(&P) -> bool) {
        let gone: Vec<P> = self.peers.keys().filter(|p| !keep(p)).cloned().collect();
        for p in gone {
            self.removed(&p);
        }
    }

    /// Peers kept out so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Peers counted (those with a global address).
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is counted.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty() && self.per_bucket.is_empty() && self.per_table.is_empty()
    }
}

/// Provider records of one key (a namespace's) from one address range, at most. A
/// Kademlia node keeps 20 providers per key and ignores newcomers once it has them, so
/// without this cap identities from one range could take every slot and hide the
/// namespace's honest members from look-ups.
pub const PROVIDERS_PER_RANGE: usize = 2;

/// Whether a provider record from `range` may join a key whose current providers come
/// from `held` (their ranges; `None` for local addresses). Local addresses are not
/// limited.
pub fn provider_admitted(held: impl IntoIterator<Item = Option<Range>>, range: Option<Range>) -> bool {
    let Some(range) = range else { return true };
    held.into_iter().filter(|r| *r == Some(range)).count() < PROVIDERS_PER_RANGE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_are_slash_24_and_slash_48_of_global_addresses_only() {
        assert_eq!(Range::of(ip("8.8.4.4")), Some(Range::V4([8, 8, 4])));
        assert_eq!(Range::of(ip("8.8.4.200")), Range::of(ip("8.8.4.4")));
        assert_ne!(Range::of(ip("8.8.5.4")), Range::of(ip("8.8.4.4")));
        assert_eq!(Range::of(ip("::ffff:8.8.4.4")), Some(Range::V4([8, 8, 4])));
        assert_eq!(Range::of(ip("2a00:1450:4001:81c::200e")), Some(Range::V6([0x2a00, 0x1450, 0x4001])));
        for local in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "172.16.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "192.0.2.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "2001:db8::1",
        ] {
            assert_eq!(Range::of(ip(local)), None, "{local}");
        }
    }

    #[test]
    fn a_key_takes_two_providers_per_range() {
        let a = Range::of(ip("203.0.114.1"));
        let b = Range::of(ip("203.0.115.1"));
        assert!(provider_admitted([], a));
        assert!(provider_admitted([a, b, None], a));
        assert!(!provider_admitted([a, b, a], a));
        assert!(provider_admitted([a, a, a], b));
        assert!(provider_admitted([None, None, None], None), "local addresses are not limited");
    }

    #[test]
    fn one_range_gets_two_per_bucket_three_per_table_and_its_places_back() {
        let mut d: RoutingDiversity<u32> = RoutingDiversity::new(DiversityLimits::default());
        d.admit(1, 7, ip("203.0.114.1")).unwrap();
        d.admit(2, 7, ip("203.0.114.2")).unwrap();
        assert!(matches!(d.admit(3, 7, ip("203.0.114.3")), Err(Crowded::Bucket { held: 2, .. })));
        d.admit(3, 8, ip("203.0.114.3")).unwrap();
        assert!(matches!(d.admit(4, 9, ip("203.0.114.4")), Err(Crowded::Table { held: 3, .. })));
        assert_eq!(d.refused(), 2);
        // Other ranges and local addresses are not held back.
        d.admit(5, 7, ip("203.0.115.1")).unwrap();
        for p in 10..100 {
            d.admit(p, 7, ip("10.0.0.1")).unwrap();
        }
        // A peer dropped gives its place back; a peer moved counts once.
        d.retain(|p| *p != 1);
        d.admit(4, 9, ip("203.0.114.4")).unwrap();
        d.admit(4, 9, ip("203.0.114.4")).unwrap();
        assert_eq!(d.len(), 4);
        for p in [2, 3, 4, 5] {
            d.removed(&p);
        }
        assert!(d.is_empty(), "{d:?}");
    }
}
