//! Kept's HTTP server.
