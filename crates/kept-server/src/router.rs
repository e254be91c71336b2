//! The axum application: the route table (each feature's routes, merged) and the middleware
//! every request passes (span and metrics, client address, panic catcher, timeout, body limit).
//! `router` is all a test needs to drive the API with `tower::ServiceExt::oneshot`.

use crate::http::error::{ApiError, BodyLimit};
use crate::state::AppState;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use std::time::Duration;
use tower_http::catch_panic::CatchPanicLayer;

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    router_with(Router::new(), state)
}

/// The application with `extra` routes behind the same middleware (for embedding, and for
/// tests that need a handler that panics or hangs).
pub fn router_with(extra: Router<AppState>, state: AppState) -> Router {
    let limits = state.limits;
    crate::system::routes()
        .merge(crate::openapi::routes())
        .merge(crate::consent::routes())
        .merge(crate::admin::routes())
        .merge(crate::requests::routes())
        .merge(crate::decide::routes())
        .merge(crate::connect::api::routes())
        .merge(crate::snippet::routes())
        .merge(crate::collect::routes::routes(&state))
        .merge(crate::prefcenter::routes::routes())
        .merge(crate::console::routes::routes())
        .merge(extra)
        .fallback(crate::http::error::not_found)
        .method_not_allowed_fallback(crate::http::error::method_not_allowed)
        // Innermost first: the body limit, the JSON shape of every error (inside the body
        // limit's announcement, which its 413 quotes), then the timeout, the panic catcher,
        // and outermost the span and metrics, so that they see every answer, errors included.
        .layer(DefaultBodyLimit::max(limits.body_limit))
        .layer(middleware::from_fn(crate::http::error::json_errors))
        .layer(middleware::from_fn_with_state(
            limits.body_limit,
            announce_body_limit,
        ))
        .layer(middleware::from_fn_with_state(
            limits.request_timeout,
            time_limit,
        ))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn_with_state(
            limits.trusted_proxies,
            crate::http::client_ip::find,
        ))
        .layer(middleware::from_fn(crate::observe::track))
        .with_state(state)
}

async fn announce_body_limit(State(limit): State<usize>, mut req: Request, next: Next) -> Response {
    req.extensions_mut().insert(BodyLimit(limit));
    next.run(req).await
}

async fn time_limit(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(limit.as_secs().max(1)).into_response(),
    }
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a handler panicked".to_owned());
    ApiError::Internal(format!("panic: {detail}")).into_response()
}
