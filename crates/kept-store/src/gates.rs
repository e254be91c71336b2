//! The gates data subject requests put on a subject's data (`kept_core::decision::gates`):
//! one row per request of kind restriction, objection, opt-out of sale or limit on sensitive
//! data, written when the request enters `in_progress`, read into the index at start and by
//! the other servers, and lifted (a restriction only) by the privacy team.
//!
//! INVARIANT: one gate per request: writing it again changes nothing, so the step that puts it
//! can be repeated after a failure.

use crate::Result;
use crate::StoreError;
use crate::columns::{Row, subject_id, to_u64};
use async_trait::async_trait;
use kept_core::decision::{GateKind, SubjectGate};
use kept_core::{SubjectId, UnixMillis};

/// The SELECT list [`gate_row`] reads, in order.
pub const GATE_COLUMNS: &str = "request_id, subject_id, kind, purposes, categories, since";

/// A list of keys as its column stores it.
pub fn keys_column(keys: &[String]) -> String {
    serde_json::to_string(keys).unwrap_or_else(|_| "[]".to_owned())
}

/// A gate from a row of [`GATE_COLUMNS`].
pub fn gate_row(row: &impl Row) -> Result<SubjectGate> {
    let request = to_u64(row.int(0)?, "gate request id")?;
    let corrupt = |what: &str, value: &str| {
        StoreError::Corrupt(format!(
            "the gate of request {request} has an unknown {what} `{value}`"
        ))
    };
    let kind = row.text(2)?;
    let purposes = row.text(3)?;
    let categories = row.text(4)?;
    Ok(SubjectGate {
        request,
        subject: subject_id(row.int(1)?)?,
        kind: GateKind::parse(&kind).ok_or_else(|| corrupt("kind", &kind))?,
        purposes: serde_json::from_str(&purposes).map_err(|_| corrupt("purposes", &purposes))?,
        categories: serde_json::from_str(&categories)
            .map_err(|_| corrupt("categories", &categories))?,
        since: row.int(5)?,
    })
}

/// Storage for request gates. Write methods return only after their commit.
#[async_trait]
pub trait GateStore: Send + Sync {
    /// Writes `gate` unless its request has one already (lifted or not): `true` when written.
    /// A request or subject that does not exist is `NotFound`.
    async fn put_gate(&self, gate: &SubjectGate) -> Result<bool>;

    /// Lifts the gate of `request` at `at`: the gate as it was when it was in force, `None`
    /// when the request has no gate in force (never had one, or it was lifted already).
    async fn lift_gate(&self, request: u64, at: UnixMillis) -> Result<Option<SubjectGate>>;

    /// The gates in force on `subject`, by request id.
    async fn gates_of(&self, subject: SubjectId) -> Result<Vec<SubjectGate>>;

    /// Every gate in force, by subject then request id (the index's start).
    async fn gates_in_force(&self) -> Result<Vec<SubjectGate>>;
}
