//! Handlers through `oneshot`: health, metrics, consents, the ledger, keys, and the JSON shape
//! of every kind of error.

use crate::support::{NOW, TestApp, get, newsletter_consent, post, request};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::routing::get as get_route;
use kept_server::state::Limits;
use kept_store::Role;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn health_answers_ok_while_the_store_answers() {
    let app = TestApp::new().await;
    let answer = app.send(get("/healthz", None)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json, json!({ "status": "ok" }));
}

#[tokio::test]
async fn health_answers_503_once_the_store_is_closed() {
    let app = TestApp::new().await;
    app.store.close().await.unwrap();
    let answer = app.send(get("/healthz", None)).await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.text
    );
    assert_eq!(answer.code(), "store.unavailable");
}

#[tokio::test]
async fn consents_are_appended_and_read_back_with_the_manifest_notice() {
    let app = TestApp::new().await;
    let privacy = app.key(Role::Privacy);
    let subject = app.subjects[0];
    let answer = app
        .send(post(
            "/v1/consents",
            Some(privacy),
            &newsletter_consent(subject),
        ))
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    assert_eq!(answer.json["entries"][0]["seq"], 1);
    let hash = answer.json["entries"][0]["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(hash.len(), 64);

    let read = app
        .send(get(
            &format!("/v1/subjects/{}/consents", subject.0),
            Some(privacy),
        ))
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);
    let entry = &read.json["entries"][0];
    assert_eq!(entry["seq"], 1);
    assert_eq!(entry["hash"], hash.as_str());
    let record = &entry["record"];
    assert_eq!(record["purpose"], "marketing.communications");
    assert_eq!(record["action"], "given");
    assert_eq!(record["method"], "double_opt_in");
    assert_eq!(record["regime"], "gdpr");
    assert_eq!(record["at"], NOW);
    assert_eq!(record["evidence"]["reference"], "signup-42");
    let manifest = crate::support::demo_manifest();
    let notice = &manifest.notices["newsletter"];
    assert_eq!(record["notice"]["id"], "newsletter");
    assert_eq!(record["notice"]["version"], notice.version);
    assert_eq!(record["notice"]["hash"], notice.hash.as_str());

    let ledger = app.send(get("/v1/ledger", Some(privacy))).await;
    assert_eq!(ledger.status, StatusCode::OK);
    assert_eq!(ledger.json["length"], 1);
    assert_eq!(ledger.json["tip_hash"], hash.as_str());
}

#[tokio::test]
async fn several_records_are_appended_in_order() {
    let app = TestApp::new().await;
    let body = json!({ "records": [
        { "subject": app.subjects[1].0, "purpose": "marketing.advertising.third_party.targeted",
          "action": "opted_out", "method": "gpc", "source": "collection" },
        { "subject": app.subjects[1].0, "purpose": "marketing.communications", "channel": "sms",
          "topic": "offers", "action": "given", "notice": "sms_offers", "method": "written",
          "source": "collection" },
    ]});
    let answer = app
        .send(post(
            "/v1/consents",
            Some(app.key(Role::Admin)),
            &body.to_string(),
        ))
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    let seqs: Vec<u64> = answer.json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2]);
    let read = app
        .send(get(
            &format!("/v1/subjects/{}/consents", app.subjects[1].0),
            Some(app.key(Role::Privacy)),
        ))
        .await;
    assert_eq!(read.json["entries"][0]["record"]["regime"], "ccpa");
    assert_eq!(read.json["entries"][1]["record"]["channel"], "sms");
}

#[tokio::test]
async fn unknown_subject_reads_as_404() {
    let app = TestApp::new().await;
    let answer = app
        .send(get(
            "/v1/subjects/999/consents",
            Some(app.key(Role::Privacy)),
        ))
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.code(), "not_found");
}

/// Appends `record` (merged over a valid newsletter record) and returns the answer.
async fn append_with(app: &TestApp, changes: serde_json::Value) -> crate::support::Answer {
    let mut body: serde_json::Value =
        serde_json::from_str(&newsletter_consent(app.subjects[0])).unwrap();
    let record = body["records"][0].as_object_mut().unwrap();
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            record.remove(k);
        } else {
            record.insert(k.clone(), v.clone());
        }
    }
    app.send(post(
        "/v1/consents",
        Some(app.key(Role::Privacy)),
        &body.to_string(),
    ))
    .await
}

