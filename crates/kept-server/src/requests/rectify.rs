//! Rectification (GDPR Art. 16, Cal. Civ. Code 1798.106): a request carries corrections, a
//! trait key or an identifier kind with its new value. At intake they are checked as
//! collection checks the same data (a trait must be a field some collection point maps, an
//! identifier must normalise), sealed with the subject's data key and filed with the request;
//! its intake record holds their targets and a keyed digest, never the values. Carried out
//! (`apply`), traits get the new value with provenance source `request:<id>` ("corrected by
//! request N"), and a corrected email or phone is attached through the identity write
//! (sealed, keyed hash) while the ones it replaces are dropped, so it is found by its new
//! value only. Applying again changes nothing.

use crate::http::error::ApiError;
use crate::identity::Identities;
use crate::index::IndexHandle;
use kept_core::collection::profile::IDENTIFIER_TRAITS;
use kept_core::identity::{
    DataKey, IdentifierKind, IdentityKeys, PlannedSubject, identifier_aad, normalize,
};
use kept_core::index::Change;
use kept_core::manifest::Manifest;
use kept_core::requests::{MAX_TEXT, Request, RequestKind};
use kept_core::subject::{Provenance, Trait};
use kept_core::{SubjectId, UnixMillis};
use kept_store::collection::{IdentityWrite, NewIdentity};
use kept_store::corrections::StoredCorrection;
use kept_store::{Store, StoreError};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// What a rectification request corrects.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Corrections {
    /// Trait key → its correct value (`{"first_name": "Ada"}`); a key is a field some
    /// collection point of the manifest maps to a data category.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub traits: BTreeMap<String, Value>,
    /// Identifier kind (`email`, `phone`) → its correct value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub identifiers: BTreeMap<String, String>,
}

impl Corrections {
    pub fn is_empty(&self) -> bool {
        self.traits.is_empty() && self.identifiers.is_empty()
    }
}

/// A correction checked: what it sets and the value stored for it.
#[derive(Debug, Clone, PartialEq)]
enum Target {
    Trait(String),
    Identifier(IdentifierKind),
}

impl Target {
    fn column(&self) -> String {
        match self {
            Target::Trait(key) => format!("trait:{key}"),
            Target::Identifier(kind) => format!("identifier:{}", kind.as_str()),
        }
    }

    fn parse(column: &str) -> Option<Target> {
        match column.split_once(':')? {
            ("trait", key) => Some(Target::Trait(key.to_owned())),
            ("identifier", kind) => IdentifierKind::parse(kind).map(Target::Identifier),
            _ => None,
        }
    }
}

/// The corrections of a request about to be filed: sealed, with what its intake record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub corrections: Vec<StoredCorrection>,
    pub detail: Vec<(String, String)>,
}

/// The collection point that maps trait `key`, with the category it gives it: the first in key
/// order, the one whose notice a correction of a trait the subject never had is provided under.
fn point_for<'m>(manifest: &'m Manifest, key: &str) -> Option<(&'m str, &'m str)> {
    manifest
        .collection_points
        .iter()
        .find_map(|(id, p)| p.fields.get(key).map(|c| (id.as_str(), c.as_str())))
}

