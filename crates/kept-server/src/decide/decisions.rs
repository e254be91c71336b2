//! `POST /v1/decisions`: one decision or a batch of up to 10,000, answered in order from the
//! in-memory index. The hot path of the API, so it reads the body in place (strings borrowed
//! from it), prepares each distinct request once per batch, and writes the answer straight into
//! one buffer instead of building values to serialise.

use crate::decide::answer::write_decision;
use crate::decide::log::{DecisionLog, LoggedRequest, Pending};
use crate::http::auth::{Authorized, role};
use crate::http::error::{ApiError, ErrorBody, is_json, json_error};
use crate::http::json::push_int_field;
use crate::identity::resolve::{
    Lookup, SubjectInput, SubjectName, check_one_identifier, resolve_subjects,
};
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use kept_core::decision::{Decision, ReasonCode, decide_query};
use kept_core::index::{IndexQuery, Snapshot};
use kept_core::{SubjectId, UnixMillis};
use rustc_hash::FxHashMap;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;
use utoipa::ToSchema;

/// Decision requests one call may carry at most.
pub const MAX_BATCH: usize = 10_000;
/// The largest body this endpoint reads, whatever the server's general limit: a full batch is
/// larger than most bodies.
pub const BODY_LIMIT: usize = 16 * 1024 * 1024;
/// Bodies above this are answered on a blocking thread, so a big batch does not hold an async
/// worker for milliseconds.
const INLINE_BODY: usize = 192 * 1024;
/// Distinct requests in a batch compared one by one before a map is worth it.
const LINEAR_LOOKUP: usize = 16;

pub const DECISIONS: &str = "kept_decisions_total";

// --- the documented shapes (the handler reads the same JSON through the borrowed types below) --

/// May `purpose` use this subject's data (`categories`, or the ones `channel` reaches the person
/// through) via `channel`, for `topic`, now (or at `at`)?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionInput {
    pub subject: SubjectInput,
    /// A purpose key; one the manifest does not declare is `denied.unknown_purpose`.
    #[schema(example = "marketing.communications")]
    pub purpose: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "sms")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Data categories the use reads (`user.contact.phone_number`); when empty, the category
    /// the channel reaches the person through.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    /// The time the use would happen, for a scheduled send: quiet hours, frequency caps,
    /// expiry and legal windows are evaluated then. At most 30 days ahead; up to 5 minutes
    /// in the past is taken as now (clock skew), earlier is refused. Default: now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DecisionTime>,
}

/// A time: Unix milliseconds, or RFC 3339 (`2026-12-05T09:00:00+01:00`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum DecisionTime {
    #[schema(example = 1_780_000_000_000_i64)]
    Millis(i64),
    #[schema(example = "2026-12-05T09:00:00+01:00")]
    Rfc3339(String),
}

/// Several decisions, answered in the same order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBatch {
    /// At most 10,000.
    pub requests: Vec<DecisionInput>,
}

/// One decision request, or a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum DecisionsBody {
    One(DecisionInput),
    Batch(DecisionBatch),
}

/// What backs a decision: a ledger record, where the data came from, a rule and its legal
/// source, the person's own choices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum EvidenceView {
    /// A consent ledger record.
    Ledger { seq: u64 },
    /// The category was collected at this collection point under this notice, which promised
    /// the use.
    Provenance {
        category: String,
        collection_point: String,
        notice: String,
        notice_version: u32,
    },
    /// The category was never collected under a notice promising the use.
    NotPromised { category: String },
    /// A rulebook row and its legal source.
    Rule { id: String, source: String },
    /// A manifest rule forbidding this use of the category.
    ForbiddenUse {
        category: String,
        purpose: String,
        reason: String,
    },
    /// Implied consent from data collected at a purchase or inquiry point.
    Implied {
        collection_point: String,
        collected_at: i64,
    },
    /// The person's frequency choice and how many messages were sent in the period.
    FrequencyCap {
        channel: String,
        max: u32,
        period: String,
        sent: u32,
    },
    /// The person's quiet hours and the local time of the decision.
    QuietHours {
        channel: String,
        start: String,
        end: String,
        local_time: String,
    },
    /// The subject's time zone is unknown: quiet hours were read in UTC.
    TimeZoneFallback { note: String },
    /// The data subject request (`/v1/requests/{id}`) whose restriction, objection, opt-out
    /// of sale or limit on sensitive data stops the use.
    Request { id: u64 },
}

