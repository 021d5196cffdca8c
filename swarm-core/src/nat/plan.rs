//! [`PathPlanner`]: which way a tunnel to a peer behind a NAT should go, sans-IO. The
//! driver feeds it what it sees of each peer ([`PeerFacts`]) and the outcomes of its
//! punches and relayed paths; the planner says when to offer a hole punch and when to
//! open a relayed path, and through which relay. Every rule about who acts, when to try
//! again and which relay to use lives here, tested in virtual time:
//!
//! - only the lower `PeerId` of a pair acts (the other answers), so the two never race;
//! - a punch needs both records to say `easy` (a hard NAT's port cannot be predicted)
//!   and a libp2p connection to signal over; it is offered when the tunnel is down, when
//!   its direct path went quiet (lost), and, while relayed, every [`REPROBE`] (so a
//!   tunnel goes direct when the NATs let it);
//! - a relayed path is opened when both sides sit behind NATs and either is hard or a
//!   punch between them failed, no direct path is fresh and none is open or opening;
//!   after a failure the next relay is tried, [`RELAY_RETRY`] later.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use super::NatKind;

/// A punch that failed (or whose signalling did) is tried again after this.
pub const PUNCH_RETRY: Duration = Duration::from_secs(10);
/// While a tunnel is relayed, a punch is tried this often (issue 13: every 30 to 60 s).
pub const REPROBE: Duration = Duration::from_secs(45);
/// A relayed path that failed to open is tried again (through the next relay) after this.
pub const RELAY_RETRY: Duration = Duration::from_secs(5);

/// What the driver knows of one peer when it asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerFacts {
    /// Whether our `PeerId` is the lower of the pair.
    pub we_are_lower: bool,
    /// What our own record says we sit behind.
    pub our_nat: NatKind,
    /// What the peer's record says.
    pub their_nat: NatKind,
    /// Whether a libp2p connection (relayed or direct) exists, to signal a punch over.
    pub connected: bool,
    /// Whether the tunnel carries data.
    pub up: bool,
    /// Whether the tunnel's packets take a relayed path now.
    pub relayed: bool,
    /// Whether a direct endpoint carried an authenticated packet lately (or was punched).
    pub direct_fresh: bool,
    /// Whether a relayed path to the peer is open.
    pub relay_path: bool,
}

/// What to do about a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanAction<R> {
    /// Offer a hole punch.
    Punch,
    /// Open a relayed path through this relay.
    Relay(R),
}

#[derive(Debug, Default, Clone, Copy)]
struct PeerPlan {
    last_punch: Option<Instant>,
    punch_failed: bool,
    relay_opening: bool,
    last_relay: Option<Instant>,
    relay_failures: usize,
}

/// See the module docs. `P`: peers; `R`: relays (the same type in the node).
#[derive(Debug)]
pub struct PathPlanner<P> {
    peers: HashMap<P, PeerPlan>,
}

impl<P> Default for PathPlanner<P> {
    fn default() -> Self {
        Self { peers: HashMap::new() }
    }
}

fn natted(k: NatKind) -> bool {
    matches!(k, NatKind::Easy | NatKind::Hard)
}

fn since(now: Instant, t: Option<Instant>) -> Option<Duration> {
    t.map(|t| now.saturating_duration_since(t))
}

