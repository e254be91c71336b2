//! `/v1/requests`: data subject requests for the privacy team (role `privacy`, and `admin`):
//! file one, list them by state, kind, subject and due date, show one with its log, and take
//! its steps (advance, extend, reject). Each answer shows the request as stored after its
//! transaction committed.

use crate::http::auth::{Authorized, role};
use crate::http::error::{
    ApiError, ErrorBody, JsonBody, PathParams, query_limit, query_number, query_row_id,
};
use crate::identity::resolve::{SubjectInput, resolve_subjects};
use crate::requests::service;
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use kept_core::regime::Regime;
use kept_core::requests::{
    Channel, Intake, LogRecord, Request, RequestKind, Scope, State as RequestState, Transition,
    Verification,
};
use kept_core::{SubjectId, UnixMillis};
use kept_store::requests::{MAX_REQUEST_PAGE, RequestFilter};
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
        }
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

/// A request with its whole log.
async fn shown(state: &AppState, request: Request) -> Result<RequestView, ApiError> {
    let log = service::log_of(state.store.as_ref(), request.id)
        .await?
        .into_iter()
        .map(|(seq, hash, r)| log_view(seq, hash, r))
        .collect();
    Ok(RequestView::new(request, state.now(), Some(log)))
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
    let now = state.now();
    let intake = Intake {
        subject: subject.id,
        kind: body.kind,
        scope: body.scope.unwrap_or_default(),
        channel,
        verification: body.verification,
        regime: Regime::resolve(subject.country.as_deref(), subject.region.as_deref()),
        region: subject.region.clone(),
        at: now,
    };
    let stepped = service::file(
        state.store.as_ref(),
        &state.ledger,
        intake,
        &actor(&caller.key),
    )
    .await?;
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
    let request = match id {
        id if id > crate::http::error::MAX_ROW_ID => None,
        id => state.store.request(id).await?,
    };
    let request = request
        .ok_or_else(|| ApiError::NotFound(format!("no data subject request has id `{id}`")))?;
    Ok(Json(shown(&state, request).await?))
}

/// Takes a request's next step: received → verified (with a verification) → in progress →
/// completed; from `extended`, the next step from where it stood.
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
        (status = 409, description = "the request's state refuses the step: `request.closed`, `request.unexpected_step`, `request.unverified`, `request.already_verified`", body = ErrorBody),
        (status = 422, description = "a field is invalid (`request.verification`, `request.too_long`, …); `error.field` names it", body = ErrorBody),
    )
)]
pub async fn advance(
    caller: Authorized<role::Privacy>,
    State(state): State<AppState>,
    PathParams(RequestPath { id }): PathParams<RequestPath>,
    JsonBody(body): JsonBody<Advance>,
) -> Result<Json<RequestView>, ApiError> {
    let step = Transition::Advance {
        expect: body.to,
        verification: body.verification,
        note: body.note,
    };
    take(&state, &caller, id, &step).await
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
    if id > crate::http::error::MAX_ROW_ID {
        return Err(ApiError::NotFound(format!(
            "no data subject request has id `{id}`"
        )));
    }
    let stepped = service::step(
        state.store.as_ref(),
        &state.ledger,
        id,
        step,
        &actor(&caller.key),
        state.now(),
    )
    .await?;
    Ok(Json(shown(state, stepped.request).await?))
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
    if id > crate::http::error::MAX_ROW_ID {
        return Err(ApiError::NotFound(format!(
            "no data subject request has id `{id}`"
        )));
    }
    let outcome =
        crate::requests::erase::execute(&state.erasure(), id, &actor(&caller.key), state.now())
            .await?;
    Ok(Json(outcome))
}
