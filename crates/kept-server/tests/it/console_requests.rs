//! The console's requests pages as the privacy team uses them, on whichever backend the tests
//! run on: the queue (overdue first, then by due date, filtered by state and kind), a
//! request's page (facts, timeline, tasks), and each step taken from it through the requests
//! service, in the requests log by the operator and in the audit log; a refused step changes
//! nothing; other teams and forms without their token are refused.

use crate::console::{PASSWORD, hidden, operator, page, session_cookie, try_sign_in};
use crate::prefcenter::form_post;
use crate::support::{NOW, TestApp, post};
use axum::http::{StatusCode, header};
use kept_core::requests::State;
use kept_server::console::accounts;
use kept_store::Role;
use kept_store::operators::OperatorRole;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

const DAY: i64 = 86_400_000;

/// A signed-in operator: their session cookie and the CSRF token of their forms.
struct Operator {
    cookie: String,
    csrf: String,
}

async fn sign_in(app: &TestApp, email: &str, role: OperatorRole) -> Operator {
    let secret = operator(app, email, role).await;
    let code = accounts::code_at(&secret, app.state.now());
    let signed = try_sign_in(app, email, PASSWORD, &code, None).await;
    assert_eq!(signed.status, StatusCode::SEE_OTHER, "{}", signed.text);
    let cookie = session_cookie(&signed);
    let home = app.send(page("/admin", Some(&cookie))).await;
    let csrf = hidden(&home.text, "csrf");
    Operator { cookie, csrf }
}

/// Files a request through the API, as the company's systems do.
async fn file(app: &TestApp, user: &str, kind: &str) -> u64 {
    let body = json!({ "subject": { "user_id": user }, "kind": kind });
    let answer = app
        .send(post(
            "/v1/requests",
            Some(app.key(Role::Privacy)),
            &body.to_string(),
        ))
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    answer.json["id"].as_u64().unwrap()
}

async fn api_step(app: &TestApp, id: u64, action: &str, body: Value) {
    let answer = app
        .send(post(
            &format!("/v1/requests/{id}/{action}"),
            Some(app.key(Role::Privacy)),
            &body.to_string(),
        ))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
}

async fn act(
    app: &TestApp,
    op: &Operator,
    id: u64,
    action: &str,
    fields: &[(&str, &str)],
) -> crate::support::Answer {
    let mut all = vec![("csrf", op.csrf.as_str())];
    all.extend_from_slice(fields);
    app.send(form_post(
        &format!("/admin/requests/{id}/{action}"),
        &all,
        Some(&op.cookie),
        &[],
    ))
    .await
}

async fn state_of(app: &TestApp, id: u64) -> State {
    app.store.request(id).await.unwrap().unwrap().state
}

async fn log_len(app: &TestApp, id: u64) -> usize {
    app.store.request_log_of(id).await.unwrap().len()
}

/// The app with a clock the test moves.
fn movable_clock(app: &mut TestApp) -> Arc<AtomicI64> {
    let now = Arc::new(AtomicI64::new(NOW));
    let read = now.clone();
    app.state = app
        .state
        .clone()
        .with_clock(Arc::new(move || read.load(Ordering::SeqCst)));
    now
}

/// Where each request's link first appears on the page, in order of the ids given.
fn positions(text: &str, ids: &[u64]) -> Vec<usize> {
    ids.iter()
        .map(|id| {
            text.find(&format!("href=\"/admin/requests/{id}\""))
                .unwrap_or_else(|| panic!("request {id} is not listed: {text}"))
        })
        .collect()
}

