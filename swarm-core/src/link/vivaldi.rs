//! Vivaldi network coordinates (Dabek, Cox, Kaashoek, Morris, SIGCOMM 2004), with the
//! height vector of §5.4: each node places itself in a small Euclidean space plus a
//! height (its access link), so that `distance(a, b) = |a - b| + h(a) + h(b)` predicts
//! the round trip between nodes that never measured each other.
//!
//! Each RTT sample to a peer whose coordinate and error we know moves our coordinate
//! along the line to it, by an amount weighted by how sure each side is (the adaptive
//! timestep of §4.3, `c_c = 0.25`, `c_e = 0.25`). Units are milliseconds.

use serde::{Deserialize, Serialize};

/// Dimensions of the Euclidean part.
pub const DIMENSIONS: usize = 4;
/// The paper's constants.
const C_C: f64 = 0.25;
const C_E: f64 = 0.25;
/// Error of a node that knows nothing yet (relative, 0 to 1.5).
const INITIAL_ERROR: f64 = 1.5;
/// Smallest height, ms.
const MIN_HEIGHT: f64 = 0.01;

/// A node's coordinate and how far off it believes it is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Coordinate {
    /// The Euclidean part, ms.
    pub vector: [f64; DIMENSIONS],
    /// The height (access link), ms.
    pub height: f64,
    /// Relative error estimate (0 is certain).
    pub error: f64,
}

impl Default for Coordinate {
    fn default() -> Self {
        Self { vector: [0.0; DIMENSIONS], height: MIN_HEIGHT, error: INITIAL_ERROR }
    }
}

/// Why a coordinate from the network is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("coordinate out of range")]
pub struct InvalidCoordinate;

impl Coordinate {
    /// Checks a coordinate that came from the network: finite, within ±1 000 000 ms,
    /// height and error not negative.
    pub fn validate(&self) -> Result<(), InvalidCoordinate> {
        let ok = |v: f64| v.is_finite() && v.abs() <= 1e6;
        let fine = self.vector.iter().all(|v| ok(*v))
            && ok(self.height)
            && self.height >= 0.0
            && ok(self.error)
            && self.error >= 0.0;
        if fine {
            Ok(())
        } else {
            Err(InvalidCoordinate)
        }
    }

    /// The predicted round trip to `other`, ms.
    pub fn distance_ms(&self, other: &Coordinate) -> f64 {
        let d: f64 = self.vector.iter().zip(other.vector).map(|(a, b)| (a - b) * (a - b)).sum::<f64>().sqrt();
        d + self.height + other.height
    }

    /// Moves this coordinate for one round-trip sample `rtt_ms` to a node at `other`.
    /// `nudge` breaks the tie when both sit at the same point (give it a few random bits,
    /// e.g. from the peer's id).
    pub fn update(&mut self, rtt_ms: f64, other: &Coordinate, nudge: u64) {
        if !(rtt_ms.is_finite() && rtt_ms > 0.0) || other.validate().is_err() {
            return;
        }
        let dist = self.distance_ms(other);
        let weight =
            if self.error + other.error > 0.0 { self.error / (self.error + other.error) } else { 0.5 };
        let wrongness = (dist - rtt_ms).abs() / rtt_ms;
        self.error = (C_E * weight * wrongness + self.error * (1.0 - C_E * weight)).min(INITIAL_ERROR);
        let force = C_C * weight * (rtt_ms - dist);
        // The unit vector from the other to us, in the Euclidean part.
        let mut diff = [0.0; DIMENSIONS];
        for (i, d) in diff.iter_mut().enumerate() {
            *d = self.vector[i] - other.vector[i];
        }
        let mut mag = diff.iter().map(|d| d * d).sum::<f64>().sqrt();
        if mag < 1e-6 {
            // Same place: push in a direction chosen by `nudge`.
            let mut bits = nudge | 1;
            for d in &mut diff {
                bits ^= bits << 13;
                bits ^= bits >> 7;
                bits ^= bits << 17;
                *d = (bits % 2001) as f64 / 1000.0 - 1.0;
            }
            mag = diff.iter().map(|d| d * d).sum::<f64>().sqrt().max(1e-9);
        }
        for (i, d) in diff.iter().enumerate() {
            self.vector[i] += force * d / mag;
        }
        // The height takes its share of the force (the height vector of §5.4).
        let total = mag + self.height + other.height;
        if total > 1e-9 {
            self.height = (self.height + force * (self.height + other.height) / total).max(MIN_HEIGHT);
        }
    }
}

