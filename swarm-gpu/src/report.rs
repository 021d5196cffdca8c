//! A detailed, printable inventory of the local GPUs (`swarm-node gpus`), richer than the
//! [`GpuSnapshot`] that is gossiped.

use serde::Serialize;
use swarm_core::bounded::{BoundedString, BoundedVec};
use swarm_core::gpu::{ComputeCapability, GpuDevice, GpuSnapshot, MAX_GPUS};

/// One GPU as a probe saw it. Fields a device does not support are `None`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceReport {
    /// Index on this machine.
    pub index: u32,
    /// Stable identifier (`GPU-…` for NVIDIA devices).
    pub uuid: Option<String>,
    /// Model name.
    pub name: String,
    /// Total memory in MiB.
    pub memory_total_mib: u64,
    /// Memory in use in MiB.
    pub memory_used_mib: u64,
    /// Free memory in MiB.
    pub memory_free_mib: u64,
    /// GPU utilization, percent.
    pub utilization_gpu_pct: Option<u32>,
    /// Memory-controller utilization, percent.
    pub utilization_memory_pct: Option<u32>,
    /// CUDA compute capability, e.g. `9.0`.
    pub compute_capability: Option<String>,
    /// Power draw in watts.
    pub power_draw_w: Option<f64>,
    /// Enforced power limit in watts.
    pub power_limit_w: Option<f64>,
    /// Die temperature in °C.
    pub temperature_c: Option<u32>,
    /// Corrected ECC errors over the device's lifetime.
    pub ecc_corrected: Option<u64>,
    /// Uncorrected ECC errors over the device's lifetime.
    pub ecc_uncorrected: Option<u64>,
    /// Current PCIe link generation.
    pub pcie_gen: Option<u32>,
    /// Current PCIe link width (lanes).
    pub pcie_width: Option<u32>,
}

/// Every GPU of this machine, and where the numbers came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuReport {
    /// `nvml`, `static` or `none`.
    pub source: &'static str,
    /// Driver version, when a driver answered.
    pub driver_version: Option<String>,
    /// CUDA version the driver supports, e.g. `13.0`.
    pub cuda_version: Option<String>,
    /// The devices, in index order.
    pub devices: Vec<DeviceReport>,
}

impl GpuReport {
    /// A report of `snapshot`, which carries no driver details.
    pub fn from_snapshot(source: &'static str, snapshot: &GpuSnapshot) -> Self {
        let devices = snapshot
            .devices
            .iter()
            .map(|d| DeviceReport {
                index: d.index,
                uuid: None,
                name: d.model.as_str().to_owned(),
                memory_total_mib: d.memory_total_mib,
                memory_used_mib: d.memory_used_mib,
                memory_free_mib: d.memory_total_mib.saturating_sub(d.memory_used_mib),
                utilization_gpu_pct: Some(u32::from(d.utilization_pct)),
                utilization_memory_pct: None,
                compute_capability: d.compute_capability.map(|c| c.to_string()),
                power_draw_w: None,
                power_limit_w: None,
                temperature_c: None,
                ecc_corrected: None,
                ecc_uncorrected: None,
                pcie_gen: None,
                pcie_width: None,
            })
            .collect();
        Self { source, driver_version: None, cuda_version: None, devices }
    }

    /// The part of this report that is gossiped. Names are shortened to the model
    /// (`NVIDIA H200` → `H200`) and cut to the record's bound; at most 64 devices.
    pub fn to_snapshot(&self) -> GpuSnapshot {
        let devices: Vec<GpuDevice> = self
            .devices
            .iter()
            .take(MAX_GPUS)
            .map(|d| GpuDevice {
                index: d.index,
                model: model_name(&d.name),
                memory_total_mib: d.memory_total_mib,
                memory_used_mib: d.memory_used_mib.min(d.memory_total_mib),
                utilization_pct: d.utilization_gpu_pct.unwrap_or(0).min(100) as u8,
                compute_capability: d.compute_capability.as_deref().and_then(parse_cc),
            })
            .collect();
        GpuSnapshot { devices: BoundedVec::try_from_vec(devices).unwrap_or_default() }
    }
}

fn model_name(name: &str) -> BoundedString<{ swarm_core::gpu::MAX_MODEL_LEN }> {
    let short = name.trim().trim_start_matches("NVIDIA ").trim_start_matches("Tesla ");
    let cleaned: String = short
        .chars()
        .filter_map(|c| match c {
            c if c.is_ascii_alphanumeric() || c == '.' || c == '_' => Some(c),
            ' ' | '-' => Some('_'),
            _ => None,
        })
        .take(swarm_core::gpu::MAX_MODEL_LEN)
        .collect();
    BoundedString::try_new(&cleaned).unwrap_or_default()
}

fn parse_cc(text: &str) -> Option<ComputeCapability> {
    let (major, minor) = text.split_once('.')?;
    Some(ComputeCapability { major: major.parse().ok()?, minor: minor.parse().ok()? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GpuProbe, StaticProbe};

    #[test]
    fn static_report_round_trips_to_a_snapshot() {
        let snapshot = "2xH100-80GB".parse::<StaticProbe>().unwrap().sample().unwrap();
        let report = GpuReport::from_snapshot("static", &snapshot);
        assert_eq!(report.devices.len(), 2);
        assert_eq!(report.devices[1].compute_capability.as_deref(), Some("9.0"));
        assert_eq!(report.to_snapshot(), snapshot);
    }

    #[test]
    fn driver_names_become_model_names() {
        assert_eq!(model_name("NVIDIA H200").as_str(), "H200");
        assert_eq!(model_name("NVIDIA A100-SXM4-80GB").as_str(), "A100_SXM4_80GB");
        assert_eq!(model_name("Tesla V100-PCIE-32GB").as_str(), "V100_PCIE_32GB");
        assert_eq!(model_name(&"x".repeat(100)).len(), 64);
        assert_eq!(parse_cc("9.0"), Some(ComputeCapability { major: 9, minor: 0 }));
        assert_eq!(parse_cc("nine"), None);
    }
}
