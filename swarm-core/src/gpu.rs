//! What a node reports about its GPUs. Probes live in `swarm-gpu`; the type lives here
//! so records and placement need no hardware.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::bounded::{BoundedString, BoundedVec};

/// Most GPUs one node may report.
pub const MAX_GPUS: usize = 64;
/// Longest GPU model name.
pub const MAX_MODEL_LEN: usize = 64;

/// A CUDA compute capability such as 8.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ComputeCapability {
    /// Major version.
    pub major: u8,
    /// Minor version.
    pub minor: u8,
}

impl core::fmt::Display for ComputeCapability {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// One GPU as last sampled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuDevice {
    /// Index on its node.
    pub index: u32,
    /// Model name, e.g. `A100`.
    pub model: BoundedString<MAX_MODEL_LEN>,
    /// Total memory in MiB.
    pub memory_total_mib: u64,
    /// Memory in use in MiB.
    pub memory_used_mib: u64,
    /// GPU utilization in percent, 0–100.
    pub utilization_pct: u8,
    /// CUDA compute capability, when known.
    pub compute_capability: Option<ComputeCapability>,
}

/// A node's GPUs at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GpuSnapshot {
    /// The devices, in index order.
    pub devices: BoundedVec<GpuDevice, MAX_GPUS>,
}

/// Why a GPU snapshot from the network is not believable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GpuSnapshotError {
    /// A device claims more memory in use than it has.
    #[error("GPU {index} reports {used} MiB used of {total} MiB")]
    MemoryOverTotal {
        /// Device index.
        index: u32,
        /// Used MiB.
        used: u64,
        /// Total MiB.
        total: u64,
    },
    /// A device claims more than 100 % utilization.
    #[error("GPU {index} reports {pct} % utilization")]
    UtilizationOver100 {
        /// Device index.
        index: u32,
        /// The value.
        pct: u8,
    },
    /// Two devices share an index.
    #[error("GPU index {index} appears twice")]
    DuplicateIndex {
        /// The index.
        index: u32,
    },
}

impl GpuSnapshot {
    /// Number of GPUs.
    pub fn count(&self) -> usize {
        self.devices.len()
    }

    /// Total GPU memory in MiB.
    pub fn total_memory_mib(&self) -> u64 {
        self.devices.iter().map(|d| d.memory_total_mib).sum()
    }

    /// Checks the values a peer could lie about in ways that break arithmetic.
    pub fn validate(&self) -> Result<(), GpuSnapshotError> {
        for (i, d) in self.devices.iter().enumerate() {
            if d.memory_used_mib > d.memory_total_mib {
                return Err(GpuSnapshotError::MemoryOverTotal {
                    index: d.index,
                    used: d.memory_used_mib,
                    total: d.memory_total_mib,
                });
            }
            if d.utilization_pct > 100 {
                return Err(GpuSnapshotError::UtilizationOver100 { index: d.index, pct: d.utilization_pct });
            }
            if self.devices[..i].iter().any(|o| o.index == d.index) {
                return Err(GpuSnapshotError::DuplicateIndex { index: d.index });
            }
        }
        Ok(())
    }

