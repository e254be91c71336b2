//! kept-cli integration tests: run the built `kept` binary. One binary, one module per area.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed expectation is a failed test"
)]

mod admin;
mod decide;
mod dsr;
mod dsr_connect;
mod dsr_erase;
mod keys;
mod ledger;
mod lint;
mod settings;
