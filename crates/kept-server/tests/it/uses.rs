//! The record of uses over HTTP: a recorded contact and an audience export each leave a use
//! with the reason of the decision they went ahead under, the record survives a restart, an
//! overloaded decision log never costs a use, and only the privacy role reads it.
//! (Forwards are in `forward.rs`, next to their receiver.)

use crate::decisions::{add_subject, add_trait};
use crate::support::{Answer, NOW, TestApp, get, post};
use axum::http::StatusCode;
use kept_core::SubjectId;
use kept_server::decide::log::DecisionLog;
use kept_store::Role;
use serde_json::{Value, json};

const MARKETING: &str = "marketing.communications";
const DAY: i64 = 86_400_000;

async fn uses_of(app: &TestApp, subject: SubjectId) -> Vec<Value> {
    let answer = app
        .send(get(
            &format!("/v1/uses?subject={}", subject.0),
            Some(app.key(Role::Privacy)),
        ))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.json["uses"].as_array().unwrap().clone()
}

/// The reason `POST /v1/decisions` gives for marketing email to `subject` now.
async fn reason_now(app: &TestApp, subject: SubjectId) -> String {
    let body = json!({ "subject": { "id": subject.0 }, "purpose": MARKETING, "channel": "email" });
    let answer = app
        .send(post(
            "/v1/decisions",
            Some(app.key(Role::Decide)),
            &body.to_string(),
        ))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.json["reason"].as_str().unwrap().to_owned()
}

async fn contact(app: &TestApp, subject: SubjectId, at: i64) -> Answer {
    let body = json!({ "subject": { "id": subject.0 }, "channel": "email", "purpose": MARKETING, "at": at });
    app.send(post(
        "/v1/contacts",
        Some(app.key(Role::Decide)),
        &body.to_string(),
    ))
    .await
}

async fn export(app: &TestApp, ids: &[SubjectId]) -> Answer {
    let body = json!({
        "purpose": MARKETING,
        "channel": "email",
        "candidates": { "ids": ids.iter().map(|s| s.0).collect::<Vec<_>>() },
    });
    app.send(post(
        "/v1/audiences/export",
        Some(app.key(Role::Decide)),
        &body.to_string(),
    ))
    .await
}

/// Two people in Georgia (no state privacy law: marketing email is allowed until they opt
/// out, once their address was collected where the newsletter is promised).
async fn georgians(app: &TestApp) -> (SubjectId, SubjectId) {
    let a = add_subject(app, "ga-1", Some("US"), Some("GA")).await;
    let b = add_subject(app, "ga-2", Some("US"), Some("GA")).await;
    for s in [a, b] {
        add_trait(app, s, "email", "user.contact.email", "newsletter_signup").await;
    }
    (a, b)
}

#[tokio::test]
async fn a_recorded_contact_is_a_use_with_its_decision_also_after_a_restart() {
    let app = TestApp::new().await;
    let (ga, _) = georgians(&app).await;
    let allowed = reason_now(&app, ga).await;
    assert_eq!(allowed, "allowed.opt_out_regime");
    // Sent to someone the decisions deny (nothing known of u3): Kept is told, and records
    // that the use went ahead under a denial.
    let nobody = app.subjects[2];
    let denied = reason_now(&app, nobody).await;
    assert!(denied.starts_with("denied."), "{denied}");

    for (who, at) in [(ga, NOW - DAY), (nobody, NOW - 2 * DAY)] {
        let answer = contact(&app, who, at).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    }
    let check = |uses: Vec<Value>, reason: &str, allowed: bool, at: i64| {
        assert_eq!(uses.len(), 1, "{uses:?}");
        let u = &uses[0];
        assert_eq!(u["kind"], "contact");
        assert_eq!(u["reason"], reason);
        assert_eq!(u["allowed"], allowed);
        assert_eq!(u["purpose"], MARKETING);
        assert_eq!(u["channel"], "email");
        assert_eq!(u["categories"], json!(["user.contact.email"]));
        assert_eq!(u["at"], at);
        assert_eq!(u["subjects"], 1);
        assert!(u["actor"].as_str().unwrap().starts_with("kept_"), "{u}");
        assert!(u["evidence"].is_array(), "{u}");
    };
    check(uses_of(&app, ga).await, &allowed, true, NOW - DAY);
    check(uses_of(&app, nobody).await, &denied, false, NOW - 2 * DAY);
    let evidence = uses_of(&app, ga).await[0]["evidence"].clone();
    assert_eq!(evidence[0]["kind"], "provenance", "{evidence}");

    let app = app.restart().await;
    check(uses_of(&app, ga).await, &allowed, true, NOW - DAY);
    check(uses_of(&app, nobody).await, &denied, false, NOW - 2 * DAY);
}

