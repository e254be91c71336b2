//! A subject's consent as its ledger states it now, and the changes a consent signal (the
//! purposes a message says yes or no to, a GPC signal) would make to it. Collection writes
//! those changes; identity resolution compares them before a public key may make them.

use crate::http::error::ApiError;
use crate::index::IndexHandle;
use kept_core::SubjectId;
use kept_core::collection::{CurrentConsent, consent_changes, level_of};
use kept_core::ledger::{self, ConsentRecord};
use kept_core::manifest::Manifest;
use kept_core::signals::gpc;
use kept_store::Store;

/// The ledger records `purposes` (and a GPC signal) would add to `current`, for a subject at
/// `country`/`region`: the same changes `ingest` then writes. Those that are not GPC opt-outs
/// are what a public key may not make for a known customer without an identity token.
pub fn consent_changes_for(
    index: &IndexHandle,
    manifest: &Manifest,
    current: &CurrentConsent,
    country: Option<&str>,
    region: Option<&str>,
    purposes: &std::collections::BTreeMap<String, bool>,
    gpc: bool,
) -> Result<Vec<kept_core::collection::ConsentChange>, ApiError> {
    let compiled = index.compiled().map_err(ApiError::from)?;
    let place = compiled.place_of(country, region);
    Ok(consent_changes(
        purposes,
        gpc,
        current,
        |purpose| level_of(compiled, place, purpose),
        &gpc::purpose(manifest),
    ))
}

/// The subject's consent as its ledger records state it now.
pub async fn ledger_state(
    store: &dyn Store,
    subject: SubjectId,
) -> Result<CurrentConsent, ApiError> {
    let records = decoded(store, subject).await?;
    Ok(CurrentConsent::from_records(&records))
}

/// The subject's ledger records, decoded, in order.
pub async fn decoded(
    store: &dyn Store,
    subject: SubjectId,
) -> Result<Vec<ConsentRecord>, ApiError> {
    store
        .ledger_for_subject(subject)
        .await?
        .iter()
        .map(|e| {
            ledger::decode(&e.bytes).map_err(|err| {
                ApiError::Store(kept_store::StoreError::Corrupt(format!(
                    "record {} does not decode: {err}",
                    e.seq
                )))
            })
        })
        .collect()
}