impl<P: Copy + Eq + Hash> PathPlanner<P> {
    /// What to do about `peer` now, given `facts` and the relays we may use (those we hold
    /// a reservation on and are connected to; sorted, so both sides of a swarm agree on
    /// their order). At most one action; the planner records it as started.
    pub fn decide(
        &mut self,
        now: Instant,
        peer: P,
        facts: &PeerFacts,
        relays: &[P],
    ) -> Option<PlanAction<P>> {
        if !facts.we_are_lower || !natted(facts.our_nat) || !natted(facts.their_nat) {
            return None;
        }
        let plan = self.peers.entry(peer).or_default();
        let both_easy = facts.our_nat == NatKind::Easy && facts.their_nat == NatKind::Easy;
        // A punch: both easy, a channel to signal over, and the tunnel down, relayed or
        // quiet on its direct path.
        let wants_punch = both_easy && facts.connected && (!facts.up || facts.relayed || !facts.direct_fresh);
        let wait = if facts.relayed { REPROBE } else { PUNCH_RETRY };
        if wants_punch && since(now, plan.last_punch).is_none_or(|d| d >= wait) {
            plan.last_punch = Some(now);
            return Some(PlanAction::Punch);
        }
        // A relayed path: no punch can work (or one failed), no direct path is fresh,
        // and none is open or opening.
        let punchable = both_easy && !plan.punch_failed;
        if punchable || facts.direct_fresh || facts.relay_path || plan.relay_opening || relays.is_empty() {
            return None;
        }
        if since(now, plan.last_relay).is_some_and(|d| d < RELAY_RETRY) {
            return None;
        }
        let usable: Vec<P> = relays.iter().copied().filter(|r| *r != peer).collect();
        let via = *usable.get(plan.relay_failures % usable.len().max(1))?;
        plan.last_relay = Some(now);
        plan.relay_opening = true;
        Some(PlanAction::Relay(via))
    }

    /// A punch to `peer` ended: it came through, or failed at the end of its window.
    pub fn punch_ended(&mut self, peer: P, punched: bool) {
        self.peers.entry(peer).or_default().punch_failed = !punched;
    }

