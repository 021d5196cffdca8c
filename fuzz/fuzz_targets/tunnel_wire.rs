//! Any datagram through the WireGuard message parser and the replay window.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm_core::fuzzing;

fuzz_target!(|data: &[u8]| {
    fuzzing::tunnel_wire(data);
});
