//! Data subject requests as the store keeps them: the requests themselves
//! (`kept_core::requests::Request`, with their deadline from `kept_core::rights`) and the
//! requests log, each step of a request a record chained and checkpointed like the consent
//! ledger. The preference center's older erasure requests (`file_erasure_request`) stay
//! beside them.
//!
//! INVARIANT: a request's row and its log change together: `file_request` and
//! `step_request` write the row, the log record and its checkpoint in one transaction, or
//! nothing. The conformance case `requests_a_failed_step_changes_nothing` checks it.
//!
//! INVARIANT: a request with tasks is completed only once every one of them is settled (done
//! or handled), checked inside the step's transaction (`check_tasks`), and a settled task never
//! changes again. The conformance case `requests_complete_only_when_every_task_is_settled`
//! checks it.
//!
//! INVARIANT: a subject has at most one erasure request `Received` at a time, whatever the
//! number of servers sharing the database. Held by each backend's partial unique index, not
//! checkable in one process: the conformance case `requests_erasure_is_filed_once_per_subject`
//! checks it.

use crate::columns::{Row, subject_id, to_u64};
use crate::{LedgerRow, Result, StoreError};
use async_trait::async_trait;
use kept_core::ledger::{Checkpoint, LedgerEntry};
use kept_core::requests::{
    Channel, Request, RequestError, RequestKind, Scope, State, TaskState, Transition, Verification,
};
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

/// The SELECT list [`request_row`] reads, in order.
pub const REQUEST_COLUMNS: &str = "id, subject_id, kind, scope, channel, verification, regime, \
     region, rule, state, resume, received_at, due_at, acknowledge_by, extension_until, \
     extended_at, reason, updated_at";

/// A request's `scope` column.
pub fn scope_column(scope: &Scope) -> String {
    serde_json::to_string(scope).unwrap_or_else(|_| "{}".to_owned())
}

/// A request's `verification` column.
pub fn verification_column(v: Option<&Verification>) -> Option<String> {
    v.and_then(|v| serde_json::to_string(v).ok())
}

/// A request from a row of [`REQUEST_COLUMNS`].
pub fn request_row(row: &impl Row) -> Result<Request> {
    let id = to_u64(row.int(0)?, "request id")?;
    let corrupt = |what: &str, value: &str| {
        StoreError::Corrupt(format!("request {id} has an unknown {what} `{value}`"))
    };
    let kind = row.text(2)?;
    let scope = row.text(3)?;
    let channel = row.text(4)?;
    let verification = row.text_opt(5)?;
    let state = row.text(9)?;
    let resume = row.text_opt(10)?;
    Ok(Request {
        id,
        subject: subject_id(row.int(1)?)?,
        kind: RequestKind::parse(&kind).ok_or_else(|| corrupt("kind", &kind))?,
        scope: serde_json::from_str(&scope).map_err(|_| corrupt("scope", &scope))?,
        channel: Channel::parse(&channel).ok_or_else(|| corrupt("channel", &channel))?,
        verification: match verification {
            None => None,
            Some(v) => Some(serde_json::from_str(&v).map_err(|_| corrupt("verification", &v))?),
        },
        regime: row.text(6)?,
        region: row.text_opt(7)?,
        rule: row.text(8)?,
        state: State::parse(&state).ok_or_else(|| corrupt("state", &state))?,
        resume: match resume {
            None => None,
            Some(r) => Some(State::parse(&r).ok_or_else(|| corrupt("state", &r))?),
        },
        received_at: row.int(11)?,
        due_at: row.int(12)?,
        acknowledge_by: row.int_opt(13)?,
        extension_until: row.int_opt(14)?,
        extended_at: row.int_opt(15)?,
        reason: row.text_opt(16)?,
        updated_at: row.int(17)?,
    })
}

/// Which requests to list: every filter given must hold. Newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFilter {
    pub state: Option<State>,
    pub kind: Option<RequestKind>,
    pub subject: Option<SubjectId>,
    /// Due strictly before this time.
    pub due_before: Option<UnixMillis>,
    /// Open (neither completed nor rejected) and due before this time: overdue at it.
    pub open_due_before: Option<UnixMillis>,
    /// Not overdue at this time: closed, or due at or after it.
    pub not_overdue_at: Option<UnixMillis>,
    /// Only ids below this one (the next page).
    pub before: Option<u64>,
    pub limit: u32,
}

