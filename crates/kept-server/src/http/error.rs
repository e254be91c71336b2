//! The one error type every endpoint answers with, its stable codes, the single place that maps
//! an error to an HTTP status, and extractors whose rejections come out in the same JSON shape
//! (`{ "code", "message", "error": { "code", "message", … } }`) instead of axum's plain-text
//! ones.

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use kept_store::{Role, StoreError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

/// Everything an endpoint can answer other than success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("this endpoint needs an API key: send `Authorization: Bearer <key>`")]
    MissingKey,
    #[error("the API key is not valid or has been revoked")]
    InvalidKey,
    #[error("an API key with role `{have}` may not call this endpoint; it needs role `{need}`")]
    Forbidden {
        have: &'static str,
        need: &'static str,
    },
    /// A public write key's message that only a server key, or a public key with an identity
    /// token, may send (403); `code` says which (`collect.identity_token_required`,
    /// `collect.identity_token_invalid`, `collect.merge_refused`).
    #[error("{message}")]
    WriteKeyRefused {
        code: &'static str,
        field: String,
        index: Option<usize>,
        message: String,
    },
    #[error("the request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the request body must be JSON: send `Content-Type: application/json`")]
    UnsupportedMediaType,
    #[error("{message}")]
    InvalidField { field: String, message: String },
    /// A collected event that is malformed or misses a required field (400, as Segment
    /// answers); `index` is its position in a batch.
    #[error("{message}")]
    InvalidEvent {
        field: String,
        index: Option<usize>,
        message: String,
    },
    /// A collection limit (`batch_bytes`, `batch_events`, `event_bytes`) exceeded.
    #[error("{message}")]
    LimitExceeded {
        limit: &'static str,
        message: String,
    },
    /// Too much in flight; the client retries after `retry_after` seconds.
    #[error("the server is busy; retry in {retry_after} seconds")]
    Overloaded { retry_after: u64 },
    #[error("content encoding `{0}` is not supported; send `gzip`, `deflate` or no encoding")]
    UnsupportedEncoding(String),
    #[error("the request body is larger than the server accepts{}", limit_text(*.limit))]
    TooLarge { limit: Option<usize> },
    /// A request line longer than [`MAX_URI_BYTES`].
    #[error("the request URI is {0} bytes long; at most {MAX_URI_BYTES} are accepted")]
    UriTooLong(usize),
    /// An answer some library layer gave in plain text, put in the JSON shape (`json_errors`).
    #[error("{message}")]
    Rejected { status: StatusCode, message: String },
    #[error("{0}")]
    NotFound(String),
    /// A data subject request, or a step of one, refused: 409 when the request's state
    /// refuses it, 422 when the input does; the code is the request's (`request.closed`, …).
    #[error("{0}")]
    Request(#[from] kept_core::requests::RequestError),
    /// An acknowledgement of a data subject request's obligation whose token is not the one
    /// the obligation carried for that request and system (403).
    #[error("`token` is not the acknowledgement token of this request's obligation to this system")]
    AckTokenInvalid,
    /// An access export, or the link to one, refused; see [`ExportRefusal`].
    #[error("{message}")]
    Export {
        refusal: ExportRefusal,
        message: String,
    },
    #[error("this method is not allowed on this path")]
    MethodNotAllowed,
    #[error("the request took longer than {0} seconds")]
    Timeout(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bug or an unexpected failure; the detail is logged, never sent.
    #[error("internal error")]
    Internal(String),
}

/// Why an access export or its download link is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportRefusal {
    /// The link's token is malformed, not signed by this server, or of another kind.
    LinkInvalid,
    /// The link has expired.
    LinkExpired,
    /// The link names a request that is not its subject's, or not an access request.
    LinkMismatch,
    /// The request is not of a kind an export answers (access, portability).
    NotExportable,
    /// The request's identity is not verified yet.
    NotReady,
    /// The request was rejected, or its subject erased, since.
    Gone,
}

impl ExportRefusal {
    pub fn code(self) -> &'static str {
        match self {
            ExportRefusal::LinkInvalid => "export.link_invalid",
            ExportRefusal::LinkExpired => "export.link_expired",
            ExportRefusal::LinkMismatch => "export.link_mismatch",
            ExportRefusal::NotExportable => "export.not_exportable",
            ExportRefusal::NotReady => "export.not_ready",
            ExportRefusal::Gone => "export.gone",
        }
    }
}

