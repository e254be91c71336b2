//! The requests service: files a data subject request with its deadline, takes its steps,
//! tells the lifecycle hook of each, and verifies the requests log. It takes `Work` (the store,
//! the ledger whose key signs the log's checkpoints, the manifest, …), never the whole
//! `AppState`, so the CLI runs the same code offline.

use crate::consent::ledger::{Ledger, VerifyingKey};
use crate::http::error::ApiError;
use crate::requests::propagate;
use crate::requests::work::Work;
use kept_core::UnixMillis;
use kept_core::ledger::{ChainHash, Checkpoint, VerifyError, check_checkpoint_chain, key_id};
use kept_core::requests::{Intake, LogRecord, Transition, decode_record, intake};
use kept_core::rights::Rights;
use kept_store::requests::Stepped;
use kept_store::{Store, StoreError};

/// What a step counts in `/metrics`.
pub const REQUEST_STEPS: &str = "kept_request_steps_total";
/// Open requests due within [`DUE_SOON`], as of the last scrape.
pub const REQUESTS_DUE_SOON: &str = "kept_requests_due_soon";
/// Open requests past their due date, as of the last scrape.
pub const REQUESTS_OVERDUE: &str = "kept_requests_overdue";
/// How soon "due soon" is: seven days.
pub const DUE_SOON: i64 = 7 * 24 * 60 * 60 * 1000;

/// Files a request: its deadline from the law's rows for the subject's regime and region
/// (`strictest` when unknown), the request and its intake record in one transaction, the
/// record covered by a checkpoint signed with the ledger key.
pub async fn file(work: &Work, new: Intake, actor: &str) -> Result<Stepped, ApiError> {
    file_with(work, new, actor, None).await
}

/// `file`, with a rectification's sealed corrections written in the same transaction and
/// named in the intake record (`requests::rectify::seal`).
pub async fn file_with(
    work: &Work,
    new: Intake,
    actor: &str,
    corrections: Option<crate::requests::rectify::Sealed>,
) -> Result<Stepped, ApiError> {
    let rights = Rights::shipped()
        .map_err(|e| ApiError::Internal(format!("the shipped request deadlines: {e}")))?;
    let request = intake(rights, new)?;
    // The signer the store's checkpoints need is installed once the key is published.
    work.ledger.publish_verifying_key().await?;
    let stepped = match corrections {
        Some(sealed) => {
            work.store
                .file_request_with(request, actor, sealed.detail, sealed.corrections)
                .await?
        }
        None => work.store.file_request(request, actor).await?,
    };
    witness(&work.ledger, &stepped);
    on_transition(work, &stepped).await;
    Ok(stepped)
}

/// Who files the preference center's requests, in the log.
pub const PREFERENCE_CENTER: &str = "preference_center";

/// A request the signed-in customer makes in the preference center (the delete button): the
/// session, opened by a signed link to a verified address, is the verification recorded.
pub async fn file_from_preference_center(
    work: &Work,
    subject: &kept_core::subject::Subject,
    regime: kept_core::regime::Regime,
    kind: kept_core::requests::RequestKind,
    now: UnixMillis,
) -> Result<Stepped, ApiError> {
    let intake = Intake {
        subject: subject.id,
        kind,
        scope: kept_core::requests::Scope::default(),
        channel: kept_core::requests::Channel::PreferenceCenter,
        verification: Some(kept_core::requests::Verification {
            method: kept_core::requests::VerificationMethod::VerifiedIdentifier,
            reference: Some("preference center session".to_owned()),
            agent: None,
        }),
        regime,
        region: subject.region.clone(),
        at: now,
    };
    file(work, intake, PREFERENCE_CENTER).await
}

/// Takes `step` on request `id`: allowed or refused on the row (and its tasks) as they are
/// inside the write's transaction, so two callers racing cannot both take it. A step into
/// `completed` is refused while a task is not settled (`request.tasks_pending`, naming them).
pub async fn step(
    work: &Work,
    id: u64,
    step: &Transition,
    actor: &str,
    now: UnixMillis,
) -> Result<Stepped, ApiError> {
    work.ledger.publish_verifying_key().await?;
    match work.store.step_request(id, step, actor, now).await {
        Ok(Ok(stepped)) => {
            witness(&work.ledger, &stepped);
            on_transition(work, &stepped).await;
            Ok(stepped)
        }
        Ok(Err(refused)) => Err(refused.into()),
        Err(StoreError::NotFound { .. }) => Err(not_found(id)),
        Err(e) => Err(e.into()),
    }
}

/// The answer for a request id nothing is stored under.
pub fn not_found(id: u64) -> ApiError {
    ApiError::NotFound(format!("no data subject request has id `{id}`"))
}

/// `id` when a row could hold it; else the same 404 as for an id nothing is stored under.
pub fn row_id(id: u64) -> Result<u64, ApiError> {
    if id > crate::http::error::MAX_ROW_ID {
        return Err(not_found(id));
    }
    Ok(id)
}

