//! GPU probes for swarm.
//!
//! A [`GpuProbe`] samples the local GPUs into a [`swarm_core::gpu::GpuSnapshot`]. The
//! [`StaticProbe`] reports a fixed inventory parsed from a spec such as
//! `2xA100-80GB,1xRTX4090-24GB`, for machines without GPUs and for tests. (The NVML
//! probe, behind the default `nvml` feature, reads real NVIDIA GPUs; [`auto_probe`] picks
//! it when the driver is there and falls back to no GPU.)
//!
//! ```
//! use swarm_gpu::{GpuProbe, StaticProbe};
//! let probe: StaticProbe = "2xA100-80GB,1xRTX4090-24GB".parse().unwrap();
//! let snapshot = probe.sample().unwrap();
//! assert_eq!(snapshot.count(), 3);
//! assert_eq!(snapshot.devices[2].compute_capability.unwrap().to_string(), "8.9");
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "nvml")]
mod nvml;
mod report;
mod spec;

use std::sync::Arc;

#[cfg(feature = "nvml")]
pub use nvml::NvmlProbe;
pub use report::{DeviceReport, GpuReport};
pub use spec::{SpecError, StaticProbe};
use swarm_core::gpu::GpuSnapshot;

/// Why a probe could not sample.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// The GPU management library is missing or failed.
    #[error("GPU management library unavailable: {0}")]
    Unavailable(String),
}

/// Something that reports the local GPUs.
pub trait GpuProbe: Send + Sync + std::fmt::Debug {
    /// A short name for logs (`static`, `nvml`, `none`).
    fn name(&self) -> &'static str;
    /// Samples the GPUs now. Blocking; call it off the async runtime.
    fn sample(&self) -> Result<GpuSnapshot, ProbeError>;

    /// Everything the probe knows, for people (`swarm-node gpus`). Blocking.
    fn report(&self) -> Result<GpuReport, ProbeError> {
        self.sample().map(|s| GpuReport::from_snapshot(self.name(), &s))
    }
}

/// The probe for `--gpus auto`: NVML when the NVIDIA driver answers, otherwise no GPU,
/// with one log line saying why. Never fails.
pub fn auto_probe() -> Arc<dyn GpuProbe> {
    #[cfg(feature = "nvml")]
    match NvmlProbe::init() {
        Ok(probe) => return Arc::new(probe),
        Err(e) => tracing::info!(reason = %e, "no NVIDIA driver: this node reports no GPU"),
    }
    #[cfg(not(feature = "nvml"))]
    tracing::info!("built without NVML: this node reports no GPU");
    Arc::new(NoGpus)
}

/// A probe for machines with no GPU.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoGpus;

impl GpuProbe for NoGpus {
    fn name(&self) -> &'static str {
        "none"
    }
    fn sample(&self) -> Result<GpuSnapshot, ProbeError> {
        Ok(GpuSnapshot::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine (and CI) has no NVIDIA driver: that is a clear error, not a crash,
    /// and `auto` falls back to no GPU.
    #[cfg(feature = "nvml")]
    #[test]
    fn missing_nvml_is_no_gpu() {
        if std::path::Path::new("/proc/driver/nvidia").exists() {
            return; // a real GPU machine: nothing to check here
        }
        let err = NvmlProbe::init().unwrap_err();
        assert!(matches!(&err, ProbeError::Unavailable(m) if m.contains("libnvidia-ml")), "{err}");
        let probe = auto_probe();
        assert_eq!(probe.name(), "none");
        assert_eq!(probe.sample().unwrap().count(), 0);
        assert_eq!(probe.report().unwrap().source, "none");
    }
}
