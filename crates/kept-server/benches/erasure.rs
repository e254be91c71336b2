//! 10,000 erasure requests carried out, connectors included, on SQLite and on PostgreSQL, beside
//! the rate at which the same subjects were created in the same run (one identity write each:
//! a new subject, its data key and its sealed email). Each erasure is the whole service
//! (`requests::erase::execute`): the request moved to in progress, the fixture shop's rows
//! erased through its connector (a PostgreSQL database with one customer, address, order, order
//! line and support ticket per person), Kept's own erasure, the request completed.
//!
//! `cargo bench -p kept-server --bench erasure`. `KEPT_BENCH_ERASURES` sets the number of
//! people (default 10000), `KEPT_BENCH_WORKERS` how many erasures run at once (default 8).
//! PostgreSQL: `KEPT_BENCH_DATABASE_URL` (a server URL; scratch databases `kept_bench_erasure`
//! and `kept_bench_shop` are created on it and dropped afterwards), default the local server;
//! without it only SQLite's Kept store is measured, without the connector.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "bench code: a failed setup step ends the benchmark"
)]

use kept_core::identity::{DataKey, IdentifierKind, PlannedSubject, identifier_aad};
use kept_core::manifest::Manifest;
use kept_core::regime::Regime;
use kept_core::requests::{
    Channel, Intake, RequestKind, Scope, State, Transition, Verification, VerificationMethod,
};
use kept_server::consent::ledger::{Ledger, SigningKey};
use kept_server::identity::Identities;
use kept_server::requests::erase::{Environment, Erasure, execute};
use kept_server::requests::service;
use kept_store::collection::{IdentityWrite, NewIdentity};
use kept_store::{NewSubject, Store};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

const SHOP_TOML: &str = include_str!("../../../tests/fixtures/shop/kept.toml");
const SHOP_SQL: &str = include_str!("../../../tests/fixtures/shop/postgres.sql");
const NOW: i64 = 1_790_000_000_000;

#[derive(Debug)]
struct ShopEnv(Option<String>);

impl Environment for ShopEnv {
    fn var(&self, name: &str) -> Option<String> {
        (name == "SHOP_POSTGRES_URL")
            .then(|| self.0.clone())
            .flatten()
    }
}

fn manifest(with_shop: bool) -> Manifest {
    let text = if with_shop {
        format!("{}\n{SHOP_TOML}", kept_core::manifest::demo_toml())
    } else {
        kept_core::manifest::demo_toml()
    };
    let mut m = kept_core::manifest::load(&text, "kept.toml")
        .unwrap()
        .manifest;
    m.datasets.retain(|d| d.id == "shop");
    // No system owes an acknowledgement here: the figure is Kept's and the shop's erasure; the
    // obligations' delivery and acknowledgement are the forwarder's, measured on their own.
    for system in m.systems.values_mut() {
        system.webhook = None;
    }
    m
}

/// `url` with its database replaced by `name`.
fn database_url(url: &str, name: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let authority = head.find("://").map_or(0, |i| i + 3);
    let base = match head[authority..].find('/') {
        Some(i) => &head[..authority + i],
        None => head,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

async fn scratch(admin_url: &str, name: &str) -> Option<String> {
    let admin = match sqlx::PgPool::connect(admin_url).await {
        Ok(pool) => pool,
        Err(e) => {
            println!(
                "SKIPPED PostgreSQL: `{}` is unreachable ({e}); set KEPT_BENCH_DATABASE_URL",
                kept_server::store::redact(admin_url)
            );
            return None;
        }
    };
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::query(&sql).execute(&admin).await.unwrap();
    }
    admin.close().await;
    Some(database_url(admin_url, name))
}

async fn drop_scratch(admin_url: &str, name: &str) {
    if let Ok(admin) = sqlx::PgPool::connect(admin_url).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&admin)
            .await;
        admin.close().await;
    }
}

/// The fixture shop with one customer, address, order, order line and ticket per person.
async fn fill_shop(url: &str, n: usize) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    sqlx::raw_sql(&format!("SET client_min_messages = warning; {SHOP_SQL}"))
        .execute(&pool)
        .await
        .unwrap();
    let last = n - 1;
    sqlx::raw_sql(&format!(
        "INSERT INTO customers (id, email, full_name) SELECT 1000 + g, 'p' || g || '@bench.example', \
           'Person ' || g FROM generate_series(0, {last}) g;
         INSERT INTO addresses SELECT 100000 + g, 1000 + g, 'Street ' || g, 'City', '12345', 'DE' \
           FROM generate_series(0, {last}) g;
         INSERT INTO orders SELECT 100000 + g, 1000 + g, 'p' || g || '@bench.example', \
           '2026-02-01T10:00:00Z', 1000, 'EUR' FROM generate_series(0, {last}) g;
         INSERT INTO order_lines SELECT 1000000 + g, 100000 + g, 'SKU-1', 1, 1000 \
           FROM generate_series(0, {last}) g;
         INSERT INTO support_tickets SELECT 100000 + g, 1000 + g, 'p' || g || '@bench.example', \
           'Hello', 'A question' FROM generate_series(0, {last}) g;"
    ))
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}

