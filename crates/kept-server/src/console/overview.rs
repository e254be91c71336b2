//! The overview's figures: customers, the ledger and its last checkpoint, data subject
//! requests due soon and overdue, webhook deliveries by state and the quarantine. Each is one
//! count the store keeps an index for.

use crate::requests::service::DUE_SOON;
use kept_core::UnixMillis;
use kept_store::{Store, StoreError};

/// What the overview shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overview {
    pub subjects: u64,
    pub ledger_records: u64,
    /// The last checkpoint's record and when it was signed, as shown.
    pub last_checkpoint: Option<(u64, String)>,
    pub requests_due_soon: u64,
    pub requests_overdue: u64,
    pub pending: u64,
    pub delivered: u64,
    pub dead: u64,
    pub quarantined: u64,
}

/// Reads the overview's figures at `now`.
pub async fn read(store: &dyn Store, now: UnixMillis) -> Result<Overview, StoreError> {
    let requests = store.open_request_counts(now, DUE_SOON).await?;
    let outbox = store.outbox_counts().await?;
    Ok(Overview {
        subjects: store.subject_count().await?,
        ledger_records: store.ledger_len().await?,
        last_checkpoint: store
            .last_checkpoint()
            .await?
            .map(|cp| (cp.seq, crate::web::frame::datetime(cp.at))),
        requests_due_soon: requests.due_soon,
        requests_overdue: requests.overdue,
        pending: outbox.pending,
        delivered: outbox.delivered,
        dead: outbox.dead,
        quarantined: store.quarantine_len().await?,
    })
}
