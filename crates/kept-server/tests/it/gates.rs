//! The gates data subject requests put on a subject, over HTTP and on whichever backend the
//! tests run on: in force when a restriction, objection, opt-out of sale or limit on sensitive
//! data enters `in_progress`, denying with their own reason in decisions, audiences and the
//! decision log; necessary uses pass; a restriction lifts, the others stand; a restart keeps
//! them; a scope naming nothing is refused with the field named.

use crate::support::{Answer, TestApp, get, post};
use axum::http::StatusCode;
use kept_store::Role;
use serde_json::{Value, json};

const MARKETING: &str = "marketing.communications";
const ADS: &str = "marketing.advertising.third_party.targeted";
const PROFILED: &str = "personalize.content.profiled";
const OPERATIONS: &str = "essential.service.operations";

async fn send(app: &TestApp, path: &str, role: Role, body: Value) -> Answer {
    app.send(post(path, Some(app.key(role)), &body.to_string()))
        .await
}

/// Files a request of `kind` for `user` and takes it to `in_progress`; returns its id.
async fn in_progress(app: &TestApp, user: &str, kind: &str, scope: Value) -> u64 {
    let filed = send(
        app,
        "/v1/requests",
        Role::Privacy,
        json!({ "subject": { "user_id": user }, "kind": kind, "scope": scope,
                "verification": { "method": "company_stated", "reference": "case-9" } }),
    )
    .await;
    assert_eq!(filed.status, StatusCode::CREATED, "{}", filed.text);
    let id = filed.json["id"].as_u64().unwrap();
    for to in ["verified", "in_progress"] {
        let stepped = send(
            app,
            &format!("/v1/requests/{id}/advance"),
            Role::Privacy,
            json!({ "to": to }),
        )
        .await;
        assert_eq!(stepped.status, StatusCode::OK, "{}", stepped.text);
    }
    id
}

