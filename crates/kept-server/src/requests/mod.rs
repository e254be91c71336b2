//! Data subject requests: filing one with its legal deadline, its steps through a state
//! machine (`kept_core::requests`), each step a record of the hash-chained requests log, the
//! lifecycle hook every step calls (`service::on_transition`), and the work a request owes:
//! its tasks (`work`: the handles and which targets are owed; `tasks`: finished, acknowledged,
//! handled by hand, then the request completed), its propagation to the manifest's systems
//! (`propagate`: obligations, acknowledgement tokens, lifecycle webhooks), the answer to access
//! and portability requests (`export`: links, downloads), and carrying out an erasure
//! (`erase`: the company's databases, then Kept's own data). The requests that gate a
//! subject's data (restriction, objection, opt-out of sale, limit on sensitive data) are
//! carried out by `gates`, rectification by `rectify`, both through `carry`. A request's next
//! step, as the API and the console take it, is `steps`. Handlers in `api`.

pub mod api;
pub mod carry;
pub mod erase;
pub mod export;
pub mod gates;
pub mod propagate;
pub mod rectify;
pub mod service;
pub mod steps;
pub mod tasks;
pub mod work;

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
        .route(
            "/v1/requests/{id}/systems/{system}/ack",
            post(api::acknowledge),
        )
        .route(
            "/v1/requests/{id}/tasks/{target}/handled",
            post(api::handled),
        )
        .route("/v1/requests/{id}/export", get(api::export_links))
        .route("/exports/{token}", get(api::download))
        .route(
            crate::subjects::export::SCHEMA_PATH,
            get(api::export_schema),
        )
        .route("/v1/requests/{id}/apply", post(api::apply))
        .route("/v1/requests/{id}/lift", post(api::lift))
        .route("/v1/requests/{id}/erase", post(api::erase))
}
