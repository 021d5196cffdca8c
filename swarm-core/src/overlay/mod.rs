//! Overlay addresses (data-flow stage 8, the mesh VPN), computed with no coordinator.
//!
//! - **IPv6** (primary): each swarm has a /48 unique local prefix, `fd` and 40 bits of a
//!   keyed BLAKE2s of its namespace ([`OverlayV6::for_namespace`]). A node's address is
//!   in subnet 0 with a 64-bit interface id hashed from its `PeerId`
//!   ([`OverlayV6::node`]), so it survives tunnel-key rotation, every node computes every
//!   other node's address from the records it already holds, and taking over one needs a
//!   64-bit second preimage. Stock WireGuard peers behind a gateway get theirs in subnet
//!   1, hashed from their public key ([`OverlayV6::stock_peer`]).
//! - **IPv4** (compatibility): a range, `100.64.0.0/10` by default ([`Ipv4Range`]). A node
//!   claims `candidate(peer, n)` in its signed record, starting at `n = 0`; when two
//!   claims clash, the claim with the lower [`Ipv4Claim::rank`] keeps the address and
//!   the other node bumps `n` ([`Ipv4Range::claim`]). Both sides reach the same verdict
//!   from the same two records.
//! - [`Ipv4Claimer`]: a node's own IPv4 claim, moved when outranked, and who holds
//!   each address;
//! - [`routes`]: cryptokey routing, a longest-prefix table from overlay prefixes to peers
//!   ([`AllowedIps`]), which also checks the source of every packet a peer sends.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use blake2::digest::consts::U32;
use blake2::digest::{KeyInit, Mac};
use blake2::Blake2sMac;
use libp2p_identity::PeerId;

use crate::record::Namespace;

mod claims;
pub mod routes;
pub use claims::Ipv4Claimer;
pub use routes::{AllowedIps, IpPrefix, PrefixError};

/// The default IPv4 range: RFC 6598 shared address space, which home routers and
/// clouds rarely route.
pub const DEFAULT_IPV4_RANGE: &str = "100.64.0.0/10";
/// How many `n` a node tries before it gives up claiming an IPv4 address.
pub const MAX_IPV4_ATTEMPTS: u32 = 64;

/// Keyed BLAKE2s-256 of `parts` under the domain label `key`.
fn hash(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // Labels are short constants, well inside BLAKE2s's 1..=32-byte keys.
    let mut mac = match <Blake2sMac<U32> as KeyInit>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return [0; 32],
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

fn first_u64(h: &[u8; 32]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    u64::from_be_bytes(b)
}

/// The identity under which a stock WireGuard peer's IPv4 claim is ranked beside node
/// claims: a `PeerId` holding a hash of its static key, which no libp2p key has (it
/// would need a preimage of that hash).
pub fn stock_peer_id(public_key: &[u8; 32]) -> PeerId {
    // A multihash: code 0x12 (SHA2-256, the code PeerId takes for hashed keys), length
    // 32, then the digest.
    let mut bytes = [0u8; 34];
    bytes[..2].copy_from_slice(&[0x12, 0x20]);
    bytes[2..].copy_from_slice(&hash(b"swarm stock peer id", &[public_key]));
    #[allow(clippy::expect_used)]
    PeerId::from_bytes(&bytes).expect("a SHA2-256 multihash of 32 bytes is a valid PeerId")
}

/// A swarm's IPv6 overlay: its /48 unique local prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OverlayV6 {
    /// `fd` and 40 bits.
    prefix: [u8; 6],
}

impl OverlayV6 {
    /// The overlay of `namespace`.
    pub fn for_namespace(namespace: &Namespace) -> Self {
        let h = hash(b"swarm overlay v6 prefix", &[namespace.as_str().as_bytes()]);
        let mut prefix = [0u8; 6];
        prefix[0] = 0xfd;
        prefix[1..].copy_from_slice(&h[..5]);
        Self { prefix }
    }

    /// The /48 prefix, as an address with the host bits zero; its length is 48.
    pub fn prefix(&self) -> Ipv6Addr {
        self.address(0, [0; 8])
    }

