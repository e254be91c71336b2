//! `/v1/requests`: data subject requests for the privacy team (role `privacy`, and `admin`):
//! file one, list them by state, kind, subject and due date, show one with its log and its
//! tasks, take its steps (advance, extend, reject), carry it out again (apply), lift a
//! restriction and mark a task handled by hand. And the one
//! route a system calls without an API key: the acknowledgement of its obligation, authorised
//! by the token the obligation carried. Each answer shows the request as stored after its
//! transaction committed.

use crate::http::auth::{Authorized, role};
use crate::http::error::{
    ApiError, ErrorBody, JsonBody, PathParams, query_limit, query_number, query_row_id,
};
use crate::identity::resolve::{SubjectInput, resolve_subjects};
use crate::requests::{gates, rectify, service, tasks};
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use kept_core::regime::Regime;
use kept_core::requests::{
    Channel, Intake, LogRecord, Request, RequestError, RequestKind, Scope, State as RequestState,
    Target, TaskState, Transition, Verification,
};
use kept_core::{SubjectId, UnixMillis};
use kept_store::requests::{MAX_REQUEST_PAGE, RequestFilter, RequestTask};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// A request to file.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a request object with `subject` and `kind`"
)]
pub struct NewRequest {
    pub subject: SubjectInput,
    pub kind: RequestKind,
    /// What it covers; absent or empty lists: everything.
    #[serde(default)]
    pub scope: Option<Scope>,
    /// How it came in: `api` (the default), `public_form` or `operator`. Preference-center
    /// requests are filed by the preference center itself.
    #[serde(default)]
    pub channel: Option<Channel>,
    /// How identity was verified, when it already is; `advance` to `verified` records it.
    #[serde(default)]
    pub verification: Option<Verification>,
    /// For a `rectification`, and only for one: the traits and identifiers to correct, with
    /// their correct values. Checked as collection checks them, sealed with the subject's
    /// data key; the log keeps their targets and a keyed digest.
    #[serde(default)]
    pub corrections: Option<rectify::Corrections>,
}

/// The next step of a request.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Advance {
    /// The state the caller means to reach; refused with `request.unexpected_step` when the
    /// request's next step is another (someone else moved it first).
    #[serde(default)]
    pub to: Option<RequestState>,
    /// How identity was verified; needed to reach `verified` unless given at intake.
    #[serde(default)]
    pub verification: Option<Verification>,
    /// A note for the log.
    #[serde(default)]
    pub note: Option<String>,
}

/// An extension of the deadline: once, before the first deadline passes, within the rule.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Extend {
    /// Why more time is needed (the subject is told).
    pub reason: String,
    /// The new due date (Unix milliseconds); default the latest the rule allows.
    #[serde(default)]
    pub until: Option<i64>,
}

/// A refusal, with its reason.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reject {
    /// Why the request is refused (the subject is told).
    pub reason: String,
}

/// The lifting of a restriction, with its reason.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Lift {
    /// Why the restriction ends (Art. 18(3): the subject is told before it is lifted).
    pub reason: String,
}

/// One step of a request, as its log record says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogView {
    /// Position in the requests log.
    pub seq: u64,
    /// The record's chain hash (hex).
    pub hash: String,
    pub at: i64,
    /// Absent for the intake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<RequestState>,
    pub to: RequestState,
    /// The due date after this step.
    pub due_at: i64,
    /// Who took it: `key:<key id>`, `preference_center`, `operator:<name>`.
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What else the step recorded (channel, regime, rule, scope, verification, note).
    pub detail: BTreeMap<String, String>,
}

/// One task of a request's work, and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskView {
    /// What it is done on: `kept`, `dataset:<name>` or `system:<name>`.
    #[schema(example = "system:crm")]
    pub target: String,
    pub state: TaskState,
    /// What the work did (counts as JSON), why its last try failed (a dead letter's error), or
    /// the note of an operator who handled it by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Tries reported: each failed one, and the one that was done.
    pub attempts: u32,
    pub updated_at: i64,
}

impl From<RequestTask> for TaskView {
    fn from(t: RequestTask) -> TaskView {
        TaskView {
            target: t.target,
            state: t.state,
            detail: t.detail,
            attempts: t.attempts,
            updated_at: t.updated_at,
        }
    }
}

