//! The cost of the record of uses, each figure beside the same work without it, in one run:
//! recorded contacts per second with 64 concurrent writers (a contact alone, and a contact with
//! its use in the same commit), on SQLite and PostgreSQL; and an audience export of 1,000,000
//! synthetic subjects (the evaluation alone, and with each eligible subject's decision asked,
//! grouped by reason and written as roaring bitmaps).
//!
//! `cargo bench -p kept-server --bench uses`. `KEPT_BENCH_SECONDS` sets how long each contact
//! run lasts (default 3), `KEPT_BENCH_EXPORT` the subjects exported (default 1000000).
//! PostgreSQL: `KEPT_BENCH_DATABASE_URL` (a server URL; a scratch database `kept_bench_uses` is
//! created on it and dropped afterwards), default the local server; skipped with a message
//! when unreachable.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "bench code: a failed setup step ends the benchmark"
)]

#[path = "../../kept-core/benches/common/mod.rs"]
mod common;

use common::{MARKETING, NOW, changes, compiled, person};
use kept_core::SubjectId;
use kept_core::audience::{AudienceRequest, Candidates, evaluate};
use kept_core::decision::DecisionRequest;
use kept_core::index::Index;
use kept_core::subject::Contact;
use kept_server::decide::uses::export_records;
use kept_store::{Store, UseKind, UseRecord, UseSubjects};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SCRATCH_DB: &str = "kept_bench_uses";

fn contact(n: u64) -> Contact {
    Contact {
        subject: SubjectId((n % 1_000_003) as u32),
        channel: "email".into(),
        purpose: MARKETING.into(),
        topic: Some("newsletter".into()),
        at: NOW + n as i64,
    }
}

/// The use `POST /v1/contacts` records with `contact(n)`: a typical allowed decision's evidence.
fn use_of(n: u64) -> UseRecord {
    let c = contact(n);
    UseRecord {
        id: 0,
        at: c.at,
        kind: UseKind::Contact,
        subjects: UseSubjects::One(c.subject),
        purpose: c.purpose,
        channel: Some(c.channel),
        topic: c.topic,
        categories: vec!["user.contact.email".into()],
        reason: "allowed.consent".into(),
        evidence: format!(
            r#"[{{"kind":"provenance","category":"user.contact.email","collection_point":"newsletter_signup","notice":"newsletter","notice_version":3}},{{"kind":"ledger","seq":{n}}}]"#
        ),
        actor: "kept_ab12cd34".into(),
        reference: None,
    }
}

