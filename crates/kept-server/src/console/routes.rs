//! The console's routes.

use crate::console::pages;
use crate::state::AppState;
use axum::Router;
use axum::routing::{get, post};

/// The console's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin", get(pages::overview))
        .route(
            "/admin/sign-in",
            get(pages::sign_in_form).post(pages::sign_in),
        )
        .route("/admin/sign-out", post(pages::sign_out))
        .route("/admin/data-map", get(pages::data_map))
        .route("/admin/data-map/record", get(pages::record))
        .route("/admin/data-map/record.csv", get(pages::record_csv))
        .route("/admin/ledger", get(pages::ledger))
        .route("/admin/ledger/verify", post(pages::verify_ledger))
        .route("/admin/ledger/receipt", post(pages::check_receipt))
        .route("/admin/audit", get(pages::audit))
        .route("/admin/operators", get(pages::operators))
}