    fn address(&self, subnet: u16, iid: [u8; 8]) -> Ipv6Addr {
        let mut b = [0u8; 16];
        b[..6].copy_from_slice(&self.prefix);
        b[6..8].copy_from_slice(&subnet.to_be_bytes());
        b[8..].copy_from_slice(&iid);
        Ipv6Addr::from(b)
    }

    fn iid(&self, label: &[u8], id: &[u8]) -> [u8; 8] {
        let mut iid = [0u8; 8];
        iid.copy_from_slice(&hash(label, &[&self.prefix, id])[..8]);
        iid
    }

    /// The address of swarm node `peer` (subnet 0).
    pub fn node(&self, peer: &PeerId) -> Ipv6Addr {
        self.address(0, self.iid(b"swarm overlay v6 node", &peer.to_bytes()))
    }

    /// The address of a stock WireGuard peer with static key `public_key`, behind a
    /// gateway (subnet 1).
    pub fn stock_peer(&self, public_key: &[u8; 32]) -> Ipv6Addr {
        self.address(1, self.iid(b"swarm overlay v6 stock", public_key))
    }

    /// Whether `addr` is inside this overlay.
    pub fn contains(&self, addr: &Ipv6Addr) -> bool {
        addr.octets()[..6] == self.prefix
    }
}

impl fmt::Display for OverlayV6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/48", self.prefix())
    }
}

/// An IPv4 range the overlay's addresses are claimed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Range {
    network: u32,
    prefix_len: u8,
}

/// Why an IPv4 range is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Ipv4RangeError {
    /// Not `A.B.C.D/LEN`.
    #[error("{0:?} is not an IPv4 range: write it as A.B.C.D/LEN, for example 100.64.0.0/10")]
    Syntax(String),
    /// The prefix length leaves too few or too many addresses.
    #[error("an IPv4 overlay range needs a prefix length from 8 to 24, not /{0}")]
    Length(u8),
    /// Host bits are set.
    #[error("{range} has host bits set: did you mean {network}/{len}?")]
    HostBits {
        /// What was given.
        range: String,
        /// The network it is in.
        network: Ipv4Addr,
        /// Its length.
        len: u8,
    },
}

impl FromStr for Ipv4Range {
    type Err = Ipv4RangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || Ipv4RangeError::Syntax(s.to_owned());
        let (addr, len) = s.trim().split_once('/').ok_or_else(syntax)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| syntax())?;
        let len: u8 = len.parse().map_err(|_| syntax())?;
        if !(8..=24).contains(&len) {
            return Err(Ipv4RangeError::Length(len));
        }
        let mask = u32::MAX << (32 - len);
        let bits = u32::from(addr);
        if bits & !mask != 0 {
            let network = Ipv4Addr::from(bits & mask);
            return Err(Ipv4RangeError::HostBits { range: s.trim().to_owned(), network, len });
        }
        Ok(Self { network: bits, prefix_len: len })
    }
}

impl fmt::Display for Ipv4Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.network), self.prefix_len)
    }
}

impl Default for Ipv4Range {
    fn default() -> Self {
        Self { network: u32::from(Ipv4Addr::new(100, 64, 0, 0)), prefix_len: 10 }
    }
}

/// One node's claim of an IPv4 address, as its signed record carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Claim {
    /// The address.
    pub addr: Ipv4Addr,
    /// Which candidate of the node it is.
    pub n: u32,
}

impl Ipv4Claim {
    /// The claim's rank in a clash: the lower keeps the address. A hash of the claimant
    /// and `n`, so no node can choose to win, and both sides compute the same.
    pub fn rank(&self, peer: &PeerId) -> u64 {
        first_u64(&hash(b"swarm overlay v4 rank", &[&peer.to_bytes(), &self.n.to_be_bytes()]))
    }
}

