//! kept-server's one integration-test binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed expectation is a failed test"
)]

mod api;
mod audiences;
mod batch;
mod collect;
mod config;
mod console;
mod console_datamap;
mod console_requests;
mod console_subjects;
mod decisions;
mod demo;
mod e2e;
mod erasure;
mod export;
mod forward;
mod gates;
mod identity;
mod notices;
mod openapi;
mod prefcenter;
mod propagate;
mod quarantine;
mod reads;
mod rectify;
mod requests;
mod roles;
mod snippet;
mod strict;
mod support;
mod sync;
mod uses;
