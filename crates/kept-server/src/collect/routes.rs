//! The collection endpoints: Segment's paths and the one-letter ones browser libraries use,
//! behind CORS for the configured origins; the read API; `/.well-known/gpc.json`.

use super::quarantine::{self, RejectedMessage};
use super::{MAX_BATCH_BYTES, MAX_EVENT_BYTES, RETRY_AFTER_SECS, body, ingest, read};
use crate::http::auth::presented_key;
use crate::http::client_ip::ClientIp;
use crate::http::error::{ApiError, ErrorBody};
use crate::state::AppState;
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::routing::{get, post, put};
use kept_core::collection::MessageKind;
use kept_store::Role;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::ToSchema;

/// The date this server's GPC support last changed, for `/.well-known/gpc.json`.
pub const GPC_LAST_UPDATE: &str = "2026-11-29";

pub fn routes(state: &AppState) -> Router<AppState> {
    let collect = Router::new()
        .route("/v1/identify", post(identify).options(preflight))
        .route("/v1/i", post(identify).options(preflight))
        .route("/v1/track", post(track).options(preflight))
        .route("/v1/t", post(track).options(preflight))
        .route("/v1/page", post(page).options(preflight))
        .route("/v1/p", post(page).options(preflight))
        .route("/v1/screen", post(screen).options(preflight))
        .route("/v1/s", post(screen).options(preflight))
        .route("/v1/group", post(group).options(preflight))
        .route("/v1/g", post(group).options(preflight))
        .route("/v1/alias", post(alias).options(preflight))
        .route("/v1/a", post(alias).options(preflight))
        .route("/v1/batch", post(batch).options(preflight))
        .route("/v1/b", post(batch).options(preflight))
        .layer(cors(&state.collect.config().cors_origins));
    Router::new()
        .merge(collect)
        .route("/v1/subjects/lookup", get(read::lookup))
        .route("/v1/quarantine", get(read::list_quarantine))
        .route("/v1/subjects/{id}/events", get(read::events))
        .route(
            "/v1/keys/{id}/collection-point",
            put(read::set_collection_point),
        )
        .route("/.well-known/gpc.json", get(gpc))
}

/// Answered by the CORS layer before it gets here; an explicit `OPTIONS` route keeps the
/// router's 405 fallback from answering first.
async fn preflight() -> axum::http::StatusCode {
    axum::http::StatusCode::NO_CONTENT
}

/// Browsers on `origins` may call the collection endpoints; `*` allows any origin.
fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::CONTENT_ENCODING,
            HeaderName::from_static(kept_core::signals::gpc::HEADER),
        ])
        .max_age(Duration::from_secs(24 * 60 * 60))
}

/// Segment's answer to an accepted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    pub success: bool,
}

/// The answer to a batch: Segment's `success`, and what became of each message. SDKs read
/// only the status of a 200, so the rejected messages are also in the quarantine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BatchAccepted {
    /// Always `true`: some message was committed (or the batch was empty).
    pub success: bool,
    /// How many messages were committed (or found already stored).
    pub accepted: usize,
    /// The messages rejected, in batch order, each with the error its own call would get;
    /// nothing of them was written, and the others were written as if they had not been sent.
    pub rejected: Vec<RejectedMessage>,
}

/// One Segment message. Which fields a call needs: `userId` or `anonymousId` (every call but
/// `alias`); `event` (`track`); `groupId` (`group`); `userId` and `previousId` (`alias`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SegmentMessage {
    /// In a batch: `identify`, `track`, `page`, `screen`, `group` or `alias`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    #[schema(value_type = Option<SegmentId>)]
    pub user_id: Option<String>,
    #[schema(value_type = Option<SegmentId>)]
    pub anonymous_id: Option<String>,
    /// The client's id for this message; a retry with the same id is stored once.
    #[schema(max_length = 200)]
    pub message_id: Option<String>,
    /// ISO 8601.
    #[schema(format = DateTime)]
    pub timestamp: Option<String>,
    /// ISO 8601: when the client sent it (corrects the client's clock).
    #[schema(format = DateTime)]
    pub sent_at: Option<String>,
    /// `track`: the event name.
    #[schema(max_length = 1000)]
    pub event: Option<String>,
    /// `page`/`screen`: the page name.
    #[schema(max_length = 1000)]
    pub name: Option<String>,
    #[schema(value_type = Option<SegmentId>)]
    pub group_id: Option<String>,
    #[schema(value_type = Option<SegmentId>)]
    pub previous_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub properties: Option<serde_json::Value>,
    /// `identify`: profile traits; `email` and `phone` are identifiers.
    #[schema(value_type = Option<Object>)]
    pub traits: Option<serde_json::Value>,
    /// `consent.categoryPreferences`, `consent.tcString`, `consent.gppString`, `location`,
    /// `timezone`, `ip`, `userAgent`, `kept.collection_point`, `kept.notice`, and
    /// `kept.userHash`: the identity token with which a public key speaks for the `userId`
    /// (hex HMAC-SHA256 of the `userId` under the identity secret, minted by the shop's backend).
    #[schema(value_type = Option<Object>)]
    pub context: Option<serde_json::Value>,
    /// The write key, when not sent as HTTP Basic user.
    pub write_key: Option<String>,
}

