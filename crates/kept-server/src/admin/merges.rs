//! The identity log (role `privacy`): every merge identity resolution made, with the key that
//! caused it, and undoing one. After an undo the restored subject's identifiers, traits and
//! index entry are its own again, on this server and on the others sharing the database.

use crate::http::auth::{Authorized, role};
use crate::http::error::{ApiError, ErrorBody, PathParams, query_limit, query_row_id};
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use kept_core::ledger::{self, CollectionMethod, ConsentAction, ConsentRecord, Evidence};
use kept_store::StoreError;
use kept_store::collection::MergeEntry;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// Entries one page holds at most.
pub const MAX_PAGE: u32 = 1_000;
const DEFAULT_PAGE: u32 = 100;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogParams {
    before: Option<String>,
    limit: Option<String>,
}

/// One entry of the identity log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MergeView {
    pub id: i64,
    /// `merge`, or `undo` (of the merge named by `undoes`).
    #[schema(example = "merge")]
    pub action: String,
    /// The subject merged away (for an undo: restored).
    pub from: u32,
    /// The subject it was merged into.
    pub into: u32,
    /// What caused it: `identify` (identifiers shared), `alias`, or `undo`.
    pub cause: String,
    /// The public id of the API key whose request did it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    /// For a merge: when it was undone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undone_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undoes: Option<i64>,
}

impl From<MergeEntry> for MergeView {
    fn from(e: MergeEntry) -> MergeView {
        MergeView {
            id: e.id,
            action: e.action,
            from: e.from.0,
            into: e.into.0,
            cause: e.cause,
            key: e.key_id,
            at: e.at,
            undone_at: e.undone_at,
            undoes: e.undoes,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MergeLog {
    /// Newest first.
    pub entries: Vec<MergeView>,
    /// Pass as `before` to read the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
}

/// What an undo restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Undone {
    /// The identity log entry of the undo.
    pub undo: MergeView,
    /// Identifiers moved back to the restored subject.
    pub identifiers: u64,
    /// Traits given back to the restored subject.
    pub traits: u64,
}

/// The identity log: every merge and every undo, newest first.
#[utoipa::path(
    get,
    path = "/v1/merges",
    operation_id = "list_merges",
    tag = "collection",
    params(
        ("before" = Option<u64>, Query, description = "only entries with a smaller id (the previous page's `next_before`)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "at most this many entries, 1 to 1,000 (100)"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, body = MergeLog),
        (status = 401, body = ErrorBody),
        (status = 403, description = "the key's role is not `privacy` or `admin`", body = ErrorBody),
        (status = 422, description = "a malformed `before` or `limit`, named in `error.field`", body = ErrorBody),
    )
)]
pub async fn list(
    _caller: Authorized<role::Privacy>,
    State(state): State<AppState>,
    params: Result<Query<LogParams>, QueryRejection>,
) -> Result<Json<MergeLog>, ApiError> {
    let Query(p) = params?;
    let before =
        query_row_id("before", p.before.as_deref())?.map(|b| i64::try_from(b).unwrap_or(i64::MAX));
    let limit = query_limit(p.limit.as_deref(), DEFAULT_PAGE, MAX_PAGE)?;
    let entries = state.store.identity_log(before, limit).await?;
    let next_before = (entries.len() == limit as usize)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(Json(MergeLog {
        entries: entries.into_iter().map(MergeView::from).collect(),
        next_before,
    }))
}

#[derive(Debug, Deserialize)]
pub struct MergePath {
    id: i64,
}

/// Undoes a merge: the merged-away subject gets back the identifiers and traits it had, and
/// decisions, lookups and the index treat it as its own subject again. A consent the merge
/// carried over to the survivor stops counting for it: the ledger (append-only) gets a record
/// putting back the survivor's own earlier choice, or `withdrawn` when it had none. The
/// restored subject keeps its own records.
#[utoipa::path(
    post,
    path = "/v1/merges/{id}/undo",
    operation_id = "undo_merge",
    tag = "collection",
    params(("id" = u64, Path, description = "the merge's id in the identity log")),
    security(("api_key" = [])),
    responses(
        (status = 200, body = Undone),
        (status = 401, body = ErrorBody),
        (status = 403, description = "the key's role is not `privacy` or `admin`", body = ErrorBody),
        (status = 404, description = "no merge with this id", body = ErrorBody),
        (status = 409, description = "already undone, or the survivor was merged away since (undo that merge first)", body = ErrorBody),
    )
)]
pub async fn undo(
    caller: Authorized<role::Privacy>,
    State(state): State<AppState>,
    PathParams(MergePath { id }): PathParams<MergePath>,
) -> Result<Json<Undone>, ApiError> {
    let undo = Undo {
        store: state.store.as_ref(),
        ledger: &state.ledger,
        index: &state.index,
        identities: &state.identity,
    };
    undo.merge(id, &caller.key.id, state.now()).await.map(Json)
}

