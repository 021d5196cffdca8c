//! Lease requests, responses and adverts from the network, applied to a lease table.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm_core::fuzzing;

fuzz_target!(|data: &[u8]| {
    fuzzing::lease_messages(data);
});
