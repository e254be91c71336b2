//! The consent ledger over HTTP: append records (checked against the manifest, answered only
//! after commit), read one subject's records, and the ledger's state.

use crate::consent::evidence::{EvidenceBody, check_evidence};
use crate::http::auth::{Authorized, role};
use crate::http::error::{ApiError, ErrorBody, JsonBody, PathParams};
use crate::observe;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use kept_core::SubjectId;
use kept_core::ledger::{
    self, CollectionMethod, ConsentAction, ConsentRecord, Evidence, LedgerEntry, NoticeRef,
};
use kept_core::manifest::{Manifest, promises};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Records one request may append at most.
pub const MAX_RECORDS: usize = 1000;

/// One consent record to append.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, expecting = "a consent record object")]
pub struct ConsentInput {
    /// The subject's internal id.
    pub subject: u32,
    /// A purpose key the manifest declares (`marketing.communications`).
    #[schema(example = "marketing.communications")]
    pub purpose: String,
    /// A channel key the manifest declares (`email`, `sms`).
    #[serde(default)]
    pub channel: Option<String>,
    /// A topic the manifest declares under `purpose`.
    #[serde(default)]
    pub topic: Option<String>,
    pub action: ConsentAction,
    /// The id of the notice shown; its version and content hash are taken from the manifest
    /// the server runs.
    #[serde(default)]
    pub notice: Option<String>,
    pub method: CollectionMethod,
    /// Where the record comes from (`preference_center`, `api`, `import`); no control
    /// characters.
    #[schema(example = "api", min_length = 1, max_length = 100)]
    pub source: String,
    #[serde(default)]
    pub evidence: Option<EvidenceBody>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, expecting = "an object with `records`")]
pub struct AppendConsents {
    /// Appended atomically, in this order.
    #[schema(min_items = 1, max_items = 1000)]
    pub records: Vec<ConsentInput>,
}

/// Where one appended record landed in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Appended {
    pub seq: u64,
    /// Lowercase hex BLAKE3 chain hash.
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AppendedConsents {
    pub entries: Vec<Appended>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NoticeView {
    pub id: String,
    pub version: u32,
    pub hash: String,
}

/// A consent record as stored in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConsentView {
    pub subject: u32,
    pub purpose: String,
    pub channel: Option<String>,
    pub topic: Option<String>,
    pub action: ConsentAction,
    pub notice: Option<NoticeView>,
    /// The regime that applied when the record was made (`gdpr`, `ccpa`, …).
    pub regime: String,
    pub source: String,
    pub method: CollectionMethod,
    pub evidence: EvidenceBody,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
}