/// A synthetic world for measuring Vivaldi: `nodes` nodes in three regions on a plane
/// (tens of ms apart), each with an access delay of 0.5-4.5 ms; RTT = distance plus both
/// access delays, measured with ±2 % noise. Each node measures `neighbours` fixed random
/// peers for `rounds` rounds; the result is the relative error of the predicted round
/// trip of every pair that nobody measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimulatedError {
    /// Median relative error.
    pub median: f64,
    /// 90th percentile.
    pub p90: f64,
    /// Pairs evaluated.
    pub pairs: usize,
}

/// Runs the synthetic world (seeded, deterministic). See [`SimulatedError`].
pub fn simulate(nodes: usize, neighbours: usize, rounds: usize, seed: u64) -> SimulatedError {
    let mut s = seed | 1;
    let mut rnd = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let unit = |r: u64| (r % 1_000_000) as f64 / 1_000_000.0;
    let centres = [[0.0, 0.0], [40.0, 5.0], [15.0, 60.0]];
    let world: Vec<([f64; 2], f64)> = (0..nodes)
        .map(|i| {
            let c = centres[i % 3];
            ([c[0] + unit(rnd()) * 8.0, c[1] + unit(rnd()) * 8.0], 0.5 + unit(rnd()) * 4.0)
        })
        .collect();
    let truth = |a: usize, b: usize| {
        let ((pa, ha), (pb, hb)) = (world[a], world[b]);
        ((pa[0] - pb[0]).powi(2) + (pa[1] - pb[1]).powi(2)).sqrt() + ha + hb
    };
    let chosen: Vec<Vec<usize>> =
        (0..nodes).map(|_| (0..neighbours).map(|_| (rnd() as usize) % nodes.max(1)).collect()).collect();
    let mut coords = vec![Coordinate::default(); nodes];
    for _ in 0..rounds {
        for i in 0..nodes {
            for &j in &chosen[i] {
                if i != j {
                    let noise = 1.0 + (unit(rnd()) - 0.5) * 0.04;
                    let other = coords[j];
                    coords[i].update(truth(i, j) * noise, &other, j as u64);
                }
            }
        }
    }
    let mut errors = Vec::new();
    for a in 0..nodes {
        for b in (a + 1)..nodes {
            if chosen[a].contains(&b) || chosen[b].contains(&a) {
                continue;
            }
            let t = truth(a, b);
            errors.push((coords[a].distance_ms(&coords[b]) - t).abs() / t);
        }
    }
    errors.sort_by(f64::total_cmp);
    let at = |q: f64| {
        errors.get(((errors.len() as f64 * q) as usize).min(errors.len().saturating_sub(1))).copied()
    };
    SimulatedError {
        median: at(0.5).unwrap_or(f64::NAN),
        p90: at(0.9).unwrap_or(f64::NAN),
        pairs: errors.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinates_predict_unmeasured_pairs_within_eleven_percent() {
        let r = simulate(200, 8, 200, 0x5EED);
        println!(
            "vivaldi: median relative error {:.4} (p90 {:.4}) over {} unmeasured pairs",
            r.median, r.p90, r.pairs
        );
        assert!(r.pairs > 10_000);
        assert!(r.median <= 0.11, "{r:?}");
        assert_eq!(simulate(50, 4, 20, 3), simulate(50, 4, 20, 3), "seeded");
    }

    #[test]
    fn hostile_coordinates_are_refused() {
        let mut c = Coordinate::default();
        for bad in [f64::NAN, f64::INFINITY, 1e9] {
            let other = Coordinate { height: bad, ..Coordinate::default() };
            assert!(other.validate().is_err());
            c.update(10.0, &other, 1);
            assert!(c.validate().is_ok(), "an invalid peer coordinate moves nothing");
        }
        c.update(f64::NAN, &Coordinate::default(), 1);
        c.update(-5.0, &Coordinate::default(), 1);
        assert!(c.validate().is_ok());
    }
}