#[tokio::test]
async fn the_queue_lists_open_requests_overdue_first_then_by_due_date() {
    let mut app = TestApp::new().await;
    let clock = movable_clock(&mut app);
    // u2 is in California (45 days), u1 in Germany (a month), u3 nowhere known (15 days).
    let ccpa = file(&app, "u2", "access").await;
    let gdpr = file(&app, "u1", "erasure").await;
    let strictest = file(&app, "u3", "access").await;
    let rejected = file(&app, "u3", "erasure").await;
    api_step(&app, rejected, "reject", json!({ "reason": "duplicate" })).await;
    // Twenty-four days later: the strictest is overdue, the month's one due within a week.
    clock.store(NOW + 24 * DAY, Ordering::SeqCst);
    let ana = sign_in(&app, "ana@example.com", OperatorRole::Privacy).await;

    let queue = app.send(page("/admin/requests", Some(&ana.cookie))).await;
    assert_eq!(queue.status, StatusCode::OK, "{}", queue.text);
    let at = positions(&queue.text, &[strictest, gdpr, ccpa]);
    assert!(
        at[0] < at[1] && at[1] < at[2],
        "overdue first, then by due date"
    );
    assert!(
        !queue
            .text
            .contains(&format!("href=\"/admin/requests/{rejected}\"")),
        "a closed request is not in the queue"
    );
    let row = |id: u64| {
        let start = queue
            .text
            .find(&format!("href=\"/admin/requests/{id}\""))
            .unwrap();
        let end = start + queue.text[start..].find("</tr>").unwrap();
        queue.text[start..end].to_owned()
    };
    assert!(
        row(strictest).contains("class=\"badge overdue\">overdue<"),
        "{}",
        row(strictest)
    );
    assert!(
        row(gdpr).contains("class=\"badge soon\">due soon<"),
        "{}",
        row(gdpr)
    );
    assert!(!row(ccpa).contains("badge"), "{}", row(ccpa));
    assert!(
        row(gdpr).contains(&format!("href=\"/admin/subjects/{}\"", app.subjects[0].0)),
        "the subject links to its page"
    );
    assert!(
        row(gdpr).contains("<td>0/0</td>"),
        "no task before the work starts"
    );

    let access = app
        .send(page("/admin/requests?kind=access", Some(&ana.cookie)))
        .await;
    assert_eq!(access.status, StatusCode::OK);
    positions(&access.text, &[strictest, ccpa]);
    assert!(
        !access
            .text
            .contains(&format!("href=\"/admin/requests/{gdpr}\""))
    );
    api_step(
        &app,
        ccpa,
        "advance",
        json!({ "to": "verified", "verification": { "method": "company_stated", "reference": "case-9" } }),
    )
    .await;
    let verified = app
        .send(page(
            "/admin/requests?state=verified&kind=",
            Some(&ana.cookie),
        ))
        .await;
    assert_eq!(verified.status, StatusCode::OK);
    positions(&verified.text, &[ccpa]);
    assert!(
        !verified
            .text
            .contains(&format!("href=\"/admin/requests/{strictest}\""))
    );
    let bad = app
        .send(page("/admin/requests?state=shredded", Some(&ana.cookie)))
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.text.contains("<code>state</code>"), "{}", bad.text);
}

#[tokio::test]
async fn the_queue_pages_in_due_order() {
    let app = TestApp::new().await;
    let mut ids = Vec::new();
    for _ in 0..51 {
        ids.push(file(&app, "u1", "objection").await);
    }
    let ana = sign_in(&app, "ana@example.com", OperatorRole::Privacy).await;
    let first = app.send(page("/admin/requests", Some(&ana.cookie))).await;
    positions(&first.text, &ids[..50]);
    assert!(
        !first
            .text
            .contains(&format!("href=\"/admin/requests/{}\"", ids[50]))
    );
    let marker = "href=\"/admin/requests?";
    let at = first.text.rfind(marker).expect("a next page link") + "href=\"".len();
    let next = &first.text[at..at + first.text[at..].find('"').unwrap()];
    let next = next.replace("&#38;", "&").replace("&amp;", "&");
    let second = app.send(page(&next, Some(&ana.cookie))).await;
    assert_eq!(second.status, StatusCode::OK, "{next}");
    positions(&second.text, &ids[50..]);
    assert!(
        !second
            .text
            .contains(&format!("href=\"/admin/requests/{}\"", ids[0]))
    );
}

