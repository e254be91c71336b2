//! Webhook forwarding against a real receiver on a local port: signatures checked with an
//! independent implementation of the Standard Webhooks verification, retries and back-off,
//! dead letters and their retry, a restart in the middle, and subjects whose decisions deny
//! the use never receiving anything.

use crate::support::{self, NOW, TestApp, get, new_subject, post};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use kept_core::ledger::{CollectionMethod, ConsentAction, ConsentRecord, Evidence, NoticeRef};
use kept_core::manifest::{Manifest, SystemUse, Webhook};
use kept_core::subject::{Provenance, Trait};
use kept_core::{SubjectId, UnixMillis};
use kept_server::connect::{self, ForwardConfig, Forwarder, backoff::Backoff};
use kept_server::consent::ledger::Ledger;
use kept_server::state::AppState;
use kept_store::outbox::{DeliveryKind, DeliveryState, NewDelivery};
use kept_store::{Role, Store};
use sha2::Sha256;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The ad partner's signing secret (24 random bytes, as an operator would set it).
const SECRET: &str = "whsec_c2VjcmV0LWZvci10aGUtYWQtcGFydG5lciE=";
const ADS: &str = "marketing.advertising.third_party.targeted";

// --- the receiver ------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: String,
}

/// A system's webhook endpoint on a loopback port, as `propagate` uses it too.
#[derive(Clone)]
pub struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    /// The status it answers with.
    status: Arc<AtomicU16>,
    /// A `Retry-After` it sends along, if any.
    retry_after: Arc<Mutex<Option<&'static str>>>,
}

impl Receiver {
    /// Listens on a free loopback port; returns the URL to post to.
    pub async fn start() -> (Receiver, String) {
        let receiver = Receiver {
            got: Arc::new(Mutex::new(Vec::new())),
            status: Arc::new(AtomicU16::new(200)),
            retry_after: Arc::new(Mutex::new(None)),
        };
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, url)
    }

    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    pub fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

async fn receive(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, HeaderMap) {
    r.got.lock().unwrap().push(Received { headers, body });
    let mut answer = HeaderMap::new();
    if let Some(wait) = *r.retry_after.lock().unwrap() {
        answer.insert("retry-after", wait.parse().unwrap());
    }
    (
        StatusCode::from_u16(r.status.load(Ordering::SeqCst)).unwrap(),
        answer,
    )
}

// --- Standard Webhooks verification, written from the specification ----------------------

/// Verifies one delivery as a receiver would: the secret's base64 after `whsec_`, HMAC-SHA256
/// over `id.timestamp.body`, any one of the space-separated `v1,` signatures matching, and the
/// timestamp within five minutes of `now`. Returns the message id.
pub fn verify(secret: &str, received: &Received, now: UnixMillis) -> Result<String, String> {
    let header = |name: &str| {
        received
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| format!("no `{name}` header"))
    };
    let id = header("webhook-id")?;
    let timestamp = header("webhook-timestamp")?;
    let signatures = header("webhook-signature")?;
    let seconds: i64 = timestamp.parse().map_err(|_| "timestamp is not a number")?;
    if (seconds - now / 1000).abs() > 5 * 60 {
        return Err(format!("timestamp {seconds} is too far from now"));
    }
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|e| e.to_string())?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{}", received.body).as_bytes());
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    let matched = signatures
        .split(' ')
        .filter_map(|s| s.split_once(','))
        .any(|(version, sig)| version == "v1" && sig == expected);
    if matched {
        Ok(id)
    } else {
        Err(format!("no signature in `{signatures}` matches"))
    }
}

// --- the scene -----------------------------------------------------------------------------

/// The demo manifest with the ad partner posting to `url`, reading browsing history only.
fn manifest_posting_to(url: &str) -> Manifest {
    let mut manifest = support::demo_manifest();
    let ads = manifest.systems.get_mut("ad_partner").unwrap();
    ads.webhook = Some(Webhook {
        url: url.to_owned(),
        secret_env: Some("KEPT_AD_PARTNER_SECRET".into()),
        ..Webhook::default()
    });
    ads.uses = vec![SystemUse {
        purpose: ADS.into(),
        categories: vec!["user.behavior.browsing_history".into()],
        channels: vec![],
    }];
    manifest
}

fn forwarder(config: ForwardConfig) -> Forwarder {
    Forwarder::new(config)
        .with_secrets(Arc::new(|var: &str| {
            (var == "KEPT_AD_PARTNER_SECRET").then(|| SECRET.to_owned())
        }))
        .with_jitter_seed(7)
}

