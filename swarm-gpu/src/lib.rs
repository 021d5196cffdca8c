//! GPU probes for swarm.
//!
//! A [`GpuProbe`] samples the local GPUs into a [`swarm_core::gpu::GpuSnapshot`]. The
//! [`StaticProbe`] reports a fixed inventory parsed from a spec such as
//! `2xA100-80GB,1xRTX4090-24GB`, for machines without GPUs and for tests. (The NVML probe
//! is its own piece of work.)
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

mod spec;

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
