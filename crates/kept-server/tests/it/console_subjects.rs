//! The console's subjects pages as the privacy team uses them: finding a subject by email,
//! phone or user id; its page with traits and the purposes that may use them, the decisions
//! per purpose and channel, the consent ledger; minting a preference-center link, starting a
//! request and undoing a merge from it. Looking records no use; every search, view and action
//! is in the audit log, and no searched value is.

use crate::console::{PASSWORD, hidden, operator, page, session_cookie, try_sign_in};
use crate::prefcenter::form_post;
use crate::support::{Answer, NOW, TestApp, get, post};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use kept_core::SubjectId;
use kept_server::console::accounts;
use kept_store::Role;
use kept_store::operators::OperatorRole;
use kept_store::uses::UseQuery;
use serde_json::{Value, json};

/// A signed-in operator of the console.
struct Desk {
    cookie: String,
    csrf: String,
}

async fn sign_in(app: &TestApp, email: &str, role: OperatorRole, step: i64) -> Desk {
    let secret = operator(app, email, role).await;
    let signed = try_sign_in(
        app,
        email,
        PASSWORD,
        &accounts::code_at(&secret, NOW + step),
        None,
    )
    .await;
    let cookie = session_cookie(&signed);
    let home = app.send(page("/admin", Some(&cookie))).await;
    let csrf = hidden(&home.text, "csrf");
    Desk { cookie, csrf }
}

impl Desk {
    async fn get(&self, app: &TestApp, path: &str) -> Answer {
        app.send(page(path, Some(&self.cookie))).await
    }

    async fn post(&self, app: &TestApp, path: &str, fields: &[(&str, &str)]) -> Answer {
        let mut all = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        app.send(form_post(path, &all, Some(&self.cookie), &[]))
            .await
    }
}

fn collect(app: &TestApp, path: &str, body: &Value) -> Request<Body> {
    use base64::Engine as _;
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:", app.key(Role::Server)));
    Request::post(path)
        .header(header::AUTHORIZATION, format!("Basic {basic}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// Ruth joins the rewards programme with her phone number (a notice that promises texts about
/// her orders, not offers) and signs up for the newsletter with her email address.
async fn ruth(app: &TestApp) -> SubjectId {
    for body in [
        json!({"userId": "ruth", "traits": {"phone": "+1 415 555 0123", "name": "Ruth"},
               "context": {"kept": {"collection_point": "rewards_signup"},
                           "location": {"country": "US"}}}),
        json!({"userId": "ruth", "traits": {"email": "Ruth@Example.com"},
               "context": {"kept": {"collection_point": "newsletter_signup"}}}),
    ] {
        let answer = app.send(collect(app, "/v1/identify", &body)).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    }
    let found = app
        .send(get(
            "/v1/subjects/lookup?user_id=ruth",
            Some(app.key(Role::Privacy)),
        ))
        .await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.text);
    SubjectId(found.json["subject"].as_u64().unwrap() as u32)
}

fn location(answer: &Answer) -> &str {
    answer.headers[header::LOCATION].to_str().unwrap()
}

/// The table row of `table` whose header cell is `key`.
fn row<'a>(html: &'a str, table: &str, key: &str) -> &'a str {
    let at = html
        .find(&format!("<table id=\"{table}\""))
        .unwrap_or_else(|| panic!("no table {table} in {html}"));
    let rest = &html[at..];
    let start = rest
        .find(&format!("<th scope=\"row\">{key}</th>"))
        .or_else(|| rest.find(&format!("<th scope=\"row\"><code>{key}</code></th>")))
        .unwrap_or_else(|| panic!("no row {key} in {table}"));
    let rest = &rest[start..];
    &rest[..rest.find("</tr>").unwrap()]
}

async fn audit(app: &TestApp) -> Vec<kept_store::operators::AuditEntry> {
    app.store.audit_log(None, 100).await.unwrap()
}

