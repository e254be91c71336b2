//! Data subject requests over HTTP, on whichever backend the tests run on: filed with the due
//! date of the subject's regime, taken through their steps, refused with a stable code when a
//! step or an input is wrong, out of reach of every role but `privacy` and `admin`, written
//! with their log in one transaction, and a log whose tampering `verify_log` names.

use crate::support::{Answer, NOW, TestApp, get, post};
use axum::http::StatusCode;
use kept_server::requests::service::{self, VERIFY_ALLOWANCE};
use kept_store::Role;
use serde_json::{Value, json};

const DAY: i64 = 86_400_000;

async fn file(app: &TestApp, body: Value) -> Answer {
    app.send(post(
        "/v1/requests",
        Some(app.key(Role::Privacy)),
        &body.to_string(),
    ))
    .await
}

async fn step(app: &TestApp, id: u64, action: &str, body: Value) -> Answer {
    app.send(post(
        &format!("/v1/requests/{id}/{action}"),
        Some(app.key(Role::Privacy)),
        &body.to_string(),
    ))
    .await
}

async fn filed(app: &TestApp, user: &str, kind: &str) -> u64 {
    let answer = file(app, json!({ "subject": { "user_id": user }, "kind": kind })).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    answer.json["id"].as_u64().unwrap()
}

