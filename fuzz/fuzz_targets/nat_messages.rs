//! NAT-traversal messages from the network: binding messages through a NAT probe and a
//! puncher, punch signalling, relay stream headers and frames.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm_core::fuzzing;

fuzz_target!(|data: &[u8]| {
    fuzzing::nat_messages(data);
});