fn quick(max_attempts: u32) -> ForwardConfig {
    ForwardConfig {
        max_attempts,
        backoff: Backoff {
            first: Duration::from_secs(5),
            max: Duration::from_secs(60),
        },
        request_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        poll_interval: Duration::from_millis(20),
        ..ForwardConfig::default()
    }
}

/// A state on `store` with `manifest`, the forwarder, a clock the test moves, and the index
/// built from what the store holds.
async fn state_on(
    store: Arc<dyn Store>,
    manifest: Manifest,
    forwarder: Forwarder,
    clock: Arc<std::sync::atomic::AtomicI64>,
) -> AppState {
    let ledger = Arc::new(Ledger::new(store.clone(), support::signing_key()));
    let state = AppState::new(store.clone(), ledger, Arc::new(manifest))
        .with_clock(Arc::new(move || clock.load(Ordering::SeqCst)))
        .with_forwarder(forwarder);
    state
        .index
        .load(store.as_ref(), NOW, &mut |_| {})
        .await
        .unwrap();
    state
}

/// Browsing history collected in the web shop, under the personalisation notice (which
/// promises targeted ads).
fn browsing(subject: SubjectId) -> Trait {
    Trait {
        subject,
        key: "page_views".into(),
        value: serde_json::json!(12),
        category: "user.behavior.browsing_history".into(),
        provenance: Provenance {
            collection_point: "web_shop".into(),
            notice_id: "personalization".into(),
            notice_version: 1,
            collected_at: NOW - 500,
            source: "collection".into(),
        },
    }
}

fn consent(
    subject: SubjectId,
    action: ConsentAction,
    method: CollectionMethod,
    at: i64,
) -> ConsentRecord {
    ConsentRecord {
        subject,
        purpose: ADS.into(),
        channel: None,
        topic: None,
        action,
        notice: Some(NoticeRef {
            id: "personalization".into(),
            version: 1,
            hash: "ab".repeat(32),
        }),
        regime: "gdpr".into(),
        source: "banner".into(),
        method,
        evidence: Evidence::default(),
        at,
    }
}

fn event(id: &str, user: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "track",
        "event": "Product Viewed",
        "messageId": id,
        "userId": user,
        "properties": {"sku": "LG-1"},
    })
}

/// Subjects: 0 in Germany who consented to targeted ads, 1 in Germany who did not, 2 in
/// California (ads are an opt-out there) who has not opted out, 3 in California whose browser
/// sent GPC, 4 in Germany who consented but whose browsing history was never collected.
struct Scene {
    app: TestApp,
    state: AppState,
    clock: Arc<std::sync::atomic::AtomicI64>,
    people: Vec<SubjectId>,
}

async fn scene(url: &str, config: ForwardConfig) -> Scene {
    let app = TestApp::new().await;
    let people = app
        .store
        .insert_subjects(vec![
            new_subject("de-yes", Some("DE"), None),
            new_subject("de-no", Some("DE"), None),
            new_subject("ca-yes", Some("US"), Some("CA")),
            new_subject("ca-gpc", Some("US"), Some("CA")),
            new_subject("de-unpromised", Some("DE"), None),
        ])
        .await
        .unwrap();
    app.store
        .upsert_traits(people[..4].iter().map(|s| browsing(*s)).collect())
        .await
        .unwrap();
    app.store
        .append_consents(vec![
            consent(
                people[0],
                ConsentAction::Given,
                CollectionMethod::Banner,
                NOW - 400,
            ),
            consent(
                people[3],
                ConsentAction::OptedOut,
                CollectionMethod::Gpc,
                NOW - 400,
            ),
            consent(
                people[4],
                ConsentAction::Given,
                CollectionMethod::Banner,
                NOW - 400,
            ),
        ])
        .await
        .unwrap();
    let clock = Arc::new(std::sync::atomic::AtomicI64::new(NOW));
    let state = state_on(
        app.store.clone(),
        manifest_posting_to(url),
        forwarder(config),
        clock.clone(),
    )
    .await;
    Scene {
        app,
        state,
        clock,
        people,
    }
}

// --- the tests -----------------------------------------------------------------------------

