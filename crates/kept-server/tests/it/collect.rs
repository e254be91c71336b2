//! The collection API: Segment-compatible calls and their limits and errors, identity
//! resolution and its guard rails, provenance, consent on every event (fail closed) and the
//! ledger records events imply, retention.

use crate::support::{NOW, TestApp, send};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use kept_server::collect::retention::run_retention;
use kept_server::collect::{CollectConfig, Collector};
use kept_store::Role;
use serde_json::{Value, json};
use std::io::Write;

const DAY: i64 = 24 * 60 * 60 * 1000;

fn basic(key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

/// A collection call with the server write key as HTTP Basic user.
fn call(app: &TestApp, path: &str, body: &Value) -> Request<Body> {
    call_as(app, Role::Server, path, body)
}

/// A collection call with the write key of `role` as HTTP Basic user.
fn call_as(app: &TestApp, role: Role, path: &str, body: &Value) -> Request<Body> {
    Request::post(path)
        .header(header::AUTHORIZATION, basic(app.key(role)))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn privacy_get(app: &TestApp, path: &str) -> Request<Body> {
    Request::get(path)
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", app.key(Role::Privacy)),
        )
        .body(Body::empty())
        .unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

async fn lookup(app: &TestApp, query: &str) -> crate::support::Answer {
    app.send(privacy_get(app, &format!("/v1/subjects/lookup?{query}")))
        .await
}

async fn subject_of(app: &TestApp, query: &str) -> u64 {
    let answer = lookup(app, query).await;
    assert_eq!(answer.status, StatusCode::OK, "{query}: {}", answer.text);
    answer.json["subject"].as_u64().unwrap()
}

async fn events_of(app: &TestApp, subject: u64) -> Vec<Value> {
    let answer = app
        .send(privacy_get(app, &format!("/v1/subjects/{subject}/events")))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.json["events"].as_array().unwrap().clone()
}

fn track(anonymous_id: &str, event: &str, message_id: &str) -> Value {
    json!({
        "type": "track",
        "anonymousId": anonymous_id,
        "event": event,
        "messageId": message_id,
        "properties": {"sku": "LK-1"},
        "timestamp": "2026-05-28T20:00:00Z",
    })
}

async fn app_with(config: CollectConfig) -> TestApp {
    let mut app = TestApp::new().await;
    app.state = app.state.clone().with_collector(Collector::new(config));
    app
}

#[tokio::test]
async fn a_track_call_is_committed_and_read_back() {
    let app = TestApp::new().await;
    let answer = app
        .send(call(
            &app,
            "/v1/track",
            &track("anon-1", "Viewed Product", "m-1"),
        ))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.json, json!({"success": true}));
    let subject = subject_of(&app, "anonymous_id=anon-1").await;
    let events = events_of(&app, subject).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "track");
    assert_eq!(events[0]["name"], "Viewed Product");
    assert_eq!(events[0]["message_id"], "m-1");
    assert_eq!(events[0]["properties"]["sku"], "LK-1");
    // The short path browser libraries use is the same call.
    let answer = app
        .send(call(
            &app,
            "/v1/t",
            &track("anon-1", "Viewed Product", "m-2"),
        ))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(events_of(&app, subject).await.len(), 2);
    // Never a redirect, even for a trailing slash.
    let answer = app
        .send(call(&app, "/v1/track/", &track("anon-1", "x", "m-3")))
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_write_key_may_come_in_the_body_and_a_wrong_one_is_refused() {
    let app = TestApp::new().await;
    let mut body = track("anon-b", "Clicked", "b-1");
    body["writeKey"] = json!(app.key(Role::Server));
    // What `navigator.sendBeacon` sends: text/plain, no Authorization header.
    let beacon = Request::post("/v1/t")
        .header(header::CONTENT_TYPE, "text/plain;charset=UTF-8")
        .body(Body::from(body.to_string()))
        .unwrap();
    let answer = app.send(beacon).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);

    let no_key = Request::post("/v1/track")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(track("anon-b", "x", "b-2").to_string()))
        .unwrap();
    let answer = app.send(no_key).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.code(), "auth.missing_key");

    let unknown = format!("kept_0badc0de_{}", "ab".repeat(32));
    let wrong = Request::post("/v1/track")
        .header(header::AUTHORIZATION, basic(&unknown))
        .body(Body::from(track("anon-b", "x", "b-3").to_string()))
        .unwrap();
    let answer = app.send(wrong).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.code(), "auth.invalid_key");

    body["writeKey"] = json!(unknown);
    let answer = app
        .send(
            Request::post("/v1/track")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);

    // A key of another role may not collect.
    let decide = Request::post("/v1/track")
        .header(header::AUTHORIZATION, basic(app.key(Role::Decide)))
        .body(Body::from(track("anon-b", "x", "b-4").to_string()))
        .unwrap();
    assert_eq!(app.send(decide).await.status, StatusCode::FORBIDDEN);

    // The body is read as JSON whatever its label: what is not JSON is refused as such.
    let xml = Request::post("/v1/track")
        .header(header::AUTHORIZATION, basic(app.key(Role::Server)))
        .header(header::CONTENT_TYPE, "application/xml")
        .body(Body::from("<track/>"))
        .unwrap();
    let answer = app.send(xml).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
    assert_eq!(answer.code(), "request.invalid_json");
    let subject = subject_of(&app, "anonymous_id=anon-b").await;
    assert_eq!(events_of(&app, subject).await.len(), 1);
}

