//! The route table, one module per area. Each handler states the role it needs by extracting
//! `Authorized<role::…>`; the OpenAPI document (`crate::openapi`) lists the same handlers.

pub mod consents;
pub mod keys;
pub mod system;

use crate::app::AppState;
use axum::Router;
use axum::routing::{delete, get, post};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(system::health))
        .route("/metrics", get(system::metrics))
        .route("/openapi.json", get(system::openapi))
        .route("/v1/consents", post(consents::append))
        .route("/v1/subjects/{id}/consents", get(consents::of_subject))
        .route("/v1/ledger", get(consents::ledger_status))
        .route("/v1/keys", get(keys::list).post(keys::create))
        .route("/v1/keys/{id}", delete(keys::revoke))
}