/// Request `id` as stored, or the 404 naming it.
pub async fn stored(store: &dyn Store, id: u64) -> Result<kept_core::requests::Request, ApiError> {
    store
        .request(row_id(id)?)
        .await?
        .ok_or_else(|| not_found(id))
}

/// Hands the checkpoint a step committed with to the requests log's witness, so that a tail
/// cut away together with its checkpoints is still found.
fn witness(ledger: &Ledger, stepped: &Stepped) {
    if let Some(checkpoint) = &stepped.checkpoint {
        ledger.witness_request_checkpoint(checkpoint);
    }
}

/// THE lifecycle hook: called once for every step committed (intake included), after its
/// commit. It logs and counts the step, queues it for the systems that subscribe to the
/// lifecycle (`propagate::lifecycle`), and when the request enters `in_progress` opens its
/// work: its tasks and the systems' obligations (`propagate::open`). What cannot be queued
/// now is logged, not returned (the step is committed): the sweep opens the work of every
/// request in progress again (`tasks::sweep`); a lifecycle step lost that way is not resent.
pub async fn on_transition(work: &Work, stepped: &Stepped) {
    let request = &stepped.request;
    if let Err(e) = propagate::lifecycle(work, stepped).await {
        tracing::warn!(request = request.id, error = %e, "cannot queue the request's step for the systems");
    }
    let entered = decode_record(&stepped.entry.bytes)
        .map(|r| propagate::entered(&r))
        .unwrap_or(false);
    if entered
        && request.state == kept_core::requests::State::InProgress
        && let Err(e) = propagate::open(work, request, request.updated_at).await
    {
        tracing::warn!(request = request.id, error = %e, "cannot open the request's work; the sweep tries again");
    }
    tracing::info!(
        request = request.id,
        kind = request.kind.as_str(),
        state = request.state.as_str(),
        due_at = request.due_at,
        seq = stepped.entry.seq,
        "data subject request step"
    );
    metrics::counter!(
        REQUEST_STEPS,
        "kind" => request.kind.as_str(),
        "state" => request.state.as_str()
    )
    .increment(1);
}

/// Sets the gauges of open requests due within a week and overdue, read from the store at
/// `now`. A store that does not answer leaves them as they were.
pub async fn publish_gauges(store: &dyn Store, now: UnixMillis) {
    static DESCRIBED: std::sync::Once = std::sync::Once::new();
    DESCRIBED.call_once(|| {
        metrics::describe_gauge!(
            REQUESTS_DUE_SOON,
            "open data subject requests due within seven days"
        );
        metrics::describe_gauge!(
            REQUESTS_OVERDUE,
            "open data subject requests past their due date"
        );
        metrics::describe_counter!(
            REQUEST_STEPS,
            "data subject request steps committed, by kind and the state entered"
        );
    });
    match store.open_request_counts(now, DUE_SOON).await {
        Ok(counts) => {
            metrics::gauge!(REQUESTS_DUE_SOON).set(counts.due_soon as f64);
            metrics::gauge!(REQUESTS_OVERDUE).set(counts.overdue as f64);
        }
        Err(e) => tracing::warn!(error = %e, "cannot count open data subject requests"),
    }
}

/// A request's log, decoded, in order.
pub async fn log_of(
    store: &dyn Store,
    id: u64,
) -> Result<Vec<(u64, ChainHash, LogRecord)>, ApiError> {
    let rows = store.request_log_of(id).await?;
    rows.into_iter()
        .map(|row| {
            let record = decode_record(&row.bytes).map_err(|e| {
                StoreError::Corrupt(format!(
                    "requests log record {} does not decode: {e}",
                    row.seq
                ))
            })?;
            let hash = kept_store::columns::chain_hash(row.seq, &row.hash)?;
            Ok((row.seq, hash, record))
        })
        .collect()
}

// --- verification ----------------------------------------------------------------------------

/// How long a log record may wait for its checkpoint before it counts as appended behind
/// Kept's back: each step commits with its checkpoint, so only a step taken while no signer
/// was installed waits at all.
pub const VERIFY_ALLOWANCE: i64 = 61_000;

/// What a clean verification of the requests log saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogReport {
    pub records: u64,
    pub checkpoints: usize,
    pub last_checkpoint: Option<u64>,
    /// Records after the last checkpoint (all younger than the allowance).
    pub uncovered: u64,
    /// The witness's checkpoints, all found in the database and matching the chain, and the
    /// last record they cover; `None` when no witness was given.
    pub witnessed: Option<(usize, Option<u64>)>,
}

/// The first thing found wrong in the requests log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFinding {
    pub seq: u64,
    pub code: &'static str,
    pub message: String,
}

impl From<VerifyError> for LogFinding {
    fn from(e: VerifyError) -> LogFinding {
        LogFinding {
            seq: e.seq(),
            code: e.code(),
            message: e.to_string(),
        }
    }
}