/// Runs `work(i)` for `0..n` on `workers` tasks; returns per second.
async fn run_all<F, Fut>(n: usize, workers: usize, work: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let work = Arc::new(work);
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (next, work) = (next.clone(), work.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    work(i).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// Creates person `i`: a subject with its data key and sealed email, as collection does.
async fn create(store: &dyn Store, identities: &Identities, i: usize) {
    let keys = identities.keys(store).await.unwrap();
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&(i as u64).to_le_bytes());
    let key = DataKey(key);
    let mut nonce = [0u8; 24];
    nonce[..8].copy_from_slice(&(i as u64).to_le_bytes());
    let email = format!("p{i}@bench.example");
    let hash = keys.identifier_hash(IdentifierKind::Email, &email);
    let sealed = key
        .seal(
            &identifier_aad(IdentifierKind::Email, &hash),
            email.as_bytes(),
            nonce,
        )
        .unwrap();
    store
        .write_identities(IdentityWrite {
            new_subjects: vec![NewSubject {
                user_id: Some((1000 + i).to_string()),
                country: Some("DE".into()),
                region: None,
                time_zone: None,
                created_at: NOW,
            }],
            keys: vec![(
                PlannedSubject::New(0),
                keys.seal_data_key(&key, nonce).unwrap(),
            )],
            attach: vec![NewIdentity {
                subject: PlannedSubject::New(0),
                key_subject: PlannedSubject::New(0),
                kind: IdentifierKind::Email,
                hash,
                sealed,
                verified: true,
            }],
            at: NOW,
            ..IdentityWrite::default()
        })
        .await
        .unwrap();
}

/// Files and verifies an erasure request for user id `1000 + i`.
async fn request(work: &kept_server::requests::work::Work, i: usize) -> u64 {
    let subject = work
        .store
        .subject_by_user_id(&(1000 + i).to_string())
        .await
        .unwrap()
        .unwrap();
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
        at: NOW,
    };
    let filed = service::file(work, intake, "operator:bench").await.unwrap();
    let verify = Transition::Advance {
        expect: Some(State::Verified),
        verification: None,
        note: None,
    };
    service::step(work, filed.request.id, &verify, "operator:bench", NOW)
        .await
        .unwrap();
    filed.request.id
}

struct Kept {
    store: Arc<dyn Store>,
    work: kept_server::requests::work::Work,
    identities: Arc<Identities>,
    manifest: Arc<Manifest>,
    env: ShopEnv,
}

async fn measure(
    backend: &str,
    store: Arc<dyn Store>,
    shop: Option<String>,
    n: usize,
    workers: usize,
) {
    let identities = Arc::new(Identities::default());
    let manifest = Arc::new(manifest(shop.is_some()));
    let work = kept_server::requests::work::Work {
        store: store.clone(),
        ledger: Arc::new(Ledger::new(store.clone(), SigningKey::from_bytes(&[9; 32]))),
        manifest: manifest.clone(),
        identities: identities.clone(),
        forwarder: None,
        base_url: "http://127.0.0.1:7300".to_owned(),
    };
    let kept = Arc::new(Kept {
        work,
        identities,
        manifest,
        env: ShopEnv(shop.clone()),
        store,
    });
    let k = kept.clone();
    let created = run_all(n, workers, move |i| {
        let k = k.clone();
        async move { create(k.store.as_ref(), &k.identities, i).await }
    })
    .await;
    let ids = Arc::new(std::sync::Mutex::new(vec![0u64; n]));
    let (k, stored) = (kept.clone(), ids.clone());
    let filed = run_all(n, workers, move |i| {
        let (k, stored) = (k.clone(), stored.clone());
        async move {
            let id = request(&k.work, i).await;
            stored.lock().unwrap()[i] = id;
        }
    })
    .await;
    let ids: Arc<Vec<u64>> = Arc::new(ids.lock().unwrap().clone());
    let (k, all) = (kept.clone(), ids.clone());
    let erased = run_all(n, workers, move |i| {
        let (k, all) = (k.clone(), all.clone());
        async move {
            let erasure = Erasure {
                store: k.store.as_ref(),
                work: &k.work,
                identities: &k.identities,
                manifest: &k.manifest,
                index: None,
                env: &k.env,
            };
            let outcome = execute(&erasure, all[i], "operator:bench", NOW)
                .await
                .unwrap();
            assert_eq!(outcome.state, State::Completed, "{outcome:?}");
        }
    })
    .await;
    if let Some(url) = &shop {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM customers")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(left, 2, "only the fixture's own two customers stay");
        pool.close().await;
    }
    let connectors = if shop.is_some() {
        "connector included"
    } else {
        "no connector"
    };
    println!(
        "  {backend:<8} {n} erasures ({connectors}, {workers} at once): {erased:>7.0}/s   \
         beside: subjects created {created:>7.0}/s, requests filed and verified {filed:>7.0}/s"
    );
    kept.store.close().await.unwrap();
}

fn main() {
    let n: usize = std::env::var("KEPT_BENCH_ERASURES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let workers: usize = std::env::var("KEPT_BENCH_WORKERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let pg_url = std::env::var("KEPT_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!("erasure requests carried out, beside the rate their subjects were created at");
        let dir = tempfile::tempdir().unwrap();
        let shop = scratch(&pg_url, "kept_bench_shop").await;
        if let Some(url) = &shop {
            fill_shop(url, n).await;
        }
        let sqlite = kept_server::store::open(dir.path().join("kept.db").to_str().unwrap())
            .await
            .unwrap();
        measure("sqlite", sqlite, shop.clone(), n, workers).await;
        if let Some(url) = &shop {
            fill_shop(url, n).await;
            if let Some(kept_url) = scratch(&pg_url, "kept_bench_erasure").await {
                let store = kept_server::store::open(&kept_url).await.unwrap();
                measure("postgres", store, shop.clone(), n, workers).await;
                drop_scratch(&pg_url, "kept_bench_erasure").await;
            }
            drop_scratch(&pg_url, "kept_bench_shop").await;
        }
    });
}
