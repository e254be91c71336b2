//! Fuzz target: see `kept_fuzz::request_log_record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kept_fuzz::request_log_record(data));
