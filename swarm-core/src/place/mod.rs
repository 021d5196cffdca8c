//! Decentralized placement (data-flow stage 7), the pure parts:
//!
//! - [`TaskSpec`]: what a task needs, validated;
//! - [`score`]: feasibility and scoring of a view's nodes for a task, with an
//!   explanation for every node;
//! - [`gang`]: `k` members whose pairwise links meet the task's limits;
//! - [`LeaseTable`]: a node's own account of its GPUs, the sole authority that admits or
//!   refuses a reservation, so no GPU is booked twice;
//! - [`LeaseService`]: the node's answer to each lease request, over its table and its
//!   GPUs (the node, the fuzzer and the simulator run this one copy);
//! - [`wire`]: the lease protocol's messages;
//! - [`advert`]: the leased GPUs a node advertises in its record;
//! - [`submit`]: a submission (sans-IO): power-of-d choices, retries, gangs all or
//!   nothing;
//! - [`watch`]: live placements watching the links their task constrained;
//! - [`trust`]: placing among liars: own measurements first, claims cross-checked,
//!   reliability scores from lease outcomes.

pub mod advert;
pub mod gang;
mod index;
pub mod lease;
pub mod live;
pub mod score;
mod service;
pub mod sim;
pub mod submit;
mod task;
pub mod trust;
pub mod watch;
pub mod wire;

pub use advert::{leased_in, LeasedGpus};
pub use gang::{choose_gang, Gang, GangError};
pub use index::PlacementIndex;
pub use lease::{Lease, LeaseConfig, LeaseError, LeaseId, LeaseTable, Refusal};
pub use live::LiveIndex;
pub use score::{rank, Ranking, Rejection, ScoreWeights, Scored};
pub use service::{LeaseEvent, LeaseService, LeaseStats};
pub use submit::{PlaceError, PlacedNode, Placement, Reply, Step, Submission, SubmitConfig};
pub use task::{LinkLimits, TaskError, TaskSpec, MAX_GPUS_PER_NODE, MAX_LEASE, MAX_NODES, MIN_LEASE};
