//! The consent ledger: the service every consent change goes through (appends, the checkpoint
//! signer, verification), its witness file and URL, and the consents API.

pub mod api;
pub mod evidence;
pub mod ledger;
pub mod witness;

use crate::state::AppState;
use axum::Router;
use axum::routing::{get, post};

/// The consents API's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/consents", post(api::append))
        .route("/v1/subjects/{id}/consents", get(api::of_subject))
        .route("/v1/ledger", get(api::ledger_status))
}