#[tokio::test]
async fn a_request_page_shows_its_facts_timeline_and_tasks() {
    let app = TestApp::new().await;
    let id = file(&app, "u1", "erasure").await;
    api_step(
        &app,
        id,
        "advance",
        json!({ "to": "verified", "verification": { "method": "company_stated", "reference": "case-7" } }),
    )
    .await;
    api_step(&app, id, "advance", json!({ "to": "in_progress" })).await;
    let ana = sign_in(&app, "ana@example.com", OperatorRole::Privacy).await;
    let shown = app
        .send(page(&format!("/admin/requests/{id}"), Some(&ana.cookie)))
        .await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.text);
    let text = &shown.text;
    assert!(
        text.contains(&format!("Request #{id}: erasure, in_progress")),
        "{text}"
    );
    assert!(text.contains("<code>gdpr.requests</code>"), "{text}");
    assert!(text.contains("company_stated · case-7"), "{text}");
    // The timeline: every step of the log, with who took it.
    let timeline = &text[text.find("id=\"timeline\"").unwrap()..];
    for step in [
        "filed → received",
        "received → verified",
        "verified → in_progress",
    ] {
        assert!(timeline.contains(step), "{step}: {timeline}");
    }
    assert!(timeline.contains("<td>key:"), "{timeline}");
    // The tasks: Kept's own data and the system with a webhook, each open with a form.
    let tasks = &text[text.find("id=\"tasks\"").unwrap()..text.find("id=\"timeline\"").unwrap()];
    assert!(tasks.contains("<code>kept</code>"), "{tasks}");
    assert!(tasks.contains("<code>system:ad_partner</code>"), "{tasks}");
    assert!(tasks.contains("not delivered yet"), "{tasks}");
    assert_eq!(tasks.matches("action=\"/admin/requests/").count(), 2);
    assert!(text.contains(&format!("action=\"/admin/requests/{id}/erase\"")));
    // Once the partner's endpoint answered, the obligation is delivered and waits for its
    // acknowledgement.
    let sent = app
        .store
        .deliveries_for_event(&format!("request:{id}"))
        .await
        .unwrap();
    assert_eq!(sent.len(), 1, "{sent:?}");
    app.store
        .record_attempt(
            sent[0].id,
            &kept_store::outbox::Attempt::Delivered {
                at: NOW,
                status: 202,
            },
        )
        .await
        .unwrap();
    let shown = app
        .send(page(&format!("/admin/requests/{id}"), Some(&ana.cookie)))
        .await;
    assert!(
        shown
            .text
            .contains("delivered, waiting for the acknowledgement"),
        "{}",
        shown.text
    );

    assert!(!text.contains(&format!("action=\"/admin/requests/{id}/verify\"")));

    for missing in [
        "/admin/requests/999999",
        "/admin/requests/abc",
        "/admin/requests/99999999999999999999",
    ] {
        let answer = app.send(page(missing, Some(&ana.cookie))).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{missing}");
        assert!(answer.text.contains("No data subject request has this id"));
    }
}

