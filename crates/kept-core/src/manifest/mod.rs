//! The manifest (`kept.toml`): the shared data map that marketing, legal and engineering own
//! together. `model` holds the checked, typed manifest every other part reads.

pub mod model;

pub use model::*;
