//! Pure protocol logic of swarm: no sockets, no async runtime, no clock, no OS randomness.
//!
//! Time comes in as an [`std::time::Instant`] (local deadlines) or a [`time::UnixMillis`]
//! (wall-clock values another node must read); randomness comes in as a seed. Each
//! protocol core is fed with `handle_*` calls and drained with `poll_*` calls until they
//! return `None`, as in quinn-proto and str0m.
//!
//! Data flow covered so far:
//! 1. [`identity`] — a node's X25519 tunnel key bound to its libp2p `PeerId` by a signed
//!    [`identity::TunnelRecord`].
//! 2. [`record`] — the [`record::NodeRecord`] each node gossips: GPUs, CPU, memory,
//!    labels, its signed tunnel record, and versioned extensions.
//! 3. [`publish`] — when a node (re)publishes its own record.
//! 4. [`view`] — the [`view::ClusterView`] built from everyone's records.
//! 5. [`overlay`] — the mesh VPN's overlay addresses, computed from ids with no
//!    coordinator.
//!
//! Every byte from the network goes through [`codec::decode`], with a size cap, and every
//! variable-length field is a [`bounded`] type.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use swarm_core::record::Namespace;
//! use swarm_core::view::{ClusterView, ViewConfig};
//! # let local = libp2p_identity::Keypair::ed25519_from_bytes([1; 32]).unwrap().public().to_peer_id();
//! # #[allow(clippy::disallowed_methods)]
//! let now = Instant::now(); // the caller's clock
//! let mut view = ClusterView::new(local, Namespace::new("demo").unwrap(), ViewConfig::default());
//! view.handle_timeout(now + Duration::from_secs(1));
//! while let Some(event) = view.poll_event() {
//!     println!("{event:?}");
//! }
//! assert!(view.is_empty());
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod admission;
pub mod bounded;
pub mod codec;
pub mod discovery;
pub mod diversity;
#[cfg(any(fuzzing, test))]
#[doc(hidden)]
pub mod fuzzing;
pub mod gpu;
pub mod identity;
pub mod link;
pub mod nat;
pub mod overlay;
pub mod place;
pub mod publish;
pub mod ratelimit;
pub mod record;
pub mod redial;
mod tally;
pub mod time;
mod timer;
pub mod tunnel;
pub mod view;

pub use libp2p_identity::{Keypair, PeerId};