#[tokio::test]
async fn only_allowed_subjects_get_signed_deliveries() {
    let (receiver, url) = Receiver::start().await;
    let s = scene(&url, quick(5)).await;
    let mut reports = Vec::new();
    for (i, person) in s.people.iter().enumerate() {
        let report = s
            .state
            .forwarding()
            .enqueue_for_event(
                *person,
                &format!("evt-{i}"),
                &event(&format!("evt-{i}"), &format!("user-{i}")),
            )
            .await
            .unwrap();
        reports.push(report);
    }
    let reason = |i: usize| {
        reports[i]
            .withheld
            .iter()
            .find(|w| w.system == "ad_partner")
            .map(|w| w.reason.as_str())
    };
    assert_eq!(reports[0].queued, ["ad_partner"]);
    assert_eq!(reports[2].queued, ["ad_partner"]);
    assert_eq!(reason(1), Some("denied.no_consent"));
    assert_eq!(reason(3), Some("denied.gpc"));
    assert_eq!(reason(4), Some("denied.not_promised"));
    // A system without a webhook is never a destination, whatever the decision.
    assert!(reports.iter().all(|r| r.queued.len() <= 1));
    // An unknown subject: no decision allows anything.
    let unknown = s
        .state
        .forwarding()
        .enqueue_for_event(SubjectId(9_999), "evt-x", &event("evt-x", "x"))
        .await
        .unwrap();
    assert_eq!(unknown.withheld[0].reason, "denied.unknown_subject");

    let round = s.state.forwarding().deliver_due(NOW).await.unwrap();
    assert_eq!((round.claimed, round.delivered), (2, 2));
    let got = receiver.got();
    assert_eq!(got.len(), 2);
    let mut users = Vec::new();
    for r in &got {
        let id = verify(SECRET, r, NOW).unwrap();
        assert!(id.starts_with("msg_"), "{id}");
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.headers["webhook-timestamp"], (NOW / 1000).to_string());
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["type"], "event.track");
        assert_eq!(body["data"]["system"], "ad_partner");
        assert_eq!(body["data"]["purposes"], serde_json::json!([ADS]));
        users.push(body["data"]["event"]["userId"].as_str().unwrap().to_owned());
        // A tampered body or another secret does not verify.
        let tampered = Received {
            headers: r.headers.clone(),
            body: r.body.replace("LG-1", "LG-2"),
        };
        assert!(verify(SECRET, &tampered, NOW).is_err());
        assert!(verify("whsec_b3RoZXItc2VjcmV0LW9mLTI0LWJ5dGVzIQ==", r, NOW).is_err());
    }
    users.sort();
    assert_eq!(users, ["user-0", "user-2"]);

    // Delivered: the row stays (so a retried event is not sent twice) without its payload.
    let stored = s.app.store.deliveries_for_event("evt-0").await.unwrap();
    assert_eq!(stored[0].state, DeliveryState::Delivered);
    assert_eq!(stored[0].payload, "");
    let to_user_0 = got.iter().find(|r| r.body.contains("user-0")).unwrap();
    assert_eq!(
        stored[0].message_id,
        verify(SECRET, to_user_0, NOW).unwrap()
    );
    // The client retries the same event: nothing new is queued or sent.
    s.state
        .forwarding()
        .enqueue_for_event(s.people[0], "evt-0", &event("evt-0", "user-0"))
        .await
        .unwrap();
    assert_eq!(
        s.state
            .forwarding()
            .deliver_due(NOW + 1)
            .await
            .unwrap()
            .claimed,
        0
    );
    assert_eq!(receiver.got().len(), 2);
}

