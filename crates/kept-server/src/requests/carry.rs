//! THE entry point for carrying out a data subject request once it enters `in_progress`
//! (`POST /v1/requests/{id}/advance` calls it then, `POST /v1/requests/{id}/apply` again on
//! demand): a rectification's corrections are written (`rectify`), a restriction's,
//! objection's, opt-out's or limit's gate is put in force (`gates`). Every kind is safe to
//! carry out again. Access, portability and erasure are carried out by their own services.

use crate::http::error::ApiError;
use crate::identity::Identities;
use crate::index::IndexHandle;
use crate::requests::{gates, rectify};
use kept_core::UnixMillis;
use kept_core::manifest::Manifest;
use kept_core::requests::{Request, RequestError, RequestKind};
use kept_store::Store;

/// The handles carrying a request out uses.
#[derive(Clone, Copy)]
#[expect(
    missing_debug_implementations,
    reason = "a borrow of the handles for one call; the store and identities print themselves"
)]
pub struct CarryOut<'a> {
    pub store: &'a dyn Store,
    pub identities: &'a Identities,
    pub index: &'a IndexHandle,
    pub manifest: &'a Manifest,
}

/// What carrying a request out did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Gate(gates::CarriedOut),
    Rectified(rectify::Applied),
    /// Nothing this service does for the request's kind.
    Elsewhere,
}

impl Outcome {
    /// What it did, in one line for the request's task of Kept's own data; `None` when this
    /// service does nothing for the kind (another worker settles that task).
    pub fn detail(&self) -> Option<String> {
        match self {
            Outcome::Gate(g) => Some(match (&g.gate, g.written) {
                (Some(_), true) => "gate in force".to_owned(),
                (Some(_), false) => "gate in force (written before)".to_owned(),
                (None, _) => "no gate for this kind".to_owned(),
            }),
            Outcome::Rectified(a) => Some(format!(
                "corrected: {} traits, {} identifiers ({} replaced ones dropped)",
                a.traits.len(),
                a.identifiers.len(),
                a.dropped
            )),
            Outcome::Elsewhere => None,
        }
    }
}

impl CarryOut<'_> {
    /// Carries out `request` at `now`; refused (`request.not_started`) before it is in
    /// progress.
    pub async fn request(&self, request: &Request, now: UnixMillis) -> Result<Outcome, ApiError> {
        if !gates::started(request) {
            return Err(RequestError::NotStarted {
                state: request.state,
            }
            .into());
        }
        match request.kind {
            RequestKind::Rectification => rectify::apply(
                self.store,
                self.identities,
                self.index,
                self.manifest,
                request,
                now,
            )
            .await
            .map(Outcome::Rectified),
            RequestKind::Restriction
            | RequestKind::Objection
            | RequestKind::OptOut
            | RequestKind::LimitSensitive => gates::carry_out(self.store, self.index, request, now)
                .await
                .map(Outcome::Gate),
            RequestKind::Access | RequestKind::Portability | RequestKind::Erasure => {
                Ok(Outcome::Elsewhere)
            }
        }
    }
}
