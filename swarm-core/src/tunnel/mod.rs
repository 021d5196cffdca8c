//! The WireGuard v1 data plane, sans-IO (data-flow stage 3): byte-compatible with the
//! Linux module, wireguard-go and boringtun.
//!
//! - [`wire`]: the four message types as checked views;
//! - [`mac`], [`cookie`], [`ratelimit`]: mac1/mac2, cookie replies and the per-source
//!   token bucket that protect a responder under load;
//! - [`tai64n`]: initiation timestamps; [`replay`]: the 2048-counter replay window;
//! - [`frame`]: what a decrypted payload is (IP packet or swarm frame);
//! - [`Tunnels`]: every tunnel of a node, as one state machine (handshakes through
//!   snow, sessions with previous/current/next rotation, the whitepaper's timers).

pub mod config;
pub mod cookie;
mod device;
pub mod drops;
pub mod frame;
pub mod handshakes;
pub mod mac;
pub(crate) mod noise;
pub use crate::ratelimit;
pub mod replay;
mod session;
pub mod tai64n;
pub mod wire;

pub use config::{Timers, TunnelConfig};
pub use device::{
    AddPeerError, PeerHandle, PeerStatus, Received, SendError, Transmit, TunnelEvent, Tunnels,
    MAX_PENDING_INITIATIONS, PENDING_INITIATION_TTL,
};
pub use drops::{DropCounts, DropReason};
pub use frame::{FrameKind, Payload};

/// Room to leave in an output buffer around a payload: header (16), padding (up to 15)
/// and tag (16).
pub const OVERHEAD: usize = wire::TRANSPORT_HEADER_LEN + 15 + wire::TAG_LEN;
