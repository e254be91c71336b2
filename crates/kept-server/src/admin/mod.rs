//! Administration through the API: API keys and their roles (`keys`), and the identity log of
//! merges with their undo (`merges`). The admin console will join them here.

pub mod keys;
pub mod merges;

use crate::state::AppState;
use axum::Router;
use axum::routing::{delete, get, post};

/// The administration routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/keys", get(keys::list).post(keys::create))
        .route("/v1/keys/{id}", delete(keys::revoke))
        .route("/v1/merges", get(merges::list))
        .route("/v1/merges/{id}/undo", post(merges::undo))
}
