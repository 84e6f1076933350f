//! Every normalizer: the first byte picks the source, the rest is the body
//! (see `triage_gate_fuzz::check_normalizer`). Never panics; accepted events
//! obey the limits, are deterministic, carry the chosen source, and every
//! cleaned string is a fixed point of the redactor.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    triage_gate_fuzz::check_normalizer(data);
});
