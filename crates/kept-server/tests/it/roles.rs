//! Every operation of the OpenAPI document × every caller: no key, a malformed key, a
//! well-formed unknown key, a revoked key, and a key of each role. Each answer must be exactly
//! what the operation's access allows. The operations come from the generated document, so a
//! route added without a row here fails the test instead of going unchecked.

use crate::support::{TestApp, newsletter_consent, request};
use axum::http::StatusCode;
use kept_store::Role;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy)]
enum Caller {
    NoKey,
    Malformed,
    Unknown,
    Revoked,
    Role(Role),
}

/// Who may call an operation.
#[derive(Debug, Clone, Copy)]
enum Access {
    /// Anyone, with or without a key (a key, even a bad one, is not read).
    Open,
    /// A key whose role permits this one.
    Key(Role),
}
use Access::{Key, Open};

/// The expected access to one operation, and a request that exercises it.
struct Endpoint {
    /// The operation as the OpenAPI document names it: method and path template.
    operation: &'static str,
    /// The request's path; `{subject}` and `{victim}` are filled in per request.
    path: &'static str,
    body: Option<fn(&TestApp) -> String>,
    access: Access,
    success: StatusCode,
}

impl Endpoint {
    fn method(&self) -> &'static str {
        self.operation
            .split_once(' ')
            .map_or("", |(method, _)| method)
    }
}

fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint {
            operation: "POST /v1/consents",
            path: "/v1/consents",
            body: Some(|app| newsletter_consent(app.subjects[0])),
            access: Key(Role::Privacy),
            success: StatusCode::CREATED,
        },
        Endpoint {
            operation: "GET /v1/subjects/{id}/consents",
            path: "/v1/subjects/{subject}/consents",
            body: None,
            access: Key(Role::Privacy),
            success: StatusCode::OK,
        },
        Endpoint {
            operation: "GET /v1/ledger",
            path: "/v1/ledger",
            body: None,
            access: Key(Role::Privacy),
            success: StatusCode::OK,
        },
        Endpoint {
            operation: "GET /v1/keys",
            path: "/v1/keys",
            body: None,
            access: Key(Role::Admin),
            success: StatusCode::OK,
        },
        Endpoint {
            operation: "POST /v1/keys",
            path: "/v1/keys",
            body: Some(|_| r#"{"role": "decide", "name": "matrix"}"#.to_owned()),
            access: Key(Role::Admin),
            success: StatusCode::CREATED,
        },
        Endpoint {
            operation: "DELETE /v1/keys/{id}",
            path: "/v1/keys/{victim}",
            body: None,
            access: Key(Role::Admin),
            success: StatusCode::NO_CONTENT,
        },
        Endpoint {
            operation: "POST /v1/decisions",
            path: "/v1/decisions",
            body: Some(|_| {
                r#"{"subject": {"user_id": "u1"}, "purpose": "marketing.communications"}"#
                    .to_owned()
            }),
            access: Key(Role::Decide),
            success: StatusCode::OK,
        },
        Endpoint {
            operation: "POST /v1/contacts",
            path: "/v1/contacts",
            body: Some(|_| {
                r#"{"subject": {"user_id": "u1"}, "channel": "email", "purpose": "marketing.communications"}"#
                    .to_owned()
            }),
            access: Key(Role::Decide),
            success: StatusCode::CREATED,
        },
        Endpoint {
            operation: "POST /v1/audiences/evaluate",
            path: "/v1/audiences/evaluate",
            body: Some(|_| {
                r#"{"purpose": "marketing.communications", "channel": "sms"}"#.to_owned()
            }),
            access: Key(Role::Decide),
            success: StatusCode::OK,
        },
        Endpoint {
            operation: "POST /v1/audiences/export",
            path: "/v1/audiences/export?format=csv",
            body: Some(|_| r#"{"purpose": "loyalty.rewards"}"#.to_owned()),
            access: Key(Role::Decide),
            success: StatusCode::OK,
        },
        Endpoint {
            operation: "GET /v1/subjects/{id}/profile",
            path: "/v1/subjects/{subject}/profile?purpose=loyalty.rewards",
            body: None,
            access: Key(Role::Decide),
            success: StatusCode::OK,
        },
        Endpoint {
            operation: "GET /v1/merges",
            path: "/v1/merges?limit=10",
            body: None,
            access: Key(Role::Privacy),
            success: StatusCode::OK,
        },
        Endpoint {
            operation: "GET /v1/quarantine",
            path: "/v1/quarantine?limit=10",
            body: None,
            access: Key(Role::Admin),
            success: StatusCode::OK,
        },
        Endpoint {
            operation: "POST /v1/merges/{id}/undo",
            path: "/v1/merges/999999/undo",
            body: None,
            access: Key(Role::Privacy),
            success: StatusCode::NOT_FOUND,
        },
        Endpoint {
            operation: "POST /v1/requests",
            path: "/v1/requests",
            body: Some(|_| r#"{"subject": {"user_id": "u1"}, "kind": "access"}"#.to_owned()),
            access: Key(Role::Privacy),
            success: StatusCode::CREATED,
        },
        Endpoint {
            operation: "GET /v1/requests",
            path: "/v1/requests?overdue=true",
            body: None,
            access: Key(Role::Privacy),
            success: StatusCode::OK,
        },
        Endpoint {
            operation: "GET /v1/requests/{id}",
            path: "/v1/requests/999999",
            body: None,
            access: Key(Role::Privacy),
            success: StatusCode::NOT_FOUND,
        },
        Endpoint {
            operation: "POST /v1/requests/{id}/advance",
            path: "/v1/requests/999999/advance",
            body: Some(|_| "{}".to_owned()),
            access: Key(Role::Privacy),
            success: StatusCode::NOT_FOUND,
        },
        Endpoint {
            operation: "POST /v1/requests/{id}/extend",
            path: "/v1/requests/999999/extend",
            body: Some(|_| r#"{"reason": "matrix"}"#.to_owned()),
            access: Key(Role::Privacy),
            success: StatusCode::NOT_FOUND,
        },
        Endpoint {
            operation: "POST /v1/requests/{id}/reject",
            path: "/v1/requests/999999/reject",
            body: Some(|_| r#"{"reason": "matrix"}"#.to_owned()),
            access: Key(Role::Privacy),
            success: StatusCode::NOT_FOUND,
        },
        Endpoint {
            operation: "POST /v1/requests/{id}/tasks/{target}/handled",
            path: "/v1/requests/999999/tasks/kept/handled",
            body: Some(|_| r#"{"note": "matrix"}"#.to_owned()),
            access: Key(Role::Privacy),
            success: StatusCode::NOT_FOUND,
        },
        // A system acknowledging its obligation sends no key: the token is the authority, and
        // any key, good or bad, is not read. A token not made for this request is refused.
        Endpoint {
            operation: "POST /v1/requests/{id}/systems/{system}/ack",
            path: "/v1/requests/999999/systems/ad_partner/ack",
            body: Some(|_| format!(r#"{{"token": "{}"}}"#, "0".repeat(64))),
            access: Open,
            success: StatusCode::FORBIDDEN,
        },
        Endpoint {
            operation: "GET /v1/requests/{id}/export",
            path: "/v1/requests/999999/export",
            body: None,
            access: Key(Role::Privacy),
            success: StatusCode::NOT_FOUND,
        },
        // The link's token is the authority: a key, good or bad, is not read, and a token
        // that is not one is refused alike.
        Endpoint {
            operation: "GET /exports/{token}",
            path: "/exports/not-a-token",
            body: None,
            access: Open,
            success: StatusCode::FORBIDDEN,
        },
        Endpoint {
            operation: "GET /schema/export-v1.json",
            path: "/schema/export-v1.json",
            body: None,
            access: Open,
            success: StatusCode::OK,
        },
        Endpoint {
            operation: "POST /v1/requests/{id}/apply",
            path: "/v1/requests/999999/apply",
            body: Some(|_| "{}".to_owned()),
            access: Key(Role::Privacy),
            success: StatusCode::NOT_FOUND,
        },
        Endpoint {
            operation: "POST /v1/requests/{id}/lift",
            path: "/v1/requests/999999/lift",
            body: Some(|_| r#"{"reason": "matrix"}"#.to_owned()),
            access: Key(Role::Privacy),
            success: StatusCode::NOT_FOUND,
        },
        Endpoint {
            operation: "POST /v1/requests/{id}/erase",
            path: "/v1/requests/999999/erase",
            body: None,
            access: Key(Role::Privacy),
            success: StatusCode::NOT_FOUND,
        },
        Endpoint {
            operation: "GET /v1/decision-log",
            path: "/v1/decision-log?limit=10",
            body: None,
            access: Key(Role::Privacy),
            success: StatusCode::OK,
        },
        Endpoint {
            operation: "GET /v1/uses",
            path: "/v1/uses?subject={subject}",
            body: None,
            access: Key(Role::Privacy),
            success: StatusCode::OK,
        },
        Endpoint {
            operation: "POST /v1/track",
            path: "/v1/track",
            body: Some(|_| r#"{"anonymousId": "matrix", "event": "Checked"}"#.to_owned()),
            access: Key(Role::Public),
            success: StatusCode::OK,
        },
        Endpoint {
            operation: "POST /v1/batch",
            path: "/v1/batch",
            body: Some(|_| {
                r#"{"batch": [{"type": "page", "anonymousId": "matrix", "name": "Home"}]}"#
                    .to_owned()
            }),
            access: Key(Role::Public),
            success: StatusCode::OK,
        },
        Endpoint {
            operation: "GET /v1/subjects/lookup",
            path: "/v1/subjects/lookup?user_id=u1",
            body: None,
            access: Key(Role::Privacy),
            success: StatusCode::OK,
        },
        Endpoint {
            operation: "GET /v1/subjects/{id}/events",
            path: "/v1/subjects/{subject}/events",
            body: None,
            access: Key(Role::Privacy),
            success: StatusCode::OK,
        },
        Endpoint {
            operation: "POST /v1/subjects/{id}/preference-link",
            path: "/v1/subjects/{subject}/preference-link",
            body: Some(|_| r#"{"ttl_minutes": 10}"#.to_owned()),
            access: Key(Role::Privacy),
            success: StatusCode::CREATED,
        },
        Endpoint {
            operation: "GET /v1/subjects/{id}/preferences",
            path: "/v1/subjects/{subject}/preferences",
            body: None,
            access: Key(Role::Privacy),
            success: StatusCode::OK,
        },
        Endpoint {
            operation: "PUT /v1/subjects/{id}/preferences",
            path: "/v1/subjects/{subject}/preferences",
            body: Some(|_| r#"{"do_not_sell": true}"#.to_owned()),
            access: Key(Role::Privacy),
            success: StatusCode::OK,
        },
        Endpoint {
            operation: "PUT /v1/keys/{id}/collection-point",
            path: "/v1/keys/{victim}/collection-point",
            body: Some(|_| r#"{"collection_point": "checkout"}"#.to_owned()),
            access: Key(Role::Admin),
            success: StatusCode::OK,
        },
        Endpoint {
            operation: "POST /v1/identify",
            path: "/v1/identify",
            body: Some(|_| r#"{"anonymousId": "matrix", "traits": {"plan": "free"}}"#.to_owned()),
            access: Key(Role::Public),
            success: StatusCode::OK,
        },
        Endpoint {
            operation: "POST /v1/page",
            path: "/v1/page",
            body: Some(|_| r#"{"anonymousId": "matrix", "name": "Home"}"#.to_owned()),
            access: Key(Role::Public),
            success: StatusCode::OK,
        },
        Endpoint {
            operation: "POST /v1/screen",
            path: "/v1/screen",
            body: Some(|_| r#"{"anonymousId": "matrix", "name": "Home"}"#.to_owned()),
            access: Key(Role::Public),
            success: StatusCode::OK,
        },
        Endpoint {
            operation: "POST /v1/group",
            path: "/v1/group",
            body: Some(|_| r#"{"anonymousId": "matrix", "groupId": "g1"}"#.to_owned()),
            access: Key(Role::Public),
            success: StatusCode::OK,
        },
        Endpoint {
            operation: "POST /v1/alias",
            path: "/v1/alias",
            body: Some(|_| r#"{"userId": "matrix-user", "previousId": "matrix-alias"}"#.to_owned()),
            access: Key(Role::Public),
            success: StatusCode::OK,
        },
        Endpoint {
            operation: "GET /v1/webhooks/dead-letters",
            path: "/v1/webhooks/dead-letters?limit=10",
            body: None,
            access: Key(Role::Admin),
            success: StatusCode::OK,
        },
        Endpoint {
            operation: "POST /v1/webhooks/dead-letters/{id}/retry",
            path: "/v1/webhooks/dead-letters/999999/retry",
            body: None,
            access: Key(Role::Admin),
            success: StatusCode::NOT_FOUND,
        },
        Endpoint {
            operation: "GET /healthz",
            path: "/healthz",
            body: None,
            access: Open,
            success: StatusCode::OK,
        },
        Endpoint {
            operation: "GET /metrics",
            path: "/metrics",
            body: None,
            access: Open,
            success: StatusCode::OK,
        },
        Endpoint {
            operation: "GET /openapi.json",
            path: "/openapi.json",
            body: None,
            access: Open,
            success: StatusCode::OK,
        },
        Endpoint {
            operation: "GET /.well-known/gpc.json",
            path: "/.well-known/gpc.json",
            body: None,
            access: Open,
            success: StatusCode::OK,
        },
    ]
}

/// Every operation of the generated OpenAPI document, as `METHOD /path/template`.
fn documented_operations() -> Vec<String> {
    let doc = kept_server::openapi::document();
    let paths = doc["paths"].as_object().expect("the document has paths");
    let mut operations = Vec::new();
    for (path, item) in paths {
        let item = item.as_object().expect("a path item is an object");
        for method in [
            "get", "put", "post", "delete", "options", "head", "patch", "trace",
        ] {
            if item.contains_key(method) {
                operations.push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    operations
}

fn callers() -> Vec<Caller> {
    let mut callers = vec![
        Caller::NoKey,
        Caller::Malformed,
        Caller::Unknown,
        Caller::Revoked,
    ];
    callers.extend(Role::ALL.into_iter().map(Caller::Role));
    callers
}

#[tokio::test]
async fn every_documented_operation_checks_its_role() {
    let app = TestApp::new().await;
    let (revoked, revoked_record) =
        kept_server::http::auth::create_key(app.store.as_ref(), Role::Admin, "revoked", 0)
            .await
            .unwrap();
    app.store
        .revoke_api_key(&revoked_record.id, 1)
        .await
        .unwrap();
    let unknown = format!("kept_0badc0de_{}", "ab".repeat(32));

    let mut rows: BTreeMap<&str, Endpoint> = BTreeMap::new();
    for endpoint in endpoints() {
        let operation = endpoint.operation;
        assert!(
            rows.insert(operation, endpoint).is_none(),
            "two rows for {operation}"
        );
    }
    let operations = documented_operations();
    let mut failures = Vec::new();
    for operation in rows.keys() {
        if !operations.iter().any(|o| o == operation) {
            failures.push(format!(
                "{operation}: a row for an operation the document lacks"
            ));
        }
    }
    let mut checked = 0;
    for operation in &operations {
        let Some(endpoint) = rows.get(operation.as_str()) else {
            failures.push(format!(
                "{operation}: no row in `endpoints()` says who may call it"
            ));
            continue;
        };
        for caller in callers() {
            // A fresh key to revoke, so that each DELETE has something to delete.
            let (_, victim) =
                kept_server::http::auth::create_key(app.store.as_ref(), Role::Server, "victim", 0)
                    .await
                    .unwrap();
            let path = endpoint
                .path
                .replace("{subject}", &app.subjects[0].0.to_string())
                .replace("{victim}", &victim.id);
            let key = match caller {
                Caller::NoKey => None,
                Caller::Malformed => Some("not-a-kept-key".to_owned()),
                Caller::Unknown => Some(unknown.clone()),
                Caller::Revoked => Some(revoked.expose().to_owned()),
                Caller::Role(role) => Some(app.key(role).to_owned()),
            };
            let body = endpoint.body.map(|b| b(&app));
            let answer = app
                .send(request(
                    endpoint.method(),
                    &path,
                    key.as_deref(),
                    body.as_deref(),
                ))
                .await;
            let (status, code) = match (endpoint.access, caller) {
                (Open, _) => (endpoint.success, None),
                (Key(_), Caller::NoKey) => (StatusCode::UNAUTHORIZED, Some("auth.missing_key")),
                (Key(_), Caller::Malformed | Caller::Unknown | Caller::Revoked) => {
                    (StatusCode::UNAUTHORIZED, Some("auth.invalid_key"))
                }
                (Key(needed), Caller::Role(role)) if role.permits(needed) => {
                    (endpoint.success, None)
                }
                (Key(_), Caller::Role(_)) => (StatusCode::FORBIDDEN, Some("auth.forbidden")),
            };
            checked += 1;
            if answer.status != status || code.is_some_and(|c| answer.code() != c) {
                failures.push(format!(
                    "{} {path} as {caller:?}: expected {status} {code:?}, got {} {}",
                    endpoint.method(),
                    answer.status,
                    answer.text
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(checked, operations.len() * callers().len());
}
