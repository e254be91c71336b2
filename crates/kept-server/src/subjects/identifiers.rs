//! A subject's identifiers as Kept holds them: each one's kind, its value opened with the data
//! key it is sealed under (none once that key is shredded), and since when it is held. The
//! preference page, its changes, the export and the lookup by identifier read them here.

use crate::http::error::ApiError;
use crate::identity::Identities;
use kept_core::identity::{IdentifierKind, identifier_aad};
use kept_core::{SubjectId, UnixMillis};
use kept_store::Store;
use std::collections::HashMap;

/// A subject's identifiers: kind, value in clear (`None` when its key is gone) and since when.
pub async fn opened(
    store: &dyn Store,
    identities: &Identities,
    subject: SubjectId,
) -> Result<Vec<(IdentifierKind, Option<String>, UnixMillis)>, ApiError> {
    let held = store.identities_of(subject).await?;
    if held.is_empty() {
        return Ok(Vec::new());
    }
    let keys = identities.keys(store).await?;
    let mut key_subjects: Vec<SubjectId> = held.iter().map(|i| i.key_subject).collect();
    key_subjects.sort();
    key_subjects.dedup();
    let mut data_keys = HashMap::new();
    for (id, wrapped) in store.subject_keys(&key_subjects).await? {
        if let Ok(key) = keys.open_data_key(&wrapped) {
            data_keys.insert(id, key);
        }
    }
    Ok(held
        .iter()
        .map(|i| {
            let value = data_keys
                .get(&i.key_subject)
                .and_then(|k| k.open(&identifier_aad(i.kind, &i.hash), &i.sealed).ok())
                .and_then(|v| String::from_utf8(v).ok());
            (i.kind, value, i.created_at)
        })
        .collect())
}
