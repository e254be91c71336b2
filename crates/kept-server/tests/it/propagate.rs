//! A data subject request propagated to the manifest's systems, against real receivers on
//! local ports, on whichever backend the tests run on: each system gets a signed obligation
//! (checked as a receiving system checks it), a 500 is retried, a dead letter marks the task
//! failed, an acknowledgement by callback (or the delivery's 2xx, where the system says so)
//! settles the task, a replay changes nothing, a wrong token is refused, an operator handles a
//! task by hand, and the request completes only once every task is settled. Subscribing
//! systems receive every step.

use crate::forward::{Received, Receiver, verify};
use crate::support::{Answer, NOW, TestApp, get, post};
use axum::http::StatusCode;
use kept_core::manifest::{Acknowledge, Manifest, System, SystemUse, Webhook};
use kept_core::requests::{State, Target, Transition};
use kept_server::connect::{ForwardConfig, Forwarder, backoff::Backoff};
use kept_server::requests::propagate::obligation_key;
use kept_server::requests::tasks::{self, Outcome};
use kept_store::Role;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// The ad partner's and the CRM's signing secrets.
const ADS_SECRET: &str = "whsec_c2VjcmV0LWZvci10aGUtYWQtcGFydG5lciE=";
const CRM_SECRET: &str = "whsec_YW5vdGhlci1zZWNyZXQtZm9yLXRoZS1jcm0h";

/// The demo manifest with the ad partner acknowledging by callback and subscribing to the
/// lifecycle, and a CRM (which reads email addresses) whose 2xx is its acknowledgement.
fn manifest(ads_url: &str, crm_url: &str) -> Manifest {
    let mut manifest = crate::support::demo_manifest();
    let ads = manifest.systems.get_mut("ad_partner").unwrap();
    ads.webhook = Some(Webhook {
        url: ads_url.to_owned(),
        secret_env: Some("KEPT_AD_PARTNER_SECRET".into()),
        acknowledge: Acknowledge::Callback,
        lifecycle: true,
    });
    let owner = ads.owner.clone();
    manifest.systems.insert(
        "crm".into(),
        System {
            name: "CRM".into(),
            owner,
            uses: vec![SystemUse {
                purpose: "marketing.communications".into(),
                categories: vec!["user.contact".into()],
                channels: vec![],
            }],
            webhook: Some(Webhook {
                url: crm_url.to_owned(),
                secret_env: Some("KEPT_CRM_SECRET".into()),
                acknowledge: Acknowledge::OnDelivery,
                lifecycle: false,
            }),
        },
    );
    manifest
}

struct Scene {
    app: TestApp,
    clock: Arc<AtomicI64>,
    ads: Receiver,
    crm: Receiver,
}

impl Scene {
    async fn new(max_attempts: u32) -> Scene {
        let (ads, ads_url) = Receiver::start().await;
        let (crm, crm_url) = Receiver::start().await;
        let mut app = TestApp::new().await;
        let clock = Arc::new(AtomicI64::new(NOW));
        let forwarder = Forwarder::new(ForwardConfig {
            max_attempts,
            backoff: Backoff {
                first: Duration::from_secs(5),
                max: Duration::from_secs(60),
            },
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            ..ForwardConfig::default()
        })
        .with_secrets(Arc::new(|var: &str| match var {
            "KEPT_AD_PARTNER_SECRET" => Some(ADS_SECRET.to_owned()),
            "KEPT_CRM_SECRET" => Some(CRM_SECRET.to_owned()),
            _ => None,
        }))
        .with_jitter_seed(3);
        let moving = clock.clone();
        app.state.manifest = Arc::new(manifest(&ads_url, &crm_url));
        app.state = app
            .state
            .clone()
            .with_forwarder(forwarder)
            .with_clock(Arc::new(move || moving.load(Ordering::SeqCst)));
        Scene {
            app,
            clock,
            ads,
            crm,
        }
    }

    fn now(&self) -> i64 {
        self.clock.load(Ordering::SeqCst)
    }

    /// Moves the clock on and runs one round of the forwarding worker.
    async fn deliver_after(&self, ms: i64) {
        self.clock.fetch_add(ms, Ordering::SeqCst);
        self.app
            .state
            .forwarding()
            .deliver_due(self.now())
            .await
            .unwrap();
    }

    async fn call(&self, path: &str, body: Value) -> Answer {
        self.app
            .send(post(
                path,
                Some(self.app.key(Role::Privacy)),
                &body.to_string(),
            ))
            .await
    }

