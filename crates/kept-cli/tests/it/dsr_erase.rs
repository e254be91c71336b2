//! `kept dsr erase --request` killed with SIGKILL part-way, at varied delays, on whichever backend
//! the tests run on (`KEPT_TEST_BACKEND=postgres` with `KEPT_TEST_DATABASE_URL`, else SQLite):
//! every request is then either completed with its subject wholly erased, or still open with its
//! subject wholly there or wholly erased (never half), and a second run completes them all.

use kept_core::identity::PlannedSubject;
use kept_core::identity::{DataKey, IdentifierKind, identifier_aad};
use kept_core::regime::Regime;
use kept_core::requests::{
    Channel, Intake, RequestKind, Scope, State, Transition, Verification, VerificationMethod,
};
use kept_server::consent::ledger::{Ledger, SigningKey, published_verifying_keys};
use kept_server::requests::service;
use kept_store::collection::{IdentityWrite, NewIdentity};
use kept_store::{NewSubject, Store};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const REQUESTS: u32 = 24;

/// Where the test's store is: an SQLite file in `dir`, or a schema of its own on PostgreSQL.
async fn database(dir: &Path) -> String {
    if std::env::var("KEPT_TEST_BACKEND").is_ok_and(|b| b == "postgres") {
        use sqlx::Connection;
        let url = std::env::var("KEPT_TEST_DATABASE_URL")
            .expect("KEPT_TEST_BACKEND=postgres needs KEPT_TEST_DATABASE_URL");
        let schema = format!("kept_it_kill_{}", std::process::id());
        let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(&format!(
            "SET client_min_messages = warning; DROP SCHEMA IF EXISTS {schema} CASCADE; \
             CREATE SCHEMA {schema}"
        ))
        .execute(&mut db)
        .await
        .unwrap();
        let sep = if url.contains('?') { '&' } else { '?' };
        return format!("{url}{sep}options[search_path]={schema}");
    }
    dir.join("kept.db").to_str().unwrap().to_owned()
}

/// People with a sealed email, a data key and a trait, each with a verified erasure request.
async fn seed(store: &Arc<dyn Store>, work: &kept_server::requests::work::Work) -> Vec<u64> {
    let identities = kept_server::identity::Identities::default();
    let keys = identities.keys(store.as_ref()).await.unwrap();
    let now = kept_server::state::system_now();
    let mut requests = Vec::new();
    for i in 0..REQUESTS {
        let byte = u8::try_from(i + 1).unwrap();
        let key = DataKey([byte; 32]);
        let email = format!("kill{i}@example.com");
        let hash = keys.identifier_hash(IdentifierKind::Email, &email);
        let sealed = key
            .seal(
                &identifier_aad(IdentifierKind::Email, &hash),
                email.as_bytes(),
                [byte; 24],
            )
            .unwrap();
        let ids = store
            .write_identities(IdentityWrite {
                new_subjects: vec![NewSubject {
                    user_id: Some(format!("kill-{i}")),
                    country: Some("DE".into()),
                    region: None,
                    time_zone: None,
                    created_at: now,
                }],
                keys: vec![(
                    PlannedSubject::New(0),
                    keys.seal_data_key(&key, [byte; 24]).unwrap(),
                )],
                attach: vec![NewIdentity {
                    subject: PlannedSubject::New(0),
                    key_subject: PlannedSubject::New(0),
                    kind: IdentifierKind::Email,
                    hash,
                    sealed,
                    verified: true,
                }],
                at: now,
                ..IdentityWrite::default()
            })
            .await
            .unwrap();
        let subject = ids[0];
        let intake = Intake {
            subject,
            kind: RequestKind::Erasure,
            scope: Scope::default(),
            channel: Channel::Operator,
            verification: Some(Verification {
                method: VerificationMethod::CompanyStated,
                reference: Some(format!("case-{i}")),
                agent: None,
            }),
            regime: Regime::Gdpr,
            region: None,
            at: now,
        };
        let filed = service::file(work, intake, "operator:test").await.unwrap();
        let verify = Transition::Advance {
            expect: Some(State::Verified),
            verification: None,
            note: None,
        };
        service::step(work, filed.request.id, &verify, "operator:test", now)
            .await
            .unwrap();
        requests.push(filed.request.id);
    }
    requests
}