/// Checks `corrections` for a request of `kind` about `subject` and seals them with its data
/// key (made now if it has none). A correction on another kind, none on a rectification, a
/// trait no collection point maps, an identifier that does not normalise or that another
/// subject holds: 422 naming the field.
pub async fn seal(
    store: &dyn Store,
    identities: &Identities,
    manifest: &Manifest,
    kind: RequestKind,
    subject: SubjectId,
    corrections: Option<&Corrections>,
    now: UnixMillis,
) -> Result<Option<Sealed>, ApiError> {
    let corrections = match (kind, corrections) {
        (RequestKind::Rectification, Some(c)) if !c.is_empty() => c,
        (RequestKind::Rectification, _) => {
            return Err(ApiError::invalid_field(
                "corrections",
                "a `rectification` request needs `corrections`: the traits or identifiers to correct, with their correct values",
            ));
        }
        (_, None) => return Ok(None),
        (kind, Some(_)) => {
            return Err(ApiError::invalid_field(
                "corrections",
                format!(
                    "only a `rectification` request carries `corrections`, not a `{kind}` request"
                ),
            ));
        }
    };
    let mut checked: Vec<(Target, Value)> = Vec::new();
    for (key, value) in &corrections.traits {
        let field = format!("corrections.traits.{key}");
        if IDENTIFIER_TRAITS.iter().any(|(k, _)| k == key) {
            return Err(ApiError::invalid_field(
                field,
                format!(
                    "`{key}` is an identifier: correct it under `corrections.identifiers.{key}`"
                ),
            ));
        }
        if point_for(manifest, key).is_none() {
            return Err(ApiError::invalid_field(
                field,
                format!("`{key}` is not a field any collection point of the manifest collects"),
            ));
        }
        if value.is_null() || serde_json::to_string(value).map_or(true, |v| v.len() > MAX_TEXT) {
            return Err(ApiError::invalid_field(
                field,
                format!(
                    "the correct value of `{key}` must be present and at most {MAX_TEXT} bytes as JSON; to remove a value, ask for its erasure"
                ),
            ));
        }
        checked.push((Target::Trait(key.clone()), value.clone()));
    }
    let keys = identities.keys(store).await?;
    for (name, raw) in &corrections.identifiers {
        let field = format!("corrections.identifiers.{name}");
        let kind = IdentifierKind::parse(name)
            .filter(|k| matches!(k, IdentifierKind::Email | IdentifierKind::Phone))
            .ok_or_else(|| {
                ApiError::invalid_field(
                    field.clone(),
                    format!("`{name}` is not an identifier a request corrects: `email` or `phone`"),
                )
            })?;
        let normalized = normalize(kind, raw, identities.config().default_country.as_deref())
            .map_err(|e| ApiError::invalid_field(field.clone(), e.to_string()))?;
        let hash = keys.identifier_hash(kind, &normalized);
        if let Some((_, holder)) = store.find_identities(&[hash]).await?.first()
            && *holder != subject
        {
            return Err(ApiError::invalid_field(
                field,
                "another subject holds this identifier; merge or erase first",
            ));
        }
        checked.push((Target::Identifier(kind), Value::String(normalized)));
    }
    let data_key = data_key(store, keys, subject, now).await?;
    let mut sealed = Vec::with_capacity(checked.len());
    let mut digest = blake3::Hasher::new_keyed(&keys.dataset_hash_key());
    digest.update(b"kept rectification v1\0");
    for (target, value) in &checked {
        let plain = value.to_string();
        digest.update(target.column().as_bytes());
        digest.update(b"\0");
        digest.update(plain.as_bytes());
        digest.update(b"\n");
        sealed.push(StoredCorrection {
            target: target.column(),
            sealed: data_key
                .seal(&aad(subject, &target.column()), plain.as_bytes(), nonce())
                .map_err(|e| ApiError::Internal(e.to_string()))?,
        });
    }
    sealed.sort_by(|a, b| a.target.cmp(&b.target));
    let targets: Vec<&str> = sealed.iter().map(|c| c.target.as_str()).collect();
    Ok(Some(Sealed {
        detail: vec![
            ("corrections".to_owned(), targets.join(",")),
            (
                "corrections.digest".to_owned(),
                digest.finalize().to_hex().to_string(),
            ),
        ],
        corrections: sealed,
    }))
}

/// What a sealed correction is bound to: its subject and target.
fn aad(subject: SubjectId, target: &str) -> Vec<u8> {
    format!("kept correction\0{}\0{target}", subject.0).into_bytes()
}

fn nonce() -> [u8; 24] {
    let mut n = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut n);
    n
}

/// The subject's data key, made and stored now if it has none.
async fn data_key(
    store: &dyn Store,
    keys: &IdentityKeys,
    subject: SubjectId,
    now: UnixMillis,
) -> Result<DataKey, ApiError> {
    if let Some((_, wrapped)) = store.subject_keys(&[subject]).await?.first() {
        return keys
            .open_data_key(wrapped)
            .map_err(|e| StoreError::Corrupt(format!("subject data key: {e}")).into());
    }
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    let key = DataKey(key);
    let wrapped = keys
        .seal_data_key(&key, nonce())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let write = IdentityWrite {
        keys: vec![(PlannedSubject::Existing(subject), wrapped)],
        at: now,
        ..IdentityWrite::default()
    };
    match store.write_identities(write).await {
        Ok(_) => Ok(key),
        // Another writer gave it one meanwhile: that one is the key.
        Err(StoreError::Conflict { .. }) => match store.subject_keys(&[subject]).await?.first() {
            Some((_, wrapped)) => keys
                .open_data_key(wrapped)
                .map_err(|e| StoreError::Corrupt(format!("subject data key: {e}")).into()),
            None => Err(ApiError::Internal(format!(
                "subject {subject} has no data key after a conflict writing one"
            ))),
        },
        Err(e) => Err(e.into()),
    }
}

/// What applying a rectification changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Trait keys set (identifier traits included).
    pub traits: Vec<String>,
    /// Identifier kinds attached.
    pub identifiers: Vec<IdentifierKind>,
    /// Identifiers the corrected ones replaced, dropped.
    pub dropped: u64,
}