impl Ipv4Range {
    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network)
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Addresses a node can claim: all but the network and broadcast addresses.
    pub fn hosts(&self) -> u32 {
        (1u32 << (32 - self.prefix_len)) - 2
    }

    /// Whether `addr` is inside the range.
    pub fn contains(&self, addr: &Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix_len);
        u32::from(*addr) & mask == self.network
    }

    /// Candidate `n` of `peer`: a host address of the range, hashed from both.
    pub fn candidate(&self, peer: &PeerId, n: u32) -> Ipv4Claim {
        let h = first_u64(&hash(b"swarm overlay v4 addr", &[&peer.to_bytes(), &n.to_be_bytes()]));
        let host = 1 + (h % u64::from(self.hosts())) as u32;
        Ipv4Claim { addr: Ipv4Addr::from(self.network + host), n }
    }

    /// The claim `peer` should hold, starting from candidate `from` (its current one, or
    /// 0), given `held(addr)`: another node's claim of that address, if any. A candidate
    /// is kept when nobody else claims it or when this claim outranks theirs (the other
    /// node will move). `None` after [`MAX_IPV4_ATTEMPTS`] candidates (a nearly full
    /// range).
    pub fn claim(
        &self,
        peer: &PeerId,
        from: u32,
        held: impl Fn(&Ipv4Addr) -> Option<(PeerId, Ipv4Claim)>,
    ) -> Option<Ipv4Claim> {
        (from..from.saturating_add(MAX_IPV4_ATTEMPTS)).map(|n| self.candidate(peer, n)).find(
            |ours| match held(&ours.addr) {
                None => true,
                Some((other, _)) if other == *peer => true,
                Some((other, theirs)) => keeps(peer, ours, &other, &theirs),
            },
        )
    }
}