#[tokio::test]
async fn the_privacy_team_finds_a_subject_by_email_phone_or_user_id() {
    let app = TestApp::new().await;
    let id = ruth(&app).await;
    let desk = sign_in(&app, "ana@example.com", OperatorRole::Privacy, 0).await;
    let form = desk.get(&app, "/admin/subjects").await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.text.contains("<label for=\"q\">"), "{}", form.text);

    let want = format!("/admin/subjects/{}", id.0);
    for search in [
        "q=ruth%40example.com",
        "q=RUTH%40example.com&kind=email",
        "q=%2B14155550123",
        "q=%2B1+415+555+0123&kind=phone",
        "q=ruth",
        "q=ruth&kind=user_id",
    ] {
        let found = desk.get(&app, &format!("/admin/subjects?{search}")).await;
        assert_eq!(
            found.status,
            StatusCode::SEE_OTHER,
            "{search}: {}",
            found.text
        );
        assert_eq!(location(&found), want, "{search}");
    }

    let nobody = desk
        .get(&app, "/admin/subjects?q=nobody%40example.com")
        .await;
    assert_eq!(nobody.status, StatusCode::OK);
    assert!(
        nobody
            .text
            .contains("No subject is known by this identifier.")
    );
    assert!(!nobody.text.contains("ruth"), "nothing else is said");

    let not_email = desk.get(&app, "/admin/subjects?q=ruth%40&kind=email").await;
    assert_eq!(not_email.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        not_email.text.contains("id=\"q-error\""),
        "{}",
        not_email.text
    );
    assert!(not_email.text.contains("this is not an email address"));
    assert!(not_email.text.contains("aria-invalid=\"true\""));
    let not_phone = desk.get(&app, "/admin/subjects?q=call+me&kind=phone").await;
    assert_eq!(not_phone.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(not_phone.text.contains("this is not a phone number"));
    let bad_kind = desk.get(&app, "/admin/subjects?q=ruth&kind=ssn").await;
    assert_eq!(bad_kind.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad_kind.text.contains("id=\"kind-error\""));

    // Every search is audited by kind, never by the value searched for.
    let searches: Vec<_> = audit(&app)
        .await
        .into_iter()
        .filter(|e| e.entry.action == "subject.search")
        .collect();
    assert_eq!(searches.len(), 9);
    for e in &searches {
        let detail = e.entry.detail.clone().unwrap_or_default();
        assert!(!detail.to_lowercase().contains("ruth"), "{detail}");
        assert!(!detail.contains("415"), "{detail}");
        assert!(!detail.contains("nobody"), "{detail}");
        assert_eq!(e.entry.actor, "ana@example.com");
    }
    let target = format!("subject:{}", id.0);
    assert!(searches.iter().any(|e| {
        e.entry.detail.as_deref() == Some("by email, found")
            && e.entry.target.as_deref() == Some(target.as_str())
    }));
    assert!(
        searches
            .iter()
            .any(|e| e.entry.detail.as_deref() == Some("by phone, malformed"))
    );
}

