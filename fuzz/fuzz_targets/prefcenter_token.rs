//! Fuzz target: see `kept_fuzz::prefcenter_token`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kept_fuzz::prefcenter_token(data));
