//! The access export's figure (issue 11): one subject with 10,000 events, 200 ledger records
//! and 50 traits in Kept's store (SQLite), and the fixture shop's five tables on PostgreSQL
//! holding 1,000 of their orders (5 lines each), 200 addresses and 200 tickets. Timed in the
//! same run, p50 and p95 of:
//!
//! - the connectors' `find` alone (open a connection, one query per table);
//! - the export without the connectors (Kept's own store only), as JSON;
//! - the whole export as JSON (the store and the shop searched at once);
//! - the whole download through a signed link, over the router (the hand-over logged).
//!
//!   SHOP_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/kept_shop \
//!   cargo bench -p kept-server --bench export
//!
//! Goal: p50 ≤ 200 ms for the whole export. It loads its own copy of the fixture into
//! `kept_shop_bench_export` on that server. `KEPT_BENCH_ROUNDS` sets the rounds (default 30).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "bench code: a failed setup step ends the benchmark"
)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use kept_connect::Connector;
use kept_core::identity::IdentifierKind;
use kept_core::ledger::{CollectionMethod, ConsentAction, ConsentRecord, Evidence, NoticeRef};
use kept_core::requests::{Transition, Verification, VerificationMethod};
use kept_core::subject::{Provenance, Trait};
use kept_server::consent::ledger::{Ledger, SigningKey};
use kept_server::state::AppState;
use kept_server::subjects::export::Format;
use kept_store::collection::{EventWrite, NewEvent};
use kept_store::{NewSubject, Role};
use sqlx::Connection as _;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

const EVENTS: usize = 10_000;
const TRAITS: usize = 50;
const RECORDS: usize = 200;
const ORDERS: u32 = 1_000;
const LINES_PER_ORDER: u32 = 5;
const TICKETS: u32 = 200;
const ADDRESSES: u32 = 200;
const GOAL: Duration = Duration::from_millis(200);
const SHOP_TOML: &str = include_str!("../../../tests/fixtures/shop/kept.toml");
const SHOP_POSTGRES: &str = include_str!("../../../tests/fixtures/shop/postgres.sql");
const DATABASE: &str = "kept_shop_bench_export";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

fn with_database(url: &str, name: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let host_end = url[scheme_end..]
        .find(['/', '?'])
        .map_or(url.len(), |i| scheme_end + i);
    format!("{}/{name}", &url[..host_end])
}

/// The fixture plus customer 1's many rows (ids from 10,000 up), as the connectors' own
/// benchmark seeds it.
fn seed_sql() -> String {
    let mut sql = format!("SET client_min_messages = warning; {SHOP_POSTGRES}");
    let ts = "2026-05-01T10:00:00Z";
    let rows = |n: u32, f: &dyn Fn(u32) -> String| (0..n).map(f).collect::<Vec<_>>().join(",\n");
    sql.push_str(&format!(
        "\nINSERT INTO addresses VALUES\n{};\n",
        rows(ADDRESSES, &|i| format!(
            "({}, 1, 'Street {i}', 'London', 'N1', 'GB')",
            10_000 + i
        ))
    ));
    sql.push_str(&format!(
        "INSERT INTO orders VALUES\n{};\n",
        rows(ORDERS, &|i| format!(
            "({}, 1, 'ada@example.com', '{ts}', {}, 'EUR')",
            10_000 + i,
            100 + i
        ))
    ));
    sql.push_str(&format!(
        "INSERT INTO order_lines VALUES\n{};\n",
        rows(ORDERS * LINES_PER_ORDER, &|i| format!(
            "({}, {}, 'SKU-{}', 1, 100)",
            100_000 + i,
            10_000 + i / LINES_PER_ORDER,
            i % 7
        ))
    ));
    sql.push_str(&format!(
        "INSERT INTO support_tickets VALUES\n{};\n",
        rows(TICKETS, &|i| format!(
            "({}, 1, 'ada@example.com', 'Ticket {i}', 'Text of ticket {i}')",
            10_000 + i
        ))
    ));
    sql.push_str("ANALYZE;");
    sql
}

async fn prepare_shop(server: &str) -> String {
    let mut admin = sqlx::PgConnection::connect(server).await.unwrap();
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::raw_sql(&format!("CREATE DATABASE {DATABASE}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let url = with_database(server, DATABASE);
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(&seed_sql()).execute(&mut db).await.unwrap();
    url
}

async fn send(router: &axum::Router, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let response = router.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    (status, body)
}

/// `rounds` timings of `f` after two warm-up runs, sorted.
async fn time<F, Fut>(rounds: usize, mut f: F) -> Vec<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    for _ in 0..2 {
        f().await;
    }
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        f().await;
        times.push(started.elapsed());
    }
    times.sort();
    times
}