/// A query parameter read as a number of type `T`; a value that is not one is a 422 naming
/// the parameter.
pub fn query_number<T: std::str::FromStr>(
    field: &str,
    value: Option<&str>,
) -> Result<Option<T>, ApiError> {
    value
        .map(|v| {
            v.trim().parse::<T>().map_err(|_| {
                ApiError::invalid_field(field, format!("`{v}` is not a valid `{field}`"))
            })
        })
        .transpose()
}

/// The largest id a stored row can have: ids are 64-bit signed integers in both databases.
pub const MAX_ROW_ID: u64 = i64::MAX as u64;

/// A query parameter that is a row id or a cursor made of one (`before`): a whole number from 0
/// to [`MAX_ROW_ID`]. Anything larger could name no row, and is refused rather than passed to a
/// database that cannot hold it.
pub fn query_row_id(field: &str, value: Option<&str>) -> Result<Option<u64>, ApiError> {
    match query_number::<u64>(field, value)? {
        Some(id) if id > MAX_ROW_ID => Err(ApiError::invalid_field(
            field,
            format!("`{field}` must be at most {MAX_ROW_ID}"),
        )),
        id => Ok(id),
    }
}

/// A page size: `default` when not given, else from 1 to `max`; anything else is a 422 naming
/// `limit` rather than quietly changed, so that the documented range is the accepted one.
pub fn page_limit(value: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    match value {
        None => Ok(default),
        Some(limit) if (1..=max).contains(&limit) => Ok(limit),
        Some(_) => Err(ApiError::invalid_field(
            "limit",
            format!("`limit` must be between 1 and {max}"),
        )),
    }
}

/// [`page_limit`] for a `limit` query parameter read as text.
pub fn query_limit(value: Option<&str>, default: u32, max: u32) -> Result<u32, ApiError> {
    page_limit(query_number::<u32>("limit", value)?, default, max)
}

impl ApiError {
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn forbidden(have: Role, need: Role) -> ApiError {
        ApiError::Forbidden {
            have: have.as_str(),
            need: need.as_str(),
        }
    }

