//! Kept's domain: the manifest, the rulebook, the decision engine, the in-memory index and the
//! consent ledger's encoding. Nothing here touches a socket, a file or the clock: time and
//! randomness are inputs, so every rule can be tested as a pure function.

pub mod audience;
pub mod collection;
pub mod csv;
pub mod decision;
pub mod demo;
pub mod fideslang;
pub mod identity;
pub mod ids;
pub mod index;
pub mod ledger;
pub mod lint;
pub mod manifest;
pub mod receipt;
pub mod redact;
pub mod regime;
pub mod requests;
pub mod rights;
pub mod rulebook;
pub mod signals;
pub mod spelling;
pub mod subject;
pub mod token;

pub use ids::SubjectId;

/// Milliseconds since the Unix epoch, UTC. Domain code takes `now` as one of these.
pub type UnixMillis = i64;
