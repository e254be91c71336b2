//! Audiences: a campaign's dry run over the index (`POST /v1/audiences/evaluate`: how many may
//! be reached, and why the others may not, gate by gate), and the export of the eligible
//! subjects' ids, streamed as NDJSON or CSV (`POST /v1/audiences/export`).

use crate::decide::candidates::{FilterInput, filter_candidates};
use crate::http::auth::{Authorized, role};
use crate::http::error::{ApiError, ErrorBody, JsonBody};
use crate::identity::resolve::{Lookup, SubjectName, resolve_subjects};
use crate::index::IndexHandle;
use crate::state::AppState;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use kept_core::audience::{AudienceResult, Candidates, evaluate};
use kept_core::decision::ReasonCode;
use kept_core::index::Snapshot;
use kept_core::{SubjectId, UnixMillis};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use utoipa::ToSchema;

/// Eligible ids an evaluation returns at most as its sample.
pub const MAX_SAMPLE: usize = 1000;
/// Candidates a list may name at most.
pub const MAX_CANDIDATES: usize = 1_000_000;
/// Ids per chunk of an export.
const EXPORT_CHUNK: usize = 4096;

/// Who the campaign would reach before any rule applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CandidatesInput {
    /// Every subject Kept knows.
    #[default]
    Everyone,
    /// These internal ids.
    Ids(Vec<u32>),
    /// These user ids (one Kept does not know counts as `denied.unknown_subject`).
    UserIds(Vec<String>),
    /// Subjects whose location matches every list given.
    Filter(FilterInput),
}

/// A campaign to dry-run: the use, and who it would reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AudienceInput {
    #[schema(example = "marketing.communications")]
    pub purpose: String,
    #[serde(default)]
    #[schema(example = "sms")]
    pub channel: Option<String>,
    #[serde(default)]
    pub topic: Option<String>,
    /// Data categories the campaign reads; when empty, the one the channel reaches people by.
    #[serde(default)]
    pub categories: Vec<String>,
    /// `"everyone"` (the default), `{"ids": [...]}`, `{"user_ids": [...]}` or
    /// `{"filter": {"regimes": [...], "countries": [...], "regions": [...]}}`.
    #[serde(default)]
    pub candidates: CandidatesInput,
    /// How many eligible subjects to return as a sample (the lowest ids), at most 1,000.
    #[serde(default = "default_sample")]
    pub sample_size: usize,
}

fn default_sample() -> usize {
    10
}

/// Candidates left out for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Exclusion {
    #[schema(example = "denied.not_promised")]
    pub reason: String,
    pub count: u64,
}

/// An eligible subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AudienceMember {
    pub id: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// The dry run's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AudienceView {
    /// Candidates considered: `eligible` plus every exclusion.
    pub candidates: u64,
    pub eligible: u64,
    /// By reason, in the order of the gates (each candidate counted once, at the first gate
    /// that excluded it).
    pub excluded: Vec<Exclusion>,
    pub sample: Vec<AudienceMember>,
    /// What sending to the eligible subjects must do.
    pub obligations: Vec<String>,
    pub took_ms: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    #[default]
    Ndjson,
    Csv,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    #[serde(default)]
    format: Option<String>,
}

/// An evaluation with the ids it could not resolve counted in.
struct Evaluated {
    result: AudienceResult,
    unresolved: u64,
    took_ms: f64,
    /// The decisions it read, and when.
    snapshot: Arc<Snapshot>,
    now: UnixMillis,
}

/// Resolves candidates named by user id (the only ones that may need the store), with how
/// many named nobody.
async fn resolve_named(
    lookup: Lookup<'_>,
    input: &CandidatesInput,
) -> Result<Option<(Candidates, u64)>, ApiError> {
    let CandidatesInput::UserIds(users) = input else {
        return Ok(None);
    };
    if users.len() > MAX_CANDIDATES {
        return Err(ApiError::invalid_field(
            "candidates.user_ids",
            format!("`candidates.user_ids` may name at most {MAX_CANDIDATES} subjects"),
        ));
    }
    let refs: Vec<SubjectName<'_>> = users
        .iter()
        .map(|u| SubjectName::UserId(u.as_str().into()))
        .collect();
    let found = resolve_subjects(lookup, &refs).await?;
    let unresolved = found.iter().filter(|f| f.is_none()).count() as u64;
    Ok(Some((
        Candidates::Ids(found.into_iter().flatten().collect()),
        unresolved,
    )))
}

