//! kept-server's one integration-test binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod api;
mod config;
mod demo;
mod e2e;
mod openapi;
mod roles;
mod support;