    /// Stable machine code, part of the API contract.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MissingKey => "auth.missing_key",
            ApiError::InvalidKey => "auth.invalid_key",
            ApiError::Forbidden { .. } => "auth.forbidden",
            ApiError::WriteKeyRefused { code, .. } => code,
            ApiError::InvalidJson(_) => "request.invalid_json",
            ApiError::UnsupportedMediaType => "request.unsupported_media_type",
            ApiError::InvalidField { .. } => "request.invalid_field",
            ApiError::InvalidEvent { .. } => "request.invalid_event",
            ApiError::LimitExceeded { .. } => "request.limit_exceeded",
            ApiError::Overloaded { .. } => "server.overloaded",
            ApiError::UnsupportedEncoding(_) => "request.unsupported_encoding",
            ApiError::TooLarge { .. } => "request.too_large",
            ApiError::UriTooLong(_) => "request.uri_too_long",
            ApiError::Rejected { status, .. } if status.is_server_error() => "server.internal",
            ApiError::Rejected { .. } => "request.rejected",
            ApiError::NotFound(_) => "not_found",
            ApiError::AckTokenInvalid => "request.ack_token_invalid",
            ApiError::Request(e) => e.code(),
            ApiError::Export { refusal, .. } => refusal.code(),
            ApiError::MethodNotAllowed => "request.method_not_allowed",
            ApiError::Timeout(_) => "server.timeout",
            ApiError::Store(e) => e.code(),
            ApiError::Internal(_) => "server.internal",
        }
    }

    /// THE mapping from error to HTTP status; no other place chooses a status for an error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingKey | ApiError::InvalidKey => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } | ApiError::WriteKeyRefused { .. } => StatusCode::FORBIDDEN,
            ApiError::InvalidJson(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::InvalidField { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::InvalidEvent { .. } => StatusCode::BAD_REQUEST,
            ApiError::LimitExceeded { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            ApiError::Rejected { status, .. } => *status,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::AckTokenInvalid => StatusCode::FORBIDDEN,
            ApiError::Request(e) if e.is_conflict() => StatusCode::CONFLICT,
            ApiError::Request(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Export { refusal, .. } => match refusal {
                ExportRefusal::LinkInvalid
                | ExportRefusal::LinkExpired
                | ExportRefusal::LinkMismatch => StatusCode::FORBIDDEN,
                ExportRefusal::NotExportable | ExportRefusal::NotReady => StatusCode::CONFLICT,
                ExportRefusal::Gone => StatusCode::GONE,
            },
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(e) => match e {
                StoreError::Unavailable(_) | StoreError::Closed => StatusCode::SERVICE_UNAVAILABLE,
                StoreError::Conflict { .. } => StatusCode::CONFLICT,
                StoreError::NotFound { .. } => StatusCode::NOT_FOUND,
                StoreError::Migration(_) | StoreError::Corrupt(_) | StoreError::Database(_) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            },
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message sent to the client: server-side failures say what kind of failure it was,
    /// never database text or internals (those go to the log).
    fn public_message(&self) -> String {
        match self {
            ApiError::Store(StoreError::Database(_) | StoreError::Corrupt(_)) => {
                "the database failed to answer; see the server log".to_owned()
            }
            ApiError::Store(StoreError::Unavailable(_)) => "the database is unavailable".to_owned(),
            _ => self.to_string(),
        }
    }

    pub fn body(&self) -> ErrorBody {
        let code = self.code().to_owned();
        let message = self.public_message();
        ErrorBody {
            code: code.clone(),
            message: message.clone(),
            error: ErrorDetail {
                code,
                message,
                field: match self {
                    ApiError::InvalidField { field, .. }
                    | ApiError::InvalidEvent { field, .. }
                    | ApiError::WriteKeyRefused { field, .. } => Some(field.clone()),
                    ApiError::Request(e) => Some(e.field().to_owned()),
                    ApiError::AckTokenInvalid => Some("token".to_owned()),
                    _ => None,
                },
                index: match self {
                    ApiError::InvalidEvent { index, .. }
                    | ApiError::WriteKeyRefused { index, .. } => *index,
                    _ => None,
                },
                limit: match self {
                    ApiError::LimitExceeded { limit, .. } => Some((*limit).to_owned()),
                    _ => None,
                },
            },
        }
    }
}

/// The JSON body of every error answer: the detail under `error`, and its `code` and `message`
/// again at the top, where Segment's and RudderStack's libraries read them.
///
/// What their error handling reads of a non-2xx answer:
/// - `segmentio/analytics-python` (`segment/analytics/request.py`, `post`):
///   `APIError(res.status_code, payload["code"], payload["message"], res)` from the JSON body;
///   without the two fields it reports the code `unknown` and the raw text instead (2.4).
/// - `rudderlabs/rudder-sdk-python` (`rudderstack/analytics/request.py`, `post`): the same
///   `payload['code']` and `payload['message']`, catching only `ValueError` (2.1.9): without
///   the two fields a 401 became a `KeyError`, which its consumer does not take for a client
///   error and retries with back-off before reporting it.
/// - `@segment/analytics-node` (`packages/node/src/plugins/segmentio/publisher.ts`, `send`) and
///   `@rudderstack/rudder-sdk-node` (`src/index.js`, `flush`): only the status and its
///   `statusText`; 400 is not retried by the first, 4xx other than 429 by neither.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The same as `error.code`.
    #[schema(example = "request.invalid_field")]
    pub code: String,
    /// The same as `error.message`.
    pub message: String,
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine code (`auth.missing_key`, `request.invalid_field`, …).
    #[schema(example = "request.invalid_field")]
    pub code: String,
    /// Human-readable; names the offending field or value.
    pub message: String,
    /// The offending field, as a path into the request (`records[0].purpose`), when one is to
    /// blame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The position of the offending event in a batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// The limit exceeded (`batch_bytes`, `batch_events`, `event_bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            match &self {
                ApiError::Internal(detail) => tracing::error!(code = self.code(), %detail),
                other => tracing::error!(code = other.code(), error = %other),
            }
        }
        let mut response = (status, axum::Json(self.body())).into_response();
        if let ApiError::Overloaded { retry_after } = &self
            && let Ok(value) = HeaderValue::from_str(&retry_after.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if matches!(self, ApiError::MissingKey | ApiError::InvalidKey) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"kept\""),
            );
        }
        response
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> ApiError {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            // The limit itself is not in the rejection; `JsonBody` fills it in when it knows it.
            ApiError::TooLarge { limit: None }
        } else {
            ApiError::InvalidJson(format!("cannot read the request body: {rejection}"))
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        use axum::extract::path::ErrorKind;
        match rejection {
            PathRejection::FailedToDeserializePathParams(e) => match e.into_kind() {
                ErrorKind::ParseErrorAtKey { key, value, .. } => ApiError::invalid_field(
                    key.clone(),
                    format!("`{value}` is not a valid `{key}`"),
                ),
                ErrorKind::ParseError { value, .. }
                | ErrorKind::ParseErrorAtIndex { value, .. } => {
                    ApiError::invalid_field("path", format!("`{value}` is not valid here"))
                }
                other => ApiError::invalid_field("path", other.to_string()),
            },
            PathRejection::MissingPathParams(e) => ApiError::Internal(e.body_text()),
            other => ApiError::Internal(other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    /// Names the parameter: axum reads the query through `serde_path_to_error`, so its text is
    /// `<parameter>: <what is wrong>` whenever one parameter is to blame.
    fn from(rejection: QueryRejection) -> ApiError {
        let text = rejection.body_text();
        let detail = text
            .strip_prefix("Failed to deserialize query string: ")
            .unwrap_or(&text);
        match detail.split_once(": ") {
            Some((name, problem))
                if !name.is_empty() && name != "." && !name.contains(char::is_whitespace) =>
            {
                let problem = problem
                    .replacen("unknown field `", "unknown query parameter `", 1)
                    .replacen("duplicate field `", "repeated query parameter `", 1);
                ApiError::invalid_field(name, format!("`{name}`: {problem}"))
            }
            // A repeated or missing parameter is reported at the query as a whole, naming it.
            _ => match ["duplicate field `", "missing field `"]
                .iter()
                .find_map(|prefix| detail.strip_prefix(prefix))
                .and_then(|rest| rest.split('`').next())
            {
                Some(name) if detail.starts_with("duplicate") => {
                    ApiError::invalid_field(name, format!("repeated query parameter `{name}`"))
                }
                Some(name) => {
                    ApiError::invalid_field(name, format!("missing query parameter `{name}`"))
                }
                None => ApiError::invalid_field("query", format!("the query string: {detail}")),
            },
        }
    }
}

fn limit_text(limit: Option<usize>) -> String {
    limit.map_or_else(String::new, |l| format!(" ({l} bytes)"))
}

/// The configured body limit, put in each request's extensions so that rejections can say it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// Like `axum::Json`, but its rejections are `ApiError`s that name the offending field, and
/// unknown fields are errors wherever the target type says so (`deny_unknown_fields`).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let limit = req.extensions().get::<BodyLimit>().map(|l| l.0);
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|rejection| match ApiError::from(rejection) {
                ApiError::TooLarge { .. } => ApiError::TooLarge { limit },
                other => other,
            })?;
        parse_json(&bytes).map(JsonBody)
    }
}