/// Turns the input into the core's candidates (user ids resolved by `resolve_named` first).
fn candidates(index: &IndexHandle, input: &CandidatesInput) -> Result<(Candidates, u64), ApiError> {
    let too_many = |field: &str| {
        ApiError::invalid_field(
            field,
            format!("`{field}` may name at most {MAX_CANDIDATES} subjects"),
        )
    };
    Ok(match input {
        CandidatesInput::Everyone => (Candidates::All, 0),
        CandidatesInput::Ids(ids) => {
            if ids.len() > MAX_CANDIDATES {
                return Err(too_many("candidates.ids"));
            }
            (
                Candidates::Ids(ids.iter().map(|i| SubjectId(*i)).collect()),
                0,
            )
        }
        // Resolved before, on the async side; here only if called without that.
        CandidatesInput::UserIds(_) => (Candidates::Ids(Vec::new()), 0),
        CandidatesInput::Filter(f) => (filter_candidates(index, f)?, 0),
    })
}

fn run(
    index: &IndexHandle,
    input: &AudienceInput,
    named: Option<(Candidates, u64)>,
    now: UnixMillis,
) -> Result<Evaluated, ApiError> {
    let started = Instant::now();
    let (candidates, unresolved) = match named {
        Some(named) => named,
        None => candidates(index, &input.candidates)?,
    };
    let snapshot = index.snapshot()?;
    let req = kept_core::audience::AudienceRequest {
        purpose: input.purpose.clone(),
        channel: input.channel.clone(),
        topic: input.topic.clone(),
        categories: input.categories.clone(),
        candidates,
        sample_size: input.sample_size,
    };
    let result = evaluate(&snapshot, &req, now);
    Ok(Evaluated {
        result,
        unresolved,
        took_ms: started.elapsed().as_secs_f64() * 1000.0,
        snapshot,
        now,
    })
}

/// Runs the evaluation on a blocking thread: over millions of subjects it takes milliseconds.
async fn evaluate_off_workers(
    lookup: Lookup<'_>,
    now: UnixMillis,
    input: AudienceInput,
) -> Result<(Evaluated, AudienceInput), ApiError> {
    if input.sample_size > MAX_SAMPLE {
        return Err(ApiError::invalid_field(
            "sample_size",
            format!("`sample_size` may be at most {MAX_SAMPLE}"),
        ));
    }
    let named = resolve_named(lookup, &input.candidates).await?;
    let index = lookup.index.clone();
    tokio::task::spawn_blocking(move || run(&index, &input, named, now).map(|e| (e, input)))
        .await
        .map_err(|e| ApiError::Internal(format!("the audience task failed: {e}")))?
}

/// Exclusions in gate order, with ids that named nobody counted as unknown subjects.
pub fn exclusions(result: &AudienceResult, unresolved: u64) -> BTreeMap<ReasonCode, u64> {
    let mut excluded = result.excluded.clone();
    if unresolved > 0 {
        *excluded
            .entry(ReasonCode::DeniedUnknownSubject)
            .or_default() += unresolved;
    }
    excluded
}

/// Dry-runs a campaign: how many of the candidates may be reached, and why the others may not.
#[utoipa::path(
    post,
    path = "/v1/audiences/evaluate",
    tag = "audiences",
    request_body = AudienceInput,
    security(("api_key" = [])),
    responses(
        (status = 200, body = AudienceView),
        (status = 400, description = "not JSON", body = ErrorBody),
        (status = 401, description = "no key, or an invalid one", body = ErrorBody),
        (status = 403, description = "the key's role is not `decide` or `admin`", body = ErrorBody),
        (status = 415, description = "not `application/json`", body = ErrorBody),
        (status = 422, description = "a field is missing, unknown or out of range", body = ErrorBody),
    )
)]
pub async fn evaluate_audience(
    _caller: Authorized<role::Decide>,
    State(state): State<AppState>,
    JsonBody(input): JsonBody<AudienceInput>,
) -> Result<Json<AudienceView>, ApiError> {
    dry_run(state.lookup(), state.now(), input).await.map(Json)
}

