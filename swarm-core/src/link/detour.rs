//! Detours around a breached direct path (issue 16, part 1), sans-IO.
//!
//! When the direct path to a peer breaches its SLA (latency, jitter or loss; a detour
//! cannot add throughput) and a two-hop path through another member measures better,
//! the tunnel's data takes the two-hop path; its probes stay on the direct path, so the
//! link monitor keeps judging it and says when it has recovered.
//!
//! - [`PathQuality`]: one hop's round trip (p99), jitter and loss, and the rule that
//!   combines them ([`PathQuality::cost_ms`]) and chains two hops ([`PathQuality::then`]).
//!   The first hop of a detour is this node's own measurement; the second is the
//!   intermediate's (or the far end's) gossiped claim, used while it is fresh.
//! - [`Detours`]: per peer, `Direct` → `Opening { via }` → `Via { via }` → `Direct`.
//!   A detour is opened only while the direct path is breached and only through an
//!   intermediate whose path costs at most [`DetourPolicy::margin`] of the direct one;
//!   the node goes back when the SLA judge says the direct path recovered (which has its
//!   own hysteresis: 80 % of the target held 10 s). Whatever the events, a path is kept
//!   at least [`DetourPolicy::hold`] (the judge's recovery time) before it is left, so
//!   traffic never switches faster than that.
//!
//! The rule has a clock only through `now` arguments: its tests run on virtual time.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use super::sla::Metric;
use super::summary::LinkSummary;

/// Milliseconds of cost per unit of loss: 1 % loss weighs as 10 ms of round trip (a lost
/// packet costs a retransmission, roughly a round trip, for reliable traffic on top).
pub const LOSS_COST_MS: f64 = 1_000.0;
/// Jitter weighs twice: a receiver's playout or a collective's straggler waits for it.
pub const JITTER_WEIGHT: f64 = 2.0;

/// One path's (or hop's) measured quality.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PathQuality {
    /// Round trip at the 99th percentile, ms.
    pub rtt_ms: f64,
    /// Jitter, ms.
    pub jitter_ms: f64,
    /// Loss, 0 to 1.
    pub loss: f64,
}

impl PathQuality {
    /// A hop's quality from a link summary: `None` when it holds no round trip.
    pub fn from_summary(s: &LinkSummary) -> Option<Self> {
        if s.rtt_samples == 0 {
            return None;
        }
        Some(Self {
            rtt_ms: f64::from(s.rtt_p99_us) / 1e3,
            jitter_ms: f64::from(s.jitter_us) / 1e3,
            loss: s.loss_ppm.map_or(0.0, |p| f64::from(p) / 1e6),
        })
    }

    /// This hop followed by `next`: round trips and jitters add, losses compound.
    pub fn then(&self, next: &PathQuality) -> PathQuality {
        PathQuality {
            rtt_ms: self.rtt_ms + next.rtt_ms,
            jitter_ms: self.jitter_ms + next.jitter_ms,
            loss: 1.0 - (1.0 - self.loss.clamp(0.0, 1.0)) * (1.0 - next.loss.clamp(0.0, 1.0)),
        }
    }

    /// The rule that ranks paths: round trip + 2 × jitter + 1 000 ms × loss.
    pub fn cost_ms(&self) -> f64 {
        let c = self.rtt_ms + JITTER_WEIGHT * self.jitter_ms + LOSS_COST_MS * self.loss.clamp(0.0, 1.0);
        if c.is_finite() {
            c.max(0.0)
        } else {
            f64::MAX
        }
    }
}

/// A possible detour to a peer through `via`: both hops measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate<P> {
    /// The intermediate member.
    pub via: P,
    /// This node to `via`: its own measurement.
    pub first: PathQuality,
    /// `via` to the peer: a fresh gossiped claim.
    pub second: PathQuality,
}

impl<P> Candidate<P> {
    /// The two hops together.
    pub fn quality(&self) -> PathQuality {
        self.first.then(&self.second)
    }
}

