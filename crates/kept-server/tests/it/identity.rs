//! Write keys that cannot speak for customers: a public key (the one in every shop page) cannot
//! take over a known customer's profile, forge their consent or merge them away; a server key
//! and an identity token can. Sign-in links go only to verified addresses. Merges are logged,
//! undone by the privacy role, and lookups, decisions, contacts and the index agree after a
//! merge, after an undo and after a restart.

use crate::prefcenter::{form_post, get_page};
use crate::support::{Answer, NOW, TestApp, send};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use kept_core::ledger::{ConsentRecord, decode};
use kept_server::collect::{CollectConfig, Collector};
use kept_server::config::Secret;
use kept_server::identity::identity_token;
use kept_server::prefcenter::mail::{Mail, Mailer};
use kept_server::prefcenter::{PrefCenter, PrefCenterConfig};
use kept_server::state::AppState;
use kept_store::Role;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

const SECRET: &str = "a-test-identity-secret-of-32-chars";
const ORIGIN: &str = "http://kept.test";
const VICTIM: &str = "vera@shop.test";
const MALLORY: &str = "mallory@evil.test";
const MARKETING: &str = "marketing.communications";
const OPERATIONS: &str = "essential.service.operations";

struct Shop {
    app: TestApp,
    state: AppState,
    sent: Arc<Mutex<Vec<Mail>>>,
}