pub(crate) fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
        || (essence.len() > 5
            && essence
                .get(essence.len() - 5..)
                .is_some_and(|s| s.eq_ignore_ascii_case("+json")))
}

/// Parses a JSON body, turning syntax errors into `request.invalid_json` and shape errors
/// (missing, unknown or mistyped fields) into `request.invalid_field` naming the field.
///
/// Every body Kept reads is an object, and so is every struct nested in it. serde would also fill
/// a struct from an array, field by field in order (so `[]` would be an empty update), which no
/// schema allows: refused here at the top, and by [`crate::http::json_shape::Objects`] below it.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::invalid_field(
            "body",
            "the request body must be a JSON object, not an array",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(crate::http::json_shape::Objects(&mut de))
        .map_err(json_error)?;
    de.end().map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    Ok(value)
}

pub(crate) fn json_error(err: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    use serde_json::error::Category;
    let path = err.path().to_string();
    let inner = err.into_inner();
    match inner.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::InvalidJson(inner.to_string()),
        Category::Data => {
            let full = inner.to_string();
            // serde_json appends the position; the field path says more.
            let message = match full.rfind(" at line ") {
                Some(i) => full.get(..i).unwrap_or(&full).to_owned(),
                None => full,
            };
            let message = humanize(&message);
            let parent = if path == "." { None } else { Some(path) };
            // An unknown or missing field is reported by serde at its parent; name the field
            // itself.
            let named = ["unknown field `", "missing field `"]
                .iter()
                .find_map(|prefix| message.strip_prefix(prefix))
                .and_then(|rest| rest.split('`').next());
            let field = match (parent, named) {
                // An unknown field is already the last step of the path; a missing one is not.
                (Some(p), Some(n)) if p == n || p.ends_with(&format!(".{n}")) => p,
                (Some(p), Some(n)) => format!("{p}.{n}"),
                (None, Some(n)) => n.to_owned(),
                (Some(p), None) => p,
                (None, None) => "body".to_owned(),
            };
            let message = if named.is_some() {
                if field.contains('.') || field.contains('[') {
                    format!("{message} (at `{field}`)")
                } else {
                    message
                }
            } else {
                format!("`{field}`: {message}")
            };
            ApiError::InvalidField { field, message }
        }
    }
}

