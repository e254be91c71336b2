//! Reading back what collection stored: a subject found by one of its identifiers (its
//! identifiers opened, its traits with provenance), a subject's events (merged subjects'
//! included), the messages the quarantine holds, and setting a write key's default collection
//! point.

use super::quarantine::{self, QuarantinePage};
use crate::http::auth::{Authorized, role};
use crate::http::error::{
    ApiError, ErrorBody, JsonBody, MAX_ROW_ID, PathParams, page_limit, query_number, query_row_id,
};
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use kept_core::SubjectId;
use kept_core::identity::{IdentifierKind, normalize};
use kept_core::regime::Regime;
use kept_store::quarantine::MAX_QUARANTINE_PAGE;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Exactly one identifier to look a subject up by.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LookupQuery {
    pub user_id: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub anonymous_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IdentifierView {
    /// `user_id`, `email`, `phone` or `anonymous_id`.
    pub kind: String,
    /// The normalised value; absent when its key was shredded (erasure).
    pub value: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub since: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProvenanceView {
    pub collection_point: String,
    pub notice_id: String,
    pub notice_version: u32,
    /// Milliseconds since the Unix epoch.
    pub collected_at: i64,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TraitView {
    pub key: String,
    /// As collected: a string, number, boolean, object or array.
    pub value: serde_json::Value,
    /// Data category; `user.unmapped` when the collection point does not map the field.
    pub category: String,
    pub provenance: ProvenanceView,
}

/// A subject as collection knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SubjectLookup {
    pub subject: u32,
    pub user_id: Option<String>,
    pub country: Option<String>,
    pub region: Option<String>,
    pub time_zone: Option<String>,
    pub regime: String,
    /// Subjects merged into this one.
    pub merged_from: Vec<u32>,
    pub identifiers: Vec<IdentifierView>,
    pub traits: Vec<TraitView>,
}

/// Finds a subject by one identifier and shows what is held about it.
#[utoipa::path(
    get,
    path = "/v1/subjects/lookup",
    tag = "collection",
    params(LookupQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, body = SubjectLookup),
        (status = 401, body = ErrorBody),
        (status = 403, description = "the key's role is not `privacy` or `admin`", body = ErrorBody),
        (status = 404, description = "nobody holds this identifier", body = ErrorBody),
        (status = 422, description = "not exactly one identifier, or a malformed one", body = ErrorBody),
    )
)]
pub async fn lookup(
    _caller: Authorized<role::Privacy>,
    State(state): State<AppState>,
    query: Result<Query<LookupQuery>, QueryRejection>,
) -> Result<Json<SubjectLookup>, ApiError> {
    let Query(q) = query?;
    let given: Vec<(IdentifierKind, &str, &str)> = [
        (IdentifierKind::UserId, "user_id", q.user_id.as_deref()),
        (IdentifierKind::Email, "email", q.email.as_deref()),
        (IdentifierKind::Phone, "phone", q.phone.as_deref()),
        (
            IdentifierKind::AnonymousId,
            "anonymous_id",
            q.anonymous_id.as_deref(),
        ),
    ]
    .into_iter()
    .filter_map(|(k, name, v)| v.map(|v| (k, name, v)))
    .collect();
    let [(kind, name, raw)] = given.as_slice() else {
        return Err(ApiError::invalid_field(
            "query",
            "give exactly one of `user_id`, `email`, `phone` and `anonymous_id`",
        ));
    };
    let store = state.store.as_ref();
    let keys = state.identity.keys(store).await?;
    let value = normalize(
        *kind,
        raw,
        state.collect.config().default_country.as_deref(),
    )
    .map_err(|e| ApiError::invalid_field(*name, e.to_string()))?;
    let hash = keys.identifier_hash(*kind, &value);
    let mut subject = store
        .find_identities(&[hash])
        .await?
        .first()
        .map(|(_, s)| *s);
    if subject.is_none() && *kind == IdentifierKind::UserId {
        subject = store
            .subjects_by_user_ids(std::slice::from_ref(&value))
            .await?
            .first()
            .map(|(_, s)| *s);
    }
    let not_found = || ApiError::NotFound(format!("no subject holds this `{name}`"));
    let subject = subject.ok_or_else(not_found)?;
    // A user id given to a subject that was merged away names the survivor.
    let subject = store
        .survivors(&[subject])
        .await?
        .first()
        .map_or(subject, |(_, survivor)| *survivor);
    let facts = store.subject(subject).await?.ok_or_else(not_found)?;

    let identifiers = crate::subjects::identifiers::opened(store, &state.identity, subject)
        .await?
        .into_iter()
        .map(|(kind, value, since)| IdentifierView {
            kind: kind.as_str().to_owned(),
            value,
            since,
        })
        .collect();
    let traits = store
        .traits(subject)
        .await?
        .into_iter()
        .map(|t| TraitView {
            key: t.key,
            value: t.value,
            category: t.category,
            provenance: ProvenanceView {
                collection_point: t.provenance.collection_point,
                notice_id: t.provenance.notice_id,
                notice_version: t.provenance.notice_version,
                collected_at: t.provenance.collected_at,
                source: t.provenance.source,
            },
        })
        .collect();
    Ok(Json(SubjectLookup {
        subject: subject.0,
        regime: Regime::resolve(facts.country.as_deref(), facts.region.as_deref())
            .as_str()
            .to_owned(),
        user_id: facts.user_id,
        country: facts.country,
        region: facts.region,
        time_zone: facts.time_zone,
        merged_from: store
            .merged_into(subject)
            .await?
            .into_iter()
            .map(|s| s.0)
            .collect(),
        identifiers,
        traits,
    }))
}

