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

/// Every `$ref` names a schema the document holds, and every operation id is unique: the two
/// ways a generated document was found invalid by a validator while matching the code.
#[test]
fn the_document_is_self_consistent() {
    let doc: serde_json::Value =
        serde_json::from_str(&kept_server::openapi::document_json()).unwrap();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let mut refs = Vec::new();
    fn walk(v: &serde_json::Value, refs: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(r)) = map.get("$ref") {
                    refs.push(r.clone());
                }
                map.values().for_each(|x| walk(x, refs));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|x| walk(x, refs)),
            _ => {}
        }
    }
    walk(&doc, &mut refs);
    for r in &refs {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or(r);
        assert!(schemas.contains_key(name), "dangling reference `{r}`");
    }
    let mut ids = std::collections::BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if let Some(id) = op["operationId"].as_str()
                && let Some(other) = ids.insert(id.to_owned(), format!("{method} {path}"))
            {
                panic!("operation id `{id}` is used by `{other}` and `{method} {path}`");
            }
        }
    }
}