#[tokio::test]
async fn gzip_bodies_are_read_and_broken_ones_refused() {
    let app = TestApp::new().await;
    let batch = json!({"batch": [track("anon-z", "A", "z-1"), track("anon-z", "B", "z-2")]});
    let request = Request::post("/v1/batch")
        .header(header::AUTHORIZATION, basic(app.key(Role::Server)))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(gzip(batch.to_string().as_bytes())))
        .unwrap();
    let answer = app.send(request).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let subject = subject_of(&app, "anonymous_id=anon-z").await;
    assert_eq!(events_of(&app, subject).await.len(), 2);

    let broken = Request::post("/v1/batch")
        .header(header::AUTHORIZATION, basic(app.key(Role::Server)))
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(b"definitely not gzip".to_vec()))
        .unwrap();
    let answer = app.send(broken).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let brotli = Request::post("/v1/batch")
        .header(header::AUTHORIZATION, basic(app.key(Role::Server)))
        .header(header::CONTENT_ENCODING, "br")
        .body(Body::from(batch.to_string()))
        .unwrap();
    let answer = app.send(brotli).await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(answer.code(), "request.unsupported_encoding");
}

/// `@rudderstack/rudder-sdk-node` 3.x gzips its batches by default, and its HTTP library labels
/// them `application/x-www-form-urlencoded`: with a 415 the SDK dropped every batch, unretried.
#[tokio::test]
async fn gzipped_json_labelled_as_a_form_is_read() {
    let app = TestApp::new().await;
    let batch = json!({"batch": [track("anon-r", "A", "r-1"), track("anon-r", "B", "r-2")]});
    let request = Request::post("/v1/batch")
        .header(header::AUTHORIZATION, basic(app.key(Role::Server)))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(gzip(batch.to_string().as_bytes())))
        .unwrap();
    let answer = app.send(request).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let subject = subject_of(&app, "anonymous_id=anon-r").await;
    assert_eq!(events_of(&app, subject).await.len(), 2);
    // A real form is not JSON: refused, and nothing stored.
    let form = Request::post("/v1/track")
        .header(header::AUTHORIZATION, basic(app.key(Role::Server)))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("anonymousId=anon-f&event=A"))
        .unwrap();
    let answer = app.send(form).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
    assert_eq!(answer.code(), "request.invalid_json");
}

