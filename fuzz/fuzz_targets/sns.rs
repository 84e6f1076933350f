//! SNS: envelope parse, string to sign, replay window, certificate- and
//! subscribe-URL allow-list, certificate PEM parse, and the CloudWatch alarm
//! mapping, on arbitrary bytes (see `triage_gate_fuzz::check_sns`). Never
//! panics; an allowed URL is always an AWS SNS https URL; accepted events obey
//! the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    triage_gate_fuzz::check_sns(data);
});
