//! The real server on port 0, driven by a real HTTP client; then a graceful shutdown that signs
//! a final checkpoint.

use crate::support::{demo_loaded, new_subject, newsletter_consent};
use kept_server::config::{Config, DatabaseUrl};
use kept_server::server::Server;
use kept_store::Role;

#[tokio::test]
async fn serves_over_http_and_shuts_down_with_a_final_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("ledger.key");
    kept_server::server::write_ledger_key(&key_file).unwrap();
    let db = dir.path().join("data/kept.db");
    let config = Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        database_url: DatabaseUrl::new(db.to_str().unwrap()),
        ledger_key_file: Some(key_file),
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    let server = Server::start(config, demo_loaded()).await.unwrap();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    let store = server.state().store.clone();
    let subjects = store
        .insert_subjects(vec![new_subject("e2e", Some("FR"), None)])
        .await
        .unwrap();
    let (key, _) = kept_server::http::auth::create_key(store.as_ref(), Role::Privacy, "e2e", 0)
        .await
        .unwrap();

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    let client = reqwest::Client::new();
    let base = format!("http://{addr}");
    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        health.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({ "status": "ok" })
    );
    let appended = client
        .post(format!("{base}/v1/consents"))
        .bearer_auth(key.expose())
        .header("content-type", "application/json")
        .body(newsletter_consent(subjects[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(appended.status(), 201);
    let unauthorized = client
        .get(format!("{base}/v1/ledger"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    let body: serde_json::Value = unauthorized.json().await.unwrap();
    assert_eq!(body["error"]["code"], "auth.missing_key");
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("route=\"/v1/consents\""), "{metrics}");

    stop.send(()).unwrap();
    running.await.unwrap().unwrap();

    // The final checkpoint covers the record acknowledged before shutdown.
    let reopened = kept_server::store::open(db.to_str().unwrap())
        .await
        .unwrap();
    assert_eq!(reopened.ledger_len().await.unwrap(), 1);
    let checkpoints = reopened.checkpoints().await.unwrap();
    assert_eq!(checkpoints.iter().map(|c| c.seq).max(), Some(1));
    // ... and is in the witness file, by default in the data directory.
    let (witnessed, _) = kept_server::consent::witness::read_witness(
        &dir.path().join("data").join("ledger-witness.log"),
    )
    .unwrap();
    assert_eq!(witnessed, checkpoints);
    assert!(
        client.get(format!("{base}/healthz")).send().await.is_err(),
        "the server stopped"
    );
}

#[tokio::test]
async fn without_a_ledger_key_the_server_says_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        database_url: DatabaseUrl::new(dir.path().join("kept.db").to_str().unwrap()),
        ..Config::default()
    };
    let err = Server::start(config, demo_loaded()).await.unwrap_err();
    assert_eq!(err.code(), "serve.no_ledger_key");
    assert!(err.to_string().contains("kept keys ledger-keygen"), "{err}");
}