/// What undoing a merge writes to: the store, the ledger (consent the merge carried over), the
/// index and the identity cache. The API and the console undo through it.
#[derive(Debug, Clone, Copy)]
pub struct Undo<'a> {
    pub store: &'a dyn kept_store::Store,
    pub ledger: &'a crate::consent::ledger::Ledger,
    pub index: &'a crate::index::IndexHandle,
    pub identities: &'a crate::identity::Identities,
}

impl Undo<'_> {
    /// Undoes merge `id` at `now` for `by` (an API key's public id, or an operator), as
    /// `POST /v1/merges/{id}/undo` describes: `NotFound` for no such merge, `Conflict` for one
    /// already undone or whose survivor was merged away since.
    pub async fn merge(
        &self,
        id: i64,
        by: &str,
        now: kept_core::UnixMillis,
    ) -> Result<Undone, ApiError> {
        let not_found = || ApiError::NotFound(format!("no merge `{id}` in the identity log"));
        let merge = self
            .store
            .identity_log(Some(id.saturating_add(1)), 1)
            .await?
            .into_iter()
            .find(|e| e.id == id && e.action == "merge")
            .ok_or_else(not_found)?;
        if merge.undone_at.is_some() {
            return Err(StoreError::Conflict {
                what: "merge",
                key: format!("{id} (already undone)"),
            }
            .into());
        }
        // Consent the merge carried to the survivor stops counting for it first: should the
        // undo itself then fail, the survivor is left denied more, never allowed more.
        let reverts = carried_consent_reverts(self.store, &merge, now).await?;
        if !reverts.is_empty() {
            let entries = self.ledger.append_many(reverts).await?;
            self.index.consents_appended(&entries).await?;
        }
        let undone = match self.store.undo_merge(id, Some(by), now).await {
            Ok(u) => u,
            Err(StoreError::NotFound { .. }) => return Err(not_found()),
            Err(e) => return Err(e.into()),
        };
        let (from, into) = (undone.entry.from, undone.entry.into);
        // What resolution remembered of both is stale: the restored subject's identifiers
        // point at it again.
        if let Ok(mut cache) = self.identities.cache.lock() {
            *cache = Default::default();
        }
        self.index.record_merges(&[(from, into)], true)?;
        let mut changes = crate::sync::subject_changes(self.store, from, now).await?;
        changes.extend(crate::sync::subject_changes(self.store, into, now).await?);
        self.index.apply(changes).await?;
        tracing::info!(merge = id, from = from.0, into = into.0, by = %by, "merge undone");
        Ok(Undone {
            undo: undone.entry.into(),
            identifiers: undone.identifiers,
            traits: undone.traits,
        })
    }
}

/// Source of the ledger records an undo writes.
pub const UNDO_SOURCE: &str = "merge_undo";

/// The records that take back, on the survivor, a consent the merge carried over from the
/// merged-away subject (`collect::ingest::carried_over` marks those): for each purpose whose
/// latest record on the survivor is such a carried `given`, the survivor's own earlier choice
/// again, or `withdrawn` when it had none. Carried refusals and opt-outs stay: they only deny.
async fn carried_consent_reverts(
    store: &dyn kept_store::Store,
    merge: &MergeEntry,
    now: kept_core::UnixMillis,
) -> Result<Vec<ConsentRecord>, ApiError> {
    let marker = format!("merged from subject {}", merge.from.0);
    let carried = |r: &ConsentRecord| {
        r.evidence.reference.as_deref().is_some_and(|x| {
            x.strip_prefix(marker.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
        })
    };
    let mut latest: BTreeMap<String, ConsentRecord> = BTreeMap::new();
    let mut own: BTreeMap<String, ConsentAction> = BTreeMap::new();
    for entry in store.ledger_for_subject(merge.into).await? {
        let record = ledger::decode(&entry.bytes).map_err(|e| {
            ApiError::Store(StoreError::Corrupt(format!(
                "record {} does not decode: {e}",
                entry.seq
            )))
        })?;
        if record.channel.is_some()
            || record.topic.is_some()
            || record.method == CollectionMethod::Gpc
            || record.action == ConsentAction::Pending
        {
            continue;
        }
        if !carried(&record) {
            own.insert(record.purpose.clone(), record.action);
        }
        latest.insert(record.purpose.clone(), record);
    }
    let mut out = Vec::new();
    for (purpose, record) in latest {
        if !carried(&record) || record.action != ConsentAction::Given {
            continue;
        }
        let action = own
            .get(&purpose)
            .copied()
            .unwrap_or(ConsentAction::Withdrawn);
        if action == ConsentAction::Given {
            continue;
        }
        out.push(ConsentRecord {
            action,
            source: UNDO_SOURCE.to_owned(),
            method: CollectionMethod::Api,
            evidence: Evidence {
                reference: Some(format!(
                    "merge {} undone: the consent carried from subject {} no longer counts",
                    merge.id, merge.from.0
                )),
                ..Evidence::default()
            },
            at: now,
            ..record
        });
    }
    Ok(out)
}