/// Records one contact per call from `writers` tasks for `seconds`, with its use or without;
/// returns contacts per second.
async fn contacts(store: Arc<dyn Store>, with_uses: bool, seconds: f64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..64u64)
        .map(|w| {
            let (store, stop, count) = (store.clone(), stop.clone(), count.clone());
            tokio::spawn(async move {
                let mut n = w << 32;
                while !stop.load(Ordering::Relaxed) {
                    let used = if with_uses {
                        vec![use_of(n)]
                    } else {
                        Vec::new()
                    };
                    store.record_contacts(vec![contact(n)], used).await.unwrap();
                    count.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

async fn contact_rows<F, Fut>(backend: &str, open: F, seconds: f64)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn Store>>,
{
    let mut rates = Vec::new();
    for with_uses in [false, true] {
        let store = open().await;
        rates.push(contacts(store.clone(), with_uses, seconds).await);
        store.close().await.unwrap();
    }
    println!(
        "  {backend:<8}  contacts/s, 64 writers: {:>9.0} alone  {:>9.0} with their uses  ({:+.1}%)",
        rates[0],
        rates[1],
        (rates[1] / rates[0] - 1.0) * 100.0
    );
}

/// Times an export of `n` subjects without and with its uses; the uses written to `store`.
async fn export(n: u32, stores: Vec<(&str, Arc<dyn Store>)>) {
    let mut seq = 0;
    let index = Index::build(
        compiled(),
        (0..n).flat_map(|i| changes(&person(42, i), &mut seq)),
    );
    let snapshot = index.snapshot();
    let audience = AudienceRequest {
        purpose: MARKETING.into(),
        channel: Some("email".into()),
        topic: None,
        categories: vec![],
        candidates: Candidates::All,
        sample_size: 0,
    };
    let request = DecisionRequest {
        purpose: MARKETING.into(),
        channel: Some("email".into()),
        topic: None,
        categories: vec![],
    };
    let mut alone = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let result = evaluate(&snapshot, &audience, NOW);
        alone.push((started.elapsed(), result.eligible_count));
    }
    alone.sort();
    let (alone, eligible) = alone[2];
    println!("  export of {n} subjects, {eligible} eligible:");
    println!(
        "    evaluation alone                     {:>8.1} ms",
        ms(alone)
    );
    for (backend, store) in stores {
        let started = Instant::now();
        let result = evaluate(&snapshot, &audience, NOW);
        let decided = Instant::now();
        let used = export_records(
            &snapshot,
            &result,
            &result.excluded,
            &request,
            NOW,
            "kept_ab12cd34",
            "exp_bench",
        );
        let covered: u64 = used.iter().map(|u| u.subjects.count()).sum();
        assert_eq!(covered, result.eligible_count);
        let decisions = decided.elapsed();
        let bytes: usize = used
            .iter()
            .map(|u| match &u.subjects {
                UseSubjects::Set { bitmap, .. } => bitmap.len(),
                UseSubjects::One(_) => 0,
            })
            .sum();
        let rows = used.len();
        let writing = Instant::now();
        store.record_uses(used).await.unwrap();
        let write = writing.elapsed();
        let total = started.elapsed();
        println!(
            "    with its uses on {backend:<8}            {:>8.1} ms  (decisions {:.1} ms, \
             {rows} rows of {:.0} KiB written in {:.1} ms)",
            ms(total),
            ms(decisions),
            bytes as f64 / 1024.0,
            ms(write)
        );
        store.close().await.unwrap();
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Creates the scratch database on the server `url` names; `None` (said why) when unreachable.
async fn scratch_postgres(url: &str) -> Option<String> {
    let admin = match sqlx::PgPool::connect(url).await {
        Ok(pool) => pool,
        Err(e) => {
            println!(
                "SKIPPED PostgreSQL: `{}` is unreachable ({e}); set KEPT_BENCH_DATABASE_URL",
                kept_server::store::redact(url)
            );
            return None;
        }
    };
    reset_scratch(&admin).await;
    admin.close().await;
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let authority = head.find("://").map_or(0, |i| i + 3);
    let base = match head[authority..].find('/') {
        Some(i) => &head[..authority + i],
        None => head,
    };
    Some(match query {
        Some(q) => format!("{base}/{SCRATCH_DB}?{q}"),
        None => format!("{base}/{SCRATCH_DB}"),
    })
}

async fn reset_scratch(admin: &sqlx::PgPool) {
    for sql in [
        format!("DROP DATABASE IF EXISTS {SCRATCH_DB} WITH (FORCE)"),
        format!("CREATE DATABASE {SCRATCH_DB}"),
    ] {
        sqlx::query(&sql).execute(admin).await.unwrap();
    }
}

fn main() {
    let seconds: f64 = std::env::var("KEPT_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let exported: u32 = std::env::var("KEPT_BENCH_EXPORT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let pg_url = std::env::var("KEPT_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let counter = Arc::new(AtomicU64::new(0));
        let sqlite = {
            let dir = dir.path().to_path_buf();
            move || {
                let path = dir.join(format!(
                    "uses-{}.db",
                    counter.fetch_add(1, Ordering::Relaxed)
                ));
                async move {
                    kept_server::store::open(path.to_str().unwrap())
                        .await
                        .unwrap()
                }
            }
        };
        let postgres = scratch_postgres(&pg_url).await;
        let fresh_pg = |scratch: String| {
            let admin_url = pg_url.clone();
            async move {
                let admin = sqlx::PgPool::connect(&admin_url).await.unwrap();
                reset_scratch(&admin).await;
                admin.close().await;
                kept_server::store::open(&scratch).await.unwrap()
            }
        };

        println!("the record of uses, beside the same work without it");
        contact_rows("sqlite", &sqlite, seconds).await;
        if let Some(scratch) = &postgres {
            contact_rows("postgres", || fresh_pg(scratch.clone()), seconds).await;
        }
        let mut stores: Vec<(&str, Arc<dyn Store>)> = vec![("sqlite", sqlite().await)];
        if let Some(scratch) = &postgres {
            stores.push(("postgres", fresh_pg(scratch.clone()).await));
        }
        export(exported, stores).await;

        if postgres.is_some()
            && let Ok(admin) = sqlx::PgPool::connect(&pg_url).await
        {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {SCRATCH_DB} WITH (FORCE)"
            ))
            .execute(&admin)
            .await;
            admin.close().await;
        }
    });
}