impl From<ConsentRecord> for ConsentView {
    fn from(r: ConsentRecord) -> ConsentView {
        ConsentView {
            subject: r.subject.0,
            purpose: r.purpose,
            channel: r.channel,
            topic: r.topic,
            action: r.action,
            notice: r.notice.map(|n| NoticeView {
                id: n.id,
                version: n.version,
                hash: n.hash,
            }),
            regime: r.regime,
            source: r.source,
            method: r.method,
            evidence: EvidenceBody {
                ip_hash: r.evidence.ip_hash,
                user_agent: r.evidence.user_agent,
                text_hash: r.evidence.text_hash,
                reference: r.evidence.reference,
            },
            at: r.at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LedgerEntryView {
    pub seq: u64,
    pub hash: String,
    pub record: ConsentView,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SubjectConsents {
    pub subject: u32,
    pub entries: Vec<LedgerEntryView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CheckpointView {
    pub seq: u64,
    pub hash: String,
    pub at: i64,
    /// Which key signed (hex of the first 8 bytes of BLAKE3 of the public key).
    pub key_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LedgerStatus {
    /// Number of records.
    pub length: u64,
    /// Hash of the last record; absent while the ledger is empty.
    pub tip_hash: Option<String>,
    pub last_checkpoint: Option<CheckpointView>,
}

/// Appends consent records. Answers only after they are committed.
#[utoipa::path(
    post,
    path = "/v1/consents",
    tag = "consent",
    request_body = AppendConsents,
    security(("api_key" = [])),
    responses(
        (status = 201, description = "committed, in order", body = AppendedConsents),
        (status = 400, description = "not JSON", body = ErrorBody),
        (status = 401, description = "no key, or an invalid one", body = ErrorBody),
        (status = 403, description = "the key's role is not `privacy` or `admin`", body = ErrorBody),
        (status = 413, description = "body too large", body = ErrorBody),
        (status = 415, description = "not `application/json`", body = ErrorBody),
        (status = 422, description = "a field is missing, unknown, names nothing the manifest declares, \
            or is text over its length limit or with control characters", body = ErrorBody),
    )
)]
pub async fn append(
    _caller: Authorized<role::Privacy>,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<AppendConsents>,
) -> Result<(StatusCode, Json<AppendedConsents>), ApiError> {
    if body.records.is_empty() {
        return Err(ApiError::invalid_field(
            "records",
            "`records` must hold at least one record",
        ));
    }
    if body.records.len() > MAX_RECORDS {
        return Err(ApiError::invalid_field(
            "records",
            format!("`records` may hold at most {MAX_RECORDS} records per request"),
        ));
    }
    let now = state.now();
    let snapshot = state.index.snapshot()?;
    let mut records = Vec::with_capacity(body.records.len());
    for (i, input) in body.records.into_iter().enumerate() {
        let field = |name: &str| format!("records[{i}].{name}");
        // A subject the index knows is in the store (subjects are never deleted there, and a
        // merged one leaves the index); the store is asked only about the others.
        let id = SubjectId(input.subject);
        let regime = match state.index.regime(&snapshot, id) {
            Some(regime) => regime,
            None => state
                .store
                .subject(id)
                .await?
                .ok_or_else(|| {
                    ApiError::invalid_field(
                        field("subject"),
                        format!("unknown subject `{}`", input.subject),
                    )
                })?
                .regime(),
        };
        let notice = check_against_manifest(&state.manifest, &input)
            .map_err(|(name, message)| ApiError::invalid_field(field(name), message))?;
        if input.source.trim().is_empty() {
            return Err(ApiError::invalid_field(
                field("source"),
                "`source` must not be empty",
            ));
        }
        crate::http::input::ledger_text(
            &field("source"),
            &input.source,
            crate::http::input::SOURCE_MAX,
        )?;
        let evidence = input.evidence.unwrap_or_default();
        check_evidence(&|name| field(&format!("evidence.{name}")), &evidence)?;
        records.push(ConsentRecord {
            subject: id,
            purpose: input.purpose,
            channel: input.channel,
            topic: input.topic,
            action: input.action,
            notice,
            regime: regime.as_str().to_owned(),
            source: input.source,
            method: input.method,
            evidence: Evidence {
                ip_hash: evidence.ip_hash,
                user_agent: evidence.user_agent,
                text_hash: evidence.text_hash,
                reference: evidence.reference,
            },
            at: now,
        });
    }
    let entries = state.ledger.append_many(records).await?;
    observe::count_ledger_appends(entries.len());
    // Committed: from here the records must reach the index before the caller hears back.
    state.index.consents_appended(&entries).await?;
    Ok((
        StatusCode::CREATED,
        Json(AppendedConsents {
            entries: entries
                .iter()
                .map(|e| Appended {
                    seq: e.seq,
                    hash: e.hash.to_hex(),
                })
                .collect(),
        }),
    ))
}

/// Checks the keys a record names against the manifest; returns the notice reference to store,
/// or the offending field and why.
fn check_against_manifest(
    manifest: &Manifest,
    input: &ConsentInput,
) -> Result<Option<NoticeRef>, (&'static str, String)> {
    let known = |keys: Vec<&String>| -> String {
        let list: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
        if list.is_empty() {
            "none".to_owned()
        } else {
            list.join(", ")
        }
    };
    if !manifest.purposes.contains_key(&input.purpose) {
        return Err((
            "purpose",
            format!(
                "unknown purpose `{}`; the manifest declares {}",
                input.purpose,
                known(manifest.purposes.keys().collect())
            ),
        ));
    }
    if let Some(channel) = &input.channel
        && !manifest.channels.contains_key(channel)
    {
        return Err((
            "channel",
            format!(
                "unknown channel `{channel}`; the manifest declares {}",
                known(manifest.channels.keys().collect())
            ),
        ));
    }
    if let Some(topic_key) = &input.topic {
        let Some(topic) = manifest.topics.get(topic_key) else {
            return Err((
                "topic",
                format!(
                    "unknown topic `{topic_key}`; the manifest declares {}",
                    known(manifest.topics.keys().collect())
                ),
            ));
        };
        if topic.purpose != input.purpose {
            return Err((
                "topic",
                format!(
                    "topic `{topic_key}` belongs to purpose `{}`, not `{}`",
                    topic.purpose, input.purpose
                ),
            ));
        }
        if let Some(channel) = &input.channel
            && !topic.channels.contains(channel)
        {
            return Err((
                "topic",
                format!("topic `{topic_key}` is not sent on channel `{channel}`"),
            ));
        }
    }
    let Some(notice_id) = &input.notice else {
        return Ok(None);
    };
    let Some(notice) = manifest.notices.get(notice_id) else {
        return Err((
            "notice",
            format!(
                "unknown notice `{notice_id}`; the manifest declares {}",
                known(manifest.notices.keys().collect())
            ),
        ));
    };
    // A record names a notice only if it promises the purpose (on the record's channel): consent
    // under a notice that never mentioned it proves nothing, and a record must not say otherwise.
    if !promises::promises(notice, &input.purpose, input.channel.as_deref()) {
        return Err((
            "notice",
            match &input.channel {
                Some(c) => format!(
                    "notice `{notice_id}` does not promise purpose `{}` on channel `{c}`",
                    input.purpose
                ),
                None => format!(
                    "notice `{notice_id}` does not promise purpose `{}`",
                    input.purpose
                ),
            },
        ));
    }
    Ok(Some(NoticeRef {
        id: notice_id.clone(),
        version: notice.version,
        hash: notice.hash.clone(),
    }))
}

#[derive(Debug, Deserialize)]
pub struct SubjectPath {
    id: u32,
}

/// Every consent record of one subject, decoded, in ledger order.
#[utoipa::path(
    get,
    path = "/v1/subjects/{id}/consents",
    tag = "consent",
    params(("id" = u32, Path, description = "the subject's internal id")),
    security(("api_key" = [])),
    responses(
        (status = 200, body = SubjectConsents),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, description = "no such subject", body = ErrorBody),
        (status = 422, description = "`id` is not a subject id", body = ErrorBody),
    )
)]
pub async fn of_subject(
    _caller: Authorized<role::Privacy>,
    State(state): State<AppState>,
    PathParams(SubjectPath { id }): PathParams<SubjectPath>,
) -> Result<Json<SubjectConsents>, ApiError> {
    let subject = SubjectId(id);
    // A subject the index knows is in the store; only the others are looked up there.
    let known = state.index.snapshot()?.subject(subject).is_some();
    if !known && state.store.subject(subject).await?.is_none() {
        return Err(ApiError::NotFound(format!("subject `{id}` not found")));
    }
    let entries = state.store.ledger_for_subject(subject).await?;
    let entries = entries
        .into_iter()
        .map(entry_view)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(SubjectConsents {
        subject: id,
        entries,
    }))
}

