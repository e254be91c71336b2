//! `GET /v1/decision-log`: the privacy team's view of denied decisions (and the sample of
//! allowed ones), newest first, filtered by subject, reason, purpose and time.

use crate::decide::decisions::EvidenceView;
use crate::http::auth::{Authorized, role};
use crate::http::error::{ApiError, ErrorBody, query_limit, query_number, query_row_id};
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use kept_core::SubjectId;
use kept_core::decision::ReasonCode;
use kept_store::decision_log::MAX_DECISION_LOG_PAGE;
use kept_store::{DecisionLogEntry, DecisionLogQuery};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogParams {
    subject: Option<String>,
    reason: Option<String>,
    purpose: Option<String>,
    since: Option<String>,
    before: Option<String>,
    limit: Option<String>,
}

/// One logged decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LoggedDecision {
    pub id: u64,
    /// The time decided for, in milliseconds since the Unix epoch: the request's `at` (a
    /// scheduled send), else when it was asked.
    pub at: i64,
    /// When the decision was asked, in milliseconds since the Unix epoch (before `at` for a
    /// scheduled send, else equal).
    pub asked_at: i64,
    /// The subject's internal id; absent when the subject was unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<u32>,
    pub purpose: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    pub categories: Vec<String>,
    pub allowed: bool,
    #[schema(example = "denied.not_promised")]
    pub reason: String,
    #[schema(value_type = Vec<EvidenceView>)]
    pub evidence: serde_json::Value,
    #[schema(value_type = Vec<String>)]
    pub obligations: serde_json::Value,
    /// The public id of the API key that asked.
    pub caller: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DecisionLogPage {
    /// Newest first.
    pub entries: Vec<LoggedDecision>,
    /// Pass as `before` to read the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<u64>,
    /// Entries this server dropped since it started because the log's queue was full: the log
    /// is a sample, complete only while this stays 0. Uses are recorded in full regardless
    /// (`GET /v1/uses`).
    pub dropped_since_start: u64,
    /// The share of allowed decisions logged (denied ones always are, unless dropped).
    pub sample_rate: f64,
}

/// Logged decisions, newest first: every denial, and a sample of allowed ones. Under overload
/// the log drops entries and says how many (`dropped_since_start`).
#[utoipa::path(
    get,
    path = "/v1/decision-log",
    tag = "decision log",
    params(
        ("subject" = Option<u32>, Query, description = "a subject's internal id"),
        ("reason" = Option<String>, Query, description = "a reason code (`denied.no_consent`)"),
        ("purpose" = Option<String>, Query, description = "a purpose key"),
        ("since" = Option<i64>, Query, description = "only decisions made for a time (`at`) at or after this one (milliseconds since the Unix epoch)"),
        ("before" = Option<u64>, Query, description = "only entries older than this id (`next_before` of the previous page)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "at most this many (default 100, at most 1000)"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, body = DecisionLogPage),
        (status = 401, description = "no key, or an invalid one", body = ErrorBody),
        (status = 403, description = "the key's role is not `privacy` or `admin`", body = ErrorBody),
        (status = 422, description = "a parameter is malformed or unknown", body = ErrorBody),
    )
)]
pub async fn read(
    _caller: Authorized<role::Privacy>,
    State(state): State<AppState>,
    params: Result<Query<LogParams>, QueryRejection>,
) -> Result<Json<DecisionLogPage>, ApiError> {
    let Query(params) = params?;
    let reason = match params.reason {
        Some(r) => Some(
            ReasonCode::parse(r.trim())
                .ok_or_else(|| {
                    ApiError::invalid_field("reason", format!("unknown reason code `{r}`"))
                })?
                .as_str()
                .to_owned(),
        ),
        None => None,
    };
    let limit = query_limit(params.limit.as_deref(), 100, MAX_DECISION_LOG_PAGE)?;
    let query = DecisionLogQuery {
        subject: query_number::<u32>("subject", params.subject.as_deref())?.map(SubjectId),
        reason,
        purpose: params.purpose.filter(|p| !p.is_empty()),
        since: query_number::<i64>("since", params.since.as_deref())?,
        before: query_row_id("before", params.before.as_deref())?,
        limit,
    };
    let entries = state.store.decision_log(&query).await?;
    let next_before = (entries.len() == limit as usize)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    let entries = entries
        .into_iter()
        .map(view)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(DecisionLogPage {
        entries,
        next_before,
        dropped_since_start: state.decision_log.dropped_total(),
        sample_rate: state.decision_log.sample_rate(),
    }))
}

fn view(e: DecisionLogEntry) -> Result<LoggedDecision, ApiError> {
    let json = |text: &str, what: &str| {
        serde_json::from_str(text).map_err(|err| {
            ApiError::Store(kept_store::StoreError::Corrupt(format!(
                "decision log entry {} has malformed {what}: {err}",
                e.id
            )))
        })
    };
    Ok(LoggedDecision {
        id: e.id,
        at: e.at,
        asked_at: e.asked_at,
        subject: e.subject.map(|s| s.0),
        evidence: json(&e.evidence, "evidence")?,
        obligations: json(&e.obligations, "obligations")?,
        purpose: e.purpose,
        channel: e.channel,
        topic: e.topic,
        categories: e.categories,
        allowed: e.allowed,
        reason: e.reason,
        caller: e.caller,
    })
}
