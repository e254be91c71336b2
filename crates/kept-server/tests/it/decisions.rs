//! Decisions over HTTP: the seed scenario, batches and their limits, frequency caps after a
//! recorded send, the decision log, and purpose-limited profiles.

use crate::support::{Answer, NOW, TestApp, get, post, request};
use axum::http::StatusCode;
use kept_core::SubjectId;
use kept_core::index::Change;
use kept_core::subject::{ChannelPreference, Frequency, Period, Provenance, Trait};
use kept_store::{NewSubject, Role};
use serde_json::{Value, json};

const MARKETING: &str = "marketing.communications";
const DAY: i64 = 24 * 60 * 60 * 1000;

/// Adds a subject to the store and then the index, as a write path does.
pub async fn add_subject(
    app: &TestApp,
    user_id: &str,
    country: Option<&str>,
    region: Option<&str>,
) -> SubjectId {
    let ids = app
        .store
        .insert_subjects(vec![NewSubject {
            user_id: Some(user_id.to_owned()),
            country: country.map(str::to_owned),
            region: region.map(str::to_owned),
            time_zone: Some("America/Chicago".to_owned()),
            created_at: NOW - 100 * DAY,
        }])
        .await
        .unwrap();
    let subject = app.store.subject(ids[0]).await.unwrap().unwrap();
    app.state
        .index
        .apply(vec![Change::Subject(subject)])
        .await
        .unwrap();
    ids[0]
}

/// Stores a trait collected at `point` (under its notice, as the manifest says) and applies it.
pub async fn add_trait(app: &TestApp, subject: SubjectId, key: &str, category: &str, point: &str) {
    let manifest = &app.state.manifest;
    let notice = manifest.collection_points[point].notice.clone();
    let version = manifest.notices[&notice].version;
    let t = Trait {
        subject,
        key: key.to_owned(),
        value: json!(format!("{key} of {}", subject.0)),
        category: category.to_owned(),
        provenance: Provenance {
            collection_point: point.to_owned(),
            notice_id: notice,
            notice_version: version,
            collected_at: NOW - 10 * DAY,
            source: "test".to_owned(),
        },
    };
    app.store.upsert_traits(vec![t.clone()]).await.unwrap();
    app.state.index.apply(vec![Change::Trait(t)]).await.unwrap();
}

async fn decide(app: &TestApp, body: Value) -> Answer {
    app.send(post(
        "/v1/decisions",
        Some(app.key(Role::Decide)),
        &body.to_string(),
    ))
    .await
}

fn by_user(user_id: &str, purpose: &str, channel: Option<&str>) -> Value {
    let mut r = json!({ "subject": { "user_id": user_id }, "purpose": purpose });
    if let Some(c) = channel {
        r["channel"] = json!(c);
    }
    r
}