/// A data subject request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RequestView {
    pub id: u64,
    /// The subject's internal id.
    pub subject: u32,
    pub kind: RequestKind,
    pub scope: Scope,
    pub channel: Channel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// The regime that set the deadline (`strictest` when the subject's place is unknown).
    #[schema(example = "gdpr")]
    pub regime: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The deadline row (`kept rules` prints them with their sources).
    #[schema(example = "gdpr.requests")]
    pub rule: String,
    pub state: RequestState,
    /// While `extended`: the state work goes on from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<RequestState>,
    pub received_at: i64,
    pub due_at: i64,
    /// Whether it is open and past `due_at` now.
    pub overdue: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledge_by: Option<i64>,
    /// The latest an extension may put the answer off to; absent: the rule allows none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_until: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extended_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub updated_at: i64,
    /// Every step, oldest first (shown by `GET /v1/requests/{id}` and by the steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<Vec<LogView>>,
    /// The work it owes, by target, from the moment it is in progress (shown with the log):
    /// it completes once every task is `done` or `handled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<TaskView>>,
}

impl RequestView {
    pub fn new(r: Request, now: UnixMillis, log: Option<Vec<LogView>>) -> RequestView {
        RequestView {
            overdue: r.is_overdue(now),
            id: r.id,
            subject: r.subject.0,
            kind: r.kind,
            scope: r.scope,
            channel: r.channel,
            verification: r.verification,
            regime: r.regime,
            region: r.region,
            rule: r.rule,
            state: r.state,
            resume: r.resume,
            received_at: r.received_at,
            due_at: r.due_at,
            acknowledge_by: r.acknowledge_by,
            extension_until: r.extension_until,
            extended_at: r.extended_at,
            reason: r.reason,
            updated_at: r.updated_at,
            log,
            tasks: None,
        }
    }

    /// The view with the request's tasks.
    pub fn with_tasks(mut self, tasks: Vec<RequestTask>) -> RequestView {
        self.tasks = Some(tasks.into_iter().map(TaskView::from).collect());
        self
    }
}

fn log_view(seq: u64, hash: kept_core::ledger::ChainHash, r: LogRecord) -> LogView {
    LogView {
        seq,
        hash: hash.to_hex(),
        at: r.at,
        from: r.from,
        to: r.to,
        due_at: r.due_at,
        actor: r.actor,
        reason: r.reason,
        detail: r.detail.into_iter().collect(),
    }
}

/// A request with its whole log and its tasks.
async fn shown(state: &AppState, request: Request) -> Result<RequestView, ApiError> {
    let log = service::log_of(state.store.as_ref(), request.id)
        .await?
        .into_iter()
        .map(|(seq, hash, r)| log_view(seq, hash, r))
        .collect();
    let tasks = state.store.request_tasks(request.id).await?;
    Ok(RequestView::new(request, state.now(), Some(log)).with_tasks(tasks))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RequestPage {
    /// Newest first, without their logs.
    pub requests: Vec<RequestView>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    state: Option<String>,
    kind: Option<String>,
    subject: Option<String>,
    due_before: Option<String>,
    overdue: Option<String>,
    before: Option<String>,
    limit: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RequestPath {
    id: u64,
}

fn actor(caller: &kept_store::ApiKeyRecord) -> String {
    format!("key:{}", caller.id)
}

/// Files a data subject request. Its due date is computed now from the law's deadline for
/// the subject's regime and region (an unknown place gets the strictest), and the intake is
/// the first record of the request's log.
#[utoipa::path(
    post,
    path = "/v1/requests",
    operation_id = "file_request",
    tag = "requests",
    request_body = NewRequest,
    security(("api_key" = [])),
    responses(
        (status = 201, body = RequestView),
        (status = 400, description = "the body is not JSON", body = ErrorBody),
        (status = 401, description = "no key, or an invalid one", body = ErrorBody),
        (status = 403, description = "the key's role is not `privacy` or `admin`", body = ErrorBody),
        (status = 422, description = "a field is missing, unknown or invalid (an unknown `kind`, a subject Kept does not know, a verification without its reference); `error.field` names it", body = ErrorBody),
    )
)]
pub async fn create(
    caller: Authorized<role::Privacy>,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<NewRequest>,
) -> Result<(StatusCode, Json<RequestView>), ApiError> {
    let channel = body.channel.unwrap_or(Channel::Api);
    if channel == Channel::PreferenceCenter {
        return Err(ApiError::invalid_field(
            "channel",
            "`preference_center` requests are filed by the preference center itself",
        ));
    }
    let name = body.subject.reference("subject")?;
    let found = resolve_subjects(state.lookup(), std::slice::from_ref(&name)).await?;
    let subject_id = found.first().copied().flatten();
    let subject = match subject_id {
        Some(id) => state.store.subject(id).await?,
        None => None,
    };
    let Some(subject) = subject else {
        return Err(ApiError::invalid_field(
            format!("subject.{}", name.kind()),
            format!("no subject is known by this `subject.{}`", name.kind()),
        ));
    };
    let scope = body.scope.unwrap_or_default();
    gates::check_scope(&state.manifest, body.kind, &scope)?;
    let now = state.now();
    let intake = Intake {
        subject: subject.id,
        kind: body.kind,
        scope,
        channel,
        verification: body.verification,
        regime: Regime::resolve(subject.country.as_deref(), subject.region.as_deref()),
        region: subject.region.clone(),
        at: now,
    };
    let sealed = rectify::seal(
        state.store.as_ref(),
        &state.identity,
        &state.manifest,
        body.kind,
        subject.id,
        body.corrections.as_ref(),
        now,
    )
    .await?;
    let stepped = service::file_with(&state.work(), intake, &actor(&caller.key), sealed).await?;
    Ok((
        StatusCode::CREATED,
        Json(shown(&state, stepped.request).await?),
    ))
}

