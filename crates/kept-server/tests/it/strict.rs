//! Bad input is never accepted and every error is JSON: bodies of the wrong shape, times out of
//! range, ledger text too long or with control characters, unknown collection points, and the
//! 413 and 414 answers.

use crate::support::{NOW, TestApp, post, request};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::routing::post as post_route;
use base64::Engine as _;
use kept_server::http::input;
use kept_server::state::Limits;
use kept_store::Role;
use serde_json::{Value, json};

/// The ledger's length.
async fn ledger_length(app: &TestApp) -> u64 {
    let answer = app
        .send(request(
            "GET",
            "/v1/ledger",
            Some(app.key(Role::Privacy)),
            None,
        ))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.json["length"].as_u64().unwrap()
}

fn assert_invalid(answer: &crate::support::Answer, status: StatusCode, field: &str) {
    assert_eq!(answer.status, status, "{}", answer.text);
    assert_eq!(answer.json["error"]["field"], field, "{}", answer.text);
    let message = answer.json["error"]["message"].as_str().unwrap();
    let last = field.rsplit(['.', ']']).next().unwrap_or(field);
    assert!(message.contains(last), "{message} does not name {field}");
}

#[tokio::test]
async fn an_array_is_not_a_preferences_body() {
    let app = TestApp::new().await;
    let path = format!("/v1/subjects/{}/preferences", app.subjects[0].0);
    let answer = app
        .send(request(
            "PUT",
            &path,
            Some(app.key(Role::Privacy)),
            Some("[]"),
        ))
        .await;
    assert_invalid(&answer, StatusCode::UNPROCESSABLE_ENTITY, "body");
    // An array holding what would be a valid update, field by field, is refused the same way.
    let answer = app
        .send(request(
            "PUT",
            &path,
            Some(app.key(Role::Privacy)),
            Some(r#"[{"marketing.communications": true}]"#),
        ))
        .await;
    assert_invalid(&answer, StatusCode::UNPROCESSABLE_ENTITY, "body");
    assert_eq!(ledger_length(&app).await, 0);
    // Every JSON endpoint reads objects only.
    let answer = app
        .send(post("/v1/consents", Some(app.key(Role::Privacy)), "[[]]"))
        .await;
    assert_invalid(&answer, StatusCode::UNPROCESSABLE_ENTITY, "body");
}

#[tokio::test]
async fn only_an_explicit_null_clears_a_keys_collection_point() {
    let app = TestApp::new().await;
    let key_id = kept_server::http::auth::key_id(app.key(Role::Server))
        .unwrap()
        .to_owned();
    let path = format!("/v1/keys/{key_id}/collection-point");
    let admin = Some(app.key(Role::Admin));
    let set = app
        .send(request(
            "PUT",
            &path,
            admin,
            Some(r#"{"collection_point": "rewards_signup"}"#),
        ))
        .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text);

    let empty = app.send(request("PUT", &path, admin, Some("{}"))).await;
    assert_invalid(&empty, StatusCode::UNPROCESSABLE_ENTITY, "collection_point");
    assert_eq!(
        app.store.key_collection_point(&key_id).await.unwrap(),
        Some("rewards_signup".to_owned())
    );

    let cleared = app
        .send(request(
            "PUT",
            &path,
            admin,
            Some(r#"{"collection_point": null}"#),
        ))
        .await;
    assert_eq!(cleared.status, StatusCode::OK, "{}", cleared.text);
    assert_eq!(cleared.json, json!({"collection_point": null}));
    assert_eq!(app.store.key_collection_point(&key_id).await.unwrap(), None);
}

#[tokio::test]
async fn a_contact_time_outside_its_range_is_refused_and_nothing_recorded() {
    let app = TestApp::new().await;
    let decide = Some(app.key(Role::Decide));
    let contact = |at: i64| {
        json!({"subject": {"user_id": "u1"}, "channel": "email",
            "purpose": "marketing.communications", "at": at})
    };
    for at in [
        i64::MIN,
        -1,
        0,
        input::EARLIEST - 1,
        NOW + input::CLOCK_SKEW + 1,
        i64::MAX,
    ] {
        let answer = app
            .send(post("/v1/contacts", decide, &contact(at).to_string()))
            .await;
        assert_invalid(&answer, StatusCode::UNPROCESSABLE_ENTITY, "at");
    }
    // In a list, the bad one is named and the good one before it is not recorded either.
    let list = json!({"contacts": [contact(NOW - 1000), contact(i64::MIN)]});
    let answer = app
        .send(post("/v1/contacts", decide, &list.to_string()))
        .await;
    assert_invalid(&answer, StatusCode::UNPROCESSABLE_ENTITY, "contacts[1].at");
    let uses = app
        .send(request(
            "GET",
            &format!("/v1/uses?subject={}", app.subjects[0].0),
            Some(app.key(Role::Privacy)),
            None,
        ))
        .await;
    assert_eq!(uses.status, StatusCode::OK, "{}", uses.text);
    assert_eq!(uses.json["uses"], json!([]), "{}", uses.text);

    let answer = app
        .send(post(
            "/v1/contacts",
            decide,
            &contact(input::EARLIEST).to_string(),
        ))
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
}

fn consent(subject: u32, source: &str, evidence: Value) -> Value {
    json!({
        "subject": subject,
        "purpose": "marketing.communications",
        "channel": "email",
        "action": "given",
        "method": "double_opt_in",
        "source": source,
        "evidence": evidence,
    })
}

#[tokio::test]
async fn ledger_text_over_its_limit_or_with_control_characters_is_refused_whole() {
    let app = TestApp::new().await;
    let privacy = Some(app.key(Role::Privacy));
    let subject = app.subjects[0].0;
    let append = |records: Vec<Value>| {
        post(
            "/v1/consents",
            privacy,
            &json!({ "records": records }).to_string(),
        )
    };
    let good = consent(subject, "api", json!({"reference": "form-1"}));
    let cases = [
        (
            consent(subject, &"x".repeat(300 * 1024), json!({})),
            "records[1].source",
        ),
        (
            consent(subject, &"x".repeat(input::SOURCE_MAX + 1), json!({})),
            "records[1].source",
        ),
        (consent(subject, "api\0", json!({})), "records[1].source"),
        (
            consent(subject, "api", json!({"user_agent": "Mozilla\u{0}"})),
            "records[1].evidence.user_agent",
        ),
        (
            consent(subject, "api", json!({"reference": "a\nb"})),
            "records[1].evidence.reference",
        ),
        (
            consent(
                subject,
                "api",
                json!({"ip_hash": "f".repeat(input::HASH_MAX + 1)}),
            ),
            "records[1].evidence.ip_hash",
        ),
        (
            consent(subject, "api", json!({"text_hash": "\u{1b}[2J"})),
            "records[1].evidence.text_hash",
        ),
        (
            consent(
                subject,
                "api",
                json!({"user_agent": "u".repeat(input::USER_AGENT_MAX + 1)}),
            ),
            "records[1].evidence.user_agent",
        ),
    ];
    for (bad, field) in cases {
        let answer = app.send(append(vec![good.clone(), bad])).await;
        assert_invalid(&answer, StatusCode::UNPROCESSABLE_ENTITY, field);
    }
    assert_eq!(ledger_length(&app).await, 0);

    // At the limits, and with text beyond ASCII, it is written.
    let at_limit = consent(
        subject,
        &"é".repeat(input::SOURCE_MAX),
        json!({"reference": "r".repeat(input::REFERENCE_MAX),
            "user_agent": "u".repeat(input::USER_AGENT_MAX)}),
    );
    let answer = app.send(append(vec![at_limit])).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    assert_eq!(ledger_length(&app).await, 1);

    // The preference API's evidence goes to the ledger too.
    let path = format!("/v1/subjects/{subject}/preferences");
    let body = json!({"purposes": {"marketing.communications": false},
        "evidence": {"reference": "r".repeat(input::REFERENCE_MAX + 1)}});
    let answer = app
        .send(request("PUT", &path, privacy, Some(&body.to_string())))
        .await;
    assert_invalid(
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "evidence.reference",
    );
    assert_eq!(ledger_length(&app).await, 1);
}

#[test]
fn the_openapi_limits_are_the_servers() {
    let doc: Value = serde_json::from_str(&kept_server::openapi::document_json()).unwrap();
    let schemas = &doc["components"]["schemas"];
    let source = &schemas["ConsentInput"]["properties"]["source"];
    assert_eq!(source["maxLength"], input::SOURCE_MAX);
    assert_eq!(source["minLength"], 1);
    for schema in ["EvidenceBody", "EvidenceInput"] {
        let props = &schemas[schema]["properties"];
        assert_eq!(
            props["user_agent"]["maxLength"],
            input::USER_AGENT_MAX,
            "{schema}"
        );
        assert_eq!(
            props["reference"]["maxLength"],
            input::REFERENCE_MAX,
            "{schema}"
        );
        assert_eq!(props["ip_hash"]["maxLength"], input::HASH_MAX, "{schema}");
    }
    assert_eq!(
        schemas["EvidenceBody"]["properties"]["text_hash"]["maxLength"],
        input::HASH_MAX
    );
    assert_eq!(
        schemas["ContactInput"]["properties"]["at"]["minimum"].as_f64(),
        Some(input::EARLIEST as f64)
    );
    let records = &schemas["AppendConsents"]["properties"]["records"];
    assert_eq!(records["maxItems"], kept_server::consent::api::MAX_RECORDS);
    assert_eq!(records["minItems"], 1);
    let contacts = &schemas["ContactsBody"]["properties"]["contacts"];
    assert_eq!(
        contacts["maxItems"],
        kept_server::decide::contacts::MAX_CONTACTS
    );
    assert_eq!(contacts["minItems"], 1);
    let point = &schemas["KeyCollectionPoint"];
    assert_eq!(point["required"], json!(["collection_point"]));
}

fn basic(key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

fn collect(app: &TestApp, path: &str, body: &Value) -> Request<Body> {
    Request::post(path)
        .header(header::AUTHORIZATION, basic(app.key(Role::Server)))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn an_event_naming_an_unknown_collection_point_is_refused() {
    let app = TestApp::new().await;
    let identify = |user: &str, point: &str| {
        json!({"userId": user, "traits": {"name": "Cleo"},
            "context": {"kept": {"collection_point": point}}})
    };
    let answer = app
        .send(collect(&app, "/v1/identify", &identify("cleo", "nowhere")))
        .await;
    assert_invalid(
        &answer,
        StatusCode::BAD_REQUEST,
        "context.kept.collection_point",
    );
    assert!(
        answer.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("checkout")
    );
    let batch = json!({"batch": [
        {"type": "identify", "userId": "cleo", "traits": {"name": "Cleo"}},
        {"type": "identify", "userId": "dara", "traits": {"name": "Dara"},
            "context": {"kept": {"collection_point": "nowhere"}}},
    ]});
    let answer = app.send(collect(&app, "/v1/batch", &batch)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.json["accepted"], 1);
    assert_eq!(
        answer.json["rejected"][0]["path"],
        "batch[1].context.kept.collection_point"
    );
    assert_eq!(answer.json["rejected"][0]["index"], 1);
    assert_eq!(answer.json["rejected"][0]["code"], "request.invalid_event");
    // A declared point is collected at.
    let answer = app
        .send(collect(&app, "/v1/identify", &identify("cleo", "checkout")))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
}

#[tokio::test]
async fn collected_consent_evidence_is_cleaned_not_refused() {
    let app = TestApp::new().await;
    let agent = format!(
        "Mozilla/5.0\u{0}\n{}",
        "x".repeat(2 * input::USER_AGENT_MAX)
    );
    let event = json!({
        "anonymousId": "banner-1",
        "event": "Consent Updated",
        "messageId": "c-1",
        "context": {
            "location": {"country": "FR"},
            "consent": {"categoryPreferences": {"marketing.communications": true}},
            "userAgent": agent,
        },
    });
    let answer = app.send(collect(&app, "/v1/track", &event)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let privacy = Some(app.key(Role::Privacy));
    let found = app
        .send(request(
            "GET",
            "/v1/subjects/lookup?anonymous_id=banner-1",
            privacy,
            None,
        ))
        .await;
    let subject = found.json["subject"].as_u64().unwrap();
    let entries = app
        .send(request(
            "GET",
            &format!("/v1/subjects/{subject}/consents"),
            privacy,
            None,
        ))
        .await;
    let user_agent = entries.json["entries"][0]["record"]["evidence"]["user_agent"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(user_agent.starts_with("Mozilla/5.0x"), "{user_agent}");
    assert_eq!(user_agent.chars().count(), input::USER_AGENT_MAX);
    assert!(!user_agent.chars().any(char::is_control));
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_json_413_everywhere() {
    let app = TestApp::with_limits(Limits {
        body_limit: 1024,
        ..Limits::default()
    })
    .await;
    let path = format!("/v1/subjects/{}/preference-link", app.subjects[0].0);
    let big = format!(r#"{{"padding": "{}"}}"#, "x".repeat(4096));
    let answer = app
        .send(post(&path, Some(app.key(Role::Privacy)), &big))
        .await;
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        answer.text
    );
    assert_eq!(
        answer.headers[header::CONTENT_TYPE],
        "application/json",
        "{}",
        answer.text
    );
    assert_eq!(answer.code(), "request.too_large");
    assert!(
        answer.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1024")
    );

    // Any plain-text answer a library layer gives is put in the JSON shape.
    let extra: Router<kept_server::AppState> = Router::new().route(
        "/plain",
        post_route(|_: axum::body::Bytes| async { "read" }),
    );
    let router = kept_server::router::router_with(extra, app.state.clone());
    let plain = crate::support::send(router, post("/plain", None, &big)).await;
    assert_eq!(plain.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(plain.code(), "request.too_large");
}

#[tokio::test]
async fn a_uri_over_the_limit_is_a_json_414() {
    let app = TestApp::new().await;
    let long = format!(
        "/v1/decision-log?before={}",
        "1".repeat(kept_server::http::error::MAX_URI_BYTES)
    );
    let answer = app
        .send(request("GET", &long, Some(app.key(Role::Admin)), None))
        .await;
    assert_eq!(answer.status, StatusCode::URI_TOO_LONG, "{}", answer.text);
    assert_eq!(answer.headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(answer.code(), "request.uri_too_long");
    // Just under the limit, the request is read (and its parameter judged).
    let under = format!(
        "/v1/decision-log?before={}",
        "1".repeat(kept_server::http::error::MAX_URI_BYTES - 40)
    );
    let answer = app
        .send(request("GET", &under, Some(app.key(Role::Admin)), None))
        .await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        answer.text
    );
}

#[tokio::test]
async fn a_preferences_update_naming_an_unknown_channel_changes_nothing() {
    let app = TestApp::new().await;
    let privacy = Some(app.key(Role::Privacy));
    let path = format!("/v1/subjects/{}/preferences", app.subjects[0].0);
    let before = app.send(request("GET", &path, privacy, None)).await;
    assert_eq!(before.status, StatusCode::OK, "{}", before.text);
    let body = json!({"channels": [
        {"channel": "email", "frequency": "day"},
        {"channel": "pigeon", "frequency": "day"},
    ]});
    let answer = app
        .send(request("PUT", &path, privacy, Some(&body.to_string())))
        .await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        answer.text
    );
    assert_eq!(answer.json["error"]["field"], "channels", "{}", answer.text);
    let after = app.send(request("GET", &path, privacy, None)).await;
    assert_eq!(after.json["channels"], before.json["channels"]);
    assert_eq!(after.json["channels"][0]["frequency"], "any");
    assert!(
        app.store
            .channel_preferences(app.subjects[0])
            .await
            .unwrap()
            .is_empty()
    );
    // The email change alone is made.
    let body = json!({"channels": [{"channel": "email", "frequency": "day"}]});
    let answer = app
        .send(request("PUT", &path, privacy, Some(&body.to_string())))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(
        app.store
            .channel_preferences(app.subjects[0])
            .await
            .unwrap()
            .len(),
        1
    );
}

/// Sends `target` as the request line of a GET through a real socket, and reads the answer.
async fn raw_get(addr: std::net::SocketAddr, target: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!("GET {target} HTTP/1.1\r\nHost: kept\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// Through hyper, as served: a URI over Kept's limit gets the JSON 414; one over hyper's own
/// limit (64 KiB) is refused by hyper before any layer runs, with an empty 414 Kept cannot
/// reach. This test says so, and fails if hyper ever lets such a URI through.
#[tokio::test]
async fn served_uris_over_the_limit_are_refused_with_json_until_hyper_refuses_first() {
    let app = TestApp::new().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app.router();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    let over_ours = format!(
        "/healthz?x={}",
        "1".repeat(kept_server::http::error::MAX_URI_BYTES)
    );
    let answer = raw_get(addr, &over_ours).await;
    assert!(answer.starts_with("HTTP/1.1 414"), "{answer}");
    assert!(
        answer.contains("content-type: application/json"),
        "{answer}"
    );
    assert!(answer.contains("\"request.uri_too_long\""), "{answer}");

    let over_hypers = format!("/healthz?x={}", "1".repeat(70 * 1024));
    let answer = raw_get(addr, &over_hypers).await;
    assert!(answer.starts_with("HTTP/1.1 414"), "{answer}");
    assert!(!answer.contains("uri_too_long"), "{answer}");

    let fine = raw_get(addr, "/healthz").await;
    assert!(fine.starts_with("HTTP/1.1 200"), "{fine}");
    server.abort();
}

#[tokio::test]
async fn a_query_error_names_the_parameter() {
    let app = TestApp::new().await;
    let privacy = Some(app.key(Role::Privacy));
    let unknown = app
        .send(request(
            "GET",
            "/v1/uses?subject=1&colour=blue",
            privacy,
            None,
        ))
        .await;
    assert_invalid(&unknown, StatusCode::UNPROCESSABLE_ENTITY, "colour");
    assert!(
        unknown.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown query parameter `colour`"),
        "{}",
        unknown.text
    );
    let repeated = app
        .send(request(
            "GET",
            "/v1/uses?subject=1&subject=2",
            privacy,
            None,
        ))
        .await;
    assert_invalid(&repeated, StatusCode::UNPROCESSABLE_ENTITY, "subject");
}

#[tokio::test]
async fn a_user_agent_header_is_cut_to_the_ledger_limit() {
    let app = TestApp::new().await;
    let event = json!({
        "anonymousId": "banner-2",
        "event": "Consent Updated",
        "context": {
            "location": {"country": "FR"},
            "consent": {"categoryPreferences": {"marketing.communications": true}},
        },
    });
    let mut call = collect(&app, "/v1/track", &event);
    let agent = format!("Mozilla/5.0\t{}", "y".repeat(4 * input::USER_AGENT_MAX));
    call.headers_mut()
        .insert(header::USER_AGENT, agent.parse().unwrap());
    let answer = app.send(call).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let privacy = Some(app.key(Role::Privacy));
    let found = app
        .send(request(
            "GET",
            "/v1/subjects/lookup?anonymous_id=banner-2",
            privacy,
            None,
        ))
        .await;
    let subject = found.json["subject"].as_u64().unwrap();
    let entries = app
        .send(request(
            "GET",
            &format!("/v1/subjects/{subject}/consents"),
            privacy,
            None,
        ))
        .await;
    let stored = entries.json["entries"][0]["record"]["evidence"]["user_agent"]
        .as_str()
        .unwrap();
    assert_eq!(stored.chars().count(), input::USER_AGENT_MAX);
    assert!(stored.starts_with("Mozilla/5.0y"), "{stored}");
}

#[tokio::test]
async fn a_nested_object_sent_as_an_array_is_refused() {
    let app = TestApp::new().await;
    let privacy = Some(app.key(Role::Privacy));
    let subject = app.subjects[0].0;
    let body = json!({"records": [consent(subject, "api", json!([null, null]))]});
    let answer = app
        .send(post("/v1/consents", privacy, &body.to_string()))
        .await;
    assert_invalid(
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "records[0].evidence",
    );
    // Inside the object, a wrong field is still named.
    let body = json!({"records": [consent(subject, "api", json!({"colour": "blue"}))]});
    let answer = app
        .send(post("/v1/consents", privacy, &body.to_string()))
        .await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        answer.text
    );
    assert_eq!(
        answer.json["error"]["field"], "records[0].evidence.colour",
        "{}",
        answer.text
    );
    assert_eq!(ledger_length(&app).await, 0);

    let path = format!("/v1/subjects/{subject}/preferences");
    for field in ["evidence", "sms"] {
        let body = json!({ field: [null, null] });
        let answer = app
            .send(request("PUT", &path, privacy, Some(&body.to_string())))
            .await;
        assert_invalid(&answer, StatusCode::UNPROCESSABLE_ENTITY, field);
    }
    // `null` is still "none".
    let body = json!({"records": [consent(subject, "api", Value::Null)]});
    let answer = app
        .send(post("/v1/consents", privacy, &body.to_string()))
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
}

/// The schema's minimum for a link's lifetime is the server's: 0 is refused, so 0 is outside.
#[tokio::test]
async fn a_link_lifetime_the_schema_allows_is_accepted() {
    let doc: Value = serde_json::from_str(&kept_server::openapi::document_json()).unwrap();
    let ttl = &doc["components"]["schemas"]["LinkRequest"]["properties"]["ttl_minutes"];
    let minimum = ttl["minimum"].as_u64().unwrap();
    let app = TestApp::new().await;
    let path = format!("/v1/subjects/{}/preference-link", app.subjects[0].0);
    let privacy = Some(app.key(Role::Privacy));
    let at_minimum = json!({ "ttl_minutes": minimum }).to_string();
    let answer = app.send(post(&path, privacy, &at_minimum)).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    let below = json!({ "ttl_minutes": minimum - 1 }).to_string();
    let answer = app.send(post(&path, privacy, &below)).await;
    assert_invalid(&answer, StatusCode::UNPROCESSABLE_ENTITY, "ttl_minutes");
}

/// A page size outside its documented range is refused, naming `limit`, where it was quietly
/// changed (0 read as 1, 2^31 as the maximum); the schema states the same range.
#[tokio::test]
async fn a_page_size_outside_its_range_is_refused_as_the_schema_says() {
    let doc: Value = serde_json::from_str(&kept_server::openapi::document_json()).unwrap();
    let app = TestApp::new().await;
    let events = format!("/v1/subjects/{}/events", app.subjects[0].0);
    for (path, role, max) in [
        (events.as_str(), Role::Privacy, 1000_u64),
        ("/v1/webhooks/dead-letters", Role::Admin, 500),
        ("/v1/merges", Role::Privacy, 1000),
        ("/v1/uses", Role::Privacy, 1000),
        ("/v1/decision-log", Role::Privacy, 1000),
    ] {
        let template = if path == events {
            "/v1/subjects/{id}/events"
        } else {
            path
        };
        let parameters = doc["paths"][template]["get"]["parameters"]
            .as_array()
            .unwrap();
        let limit = parameters.iter().find(|p| p["name"] == "limit").unwrap();
        assert_eq!(limit["schema"]["minimum"], 1, "{path}");
        assert_eq!(limit["schema"]["maximum"], max, "{path}");
        let subject = if path == "/v1/uses" { "subject=1&" } else { "" };
        for bad in [0, max + 1, 2_147_483_648] {
            let target = format!("{path}?{subject}limit={bad}");
            let answer = app
                .send(request("GET", &target, Some(app.key(role)), None))
                .await;
            assert_invalid(&answer, StatusCode::UNPROCESSABLE_ENTITY, "limit");
        }
        let target = format!("{path}?{subject}limit={max}");
        let answer = app
            .send(request("GET", &target, Some(app.key(role)), None))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{target}: {}", answer.text);
    }
}

/// Every id the document takes, as a path or query parameter, states its whole range, and a
/// value past it is a 4xx, never a server error.
#[tokio::test]
async fn every_id_parameter_has_its_range_and_past_it_is_refused() {
    let doc: Value = serde_json::from_str(&kept_server::openapi::document_json()).unwrap();
    let mut ids = 0;
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let name = parameter["name"].as_str().unwrap();
                let schema = &parameter["schema"];
                if schema["type"] != "integer"
                    || !["id", "subject", "before", "after"].contains(&name)
                {
                    continue;
                }
                ids += 1;
                let at = format!("{method} {template} {name}");
                assert!(schema["minimum"].is_number(), "{at} has no minimum");
                let max = schema["maximum"].as_u64();
                assert!(
                    max == Some(u64::from(u32::MAX))
                        || max == Some(kept_server::http::error::MAX_ROW_ID),
                    "{at}: maximum {max:?}"
                );
            }
        }
    }
    assert!(ids >= 10, "only {ids} id parameters found");
    let app = TestApp::new().await;
    let past = "9223372036854775808";
    for (method, path, role) in [
        ("POST", format!("/v1/merges/{past}/undo"), Role::Privacy),
        (
            "POST",
            format!("/v1/webhooks/dead-letters/{past}/retry"),
            Role::Admin,
        ),
        (
            "GET",
            format!("/v1/subjects/{}/preferences", u64::from(u32::MAX) + 1),
            Role::Privacy,
        ),
        (
            "GET",
            format!(
                "/v1/subjects/{}/profile?purpose=analytics",
                u64::from(u32::MAX) + 1
            ),
            Role::Decide,
        ),
        ("GET", format!("/v1/merges?before={past}"), Role::Privacy),
        (
            "GET",
            format!("/v1/webhooks/dead-letters?after={past}"),
            Role::Admin,
        ),
        (
            "GET",
            format!("/v1/decision-log?before={past}"),
            Role::Privacy,
        ),
        (
            "GET",
            format!("/v1/uses?subject=1&before={past}"),
            Role::Privacy,
        ),
    ] {
        let answer = app
            .send(request(method, &path, Some(app.key(role)), None))
            .await;
        assert!(
            answer.status.is_client_error(),
            "{method} {path}: {}",
            answer.text
        );
        assert!(
            answer.json["error"]["code"].is_string(),
            "{method} {path}: {}",
            answer.text
        );
    }
}

/// Every operation lists the JSON 414, and every one that takes a body the 400, 413 and 415
/// that any body can get, so a client generated from the document can read each answer.
#[test]
fn every_operation_documents_the_answers_any_request_can_get() {
    let doc: Value = serde_json::from_str(&kept_server::openapi::document_json()).unwrap();
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = &operation["responses"];
            let mut expected = vec!["414"];
            if operation.get("requestBody").is_some() {
                expected.extend(["400", "413", "415", "422"]);
            }
            if operation["parameters"]
                .as_array()
                .is_some_and(|p| !p.is_empty())
            {
                expected.push("422");
            }
            for status in expected {
                let body = &responses[status]["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(
                    body, "#/components/schemas/ErrorBody",
                    "{method} {template} does not document a JSON {status}"
                );
            }
        }
    }
}

/// A preference-link body may be `null` (the schema allows it: the body is optional), and its
/// language is one the page speaks, as the schema lists them.
#[tokio::test]
async fn a_preference_link_body_is_what_its_schema_says() {
    let doc: Value = serde_json::from_str(&kept_server::openapi::document_json()).unwrap();
    let locales = doc["components"]["schemas"]["PageLocale"]["enum"]
        .as_array()
        .unwrap()
        .clone();
    let app = TestApp::new().await;
    let path = format!("/v1/subjects/{}/preference-link", app.subjects[0].0);
    let privacy = Some(app.key(Role::Privacy));
    let answer = app.send(post(&path, privacy, "null")).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    for locale in locales {
        let body = json!({ "locale": locale }).to_string();
        let answer = app.send(post(&path, privacy, &body)).await;
        assert_eq!(
            answer.status,
            StatusCode::CREATED,
            "{locale}: {}",
            answer.text
        );
    }
    let answer = app.send(post(&path, privacy, r#"{"locale": "xx"}"#)).await;
    assert_invalid(&answer, StatusCode::UNPROCESSABLE_ENTITY, "locale");
}

/// Every nested object, at any depth and in any body, is an object: an array that would fill it
/// field by field is refused naming the field, and nothing is changed.
#[tokio::test]
async fn any_nested_object_sent_as_an_array_is_refused_naming_it() {
    let app = TestApp::new().await;
    let privacy = Some(app.key(Role::Privacy));
    let decide = Some(app.key(Role::Decide));
    let subject = app.subjects[0].0;
    let preferences = format!("/v1/subjects/{subject}/preferences");
    let before = app.send(request("GET", &preferences, privacy, None)).await;
    for (body, field) in [
        (json!({"channels": [["email", "day"]]}), "channels[0]"),
        (
            json!({"topics": [["email", "newsletter", false]]}),
            "topics[0]",
        ),
        (
            json!({"channels": [{"channel": "email", "quiet_hours": ["22:00", "07:00"]}]}),
            "channels[0].quiet_hours",
        ),
    ] {
        let answer = app
            .send(request(
                "PUT",
                &preferences,
                privacy,
                Some(&body.to_string()),
            ))
            .await;
        assert_invalid(&answer, StatusCode::UNPROCESSABLE_ENTITY, field);
    }
    let after = app.send(request("GET", &preferences, privacy, None)).await;
    assert_eq!(after.json["channels"], before.json["channels"]);
    assert!(
        app.store
            .channel_preferences(app.subjects[0])
            .await
            .unwrap()
            .is_empty()
    );
    let contact = json!({
        "subject": [format!("{subject}")],
        "channel": "email",
        "purpose": "marketing.communications",
    });
    let answer = app
        .send(post("/v1/contacts", decide, &contact.to_string()))
        .await;
    assert_invalid(&answer, StatusCode::UNPROCESSABLE_ENTITY, "subject");
    let audience = json!({"purpose": "marketing.communications", "candidates": {"filter": []}});
    let answer = app
        .send(post(
            "/v1/audiences/evaluate",
            decide,
            &audience.to_string(),
        ))
        .await;
    assert_invalid(
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "candidates.filter",
    );
}

/// The Segment message schema is the server's: `properties`, `traits` and `context` may be left
/// out (the schema required them), ids may be numbers, and a field of the wrong type is refused
/// whichever call carries it (an identify call's `event` object was ignored and stored).
#[tokio::test]
async fn a_segment_message_is_what_its_schema_says() {
    let doc: Value = serde_json::from_str(&kept_server::openapi::document_json()).unwrap();
    let message = &doc["components"]["schemas"]["SegmentMessage"];
    assert!(message.get("required").is_none(), "{message}");
    let app = TestApp::new().await;
    let bare = json!({"anonymousId": 42});
    let answer = app.send(collect(&app, "/v1/screen", &bare)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    for (field, value) in [
        ("event", json!({})),
        ("groupId", json!([1])),
        ("writeKey", json!(7)),
    ] {
        let mut body = json!({"userId": "schema-u1", "traits": {"plan": "gold"}});
        body[field] = value;
        let answer = app.send(collect(&app, "/v1/identify", &body)).await;
        assert_invalid(&answer, StatusCode::BAD_REQUEST, field);
    }
    let lookup = "/v1/subjects/lookup?user_id=schema-u1";
    let answer = app
        .send(request("GET", lookup, Some(app.key(Role::Privacy)), None))
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.text);
}
