//! The static probe and its spec language: `COUNTxMODEL-MEMGB` items joined by commas,
//! e.g. `2xA100-80GB,1xRTX4090-24GB`; `none` or an empty spec means no GPU.

use std::str::FromStr;

use swarm_core::bounded::{BoundedString, BoundedVec};
use swarm_core::gpu::{ComputeCapability, GpuDevice, GpuSnapshot, MAX_GPUS, MAX_MODEL_LEN};

use crate::{GpuProbe, ProbeError};

/// A fixed GPU inventory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StaticProbe {
    snapshot: GpuSnapshot,
}

/// Why a GPU spec does not parse. Each variant names the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The part is not `COUNTxMODEL-MEMGB`.
    #[error("bad GPU spec part {part:?}: expected COUNTxMODEL-MEMGB, e.g. 2xA100-80GB")]
    Shape {
        /// The offending part.
        part: String,
    },
    /// The count is not a positive number.
    #[error("bad GPU count in {part:?}: expected a number from 1 to {max}")]
    Count {
        /// The offending part.
        part: String,
        /// Most GPUs a node may report.
        max: usize,
    },
    /// The model name is empty, too long, or has characters other than letters, digits, `_` and `.`.
    #[error("bad GPU model in {part:?}: use 1-{max} letters, digits, '_' or '.'")]
    Model {
        /// The offending part.
        part: String,
        /// Longest model name.
        max: usize,
    },
    /// The memory size is not a positive number of GB.
    #[error("bad GPU memory in {part:?}: expected a size such as 80GB (1 to 4096)")]
    Memory {
        /// The offending part.
        part: String,
    },
    /// The spec names more GPUs than a node may report.
    #[error("GPU spec names {count} GPUs; at most {max} are allowed")]
    TooMany {
        /// GPUs named.
        count: usize,
        /// The bound.
        max: usize,
    },
}

impl StaticProbe {
    /// A probe that reports `snapshot`.
    pub fn new(snapshot: GpuSnapshot) -> Self {
        Self { snapshot }
    }

    /// The inventory it reports.
    pub fn snapshot(&self) -> &GpuSnapshot {
        &self.snapshot
    }
}

impl GpuProbe for StaticProbe {
    fn name(&self) -> &'static str {
        "static"
    }
    fn sample(&self) -> Result<GpuSnapshot, ProbeError> {
        Ok(self.snapshot.clone())
    }
}

impl FromStr for StaticProbe {
    type Err = SpecError;

    fn from_str(spec: &str) -> Result<Self, SpecError> {
        let spec = spec.trim();
        let mut devices = Vec::new();
        if spec.is_empty() || spec.eq_ignore_ascii_case("none") {
            return Ok(Self::default());
        }
        for part in spec.split(',').map(str::trim) {
            let (count, model, memory_gb) = parse_part(part)?;
            if devices.len() + count > MAX_GPUS {
                return Err(SpecError::TooMany { count: devices.len() + count, max: MAX_GPUS });
            }
            let model_name = BoundedString::try_new(model)
                .map_err(|_| SpecError::Model { part: part.to_owned(), max: MAX_MODEL_LEN })?;
            for _ in 0..count {
                devices.push(GpuDevice {
                    index: devices.len() as u32,
                    model: model_name.clone(),
                    memory_total_mib: memory_gb * 1024,
                    memory_used_mib: 0,
                    utilization_pct: 0,
                    compute_capability: compute_capability(model),
                });
            }
        }
        let devices =
            BoundedVec::try_from_vec(devices).map_err(|e| SpecError::TooMany { count: e.len, max: e.max })?;
        Ok(Self { snapshot: GpuSnapshot { devices } })
    }
}