#[tokio::test]
async fn an_erasure_is_carried_to_completed_from_the_page() {
    let app = TestApp::new().await;
    let id = file(&app, "u1", "erasure").await;
    let ana = sign_in(&app, "ana@example.com", OperatorRole::Privacy).await;

    // Starting before verifying is refused (409) and changes nothing.
    let early = act(&app, &ana, id, "start", &[]).await;
    assert_eq!(early.status, StatusCode::CONFLICT, "{}", early.text);
    assert!(
        early.text.contains("request.unexpected_step"),
        "{}",
        early.text
    );
    assert_eq!(state_of(&app, id).await, State::Received);
    assert_eq!(log_len(&app, id).await, 1);
    // A reference the method needs, missing: the field is named (422), nothing written.
    let unreferenced = act(&app, &ana, id, "verify", &[("method", "company_stated")]).await;
    assert_eq!(unreferenced.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        unreferenced.text.contains("id=\"verify-reference\"")
            && unreferenced.text.contains("aria-invalid=\"true\""),
        "{}",
        unreferenced.text
    );
    assert_eq!(log_len(&app, id).await, 1);

    let verified = act(
        &app,
        &ana,
        id,
        "verify",
        &[("method", "company_stated"), ("reference", "case-12")],
    )
    .await;
    assert_eq!(verified.status, StatusCode::SEE_OTHER, "{}", verified.text);
    assert_eq!(
        verified.headers[header::LOCATION],
        format!("/admin/requests/{id}?done=step")
    );
    assert_eq!(state_of(&app, id).await, State::Verified);
    // Verified twice: refused, nothing written.
    let again = act(
        &app,
        &ana,
        id,
        "verify",
        &[("method", "company_stated"), ("reference", "case-12")],
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);
    assert_eq!(log_len(&app, id).await, 2);

    let started = act(&app, &ana, id, "start", &[]).await;
    assert_eq!(started.status, StatusCode::SEE_OTHER, "{}", started.text);
    assert_eq!(state_of(&app, id).await, State::InProgress);
    // A task handled without a note: refused with the field named.
    let noteless = act(
        &app,
        &ana,
        id,
        "handled",
        &[("target", "system:ad_partner"), ("note", " ")],
    )
    .await;
    assert_eq!(noteless.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        noteless.text.contains("`note` is required"),
        "{}",
        noteless.text
    );
    let erased = act(&app, &ana, id, "erase", &[]).await;
    assert_eq!(erased.status, StatusCode::SEE_OTHER, "{}", erased.text);
    let tasks = app.store.request_tasks(id).await.unwrap();
    let kept = tasks.iter().find(|t| t.target == "kept").unwrap();
    assert_eq!(kept.state.as_str(), "done");
    assert_eq!(
        state_of(&app, id).await,
        State::InProgress,
        "the system's task is open"
    );
    assert!(
        app.store
            .subject(app.subjects[0])
            .await
            .unwrap()
            .is_none_or(|s| s.erased_at.is_some()),
        "the subject is erased"
    );

    // The system has no way to acknowledge here: the operator handles it by hand.
    let handled = act(
        &app,
        &ana,
        id,
        "handled",
        &[
            ("target", "system:ad_partner"),
            ("note", "deleted in the partner's console"),
        ],
    )
    .await;
    assert_eq!(handled.status, StatusCode::SEE_OTHER, "{}", handled.text);
    assert_eq!(state_of(&app, id).await, State::Completed);

    let shown = app
        .send(page(
            &format!("/admin/requests/{id}?done=handled"),
            Some(&ana.cookie),
        ))
        .await;
    assert!(shown.text.contains("The task is marked handled."));
    assert!(
        shown.text.contains("nothing more can be done"),
        "{}",
        shown.text
    );
    assert!(
        shown.text.contains("operator:ana@example.com")
            && shown.text.contains("deleted in the partner&#39;s console"),
        "{}",
        shown.text
    );
    let log = kept_server::requests::service::log_of(app.store.as_ref(), id)
        .await
        .unwrap();
    assert!(
        log.iter()
            .any(|(_, _, r)| r.actor == "operator:ana@example.com" && r.to == State::Verified)
    );
    assert_eq!(log.last().unwrap().2.to, State::Completed);
    let audit = app.store.audit_log(None, 50).await.unwrap();
    let ours: Vec<(&str, Option<&str>)> = audit
        .iter()
        .filter(|e| e.entry.target.as_deref() == Some(&format!("request:{id}")))
        .map(|e| (e.entry.action.as_str(), e.entry.detail.as_deref()))
        .collect();
    assert_eq!(
        ours,
        vec![
            ("request.task_handled", Some("system:ad_partner")),
            ("request.erase", Some("state in_progress")),
            ("request.advance", Some("to in_progress")),
            ("request.advance", Some("to verified")),
        ],
        "each step once, newest first; refusals are not"
    );
}