/// The answer to one use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionView {
    pub allowed: bool,
    /// A stable reason code: `allowed.consent`, `allowed.contract`, `allowed.opt_out_regime`,
    /// `allowed.soft_opt_in`, `allowed.implied_consent`, or `denied.*` (`not_promised`,
    /// `no_consent`, `withdrawn`, `opted_out`, `objected`, `gpc`, `expired`,
    /// `frequency_cap`, `quiet_hours`, `unsubscribed`, `erasure_pending`, `suppressed`,
    /// `forbidden_use`, `no_legal_basis`, `unknown_subject`, `unknown_purpose`,
    /// `unknown_channel`, `unknown_topic`).
    #[schema(example = "denied.not_promised")]
    pub reason: String,
    pub evidence: Vec<EvidenceView>,
    /// What the use must do (`include_unsubscribe_link`, `honour_stop_reply`, …); empty when
    /// denied.
    pub obligations: Vec<String>,
    /// The time decided for (Unix milliseconds), when the request gave `at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<i64>,
}

/// Decisions in the order of the requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBatchView {
    pub decisions: Vec<DecisionView>,
}

/// One decision, or the batch's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum DecisionsAnswer {
    One(DecisionView),
    Batch(DecisionBatchView),
}

// --- the wire, borrowed ----------------------------------------------------------------------

/// A string borrowed from the body when it has no escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Text<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text<'a>, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(TextVisitor)
    }
}

impl Text<'_> {
    fn as_str(&self) -> &str {
        &self.0
    }
}

/// `at` as sent: Unix milliseconds or an RFC 3339 time, read without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WireAt(UnixMillis);

