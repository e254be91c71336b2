//! A `/v1/batch` behaves exactly like its messages sent one by one, in order: the same
//! subjects, merges, identifiers, lookups, decisions and events, on this server and after a
//! restart, and the same messages rejected (a bad field, or a public key speaking for a known
//! customer) with the same codes, the others written as if those had not been sent. Checked on
//! a batching SDK's typical sequence and on random ones, with a server key and a public one.
//! And no field of a message is dropped: what Kept does not read is stored with the event and
//! read back.

use crate::support::{TestApp, send};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use kept_store::Role;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;

const OPERATIONS: &str = "essential.service.operations";
const MARKETING: &str = "marketing.communications";

fn collect(app: &TestApp, path: &str, body: &Value) -> Request<Body> {
    collect_as(app, Role::Server, path, body)
}

fn collect_as(app: &TestApp, role: Role, path: &str, body: &Value) -> Request<Body> {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:", app.key(role)));
    Request::post(path)
        .header(header::AUTHORIZATION, format!("Basic {basic}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// Sends `messages` as one `/v1/batch`, or one by one to their own endpoints, with a key of
/// `role`. Returns the messages rejected: index, code and path (as a path into the batch).
async fn deliver(app: &TestApp, role: Role, messages: &[Value], batched: bool) -> Vec<Value> {
    if batched {
        let answer = app
            .send(collect_as(
                app,
                role,
                "/v1/batch",
                &json!({ "batch": messages }),
            ))
            .await;
        if answer.status == StatusCode::OK {
            assert_eq!(
                answer.json["accepted"].as_u64().unwrap()
                    + answer.json["rejected"].as_array().unwrap().len() as u64,
                messages.len() as u64,
                "{}",
                answer.text
            );
            return answer.json["rejected"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| json!([r["index"], r["code"], r["path"]]))
                .collect();
        }
        // No usable message: the first one's error, naming it.
        assert!(answer.status.is_client_error(), "{}", answer.text);
        return vec![json!([
            answer.json["error"]["index"],
            answer.code(),
            answer.json["error"]["field"]
        ])];
    }
    let mut rejected = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let path = format!("/v1/{}", m["type"].as_str().unwrap());
        let answer = app.send(collect_as(app, role, &path, m)).await;
        if answer.status != StatusCode::OK {
            // A message its own call refuses is skipped: the next goes on.
            assert!(answer.status.is_client_error(), "{m}: {}", answer.text);
            let field = answer.json["error"]["field"].as_str().unwrap();
            rejected.push(json!([i, answer.code(), format!("batch[{i}].{field}")]));
        }
    }
    rejected
}

/// Everything a client can see of `names` (`user_id=…`, `anonymous_id=…`), on `router`:
/// each one's lookup (subject, merged subjects, identifiers, traits), its decisions for two purposes,
/// and the events of every subject found.
async fn observe(app: &TestApp, router: Router, names: &[String]) -> Vec<Value> {
    let mut seen = Vec::new();
    let mut subjects = BTreeSet::new();
    for name in names {
        let lookup = send(
            router.clone(),
            crate::support::get(
                &format!("/v1/subjects/lookup?{name}"),
                Some(app.key(Role::Privacy)),
            ),
        )
        .await;
        let found = if lookup.status == StatusCode::OK {
            subjects.insert(lookup.json["subject"].as_u64().unwrap());
            let identifiers: BTreeSet<String> = lookup.json["identifiers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| format!("{}={}", i["kind"], i["value"]))
                .collect();
            let traits: BTreeSet<String> = lookup.json["traits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| format!("{}={}", t["key"], t["value"]))
                .collect();
            json!({
                "subject": lookup.json["subject"],
                "merged_from": lookup.json["merged_from"],
                "identifiers": identifiers,
                "traits": traits,
            })
        } else {
            json!({ "status": lookup.status.as_u16() })
        };
        let (kind, value) = name.split_once('=').unwrap();
        let mut reasons = Vec::new();
        for purpose in [OPERATIONS, MARKETING] {
            let answer = send(
                router.clone(),
                crate::support::post(
                    "/v1/decisions",
                    Some(app.key(Role::Decide)),
                    &json!({"subject": {kind: value}, "purpose": purpose,
                            "categories": ["user.name"]})
                    .to_string(),
                ),
            )
            .await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
            reasons.push(answer.json["reason"].clone());
        }
        seen.push(json!({ "name": name, "lookup": found, "reasons": reasons }));
    }
    for subject in subjects {
        let answer = send(
            router.clone(),
            crate::support::get(
                &format!("/v1/subjects/{subject}/events"),
                Some(app.key(Role::Privacy)),
            ),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        let events: Vec<Value> = answer.json["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| json!([e["type"], e["message_id"]]))
            .collect();
        seen.push(json!({ "subject": subject, "events": events }));
    }
    seen
}

/// The same messages given to two fresh servers, as one batch and one by one: the same are
/// rejected, and what each shows is the same, before and after a restart.
async fn same_either_way(messages: &[Value], names: &[String]) {
    same_either_way_as(Role::Server, messages, names).await;
}

async fn same_either_way_as(role: Role, messages: &[Value], names: &[String]) {
    let batched = TestApp::new().await;
    let single = TestApp::new().await;
    let rejected_in_batch = deliver(&batched, role, messages, true).await;
    let rejected_one_by_one = deliver(&single, role, messages, false).await;
    if rejected_in_batch.len() == 1 && rejected_one_by_one.len() == messages.len() {
        // No usable message: the batch answers with the first one's error.
        assert_eq!(
            rejected_in_batch[0], rejected_one_by_one[0],
            "{messages:#?}"
        );
    } else {
        assert_eq!(rejected_in_batch, rejected_one_by_one, "{messages:#?}");
    }
    let seen = observe(&single, single.router(), names).await;
    assert_eq!(
        observe(&batched, batched.router(), names).await,
        seen,
        "{messages:#?}"
    );
    let batched = batched.restart().await;
    let single = single.restart().await;
    let after = observe(&single, single.router(), names).await;
    assert_eq!(seen, after, "a restart changed what one-by-one shows");
    assert_eq!(
        observe(&batched, batched.router(), names).await,
        after,
        "after a restart: {messages:#?}"
    );
}

#[tokio::test]
async fn an_alias_whose_previous_id_first_appears_in_the_same_batch_is_applied_whole() {
    let messages = [
        json!({"type": "track", "anonymousId": "a", "event": "Viewed", "messageId": "m1"}),
        json!({"type": "identify", "userId": "u", "messageId": "m2",
               "traits": {"name": "Ulla"}}),
        json!({"type": "alias", "userId": "u", "previousId": "a", "messageId": "m3"}),
    ];
    let names = ["anonymous_id=a".to_owned(), "user_id=u".to_owned()];
    same_either_way(&messages, &names).await;

    // And what that is: the anonymous visitor is the user now, everywhere.
    let app = TestApp::new().await;
    assert!(
        deliver(&app, Role::Server, &messages, true)
            .await
            .is_empty()
    );
    let seen = observe(&app, app.router(), &names).await;
    assert_eq!(seen[0]["lookup"], seen[1]["lookup"], "{seen:#?}");
    assert_eq!(seen[0]["reasons"], seen[1]["reasons"], "{seen:#?}");
    assert_ne!(seen[0]["reasons"][0], "denied.unknown_subject", "{seen:#?}");
    assert_eq!(
        seen[0]["lookup"]["merged_from"].as_array().unwrap().len(),
        1
    );
    let app = app.restart().await;
    let seen = observe(&app, app.router(), &names).await;
    assert_eq!(seen[0]["lookup"], seen[1]["lookup"], "{seen:#?}");
    assert_eq!(seen[0]["reasons"], seen[1]["reasons"], "{seen:#?}");
}

#[tokio::test]
async fn traits_merged_in_the_same_batch_follow_the_merge_rule() {
    // The survivor keeps its own trait where both have one and the merged one is no newer.
    let messages = [
        json!({"type": "identify", "userId": "u8", "messageId": "m1",
               "timestamp": "2026-05-28T20:00:00Z", "traits": {"name": "Ulla"}}),
        json!({"type": "identify", "userId": "u7", "messageId": "m2",
               "timestamp": "2026-05-28T20:00:00Z", "traits": {"name": "Uwe", "plan": "pro"}}),
        json!({"type": "alias", "userId": "u8", "previousId": "u7", "messageId": "m3"}),
    ];
    let names = ["user_id=u8".to_owned(), "user_id=u7".to_owned()];
    same_either_way(&messages, &names).await;
    let app = TestApp::new().await;
    assert!(
        deliver(&app, Role::Server, &messages, true)
            .await
            .is_empty()
    );
    let seen = observe(&app, app.router(), &names).await;
    assert_eq!(
        seen[0]["lookup"]["traits"],
        json!(["\"name\"=\"Ulla\"", "\"plan\"=\"pro\""]),
        "{seen:#?}"
    );
}

#[tokio::test]
async fn a_public_keys_refused_message_is_rejected_alone_as_its_own_call_would_be() {
    let names: Vec<String> = ["user_id=u7", "user_id=fresh-1", "anonymous_id=a2"]
        .iter()
        .map(|n| (*n).to_owned())
        .collect();
    let consent = |yes: bool| json!({"consent": {"categoryPreferences": {MARKETING: yes}}});
    // The first message makes u7 a known customer: the second, a browser's without a token,
    // may not change her consent, and is refused for that (not for its user id) either way.
    let refused = [
        json!({"type": "track", "event": "Viewed", "userId": "u7", "anonymousId": "a2",
               "messageId": "m0"}),
        json!({"type": "track", "event": "Viewed", "userId": "u7", "messageId": "m1",
               "context": consent(false)}),
        json!({"type": "track", "event": "Viewed", "anonymousId": "a3", "messageId": "m2"}),
    ];
    same_either_way_as(Role::Public, &refused, &names).await;
    let app = TestApp::new().await;
    assert_eq!(
        deliver(&app, Role::Public, &refused, true).await,
        vec![json!([
            1,
            "collect.identity_token_required",
            "batch[1].context.consent.categoryPreferences"
        ])]
    );
    // A choice the first message already recorded changes nothing when sent again: the
    // second is compared with the consent as the first left it, and refused only for
    // speaking as the known customer.
    let repeated = [
        json!({"type": "track", "event": "Viewed", "userId": "fresh-1", "messageId": "m0",
               "context": consent(true)}),
        json!({"type": "track", "event": "Viewed", "userId": "fresh-1", "messageId": "m1",
               "context": consent(true)}),
    ];
    same_either_way_as(Role::Public, &repeated, &names).await;
    let app = TestApp::new().await;
    assert_eq!(
        deliver(&app, Role::Public, &repeated, true).await,
        vec![json!([
            1,
            "collect.identity_token_required",
            "batch[1].userId"
        ])]
    );
}

/// One random message over a small set of users, anonymous ids and groups.
fn message() -> impl Strategy<Value = Value> {
    let user = prop::sample::select(vec!["u1", "u7", "u8"]);
    let anon = prop::sample::select(vec!["a1", "a2", "a3"]);
    let who = (
        prop::option::of(user.clone()),
        prop::option::of(anon.clone()),
    )
        .prop_filter("a message names someone", |(u, a)| {
            u.is_some() || a.is_some()
        });
    let consent = prop::option::of(any::<bool>());
    prop_oneof![
        3 => (who.clone(), consent).prop_map(|((u, a), c)| {
            let mut m = json!({"type": "track", "event": "Viewed"});
            put(&mut m, u, a);
            if let Some(yes) = c {
                m["context"] = json!({"consent": {"categoryPreferences": {MARKETING: yes}}});
            }
            m
        }),
        3 => (who.clone(), prop::sample::select(vec!["Ulla", "Uwe"])).prop_map(|((u, a), name)| {
            let mut m = json!({"type": "identify", "traits": {"name": name}});
            put(&mut m, u, a);
            m
        }),
        3 => (
            user,
            prop::sample::select(vec!["u1", "u7", "u8", "a1", "a2", "a3"])
        )
            .prop_map(
                |(u, previous)| json!({"type": "alias", "userId": u, "previousId": previous})
            ),
        3 => (who.clone(), prop::sample::select(vec!["g1", "g2"])).prop_map(|((u, a), g)| {
            let mut m = json!({"type": "group", "groupId": g, "traits": {"plan": "pro"}});
            put(&mut m, u, a);
            m
        }),
        // Messages their own call refuses: a consent value that is no answer, an address that
        // is none, a track without its event.
        1 => (who, 0..3usize).prop_map(|((u, a), bad)| {
            let mut m = match bad {
                0 => json!({"type": "track", "event": "Viewed", "context":
                            {"consent": {"categoryPreferences": {MARKETING: "perhaps"}}}}),
                1 => json!({"type": "identify", "traits": {"email": "not-an-address"}}),
                _ => json!({"type": "track"}),
            };
            put(&mut m, u, a);
            m
        }),
    ]
}

fn put(m: &mut Value, user: Option<&str>, anon: Option<&str>) {
    if let Some(u) = user {
        m["userId"] = json!(u);
    }
    if let Some(a) = anon {
        m["anonymousId"] = json!(a);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None,
                                        ..ProptestConfig::default() })]

    #[test]
    fn a_batch_is_its_messages_one_by_one(
        messages in prop::collection::vec(message(), 1..8),
        role in prop::sample::select(vec![Role::Server, Role::Public]),
    ) {
        // Message ids fixed by position, so both servers store the same events.
        let messages: Vec<Value> = messages
            .into_iter()
            .enumerate()
            .map(|(i, mut m)| {
                m["messageId"] = json!(format!("m{i}"));
                m["timestamp"] = json!("2026-05-28T20:00:00Z");
                m
            })
            .collect();
        let names: Vec<String> = ["u1", "u7", "u8"]
            .iter()
            .map(|u| format!("user_id={u}"))
            .chain(["a1", "a2", "a3"].iter().map(|a| format!("anonymous_id={a}")))
            .collect();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(same_either_way_as(role, &messages, &names));
    }
}

#[tokio::test]
async fn the_fields_kept_does_not_read_are_stored_with_the_event() {
    let app = TestApp::new().await;
    let page = json!({"type": "page", "anonymousId": "v1", "messageId": "p1",
                      "name": "Shoes", "category": "Shop", "channel": "web",
                      "version": 2, "integrations": {"All": false},
                      "properties": {"path": "/shoes"}});
    let screen = json!({"type": "screen", "anonymousId": "v1", "messageId": "s1",
                        "name": "Cart", "category": "Checkout", "receivedAt": null});
    let answer = app
        .send(collect(
            &app,
            "/v1/batch",
            &json!({ "batch": [page, screen] }),
        ))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    // A single call, with its write key in the body: the key is read, never stored.
    let key = app.key(Role::Server).to_owned();
    let request = Request::post("/v1/page")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"anonymousId": "v1", "messageId": "p2", "name": "Socks",
                   "category": "Shop", "writeKey": key, "custom": {"a": [1, 2]}})
            .to_string(),
        ))
        .unwrap();
    let answer = app.send(request).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);

    let lookup = app
        .send(crate::support::get(
            "/v1/subjects/lookup?anonymous_id=v1",
            Some(app.key(Role::Privacy)),
        ))
        .await;
    let subject = lookup.json["subject"].as_u64().unwrap();
    let answer = app
        .send(crate::support::get(
            &format!("/v1/subjects/{subject}/events"),
            Some(app.key(Role::Privacy)),
        ))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let events = answer.json["events"].as_array().unwrap();
    let by_id = |id: &str| {
        events
            .iter()
            .find(|e| e["message_id"] == id)
            .unwrap_or_else(|| panic!("no event {id}: {events:#?}"))
    };
    assert_eq!(
        by_id("p1")["extra"],
        json!({"category": "Shop", "channel": "web", "version": 2,
               "integrations": {"All": false}})
    );
    assert_eq!(by_id("p1")["name"], "Shoes");
    assert_eq!(by_id("p1")["properties"], json!({"path": "/shoes"}));
    assert_eq!(
        by_id("s1")["extra"],
        json!({"category": "Checkout", "receivedAt": null})
    );
    assert_eq!(
        by_id("p2")["extra"],
        json!({"category": "Shop", "custom": {"a": [1, 2]}})
    );
    assert!(!answer.text.contains(&key), "the write key was stored");
}
