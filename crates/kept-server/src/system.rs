//! Operational endpoints, open without a key: health and metrics (the OpenAPI document is
//! served beside its builder, in `openapi`).

use crate::http::error::{ApiError, ErrorBody};
use crate::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use kept_store::StoreError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The operational routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` when the server can reach its database.
    #[schema(example = "ok")]
    pub status: String,
}

/// Liveness and readiness: answers 200 only when the database answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "system",
    responses(
        (status = 200, description = "the server and its database are up", body = Health),
        (status = 503, description = "the database does not answer", body = ErrorBody),
    )
)]
pub async fn health(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    match state.store.ping().await {
        Ok(()) => Ok(Json(Health {
            status: "ok".to_owned(),
        })),
        // Whatever the failure, a health check reports the database as unavailable.
        Err(e) => Err(ApiError::Store(StoreError::Unavailable(e.to_string()))),
    }
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "system",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"))
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    crate::requests::service::publish_gauges(state.store.as_ref(), state.now()).await;
    state.metrics.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
