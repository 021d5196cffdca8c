//! The NVML probe: real NVIDIA GPUs through the driver's management library, loaded at
//! run time. No driver (no `libnvidia-ml.so.1`) is an ordinary case: [`NvmlProbe::init`]
//! returns [`ProbeError::Unavailable`] and [`crate::auto_probe`] falls back to no GPU.

use nvml_wrapper::enum_wrappers::device::{EccCounter, MemoryError, TemperatureSensor};
use nvml_wrapper::Nvml;

use crate::report::{DeviceReport, GpuReport};
use crate::{GpuProbe, ProbeError};
use swarm_core::gpu::GpuSnapshot;

/// Probes NVIDIA GPUs through NVML. Blocking calls: use it off the async runtime.
pub struct NvmlProbe {
    nvml: Nvml,
}

impl std::fmt::Debug for NvmlProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlProbe").finish_non_exhaustive()
    }
}

const MIB: u64 = 1 << 20;

impl NvmlProbe {
    /// Loads NVML and initialises it.
    pub fn init() -> Result<Self, ProbeError> {
        Nvml::init().map(|nvml| Self { nvml }).map_err(|e| ProbeError::Unavailable(e.to_string()))
    }

    /// Everything NVML tells about every device. A device that fails to answer a
    /// question it does not support gets `None` there; one that fails to open at all
    /// is an error (it has gone: a driver reset, an Xid error).
    pub fn report(&self) -> Result<GpuReport, ProbeError> {
        let err = |e: nvml_wrapper::error::NvmlError| ProbeError::Unavailable(e.to_string());
        let count = self.nvml.device_count().map_err(err)?;
        let mut devices = Vec::with_capacity(count as usize);
        for index in 0..count {
            let d = self.nvml.device_by_index(index).map_err(err)?;
            let memory = d.memory_info().map_err(err)?;
            let utilization = d.utilization_rates().ok();
            devices.push(DeviceReport {
                index,
                uuid: d.uuid().ok(),
                name: d.name().map_err(err)?,
                memory_total_mib: memory.total / MIB,
                memory_used_mib: memory.used / MIB,
                memory_free_mib: memory.free / MIB,
                utilization_gpu_pct: utilization.as_ref().map(|u| u.gpu),
                utilization_memory_pct: utilization.as_ref().map(|u| u.memory),
                compute_capability: d
                    .cuda_compute_capability()
                    .ok()
                    .map(|c| format!("{}.{}", c.major, c.minor)),
                power_draw_w: d.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
                power_limit_w: d.enforced_power_limit().ok().map(|mw| f64::from(mw) / 1000.0),
                temperature_c: d.temperature(TemperatureSensor::Gpu).ok(),
                ecc_corrected: d.total_ecc_errors(MemoryError::Corrected, EccCounter::Aggregate).ok(),
                ecc_uncorrected: d.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Aggregate).ok(),
                pcie_gen: d.current_pcie_link_gen().ok(),
                pcie_width: d.current_pcie_link_width().ok(),
            });
        }
        let cuda_version = self.nvml.sys_cuda_driver_version().ok().map(|v| {
            format!(
                "{}.{}",
                nvml_wrapper::cuda_driver_version_major(v),
                nvml_wrapper::cuda_driver_version_minor(v)
            )
        });
        Ok(GpuReport {
            source: "nvml",
            driver_version: self.nvml.sys_driver_version().ok(),
            cuda_version,
            devices,
        })
    }
}

impl GpuProbe for NvmlProbe {
    fn name(&self) -> &'static str {
        "nvml"
    }

    fn sample(&self) -> Result<GpuSnapshot, ProbeError> {
        self.report().map(|r| r.to_snapshot())
    }

    fn report(&self) -> Result<GpuReport, ProbeError> {
        NvmlProbe::report(self)
    }
}