#[tokio::test]
async fn the_subjects_pages_are_the_privacy_teams() {
    let app = TestApp::new().await;
    let id = ruth(&app).await;
    for (i, role) in [OperatorRole::Marketing, OperatorRole::Engineering]
        .into_iter()
        .enumerate()
    {
        let desk = sign_in(
            &app,
            &format!("{}@example.com", role.as_str()),
            role,
            i as i64,
        )
        .await;
        let subject = format!("/admin/subjects/{}", id.0);
        for path in ["/admin/subjects?q=ruth", subject.as_str()] {
            assert_eq!(
                desk.get(&app, path).await.status,
                StatusCode::FORBIDDEN,
                "{path}"
            );
        }
        let link = desk.post(&app, &format!("{subject}/link"), &[]).await;
        assert_eq!(link.status, StatusCode::FORBIDDEN);
        let request = desk
            .post(&app, &format!("{subject}/requests"), &[("kind", "erasure")])
            .await;
        assert_eq!(request.status, StatusCode::FORBIDDEN);
    }
    assert!(
        app.store
            .requests(&kept_store::requests::RequestFilter {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        audit(&app)
            .await
            .iter()
            .all(|e| !e.entry.action.starts_with("subject."))
    );
}

#[tokio::test]
async fn a_subjects_page_shows_traits_decisions_and_the_ledger_and_records_no_use() {
    let app = TestApp::new().await;
    let id = ruth(&app).await;
    // A consent record for the timeline, and a text about an order: a recorded use.
    let given = app
        .send(post(
            "/v1/consents",
            Some(app.key(Role::Privacy)),
            &crate::support::newsletter_consent(id),
        ))
        .await;
    assert!(given.status.is_success(), "{}", given.text);
    let sent = app
        .send(post(
            "/v1/contacts",
            Some(app.key(Role::Decide)),
            &json!({"subject": {"user_id": "ruth"}, "channel": "sms",
                    "purpose": "essential.service.notifications.sms"})
            .to_string(),
        ))
        .await;
    assert!(sent.status.is_success(), "{}", sent.text);
    let query = UseQuery {
        subject: id,
        before: None,
        limit: 100,
    };
    let before = app.store.uses_of(&query).await.unwrap();
    assert_eq!(before.len(), 1);

    let desk = sign_in(&app, "ana@example.com", OperatorRole::Privacy, 0).await;
    let shown = desk.get(&app, &format!("/admin/subjects/{}", id.0)).await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.text);
    let html = &shown.text;

    // Identifiers opened, standing.
    assert!(html.contains("ruth@example.com"), "{html}");
    assert!(html.contains("+14155550123"));
    assert!(html.contains("No erasure, suppression or restriction."));

    // The phone number came with the rewards notice: rewards and order texts may use it, offers
    // may not.
    let phone = row(html, "traits", "phone");
    assert!(phone.contains("rewards_signup"), "{phone}");
    assert!(phone.contains("rewards v1"), "{phone}");
    assert!(phone.contains("loyalty.rewards"), "{phone}");
    assert!(
        phone.contains("essential.service.notifications.sms"),
        "{phone}"
    );
    assert!(!phone.contains("marketing.communications"), "{phone}");
    let email = row(html, "traits", "email");
    assert!(email.contains("marketing.communications"), "{email}");

    // Decisions per purpose and channel, with their reasons.
    let offers = row(html, "decisions", "marketing.communications");
    assert!(offers.contains("denied.not_promised"), "{offers}");
    // In the US, email offers are opt-out.
    assert!(offers.contains("allowed.opt_out_regime"), "{offers}");
    let texts = row(html, "decisions", "essential.service.notifications.sms");
    assert!(texts.contains("allowed.contract"), "{texts}");

    // The ledger, newest first.
    let timeline = &html[html.find("<table id=\"timeline\"").unwrap()..];
    let entries = app.store.ledger_for_subject(id).await.unwrap();
    let last = entries.last().unwrap();
    assert!(timeline.contains(&format!("#{}", last.seq)), "{timeline}");
    assert!(timeline.contains("newsletter v1"));
    assert!(timeline.contains("given"));

    // The use recorded before is listed; looking recorded none.
    assert!(row_free(html, "uses").contains("essential.service.notifications.sms"));
    let after = app.store.uses_of(&query).await.unwrap();
    assert_eq!(after.len(), before.len(), "viewing the page is not a use");

    let views: Vec<_> = audit(&app)
        .await
        .into_iter()
        .filter(|e| e.entry.action == "subject.view")
        .collect();
    assert_eq!(views.len(), 1);
    assert_eq!(
        views[0].entry.target.as_deref(),
        Some(format!("subject:{}", id.0).as_str())
    );

    for unknown in ["/admin/subjects/99999", "/admin/subjects/ruth"] {
        let answer = desk.get(&app, unknown).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{unknown}");
        assert!(answer.text.contains("No subject has this id."));
    }
}

/// The body of table `table`.
fn row_free<'a>(html: &'a str, table: &str) -> &'a str {
    let at = html.find(&format!("<table id=\"{table}\"")).unwrap();
    let rest = &html[at..];
    &rest[..rest.find("</table>").unwrap()]
}

