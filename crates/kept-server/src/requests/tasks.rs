//! The work of a data subject request, task by task: Kept's own workers report theirs
//! (`finish`), a system acknowledges its obligation (`acknowledge`, by the token the
//! obligation carried, or the delivery's 2xx where its webhook says `acknowledge =
//! "on_delivery"`: `delivery_outcome`), an operator marks a task handled by hand with a note
//! (`handled`). Each settled task is a record of the requests log, and once every task is
//! settled the request is completed, by the actor `kept` (`complete_if_settled`). The sweep
//! opens again the work of every request in progress, repairing a crash between a step and
//! its queueing.
//!
//! Which targets a request owes is `work::owed`; its tasks are created, and the systems'
//! obligations queued, when it enters `in_progress` (`propagate::open`).

use crate::http::error::ApiError;
use crate::requests::propagate::{self, ack_matches, ack_secret, obligation_request};
use crate::requests::service;
use crate::requests::work::Work;
use kept_core::UnixMillis;
use kept_core::manifest::Acknowledge;
use kept_core::requests::{Request, RequestError, State, Target, TaskState, Transition};
use kept_store::outbox::{Attempt, Delivery};
use kept_store::requests::{MAX_REQUEST_PAGE, RequestFilter, RequestTask};
use std::time::Duration;
use tokio::sync::watch;

/// Who settles tasks and completes requests on its own, in the requests log.
pub const KEPT: &str = "kept";

/// What one of Kept's own workers (erasure, export, gates) reports for its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The work is done; `detail` is what it did (counts as JSON), kept on the task and in
    /// the log.
    Done { detail: Option<String> },
    /// This try failed; the task shows `error` and stays open (tried again, or handled).
    Failed { error: String },
}

/// A task settled (or a try recorded): the request and its tasks as they are now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub request: Request,
    pub tasks: Vec<RequestTask>,
    /// The task was settled already: nothing changed (a replayed acknowledgement).
    pub replayed: bool,
}

/// Reports the outcome of Kept's own work on `target` of request `id`: done settles the task
/// (and completes the request when it was the last), failed records the try with its error.
/// Idempotent: a task settled already is left as it is.
pub async fn finish(
    work: &Work,
    id: u64,
    target: &Target,
    outcome: Outcome,
    now: UnixMillis,
) -> Result<Settled, ApiError> {
    match outcome {
        Outcome::Done { detail } => settle(work, id, target, false, None, detail, KEPT, now).await,
        Outcome::Failed { error } => {
            let target = target.to_string();
            let task = work
                .store
                .set_request_task(id, &target, TaskState::Failed, Some(&error), now)
                .await?;
            if task.is_none() {
                return Err(RequestError::UnknownTask { target }.into());
            }
            current(work, id, false).await
        }
    }
}

/// Marks `target` of request `id` handled by hand, by `actor`, with a required `note` (what was
/// done, and how it is known). Then completes the request when it was the last task.
pub async fn handled(
    work: &Work,
    id: u64,
    target: &Target,
    note: &str,
    actor: &str,
    now: UnixMillis,
) -> Result<Settled, ApiError> {
    settle(
        work,
        id,
        target,
        true,
        Some(note.to_owned()),
        None,
        actor,
        now,
    )
    .await
}

/// A system's acknowledgement of its obligation for request `id`, authorised by the `token`
/// the obligation carried (no API key): settles the system's task, by the actor
/// `system:<key>`, with the system's own `reference` if it gives one. A replay answers the
/// same and changes nothing; a wrong token is refused (`request.ack_token_invalid`).
pub async fn acknowledge(
    work: &Work,
    id: u64,
    system: &str,
    token: &str,
    reference: Option<String>,
    now: UnixMillis,
) -> Result<Settled, ApiError> {
    let secret = ack_secret(work.store.as_ref()).await?;
    if !ack_matches(&secret, id, system, token) {
        return Err(ApiError::AckTokenInvalid);
    }
    let mut detail = serde_json::json!({ "acknowledged": "callback" });
    if let (Some(reference), Some(d)) = (reference, detail.as_object_mut()) {
        d.insert("reference".to_owned(), reference.into());
    }
    settle(
        work,
        id,
        &Target::System(system.to_owned()),
        false,
        None,
        Some(detail.to_string()),
        &format!("system:{system}"),
        now,
    )
    .await
}

#[allow(clippy::too_many_arguments, reason = "one step, each part named")]
async fn settle(
    work: &Work,
    id: u64,
    target: &Target,
    handled: bool,
    note: Option<String>,
    detail: Option<String>,
    actor: &str,
    now: UnixMillis,
) -> Result<Settled, ApiError> {
    let step = Transition::Settle {
        target: target.to_string(),
        handled,
        note,
        detail,
    };
    let (request, replayed) = match service::step(work, id, &step, actor, now).await {
        Ok(stepped) => (stepped.request, false),
        // Settled before: a replay, which still completes the request when a crash came
        // between the task's settling and the completion.
        Err(ApiError::Request(RequestError::TaskSettled { .. })) => {
            let replay = current(work, id, true).await?;
            let request = complete_if_settled(work, replay.request, now).await?;
            return Ok(Settled { request, ..replay });
        }
        // The request completed (or was closed) since: a task settled before is a replay all
        // the same, answered as the first time.
        Err(ApiError::Request(e @ RequestError::NotInProgress { .. })) => {
            let settled = current(work, id, true).await?;
            let target = target.to_string();
            return match settled.tasks.iter().find(|t| t.target == target) {
                Some(task) if task.state.is_settled() => Ok(settled),
                _ => Err(e.into()),
            };
        }
        Err(e) => return Err(e),
    };
    let request = complete_if_settled(work, request, now).await?;
    let tasks = work.store.request_tasks(id).await?;
    Ok(Settled {
        request,
        tasks,
        replayed,
    })
}

