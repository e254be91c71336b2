//! The committed `openapi.json` is the document the code generates.

use crate::support::{TestApp, get};
use axum::http::StatusCode;

#[test]
fn the_committed_document_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi.json");
    let generated = kept_server::openapi::document_json();
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        panic!(
            "openapi.json at the workspace root is out of date with the code.\n\
             Regenerate it from the workspace root with:\n\n    \
             cargo run -- openapi > openapi.json\n\nand commit the result."
        );
    }
}

#[tokio::test]
async fn the_server_serves_the_same_document() {
    let app = TestApp::new().await;
    let answer = app.send(get("/openapi.json", None)).await;
    assert_eq!(answer.status, StatusCode::OK);
    let generated: serde_json::Value =
        serde_json::from_str(&kept_server::openapi::document_json()).unwrap();
    assert_eq!(answer.json, generated);
    for path in [
        "/healthz",
        "/metrics",
        "/v1/consents",
        "/v1/subjects/{id}/consents",
        "/v1/ledger",
        "/v1/keys",
        "/v1/keys/{id}",
        "/v1/decisions",
        "/v1/contacts",
        "/v1/audiences/evaluate",
        "/v1/audiences/export",
        "/v1/subjects/{id}/profile",
        "/v1/decision-log",
        "/v1/uses",
    ] {
        assert!(
            answer.json["paths"][path].is_object(),
            "{path} is not documented"
        );
    }
    assert_eq!(
        answer.json["components"]["securitySchemes"]["api_key"]["scheme"],
        "bearer"
    );
}