#[tokio::test]
async fn an_export_records_every_subject_it_held_before_the_first_byte() {
    let app = TestApp::new().await;
    let (a, b) = georgians(&app).await;
    let left_out = app.subjects[2];
    let answer = export(&app, &[a, b, left_out]).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.headers["x-kept-eligible"], "2");
    let reference = answer.headers["x-kept-export-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(reference.starts_with("exp_"), "{reference}");
    assert_eq!(answer.text.lines().count(), 2);

    for s in [a, b] {
        let uses = uses_of(&app, s).await;
        assert_eq!(uses.len(), 1, "{uses:?}");
        let u = &uses[0];
        assert_eq!(u["kind"], "export");
        assert_eq!(u["reference"], reference.as_str());
        assert_eq!(u["reason"], reason_now(&app, s).await);
        assert_eq!(u["allowed"], true);
        assert_eq!(u["subjects"], 2);
        assert_eq!(u["evidence"]["eligible"], 2);
        assert_eq!(u["evidence"]["by_reason"]["allowed.opt_out_regime"], 2);
        assert_eq!(u["evidence"]["excluded"].as_object().unwrap().len(), 1);
    }
    assert!(
        uses_of(&app, left_out).await.is_empty(),
        "not exported, not used"
    );

    // A second export: newest first, and the record survives a restart.
    let again = export(&app, &[a]).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    let app = app.restart().await;
    let uses = uses_of(&app, a).await;
    assert_eq!(uses.len(), 2);
    assert_eq!(
        uses[0]["reference"],
        again.headers["x-kept-export-id"].to_str().unwrap()
    );
    assert_eq!(uses[1]["reference"], reference.as_str());
    assert_eq!(uses_of(&app, b).await.len(), 1);
}

#[tokio::test]
async fn a_full_decision_log_drops_questions_but_never_a_use() {
    let mut app = TestApp::new().await;
    // No room at all: every entry the log would keep is dropped, as under overload.
    app.state = app
        .state
        .clone()
        .with_decision_log(DecisionLog::start_with_capacity(app.store.clone(), 0));
    let (ga, other) = georgians(&app).await;
    let nobody = app.subjects[2];
    // Denials are always logged, so these three would have been: all dropped.
    for _ in 0..3 {
        reason_now(&app, nobody).await;
    }
    assert_eq!(contact(&app, ga, NOW).await.status, StatusCode::CREATED);
    assert_eq!(export(&app, &[ga, other]).await.status, StatusCode::OK);
    app.state.decision_log.flush().await;

    let log = app
        .send(get("/v1/decision-log", Some(app.key(Role::Privacy))))
        .await;
    assert_eq!(log.status, StatusCode::OK, "{}", log.text);
    assert_eq!(log.json["entries"], json!([]));
    assert_eq!(log.json["dropped_since_start"], 3, "{}", log.text);

    let kinds: Vec<Value> = uses_of(&app, ga)
        .await
        .iter()
        .map(|u| u["kind"].clone())
        .collect();
    assert_eq!(kinds, [json!("export"), json!("contact")]);
    assert_eq!(uses_of(&app, other).await.len(), 1);
}

#[tokio::test]
async fn only_the_privacy_role_reads_uses_and_bad_input_names_the_field() {
    let app = TestApp::new().await;
    let path = format!("/v1/uses?subject={}", app.subjects[0].0);
    for (role, status) in [
        (Role::Public, StatusCode::FORBIDDEN),
        (Role::Decide, StatusCode::FORBIDDEN),
        (Role::Privacy, StatusCode::OK),
        (Role::Admin, StatusCode::OK),
    ] {
        let answer = app.send(get(&path, Some(app.key(role)))).await;
        assert_eq!(answer.status, status, "{role:?}: {}", answer.text);
    }
    assert_eq!(
        app.send(get(&path, None)).await.status,
        StatusCode::UNAUTHORIZED
    );

    let privacy = Some(app.key(Role::Privacy));
    for (query, field) in [
        ("", "subject"),
        ("?subject=x", "subject"),
        ("?subject=-1", "subject"),
        ("?subject=1&limit=0", "limit"),
        ("?subject=1&limit=1001", "limit"),
        ("?subject=1&before=soon", "before"),
    ] {
        let answer = app.send(get(&format!("/v1/uses{query}"), privacy)).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}: {}",
            answer.text
        );
        assert_eq!(answer.code(), "request.invalid_field", "{query}");
        assert_eq!(
            answer.json["error"]["field"], field,
            "{query}: {}",
            answer.text
        );
    }
    let unknown = app.send(get("/v1/uses?subject=1&who=me", privacy)).await;
    assert_eq!(
        unknown.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        unknown.text
    );
}