/// Data subject requests, newest first, filtered by every parameter given.
#[utoipa::path(
    get,
    path = "/v1/requests",
    operation_id = "list_requests",
    tag = "requests",
    params(
        ("state" = Option<RequestState>, Query, description = "only requests in this state"),
        ("kind" = Option<RequestKind>, Query, description = "only requests of this kind"),
        ("subject" = Option<u32>, Query, description = "only the requests of this subject (internal id)"),
        ("due_before" = Option<i64>, Query, description = "only requests due before this time (Unix milliseconds)"),
        ("overdue" = Option<bool>, Query, description = "`true`: only open requests past their due date"),
        ("before" = Option<u64>, Query, description = "only requests with a lower id (`next_before` of the previous page)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "at most this many (default 100, at most 1000)"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, body = RequestPage),
        (status = 401, description = "no key, or an invalid one", body = ErrorBody),
        (status = 403, description = "the key's role is not `privacy` or `admin`", body = ErrorBody),
        (status = 422, description = "a parameter is malformed or unknown; `error.field` names it", body = ErrorBody),
    )
)]
pub async fn list(
    _caller: Authorized<role::Privacy>,
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<RequestPage>, ApiError> {
    let Query(params) = params?;
    let now = state.now();
    let named = |field: &str, value: Option<&str>, ok: Option<bool>| match (value, ok) {
        (Some(v), Some(false)) => Err(ApiError::invalid_field(
            field,
            format!("`{v}` is not a valid `{field}`"),
        )),
        _ => Ok(()),
    };
    let request_state = params.state.as_deref().map(RequestState::parse);
    named(
        "state",
        params.state.as_deref(),
        request_state.map(|s| s.is_some()),
    )?;
    let kind = params.kind.as_deref().map(RequestKind::parse);
    named("kind", params.kind.as_deref(), kind.map(|k| k.is_some()))?;
    let overdue = query_number::<bool>("overdue", params.overdue.as_deref())?;
    let limit = query_limit(params.limit.as_deref(), 100, MAX_REQUEST_PAGE)?;
    let filter = RequestFilter {
        state: request_state.flatten(),
        kind: kind.flatten(),
        subject: query_number::<u32>("subject", params.subject.as_deref())?.map(SubjectId),
        due_before: query_number::<i64>("due_before", params.due_before.as_deref())?,
        open_due_before: (overdue == Some(true)).then_some(now),
        not_overdue_at: (overdue == Some(false)).then_some(now),
        before: query_row_id("before", params.before.as_deref())?,
        limit,
    };
    let requests = state.store.requests(&filter).await?;
    let next_before = (requests.len() == limit as usize)
        .then(|| requests.last().map(|r| r.id))
        .flatten();
    Ok(Json(RequestPage {
        requests: requests
            .into_iter()
            .map(|r| RequestView::new(r, now, None))
            .collect(),
        next_before,
    }))
}

/// One data subject request with every step of its log.
#[utoipa::path(
    get,
    path = "/v1/requests/{id}",
    operation_id = "show_request",
    tag = "requests",
    params(("id" = u64, Path, description = "the request's id")),
    security(("api_key" = [])),
    responses(
        (status = 200, body = RequestView),
        (status = 401, description = "no key, or an invalid one", body = ErrorBody),
        (status = 403, description = "the key's role is not `privacy` or `admin`", body = ErrorBody),
        (status = 404, description = "no request with this id", body = ErrorBody),
        (status = 422, description = "`id` is not a number", body = ErrorBody),
    )
)]
pub async fn show(
    _caller: Authorized<role::Privacy>,
    State(state): State<AppState>,
    PathParams(RequestPath { id }): PathParams<RequestPath>,
) -> Result<Json<RequestView>, ApiError> {
    let request = service::stored(state.store.as_ref(), id).await?;
    Ok(Json(shown(&state, request).await?))
}