fn percentile(times: &[Duration], p: f64) -> Duration {
    let i = ((times.len() as f64 - 1.0) * p).round() as usize;
    times[i.min(times.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn run() {
    let Some(server) = std::env::var("SHOP_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        println!("skipped: SHOP_POSTGRES_URL is not set (the connector graph lives there)");
        return;
    };
    let rounds: usize = std::env::var("KEPT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let shop_url = prepare_shop(&server).await;

    let dir = tempfile::tempdir().unwrap();
    let store = kept_server::store::open(dir.path().join("kept.db").to_str().unwrap())
        .await
        .unwrap();
    let source = format!("{}\n{SHOP_TOML}", kept_core::manifest::demo_toml());
    let manifest = kept_core::manifest::load(&source, "kept.toml")
        .unwrap()
        .manifest;
    let ledger = Arc::new(Ledger::new(store.clone(), SigningKey::from_bytes(&[5; 32])));
    let url = shop_url.clone();
    let state = AppState::new(store.clone(), ledger.clone(), Arc::new(manifest.clone()))
        .with_dataset_urls(Arc::new(move |var: &str| {
            (var == "SHOP_POSTGRES_URL").then(|| url.clone())
        }));
    let no_connectors = state
        .clone()
        .with_dataset_urls(Arc::new(|_: &str| None::<String>));
    let now = kept_server::state::system_now();
    let router = kept_server::router(state.clone());
    let (key, _) = kept_server::http::auth::create_key(store.as_ref(), Role::Server, "bench", now)
        .await
        .unwrap();

    // The subject: customer 1 of the shop (its user id), with Ada's email attached through
    // the collection API as a shop's backend would send it.
    store
        .insert_subjects(vec![NewSubject {
            user_id: Some("1".into()),
            country: Some("DE".into()),
            region: None,
            time_zone: Some("Europe/Berlin".into()),
            created_at: now - 400 * 86_400_000,
        }])
        .await
        .unwrap();
    state
        .index
        .load(store.as_ref(), now, &mut |_| {})
        .await
        .unwrap();
    let identify = serde_json::json!({
        "userId": "1",
        "traits": { "email": "ada@example.com" },
        "context": { "kept": { "collection_point": "checkout" } }
    });
    let (status, body) = send(
        &router,
        Request::post("/v1/identify")
            .header("authorization", format!("Bearer {}", key.expose()))
            .header("content-type", "application/json")
            .body(Body::from(identify.to_string()))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let subject = store.subject_by_user_id("1").await.unwrap().unwrap();

    let points: Vec<(&String, &kept_core::manifest::CollectionPoint)> =
        manifest.collection_points.iter().collect();
    let traits: Vec<Trait> = (0..TRAITS)
        .map(|i| {
            let (key, point) = points[i % points.len()];
            let (field, category) = point.fields.iter().nth(i % point.fields.len()).unwrap();
            Trait {
                subject,
                key: format!("{field}_{i}"),
                value: serde_json::json!(format!("value {i} of {field}")),
                category: category.clone(),
                provenance: Provenance {
                    collection_point: key.clone(),
                    notice_id: point.notice.clone(),
                    notice_version: 1,
                    collected_at: now - (i as i64) * 3_600_000,
                    source: "bench".into(),
                },
            }
        })
        .collect();
    store.upsert_traits(traits).await.unwrap();
    let notice = &manifest.notices["newsletter"];
    let records: Vec<ConsentRecord> = (0..RECORDS)
        .map(|i| ConsentRecord {
            subject,
            purpose: "marketing.communications".into(),
            channel: Some("email".into()),
            topic: Some(if i % 2 == 0 { "newsletter" } else { "offers" }.into()),
            action: if i % 3 == 0 {
                ConsentAction::Withdrawn
            } else {
                ConsentAction::Given
            },
            notice: Some(NoticeRef {
                id: "newsletter".into(),
                version: notice.version,
                hash: notice.hash.clone(),
            }),
            regime: "gdpr".into(),
            source: "preference_center".into(),
            method: CollectionMethod::WebForm,
            evidence: Evidence {
                reference: Some(format!("bench-{i}")),
                ..Evidence::default()
            },
            at: now - (RECORDS - i) as i64 * 60_000,
        })
        .collect();
    ledger.append_many(records).await.unwrap();
    for chunk in 0..EVENTS / 1_000 {
        let events = (0..1_000)
            .map(|j| {
                let i = chunk * 1_000 + j;
                NewEvent {
                    source: "bench".into(),
                    message_id: format!("m{i}"),
                    subject,
                    kind: "track".into(),
                    name: Some(format!("Product Viewed {}", i % 40)),
                    at: now - (EVENTS - i) as i64 * 60_000,
                    received_at: now - (EVENTS - i) as i64 * 60_000,
                    retain_until: now + 365 * 86_400_000,
                    consent: "{}".into(),
                    properties: format!(
                        r#"{{"product_id":"p{i}","price":{},"currency":"EUR","list":"search"}}"#,
                        i % 100
                    ),
                    context: r#"{"page":{"path":"/products","title":"Products"},"locale":"de-DE"}"#
                        .into(),
                    extra: "{}".into(),
                }
            })
            .collect();
        store
            .write_events(EventWrite {
                events,
                traits: Vec::new(),
            })
            .await
            .unwrap();
    }

    // An access request, verified, and its link.
    let work = state.work();
    let filed = kept_server::requests::service::file(
        &work,
        kept_core::requests::Intake {
            subject,
            kind: kept_core::requests::RequestKind::Access,
            scope: kept_core::requests::Scope::default(),
            channel: kept_core::requests::Channel::Api,
            verification: None,
            regime: kept_core::regime::Regime::Gdpr,
            region: None,
            at: now,
        },
        "bench",
    )
    .await
    .unwrap();
    let verified = kept_server::requests::service::step(
        &work,
        filed.request.id,
        &Transition::Advance {
            expect: None,
            verification: Some(Verification {
                method: VerificationMethod::CompanyStated,
                reference: Some("bench".into()),
                agent: None,
            }),
            note: None,
        },
        "bench",
        now,
    )
    .await
    .unwrap()
    .request;
    let keys = state.prefcenter.keys(store.as_ref()).await.unwrap();
    let links = kept_server::requests::export::links(keys, "http://bench", &verified, None, now);
    let link = links.json[links.json.find("/exports/").unwrap()..].to_owned();
    let t = kept_server::web::texts::choose(None, None, &manifest.organisation.locales);

    let dataset = manifest
        .datasets
        .iter()
        .find(|d| d.id == "shop")
        .unwrap()
        .clone();
    let lookup_url = shop_url.clone();
    let lookup = move |var: &str| (var == "SHOP_POSTGRES_URL").then(|| lookup_url.clone());
    let ada = kept_connect::Subject::new()
        .with(IdentifierKind::Email, "ada@example.com")
        .unwrap()
        .with(IdentifierKind::UserId, "1")
        .unwrap();
    let found_rows = std::cell::Cell::new(0);
    let find = time(rounds, || async {
        let mut connector = Connector::open(&dataset, &lookup).await.unwrap();
        found_rows.set(connector.find(&ada).await.unwrap().rows());
    })
    .await;
    let bytes = std::cell::Cell::new(0);
    let own = time(rounds, || async {
        let rendered = no_connectors
            .hand_over()
            .render(&verified, Format::Json, t, now)
            .await
            .unwrap();
        bytes.set(rendered.bytes.len());
    })
    .await;
    let whole_bytes = std::cell::Cell::new(0);
    let whole = time(rounds, || async {
        let rendered = state
            .hand_over()
            .render(&verified, Format::Json, t, now)
            .await
            .unwrap();
        whole_bytes.set(rendered.bytes.len());
    })
    .await;
    let download = time(rounds, || async {
        let (status, body) = send(&router, Request::get(&link).body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    })
    .await;

    println!(
        "access export: {EVENTS} events, {RECORDS} ledger records, {TRAITS} traits in Kept (SQLite); \
         {} rows over the shop's 5 tables (PostgreSQL); {rounds} rounds",
        found_rows.get()
    );
    println!("{:<44} {:>9} {:>9}", "", "p50 ms", "p95 ms");
    for (name, times) in [
        ("connectors' find alone (baseline)", &find),
        ("export without connectors, JSON (baseline)", &own),
        ("whole export, JSON", &whole),
        ("download through a signed link (logged)", &download),
    ] {
        println!(
            "{name:<44} {:>9.1} {:>9.1}",
            ms(percentile(times, 0.5)),
            ms(percentile(times, 0.95))
        );
    }
    let p50 = percentile(&whole, 0.5);
    println!(
        "JSON sizes: {} bytes without the shop, {} with it. Whole export p50 / (find + own) p50: {:.2}. Goal p50 ≤ {} ms: {}",
        bytes.get(),
        whole_bytes.get(),
        ms(p50) / (ms(percentile(&find, 0.5)) + ms(percentile(&own, 0.5))),
        GOAL.as_millis(),
        if p50 <= GOAL { "met" } else { "NOT met" }
    );
    if let Ok(mut admin) = sqlx::PgConnection::connect(&server).await {
        let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
            .execute(&mut admin)
            .await;
    }
}
