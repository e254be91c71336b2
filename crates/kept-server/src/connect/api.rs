//! The dead letters (role `admin`): deliveries that failed their last attempt, listed so that an
//! operator can see what a destination missed, and retried by hand once it is back.

use crate::http::auth::{Authorized, role};
use crate::http::error::{ApiError, ErrorBody, MAX_ROW_ID, PathParams, page_limit};
use crate::state::AppState;
use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::{get, post};
use kept_store::outbox::Delivery;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Dead letters answered per page at most.
const MAX_PAGE: u32 = 500;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/webhooks/dead-letters", get(dead_letters))
        .route(
            "/v1/webhooks/dead-letters/{id}/retry",
            post(retry_dead_letter),
        )
}

/// A delivery that failed its last attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeadLetter {
    pub id: u64,
    /// The `webhook-id` the destination sees, the same on every attempt.
    #[schema(example = "msg_0f3a9c2e7b1d4a6f8e2c5b9a1d3f7e0c")]
    pub message_id: String,
    /// The collected event's `messageId`.
    pub event_id: String,
    /// The manifest's system key.
    pub system: String,
    /// Delivery state: `dead` here, `pending` after a retry.
    #[schema(example = "dead")]
    pub state: String,
    pub attempts: u32,
    pub created_at: i64,
    /// When the last attempt was made.
    pub updated_at: i64,
    /// The HTTP status of the last attempt, when the destination answered.
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    /// The body that is sent (the Standard Webhooks envelope around the event).
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

impl From<Delivery> for DeadLetter {
    fn from(d: Delivery) -> DeadLetter {
        DeadLetter {
            payload: serde_json::from_str(&d.payload).unwrap_or(serde_json::Value::Null),
            id: d.id,
            message_id: d.message_id,
            event_id: d.event_id,
            system: d.system,
            state: d.state.as_str().to_owned(),
            attempts: d.attempts,
            created_at: d.created_at,
            updated_at: d.updated_at,
            last_status: d.last_status,
            last_error: d.last_error,
        }
    }
}

/// One page of dead letters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeadLetters {
    pub dead_letters: Vec<DeadLetter>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<u64>,
}

#[derive(Debug, Clone, Copy, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Only dead letters with a larger id.
    pub after: Option<u64>,
    /// At most this many (default and maximum 500).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct DeadLetterPath {
    id: u64,
}

#[utoipa::path(
    get,
    path = "/v1/webhooks/dead-letters",
    tag = "webhooks",
    params(Page),
    security(("api_key" = [])),
    responses(
        (status = 200, body = DeadLetters),
        (status = 401, body = ErrorBody),
        (status = 403, description = "the key's role is not `admin`", body = ErrorBody),
        (status = 422, description = "`after` or `limit` is not a number", body = ErrorBody),
    )
)]
pub async fn dead_letters(
    _caller: Authorized<role::Admin>,
    State(state): State<AppState>,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Json<DeadLetters>, ApiError> {
    let Query(page) = page?;
    if page.after.is_some_and(|a| a > MAX_ROW_ID) {
        return Err(ApiError::invalid_field(
            "after",
            format!("`after` must be at most {MAX_ROW_ID}"),
        ));
    }
    let limit = page_limit(page.limit, MAX_PAGE, MAX_PAGE)?;
    let rows = state.store.dead_deliveries(page.after, limit).await?;
    let full = rows.len() >= usize::try_from(limit).unwrap_or(usize::MAX);
    let next_after = if full {
        rows.last().map(|d| d.id)
    } else {
        None
    };
    Ok(Json(DeadLetters {
        dead_letters: rows.into_iter().map(DeadLetter::from).collect(),
        next_after,
    }))
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/dead-letters/{id}/retry",
    tag = "webhooks",
    params(("id" = u64, Path, description = "the dead letter's id")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "queued again, due now, attempts reset", body = DeadLetter),
        (status = 401, body = ErrorBody),
        (status = 403, description = "the key's role is not `admin`", body = ErrorBody),
        (status = 404, description = "no dead letter has this id", body = ErrorBody),
        (status = 422, description = "`id` is not a number", body = ErrorBody),
    )
)]
pub async fn retry_dead_letter(
    _caller: Authorized<role::Admin>,
    State(state): State<AppState>,
    PathParams(DeadLetterPath { id }): PathParams<DeadLetterPath>,
) -> Result<Json<DeadLetter>, ApiError> {
    let delivery = retry(state.store.as_ref(), &state.forward, id, state.now()).await?;
    Ok(Json(DeadLetter::from(delivery)))
}

/// Queues dead letter `id` again and wakes the worker (the API's retry and the console's).
pub async fn retry(
    store: &dyn kept_store::Store,
    forward: &crate::connect::Forwarder,
    id: u64,
    now: kept_core::UnixMillis,
) -> Result<kept_store::outbox::Delivery, ApiError> {
    // An id no row can have names no dead letter.
    if id > MAX_ROW_ID {
        return Err(kept_store::StoreError::NotFound {
            what: "dead letter",
            key: id.to_string(),
        }
        .into());
    }
    let delivery = store.retry_dead_delivery(id, now).await?;
    tracing::info!(delivery = id, system = %delivery.system, "dead letter queued again");
    forward.wake();
    Ok(delivery)
}