/// Takes a request's next step: received → verified (with a verification) → in progress →
/// completed; from `extended`, the next step from where it stood. Completing an access or
/// portability request notes the BLAKE3 hash of its JSON export in the step. A rectification,
/// restriction, objection, opt-out of sale or limit on sensitive data entering `in_progress`
/// is carried out at once (`requests::carry`): corrected, or its gate in force, when the
/// answer comes.
#[utoipa::path(
    post,
    path = "/v1/requests/{id}/advance",
    operation_id = "advance_request",
    tag = "requests",
    params(("id" = u64, Path, description = "the request's id")),
    request_body = Advance,
    security(("api_key" = [])),
    responses(
        (status = 200, body = RequestView),
        (status = 400, description = "the body is not JSON", body = ErrorBody),
        (status = 401, description = "no key, or an invalid one", body = ErrorBody),
        (status = 403, description = "the key's role is not `privacy` or `admin`", body = ErrorBody),
        (status = 404, description = "no request with this id", body = ErrorBody),
        (status = 409, description = "the request's state refuses the step: `request.closed`, `request.unexpected_step`, `request.unverified`, `request.already_verified`, `request.tasks_pending` (a task is neither done nor handled; the message names them)", body = ErrorBody),
        (status = 422, description = "a field is invalid (`request.verification`, `request.too_long`, …); `error.field` names it", body = ErrorBody),
    )
)]
pub async fn advance(
    caller: Authorized<role::Privacy>,
    State(state): State<AppState>,
    PathParams(RequestPath { id }): PathParams<RequestPath>,
    JsonBody(body): JsonBody<Advance>,
) -> Result<Json<RequestView>, ApiError> {
    let advance = crate::requests::steps::Advance {
        to: body.to,
        verification: body.verification,
        note: body.note,
    };
    let request = state
        .steps()
        .advance(id, advance, &actor(&caller.key), state.now())
        .await?;
    Ok(Json(shown(&state, request).await?))
}

/// Puts the answer off, once, with a reason, while the first deadline still runs, up to the
/// extension the deadline's rule allows.
#[utoipa::path(
    post,
    path = "/v1/requests/{id}/extend",
    operation_id = "extend_request",
    tag = "requests",
    params(("id" = u64, Path, description = "the request's id")),
    request_body = Extend,
    security(("api_key" = [])),
    responses(
        (status = 200, body = RequestView),
        (status = 400, description = "the body is not JSON", body = ErrorBody),
        (status = 401, description = "no key, or an invalid one", body = ErrorBody),
        (status = 403, description = "the key's role is not `privacy` or `admin`", body = ErrorBody),
        (status = 404, description = "no request with this id", body = ErrorBody),
        (status = 409, description = "`request.extended_twice`, `request.no_extension` (the rule allows none), `request.extension_late` (the first deadline passed) or `request.closed`", body = ErrorBody),
        (status = 422, description = "`reason` is blank or `until` outside the rule's extension; `error.field` names it", body = ErrorBody),
    )
)]
pub async fn extend(
    caller: Authorized<role::Privacy>,
    State(state): State<AppState>,
    PathParams(RequestPath { id }): PathParams<RequestPath>,
    JsonBody(body): JsonBody<Extend>,
) -> Result<Json<RequestView>, ApiError> {
    let step = Transition::Extend {
        reason: body.reason,
        until: body.until,
    };
    take(&state, &caller, id, &step).await
}