/// The settings of [`Detours`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetourPolicy {
    /// A detour is taken only when it costs at most this share of the direct path (0.8)
    /// ...
    pub margin: f64,
    /// ... and saves at least this much cost, ms (5): a LAN link breaching the 1 ms
    /// jitter target by a little is not worth a relayed hop.
    pub min_gain_ms: f64,
    /// A path is kept at least this long before it is left (10 s, the SLA judge's
    /// `recover_hold`): traffic never switches faster.
    pub hold: Duration,
    /// An opening not answered within this is given up (5 s).
    pub open_timeout: Duration,
    /// An intermediate that failed to open is not asked again for this long (30 s).
    pub retry_after: Duration,
}

impl Default for DetourPolicy {
    fn default() -> Self {
        Self {
            margin: 0.8,
            min_gain_ms: 5.0,
            hold: Duration::from_secs(10),
            open_timeout: Duration::from_secs(5),
            retry_after: Duration::from_secs(30),
        }
    }
}

/// Where a peer's traffic goes, as the rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetourState<P> {
    /// Straight to the peer, since `since` (`None`: never left).
    Direct {
        /// When traffic came back to the direct path.
        since: Option<Instant>,
    },
    /// A detour through `via` is being opened.
    Opening {
        /// The intermediate.
        via: P,
        /// When it was asked for.
        since: Instant,
    },
    /// Traffic goes through `via`.
    Via {
        /// The intermediate.
        via: P,
        /// Since when.
        since: Instant,
    },
}

/// What the node should do for a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetourAction<P> {
    /// Open a path to the peer through `via` (then report it with
    /// [`Detours::handle_opened`] or [`Detours::handle_failed`]).
    Open {
        /// The intermediate.
        via: P,
    },
    /// Send the peer's traffic straight again and close the detour through `via`.
    Return {
        /// The intermediate left.
        via: P,
    },
}

#[derive(Debug, Clone)]
struct PeerDetour<P> {
    state: DetourState<P>,
    /// Breached metrics that a detour can help (latency, jitter, loss), as bits.
    breached: u8,
    /// Intermediates that failed to open, until when they are skipped.
    failed: Vec<(P, Instant)>,
}

impl<P> Default for PeerDetour<P> {
    fn default() -> Self {
        Self { state: DetourState::Direct { since: None }, breached: 0, failed: Vec::new() }
    }
}

fn bit(metric: Metric) -> u8 {
    match metric {
        Metric::Latency => 1,
        Metric::Jitter => 2,
        Metric::Loss => 4,
        // A detour does not add capacity.
        Metric::Throughput => 0,
    }
}

/// The detour rule for every peer of a node. See the module docs.
#[derive(Debug, Clone)]
pub struct Detours<P> {
    policy: DetourPolicy,
    peers: HashMap<P, PeerDetour<P>>,
}

impl<P: Copy + Eq + Hash> Detours<P> {
    /// No detours yet.
    pub fn new(policy: DetourPolicy) -> Self {
        Self { policy, peers: HashMap::new() }
    }

    /// The policy.
    pub fn policy(&self) -> &DetourPolicy {
        &self.policy
    }

    /// The state of `peer`'s traffic.
    pub fn state(&self, peer: &P) -> DetourState<P> {
        self.peers.get(peer).map_or(DetourState::Direct { since: None }, |p| p.state)
    }

    /// Whether `peer`'s direct path is breached on a metric a detour can help.
    pub fn breached(&self, peer: &P) -> bool {
        self.peers.get(peer).is_some_and(|p| p.breached != 0)
    }