fn parse_part(part: &str) -> Result<(usize, &str, u64), SpecError> {
    let shape = || SpecError::Shape { part: part.to_owned() };
    let (count, rest) = part.split_once(['x', 'X']).ok_or_else(shape)?;
    let (model, memory) = rest.rsplit_once('-').ok_or_else(shape)?;
    let count: usize = count
        .trim()
        .parse()
        .ok()
        .filter(|n| (1..=MAX_GPUS).contains(n))
        .ok_or_else(|| SpecError::Count { part: part.to_owned(), max: MAX_GPUS })?;
    let model_ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
    if model.is_empty() || model.len() > MAX_MODEL_LEN || !model.chars().all(model_ok) {
        return Err(SpecError::Model { part: part.to_owned(), max: MAX_MODEL_LEN });
    }
    let memory = memory.trim();
    let digits = memory
        .strip_suffix("GB")
        .or_else(|| memory.strip_suffix("gb"))
        .or_else(|| memory.strip_suffix("G"))
        .ok_or_else(|| SpecError::Memory { part: part.to_owned() })?;
    let memory_gb: u64 = digits
        .parse()
        .ok()
        .filter(|g| (1..=4096).contains(g))
        .ok_or_else(|| SpecError::Memory { part: part.to_owned() })?;
    Ok((count, model, memory_gb))
}

/// CUDA compute capability of well-known data-centre and consumer models.
fn compute_capability(model: &str) -> Option<ComputeCapability> {
    let upper = model.to_ascii_uppercase();
    let cc = |major, minor| Some(ComputeCapability { major, minor });
    match upper.as_str() {
        "B200" | "B100" | "GB200" => cc(10, 0),
        "H100" | "H200" | "H800" | "GH200" => cc(9, 0),
        "L4" | "L40" | "L40S" | "RTX4090" | "RTX4080" | "RTX6000ADA" => cc(8, 9),
        "A100" | "A800" | "A30" => cc(8, 0),
        "A10" | "A40" | "A6000" | "RTX3090" | "RTX3080" | "A10G" => cc(8, 6),
        "T4" | "RTX2080TI" => cc(7, 5),
        "V100" => cc(7, 0),
        "P100" => cc(6, 0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_specs() {
        let p: StaticProbe = "2xA100-80GB,1xRTX4090-24GB".parse().unwrap();
        let s = p.sample().unwrap();
        assert_eq!(s.count(), 3);
        assert_eq!(s.devices[0].model.as_str(), "A100");
        assert_eq!(s.devices[0].memory_total_mib, 80 * 1024);
        assert_eq!(s.devices[2].index, 2);
        assert_eq!(s.devices[2].memory_total_mib, 24 * 1024);
        assert_eq!(s.summary(), "2xA100-80GB,1xRTX4090-24GB");
        assert_eq!(s.validate(), Ok(()));
        assert_eq!(" 8xH100-80GB ".parse::<StaticProbe>().unwrap().snapshot().count(), 8);
        assert!("8x H100-80GB".parse::<StaticProbe>().is_err(), "no space inside a part");
        assert_eq!("none".parse::<StaticProbe>().unwrap().snapshot().count(), 0);
        assert_eq!("".parse::<StaticProbe>().unwrap().snapshot().count(), 0);
        let p: StaticProbe = "1xMI300X-192GB".parse().unwrap();
        assert_eq!(p.snapshot().devices[0].compute_capability, None);
        assert_eq!(p.snapshot().devices[0].model.as_str(), "MI300X");
    }

    #[test]
    fn bad_specs_name_the_bad_part() {
        let err = |s: &str| s.parse::<StaticProbe>().unwrap_err();
        assert_eq!(err("2xA100-80GB,banana"), SpecError::Shape { part: "banana".into() });
        assert!(matches!(err("0xA100-80GB"), SpecError::Count { part, .. } if part == "0xA100-80GB"));
        assert!(matches!(err("twoxA100-80GB"), SpecError::Count { .. }));
        assert!(matches!(err("1x-80GB"), SpecError::Model { .. }));
        assert!(matches!(err("1xA1/00-80GB"), SpecError::Model { .. }));
        assert!(matches!(err("1xA100-80TB"), SpecError::Memory { part, .. } if part == "1xA100-80TB"));
        assert!(matches!(err("1xA100-0GB"), SpecError::Memory { .. }));
        assert!(matches!(err("1xA100-"), SpecError::Memory { .. }));
        assert_eq!(err("40xA100-80GB,40xA100-80GB"), SpecError::TooMany { count: 80, max: 64 });
        assert!(err("1xA100-80TB").to_string().contains("1xA100-80TB"));
    }
}