/// Refuses a request, with its reason.
#[utoipa::path(
    post,
    path = "/v1/requests/{id}/reject",
    operation_id = "reject_request",
    tag = "requests",
    params(("id" = u64, Path, description = "the request's id")),
    request_body = Reject,
    security(("api_key" = [])),
    responses(
        (status = 200, body = RequestView),
        (status = 400, description = "the body is not JSON", body = ErrorBody),
        (status = 401, description = "no key, or an invalid one", body = ErrorBody),
        (status = 403, description = "the key's role is not `privacy` or `admin`", body = ErrorBody),
        (status = 404, description = "no request with this id", body = ErrorBody),
        (status = 409, description = "`request.closed`: it was completed or rejected already", body = ErrorBody),
        (status = 422, description = "`reason` is blank or too long; `error.field` names it", body = ErrorBody),
    )
)]
pub async fn reject(
    caller: Authorized<role::Privacy>,
    State(state): State<AppState>,
    PathParams(RequestPath { id }): PathParams<RequestPath>,
    JsonBody(body): JsonBody<Reject>,
) -> Result<Json<RequestView>, ApiError> {
    let step = Transition::Reject {
        reason: body.reason,
    };
    take(&state, &caller, id, &step).await
}

async fn take(
    state: &AppState,
    caller: &Authorized<role::Privacy>,
    id: u64,
    step: &Transition,
) -> Result<Json<RequestView>, ApiError> {
    let stepped = step_of(state, caller, id, step).await?;
    Ok(Json(shown(state, stepped.request).await?))
}

async fn step_of(
    state: &AppState,
    caller: &Authorized<role::Privacy>,
    id: u64,
    step: &Transition,
) -> Result<kept_store::requests::Stepped, ApiError> {
    let id = service::row_id(id)?;
    service::step(&state.work(), id, step, &actor(&caller.key), state.now()).await
}

/// Carries out a request again, as entering `in_progress` did: a rectification's corrections
/// are written; for a restriction, objection, opt-out of sale or limit on sensitive data, its
/// gate is written (once per request) and put in force. Safe to repeat, for instance after an
/// `advance` whose work could not be finished.
#[utoipa::path(
    post,
    path = "/v1/requests/{id}/apply",
    operation_id = "apply_request",
    tag = "requests",
    params(("id" = u64, Path, description = "the request's id")),
    security(("api_key" = [])),
    responses(
        (status = 200, body = RequestView),
        (status = 401, description = "no key, or an invalid one", body = ErrorBody),
        (status = 403, description = "the key's role is not `privacy` or `admin`", body = ErrorBody),
        (status = 404, description = "no request with this id", body = ErrorBody),
        (status = 409, description = "`request.not_started`: the request is not in progress or completed", body = ErrorBody),
        (status = 422, description = "`id` is not a number", body = ErrorBody),
    )
)]
pub async fn apply(
    _caller: Authorized<role::Privacy>,
    State(state): State<AppState>,
    PathParams(RequestPath { id }): PathParams<RequestPath>,
) -> Result<Json<RequestView>, ApiError> {
    let request = service::stored(state.store.as_ref(), id).await?;
    state
        .steps()
        .carry_out_and_settle(&request, state.now())
        .await?;
    let request = state.store.request(id).await?.unwrap_or(request);
    Ok(Json(shown(&state, request).await?))
}

/// Lifts the restriction of processing a restriction request put in force (GDPR Art. 18(3)),
/// with a reason recorded in the request's log. Objections and opt-outs are not lifted: they
/// end when the person gives consent again.
#[utoipa::path(
    post,
    path = "/v1/requests/{id}/lift",
    operation_id = "lift_request",
    tag = "requests",
    params(("id" = u64, Path, description = "the request's id")),
    request_body = Lift,
    security(("api_key" = [])),
    responses(
        (status = 200, body = RequestView),
        (status = 400, description = "the body is not JSON", body = ErrorBody),
        (status = 401, description = "no key, or an invalid one", body = ErrorBody),
        (status = 403, description = "the key's role is not `privacy` or `admin`", body = ErrorBody),
        (status = 404, description = "no request with this id", body = ErrorBody),
        (status = 409, description = "`request.not_liftable` (not a restriction) or `request.not_in_force` (not carried out yet)", body = ErrorBody),
        (status = 422, description = "`reason` is blank or too long; `error.field` names it", body = ErrorBody),
    )
)]
pub async fn lift(
    caller: Authorized<role::Privacy>,
    State(state): State<AppState>,
    PathParams(RequestPath { id }): PathParams<RequestPath>,
    JsonBody(body): JsonBody<Lift>,
) -> Result<Json<RequestView>, ApiError> {
    let id = service::row_id(id)?;
    let stepped = gates::lift(
        &state.work(),
        &state.index,
        id,
        body.reason,
        &actor(&caller.key),
        state.now(),
    )
    .await?;
    Ok(Json(shown(&state, stepped.request).await?))
}

