//! The quarantine: a batch's rejected messages are held sealed for seven days, listed opened
//! by the admin role only, counted in `/metrics`, and deleted by retention.

use crate::support::{NOW, TestApp, get};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use kept_server::collect::quarantine::QUARANTINE_RETENTION;
use kept_server::collect::retention::run_retention;
use kept_store::Role;
use serde_json::{Value, json};

fn batch(app: &TestApp, body: &Value) -> Request<Body> {
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:", app.key(Role::Server)));
    Request::post("/v1/batch")
        .header(header::AUTHORIZATION, format!("Basic {basic}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn bad_consent() -> Value {
    json!({"type": "track", "anonymousId": "q-visitor", "event": "Viewed", "messageId": "q-2",
           "context": {"consent": {"categoryPreferences": {"marketing.communications": "perhaps"}}},
           "writeKey": "kept_secret_in_the_body"})
}

async fn held(app: &TestApp, query: &str) -> crate::support::Answer {
    app.send(get(
        &format!("/v1/quarantine{query}"),
        Some(app.key(Role::Admin)),
    ))
    .await
}

#[tokio::test]
async fn a_rejected_message_is_held_sealed_and_listed_to_admins() {
    let app = TestApp::new().await;
    let body = json!({"batch": [
        {"type": "track", "anonymousId": "q-visitor", "event": "Viewed", "messageId": "q-1"},
        bad_consent(),
        {"type": "track", "anonymousId": "q-visitor", "event": "Bought", "messageId": "q-3"},
    ]});
    let answer = app.send(batch(&app, &body)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.json["accepted"], 2);
    let path = "batch[1].context.consent.categoryPreferences.marketing.communications";
    assert_eq!(answer.json["rejected"][0]["path"], path, "{}", answer.text);

    let list = held(&app, "").await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    let messages = list.json["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{}", list.text);
    let m = &messages[0];
    assert_eq!(m["index"], 1);
    assert_eq!(m["code"], "request.invalid_event");
    assert_eq!(m["path"], path);
    assert_eq!(m["message"], answer.json["rejected"][0]["message"]);
    assert_eq!(m["received_at"], NOW);
    assert_eq!(m["delete_after"], NOW + QUARANTINE_RETENTION);
    assert!(
        app.key(Role::Server)
            .starts_with(m["key_id"].as_str().unwrap())
    );
    assert!(!m["key_name"].as_str().unwrap().is_empty());
    // The message as sent, opened, without the write key it carried.
    let mut sent = bad_consent();
    sent.as_object_mut().unwrap().remove("writeKey");
    assert_eq!(m["body"], sent);
    assert!(list.json.get("next_after").is_none());

    // Sealed in the store: the text is not there to read.
    let stored = app.state.store.quarantined(None, 10).await.unwrap();
    assert_eq!(stored.len(), 1);
    let bytes = String::from_utf8_lossy(&stored[0].sealed).into_owned();
    assert!(!bytes.contains("q-visitor") && !bytes.contains("perhaps"));

    // Counted.
    let metrics = app.send(get("/metrics", None)).await;
    assert!(
        metrics
            .text
            .lines()
            .any(|l| l.starts_with("kept_quarantine_messages_total")
                && l.contains("code=\"request.invalid_event\"")),
        "{}",
        metrics.text
    );
    assert!(
        metrics.text.contains("kept_quarantine_messages_held"),
        "{}",
        metrics.text
    );

    // Only the admin role reads it.
    for role in [Role::Privacy, Role::Server, Role::Decide, Role::Public] {
        let answer = app.send(get("/v1/quarantine", Some(app.key(role)))).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{role:?}");
        assert_eq!(answer.code(), "auth.forbidden");
    }
    let answer = app.send(get("/v1/quarantine", None)).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_quarantine_pages_and_names_bad_parameters() {
    let app = TestApp::new().await;
    for i in 0..3 {
        let body = json!({"batch": [
            {"type": "track", "anonymousId": "q-pager", "event": "Fine",
             "messageId": format!("ok-{i}")},
            {"type": "track", "anonymousId": "q-pager", "messageId": format!("bad-{i}")},
        ]});
        assert_eq!(app.send(batch(&app, &body)).await.status, StatusCode::OK);
    }
    let first = held(&app, "?limit=2").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(first.json["messages"].as_array().unwrap().len(), 2);
    let after = first.json["next_after"].as_u64().unwrap();
    let rest = held(&app, &format!("?limit=2&after={after}")).await;
    let ids: Vec<&Value> = first.json["messages"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest.json["messages"].as_array().unwrap())
        .map(|m| &m["body"]["messageId"])
        .collect();
    assert_eq!(ids, [&json!("bad-0"), &json!("bad-1"), &json!("bad-2")]);
    assert!(rest.json.get("next_after").is_none());
    for (query, field) in [
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?limit=many", "limit"),
        ("?after=-1", "after"),
        ("?after=9223372036854775808", "after"),
        ("?colour=blue", "colour"),
    ] {
        let answer = held(&app, query).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert_eq!(
            answer.json["error"]["field"], field,
            "{query}: {}",
            answer.text
        );
    }
}

#[tokio::test]
async fn retention_deletes_what_was_held_seven_days() {
    let app = TestApp::new().await;
    let body = json!({"batch": [
        {"type": "track", "anonymousId": "q-old", "event": "Fine", "messageId": "o-1"},
        {"type": "identify", "anonymousId": "q-old", "messageId": "o-2",
         "traits": {"email": "not-an-address"}},
    ]});
    let answer = app.send(batch(&app, &body)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.json["rejected"][0]["path"], "batch[1].traits.email");

    let report = run_retention(&app.state.retention(), NOW + QUARANTINE_RETENTION)
        .await
        .unwrap();
    assert_eq!(report.quarantined, 0, "not yet seven days");
    assert_eq!(
        held(&app, "").await.json["messages"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let report = run_retention(&app.state.retention(), NOW + QUARANTINE_RETENTION + 1)
        .await
        .unwrap();
    assert_eq!(report.quarantined, 1);
    assert!(
        held(&app, "").await.json["messages"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(app.state.store.quarantine_len().await.unwrap(), 0);
}

#[tokio::test]
async fn a_single_call_that_is_refused_is_held_too() {
    let app = TestApp::new().await;
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:", app.key(Role::Server)));
    let request = Request::post("/v1/track")
        .header(header::AUTHORIZATION, format!("Basic {basic}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"anonymousId": "q-single", "messageId": "s-1"}).to_string(),
        ))
        .unwrap();
    let answer = app.send(request).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.json["error"]["field"], "event");
    let list = held(&app, "").await;
    let m = &list.json["messages"][0];
    assert_eq!(m["path"], "event");
    assert_eq!(m["index"], 0);
    assert_eq!(
        m["body"],
        json!({"anonymousId": "q-single", "messageId": "s-1"})
    );
}

#[tokio::test]
async fn a_full_quarantine_counts_what_it_cannot_hold_and_still_answers_it() {
    use kept_server::collect::{CollectConfig, Collector};
    let mut app = TestApp::new().await;
    app.state = app
        .state
        .clone()
        .with_collector(Collector::new(CollectConfig {
            quarantine_limit: 2,
            ..CollectConfig::default()
        }));
    // Three rejected messages and a good one: two are held, the third is counted as dropped,
    // and the answer still lists all three, while the good message is written.
    let body = json!({"batch": [bad_consent(), bad_consent(),
        {"type": "track", "anonymousId": "q-visitor", "event": "Bought", "messageId": "q-9"},
        bad_consent()]});
    let answer = app.send(batch(&app, &body)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.json["accepted"], 1);
    assert_eq!(answer.json["rejected"].as_array().unwrap().len(), 3);
    let list = held(&app, "").await;
    let indexes: Vec<&Value> = list.json["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["index"])
        .collect();
    assert_eq!(indexes, [&json!(0), &json!(1)], "{}", list.text);
    // A later request finds it still full.
    let answer = app
        .send(batch(&app, &json!({"batch": [bad_consent()]})))
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
    assert_eq!(app.state.store.quarantine_len().await.unwrap(), 2);
    let metrics = app.send(get("/metrics", None)).await;
    assert!(
        metrics
            .text
            .lines()
            .any(|l| l.starts_with("kept_quarantine_messages_dropped_total")
                && l.contains("code=\"request.invalid_event\"")),
        "{}",
        metrics.text
    );
    // Retention makes room again.
    run_retention(&app.state.retention(), NOW + QUARANTINE_RETENTION + 1)
        .await
        .unwrap();
    let answer = app
        .send(batch(&app, &json!({"batch": [bad_consent()]})))
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
    assert_eq!(app.state.store.quarantine_len().await.unwrap(), 1);
}

#[tokio::test]
async fn a_batch_message_is_held_with_the_batch_s_shared_context_and_time() {
    let app = TestApp::new().await;
    let mut own = bad_consent();
    own.as_object_mut().unwrap().remove("writeKey");
    let body = json!({
        "batch": [own, {"type": "track", "anonymousId": "q-visitor", "event": "Fine"}],
        "context": {"locale": "de-DE", "consent": {"categoryPreferences": {"ads": true}}},
        "sentAt": "2026-05-28T20:26:40.000Z",
    });
    let answer = app.send(batch(&app, &body)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let list = held(&app, "").await;
    let held = &list.json["messages"][0]["body"];
    // The shared keys it had none of, and the batch's time; its own consent stays its own.
    assert_eq!(held["context"]["locale"], "de-DE", "{}", list.text);
    assert_eq!(
        held["context"]["consent"],
        json!({"categoryPreferences": {"marketing.communications": "perhaps"}})
    );
    assert_eq!(held["sentAt"], "2026-05-28T20:26:40.000Z");
    assert_eq!(held["messageId"], "q-2");
}