/// Every delivery is recorded as a use, with the reason of the decision it was sent under,
/// before it is sent; a delivery retried after a failure is still one use, and a subject the
/// decisions deny has none.
#[tokio::test]
async fn a_delivery_is_a_use_recorded_with_its_decision() {
    let (receiver, url) = Receiver::start().await;
    let s = scene(&url, quick(5)).await;
    receiver.answer(500);
    for (i, person) in s.people.iter().enumerate() {
        s.state
            .forwarding()
            .enqueue_for_event(
                *person,
                &format!("evt-{i}"),
                &event(&format!("evt-{i}"), &format!("user-{i}")),
            )
            .await
            .unwrap();
    }
    let round = s.state.forwarding().deliver_due(NOW).await.unwrap();
    assert_eq!((round.claimed, round.retrying), (2, 2));
    receiver.answer(200);
    let round = s
        .state
        .forwarding()
        .deliver_due(NOW + 60_000)
        .await
        .unwrap();
    assert_eq!(round.delivered, 2, "{round:?}");
    assert_eq!(receiver.got().len(), 4);

    let router = kept_server::router(s.state.clone());
    let uses_of = |subject: SubjectId| {
        let router = router.clone();
        let key = s.app.key(Role::Privacy).to_owned();
        async move {
            let answer = support::send(
                router,
                get(&format!("/v1/uses?subject={}", subject.0), Some(&key)),
            )
            .await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
            answer.json["uses"].as_array().unwrap().clone()
        }
    };
    let delivered = receiver.got();
    for (who, reason) in [(0, "allowed.consent"), (2, "allowed.opt_out_regime")] {
        let uses = uses_of(s.people[who]).await;
        assert_eq!(
            uses.len(),
            1,
            "one use however often it was tried: {uses:?}"
        );
        let u = &uses[0];
        assert_eq!(u["kind"], "forward");
        assert_eq!(u["actor"], "ad_partner");
        assert_eq!(u["purpose"], ADS);
        assert_eq!(
            u["categories"],
            serde_json::json!(["user.behavior.browsing_history"])
        );
        assert_eq!(u["reason"], reason, "{u}");
        assert_eq!(u["allowed"], true);
        assert_eq!(
            u["at"], NOW,
            "recorded at the first attempt, before it was sent"
        );
        let sent = delivered
            .iter()
            .find(|r| r.body.contains(&format!("user-{who}")))
            .unwrap();
        assert_eq!(u["reference"], sent.headers["webhook-id"].to_str().unwrap());
        assert!(u["evidence"].is_array(), "{u}");
    }
    for who in [1, 3, 4] {
        assert!(uses_of(s.people[who]).await.is_empty(), "withheld: no use");
    }
}

/// A delivery whose use cannot be recorded is not sent: it waits for its retry like one the
/// destination refused, and goes (recorded) once the record can be written again.
#[tokio::test]
async fn a_delivery_whose_use_cannot_be_recorded_is_not_sent() {
    let (receiver, url) = Receiver::start().await;
    let s = scene(&url, quick(5)).await;
    s.state
        .forwarding()
        .enqueue_for_event(s.people[0], "evt-u", &event("evt-u", "user-0"))
        .await
        .unwrap();
    s.app.refuse_uses().await;
    let round = s.state.forwarding().deliver_due(NOW).await.unwrap();
    assert_eq!((round.claimed, round.retrying), (1, 1), "{round:?}");
    assert!(receiver.got().is_empty(), "nothing left Kept");
    let d = &s.app.store.deliveries_for_event("evt-u").await.unwrap()[0];
    assert_eq!(d.state, DeliveryState::Pending);
    assert!(
        d.last_error
            .as_deref()
            .unwrap()
            .starts_with("cannot record the use"),
        "{:?}",
        d.last_error
    );

    s.app.allow_uses().await;
    let round = s
        .state
        .forwarding()
        .deliver_due(NOW + 60_000)
        .await
        .unwrap();
    assert_eq!(round.delivered, 1, "{round:?}");
    assert_eq!(receiver.got().len(), 1);
    let answer = support::send(
        kept_server::router(s.state.clone()),
        get(
            &format!("/v1/uses?subject={}", s.people[0].0),
            Some(s.app.key(Role::Privacy)),
        ),
    )
    .await;
    assert_eq!(
        answer.json["uses"].as_array().unwrap().len(),
        1,
        "{}",
        answer.text
    );
    assert_eq!(answer.json["uses"][0]["at"], NOW + 60_000);
}