impl<'de> Deserialize<'de> for WireAt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<WireAt, D::Error> {
        struct AtVisitor;
        impl Visitor<'_> for AtVisitor {
            type Value = WireAt;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a time: Unix milliseconds or an RFC 3339 string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<WireAt, E> {
                Ok(WireAt(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<WireAt, E> {
                i64::try_from(v)
                    .map(WireAt)
                    .map_err(|_| E::custom(format_args!("the time {v} is out of range")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<WireAt, E> {
                kept_core::collection::parse_time(v)
                    .map(WireAt)
                    .ok_or_else(|| E::custom("not an RFC 3339 time (`2026-12-05T09:00:00Z`)"))
            }
        }
        d.deserialize_any(AtVisitor)
    }
}

/// The time a request is decided for: `None` for now, or the scheduled time.
fn decision_time(
    at: Option<WireAt>,
    now: UnixMillis,
    field: impl Fn() -> String,
) -> Result<Option<UnixMillis>, ApiError> {
    at.map(|WireAt(at)| crate::http::input::scheduled_time(at, now, field))
        .transpose()
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a subject object with one of `user_id`, `email`, `phone`, `anonymous_id`, `id`"
)]
pub(crate) struct WireSubject<'a> {
    #[serde(borrow, default)]
    user_id: Option<Text<'a>>,
    #[serde(borrow, default)]
    email: Option<Text<'a>>,
    #[serde(borrow, default)]
    phone: Option<Text<'a>>,
    #[serde(borrow, default)]
    anonymous_id: Option<Text<'a>>,
    #[serde(default)]
    id: Option<u32>,
}

impl<'a> WireSubject<'a> {
    /// The one identifier, or the error naming `field`.
    pub(crate) fn take(&mut self, field: &str) -> Result<SubjectName<'a>, ApiError> {
        // Checked before anything is taken, so a failed call leaves the subject as it was.
        fn text<'t>(t: &'t Option<Text<'_>>) -> Option<&'t str> {
            t.as_ref().map(|t| t.0.as_ref())
        }
        check_one_identifier(
            field,
            [
                ("user_id", text(&self.user_id)),
                ("email", text(&self.email)),
                ("phone", text(&self.phone)),
                ("anonymous_id", text(&self.anonymous_id)),
            ],
            self.id,
        )?;
        if let Some(Text(v)) = self.user_id.take() {
            return Ok(SubjectName::UserId(v));
        }
        if let Some(Text(v)) = self.email.take() {
            return Ok(SubjectName::Email(v));
        }
        if let Some(Text(v)) = self.phone.take() {
            return Ok(SubjectName::Phone(v));
        }
        if let Some(Text(v)) = self.anonymous_id.take() {
            return Ok(SubjectName::AnonymousId(v));
        }
        Ok(SubjectName::Id(self.id.unwrap_or_default()))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a decision request object")]
struct WireRequest<'a> {
    #[serde(borrow)]
    subject: WireSubject<'a>,
    #[serde(borrow)]
    purpose: Text<'a>,
    #[serde(borrow, default)]
    channel: Option<Text<'a>>,
    #[serde(borrow, default)]
    topic: Option<Text<'a>>,
    #[serde(borrow, default)]
    categories: Vec<Text<'a>>,
    #[serde(default)]
    at: Option<WireAt>,
}

impl WireRequest<'_> {
    /// The error of this batch item's subject, naming it by position (a failed `take` left
    /// the subject as it was).
    fn subject_error(&mut self, i: usize) -> ApiError {
        let field = format!("requests[{i}].subject");
        match self.subject.take(&field) {
            Err(e) => e,
            Ok(_) => ApiError::invalid_field(field.clone(), format!("`{field}` is not valid")),
        }
    }
}

/// Either one request (its fields at the top) or `requests`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a decision request, or an object with `requests`"
)]
struct WireBody<'a> {
    #[serde(borrow, default, deserialize_with = "at_most_max_batch")]
    requests: Option<Vec<WireRequest<'a>>>,
    #[serde(borrow, default)]
    subject: Option<WireSubject<'a>>,
    #[serde(borrow, default)]
    purpose: Option<Text<'a>>,
    #[serde(borrow, default)]
    channel: Option<Text<'a>>,
    #[serde(borrow, default)]
    topic: Option<Text<'a>>,
    #[serde(borrow, default)]
    categories: Option<Vec<Text<'a>>>,
    #[serde(default)]
    at: Option<WireAt>,
}

/// Stops reading a batch at its 10,001st request instead of after the whole body.
fn at_most_max_batch<'de: 'a, 'a, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<WireRequest<'a>>>, D::Error> {
    struct Bounded<'a>(std::marker::PhantomData<&'a ()>);
    impl<'de: 'a, 'a> Visitor<'de> for Bounded<'a> {
        type Value = Vec<WireRequest<'a>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of decision requests")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_BATCH));
            while let Some(item) = seq.next_element()? {
                if out.len() == MAX_BATCH {
                    return Err(de::Error::custom(format_args!(
                        "a batch holds at most {MAX_BATCH} decision requests"
                    )));
                }
                out.push(item);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Bounded(std::marker::PhantomData))
        .map(Some)
}

fn parse(bytes: &[u8]) -> Result<WireBody<'_>, ApiError> {
    match serde_json::from_slice::<WireBody<'_>>(bytes) {
        Ok(body) => Ok(body),
        // Read again, slowly, only to say where the problem is.
        Err(_) => {
            let mut de = serde_json::Deserializer::from_slice(bytes);
            match serde_path_to_error::deserialize::<_, WireBody<'_>>(&mut de) {
                Err(e) => Err(json_error(e)),
                Ok(_) => Err(ApiError::InvalidJson(
                    "the request body is not one JSON value".to_owned(),
                )),
            }
        }
    }
}