/// Which open requests to list for the privacy team's queue, in the order they are due: by
/// due date, then id. Open requests past their due date come first, since their due date is
/// the earliest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueFilter {
    /// Only this state; a closed state (completed, rejected) lists nothing.
    pub state: Option<State>,
    pub kind: Option<RequestKind>,
    /// Only requests after this `(due_at, id)` in the queue's order (the next page).
    pub after: Option<(UnixMillis, u64)>,
    pub limit: u32,
}

/// The most requests one listing returns.
pub const MAX_REQUEST_PAGE: u32 = 1000;

/// Open requests by how soon they are due.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenCounts {
    /// Open, and due after now but within the window.
    pub due_soon: u64,
    /// Open and past their due date.
    pub overdue: u64,
}

/// One task of a request's work: what it is done on (`kept`, `dataset:<name>`,
/// `system:<name>`, as `kept_core::requests::Target` writes it) and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestTask {
    pub request: u64,
    pub target: String,
    pub state: TaskState,
    /// What the work did or why it failed (counts as JSON, an error, an operator's note).
    pub detail: Option<String>,
    /// Tries reported: each `failed`, and the one that was `done`.
    pub attempts: u32,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
}

/// The SELECT list [`task_row`] reads, in order.
pub const TASK_COLUMNS: &str =
    "request_id, target, state, detail, attempts, created_at, updated_at";

/// A task from a row of [`TASK_COLUMNS`].
pub fn task_row(row: &impl Row) -> Result<RequestTask> {
    let request = to_u64(row.int(0)?, "request id")?;
    let state = row.text(2)?;
    Ok(RequestTask {
        request,
        target: row.text(1)?,
        state: TaskState::parse(&state).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "a task of request {request} has an unknown state `{state}`"
            ))
        })?,
        detail: row.text_opt(3)?,
        attempts: crate::columns::to_u32(row.int(4)?, "task attempts")?,
        created_at: row.int(5)?,
        updated_at: row.int(6)?,
    })
}

/// What a step's transaction checks and writes of the request's tasks, beside the request and
/// its log record: the task a `Settle` settles (refused when it is unknown or settled
/// already), and, for a step into `completed`, that no task is left unsettled. Both backends
/// call it with the rows they read inside the transaction.
pub fn check_tasks(
    step: &Transition,
    entering: State,
    tasks: &[RequestTask],
) -> std::result::Result<(), RequestError> {
    if let Transition::Settle { target, .. } = step {
        let task = tasks
            .iter()
            .find(|t| t.target == target.trim())
            .ok_or_else(|| RequestError::UnknownTask {
                target: target.clone(),
            })?;
        if task.state.is_settled() {
            return Err(RequestError::TaskSettled {
                target: task.target.clone(),
            });
        }
    }
    if entering == State::Completed {
        let pending: Vec<String> = tasks
            .iter()
            .filter(|t| !t.state.is_settled())
            .map(|t| t.target.clone())
            .collect();
        if !pending.is_empty() {
            return Err(RequestError::TasksPending { targets: pending });
        }
    }
    Ok(())
}

/// The state and detail a `Settle` step leaves its task in.
pub fn settled(step: &Transition) -> Option<(&str, TaskState, Option<String>)> {
    match step {
        Transition::Settle {
            target,
            handled,
            note,
            detail,
        } => {
            let state = if *handled {
                TaskState::Handled
            } else {
                TaskState::Done
            };
            // An operator's note is what a task handled by hand keeps; the work's own detail
            // otherwise.
            let kept = if *handled {
                note.clone()
            } else {
                detail.clone()
            };
            Some((target.trim(), state, kept))
        }
        Transition::Advance { .. }
        | Transition::Extend { .. }
        | Transition::Reject { .. }
        | Transition::Note { .. }
        | Transition::Lift { .. } => None,
    }
}

/// A step taken: the request as it is now and its log record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stepped {
    pub request: Request,
    pub entry: LedgerEntry,
    /// The checkpoint the step committed with, when a signer is installed.
    pub checkpoint: Option<Checkpoint>,
}

