//! Connection admission per source address, sans I/O: at most
//! [`AdmissionLimits::pending_per_ip`] inbound connections from one IP address may be in
//! their upgrade (handshake) at once, and at most
//! [`AdmissionLimits::established_per_ip`] established, whatever the transport.
//!
//! A node-wide bound on pending connections, shared by every source, lets one host that
//! opens a few hundred connections and says nothing hold every slot until the upgrade
//! timeout, so no newcomer gets in; with a bound per address it takes many addresses to
//! fill the node. The bound on established connections is generous (a farm of GPU
//! machines behind one NAT shares an address, and is welcome) but keeps one host with
//! many identities from taking every inbound slot.
//!
//! The caller names each connection by its own id `C` and says which address it counts
//! against (`None`: not counted, e.g. loopback or a relayed connection, see
//! [`counted_ip`]), then reports how it ends. Every count is given back: once each
//! connection has ended, the table is empty.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;

use crate::tally::Tally;

/// The bounds. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Inbound connections from one address in their upgrade at once.
    pub pending_per_ip: usize,
    /// Established inbound connections from one address at once.
    pub established_per_ip: usize,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        Self { pending_per_ip: 8, established_per_ip: 128 }
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Too many connections from the address are in their upgrade.
    #[error("{pending} connections from {ip} are already being set up (at most {limit})")]
    TooManyPending {
        /// The source address.
        ip: IpAddr,
        /// Its connections in their upgrade.
        pending: usize,
        /// The bound.
        limit: usize,
    },
    /// Too many connections from the address are established.
    #[error("{established} connections from {ip} are already established (at most {limit})")]
    TooManyEstablished {
        /// The source address.
        ip: IpAddr,
        /// Its established inbound connections.
        established: usize,
        /// The bound.
        limit: usize,
    },
}

