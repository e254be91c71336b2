//! What a rectification request changes, as the store keeps it: its corrections, sealed with
//! the subject's data key and filed in the request's own transaction, and the two writes that
//! carry them out, each in one transaction: traits set with their new provenance (and the same
//! keys' copies kept for undoing merges set too, so the old value stays nowhere), and the
//! identifiers of a kind a subject held before its corrected one dropped.

use crate::Result;
use crate::requests::Stepped;
use async_trait::async_trait;
use kept_core::SubjectId;
use kept_core::identity::{IdentifierHash, IdentifierKind};
use kept_core::requests::Request;
use kept_core::subject::Trait;

/// One correction: what it sets (`trait:<key>` or `identifier:<kind>`) and the new value,
/// sealed with the subject's data key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCorrection {
    pub target: String,
    pub sealed: Vec<u8>,
}

/// Storage for rectification. Write methods return only after their commit.
#[async_trait]
pub trait CorrectionStore: Send + Sync {
    /// `RequestStore::file_request` with `corrections` written beside the request and `detail`
    /// added to its intake record, in the same transaction.
    async fn file_request_with(
        &self,
        request: Request,
        actor: &str,
        detail: Vec<(String, String)>,
        corrections: Vec<StoredCorrection>,
    ) -> Result<Stepped>;

    /// The corrections of `request`, by target.
    async fn corrections(&self, request: u64) -> Result<Vec<StoredCorrection>>;

    /// Upserts `traits` (each replaces the subject's trait of its key) and sets the value of
    /// every copy of the same subject's same key the identity log keeps for undoing a merge,
    /// in one transaction.
    async fn correct_traits(&self, traits: Vec<Trait>) -> Result<()>;

    /// Drops every identifier of `kind` that `subject` holds but `keep`: the ones a corrected
    /// identifier replaces. Returns how many were dropped.
    async fn drop_identities(
        &self,
        subject: SubjectId,
        kind: IdentifierKind,
        keep: &IdentifierHash,
    ) -> Result<u64>;
}
