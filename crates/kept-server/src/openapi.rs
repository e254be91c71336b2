//! The OpenAPI document, generated from the handlers' and types' annotations. The committed
//! `openapi.json` at the workspace root is this document; a test fails when they drift.

use crate::error::{ErrorBody, ErrorDetail};
use crate::routes::{
    audiences, consents, contacts, decision_log, decisions, keys, merges, profile, system, uses,
};
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
        system::openapi,
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
        crate::forward::api::dead_letters,
        crate::forward::api::retry_dead_letter,
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
        crate::collect::quarantine::list,
        merges::list,
        merges::undo,
        crate::prefcenter::api::preference_link,
        crate::prefcenter::api::get_preferences,
        crate::prefcenter::api::put_preferences,
    ),
    components(schemas(ErrorBody, ErrorDetail, crate::routes::audiences::ExportFormat)),
    modifiers(&ApiKeyScheme),
    tags(
        (name = "system", description = "health, metrics and this document; no key needed"),
        (name = "consent", description = "the consent ledger (role `privacy`)"),
        (name = "keys", description = "API keys (role `admin`)"),
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