async fn ledger_keys(app: &TestApp) -> Vec<ed25519_dalek::VerifyingKey> {
    kept_server::consent::ledger::published_verifying_keys(app.store.as_ref())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_request_is_filed_with_the_deadline_of_the_subjects_regime() {
    let app = TestApp::new().await;
    // u1 is in Germany, u2 in California, u3 nowhere known.
    let gdpr = file(
        &app,
        json!({ "subject": { "user_id": "u1" }, "kind": "erasure",
                "scope": { "purposes": ["marketing.communications"] } }),
    )
    .await;
    assert_eq!(gdpr.status, StatusCode::CREATED, "{}", gdpr.text);
    assert_eq!(gdpr.json["state"], "received");
    assert_eq!(gdpr.json["regime"], "gdpr");
    assert_eq!(gdpr.json["rule"], "gdpr.requests");
    assert_eq!(gdpr.json["received_at"], NOW);
    assert!(gdpr.json["due_at"].as_i64().unwrap() >= NOW + 28 * DAY);
    assert_eq!(gdpr.json["channel"], "api");
    assert_eq!(gdpr.json["log"][0]["to"], "received");
    assert_eq!(gdpr.json["log"][0]["detail"]["rule"], "gdpr.requests");
    assert!(
        gdpr.json["log"][0]["actor"]
            .as_str()
            .unwrap()
            .starts_with("key:kept_")
    );

    let ccpa = file(
        &app,
        json!({ "subject": { "id": app.subjects[1].0 }, "kind": "access" }),
    )
    .await;
    assert_eq!(ccpa.json["rule"], "ccpa.requests", "{}", ccpa.text);
    assert_eq!(ccpa.json["due_at"], NOW + 45 * DAY);
    assert_eq!(ccpa.json["extension_until"], NOW + 90 * DAY);

    let unknown = file(
        &app,
        json!({ "subject": { "user_id": "u3" }, "kind": "access" }),
    )
    .await;
    assert_eq!(unknown.json["regime"], "strictest", "{}", unknown.text);
    assert_eq!(unknown.json["due_at"], NOW + 15 * DAY);
}

#[tokio::test]
async fn a_request_goes_through_its_steps_and_its_log_shows_each() {
    let app = TestApp::new().await;
    let id = filed(&app, "u2", "erasure").await;
    let unverified = step(&app, id, "advance", json!({})).await;
    assert_eq!(
        unverified.status,
        StatusCode::CONFLICT,
        "{}",
        unverified.text
    );
    assert_eq!(unverified.code(), "request.unverified");
    let verified = step(
        &app,
        id,
        "advance",
        json!({ "to": "verified",
                "verification": { "method": "agent", "agent": "Ada Agent", "reference": "poa-1" } }),
    )
    .await;
    assert_eq!(verified.status, StatusCode::OK, "{}", verified.text);
    assert_eq!(verified.json["state"], "verified");
    assert_eq!(verified.json["verification"]["agent"], "Ada Agent");
    let extended = step(
        &app,
        id,
        "extend",
        json!({ "reason": "three systems hold the data" }),
    )
    .await;
    assert_eq!(extended.status, StatusCode::OK, "{}", extended.text);
    assert_eq!(extended.json["state"], "extended");
    assert_eq!(extended.json["due_at"], NOW + 90 * DAY);
    let twice = step(&app, id, "extend", json!({ "reason": "again" })).await;
    assert_eq!(twice.status, StatusCode::CONFLICT);
    assert_eq!(twice.code(), "request.extended_twice");
    for to in ["in_progress", "completed"] {
        let answer = step(&app, id, "advance", json!({ "to": to })).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        assert_eq!(answer.json["state"], to);
    }
    let closed = step(&app, id, "reject", json!({ "reason": "too late" })).await;
    assert_eq!(closed.status, StatusCode::CONFLICT);
    assert_eq!(closed.code(), "request.closed");

    let shown = app
        .send(get(
            &format!("/v1/requests/{id}"),
            Some(app.key(Role::Privacy)),
        ))
        .await;
    assert_eq!(shown.status, StatusCode::OK);
    let steps: Vec<(Value, Value)> = shown.json["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["from"].clone(), s["to"].clone()))
        .collect();
    assert_eq!(
        steps,
        vec![
            (Value::Null, json!("received")),
            (json!("received"), json!("verified")),
            (json!("verified"), json!("extended")),
            (json!("extended"), json!("in_progress")),
            (json!("in_progress"), json!("completed")),
        ]
    );
    let report = service::verify_log(app.store.as_ref(), &ledger_keys(&app).await, NOW, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.records, 5);
    assert_eq!(report.checkpoints, 5);
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field() {
    let app = TestApp::new().await;
    let cases = [
        (
            json!({ "subject": { "user_id": "u1" }, "kind": "teleport" }),
            "kind",
            StatusCode::UNPROCESSABLE_ENTITY,
            "request.invalid_field",
        ),
        (
            json!({ "subject": { "user_id": "nobody" }, "kind": "access" }),
            "subject.user_id",
            StatusCode::UNPROCESSABLE_ENTITY,
            "request.invalid_field",
        ),
        (
            json!({ "subject": { "email": "nobody@example.com" }, "kind": "access" }),
            "subject.email",
            StatusCode::UNPROCESSABLE_ENTITY,
            "request.invalid_field",
        ),
        (
            json!({ "subject": { "user_id": "u1", "id": 0 }, "kind": "access" }),
            "subject",
            StatusCode::UNPROCESSABLE_ENTITY,
            "request.invalid_field",
        ),
        (
            json!({ "subject": { "user_id": "u1" }, "kind": "access", "channel": "preference_center" }),
            "channel",
            StatusCode::UNPROCESSABLE_ENTITY,
            "request.invalid_field",
        ),
        (
            json!({ "subject": { "user_id": "u1" }, "kind": "access",
                 "verification": { "method": "company_stated" } }),
            "verification.reference",
            StatusCode::UNPROCESSABLE_ENTITY,
            "request.verification",
        ),
    ];
    for (body, field, status, code) in cases {
        let answer = file(&app, body.clone()).await;
        assert_eq!(answer.status, status, "{body}: {}", answer.text);
        assert_eq!(answer.code(), code, "{body}");
        assert_eq!(answer.json["error"]["field"], field, "{body}");
    }
    let id = filed(&app, "u1", "access").await;
    let nul = step(&app, id, "reject", json!({ "reason": "a\u{0}b" })).await;
    assert_eq!(nul.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", nul.text);
    assert_eq!(nul.code(), "request.control_character");
    let huge = app
        .send(get(
            "/v1/requests/18446744073709551615",
            Some(app.key(Role::Privacy)),
        ))
        .await;
    assert_eq!(huge.status, StatusCode::NOT_FOUND);
    let blank = step(&app, id, "reject", json!({ "reason": "  " })).await;
    assert_eq!(blank.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(blank.json["error"]["field"], "reason");
    let far = step(
        &app,
        id,
        "extend",
        json!({ "reason": "x", "until": NOW + 400 * DAY }),
    )
    .await;
    assert_eq!(far.code(), "request.extension_range");
    assert_eq!(far.json["error"]["field"], "until");
    let skip = step(&app, id, "advance", json!({ "to": "completed" })).await;
    assert_eq!(skip.code(), "request.unexpected_step");
    let missing = step(&app, 999_999, "advance", json!({})).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let listed = app
        .send(get(
            "/v1/requests?kind=teleport",
            Some(app.key(Role::Privacy)),
        ))
        .await;
    assert_eq!(listed.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(listed.json["error"]["field"], "kind");
}

#[tokio::test]
async fn no_role_but_privacy_and_admin_files_or_reads_requests() {
    let app = TestApp::new().await;
    let id = filed(&app, "u1", "access").await;
    let body = json!({ "subject": { "user_id": "u1" }, "kind": "erasure" }).to_string();
    for role in [Role::Public, Role::Server, Role::Decide] {
        let key = Some(app.key(role));
        let create = app.send(post("/v1/requests", key, &body)).await;
        assert_eq!(create.status, StatusCode::FORBIDDEN, "{role:?}");
        for path in [format!("/v1/requests/{id}"), "/v1/requests".to_owned()] {
            let read = app.send(get(&path, key)).await;
            assert_eq!(read.status, StatusCode::FORBIDDEN, "{role:?} {path}");
        }
        let advance = app
            .send(post(
                &format!("/v1/requests/{id}/reject"),
                key,
                r#"{"reason":"x"}"#,
            ))
            .await;
        assert_eq!(advance.status, StatusCode::FORBIDDEN, "{role:?}");
    }
    let none = app.send(get("/v1/requests", None)).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    let admin = app
        .send(get("/v1/requests", Some(app.key(Role::Admin))))
        .await;
    assert_eq!(admin.status, StatusCode::OK);
    assert_eq!(admin.json["requests"].as_array().unwrap().len(), 1);
    let shown = app
        .send(get(
            &format!("/v1/requests/{id}"),
            Some(app.key(Role::Privacy)),
        ))
        .await;
    assert_eq!(
        shown.json["state"], "received",
        "nothing the other roles sent took effect"
    );
}

#[tokio::test]
async fn lists_filter_by_state_kind_subject_and_what_is_overdue() {
    let app = TestApp::new().await;
    let a = filed(&app, "u1", "access").await;
    let b = filed(&app, "u3", "erasure").await;
    step(&app, a, "reject", json!({ "reason": "duplicate" })).await;
    let list = |query: &'static str| {
        let app = &app;
        async move {
            let answer = app
                .send(get(
                    &format!("/v1/requests{query}"),
                    Some(app.key(Role::Privacy)),
                ))
                .await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
            answer.json["requests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_u64().unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list("").await, vec![b, a]);
    assert_eq!(list("?state=rejected").await, vec![a]);
    assert_eq!(list("?kind=erasure").await, vec![b]);
    assert_eq!(list("?overdue=true").await, Vec::<u64>::new());
    // u3's strictest deadline is 15 days; u1's a month.
    let due_before = format!("?due_before={}", NOW + 20 * DAY);
    let answer = app
        .send(get(
            &format!("/v1/requests{due_before}"),
            Some(app.key(Role::Privacy)),
        ))
        .await;
    assert_eq!(answer.json["requests"][0]["id"], b);
    let subject = format!("?subject={}", app.subjects[0].0);
    let answer = app
        .send(get(
            &format!("/v1/requests{subject}"),
            Some(app.key(Role::Privacy)),
        ))
        .await;
    assert_eq!(answer.json["requests"][0]["id"], a);
    // Seen from 16 days on, b is overdue, and the gauges say so.
    let counts = app
        .store
        .open_request_counts(NOW + 16 * DAY, service::DUE_SOON)
        .await
        .unwrap();
    assert_eq!((counts.overdue, counts.due_soon), (1, 0));
    let counts = app
        .store
        .open_request_counts(NOW + 10 * DAY, service::DUE_SOON)
        .await
        .unwrap();
    assert_eq!((counts.overdue, counts.due_soon), (0, 1));
    let metrics = app.send(get("/metrics", None)).await;
    assert!(
        metrics.text.contains("kept_requests_due_soon"),
        "{}",
        metrics.text
    );
    assert!(metrics.text.contains("kept_requests_overdue"));
}

#[tokio::test]
async fn a_failed_step_leaves_neither_the_row_nor_the_log_changed() {
    let app = TestApp::new().await;
    let id = filed(&app, "u1", "access").await;
    // The log's insert fails inside the step's transaction, as a crash there would end it.
    if std::env::var("KEPT_TEST_BACKEND").is_ok_and(|b| b == "postgres") {
        app.execute(
            "CREATE FUNCTION refuse_log() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'crash'; END $$; \
             CREATE TRIGGER refuse_log BEFORE INSERT ON request_log FOR EACH ROW \
             EXECUTE FUNCTION refuse_log();",
        )
        .await;
    } else {
        app.execute(
            "CREATE TRIGGER refuse_log BEFORE INSERT ON request_log \
             BEGIN SELECT RAISE(ABORT, 'crash'); END;",
        )
        .await;
    }
    let failed = step(&app, id, "reject", json!({ "reason": "not them" })).await;
    assert!(failed.status.is_server_error(), "{}", failed.text);
    let request = app.store.request(id).await.unwrap().unwrap();
    assert_eq!(request.state.as_str(), "received");
    assert_eq!(request.reason, None);
    assert_eq!(app.store.request_log_of(id).await.unwrap().len(), 1);
    if std::env::var("KEPT_TEST_BACKEND").is_ok_and(|b| b == "postgres") {
        app.execute("DROP TRIGGER refuse_log ON request_log;").await;
    } else {
        app.execute("DROP TRIGGER refuse_log;").await;
    }
    let done = step(&app, id, "reject", json!({ "reason": "not them" })).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text);
    assert_eq!(app.store.request_log_of(id).await.unwrap().len(), 2);
}

/// Opens the log to edits behind Kept's back, as someone with the database would.
async fn unlock_log(app: &TestApp) {
    if std::env::var("KEPT_TEST_BACKEND").is_ok_and(|b| b == "postgres") {
        app.execute(
            "DROP TRIGGER request_log_append_only ON request_log; \
             DROP TRIGGER request_log_checkpoints_append_only ON request_log_checkpoints;",
        )
        .await;
    } else {
        app.execute(
            "DROP TRIGGER request_log_no_update; DROP TRIGGER request_log_no_delete; \
             DROP TRIGGER request_log_checkpoints_no_delete;",
        )
        .await;
    }
}

#[tokio::test]
async fn verify_names_a_changed_a_removed_and_a_cut_off_record() {
    let app = TestApp::new().await;
    for user in ["u1", "u2", "u3"] {
        let id = filed(&app, user, "access").await;
        step(&app, id, "reject", json!({ "reason": "not them" })).await;
    }
    let keys = ledger_keys(&app).await;
    let verdict = service::verify_log(app.store.as_ref(), &keys, NOW, None)
        .await
        .unwrap();
    assert_eq!(verdict.map(|r| r.records), Ok(6));
    unlock_log(&app).await;

    // The last record cut off: its checkpoint is beyond the end.
    app.execute("DELETE FROM request_log WHERE seq = 6").await;
    let cut = service::verify_log(app.store.as_ref(), &keys, NOW, None)
        .await
        .unwrap();
    assert_eq!(cut.unwrap_err().code, "ledger.checkpoint_beyond_end");
    // Cut with its checkpoint too: the record before is still covered; nothing older than the
    // allowance is left uncovered, and what is left verifies (the limit the report states).
    app.execute("DELETE FROM request_log_checkpoints WHERE seq = 6")
        .await;
    let verdict = service::verify_log(app.store.as_ref(), &keys, NOW, None)
        .await
        .unwrap();
    assert_eq!(verdict.map(|r| r.records), Ok(5));

    // A record removed from the middle.
    app.execute("DELETE FROM request_log WHERE seq = 3").await;
    let removed = service::verify_log(app.store.as_ref(), &keys, NOW, None)
        .await
        .unwrap();
    let finding = removed.unwrap_err();
    assert_eq!((finding.code, finding.seq), ("ledger.sequence", 3));

    // A record changed (its reason rewritten in place, same length).
    let app = TestApp::new().await;
    let id = filed(&app, "u1", "access").await;
    step(&app, id, "reject", json!({ "reason": "not them" })).await;
    unlock_log(&app).await;
    let rows = app.store.request_log_rows(0, 10).await.unwrap();
    let mut bytes = rows[1].bytes.clone();
    let at = bytes.windows(8).position(|w| w == b"not them").unwrap();
    bytes[at..at + 8].copy_from_slice(b"is them!");
    app.execute(&format!(
        "UPDATE request_log SET bytes = {} WHERE seq = 2",
        if std::env::var("KEPT_TEST_BACKEND").is_ok_and(|b| b == "postgres") {
            format!("'\\x{}'::bytea", hex::encode(&bytes))
        } else {
            format!("X'{}'", hex::encode(&bytes))
        }
    ))
    .await;
    let changed = service::verify_log(app.store.as_ref(), &ledger_keys(&app).await, NOW, None)
        .await
        .unwrap();
    let finding = changed.unwrap_err();
    assert_eq!((finding.code, finding.seq), ("ledger.hash", 2));
    // Records older than the allowance without a checkpoint are tampering.
    let app = TestApp::new().await;
    app.store
        .file_request(
            kept_core::requests::intake(
                &kept_core::rights::Rights::builtin().unwrap(),
                kept_core::requests::Intake {
                    subject: app.subjects[0],
                    kind: kept_core::requests::RequestKind::Access,
                    scope: Default::default(),
                    channel: kept_core::requests::Channel::Operator,
                    verification: None,
                    regime: kept_core::regime::Regime::Gdpr,
                    region: None,
                    at: NOW,
                },
            )
            .unwrap(),
            "behind kept's back",
        )
        .await
        .unwrap();
    let late = service::verify_log(app.store.as_ref(), &[], NOW + VERIFY_ALLOWANCE + 1, None)
        .await
        .unwrap();
    assert_eq!(late.unwrap_err().code, "requests.uncovered");
}

#[tokio::test]
async fn a_witness_finds_a_tail_cut_away_with_its_checkpoints() {
    let app = TestApp::new().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("requests-witness.log");
    let witness = std::sync::Arc::new(
        kept_server::consent::witness::Witness::open(
            &path,
            None,
            std::time::Duration::from_secs(1),
        )
        .unwrap(),
    );
    let ledger =
        kept_server::consent::ledger::Ledger::new(app.store.clone(), crate::support::signing_key())
            .with_requests_witness(witness);
    let mut ids = Vec::new();
    for subject in &app.subjects[..3] {
        let filed = service::file(
            app.store.as_ref(),
            &ledger,
            kept_core::requests::Intake {
                subject: *subject,
                kind: kept_core::requests::RequestKind::Access,
                scope: Default::default(),
                channel: kept_core::requests::Channel::Operator,
                verification: None,
                regime: kept_core::regime::Regime::Gdpr,
                region: None,
                at: NOW,
            },
            "operator",
        )
        .await
        .unwrap();
        ids.push(filed.request.id);
    }
    let rejected = service::step(
        app.store.as_ref(),
        &ledger,
        ids[2],
        &kept_core::requests::Transition::Reject {
            reason: "not them".to_owned(),
        },
        "operator",
        NOW,
    )
    .await
    .unwrap();
    assert_eq!(rejected.entry.seq, 4);
    ledger.flush_witness().await;
    let (witnessed, torn) = kept_server::consent::witness::read_witness(&path).unwrap();
    assert_eq!(torn, 0);
    assert_eq!(
        witnessed,
        app.store.request_log_checkpoints().await.unwrap()
    );
    let keys = ledger_keys(&app).await;
    let intact = service::verify_log(app.store.as_ref(), &keys, NOW, Some(&witnessed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(intact.witnessed, Some((4, Some(4))));

    // The last two records cut away with their checkpoints: without the witness what is left
    // verifies; with it, the cut is named.
    unlock_log(&app).await;
    app.execute("DELETE FROM request_log WHERE seq >= 3").await;
    app.execute("DELETE FROM request_log_checkpoints WHERE seq >= 3")
        .await;
    let blind = service::verify_log(app.store.as_ref(), &keys, NOW, None)
        .await
        .unwrap();
    assert_eq!(blind.map(|r| r.records), Ok(2));
    let seen = service::verify_log(app.store.as_ref(), &keys, NOW, Some(&witnessed))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!((seen.code, seen.seq), ("ledger.checkpoint_beyond_end", 3));
}
