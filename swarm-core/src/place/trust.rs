//! Placing among liars (issue 16, part 3, threat T11), sans-IO.
//!
//! Records are signed by their authors, so a liar cannot forge another node's claims,
//! but it can lie about itself: advertise free GPUs it does not have, claim low round
//! trips in its link summaries, or grant leases and drop them. A submitter defends with
//! what it knows first-hand:
//!
//! - **Its own measurements first.** A node's link to the origin is the origin's own
//!   summary when it has one (not the fresher of the two ends' claims).
//! - **Claims cross-checked** ([`implausible_claim`]): a round trip claimed by the far
//!   end alone is checked against the two ends' Vivaldi estimate; a claim far below it
//!   (beyond the coordinates' error) is not believed: the estimate is used, the node is
//!   marked suspect (its score loses [`SUSPECT_PENALTY`]) and the claim counts against
//!   it. Two ends that disagree by more than 2x are taken at the larger round trip
//!   (`link::summary::combine`).
//! - **A reliability score per peer** ([`Reliability`]), kept locally from lease
//!   outcomes: a refusal while its advert showed the GPUs free, a lease granted and then
//!   broken, a claim found implausible. A node's score is multiplied by its reliability
//!   (1 for a clean record); bad outcomes fade with a half-life, so an honest node
//!   refused once for a stale advert comes back.
//!
//! The simulation of T11 (`place::sim`, `liars` in its tests) runs the real index,
//! submission and lease service against 20 % liars.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use libp2p_identity::PeerId;

pub use crate::link::summary::implausible_claim;

/// Share of its score a node whose link claim was not believed loses.
pub const SUSPECT_PENALTY: f64 = 0.5;
/// Bad outcomes lose half their weight in this time.
pub const HALF_LIFE: Duration = Duration::from_secs(600);
/// Below this reliability a node is shown as demoted.
pub const DEMOTED_BELOW: f64 = 0.5;
/// Below this reliability a node is not ranked at all (rejected as unreliable) until its
/// bad outcomes fade.
pub const EXCLUDED_BELOW: f64 = 0.1;
/// Refusals of one peer closer together than this count as one: the longest an honest
/// node's advert is stale at a submitter (a heartbeat; a lease change is published
/// within a second). A submitter that tries again and again meanwhile (a job queue
/// retrying every few milliseconds) meets the same stale advert each time; counted each
/// time, busy honest nodes were excluded under contention.
pub const STALE_ADVERT: Duration = Duration::from_secs(5);
/// Peers remembered at most (the least recently seen are forgotten beyond).
pub const MAX_PEERS: usize = 16_384;

/// What a peer did, weighted and fading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcomes {
    /// Leases it granted and kept.
    pub kept: f64,
    /// Reservations it refused although its advert showed the GPUs free.
    pub refused_free: f64,
    /// Leases it granted and then broke.
    pub broken: f64,
    /// Link claims of its found implausible.
    pub false_claims: f64,
    /// When the bad outcomes were last faded.
    at: Instant,
    /// When a refusal last counted ([`STALE_ADVERT`]).
    refused_at: Option<Instant>,
}

impl Outcomes {
    fn new(at: Instant) -> Self {
        Self { kept: 0.0, refused_free: 0.0, broken: 0.0, false_claims: 0.0, at, refused_at: None }
    }

    fn fade(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        if dt > 0.0 {
            let f = 0.5f64.powf(dt / HALF_LIFE.as_secs_f64());
            self.refused_free *= f;
            self.broken *= f;
            self.false_claims *= f;
            self.at = now;
        }
    }

    /// Reliability, 0 to 1: (1 + kept) / (1 + kept + 2 refused + 4 broken + 4 claims).
    /// A refusal weighs least: an honest node refuses too when the submitter's view of
    /// its leases is a heartbeat stale (and its grants lift it again); a node that
    /// refuses every time is excluded after five.
    pub fn score(&self) -> f64 {
        let bad = 2.0 * self.refused_free + 4.0 * self.broken + 4.0 * self.false_claims;
        (1.0 + self.kept) / (1.0 + self.kept + bad)
    }
}