    /// Files a request of `kind` for `u1` and takes it to `in_progress`.
    async fn working(&self, kind: &str) -> u64 {
        let filed = self
            .call(
                "/v1/requests",
                json!({ "subject": { "user_id": "u1" }, "kind": kind }),
            )
            .await;
        assert_eq!(filed.status, StatusCode::CREATED, "{}", filed.text);
        let id = filed.json["id"].as_u64().unwrap();
        let verified = self
            .call(
                &format!("/v1/requests/{id}/advance"),
                json!({ "verification": { "method": "company_stated", "reference": "case-1" } }),
            )
            .await;
        assert_eq!(verified.status, StatusCode::OK, "{}", verified.text);
        let working = self
            .call(&format!("/v1/requests/{id}/advance"), json!({}))
            .await;
        assert_eq!(working.json["state"], "in_progress", "{}", working.text);
        id
    }

    async fn shown(&self, id: u64) -> Value {
        let shown = self
            .app
            .send(get(
                &format!("/v1/requests/{id}"),
                Some(self.app.key(Role::Privacy)),
            ))
            .await;
        assert_eq!(shown.status, StatusCode::OK, "{}", shown.text);
        shown.json
    }

    async fn ack(&self, id: u64, system: &str, body: Value) -> Answer {
        // No API key: the token is the authority.
        self.app
            .send(post(
                &format!("/v1/requests/{id}/systems/{system}/ack"),
                None,
                &body.to_string(),
            ))
            .await
    }
}

fn task<'a>(request: &'a Value, target: &str) -> &'a Value {
    request["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == target)
        .unwrap_or_else(|| panic!("no task `{target}` in {request}"))
}

fn bodies(received: &[Received]) -> Vec<Value> {
    received
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect()
}

fn obligations(received: &[Received]) -> Vec<(Received, Value)> {
    received
        .iter()
        .zip(bodies(received))
        .filter(|(_, b)| b["type"] == "request.obligation")
        .map(|(r, b)| (r.clone(), b))
        .collect()
}

