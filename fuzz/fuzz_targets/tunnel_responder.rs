//! A responder fed arbitrary datagrams and mutated genuine ones (see
//! `swarm_core::fuzzing::tunnel_responder`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm_core::fuzzing;

fuzz_target!(|data: &[u8]| {
    fuzzing::tunnel_responder(data);
});
