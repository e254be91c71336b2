//! Identifiers shared by every layer.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A subject's dense internal id. Dense so the index can keep one bit per subject per state;
/// never shown to customers (they are known by user id, email, phone or anonymous id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SubjectId(pub u32);

impl fmt::Display for SubjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
