//! What Kept holds about a subject, read the same way by every feature that shows it: where
//! the subject stands (`standing`), its consent as the ledger states it and what a consent
//! signal would change (`consent`), its identifiers opened (`identifiers`), and everything held
//! about it for "download my data" (`export`).

pub mod consent;
pub mod export;
pub mod identifiers;
pub mod standing;