impl Shop {
    /// A server with an identity secret, a preference center that keeps its mail, and one
    /// known customer, `u4`, whose email address came from the shop's backend.
    async fn new() -> Shop {
        let app = TestApp::new().await;
        let (mailer, sent) = Mailer::memory();
        let state = app
            .state
            .clone()
            .with_collector(Collector::new(CollectConfig {
                identity_secret: Some(Secret::new(SECRET)),
                ..CollectConfig::default()
            }))
            .with_prefcenter(PrefCenter::new(
                PrefCenterConfig {
                    public_url: Some(ORIGIN.to_owned()),
                    ..PrefCenterConfig::default()
                },
                mailer,
            ));
        let shop = Shop { app, state, sent };
        let answer = shop
            .call(
                Role::Server,
                "/v1/identify",
                json!({
                    "userId": "u4",
                    "anonymousId": "vera-browser",
                    "traits": {"email": VICTIM, "name": "Vera"},
                    "context": {"location": {"country": "DE"}},
                }),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        shop
    }

    fn router(&self) -> Router {
        kept_server::router(self.state.clone())
    }

    /// A collection call with the write key of `role`, as a Segment library sends it.
    async fn call(&self, role: Role, path: &str, body: Value) -> Answer {
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("{}:", self.app.key(role)));
        send(
            self.router(),
            Request::post(path)
                .header(header::AUTHORIZATION, format!("Basic {basic}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
    }

    async fn api(&self, role: Role, method: &str, path: &str, body: Option<Value>) -> Answer {
        let body = body.map(|b| b.to_string());
        send(
            self.router(),
            crate::support::request(method, path, Some(self.app.key(role)), body.as_deref()),
        )
        .await
    }

    async fn lookup(&self, query: &str) -> Answer {
        self.api(
            Role::Privacy,
            "GET",
            &format!("/v1/subjects/lookup?{query}"),
            None,
        )
        .await
    }

    async fn subject_of(&self, query: &str) -> u64 {
        let answer = self.lookup(query).await;
        assert_eq!(answer.status, StatusCode::OK, "{query}: {}", answer.text);
        answer.json["subject"].as_u64().unwrap()
    }

    async fn emails_of(&self, query: &str) -> Vec<String> {
        let answer = self.lookup(query).await;
        assert_eq!(answer.status, StatusCode::OK, "{query}: {}", answer.text);
        answer.json["identifiers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["kind"] == "email")
            .map(|i| i["value"].as_str().unwrap().to_owned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    async fn records(&self, subject: u64) -> Vec<ConsentRecord> {
        self.app
            .store
            .ledger_for_subject(kept_core::SubjectId(u32::try_from(subject).unwrap()))
            .await
            .unwrap()
            .iter()
            .map(|e| decode(&e.bytes).unwrap())
            .collect()
    }

    /// Asks for a sign-in link for `email`, as the sign-in form does.
    async fn sign_in(&self, email: &str) {
        let form = send(self.router(), get_page("/preferences/sign-in", None)).await;
        assert_eq!(form.status, StatusCode::OK);
        let marker = "name=\"form_token\" value=\"";
        let rest = &form.text[form.text.find(marker).unwrap() + marker.len()..];
        let form_token = rest[..rest.find('"').unwrap()].to_owned();
        let answer = send(
            self.router(),
            form_post(
                "/preferences/sign-in",
                &[("form_token", &form_token), ("email", email)],
                None,
                &[("origin", ORIGIN)],
            ),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    }

    /// The sign-in mails sent once one to `expected` went out (mail is sent off the request).
    async fn mails_once_sent_to(&self, expected: &str) -> Vec<Mail> {
        for _ in 0..200 {
            let mails = self.sent.lock().unwrap().clone();
            if mails.iter().any(|m| m.to == expected) {
                return mails;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("no mail to {expected}");
    }
}

fn refused(answer: &Answer, code: &str, field: &str) {
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text);
    assert_eq!(answer.code(), code, "{}", answer.text);
    assert_eq!(answer.json["error"]["field"], field, "{}", answer.text);
}

fn consent(yes: bool) -> Value {
    json!({"categoryPreferences": {MARKETING: yes}})
}

#[tokio::test]
async fn a_public_key_cannot_attach_an_address_to_a_known_customer_by_user_id() {
    let shop = Shop::new().await;
    let answer = shop
        .call(
            Role::Public,
            "/v1/identify",
            json!({"userId": "u4", "traits": {"email": MALLORY}}),
        )
        .await;
    refused(&answer, "collect.identity_token_required", "traits.email");
    assert!(
        answer.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("context.kept.userHash")
    );
    assert_eq!(shop.emails_of("user_id=u4").await, [VICTIM]);
    assert_eq!(
        shop.lookup(&format!("email={MALLORY}")).await.status,
        StatusCode::NOT_FOUND
    );
    // Nor rename her, or overwrite any trait of hers.
    let answer = shop
        .call(
            Role::Public,
            "/v1/identify",
            json!({"userId": "u4", "traits": {"name": "Mallory"}}),
        )
        .await;
    refused(&answer, "collect.identity_token_required", "traits");
    // Nor a customer imported with only a user id, as the demo's are.
    let answer = shop
        .call(
            Role::Public,
            "/v1/identify",
            json!({"userId": "u1", "traits": {"email": MALLORY}}),
        )
        .await;
    refused(&answer, "collect.identity_token_required", "traits.email");
    assert_eq!(
        shop.lookup(&format!("email={MALLORY}")).await.status,
        StatusCode::NOT_FOUND
    );

    // The sign-in for Mallory's address mails nothing; Vera's still mails Vera.
    shop.sign_in(MALLORY).await;
    shop.sign_in(VICTIM).await;
    let mails = shop.mails_once_sent_to(VICTIM).await;
    assert!(mails.iter().all(|m| m.to == VICTIM), "{mails:?}");
}

#[tokio::test]
async fn a_public_key_cannot_send_events_as_a_known_customer() {
    let shop = Shop::new().await;
    let vera = shop.subject_of("user_id=u4").await;
    async fn events(shop: &Shop, subject: u64) -> usize {
        let path = format!("/v1/subjects/{subject}/events");
        let answer = shop.api(Role::Privacy, "GET", &path, None).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        answer.json["events"].as_array().unwrap().len()
    }
    let before = events(&shop, vera).await;
    // An order "placed" by Vera, sent from any page with the public key: it would be stored and
    // forwarded to the shop's systems as hers.
    for path in ["/v1/track", "/v1/page"] {
        let answer = shop
            .call(
                Role::Public,
                path,
                json!({"userId": "u4", "event": "Order Completed", "name": "Checkout",
                       "properties": {"total": 999}}),
            )
            .await;
        refused(&answer, "collect.identity_token_required", "userId");
    }
    assert_eq!(events(&shop, vera).await, before);
    // Her own browser, merged into her by the shop's backend, still reports what it does; and
    // with her identity token a page may name her.
    let answer = shop
        .call(
            Role::Public,
            "/v1/track",
            json!({"anonymousId": "vera-browser", "event": "Product Viewed"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let answer = shop
        .call(
            Role::Public,
            "/v1/track",
            json!({"userId": "u4", "event": "Product Viewed",
                   "context": {"kept": {"userHash": identity_token(SECRET, "u4")}}}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(events(&shop, vera).await, before + 2);
    // A user id nobody holds yet is a new visitor signing up: still allowed.
    let answer = shop
        .call(
            Role::Public,
            "/v1/track",
            json!({"userId": "brand-new", "event": "Signed Up"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
}

#[tokio::test]
async fn a_public_key_cannot_take_over_a_customer_knowing_only_her_email() {
    let shop = Shop::new().await;
    // The attacker's browser claims Vera's address, to be merged into her...
    let answer = shop
        .call(
            Role::Public,
            "/v1/identify",
            json!({"anonymousId": "evil-browser", "traits": {"email": VICTIM}}),
        )
        .await;
    refused(&answer, "collect.identity_token_required", "anonymousId");
    // ...then gives the same browser its own address: an anonymous profile of its own.
    let answer = shop
        .call(
            Role::Public,
            "/v1/identify",
            json!({"anonymousId": "evil-browser", "traits": {"email": MALLORY}}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let vera = shop.subject_of("user_id=u4").await;
    assert_ne!(shop.subject_of("anonymous_id=evil-browser").await, vera);
    assert_eq!(shop.emails_of("user_id=u4").await, [VICTIM]);

    // Mallory's address arrived through a public key: not verified, so no sign-in link.
    shop.sign_in(MALLORY).await;
    shop.sign_in(VICTIM).await;
    let mails = shop.mails_once_sent_to(VICTIM).await;
    assert!(mails.iter().all(|m| m.to == VICTIM), "{mails:?}");
}

#[tokio::test]
async fn a_public_key_cannot_change_a_known_customers_consent() {
    let shop = Shop::new().await;
    let vera = shop.subject_of("user_id=u4").await;
    let before = shop.records(vera).await.len();
    for (i, who) in [
        json!({"userId": "u4"}),
        json!({"anonymousId": "vera-browser"}),
    ]
    .into_iter()
    .enumerate()
    {
        let mut event = json!({
            "event": "Consent Updated",
            "messageId": format!("forged-{i}"),
            "context": {"consent": consent(true)},
        });
        event
            .as_object_mut()
            .unwrap()
            .extend(who.as_object().unwrap().clone());
        let answer = shop.call(Role::Public, "/v1/track", event).await;
        refused(
            &answer,
            "collect.identity_token_required",
            "context.consent.categoryPreferences",
        );
    }
    // In a batch the message is rejected alone, named; the others are written.
    let answer = shop
        .call(
            Role::Public,
            "/v1/batch",
            json!({"batch": [
                {"type": "page", "anonymousId": "someone-else", "name": "Home"},
                {"type": "track", "userId": "u4", "event": "Consent Updated",
                 "context": {"consent": consent(true)}},
            ]}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.json["accepted"], 1);
    assert_eq!(answer.json["rejected"][0]["index"], 1);
    assert_eq!(
        answer.json["rejected"][0]["code"],
        "collect.identity_token_required"
    );
    assert_eq!(
        answer.json["rejected"][0]["path"],
        "batch[1].context.consent.categoryPreferences"
    );
    assert_eq!(
        shop.lookup("anonymous_id=someone-else").await.status,
        StatusCode::OK,
        "the usable message of the batch is written"
    );
    assert_eq!(shop.records(vera).await.len(), before, "no ledger record");
    // Alone in its batch, the refused message is the batch's answer.
    let answer = shop
        .call(
            Role::Public,
            "/v1/batch",
            json!({"batch": [
                {"type": "track", "userId": "u4", "event": "Consent Updated",
                 "context": {"consent": consent(true)}},
            ]}),
        )
        .await;
    refused(
        &answer,
        "collect.identity_token_required",
        "batch[0].context.consent.categoryPreferences",
    );
    assert_eq!(answer.json["error"]["index"], 0);
    assert_eq!(shop.records(vera).await.len(), before, "no ledger record");

    // Her own browser, signed in without a token, keeps sending the choice she made: what
    // changes nothing is accepted; a change is not.
    let answer = shop
        .call(
            Role::Server,
            "/v1/track",
            json!({"userId": "u4", "event": "Consent Updated",
                   "context": {"consent": consent(true)}}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let given = shop.records(vera).await.len();
    let same = shop
        .call(
            Role::Public,
            "/v1/track",
            json!({"anonymousId": "vera-browser", "event": "Viewed",
                   "context": {"consent": consent(true)}}),
        )
        .await;
    assert_eq!(same.status, StatusCode::OK, "{}", same.text);
    let changed = shop
        .call(
            Role::Public,
            "/v1/track",
            json!({"anonymousId": "vera-browser", "event": "Consent Updated",
                   "context": {"consent": consent(false)}}),
        )
        .await;
    refused(
        &changed,
        "collect.identity_token_required",
        "context.consent.categoryPreferences",
    );
    assert_eq!(shop.records(vera).await.len(), given);

    // An anonymous visitor's own banner choice still counts, as a banner choice.
    let answer = shop
        .call(
            Role::Public,
            "/v1/track",
            json!({"anonymousId": "visitor", "event": "Consent Updated",
                   "context": {"consent": consent(true), "location": {"country": "FR"}}}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let visitor = shop.subject_of("anonymous_id=visitor").await;
    let records = shop.records(visitor).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].method.as_str(), "banner");
}

#[tokio::test]
async fn an_identity_token_lets_a_public_key_speak_for_its_own_user_only() {
    let shop = Shop::new().await;
    let vera = shop.subject_of("user_id=u4").await;
    let token = identity_token(SECRET, "u4");
    let answer = shop
        .call(
            Role::Public,
            "/v1/identify",
            json!({"userId": "u4", "traits": {"email": "vera@home.test"},
                   "context": {"kept": {"userHash": token}}}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(
        shop.emails_of("user_id=u4").await,
        ["vera@home.test", VICTIM]
    );
    let before = shop.records(vera).await.len();
    let answer = shop
        .call(
            Role::Public,
            "/v1/track",
            json!({"userId": "u4", "event": "Consent Updated",
                   "context": {"consent": consent(true), "kept": {"userHash": token}}}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let records = shop.records(vera).await;
    assert_eq!(records.len(), before + 1);
    assert_eq!(records[before].method.as_str(), "banner");

    // A token minted for another user, or made up, is refused and says so.
    for (user, hash) in [
        ("u4", identity_token(SECRET, "attacker")),
        (
            "u4",
            identity_token("another-secret-of-enough-length", "u4"),
        ),
        ("u4", "not hex".to_owned()),
    ] {
        let answer = shop
            .call(
                Role::Public,
                "/v1/identify",
                json!({"userId": user, "traits": {"email": MALLORY},
                       "context": {"kept": {"userHash": hash}}}),
            )
            .await;
        refused(
            &answer,
            "collect.identity_token_invalid",
            "context.kept.userHash",
        );
    }
    // A valid token for a new user does not reach a customer found by her address: not one
    // with a user id (the address is not attached)...
    let attacker = json!({"kept": {"userHash": identity_token(SECRET, "attacker")}});
    let answer = shop
        .call(
            Role::Public,
            "/v1/identify",
            json!({"userId": "attacker", "traits": {"email": VICTIM}, "context": attacker}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(shop.subject_of(&format!("email={VICTIM}")).await, vera);
    assert!(shop.emails_of("user_id=attacker").await.is_empty());
    // ...nor one known only by a verified address (the user id would go to her).
    let answer = shop
        .call(
            Role::Server,
            "/v1/identify",
            json!({"anonymousId": "eve-browser", "traits": {"email": "eve@shop.test"}}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let answer = shop
        .call(
            Role::Public,
            "/v1/identify",
            json!({"userId": "attacker-2", "traits": {"email": "eve@shop.test"},
                   "context": {"kept": {"userHash": identity_token(SECRET, "attacker-2")}}}),
        )
        .await;
    refused(&answer, "collect.identity_token_required", "userId");
    assert_eq!(
        shop.lookup("user_id=attacker-2").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_server_key_keeps_full_segment_semantics() {
    let shop = Shop::new().await;
    let vera = shop.subject_of("user_id=u4").await;
    let answer = shop
        .call(
            Role::Server,
            "/v1/identify",
            json!({"userId": "u4", "traits": {"email": "vera@home.test"}}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let before = shop.records(vera).await.len();
    let answer = shop
        .call(
            Role::Server,
            "/v1/track",
            json!({"userId": "u4", "event": "Consent Updated",
                   "context": {"consent": consent(true)}}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let records = shop.records(vera).await;
    assert_eq!(records.len(), before + 1);
    // The shop's backend is not a banner.
    assert_eq!(records[before].method.as_str(), "api");
    // An address from the backend is verified: it gets a sign-in link.
    shop.sign_in("vera@home.test").await;
    shop.mails_once_sent_to("vera@home.test").await;
}

#[tokio::test]
async fn a_public_key_cannot_merge_known_customers() {
    let shop = Shop::new().await;
    let answer = shop
        .call(Role::Server, "/v1/identify", json!({"userId": "u8"}))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let u8_subject = shop.subject_of("user_id=u8").await;
    let answer = shop
        .call(Role::Public, "/v1/identify", json!({"userId": "attacker"}))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let token = identity_token(SECRET, "attacker");
    for context in [json!({}), json!({"kept": {"userHash": token}})] {
        let answer = shop
            .call(
                Role::Public,
                "/v1/alias",
                json!({"userId": "attacker", "previousId": "u8", "context": context}),
            )
            .await;
        refused(&answer, "collect.merge_refused", "previousId");
    }
    let answer = shop.lookup("user_id=u8").await;
    assert_eq!(answer.json["subject"], u8_subject);
    assert_eq!(answer.json["merged_from"], json!([]));
    let log = shop.api(Role::Privacy, "GET", "/v1/merges", None).await;
    assert_eq!(log.json["entries"], json!([]));

    // The shop's backend may.
    let answer = shop
        .call(
            Role::Server,
            "/v1/alias",
            json!({"userId": "attacker", "previousId": "u8"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(
        shop.lookup("user_id=u8").await.json["merged_from"],
        json!([u8_subject])
    );
}

async fn reason(router: Router, app: &TestApp, subject: Value) -> String {
    let answer = send(
        router,
        crate::support::post(
            "/v1/decisions",
            Some(app.key(Role::Decide)),
            &json!({"subject": subject, "purpose": OPERATIONS, "categories": ["user.name"]})
                .to_string(),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.json["reason"].as_str().unwrap().to_owned()
}

async fn contact(router: Router, app: &TestApp, user_id: &str) -> StatusCode {
    send(
        router,
        crate::support::post(
            "/v1/contacts",
            Some(app.key(Role::Decide)),
            &json!({"subject": {"user_id": user_id}, "channel": "email", "purpose": MARKETING})
                .to_string(),
        ),
    )
    .await
    .status
}

/// The same server started afresh on the same store: its index built from the store.
async fn restarted(shop: &Shop) -> Router {
    let state = AppState::new(
        shop.app.store.clone(),
        shop.app.state.ledger.clone(),
        shop.app.state.manifest.clone(),
    )
    .with_clock(Arc::new(|| NOW));
    state
        .index
        .load(shop.app.store.as_ref(), NOW, &mut |_| {})
        .await
        .unwrap();
    kept_server::router(state)
}

/// Lookup, decisions and contacts all name `survivor` for `user_id`, on `router`.
async fn agree(shop: &Shop, router: Router, user_id: &str, survivor: u64, survivor_user: &str) {
    let lookup = send(
        router.clone(),
        crate::support::get(
            &format!("/v1/subjects/lookup?user_id={user_id}"),
            Some(shop.app.key(Role::Privacy)),
        ),
    )
    .await;
    assert_eq!(lookup.json["subject"], survivor, "{}", lookup.text);
    let by_user = reason(router.clone(), &shop.app, json!({"user_id": user_id})).await;
    assert_ne!(by_user, "denied.unknown_subject");
    assert_eq!(
        by_user,
        reason(router.clone(), &shop.app, json!({"user_id": survivor_user})).await
    );
    assert_eq!(
        by_user,
        reason(router.clone(), &shop.app, json!({"id": survivor})).await
    );
    assert_eq!(
        contact(router, &shop.app, user_id).await,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn after_a_merge_and_its_undo_lookup_decisions_contacts_and_the_index_agree() {
    let shop = Shop::new().await;
    for (user, name) in [("u8", "Ulla"), ("u9", "Uwe")] {
        let answer = shop
            .call(
                Role::Server,
                "/v1/identify",
                json!({"userId": user, "anonymousId": format!("{user}-browser"),
                       "traits": {"name": name, "email": format!("{user}@shop.test")},
                       "context": {"location": {"country": "DE"}}}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    }
    let u8_subject = shop.subject_of("user_id=u8").await;
    let u9_subject = shop.subject_of("user_id=u9").await;
    // Only u8 agreed to marketing; the merge carries that to u9.
    let answer = shop
        .call(
            Role::Server,
            "/v1/track",
            json!({"userId": "u8", "event": "Consent Updated",
                   "context": {"consent": consent(true)}}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let answer = shop
        .call(
            Role::Server,
            "/v1/alias",
            json!({"userId": "u9", "previousId": "u8"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let carried = shop.records(u9_subject).await;
    assert_eq!(carried.len(), 1);
    assert_eq!(
        (carried[0].purpose.as_str(), carried[0].action.as_str()),
        (MARKETING, "given")
    );

    // The identity log names the merge, the key and both subjects.
    let log = shop.api(Role::Privacy, "GET", "/v1/merges", None).await;
    assert_eq!(log.status, StatusCode::OK, "{}", log.text);
    let entry = &log.json["entries"][0];
    assert_eq!(entry["action"], "merge");
    assert_eq!(entry["from"], u8_subject);
    assert_eq!(entry["into"], u9_subject);
    assert_eq!(entry["cause"], "alias");
    let server_key = kept_server::http::auth::key_id(shop.app.key(Role::Server)).unwrap();
    assert_eq!(entry["key"], server_key);
    let merge_id = entry["id"].as_i64().unwrap();

    // Everything names the survivor, on this server and on one started afresh.
    agree(&shop, shop.router(), "u8", u9_subject, "u9").await;
    agree(&shop, restarted(&shop).await, "u8", u9_subject, "u9").await;
    let merged = shop.lookup("user_id=u8").await;
    assert_eq!(merged.json["merged_from"], json!([u8_subject]));
    assert_eq!(shop.subject_of("anonymous_id=u8-browser").await, u9_subject);

    // Only the privacy role undoes; a merge is undone once.
    let path = format!("/v1/merges/{merge_id}/undo");
    let answer = shop.api(Role::Decide, "POST", &path, None).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    let answer = shop.api(Role::Privacy, "POST", &path, None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.json["undo"]["undoes"], merge_id);
    // Its user id, anonymous id and email address.
    assert_eq!(answer.json["identifiers"], 3);
    let again = shop.api(Role::Privacy, "POST", &path, None).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);
    let missing = shop
        .api(Role::Privacy, "POST", "/v1/merges/424242/undo", None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // The consent carried to u9 no longer counts for u9; u8 keeps its own.
    let after = shop.records(u9_subject).await;
    assert_eq!(after.len(), 2);
    assert_eq!(after[1].action.as_str(), "withdrawn");
    assert_eq!(after[1].source, "merge_undo");
    assert_eq!(
        shop.records(u8_subject)
            .await
            .last()
            .unwrap()
            .action
            .as_str(),
        "given"
    );

    // The restored subject is itself again, with its identifiers and traits.
    let restored = shop.lookup("user_id=u8").await;
    assert_eq!(restored.json["subject"], u8_subject);
    assert_eq!(restored.json["merged_from"], json!([]));
    assert_eq!(shop.emails_of("user_id=u8").await, ["u8@shop.test"]);
    assert_eq!(shop.emails_of("user_id=u9").await, ["u9@shop.test"]);
    let names = |answer: &Answer| {
        answer.json["traits"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["key"] == "name")
            .map(|t| t["value"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&restored), [json!("Ulla")]);
    assert_eq!(names(&shop.lookup("user_id=u9").await), [json!("Uwe")]);
    assert_eq!(shop.subject_of("anonymous_id=u8-browser").await, u8_subject);
    agree(&shop, shop.router(), "u8", u8_subject, "u8").await;
    agree(&shop, restarted(&shop).await, "u8", u8_subject, "u8").await;
    // New events with the restored user's ids land on it.
    let answer = shop
        .call(
            Role::Server,
            "/v1/track",
            json!({"anonymousId": "u8-browser", "event": "Came back"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);

    let log = shop.api(Role::Privacy, "GET", "/v1/merges", None).await;
    let entries = log.json["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["action"], "undo");
    assert_eq!(
        entries[0]["key"],
        json!(kept_server::http::auth::key_id(shop.app.key(Role::Privacy)).unwrap())
    );
    assert!(entries[1]["undone_at"].is_i64());
    // Bad paging is refused naming the field.
    let bad = shop
        .api(Role::Privacy, "GET", "/v1/merges?limit=0", None)
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.json["error"]["field"], "limit");
    // The index serves the same choices as the store holds, merged subjects included.
    assert!(crate::support::preference_reads_agree(&shop.state).await > 0);
}
