//! The audit log: one entry per operator action, appended after the action committed. The
//! privacy team reads it in the console; the database refuses to change or delete an entry.

use kept_core::UnixMillis;
use kept_store::operators::NewAuditEntry;
use kept_store::{Store, StoreError};

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub operator: Option<u64>,
    pub name: String,
}

/// Appends what `actor` did (`action`, a stable code) to `target`, with a short `detail`.
pub async fn record(
    store: &dyn Store,
    actor: &Actor,
    action: &str,
    target: Option<String>,
    detail: Option<String>,
    at: UnixMillis,
) -> Result<u64, StoreError> {
    store
        .append_audit(NewAuditEntry {
            at,
            operator: actor.operator,
            actor: actor.name.clone(),
            action: action.to_owned(),
            target,
            detail,
        })
        .await
}