#[tokio::test]
async fn failures_back_off_then_become_dead_letters_that_can_be_retried() {
    let (receiver, url) = Receiver::start().await;
    let s = scene(&url, quick(3)).await;
    receiver.answer(500);
    s.state
        .forwarding()
        .enqueue_for_event(s.people[0], "evt-1", &event("evt-1", "user-0"))
        .await
        .unwrap();

    let round = s.state.forwarding().deliver_due(NOW).await.unwrap();
    assert_eq!((round.claimed, round.retrying), (1, 1));
    let d = &s.app.store.deliveries_for_event("evt-1").await.unwrap()[0];
    assert_eq!(
        (d.state, d.attempts, d.last_status),
        (DeliveryState::Pending, 1, Some(500))
    );
    // Five seconds, with jitter between half and all of it.
    assert!(
        (NOW + 2_500..=NOW + 5_000).contains(&d.next_attempt_at),
        "{}",
        d.next_attempt_at
    );
    // Not due yet: nothing is sent.
    assert_eq!(
        s.state
            .forwarding()
            .deliver_due(NOW + 2_000)
            .await
            .unwrap()
            .claimed,
        0
    );
    assert_eq!(receiver.got().len(), 1);

    let second = s
        .state
        .forwarding()
        .deliver_due(NOW + 60_000)
        .await
        .unwrap();
    assert_eq!(second.retrying, 1);
    let d = &s.app.store.deliveries_for_event("evt-1").await.unwrap()[0];
    assert!(
        (NOW + 60_000 + 5_000..=NOW + 60_000 + 10_000).contains(&d.next_attempt_at),
        "the second delay doubles: {}",
        d.next_attempt_at - NOW - 60_000
    );
    let third = s
        .state
        .forwarding()
        .deliver_due(NOW + 120_000)
        .await
        .unwrap();
    assert_eq!(third.dead, 1, "the third failure was the last allowed");
    assert_eq!(
        s.state
            .forwarding()
            .deliver_due(NOW + 10_000_000)
            .await
            .unwrap()
            .claimed,
        0
    );
    let got = receiver.got();
    assert_eq!(got.len(), 3);
    // Every attempt carries the same message id, each signed afresh.
    let ids: Vec<String> = got
        .iter()
        .zip([NOW, NOW + 60_000, NOW + 120_000])
        .map(|(r, at)| verify(SECRET, r, at).unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");

    // The dead letter, as an admin sees it; no other role does.
    let listed = s
        .app
        .send(get(
            "/v1/webhooks/dead-letters",
            Some(s.app.key(Role::Admin)),
        ))
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    let letters = listed.json["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["system"], "ad_partner");
    assert_eq!(letters[0]["event_id"], "evt-1");
    assert_eq!(letters[0]["attempts"], 3);
    assert_eq!(letters[0]["last_status"], 500);
    assert_eq!(letters[0]["payload"]["data"]["event"]["messageId"], "evt-1");
    assert_eq!(listed.json["next_after"], serde_json::Value::Null);
    for role in [Role::Server, Role::Decide, Role::Privacy] {
        let denied = s
            .app
            .send(get("/v1/webhooks/dead-letters", Some(s.app.key(role))))
            .await;
        assert_eq!(denied.status, StatusCode::FORBIDDEN);
    }
    let id = letters[0]["id"].as_u64().unwrap();
    let missing = s
        .app
        .send(post(
            &format!("/v1/webhooks/dead-letters/{}/retry", id + 100),
            Some(s.app.key(Role::Admin)),
            "",
        ))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.text);

    // The destination is back; an admin retries the dead letter.
    receiver.answer(204);
    let retried = s
        .app
        .send(post(
            &format!("/v1/webhooks/dead-letters/{id}/retry"),
            Some(s.app.key(Role::Admin)),
            "",
        ))
        .await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.text);
    assert_eq!(retried.json["state"], "pending");
    assert_eq!(retried.json["attempts"], 0);
    // The test app's router has its own state with the fixed clock at NOW.
    let delivered = s
        .state
        .forwarding()
        .deliver_due(NOW + 130_000)
        .await
        .unwrap();
    assert_eq!(delivered.delivered, 1);
    assert_eq!(receiver.got().len(), 4);
    let again = s
        .app
        .send(get(
            "/v1/webhooks/dead-letters",
            Some(s.app.key(Role::Admin)),
        ))
        .await;
    assert_eq!(again.json["dead_letters"], serde_json::json!([]));
}

#[tokio::test]
async fn a_destination_that_asks_to_wait_is_given_the_time() {
    let (receiver, url) = Receiver::start().await;
    let s = scene(&url, quick(5)).await;
    receiver.answer(503);
    *receiver.retry_after.lock().unwrap() = Some("30");
    s.state
        .forwarding()
        .enqueue_for_event(s.people[2], "evt-9", &event("evt-9", "user-2"))
        .await
        .unwrap();
    s.state.forwarding().deliver_due(NOW).await.unwrap();
    let d = &s.app.store.deliveries_for_event("evt-9").await.unwrap()[0];
    assert_eq!(d.last_status, Some(503));
    assert_eq!(
        d.last_error.as_deref(),
        Some("the destination answered 503 Service Unavailable")
    );
    // Thirty seconds rather than the five of the first back-off.
    assert_eq!(d.next_attempt_at, NOW + 30_000);
}

