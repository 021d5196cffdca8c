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

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic world: nodes in three regions on a plane (inter-region tens of ms),
    /// each with an access-link delay; RTT = 2 x (propagation + access), with 2 % noise.
    fn world(n: usize, seed: u64) -> Vec<([f64; 2], f64)> {
        let mut s = seed;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 1_000_000) as f64 / 1_000_000.0
        };
        let centres = [[0.0, 0.0], [40.0, 5.0], [15.0, 60.0]];
        (0..n)
            .map(|i| {
                let c = centres[i % 3];
                ([c[0] + next() * 8.0, c[1] + next() * 8.0], 0.5 + next() * 4.0)
            })
            .collect()
    }

    fn true_rtt(w: &[([f64; 2], f64)], a: usize, b: usize) -> f64 {
        let (pa, ha) = w[a];
        let (pb, hb) = w[b];
        let d = ((pa[0] - pb[0]).powi(2) + (pa[1] - pb[1]).powi(2)).sqrt();
        d + ha + hb
    }

    #[test]
    fn coordinates_predict_unmeasured_pairs_within_eleven_percent() {
        let n = 200;
        let w = world(n, 0x5EED);
        let mut coords = vec![Coordinate::default(); n];
        let mut s = 12345u64;
        let mut rnd = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        // Each node measures 8 fixed neighbours (as a node measures its tunnels), 200
        // rounds.
        let neighbours: Vec<Vec<usize>> =
            (0..n).map(|_| (0..8).map(|_| (rnd() as usize) % n).collect()).collect();
        for _ in 0..200 {
            for i in 0..n {
                for &j in &neighbours[i] {
                    if i == j {
                        continue;
                    }
                    let noise = 1.0 + ((rnd() % 1000) as f64 / 1000.0 - 0.5) * 0.04;
                    let other = coords[j];
                    coords[i].update(true_rtt(&w, i, j) * noise, &other, j as u64);
                }
            }
        }
        // Pairs nobody measured.
        let mut errors = Vec::new();
        for a in 0..n {
            for b in (a + 1)..n {
                if neighbours[a].contains(&b) || neighbours[b].contains(&a) {
                    continue;
                }
                let t = true_rtt(&w, a, b);
                errors.push((coords[a].distance_ms(&coords[b]) - t).abs() / t);
            }
        }
        errors.sort_by(f64::total_cmp);
        let median = errors[errors.len() / 2];
        println!("vivaldi: median relative error {median:.4} over {} unmeasured pairs", errors.len());
        assert!(median <= 0.11, "median relative error {median}");
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
