//! [`Ipv4Claimer`]: a node's IPv4 overlay address, kept free of clashes with no
//! coordinator. The node claims a candidate of the range in its signed record; every
//! peer's claim is fed in as its record arrives or leaves. When a peer's claim of the
//! same address outranks ours, the node moves to its next free candidate and says so
//! once ([`Ipv4Claimer::poll_changed`]), to republish its record and persist its `n`.
//! The claimer also answers which peer holds an address (the best-ranked claimant).

use std::collections::HashMap;
use std::net::Ipv4Addr;

use libp2p_identity::PeerId;

use super::{keeps, Ipv4Claim, Ipv4Range};

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Ipv4Claimer {
    range: Ipv4Range,
    local: PeerId,
    ours: Option<Ipv4Claim>,
    /// Each peer's claim (inside the range).
    by_peer: HashMap<PeerId, Ipv4Claim>,
    /// Who claims each address (usually one).
    by_addr: HashMap<Ipv4Addr, Vec<PeerId>>,
    changed: bool,
}

impl Ipv4Claimer {
    /// A claimer for `local` in `range`, starting at candidate `from` (0, or the `n` a
    /// previous run persisted).
    pub fn new(range: Ipv4Range, local: PeerId, from: u32) -> Self {
        let mut c = Self {
            range,
            local,
            ours: None,
            by_peer: HashMap::new(),
            by_addr: HashMap::new(),
            changed: true,
        };
        c.ours = range.claim(&local, from, |_| None);
        c
    }

    /// The range.
    pub fn range(&self) -> Ipv4Range {
        self.range
    }

    /// Our claim (`None` only when the range had no free candidate).
    pub fn claim(&self) -> Option<Ipv4Claim> {
        self.ours
    }

    /// Our claim, once after each change of it.
    pub fn poll_changed(&mut self) -> Option<Ipv4Claim> {
        std::mem::take(&mut self.changed).then_some(self.ours).flatten()
    }

    /// The best-ranked claimant of `addr` other than us.
    fn best_other(&self, addr: &Ipv4Addr) -> Option<(PeerId, Ipv4Claim)> {
        let claimants = self.by_addr.get(addr)?;
        claimants.iter().filter_map(|p| Some((*p, *self.by_peer.get(p)?))).reduce(|a, b| {
            if keeps(&a.0, &a.1, &b.0, &b.1) {
                a
            } else {
                b
            }
        })
    }

    /// The peer that holds `addr`: us, or the best-ranked claimant.
    pub fn holder(&self, addr: &Ipv4Addr) -> Option<PeerId> {
        let other = self.best_other(addr);
        match (self.ours.filter(|c| c.addr == *addr), other) {
            (Some(ours), Some((p, theirs))) if !keeps(&self.local, &ours, &p, &theirs) => Some(p),
            (Some(_), _) => Some(self.local),
            (None, other) => other.map(|(p, _)| p),
        }
    }

    /// The address `peer` holds: its claim, unless a better-ranked claimant (or we) keeps
    /// that address.
    pub fn address_of(&self, peer: &PeerId) -> Option<Ipv4Addr> {
        if *peer == self.local {
            return self.ours.map(|c| c.addr);
        }
        let claim = self.by_peer.get(peer)?;
        (self.holder(&claim.addr) == Some(*peer)).then_some(claim.addr)
    }

    /// A claim for `claimant`, another identity this node claims for (a stock WireGuard
    /// peer it is the gateway of: [`super::stock_peer_id`]), from its candidate `from`:
    /// the first that nobody else holds or that it would keep, against our claim too.
    /// Feed it back with [`Self::handle_claim`], like any claim; when
    /// [`Self::address_of`] no longer gives it, it was outranked: claim again from `n + 1`.
    pub fn claim_for(&self, claimant: &PeerId, from: u32) -> Option<Ipv4Claim> {
        let ours = self.ours.map(|c| (self.local, c));
        self.range.claim(claimant, from, |addr| {
            let others = self.by_addr.get(addr).into_iter().flatten().filter(|p| *p != claimant);
            others
                .filter_map(|p| Some((*p, *self.by_peer.get(p)?)))
                .chain(ours.filter(|(_, c)| c.addr == *addr))
                .reduce(|a, b| if keeps(&a.0, &a.1, &b.0, &b.1) { a } else { b })
        })
    }

