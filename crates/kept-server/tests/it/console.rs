//! The console's sign-in as an attacker would try it and as an operator uses it: email,
//! password and a TOTP code; one answer for every refusal; a code used once; a fresh session
//! at every sign-in; a session that sign-out ends everywhere; forms refused from other sites
//! or without their token; pages refused to the roles they are not for; every sign-in and
//! sign-out in the audit log.

use crate::prefcenter::form_post;
use crate::support::{Answer, NOW, TestApp};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use kept_server::console::accounts;
use kept_store::operators::OperatorRole;

pub(crate) const PASSWORD: &str = "correct horse battery staple";

pub(crate) async fn operator(app: &TestApp, email: &str, role: OperatorRole) -> Vec<u8> {
    accounts::create(app.store.as_ref(), email, role, PASSWORD, NOW)
        .await
        .unwrap()
        .unwrap();
    app.store
        .operator_by_email(email)
        .await
        .unwrap()
        .unwrap()
        .totp_secret
}

pub(crate) fn page(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut req = Request::get(path).header(header::HOST, "kept.test");
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    req.body(Body::empty()).unwrap()
}

pub(crate) fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"));
    let rest = &html[at + marker.len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

async fn form_token(app: &TestApp) -> String {
    let form = app.send(page("/admin/sign-in", None)).await;
    assert_eq!(form.status, StatusCode::OK);
    hidden(&form.text, "form_token")
}

pub(crate) async fn try_sign_in(
    app: &TestApp,
    email: &str,
    password: &str,
    code: &str,
    cookie: Option<&str>,
) -> Answer {
    let token = form_token(app).await;
    app.send(form_post(
        "/admin/sign-in",
        &[
            ("form_token", &token),
            ("email", email),
            ("password", password),
            ("code", code),
        ],
        cookie,
        &[],
    ))
    .await
}

pub(crate) fn session_cookie(answer: &Answer) -> String {
    let set = answer
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("kept_console=") && !c.starts_with("kept_console=;"))
        .unwrap_or_else(|| panic!("no session cookie: {:?}", answer.headers))
        .to_owned();
    assert!(set.contains("HttpOnly"), "{set}");
    assert!(set.contains("SameSite=Strict"), "{set}");
    assert!(set.contains("Path=/admin"), "{set}");
    set.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn an_operator_signs_in_with_password_and_code_and_out_again() {
    let app = TestApp::new().await;
    let secret = operator(&app, "ana@example.com", OperatorRole::Privacy).await;
    let before = app.send(page("/admin", None)).await;
    assert_eq!(before.status, StatusCode::SEE_OTHER);
    assert_eq!(before.headers[header::LOCATION], "/admin/sign-in");

    let code = accounts::code_at(&secret, NOW);
    let signed = try_sign_in(&app, "Ana@Example.com ", PASSWORD, &code, None).await;
    assert_eq!(signed.status, StatusCode::SEE_OTHER, "{}", signed.text);
    assert_eq!(signed.headers[header::LOCATION], "/admin");
    let cookie = session_cookie(&signed);
    let overview = app.send(page("/admin", Some(&cookie))).await;
    assert_eq!(overview.status, StatusCode::OK);
    assert!(
        overview.text.contains("ana@example.com (privacy)"),
        "{}",
        overview.text
    );
    assert!(
        overview.text.contains("href=\"/admin/audit\""),
        "the privacy team sees the audit log"
    );
    assert!(
        !overview.text.contains("href=\"/admin/operators\""),
        "but not the operators"
    );
    assert_eq!(overview.headers[header::CACHE_CONTROL], "no-store");

    // Sign-out needs the session's CSRF token.
    let forged = app
        .send(form_post(
            "/admin/sign-out",
            &[("csrf", "forged")],
            Some(&cookie),
            &[],
        ))
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let csrf = hidden(&overview.text, "csrf");
    let out = app
        .send(form_post(
            "/admin/sign-out",
            &[("csrf", &csrf)],
            Some(&cookie),
            &[],
        ))
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    // The cookie kept (stolen, copied) opens nothing once signed out.
    let after = app.send(page("/admin", Some(&cookie))).await;
    assert_eq!(after.status, StatusCode::SEE_OTHER);
    assert_eq!(
        after.headers[header::LOCATION],
        "/admin/sign-in?reason=session"
    );

    let audit = app.store.audit_log(None, 10).await.unwrap();
    let actions: Vec<&str> = audit.iter().map(|e| e.entry.action.as_str()).collect();
    assert_eq!(actions, vec!["sign_out", "sign_in"]);
    assert!(audit.iter().all(|e| e.entry.actor == "ana@example.com"));
}

#[tokio::test]
async fn every_refusal_reads_the_same_and_a_code_works_once() {
    let app = TestApp::new().await;
    let secret = operator(&app, "ana@example.com", OperatorRole::Admin).await;
    let code = accounts::code_at(&secret, NOW);
    let wrong_password =
        try_sign_in(&app, "ana@example.com", "not the password", &code, None).await;
    let unknown = try_sign_in(&app, "nobody@example.com", PASSWORD, &code, None).await;
    let wrong_code = try_sign_in(&app, "ana@example.com", PASSWORD, "000000", None).await;
    let refusal = |a: &Answer| {
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.text);
        let at = a.text.find("role=\"alert\">").unwrap();
        a.text[at..at + 80].to_owned()
    };
    assert_eq!(refusal(&wrong_password), refusal(&unknown));
    assert_eq!(refusal(&wrong_code), refusal(&unknown));
    assert!(
        unknown
            .headers
            .get(header::SET_COOKIE)
            .is_none_or(|c| !c.to_str().unwrap().starts_with("kept_console="))
    );

    let first = try_sign_in(&app, "ana@example.com", PASSWORD, &code, None).await;
    assert_eq!(first.status, StatusCode::SEE_OTHER);
    // The same code again (seen over a shoulder) is refused; the next step's is not.
    let replay = try_sign_in(&app, "ana@example.com", PASSWORD, &code, None).await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    let next = accounts::code_at(&secret, NOW + 30_000);
    let second = try_sign_in(&app, "ana@example.com", PASSWORD, &next, None).await;
    assert_eq!(second.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_sign_in_always_starts_a_new_session() {
    let app = TestApp::new().await;
    let secret = operator(&app, "ana@example.com", OperatorRole::Admin).await;
    let first = try_sign_in(
        &app,
        "ana@example.com",
        PASSWORD,
        &accounts::code_at(&secret, NOW),
        None,
    )
    .await;
    let old = session_cookie(&first);
    // A cookie planted before sign-in (fixation) or held from before is replaced and ended.
    let second = try_sign_in(
        &app,
        "ana@example.com",
        PASSWORD,
        &accounts::code_at(&secret, NOW + 30_000),
        Some(&old),
    )
    .await;
    let new = session_cookie(&second);
    assert_ne!(old, new);
    assert_eq!(
        app.send(page("/admin", Some(&old))).await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        app.send(page("/admin", Some(&new))).await.status,
        StatusCode::OK
    );
    let planted = app
        .send(page("/admin", Some("kept_console=chosen-by-an-attacker")))
        .await;
    assert_eq!(planted.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn forms_from_other_sites_or_without_their_token_are_refused() {
    let app = TestApp::new().await;
    let secret = operator(&app, "ana@example.com", OperatorRole::Admin).await;
    let code = accounts::code_at(&secret, NOW);
    let token = form_token(&app).await;
    let fields = [
        ("form_token", token.as_str()),
        ("email", "ana@example.com"),
        ("password", PASSWORD),
        ("code", code.as_str()),
    ];
    let cross = app
        .send(form_post(
            "/admin/sign-in",
            &fields,
            None,
            &[
                ("origin", "https://evil.example"),
                ("sec-fetch-site", "cross-site"),
            ],
        ))
        .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    let no_token = app
        .send(form_post("/admin/sign-in", &fields[1..], None, &[]))
        .await;
    assert_eq!(no_token.status, StatusCode::FORBIDDEN);
    let forged = app
        .send(form_post(
            "/admin/sign-in",
            &[
                ("form_token", "9999999999999.AAAA"),
                fields[1],
                fields[2],
                fields[3],
            ],
            None,
            &[],
        ))
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    // None of them used the code up.
    let ok = app
        .send(form_post("/admin/sign-in", &fields, None, &[]))
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn guessing_is_slowed_down() {
    let app = TestApp::new().await;
    operator(&app, "ana@example.com", OperatorRole::Admin).await;
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(
            try_sign_in(&app, "ana@example.com", "guess", "123456", None)
                .await
                .status,
        );
    }
    assert_eq!(&statuses[..5], &[StatusCode::UNAUTHORIZED; 5]);
    assert_eq!(statuses[6], StatusCode::TOO_MANY_REQUESTS);
}

/// Every route of the router × every role, read from the router's own table: a role the
/// route's page allows gets past the guard (a post with its CSRF token), any other is refused
/// with 403; without a session every guarded route sends to the sign-in; a post without the
/// token is refused to every role.
#[tokio::test]
async fn pages_are_refused_to_roles_they_are_not_for() {
    use kept_server::console::routes::{Guard, matrix};
    let app = TestApp::new().await;
    let mut sessions = Vec::new();
    for (i, role) in OperatorRole::ALL.into_iter().enumerate() {
        let email = format!("{}@example.com", role.as_str());
        let secret = operator(&app, &email, role).await;
        let signed = try_sign_in(
            &app,
            &email,
            PASSWORD,
            &accounts::code_at(&secret, NOW + i as i64),
            None,
        )
        .await;
        let cookie = session_cookie(&signed);
        let home = app.send(page("/admin", Some(&cookie))).await;
        sessions.push((role, cookie, hidden(&home.text, "csrf")));
    }
    let routes = matrix();
    assert!(routes.len() > 15, "{routes:?}");
    for (method, path, guard) in &routes {
        // Every path parameter (`{id}`, `{merge}`) is called with `1`.
        let path = path.replace("{id}", "1").replace("{merge}", "1");
        let Guard::Page(page_) = guard else {
            assert_eq!(path, "/admin/sign-in", "only the sign-in is open");
            continue;
        };
        let anonymous = if method == "GET" {
            app.send(page(&path, None)).await
        } else {
            app.send(form_post(&path, &[], None, &[])).await
        };
        assert_eq!(anonymous.status, StatusCode::SEE_OTHER, "{method} {path}");
        assert_eq!(anonymous.headers[header::LOCATION], "/admin/sign-in");
        for (role, cookie, csrf) in &sessions {
            let answer = if method == "GET" {
                app.send(page(&path, Some(cookie))).await
            } else {
                let tokenless = app.send(form_post(&path, &[], Some(cookie), &[])).await;
                assert_eq!(tokenless.status, StatusCode::FORBIDDEN, "{method} {path}");
                if path == "/admin/sign-out" {
                    // It would end the session the walk goes on with; its own test signs out.
                    continue;
                }
                app.send(form_post(&path, &[("csrf", csrf)], Some(cookie), &[]))
                    .await
            };
            let who = format!("{} on {method} {path}: {}", role.as_str(), answer.status);
            if page_.allows(*role) {
                assert_ne!(answer.status, StatusCode::FORBIDDEN, "{who}");
                let sent = answer.headers.get(header::LOCATION);
                assert!(
                    sent.is_none_or(|l| !l.to_str().unwrap().starts_with("/admin/sign-in")),
                    "{who}"
                );
            } else {
                assert_eq!(answer.status, StatusCode::FORBIDDEN, "{who}");
            }
        }
    }
    let sessions: Vec<_> = sessions.into_iter().map(|(r, c, _)| (r, c)).collect();
    let (_, privacy) = &sessions[1];
    let audit = app.send(page("/admin/audit", Some(privacy))).await;
    assert!(
        audit.text.contains("<code>sign_in</code>"),
        "{}",
        audit.text
    );
    assert!(audit.text.contains("marketing@example.com"));
    let (_, admin) = &sessions[3];
    let operators = app.send(page("/admin/operators", Some(admin))).await;
    for role in OperatorRole::ALL {
        assert!(
            operators
                .text
                .contains(&format!("{}@example.com", role.as_str()))
        );
    }
    assert!(!operators.text.contains("argon2"), "no hash on the page");
}

#[tokio::test]
async fn the_console_speaks_the_customers_languages() {
    let app = TestApp::new().await;
    let german = app.send(page("/admin/sign-in?lang=de", None)).await;
    assert!(german.text.contains("<html lang=\"de\">"));
    assert!(german.text.contains("Anmelden"));
    let cookie = german
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("kept_lang=de"))
        .expect("the language sticks");
    assert!(cookie.contains("Path=/admin"));
}

#[tokio::test]
async fn the_data_map_and_the_record_of_processing_are_every_teams() {
    let app = TestApp::new().await;
    let cookie = session_of(&app, "ben@example.com", OperatorRole::Marketing).await;
    let map = app.send(page("/admin/data-map", Some(&cookie))).await;
    assert_eq!(map.status, StatusCode::OK);
    assert!(map.text.contains("<svg"), "the graph");
    assert!(
        map.text.contains("id=\"system-email_platform\""),
        "the tables beside it"
    );
    let record = app
        .send(page("/admin/data-map/record", Some(&cookie)))
        .await;
    assert_eq!(record.status, StatusCode::OK);
    assert!(
        record
            .text
            .contains("id=\"purpose-marketing.communications\"")
    );
    let csv = app
        .send(page("/admin/data-map/record.csv", Some(&cookie)))
        .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(
        csv.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(csv.text.starts_with("purpose,name,description,owner,"));
    assert!(
        csv.text
            .lines()
            .any(|l| l.starts_with("marketing.communications,"))
    );
    // Without a session, nothing.
    let anonymous = app.send(page("/admin/data-map/record.csv", None)).await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn the_privacy_team_verifies_the_ledger_and_checks_a_receipt_from_the_page() {
    let app = TestApp::new().await;
    // A consent record to verify and to make a receipt of.
    let given = app
        .send(crate::support::post(
            "/v1/consents",
            Some(app.key(kept_store::Role::Privacy)),
            &crate::support::newsletter_consent(app.subjects[0]),
        ))
        .await;
    assert!(given.status.is_success(), "{}", given.text);
    let cookie = session_of(&app, "ana@example.com", OperatorRole::Privacy).await;
    let ledger = app.send(page("/admin/ledger", Some(&cookie))).await;
    assert_eq!(ledger.status, StatusCode::OK);
    let csrf = hidden(&ledger.text, "csrf");

    let forged = app
        .send(form_post(
            "/admin/ledger/verify",
            &[("csrf", "nope")],
            Some(&cookie),
            &[],
        ))
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let started = app
        .send(form_post(
            "/admin/ledger/verify",
            &[("csrf", &csrf)],
            Some(&cookie),
            &[],
        ))
        .await;
    assert_eq!(started.status, StatusCode::SEE_OTHER);
    let mut page_text = String::new();
    for _ in 0..100 {
        page_text = app.send(page("/admin/ledger", Some(&cookie))).await.text;
        if !page_text.contains("http-equiv=\"refresh\"") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(page_text.contains("Intact"), "{page_text}");
    assert!(
        page_text.contains("form an unbroken hash chain"),
        "{page_text}"
    );

    // A receipt as the customer downloaded it, then the same with its purpose changed.
    let entry = app
        .store
        .ledger_for_subject(app.subjects[0])
        .await
        .unwrap()
        .pop()
        .unwrap();
    let record = kept_core::ledger::decode(&entry.bytes).unwrap();
    let checkpoint = app
        .state
        .ledger
        .checkpoint_covering(entry.seq)
        .await
        .unwrap()
        .unwrap();
    let receipt = kept_core::receipt::build(
        &app.state.manifest,
        kept_core::receipt::Entry {
            seq: entry.seq,
            hash: &entry.hash,
            bytes: &entry.bytes,
            record: &record,
            checkpoint: Some(&checkpoint),
        },
        "en",
        "https://kept.test/preferences",
        &app.state.ledger.verifying_key(),
        |m| app.state.ledger.sign(m),
    );
    let check = |text: String| {
        form_post(
            "/admin/ledger/receipt",
            &[("csrf", &csrf), ("receipt", &text)],
            Some(&cookie),
            &[],
        )
    };
    let valid = app.send(check(receipt.to_string())).await;
    assert_eq!(valid.status, StatusCode::OK);
    assert!(
        valid.text.contains("Valid: signed by this ledger"),
        "{}",
        valid.text
    );
    let mut changed = receipt.clone();
    changed["consentTimestamp"] = serde_json::json!(1);
    let invalid = app.send(check(changed.to_string())).await;
    assert!(invalid.text.contains("Not valid"), "{}", invalid.text);
    let garbage = app.send(check("<script>".to_owned())).await;
    assert!(garbage.text.contains("receipt.not_json"));
    assert!(!garbage.text.contains("<script>"), "escaped");

    let audit = app.store.audit_log(None, 10).await.unwrap();
    let actions: Vec<&str> = audit.iter().map(|e| e.entry.action.as_str()).collect();
    assert!(actions.contains(&"ledger.verify"), "{actions:?}");
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == "ledger.receipt_check")
            .count(),
        3
    );
}

#[tokio::test]
async fn the_engineering_team_makes_and_revokes_keys_and_retries_a_dead_letter() {
    let app = TestApp::new().await;
    let cookie = session_of(&app, "eve@example.com", OperatorRole::Engineering).await;
    let keys = app.send(page("/admin/keys", Some(&cookie))).await;
    assert_eq!(keys.status, StatusCode::OK);
    let csrf = hidden(&keys.text, "csrf");

    let nameless = app
        .send(form_post(
            "/admin/keys",
            &[("csrf", &csrf), ("role", "decide"), ("name", " ")],
            Some(&cookie),
            &[],
        ))
        .await;
    assert_eq!(nameless.status, StatusCode::UNPROCESSABLE_ENTITY);
    let made = app
        .send(form_post(
            "/admin/keys",
            &[("csrf", &csrf), ("role", "decide"), ("name", "send tool")],
            Some(&cookie),
            &[],
        ))
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text);
    let at = made
        .text
        .find("<p><code>kept_")
        .expect("the secret, shown once");
    let rest = &made.text[at + "<p><code>".len()..];
    let key = rest[..rest.find('<').unwrap()].to_owned();
    let decide = |key: &str| {
        crate::support::post(
            "/v1/decisions",
            Some(key),
            &serde_json::json!({"subject": {"id": app.subjects[0].0}, "purpose": "marketing.communications", "channel": "email"}).to_string(),
        )
    };
    assert_eq!(app.send(decide(&key)).await.status, StatusCode::OK);
    let again = app.send(page("/admin/keys", Some(&cookie))).await;
    assert!(
        !again.text.contains(&key),
        "the secret is never shown again"
    );

    let record = app
        .store
        .list_api_keys()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.name == "send tool")
        .unwrap();
    let revoked = app
        .send(form_post(
            &format!("/admin/keys/{}/revoke", record.id),
            &[("csrf", &csrf)],
            Some(&cookie),
            &[],
        ))
        .await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER);
    assert_eq!(
        app.send(decide(&key)).await.status,
        StatusCode::UNAUTHORIZED,
        "revoked at once"
    );

    // A dead letter, retried from the page.
    app.store
        .enqueue_deliveries(vec![kept_store::outbox::NewDelivery {
            kind: kept_store::outbox::DeliveryKind::Event,
            message_id: "msg-1".to_owned(),
            event_id: "evt-1".to_owned(),
            system: "ad_partner".to_owned(),
            subject: app.subjects[0],
            payload: "{}".to_owned(),
            created_at: NOW,
        }])
        .await
        .unwrap();
    let delivery = app
        .store
        .deliveries_for_event("evt-1")
        .await
        .unwrap()
        .pop()
        .unwrap();
    app.store
        .record_attempt(
            delivery.id,
            &kept_store::outbox::Attempt::Failed {
                at: NOW,
                status: Some(500),
                error: "HTTP 500 <b>boom</b>".to_owned(),
                retry_at: None,
            },
        )
        .await
        .unwrap();
    let hooks = app.send(page("/admin/webhooks", Some(&cookie))).await;
    assert_eq!(hooks.status, StatusCode::OK);
    assert!(
        hooks.text.contains("HTTP 500 &#60;b&#62;boom&#60;/b&#62;"),
        "escaped: {}",
        hooks.text
    );
    let retried = app
        .send(form_post(
            &format!("/admin/webhooks/dead/{}/retry", delivery.id),
            &[("csrf", &csrf)],
            Some(&cookie),
            &[],
        ))
        .await;
    assert_eq!(retried.status, StatusCode::SEE_OTHER);
    assert_eq!(
        app.store
            .delivery(delivery.id)
            .await
            .unwrap()
            .unwrap()
            .state,
        kept_store::outbox::DeliveryState::Pending
    );
    let missing = app
        .send(form_post(
            "/admin/webhooks/dead/999999/retry",
            &[("csrf", &csrf)],
            Some(&cookie),
            &[],
        ))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let audit = app.store.audit_log(None, 10).await.unwrap();
    let actions: Vec<&str> = audit.iter().map(|e| e.entry.action.as_str()).collect();
    assert_eq!(
        &actions[..3],
        &["dead_letter.retry", "key.revoke", "key.create"]
    );
}

#[tokio::test]
async fn a_marketer_dry_runs_a_campaign_and_sees_who_is_excluded_and_why() {
    let app = TestApp::new().await;
    let cookie = session_of(&app, "ben@example.com", OperatorRole::Marketing).await;
    let empty = app.send(page("/admin/campaigns", Some(&cookie))).await;
    assert_eq!(empty.status, StatusCode::OK);
    assert!(empty.text.contains("name=\"purpose\""));

    let run = app
        .send(page(
            "/admin/campaigns?purpose=marketing.communications&channel=sms&topic=&at=",
            Some(&cookie),
        ))
        .await;
    assert_eq!(run.status, StatusCode::OK, "{}", run.text);
    // The same answer the API gives.
    let api = app
        .send(crate::support::post(
            "/v1/audiences/evaluate",
            Some(app.key(kept_store::Role::Decide)),
            &serde_json::json!({"purpose": "marketing.communications", "channel": "sms"})
                .to_string(),
        ))
        .await;
    let eligible = api.json["eligible"].as_u64().unwrap();
    let candidates = api.json["candidates"].as_u64().unwrap();
    assert!(
        run.text.contains(&format!(
            "<span class=\"figure\">{eligible}</span> may be reached of {candidates}"
        )),
        "{}",
        run.text
    );
    for e in api.json["excluded"].as_array().unwrap() {
        assert!(
            run.text
                .contains(&format!("<code>{}</code>", e["reason"].as_str().unwrap()))
        );
    }
    assert!(
        run.text.contains("<th scope=\"row\">gdpr</th>"),
        "by regime"
    );
    assert!(run.text.contains("<th scope=\"row\">DE</th>"), "by country");
    assert!(run.text.contains("<svg"), "the chart");

    let past = app
        .send(page(
            "/admin/campaigns?purpose=marketing.communications&at=2001-01-01T00:00",
            Some(&cookie),
        ))
        .await;
    assert_eq!(past.status, StatusCode::UNPROCESSABLE_ENTITY);
    let future = app
        .send(page(
            "/admin/campaigns?purpose=marketing.communications&at=2099-01-01T09:00",
            Some(&cookie),
        ))
        .await;
    assert_eq!(future.status, StatusCode::OK);
    let unknown = app
        .send(page("/admin/campaigns?purpose=%3Cscript%3E", Some(&cookie)))
        .await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!unknown.text.contains("<script>"));
}

