//! The lease protocol's messages (`/swarm/lease/1`, request-response): versioned,
//! bounded, decoded through [`codec::decode`] with a size cap like every other message.

use serde::{Deserialize, Serialize};

use super::task::TaskSpec;
use crate::bounded::{BoundedString, BoundedVec};
use crate::codec::{self, WireMessage};
use crate::gpu::ComputeCapability;

/// Largest lease message.
pub const MAX_LEASE_MESSAGE: usize = 4096;
pub use crate::record::ext::MAX_LEASE_GPUS;

/// What a reservation asks of each GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuDemand {
    /// GPUs wanted.
    pub count: u16,
    /// Memory each must have, MiB.
    pub min_memory_mib: u64,
    /// Smallest compute capability.
    pub min_compute_capability: Option<ComputeCapability>,
    /// Models allowed; empty: any.
    pub models: BoundedVec<BoundedString<32>, 8>,
}

impl GpuDemand {
    /// Whether `d` meets the demand.
    pub fn fits(&self, d: &crate::gpu::GpuDevice) -> bool {
        super::task::gpu_fits(
            d,
            self.min_memory_mib,
            self.min_compute_capability,
            self.models.iter().map(|m| m.as_str()),
        )
    }
}

/// A request to a node about its own GPUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseRequest {
    /// Reserve GPUs for a task for `ttl_ms`.
    Reserve {
        /// The task's id.
        task: BoundedString<64>,
        /// What is wanted.
        demand: GpuDemand,
        /// Lease length, ms.
        ttl_ms: u32,
    },
    /// Extend a lease.
    Renew {
        /// The lease.
        lease: u64,
        /// New length from now, ms.
        ttl_ms: u32,
    },
    /// End a lease.
    Release {
        /// The lease.
        lease: u64,
    },
}

/// The node's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseResponse {
    /// Reserved.
    Granted {
        /// The lease's number.
        lease: u64,
        /// The GPU indices held.
        gpus: BoundedVec<u32, MAX_LEASE_GPUS>,
        /// Milliseconds until it expires unless renewed.
        expires_in_ms: u32,
    },
    /// Not reserved.
    Rejected {
        /// Why, for people.
        reason: BoundedString<200>,
        /// Eligible GPUs free now.
        free_now: u32,
    },
    /// Renewed.
    Renewed {
        /// Milliseconds until it expires unless renewed again.
        expires_in_ms: u32,
    },
    /// Released.
    Released,
    /// Unknown lease, or someone else's.
    Failed {
        /// Why.
        reason: BoundedString<200>,
    },
}

impl LeaseRequest {
    /// The request that reserves `task`'s GPUs on one node.
    pub fn reserve(task: &TaskSpec) -> Self {
        let models = task
            .gpu_models
            .iter()
            .filter_map(|m| BoundedString::try_new(m.trim()).ok())
            .take(8)
            .collect::<Vec<_>>();
        LeaseRequest::Reserve {
            task: BoundedString::try_new(&task.id).unwrap_or_default(),
            demand: GpuDemand {
                count: task.gpus_per_node,
                min_memory_mib: task.min_gpu_memory_mib,
                min_compute_capability: task.min_compute_capability,
                models: BoundedVec::try_from_vec(models).unwrap_or_default(),
            },
            ttl_ms: u32::try_from(task.lease.as_millis()).unwrap_or(u32::MAX),
        }
    }
}

impl WireMessage for LeaseRequest {
    const KIND: u8 = 0x10;
    const VERSION: u8 = 1;
}

impl WireMessage for LeaseResponse {
    const KIND: u8 = 0x11;
    const VERSION: u8 = 1;
}

impl LeaseRequest {
    /// Encodes for the wire.
    pub fn encode(&self) -> Result<Vec<u8>, codec::EncodeError> {
        codec::encode(self, MAX_LEASE_MESSAGE)
    }

    /// Decodes bytes from the network.
    pub fn decode(bytes: &[u8]) -> Result<Self, codec::DecodeError> {
        codec::decode(bytes, MAX_LEASE_MESSAGE)
    }
}

impl LeaseResponse {
    /// Encodes for the wire.
    pub fn encode(&self) -> Result<Vec<u8>, codec::EncodeError> {
        codec::encode(self, MAX_LEASE_MESSAGE)
    }

    /// Decodes bytes from the network.
    pub fn decode(bytes: &[u8]) -> Result<Self, codec::DecodeError> {
        codec::decode(bytes, MAX_LEASE_MESSAGE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_hostile_bytes() {
        let req = LeaseRequest::Reserve {
            task: BoundedString::try_new("train-7").unwrap(),
            demand: GpuDemand {
                count: 2,
                min_memory_mib: 40_000,
                min_compute_capability: Some(ComputeCapability { major: 8, minor: 0 }),
                models: BoundedVec::try_from_vec(vec![BoundedString::try_new("H100").unwrap()]).unwrap(),
            },
            ttl_ms: 60_000,
        };
        let bytes = req.encode().unwrap();
        assert_eq!(LeaseRequest::decode(&bytes).unwrap(), req);
        let resp = LeaseResponse::Granted {
            lease: 9,
            gpus: BoundedVec::try_from_vec(vec![0, 1]).unwrap(),
            expires_in_ms: 60_000,
        };
        assert_eq!(LeaseResponse::decode(&resp.encode().unwrap()).unwrap(), resp);
        // Truncations, a wrong kind, a length bomb: errors, never panics.
        for n in 0..bytes.len() {
            assert!(LeaseRequest::decode(&bytes[..n]).is_err());
        }
        assert!(LeaseResponse::decode(&bytes).is_err(), "a request is not a response");
        assert!(LeaseRequest::decode(&[0x10, 1, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F]).is_err());
    }
}