/// A submitter's local reliability scores. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct Reliability {
    peers: HashMap<PeerId, Outcomes>,
}

impl Reliability {
    /// Nothing known.
    pub fn new() -> Self {
        Self::default()
    }

    fn entry(&mut self, now: Instant, peer: PeerId) -> &mut Outcomes {
        if self.peers.len() >= MAX_PEERS && !self.peers.contains_key(&peer) {
            // Forget the least recently touched.
            if let Some(old) = self.peers.iter().min_by_key(|(_, o)| o.at).map(|(p, _)| *p) {
                self.peers.remove(&old);
            }
        }
        let o = self.peers.entry(peer).or_insert_with(|| Outcomes::new(now));
        o.fade(now);
        o
    }

    /// `peer` granted a lease and kept it.
    pub fn kept(&mut self, now: Instant, peer: PeerId) {
        self.entry(now, peer).kept += 1.0;
    }

    /// `peer` refused a reservation although its advert showed the GPUs free: counted
    /// unless a refusal of its counted less than [`STALE_ADVERT`] ago.
    pub fn refused_free(&mut self, now: Instant, peer: PeerId) {
        let o = self.entry(now, peer);
        if o.refused_at.is_some_and(|t| now.saturating_duration_since(t) < STALE_ADVERT) {
            return;
        }
        o.refused_at = Some(now);
        o.refused_free += 1.0;
    }

    /// `peer` granted a lease and broke it (the task found no GPUs, or renewal failed).
    pub fn broken(&mut self, now: Instant, peer: PeerId) {
        self.entry(now, peer).broken += 1.0;
    }

    /// A link claim of `peer`'s was found implausible.
    pub fn false_claim(&mut self, now: Instant, peer: PeerId) {
        self.entry(now, peer).false_claims += 1.0;
    }

    /// `peer`'s claim was found implausible again, in a record already counted: at least
    /// one false claim stands (seeing the same record again adds nothing).
    pub fn suspect_claim(&mut self, now: Instant, peer: PeerId) {
        let o = self.entry(now, peer);
        o.false_claims = o.false_claims.max(1.0);
    }

    /// What is known of `peer`, faded to `now`.
    pub fn outcomes(&self, now: Instant, peer: &PeerId) -> Option<Outcomes> {
        let mut o = *self.peers.get(peer)?;
        o.fade(now);
        Some(o)
    }

    /// `peer`'s reliability at `now`: 1 for an unknown peer.
    pub fn score(&self, now: Instant, peer: &PeerId) -> f64 {
        self.outcomes(now, peer).map_or(1.0, |o| o.score())
    }

