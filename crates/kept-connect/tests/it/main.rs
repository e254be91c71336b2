//! kept-connect against real databases: the fixture shop (tests/fixtures/shop) in PostgreSQL
//! (`SHOP_POSTGRES_URL`) and MariaDB/MySQL (`SHOP_MYSQL_URL`). Each test loads the fixture
//! into a database of its own on that server. Without the variable a test says so and
//! returns; `.ci/run` sets both.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed expectation is a failed test"
)]

mod support;
mod walk;
