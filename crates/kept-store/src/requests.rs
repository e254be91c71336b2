//! Data subject requests as the store keeps them: what was asked, under which regime, and the
//! deadline the law gives the company to answer (`kept_core::rights`). The preference center
//! files erasure requests today; access, portability and the request workflow come next.
//!
//! INVARIANT: a subject has at most one erasure request `Received` at a time, whatever the
//! number of servers sharing the database.

use crate::columns::{Row, subject_id, to_u64};
use crate::{Result, StoreError};
use async_trait::async_trait;
use kept_core::{SubjectId, UnixMillis};
use serde::{Deserialize, Serialize};

/// Where an erasure request stands. The full request workflow comes later; the preference
/// center only files requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErasureState {
    /// Filed, not yet answered.
    Received,
    /// Carried out.
    Completed,
    /// Refused (with a reason given elsewhere).
    Refused,
}

impl ErasureState {
    pub const ALL: [ErasureState; 3] = [
        ErasureState::Received,
        ErasureState::Completed,
        ErasureState::Refused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErasureState::Received => "received",
            ErasureState::Completed => "completed",
            ErasureState::Refused => "refused",
        }
    }

    /// A stored state column.
    pub fn from_column(s: &str) -> Result<ErasureState> {
        ErasureState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown erasure request state `{s}`")))
    }
}

/// An erasure request to file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewErasureRequest {
    pub subject: SubjectId,
    /// The regime that applied when it was made (`gdpr`, `ccpa`, …): it sets the deadline.
    pub regime: String,
    /// `preference_center`, `api`, …
    pub source: String,
    pub requested_at: UnixMillis,
    /// When the answer is due at the latest.
    pub due_at: UnixMillis,
}

/// An erasure request as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureRequest {
    pub id: u64,
    pub subject: SubjectId,
    pub regime: String,
    pub source: String,
    pub state: ErasureState,
    pub requested_at: UnixMillis,
    pub due_at: UnixMillis,
}

/// The SELECT list [`erasure_row`] reads, in order.
pub const ERASURE_COLUMNS: &str = "id, subject_id, regime, source, state, requested_at, due_at";

/// An erasure request from a row of [`ERASURE_COLUMNS`].
pub fn erasure_row(row: &impl Row) -> Result<ErasureRequest> {
    Ok(ErasureRequest {
        id: to_u64(row.int(0)?, "erasure request id")?,
        subject: subject_id(row.int(1)?)?,
        regime: row.text(2)?,
        source: row.text(3)?,
        state: ErasureState::from_column(&row.text(4)?)?,
        requested_at: row.int(5)?,
        due_at: row.int(6)?,
    })
}

/// Storage for data subject requests. Write methods return only after their commit.
#[async_trait]
pub trait RequestStore: Send + Sync {
    /// Files an erasure request, unless the subject already has one `Received`: then that one
    /// is returned unchanged (a second click does not restart the clock). A subject that does
    /// not exist is `NotFound`.
    async fn file_erasure_request(&self, request: NewErasureRequest) -> Result<ErasureRequest>;

    /// A subject's erasure requests, oldest first.
    async fn erasure_requests(&self, subject: SubjectId) -> Result<Vec<ErasureRequest>>;
}