#[tokio::test]
async fn fields_that_name_nothing_in_the_manifest_are_422_naming_the_field() {
    let app = TestApp::new().await;
    let cases = [
        (
            json!({ "purpose": "marketing.telepathy" }),
            "records[0].purpose",
            "marketing.telepathy",
        ),
        (
            json!({ "channel": "pigeon" }),
            "records[0].channel",
            "pigeon",
        ),
        (json!({ "topic": "gossip" }), "records[0].topic", "gossip"),
        (
            json!({ "notice": "fine_print" }),
            "records[0].notice",
            "fine_print",
        ),
        (json!({ "subject": 4242 }), "records[0].subject", "4242"),
        (json!({ "colour": "blue" }), "records[0].colour", "colour"),
        (json!({ "purpose": null }), "records[0].purpose", "purpose"),
        (
            json!({ "action": "shrugged" }),
            "records[0].action",
            "shrugged",
        ),
        (json!({ "subject": "seven" }), "records[0].subject", "seven"),
        // The rewards notice never mentioned marketing: consent under it proves nothing, and
        // no record, not even a withdrawal, names it for marketing.
        (
            json!({ "notice": "rewards" }),
            "records[0].notice",
            "rewards",
        ),
        (
            json!({ "notice": "rewards", "action": "withdrawn" }),
            "records[0].notice",
            "rewards",
        ),
        // The text-message notice does not promise email.
        (
            json!({ "notice": "sms_offers" }),
            "records[0].notice",
            "sms_offers",
        ),
    ];
    for (change, field, mentioned) in cases {
        let answer = append_with(&app, change.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{change}: {}",
            answer.text
        );
        assert_eq!(answer.code(), "request.invalid_field", "{change}");
        assert_eq!(
            answer.json["error"]["field"], field,
            "{change}: {}",
            answer.text
        );
        let message = answer.json["error"]["message"].as_str().unwrap();
        assert!(message.contains(mentioned), "{change}: {message}");
    }
    assert_eq!(app.store.ledger_len().await.unwrap(), 0);
}

#[tokio::test]
async fn an_empty_batch_is_422() {
    let app = TestApp::new().await;
    let answer = app
        .send(post(
            "/v1/consents",
            Some(app.key(Role::Privacy)),
            r#"{"records": []}"#,
        ))
        .await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer.json["error"]["field"], "records");
}

