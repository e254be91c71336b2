//! Preference page figures: the server's render time (p50, p99) of `GET /preferences` for a
//! subject with 50 traits and 200 ledger entries, through the whole router (session check,
//! store reads, decisions, template), and the page's size before compression. Goal (issue 5):
//! p50 ≤ 5 ms, page ≤ 60 KB.
//!
//! `cargo bench -p kept-server --bench prefcenter`. `KEPT_BENCH_RENDERS` sets how many renders
//! are timed (default 2,000).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "bench code: a failed setup step ends the benchmark"
)]

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use kept_core::index::Change;
use kept_core::ledger::{CollectionMethod, ConsentAction, ConsentRecord, Evidence, NoticeRef};
use kept_core::subject::{Provenance, Trait};
use kept_server::consent::ledger::{Ledger, SigningKey};
use kept_server::state::AppState;
use kept_store::{NewSubject, Role};
use std::sync::Arc;
use std::time::Instant;
use tower::ServiceExt;

const TRAITS: usize = 50;
const RECORDS: usize = 200;
const GOAL_P50_MS: f64 = 5.0;
const GOAL_BYTES: usize = 60 * 1024;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn send(
    router: &axum::Router,
    req: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let response = router.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    (status, headers, body)
}

async fn run() {
    let renders: usize = std::env::var("KEPT_BENCH_RENDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let dir = tempfile::tempdir().unwrap();
    let store = kept_server::store::open(dir.path().join("kept.db").to_str().unwrap())
        .await
        .unwrap();
    let manifest = kept_core::manifest::load(&kept_core::manifest::demo_toml(), "kept.toml")
        .unwrap()
        .manifest;
    let ledger = Arc::new(Ledger::new(store.clone(), SigningKey::from_bytes(&[5; 32])));
    let state = AppState::new(store.clone(), ledger.clone(), Arc::new(manifest.clone()));
    let now = kept_server::state::system_now();

    // The subject: in Germany, 50 traits from every collection point, 200 ledger records.
    let subject = store
        .insert_subjects(vec![NewSubject {
            user_id: Some("bench".into()),
            country: Some("DE".into()),
            region: None,
            time_zone: Some("Europe/Berlin".into()),
            created_at: now - 400 * 86_400_000,
        }])
        .await
        .unwrap()[0];
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
    state
        .index
        .load(store.as_ref(), now, &mut |_| {})
        .await
        .unwrap();
    let s = store.subject(subject).await.unwrap().unwrap();
    state.index.apply(vec![Change::Subject(s)]).await.unwrap();

    let (key, _) = kept_server::http::auth::create_key(store.as_ref(), Role::Privacy, "bench", now)
        .await
        .unwrap();
    let router = kept_server::router(state);
    let (status, _, body) = send(
        &router,
        Request::post(format!("/v1/subjects/{}/preference-link", subject.0))
            .header(header::AUTHORIZATION, format!("Bearer {}", key.expose()))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let url: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let path = url["url"]
        .as_str()
        .unwrap()
        .split_once("/preferences")
        .map(|(_, rest)| format!("/preferences{rest}"))
        .unwrap();
    let (status, headers, _) =
        send(&router, Request::get(&path).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cookie = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with("kept_prefs="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = || {
        Request::get("/preferences")
            .header(header::COOKIE, &cookie)
            .header(header::ACCEPT_LANGUAGE, "en")
            .body(Body::empty())
            .unwrap()
    };

    // Warm up (caches, the key derivation), then time each render alone.
    let mut size = 0;
    for _ in 0..50 {
        let (status, _, body) = send(&router, page()).await;
        assert_eq!(status, StatusCode::OK);
        size = body.len();
    }
    let mut times = Vec::with_capacity(renders);
    for _ in 0..renders {
        let started = Instant::now();
        let (status, _, body) = send(&router, page()).await;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(status, StatusCode::OK);
        size = body.len();
    }
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize];
    let (p50, p99) = (pct(0.50), pct(0.99));
    let gzipped = {
        use std::io::Write;
        let (_, _, body) = send(&router, page()).await;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&body).unwrap();
        encoder.finish().unwrap().len()
    };
    println!(
        "preference page ({TRAITS} traits, {RECORDS} ledger entries, SQLite), {renders} renders:"
    );
    println!(
        "  server render time: p50 {p50:.2} ms, p99 {p99:.2} ms (goal p50 ≤ {GOAL_P50_MS} ms: {})",
        if p50 <= GOAL_P50_MS { "met" } else { "NOT met" }
    );
    println!(
        "  page size: {size} bytes before compression, {gzipped} gzipped (goal ≤ {GOAL_BYTES}: {})",
        if size <= GOAL_BYTES { "met" } else { "NOT met" }
    );
    drop(dir);
}