/// An id in a message: a string of at most 256 characters, or a number (some clients send
/// numeric user ids); an empty string counts as none.
#[derive(Debug, Clone, Copy)]
pub struct SegmentId;

impl utoipa::PartialSchema for SegmentId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .max_length(Some(kept_core::identity::MAX_IDENTIFIER_LEN)),
            )
            .item(ObjectBuilder::new().schema_type(Type::Number))
            .into()
    }
}

impl ToSchema for SegmentId {}

/// A batch of messages (`/v1/batch`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SegmentBatch {
    /// At most 2,500 messages, 500 KB in all, 32 KB each.
    pub batch: Vec<SegmentMessage>,
    /// Shared by every message that has none of its own keys.
    #[schema(value_type = Option<Object>)]
    pub context: Option<serde_json::Value>,
    #[schema(format = DateTime)]
    pub sent_at: Option<String>,
    pub write_key: Option<String>,
}

/// Authenticates (header key first, else the body's `writeKey`), reads and checks the body,
/// admits it, and takes what can be read of it to committed. The messages rejected one by one
/// go to the quarantine; when none is left the request is answered with the first one's error.
async fn receive(
    state: AppState,
    ip: ClientIp,
    headers: HeaderMap,
    body: Body,
    kind: Option<MessageKind>,
) -> Result<BatchAccepted, ApiError> {
    let received_at = state.now();
    let header_key = match presented_key(&headers) {
        Ok(key) => Some(state.auth.authorize(&key, Role::Public).await?),
        Err(ApiError::MissingKey) => None,
        Err(e) => return Err(e),
    };
    let (limit, what) = match kind {
        Some(_) => (MAX_EVENT_BYTES, "event_bytes"),
        None => (MAX_BATCH_BYTES, "batch_bytes"),
    };
    let bytes = body::read(&headers, body, limit, what).await?;
    let key = match header_key {
        Some(key) => key,
        None => {
            let presented = body_write_key(&bytes).ok_or(ApiError::MissingKey)?;
            state.auth.authorize(&presented, Role::Public).await?
        }
    };
    let incoming = match kind {
        Some(kind) => body::single(&bytes, kind)?,
        None => body::batch(&bytes)?,
    };
    let _admitted = state
        .collect
        .admit(incoming.messages.len())
        .ok_or(ApiError::Overloaded {
            retry_after: RETRY_AFTER_SECS,
        })?;
    let facts = ingest::RequestFacts::new(&headers, ip);
    let batch = kind.is_none();
    let accepted = incoming.messages.len();
    let mut rejected = incoming.rejected;
    let with = ingest::Ingest {
        store: state.store.as_ref(),
        ledger: &state.ledger,
        manifest: &state.manifest,
        index: &state.index,
        identities: &state.identity,
        collector: &state.collect,
        forwarder: &state.forward,
        clock: &state.clock,
    };
    let later = ingest::ingest(with, &key, incoming.messages, &facts, batch, received_at).await?;
    let accepted = accepted - later.len();
    rejected.extend(later);
    rejected.sort_by_key(|r| r.index);
    for r in &mut rejected {
        r.raw = incoming.shared.held(&r.raw);
    }
    quarantine::hold(
        with.store,
        with.collector,
        with.identities,
        &key,
        received_at,
        batch,
        &rejected,
    )
    .await?;
    if accepted == 0 && !rejected.is_empty() {
        return Err(rejected.swap_remove(0).error);
    }
    Ok(BatchAccepted {
        success: true,
        accepted,
        rejected: rejected.iter().map(|r| r.view(batch)).collect(),
    })
}

/// The `writeKey` of a body (at the top, or in a batch's first message).
fn body_write_key(bytes: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let key = value.get("writeKey").or_else(|| {
        value
            .get("batch")
            .and_then(|b| b.get(0))
            .and_then(|m| m.get("writeKey"))
    })?;
    key.as_str()
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
}