/// An acknowledgement a system sends once it carried out its obligation.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Acknowledgement {
    /// The `data.callback.token` of the obligation.
    pub token: String,
    /// The system's own reference for what it did (a ticket, a job id), kept on the task.
    #[serde(default)]
    pub reference: Option<String>,
}

/// What a system is answered when it acknowledges: its task, and the request's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Acknowledged {
    pub request: u64,
    pub system: String,
    pub task: TaskView,
    /// The request's state after it (`completed` once this was the last task).
    pub state: RequestState,
    /// `true` when the task was settled already: nothing changed.
    pub replayed: bool,
}

/// An operator's account of a task done by hand.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Handled {
    /// What was done, and how it is known (kept on the task and in the requests log).
    pub note: String,
}

#[derive(Debug, Deserialize)]
pub struct SystemPath {
    id: u64,
    system: String,
}

#[derive(Debug, Deserialize)]
pub struct TaskPath {
    id: u64,
    target: String,
}

/// A task the request does not have is a 404, like the request itself.
fn task_not_found(e: ApiError) -> ApiError {
    match e {
        ApiError::Request(RequestError::UnknownTask { target }) => {
            ApiError::NotFound(format!("the request has no task `{target}`"))
        }
        ApiError::Store(kept_store::StoreError::NotFound { .. }) => {
            ApiError::NotFound("no data subject request has this id".to_owned())
        }
        e => e,
    }
}

/// A system acknowledges that it carried out its obligation for a request (the callback the
/// obligation carries). No API key: the token the obligation carried is the authority. A
/// replay answers the same, with `replayed`, and changes nothing; once every task of the
/// request is settled, the request is completed.
#[utoipa::path(
    post,
    path = "/v1/requests/{id}/systems/{system}/ack",
    operation_id = "acknowledge_obligation",
    tag = "requests",
    params(
        ("id" = u64, Path, description = "the request's id (`data.request` of the obligation)"),
        ("system" = String, Path, description = "the system's key in the manifest (`data.system`)"),
    ),
    request_body = Acknowledgement,
    responses(
        (status = 200, body = Acknowledged),
        (status = 400, description = "the body is not JSON", body = ErrorBody),
        (status = 403, description = "`request.ack_token_invalid`: the token is not this obligation's", body = ErrorBody),
        (status = 404, description = "the request has no task for this system", body = ErrorBody),
        (status = 409, description = "`request.not_in_progress`: the request was rejected or is not in progress", body = ErrorBody),
        (status = 422, description = "a field is missing or invalid; `error.field` names it", body = ErrorBody),
    )
)]
pub async fn acknowledge(
    State(state): State<AppState>,
    PathParams(SystemPath { id, system }): PathParams<SystemPath>,
    JsonBody(body): JsonBody<Acknowledgement>,
) -> Result<Json<Acknowledged>, ApiError> {
    if body.token.trim().is_empty() {
        return Err(ApiError::invalid_field("token", "`token` is required"));
    }
    if id > crate::http::error::MAX_ROW_ID || Target::parse(&format!("system:{system}")).is_none() {
        // Nothing a token could have been made for: refused like a wrong token.
        return Err(ApiError::AckTokenInvalid);
    }
    let settled = tasks::acknowledge(
        &state.work(),
        id,
        &system,
        &body.token,
        body.reference,
        state.now(),
    )
    .await
    .map_err(task_not_found)?;
    let target = format!("system:{system}");
    let task = settled
        .tasks
        .into_iter()
        .find(|t| t.target == target)
        .ok_or_else(|| ApiError::NotFound(format!("the request has no task `{target}`")))?;
    Ok(Json(Acknowledged {
        request: id,
        system,
        task: task.into(),
        state: settled.request.state,
        replayed: settled.replayed,
    }))
}