/// `ip`, or the IPv4 address an IPv4-mapped IPv6 address carries.
pub fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The address an inbound connection from `ip` counts against: `ip` itself (an IPv4
/// address mapped into IPv6 as the IPv4 address), or none for loopback (local tools and
/// tests).
pub fn counted_ip(ip: IpAddr) -> Option<IpAddr> {
    let ip = unmapped(ip);
    (!ip.is_loopback()).then_some(ip)
}

/// Counts per address of one stage (pending or established).
#[derive(Debug, Clone)]
struct Stage<C> {
    of: HashMap<C, IpAddr>,
    per_ip: Tally<IpAddr>,
}

impl<C> Default for Stage<C> {
    fn default() -> Self {
        Self { of: HashMap::new(), per_ip: Tally::default() }
    }
}

impl<C: Hash + Eq> Stage<C> {
    fn count(&self, ip: IpAddr) -> usize {
        self.per_ip.get(&ip)
    }

    fn add(&mut self, c: C, ip: IpAddr) {
        if let Some(old) = self.of.insert(c, ip) {
            self.per_ip.remove(&old);
        }
        self.per_ip.add(ip);
    }

    fn remove(&mut self, c: &C) {
        if let Some(ip) = self.of.remove(c) {
            self.per_ip.remove(&ip);
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Admission<C> {
    limits: AdmissionLimits,
    pending: Stage<C>,
    established: Stage<C>,
    denied: u64,
}

impl<C: Hash + Eq> Default for Admission<C> {
    fn default() -> Self {
        Self::new(AdmissionLimits::default())
    }
}

impl<C: Hash + Eq> Admission<C> {
    /// An empty table with these bounds.
    pub fn new(limits: AdmissionLimits) -> Self {
        Self { limits, pending: Stage::default(), established: Stage::default(), denied: 0 }
    }

    /// The bounds.
    pub fn limits(&self) -> AdmissionLimits {
        self.limits
    }

    /// An inbound connection `c` from `ip` (`None`: not counted) starts its upgrade.
    pub fn pending(&mut self, c: C, ip: Option<IpAddr>) -> Result<(), Refused> {
        let Some(ip) = ip else { return Ok(()) };
        let pending = self.pending.count(ip);
        if pending >= self.limits.pending_per_ip {
            self.denied += 1;
            return Err(Refused::TooManyPending { ip, pending, limit: self.limits.pending_per_ip });
        }
        self.pending.add(c, ip);
        Ok(())
    }

    /// The inbound connection `c` from `ip` finished its upgrade: its pending slot is
    /// given back, and it is admitted if its address has room.
    pub fn established(&mut self, c: C, ip: Option<IpAddr>) -> Result<(), Refused> {
        self.pending.remove(&c);
        let Some(ip) = ip else { return Ok(()) };
        let established = self.established.count(ip);
        if established >= self.limits.established_per_ip {
            self.denied += 1;
            return Err(Refused::TooManyEstablished {
                ip,
                established,
                limit: self.limits.established_per_ip,
            });
        }
        self.established.add(c, ip);
        Ok(())
    }

    /// The connection `c` ended, at whatever stage (its upgrade failed or timed out, or
    /// it closed): whatever it held is given back. Unknown connections are ignored.
    pub fn ended(&mut self, c: &C) {
        self.pending.remove(c);
        self.established.remove(c);
    }

    /// The connection `c` finished its upgrade without asking for admission (an
    /// outbound one, or one admitted elsewhere): its pending slot is given back.
    pub fn upgraded(&mut self, c: &C) {
        self.pending.remove(c);
    }

    /// Connections refused so far.
    pub fn denied(&self) -> u64 {
        self.denied
    }

    /// Connections from `ip` in their upgrade, and established.
    pub fn counts(&self, ip: IpAddr) -> (usize, usize) {
        (self.pending.count(ip), self.established.count(ip))
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.pending.of.is_empty()
            && self.pending.per_ip.is_empty()
            && self.established.of.is_empty()
            && self.established.per_ip.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn one_address_holds_at_most_its_share_and_gets_it_back() {
        let limits = AdmissionLimits::default();
        let mut a: Admission<u32> = Admission::new(limits);
        let from = ip("192.0.2.7");
        for c in 0..limits.pending_per_ip as u32 {
            a.pending(c, from).unwrap();
        }
        assert!(matches!(a.pending(100, from), Err(Refused::TooManyPending { pending: 8, .. })));
        assert_eq!(a.denied(), 1);
        a.pending(101, ip("192.0.2.8")).unwrap();
        a.pending(102, None).unwrap();
        // One upgrade ends: one more fits.
        a.established(0, from).unwrap();
        a.pending(103, from).unwrap();
        assert!(a.pending(104, from).is_err());
        for c in (1..limits.pending_per_ip as u32).chain([0, 101, 102, 103]) {
            a.ended(&c);
        }
        assert!(a.is_empty(), "{a:?}");
    }

    #[test]
    fn established_connections_per_address_are_bounded_and_given_back() {
        let limits = AdmissionLimits { pending_per_ip: 2, established_per_ip: 3 };
        let mut a: Admission<u32> = Admission::new(limits);
        let from = ip("2001:db8::1");
        let open = |a: &mut Admission<u32>, c, from| a.pending(c, from).and_then(|()| a.established(c, from));
        for c in 0..3 {
            open(&mut a, c, from).unwrap();
        }
        assert!(matches!(
            open(&mut a, 9, from),
            Err(Refused::TooManyEstablished { established: 3, limit: 3, .. })
        ));
        // The refused one holds nothing; its end is harmless.
        a.ended(&9);
        assert_eq!(a.counts(from.unwrap()), (0, 3));
        a.ended(&1);
        open(&mut a, 10, from).unwrap();
        for c in [0, 2, 10] {
            a.ended(&c);
        }
        assert!(a.is_empty());
        // An id reused for another address moves its count.
        a.pending(1, from).unwrap();
        a.pending(1, ip("2001:db8::2")).unwrap();
        assert_eq!(a.counts(from.unwrap()), (0, 0));
        a.upgraded(&1);
        assert!(a.is_empty());
    }

    #[test]
    fn loopback_is_not_counted_and_mapped_addresses_are_their_ipv4() {
        assert_eq!(counted_ip("127.0.0.1".parse().unwrap()), None);
        assert_eq!(counted_ip("::1".parse().unwrap()), None);
        assert_eq!(counted_ip("::ffff:192.0.2.7".parse().unwrap()), ip("192.0.2.7"));
        assert_eq!(counted_ip("2001:db8::1".parse().unwrap()), ip("2001:db8::1"));
    }
}
