//! The route table, one module per area. Each handler states the role it needs by extracting
//! `Authorized<role::…>`; the OpenAPI document (`crate::openapi`) lists the same handlers.

pub mod audiences;
pub mod consents;
pub mod contacts;
pub mod decision_log;
pub mod decisions;
pub mod keys;
pub mod merges;
pub mod profile;
pub mod system;
pub mod uses;

use crate::app::AppState;
use axum::Router;
use axum::extract::DefaultBodyLimit;
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
        .route("/v1/merges", get(merges::list))
        .route("/v1/merges/{id}/undo", post(merges::undo))
        .route(
            "/v1/decisions",
            post(decisions::decide).layer(DefaultBodyLimit::max(decisions::BODY_LIMIT)),
        )
        .route("/v1/contacts", post(contacts::record))
        .route("/v1/audiences/evaluate", post(audiences::evaluate_audience))
        .route("/v1/audiences/export", post(audiences::export))
        .route("/v1/subjects/{id}/profile", get(profile::profile))
        .route("/v1/decision-log", get(decision_log::read))
        .route("/v1/uses", get(uses::read))
}