async fn current(work: &Work, id: u64, replayed: bool) -> Result<Settled, ApiError> {
    let request = service::stored(work.store.as_ref(), id).await?;
    let tasks = work.store.request_tasks(id).await?;
    Ok(Settled {
        request,
        tasks,
        replayed,
    })
}

/// Completes `request`, by the actor `kept`, when it is in progress and every one of its tasks
/// is settled; else returns it as it is. Someone completing or rejecting it meanwhile is no
/// error: the request is read again.
pub async fn complete_if_settled(
    work: &Work,
    request: Request,
    now: UnixMillis,
) -> Result<Request, ApiError> {
    if request.working_state() != State::InProgress {
        return Ok(request);
    }
    let tasks = work.store.request_tasks(request.id).await?;
    if tasks.is_empty() || tasks.iter().any(|t| !t.state.is_settled()) {
        return Ok(request);
    }
    let step = Transition::Advance {
        expect: Some(State::Completed),
        verification: None,
        note: Some("every task is settled".to_owned()),
    };
    match service::step(work, request.id, &step, KEPT, now).await {
        Ok(stepped) => Ok(stepped.request),
        Err(ApiError::Request(e)) if e.is_conflict() => {
            Ok(current(work, request.id, false).await?.request)
        }
        Err(e) => Err(e),
    }
}

/// What became of an attempt at a delivery, for the task it carries out: called by the
/// forwarding worker after each attempt is recorded. Only obligations of requests count
/// (`request:<id>`); lifecycle steps and events are not tasks. A dead letter marks the task
/// failed with the error; a 2xx settles it where the system acknowledges on delivery, and
/// otherwise says it waits for the callback.
pub async fn delivery_outcome(work: &Work, d: &Delivery, attempt: &Attempt) {
    let Some(id) = obligation_request(&d.event_id) else {
        return;
    };
    let target = Target::System(d.system.clone());
    let on_delivery = work
        .manifest
        .systems
        .get(&d.system)
        .and_then(|s| s.webhook.as_ref())
        .is_some_and(|h| h.acknowledge == Acknowledge::OnDelivery);
    let tries = d.attempts.saturating_add(1);
    let done = match attempt {
        Attempt::Delivered { at, status } if on_delivery => {
            let detail = serde_json::json!({ "acknowledged": "on_delivery", "status": status });
            finish(
                work,
                id,
                &target,
                Outcome::Done {
                    detail: Some(detail.to_string()),
                },
                *at,
            )
            .await
            .map(|_| ())
        }
        Attempt::Delivered { at, status } => work
            .store
            .set_request_task(
                id,
                &target.to_string(),
                TaskState::Pending,
                Some(&format!(
                    "delivered (HTTP {status}); waiting for the system's acknowledgement"
                )),
                *at,
            )
            .await
            .map(|_| ())
            .map_err(ApiError::from),
        Attempt::Failed {
            at,
            error,
            retry_at: Some(_),
            ..
        } => work
            .store
            .set_request_task(
                id,
                &target.to_string(),
                TaskState::Pending,
                Some(&format!("attempt {tries} failed, retrying: {error}")),
                *at,
            )
            .await
            .map(|_| ())
            .map_err(ApiError::from),
        Attempt::Failed {
            at,
            error,
            retry_at: None,
            ..
        } => finish(
            work,
            id,
            &target,
            Outcome::Failed {
                error: format!("dead letter after {tries} attempts: {error}"),
            },
            *at,
        )
        .await
        .map(|_| ()),
        Attempt::Suppressed { at, reason } => finish(
            work,
            id,
            &target,
            Outcome::Failed {
                error: format!("not sent: {reason}"),
            },
            *at,
        )
        .await
        .map(|_| ()),
    };
    if let Err(e) = done {
        tracing::warn!(request = id, system = %d.system, error = %e, "cannot record the obligation's outcome on its task");
    }
}

/// Opens again the work of every request in progress (its tasks and the systems' obligations,
/// adding only what is missing), and completes those whose tasks are all settled: what a crash
/// between a step and what follows it left undone. Returns how many requests it looked at.
pub async fn sweep(work: &Work, now: UnixMillis) -> Result<usize, ApiError> {
    let mut seen = 0;
    for state in [State::InProgress, State::Extended] {
        let mut before = None;
        loop {
            let page = work
                .store
                .requests(&RequestFilter {
                    state: Some(state),
                    before,
                    limit: MAX_REQUEST_PAGE,
                    ..RequestFilter::default()
                })
                .await?;
            let Some(last) = page.last().map(|r| r.id) else {
                break;
            };
            for request in page {
                if request.working_state() != State::InProgress {
                    continue;
                }
                seen += 1;
                propagate::open(work, &request, now).await?;
                complete_if_settled(work, request, now).await?;
            }
            before = Some(last);
        }
    }
    Ok(seen)
}

/// Runs the sweep at once, then every `interval`, until `stop` turns true.
pub fn spawn_sweep(
    work: Work,
    clock: crate::clock::Clock,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if *stop.borrow() {
                break;
            }
            if let Err(e) = sweep(&work, clock()).await {
                tracing::warn!(error = %e, "cannot sweep the requests in progress; trying again");
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                changed = stop.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
            }
        }
    })
}
