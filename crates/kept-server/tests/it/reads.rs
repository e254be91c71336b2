//! Consent reads served from the index: `GET /v1/subjects/{id}/preferences` answers from the
//! index snapshot exactly what the store-served read gives, for the demo population and after
//! the writes that change what the page shows (pending double opt-ins, GPC signals, a yes under
//! a notice that did not promise it). Merges, erasure requests and a second server sharing
//! PostgreSQL are checked where those tests run (`identity`, `prefcenter`, `sync`).

use crate::support::{
    NOW, TestApp, demo_manifest, post, preference_reads_agree, signing_key, test_store_url,
};
use axum::http::StatusCode;
use kept_core::manifest::promises::UNPROMISED_MARK;
use kept_server::consent::ledger::Ledger;
use kept_server::state::AppState;
use kept_store::Role;
use serde_json::{Value, json};
use std::sync::Arc;

#[tokio::test]
async fn every_demo_subjects_preferences_read_the_same_from_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = kept_server::store::open(&test_store_url(&dir).await)
        .await
        .unwrap();
    let ledger = Arc::new(Ledger::new(store.clone(), signing_key()));
    let manifest = Arc::new(demo_manifest());
    let loaded = kept_server::demo::load_if_empty(
        store.as_ref(),
        &ledger,
        &manifest,
        NOW,
        &dir.path().join("kept-data"),
    )
    .await
    .unwrap()
    .unwrap();
    let state = AppState::new(store.clone(), ledger, manifest).with_clock(Arc::new(|| NOW));
    state
        .index
        .load(store.as_ref(), NOW, &mut |_| {})
        .await
        .unwrap();
    let served = preference_reads_agree(&state).await;
    assert_eq!(served, loaded.subjects, "every demo subject from the index");
}

async fn append(app: &TestApp, records: Value) {
    let answer = app
        .send(post(
            "/v1/consents",
            Some(app.key(Role::Privacy)),
            &json!({ "records": records }).to_string(),
        ))
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
}

fn newsletter(subject: u32, action: &str, reference: &str) -> Value {
    json!({
        "subject": subject, "purpose": "marketing.communications", "channel": "email",
        "topic": "newsletter", "action": action, "notice": "newsletter",
        "method": "double_opt_in", "source": "api", "evidence": {"reference": reference},
    })
}

fn gpc(subject: u32, purpose: &str, action: &str, reference: &str) -> Value {
    json!({
        "subject": subject, "purpose": purpose, "action": action, "method": "gpc",
        "source": "api", "evidence": {"reference": reference},
    })
}

#[tokio::test]
async fn pending_gpc_and_unpromised_records_read_the_same_from_the_index() {
    let app = TestApp::new().await;
    let [de, ca, _] = [app.subjects[0].0, app.subjects[1].0, app.subjects[2].0];
    let ads = kept_core::signals::gpc::purpose(&app.state.manifest);
    let unpromised = format!("{UNPROMISED_MARK}newsletter");
    assert_eq!(preference_reads_agree(&app.state).await, 3);

    // A double opt-in waits, then is confirmed, then waits again.
    append(&app, json!([newsletter(de, "pending", "a")])).await;
    assert_eq!(preference_reads_agree(&app.state).await, 3);
    append(&app, json!([newsletter(de, "given", "b")])).await;
    assert_eq!(preference_reads_agree(&app.state).await, 3);
    append(&app, json!([newsletter(de, "pending", "c")])).await;
    assert_eq!(preference_reads_agree(&app.state).await, 3);
    // A later yes that counts for nothing still ends the wait, as the store reads it.
    append(&app, json!([newsletter(de, "given", &unpromised)])).await;
    assert_eq!(preference_reads_agree(&app.state).await, 3);

    // A GPC opt-out in California, then a GPC yes marked as unpromised: the latest signal.
    append(&app, json!([gpc(ca, &ads, "opted_out", "gpc-1")])).await;
    assert_eq!(preference_reads_agree(&app.state).await, 3);
    append(&app, json!([gpc(ca, &ads, "given", &unpromised)])).await;
    assert_eq!(preference_reads_agree(&app.state).await, 3);

    // A restarted server builds the same from the store.
    let app = app.restart().await;
    assert_eq!(preference_reads_agree(&app.state).await, 3);
}