#[tokio::test]
async fn every_limit_is_named() {
    let app = TestApp::new().await;
    let big = |bytes: usize, id: &str| {
        let mut e = track("anon-l", "Big", id);
        e["properties"]["pad"] = json!("x".repeat(bytes));
        e
    };
    let answer = app
        .send(call(&app, "/v1/track", &big(33 * 1024, "l-1")))
        .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.json["error"]["limit"], "event_bytes");
    assert!(answer.text.contains("32768"), "{}", answer.text);

    // One message too large is rejected alone, as its own call would be; alone in its batch,
    // it is the batch's answer.
    let one_big = json!({"batch": [track("anon-l2", "ok", "l-2"), big(33 * 1024, "l-3")]});
    let answer = app.send(call(&app, "/v1/batch", &one_big)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.json["accepted"], 1);
    assert_eq!(answer.json["rejected"][0]["index"], 1);
    assert_eq!(answer.json["rejected"][0]["path"], "batch[1]");
    assert_eq!(answer.json["rejected"][0]["code"], "request.limit_exceeded");
    let message = answer.json["rejected"][0]["message"].as_str().unwrap();
    assert!(message.contains("event 1"), "{message}");
    let only_big = json!({"batch": [big(33 * 1024, "l-4")]});
    let answer = app.send(call(&app, "/v1/batch", &only_big)).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.json["error"]["limit"], "event_bytes");

    let many: Vec<Value> = (0..2501).map(|i| json!({"type": "track", "anonymousId": "a", "event": "e", "messageId": format!("n{i}")})).collect();
    let answer = app
        .send(call(&app, "/v1/batch", &json!({ "batch": many })))
        .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.json["error"]["limit"], "batch_events");

    let heavy: Vec<Value> = (0..20).map(|i| big(30 * 1024, &format!("h{i}"))).collect();
    let answer = app
        .send(call(&app, "/v1/batch", &json!({ "batch": heavy })))
        .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.json["error"]["limit"], "batch_bytes");

    // The batch limit holds after decompression too: 600 KB of zeros gzip to almost nothing.
    let padded = json!({"batch": [big(20 * 1024, "g1")], "pad": "0".repeat(600 * 1024)});
    let request = Request::post("/v1/batch")
        .header(header::AUTHORIZATION, basic(app.key(Role::Server)))
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(gzip(padded.to_string().as_bytes())))
        .unwrap();
    let answer = app.send(request).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.json["error"]["limit"], "batch_bytes");
    assert_eq!(
        lookup(&app, "anonymous_id=anon-l").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_bad_event_is_rejected_alone_and_named() {
    let app = TestApp::new().await;
    let batch = json!({"batch": [
        track("anon-r", "Fine", "r-1"),
        {"type": "track", "anonymousId": "anon-r", "messageId": "r-2"},
        track("anon-r", "Also fine", "r-3"),
        {"type": "track", "anonymousId": "anon-r", "event": "Bad consent", "messageId": "r-4",
         "context": {"consent": {"categoryPreferences": {"ads": "perhaps"}}}},
        "not a message",
    ]});
    let answer = app.send(call(&app, "/v1/batch", &batch)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.json["success"], true);
    assert_eq!(answer.json["accepted"], 2);
    assert_eq!(
        answer.json["rejected"],
        json!([
            {"index": 1, "path": "batch[1].event", "code": "request.invalid_event",
             "message": answer.json["rejected"][0]["message"]},
            {"index": 3, "path": "batch[3].context.consent.categoryPreferences.ads",
             "code": "request.invalid_event", "message": answer.json["rejected"][1]["message"]},
            {"index": 4, "path": "batch[4]", "code": "request.invalid_event",
             "message": "event 4 of the batch must be a JSON object"},
        ]),
        "{}",
        answer.text
    );
    // The good ones were written, the bad ones not.
    let subject = subject_of(&app, "anonymous_id=anon-r").await;
    let ids: Vec<String> = events_of(&app, subject)
        .await
        .iter()
        .map(|e| e["message_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, vec!["r-1", "r-3"]);

    // A batch with no usable message is refused with its first one's error.

    let cases = [
        (
            json!({"batch": [{"anonymousId": "a", "event": "e"}]}),
            "batch[0].type",
        ),
        (
            json!({"batch": [{"type": "rocket", "anonymousId": "a"}]}),
            "batch[0].type",
        ),
        (json!({"batch": [{"type": "identify"}]}), "batch[0].userId"),
        (
            json!({"batch": [{"type": "group", "userId": "u"}]}),
            "batch[0].groupId",
        ),
        (
            json!({"batch": [{"type": "alias", "userId": "u"}]}),
            "batch[0].previousId",
        ),
        (
            json!({"batch": [{"type": "identify", "userId": "u", "traits": {"email": "not-an-email"}}]}),
            "batch[0].traits.email",
        ),
        (
            json!({"batch": [{"type": "track", "userId": "u", "event": "e", "context": {"consent": {"categoryPreferences": {"ads": "perhaps"}}}}]}),
            "batch[0].context.consent.categoryPreferences.ads",
        ),
        (json!({"batch": 3}), "batch"),
        (json!({"events": []}), "batch"),
    ];
    for (body, field) in cases {
        let answer = app.send(call(&app, "/v1/batch", &body)).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            answer.text
        );
        assert_eq!(answer.json["error"]["field"], field, "{body}");
    }
    let answer = app
        .send(call(
            &app,
            "/v1/identify",
            &json!({"traits": {"name": "x"}}),
        ))
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.json["error"]["field"], "userId");
    assert!(answer.json["error"].get("index").is_none());

    let malformed = Request::post("/v1/track")
        .header(header::AUTHORIZATION, basic(app.key(Role::Server)))
        .body(Body::from("{\"event\": "))
        .unwrap();
    let answer = app.send(malformed).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.code(), "request.invalid_json");
}