#[tokio::test]
async fn extend_and_reject_need_a_reason() {
    let app = TestApp::new().await;
    let id = file(&app, "u1", "access").await;
    let ana = sign_in(&app, "ana@example.com", OperatorRole::Privacy).await;
    let due = app.store.request(id).await.unwrap().unwrap().due_at;

    let reasonless = act(&app, &ana, id, "extend", &[("reason", "")]).await;
    assert_eq!(reasonless.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(reasonless.text.contains("This field is required: say why."));
    assert!(reasonless.text.contains("`reason` is required"));
    assert!(
        reasonless
            .text
            .contains("id=\"extend-reason\" name=\"reason\" rows=\"2\" maxlength=\"2000\" aria-describedby=\"extend-hint error\" aria-invalid=\"true\""),
        "{}",
        reasonless.text
    );
    assert_eq!(state_of(&app, id).await, State::Received);
    let extended = act(
        &app,
        &ana,
        id,
        "extend",
        &[("reason", "the archive is offline")],
    )
    .await;
    assert_eq!(extended.status, StatusCode::SEE_OTHER, "{}", extended.text);
    let request = app.store.request(id).await.unwrap().unwrap();
    assert_eq!(request.state, State::Extended);
    assert!(request.due_at > due);
    // Once only.
    let twice = act(&app, &ana, id, "extend", &[("reason", "still offline")]).await;
    assert_eq!(twice.status, StatusCode::CONFLICT);
    assert!(twice.text.contains("request.extended_twice"));

    let reasonless = act(&app, &ana, id, "reject", &[("reason", "  ")]).await;
    assert_eq!(reasonless.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(state_of(&app, id).await, State::Extended);
    let rejected = act(&app, &ana, id, "reject", &[("reason", "not the subject")]).await;
    assert_eq!(rejected.status, StatusCode::SEE_OTHER);
    assert_eq!(state_of(&app, id).await, State::Rejected);
    let closed = act(&app, &ana, id, "reject", &[("reason", "again")]).await;
    assert_eq!(closed.status, StatusCode::CONFLICT);
    assert!(closed.text.contains("request.closed"), "{}", closed.text);
}

#[tokio::test]
async fn an_access_request_gets_its_export_link_and_is_completed_from_the_page() {
    let app = TestApp::new().await;
    let id = file(&app, "u2", "access").await;
    let ana = sign_in(&app, "ana@example.com", OperatorRole::Privacy).await;
    let early = act(&app, &ana, id, "export", &[]).await;
    assert_eq!(
        early.status,
        StatusCode::CONFLICT,
        "not verified yet: {}",
        early.text
    );
    act(
        &app,
        &ana,
        id,
        "verify",
        &[("method", "verified_identifier"), ("reference", "email")],
    )
    .await;
    let started = act(&app, &ana, id, "start", &[]).await;
    assert_eq!(started.status, StatusCode::SEE_OTHER, "{}", started.text);
    let links = act(&app, &ana, id, "export", &[]).await;
    assert_eq!(links.status, StatusCode::CREATED, "{}", links.text);
    let at = links.text.find("/exports/").expect("a download link");
    let end = at + links.text[at..].find('"').unwrap();
    let link = links.text[at..end].replace("&amp;", "&");
    assert!(links.text.contains("Download links (shown once)"));
    let shown = app
        .send(page(&format!("/admin/requests/{id}"), Some(&ana.cookie)))
        .await;
    assert!(!shown.text.contains("/exports/"), "the link is shown once");
    let completed = act(&app, &ana, id, "complete", &[("note", "sent by mail")]).await;
    assert_eq!(
        completed.status,
        StatusCode::SEE_OTHER,
        "{}",
        completed.text
    );
    assert_eq!(state_of(&app, id).await, State::Completed);
    // The link works for the subject.
    let download = app.send(page(&link, None)).await;
    assert_eq!(download.status, StatusCode::OK, "{link}: {}", download.text);
    let audit = app.store.audit_log(None, 50).await.unwrap();
    let actions: Vec<&str> = audit
        .iter()
        .filter(|e| e.entry.target.as_deref() == Some(&format!("request:{id}")))
        .map(|e| e.entry.action.as_str())
        .collect();
    assert_eq!(
        actions,
        vec![
            "request.advance",
            "request.export_link",
            "request.advance",
            "request.advance"
        ]
    );
}

#[tokio::test]
async fn other_teams_and_forms_without_their_token_are_refused() {
    let app = TestApp::new().await;
    let id = file(&app, "u1", "erasure").await;
    for (email, role) in [
        ("mo@example.com", OperatorRole::Marketing),
        ("eve@example.com", OperatorRole::Engineering),
    ] {
        let op = sign_in(&app, email, role).await;
        for path in [
            "/admin/requests".to_owned(),
            format!("/admin/requests/{id}"),
        ] {
            let answer = app.send(page(&path, Some(&op.cookie))).await;
            assert_eq!(answer.status, StatusCode::FORBIDDEN, "{email} on {path}");
        }
        let reject = act(&app, &op, id, "reject", &[("reason", "no")]).await;
        assert_eq!(reject.status, StatusCode::FORBIDDEN, "{email}");
    }
    let ana = sign_in(&app, "ana@example.com", OperatorRole::Privacy).await;
    for csrf in [None, Some("forged")] {
        let mut fields = vec![("reason", "no")];
        if let Some(c) = csrf {
            fields.push(("csrf", c));
        }
        let answer = app
            .send(form_post(
                &format!("/admin/requests/{id}/reject"),
                &fields,
                Some(&ana.cookie),
                &[],
            ))
            .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
    }
    assert_eq!(state_of(&app, id).await, State::Received);
    assert_eq!(log_len(&app, id).await, 1);
}

#[tokio::test]
async fn the_requests_pages_speak_the_consoles_languages() {
    let app = TestApp::new().await;
    let id = file(&app, "u1", "erasure").await;
    let ana = sign_in(&app, "ana@example.com", OperatorRole::Privacy).await;
    for (lang, queue_words, request_words) in [
        ("de", "Offene Betroffenenanfragen", "Identität prüfen"),
        (
            "fr",
            "celles en retard d&#39;abord",
            "Vérifier l&#39;identité",
        ),
        ("es", "primero las vencidas", "Verificar la identidad"),
    ] {
        let queue = app
            .send(page(
                &format!("/admin/requests?lang={lang}"),
                Some(&ana.cookie),
            ))
            .await;
        assert!(queue.text.contains(queue_words), "{lang}: {}", queue.text);
        let shown = app
            .send(page(
                &format!("/admin/requests/{id}?lang={lang}"),
                Some(&ana.cookie),
            ))
            .await;
        assert!(shown.text.contains(request_words), "{lang}: {}", shown.text);
        assert!(shown.text.contains(&format!("<html lang=\"{lang}\">")));
    }
}

#[tokio::test]
async fn the_language_form_reloads_the_request_shown() {
    let app = TestApp::new().await;
    let id = file(&app, "u1", "access").await;
    let ana = sign_in(&app, "ana@example.com", OperatorRole::Privacy).await;
    let shown = app
        .send(page(&format!("/admin/requests/{id}"), Some(&ana.cookie)))
        .await;
    assert!(
        shown.text.contains(&format!(
            "<form method=\"get\" action=\"/admin/requests/{id}\">"
        )),
        "{}",
        shown.text
    );
    assert!(
        shown
            .text
            .contains("href=\"/admin/requests\" aria-current=\"page\"")
    );
}