macro_rules! call {
    ($name:ident, $kind:expr, $path:literal, $short:literal, $summary:literal) => {
        #[doc = $summary]
        #[utoipa::path(
            post,
            path = $path,
            tag = "collection",
            description = concat!(
                "Also at `", $short, "`. Segment-compatible; the write key as HTTP Basic user \
                 with an empty password, or `writeKey` in the body. A `server` key (secret) has \
                 full Segment semantics. A `public` key (safe in a browser) creates and extends \
                 anonymous profiles and records that browser's banner choices; to speak for a \
                 known customer (one with a user id or a verified email or phone: attach an \
                 identifier, merge a profile into them, change their traits or consent) its \
                 message carries an identity token in `context.kept.userHash`: the hex \
                 HMAC-SHA256 of the `userId` under the identity secret, computed by the shop's \
                 backend. A public key never merges two known customers. JSON or `text/plain` \
                 bodies, optionally gzip-encoded. Answered only after the event is committed; a \
                 retried `messageId` is stored once."
            ),
            request_body = SegmentMessage,
            security(("write_key" = []), ("api_key" = [])),
            responses(
                (status = 200, description = "committed", body = Accepted),
                (status = 400, description = "malformed JSON or a missing or malformed field, named in `error.field`", body = ErrorBody),
                (status = 401, description = "no write key, or an invalid one", body = ErrorBody),
                (status = 403, description = "the key's role is not `public`, `server` or `admin` (`auth.forbidden`); or a public key spoke for a known customer without an identity token (`collect.identity_token_required`), with a wrong one (`collect.identity_token_invalid`), or merged a known customer (`collect.merge_refused`); `error.field` names the field", body = ErrorBody),
                (status = 413, description = "larger than 32 KB; `error.limit` names the limit", body = ErrorBody),
                (status = 415, description = "an unsupported `Content-Encoding` (the body is read as JSON whatever its `Content-Type`)", body = ErrorBody),
                (status = 429, description = "too many events in flight; retry after `Retry-After` seconds", body = ErrorBody),
            )
        )]
        pub async fn $name(
            State(state): State<AppState>,
            ip: ClientIp,
            headers: HeaderMap,
            body: Body,
        ) -> Result<Json<Accepted>, ApiError> {
            receive(state, ip, headers, body, Some($kind)).await?;
            Ok(Json(Accepted { success: true }))
        }
    };
}

call!(
    identify,
    MessageKind::Identify,
    "/v1/identify",
    "/v1/i",
    "Who the person is: their id and traits."
);
call!(
    track,
    MessageKind::Track,
    "/v1/track",
    "/v1/t",
    "Something the person did."
);
call!(
    page,
    MessageKind::Page,
    "/v1/page",
    "/v1/p",
    "A web page the person viewed."
);
call!(
    screen,
    MessageKind::Screen,
    "/v1/screen",
    "/v1/s",
    "An app screen the person viewed."
);
call!(
    group,
    MessageKind::Group,
    "/v1/group",
    "/v1/g",
    "The account or company the person belongs to."
);
call!(
    alias,
    MessageKind::Alias,
    "/v1/alias",
    "/v1/a",
    "Merges a previous id into a user id, explicitly."
);

/// Several messages at once.
#[utoipa::path(
    post,
    path = "/v1/batch",
    tag = "collection",
    description = "Also at `/v1/b`. At most 2,500 messages and 500 KB (after decompression), \
        32 KB per message. Each message is checked on its own and the batch behaves like its \
        messages sent one by one, in order: a message its own call would refuse (a bad field, \
        over 32 KB, a public key speaking for a known customer without an identity token) is \
        rejected alone and listed in `rejected` with its index, path and error code, and the \
        others are committed as if it had not been sent. Rejected messages are kept in the \
        quarantine for seven days (`GET /v1/quarantine`). Only when no message is usable is \
        the request refused, with the first rejected message's error. Answered only after \
        every accepted message is committed.",
    request_body = SegmentBatch,
    security(("write_key" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "every message committed, or rejected and listed in `rejected`", body = BatchAccepted),
        (status = 400, description = "malformed JSON, `batch` not an array, a bad shared `context` or `sentAt`; or no usable message, the first bad one named by `error.field` and `error.index`", body = ErrorBody),
        (status = 401, description = "no write key, or an invalid one", body = ErrorBody),
        (status = 403, description = "the key's role is not `public`, `server` or `admin` (`auth.forbidden`); or no usable message, the first one refused because a public key spoke for a known customer without a valid identity token, or merged one (`collect.identity_token_required`, `collect.identity_token_invalid`, `collect.merge_refused`; `error.field` and `error.index` name it)", body = ErrorBody),
        (status = 413, description = "a limit exceeded, named by `error.limit` (`batch_bytes`, `batch_events`; `event_bytes` when no message is usable)", body = ErrorBody),
        (status = 415, description = "an unsupported `Content-Encoding` (the body is read as JSON whatever its `Content-Type`)", body = ErrorBody),
        (status = 429, description = "too many events in flight; retry after `Retry-After` seconds", body = ErrorBody),
    )
)]
pub async fn batch(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<BatchAccepted>, ApiError> {
    receive(state, ip, headers, body, None).await.map(Json)
}

/// The site's Global Privacy Control support (`/.well-known/gpc.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpcSupport {
    pub gpc: bool,
    /// ISO 8601 date.
    pub last_update: String,
}

/// Declares that this site honours Global Privacy Control.
#[utoipa::path(
    get,
    path = "/.well-known/gpc.json",
    tag = "collection",
    responses((status = 200, body = GpcSupport))
)]
pub async fn gpc() -> Json<GpcSupport> {
    Json(GpcSupport {
        gpc: true,
        last_update: GPC_LAST_UPDATE.to_owned(),
    })
}