#[tokio::test]
async fn a_retried_message_is_stored_once() {
    let app = TestApp::new().await;
    let event = track("anon-d", "Bought", "d-1");
    for _ in 0..3 {
        let answer = app.send(call(&app, "/v1/track", &event)).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let twice = json!({"batch": [track("anon-d", "Bought", "d-1"), track("anon-d", "Other", "d-2"), track("anon-d", "Other", "d-2")]});
    assert_eq!(
        app.send(call(&app, "/v1/batch", &twice)).await.status,
        StatusCode::OK
    );
    let subject = subject_of(&app, "anonymous_id=anon-d").await;
    let ids: Vec<String> = events_of(&app, subject)
        .await
        .iter()
        .map(|e| e["message_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, vec!["d-1", "d-2"]);
}

#[tokio::test]
async fn cors_preflight_answers_configured_origins_only() {
    let app = app_with(CollectConfig {
        cors_origins: vec!["https://shop.example".into()],
        ..CollectConfig::default()
    })
    .await;
    let preflight = |origin: &str| {
        Request::builder()
            .method("OPTIONS")
            .uri("/v1/t")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type")
            .body(Body::empty())
            .unwrap()
    };
    let answer = app.send(preflight("https://shop.example")).await;
    assert!(answer.status.is_success(), "{}", answer.status);
    assert_eq!(
        answer.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://shop.example"
    );
    assert!(
        answer.headers[header::ACCESS_CONTROL_ALLOW_METHODS]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let answer = app.send(preflight("https://evil.example")).await;
    assert!(
        answer
            .headers
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );
    // The actual call from the shop carries the header too.
    let mut request = call(&app, "/v1/t", &track("anon-c", "x", "c-1"));
    request
        .headers_mut()
        .insert(header::ORIGIN, "https://shop.example".parse().unwrap());
    let answer = app.send(request).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://shop.example"
    );
}

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after() {
    let app = app_with(CollectConfig {
        queue_events: 4,
        ..CollectConfig::default()
    })
    .await;
    let held = app.state.collect.occupy(4).unwrap();
    let answer = app
        .send(call(&app, "/v1/track", &track("anon-q", "x", "q-1")))
        .await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.code(), "server.overloaded");
    assert_eq!(answer.headers[header::RETRY_AFTER], "1");
    assert_eq!(
        lookup(&app, "anonymous_id=anon-q").await.status,
        StatusCode::NOT_FOUND
    );
    drop(held);
    let answer = app
        .send(call(&app, "/v1/track", &track("anon-q", "x", "q-1")))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    // A batch larger than the whole queue still gets in, alone.
    let batch: Vec<Value> = (0..6)
        .map(|i| track("anon-q", "x", &format!("q-b{i}")))
        .collect();
    let answer = app
        .send(call(&app, "/v1/batch", &json!({ "batch": batch })))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn identify_after_browsing_merges_the_anonymous_history() {
    let app = TestApp::new().await;
    // Ada signed in on her phone first.
    let first =
        json!({"userId": "ada", "anonymousId": "phone-1", "traits": {"email": "Ada@Example.com"}});
    assert_eq!(
        app.send(call(&app, "/v1/identify", &first)).await.status,
        StatusCode::OK
    );
    let ada = subject_of(&app, "user_id=ada").await;
    // Later she browses anonymously on her laptop...
    for (i, page) in ["Home", "Boots"].iter().enumerate() {
        let body = json!({"anonymousId": "laptop-7", "name": page, "messageId": format!("p{i}")});
        assert_eq!(
            app.send(call(&app, "/v1/page", &body)).await.status,
            StatusCode::OK
        );
    }
    let laptop = subject_of(&app, "anonymous_id=laptop-7").await;
    assert_ne!(laptop, ada);
    // ...and signs in there.
    let signin = json!({"userId": "ada", "anonymousId": "laptop-7", "messageId": "s1"});
    assert_eq!(
        app.send(call(&app, "/v1/identify", &signin)).await.status,
        StatusCode::OK
    );
    assert_eq!(subject_of(&app, "anonymous_id=laptop-7").await, ada);
    assert_eq!(subject_of(&app, "email=%20ada@EXAMPLE.com").await, ada);
    let found = lookup(&app, "user_id=ada").await;
    assert_eq!(found.json["merged_from"], json!([laptop]));
    let kinds: Vec<&str> = found.json["identifiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        vec!["anonymous_id", "anonymous_id", "email", "user_id"]
    );
    let names: Vec<Value> = events_of(&app, ada)
        .await
        .iter()
        .filter(|e| e["type"] == "page")
        .map(|e| e["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("Home"), json!("Boots")]);
    // The merged subject's events keep their original subject.
    assert!(
        events_of(&app, ada)
            .await
            .iter()
            .any(|e| e["subject"].as_u64() == Some(laptop))
    );
}

#[tokio::test]
async fn an_identifier_of_another_user_is_not_merged_silently() {
    let app = TestApp::new().await;
    let ada = json!({"userId": "ada", "traits": {"email": "shared@example.com"}});
    assert_eq!(
        app.send(call(&app, "/v1/identify", &ada)).await.status,
        StatusCode::OK
    );
    let bob = json!({"userId": "bob", "anonymousId": "bob-phone", "traits": {"email": "shared@example.com"}});
    assert_eq!(
        app.send(call(&app, "/v1/identify", &bob)).await.status,
        StatusCode::OK
    );
    let ada_id = subject_of(&app, "user_id=ada").await;
    let bob_id = subject_of(&app, "user_id=bob").await;
    assert_ne!(ada_id, bob_id);
    assert_eq!(subject_of(&app, "email=shared@example.com").await, ada_id);
    assert_eq!(subject_of(&app, "anonymous_id=bob-phone").await, bob_id);
    let bob_found = lookup(&app, "user_id=bob").await;
    assert!(bob_found.json["merged_from"].as_array().unwrap().is_empty());
    let metrics = app.state.metrics.render();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("kept_identity_merge_refusals_total")
                && l.contains("reason=\"claimed_by_another_user\"")
                && l.contains("kind=\"email\"")),
        "{metrics}"
    );
}

#[tokio::test]
async fn identifiers_per_subject_are_capped() {
    let app = app_with(CollectConfig {
        caps: kept_core::identity::Caps {
            anonymous_id: 2,
            ..kept_core::identity::Caps::default()
        },
        ..CollectConfig::default()
    })
    .await;
    for device in ["d1", "d2", "d3"] {
        let body = json!({"userId": "shared-login", "anonymousId": device});
        assert_eq!(
            app.send(call(&app, "/v1/identify", &body)).await.status,
            StatusCode::OK
        );
    }
    let owner = subject_of(&app, "user_id=shared-login").await;
    assert_eq!(subject_of(&app, "anonymous_id=d2").await, owner);
    assert_eq!(
        lookup(&app, "anonymous_id=d3").await.status,
        StatusCode::NOT_FOUND
    );
    // The event itself still belongs to the user.
    assert_eq!(events_of(&app, owner).await.len(), 3);
}

#[tokio::test]
async fn alias_merges_two_users_explicitly() {
    let app = TestApp::new().await;
    for user in ["old-id", "new-id"] {
        let body = json!({"userId": user});
        assert_eq!(
            app.send(call(&app, "/v1/identify", &body)).await.status,
            StatusCode::OK
        );
    }
    let old = subject_of(&app, "user_id=old-id").await;
    let new = subject_of(&app, "user_id=new-id").await;
    let alias = json!({"previousId": "old-id", "userId": "new-id"});
    let answer = app.send(call(&app, "/v1/alias", &alias)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(subject_of(&app, "user_id=old-id").await, new);
    assert_eq!(
        lookup(&app, "user_id=new-id").await.json["merged_from"],
        json!([old])
    );
}

#[tokio::test]
async fn every_trait_keeps_its_provenance() {
    let app = TestApp::new().await;
    let body = json!({
        "userId": "cleo",
        "traits": {"email": "cleo@example.com", "name": "Cleo", "shoe_size": 38},
        "context": {"kept": {"collection_point": "checkout"}},
    });
    assert_eq!(
        app.send(call(&app, "/v1/identify", &body)).await.status,
        StatusCode::OK
    );
    let found = lookup(&app, "user_id=cleo").await;
    let traits = found.json["traits"].as_array().unwrap();
    let by_key = |k: &str| traits.iter().find(|t| t["key"] == k).unwrap().clone();
    let name = by_key("name");
    assert_eq!(name["category"], "user.name");
    assert_eq!(name["value"], "Cleo");
    assert_eq!(
        name["provenance"],
        json!({"collection_point": "checkout", "notice_id": "checkout", "notice_version": 1, "collected_at": NOW, "source": "collection"})
    );
    // A field the collection point does not map is kept and promised for nothing.
    assert_eq!(by_key("shoe_size")["category"], "user.unmapped");
    // The email is an identifier: sealed with the identities, not stored as a plain trait.
    let email = by_key("email");
    assert_eq!(email["category"], "user.contact.email");
    assert_eq!(email["value"], json!({"sealed_identifier": "email"}));
    let identifiers = found.json["identifiers"].as_array().unwrap();
    assert!(
        identifiers.contains(&json!({"kind": "email", "value": "cleo@example.com", "since": NOW}))
    );

    // A write key's default collection point applies when the event names none.
    let key_id = kept_server::http::auth::key_id(app.key(Role::Server))
        .unwrap()
        .to_owned();
    let set = Request::put(format!("/v1/keys/{key_id}/collection-point"))
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", app.key(Role::Admin)),
        )
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"collection_point": "rewards_signup"}"#))
        .unwrap();
    let answer = app.send(set).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let body = json!({"userId": "dara", "traits": {"phone": "+44 7700 900123", "name": "Dara"}});
    assert_eq!(
        app.send(call(&app, "/v1/identify", &body)).await.status,
        StatusCode::OK
    );
    let found = lookup(&app, "phone=%2B447700900123").await;
    let traits = found.json["traits"].as_array().unwrap();
    let phone = traits.iter().find(|t| t["key"] == "phone").unwrap();
    assert_eq!(phone["category"], "user.contact.phone_number");
    assert_eq!(phone["provenance"]["collection_point"], "rewards_signup");
    assert_eq!(phone["provenance"]["notice_id"], "rewards");
    let unknown = Request::put(format!("/v1/keys/{key_id}/collection-point"))
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", app.key(Role::Admin)),
        )
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"collection_point": "nowhere"}"#))
        .unwrap();
    assert_eq!(
        app.send(unknown).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

/// The reason `/v1/decisions` gives for `purpose` over the subject's name.
async fn reason_for_name(router: axum::Router, app: &TestApp, purpose: &str) -> String {
    let body = json!({
        "subject": {"user_id": "omar"},
        "purpose": purpose,
        "categories": ["user.name"],
    });
    let req = Request::post("/v1/decisions")
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", app.key(Role::Decide)),
        )
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let answer = crate::support::send(router, req).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    // One request is answered with one decision.
    answer.json["reason"].as_str().unwrap().to_owned()
}

const OPERATIONS: &str = "essential.service.operations";

#[tokio::test]
async fn a_trait_collected_again_elsewhere_keeps_only_its_new_promise() {
    let app = TestApp::new().await;
    let identify = |point: &str| {
        json!({
            "userId": "omar",
            "traits": {"name": "Omar"},
            "context": {"kept": {"collection_point": point}},
        })
    };
    // The checkout notice promises the name for running the shop...
    let answer = app
        .send(call(&app, "/v1/identify", &identify("checkout")))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(
        reason_for_name(app.router(), &app, OPERATIONS).await,
        "allowed.contract"
    );

    // ...the same trait sent again from the rewards sign-up carries the rewards notice, which
    // does not: the old promise no longer counts.
    let answer = app
        .send(call(&app, "/v1/identify", &identify("rewards_signup")))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(
        reason_for_name(app.router(), &app, OPERATIONS).await,
        "denied.not_promised"
    );

    // A server started afresh on the same store answers the same.
    let restarted = kept_server::AppState::new(
        app.store.clone(),
        app.state.ledger.clone(),
        app.state.manifest.clone(),
    )
    .with_clock(std::sync::Arc::new(|| NOW));
    restarted
        .index
        .load(app.store.as_ref(), NOW, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(
        reason_for_name(kept_server::router(restarted), &app, OPERATIONS).await,
        "denied.not_promised"
    );
}

#[tokio::test]
async fn traits_sent_in_the_context_count_and_top_level_traits_win() {
    let app = TestApp::new().await;
    // RudderStack's libraries send an identify's traits only in `context.traits`.
    let rudder = json!({
        "batch": [{
            "type": "identify",
            "userId": "rudder-1",
            "context": {
                "traits": {"email": "Rudder@Example.com", "name": "Rudi"},
                "kept": {"collection_point": "checkout"},
            },
        }],
    });
    let answer = app.send(call(&app, "/v1/batch", &rudder)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let rudi = subject_of(&app, "user_id=rudder-1").await;
    assert_eq!(subject_of(&app, "email=rudder@example.com").await, rudi);
    let found = lookup(&app, "user_id=rudder-1").await;
    let traits = found.json["traits"].as_array().unwrap();
    let name = traits.iter().find(|t| t["key"] == "name").unwrap();
    assert_eq!(name["value"], "Rudi");
    assert_eq!(name["category"], "user.name");
    assert_eq!(name["provenance"]["collection_point"], "checkout");

    // Both places: the call's own traits win on a conflict, the context adds the rest.
    let both = json!({
        "userId": "both-1",
        "traits": {"name": "Own"},
        "context": {"traits": {"name": "Context", "email": "both@example.com"}},
    });
    let answer = app.send(call(&app, "/v1/identify", &both)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let found = lookup(&app, "user_id=both-1").await;
    let traits = found.json["traits"].as_array().unwrap();
    let names: Vec<&Value> = traits
        .iter()
        .filter(|t| t["key"] == "name")
        .map(|t| &t["value"])
        .collect();
    assert_eq!(names, vec![&json!("Own")]);
    assert_eq!(
        subject_of(&app, "email=both@example.com").await,
        subject_of(&app, "user_id=both-1").await
    );

    // On a track call `context.traits` names the person (Segment's identity hints).
    let mut hinted = track("hint-anon", "Viewed", "hint-1");
    hinted["context"] = json!({"traits": {"email": "rudder@example.com"}});
    let answer = app.send(call(&app, "/v1/track", &hinted)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(subject_of(&app, "anonymous_id=hint-anon").await, rudi);

    // A malformed identifier there is named where the client put it.
    let bad = json!({"userId": "bad-1", "context": {"traits": {"email": 7}}});
    let answer = app.send(call(&app, "/v1/identify", &bad)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
    assert!(
        answer.text.contains("context.traits.email"),
        "{}",
        answer.text
    );
}

async fn ledger(app: &TestApp, subject: u64) -> Vec<Value> {
    let path = format!("/v1/subjects/{subject}/consents");
    let answer = app.send(privacy_get(app, &path)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.json["entries"].as_array().unwrap().clone()
}

/// The purposes the one event of `anonymous_id` may serve.
async fn usable_for(app: &TestApp, anonymous_id: &str) -> Vec<String> {
    let subject = subject_of(app, &format!("anonymous_id={anonymous_id}")).await;
    let events = events_of(app, subject).await;
    serde_json::from_value(events.last().unwrap()["consent"]["usable_for"].clone()).unwrap()
}

#[tokio::test]
async fn missing_consent_is_never_consent() {
    let app = TestApp::new().await;
    let send_from = |anon: &str, location: Value, consent: Option<Value>| {
        let mut body = track(anon, "Viewed", &format!("{anon}-1"));
        body["context"] = json!({"location": location});
        if let Some(c) = consent {
            body["context"]["consent"] = json!({"categoryPreferences": c});
        }
        body
    };
    const PERSONALISE: &str = "personalize.content.profiled";
    const ADS: &str = "marketing.advertising.third_party.targeted";
    const OPERATIONS: &str = "essential.service.operations";

    // Opt-in (GDPR): without consent, essential purposes only.
    let body = send_from("de-none", json!({"country": "DE"}), None);
    assert_eq!(
        app.send(call(&app, "/v1/track", &body)).await.status,
        StatusCode::OK
    );
    let usable = usable_for(&app, "de-none").await;
    assert!(usable.contains(&OPERATIONS.to_owned()));
    assert!(!usable.contains(&PERSONALISE.to_owned()) && !usable.contains(&ADS.to_owned()));
    let subject = subject_of(&app, "anonymous_id=de-none").await;
    let event = events_of(&app, subject).await.pop().unwrap();
    assert_eq!(event["consent"]["regime"], "gdpr");
    assert_eq!(event["consent"]["carried"], false);
    // ...kept as long as the essential purposes need it, not longer.
    assert_eq!(event["retain_until"], json!(NOW + 6 * 365 * DAY));

    // Opt-in with the banner's yes for personalisation only.
    let body = send_from(
        "de-yes",
        json!({"country": "DE"}),
        Some(json!({PERSONALISE: true})),
    );
    assert_eq!(
        app.send(call(&app, "/v1/track", &body)).await.status,
        StatusCode::OK
    );
    let usable = usable_for(&app, "de-yes").await;
    assert!(usable.contains(&PERSONALISE.to_owned()));
    assert!(!usable.contains(&ADS.to_owned()));

    // Opt-out (a US state without a privacy law): usable until the person says no...
    let body = send_from("fl-none", json!({"country": "US", "region": "FL"}), None);
    assert_eq!(
        app.send(call(&app, "/v1/track", &body)).await.status,
        StatusCode::OK
    );
    assert!(usable_for(&app, "fl-none").await.contains(&ADS.to_owned()));
    // ...and GPC is a no to advertising.
    let body = send_from("fl-gpc", json!({"country": "US", "region": "FL"}), None);
    let mut request = call(&app, "/v1/track", &body);
    request
        .headers_mut()
        .insert("sec-gpc", "1".parse().unwrap());
    assert_eq!(app.send(request).await.status, StatusCode::OK);
    assert!(!usable_for(&app, "fl-gpc").await.contains(&ADS.to_owned()));

    // Nowhere known: the strictest regime.
    let body = send_from("nowhere", json!({}), None);
    assert_eq!(
        app.send(call(&app, "/v1/track", &body)).await.status,
        StatusCode::OK
    );
    let usable = usable_for(&app, "nowhere").await;
    assert!(!usable.contains(&ADS.to_owned()) && !usable.contains(&PERSONALISE.to_owned()));
}

#[tokio::test]
async fn a_consent_change_carried_by_an_event_is_written_to_the_ledger() {
    // One proxy in front: the client is the address it appended to `X-Forwarded-For`.
    let app = TestApp::with_limits(kept_server::state::Limits {
        trusted_proxies: 1,
        ..Default::default()
    })
    .await;
    let consent_event = |yes: bool, id: &str| {
        json!({
            "anonymousId": "banner-1",
            "event": "Consent Updated",
            "messageId": id,
            "context": {
                "location": {"country": "FR"},
                "consent": {"categoryPreferences": {"marketing.communications": yes}, "tcString": "CPtest"},
                "userAgent": "Mozilla/5.0 (banner)",
            },
        })
    };
    let mut request = call_as(&app, Role::Public, "/v1/track", &consent_event(true, "c-1"));
    request.headers_mut().insert(
        "x-forwarded-for",
        "198.51.100.1, 203.0.113.9".parse().unwrap(),
    );
    request.extensions_mut().insert(axum::extract::ConnectInfo(
        "10.0.0.1:443".parse::<std::net::SocketAddr>().unwrap(),
    ));
    assert_eq!(app.send(request).await.status, StatusCode::OK);
    let subject = subject_of(&app, "anonymous_id=banner-1").await;
    let entries = ledger(&app, subject).await;
    assert_eq!(entries.len(), 1);
    let record = &entries[0]["record"];
    assert_eq!(record["purpose"], "marketing.communications");
    assert_eq!(record["action"], "given");
    assert_eq!(record["source"], "collection");
    assert_eq!(record["method"], "banner");
    assert_eq!(record["regime"], "gdpr");
    // The event names no notice, so the record names none: Kept does not pick one for it.
    assert_eq!(record["notice"], Value::Null, "{record}");
    assert_eq!(record["evidence"]["user_agent"], "Mozilla/5.0 (banner)");
    assert_eq!(record["evidence"]["reference"], "c-1");
    let ip_hash = record["evidence"]["ip_hash"].as_str().unwrap();
    assert_eq!(ip_hash.len(), 64);
    assert!(!ip_hash.contains("203.0.113.9"));
    // The hash is of the address the proxy saw, not of what the client claimed or the proxy's.
    let keys = app.state.identity.keys(app.store.as_ref()).await.unwrap();
    assert_eq!(ip_hash, keys.ip_hash("203.0.113.9"));
    // The event records the IAB string as carried and keeps no raw IP.
    let event = events_of(&app, subject).await.pop().unwrap();
    assert_eq!(event["consent"]["tcf"], "CPtest");
    assert!(event["context"].get("ip").is_none());

    // The same choice again changes nothing; a no withdraws.
    assert_eq!(
        app.send(call_as(
            &app,
            Role::Public,
            "/v1/track",
            &consent_event(true, "c-2")
        ))
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(ledger(&app, subject).await.len(), 1);
    assert_eq!(
        app.send(call_as(
            &app,
            Role::Public,
            "/v1/track",
            &consent_event(false, "c-3")
        ))
        .await
        .status,
        StatusCode::OK
    );
    let entries = ledger(&app, subject).await;
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1]["record"]["action"], "withdrawn");

    // A GPC signal is recorded once, as a GPC opt-out.
    for id in ["g-1", "g-2"] {
        let mut request = call_as(
            &app,
            Role::Public,
            "/v1/track",
            &track("banner-1", "Viewed", id),
        );
        request
            .headers_mut()
            .insert("sec-gpc", "1".parse().unwrap());
        assert_eq!(app.send(request).await.status, StatusCode::OK);
    }
    let entries = ledger(&app, subject).await;
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[2]["record"]["method"], "gpc");
    assert_eq!(entries[2]["record"]["action"], "opted_out");

    // Identifying merges the browser's consent into the person's own record.
    let signin = json!({"userId": "eve", "anonymousId": "banner-1"});
    assert_eq!(
        app.send(call_as(&app, Role::Public, "/v1/identify", &signin))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(subject_of(&app, "user_id=eve").await, subject);
}

#[tokio::test]
async fn consent_given_anonymously_follows_a_merge() {
    let app = TestApp::new().await;
    let known = json!({"userId": "finn", "context": {"location": {"country": "DE"}}});
    assert_eq!(
        app.send(call(&app, "/v1/identify", &known)).await.status,
        StatusCode::OK
    );
    let finn = subject_of(&app, "user_id=finn").await;
    let banner = json!({
        "anonymousId": "finn-laptop",
        "event": "Consent Updated",
        "context": {"consent": {"categoryPreferences": {"personalize.content.profiled": true}}},
    });
    assert_eq!(
        app.send(call(&app, "/v1/track", &banner)).await.status,
        StatusCode::OK
    );
    let signin = json!({"userId": "finn", "anonymousId": "finn-laptop"});
    assert_eq!(
        app.send(call(&app, "/v1/identify", &signin)).await.status,
        StatusCode::OK
    );
    let answer = app
        .send(privacy_get(&app, &format!("/v1/subjects/{finn}/consents")))
        .await;
    let entries = answer.json["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{}", answer.text);
    assert_eq!(
        entries[0]["record"]["purpose"],
        "personalize.content.profiled"
    );
    assert_eq!(entries[0]["record"]["action"], "given");
    assert!(
        entries[0]["record"]["evidence"]["reference"]
            .as_str()
            .unwrap()
            .starts_with("merged from subject")
    );
}

#[tokio::test]
async fn retention_deletes_what_outlived_its_purposes() {
    let app = TestApp::new().await;
    let body = json!({
        "userId": "gus",
        "anonymousId": "gus-1",
        "traits": {"name": "Gus"},
        "context": {"kept": {"collection_point": "checkout"}, "location": {"country": "DE"}},
    });
    assert_eq!(
        app.send(call(&app, "/v1/identify", &body)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.send(call(&app, "/v1/track", &track("gus-1", "x", "gus-t")))
            .await
            .status,
        StatusCode::OK
    );
    let gus = subject_of(&app, "user_id=gus").await;
    assert_eq!(events_of(&app, gus).await.len(), 2);

    let nothing = run_retention(&app.state.retention(), NOW + 30 * DAY)
        .await
        .unwrap();
    assert_eq!((nothing.events, nothing.traits), (0, 0));
    // Six years on, past the longest purpose the events and the checkout notice serve.
    let later = run_retention(&app.state.retention(), NOW + 6 * 365 * DAY + DAY)
        .await
        .unwrap();
    assert_eq!(later.events, 2);
    assert_eq!(later.traits, 1);
    assert!(events_of(&app, gus).await.is_empty());
    assert!(
        lookup(&app, "user_id=gus").await.json["traits"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn the_site_declares_gpc_support() {
    let app = TestApp::new().await;
    let answer = send(
        app.router(),
        Request::get("/.well-known/gpc.json")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json["gpc"], true);
    assert!(
        answer.json["lastUpdate"]
            .as_str()
            .unwrap()
            .starts_with("20")
    );
}