#[tokio::test]
async fn a_consent_withdrawn_before_delivery_suppresses_it() {
    let (receiver, url) = Receiver::start().await;
    let s = scene(&url, quick(5)).await;
    let queued = s
        .state
        .forwarding()
        .enqueue_for_event(s.people[0], "evt-2", &event("evt-2", "user-0"))
        .await
        .unwrap();
    assert_eq!(queued.queued, ["ad_partner"]);
    // The person withdraws before the worker gets to it.
    let entries = s
        .app
        .store
        .append_consents(vec![consent(
            s.people[0],
            ConsentAction::Withdrawn,
            CollectionMethod::Banner,
            NOW + 10,
        )])
        .await
        .unwrap();
    s.state.index.consents_appended(&entries).await.unwrap();
    s.clock.store(NOW + 20, Ordering::SeqCst);
    let round = s.state.forwarding().deliver_due(NOW + 20).await.unwrap();
    assert_eq!(
        (round.claimed, round.suppressed, round.delivered),
        (1, 1, 0)
    );
    assert!(receiver.got().is_empty());
    let d = &s.app.store.deliveries_for_event("evt-2").await.unwrap()[0];
    assert_eq!(d.state, DeliveryState::Suppressed);
    assert_eq!(d.last_error.as_deref(), Some("denied.withdrawn"));
    assert_eq!(
        d.payload, "",
        "a suppressed delivery keeps no personal data"
    );
}

/// An obligation (here an erasure the ad partner must carry out) is owed because the decision
/// denies: the worker sends it to a subject every event of whom it suppresses, and records no
/// use of the subject's data for it.
#[tokio::test]
async fn an_obligation_is_sent_where_the_decision_denies_and_an_event_is_not() {
    let (receiver, url) = Receiver::start().await;
    let s = scene(&url, quick(5)).await;
    let denied = s.people[1];
    let queued = |kind: DeliveryKind, id: &str| NewDelivery {
        kind,
        message_id: connect::message_id(id, "ad_partner"),
        event_id: id.to_owned(),
        system: "ad_partner".into(),
        subject: denied,
        payload: format!(
            r#"{{"type":"{}","data":{{"subject":{}}}}}"#,
            kind.as_str(),
            denied.0
        ),
        created_at: NOW,
    };
    s.app
        .store
        .enqueue_deliveries(vec![
            queued(DeliveryKind::Event, "evt-denied"),
            queued(DeliveryKind::Obligation, "erasure-1"),
        ])
        .await
        .unwrap();
    let round = s.state.forwarding().deliver_due(NOW).await.unwrap();
    assert_eq!(
        (round.claimed, round.delivered, round.suppressed),
        (2, 1, 1)
    );
    let got = receiver.got();
    assert_eq!(got.len(), 1);
    assert!(got[0].body.contains("obligation"), "{}", got[0].body);
    verify(SECRET, &got[0], NOW).unwrap();
    let event = &s
        .app
        .store
        .deliveries_for_event("evt-denied")
        .await
        .unwrap()[0];
    assert_eq!(event.state, DeliveryState::Suppressed);
    let owed = &s.app.store.deliveries_for_event("erasure-1").await.unwrap()[0];
    assert_eq!(
        (owed.kind, owed.state),
        (DeliveryKind::Obligation, DeliveryState::Delivered)
    );
    let uses = s
        .app
        .store
        .uses_of(&kept_store::UseQuery {
            subject: denied,
            before: None,
            limit: 100,
        })
        .await
        .unwrap();
    assert!(uses.is_empty(), "{uses:?}");
}

#[tokio::test]
async fn an_unset_secret_never_sends_unsigned() {
    let (receiver, url) = Receiver::start().await;
    let mut s = scene(&url, quick(2)).await;
    s.state = s
        .state
        .clone()
        .with_forwarder(Forwarder::new(quick(2)).with_secrets(Arc::new(|_: &str| None)));
    s.state
        .forwarding()
        .enqueue_for_event(s.people[0], "evt-3", &event("evt-3", "user-0"))
        .await
        .unwrap();
    s.state.forwarding().deliver_due(NOW).await.unwrap();
    s.state
        .forwarding()
        .deliver_due(NOW + 100_000)
        .await
        .unwrap();
    assert!(receiver.got().is_empty());
    let d = &s.app.store.deliveries_for_event("evt-3").await.unwrap()[0];
    assert_eq!(d.state, DeliveryState::Dead);
    assert_eq!(
        d.last_error.as_deref(),
        Some(
            "the environment variable `KEPT_AD_PARTNER_SECRET` holding the webhook secret is not set"
        )
    );
    let warnings = connect::webhook_warnings(&s.state.manifest, &s.state.forward);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("ad_partner") && !warnings[0].contains("whsec_"));
}