    /// A short summary such as `2xA100 + 1xRTX4090`, or `none`.
    pub fn summary(&self) -> String {
        let mut groups: Vec<(&str, u64, usize)> = Vec::new();
        for d in self.devices.iter() {
            let gib = d.memory_total_mib / 1024;
            match groups.iter_mut().find(|(m, g, _)| *m == d.model.as_str() && *g == gib) {
                Some(group) => group.2 += 1,
                None => groups.push((d.model.as_str(), gib, 1)),
            }
        }
        if groups.is_empty() {
            return "none".to_owned();
        }
        let parts: Vec<String> = groups.iter().map(|(m, gib, n)| format!("{n}x{m}-{gib}GB")).collect();
        parts.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(index: u32, used: u64, util: u8) -> GpuDevice {
        GpuDevice {
            index,
            model: BoundedString::try_new("A100").unwrap(),
            memory_total_mib: 81920,
            memory_used_mib: used,
            utilization_pct: util,
            compute_capability: Some(ComputeCapability { major: 8, minor: 0 }),
        }
    }

    #[test]
    fn validation_catches_impossible_values() {
        let ok = GpuSnapshot {
            devices: BoundedVec::try_from_vec(vec![device(0, 10, 50), device(1, 0, 0)]).unwrap(),
        };
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(ok.summary(), "2xA100-80GB");
        assert_eq!(ok.total_memory_mib(), 2 * 81920);
        let over = GpuSnapshot { devices: BoundedVec::try_from_vec(vec![device(0, 90000, 0)]).unwrap() };
        assert!(matches!(over.validate(), Err(GpuSnapshotError::MemoryOverTotal { .. })));
        let util = GpuSnapshot { devices: BoundedVec::try_from_vec(vec![device(0, 0, 101)]).unwrap() };
        assert!(matches!(util.validate(), Err(GpuSnapshotError::UtilizationOver100 { .. })));
        let dup = GpuSnapshot {
            devices: BoundedVec::try_from_vec(vec![device(3, 0, 0), device(3, 0, 0)]).unwrap(),
        };
        assert_eq!(dup.validate(), Err(GpuSnapshotError::DuplicateIndex { index: 3 }));
        assert_eq!(GpuSnapshot::default().summary(), "none");
    }
}

/// When a changed GPU sample is worth a new record (see [`GpuChangeFilter`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuChangePolicy {
    /// Memory in use must move by at least this many MiB on some device...
    pub memory_step_mib: u64,
    /// ...or utilization by at least this many percentage points.
    pub utilization_step_pct: u8,
    /// Live-use changes are published at most this often.
    pub min_interval: Duration,
}

impl Default for GpuChangePolicy {
    fn default() -> Self {
        Self { memory_step_mib: 1024, utilization_step_pct: 10, min_interval: Duration::from_secs(10) }
    }
}

/// What a sample changed, compared with the last published snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuChange {
    /// Nothing worth a record: unchanged, below the thresholds, or too soon.
    Quiet,
    /// Live use moved past a threshold: publish.
    Usage,
    /// Devices appeared or disappeared (driver reset, Xid error): publish at once.
    Inventory {
        /// Devices before.
        before: usize,
        /// Devices now.
        after: usize,
    },
}

/// Decides which GPU samples reach gossip, so eight GPUs sampled every 2 s do not
/// flood it: inventory changes go out at once; live-use changes only past a threshold
/// (1 GiB of memory or 10 points of utilization on some device, against the last
/// *published* values, so slow drifts add up) and at most every 10 s. Sans-IO: time is
/// passed in.
#[derive(Debug, Clone)]
pub struct GpuChangeFilter {
    policy: GpuChangePolicy,
    published: Option<(GpuSnapshot, Instant)>,
}

impl GpuChangeFilter {
    /// A filter that has published nothing yet.
    pub fn new(policy: GpuChangePolicy) -> Self {
        Self { policy, published: None }
    }

    /// Feeds a sample taken at `now`; says whether to publish it. When it says so, the
    /// sample becomes the reference for later ones.
    pub fn handle_sample(&mut self, now: Instant, sample: &GpuSnapshot) -> GpuChange {
        let change = match &self.published {
            None => GpuChange::Inventory { before: 0, after: sample.count() },
            Some((old, at)) => {
                if !same_inventory(old, sample) {
                    GpuChange::Inventory { before: old.count(), after: sample.count() }
                } else if now >= *at + self.policy.min_interval && self.usage_moved(old, sample) {
                    GpuChange::Usage
                } else {
                    GpuChange::Quiet
                }
            }
        };
        if change != GpuChange::Quiet {
            self.published = Some((sample.clone(), now));
        }
        change
    }