/// Whether `a`'s claim keeps the address against `b`'s: the lower rank wins, ties (a
/// 64-bit collision) go to the lower peer id.
pub fn keeps(a: &PeerId, claim_a: &Ipv4Claim, b: &PeerId, claim_b: &Ipv4Claim) -> bool {
    (claim_a.rank(a), a.to_bytes()) < (claim_b.rank(b), b.to_bytes())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Test node `i`.
    pub(crate) fn peer(i: u32) -> PeerId {
        let mut seed = [0u8; 32];
        seed[..4].copy_from_slice(&i.to_be_bytes());
        seed[4] = 1;
        libp2p_identity::Keypair::ed25519_from_bytes(seed).unwrap().public().to_peer_id()
    }

    #[test]
    fn stock_peer_ids_are_stable_and_distinct() {
        let a = stock_peer_id(&[1; 32]);
        assert_eq!(a, stock_peer_id(&[1; 32]));
        assert_ne!(a, stock_peer_id(&[2; 32]));
        assert_ne!(a, peer(1));
    }

    #[test]
    fn ipv6_prefix_and_addresses_are_stable_unique_and_inside() {
        let a = OverlayV6::for_namespace(&Namespace::new("alpha").unwrap());
        let b = OverlayV6::for_namespace(&Namespace::new("beta").unwrap());
        assert_ne!(a, b);
        assert_eq!(a, OverlayV6::for_namespace(&Namespace::new("alpha").unwrap()));
        assert_eq!(a.prefix().octets()[0], 0xfd, "a unique local address");
        assert!(a.to_string().ends_with("/48"), "{a}");
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000 {
            let addr = a.node(&peer(i));
            assert!(a.contains(&addr) && !b.contains(&addr));
            assert_eq!(addr.segments()[3], 0, "subnet 0");
            assert_eq!(addr, a.node(&peer(i)), "stable");
            assert!(seen.insert(addr));
        }
        let stock = a.stock_peer(&[7; 32]);
        assert!(a.contains(&stock));
        assert_eq!(stock.segments()[3], 1, "subnet 1");
        assert_ne!(stock, a.stock_peer(&[8; 32]));
    }

    #[test]
    fn ipv4_ranges_parse_with_clear_errors() {
        let r: Ipv4Range = DEFAULT_IPV4_RANGE.parse().unwrap();
        assert_eq!(r, Ipv4Range::default());
        assert_eq!(r.to_string(), "100.64.0.0/10");
        assert_eq!(r.hosts(), (1 << 22) - 2);
        assert!(matches!("100.64.0.0".parse::<Ipv4Range>(), Err(Ipv4RangeError::Syntax(_))));
        assert!(matches!("100.64.0.300/10".parse::<Ipv4Range>(), Err(Ipv4RangeError::Syntax(_))));
        assert_eq!("10.0.0.0/30".parse::<Ipv4Range>(), Err(Ipv4RangeError::Length(30)));
        let err = "100.64.1.0/10".parse::<Ipv4Range>().unwrap_err();
        assert!(err.to_string().contains("did you mean 100.64.0.0/10"), "{err}");
    }

    #[test]
    fn candidates_are_host_addresses_of_the_range() {
        let r: Ipv4Range = "10.9.8.0/24".parse().unwrap();
        for i in 0..2000 {
            let c = r.candidate(&peer(i), i % 5);
            assert!(r.contains(&c.addr));
            let last = c.addr.octets()[3];
            assert!(last != 0 && last != 255, "{}", c.addr);
        }
    }

    /// Claims settle by themselves: each node claims in turn, knowing the others' current
    /// claims; whoever is outranked moves on. In a /24 with 100 nodes no two end on one
    /// address, and every node agrees with every other about who keeps what.
    #[test]
    fn clashing_claims_settle_on_distinct_addresses() {
        let r: Ipv4Range = "10.9.8.0/24".parse().unwrap();
        let peers: Vec<PeerId> = (0..100).map(peer).collect();
        let mut claims: std::collections::BTreeMap<PeerId, Ipv4Claim> = std::collections::BTreeMap::new();
        let mut changed = true;
        let mut rounds = 0;
        while changed {
            changed = false;
            rounds += 1;
            assert!(rounds < 50, "claims do not settle");
            for p in &peers {
                let from = claims.get(p).map_or(0, |c| c.n);
                let held = |a: &Ipv4Addr| {
                    claims.iter().find(|(q, c)| *q != p && c.addr == *a).map(|(q, c)| (*q, *c))
                };
                let claim = r.claim(p, from, held).expect("a free address");
                if claims.get(p) != Some(&claim) {
                    claims.insert(*p, claim);
                    changed = true;
                }
            }
        }
        let mut addrs: Vec<Ipv4Addr> = claims.values().map(|c| c.addr).collect();
        addrs.sort();
        addrs.dedup();
        assert_eq!(addrs.len(), peers.len());
        let bumped = claims.values().filter(|c| c.n > 0).count();
        println!("100 nodes in a /24: settled in {rounds} rounds, {bumped} moved past candidate 0");
        assert!(bumped > 0, "a /24 with 100 nodes has clashes to settle");
    }

    #[test]
    fn the_lower_rank_keeps_the_address_and_both_sides_agree() {
        let r: Ipv4Range = "10.0.0.0/24".parse().unwrap();
        // Find two nodes whose first candidates clash.
        let mut first: HashMap<Ipv4Addr, PeerId> = HashMap::new();
        let (a, b) = (0..10_000)
            .map(peer)
            .find_map(|p| {
                let addr = r.candidate(&p, 0).addr;
                first.insert(addr, p).map(|q| (q, p))
            })
            .unwrap();
        let (ca, cb) = (r.candidate(&a, 0), r.candidate(&b, 0));
        assert_eq!(ca.addr, cb.addr);
        assert_ne!(keeps(&a, &ca, &b, &cb), keeps(&b, &cb, &a, &ca), "exactly one keeps it");
        let (winner, loser) = if keeps(&a, &ca, &b, &cb) { (a, b) } else { (b, a) };
        let held_by = |who: PeerId, c: Ipv4Claim| move |x: &Ipv4Addr| (*x == c.addr).then_some((who, c));
        let w = r.claim(&winner, 0, held_by(loser, r.candidate(&loser, 0))).unwrap();
        let l = r.claim(&loser, 0, held_by(winner, r.candidate(&winner, 0))).unwrap();
        assert_eq!(w.n, 0, "the winner stays");
        assert!(l.n > 0 && l.addr != w.addr, "the loser moves: {l:?}");
    }
}