/// Storage for data subject requests. Write methods return only after their commit.
#[async_trait]
pub trait RequestStore: Send + Sync {
    /// Files `request` (its `id` is assigned here) and appends its intake record
    /// (`kept_core::requests::intake_record`, by `actor`) to the requests log, with a
    /// checkpoint when a signer is installed, in one transaction. A subject that does not exist
    /// is `NotFound`.
    async fn file_request(&self, request: Request, actor: &str) -> Result<Stepped>;

    /// Takes `step` on request `id` at `now`: reads the row under the write lock, asks
    /// `kept_core::requests::apply` whether the step is allowed and [`check_tasks`] whether the
    /// request's tasks allow it, then writes the row, the settled task (`Settle`) and the log
    /// record (and its checkpoint) in one transaction. The inner `Err` is the step refused,
    /// with nothing written; an unknown id is `NotFound`.
    async fn step_request(
        &self,
        id: u64,
        step: &Transition,
        actor: &str,
        now: UnixMillis,
    ) -> Result<std::result::Result<Stepped, RequestError>>;

    async fn request(&self, id: u64) -> Result<Option<Request>>;

    /// Requests matching `filter`, newest first.
    async fn requests(&self, filter: &RequestFilter) -> Result<Vec<Request>>;

    /// Open requests matching `filter`, soonest due first.
    async fn request_queue(&self, filter: &QueueFilter) -> Result<Vec<Request>>;

    /// How many open requests are overdue at `now`, and due within `now..=now + window`.
    async fn open_request_counts(&self, now: UnixMillis, window: i64) -> Result<OpenCounts>;

    /// The log records of one request, in `seq` order.
    async fn request_log_of(&self, id: u64) -> Result<Vec<LedgerRow>>;

    /// Log rows with `seq > after`, in `seq` order, at most `limit` (for verification).
    async fn request_log_rows(&self, after: u64, limit: u32) -> Result<Vec<LedgerRow>>;

    /// Every checkpoint of the requests log, in `seq` order.
    async fn request_log_checkpoints(&self) -> Result<Vec<Checkpoint>>;

    /// Creates the tasks of request `id`'s work, one per target, each `pending`; a target that
    /// already has one keeps it as it is (idempotent: a repeated call, or a sweep after a
    /// crash, adds only what is missing). Returns every task of the request, by target. An
    /// unknown request is `NotFound`.
    async fn create_request_tasks(
        &self,
        id: u64,
        targets: &[String],
        now: UnixMillis,
    ) -> Result<Vec<RequestTask>>;

    /// Records a try of one task that did not settle it: `pending` again, or `failed` (one
    /// more attempt) with `detail` saying why. A settled task (done, handled) never changes:
    /// it is returned as it is. `None` when the request has no such task. Settling goes
    /// through `step_request` (`Transition::Settle`), which logs it.
    async fn set_request_task(
        &self,
        id: u64,
        target: &str,
        state: TaskState,
        detail: Option<&str>,
        now: UnixMillis,
    ) -> Result<Option<RequestTask>>;

    /// The tasks of request `id`, by target.
    async fn request_tasks(&self, id: u64) -> Result<Vec<RequestTask>>;

    /// Files an erasure request, unless the subject already has one `Received`: then that one
    /// is returned unchanged (a second click does not restart the clock). A subject that does
    /// not exist is `NotFound`.
    async fn file_erasure_request(&self, request: NewErasureRequest) -> Result<ErasureRequest>;

    /// A subject's erasure requests, oldest first.
    async fn erasure_requests(&self, subject: SubjectId) -> Result<Vec<ErasureRequest>>;
}

/// The log entry of `record`, chained after the log's `tip` (`(0, GENESIS)` when empty), and
/// the checkpoint it commits with when a signer is installed, chained after the log's `last`
/// checkpoint. The checkpoint is signed with the ledger's key; it is not the ledger's, so it is
/// not handed to the ledger's witness.
pub fn chain_step(
    record: &kept_core::requests::LogRecord,
    tip: (u64, kept_core::ledger::ChainHash),
    last: crate::group_commit::LastCheckpoint,
    signer: Option<&std::sync::Arc<dyn crate::CheckpointSigner>>,
) -> (LedgerEntry, Option<Checkpoint>) {
    let entry = kept_core::requests::chain(&tip.1, tip.0 + 1, record);
    let checkpoint = signer.map(|s| s.sign(entry.seq, entry.hash, last.1));
    (entry, checkpoint)
}
