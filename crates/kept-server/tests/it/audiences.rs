//! Audiences over HTTP on the demo population: the dry run agrees with one decision per
//! subject, tells the SMS story of the demo, and exports exactly the eligible subjects.

use crate::support::{Answer, NOW, demo_manifest, post, send, signing_key};
use axum::http::StatusCode;
use kept_core::decision::ReasonCode;
use kept_core::regime::Regime;
use kept_server::consent::ledger::Ledger;
use kept_server::state::AppState;
use kept_store::Store;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

struct DemoApp {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    state: AppState,
    keys: HashMap<String, Value>,
}

impl DemoApp {
    async fn start() -> DemoApp {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kept.db");
        let store = kept_server::store::open(path.to_str().unwrap())
            .await
            .unwrap();
        let ledger = Arc::new(Ledger::new(store.clone(), signing_key()));
        let manifest = demo_manifest();
        kept_server::demo::load_if_empty(store.as_ref(), &ledger, &manifest, NOW, dir.path())
            .await
            .unwrap()
            .unwrap();
        let state =
            AppState::new(store.clone(), ledger, Arc::new(manifest)).with_clock(Arc::new(|| NOW));
        let report = state
            .index
            .load(store.as_ref(), NOW, &mut |_| {})
            .await
            .unwrap();
        assert_eq!(report.subjects, kept_core::demo::DEFAULT_SIZE as u64);
        let keys_file = dir.path().join(kept_server::demo::KEYS_FILE);
        let keys = serde_json::from_slice(&std::fs::read(keys_file).unwrap()).unwrap();
        DemoApp {
            _dir: dir,
            store,
            state,
            keys,
        }
    }

    async fn post(&self, path: &str, body: &Value) -> Answer {
        send(
            kept_server::router(self.state.clone()),
            post(path, self.keys["decide"].as_str(), &body.to_string()),
        )
        .await
    }

