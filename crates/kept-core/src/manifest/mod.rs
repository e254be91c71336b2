//! The manifest (`kept.toml`): the shared data map that marketing, legal and engineering own
//! together. `model` holds the checked, typed manifest every other part reads; `load` turns a
//! file into it, with positions for `kept lint`; `keys` says how keys and promises relate;
//! `dataset` declares the company's own databases for the connectors.

pub mod dataset;
mod keys;
mod load;
pub mod model;
mod notice_content;
mod notice_hash;
pub mod promises;
mod raw;

pub use keys::{KNOWN_CHANNELS, covers, is_within};
pub(crate) use keys::{child_path, entry_path, item_path};
pub use load::{ErrorLocation, Loaded, ManifestError, Position, Positions, load, parse_retention};
pub use model::*;

/// The example manifest `kept init` writes: a retail company, Larkspur Goods. Its SMS marketing
/// tool uses phone numbers no notice promised for marketing, so `kept lint` flags it.
pub const EXAMPLE_TOML: &str = include_str!("example.toml");

/// What the demo adds to the example: a TCPA-style SMS offers notice and the opt-in form that
/// shows it, which make the SMS marketing tool's use a promised one.
pub const DEMO_ADDENDUM_TOML: &str = include_str!("demo_addendum.toml");

/// The manifest `kept serve --demo` runs: the example plus the demo addendum.
pub fn demo_toml() -> String {
    format!("{EXAMPLE_TOML}\n{DEMO_ADDENDUM_TOML}")
}