/// Kept stops while the destination is down and starts again on the same database: the
/// delivery that was waiting for its retry is made by the new process's worker, on its own.
#[tokio::test]
async fn pending_deliveries_resume_after_a_restart() {
    if std::env::var("KEPT_TEST_BACKEND").is_ok_and(|b| b == "postgres") {
        // The restart reopens the same file; the PostgreSQL store is covered by the outbox
        // conformance cases (claims, leases and retries survive any number of processes).
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kept.db");
    let db = db.to_str().unwrap();
    // A port nothing listens on: bound, then closed.
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hook", l.local_addr().unwrap())
    };
    let clock = Arc::new(std::sync::atomic::AtomicI64::new(NOW));
    let person = {
        let store = kept_server::store::open(db).await.unwrap();
        let ids = store
            .insert_subjects(vec![new_subject("ca", Some("US"), Some("CA"))])
            .await
            .unwrap();
        store.upsert_traits(vec![browsing(ids[0])]).await.unwrap();
        let state = state_on(
            store.clone(),
            manifest_posting_to(&down),
            forwarder(quick(5)),
            clock.clone(),
        )
        .await;
        state
            .forwarding()
            .enqueue_for_event(ids[0], "evt-r", &event("evt-r", "ca"))
            .await
            .unwrap();
        let round = state.forwarding().deliver_due(NOW).await.unwrap();
        assert_eq!(round.retrying, 1, "{round:?}");
        let d = &store.deliveries_for_event("evt-r").await.unwrap()[0];
        assert!(
            d.last_error
                .as_deref()
                .unwrap()
                .starts_with("cannot connect to the destination"),
            "{:?}",
            d.last_error
        );
        assert!(
            !d.last_error.as_deref().unwrap().contains("127.0.0.1"),
            "no URL in errors"
        );
        store.close().await.unwrap();
        ids[0]
    };

    // A new process, the destination up, the retry due.
    let (receiver, url) = Receiver::start().await;
    let store = kept_server::store::open(db).await.unwrap();
    clock.store(NOW + 60_000, Ordering::SeqCst);
    let state = state_on(
        store.clone(),
        manifest_posting_to(&url),
        forwarder(quick(5)),
        clock.clone(),
    )
    .await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = connect::spawn_worker(state.forwarding(), stopped);
    let mut waited = 0;
    while receiver.got().is_empty() && waited < 500 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
    }
    let got = receiver.got();
    assert_eq!(got.len(), 1, "the worker delivered it on its first rounds");
    verify(SECRET, &got[0], NOW + 60_000).unwrap();
    assert!(got[0].body.contains("evt-r"));

    // A new event wakes the worker at once.
    state
        .forwarding()
        .enqueue_for_event(person, "evt-s", &event("evt-s", "ca"))
        .await
        .unwrap();
    let mut waited = 0;
    while receiver.got().len() < 2 && waited < 500 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
    }
    assert_eq!(receiver.got().len(), 2);
    stop.send(true).unwrap();
    worker.await.unwrap();
    let counts = store.outbox_counts().await.unwrap();
    assert_eq!((counts.delivered, counts.pending, counts.dead), (2, 0, 0));
    store.close().await.unwrap();
}

#[test]
fn max_attempts_is_configurable_and_must_be_positive() {
    use kept_server::config::{Config, Env, Flags, Key};
    let default = Config::load(None, &Env::default(), &Flags::new()).unwrap();
    assert_eq!(
        default.webhook_max_attempts,
        kept_server::config::DEFAULT_WEBHOOK_MAX_ATTEMPTS
    );
    let env = Env::from_pairs([("KEPT_WEBHOOK_MAX_ATTEMPTS", "3")]);
    assert_eq!(
        Config::load(None, &env, &Flags::new())
            .unwrap()
            .webhook_max_attempts,
        3
    );
    let mut flags = Flags::new();
    flags.set(Key::WebhookMaxAttempts, "7");
    assert_eq!(
        Config::load(None, &env, &flags)
            .unwrap()
            .webhook_max_attempts,
        7
    );
    let zero = Env::from_pairs([("KEPT_WEBHOOK_MAX_ATTEMPTS", "0")]);
    let err = Config::load(None, &zero, &Flags::new()).unwrap_err();
    assert_eq!(err.code(), "config.invalid_value");
    assert!(err.to_string().contains("webhook_max_attempts"), "{err}");
}