    /// Peers the rule should be asked about ([`Self::poll`]) now and then: breached, or
    /// off their direct path.
    pub fn active(&self) -> impl Iterator<Item = &P> + '_ {
        self.peers
            .iter()
            .filter(|(_, p)| p.breached != 0 || !matches!(p.state, DetourState::Direct { .. }))
            .map(|(k, _)| k)
    }

    /// The SLA judge's verdict on the direct path's `metric` changed.
    pub fn handle_sla(&mut self, peer: P, metric: Metric, degraded: bool) {
        let b = bit(metric);
        if b == 0 {
            return;
        }
        let p = self.peers.entry(peer).or_default();
        if degraded {
            p.breached |= b;
        } else {
            p.breached &= !b;
        }
    }

    /// The peer left (its tunnel went down or it left the view): its detour, if any,
    /// is forgotten; the caller closes the path.
    pub fn remove(&mut self, peer: &P) -> Option<DetourState<P>> {
        self.peers.remove(peer).map(|p| p.state)
    }

    /// What to do for `peer` now, given its direct path's quality (`None`: not measured)
    /// and the detours measured through other members.
    pub fn poll(
        &mut self,
        now: Instant,
        peer: P,
        direct: Option<PathQuality>,
        candidates: &[Candidate<P>],
    ) -> Option<DetourAction<P>> {
        let policy = self.policy;
        let p = self.peers.get_mut(&peer)?;
        p.failed.retain(|(_, until)| *until > now);
        let held = |since: Instant| now.saturating_duration_since(since) >= policy.hold;
        match p.state {
            DetourState::Direct { since } => {
                if p.breached == 0 || !since.is_none_or(held) {
                    return None;
                }
                let direct_cost = direct.map_or(f64::MAX, |d| d.cost_ms());
                let failed = &p.failed;
                let best = candidates
                    .iter()
                    .filter(|c| c.via != peer && !failed.iter().any(|(f, _)| *f == c.via))
                    .map(|c| (c.via, c.quality().cost_ms()))
                    .filter(|(_, cost)| {
                        *cost <= policy.margin * direct_cost && direct_cost - cost >= policy.min_gain_ms
                    })
                    .min_by(|a, b| a.1.total_cmp(&b.1))?;
                p.state = DetourState::Opening { via: best.0, since: now };
                Some(DetourAction::Open { via: best.0 })
            }
            DetourState::Opening { via, since } => {
                if now.saturating_duration_since(since) >= policy.open_timeout {
                    p.failed.push((via, now + policy.retry_after));
                    p.state = DetourState::Direct { since: None };
                }
                None
            }
            DetourState::Via { via, since } => {
                if !held(since) {
                    return None;
                }
                // Back when the direct path recovered, or when the detour is no longer
                // the better path (its hops degraded, or its claim went stale).
                let direct_cost = direct.map_or(f64::MAX, |d| d.cost_ms());
                let detour_cost = candidates.iter().find(|c| c.via == via).map(|c| c.quality().cost_ms());
                let worse = detour_cost.is_none_or(|c| c >= direct_cost);
                if p.breached == 0 || worse {
                    p.state = DetourState::Direct { since: Some(now) };
                    return Some(DetourAction::Return { via });
                }
                None
            }
        }
    }

    /// The path through `via` that [`DetourAction::Open`] asked for is open: whether
    /// to take it (else the caller closes it: the rule gave up on it meanwhile).
    pub fn handle_opened(&mut self, now: Instant, peer: P, via: P) -> bool {
        let Some(p) = self.peers.get_mut(&peer) else { return false };
        match p.state {
            DetourState::Opening { via: v, .. } if v == via => {
                p.state = DetourState::Via { via, since: now };
                true
            }
            _ => false,
        }
    }

    /// Opening the path through `via` failed.
    pub fn handle_failed(&mut self, now: Instant, peer: P, via: P) {
        let retry = self.policy.retry_after;
        let Some(p) = self.peers.get_mut(&peer) else { return };
        if matches!(p.state, DetourState::Opening { via: v, .. } if v == via) {
            p.failed.push((via, now + retry));
            p.state = DetourState::Direct { since: None };
        }
    }

    /// The detour through `via` closed under the traffic (the intermediate left, or
    /// its stream broke): traffic is direct again, and `via` is skipped for a while.
    pub fn handle_closed(&mut self, now: Instant, peer: P, via: P) {
        let retry = self.policy.retry_after;
        let Some(p) = self.peers.get_mut(&peer) else { return };
        if matches!(p.state, DetourState::Via { via: v, .. } if v == via) {
            p.failed.push((via, now + retry));
            p.state = DetourState::Direct { since: Some(now) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: u8 = 1;
    const B: u8 = 2;
    const C: u8 = 3;
    const D: u8 = 4;

    #[allow(clippy::disallowed_methods)] // the tests' epoch
    fn t0() -> Instant {
        Instant::now()
    }

    fn q(rtt_ms: f64, jitter_ms: f64, loss: f64) -> PathQuality {
        PathQuality { rtt_ms, jitter_ms, loss }
    }

    fn clean(via: u8) -> Candidate<u8> {
        Candidate { via, first: q(1.0, 0.1, 0.0), second: q(1.5, 0.1, 0.0) }
    }

    #[test]
    fn the_rule_combines_round_trip_jitter_and_loss() {
        // 80 ms, 1 % loss, 2 ms jitter: 80 + 4 + 10.
        assert!((q(80.0, 2.0, 0.01).cost_ms() - 94.0).abs() < 1e-9);
        let two = q(10.0, 1.0, 0.01).then(&q(5.0, 0.5, 0.02));
        assert!((two.rtt_ms - 15.0).abs() < 1e-9);
        assert!((two.jitter_ms - 1.5).abs() < 1e-9);
        assert!((two.loss - (1.0 - 0.99 * 0.98)).abs() < 1e-12);
        assert_eq!(q(f64::NAN, 0.0, 0.0).cost_ms(), f64::MAX);
    }

    #[test]
    fn a_breached_link_detours_through_the_best_member_and_comes_back_after_recovery() {
        let t0 = t0();
        let mut d = Detours::new(DetourPolicy::default());
        let bad = Some(q(80.0, 2.0, 0.01));
        let slow = Candidate { via: D, first: q(30.0, 1.0, 0.0), second: q(30.0, 1.0, 0.0) };
        // Not breached: nothing, however good the detour.
        d.handle_sla(B, Metric::Throughput, true);
        assert_eq!(d.poll(t0, B, bad, &[clean(C)]), None);
        d.handle_sla(B, Metric::Latency, true);
        assert!(d.breached(&B));
        // The cheaper of the two detours, not the peer itself.
        let to_self = Candidate { via: B, first: q(0.1, 0.0, 0.0), second: q(0.1, 0.0, 0.0) };
        assert_eq!(d.poll(t0, B, bad, &[slow, to_self, clean(C)]), Some(DetourAction::Open { via: C }));
        assert_eq!(d.state(&B), DetourState::Opening { via: C, since: t0 });
        let t1 = t0 + Duration::from_millis(30);
        assert!(d.handle_opened(t1, B, C));
        assert_eq!(d.state(&B), DetourState::Via { via: C, since: t1 });
        // Recovered early (faster than the hold): traffic stays on the detour...
        d.handle_sla(B, Metric::Latency, false);
        let t2 = t1 + Duration::from_secs(9);
        assert_eq!(d.poll(t2, B, Some(q(1.0, 0.1, 0.0)), &[clean(C)]), None);
        // ... until the hold has passed.
        let t3 = t1 + Duration::from_secs(10);
        assert_eq!(d.poll(t3, B, Some(q(1.0, 0.1, 0.0)), &[clean(C)]), Some(DetourAction::Return { via: C }));
        assert_eq!(d.state(&B), DetourState::Direct { since: Some(t3) });
        // Breached again at once: the direct path is held as long before leaving it.
        d.handle_sla(B, Metric::Jitter, true);
        assert_eq!(d.poll(t3 + Duration::from_secs(1), B, bad, &[clean(C)]), None);
        let t4 = t3 + Duration::from_secs(10);
        assert_eq!(d.poll(t4, B, bad, &[clean(C)]), Some(DetourAction::Open { via: C }));
    }

    #[test]
    fn a_detour_needs_a_margin_over_the_direct_path() {
        let t0 = t0();
        let mut d = Detours::new(DetourPolicy::default());
        d.handle_sla(B, Metric::Latency, true);
        let direct = Some(q(60.0, 0.5, 0.0)); // cost 61
        let close = Candidate { via: C, first: q(25.0, 0.5, 0.0), second: q(25.0, 0.5, 0.0) }; // 52
        assert_eq!(d.poll(t0, B, direct, &[close]), None);
        let better = Candidate { via: C, first: q(20.0, 0.5, 0.0), second: q(25.0, 0.5, 0.0) }; // 47
        assert_eq!(d.poll(t0, B, direct, &[better]), Some(DetourAction::Open { via: C }));
        // On a LAN, a jitter breach (2 ms against 1 ms) with a cleaner detour (2.9 against
        // 4.5: within the margin) saves too little to take a relayed hop.
        let mut d = Detours::new(DetourPolicy::default());
        d.handle_sla(B, Metric::Jitter, true);
        assert_eq!(d.poll(t0, B, Some(q(0.5, 2.0, 0.0)), &[clean(C)]), None);
        let no_floor = DetourPolicy { min_gain_ms: 0.0, ..DetourPolicy::default() };
        let mut d = Detours::new(no_floor);
        d.handle_sla(B, Metric::Jitter, true);
        assert_eq!(d.poll(t0, B, Some(q(0.5, 2.0, 0.0)), &[clean(C)]), Some(DetourAction::Open { via: C }));
        // No measurement of the direct path at all (its probes all lost): any detour.
        let mut d = Detours::new(DetourPolicy::default());
        d.handle_sla(B, Metric::Loss, true);
        assert_eq!(d.poll(t0, B, None, &[close]), Some(DetourAction::Open { via: C }));
    }

    #[test]
    fn failed_openings_and_closed_detours_skip_their_intermediate_for_a_while() {
        let t0 = t0();
        let policy = DetourPolicy::default();
        let mut d = Detours::new(policy);
        let bad = Some(q(80.0, 0.0, 0.0));
        d.handle_sla(B, Metric::Latency, true);
        let both = [clean(C), Candidate { via: D, ..clean(C) }];
        assert_eq!(d.poll(t0, B, bad, &both), Some(DetourAction::Open { via: C }));
        d.handle_failed(t0, B, C);
        assert_eq!(d.poll(t0, B, bad, &both), Some(DetourAction::Open { via: D }));
        // No answer within the timeout: given up; the late answer is refused.
        let t1 = t0 + policy.open_timeout;
        assert_eq!(d.poll(t1, B, bad, &both), None);
        assert_eq!(d.state(&B), DetourState::Direct { since: None });
        assert!(!d.handle_opened(t1, B, D));
        assert_eq!(d.poll(t1, B, bad, &both), None, "both skipped");
        let t2 = t0 + policy.retry_after;
        assert_eq!(d.poll(t2, B, bad, &both), Some(DetourAction::Open { via: C }));
        assert!(d.handle_opened(t2, B, C));
        // The intermediate goes away under the traffic: direct, held, C skipped.
        d.handle_closed(t2, B, C);
        assert_eq!(d.state(&B), DetourState::Direct { since: Some(t2) });
        let t3 = t2 + policy.hold;
        assert_eq!(d.poll(t3, B, bad, &both), Some(DetourAction::Open { via: D }));
    }

    #[test]
    fn a_detour_that_got_worse_than_the_direct_path_is_left() {
        let t0 = t0();
        let policy = DetourPolicy::default();
        let mut d = Detours::new(policy);
        d.handle_sla(B, Metric::Latency, true);
        let bad = Some(q(80.0, 0.0, 0.0));
        assert_eq!(d.poll(t0, B, bad, &[clean(C)]), Some(DetourAction::Open { via: C }));
        assert!(d.handle_opened(t0, B, C));
        let t1 = t0 + policy.hold;
        assert_eq!(d.poll(t1, B, bad, &[clean(C)]), None, "still the better path");
        let worse = Candidate { via: C, first: q(60.0, 0.0, 0.0), second: q(30.0, 0.0, 0.0) };
        assert_eq!(d.poll(t1, B, bad, &[worse]), Some(DetourAction::Return { via: C }));
        // Its claim gone stale (no candidate through C): left as well.
        let mut d = Detours::new(policy);
        d.handle_sla(A, Metric::Loss, true);
        assert_eq!(d.poll(t0, A, bad, &[clean(C)]), Some(DetourAction::Open { via: C }));
        assert!(d.handle_opened(t0, A, C));
        assert_eq!(d.poll(t1, A, bad, &[]), Some(DetourAction::Return { via: C }));
        assert_eq!(d.active().count(), 1, "A is still breached");
        assert_eq!(d.remove(&A), Some(DetourState::Direct { since: Some(t1) }));
    }
}
