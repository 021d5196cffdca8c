//! [`TaskSpec`]: what a task needs, checked before anything is placed.

use std::time::Duration;

use crate::gpu::{ComputeCapability, GpuDevice};
use crate::record::Label;

/// Nodes in one gang at most.
pub const MAX_NODES: u16 = 64;
/// GPUs per node at most.
pub const MAX_GPUS_PER_NODE: u16 = 64;
/// Shortest lease.
pub const MIN_LEASE: Duration = Duration::from_secs(1);
/// Longest lease (renewed leases live longer).
pub const MAX_LEASE: Duration = Duration::from_secs(24 * 3600);

/// Limits on one link (to the task's origin, or between gang members). `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkLimits {
    /// Largest round trip.
    pub max_rtt: Option<Duration>,
    /// Smallest throughput, bits per second (judged only from an active measurement).
    pub min_throughput_bps: Option<f64>,
    /// Largest loss ratio.
    pub max_loss: Option<f64>,
    /// Largest jitter.
    pub max_jitter: Option<Duration>,
}

impl LinkLimits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.max_rtt.is_some()
            || self.min_throughput_bps.is_some()
            || self.max_loss.is_some()
            || self.max_jitter.is_some()
    }
}

/// What a task needs.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    /// The task's name, unique for its submitter (1-64 printable characters).
    pub id: String,
    /// GPUs on each node.
    pub gpus_per_node: u16,
    /// Memory each of those GPUs must have, MiB.
    pub min_gpu_memory_mib: u64,
    /// Smallest compute capability.
    pub min_compute_capability: Option<ComputeCapability>,
    /// GPU models allowed (case-insensitive, e.g. `H100`); empty: any.
    pub gpu_models: Vec<String>,
    /// Labels each node must carry.
    pub labels: Vec<Label>,
    /// Nodes: 1 for a single task, k for a gang.
    pub nodes: u16,
    /// Limits on each node's link to the task's origin.
    pub origin_limits: LinkLimits,
    /// Limits on every link between two gang members.
    pub member_limits: LinkLimits,
    /// How long a lease lasts unless renewed.
    pub lease: Duration,
}

/// Why a task spec is not valid.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The id is empty, too long, or not printable.
    #[error("task id {0:?} must be 1-64 printable characters")]
    BadId(String),
    /// `nodes` is 0 or above the maximum.
    #[error("a task needs 1 to {MAX_NODES} nodes, not {0}")]
    Nodes(u16),
    /// `gpus_per_node` is 0 or above the maximum.
    #[error("a task needs 1 to {MAX_GPUS_PER_NODE} GPUs per node, not {0}")]
    Gpus(u16),
    /// The lease is out of range.
    #[error("a lease lasts 1 s to 24 h, not {0:?}")]
    Lease(Duration),
    /// A link limit is negative, not finite, or a loss outside 0..1.
    #[error("invalid link limit: {0}")]
    Limit(&'static str),
    /// Member limits on a single-node task.
    #[error("member link limits need a gang (nodes > 1)")]
    MemberLimitsWithoutGang,
}

fn check_limits(l: &LinkLimits) -> Result<(), TaskError> {
    if l.min_throughput_bps.is_some_and(|t| !t.is_finite() || t < 0.0) {
        return Err(TaskError::Limit("throughput must be a finite, non-negative rate"));
    }
    if l.max_loss.is_some_and(|x| !(0.0..=1.0).contains(&x)) {
        return Err(TaskError::Limit("loss must lie between 0 and 1"));
    }
    Ok(())
}

impl TaskSpec {
    /// A single-node task of `gpus` GPUs with a one-minute lease and no other demand.
    pub fn new(id: impl Into<String>, gpus: u16) -> Self {
        Self {
            id: id.into(),
            gpus_per_node: gpus,
            min_gpu_memory_mib: 0,
            min_compute_capability: None,
            gpu_models: Vec::new(),
            labels: Vec::new(),
            nodes: 1,
            origin_limits: LinkLimits::default(),
            member_limits: LinkLimits::default(),
            lease: Duration::from_secs(60),
        }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), TaskError> {
        if self.id.is_empty() || self.id.len() > 64 || !self.id.chars().all(|c| c.is_ascii_graphic()) {
            return Err(TaskError::BadId(self.id.clone()));
        }
        if self.nodes == 0 || self.nodes > MAX_NODES {
            return Err(TaskError::Nodes(self.nodes));
        }
        if self.gpus_per_node == 0 || self.gpus_per_node > MAX_GPUS_PER_NODE {
            return Err(TaskError::Gpus(self.gpus_per_node));
        }
        if self.lease < MIN_LEASE || self.lease > MAX_LEASE {
            return Err(TaskError::Lease(self.lease));
        }
        check_limits(&self.origin_limits)?;
        check_limits(&self.member_limits)?;
        if self.nodes == 1 && self.member_limits.any() {
            return Err(TaskError::MemberLimitsWithoutGang);
        }
        Ok(())
    }

    /// Whether one GPU meets the task's per-GPU demands.
    pub fn gpu_fits(&self, d: &GpuDevice) -> bool {
        gpu_fits(
            d,
            self.min_gpu_memory_mib,
            self.min_compute_capability,
            self.gpu_models.iter().map(String::as_str),
        )
    }
}

/// Whether `d` has the memory, the compute capability and one of the models (any when
/// there are none, case-insensitive) asked for.
pub(crate) fn gpu_fits<'a>(
    d: &GpuDevice,
    min_memory_mib: u64,
    min_cc: Option<ComputeCapability>,
    models: impl Iterator<Item = &'a str>,
) -> bool {
    let memory = d.memory_total_mib >= min_memory_mib;
    let cc = match (min_cc, d.compute_capability) {
        (None, _) => true,
        (Some(min), Some(have)) => (have.major, have.minor) >= (min.major, min.minor),
        (Some(_), None) => false,
    };
    let mut models = models.peekable();
    let model = models.peek().is_none() || models.any(|m| d.model.as_str().eq_ignore_ascii_case(m.trim()));
    memory && cc && model
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_specs_are_clear_errors() {
        assert!(TaskSpec::new("train-1", 2).validate().is_ok());
        let bad = |f: fn(&mut TaskSpec)| {
            let mut t = TaskSpec::new("t", 1);
            f(&mut t);
            t.validate().unwrap_err().to_string()
        };
        assert!(bad(|t| t.id = String::new()).contains("printable"));
        assert!(bad(|t| t.id = "a b".into()).contains("printable"));
        assert!(bad(|t| t.nodes = 0).contains("1 to 64 nodes"));
        assert!(bad(|t| t.gpus_per_node = 65).contains("64 GPUs"));
        assert!(bad(|t| t.lease = Duration::from_millis(10)).contains("1 s to 24 h"));
        assert!(bad(|t| t.origin_limits.max_loss = Some(2.0)).contains("loss"));
        assert!(bad(|t| t.origin_limits.min_throughput_bps = Some(f64::NAN)).contains("throughput"));
        assert!(bad(|t| t.member_limits.max_rtt = Some(Duration::from_millis(5))).contains("gang"));
    }
}