#[derive(Debug, Deserialize)]
pub struct SubjectPath {
    id: u32,
}

/// Paging through a subject's events.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events after this position (`next_after` of the previous page).
    pub after: Option<u64>,
    /// At most this many (default 100, at most 1,000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    /// Position, for paging.
    pub id: i64,
    pub message_id: String,
    /// The write key that sent it.
    pub source: String,
    /// The subject it was collected for (a subject since merged into this one, perhaps).
    pub subject: u32,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: Option<String>,
    /// When it happened, milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub received_at: i64,
    /// When retention deletes it.
    pub retain_until: i64,
    /// The consent it carried, and the purposes it may serve (`usable_for`).
    #[schema(value_type = Object)]
    pub consent: serde_json::Value,
    #[schema(value_type = Object)]
    pub properties: serde_json::Value,
    #[schema(value_type = Object)]
    pub context: serde_json::Value,
    /// The message's top-level fields Kept does not read (a page's `category`, `channel`,
    /// `integrations`, ...), as sent.
    #[schema(value_type = Object)]
    pub extra: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SubjectEvents {
    pub subject: u32,
    pub events: Vec<EventView>,
    /// Pass as `after` for the next page; absent on the last.
    pub next_after: Option<i64>,
}

/// A subject's events, and those of every subject merged into it, oldest first.
#[utoipa::path(
    get,
    path = "/v1/subjects/{id}/events",
    tag = "collection",
    params(("id" = u32, Path, description = "the subject's internal id"), EventsQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, body = SubjectEvents),
        (status = 401, body = ErrorBody),
        (status = 403, description = "the key's role is not `privacy` or `admin`", body = ErrorBody),
        (status = 404, description = "no such subject", body = ErrorBody),
    )
)]
pub async fn events(
    _caller: Authorized<role::Privacy>,
    State(state): State<AppState>,
    PathParams(SubjectPath { id }): PathParams<SubjectPath>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<SubjectEvents>, ApiError> {
    let Query(q) = query?;
    let subject = SubjectId(id);
    if state.store.subject(subject).await?.is_none() {
        return Err(ApiError::NotFound(format!("subject `{id}` not found")));
    }
    let limit = page_limit(q.limit, 100, 1000)?;
    let after = q
        .after
        .map(|a| {
            i64::try_from(a).map_err(|_| {
                ApiError::invalid_field("after", format!("`after` must be at most {MAX_ROW_ID}"))
            })
        })
        .transpose()?;
    let stored = state.store.events_of(subject, after, limit).await?;
    let json = |s: &str| serde_json::from_str(s).unwrap_or(serde_json::Value::Null);
    let full = stored.len() == usize::try_from(limit).unwrap_or(usize::MAX);
    let events: Vec<EventView> = stored
        .into_iter()
        .map(|e| EventView {
            id: e.id,
            consent: json(&e.event.consent),
            properties: json(&e.event.properties),
            context: json(&e.event.context),
            extra: json(&e.event.extra),
            message_id: e.event.message_id,
            source: e.event.source,
            subject: e.event.subject.0,
            kind: e.event.kind,
            name: e.event.name,
            timestamp: e.event.at,
            received_at: e.event.received_at,
            retain_until: e.event.retain_until,
        })
        .collect();
    Ok(Json(SubjectEvents {
        subject: id,
        next_after: if full {
            events.last().map(|e| e.id)
        } else {
            None
        },
        events,
    }))
}

#[derive(Debug, Deserialize)]
pub struct KeyPath {
    id: String,
}

/// The collection point events sent with a key are collected at when they name none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, expecting = "an object with `collection_point`")]
pub struct KeyCollectionPoint {
    /// A collection point the manifest declares, or `null` to clear it. Required: a body that
    /// leaves it out says nothing, and must not clear it.
    #[serde(deserialize_with = "present")]
    #[schema(required = true)]
    pub collection_point: Option<String>,
}

/// An `Option` field that must be present (`null` allowed): serde treats a missing `Option`
/// as `None` unless its deserializer is given explicitly.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)
}

