//! What a node reports about its GPUs. Probes live in `swarm-gpu`; the type lives here
//! so records and placement need no hardware.

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
