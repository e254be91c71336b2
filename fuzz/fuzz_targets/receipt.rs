//! Fuzz target: see `kept_fuzz::receipt`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kept_fuzz::receipt(data));
