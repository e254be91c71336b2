//! kept-core integration tests: one binary, one module per area.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed expectation is a failed test"
)]

mod datasets;
mod decision;
mod gates;
mod golden;
mod index;
mod ledger_format;
mod lint;
mod manifest;
mod rulebook;
mod seed_scenario;