#[tokio::test]
async fn a_link_minted_on_the_page_opens_the_preference_center_once() {
    let app = TestApp::new().await;
    let id = ruth(&app).await;
    let desk = sign_in(&app, "ana@example.com", OperatorRole::Privacy, 0).await;
    let minted = desk
        .post(&app, &format!("/admin/subjects/{}/link", id.0), &[])
        .await;
    assert_eq!(minted.status, StatusCode::CREATED, "{}", minted.text);
    let marker = "<code id=\"preference-link\">";
    let at = minted.text.find(marker).unwrap() + marker.len();
    let url = &minted.text[at..];
    let url = url[..url.find('<').unwrap()]
        .replace("&#x2f;", "/")
        .replace("&#x3d;", "=")
        .replace("&#61;", "=")
        .replace("&amp;", "&");
    let path = &url[url.find("/preferences/open").unwrap()..];
    let token = &path[path.find("token=").unwrap() + 6..];

    let open = |path: String| {
        Request::get(path)
            .header(header::HOST, "kept.test")
            .body(Body::empty())
            .unwrap()
    };
    let opened = app.send(open(path.to_owned())).await;
    assert_eq!(opened.status, StatusCode::SEE_OTHER, "{}", opened.text);
    assert!(location(&opened).starts_with("/preferences"));
    let prefs = opened
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("kept_prefs=") && !c.starts_with("kept_prefs=;"))
        .map(|c| c.split(';').next().unwrap().to_owned())
        .expect("a preference-center session");
    let mut req = Request::get("/preferences").header(header::HOST, "kept.test");
    req = req.header(header::COOKIE, prefs);
    let center = app.send(req.body(Body::empty()).unwrap()).await;
    assert_eq!(center.status, StatusCode::OK, "{}", center.text);
    // Single use.
    let again = app.send(open(path.to_owned())).await;
    assert_eq!(again.status, StatusCode::FORBIDDEN);

    let entry = audit(&app)
        .await
        .into_iter()
        .find(|e| e.entry.action == "subject.preference_link")
        .expect("the minting is audited");
    assert_eq!(
        entry.entry.target.as_deref(),
        Some(format!("subject:{}", id.0).as_str())
    );
    let detail = entry.entry.detail.unwrap_or_default();
    assert!(
        !detail.contains(token),
        "the link is never in the audit log"
    );
    // Shown once: the page read again does not show it.
    let page_again = desk.get(&app, &format!("/admin/subjects/{}", id.0)).await;
    assert!(!page_again.text.contains(token));
}

#[tokio::test]
async fn an_operator_starts_a_request_for_the_subject() {
    let app = TestApp::new().await;
    let id = ruth(&app).await;
    let desk = sign_in(&app, "ana@example.com", OperatorRole::Privacy, 0).await;
    let path = format!("/admin/subjects/{}/requests", id.0);
    let filter = kept_store::requests::RequestFilter {
        subject: Some(id),
        limit: 10,
        ..Default::default()
    };

    let bad = desk.post(&app, &path, &[("kind", "everything")]).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.text);
    assert!(bad.text.contains("id=\"kind-error\""), "{}", bad.text);
    assert!(
        app.store.requests(&filter).await.unwrap().is_empty(),
        "nothing half-written"
    );

    let started = desk
        .post(
            &app,
            &path,
            &[("kind", "erasure"), ("note", "asked on the phone, case 77")],
        )
        .await;
    assert_eq!(started.status, StatusCode::SEE_OTHER, "{}", started.text);
    let requests = app.store.requests(&filter).await.unwrap();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.kind, kept_core::requests::RequestKind::Erasure);
    assert_eq!(request.channel, kept_core::requests::Channel::Operator);
    assert_eq!(
        request.verification.as_ref().map(|v| v.method),
        Some(kept_core::requests::VerificationMethod::CompanyStated)
    );
    assert_eq!(
        location(&started),
        format!("/admin/requests/{}", request.id)
    );
    let log = app.store.request_log_of(request.id).await.unwrap();
    assert_eq!(log.len(), 2, "the intake, then the note");

    // The page lists it, linking to the request's page.
    let shown = desk.get(&app, &format!("/admin/subjects/{}", id.0)).await;
    assert!(
        shown
            .text
            .contains(&format!("href=\"/admin/requests/{}\"", request.id)),
        "{}",
        shown.text
    );
    let entry = audit(&app)
        .await
        .into_iter()
        .find(|e| e.entry.action == "request.start")
        .unwrap();
    assert_eq!(
        entry.entry.target.as_deref(),
        Some(format!("request:{}", request.id).as_str())
    );
}

