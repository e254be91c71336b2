//! Data subject requests: filing one with its legal deadline, its steps through a state
//! machine (`kept_core::requests`), each step a record of the hash-chained requests log, and
//! the lifecycle hook every step calls (`service::on_transition`). Handlers in `api`, the work
//! in `service`; `export` answers access and portability requests (links, downloads);
//! erasure and propagation to systems plug in at the hook.

pub mod api;
pub mod export;
pub mod service;

use crate::state::AppState;
use axum::Router;
use axum::routing::{get, post};

/// The data subject request routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/requests", get(api::list).post(api::create))
        .route("/v1/requests/{id}", get(api::show))
        .route("/v1/requests/{id}/advance", post(api::advance))
        .route("/v1/requests/{id}/extend", post(api::extend))
        .route("/v1/requests/{id}/reject", post(api::reject))
        .route("/v1/requests/{id}/export", get(api::export_links))
        .route("/exports/{token}", get(api::download))
        .route(
            crate::subjects::export::SCHEMA_PATH,
            get(api::export_schema),
        )
}