/// Replaces serde's Rust primitive names with words a client understands.
fn humanize(message: &str) -> String {
    let mut out = message.to_owned();
    for (rust, words) in [
        ("expected u8", "expected a whole number"),
        ("expected u16", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected usize", "expected a whole number"),
        ("expected a borrowed string", "expected a string"),
    ] {
        if let Some(stripped) = out.strip_suffix(rust) {
            out = format!("{stripped}{words}");
        }
    }
    out
}

/// Like `axum::extract::Path`, with rejections as `ApiError`s naming the parameter.
#[derive(Debug, Clone, Copy)]
pub struct PathParams<T>(pub T);

impl<S, T> FromRequestParts<S> for PathParams<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(value) = axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map_err(ApiError::from)?;
        Ok(PathParams(value))
    }
}

/// The longest request URI (path and query) answered: far beyond any query Kept documents, and
/// below hyper's own limit (64 KiB), which it enforces before any handler runs by answering an
/// empty 414 that no middleware can reach. Below that, the 414 is this JSON one.
pub const MAX_URI_BYTES: usize = 16 * 1024;

/// Largest plain-text error body read back to be quoted in the JSON one.
const PLAIN_ERROR_BYTES: usize = 4096;

/// Makes every error answer JSON: refuses a URI over [`MAX_URI_BYTES`] with a JSON 414, and puts
/// an error some library layer answered in plain text or with no body (axum's body-limit 413,
/// its rejections) in the `{ "error": … }` shape, so no client meets a body it cannot read.
/// Pages (HTML) and JSON answers pass untouched.
pub async fn json_errors(req: Request, next: axum::middleware::Next) -> Response {
    let uri_bytes = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri_bytes > MAX_URI_BYTES {
        return ApiError::UriTooLong(uri_bytes).into_response();
    }
    let limit = req.extensions().get::<BodyLimit>().map(|l| l.0);
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .eq_ignore_ascii_case("text/plain")
        });
    if !plain {
        return response;
    }
    let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
    let error = if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge { limit }
    } else {
        let text = axum::body::to_bytes(response.into_body(), PLAIN_ERROR_BYTES)
            .await
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
            .unwrap_or_default();
        let message = if text.is_empty() {
            status
                .canonical_reason()
                .unwrap_or("the request was refused")
                .to_lowercase()
        } else if status.is_server_error() {
            // Library text about a server failure stays in the log.
            tracing::error!(status = status.as_u16(), detail = %text, "plain-text error answer");
            "internal error".to_owned()
        } else {
            text
        };
        ApiError::Rejected { status, message }
    };
    let mut json = error.into_response();
    if let Some(value) = retry_after {
        json.headers_mut().insert(header::RETRY_AFTER, value);
    }
    json
}

/// Answers requests no route matched.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".to_owned())
}

/// Answers requests whose path exists but not with this method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
