//! The decision log's types: denied decisions (and a sample of allowed ones) as they were
//! answered, written in batches off the request path and read newest first by the privacy team.

use kept_core::{SubjectId, UnixMillis};
use serde::{Deserialize, Serialize};

/// Entries one `decision_log` call returns at most.
pub const MAX_DECISION_LOG_PAGE: u32 = 1000;

/// One logged decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionLogEntry {
    /// Assigned by the store, increasing in write order; ignored when appending.
    pub id: u64,
    /// The time decided for: a request's `at` (a scheduled send), else when it was asked.
    pub at: UnixMillis,
    /// When the question was asked. Entries written before this was kept have their `at`.
    pub asked_at: UnixMillis,
    /// `None`: the subject was unknown.
    pub subject: Option<SubjectId>,
    pub purpose: String,
    pub channel: Option<String>,
    pub topic: Option<String>,
    pub categories: Vec<String>,
    pub allowed: bool,
    /// The reason code (`denied.not_promised`).
    pub reason: String,
    /// The evidence as answered: a JSON array.
    pub evidence: String,
    /// The obligations as answered: a JSON array.
    pub obligations: String,
    /// Public id of the API key that asked (`kept_ab12cd34`), or who else did (`cli`).
    pub caller: String,
}

/// Logged decisions of one reason on one day (UTC, by when they were asked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionCount {
    /// Days since 1970-01-01.
    pub day: i64,
    pub reason: String,
    pub allowed: bool,
    pub count: u64,
}

/// The day (since 1970-01-01, UTC) of `at`.
pub fn day_of(at: UnixMillis) -> i64 {
    at.div_euclid(24 * 60 * 60 * 1000)
}

/// `entries` counted per day and reason, for the counts the store adds to with them.
pub fn count_by_day(entries: &[DecisionLogEntry]) -> Vec<DecisionCount> {
    let mut counts: std::collections::BTreeMap<(i64, &str), (bool, u64)> =
        std::collections::BTreeMap::new();
    for e in entries {
        let c = counts
            .entry((day_of(e.asked_at), e.reason.as_str()))
            .or_insert((e.allowed, 0));
        c.1 += 1;
    }
    counts
        .into_iter()
        .map(|((day, reason), (allowed, count))| DecisionCount {
            day,
            reason: reason.to_owned(),
            allowed,
            count,
        })
        .collect()
}

/// Which entries to read: all conditions hold, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionLogQuery {
    pub subject: Option<SubjectId>,
    pub reason: Option<String>,
    pub purpose: Option<String>,
    /// Only entries decided for a time at or after this one.
    pub since: Option<UnixMillis>,
    /// Only entries whose id is below this (the last id of the previous page).
    pub before: Option<u64>,
    /// At most this many, capped at [`MAX_DECISION_LOG_PAGE`].
    pub limit: u32,
}

impl Default for DecisionLogQuery {
    fn default() -> DecisionLogQuery {
        DecisionLogQuery {
            subject: None,
            reason: None,
            purpose: None,
            since: None,
            before: None,
            limit: 100,
        }
    }
}

impl DecisionLogQuery {
    /// The limit a backend applies.
    pub fn page_size(&self) -> u32 {
        self.limit.clamp(1, MAX_DECISION_LOG_PAGE)
    }
}

/// Categories as the one text column both backends keep them in.
pub fn categories_column(categories: &[String]) -> String {
    serde_json::to_string(categories).unwrap_or_else(|_| "[]".to_owned())
}

/// Categories from their column.
pub fn categories_from_column(text: &str) -> crate::Result<Vec<String>> {
    serde_json::from_str(text).map_err(|e| {
        crate::StoreError::Corrupt(format!("decision log categories are not a list: {e}"))
    })
}

/// An entry from `id, at, subject_id, purpose, channel, topic, categories, allowed, reason,
/// evidence, obligations, caller, asked_at` (the last with entries from before it was kept
/// reading their `at`).
pub fn entry_row(row: &impl crate::columns::Row) -> crate::Result<DecisionLogEntry> {
    Ok(DecisionLogEntry {
        id: crate::columns::to_u64(row.int(0)?, "decision log id")?,
        at: row.int(1)?,
        subject: row
            .int_opt(2)?
            .map(crate::columns::subject_id)
            .transpose()?,
        purpose: row.text(3)?,
        channel: row.text_opt(4)?,
        topic: row.text_opt(5)?,
        categories: categories_from_column(&row.text(6)?)?,
        allowed: row.flag(7)?,
        reason: row.text(8)?,
        evidence: row.text(9)?,
        obligations: row.text(10)?,
        caller: row.text(11)?,
        asked_at: row.int(12)?,
    })
}
