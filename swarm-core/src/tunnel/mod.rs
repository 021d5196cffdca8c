//! The WireGuard v1 data plane, sans-IO (data-flow stage 3). Work in progress: the wire
//! formats, mac1/mac2, TAI64N timestamps and the replay window are here; the handshake state machine (snow), cookies
//! and timers follow.

pub mod mac;
pub mod replay;
pub mod tai64n;
pub mod wire;