fn entry_view(entry: LedgerEntry) -> Result<LedgerEntryView, ApiError> {
    let record = ledger::decode(&entry.bytes).map_err(|e| {
        ApiError::Store(kept_store::StoreError::Corrupt(format!(
            "record {} does not decode: {e}",
            entry.seq
        )))
    })?;
    Ok(LedgerEntryView {
        seq: entry.seq,
        hash: entry.hash.to_hex(),
        record: record.into(),
    })
}

/// The ledger's length, tip and last signed checkpoint.
#[utoipa::path(
    get,
    path = "/v1/ledger",
    tag = "consent",
    security(("api_key" = [])),
    responses(
        (status = 200, body = LedgerStatus),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
    )
)]
pub async fn ledger_status(
    _caller: Authorized<role::Privacy>,
    State(state): State<AppState>,
) -> Result<Json<LedgerStatus>, ApiError> {
    let tip = state.store.ledger_tip().await?;
    let last = state.store.last_checkpoint().await?;
    Ok(Json(LedgerStatus {
        length: tip.map_or(0, |(seq, _)| seq),
        tip_hash: tip.map(|(_, hash)| hash.to_hex()),
        last_checkpoint: last.map(|c| CheckpointView {
            seq: c.seq,
            hash: c.hash.to_hex(),
            at: c.at,
            key_id: c.key_id,
        }),
    }))
}
