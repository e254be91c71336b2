//! Erasing a subject, as the store does it: in ONE transaction, the subject's data key is
//! deleted (crypto-shredding: every identifier sealed under it becomes unreadable), then every
//! row Kept holds of it, but what the law requires it to keep (the consent ledger, the requests
//! log, and traits a retention plan names), and the keyed hash of each of its identifiers goes on
//! the suppression list. The subject's row stays as a tombstone (`erased_at`) so that its id is
//! never given to anyone else. Every `Store` implements [`ErasureStore`].
//!
//! INVARIANT: an erasure is all or nothing, and erasing an erased subject changes nothing. Held
//! by each backend's one transaction and its check of `erased_at` under the write lock; the
//! conformance cases `erasure_deletes_everything_but_what_the_law_keeps` and
//! `erasure_is_idempotent` check it.

use crate::Result;
use async_trait::async_trait;
use kept_core::identity::IdentifierHash;
use kept_core::{SubjectId, UnixMillis};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const DAY: UnixMillis = 24 * 60 * 60 * 1000;

/// Data of `category` is kept for `purpose`, whose legal basis in the subject's regime is
/// `basis` (`legal_obligation` or `contract`), for `retention_days` after it was collected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeepRule {
    pub category: String,
    pub purpose: String,
    pub basis: String,
    pub retention_days: u32,
}

/// What to erase and what to keep: computed by the caller from the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasurePlan {
    /// The subject named; the store erases the subject its data lives with (the survivor of
    /// any merge) and every subject merged into it.
    pub subject: SubjectId,
    /// The data subject request carried out, recorded with the suppression entries.
    pub request: Option<u64>,
    /// Traits of these categories whose retention has not run out are kept.
    pub keep: Vec<KeepRule>,
    /// Keyed hashes to suppress besides those of the identifiers the store holds (the hash of
    /// a user id known only by the subjects' `user_id` column).
    pub suppress: Vec<IdentifierHash>,
    pub at: UnixMillis,
}

/// Something kept, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retained {
    /// The table it stays in (`traits`).
    pub table: String,
    pub subject: SubjectId,
    /// Which row: a trait's key.
    pub item: String,
    pub category: String,
    pub purpose: String,
    pub basis: String,
    /// When its retention runs out (the retention job deletes it then).
    pub until: UnixMillis,
}

/// What an erasure did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureReport {
    /// The subject erased (the survivor of the subject named).
    pub subject: SubjectId,
    /// It and every subject merged into it, all erased.
    pub subjects: Vec<SubjectId>,
    /// The subject had been erased before: nothing was changed.
    pub already_erased: bool,
    pub erased_at: UnixMillis,
    /// Rows deleted, by table (only tables where some were).
    pub deleted: BTreeMap<String, u64>,
    /// What stays, each with its reason; the consent ledger and the requests log always stay.
    pub retained: Vec<Retained>,
    /// Suppression entries added.
    pub suppressed: u64,
}

impl ErasureReport {
    /// The report of a subject found erased already.
    pub fn already(subject: SubjectId, erased_at: UnixMillis, retained: Vec<Retained>) -> Self {
        ErasureReport {
            subject,
            subjects: vec![subject],
            already_erased: true,
            erased_at,
            deleted: BTreeMap::new(),
            retained,
            suppressed: 0,
        }
    }

    /// Adds `n` rows deleted from `table`.
    pub fn count(&mut self, table: &str, n: u64) {
        if n > 0 {
            *self.deleted.entry(table.to_owned()).or_default() += n;
        }
    }
}

/// Whether a trait of `category` collected at `collected_at` is kept at `now`, and why: the
/// rule that keeps it longest.
pub fn retained_trait(
    plan: &ErasurePlan,
    subject: SubjectId,
    key: &str,
    category: &str,
    collected_at: UnixMillis,
) -> Option<Retained> {
    plan.keep
        .iter()
        .filter(|r| r.category == category)
        .map(|r| {
            let until =
                collected_at.saturating_add(UnixMillis::from(r.retention_days).saturating_mul(DAY));
            (r, until)
        })
        .filter(|(_, until)| *until > plan.at)
        .max_by_key(|(_, until)| *until)
        .map(|(r, until)| Retained {
            table: "traits".to_owned(),
            subject,
            item: key.to_owned(),
            category: category.to_owned(),
            purpose: r.purpose.clone(),
            basis: r.basis.clone(),
            until,
        })
}

/// Every subject merged into `$1`, directly or through others, and `$1` itself
/// (PostgreSQL's placeholders; SQLite reads `?1`).
pub const FAMILY: &str = "WITH RECURSIVE family(id) AS (SELECT CAST($1 AS BIGINT) UNION \
     SELECT merges.from_subject_id FROM merges JOIN family ON merges.into_subject_id = family.id) \
     SELECT id FROM family ORDER BY id";

/// The subject `$1`'s data lives with: itself, or the end of the merges it was merged along.
pub const SURVIVOR: &str = "WITH RECURSIVE up(id, depth) AS (SELECT CAST($1 AS BIGINT), 0 \
     UNION ALL SELECT merges.into_subject_id, up.depth + 1 FROM merges \
     JOIN up ON merges.from_subject_id = up.id WHERE up.depth < 64) \
     SELECT id FROM up ORDER BY depth DESC LIMIT 1";

/// Suppresses the identifiers subject `$1` holds or sealed, for request `$2` at `$3`.
pub const SUPPRESS_HELD: &str = "INSERT INTO suppressions (hash, request_id, suppressed_at) \
     SELECT hash, $2, $3 FROM identities WHERE subject_id = $1 OR key_subject_id = $1 \
     ON CONFLICT (hash) DO NOTHING";

