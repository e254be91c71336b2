//! What the requests service works with (`Work`: the store, the ledger, the manifest, the
//! identity keys, the forwarder to wake and the base of callback URLs) and the work a request
//! owes: which targets get a task (`owed`), from its kind, its scope and the manifest.

use crate::connect::forwarder::Forwarder;
use crate::consent::ledger::Ledger;
use crate::identity::Identities;
use kept_core::manifest::Manifest;
use kept_core::requests::{Request, Target, owed_targets};
use kept_store::Store;
use std::sync::Arc;

/// The handles the requests service takes: built by `AppState::work` for handlers and the
/// server's workers, and by the CLI offline. Cheap to clone.
#[derive(Clone)]
pub struct Work {
    pub store: Arc<dyn Store>,
    /// Its key signs the requests log's checkpoints.
    pub ledger: Arc<Ledger>,
    /// The datasets and systems a request's work is owed to.
    pub manifest: Arc<Manifest>,
    /// Opens the subject's identifiers an obligation names them by.
    pub identities: Arc<Identities>,
    /// Woken when deliveries are queued; absent offline (the CLI), where the server's worker
    /// finds them on its next round.
    pub forwarder: Option<Arc<Forwarder>>,
    /// The address systems reach this server at (no trailing slash), for the acknowledgement
    /// callback an obligation carries.
    pub base_url: String,
}

impl std::fmt::Debug for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Work")
            .field("store", &self.store)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// The targets `request` owes a task to: Kept's own data, the manifest's datasets and the
/// systems it gives a signed webhook, as `kept_core::requests::owed_targets` says for the
/// request's kind and scope.
pub fn owed(manifest: &Manifest, request: &Request) -> Vec<Target> {
    owed_targets(
        request.kind,
        &request.scope,
        manifest.datasets.iter().map(|d| d.id.as_str()),
        manifest.webhook_systems().map(|(key, _)| key),
    )
}