fn reasons(answer: &Answer) -> Vec<String> {
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.json["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["reason"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn rewards_phones_are_not_promised_until_one_member_gives_written_consent() {
    let app = TestApp::new().await;
    let texan = add_subject(&app, "member-tx", Some("US"), Some("TX")).await;
    let floridian = add_subject(&app, "member-fl", Some("US"), Some("FL")).await;
    for member in [texan, floridian] {
        add_trait(
            &app,
            member,
            "phone",
            "user.contact.phone_number",
            "rewards_signup",
        )
        .await;
        add_trait(&app, member, "name", "user.name", "rewards_signup").await;
    }
    let batch = json!({ "requests": [
        by_user("member-tx", MARKETING, Some("sms")),
        by_user("member-fl", MARKETING, Some("sms")),
        by_user("member-tx", "essential.service.notifications.sms", Some("sms")),
    ]});

    let answer = decide(&app, batch.clone()).await;
    assert_eq!(
        reasons(&answer),
        [
            "denied.not_promised",
            "denied.not_promised",
            "allowed.contract"
        ]
    );
    let first = &answer.json["decisions"][0];
    assert_eq!(first["allowed"], false);
    assert_eq!(
        first["evidence"],
        json!([{ "kind": "not_promised", "category": "user.contact.phone_number" }])
    );
    assert_eq!(first["obligations"], json!([]));

    // The member ticks the SMS offers box: the number arrives again under that notice...
    add_trait(
        &app,
        texan,
        "phone",
        "user.contact.phone_number",
        "sms_offers_optin",
    )
    .await;
    let answer = decide(&app, batch.clone()).await;
    assert_eq!(
        reasons(&answer)[..2],
        ["denied.no_consent", "denied.not_promised"],
        "promised now, but TCPA asks for written consent"
    );

    // ...and the ledger records the written consent. No restart: the next decision sees it.
    let consent = json!({ "records": [{
        "subject": texan.0,
        "purpose": MARKETING,
        "channel": "sms",
        "action": "given",
        "notice": "sms_offers",
        "method": "written",
        "source": "sms_offers_optin",
        "evidence": { "reference": "form-7" }
    }]});
    let appended = app
        .send(post(
            "/v1/consents",
            Some(app.key(Role::Privacy)),
            &consent.to_string(),
        ))
        .await;
    assert_eq!(appended.status, StatusCode::CREATED, "{}", appended.text);
    let seq = appended.json["entries"][0]["seq"].as_u64().unwrap();

    let answer = decide(&app, batch).await;
    assert_eq!(
        reasons(&answer),
        ["allowed.consent", "denied.not_promised", "allowed.contract"]
    );
    let allowed = &answer.json["decisions"][0];
    assert_eq!(allowed["allowed"], true);
    assert_eq!(
        allowed["evidence"],
        json!([
            {
                "kind": "provenance",
                "category": "user.contact.phone_number",
                "collection_point": "sms_offers_optin",
                "notice": "sms_offers",
                "notice_version": 1
            },
            { "kind": "ledger", "seq": seq }
        ])
    );
    assert!(
        allowed["obligations"]
            .as_array()
            .unwrap()
            .contains(&json!("honour_stop_reply")),
        "{allowed}"
    );
}

#[tokio::test]
async fn batches_answer_in_order_and_single_requests_answer_alone() {
    let app = TestApp::new().await;
    let u2 = app.subjects[1];
    let batch = json!({ "requests": [
        by_user("nobody", MARKETING, Some("email")),
        by_user("u1", "no.such.purpose", None),
        { "subject": { "id": u2.0 }, "purpose": MARKETING, "channel": "fax" },
        { "subject": { "id": 4_000_000 }, "purpose": MARKETING },
        by_user("u2", MARKETING, Some("email")),
        by_user("u1", "no.such.purpose", None),
    ]});
    let answer = decide(&app, batch).await;
    assert_eq!(
        reasons(&answer),
        [
            "denied.unknown_subject",
            "denied.unknown_purpose",
            "denied.unknown_channel",
            "denied.unknown_subject",
            "denied.not_promised",
            "denied.unknown_purpose",
        ]
    );
    assert_eq!(
        answer.json["decisions"][4]["evidence"],
        json!([{ "kind": "not_promised", "category": "user.contact.email" }])
    );

    let one = decide(&app, by_user("u1", "no.such.purpose", Some("email"))).await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.text);
    assert_eq!(one.json["reason"], "denied.unknown_purpose");
    assert_eq!(one.json["allowed"], false);
    assert!(one.json.get("decisions").is_none());
    assert_eq!(
        one.headers["content-type"].to_str().unwrap(),
        "application/json"
    );
}

#[tokio::test]
async fn bad_batches_are_refused_naming_the_field_and_the_item() {
    let app = TestApp::new().await;
    let cases = [
        (
            json!({ "requests": [by_user("u1", MARKETING, None), { "subject": {}, "purpose": MARKETING }] }),
            "requests[1].subject",
        ),
        (
            json!({ "requests": [by_user("u1", MARKETING, None), by_user("u1", MARKETING, None),
                { "subject": { "user_id": "u1" }, "purpose": 7 }] }),
            "requests[2].purpose",
        ),
        (
            json!({ "requests": [{ "subject": { "user_id": "u1", "id": 3 }, "purpose": MARKETING }] }),
            "requests[0].subject",
        ),
        (
            json!({ "requests": [{ "subject": { "user_id": "u1" }, "purpose": MARKETING, "colour": 1 }] }),
            "requests[0].colour",
        ),
        (
            json!({ "requests": [{ "subject": { "user_id": "" }, "purpose": MARKETING }] }),
            "requests[0].subject.user_id",
        ),
        (json!({ "requests": [] }), "requests"),
        (
            json!({ "requests": [by_user("u1", MARKETING, None)], "purpose": MARKETING }),
            "requests",
        ),
        (json!({ "subject": { "user_id": "u1" } }), "purpose"),
        (json!({ "purpose": MARKETING }), "subject"),
    ];
    for (body, field) in cases {
        let answer = decide(&app, body.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            answer.text
        );
        assert_eq!(answer.code(), "request.invalid_field", "{body}");
        assert_eq!(
            answer.json["error"]["field"], field,
            "{body}: {}",
            answer.text
        );
    }

    // One past the limit: refused, naming the limit.
    let requests: Vec<Value> = (0..10_001)
        .map(|_| by_user("u1", MARKETING, None))
        .collect();
    let answer = decide(&app, json!({ "requests": requests })).await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        answer.text
    );
    assert_eq!(answer.json["error"]["field"], "requests");
    assert!(
        answer.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("10000"),
        "{}",
        answer.text
    );
    // At the limit: answered, in full.
    let requests: Vec<Value> = (0..10_000)
        .map(|_| by_user("u1", MARKETING, None))
        .collect();
    let answer = decide(&app, json!({ "requests": requests })).await;
    assert_eq!(reasons(&answer).len(), 10_000);

    let not_json = app
        .send(request(
            "POST",
            "/v1/decisions",
            Some(app.key(Role::Decide)),
            None,
        ))
        .await;
    assert_eq!(not_json.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let broken = app
        .send(post("/v1/decisions", Some(app.key(Role::Decide)), "{"))
        .await;
    assert_eq!(broken.status, StatusCode::BAD_REQUEST);
    assert_eq!(broken.code(), "request.invalid_json");
    let huge = format!("{{\"purpose\": \"{}\"}}", "x".repeat(17 * 1024 * 1024));
    let too_large = app
        .send(post("/v1/decisions", Some(app.key(Role::Decide)), &huge))
        .await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(too_large.text.contains("16777216"), "{}", too_large.text);
}

