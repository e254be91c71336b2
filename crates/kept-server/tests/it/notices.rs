//! Which notice a consent record names: the one the banner showed (one rule for the banner, the
//! ledger and the preference center, also where a notice lists a parent purpose), only one the
//! client named, never one that does not promise the purpose, and a yes under such a notice
//! allows nothing; and a CSV export that defuses what a client planted.

use crate::support::{Answer, TestApp, demo_manifest, send};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use kept_core::ledger::{ConsentAction, ConsentRecord, decode};
use kept_core::manifest::Manifest;
use kept_core::manifest::promises::UNPROMISED_MARK;
use kept_store::Role;
use serde_json::{Map, Value, json};

/// A test app on `manifest` instead of the demo's.
async fn app_on(manifest: Manifest) -> TestApp {
    let mut app = TestApp::new().await;
    app = app.restart_with(manifest).await;
    app
}

async fn collect(app: &TestApp, path: &str, body: &Value) -> Answer {
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:", app.key(Role::Public)));
    let answer = app
        .send(
            Request::post(path)
                .header(header::AUTHORIZATION, format!("Basic {basic}"))
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer
}

async fn subject_of(app: &TestApp, anonymous_id: &str) -> kept_core::SubjectId {
    let answer = app
        .send(
            Request::get(format!("/v1/subjects/lookup?anonymous_id={anonymous_id}"))
                .header(
                    header::AUTHORIZATION,
                    format!("Bearer {}", app.key(Role::Privacy)),
                )
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    kept_core::SubjectId(u32::try_from(answer.json["subject"].as_u64().unwrap()).unwrap())
}

async fn records(app: &TestApp, subject: kept_core::SubjectId) -> Vec<ConsentRecord> {
    app.store
        .ledger_for_subject(subject)
        .await
        .unwrap()
        .iter()
        .map(|e| decode(&e.bytes).unwrap())
        .collect()
}

async fn decide(app: &TestApp, subject: kept_core::SubjectId, purpose: &str) -> String {
    let answer = app
        .send(
            Request::post("/v1/decisions")
                .header(
                    header::AUTHORIZATION,
                    format!("Bearer {}", app.key(Role::Decide)),
                )
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    json!({"subject": {"id": subject.0}, "purpose": purpose, "channel": "email"})
                        .to_string(),
                ))
                .unwrap(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.json["reason"].as_str().unwrap().to_owned()
}

/// Shows the banner to a visitor in Germany, says yes to everything it asks, and sends the
/// choice as `kept.js` does (with `page_first`, a page view carrying it arrives before the
/// `Consent Updated` event). Answers the banner's notice id per purpose and the records made.
async fn banner_round(
    app: &TestApp,
    browser: &str,
    page_first: bool,
) -> (Vec<(String, Option<String>)>, Vec<ConsentRecord>) {
    let config = send(
        app.router(),
        Request::get("/kept/config.json")
            .header("x-kept-country", "DE")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(config.status, StatusCode::OK, "{}", config.text);
    let mut shown = Vec::new();
    let mut choices = Map::new();
    let mut notices = Map::new();
    for p in config.json["purposes"].as_array().unwrap() {
        if p["requires"] == "none" {
            continue;
        }
        let key = p["key"].as_str().unwrap().to_owned();
        choices.insert(key.clone(), json!(true));
        let notice = p["notice"]["id"].as_str().map(str::to_owned);
        // What kept.js sends: the notice of each purpose it showed one for.
        if notice.is_some() {
            notices.insert(
                key.clone(),
                json!({"id": p["notice"]["id"], "version": p["notice"]["version"]}),
            );
        }
        shown.push((key, notice));
    }
    assert!(!shown.is_empty(), "{}", config.text);
    if page_first {
        // Every later event of kept.js carries the choice and the notices it was made under.
        collect(
            app,
            "/v1/p",
            &json!({
                "type": "page",
                "anonymousId": browser,
                "messageId": format!("{browser}-page"),
                "properties": {"path": "/"},
                "context": {
                    "library": {"name": "kept.js", "version": "1"},
                    "consent": {"categoryPreferences": choices},
                    "kept": {"collection_point": "web_shop", "notices": notices},
                    "location": {"country": "DE"},
                },
            }),
        )
        .await;
    }
    collect(
        app,
        "/v1/t",
        &json!({
            "type": "track",
            "event": "Consent Updated",
            "anonymousId": browser,
            "messageId": format!("{browser}-choice"),
            "properties": {
                "purposes": choices,
                "source": "banner",
                "regime": config.json["regime"],
                "notices": notices,
                "gpc": false,
            },
            "context": {
                "library": {"name": "kept.js", "version": "1"},
                "consent": {"categoryPreferences": choices},
                "location": {"country": "DE"},
            },
        }),
    )
    .await;
    let subject = subject_of(app, browser).await;
    (shown, records(app, subject).await)
}

fn assert_same_notices(shown: &[(String, Option<String>)], recorded: &[ConsentRecord]) {
    assert_eq!(recorded.len(), shown.len(), "{recorded:#?}");
    for (purpose, notice) in shown {
        let r = recorded
            .iter()
            .find(|r| &r.purpose == purpose)
            .unwrap_or_else(|| panic!("no record for `{purpose}`: {recorded:#?}"));
        assert_eq!(r.action, ConsentAction::Given);
        assert_eq!(
            r.notice.as_ref().map(|n| n.id.clone()),
            *notice,
            "`{purpose}`: the ledger names the notice the banner showed"
        );
    }
}

#[tokio::test]
async fn the_notice_the_banner_shows_is_the_notice_the_ledger_records() {
    let app = TestApp::new().await;
    let (shown, recorded) = banner_round(&app, "browser-demo", false).await;
    assert!(
        shown.iter().any(|(_, n)| n.is_some()),
        "the demo banner shows notices: {shown:?}"
    );
    assert_same_notices(&shown, &recorded);
}

#[tokio::test]
async fn the_banner_notice_is_recorded_whichever_event_of_kept_js_arrives_first() {
    let app = TestApp::new().await;
    let (shown, recorded) = banner_round(&app, "browser-race", true).await;
    assert_same_notices(&shown, &recorded);
    // The page view wrote them; the `Consent Updated` event that followed changed nothing.
    assert!(
        recorded
            .iter()
            .all(|r| r.evidence.reference.as_deref() == Some("browser-race-page")),
        "{recorded:#?}"
    );
}

#[tokio::test]
async fn a_notice_listing_a_parent_purpose_is_shown_and_recorded_alike() {
    // Both marketing notices promise the whole `marketing` branch, not the purpose itself.
    let mut manifest = demo_manifest();
    for id in ["newsletter", "sms_offers"] {
        manifest.notices.get_mut(id).unwrap().purposes = vec!["marketing".into()];
    }
    let app = app_on(manifest).await;
    let (shown, recorded) = banner_round(&app, "browser-parent", false).await;
    let marketing = shown
        .iter()
        .find(|(p, _)| p == "marketing.communications")
        .unwrap_or_else(|| panic!("the banner asks about marketing: {shown:?}"));
    assert_eq!(marketing.1.as_deref(), Some("newsletter"));
    assert_same_notices(&shown, &recorded);
}

/// An anonymous visitor in Germany whose email came in at the newsletter form (promised for
/// marketing), so only consent stands between them and a newsletter.
async fn subscriber(app: &TestApp, anonymous_id: &str) -> kept_core::SubjectId {
    collect(
        app,
        "/v1/identify",
        &json!({
            "anonymousId": anonymous_id,
            "traits": {"email": format!("{anonymous_id}@example.com")},
            "context": {
                "kept": {"collection_point": "newsletter_signup"},
                "location": {"country": "DE"},
            },
        }),
    )
    .await;
    subject_of(app, anonymous_id).await
}

fn consent_event(anonymous_id: &str, message_id: &str, notice: Option<&str>) -> Value {
    let mut context = json!({
        "consent": {"categoryPreferences": {"marketing.communications": true}},
        "location": {"country": "DE"},
    });
    if let Some(n) = notice {
        context["kept"] = json!({"notice": n});
    }
    json!({
        "anonymousId": anonymous_id,
        "event": "Consent Updated",
        "messageId": message_id,
        "context": context,
    })
}

#[tokio::test]
async fn consent_under_a_notice_that_does_not_promise_it_names_none_and_allows_nothing() {
    let mut app = TestApp::new().await;
    let subject = subscriber(&app, "anon-checkout").await;
    const MC: &str = "marketing.communications";
    let before = decide(&app, subject, MC).await;
    assert!(before.starts_with("denied."), "{before}");

    // The checkout's notice never promised marketing.
    collect(
        &app,
        "/v1/track",
        &consent_event("anon-checkout", "c-1", Some("checkout")),
    )
    .await;
    let recorded = records(&app, subject).await;
    assert_eq!(recorded.len(), 1, "{recorded:#?}");
    let r = &recorded[0];
    assert_eq!(r.action, ConsentAction::Given, "what was said is kept");
    assert_eq!(r.notice, None, "never a notice that does not promise it");
    let reference = r.evidence.reference.as_deref().unwrap();
    assert!(reference.starts_with(UNPROMISED_MARK), "{reference}");
    assert!(
        reference.contains("checkout") && reference.contains("c-1"),
        "{reference}"
    );
    assert_eq!(
        decide(&app, subject, MC).await,
        before,
        "and it allows nothing"
    );

    // An unknown notice is no better.
    collect(
        &app,
        "/v1/track",
        &consent_event("anon-checkout", "c-2", Some("made_up")),
    )
    .await;
    assert_eq!(decide(&app, subject, MC).await, before);
    // Nor a list of notices that cannot be read.
    let mut garbled = consent_event("anon-checkout", "c-2b", None);
    garbled["properties"] = json!({"notices": {MC: "newsletter"}});
    collect(&app, "/v1/track", &garbled).await;
    let last = records(&app, subject).await.pop().unwrap();
    assert_eq!(last.notice, None);
    assert!(
        last.evidence
            .reference
            .as_deref()
            .is_some_and(|r| r.starts_with(UNPROMISED_MARK) && r.ends_with("(unknown); c-2b")),
        "{last:#?}"
    );
    assert_eq!(decide(&app, subject, MC).await, before);

    // The same yes under the notice that promises it counts.
    collect(
        &app,
        "/v1/track",
        &consent_event("anon-checkout", "c-3", Some("newsletter")),
    )
    .await;
    let last = records(&app, subject).await.pop().unwrap();
    assert_eq!(
        last.notice.as_ref().map(|n| n.id.as_str()),
        Some("newsletter")
    );
    assert_eq!(last.evidence.reference.as_deref(), Some("c-3"));
    assert_eq!(decide(&app, subject, MC).await, "allowed.consent");

    // After a restart (the index built again from the store) nothing changes.
    app = app.restart_with(demo_manifest()).await;
    assert_eq!(decide(&app, subject, MC).await, "allowed.consent");
}

#[tokio::test]
async fn a_marked_yes_stays_worthless_after_a_restart() {
    let mut app = TestApp::new().await;
    let subject = subscriber(&app, "anon-restart").await;
    collect(
        &app,
        "/v1/track",
        &consent_event("anon-restart", "r-1", Some("checkout")),
    )
    .await;
    app = app.restart_with(demo_manifest()).await;
    let reason = decide(&app, subject, "marketing.communications").await;
    assert!(reason.starts_with("denied."), "{reason}");
}

#[tokio::test]
async fn consent_from_a_server_library_names_no_notice() {
    let app = TestApp::new().await;
    let subject = subscriber(&app, "anon-server").await;
    // No Kept context at all: what a server-side Segment library sends.
    collect(
        &app,
        "/v1/track",
        &consent_event("anon-server", "s-1", None),
    )
    .await;
    let recorded = records(&app, subject).await;
    assert_eq!(recorded.len(), 1, "{recorded:#?}");
    assert_eq!(
        recorded[0].notice, None,
        "no notice was named, so none is recorded"
    );
    assert_eq!(recorded[0].evidence.reference.as_deref(), Some("s-1"));
    assert_eq!(
        decide(&app, subject, "marketing.communications").await,
        "allowed.consent"
    );
}

#[tokio::test]
async fn audience_csv_exports_defuse_a_user_id_that_starts_a_formula() {
    let mut app = TestApp::new().await;
    app.store
        .insert_subjects(vec![crate::support::new_subject(
            "=HYPERLINK(\"http://evil.test\",\"x\")",
            Some("DE"),
            None,
        )])
        .await
        .unwrap();
    app = app.restart_with(demo_manifest()).await;
    let answer = app
        .send(
            Request::post("/v1/audiences/export?format=csv")
                .header(
                    header::AUTHORIZATION,
                    format!("Bearer {}", app.key(Role::Decide)),
                )
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    json!({"purpose": "essential.service.operations"}).to_string(),
                ))
                .unwrap(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let row = answer
        .text
        .lines()
        .find(|l| l.contains("HYPERLINK"))
        .unwrap_or_else(|| panic!("the planted subject is exported: {}", answer.text));
    assert!(
        row.ends_with(",\"'=HYPERLINK(\"\"http://evil.test\"\",\"\"x\"\")\""),
        "{row}"
    );
}