#[tokio::test]
async fn systems_receive_signed_obligations_and_their_acknowledgements_complete_the_request() {
    let s = Scene::new(5).await;
    s.ads.answer(500);
    let id = s.working("erasure").await;
    let shown = s.shown(id).await;
    let targets: Vec<&str> = shown["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["kept", "system:ad_partner", "system:crm"]);
    assert!(
        shown["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["state"] == "pending")
    );

    // First round: the ad partner answers 500 (retried), the CRM 200 (its acknowledgement).
    s.deliver_after(0).await;
    let shown = s.shown(id).await;
    let ads_task = task(&shown, "system:ad_partner");
    assert_eq!(ads_task["state"], "pending");
    assert!(
        ads_task["detail"]
            .as_str()
            .unwrap()
            .contains("attempt 1 failed, retrying: the destination answered 500"),
        "{ads_task}"
    );
    let crm_task = task(&shown, "system:crm");
    assert_eq!(crm_task["state"], "done", "{crm_task}");
    assert_eq!(crm_task["attempts"], 1);
    assert!(crm_task["detail"].as_str().unwrap().contains("on_delivery"));

    // The obligation as the CRM checks it: signed with its secret, what to do, to whom.
    let crm_got = obligations(&s.crm.got());
    assert_eq!(crm_got.len(), 1, "one obligation, no lifecycle steps");
    assert_eq!(s.crm.got().len(), 1);
    let (received, body) = &crm_got[0];
    verify(CRM_SECRET, received, s.now()).unwrap();
    assert!(verify(ADS_SECRET, received, s.now()).is_err());
    assert_eq!(body["data"]["request"], id);
    assert_eq!(body["data"]["kind"], "erasure");
    assert_eq!(body["data"]["action"], "erase");
    assert_eq!(body["data"]["system"], "crm");
    assert_eq!(body["data"]["subject"]["user_id"], "u1");
    assert_eq!(body["data"]["acknowledge"], "on_delivery");
    assert!(body["data"]["callback"].is_null());
    assert!(body["data"]["due_at"].as_str().unwrap().ends_with('Z'));

    // Completing by hand is refused while Kept's own work and the ad partner are pending.
    let early = s
        .call(
            &format!("/v1/requests/{id}/advance"),
            json!({ "to": "completed" }),
        )
        .await;
    assert_eq!(early.status, StatusCode::CONFLICT, "{}", early.text);
    assert_eq!(early.code(), "request.tasks_pending");
    assert!(early.text.contains("`kept`") && early.text.contains("`system:ad_partner`"));
    assert!(!early.text.contains("`system:crm`"), "{}", early.text);

    // The retry, after the back-off, goes through; the ad partner acknowledges by callback.
    s.ads.answer(200);
    s.deliver_after(61_000).await;
    let ads_got = obligations(&s.ads.got());
    assert_eq!(ads_got.len(), 2, "the first attempt and its retry");
    let (received, body) = &ads_got[1];
    let message = verify(ADS_SECRET, received, s.now()).unwrap();
    assert_eq!(
        verify(ADS_SECRET, &ads_got[0].0, s.now()).unwrap(),
        message,
        "a retry is the same message"
    );
    assert_eq!(body["data"]["acknowledge"], "callback");
    let callback = &body["data"]["callback"];
    assert!(
        callback["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/v1/requests/{id}/systems/ad_partner/ack")),
        "{callback}"
    );
    let token = callback["token"].as_str().unwrap();
    let shown = s.shown(id).await;
    assert!(
        task(&shown, "system:ad_partner")["detail"]
            .as_str()
            .unwrap()
            .contains("waiting for the system's acknowledgement")
    );

    // A wrong token, or the right one on another system or request, is refused.
    let mut wrong = token.to_owned();
    wrong.replace_range(0..1, if token.starts_with('0') { "1" } else { "0" });
    for (request, system, token) in [
        (id, "ad_partner", wrong.as_str()),
        (id, "crm", token),
        (id + 1, "ad_partner", token),
        (id, "ad_partner", "not-a-token"),
    ] {
        let refused = s.ack(request, system, json!({ "token": token })).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
        assert_eq!(refused.code(), "request.ack_token_invalid");
    }
    let blank = s.ack(id, "ad_partner", json!({ "token": " " })).await;
    assert_eq!(blank.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(blank.json["error"]["field"], "token");
    assert_eq!(
        task(&s.shown(id).await, "system:ad_partner")["state"],
        "pending"
    );

    let acked = s
        .ack(
            id,
            "ad_partner",
            json!({ "token": token, "reference": "job-77" }),
        )
        .await;
    assert_eq!(acked.status, StatusCode::OK, "{}", acked.text);
    assert_eq!(acked.json["task"]["state"], "done");
    assert_eq!(acked.json["replayed"], false);
    assert_eq!(
        acked.json["state"], "in_progress",
        "Kept's own task is open"
    );
    assert!(
        acked.json["task"]["detail"]
            .as_str()
            .unwrap()
            .contains("job-77")
    );
    let log_len = s.shown(id).await["log"].as_array().unwrap().len();
    let replay = s
        .ack(
            id,
            "ad_partner",
            json!({ "token": token, "reference": "job-78" }),
        )
        .await;
    assert_eq!(replay.status, StatusCode::OK, "{}", replay.text);
    assert_eq!(replay.json["replayed"], true);
    assert_eq!(replay.json["task"], acked.json["task"], "nothing changed");
    assert_eq!(
        s.shown(id).await["log"].as_array().unwrap().len(),
        log_len,
        "a replay writes nothing to the log"
    );

    // Kept's own worker finishes: the last task settled completes the request, by Kept.
    let settled = tasks::finish(
        &s.app.state.work(),
        id,
        &Target::Kept,
        Outcome::Done {
            detail: Some(r#"{"rows":12}"#.into()),
        },
        s.now(),
    )
    .await
    .unwrap();
    assert_eq!(settled.request.state, State::Completed);
    let shown = s.shown(id).await;
    assert_eq!(shown["state"], "completed");
    let log = shown["log"].as_array().unwrap();
    let last = log.last().unwrap();
    assert_eq!(
        (
            last["from"].clone(),
            last["to"].clone(),
            last["actor"].clone()
        ),
        (json!("in_progress"), json!("completed"), json!("kept"))
    );
    let acks: Vec<(&str, &str)> = log
        .iter()
        .filter(|r| r["from"] == r["to"])
        .map(|r| {
            (
                r["detail"]["task"].as_str().unwrap(),
                r["actor"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        acks,
        [
            ("system:crm", "kept"),
            ("system:ad_partner", "system:ad_partner"),
            ("kept", "kept")
        ]
    );

    // A replay after the request completed is answered the same, and changes nothing.
    let late = s.ack(id, "ad_partner", json!({ "token": token })).await;
    assert_eq!(late.status, StatusCode::OK, "{}", late.text);
    assert_eq!(late.json["replayed"], true);
    assert_eq!(late.json["state"], "completed");
    assert_eq!(late.json["task"], acked.json["task"]);
    assert_eq!(
        s.shown(id).await["log"].as_array().unwrap().len(),
        log.len()
    );

    // The ad partner subscribes to the lifecycle: every step, in order, signed; the CRM does
    // not.
    s.deliver_after(1_000).await;
    let steps: Vec<String> = s
        .ads
        .got()
        .iter()
        .inspect(|r| {
            verify(ADS_SECRET, r, s.now()).unwrap();
        })
        .map(|r| serde_json::from_str::<Value>(&r.body).unwrap())
        .filter(|b| b["type"] != "request.obligation")
        .map(|b| {
            assert_eq!(b["data"]["request"], id);
            assert!(b["data"].get("subject").is_none(), "no personal data: {b}");
            b["type"].as_str().unwrap().to_owned()
        })
        .collect();
    for expected in [
        "request.received",
        "request.verified",
        "request.in_progress",
        "request.completed",
    ] {
        assert!(
            steps.iter().any(|s| s == expected),
            "{expected} in {steps:?}"
        );
    }
    assert_eq!(s.crm.got().len(), 1);
}

#[tokio::test]
async fn a_dead_letter_fails_the_task_until_an_operator_handles_it() {
    let s = Scene::new(2).await;
    s.ads.answer(500);
    s.crm.answer(503);
    let id = s.working("opt_out").await;
    s.deliver_after(0).await;
    s.deliver_after(61_000).await;
    let shown = s.shown(id).await;
    let ads_task = task(&shown, "system:ad_partner");
    assert_eq!(ads_task["state"], "failed", "{ads_task}");
    assert_eq!(ads_task["attempts"], 1);
    let detail = ads_task["detail"].as_str().unwrap();
    assert!(
        detail.contains("dead letter after 2 attempts") && detail.contains("500"),
        "{detail}"
    );
    assert_eq!(task(&shown, "system:crm")["state"], "failed");
    // An opt-out owes Kept's own data and the systems, not the datasets.
    assert_eq!(shown["tasks"].as_array().unwrap().len(), 3);

    // Handled by hand needs a note, names an existing task, and is written once.
    let path = |target: &str| format!("/v1/requests/{id}/tasks/{target}/handled");
    let blank = s
        .call(&path("system:ad_partner"), json!({ "note": " " }))
        .await;
    assert_eq!(
        blank.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        blank.text
    );
    assert_eq!(blank.json["error"]["field"], "note");
    let unknown = s
        .call(&path("system:billing"), json!({ "note": "x" }))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text);
    let malformed = s.call(&path("shop"), json!({ "note": "x" })).await;
    assert_eq!(malformed.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(malformed.json["error"]["field"], "target");
    let handled = s
        .call(
            &path("system:ad_partner"),
            json!({ "note": "opted out in the partner's console, ticket 4411" }),
        )
        .await;
    assert_eq!(handled.status, StatusCode::OK, "{}", handled.text);
    let ads_task = task(&handled.json, "system:ad_partner");
    assert_eq!(ads_task["state"], "handled");
    assert_eq!(
        ads_task["detail"],
        "opted out in the partner's console, ticket 4411"
    );
    let again = s
        .call(&path("system:ad_partner"), json!({ "note": "x" }))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);
    assert_eq!(again.code(), "request.task_settled");
    let note = handled.json["log"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["detail"]["task"] == "system:ad_partner")
        .unwrap();
    assert_eq!(note["detail"]["task.state"], "handled");
    assert!(note["actor"].as_str().unwrap().starts_with("key:"));

    // A dead letter retried by hand that is then delivered leaves the task waiting again.
    s.crm.answer(200);
    let dead = s.app.store.dead_deliveries(None, 10).await.unwrap();
    let crm = dead.iter().find(|d| d.system == "crm").unwrap();
    s.app
        .store
        .retry_dead_delivery(crm.id, s.now())
        .await
        .unwrap();
    s.deliver_after(0).await;
    let shown = s.shown(id).await;
    assert_eq!(task(&shown, "system:crm")["state"], "done", "on delivery");
    // Kept's own part, the opt-out's gate, was carried out on entering `in_progress`: with
    // the last system settled, Kept completed the request.
    let kept = task(&shown, "kept");
    assert_eq!(kept["state"], "done", "{kept}");
    assert_eq!(kept["detail"], "gate in force");
    assert_eq!(shown["state"], "completed");
    let last = shown["log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["to"].as_str(), last["actor"].as_str()),
        (Some("completed"), Some("kept"))
    );

    // A worker's failed try is counted and leaves the task open; a later success settles it.
    let s = Scene::new(2).await;
    let id = s.working("access").await;
    let work = s.app.state.work();
    let failed = tasks::finish(
        &work,
        id,
        &Target::Kept,
        Outcome::Failed {
            error: "the export could not be written".into(),
        },
        s.now(),
    )
    .await
    .unwrap();
    assert_eq!(failed.request.state, State::InProgress);
    let done = tasks::finish(
        &work,
        id,
        &Target::Kept,
        Outcome::Done { detail: None },
        s.now(),
    )
    .await
    .unwrap();
    let kept = done.tasks.iter().find(|t| t.target == "kept").unwrap();
    assert_eq!(kept.attempts, 2, "the failed try and the one that was done");
}

#[tokio::test]
async fn the_sweep_opens_the_work_a_crash_left_unopened_once() {
    let s = Scene::new(5).await;
    let filed = s
        .call(
            "/v1/requests",
            json!({ "subject": { "user_id": "u1" }, "kind": "restriction",
                    "scope": { "systems": ["crm"] } }),
        )
        .await;
    let id = filed.json["id"].as_u64().unwrap();
    // The steps taken behind the service's back, as if the server died right after the
    // commit: no tasks, no obligations.
    let advance = Transition::Advance {
        expect: None,
        verification: Some(kept_core::requests::Verification {
            method: kept_core::requests::VerificationMethod::CompanyStated,
            reference: Some("case-2".into()),
            agent: None,
        }),
        note: None,
    };
    s.app
        .store
        .step_request(id, &advance, "key:test", NOW)
        .await
        .unwrap()
        .unwrap();
    let advance = Transition::Advance {
        expect: None,
        verification: None,
        note: None,
    };
    s.app
        .store
        .step_request(id, &advance, "key:test", NOW)
        .await
        .unwrap()
        .unwrap();
    assert!(s.app.store.request_tasks(id).await.unwrap().is_empty());
    let work = s.app.state.work();
    for _ in 0..2 {
        tasks::sweep(&work, s.now()).await.unwrap();
        let tasks: Vec<String> = s
            .app
            .store
            .request_tasks(id)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.target)
            .collect();
        assert_eq!(
            tasks,
            ["kept", "system:crm"],
            "the scope names the CRM only"
        );
        let queued = s
            .app
            .store
            .deliveries_for_event(&obligation_key(id))
            .await
            .unwrap();
        assert_eq!(queued.len(), 1, "queued once, however often swept");
        assert_eq!(queued[0].system, "crm");
    }
    s.deliver_after(0).await;
    let body: Value = serde_json::from_str(&s.crm.got()[0].body).unwrap();
    assert_eq!(body["data"]["action"], "restrict");
    assert_eq!(body["data"]["scope"]["systems"], json!(["crm"]));
}

#[tokio::test]
async fn a_settle_replayed_after_a_crash_completes_the_request() {
    let s = Scene::new(5).await;
    let filed = s
        .call(
            "/v1/requests",
            json!({ "subject": { "user_id": "u1" }, "kind": "restriction",
                    "scope": { "systems": ["crm"] } }),
        )
        .await;
    let id = filed.json["id"].as_u64().unwrap();
    s.call(
        &format!("/v1/requests/{id}/advance"),
        json!({ "verification": { "method": "company_stated", "reference": "case-3" } }),
    )
    .await;
    s.call(&format!("/v1/requests/{id}/advance"), json!({}))
        .await;
    let work = s.app.state.work();
    let shown = s.shown(id).await;
    assert_eq!(
        task(&shown, "kept")["state"],
        "done",
        "a restriction is in force at once"
    );
    // The CRM's task settled behind the service's back, as if the server died between the
    // settling and the completion that should have followed it.
    let settle = Transition::Settle {
        target: "system:crm".into(),
        handled: true,
        note: Some("told the CRM by phone".into()),
        detail: None,
    };
    s.app
        .store
        .step_request(id, &settle, "key:test", s.now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.shown(id).await["state"], "in_progress");

    // The operator's step sent again: a replay, which completes the request.
    let crm = Target::System("crm".into());
    let again = tasks::handled(
        &work,
        id,
        &crm,
        "told the CRM by phone",
        "key:test",
        s.now(),
    )
    .await
    .unwrap();
    assert!(again.replayed);
    assert_eq!(again.request.state, State::Completed);
    assert_eq!(s.shown(id).await["state"], "completed");
}