/// Marks a task of a request in progress handled by hand, with a note saying what was done
/// (a system without a webhook called, a dead letter's erasure done in its console). Once
/// every task is settled, the request is completed. A task settled already is refused with
/// `request.task_settled`.
#[utoipa::path(
    post,
    path = "/v1/requests/{id}/tasks/{target}/handled",
    operation_id = "handle_request_task",
    tag = "requests",
    params(
        ("id" = u64, Path, description = "the request's id"),
        ("target" = String, Path, description = "the task's target: `kept`, `dataset:<name>` or `system:<name>`"),
    ),
    request_body = Handled,
    security(("api_key" = [])),
    responses(
        (status = 200, body = RequestView),
        (status = 400, description = "the body is not JSON", body = ErrorBody),
        (status = 401, description = "no key, or an invalid one", body = ErrorBody),
        (status = 403, description = "the key's role is not `privacy` or `admin`", body = ErrorBody),
        (status = 404, description = "no request with this id, or no such task", body = ErrorBody),
        (status = 409, description = "`request.task_settled` (done or handled already) or `request.not_in_progress`", body = ErrorBody),
        (status = 422, description = "`note` is blank or too long, or `target` malformed; `error.field` names it", body = ErrorBody),
    )
)]
pub async fn handled(
    caller: Authorized<role::Privacy>,
    State(state): State<AppState>,
    PathParams(TaskPath { id, target }): PathParams<TaskPath>,
    JsonBody(body): JsonBody<Handled>,
) -> Result<Json<RequestView>, ApiError> {
    let Some(target) = Target::parse(&target) else {
        return Err(ApiError::invalid_field(
            "target",
            format!("`{target}` is not a task target: `kept`, `dataset:<name>` or `system:<name>`"),
        ));
    };
    let id = service::row_id(id)?;
    let settled = tasks::handled(
        &state.work(),
        id,
        &target,
        &body.note,
        &actor(&caller.key),
        state.now(),
    )
    .await
    .map_err(task_not_found)?;
    if settled.replayed {
        return Err(RequestError::TaskSettled {
            target: target.to_string(),
        }
        .into());
    }
    Ok(Json(shown(&state, settled.request).await?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkParams {
    lang: Option<String>,
}

/// Signed download links to the export that answers an access or portability request, one
/// per format, and when they expire. The link is the only authority a download needs: hand it
/// to the subject. Each download is recorded in the request's log with the hash of what was
/// handed over.
#[utoipa::path(
    get,
    path = "/v1/requests/{id}/export",
    operation_id = "request_export_links",
    tag = "requests",
    params(
        ("id" = u64, Path, description = "the request's id"),
        ("lang" = Option<String>, Query, description = "the language of the HTML page (`en`, `de`, `fr`, `es`); default the organisation's first"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, body = crate::requests::export::Links),
        (status = 401, description = "no key, or an invalid one", body = ErrorBody),
        (status = 403, description = "the key's role is not `privacy` or `admin`", body = ErrorBody),
        (status = 404, description = "no request with this id", body = ErrorBody),
        (status = 409, description = "`export.not_exportable` (not an access or portability request) or `export.not_ready` (not verified yet)", body = ErrorBody),
        (status = 410, description = "`export.gone`: the request was rejected, or its subject erased", body = ErrorBody),
        (status = 422, description = "`id` is not a number, or `lang` is not a language the pages speak", body = ErrorBody),
    )
)]
pub async fn export_links(
    _caller: Authorized<role::Privacy>,
    State(state): State<AppState>,
    PathParams(RequestPath { id }): PathParams<RequestPath>,
    params: Result<Query<LinkParams>, QueryRejection>,
) -> Result<Json<crate::requests::export::Links>, ApiError> {
    let Query(params) = params?;
    let locale = match params.lang.as_deref() {
        None => None,
        Some(code) => Some(
            crate::web::texts::by_code(code)
                .ok_or_else(|| {
                    ApiError::invalid_field(
                        "lang",
                        format!("`{code}` is not a language the pages speak (en, de, fr, es)"),
                    )
                })?
                .code,
        ),
    };
    let keys = state.prefcenter.keys(state.store.as_ref()).await?;
    Ok(Json(
        crate::requests::export::links_for(
            state.store.as_ref(),
            keys,
            state.prefcenter.base_url(),
            id,
            locale,
            state.now(),
        )
        .await?,
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadParams {
    format: Option<String>,
    lang: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct TokenPath {
    token: String,
}

/// Downloads the export a signed link names (no API key: the link is the authority), in
/// `format`. Each download is recorded in the request's log with the export's hash. Not
/// cached anywhere (`Cache-Control: no-store`).
#[utoipa::path(
    get,
    path = "/exports/{token}",
    operation_id = "download_export",
    tag = "requests",
    params(
        ("token" = String, Path, description = "the signed link's token"),
        ("format" = Option<String>, Query, description = "`json` (the default, schema at `/schema/export-v1.json`), `csv` (a zip with one CSV file per section) or `html`"),
        ("lang" = Option<String>, Query, description = "the HTML page's language; default the link's, else `Accept-Language`"),
    ),
    responses(
        (status = 200, description = "the export, as an attachment", content(
            ("application/json"),
            ("application/zip"),
            ("text/html"),
        )),
        (status = 403, description = "`export.link_invalid` (tampered or not a link), `export.link_expired`, `export.link_mismatch` (names no access request of its subject)", body = ErrorBody),
        (status = 409, description = "`export.not_ready`, `export.not_exportable`", body = ErrorBody),
        (status = 410, description = "`export.gone`: the request was rejected, or its subject erased, since", body = ErrorBody),
        (status = 422, description = "`format` is not `json`, `csv` or `html`", body = ErrorBody),
    )
)]
pub async fn download(
    State(state): State<AppState>,
    PathParams(TokenPath { token }): PathParams<TokenPath>,
    params: Result<Query<DownloadParams>, QueryRejection>,
    headers: axum::http::HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    use crate::subjects::export::Format;
    let Query(params) = params?;
    let format = match params.format.as_deref() {
        None => Format::Json,
        Some(f) => Format::parse(f).ok_or_else(|| {
            ApiError::invalid_field("format", format!("`{f}` is not `json`, `csv` or `html`"))
        })?,
    };
    let now = state.now();
    let keys = state.prefcenter.keys(state.store.as_ref()).await?;
    let (claims, request) =
        crate::requests::export::open_link(keys, state.store.as_ref(), &token, now).await?;
    let lang = params.lang.as_deref().or(claims.locale.as_deref());
    let t = crate::web::i18n::language(&state.manifest.organisation.locales, lang, &headers);
    let rendered = state
        .hand_over()
        .hand_over(
            &request,
            format,
            t,
            crate::requests::export::VIA_LINK,
            Some(&claims.id),
            now,
        )
        .await?;
    Ok(crate::web::frame::attachment(
        format.content_type(),
        &format.file_name(request.subject),
        rendered.bytes,
    ))
}

/// The JSON Schema every JSON export follows (`format`: `kept-export-v1`).
#[utoipa::path(
    get,
    path = "/schema/export-v1.json",
    operation_id = "export_schema",
    tag = "requests",
    responses((status = 200, description = "the JSON Schema (draft 2020-12)", content_type = "application/schema+json")),
)]
pub async fn export_schema() -> axum::response::Response {
    use axum::response::IntoResponse as _;
    (
        [(axum::http::header::CONTENT_TYPE, "application/schema+json")],
        crate::subjects::export::SCHEMA,
    )
        .into_response()
}

/// Carries out an erasure request: every dataset of the manifest through its connector, then
/// Kept's own copy (data key shredded, rows deleted but what the law keeps, identifiers put on
/// the suppression list). The request goes to `in_progress`, and to `completed` once every
/// target is done; otherwise it stays in progress, the failure in the answer, and may be run
/// again.
#[utoipa::path(
    post,
    path = "/v1/requests/{id}/erase",
    operation_id = "erase_request",
    tag = "requests",
    params(("id" = u64, Path, description = "the request's id")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "each target's outcome; `state` is `completed` when every one is done", body = crate::requests::erase::Outcome),
        (status = 401, description = "no key, or an invalid one", body = ErrorBody),
        (status = 403, description = "the key's role is not `privacy` or `admin`", body = ErrorBody),
        (status = 404, description = "no request with this id", body = ErrorBody),
        (status = 409, description = "`request.not_erasure` (another kind of request) or `request.not_executable` (not verified yet, or closed)", body = ErrorBody),
    )
)]
pub async fn erase(
    caller: Authorized<role::Privacy>,
    State(state): State<AppState>,
    PathParams(RequestPath { id }): PathParams<RequestPath>,
) -> Result<Json<crate::requests::erase::Outcome>, ApiError> {
    let id = service::row_id(id)?;
    let outcome = crate::requests::erase::execute(
        &state.erasure(&state.work()),
        id,
        &actor(&caller.key),
        state.now(),
    )
    .await?;
    Ok(Json(outcome))
}
