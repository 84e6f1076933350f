//! The `eventbridge` normalizer on arbitrary bytes, raw or as the `detail` of
//! a CloudWatch alarm state change (see `triage_gate_fuzz::check_eventbridge`):
//! never panics; accepted events obey the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    triage_gate_fuzz::check_eventbridge(data);
});