/// The requests of a body, and whether it was a single one.
fn requests(body: WireBody<'_>) -> Result<(Vec<WireRequest<'_>>, bool), ApiError> {
    let single = body.subject.is_some()
        || body.purpose.is_some()
        || body.channel.is_some()
        || body.topic.is_some()
        || body.categories.is_some()
        || body.at.is_some();
    match (body.requests, single) {
        (Some(_), true) => Err(ApiError::invalid_field(
            "requests",
            "send either one request or `requests`, not both",
        )),
        (Some(list), false) if list.is_empty() => Err(ApiError::invalid_field(
            "requests",
            "`requests` must hold at least one decision request",
        )),
        (Some(list), false) => Ok((list, false)),
        (None, _) => {
            let subject = body
                .subject
                .ok_or_else(|| ApiError::invalid_field("subject", "missing field `subject`"))?;
            let purpose = body
                .purpose
                .ok_or_else(|| ApiError::invalid_field("purpose", "missing field `purpose`"))?;
            Ok((
                vec![WireRequest {
                    subject,
                    purpose,
                    channel: body.channel,
                    topic: body.topic,
                    categories: body.categories.unwrap_or_default(),
                    at: body.at,
                }],
                true,
            ))
        }
    }
}

/// Decides whether each use may happen: one request, or `requests` answered in order.
#[utoipa::path(
    post,
    path = "/v1/decisions",
    tag = "decisions",
    request_body(
        content = DecisionsBody,
        description = "one decision request, or `{ \"requests\": [...] }` with at most 10,000; \
            bodies up to 16 MiB are read whatever the server's general body limit"
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "one decision, or `decisions` in the order of `requests`; \
            an unknown subject or purpose is a denial, not an error", body = DecisionsAnswer),
        (status = 400, description = "not JSON", body = ErrorBody),
        (status = 401, description = "no key, or an invalid one", body = ErrorBody),
        (status = 403, description = "the key's role is not `decide` or `admin`", body = ErrorBody),
        (status = 413, description = "body larger than 16 MiB", body = ErrorBody),
        (status = 415, description = "not `application/json`", body = ErrorBody),
        (status = 422, description = "a field is missing, unknown or malformed (`field` names \
            it, with the batch index: `requests[3].subject`), `at` more than 30 days ahead or more \
            than 5 minutes in the past, or more than 10,000 requests", body = ErrorBody),
    )
)]
pub async fn decide(
    caller: Authorized<role::Decide>,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if !is_json(&headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let bytes = body.map_err(|r| match ApiError::from(r) {
        ApiError::TooLarge { .. } => ApiError::TooLarge {
            limit: Some(BODY_LIMIT),
        },
        other => other,
    })?;
    let now = state.now();
    let caller = caller.key.id;
    let out = if bytes.len() > INLINE_BODY {
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            runtime.block_on(answer(
                state.lookup(),
                &state.decision_log,
                &bytes,
                now,
                &caller,
            ))
        })
        .await
        .map_err(|e| ApiError::Internal(format!("the decision task failed: {e}")))??
    } else {
        answer(state.lookup(), &state.decision_log, &bytes, now, &caller).await?
    };
    let mut response = Response::new(Body::from(out));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// A distinct request of a batch, prepared once.
struct Prepared<'b> {
    purpose: &'b str,
    channel: Option<&'b str>,
    topic: Option<&'b str>,
    categories: &'b [Text<'b>],
    q: IndexQuery,
    /// Its position in the log's list of requests, once something of it was logged.
    logged: Option<u32>,
    /// The decision for a subject Kept does not know (the same for all of them).
    unknown: Option<Decision>,
}

impl Prepared<'_> {
    fn matches(&self, r: &WireRequest<'_>) -> bool {
        self.purpose == r.purpose.as_str()
            && self.channel == r.channel.as_ref().map(Text::as_str)
            && self.topic == r.topic.as_ref().map(Text::as_str)
            && self.categories.len() == r.categories.len()
            && self
                .categories
                .iter()
                .zip(&r.categories)
                .all(|(a, b)| a.as_str() == b.as_str())
    }
}

