//! Every protected endpoint × every caller: no key, a malformed key, a well-formed unknown key,
//! a revoked key, and a key of each role. Each answer must be exactly what the endpoint's role
//! allows.

use crate::support::{TestApp, newsletter_consent, request};
use axum::http::StatusCode;
use kept_store::Role;

#[derive(Debug, Clone, Copy)]
enum Caller {
    NoKey,
    Malformed,
    Unknown,
    Revoked,
    Role(Role),
}

struct Endpoint {
    method: &'static str,
    /// `{subject}` and `{victim}` are filled in per request.
    path: &'static str,
    body: Option<fn(&TestApp) -> String>,
    role: Role,
    success: StatusCode,
}

fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint {
            method: "POST",
            path: "/v1/consents",
            body: Some(|app| newsletter_consent(app.subjects[0])),
            role: Role::Privacy,
            success: StatusCode::CREATED,
        },
        Endpoint {
            method: "GET",
            path: "/v1/subjects/{subject}/consents",
            body: None,
            role: Role::Privacy,
            success: StatusCode::OK,
        },
        Endpoint {
            method: "GET",
            path: "/v1/ledger",
            body: None,
            role: Role::Privacy,
            success: StatusCode::OK,
        },
        Endpoint {
            method: "GET",
            path: "/v1/keys",
            body: None,
            role: Role::Admin,
            success: StatusCode::OK,
        },
        Endpoint {
            method: "POST",
            path: "/v1/keys",
            body: Some(|_| r#"{"role": "decide", "name": "matrix"}"#.to_owned()),
            role: Role::Admin,
            success: StatusCode::CREATED,
        },
        Endpoint {
            method: "DELETE",
            path: "/v1/keys/{victim}",
            body: None,
            role: Role::Admin,
            success: StatusCode::NO_CONTENT,
        },
        Endpoint {
            method: "POST",
            path: "/v1/decisions",
            body: Some(|_| {
                r#"{"subject": {"user_id": "u1"}, "purpose": "marketing.communications"}"#
                    .to_owned()
            }),
            role: Role::Decide,
            success: StatusCode::OK,
        },
        Endpoint {
            method: "POST",
            path: "/v1/contacts",
            body: Some(|_| {
                r#"{"subject": {"user_id": "u1"}, "channel": "email", "purpose": "marketing.communications"}"#
                    .to_owned()
            }),
            role: Role::Decide,
            success: StatusCode::CREATED,
        },
        Endpoint {
            method: "POST",
            path: "/v1/audiences/evaluate",
            body: Some(|_| {
                r#"{"purpose": "marketing.communications", "channel": "sms"}"#.to_owned()
            }),
            role: Role::Decide,
            success: StatusCode::OK,
        },
        Endpoint {
            method: "POST",
            path: "/v1/audiences/export?format=csv",
            body: Some(|_| r#"{"purpose": "loyalty.rewards"}"#.to_owned()),
            role: Role::Decide,
            success: StatusCode::OK,
        },
        Endpoint {
            method: "GET",
            path: "/v1/subjects/{subject}/profile?purpose=loyalty.rewards",
            body: None,
            role: Role::Decide,
            success: StatusCode::OK,
        },
        Endpoint {
            method: "GET",
            path: "/v1/merges?limit=10",
            body: None,
            role: Role::Privacy,
            success: StatusCode::OK,
        },
        Endpoint {
            method: "GET",
            path: "/v1/quarantine?limit=10",
            body: None,
            role: Role::Admin,
            success: StatusCode::OK,
        },
        Endpoint {
            method: "POST",
            path: "/v1/merges/999999/undo",
            body: None,
            role: Role::Privacy,
            success: StatusCode::NOT_FOUND,
        },
        Endpoint {
            method: "GET",
            path: "/v1/decision-log?limit=10",
            body: None,
            role: Role::Privacy,
            success: StatusCode::OK,
        },
        Endpoint {
            method: "GET",
            path: "/v1/uses?subject={subject}",
            body: None,
            role: Role::Privacy,
            success: StatusCode::OK,
        },
        Endpoint {
            method: "POST",
            path: "/v1/track",
            body: Some(|_| r#"{"anonymousId": "matrix", "event": "Checked"}"#.to_owned()),
            role: Role::Public,
            success: StatusCode::OK,
        },
        Endpoint {
            method: "POST",
            path: "/v1/batch",
            body: Some(|_| {
                r#"{"batch": [{"type": "page", "anonymousId": "matrix", "name": "Home"}]}"#
                    .to_owned()
            }),
            role: Role::Public,
            success: StatusCode::OK,
        },
        Endpoint {
            method: "GET",
            path: "/v1/subjects/lookup?user_id=u1",
            body: None,
            role: Role::Privacy,
            success: StatusCode::OK,
        },
        Endpoint {
            method: "GET",
            path: "/v1/subjects/{subject}/events",
            body: None,
            role: Role::Privacy,
            success: StatusCode::OK,
        },
        Endpoint {
            method: "POST",
            path: "/v1/subjects/{subject}/preference-link",
            body: Some(|_| r#"{"ttl_minutes": 10}"#.to_owned()),
            role: Role::Privacy,
            success: StatusCode::CREATED,
        },
        Endpoint {
            method: "GET",
            path: "/v1/subjects/{subject}/preferences",
            body: None,
            role: Role::Privacy,
            success: StatusCode::OK,
        },
        Endpoint {
            method: "PUT",
            path: "/v1/subjects/{subject}/preferences",
            body: Some(|_| r#"{"do_not_sell": true}"#.to_owned()),
            role: Role::Privacy,
            success: StatusCode::OK,
        },
        Endpoint {
            method: "PUT",
            path: "/v1/keys/{victim}/collection-point",
            body: Some(|_| r#"{"collection_point": "checkout"}"#.to_owned()),
            role: Role::Admin,
            success: StatusCode::OK,
        },
    ]
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
async fn every_endpoint_checks_its_role() {
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

    let mut failures = Vec::new();
    let mut checked = 0;
    for endpoint in endpoints() {
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
                    endpoint.method,
                    &path,
                    key.as_deref(),
                    body.as_deref(),
                ))
                .await;
            let (status, code) = match caller {
                Caller::NoKey => (StatusCode::UNAUTHORIZED, Some("auth.missing_key")),
                Caller::Malformed | Caller::Unknown | Caller::Revoked => {
                    (StatusCode::UNAUTHORIZED, Some("auth.invalid_key"))
                }
                Caller::Role(role) if role.permits(endpoint.role) => (endpoint.success, None),
                Caller::Role(_) => (StatusCode::FORBIDDEN, Some("auth.forbidden")),
            };
            checked += 1;
            if answer.status != status || code.is_some_and(|c| answer.code() != c) {
                failures.push(format!(
                    "{} {} as {caller:?}: expected {status} {code:?}, got {} {}",
                    endpoint.method, endpoint.path, answer.status, answer.text
                ));
            }
        }
    }
    assert_eq!(checked, endpoints().len() * callers().len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