/// Checks the requests log as `kept ledger verify` checks the ledger: every record's bytes,
/// chain hash and columns in order, every checkpoint's signature (by the key its id names),
/// its match with the chain and the chain of checkpoints, the `witness`'s checkpoints if
/// given (each signed, matching the chain, and still in the database), and that no record
/// beyond the last checkpoint is older than [`VERIFY_ALLOWANCE`] at `now`. A changed record
/// breaks the chain; a removed one leaves a gap; a tail cut away shows as a checkpoint beyond
/// the end, or, cut with its checkpoints, as a witnessed checkpoint beyond the end or missing
/// from the database. Without a witness such a cut is found only up to the last checkpoint
/// left. `Err` is a store that could not be read.
pub async fn verify_log(
    store: &dyn Store,
    keys: &[VerifyingKey],
    now: UnixMillis,
    witness: Option<&[Checkpoint]>,
) -> Result<Result<LogReport, LogFinding>, StoreError> {
    let checkpoints = match store.request_log_checkpoints().await {
        Ok(c) => c,
        Err(StoreError::Corrupt(message)) => {
            return Ok(Err(LogFinding {
                seq: 0,
                code: "requests.checkpoint_corrupt",
                message,
            }));
        }
        Err(e) => return Err(e),
    };
    let mut witnessed: Vec<Checkpoint> = witness.map(<[Checkpoint]>::to_vec).unwrap_or_default();
    witnessed.sort_by_key(|c| c.seq);
    let mut verifier =
        kept_core::requests::verifier(checkpoints.iter().chain(witnessed.iter()).map(|c| c.seq));
    let mut after = 0;
    loop {
        let rows = match store.request_log_rows(after, 10_000).await {
            Ok(rows) => rows,
            Err(StoreError::Corrupt(message)) => {
                return Ok(Err(LogFinding {
                    seq: verifier.len() + 1,
                    code: "requests.corrupt_row",
                    message,
                }));
            }
            Err(e) => return Err(e),
        };
        let Some(last) = rows.last().map(|r| r.seq) else {
            break;
        };
        for row in &rows {
            let Some(hash) = ChainHash::from_slice(&row.hash) else {
                return Ok(Err(LogFinding {
                    seq: row.seq,
                    code: "requests.corrupt_row",
                    message: format!("record {} has a malformed hash", row.seq),
                }));
            };
            let columns = kept_core::ledger::Columns {
                subject: row.subject,
                at: row.at,
            };
            if let Err(e) = verifier.push(row.seq, &row.bytes, &hash, Some(columns)) {
                return Ok(Err(e.into()));
            }
        }
        after = last;
    }
    let mut sorted: Vec<Checkpoint> = checkpoints.clone();
    sorted.sort_by_key(|c| c.seq);
    for cp in &sorted {
        let checked = match keys.iter().find(|k| key_id(k) == cp.key_id) {
            Some(key) => verifier.finish(std::slice::from_ref(cp), key),
            None => Err(VerifyError::CheckpointSignature { seq: cp.seq }),
        };
        if let Err(e) = checked {
            return Ok(Err(e.into()));
        }
    }
    if let Err(e) = check_checkpoint_chain(&sorted) {
        return Ok(Err(e.into()));
    }
    // The witness's checkpoints: each signed and matching the chain, then in the database.
    for cp in &witnessed {
        let checked = match keys.iter().find(|k| key_id(k) == cp.key_id) {
            Some(key) => verifier.finish(std::slice::from_ref(cp), key),
            None => Err(VerifyError::CheckpointSignature { seq: cp.seq }),
        };
        if let Err(e) = checked {
            let mut finding = LogFinding::from(e);
            finding.message = format!("witnessed: {}", finding.message);
            return Ok(Err(finding));
        }
        if !sorted.contains(cp) {
            return Ok(Err(LogFinding {
                seq: cp.seq,
                code: "requests.checkpoint_missing",
                message: format!(
                    "the witnessed checkpoint at record {} is missing from the database: checkpoints were deleted or replaced",
                    cp.seq
                ),
            }));
        }
    }
    let uncovered = verifier.uncovered();
    if let Some(u) = uncovered {
        let late = u.oldest < now.saturating_sub(VERIFY_ALLOWANCE);
        let future = u.newest > now.saturating_add(VERIFY_ALLOWANCE);
        if late || future {
            return Ok(Err(LogFinding {
                seq: u.first_seq,
                code: "requests.uncovered",
                message: format!(
                    "records {} to {} are not covered by any checkpoint and are {}: they were appended behind Kept's back, or their checkpoints deleted",
                    u.first_seq,
                    u.first_seq + u.count - 1,
                    if late {
                        "too old to be waiting for one"
                    } else {
                        "dated in the future"
                    }
                ),
            }));
        }
    }
    Ok(Ok(LogReport {
        records: verifier.len(),
        checkpoints: sorted.len(),
        last_checkpoint: sorted.last().map(|c| c.seq),
        uncovered: uncovered.map_or(0, |u| u.count),
        witnessed: witness.map(|_| (witnessed.len(), witnessed.last().map(|c| c.seq))),
    }))
}