#[tokio::test]
async fn a_recorded_send_counts_against_the_frequency_the_person_chose() {
    let app = TestApp::new().await;
    // Georgia (no state privacy law): marketing email is allowed until the person opts out,
    // once promised.
    let u2 = add_subject(&app, "u-ga", Some("US"), Some("GA")).await;
    add_trait(&app, u2, "email", "user.contact.email", "newsletter_signup").await;
    let pref = ChannelPreference {
        subject: u2,
        channel: "email".into(),
        frequency: Some(Frequency {
            max: 2,
            period: Period::Week,
        }),
        quiet_hours: None,
        updated_at: NOW - DAY,
    };
    app.store.put_channel_preference(&pref).await.unwrap();
    app.state
        .index
        .apply(vec![Change::Preference(pref)])
        .await
        .unwrap();
    let ask = json!({ "requests": [by_user("u-ga", MARKETING, Some("email"))] });
    let send = |at: i64| {
        json!({ "contacts": [{ "subject": { "user_id": "u-ga" }, "channel": "email",
            "purpose": MARKETING, "at": at }] })
        .to_string()
    };

    assert_eq!(
        reasons(&decide(&app, ask.clone()).await),
        ["allowed.opt_out_regime"]
    );
    let recorded = app
        .send(post(
            "/v1/contacts",
            Some(app.key(Role::Decide)),
            &send(NOW - 2 * DAY),
        ))
        .await;
    assert_eq!(recorded.status, StatusCode::CREATED, "{}", recorded.text);
    assert_eq!(recorded.json["recorded"], 1);
    assert_eq!(
        reasons(&decide(&app, ask.clone()).await),
        ["allowed.opt_out_regime"]
    );

    // The second send of the week reaches the cap: the very next decision is denied.
    let single = json!({ "subject": { "id": u2.0 }, "channel": "email", "purpose": MARKETING });
    let recorded = app
        .send(post(
            "/v1/contacts",
            Some(app.key(Role::Decide)),
            &single.to_string(),
        ))
        .await;
    assert_eq!(recorded.status, StatusCode::CREATED, "{}", recorded.text);
    let answer = decide(&app, ask).await;
    assert_eq!(reasons(&answer), ["denied.frequency_cap"]);
    assert_eq!(
        answer.json["decisions"][0]["evidence"],
        json!([{ "kind": "frequency_cap", "channel": "email", "max": 2, "period": "week", "sent": 2 }])
    );

    // Bad sends are refused, naming the item and the field.
    for (body, field) in [
        (
            json!({ "contacts": [{ "subject": { "user_id": "u2" }, "channel": "email", "purpose": MARKETING },
                { "subject": { "user_id": "ghost" }, "channel": "email", "purpose": MARKETING }] }),
            "contacts[1].subject",
        ),
        (
            json!({ "contacts": [{ "subject": { "user_id": "u2" }, "channel": "pigeon", "purpose": MARKETING }] }),
            "contacts[0].channel",
        ),
        (
            json!({ "subject": { "user_id": "u2" }, "channel": "email", "purpose": MARKETING, "at": NOW + DAY }),
            "at",
        ),
        (
            json!({ "subject": { "user_id": "u2" }, "channel": "email" }),
            "purpose",
        ),
    ] {
        let answer = app
            .send(post(
                "/v1/contacts",
                Some(app.key(Role::Decide)),
                &body.to_string(),
            ))
            .await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            answer.text
        );
        assert_eq!(
            answer.json["error"]["field"], field,
            "{body}: {}",
            answer.text
        );
    }
}

