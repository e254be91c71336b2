//! The OpenAPI document, generated from the handlers' and types' annotations. The committed
//! `openapi.json` at the workspace root is this document; a test fails when they drift.

use crate::error::{ErrorBody, ErrorDetail};
use crate::routes::{consents, keys, system};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Kept",
        description = "A self-hosted, privacy-first customer data platform. Every error is \
            `{ \"error\": { \"code\", \"message\" } }` with a stable `code`. Endpoints under \
            `/v1` take an API key: `Authorization: Bearer <key>` (or HTTP Basic with the key as \
            user name and an empty password).",
        license(name = "Apache-2.0")
    ),
    paths(
        system::health,
        system::metrics,
        system::openapi,
        consents::append,
        consents::of_subject,
        consents::ledger_status,
        keys::list,
        keys::create,
        keys::revoke,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&ApiKeyScheme),
    tags(
        (name = "system", description = "health, metrics and this document; no key needed"),
        (name = "consent", description = "the consent ledger (role `privacy`)"),
        (name = "keys", description = "API keys (role `admin`)"),
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
                        "an API key; its role (`collect`, `decide`, `privacy`, `admin`) decides \
                         which endpoints it may call",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document as served at `/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as committed: pretty JSON with a final newline.
pub fn document_json() -> String {
    let mut json = document()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    json.push('\n');
    json
}