/// `subject` gives consent to marketing by email under the newsletter's notice, through the API.
async fn email_consent_given(app: &TestApp, subject: kept_core::SubjectId) {
    let consent = serde_json::json!({ "records": [{
        "subject": subject.0, "purpose": "marketing.communications", "channel": "email",
        "action": "given", "notice": "newsletter", "method": "double_opt_in", "source": "api",
        "evidence": { "reference": "signup-7" }
    }]});
    let given = app
        .send(crate::support::post(
            "/v1/consents",
            Some(app.key(kept_store::Role::Privacy)),
            &consent.to_string(),
        ))
        .await;
    assert_eq!(given.status, StatusCode::CREATED, "{}", given.text);
}

/// The session cookie of a new operator of `role`, signed in with the code of `NOW`.
async fn session_of(app: &TestApp, email: &str, role: OperatorRole) -> String {
    let secret = operator(app, email, role).await;
    let signed = try_sign_in(app, email, PASSWORD, &accounts::code_at(&secret, NOW), None).await;
    session_cookie(&signed)
}

/// The overview counts people from the index: a consent given in Germany shows in the GDPR bar
/// of its purpose and channel and on today's line; a denied decision shows in the week's
/// reasons once the log has written it. Each chart has its numbers in a table beside it.
#[tokio::test]
async fn the_overview_charts_consent_by_regime_days_and_decisions() {
    use crate::support::post;
    let app = TestApp::new().await;
    email_consent_given(&app, app.subjects[0]).await;
    let decided = app
        .send(post(
            "/v1/decisions",
            Some(app.key(kept_store::Role::Decide)),
            &serde_json::json!({ "requests": [{ "subject": { "user_id": "u2" },
                "purpose": "marketing.communications", "channel": "sms" }] })
            .to_string(),
        ))
        .await;
    assert_eq!(decided.status, StatusCode::OK, "{}", decided.text);
    let reason = decided.json["decisions"][0]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.starts_with("denied."), "{reason}");
    app.state.decision_log.flush().await;

    let cookie = session_of(&app, "m@example.com", OperatorRole::Marketing).await;
    let page_ = app.send(page("/admin", Some(&cookie))).await;
    assert_eq!(page_.status, StatusCode::OK);
    let html = &page_.text;
    let states = &html
        [html.find("id=\"consent-states\"").unwrap()..html.find("id=\"consent-days\"").unwrap()];
    let email = &states[states.find("marketing.communications · email").unwrap()..];
    // The table row of the GDPR bar: given 1, nothing else.
    assert!(
        email.contains("<tr><th scope=\"row\">gdpr</th><td>1</td><td>0</td><td>0</td><td>0</td><td>0</td><td>0</td><td>1</td></tr>"),
        "{email}"
    );
    assert!(email.contains("<title>gdpr: given 1</title>"), "{email}");
    let days =
        &html[html.find("id=\"consent-days\"").unwrap()..html.find("id=\"decisions\"").unwrap()];
    let today = chrono::DateTime::from_timestamp_millis(NOW)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string();
    assert!(
        days.contains(&format!(
            "<tr><th scope=\"row\">{today}</th><td>1</td><td>0</td></tr>"
        )),
        "{days}"
    );
    let decisions = &html[html.find("id=\"decisions\"").unwrap()..];
    assert!(
        decisions.contains(&format!(
            "<tr><th scope=\"row\"><code>{reason}</code></th><td>1</td></tr>"
        )),
        "{decisions}"
    );
}