/// The dry run of a campaign at `now` (the API's and the console's).
pub async fn dry_run(
    lookup: Lookup<'_>,
    now: UnixMillis,
    input: AudienceInput,
) -> Result<AudienceView, ApiError> {
    let index = lookup.index.clone();
    let (evaluated, _) = evaluate_off_workers(lookup, now, input).await?;
    let Evaluated {
        result,
        unresolved,
        took_ms,
        ..
    } = evaluated;
    let excluded = exclusions(&result, unresolved);
    let sample = {
        let directory = index.directory()?;
        result
            .sample
            .iter()
            .map(|id| AudienceMember {
                id: id.0,
                user_id: directory.user_id(*id).map(str::to_owned),
            })
            .collect()
    };
    Ok(AudienceView {
        candidates: result.eligible_count + excluded.values().sum::<u64>(),
        eligible: result.eligible_count,
        excluded: excluded
            .into_iter()
            .map(|(reason, count)| Exclusion {
                reason: reason.as_str().to_owned(),
                count,
            })
            .collect(),
        sample,
        obligations: result
            .obligations
            .iter()
            .map(|o| o.as_str().to_owned())
            .collect(),
        took_ms,
    })
}

/// Streams the eligible subjects' ids (internal id and user id), one per line, without holding
/// the whole export in memory. Before the first byte is sent the export is recorded as a use
/// of every subject in it (`GET /v1/uses`), with the reason of each one's decision.
#[utoipa::path(
    post,
    path = "/v1/audiences/export",
    tag = "audiences",
    request_body = AudienceInput,
    params(("format" = Option<ExportFormat>, Query, description = "`ndjson` (the default): \
        `{\"id\":12,\"user_id\":\"u-12\"}` per line; `csv`: a header `id,user_id`, then a row per subject")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "the eligible subjects, in id order; `x-kept-eligible` \
            holds their number, `x-kept-export-id` the reference the export's uses are \
            recorded under", content(
                (String = "application/x-ndjson"),
                (String = "text/csv"),
            )),
        (status = 400, description = "not JSON", body = ErrorBody),
        (status = 401, description = "no key, or an invalid one", body = ErrorBody),
        (status = 403, description = "the key's role is not `decide` or `admin`", body = ErrorBody),
        (status = 415, description = "not `application/json`", body = ErrorBody),
        (status = 422, description = "a field is missing, unknown or out of range", body = ErrorBody),
    )
)]
pub async fn export(
    caller: Authorized<role::Decide>,
    State(state): State<AppState>,
    params: Result<Query<ExportParams>, QueryRejection>,
    JsonBody(mut input): JsonBody<AudienceInput>,
) -> Result<Response, ApiError> {
    let Query(params) = params?;
    let format = match params.format.as_deref() {
        None | Some("ndjson") => ExportFormat::Ndjson,
        Some("csv") => ExportFormat::Csv,
        Some(other) => {
            return Err(ApiError::invalid_field(
                "format",
                format!("unknown format `{other}`; use `ndjson` or `csv`"),
            ));
        }
    };
    input.sample_size = 0;
    export_audience(state.lookup(), state.now(), input, format, &caller.key.id).await
}