    fn usage_moved(&self, old: &GpuSnapshot, new: &GpuSnapshot) -> bool {
        old.devices.iter().zip(new.devices.iter()).any(|(a, b)| {
            a.memory_used_mib.abs_diff(b.memory_used_mib) >= self.policy.memory_step_mib
                || a.utilization_pct.abs_diff(b.utilization_pct) >= self.policy.utilization_step_pct
        })
    }
}

fn same_inventory(a: &GpuSnapshot, b: &GpuSnapshot) -> bool {
    a.count() == b.count()
        && a.devices.iter().zip(b.devices.iter()).all(|(x, y)| {
            x.index == y.index && x.model == y.model && x.memory_total_mib == y.memory_total_mib
        })
}

#[cfg(test)]
mod change_tests {
    use super::*;

    fn snap(devices: &[(u64, u8)]) -> GpuSnapshot {
        let devices = devices
            .iter()
            .enumerate()
            .map(|(i, &(used, util))| GpuDevice {
                index: i as u32,
                model: BoundedString::try_new("H100").unwrap(),
                memory_total_mib: 81920,
                memory_used_mib: used,
                utilization_pct: util,
                compute_capability: None,
            })
            .collect();
        GpuSnapshot { devices: BoundedVec::try_from_vec(devices).unwrap() }
    }

    /// A scripted probe: eight GPUs sampled every 2 s for 10 minutes, with jitter below
    /// the thresholds, one real load change, and a GPU that falls off the bus.
    #[test]
    fn scripted_samples_publish_only_what_matters() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut f = GpuChangeFilter::new(GpuChangePolicy::default());
        let idle = [(500, 0); 8];
        let mut published = Vec::new();
        for step in 0..300u64 {
            let now = t0 + Duration::from_secs(2 * step);
            let mut devs: Vec<(u64, u8)> = idle.to_vec();
            // Jitter: ±300 MiB and ±5 points, never past a threshold.
            for (i, d) in devs.iter_mut().enumerate() {
                d.0 += (step * 37 + i as u64 * 11) % 300;
                d.1 += ((step + i as u64) % 6) as u8;
            }
            if (100..200).contains(&step) {
                devs[3] = (40_000, 95); // a job runs on GPU 3
            }
            if step >= 250 {
                devs.pop(); // GPU 7 disappears
            }
            let change = f.handle_sample(now, &snap(&devs));
            if change != GpuChange::Quiet {
                published.push((step, change));
            }
        }
        assert_eq!(
            published,
            vec![
                (0, GpuChange::Inventory { before: 0, after: 8 }),
                (100, GpuChange::Usage),
                (200, GpuChange::Usage),
                (250, GpuChange::Inventory { before: 8, after: 7 }),
            ],
            "4 records in 10 minutes instead of 300"
        );
    }

    #[test]
    fn usage_changes_wait_for_the_interval_but_inventory_does_not() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut f = GpuChangeFilter::new(GpuChangePolicy::default());
        f.handle_sample(t0, &snap(&[(0, 0)]));
        let busy = snap(&[(20_000, 90)]);
        assert_eq!(f.handle_sample(t0 + Duration::from_secs(2), &busy), GpuChange::Quiet);
        assert_eq!(f.handle_sample(t0 + Duration::from_secs(10), &busy), GpuChange::Usage);
        assert_eq!(
            f.handle_sample(t0 + Duration::from_secs(11), &snap(&[])),
            GpuChange::Inventory { before: 1, after: 0 }
        );
        // Slow drift adds up against the published value.
        let mut f = GpuChangeFilter::new(GpuChangePolicy::default());
        f.handle_sample(t0, &snap(&[(0, 0)]));
        let mut changes = 0;
        for i in 1..=20u64 {
            let c = f.handle_sample(t0 + Duration::from_secs(10 * i), &snap(&[(i * 200, 0)]));
            changes += usize::from(c == GpuChange::Usage);
        }
        assert_eq!(changes, 3, "4000 MiB of drift in 200 MiB steps is three 1 GiB+ steps");
    }
}
