//! The WireGuard v1 data plane, sans-IO (data-flow stage 3). Work in progress: the wire
//! formats and the replay window are here; the handshake state machine (snow), cookies
//! and timers follow.

pub mod replay;
pub mod wire;
