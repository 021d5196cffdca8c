//! Any bytes, from any of a few authors, into a cluster view: it never panics and never
//! holds more than its bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm_core::fuzzing;

fuzz_target!(|data: &[u8]| {
    fuzzing::view_ingest(data);
});