#[tokio::test]
async fn an_operator_undoes_a_merge_from_the_page() {
    let app = TestApp::new().await;
    for user in ["u8", "u9"] {
        let body = json!({"userId": user, "traits": {"email": format!("{user}@shop.test")},
                          "context": {"location": {"country": "DE"}}});
        let answer = app.send(collect(&app, "/v1/identify", &body)).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    }
    let alias = json!({"userId": "u9", "previousId": "u8"});
    let answer = app.send(collect(&app, "/v1/alias", &alias)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let merge = app.store.identity_log(None, 1).await.unwrap().remove(0);
    assert_eq!(merge.action, "merge");
    let (from, into) = (merge.from, merge.into);

    let desk = sign_in(&app, "ana@example.com", OperatorRole::Privacy, 0).await;
    let shown = desk.get(&app, &format!("/admin/subjects/{}", into.0)).await;
    let action = format!("/admin/subjects/{}/merges/{}/undo", into.0, merge.id);
    assert!(shown.text.contains(&action), "{}", shown.text);

    let undone = desk.post(&app, &action, &[]).await;
    assert_eq!(undone.status, StatusCode::SEE_OTHER, "{}", undone.text);
    assert_eq!(
        location(&undone),
        format!("/admin/subjects/{}?done=undone", into.0)
    );
    let log = app.store.identity_log(None, 2).await.unwrap();
    assert_eq!(log[0].action, "undo");
    assert_eq!(log[0].undoes, Some(merge.id));
    // u8 is its own subject again: the search finds it by its address.
    let found = desk.get(&app, "/admin/subjects?q=u8%40shop.test").await;
    assert_eq!(location(&found), format!("/admin/subjects/{}", from.0));

    // The restored subject's page shows its merge, undone, and offers no undo again.
    let restored = desk.get(&app, &format!("/admin/subjects/{}", from.0)).await;
    let merges = row_free(&restored.text, "merges");
    assert!(merges.contains("Undone"), "{merges}");
    assert!(!merges.contains("/undo\""), "{merges}");
    let again = desk
        .post(
            &app,
            &format!("/admin/subjects/{}/merges/{}/undo", from.0, merge.id),
            &[],
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);
    // A merge is undone only from the page of a subject it concerns.
    let elsewhere = desk
        .post(
            &app,
            &format!(
                "/admin/subjects/{}/merges/{}/undo",
                app.subjects[0].0, merge.id
            ),
            &[],
        )
        .await;
    assert_eq!(elsewhere.status, StatusCode::NOT_FOUND);
    assert!(
        audit(&app)
            .await
            .iter()
            .any(|e| e.entry.action == "merge.undo"
                && e.entry.target.as_deref() == Some(format!("merge:{}", merge.id).as_str()))
    );
}

#[tokio::test]
async fn a_long_ledger_is_shown_newest_first_a_page_at_a_time() {
    let app = TestApp::new().await;
    let id = app.subjects[0];
    let records: Vec<Value> = (0..60)
        .map(|i| {
            json!({"subject": id.0, "purpose": "marketing.communications", "channel": "email",
                   "topic": "newsletter", "action": if i % 2 == 0 { "given" } else { "withdrawn" },
                   "notice": "newsletter", "method": "double_opt_in", "source": "api",
                   "evidence": {"reference": format!("form-{i}")}})
        })
        .collect();
    let appended = app
        .send(post(
            "/v1/consents",
            Some(app.key(Role::Privacy)),
            &json!({ "records": records }).to_string(),
        ))
        .await;
    assert!(appended.status.is_success(), "{}", appended.text);
    let seqs: Vec<u64> = app
        .store
        .ledger_for_subject(id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs.len(), 60);

    let desk = sign_in(&app, "ana@example.com", OperatorRole::Privacy, 0).await;
    let first = desk.get(&app, &format!("/admin/subjects/{}", id.0)).await;
    let shown = |html: &str| -> Vec<u64> {
        let table = row_free(html, "timeline");
        table
            .split("<td>#")
            .skip(1)
            .map(|s| s[..s.find('<').unwrap()].parse().unwrap())
            .collect()
    };
    let page_one = shown(&first.text);
    let newest: Vec<u64> = seqs.iter().rev().take(50).copied().collect();
    assert_eq!(page_one, newest);
    let older = format!("/admin/subjects/{}?before={}", id.0, newest[49]);
    assert!(
        first.text.contains(&format!("href=\"{older}\"")),
        "{}",
        first.text
    );
    let second = desk.get(&app, &older).await;
    let page_two = shown(&second.text);
    let rest: Vec<u64> = seqs.iter().rev().skip(50).copied().collect();
    assert_eq!(page_two, rest);
    assert!(!second.text.contains("?before="), "the last page");
}