    /// One decision per subject (by internal id) for `request`, in id order.
    async fn decisions(&self, ids: &[u32], request: &Value) -> Vec<String> {
        let requests: Vec<Value> = ids
            .iter()
            .map(|id| {
                let mut r = request.clone();
                r["subject"] = json!({ "id": id });
                r
            })
            .collect();
        let answer = self
            .post("/v1/decisions", &json!({ "requests": requests }))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        answer.json["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["reason"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn excluded(answer: &Answer) -> BTreeMap<String, u64> {
    answer.json["excluded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["reason"].as_str().unwrap().to_owned(),
                e["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn tally(reasons: &[String]) -> (u64, BTreeMap<String, u64>) {
    let mut denied = BTreeMap::new();
    let mut allowed = 0;
    for r in reasons {
        if r.starts_with("allowed.") {
            allowed += 1;
        } else {
            *denied.entry(r.clone()).or_default() += 1;
        }
    }
    (allowed, denied)
}

#[tokio::test]
async fn audiences_agree_with_decisions_and_export_the_eligible() {
    let app = &DemoApp::start().await;
    let subjects = app.store.subjects_page(None, 100_000).await.unwrap();
    let all: Vec<u32> = subjects.iter().map(|s| s.id.0).collect();

    for (request, filter) in [
        (
            json!({ "purpose": "marketing.communications", "channel": "sms" }),
            None,
        ),
        (
            json!({ "purpose": "marketing.communications", "channel": "email", "topic": "offers" }),
            None,
        ),
        (
            json!({ "purpose": "marketing.advertising.third_party.targeted" }),
            None,
        ),
        (
            json!({ "purpose": "marketing.communications", "channel": "email" }),
            Some(Regime::Gdpr),
        ),
    ] {
        let mut body = request.clone();
        body["sample_size"] = json!(5);
        let ids: Vec<u32> = match filter {
            None => all.clone(),
            Some(regime) => {
                body["candidates"] = json!({ "filter": { "regimes": [regime.as_str()] } });
                subjects
                    .iter()
                    .filter(|s| s.regime() == regime)
                    .map(|s| s.id.0)
                    .collect()
            }
        };
        let answer = app.post("/v1/audiences/evaluate", &body).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        let (allowed, denied) = tally(&app.decisions(&ids, &request).await);
        assert_eq!(answer.json["eligible"], allowed, "{request}");
        assert_eq!(excluded(&answer), denied, "{request}");
        assert_eq!(answer.json["candidates"], ids.len() as u64);
        assert!(answer.json["took_ms"].as_f64().unwrap() >= 0.0);
        // Exclusions come in the order of the gates.
        let order: Vec<ReasonCode> = answer.json["excluded"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| ReasonCode::parse(e["reason"].as_str().unwrap()).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    }

    // The demo's story: rewards members' numbers were never promised for offers by text;
    // the few who opted in through the SMS offers form may be texted.
    let sms =
        json!({ "purpose": "marketing.communications", "channel": "sms", "sample_size": 1000 });
    let answer = app.post("/v1/audiences/evaluate", &sms).await;
    let eligible = answer.json["eligible"].as_u64().unwrap();
    let not_promised = excluded(&answer)["denied.not_promised"];
    assert!(eligible > 0 && eligible < 500, "{}", answer.text);
    assert!(not_promised > eligible * 3, "{}", answer.text);
    let mut phones: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    let mut after = None;
    loop {
        let page = app.store.traits_page(after, 1000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.subject);
        for t in page
            .into_iter()
            .filter(|t| t.key == "phone" || t.category == "user.contact.phone_number")
        {
            phones
                .entry(t.subject.0)
                .or_default()
                .insert(t.provenance.collection_point);
        }
    }
    let sample = answer.json["sample"].as_array().unwrap();
    assert_eq!(sample.len() as u64, eligible.min(1000));
    for member in sample {
        let id = member["id"].as_u64().unwrap() as u32;
        assert!(
            phones
                .get(&id)
                .is_some_and(|p| p.contains("sms_offers_optin")),
            "eligible subject {id} never opted in: {:?}",
            phones.get(&id)
        );
        let user = subjects[id as usize].user_id.clone();
        assert_eq!(
            member.get("user_id").and_then(Value::as_str),
            user.as_deref()
        );
    }
    let rewards_only: Vec<u32> = phones
        .iter()
        .filter(|(_, points)| points.iter().all(|p| p == "rewards_signup"))
        .map(|(id, _)| *id)
        .collect();
    assert!(!rewards_only.is_empty());
    let reasons = app
        .decisions(
            &rewards_only,
            &json!({ "purpose": "marketing.communications", "channel": "sms" }),
        )
        .await;
    for (id, reason) in rewards_only.iter().zip(&reasons) {
        let s = &subjects[*id as usize];
        if s.erasure_requested_at.is_none() && !s.suppressed {
            assert_eq!(reason, "denied.not_promised", "rewards member {id}");
        }
    }

    // The export holds exactly the eligible subjects, in id order, in both formats.
    let export = |format: &str| {
        let path = format!("/v1/audiences/export?format={format}");
        let body = json!({ "purpose": "marketing.communications", "channel": "sms" });
        async move { app.post(&path, &body).await }
    };
    let ndjson = export("ndjson").await;
    assert_eq!(ndjson.status, StatusCode::OK, "{}", ndjson.text);
    assert_eq!(ndjson.headers["content-type"], "application/x-ndjson");
    assert_eq!(
        ndjson.headers["x-kept-eligible"],
        eligible.to_string().as_str()
    );
    let lines: Vec<Value> = ndjson
        .text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, eligible);
    let exported: Vec<u64> = lines.iter().map(|l| l["id"].as_u64().unwrap()).collect();
    let sampled: Vec<u64> = sample.iter().map(|m| m["id"].as_u64().unwrap()).collect();
    assert_eq!(
        exported, sampled,
        "the sample of 1000 covers every eligible subject"
    );
    let csv = export("csv").await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(
        csv.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let mut rows = csv.text.lines();
    assert_eq!(rows.next(), Some("id,user_id"));
    let rows: Vec<&str> = rows.collect();
    assert_eq!(rows.len() as u64, eligible);
    for (row, line) in rows.iter().zip(&lines) {
        let user = line.get("user_id").and_then(Value::as_str).unwrap_or("");
        assert_eq!(*row, format!("{},{user}", line["id"]));
    }
    let bad = export("xml").await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.json["error"]["field"], "format");

    // Candidates by user id (an unknown one counts as an unknown subject) and by country.
    let known: Vec<&str> = subjects
        .iter()
        .filter_map(|s| s.user_id.as_deref())
        .take(2)
        .collect();
    let named = app
        .post(
            "/v1/audiences/evaluate",
            &json!({ "purpose": "loyalty.rewards",
                "candidates": { "user_ids": [known[0], known[1], "nobody"] } }),
        )
        .await;
    assert_eq!(named.status, StatusCode::OK, "{}", named.text);
    assert_eq!(named.json["candidates"], 3);
    assert_eq!(excluded(&named).get("denied.unknown_subject"), Some(&1));
    let germans = subjects
        .iter()
        .filter(|s| s.country.as_deref() == Some("DE"))
        .count();
    let de = app
        .post(
            "/v1/audiences/evaluate",
            &json!({ "purpose": "loyalty.rewards",
                "candidates": { "filter": { "countries": ["de"] } } }),
        )
        .await;
    assert_eq!(de.json["candidates"], germans as u64, "{}", de.text);
    let nowhere = app
        .post(
            "/v1/audiences/evaluate",
            &json!({ "purpose": "loyalty.rewards",
                "candidates": { "filter": { "regimes": ["atlantis"] } } }),
        )
        .await;
    assert_eq!(nowhere.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        nowhere.json["error"]["field"],
        "candidates.filter.regimes[0]"
    );
}