#[tokio::test]
async fn error_bodies_have_one_shape() {
    let app = TestApp::with_limits(Limits {
        body_limit: 1024,
        request_timeout: Duration::from_secs(30),
        ..Limits::default()
    })
    .await;
    let privacy = app.key(Role::Privacy);

    let bad_json = app
        .send(post("/v1/consents", Some(privacy), "{\"records\": ["))
        .await;
    assert_eq!(bad_json.status, StatusCode::BAD_REQUEST);
    insta::assert_json_snapshot!("bad_json", bad_json.json);

    let too_large = format!(r#"{{"records": [], "padding": "{}"}}"#, "x".repeat(2048));
    let too_large = app
        .send(post("/v1/consents", Some(privacy), &too_large))
        .await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
    insta::assert_json_snapshot!("too_large", too_large.json);

    let unknown_field = append_with(&app, json!({ "colour": "blue" })).await;
    insta::assert_json_snapshot!("unknown_field", unknown_field.json);

    let mut wrong_type = request("POST", "/v1/consents", Some(privacy), None);
    *wrong_type.body_mut() = Body::from(newsletter_consent(app.subjects[0]));
    wrong_type.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    let wrong_type = app.send(wrong_type).await;
    assert_eq!(wrong_type.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    insta::assert_json_snapshot!("unsupported_media_type", wrong_type.json);

    let bad_id = app
        .send(get("/v1/subjects/seven/consents", Some(privacy)))
        .await;
    assert_eq!(bad_id.status, StatusCode::UNPROCESSABLE_ENTITY);
    insta::assert_json_snapshot!("bad_path_param", bad_id.json);

    let missing = app.send(get("/v1/nothing-here", Some(privacy))).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    insta::assert_json_snapshot!("not_found", missing.json);

    let wrong_method = app
        .send(request("PUT", "/v1/ledger", Some(privacy), None))
        .await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.code(), "request.method_not_allowed");

    let no_key = app.send(get("/v1/ledger", None)).await;
    assert_eq!(no_key.status, StatusCode::UNAUTHORIZED);
    assert!(no_key.headers.contains_key(header::WWW_AUTHENTICATE));
    insta::assert_json_snapshot!("missing_key", no_key.json);

    let forbidden = app
        .send(get("/v1/ledger", Some(app.key(Role::Public))))
        .await;
    insta::assert_json_snapshot!("forbidden", forbidden.json);
}

#[tokio::test]
async fn panics_and_timeouts_answer_json() {
    let app = TestApp::with_limits(Limits {
        body_limit: 1024,
        request_timeout: Duration::from_millis(20),
        ..Limits::default()
    })
    .await;
    let extra: Router<kept_server::AppState> = Router::new()
        .route(
            "/boom",
            get_route(|| async {
                let items: Vec<u8> = Vec::new();
                // A bug in a handler: the server answers 500 in the usual shape and stays up.
                items[3].to_string()
            }),
        )
        .route("/stuck", get_route(std::future::pending::<&'static str>))
        .route("/ok", get_route(|| async { "ok" }));
    let router = kept_server::router::router_with(extra, app.state.clone());
    let boom = crate::support::send(router.clone(), get("/boom", None)).await;
    assert_eq!(boom.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(boom.code(), "server.internal");
    assert_eq!(boom.json["error"]["message"], "internal error");
    let stuck = crate::support::send(router.clone(), get("/stuck", None)).await;
    assert_eq!(stuck.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(stuck.code(), "server.timeout");
    // Still serving (a route that needs nothing, so a busy machine cannot make it miss the
    // 20 ms this router allows).
    let after = crate::support::send(router, get("/ok", None)).await;
    assert_eq!(after.status, StatusCode::OK);
}

#[tokio::test]
async fn metrics_count_requests_by_route_template() {
    let app = TestApp::new().await;
    let privacy = app.key(Role::Privacy);
    app.send(post(
        "/v1/consents",
        Some(privacy),
        &newsletter_consent(app.subjects[0]),
    ))
    .await;
    app.send(get("/v1/subjects/123456/consents", Some(privacy)))
        .await;
    let metrics = app.send(get("/metrics", None)).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(
        metrics.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = &metrics.text;
    assert!(
        text.lines()
            .any(|l| l.starts_with("kept_http_requests_total")
                && l.contains("route=\"/v1/subjects/{id}/consents\"")
                && l.contains("status=\"404\"")),
        "{text}"
    );
    assert!(
        !text.contains("123456"),
        "a raw path leaked into metrics:\n{text}"
    );
    assert!(
        text.contains("kept_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("kept_ledger_appends_total"), "{text}");
}

#[tokio::test]
async fn keys_are_created_listed_and_revoked_by_admins() {
    let app = TestApp::new().await;
    let admin = app.key(Role::Admin);
    let created = app
        .send(post(
            "/v1/keys",
            Some(admin),
            r#"{"role": "public", "name": "web shop"}"#,
        ))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let key = created.json["key"].as_str().unwrap().to_owned();
    let id = created.json["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with(&format!("{id}_")));
    assert_eq!(created.json["role"], "public");

    let list = app.send(get("/v1/keys", Some(admin))).await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(!list.text.contains(&key), "a listing showed a secret");
    let listed = list.json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .expect("the new key is listed");
    assert_eq!(listed["name"], "web shop");
    assert_eq!(listed["revoked_at"], serde_json::Value::Null);

    let revoked = app
        .send(request(
            "DELETE",
            &format!("/v1/keys/{id}"),
            Some(admin),
            None,
        ))
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.text);
    let again = app
        .send(request(
            "DELETE",
            "/v1/keys/kept_00000000",
            Some(admin),
            None,
        ))
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_revoked_key_stops_working_at_once_even_when_cached() {
    let app = TestApp::new().await;
    let privacy = app.key(Role::Privacy).to_owned();
    let ok = app.send(get("/v1/ledger", Some(&privacy))).await;
    assert_eq!(ok.status, StatusCode::OK);
    let id = kept_server::http::auth::key_id(&privacy)
        .unwrap()
        .to_owned();
    let revoked = app
        .send(request(
            "DELETE",
            &format!("/v1/keys/{id}"),
            Some(app.key(Role::Admin)),
            None,
        ))
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let after = app.send(get("/v1/ledger", Some(&privacy))).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    assert_eq!(after.code(), "auth.invalid_key");
}

#[tokio::test]
async fn basic_auth_with_the_key_as_user_is_accepted() {
    use base64::Engine;
    let app = TestApp::new().await;
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:", app.key(Role::Privacy)));
    let req = Request::builder()
        .uri("/v1/ledger")
        .header(header::AUTHORIZATION, format!("Basic {basic}"))
        .body(Body::empty())
        .unwrap();
    let answer = app.send(req).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
}

/// Ids and cursors past 2^63 - 1 name no row a database can hold: a 4xx naming the parameter,
/// never the database's own failure (500).
#[tokio::test]
async fn ids_beyond_what_a_row_can_hold_are_refused_not_passed_on() {
    let app = TestApp::new().await;
    let big = "18446744073709551615";
    for (role, method, path, status, field) in [
        (
            Role::Privacy,
            "GET",
            format!("/v1/uses?subject=1&before={big}"),
            422,
            Some("before"),
        ),
        (
            Role::Privacy,
            "GET",
            format!("/v1/decision-log?before={big}"),
            422,
            Some("before"),
        ),
        (
            Role::Privacy,
            "GET",
            format!("/v1/merges?before={big}"),
            422,
            Some("before"),
        ),
        (
            Role::Admin,
            "GET",
            format!("/v1/webhooks/dead-letters?after={big}"),
            422,
            Some("after"),
        ),
        (
            Role::Admin,
            "POST",
            format!("/v1/webhooks/dead-letters/{big}/retry"),
            404,
            None,
        ),
        (
            Role::Privacy,
            "POST",
            format!("/v1/merges/{big}/undo"),
            422,
            Some("id"),
        ),
    ] {
        let answer = app
            .send(request(method, &path, Some(app.key(role)), None))
            .await;
        assert_eq!(answer.status.as_u16(), status, "{path}: {}", answer.text);
        if let Some(field) = field {
            assert_eq!(
                answer.json["error"]["field"], field,
                "{path}: {}",
                answer.text
            );
        }
    }
    // The largest id a row can have is a valid cursor.
    let answer = app
        .send(get(
            "/v1/decision-log?before=9223372036854775807",
            Some(app.key(Role::Privacy)),
        ))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
}