fn erase(dir: &Path, url: &str, id: u64) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kept"));
    command
        .args([
            "dsr",
            "erase",
            "--request",
            &id.to_string(),
            "--format",
            "json",
        ])
        .args(["--database-url", url, "--manifest", "kept.toml"])
        .current_dir(dir)
        .env("KEPT_LEDGER_KEY_FILE", dir.join("ledger.key"))
        .env_remove("KEPT_DATABASE_URL")
        .env_remove("KEPT_MANIFEST")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// Where a request and its subject stand.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Standing {
    /// Completed, the subject wholly erased.
    Completed,
    /// Open, the subject wholly there: the erasure runs from the start again.
    OpenIntact,
    /// Open, the subject wholly erased (killed between Kept's erasure and the last step).
    OpenErased,
}

async fn standing(store: &dyn Store, id: u64) -> Standing {
    let request = store.request(id).await.unwrap().unwrap();
    let subject = store.subject(request.subject).await.unwrap().unwrap();
    let keys = store.subject_keys(&[request.subject]).await.unwrap().len();
    let held = store.identities_of(request.subject).await.unwrap().len();
    let traits = store.traits(request.subject).await.unwrap().len();
    let erased = subject.erased_at.is_some();
    if erased {
        assert_eq!(
            (keys, held, traits, subject.user_id.as_deref()),
            (0, 0, 0, None),
            "request {id}: an erased subject keeps nothing"
        );
    } else {
        assert_eq!((keys, held), (1, 1), "request {id}: half erased");
    }
    match (request.state, erased) {
        (State::Completed, true) => Standing::Completed,
        (State::Completed, false) => panic!("request {id} completed with its subject there"),
        (State::Verified | State::InProgress, false) => Standing::OpenIntact,
        (State::InProgress, true) => Standing::OpenErased,
        (state, _) => panic!("request {id} is {state:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_killed_at_any_point_is_whole_or_resumable() {
    let dir = tempfile::tempdir().unwrap();
    // The demo without the partner's webhook: no system owes an acknowledgement, so a request
    // completes once Kept's own data is erased.
    let manifest_text: String = kept_core::manifest::demo_toml()
        .lines()
        .filter(|l| !l.starts_with("webhook = "))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.path().join("kept.toml"), &manifest_text).unwrap();
    let manifest = kept_core::manifest::load(&manifest_text, "kept.toml")
        .unwrap()
        .manifest;
    std::fs::write(dir.path().join("ledger.key"), "03".repeat(32)).unwrap();
    let url = database(dir.path()).await;
    let store = kept_server::store::open(&url).await.unwrap();
    let work = kept_server::requests::work::Work {
        store: store.clone(),
        ledger: Arc::new(Ledger::new(store.clone(), SigningKey::from_bytes(&[3; 32]))),
        manifest: Arc::new(manifest),
        identities: Arc::new(kept_server::identity::Identities::default()),
        forwarder: None,
        base_url: "http://127.0.0.1:7300".to_owned(),
    };
    let requests = seed(&store, &work).await;
    drop(work);
    store.close().await.unwrap();
    drop(store);

    // Killed after varied delays: some before the work starts, some in it, some after.
    let delays = [0u64, 15, 30, 45, 60, 80, 100, 130, 160, 200, 260, 400];
    for (i, id) in requests.iter().enumerate() {
        let mut child = erase(dir.path(), &url, *id).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delays[i % delays.len()]));
        let _ = child.kill();
        let _ = child.wait();
    }
    let store = kept_server::store::open_existing(&url).await.unwrap();
    let mut seen = Vec::new();
    for id in &requests {
        seen.push(standing(store.as_ref(), *id).await);
    }
    eprintln!(
        "after SIGKILL: {} completed, {} open and intact, {} open and erased",
        seen.iter().filter(|s| **s == Standing::Completed).count(),
        seen.iter().filter(|s| **s == Standing::OpenIntact).count(),
        seen.iter().filter(|s| **s == Standing::OpenErased).count()
    );
    store.close().await.unwrap();
    drop(store);

    // A second run finishes every one.
    for (id, before) in requests.iter().zip(&seen) {
        let status = erase(dir.path(), &url, *id).status().unwrap();
        let expected = if *before == Standing::Completed { 2 } else { 0 };
        assert_eq!(status.code(), Some(expected), "request {id} ({before:?})");
    }
    let store = kept_server::store::open_existing(&url).await.unwrap();
    for id in &requests {
        assert_eq!(standing(store.as_ref(), *id).await, Standing::Completed);
        let log = store.request_log_of(*id).await.unwrap();
        assert_eq!(
            log.len(),
            5,
            "request {id}: received, verified, in progress, Kept's task settled, completed"
        );
    }
    let keys = published_verifying_keys(store.as_ref()).await.unwrap();
    let verdict = service::verify_log(
        store.as_ref(),
        &keys,
        kept_server::state::system_now(),
        None,
    )
    .await
    .unwrap();
    assert!(verdict.is_ok(), "{verdict:?}");
    store.close().await.unwrap();
}
