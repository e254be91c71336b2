//! Data subject requests: filing one with its legal deadline, its steps through a state
//! machine (`kept_core::requests`), each step a record of the hash-chained requests log, and
//! the lifecycle hook every step calls (`service::on_transition`). Handlers in `api`, the work
//! in `service`, and carrying out an erasure in `erase`; exports and propagation to systems
//! plug in at the hook.

pub mod api;
pub mod erase;
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
        .route("/v1/requests/{id}/erase", post(api::erase))
}
