//! The conformance suite: one story every backend must tell the same way. Backend crates call
//! [`run_all`] from their tests with a fresh, empty store.
