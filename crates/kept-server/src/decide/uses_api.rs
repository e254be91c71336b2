//! `GET /v1/uses`: the privacy team's view of the record of uses of one subject, newest first:
//! webhook forwards, recorded contacts, profile reads, and the audience exports that held the
//! subject, each with the decision it went ahead under.

use crate::http::auth::{Authorized, role};
use crate::http::error::{ApiError, ErrorBody, query_limit, query_number, query_row_id};
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use kept_core::SubjectId;
use kept_core::decision::ReasonCode;
use kept_store::uses::MAX_USES_PAGE;
use kept_store::{UseQuery, UseRecord};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UseParams {
    subject: Option<String>,
    before: Option<String>,
    limit: Option<String>,
}

/// One use of the subject's data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UseView {
    pub id: u64,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    /// `forward` (an event sent to a system's webhook), `export` (an audience export that held
    /// the subject), `contact` (a message sent, recorded through `POST /v1/contacts`) or
    /// `profile` (the traits of one category shown by `GET /v1/subjects/{id}/profile`).
    #[schema(example = "contact")]
    pub kind: String,
    pub purpose: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The data categories the decision read.
    pub categories: Vec<String>,
    /// Whether the decision allowed the use. A contact is recorded as told, so it may carry a
    /// denial.
    pub allowed: bool,
    /// The reason code of the decision for this subject.
    #[schema(example = "allowed.consent")]
    pub reason: String,
    /// For a forward, a contact or a profile read, the decision's evidence (as `POST /v1/decisions` answers
    /// it); for an export, its summary: `export`, `eligible`, `excluded` and `by_reason` (counts
    /// by reason code).
    pub evidence: serde_json::Value,
    /// The system a forward went to, or the public id of the API key that exported or recorded.
    pub actor: String,
    /// The webhook delivery's message id, or the export's id (`x-kept-export-id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// How many subjects the record covers: 1, or for an export those with the same reason.
    pub subjects: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsePage {
    /// Newest first.
    pub uses: Vec<UseView>,
    /// Pass as `before` to read the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<u64>,
}

/// Every use of one subject's data Kept performed or was told about, newest first. Unlike the
/// decision log, this record is complete: nothing is sampled or dropped.
#[utoipa::path(
    get,
    path = "/v1/uses",
    operation_id = "read_uses",
    tag = "decision log",
    params(
        ("subject" = u32, Query, description = "a subject's internal id"),
        ("before" = Option<u64>, Query, description = "only uses older than this id (`next_before` of the previous page)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "at most this many (default 100, at most 1000)"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, body = UsePage),
        (status = 401, description = "no key, or an invalid one", body = ErrorBody),
        (status = 403, description = "the key's role is not `privacy` or `admin`", body = ErrorBody),
        (status = 422, description = "`subject` is missing, or a parameter is malformed or unknown", body = ErrorBody),
    )
)]
pub async fn read(
    _caller: Authorized<role::Privacy>,
    State(state): State<AppState>,
    params: Result<Query<UseParams>, QueryRejection>,
) -> Result<Json<UsePage>, ApiError> {
    let Query(params) = params?;
    let subject = query_number::<u32>("subject", params.subject.as_deref())?
        .ok_or_else(|| ApiError::invalid_field("subject", "missing field `subject`"))?;
    let limit = query_limit(params.limit.as_deref(), 100, MAX_USES_PAGE)?;
    let query = UseQuery {
        subject: SubjectId(subject),
        before: query_row_id("before", params.before.as_deref())?,
        limit,
    };
    let uses = state.store.uses_of(&query).await?;
    let next_before = (uses.len() == limit as usize)
        .then(|| uses.last().map(|u| u.id))
        .flatten();
    let uses = uses.into_iter().map(view).collect::<Result<Vec<_>, _>>()?;
    Ok(Json(UsePage { uses, next_before }))
}

fn view(u: UseRecord) -> Result<UseView, ApiError> {
    let evidence = serde_json::from_str(&u.evidence).map_err(|err| {
        ApiError::Store(kept_store::StoreError::Corrupt(format!(
            "use {} has malformed evidence: {err}",
            u.id
        )))
    })?;
    Ok(UseView {
        id: u.id,
        at: u.at,
        kind: u.kind.as_str().to_owned(),
        allowed: ReasonCode::parse(&u.reason).is_some_and(ReasonCode::is_allowed),
        subjects: u.subjects.count(),
        purpose: u.purpose,
        channel: u.channel,
        topic: u.topic,
        categories: u.categories,
        reason: u.reason,
        evidence,
        actor: u.actor,
        reference: u.reference,
    })
}
