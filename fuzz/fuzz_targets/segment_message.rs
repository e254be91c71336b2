//! Fuzz target: see `kept_fuzz::segment_message`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kept_fuzz::segment_message(data));