/// Sets a write key's default collection point (its traits get that point's categories and
/// notice when an event names no `context.kept.collection_point`).
#[utoipa::path(
    put,
    path = "/v1/keys/{id}/collection-point",
    tag = "keys",
    params(("id" = String, Path, description = "the key's public id (`kept_ab12cd34`)")),
    request_body = KeyCollectionPoint,
    security(("api_key" = [])),
    responses(
        (status = 200, body = KeyCollectionPoint),
        (status = 401, body = ErrorBody),
        (status = 403, description = "the key's role is not `admin`", body = ErrorBody),
        (status = 404, description = "no such key", body = ErrorBody),
        (status = 400, description = "not JSON", body = ErrorBody),
        (status = 413, description = "body too large", body = ErrorBody),
        (status = 415, description = "not `application/json`", body = ErrorBody),
        (status = 422, description = "`collection_point` is missing or names a collection point \
            the manifest does not declare", body = ErrorBody),
    )
)]
pub async fn set_collection_point(
    _caller: Authorized<role::Admin>,
    State(state): State<AppState>,
    PathParams(KeyPath { id }): PathParams<KeyPath>,
    JsonBody(body): JsonBody<KeyCollectionPoint>,
) -> Result<Json<KeyCollectionPoint>, ApiError> {
    if let Some(point) = &body.collection_point
        && !state.manifest.collection_points.contains_key(point)
    {
        let known: Vec<String> = state
            .manifest
            .collection_points
            .keys()
            .map(|k| format!("`{k}`"))
            .collect();
        return Err(ApiError::invalid_field(
            "collection_point",
            format!(
                "unknown collection point `{point}`; the manifest declares {}",
                known.join(", ")
            ),
        ));
    }
    state
        .store
        .set_key_collection_point(&id, body.collection_point.as_deref())
        .await?;
    state.collect.forget_point(&id);
    Ok(Json(body))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantineParams {
    after: Option<String>,
    limit: Option<String>,
}

/// Held messages a page lists when the caller names no `limit`.
const DEFAULT_QUARANTINE_PAGE: u32 = 100;

/// The messages collection rejected one by one in the last seven days, opened, oldest first.
#[utoipa::path(
    get,
    path = "/v1/quarantine",
    operation_id = "list_quarantine",
    tag = "collection",
    params(
        ("after" = Option<u64>, Query, minimum = 0, maximum = 9223372036854775807_i64,
            description = "only messages with a larger id (the previous page's `next_after`)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000,
            description = "at most this many messages, 1 to 1,000 (100)"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, body = QuarantinePage),
        (status = 401, description = "no API key, or an invalid one", body = ErrorBody),
        (status = 403, description = "the key's role is not `admin`", body = ErrorBody),
        (status = 422, description = "a malformed `after` or `limit`, named in `error.field`", body = ErrorBody),
    )
)]
pub async fn list_quarantine(
    _caller: Authorized<role::Admin>,
    State(state): State<AppState>,
    params: Result<Query<QuarantineParams>, QueryRejection>,
) -> Result<Json<QuarantinePage>, ApiError> {
    let Query(p) = params?;
    let after = query_row_id("after", p.after.as_deref())?;
    let limit =
        query_number::<u32>("limit", p.limit.as_deref())?.unwrap_or(DEFAULT_QUARANTINE_PAGE);
    if !(1..=MAX_QUARANTINE_PAGE).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            format!("`limit` must be between 1 and {MAX_QUARANTINE_PAGE}"),
        ));
    }
    let page = quarantine::page(state.store.as_ref(), &state.identity, after, limit).await?;
    Ok(Json(page))
}
