//! What Kept holds about a subject, read the same way by every feature that shows it: where
//! the subject stands (`standing`), its consent as the ledger states it and what a consent
//! signal would change (`consent`).

pub mod consent;
pub mod standing;
