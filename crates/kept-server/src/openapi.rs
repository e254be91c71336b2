//! The OpenAPI document, generated from the handlers' and types' annotations, then completed
//! with what holds for every operation alike (the range of each unsigned integer, the answers
//! any request can get). The committed `openapi.json` at the workspace root is this document; a
//! test fails when they drift.

use crate::admin::{keys, merges};
use crate::consent::api as consents;
use crate::decide::{
    audiences, contacts, decisions, log_api as decision_log, profile, uses_api as uses,
};
use crate::http::error::{ErrorBody, ErrorDetail, MAX_ROW_ID};
use crate::state::AppState;
use crate::system;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use kept_core::decision::ReasonCode;
use serde_json::{Map, Value, json};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Kept",
        description = "A self-hosted, privacy-first customer data platform. Every error is \
            `{ \"code\", \"message\", \"error\": { \"code\", \"message\", … } }` with a \
            stable `code` (the top-level `code` and `message` are there for Segment's and \
            RudderStack's libraries, which read them). Endpoints under \
            `/v1` take an API key: `Authorization: Bearer <key>` (or HTTP Basic with the key as \
            user name and an empty password).",
        license(name = "Apache-2.0")
    ),
    paths(
        system::health,
        system::metrics,
        openapi,
        consents::append,
        consents::of_subject,
        consents::ledger_status,
        keys::list,
        keys::create,
        keys::revoke,
        decisions::decide,
        contacts::record,
        profile::profile,
        audiences::evaluate_audience,
        audiences::export,
        decision_log::read,
        uses::read,
        crate::connect::api::dead_letters,
        crate::connect::api::retry_dead_letter,
        crate::collect::routes::identify,
        crate::collect::routes::track,
        crate::collect::routes::page,
        crate::collect::routes::screen,
        crate::collect::routes::group,
        crate::collect::routes::alias,
        crate::collect::routes::batch,
        crate::collect::routes::gpc,
        crate::collect::read::lookup,
        crate::collect::read::events,
        crate::collect::read::set_collection_point,
        crate::collect::read::list_quarantine,
        merges::list,
        merges::undo,
        crate::requests::api::create,
        crate::requests::api::list,
        crate::requests::api::show,
        crate::requests::api::advance,
        crate::requests::api::extend,
        crate::requests::api::reject,
        crate::requests::api::handled,
        crate::requests::api::acknowledge,
        crate::requests::api::export_links,
        crate::requests::api::download,
        crate::requests::api::export_schema,
        crate::requests::api::apply,
        crate::requests::api::lift,
        crate::requests::api::erase,
        crate::prefcenter::api::preference_link,
        crate::prefcenter::api::get_preferences,
        crate::prefcenter::api::put_preferences,
    ),
    components(schemas(ErrorBody, ErrorDetail, crate::decide::audiences::ExportFormat)),
    modifiers(&ApiKeyScheme),
    tags(
        (name = "system", description = "health, metrics and this document; no key needed"),
        (name = "consent", description = "the consent ledger (role `privacy`)"),
        (name = "keys", description = "API keys (role `admin`)"),
        (name = "requests", description = "data subject requests, their deadlines, their \
            tasks and their hash-chained log (role `privacy`); a system acknowledges its \
            obligation with the token the obligation carried, without a key"),
        (name = "decisions", description = "decisions, purpose-limited profiles and recorded \
            sends (role `decide`)"),
        (name = "audiences", description = "campaign dry runs and exports (role `decide`)"),
        (name = "decision log", description = "denied and sampled decisions, and the complete \
            record of uses (role `privacy`)"),
        (name = "collection", description = "Segment-compatible event collection with a write \
            key: role `public` (safe in a browser: anonymous profiles and that browser's banner \
            choices; a known customer only with an identity token, `context.kept.userHash` = \
            hex HMAC-SHA256 of the `userId` under the identity secret) or role `server` (secret, \
            full Segment semantics); reading back subjects and events, and the identity log of \
            merges (role `privacy`)"),
        (name = "preferences", description = "the preference center for companies that build \
            their own page: sign-in links, a subject's choices and changing them (role \
            `privacy`)"),
        (name = "webhooks", description = "signed forwarding to the manifest's systems: dead \
            letters and their retry (role `admin`)"),
    )
)]
struct ApiDoc;

struct ApiKeyScheme;

impl utoipa::Modify for ApiKeyScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("kept_<id>_<secret>")
                    .description(Some(
                        "an API key; its role (`public`, `server`, `decide`, `privacy`, `admin`) decides \
                         which endpoints it may call",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "write_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "the collection endpoints' way, as the Segment and RudderStack libraries \
                         send it: a `public` or `server` key as the user name, with an empty \
                         password (a Bearer key, or the body's `writeKey`, is read too)",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document as served at `/openapi.json`.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi())
        .unwrap_or_else(|e| json!({ "error": e.to_string() }));
    integer_ranges(&mut doc);
    reason_codes(&mut doc);
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for item in paths.values_mut().filter_map(Value::as_object_mut) {
            for operation in item.values_mut().filter_map(Value::as_object_mut) {
                shared_answers(operation);
            }
        }
    }
    doc
}

