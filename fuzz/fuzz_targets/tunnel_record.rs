//! Any bytes as a signed tunnel record's body and signature.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm_core::fuzzing;

fuzz_target!(|data: &[u8]| {
    fuzzing::tunnel_record(data);
});
