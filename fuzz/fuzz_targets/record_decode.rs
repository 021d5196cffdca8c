//! Any bytes through the record decoder and its checks: a clean error or a record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm_core::fuzzing;

fuzz_target!(|data: &[u8]| {
    fuzzing::record_decode(data);
});