    /// `peer`'s record claims `claim` (`None`: no claim, or its record left the view).
    pub fn handle_claim(&mut self, peer: PeerId, claim: Option<Ipv4Claim>) {
        if peer == self.local {
            return;
        }
        if let Some(old) = self.by_peer.remove(&peer) {
            if let Some(v) = self.by_addr.get_mut(&old.addr) {
                v.retain(|p| *p != peer);
                if v.is_empty() {
                    self.by_addr.remove(&old.addr);
                }
            }
        }
        let Some(claim) = claim.filter(|c| self.range.contains(&c.addr)) else { return };
        self.by_peer.insert(peer, claim);
        self.by_addr.entry(claim.addr).or_default().push(peer);
        let Some(ours) = self.ours else { return };
        if ours.addr == claim.addr && !keeps(&self.local, &ours, &peer, &claim) {
            // Outranked: the next candidate that is free, or that we would keep.
            let next = self.range.claim(&self.local, ours.n.saturating_add(1), |a| self.best_other(a));
            self.ours = next;
            self.changed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::tests::peer;

    /// A gateway claims for its stock peers with the same rules as for itself: never an
    /// address it holds, never one a better-ranked claim holds, and it learns when a
    /// stock peer's claim was outranked.
    #[test]
    fn claims_for_stock_peers_avoid_held_addresses() {
        let range: Ipv4Range = "10.8.0.0/24".parse().unwrap();
        let gateway = peer(1);
        let mut c = Ipv4Claimer::new(range, gateway, 0);
        let ours = c.claim().unwrap();
        let mut given = Vec::new();
        for k in 0..6u8 {
            let id = crate::overlay::stock_peer_id(&[k; 32]);
            let claim = c.claim_for(&id, 0).unwrap();
            c.handle_claim(id, Some(claim));
            assert_eq!(c.address_of(&id), Some(claim.addr), "a fresh claim holds");
            assert_ne!(claim.addr, ours.addr);
            assert!(!given.contains(&claim.addr), "{k}: {claim:?} given twice");
            given.push(claim.addr);
        }
        // A node's claim that outranks a stock peer's takes the address from it.
        let id = crate::overlay::stock_peer_id(&[0; 32]);
        let held = c.address_of(&id).unwrap();
        let stock_claim = c.claim_for(&id, 0).unwrap();
        assert_eq!(stock_claim.addr, held, "claiming again gives what it holds");
        let (p, claim) = (2..10_000)
            .map(peer)
            .find_map(|p| {
                (0..8)
                    .map(|n| range.candidate(&p, n))
                    .find(|cl| cl.addr == held && keeps(&p, cl, &id, &stock_claim))
                    .map(|cl| (p, cl))
            })
            .unwrap();
        c.handle_claim(p, Some(claim));
        assert_eq!(c.address_of(&id), None, "the stock peer was outranked");
        let again = c.claim_for(&id, stock_claim.n + 1).unwrap();
        assert_ne!(again.addr, held);
    }

    /// Two nodes whose first candidates clash in a /24.
    fn clashing(range: &Ipv4Range) -> (PeerId, PeerId) {
        let mut first: HashMap<Ipv4Addr, PeerId> = HashMap::new();
        (0..10_000)
            .map(peer)
            .find_map(|p| first.insert(range.candidate(&p, 0).addr, p).map(|q| (q, p)))
            .unwrap()
    }

    #[test]
    fn the_outranked_node_moves_once_and_both_agree_who_holds_what() {
        let range: Ipv4Range = "10.7.0.0/24".parse().unwrap();
        let (a, b) = clashing(&range);
        let mut ca = Ipv4Claimer::new(range, a, 0);
        let mut cb = Ipv4Claimer::new(range, b, 0);
        assert_eq!(ca.poll_changed(), ca.claim(), "the first claim is announced");
        assert_eq!(ca.poll_changed(), None);
        let _ = cb.poll_changed();
        assert_eq!(ca.claim().unwrap().addr, cb.claim().unwrap().addr);
        // Each hears the other's record.
        ca.handle_claim(b, cb.claim());
        cb.handle_claim(a, ca.claim());
        let moved = [ca.poll_changed(), cb.poll_changed()];
        assert_eq!(moved.iter().flatten().count(), 1, "exactly one moves: {moved:?}");
        // The mover's new claim reaches the other; both agree on every address.
        ca.handle_claim(b, cb.claim());
        cb.handle_claim(a, ca.claim());
        assert_ne!(ca.claim().unwrap().addr, cb.claim().unwrap().addr);
        for c in [&ca, &cb] {
            assert_eq!(c.address_of(&a), ca.claim().map(|x| x.addr));
            assert_eq!(c.address_of(&b), cb.claim().map(|x| x.addr));
            assert_eq!(c.holder(&ca.claim().unwrap().addr), Some(a));
        }
        assert_eq!(ca.poll_changed(), None);
        assert_eq!(cb.poll_changed(), None);
    }

    #[test]
    fn a_restart_keeps_its_candidate_and_departed_claims_free_their_address() {
        let range: Ipv4Range = "10.7.0.0/24".parse().unwrap();
        let (a, b) = clashing(&range);
        // `a` restarts from the n it persisted: its address is the same as before.
        let before = Ipv4Claimer::new(range, a, 3).claim().unwrap();
        assert_eq!(Ipv4Claimer::new(range, a, 3).claim(), Some(before));
        // A claim outside the range is ignored; a departed peer holds nothing.
        let mut c = Ipv4Claimer::new(range, peer(99_999), 0);
        c.handle_claim(b, Some(Ipv4Claim { addr: Ipv4Addr::new(192, 0, 2, 1), n: 0 }));
        assert_eq!(c.address_of(&b), None);
        let claim = range.candidate(&b, 0);
        c.handle_claim(b, Some(claim));
        assert_eq!(c.holder(&claim.addr), Some(b));
        c.handle_claim(b, None);
        assert_eq!(c.holder(&claim.addr), None);
    }
}
