//! Rectification over HTTP, on whichever backend the tests run on: corrections checked at
//! intake as collection checks them (the field named when wrong), kept out of the requests log
//! (targets and a keyed digest only), and carried out when the request enters `in_progress`:
//! traits with provenance `request:<id>`, an email found by its new address and not the old.

use crate::support::{Answer, TestApp, get, post};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use kept_store::Role;
use serde_json::{Value, json};

async fn send(app: &TestApp, path: &str, body: Value) -> Answer {
    app.send(post(path, Some(app.key(Role::Privacy)), &body.to_string()))
        .await
}

async fn identify(app: &TestApp, body: Value) {
    let request = Request::post("/v1/identify")
        .header(
            header::AUTHORIZATION,
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:", app.key(Role::Server)))
            ),
        )
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let answer = app.send(request).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
}

async fn lookup(app: &TestApp, query: &str) -> Answer {
    app.send(get(
        &format!("/v1/subjects/lookup?{query}"),
        Some(app.key(Role::Privacy)),
    ))
    .await
}

fn rectification(user: &str, corrections: Value) -> Value {
    json!({ "subject": { "user_id": user }, "kind": "rectification",
            "corrections": corrections,
            "verification": { "method": "company_stated", "reference": "case-16" } })
}

#[tokio::test]
async fn a_rectification_corrects_traits_and_the_email_with_its_provenance() {
    let app = TestApp::new().await;
    identify(
        &app,
        json!({ "userId": "cleo", "traits": { "email": "cleo@example.com", "name": "Cleo" },
                "context": { "kept": { "collection_point": "checkout" } } }),
    )
    .await;
    let filed = send(
        &app,
        "/v1/requests",
        rectification(
            "cleo",
            json!({ "traits": { "name": "Cleopatra" },
                    "identifiers": { "email": " Cleo@New.Example " } }),
        ),
    )
    .await;
    assert_eq!(filed.status, StatusCode::CREATED, "{}", filed.text);
    let id = filed.json["id"].as_u64().unwrap();
    let intake = &filed.json["log"][0]["detail"];
    assert_eq!(intake["corrections"], "identifier:email,trait:name");
    assert_eq!(intake["corrections.digest"].as_str().unwrap().len(), 64);
    // The log and the request never hold the values.
    assert!(!filed.text.contains("Cleopatra") && !filed.text.contains("new.example"));

    for to in ["verified", "in_progress"] {
        let stepped = send(
            &app,
            &format!("/v1/requests/{id}/advance"),
            json!({ "to": to }),
        )
        .await;
        assert_eq!(stepped.status, StatusCode::OK, "{}", stepped.text);
    }
    let found = lookup(&app, "user_id=cleo").await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.text);
    let traits = found.json["traits"].as_array().unwrap().clone();
    let by_key = |k: &str| traits.iter().find(|t| t["key"] == k).unwrap().clone();
    let name = by_key("name");
    assert_eq!(name["value"], "Cleopatra");
    assert_eq!(name["category"], "user.name");
    assert_eq!(name["provenance"]["source"], format!("request:{id}"));
    // The promise it was collected under still holds for the corrected value.
    assert_eq!(name["provenance"]["collection_point"], "checkout");
    assert_eq!(
        by_key("email")["provenance"]["source"],
        format!("request:{id}")
    );
    let emails: Vec<&Value> = found.json["identifiers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "email")
        .collect();
    assert_eq!(emails.len(), 1, "{}", found.text);
    assert_eq!(emails[0]["value"], "cleo@new.example");
    let subject = found.json["subject"].clone();
    assert_eq!(
        lookup(&app, "email=cleo@new.example").await.json["subject"],
        subject
    );
    assert_eq!(
        lookup(&app, "email=cleo@example.com").await.status,
        StatusCode::NOT_FOUND
    );

    // Applying again changes nothing, after a restart too.
    let app = app.restart().await;
    let again = send(&app, &format!("/v1/requests/{id}/apply"), json!({})).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    let after = lookup(&app, "user_id=cleo").await;
    assert_eq!(after.json["traits"], found.json["traits"]);
    assert_eq!(after.json["identifiers"], found.json["identifiers"]);
}

#[tokio::test]
async fn bad_corrections_are_refused_naming_the_field() {
    let app = TestApp::new().await;
    identify(
        &app,
        json!({ "userId": "dora", "traits": { "email": "dora@example.com" },
                "context": { "kept": { "collection_point": "checkout" } } }),
    )
    .await;
    identify(
        &app,
        json!({ "userId": "eve", "traits": { "email": "eve@example.com" } }),
    )
    .await;
    for (body, field) in [
        (
            rectification("dora", json!({ "traits": { "shoe_size": 38 } })),
            "corrections.traits.shoe_size",
        ),
        (
            rectification("dora", json!({ "traits": { "email": "d@example.com" } })),
            "corrections.traits.email",
        ),
        (
            rectification("dora", json!({ "traits": { "name": null } })),
            "corrections.traits.name",
        ),
        (
            rectification(
                "dora",
                json!({ "identifiers": { "email": "not an address" } }),
            ),
            "corrections.identifiers.email",
        ),
        (
            rectification("dora", json!({ "identifiers": { "user_id": "x" } })),
            "corrections.identifiers.user_id",
        ),
        (
            rectification(
                "dora",
                json!({ "identifiers": { "email": "eve@example.com" } }),
            ),
            "corrections.identifiers.email",
        ),
        (rectification("dora", json!({})), "corrections"),
        (
            json!({ "subject": { "user_id": "dora" }, "kind": "access",
                    "corrections": { "traits": { "name": "Dora" } } }),
            "corrections",
        ),
    ] {
        let answer = send(&app, "/v1/requests", body.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            answer.text
        );
        assert_eq!(answer.json["error"]["field"], field, "{}", answer.text);
    }
    let listed = app
        .send(get("/v1/requests", Some(app.key(Role::Privacy))))
        .await;
    assert_eq!(listed.json["requests"], json!([]), "nothing was filed");
}