    /// The peers it knows (whose score may differ from 1).
    pub fn known(&self) -> impl Iterator<Item = &PeerId> + '_ {
        self.peers.keys()
    }

    /// Peers known.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is known.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Why `peer` is trusted as it is, in a few words (empty for a clean record).
    pub fn explain(&self, now: Instant, peer: &PeerId) -> String {
        let Some(o) = self.outcomes(now, peer) else { return String::new() };
        let mut out = format!("reliability {:.2}", o.score());
        let parts = [
            (o.refused_free, "refusals while advertised free"),
            (o.broken, "broken leases"),
            (o.false_claims, "implausible link claims"),
        ];
        for (n, what) in parts {
            if n >= 0.05 {
                let _ = write!(out, ", {n:.1} {what}");
            }
        }
        if o.score() < DEMOTED_BELOW {
            out.push_str(" (demoted)");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::tests::peer;

    #[allow(clippy::disallowed_methods)] // the tests' epoch
    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn claims_far_below_the_estimate_are_implausible() {
        // Estimate 20 ms at 10 % error: 30 % slack, then 0.5 ms.
        assert!(implausible_claim(0.3, 20.0, 0.1));
        assert!(implausible_claim(13.4, 20.0, 0.1));
        assert!(!implausible_claim(13.6, 20.0, 0.1));
        assert!(!implausible_claim(25.0, 20.0, 0.1), "higher than the estimate is never a lie that helps");
        // Near nodes: the 0.5 ms floor keeps sub-millisecond claims plausible.
        assert!(!implausible_claim(0.3, 1.0, 0.1));
        // A poor estimate (50 % error) believes almost anything.
        assert!(!implausible_claim(1.0, 20.0, 0.5));
    }

    #[test]
    fn rankings_demote_unreliable_nodes_and_say_why() {
        use crate::place::score::tests::{id, view};
        use crate::place::{PlacementIndex, Rejection, ScoreWeights, TaskSpec};
        use crate::record::tests::NOW;
        let t = t0();
        let v = view();
        let mut r = Reliability::new();
        r.broken(t, id(2));
        // Refused five adverts (a heartbeat apart: refusals of one advert count once).
        for i in 0..5 {
            r.refused_free(t + STALE_ADVERT * i, id(4));
        }
        let t = t + STALE_ADVERT * 4;
        let none = std::collections::HashMap::new();
        let w = ScoreWeights::default();
        let task = TaskSpec::new("t", 1);
        let plain = PlacementIndex::new(&v, &id(1), &none, NOW).rank(&task, &w);
        let ranked = PlacementIndex::new(&v, &id(1), &none, NOW).with_reliability(&r, t).rank(&task, &w);
        let pos = |rank: &crate::place::Ranking, p| rank.feasible.iter().position(|s| s.peer == p);
        // Node 2 (5 ms, measured) ranked second before its broken lease; now behind node 3.
        assert!(pos(&plain, id(2)) < pos(&plain, id(3)));
        assert!(pos(&ranked, id(2)) > pos(&ranked, id(3)), "{}", ranked.explain());
        let text = ranked.explain();
        assert!(text.contains("reliability 0.20 (demoted)"), "{text}");
        // Five refusals while advertised free: 1 / 11, not ranked at all.
        assert!(ranked.rejected.iter().any(|(p, why)| *p == id(4)
            && matches!(why, Rejection::Unreliable { reliability } if *reliability < 0.1)));
        assert!(text.contains("rejected") && text.contains("reliability 0.09"), "{text}");
    }

    #[test]
    fn bad_outcomes_demote_and_fade() {
        let t = t0();
        let (honest, liar) = (peer(1), peer(2));
        let mut r = Reliability::new();
        assert_eq!(r.score(t, &honest), 1.0);
        for _ in 0..5 {
            r.kept(t, honest);
        }
        r.refused_free(t, honest);
        assert!((r.score(t, &honest) - 6.0 / 8.0).abs() < 1e-9, "one stale advert: not demoted");
        // Tried again and again against the same stale advert: still one refusal.
        for ms in [10, 20, 500, 4_990] {
            r.refused_free(t + Duration::from_millis(ms), honest);
        }
        let refusals = |r: &Reliability, at| r.outcomes(at, &honest).unwrap().refused_free;
        let faded = 0.5f64.powf(4.99 / 600.0);
        assert!((refusals(&r, t) - faded).abs() < 1e-9, "refusals within a heartbeat count once");
        r.refused_free(t + STALE_ADVERT, honest);
        let faded = 0.5f64.powf(5.0 / 600.0);
        assert!(
            (refusals(&r, t + STALE_ADVERT) - 1.0 - faded).abs() < 1e-9,
            "a heartbeat on, the next counts"
        );
        r.broken(t, liar);
        assert!((r.score(t, &liar) - 0.2).abs() < 1e-9);
        assert!(r.explain(t, &liar).contains("1.0 broken leases") && r.explain(t, &liar).contains("demoted"));
        // Ten minutes on, the broken lease weighs half.
        let later = t + HALF_LIFE;
        assert!((r.score(later, &liar) - 1.0 / 3.0).abs() < 1e-9);
        r.false_claim(later, liar);
        assert!(r.explain(later, &liar).contains("implausible link claims"));
        assert_eq!(r.explain(t, &peer(3)), "");
        assert_eq!(r.len(), 2);
    }
}
