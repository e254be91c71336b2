//! Several servers on one database: what one writes, the others decide on (PostgreSQL's
//! LISTEN/NOTIFY), and an index built again from the store after announcements were missed.

use crate::decisions::add_trait;
use crate::support::{Answer, NOW, TestApp, newsletter_consent, post, send};
use axum::http::StatusCode;
use kept_core::ledger::{CollectionMethod, ConsentAction, ConsentRecord, Evidence, NoticeRef};
use kept_server::AppState;
use kept_store::{Backend, Role};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const MARKETING: &str = "marketing.communications";

fn newsletter(user_id: &str) -> String {
    json!({
        "subject": {"user_id": user_id},
        "purpose": MARKETING,
        "channel": "email",
        "topic": "newsletter",
    })
    .to_string()
}

async fn reason(router: axum::Router, app: &TestApp, user_id: &str) -> String {
    let answer: Answer = send(
        router,
        post(
            "/v1/decisions",
            Some(app.key(Role::Decide)),
            &newsletter(user_id),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.json["reason"].as_str().unwrap().to_owned()
}

/// Appends consent records through `router`'s consent API.
async fn append(router: axum::Router, app: &TestApp, body: &str) {
    let answer = send(
        router,
        post("/v1/consents", Some(app.key(Role::Privacy)), body),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
}

/// The newsletter consent of `subject`, withdrawn.
fn withdrawal(subject: kept_core::SubjectId) -> String {
    newsletter_consent(subject).replace("\"given\"", "\"withdrawn\"")
}

/// Asks `router` until the answer for `user_id` is `want`, for at most ten seconds.
async fn eventually(router: &axum::Router, app: &TestApp, user_id: &str, want: &str) {
    let mut last = String::new();
    for _ in 0..200 {
        last = reason(router.clone(), app, user_id).await;
        if last == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the other server still answers `{last}` for {user_id}, not `{want}`");
}

#[tokio::test]
async fn what_one_server_writes_the_other_decides_on() {
    let app = TestApp::new().await;
    if app.store.backend() != Backend::Postgres {
        eprintln!(
            "skipped: servers share a database only on PostgreSQL (set KEPT_TEST_BACKEND=postgres)"
        );
        assert!(app.store.listen().await.unwrap().is_none());
        return;
    }
    // Server A is the test app; server B shares its database and builds its own index.
    let heard_a = app.store.listen().await.unwrap().unwrap();
    kept_server::sync::spawn(app.state.follower(), heard_a);
    // The email came from the newsletter form, whose notice promises the newsletter.
    let subject = app.subjects[0];
    add_trait(
        &app,
        subject,
        "email",
        "user.contact.email",
        "newsletter_signup",
    )
    .await;
    let b = AppState::new(
        app.store.clone(),
        app.state.ledger.clone(),
        app.state.manifest.clone(),
    )
    .with_clock(Arc::new(|| NOW));
    let heard_b = b.store.listen().await.unwrap().unwrap();
    b.index
        .load(b.store.as_ref(), NOW, &mut |_| {})
        .await
        .unwrap();
    kept_server::sync::spawn(b.follower(), heard_b);
    let on_b = kept_server::router(b.clone());
    assert_eq!(reason(on_b.clone(), &app, "u1").await, "denied.no_consent");

    // A consent given through A...
    append(app.router(), &app, &newsletter_consent(subject)).await;
    assert_eq!(reason(app.router(), &app, "u1").await, "allowed.consent");
    // ...is honoured by B, and so is its withdrawal (from the newsletter topic).
    eventually(&on_b, &app, "u1", "allowed.consent").await;
    append(app.router(), &app, &withdrawal(subject)).await;
    eventually(&on_b, &app, "u1", "denied.unsubscribed").await;

    // A person first seen by A (through collection) is known to B by their user id.
    let identify = json!({
        "userId": "zoe",
        "traits": {"email": "zoe@example.com"},
        "context": {
            "location": {"country": "DE"},
            "kept": {"collection_point": "newsletter_signup"},
        },
    });
    let answer = app
        .send(
            axum::http::Request::post("/v1/identify")
                .header(
                    axum::http::header::AUTHORIZATION,
                    format!("Bearer {}", app.key(Role::Server)),
                )
                .header(axum::http::header::CONTENT_TYPE, "application/json")
                .body(axum::body::Body::from(identify.to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    eventually(&on_b, &app, "zoe", "denied.no_consent").await;

    // B's own writes reach A the same way.
    let zoe = b.index.directory().unwrap().subject("zoe").unwrap();
    append(on_b.clone(), &app, &newsletter_consent(zoe)).await;
    eventually(&app.router(), &app, "zoe", "allowed.consent").await;
    // Each server serves from its index the choices the shared store holds.
    assert!(crate::support::preference_reads_agree(&app.state).await > 0);
    assert!(crate::support::preference_reads_agree(&b).await > 0);
}

#[tokio::test]
async fn the_index_built_again_holds_what_it_missed() {
    let app = TestApp::new().await;
    let subject = app.subjects[0];
    add_trait(
        &app,
        subject,
        "email",
        "user.contact.email",
        "newsletter_signup",
    )
    .await;
    let notice = &app.state.manifest.notices["newsletter"];
    // Written to the store behind the index's back, as another server's write whose
    // announcement was lost.
    app.state
        .ledger
        .append(ConsentRecord {
            subject,
            purpose: MARKETING.into(),
            channel: Some("email".into()),
            topic: Some("newsletter".into()),
            action: ConsentAction::Given,
            notice: Some(NoticeRef {
                id: "newsletter".into(),
                version: notice.version,
                hash: notice.content_hash("newsletter"),
            }),
            regime: "gdpr".into(),
            source: "api".into(),
            method: CollectionMethod::DoubleOptIn,
            evidence: Evidence::default(),
            at: NOW,
        })
        .await
        .unwrap();
    assert_eq!(reason(app.router(), &app, "u1").await, "denied.no_consent");
    let report = app
        .state
        .index
        .reload(app.store.as_ref(), NOW)
        .await
        .unwrap();
    assert_eq!(report.subjects, 3);
    assert_eq!(report.records, 1);
    assert_eq!(reason(app.router(), &app, "u1").await, "allowed.consent");
    // Writes after the build apply as before.
    append(app.router(), &app, &withdrawal(subject)).await;
    assert_eq!(
        reason(app.router(), &app, "u1").await,
        "denied.unsubscribed"
    );
}

#[tokio::test]
async fn a_merge_and_its_undo_reach_the_other_server() {
    let app = TestApp::new().await;
    if app.store.backend() != Backend::Postgres {
        eprintln!(
            "skipped: servers share a database only on PostgreSQL (set KEPT_TEST_BACKEND=postgres)"
        );
        return;
    }
    let heard_a = app.store.listen().await.unwrap().unwrap();
    kept_server::sync::spawn(app.state.follower(), heard_a);
    let collect = |body: serde_json::Value, path: &str| {
        axum::http::Request::post(path)
            .header(
                axum::http::header::AUTHORIZATION,
                format!("Bearer {}", app.key(Role::Server)),
            )
            .header(axum::http::header::CONTENT_TYPE, "application/json")
            .body(axum::body::Body::from(body.to_string()))
            .unwrap()
    };
    for user in ["mia", "max"] {
        let answer = app
            .send(collect(
                json!({"userId": user, "context": {"location": {"country": "DE"}}}),
                "/v1/identify",
            ))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    }
    // Only Max subscribed, through the newsletter form.
    let max = app.state.index.directory().unwrap().subject("max").unwrap();
    add_trait(
        &app,
        max,
        "email",
        "user.contact.email",
        "newsletter_signup",
    )
    .await;
    // Server B shares the database and builds its own index.
    let b = AppState::new(
        app.store.clone(),
        app.state.ledger.clone(),
        app.state.manifest.clone(),
    )
    .with_clock(Arc::new(|| NOW));
    let heard_b = b.store.listen().await.unwrap().unwrap();
    b.index
        .load(b.store.as_ref(), NOW, &mut |_| {})
        .await
        .unwrap();
    kept_server::sync::spawn(b.follower(), heard_b);
    let on_b = kept_server::router(b.clone());
    append(app.router(), &app, &newsletter_consent(max)).await;
    assert_eq!(reason(app.router(), &app, "max").await, "allowed.consent");
    eventually(&on_b, &app, "max", "allowed.consent").await;
    let mia_alone = reason(app.router(), &app, "mia").await;
    assert!(mia_alone.starts_with("denied."), "{mia_alone}");
    eventually(&on_b, &app, "mia", &mia_alone).await;

    // The shop merges Mia into Max through A: B answers for Mia as for Max...
    let answer = app
        .send(collect(
            json!({"userId": "max", "previousId": "mia"}),
            "/v1/alias",
        ))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    eventually(&on_b, &app, "mia", "allowed.consent").await;
    // ...until the privacy team undoes it on A.
    let log = app
        .send(crate::support::get(
            "/v1/merges",
            Some(app.key(Role::Privacy)),
        ))
        .await;
    let id = log.json["entries"][0]["id"].as_i64().unwrap();
    let undone = app
        .send(crate::support::request(
            "POST",
            &format!("/v1/merges/{id}/undo"),
            Some(app.key(Role::Privacy)),
            None,
        ))
        .await;
    assert_eq!(undone.status, StatusCode::OK, "{}", undone.text);
    eventually(&on_b, &app, "mia", &mia_alone).await;
    eventually(&on_b, &app, "max", "allowed.consent").await;
}

#[tokio::test]
async fn a_gate_put_on_one_server_is_honoured_by_the_other_and_lifted_there_too() {
    let app = TestApp::new().await;
    if app.store.backend() != Backend::Postgres {
        eprintln!(
            "skipped: servers share a database only on PostgreSQL (set KEPT_TEST_BACKEND=postgres)"
        );
        return;
    }
    let heard_a = app.store.listen().await.unwrap().unwrap();
    kept_server::sync::spawn(app.state.follower(), heard_a);
    let b = AppState::new(
        app.store.clone(),
        app.state.ledger.clone(),
        app.state.manifest.clone(),
    )
    .with_clock(Arc::new(|| NOW));
    let heard_b = b.store.listen().await.unwrap().unwrap();
    b.index
        .load(b.store.as_ref(), NOW, &mut |_| {})
        .await
        .unwrap();
    kept_server::sync::spawn(b.follower(), heard_b);
    let on_b = kept_server::router(b.clone());
    // The gate answers before anything else the newsletter would be denied or allowed by.
    let before = reason(on_b.clone(), &app, "u2").await;
    assert_ne!(before, "denied.restricted_by_request");
    let privacy = |path: &str, body: serde_json::Value| {
        post(path, Some(app.key(Role::Privacy)), &body.to_string())
    };
    let filed = app
        .send(privacy(
            "/v1/requests",
            json!({ "subject": { "user_id": "u2" }, "kind": "restriction",
                    "verification": { "method": "company_stated", "reference": "case-3" } }),
        ))
        .await;
    assert_eq!(filed.status, StatusCode::CREATED, "{}", filed.text);
    let id = filed.json["id"].as_u64().unwrap();
    for to in ["verified", "in_progress"] {
        let stepped = app
            .send(privacy(
                &format!("/v1/requests/{id}/advance"),
                json!({ "to": to }),
            ))
            .await;
        assert_eq!(stepped.status, StatusCode::OK, "{}", stepped.text);
    }
    eventually(&on_b, &app, "u2", "denied.restricted_by_request").await;
    let lifted = app
        .send(privacy(
            &format!("/v1/requests/{id}/lift"),
            json!({ "reason": "accuracy verified" }),
        ))
        .await;
    assert_eq!(lifted.status, StatusCode::OK, "{}", lifted.text);
    eventually(&on_b, &app, "u2", &before).await;
}