type Key<'b> = (&'b str, Option<&'b str>, Option<&'b str>, Vec<&'b str>);

fn key<'b>(r: &'b WireRequest<'b>) -> Key<'b> {
    (
        r.purpose.as_str(),
        r.channel.as_ref().map(Text::as_str),
        r.topic.as_ref().map(Text::as_str),
        r.categories.iter().map(Text::as_str).collect(),
    )
}

/// The decisions `bytes` ask for, resolved through `lookup` and read from its index's
/// snapshot, written as the answer's body; their share logged to `decision_log`.
async fn answer(
    lookup: Lookup<'_>,
    decision_log: &DecisionLog,
    bytes: &[u8],
    now: UnixMillis,
    caller: &str,
) -> Result<Vec<u8>, ApiError> {
    let body = parse(bytes)?;
    let (mut requests, single) = requests(body)?;
    let mut times = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        times.push(decision_time(r.at, now, || {
            if single {
                "at".to_owned()
            } else {
                format!("requests[{i}].at")
            }
        })?);
    }
    let mut refs = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter_mut().enumerate() {
        // The field is named only for a bad item, so a good batch formats nothing.
        match r.subject.take("subject") {
            Ok(subject) => refs.push(subject),
            Err(e) if single => return Err(e),
            Err(_) => return Err(r.subject_error(i)),
        }
    }
    let subjects = resolve_subjects(lookup, &refs).await?;
    drop(refs);
    let snapshot = lookup.index.snapshot()?;
    let mut out = Vec::with_capacity(requests.len() * 160 + 16);
    let mut log = Log::new(decision_log, requests.len(), now, caller);
    if !single {
        out.extend_from_slice(b"{\"decisions\":[");
    }
    decide_all(
        &snapshot, &requests, &subjects, &times, now, &mut out, &mut log,
    );
    if !single {
        out.extend_from_slice(b"]}");
    }
    log.finish(decision_log);
    Ok(out)
}

/// The decisions of a batch written to `out`, comma-separated.
fn decide_all<'b>(
    snapshot: &Snapshot,
    requests: &'b [WireRequest<'b>],
    subjects: &[Option<SubjectId>],
    times: &[Option<UnixMillis>],
    now: UnixMillis,
    out: &mut Vec<u8>,
    log: &mut Log,
) {
    let ctx = snapshot.compiled().as_ref();
    let mut prepared: Vec<Prepared<'b>> = Vec::new();
    let mut by_key: FxHashMap<Key<'b>, usize> = FxHashMap::default();
    let mut last = usize::MAX;
    for (i, (r, subject)) in requests.iter().zip(subjects).enumerate() {
        let p = match prepared.get(last) {
            Some(p) if p.matches(r) => last,
            _ => {
                let found = if prepared.len() <= LINEAR_LOOKUP {
                    prepared.iter().position(|p| p.matches(r))
                } else {
                    by_key.get(&key(r)).copied()
                };
                match found {
                    Some(p) => p,
                    None => {
                        let q = snapshot.prepare(&kept_core::decision::DecisionRequest {
                            purpose: r.purpose.as_str().to_owned(),
                            channel: r.channel.as_ref().map(|c| c.as_str().to_owned()),
                            topic: r.topic.as_ref().map(|t| t.as_str().to_owned()),
                            categories: r
                                .categories
                                .iter()
                                .map(|c| c.as_str().to_owned())
                                .collect(),
                        });
                        prepared.push(Prepared {
                            purpose: r.purpose.as_str(),
                            channel: r.channel.as_ref().map(Text::as_str),
                            topic: r.topic.as_ref().map(Text::as_str),
                            categories: &r.categories,
                            q,
                            logged: None,
                            unknown: None,
                        });
                        if prepared.len() > LINEAR_LOOKUP {
                            if by_key.is_empty() {
                                for (j, existing) in prepared.iter().enumerate() {
                                    by_key.insert(
                                        (
                                            existing.purpose,
                                            existing.channel,
                                            existing.topic,
                                            existing.categories.iter().map(Text::as_str).collect(),
                                        ),
                                        j,
                                    );
                                }
                            } else {
                                by_key.insert(key(r), prepared.len() - 1);
                            }
                        }
                        prepared.len() - 1
                    }
                }
            }
        };
        last = p;
        let Some(entry) = prepared.get_mut(p) else {
            continue;
        };
        let at = times.get(i).copied().flatten();
        let decision = match subject {
            Some(id) => snapshot.decide_prepared(*id, &entry.q, at.unwrap_or(now)),
            None => entry
                .unknown
                .get_or_insert_with(|| decide_query(None, ctx, &entry.q.query, now))
                .clone(),
        };
        if i > 0 {
            out.push(b',');
        }
        let (evidence, obligations) = write_decision(out, ctx, &entry.q.query, &decision);
        if let Some(at) = at {
            // The time decided for goes inside the decision's object, before its `}`.
            out.pop();
            push_int_field(out, "at", at);
            out.push(b'}');
        }
        log.count(decision.reason);
        if log.wants(&decision) {
            let request = *entry.logged.get_or_insert_with(|| {
                log.request(LoggedRequest {
                    purpose: entry.purpose.to_owned(),
                    channel: entry.channel.map(str::to_owned),
                    topic: entry.topic.map(str::to_owned),
                    categories: entry
                        .categories
                        .iter()
                        .map(|c| c.as_str().to_owned())
                        .collect(),
                })
            });
            log.push(
                *subject,
                at.unwrap_or(now),
                request,
                decision.reason,
                out.get(evidence).unwrap_or(b"[]"),
                out.get(obligations).unwrap_or(b"[]"),
            );
        }
    }
}