#[tokio::test]
async fn denied_decisions_are_logged_and_the_privacy_role_can_query_them() {
    let app = &TestApp::new().await;
    let u1 = app.subjects[0];
    add_trait(app, u1, "email", "user.contact.email", "newsletter_signup").await;
    app.state.decision_log.set_sample_rate(0.0);
    let batch = json!({ "requests": [
        by_user("u1", MARKETING, Some("sms")),
        by_user("u1", MARKETING, Some("email")),
        by_user("nobody", MARKETING, Some("sms")),
        by_user("u2", "loyalty.rewards", None),
    ]});
    let answer = decide(app, batch.clone()).await;
    let got = reasons(&answer);
    assert_eq!(got[0], "denied.not_promised");
    assert_eq!(got[2], "denied.unknown_subject");
    app.state.decision_log.flush().await;

    let read = |query: &str| {
        let path = format!("/v1/decision-log{query}");
        async move { app.send(get(&path, Some(app.key(Role::Privacy)))).await }
    };
    let all = read("").await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.text);
    let denied = got.iter().filter(|r| r.starts_with("denied.")).count();
    let entries = all.json["entries"].as_array().unwrap();
    assert_eq!(entries.len(), denied, "{}", all.text);
    assert!(entries.iter().all(|e| e["allowed"] == false));

    let mine = read(&format!("?subject={}&reason=denied.not_promised", u1.0)).await;
    let entries = mine.json["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{}", mine.text);
    let e = &entries[0];
    assert_eq!(e["purpose"], MARKETING);
    assert_eq!(e["channel"], "sms");
    assert_eq!(e["subject"], u1.0);
    assert_eq!(e["at"], NOW);
    assert_eq!(e["evidence"], answer.json["decisions"][0]["evidence"]);
    assert!(e["caller"].as_str().unwrap().starts_with("kept_"));
    let unknown = read("?reason=denied.unknown_subject").await;
    let entries = unknown.json["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert!(entries[0].get("subject").is_none());

    // With every allowed decision sampled, the allowed ones are logged too.
    app.state.decision_log.set_sample_rate(1.0);
    decide(app, batch).await;
    app.state.decision_log.flush().await;
    let since = read(&format!("?since={NOW}&limit=1000")).await;
    let entries = since.json["entries"].as_array().unwrap();
    assert_eq!(entries.len(), denied + got.len());
    assert!(entries.iter().any(|e| e["allowed"] == true));
    let page = read("?limit=2").await;
    let before = page.json["next_before"].as_u64().unwrap();
    let next = read(&format!("?limit=2&before={before}")).await;
    assert!(next.json["entries"][0]["id"].as_u64().unwrap() < before);

    for (query, field) in [
        ("?reason=denied.nonsense", "reason"),
        ("?subject=abc", "subject"),
        ("?limit=0", "limit"),
        ("?since=yesterday", "since"),
    ] {
        let bad = read(query).await;
        assert_eq!(
            bad.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}: {}",
            bad.text
        );
        assert_eq!(bad.json["error"]["field"], field, "{query}");
    }
    let unknown_param = read("?colour=red").await;
    assert_eq!(unknown_param.status, StatusCode::UNPROCESSABLE_ENTITY);

    // Kept as long as configured, then deleted by the retention job.
    app.state
        .decision_log
        .set_retention(std::time::Duration::from_secs(30 * 86_400));
    let soon =
        kept_server::collect::retention::run_retention(&app.state.retention(), NOW + 29 * DAY)
            .await
            .unwrap();
    assert_eq!(soon.decisions, 0);
    let later =
        kept_server::collect::retention::run_retention(&app.state.retention(), NOW + 31 * DAY)
            .await
            .unwrap();
    assert_eq!(later.decisions as usize, denied + got.len());
    assert!(
        read("").await.json["entries"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_profile_shows_only_what_the_purpose_may_use() {
    let app = &TestApp::new().await;
    let u2 = add_subject(app, "u-ga", Some("US"), Some("GA")).await;
    add_trait(app, u2, "email", "user.contact.email", "newsletter_signup").await;
    add_trait(
        app,
        u2,
        "phone",
        "user.contact.phone_number",
        "rewards_signup",
    )
    .await;
    add_trait(app, u2, "name", "user.name", "rewards_signup").await;
    let profile = |purpose: &str| {
        let path = format!("/v1/subjects/{}/profile?purpose={purpose}", u2.0);
        async move { app.send(get(&path, Some(app.key(Role::Decide)))).await }
    };
    let keys = |answer: &Answer, list: &str| -> Vec<(String, String)> {
        answer.json[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let second = t.get("reason").unwrap_or(&t["collection_point"]);
                (
                    t["key"].as_str().unwrap().to_owned(),
                    second.as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };

    let marketing = profile(MARKETING).await;
    assert_eq!(marketing.status, StatusCode::OK, "{}", marketing.text);
    assert_eq!(marketing.json["user_id"], "u-ga");
    assert_eq!(
        keys(&marketing, "traits"),
        [("email".to_owned(), "newsletter_signup".to_owned())]
    );
    assert_eq!(
        marketing.json["traits"][0]["value"],
        format!("email of {}", u2.0)
    );
    assert_eq!(
        keys(&marketing, "withheld"),
        [
            ("name".to_owned(), "denied.not_promised".to_owned()),
            ("phone".to_owned(), "denied.not_promised".to_owned()),
        ]
    );

    let rewards = profile("loyalty.rewards").await;
    assert_eq!(
        keys(&rewards, "traits"),
        [
            ("name".to_owned(), "rewards_signup".to_owned()),
            ("phone".to_owned(), "rewards_signup".to_owned()),
        ]
    );
    assert_eq!(
        keys(&rewards, "withheld"),
        [("email".to_owned(), "denied.not_promised".to_owned())]
    );

    let unknown = profile("no.such.purpose").await;
    assert!(keys(&unknown, "traits").is_empty());
    assert!(
        keys(&unknown, "withheld")
            .iter()
            .all(|(_, r)| r == "denied.unknown_purpose")
    );

    let missing = app
        .send(get(
            &format!("/v1/subjects/{}/profile", u2.0),
            Some(app.key(Role::Decide)),
        ))
        .await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(missing.json["error"]["field"], "purpose");
    let nobody = app
        .send(get(
            "/v1/subjects/999999/profile?purpose=loyalty.rewards",
            Some(app.key(Role::Decide)),
        ))
        .await;
    assert_eq!(nobody.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn subjects_collected_by_the_collection_api_are_decided_by_any_identifier() {
    let app = TestApp::new().await;
    let identify = json!({ "userId": "ada", "anonymousId": "phone-1",
        "traits": { "email": "Ada@Example.com" } });
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{}:", app.key(Role::Server)),
    );
    let answer = app
        .send(
            axum::http::Request::post("/v1/identify")
                .header("authorization", format!("Basic {basic}"))
                .header("content-type", "application/json")
                .body(axum::body::Body::from(identify.to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);

    let ask = |subject: Value| json!({ "subject": subject, "purpose": "loyalty.rewards" });
    let batch = json!({ "requests": [
        ask(json!({ "user_id": "ada" })),
        ask(json!({ "email": "  ada@example.COM " })),
        ask(json!({ "anonymous_id": "phone-1" })),
        ask(json!({ "email": "someone.else@example.com" })),
        ask(json!({ "email": "not an email" })),
    ]});
    let got = reasons(&decide(&app, batch).await);
    // Known, whichever identifier names her; the rewards purpose then finds no promised data.
    for (i, r) in got.iter().take(3).enumerate() {
        assert_ne!(r, "denied.unknown_subject", "request {i}: {got:?}");
    }
    assert_eq!(got[0], got[1]);
    assert_eq!(got[0], got[2]);
    assert_eq!(got[3], "denied.unknown_subject");
    assert_eq!(got[4], "denied.unknown_subject");
}

#[tokio::test]
async fn a_promise_ends_with_the_data_retention_deletes() {
    let app = TestApp::new().await;
    let member = add_subject(&app, "member-old-optin", Some("US"), Some("TX")).await;
    add_trait(
        &app,
        member,
        "phone",
        "user.contact.phone_number",
        "rewards_signup",
    )
    .await;
    // The SMS offers opt-in was ticked three years ago; its notice serves only marketing,
    // kept two years.
    let old = Trait {
        subject: member,
        key: "offers_phone".to_owned(),
        value: json!("+15125550100"),
        category: "user.contact.phone_number".to_owned(),
        provenance: Provenance {
            collection_point: "sms_offers_optin".to_owned(),
            notice_id: "sms_offers".to_owned(),
            notice_version: 1,
            collected_at: NOW - 3 * 365 * DAY,
            source: "test".to_owned(),
        },
    };
    app.store.upsert_traits(vec![old.clone()]).await.unwrap();
    app.state
        .index
        .apply(vec![Change::Trait(old)])
        .await
        .unwrap();
    let consent = json!({ "records": [{
        "subject": member.0,
        "purpose": MARKETING,
        "channel": "sms",
        "action": "given",
        "notice": "sms_offers",
        "method": "written",
        "source": "sms_offers_optin",
    }]});
    let appended = app
        .send(post(
            "/v1/consents",
            Some(app.key(Role::Privacy)),
            &consent.to_string(),
        ))
        .await;
    assert_eq!(appended.status, StatusCode::CREATED, "{}", appended.text);
    let batch = json!({ "requests": [
        by_user("member-old-optin", MARKETING, Some("sms")),
        by_user("member-old-optin", "essential.service.notifications.sms", Some("sms")),
    ]});
    assert_eq!(
        reasons(&decide(&app, batch.clone()).await),
        ["allowed.consent", "allowed.contract"]
    );

    let report = kept_server::collect::retention::run_retention(&app.state.retention(), NOW)
        .await
        .unwrap();
    assert_eq!(report.traits, 1);
    let kept: Vec<String> = app
        .store
        .traits(member)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.key)
        .collect();
    assert_eq!(kept, ["phone"]);
    // The consent is still in the ledger, but the number it was given for is gone: the rewards
    // number was never promised for offers. The rewards promise itself still holds.
    let answer = decide(&app, batch).await;
    assert_eq!(
        reasons(&answer),
        ["denied.not_promised", "allowed.contract"]
    );
    assert_eq!(
        answer.json["decisions"][0]["evidence"],
        json!([{ "kind": "not_promised", "category": "user.contact.phone_number" }])
    );
}

/// Stores `subject`'s email preference and applies it, as the preference center does.
async fn prefer(
    app: &TestApp,
    subject: SubjectId,
    frequency: Option<Frequency>,
    quiet_hours: Option<kept_core::subject::QuietHours>,
) {
    let pref = ChannelPreference {
        subject,
        channel: "email".into(),
        frequency,
        quiet_hours,
        updated_at: NOW - DAY,
    };
    app.store.put_channel_preference(&pref).await.unwrap();
    app.state
        .index
        .apply(vec![Change::Preference(pref)])
        .await
        .unwrap();
}

/// A send scheduled for later is decided for its time: quiet hours that deny it now allow it
/// then, and the answer says which time it decided for.
#[tokio::test]
async fn a_scheduled_send_is_decided_for_its_time_of_day() {
    let app = TestApp::new().await;
    // Georgia, in Chicago's time zone: NOW is 15:26 there.
    let u = add_subject(&app, "u-ga", Some("US"), Some("GA")).await;
    add_trait(&app, u, "email", "user.contact.email", "newsletter_signup").await;
    let quiet = kept_core::subject::QuietHours {
        start_minute: 15 * 60,
        end_minute: 17 * 60,
    };
    prefer(&app, u, None, Some(quiet)).await;
    let ask = |at: Option<Value>| {
        let mut r = by_user("u-ga", MARKETING, Some("email"));
        if let Some(at) = at {
            r["at"] = at;
        }
        r
    };

    let now = decide(&app, ask(None)).await;
    assert_eq!(now.status, StatusCode::OK, "{}", now.text);
    assert_eq!(now.json["reason"], "denied.quiet_hours", "{}", now.text);
    assert_eq!(now.json["evidence"][0]["local_time"], "15:26");
    assert!(now.json.get("at").is_none(), "{}", now.text);

    // Three hours later it is 18:26 in Chicago, after the quiet hours.
    let later = NOW + 3 * 60 * 60 * 1000;
    for at in [
        json!(later),
        json!("2026-05-28T23:26:40Z"),
        json!("2026-05-28T18:26:40-05:00"),
    ] {
        let answer = decide(&app, ask(Some(at.clone()))).await;
        assert_eq!(answer.status, StatusCode::OK, "{at}: {}", answer.text);
        assert_eq!(
            answer.json["reason"], "allowed.opt_out_regime",
            "{at}: {}",
            answer.text
        );
        assert_eq!(answer.json["at"], later, "{at}: {}", answer.text);
    }
    // In a batch, each request at its own time, in order.
    let answer = decide(
        &app,
        json!({ "requests": [ask(Some(json!(later))), ask(None), ask(Some(json!(NOW + 60_000)))] }),
    )
    .await;
    assert_eq!(
        reasons(&answer),
        [
            "allowed.opt_out_regime",
            "denied.quiet_hours",
            "denied.quiet_hours"
        ]
    );
    assert_eq!(answer.json["decisions"][0]["at"], later);
    assert!(answer.json["decisions"][1].get("at").is_none());
    assert_eq!(answer.json["decisions"][2]["at"], NOW + 60_000);
    // A time a little behind Kept's clock is taken as now.
    let skewed = decide(&app, ask(Some(json!(NOW - 60_000)))).await;
    assert_eq!(
        skewed.json["reason"], "denied.quiet_hours",
        "{}",
        skewed.text
    );
    assert_eq!(skewed.json["at"], NOW);
}

/// A frequency cap reached today no longer applies once the window has passed by the
/// scheduled time.
#[tokio::test]
async fn a_scheduled_send_counts_the_frequency_window_back_from_its_time() {
    let app = TestApp::new().await;
    let u = add_subject(&app, "u-ga", Some("US"), Some("GA")).await;
    add_trait(&app, u, "email", "user.contact.email", "newsletter_signup").await;
    let weekly = Frequency {
        max: 1,
        period: Period::Week,
    };
    prefer(&app, u, Some(weekly), None).await;
    let sent = json!({ "contacts": [{ "subject": { "user_id": "u-ga" }, "channel": "email",
        "purpose": MARKETING, "at": NOW - 6 * DAY }] });
    let recorded = app
        .send(post(
            "/v1/contacts",
            Some(app.key(Role::Decide)),
            &sent.to_string(),
        ))
        .await;
    assert_eq!(recorded.status, StatusCode::CREATED, "{}", recorded.text);
    let ask = |at: i64| {
        let mut r = by_user("u-ga", MARKETING, Some("email"));
        r["at"] = json!(at);
        json!({ "requests": [r] })
    };
    assert_eq!(
        reasons(&decide(&app, ask(NOW)).await),
        ["denied.frequency_cap"]
    );
    assert_eq!(
        reasons(&decide(&app, ask(NOW + DAY / 2)).await),
        ["denied.frequency_cap"]
    );
    assert_eq!(
        reasons(&decide(&app, ask(NOW + 2 * DAY)).await),
        ["allowed.opt_out_regime"]
    );
}

/// `at` too far ahead, in the past, or not a time is refused with 422 naming it (with the
/// batch index), before anything is decided.
#[tokio::test]
async fn a_decision_time_out_of_range_is_refused_naming_it() {
    let app = TestApp::new().await;
    let ok = by_user("u1", MARKETING, Some("email"));
    let with = |at: Value| {
        let mut r = ok.clone();
        r["at"] = at;
        r
    };
    for (body, field) in [
        (with(json!(NOW + 30 * DAY + 1)), "at"),
        (with(json!(NOW - 10 * 60 * 1000)), "at"),
        (with(json!(i64::MIN)), "at"),
        (with(json!(u64::MAX)), "at"),
        (with(json!("tomorrow")), "at"),
        (with(json!(1.5)), "at"),
        (with(json!(true)), "at"),
        (
            json!({ "requests": [ok.clone(), ok.clone(), ok.clone(), with(json!(NOW + 31 * DAY))] }),
            "requests[3].at",
        ),
        (
            json!({ "requests": [ok.clone(), with(json!("2020-01-01T00:00:00Z"))] }),
            "requests[1].at",
        ),
        (
            json!({ "requests": [ok.clone(), with(json!("soon"))] }),
            "requests[1].at",
        ),
    ] {
        let answer = decide(&app, body.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            answer.text
        );
        assert_eq!(
            answer.json["error"]["field"], field,
            "{body}: {}",
            answer.text
        );
    }
    // The bounds themselves are allowed.
    for at in [NOW + 30 * DAY, NOW - 5 * 60 * 1000] {
        let answer = decide(&app, with(json!(at))).await;
        assert_eq!(answer.status, StatusCode::OK, "{at}: {}", answer.text);
    }
}

/// The demo manifest with a health questionnaire: sensitive data, collected for delivering
/// orders, so a use of it needs opt-in consent in the US states with a privacy law.
fn health_manifest() -> kept_core::manifest::Manifest {
    let mut m = crate::support::demo_manifest();
    let mut health = m.notices["newsletter"].clone();
    health.categories = vec!["user.health_and_medical".into()];
    health.purposes = vec!["essential.service.operations".into()];
    m.notices.insert("health".into(), health);
    m.collection_points.insert(
        "health_form".into(),
        kept_core::manifest::CollectionPoint {
            name: "Health questionnaire".into(),
            notice: "health".into(),
            kind: kept_core::manifest::CollectionKind::Other,
            fields: [("allergies".into(), "user.health_and_medical".into())].into(),
        },
    );
    m
}

fn health_use(user_id: &str) -> Value {
    json!({ "subject": { "user_id": user_id }, "purpose": "essential.service.operations",
        "categories": ["user.health_and_medical"] })
}

/// Consent to the health purpose, given at `at`, in the ledger and the index.
async fn give_health_consent(app: &TestApp, subject: SubjectId, at: i64) {
    let record = kept_core::ledger::ConsentRecord {
        subject,
        purpose: "essential.service.operations".into(),
        channel: None,
        topic: None,
        action: kept_core::ledger::ConsentAction::Given,
        notice: None,
        regime: "us_state".into(),
        source: "test".into(),
        method: kept_core::ledger::CollectionMethod::WebForm,
        evidence: kept_core::ledger::Evidence::default(),
        at,
    };
    let entries = app.state.ledger.append_many(vec![record]).await.unwrap();
    app.state.index.consents_appended(&entries).await.unwrap();
}

#[tokio::test]
async fn colorado_counts_the_sensitive_consent_refresh_from_the_last_interaction() {
    let app = TestApp::new().await.restart_with(health_manifest()).await;
    let co = add_subject(&app, "co1", Some("US"), Some("CO")).await;
    let zz = add_subject(&app, "zz1", Some("ZZ"), None).await;
    let month = 30 * DAY;
    for subject in [co, zz] {
        add_trait(
            &app,
            subject,
            "allergies",
            "user.health_and_medical",
            "health_form",
        )
        .await;
        // Consent given 25 months ago: past the 24 months Rule 7.08 allows without interaction.
        give_health_consent(&app, subject, NOW - 25 * month).await;
    }
    let ask = |body: Value| {
        let app = &app;
        async move { reasons(&decide(app, json!({ "requests": [body] })).await)[0].clone() }
    };
    assert_eq!(ask(health_use("co1")).await, "denied.expired");
    assert_eq!(ask(health_use("zz1")).await, "denied.expired");

    // Each comes back to the shop: an event of their own.
    let server = app.key(Role::Server).to_owned();
    for user in ["co1", "zz1"] {
        let track = json!({ "userId": user, "event": "Product Viewed", "messageId": format!("visit-{user}") });
        let answer = app
            .send(post("/v1/track", Some(&server), &track.to_string()))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    }
    // In Colorado the 24 months start again; where the place is unknown, Kept counts from the
    // consent (the strictest reading).
    assert_eq!(ask(health_use("co1")).await, "allowed.consent");
    assert_eq!(ask(health_use("zz1")).await, "denied.expired");
    let app = app.restart().await;
    let ask = |body: Value| {
        let app = &app;
        async move { reasons(&decide(app, json!({ "requests": [body] })).await)[0].clone() }
    };
    // The interaction was stored with the event: a restarted server counts from it too.
    assert_eq!(ask(health_use("co1")).await, "allowed.consent");
    assert_eq!(ask(health_use("zz1")).await, "denied.expired");
    assert_eq!(
        app.store.last_interaction(co).await.unwrap(),
        Some(NOW),
        "the event's time"
    );
}

#[tokio::test]
async fn a_merged_visitor_s_interaction_counts_for_the_customer_it_was() {
    let app = TestApp::new().await.restart_with(health_manifest()).await;
    let co = add_subject(&app, "co2", Some("US"), Some("CO")).await;
    add_trait(
        &app,
        co,
        "allergies",
        "user.health_and_medical",
        "health_form",
    )
    .await;
    give_health_consent(&app, co, NOW - 25 * 30 * DAY).await;
    async fn ask(app: &TestApp) -> String {
        reasons(&decide(app, json!({ "requests": [health_use("co2")] })).await)[0].clone()
    }
    assert_eq!(ask(&app).await, "denied.expired");
    // The customer browses before signing in: the visit is an interaction of an anonymous
    // subject, then merged into the customer when they sign in.
    let server = app.key(Role::Server).to_owned();
    let visit =
        json!({ "anonymousId": "visitor-co2", "event": "Product Viewed", "messageId": "v-co2" });
    let answer = app
        .send(post("/v1/track", Some(&server), &visit.to_string()))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(ask(&app).await, "denied.expired", "not known as theirs yet");
    let alias = json!({ "userId": "co2", "previousId": "visitor-co2", "messageId": "a-co2" });
    let answer = app
        .send(post("/v1/alias", Some(&server), &alias.to_string()))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(ask(&app).await, "allowed.consent");
    assert_eq!(app.store.last_interaction(co).await.unwrap(), Some(NOW));
    let app = app.restart().await;
    assert_eq!(ask(&app).await, "allowed.consent");
}

#[tokio::test]
async fn the_decision_log_keeps_the_time_decided_for_and_when_it_was_asked() {
    let app = &TestApp::new().await;
    app.state.decision_log.set_sample_rate(0.0);
    let later = NOW + 3 * DAY;
    let batch = json!({ "requests": [
        { "subject": { "user_id": "u2" }, "purpose": MARKETING, "channel": "sms", "at": later },
        { "subject": { "user_id": "u2" }, "purpose": MARKETING, "channel": "sms" },
    ]});
    let answer = decide(app, batch).await;
    assert_eq!(
        reasons(&answer),
        ["denied.not_promised", "denied.not_promised"]
    );
    app.state.decision_log.flush().await;
    let log = app
        .send(get("/v1/decision-log", Some(app.key(Role::Privacy))))
        .await;
    assert_eq!(log.status, StatusCode::OK, "{}", log.text);
    let entries = log.json["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{}", log.text);
    // Newest first: the request without `at` was decided for when it was asked.
    assert_eq!(entries[1]["at"], later);
    assert_eq!(entries[1]["asked_at"], NOW);
    assert_eq!(entries[0]["at"], NOW);
    assert_eq!(entries[0]["asked_at"], NOW);
    // `since` reads the time decided for.
    let since = app
        .send(get(
            &format!("/v1/decision-log?since={}", NOW + DAY),
            Some(app.key(Role::Privacy)),
        ))
        .await;
    let entries = since.json["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{}", since.text);
    assert_eq!(entries[0]["at"], later);
}