#[tokio::test]
async fn uses_page_newest_first_with_a_cursor() {
    let app = TestApp::new().await;
    let (ga, _) = georgians(&app).await;
    for i in 0..5 {
        assert_eq!(
            contact(&app, ga, NOW - (10 - i) * DAY).await.status,
            StatusCode::CREATED
        );
    }
    let privacy = Some(app.key(Role::Privacy));
    let mut seen = Vec::new();
    let mut path = format!("/v1/uses?subject={}&limit=2", ga.0);
    loop {
        let page = app.send(get(&path, privacy)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        seen.extend(
            page.json["uses"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["at"].as_i64().unwrap()),
        );
        match page.json["next_before"].as_u64() {
            Some(before) => path = format!("/v1/uses?subject={}&limit=2&before={before}", ga.0),
            None => break,
        }
    }
    let want: Vec<i64> = (0..5).rev().map(|i| NOW - (10 - i) * DAY).collect();
    assert_eq!(seen, want);
}

#[tokio::test]
async fn a_profile_read_is_a_use_of_each_category_it_showed() {
    let app = TestApp::new().await;
    let (ga, _) = georgians(&app).await;
    // A trait the purpose may not see (collected where marketing was never promised).
    add_trait(
        &app,
        ga,
        "phone",
        "user.contact.phone_number",
        "rewards_signup",
    )
    .await;
    let path = format!(
        "/v1/subjects/{}/profile?purpose={MARKETING}&channel=email",
        ga.0
    );
    let answer = app.send(get(&path, Some(app.key(Role::Decide)))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(
        answer.json["traits"].as_array().unwrap().len(),
        1,
        "{}",
        answer.text
    );
    assert_eq!(
        answer.json["withheld"].as_array().unwrap().len(),
        1,
        "{}",
        answer.text
    );

    let uses = uses_of(&app, ga).await;
    assert_eq!(uses.len(), 1, "only the category shown: {uses:?}");
    let u = &uses[0];
    assert_eq!(u["kind"], "profile");
    assert_eq!(u["categories"], json!(["user.contact.email"]));
    assert_eq!(u["reason"], reason_now(&app, ga).await);
    assert_eq!(u["allowed"], true);
    assert!(u["actor"].as_str().unwrap().starts_with("kept_"), "{u}");

    // Nothing shown, nothing used.
    let nobody = app.subjects[2];
    let answer = app
        .send(get(
            &format!("/v1/subjects/{}/profile?purpose={MARKETING}", nobody.0),
            Some(app.key(Role::Decide)),
        ))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert!(uses_of(&app, nobody).await.is_empty());
}

/// When the record of uses cannot be written, the use does not happen: no contact is stored,
/// no export is sent. Nothing is half-written.
#[tokio::test]
async fn a_use_that_cannot_be_recorded_does_not_happen() {
    let app = TestApp::new().await;
    let (ga, other) = georgians(&app).await;
    app.refuse_uses().await;

    let refused = contact(&app, ga, NOW).await;
    assert!(refused.status.is_server_error(), "{}", refused.text);
    assert!(refused.code().starts_with("store."), "{}", refused.text);
    assert!(
        app.store.contacts_since(0).await.unwrap().is_empty(),
        "the contact is not stored"
    );
    let refused = export(&app, &[ga, other]).await;
    assert!(refused.status.is_server_error(), "{}", refused.text);
    assert!(
        !refused.text.contains("\"id\""),
        "no subject leaves: {}",
        refused.text
    );
    let profile = format!(
        "/v1/subjects/{}/profile?purpose={MARKETING}&channel=email",
        ga.0
    );
    let refused = app.send(get(&profile, Some(app.key(Role::Decide)))).await;
    assert!(refused.status.is_server_error(), "{}", refused.text);
    assert!(
        !refused.text.contains("email of"),
        "no trait leaves: {}",
        refused.text
    );

    app.allow_uses().await;
    assert_eq!(contact(&app, ga, NOW).await.status, StatusCode::CREATED);
    assert_eq!(app.store.contacts_since(0).await.unwrap().len(), 1);
    assert_eq!(uses_of(&app, ga).await.len(), 1);
}