/// One request's share of the decision log and of the metrics.
struct Log {
    pending: Option<Pending>,
    sampler: crate::decide::log::Sampler,
    reasons: [u32; ReasonCode::ALL.len()],
    skipped: usize,
}

impl Log {
    fn new(decision_log: &DecisionLog, n: usize, now: UnixMillis, caller: &str) -> Log {
        let room = decision_log.has_room(n);
        Log {
            pending: room.then(|| Pending::new(now, caller)),
            sampler: decision_log.sampler(),
            reasons: [0; ReasonCode::ALL.len()],
            skipped: 0,
        }
    }

    fn count(&mut self, reason: ReasonCode) {
        if let Some(n) = self.reasons.get_mut(reason as usize) {
            *n += 1;
        }
    }

    /// Whether this decision goes to the log (every denial, a sample of the rest); counts the
    /// ones the full queue makes us skip.
    fn wants(&mut self, d: &Decision) -> bool {
        let wanted = !d.allowed || self.sampler.hit();
        if wanted && self.pending.is_none() {
            self.skipped += 1;
            return false;
        }
        wanted
    }

    fn request(&mut self, request: LoggedRequest) -> u32 {
        let Some(p) = self.pending.as_mut() else {
            return 0;
        };
        p.requests.push(request);
        u32::try_from(p.requests.len() - 1).unwrap_or(u32::MAX)
    }

    fn push(
        &mut self,
        subject: Option<SubjectId>,
        at: UnixMillis,
        request: u32,
        reason: ReasonCode,
        evidence: &[u8],
        obligations: &[u8],
    ) {
        if let Some(p) = self.pending.as_mut() {
            p.push(subject, at, request, reason, evidence, obligations);
        }
    }

    fn finish(self, decision_log: &DecisionLog) {
        for (reason, n) in ReasonCode::ALL.iter().zip(self.reasons) {
            if n > 0 {
                metrics::counter!(DECISIONS, "reason" => reason.as_str()).increment(u64::from(n));
            }
        }
        decision_log.dropped(self.skipped);
        if let Some(p) = self.pending {
            decision_log.submit(p);
        }
    }
}
