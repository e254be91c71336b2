//! Decisions and what reads them: the decision API, audiences (who they start from, their dry
//! run and their exports), recorded contacts, purpose-limited profiles, the decision log (its
//! writer and its API) and the record of uses (the decision each use went ahead under, and its
//! API).

pub mod answer;
pub mod audiences;
pub mod candidates;
pub mod contacts;
pub mod decisions;
pub mod log;
pub mod log_api;
pub mod profile;
pub mod uses;
pub mod uses_api;

use crate::state::AppState;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

/// The decision feature's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/decisions",
            post(decisions::decide).layer(DefaultBodyLimit::max(decisions::BODY_LIMIT)),
        )
        .route("/v1/contacts", post(contacts::record))
        .route("/v1/audiences/evaluate", post(audiences::evaluate_audience))
        .route("/v1/audiences/export", post(audiences::export))
        .route("/v1/subjects/{id}/profile", get(profile::profile))
        .route("/v1/decision-log", get(log_api::read))
        .route("/v1/uses", get(uses_api::read))
}
