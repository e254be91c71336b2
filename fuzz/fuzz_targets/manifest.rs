//! Fuzz target: see `kept_fuzz::manifest`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kept_fuzz::manifest(data));