/// Suppresses the hash `$1`, for request `$2` at `$3`.
pub const SUPPRESS_ONE: &str = "INSERT INTO suppressions (hash, request_id, suppressed_at) \
     VALUES ($1, $2, $3) ON CONFLICT (hash) DO NOTHING";

/// The deletes of an erasure, in order, each `(table, statement)` over one subject `$1`: the
/// data key first (crypto-shredding), then what refers to identity log entries before them.
/// Traits are deleted one by one beside these, as the plan keeps some.
pub const DELETES: &[(&str, &str)] = &[
    (
        "subject_keys",
        "DELETE FROM subject_keys WHERE subject_id = $1",
    ),
    (
        "identities",
        "DELETE FROM identities WHERE subject_id = $1 OR key_subject_id = $1",
    ),
    (
        "identity_log_identities",
        "DELETE FROM identity_log_identities WHERE log_id IN (SELECT id FROM identity_log \
         WHERE from_subject_id = $1 OR into_subject_id = $1)",
    ),
    (
        "identity_log_traits",
        "DELETE FROM identity_log_traits WHERE subject_id = $1 OR log_id IN (SELECT id FROM \
         identity_log WHERE from_subject_id = $1 OR into_subject_id = $1)",
    ),
    (
        "identity_log",
        "DELETE FROM identity_log WHERE from_subject_id = $1 OR into_subject_id = $1",
    ),
    (
        "merges",
        "DELETE FROM merges WHERE from_subject_id = $1 OR into_subject_id = $1",
    ),
    ("events", "DELETE FROM events WHERE subject_id = $1"),
    (
        "channel_preferences",
        "DELETE FROM channel_preferences WHERE subject_id = $1",
    ),
    ("contacts", "DELETE FROM contacts WHERE subject_id = $1"),
    ("uses", "DELETE FROM uses WHERE subject_id = $1"),
    (
        "decision_log",
        "DELETE FROM decision_log WHERE subject_id = $1",
    ),
    // Obligations owed to the systems (erase, withdraw) stay: they carry out this erasure.
    (
        "outbox",
        "DELETE FROM outbox WHERE subject_id = $1 AND kind = 'event'",
    ),
    (
        "prefcenter_sessions",
        "DELETE FROM prefcenter_sessions WHERE subject_id = $1",
    ),
];

/// Leaves subject `$1` a tombstone at `$2`: no user id, no location, no interaction.
pub const TOMBSTONE: &str = "UPDATE subjects SET user_id = NULL, country = NULL, region = NULL, \
     time_zone = NULL, last_interaction_at = NULL, erased_at = $2, \
     erasure_requested_at = COALESCE(erasure_requested_at, $2) WHERE id = $1";

/// Marks the holders of the suppressed identifiers among those `write_identities` attached:
/// the holder of hash `$2`, if `$2` is suppressed, at `$1`.
pub const MARK_SUPPRESSED: &str = "UPDATE subjects SET erasure_suppressed_at = $1 \
     WHERE erasure_suppressed_at IS NULL AND erased_at IS NULL \
     AND id = (SELECT subject_id FROM identities WHERE hash = $2) \
     AND EXISTS (SELECT 1 FROM suppressions WHERE hash = $2)";

/// A merge's survivor `$2` carries the mark of the subject `$1` merged into it.
pub const CARRY_SUPPRESSED: &str = "UPDATE subjects SET erasure_suppressed_at = \
     (SELECT erasure_suppressed_at FROM subjects WHERE id = $1) \
     WHERE id = $2 AND erasure_suppressed_at IS NULL \
     AND (SELECT erasure_suppressed_at FROM subjects WHERE id = $1) IS NOT NULL";

/// Erasure and the suppression list. Write methods return only after their commit.
#[async_trait]
pub trait ErasureStore: Send + Sync {
    /// Erases the subject `plan` names (its survivor, and every subject merged into it) in one
    /// transaction, as this module says. A subject erased already is left as it is and
    /// reported so; one that does not exist is `NotFound`.
    async fn erase_subject(&self, plan: &ErasurePlan) -> Result<ErasureReport>;

    /// Which of `hashes` are on the suppression list.
    async fn suppressed(&self, hashes: &[IdentifierHash]) -> Result<Vec<IdentifierHash>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_running_rule_keeps_a_trait_until_it_runs_out() {
        let rule = |purpose: &str, days| KeepRule {
            category: "user.behavior.purchase_history".into(),
            purpose: purpose.into(),
            basis: "legal_obligation".into(),
            retention_days: days,
        };
        let plan = ErasurePlan {
            subject: SubjectId(1),
            keep: vec![rule("tax", 10), rule("orders", 30)],
            request: None,
            suppress: Vec::new(),
            at: 20 * DAY,
        };
        let kept = retained_trait(
            &plan,
            SubjectId(1),
            "orders",
            "user.behavior.purchase_history",
            0,
        )
        .unwrap();
        assert_eq!((kept.purpose.as_str(), kept.until), ("orders", 30 * DAY));
        assert!(retained_trait(&plan, SubjectId(1), "email", "user.contact.email", 0).is_none());
        // Collected long ago: both rules have run out.
        let late = ErasurePlan {
            at: 31 * DAY,
            ..plan
        };
        assert!(
            retained_trait(
                &late,
                SubjectId(1),
                "orders",
                "user.behavior.purchase_history",
                0
            )
            .is_none()
        );
    }
}