/// An event that every system with a webhook refuses never reaches the outbox, and is still
/// counted as withheld, by system and reason, like one refused by only some systems.
#[tokio::test]
async fn an_event_every_system_refuses_is_counted_as_withheld() {
    let (_receiver, url) = Receiver::start().await;
    let s = scene(&url, quick(5)).await;
    let withheld = |reason: &str| {
        let want = format!(
            "{}{{system=\"ad_partner\",reason=\"{reason}\"}} ",
            connect::WITHHELD
        );
        let text = s.state.metrics.render();
        text.lines()
            .find_map(|l| l.strip_prefix(want.as_str()))
            .map_or(0, |n| n.trim().parse::<u64>().unwrap())
    };
    let before = withheld("denied.no_consent");
    let track = |user: &str, id: &str| {
        axum::http::Request::post("/v1/track")
            .header(
                axum::http::header::AUTHORIZATION,
                format!(
                    "Basic {}",
                    STANDARD.encode(format!("{}:", s.app.key(Role::Server)))
                ),
            )
            .header(axum::http::header::CONTENT_TYPE, "application/json")
            .body(axum::body::Body::from(
                serde_json::json!({
                    "userId": user,
                    "event": "Product Viewed",
                    "messageId": id,
                    "properties": {"sku": "LG-1"},
                })
                .to_string(),
            ))
            .unwrap()
    };
    // Subject 1 (Germany, no consent to targeted ads): the only webhook system refuses it.
    let answer = support::send(kept_server::router(s.state.clone()), track("de-no", "m-1")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert!(
        s.app
            .store
            .deliveries_for_event("collect/m-1")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(withheld("denied.no_consent"), before + 1);
    // Subject 0 consented: queued, and nothing more is counted as withheld.
    let answer = support::send(kept_server::router(s.state.clone()), track("de-yes", "m-2")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(withheld("denied.no_consent"), before + 1);
    assert_eq!(
        s.state.forwarding().deliver_due(NOW).await.unwrap().claimed,
        1
    );
}

/// A destination receives the message as the client sent it: the top-level fields Kept does not
/// read (a page's `category`, `integrations`, a field of the client's own) travel in the
/// forwarded event as they came, and never override what Kept writes itself.
#[tokio::test]
async fn forwarded_events_carry_the_fields_kept_does_not_read_as_sent() {
    let (receiver, url) = Receiver::start().await;
    let s = scene(&url, quick(5)).await;
    let page = serde_json::json!({
        "userId": "de-yes",
        "name": "Linen shirt",
        "category": "Shirts",
        "messageId": "p-1",
        "properties": {"sku": "LG-1"},
        "integrations": {"All": false, "Mixpanel": true},
        "channel": "server",
        "experiment": {"arm": "b", "weights": [0.5, 0.5]},
        "regime": "not the client's to say",
    });
    let request = axum::http::Request::post("/v1/page")
        .header(
            axum::http::header::AUTHORIZATION,
            format!(
                "Basic {}",
                STANDARD.encode(format!("{}:", s.app.key(Role::Server)))
            ),
        )
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from(page.to_string()))
        .unwrap();
    let answer = support::send(kept_server::router(s.state.clone()), request).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let round = s.state.forwarding().deliver_due(NOW).await.unwrap();
    assert_eq!(round.delivered, 1, "{round:?}");
    let got = receiver.got();
    let body: serde_json::Value = serde_json::from_str(&got[0].body).unwrap();
    let event = &body["data"]["event"];
    assert_eq!(event["type"], "page");
    assert_eq!(event["name"], "Linen shirt");
    assert_eq!(event["category"], "Shirts");
    assert_eq!(event["integrations"], page["integrations"]);
    assert_eq!(event["channel"], "server");
    assert_eq!(event["experiment"], page["experiment"]);
    // Kept's own field is Kept's: the regime the decision was made under.
    assert_eq!(event["regime"], "gdpr");
    assert!(event.get("writeKey").is_none());
}