/// The export of `input`'s eligible subjects at `now` in `format`, as a streamed download,
/// its uses recorded under `caller` before the first byte (the API's export and the console's).
pub async fn export_audience(
    lookup: Lookup<'_>,
    now: UnixMillis,
    mut input: AudienceInput,
    format: ExportFormat,
    caller: &str,
) -> Result<Response, ApiError> {
    input.sample_size = 0;
    let (evaluated, input) = evaluate_off_workers(lookup, now, input).await?;
    let eligible = evaluated.result.eligible_count;
    let reference = crate::decide::uses::export_id();
    let caller = caller.to_owned();
    let (used, evaluated) = tokio::task::spawn_blocking(move || {
        let used = export_uses(&evaluated, &input, &caller, &reference);
        (used, evaluated)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the export's decisions failed: {e}")))?;
    let reference = used.first().and_then(|u| u.reference.clone());
    // Written before the first byte leaves: an export that cannot be recorded is not made.
    lookup.store.record_uses(used).await?;
    let stream = export_stream(lookup.index.clone(), evaluated.result.eligible, format);
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    let (content_type, file) = match format {
        ExportFormat::Ndjson => (
            "application/x-ndjson",
            "attachment; filename=\"audience.ndjson\"",
        ),
        ExportFormat::Csv => (
            "text/csv; charset=utf-8",
            "attachment; filename=\"audience.csv\"",
        ),
    };
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static(file));
    if let Ok(v) = HeaderValue::from_str(&eligible.to_string()) {
        headers.insert("x-kept-eligible", v);
    }
    if let Some(v) = reference.and_then(|r| HeaderValue::from_str(&r).ok()) {
        headers.insert("x-kept-export-id", v);
    }
    Ok(response)
}

/// The uses an export makes (see `crate::decide::uses::export_records`).
fn export_uses(
    evaluated: &Evaluated,
    input: &AudienceInput,
    caller: &str,
    reference: &str,
) -> Vec<kept_store::UseRecord> {
    let request = kept_core::decision::DecisionRequest {
        purpose: input.purpose.clone(),
        channel: input.channel.clone(),
        topic: input.topic.clone(),
        categories: input.categories.clone(),
    };
    crate::decide::uses::export_records(
        &evaluated.snapshot,
        &evaluated.result,
        &exclusions(&evaluated.result, evaluated.unresolved),
        &request,
        evaluated.now,
        caller,
        reference,
    )
}

/// The export, a chunk of ids at a time; the directory is read per chunk, never held across
/// a chunk's send.
pub fn export_stream(
    index: IndexHandle,
    eligible: roaring::RoaringBitmap,
    format: ExportFormat,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let header = match format {
        ExportFormat::Csv => Some(Bytes::from_static(b"id,user_id\n")),
        ExportFormat::Ndjson => None,
    };
    let ids = eligible.into_iter();
    let chunks = futures::stream::unfold(ids, move |mut ids| {
        let index = index.clone();
        async move {
            let chunk: Vec<u32> = ids.by_ref().take(EXPORT_CHUNK).collect();
            if chunk.is_empty() {
                return None;
            }
            let bytes = export_chunk(&index, &chunk, format);
            Some((bytes, ids))
        }
    });
    futures::StreamExt::chain(
        futures::stream::iter(header.map(Ok)),
        futures::StreamExt::map(chunks, Ok),
    )
}

fn export_chunk(index: &IndexHandle, chunk: &[u32], format: ExportFormat) -> Bytes {
    let mut out = Vec::with_capacity(chunk.len() * 32);
    let directory = index.directory().ok();
    for &id in chunk {
        let user_id = directory.as_ref().and_then(|d| d.user_id(SubjectId(id)));
        match format {
            ExportFormat::Ndjson => {
                out.extend_from_slice(b"{\"id\":");
                crate::http::json::push_int(&mut out, i64::from(id));
                if let Some(u) = user_id {
                    out.extend_from_slice(b",\"user_id\":");
                    crate::http::json::push_str(&mut out, u);
                }
                out.extend_from_slice(b"}\n");
            }
            ExportFormat::Csv => {
                crate::http::json::push_int(&mut out, i64::from(id));
                out.push(b',');
                if let Some(u) = user_id {
                    out.extend_from_slice(kept_core::csv::field(u).as_bytes());
                }
                out.push(b'\n');
            }
        }
    }
    Bytes::from(out)
}