/// The route that serves the document, open without a key like the other operational ones.
/// It sits here rather than in `system` so that the document, which lists `system`'s handlers,
/// and the handler that serves it do not import each other.
pub fn routes() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi))
}

/// This API's OpenAPI document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "system",
    responses((status = 200, description = "the OpenAPI 3.1 document", content_type = "application/json"))
)]
pub async fn openapi() -> impl IntoResponse {
    Json(document())
}

/// The document as committed: pretty JSON with a final newline.
pub fn document_json() -> String {
    let mut json = serde_json::to_string_pretty(&document())
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    json.push('\n');
    json
}

/// States the range of every unsigned integer, parameter or field: the generator marks them
/// `u-int8` ... `u-int64`, formats no client knows, and a client reading `int32` would take
/// 2^31 and above for invalid and `int64` would take negatives for valid. A `u64` is a row id or
/// a count of rows, which both databases keep as signed 64-bit integers: [`MAX_ROW_ID`].
fn integer_ranges(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let range = match map.get("format").and_then(Value::as_str) {
                Some("u-int8") => Some(("int32", u64::from(u8::MAX))),
                Some("u-int16") => Some(("int32", u64::from(u16::MAX))),
                Some("u-int32") => Some(("int64", u64::from(u32::MAX))),
                Some("u-int64") => Some(("int64", MAX_ROW_ID)),
                _ => None,
            };
            if let Some((format, max)) = range {
                map.insert("format".to_owned(), json!(format));
                map.entry("minimum").or_insert(json!(0));
                // An explicit, tighter maximum (a page size) stays.
                let tighter = map
                    .get("maximum")
                    .and_then(Value::as_u64)
                    .is_some_and(|m| m <= max);
                if !tighter {
                    map.insert("maximum".to_owned(), json!(max));
                }
            }
            map.values_mut().for_each(integer_ranges);
        }
        Value::Array(items) => items.iter_mut().for_each(integer_ranges),
        _ => {}
    }
}

/// The decision log's `reason` filter takes the reason codes Kept has, and nothing else.
fn reason_codes(doc: &mut Value) {
    let codes: Vec<&str> = ReasonCode::ALL.iter().map(|r| r.as_str()).collect();
    let parameters = doc
        .pointer_mut("/paths/~1v1~1decision-log/get/parameters")
        .and_then(Value::as_array_mut);
    for parameter in parameters.into_iter().flatten() {
        if parameter.get("name").and_then(Value::as_str) == Some("reason")
            && let Some(schema) = parameter.get_mut("schema").and_then(Value::as_object_mut)
        {
            schema.insert("enum".to_owned(), json!(codes));
        }
    }
}

/// Adds the answers any operation can give that its own annotation does not list: every error
/// is the JSON [`ErrorBody`], so a client can read each of them.
fn shared_answers(operation: &mut Map<String, Value>) {
    let takes_body = operation.contains_key("requestBody");
    let takes_parameters = operation
        .get("parameters")
        .and_then(Value::as_array)
        .is_some_and(|p| !p.is_empty());
    let Some(responses) = operation
        .get_mut("responses")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let mut shared = vec![(
        "414",
        format!(
            "the request URI (path and query) is longer than {} bytes",
            crate::http::error::MAX_URI_BYTES
        ),
    )];
    if takes_parameters {
        shared.push((
            "422",
            "a parameter is malformed or out of range, named in `error.field`".to_owned(),
        ));
    }
    if takes_body {
        shared.extend([
            (
                "400",
                "the body is not valid JSON (`request.invalid_json`)".to_owned(),
            ),
            (
                "413",
                "the body is larger than the server accepts (`request.too_large`)".to_owned(),
            ),
            (
                "415",
                "the body is not labelled `application/json` (`request.unsupported_media_type`)"
                    .to_owned(),
            ),
            (
                "422",
                "a field is missing, of the wrong type or out of range, named in `error.field`"
                    .to_owned(),
            ),
        ]);
    }
    for (status, description) in shared {
        responses.entry(status).or_insert_with(|| {
            json!({
                "description": description,
                "content": {
                    "application/json": {
                        "schema": { "$ref": "#/components/schemas/ErrorBody" }
                    }
                }
            })
        });
    }
    // Keep the answers in status order, as the generator writes them.
    let mut sorted: Vec<(String, Value)> = std::mem::take(responses).into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    responses.extend(sorted);
}
