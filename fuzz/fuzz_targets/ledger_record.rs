//! Fuzz target: see `kept_fuzz::ledger_record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kept_fuzz::ledger_record(data));