/// Carries out a rectification request: each correction opened with the subject's data key
/// and written (see the module). Safe to repeat: what already holds the corrected value from
/// this request is left as it is.
pub async fn apply(
    store: &dyn Store,
    identities: &Identities,
    index: &IndexHandle,
    manifest: &Manifest,
    request: &Request,
    now: UnixMillis,
) -> Result<Applied, ApiError> {
    let subject = request.subject;
    let stored = store.corrections(request.id).await?;
    let keys = identities.keys(store).await?;
    let wrapped = store.subject_keys(&[subject]).await?;
    let Some((_, wrapped)) = wrapped.first() else {
        return Err(StoreError::Corrupt(format!(
            "rectification request {} has corrections but subject {subject} has no data key",
            request.id
        ))
        .into());
    };
    let data_key = keys
        .open_data_key(wrapped)
        .map_err(|e| StoreError::Corrupt(format!("subject data key: {e}")))?;
    let source = Provenance::corrected_source(request.id);
    let held = store.traits(subject).await?;
    let mut applied = Applied::default();
    let mut traits = Vec::new();
    for c in &stored {
        let target = Target::parse(&c.target).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "request {} has a correction of an unknown target `{}`",
                request.id, c.target
            ))
        })?;
        let plain = data_key
            .open(&aad(subject, &c.target), &c.sealed)
            .map_err(|e| StoreError::Corrupt(format!("correction `{}`: {e}", c.target)))?;
        let value: Value = serde_json::from_slice(&plain)
            .map_err(|e| StoreError::Corrupt(format!("correction `{}`: {e}", c.target)))?;
        let (key, value) = match target {
            Target::Trait(key) => (key, value),
            Target::Identifier(kind) => {
                let normalized = value.as_str().unwrap_or_default();
                applied.dropped += replace_identifier(
                    store, identities, keys, &data_key, subject, kind, normalized, now,
                )
                .await?;
                applied.identifiers.push(kind);
                let key = IDENTIFIER_TRAITS
                    .iter()
                    .find(|(_, k)| *k == kind)
                    .map_or(kind.as_str(), |(key, _)| key)
                    .to_owned();
                (
                    key,
                    serde_json::json!({ "sealed_identifier": kind.as_str() }),
                )
            }
        };
        let before = held.iter().find(|t| t.key == key);
        if before.is_some_and(|t| t.value == value && t.provenance.source == source) {
            continue;
        }
        // The promise the value was collected under still holds for the corrected value; a
        // value the subject never had is taken as the first collection point mapping it.
        let (point, notice, version, category) = match before {
            Some(t) => (
                t.provenance.collection_point.clone(),
                t.provenance.notice_id.clone(),
                t.provenance.notice_version,
                t.category.clone(),
            ),
            None => {
                let (point, category) = point_for(manifest, &key).unwrap_or(("", ""));
                let notice = manifest
                    .collection_points
                    .get(point)
                    .and_then(|p| manifest.notices.get_key_value(&p.notice));
                (
                    point.to_owned(),
                    notice.map(|(id, _)| id.clone()).unwrap_or_default(),
                    notice.map_or(0, |(_, n)| n.version),
                    if category.is_empty() {
                        kept_core::collection::profile::UNMAPPED_CATEGORY.to_owned()
                    } else {
                        category.to_owned()
                    },
                )
            }
        };
        applied.traits.push(key.clone());
        traits.push(Trait {
            subject,
            key,
            value,
            category,
            provenance: Provenance {
                collection_point: point,
                notice_id: notice,
                notice_version: version,
                collected_at: now,
                source: source.clone(),
            },
        });
    }
    if !traits.is_empty() {
        store.correct_traits(traits.clone()).await?;
        index
            .apply(traits.into_iter().map(Change::Trait).collect())
            .await?;
    }
    if !applied.traits.is_empty() || applied.dropped > 0 {
        tracing::info!(
            request = request.id,
            traits = applied.traits.len(),
            identifiers = applied.identifiers.len(),
            dropped = applied.dropped,
            "rectification carried out"
        );
    }
    Ok(applied)
}

/// Attaches `normalized` as `subject`'s identifier of `kind` (sealed with its data key,
/// under its keyed hash) unless it holds it already, then drops the others of that kind it
/// held; returns how many were dropped.
#[expect(
    clippy::too_many_arguments,
    reason = "the handles the identity write needs, opened once by `apply` for every correction"
)]
async fn replace_identifier(
    store: &dyn Store,
    identities: &Identities,
    keys: &IdentityKeys,
    data_key: &DataKey,
    subject: SubjectId,
    kind: IdentifierKind,
    normalized: &str,
    now: UnixMillis,
) -> Result<u64, ApiError> {
    let hash = keys.identifier_hash(kind, normalized);
    match store.find_identities(&[hash]).await?.first() {
        Some((_, holder)) if *holder == subject => {}
        Some(_) => {
            return Err(kept_core::requests::RequestError::IdentifierTaken {
                kind: kind.as_str(),
            }
            .into());
        }
        None => {
            let sealed = data_key
                .seal(&identifier_aad(kind, &hash), normalized.as_bytes(), nonce())
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            let write = IdentityWrite {
                attach: vec![NewIdentity {
                    subject: PlannedSubject::Existing(subject),
                    key_subject: PlannedSubject::Existing(subject),
                    kind,
                    hash,
                    sealed,
                    verified: false,
                }],
                at: now,
                ..IdentityWrite::default()
            };
            store.write_identities(write).await?;
        }
    }
    let replaced: Vec<_> = store
        .identities_of(subject)
        .await?
        .into_iter()
        .filter(|i| i.kind == kind && i.hash != hash)
        .map(|i| i.hash)
        .collect();
    let dropped = store.drop_identities(subject, kind, &hash).await?;
    let mut cache = identities
        .cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    cache.forget(&replaced);
    cache.invalidate(&[subject], false);
    Ok(dropped)
}
