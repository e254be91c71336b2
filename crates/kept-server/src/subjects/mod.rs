//! What Kept holds about a subject, read the same way by every feature that shows it: where
//! the subject stands (`standing`).

pub mod standing;
