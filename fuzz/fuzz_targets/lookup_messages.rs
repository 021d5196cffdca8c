//! Look-up messages from the network (`/swarm/find/1`): requests, and answers driving a
//! look-up.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm_core::fuzzing;

fuzz_target!(|data: &[u8]| {
    fuzzing::lookup_messages(data);
});
