//! The `datadog` normalizer on arbitrary bytes: never panics; accepted events obey the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    triage_gate_fuzz::check_source(tg_model::Source::Datadog, data);
});