/// The reasons of one decision per request, for `user`.
async fn reasons(app: &TestApp, user: &str, requests: &[Value]) -> Vec<String> {
    let requests: Vec<Value> = requests
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r["subject"] = json!({ "user_id": user });
            r
        })
        .collect();
    let answer = send(
        app,
        "/v1/decisions",
        Role::Decide,
        json!({ "requests": requests }),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.json["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["reason"].as_str().unwrap().to_owned())
        .collect()
}

fn uses() -> Vec<Value> {
    vec![
        json!({ "purpose": MARKETING }),
        json!({ "purpose": ADS }),
        json!({ "purpose": PROFILED }),
        json!({ "purpose": OPERATIONS }),
    ]
}

fn allowed(reasons: &[String]) -> bool {
    reasons.iter().all(|r| r.starts_with("allowed."))
}

#[tokio::test]
async fn a_restriction_denies_all_but_necessary_uses_until_it_is_lifted() {
    let app = TestApp::new().await;
    // u2 is in California: everything here is allowed until they say otherwise.
    assert!(allowed(&reasons(&app, "u2", &uses()).await));
    let id = in_progress(&app, "u2", "restriction", json!({})).await;
    let restricted = reasons(&app, "u2", &uses()).await;
    assert_eq!(
        restricted[..3],
        ["denied.restricted_by_request"; 3],
        "{restricted:?}"
    );
    assert!(restricted[3].starts_with("allowed."), "{restricted:?}");

    // The decision names the request; the decision log and audiences keep the reason.
    let one = send(
        &app,
        "/v1/decisions",
        Role::Decide,
        json!({ "subject": { "user_id": "u2" }, "purpose": MARKETING }),
    )
    .await;
    assert_eq!(
        one.json["evidence"],
        json!([{ "kind": "request", "id": id }]),
        "{}",
        one.text
    );
    app.state.decision_log.flush().await;
    let logged = app
        .send(get(
            "/v1/decision-log?reason=denied.restricted_by_request",
            Some(app.key(Role::Privacy)),
        ))
        .await;
    assert_eq!(logged.status, StatusCode::OK, "{}", logged.text);
    assert!(!logged.json["entries"].as_array().unwrap().is_empty());
    let audience = send(
        &app,
        "/v1/audiences/evaluate",
        Role::Decide,
        json!({ "purpose": ADS }),
    )
    .await;
    assert_eq!(audience.status, StatusCode::OK, "{}", audience.text);
    assert!(
        audience.json["excluded"]
            .as_array()
            .unwrap()
            .contains(&json!({ "reason": "denied.restricted_by_request", "count": 1 })),
        "{}",
        audience.text
    );

    // Applying again changes nothing; lifting needs a reason and is logged.
    let again = send(
        &app,
        &format!("/v1/requests/{id}/apply"),
        Role::Privacy,
        json!({}),
    )
    .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    let blank = send(
        &app,
        &format!("/v1/requests/{id}/lift"),
        Role::Privacy,
        json!({ "reason": " " }),
    )
    .await;
    assert_eq!(
        blank.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        blank.text
    );
    assert_eq!(blank.json["error"]["field"], "reason");
    let lifted = send(
        &app,
        &format!("/v1/requests/{id}/lift"),
        Role::Privacy,
        json!({ "reason": "accuracy verified" }),
    )
    .await;
    assert_eq!(lifted.status, StatusCode::OK, "{}", lifted.text);
    let last = lifted.json["log"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["detail"]["gate"], "lifted");
    assert_eq!(last["reason"], "accuracy verified");
    assert!(allowed(&reasons(&app, "u2", &uses()).await));

    // Lifted stays lifted after a restart, and applying the request again does not put it back.
    let app = app.restart().await;
    assert!(allowed(&reasons(&app, "u2", &uses()).await));
    let again = send(
        &app,
        &format!("/v1/requests/{id}/apply"),
        Role::Privacy,
        json!({}),
    )
    .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert!(allowed(&reasons(&app, "u2", &uses()).await));
}

#[tokio::test]
async fn objections_and_opt_outs_deny_their_uses_and_stand_after_a_restart() {
    let app = TestApp::new().await;
    let objection = in_progress(&app, "u2", "objection", json!({ "purposes": [MARKETING] })).await;
    let objected = reasons(&app, "u2", &uses()).await;
    // An objection to direct marketing reaches all of it and the profiling behind it.
    assert_eq!(
        objected[..3],
        ["denied.objected_by_request"; 3],
        "{objected:?}"
    );
    assert!(objected[3].starts_with("allowed."));

    // u3's place is unknown: ads need consent there, but the opt-out is the first to answer.
    in_progress(&app, "u3", "opt_out", json!({})).await;
    in_progress(&app, "u3", "limit_sensitive", json!({})).await;
    let u3 = [
        json!({ "purpose": ADS }),
        json!({ "purpose": MARKETING, "categories": ["user.health_and_medical"] }),
        json!({ "purpose": OPERATIONS }),
    ];
    let before = reasons(&app, "u3", &u3).await;
    assert_eq!(before[0], "denied.opted_out_of_sale", "{before:?}");
    assert_eq!(before[1], "denied.sensitive_use_limited", "{before:?}");
    assert_ne!(before[2], "denied.sensitive_use_limited");

    // Neither is lifted: it stands until the person consents again.
    let refused = send(
        &app,
        &format!("/v1/requests/{objection}/lift"),
        Role::Privacy,
        json!({ "reason": "changed our mind" }),
    )
    .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text);
    assert_eq!(refused.json["error"]["code"], "request.not_liftable");

    let app = app.restart().await;
    assert_eq!(reasons(&app, "u2", &uses()).await, objected);
    assert_eq!(reasons(&app, "u3", &u3).await, before);
}

#[tokio::test]
async fn a_scope_naming_nothing_and_an_early_apply_are_refused() {
    let app = TestApp::new().await;
    for (scope, kind, field) in [
        (
            json!({ "purposes": ["marketing", "nope.nothing"] }),
            "restriction",
            "scope.purposes[1]",
        ),
        (
            json!({ "categories": ["user.nothing"] }),
            "restriction",
            "scope.categories[0]",
        ),
        (
            json!({ "categories": ["user.contact"] }),
            "objection",
            "scope.categories",
        ),
    ] {
        let answer = send(
            &app,
            "/v1/requests",
            Role::Privacy,
            json!({ "subject": { "user_id": "u1" }, "kind": kind, "scope": scope }),
        )
        .await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            answer.text
        );
        assert_eq!(answer.json["error"]["field"], field, "{}", answer.text);
    }
    let filed = send(
        &app,
        "/v1/requests",
        Role::Privacy,
        json!({ "subject": { "user_id": "u1" }, "kind": "restriction" }),
    )
    .await;
    let id = filed.json["id"].as_u64().unwrap();
    for action in ["apply", "lift"] {
        let early = send(
            &app,
            &format!("/v1/requests/{id}/{action}"),
            Role::Privacy,
            json!({ "reason": "too soon" }),
        )
        .await;
        assert_eq!(early.status, StatusCode::CONFLICT, "{}", early.text);
    }
    let missing = send(&app, "/v1/requests/424242/apply", Role::Privacy, json!({})).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.text);
}
