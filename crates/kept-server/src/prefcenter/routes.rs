//! The preference center's routes: its pages under `/preferences` and its JSON API.

use super::{api, page};
use crate::state::AppState;
use axum::Router;
use axum::routing::{get, post};

/// The preference center's routes: the pages, and the JSON API.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/preferences", get(page::show))
        .route("/preferences/", get(page::show))
        .route(
            "/preferences/sign-in",
            get(page::sign_in_form).post(page::sign_in),
        )
        .route("/preferences/open", get(page::open_link))
        .route("/preferences/sign-out", post(page::sign_out))
        .route("/preferences/purposes", post(page::save_purposes))
        .route("/preferences/messages", post(page::save_messages))
        .route("/preferences/do-not-sell", post(page::save_do_not_sell))
        .route("/preferences/unsubscribe-all", post(page::unsubscribe_all))
        .route("/preferences/erase", post(page::erase))
        .route("/preferences/data.json", get(page::download_json))
        .route("/preferences/data.zip", get(page::download_csv))
        .route("/preferences/data.html", get(page::download_html))
        .route("/preferences/receipts/{seq}", get(page::receipt))
        .route(
            "/preferences/confirm",
            get(page::confirm_form).post(page::confirm),
        )
        .route(
            "/preferences/unsubscribe",
            get(page::unsubscribe_form).post(page::unsubscribe),
        )
        .route(
            "/v1/subjects/{id}/preference-link",
            post(api::preference_link),
        )
        .route(
            "/v1/subjects/{id}/preferences",
            get(api::get_preferences).put(api::put_preferences),
        )
}