/// A marketer asks why one person is in or out of the audience (audited, nothing recorded as a
/// use), then exports the audience: the file is the API's export, every person in it is
/// recorded as a use under the operator before the first byte, and the export is audited.
#[tokio::test]
async fn a_marketer_asks_why_and_exports_the_audience_as_a_recorded_use() {
    use crate::support::post;
    let app = TestApp::new().await;
    let u1 = app.subjects[0];
    crate::decisions::add_trait(&app, u1, "email", "user.contact.email", "newsletter_signup").await;
    email_consent_given(&app, u1).await;
    let api = app
        .send(post(
            "/v1/audiences/evaluate",
            Some(app.key(kept_store::Role::Decide)),
            &serde_json::json!({"purpose": "marketing.communications", "channel": "email"})
                .to_string(),
        ))
        .await;
    let eligible = api.json["eligible"].as_u64().unwrap();
    assert!(eligible >= 1, "{}", api.text);

    let cookie = session_of(&app, "mia@example.com", OperatorRole::Marketing).await;
    let base = "/admin/campaigns?purpose=marketing.communications&channel=email&topic=&at=";
    let why = app
        .send(page(
            &format!("{base}&who_kind=user_id&who=u1"),
            Some(&cookie),
        ))
        .await;
    assert_eq!(why.status, StatusCode::OK, "{}", why.text);
    let section = &why.text[why.text.find("id=\"why\"").unwrap()..];
    assert!(
        section.contains("In the audience: <code>allowed."),
        "{section}"
    );
    let nobody = app
        .send(page(
            &format!("{base}&who_kind=email&who=nobody%40example.com"),
            Some(&cookie),
        ))
        .await;
    assert!(nobody.text.contains("Nobody is known by that identifier"));
    assert!(nobody.text.contains("<code>denied.unknown_subject</code>"));
    let bad = app
        .send(page(&format!("{base}&who_kind=fax&who=1"), Some(&cookie)))
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let uses = |app: &TestApp| {
        let store = app.store.clone();
        async move {
            store
                .uses_of(&kept_store::uses::UseQuery {
                    subject: u1,
                    before: None,
                    limit: 100,
                })
                .await
                .unwrap()
        }
    };
    assert!(uses(&app).await.is_empty(), "asking why is not a use");

    let csrf = hidden(&why.text, "csrf");
    let wrong = app
        .send(form_post(
            "/admin/campaigns/export",
            &[
                ("csrf", &csrf),
                ("purpose", "marketing.communications"),
                ("format", "xlsx"),
            ],
            Some(&cookie),
            &[],
        ))
        .await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    let file = app
        .send(form_post(
            "/admin/campaigns/export",
            &[
                ("csrf", &csrf),
                ("purpose", "marketing.communications"),
                ("channel", "email"),
                ("topic", ""),
                ("format", "csv"),
            ],
            Some(&cookie),
            &[],
        ))
        .await;
    assert_eq!(file.status, StatusCode::OK, "{}", file.text);
    assert_eq!(
        file.headers["x-kept-eligible"],
        eligible.to_string().as_str()
    );
    assert!(file.text.starts_with("id,user_id\n"), "{}", file.text);
    assert!(file.text.contains(&format!("{},u1", u1.0)), "{}", file.text);
    let used = uses(&app).await;
    assert_eq!(used.len(), 1, "{used:?}");
    let operator_id = app
        .store
        .operator_by_email("mia@example.com")
        .await
        .unwrap()
        .unwrap()
        .id;
    assert_eq!(used[0].actor, format!("operator:{operator_id}"));

    let privacy = session_of(&app, "pia@example.com", OperatorRole::Privacy).await;
    let audit = app.send(page("/admin/audit", Some(&privacy))).await;
    assert!(
        audit.text.contains("<code>campaign.why</code>"),
        "{}",
        audit.text
    );
    assert!(audit.text.contains("<code>campaign.export</code>"));
    assert!(
        !audit.text.contains("nobody@example.com"),
        "what was typed stays out"
    );
}