    /// The signalling of a punch to `peer` failed (say, on a relayed connection that
    /// DCUtR just replaced): not the punch, so it is offered again at once.
    pub fn punch_signalling_failed(&mut self, peer: P) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.last_punch = None;
        }
    }

    /// We started a punch as the responder: the pair's retry clock starts too (so a
    /// restarted initiator does not find us punching twice).
    pub fn punch_answered(&mut self, now: Instant, peer: P) {
        self.peers.entry(peer).or_default().last_punch = Some(now);
    }

    /// The relayed path to `peer` opened, or failed to.
    pub fn relay_ended(&mut self, peer: P, opened: bool) {
        let p = self.peers.entry(peer).or_default();
        p.relay_opening = false;
        p.relay_failures = if opened { 0 } else { p.relay_failures + 1 };
    }

    /// `peer` left the view: its plan goes.
    pub fn forget(&mut self, peer: &P) {
        self.peers.remove(peer);
    }

    /// Peers with a plan (for bounds in tests and metrics).
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer has a plan.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(our: NatKind, their: NatKind) -> PeerFacts {
        PeerFacts {
            we_are_lower: true,
            our_nat: our,
            their_nat: their,
            connected: true,
            up: false,
            relayed: false,
            direct_fresh: false,
            relay_path: false,
        }
    }

    #[allow(clippy::disallowed_methods)] // the tests' epoch
    fn t0() -> Instant {
        Instant::now()
    }

    const RELAYS: [u32; 2] = [100, 101];

    #[test]
    fn only_the_lower_id_acts_and_only_between_nats() {
        let (mut p, now) = (PathPlanner::default(), t0());
        let higher = PeerFacts { we_are_lower: false, ..facts(NatKind::Easy, NatKind::Easy) };
        assert_eq!(p.decide(now, 1, &higher, &RELAYS), None);
        for (ours, theirs) in [(NatKind::Public, NatKind::Hard), (NatKind::Easy, NatKind::Unknown)] {
            assert_eq!(p.decide(now, 1, &facts(ours, theirs), &RELAYS), None, "{ours:?}/{theirs:?}");
        }
    }

    /// Easy/easy: a punch first; retried after PUNCH_RETRY while it fails; once one
    /// failed, a relayed path too; while relayed, a re-probe every REPROBE; direct
    /// again: nothing.
    #[test]
    fn easy_pairs_punch_then_relay_then_reprobe() {
        let (mut p, now) = (PathPlanner::default(), t0());
        let f = facts(NatKind::Easy, NatKind::Easy);
        assert_eq!(p.decide(now, 1, &f, &RELAYS), Some(PlanAction::Punch));
        assert_eq!(p.decide(now + Duration::from_secs(1), 1, &f, &RELAYS), None, "punching, no relay yet");
        p.punch_ended(1, false);
        let t = now + Duration::from_secs(5);
        assert_eq!(p.decide(t, 1, &f, &RELAYS), Some(PlanAction::Relay(100)));
        assert_eq!(p.decide(t, 1, &f, &RELAYS), None, "opening");
        p.relay_ended(1, true);
        let relayed = PeerFacts { up: true, relayed: true, relay_path: true, ..f };
        assert_eq!(p.decide(now + PUNCH_RETRY, 1, &relayed, &RELAYS), None, "relayed: re-probe later");
        assert_eq!(p.decide(now + REPROBE, 1, &relayed, &RELAYS), Some(PlanAction::Punch));
        p.punch_ended(1, true);
        let direct = PeerFacts { up: true, direct_fresh: true, relay_path: true, ..f };
        assert_eq!(p.decide(now + REPROBE * 3, 1, &direct, &RELAYS), None);
        // The direct path goes quiet: punched again, and failing over is the data
        // plane's (the relayed path is still open).
        let quiet = PeerFacts { direct_fresh: false, ..direct };
        assert_eq!(p.decide(now + REPROBE * 3, 1, &quiet, &RELAYS), Some(PlanAction::Punch));
    }

    /// A hard NAT on either side: relayed at once, never punched; a failed relay is
    /// retried after RELAY_RETRY through the next relay; no relays, nothing.
    #[test]
    fn hard_pairs_are_relayed_and_relays_rotate_on_failure() {
        let (mut p, now) = (PathPlanner::default(), t0());
        let f = facts(NatKind::Easy, NatKind::Hard);
        assert_eq!(p.decide(now, 1, &f, &[]), None, "no relay to use");
        assert_eq!(p.decide(now, 1, &f, &RELAYS), Some(PlanAction::Relay(100)));
        p.relay_ended(1, false);
        assert_eq!(p.decide(now + Duration::from_secs(1), 1, &f, &RELAYS), None);
        assert_eq!(p.decide(now + RELAY_RETRY, 1, &f, &RELAYS), Some(PlanAction::Relay(101)));
        p.relay_ended(1, false);
        assert_eq!(p.decide(now + RELAY_RETRY * 2, 1, &f, &RELAYS), Some(PlanAction::Relay(100)));
        p.relay_ended(1, true);
        let relayed = PeerFacts { up: true, relayed: true, relay_path: true, ..f };
        assert_eq!(p.decide(now + REPROBE * 2, 1, &relayed, &RELAYS), None, "no punch to a hard NAT");
        // The peer itself is a relay we hold: it is not used to reach itself.
        assert_eq!(p.decide(now, 100, &f, &[100]), None);
        p.relay_ended(100, false);
        assert_eq!(p.decide(now + RELAY_RETRY, 100, &f, &RELAYS), Some(PlanAction::Relay(101)));
    }

    /// Without a libp2p connection there is no punch, but a relayed path may still open;
    /// a signalling failure lets the punch be offered again at once.
    #[test]
    fn signalling_failures_retry_at_once() {
        let (mut p, now) = (PathPlanner::default(), t0());
        let f = facts(NatKind::Easy, NatKind::Easy);
        assert_eq!(p.decide(now, 1, &PeerFacts { connected: false, ..f }, &RELAYS), None);
        assert_eq!(p.decide(now, 1, &f, &RELAYS), Some(PlanAction::Punch));
        p.punch_signalling_failed(1);
        assert_eq!(p.decide(now, 1, &f, &RELAYS), Some(PlanAction::Punch));
        p.punch_answered(now, 2);
        assert_eq!(p.decide(now, 2, &f, &RELAYS), None, "the responder's punch counts");
        p.forget(&1);
        p.forget(&2);
        assert!(p.is_empty());
    }
}
