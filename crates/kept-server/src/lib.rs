//! Kept's HTTP server: the APIs, the pages, configuration and authentication.

pub mod ledger;
pub mod store;
