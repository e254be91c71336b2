//! Ledger figures: durable appends per second through the store (group commit) with 64
//! concurrent writers and with one, on SQLite and PostgreSQL, each with checkpoints off (the
//! bare store), on (every batch commits with its signed checkpoint) and on with the witness
//! file, measured in the same run; and the time `kept ledger verify` takes over 1,000,000
//! records.
//!
//! `cargo bench -p kept-server --bench ledger`. PostgreSQL: `KEPT_BENCH_DATABASE_URL` (a server
//! URL; a scratch database `kept_bench_ledger` is created on it and dropped afterwards), default
//! `postgres://postgres@127.0.0.1:5432/postgres`; skipped with a message when unreachable.
//! `KEPT_BENCH_SECONDS` sets how long each append run lasts (default 3).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "bench code: a failed setup step ends the benchmark"
)]

use kept_core::SubjectId;
use kept_core::ledger::{CollectionMethod, ConsentAction, ConsentRecord, Evidence, NoticeRef};
use kept_server::consent::ledger::{Ledger, SigningKey, Verdict, VerifyOptions, verify_ledger};
use kept_server::consent::witness::Witness;
use kept_store::Store;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const VERIFY_RECORDS: u64 = 1_000_000;
const LOAD_BATCH: u64 = 10_000;
const SCRATCH_DB: &str = "kept_bench_ledger";
/// Rounds of every append run, interleaved; each run lasts a share of the seconds.
const ROUNDS: u32 = 3;

/// A realistic record (about 250 bytes encoded): every field set, as the preference center
/// writes them.
fn record(n: u64) -> ConsentRecord {
    ConsentRecord {
        subject: SubjectId((n % 1_000_003) as u32),
        purpose: "marketing.communications".into(),
        channel: Some("email".into()),
        topic: Some(
            if n.is_multiple_of(2) {
                "newsletter"
            } else {
                "offers"
            }
            .into(),
        ),
        action: if n.is_multiple_of(5) {
            ConsentAction::Withdrawn
        } else {
            ConsentAction::Given
        },
        notice: Some(NoticeRef {
            id: "newsletter".into(),
            version: 3,
            hash: "9f".repeat(32),
        }),
        regime: "gdpr".into(),
        source: "preference_center".into(),
        method: CollectionMethod::WebForm,
        evidence: Evidence {
            ip_hash: Some(format!("{n:064x}")),
            user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0".into()),
            text_hash: None,
            reference: Some(format!("req-{n}")),
        },
        at: 1_790_000_000_000 + n as i64,
    }
}

/// How the appends are checkpointed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checkpoints {
    /// The bare store: no signer installed.
    Off,
    /// Through the ledger service: each batch commits with its signed checkpoint.
    Signed,
    /// As `Signed`, and each checkpoint appended and fsync'd to a witness file.
    Witnessed,
}

impl Checkpoints {
    fn name(self) -> &'static str {
        match self {
            Checkpoints::Off => "off",
            Checkpoints::Signed => "signed",
            Checkpoints::Witnessed => "+witness",
        }
    }
}

/// Appends with `writers` concurrent tasks for `seconds`; returns (appends, elapsed).
async fn appends(
    store: Arc<dyn Store>,
    writers: u32,
    seconds: f64,
    mode: Checkpoints,
    witness: &std::path::Path,
) -> (u64, Duration) {
    let ledger = match mode {
        Checkpoints::Off => None,
        Checkpoints::Signed => Some(Ledger::new(store.clone(), SigningKey::from_bytes(&[3; 32]))),
        Checkpoints::Witnessed => Some(
            Ledger::new(store.clone(), SigningKey::from_bytes(&[3; 32])).with_witness(Arc::new(
                Witness::open(witness, None, Duration::from_secs(1)).unwrap(),
            )),
        ),
    };
    if let Some(ledger) = &ledger {
        // Publishes the key and installs the signer before the clock starts.
        ledger.checkpoint_now().await.unwrap();
    }
    let ledger = ledger.map(Arc::new);
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (store, stop, count) = (store.clone(), stop.clone(), count.clone());
            let ledger = ledger.clone();
            tokio::spawn(async move {
                let mut n = u64::from(w) << 32;
                while !stop.load(Ordering::Relaxed) {
                    match &ledger {
                        Some(ledger) => ledger.append(record(n)).await.unwrap(),
                        None => store.append_consent(record(n)).await.unwrap(),
                    };
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
    let elapsed = started.elapsed();
    if let Some(ledger) = &ledger {
        ledger.close().await;
    }
    (count.load(Ordering::Relaxed), elapsed)
}

struct Row {
    backend: &'static str,
    writers: u32,
    mode: Checkpoints,
    appends: u64,
    checkpoints: usize,
    elapsed: Duration,
}

impl Row {
    fn rate(&self) -> f64 {
        self.appends as f64 / self.elapsed.as_secs_f64()
    }
}

async fn append_rows<F, Fut>(backend: &'static str, open: F, seconds: f64) -> Vec<Row>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn Store>>,
{
    let mut rows = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let runs = [
        (64, Checkpoints::Off),
        (64, Checkpoints::Signed),
        (64, Checkpoints::Witnessed),
        (1, Checkpoints::Off),
        (1, Checkpoints::Signed),
        (1, Checkpoints::Witnessed),
    ];
    // Round robin, so that a machine getting faster or slower during the run (other load,
    // the disk's cache) weighs on every mode alike.
    for round in 0..ROUNDS {
        for (i, (writers, mode)) in runs.into_iter().enumerate() {
            let store = open().await;
            let witness = dir.path().join(format!("witness-{round}-{i}.log"));
            let (appends, elapsed) = appends(
                store.clone(),
                writers,
                seconds / f64::from(ROUNDS),
                mode,
                &witness,
            )
            .await;
            // Every acknowledged append is in the chain and, with checkpoints on, covered.
            let len = store.ledger_len().await.unwrap();
            assert!(len >= appends);
            let checkpoints = store.checkpoints().await.unwrap();
            if mode != Checkpoints::Off {
                assert_eq!(checkpoints.last().map(|c| c.seq), Some(len));
            }
            store.close().await.unwrap();
            match rows
                .iter_mut()
                .find(|r: &&mut Row| r.writers == writers && r.mode == mode)
            {
                Some(row) => {
                    row.appends += appends;
                    row.checkpoints += checkpoints.len();
                    row.elapsed += elapsed;
                }
                None => rows.push(Row {
                    backend,
                    writers,
                    mode,
                    appends,
                    checkpoints: checkpoints.len(),
                    elapsed,
                }),
            }
        }
    }
    rows
}

/// Loads 1,000,000 records (in batches of 10,000, each with its checkpoint), reopens the store and times what
/// `kept ledger verify` does: open, count, stream and check every record and checkpoint.
async fn verify_million<F, Fut>(backend: &str, open: F) -> (Duration, Duration)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn Store>>,
{
    let key = SigningKey::from_bytes(&[3; 32]);
    let store = open().await;
    let ledger = Ledger::new(store.clone(), key.clone());
    let loading = Instant::now();
    let mut n = 0;
    while n < VERIFY_RECORDS {
        ledger
            .append_many((n..n + LOAD_BATCH).map(record).collect())
            .await
            .unwrap();
        n += LOAD_BATCH;
    }
    let load = loading.elapsed();
    ledger.close().await;
    store.close().await.unwrap();
    drop(ledger);

    let verifying = Instant::now();
    let store = open().await;
    let _total = store.ledger_len().await.unwrap();
    let verdict = verify_ledger(
        store.clone(),
        &VerifyOptions::new(vec![key.verifying_key()]),
        |_| {},
    )
    .await
    .unwrap();
    let verify = verifying.elapsed();
    match verdict {
        Verdict::Intact(report) => {
            assert_eq!(report.records, VERIFY_RECORDS);
            assert_eq!(report.checkpoints, 100);
        }
        other => panic!("{backend}: the benchmark ledger did not verify: {other:?}"),
    }
    store.close().await.unwrap();
    (load, verify)
}

/// Creates the scratch database on the server `url` names; `None` (said why) when unreachable.
async fn scratch_postgres(url: &str) -> Option<String> {
    let admin = match sqlx::PgPool::connect(url).await {
        Ok(pool) => pool,
        Err(e) => {
            println!(
                "SKIPPED: PostgreSQL at `{}` is unreachable ({e}); set KEPT_BENCH_DATABASE_URL",
                kept_server::store::redact(url)
            );
            return None;
        }
    };
    reset_scratch(&admin).await;
    admin.close().await;
    Some(database_url(url, SCRATCH_DB))
}

async fn reset_scratch(admin: &sqlx::PgPool) {
    sqlx::query(&format!(
        "DROP DATABASE IF EXISTS {SCRATCH_DB} WITH (FORCE)"
    ))
    .execute(admin)
    .await
    .unwrap();
    sqlx::query(&format!("CREATE DATABASE {SCRATCH_DB}"))
        .execute(admin)
        .await
        .unwrap();
}

async fn drop_scratch(url: &str) {
    if let Ok(admin) = sqlx::PgPool::connect(url).await {
        let _ = sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {SCRATCH_DB} WITH (FORCE)"
        ))
        .execute(&admin)
        .await;
        admin.close().await;
    }
}

/// `url` pointing at database `name` instead.
fn database_url(url: &str, name: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let authority_start = head.find("://").map_or(0, |i| i + 3);
    let base = match head[authority_start..].find('/') {
        Some(i) => &head[..authority_start + i],
        None => head,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

fn main() {
    let seconds: f64 = std::env::var("KEPT_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let pg_url = std::env::var("KEPT_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut rows = Vec::new();
        let mut verifies = Vec::new();

        let counter = Arc::new(AtomicU64::new(0));
        let sqlite = {
            let dir = dir.path().to_path_buf();
            move || {
                let path = dir.join(format!(
                    "ledger-{}.db",
                    counter.fetch_add(1, Ordering::Relaxed)
                ));
                async move {
                    kept_server::store::open(path.to_str().unwrap())
                        .await
                        .unwrap()
                }
            }
        };
        rows.extend(append_rows("sqlite", &sqlite, seconds).await);
        let million = dir.path().join("million.db");
        verifies.push((
            "sqlite",
            verify_million("sqlite", || async {
                kept_server::store::open(million.to_str().unwrap())
                    .await
                    .unwrap()
            })
            .await,
        ));

        if let Some(scratch) = scratch_postgres(&pg_url).await {
            let fresh = || {
                let (admin_url, scratch) = (pg_url.clone(), scratch.clone());
                async move {
                    let admin = sqlx::PgPool::connect(&admin_url).await.unwrap();
                    reset_scratch(&admin).await;
                    admin.close().await;
                    kept_server::store::open(&scratch).await.unwrap()
                }
            };
            rows.extend(append_rows("postgres", fresh, seconds).await);
            let admin = sqlx::PgPool::connect(&pg_url).await.unwrap();
            reset_scratch(&admin).await;
            admin.close().await;
            verifies.push((
                "postgres",
                verify_million("postgres", || async {
                    kept_server::store::open(&scratch).await.unwrap()
                })
                .await,
            ));
            drop_scratch(&pg_url).await;
        }

        println!();
        println!(
            "durable ledger appends (group commit, {seconds} s per row in {ROUNDS} interleaved rounds)"
        );
        println!(
            "{:<10} {:>8} {:>12} {:>10} {:>12} {:>9} {:>12}",
            "backend", "writers", "checkpoints", "appends", "checkpoints", "seconds", "appends/s"
        );
        for r in &rows {
            println!(
                "{:<10} {:>8} {:>12} {:>10} {:>12} {:>9.2} {:>12.0}",
                r.backend,
                r.writers,
                r.mode.name(),
                r.appends,
                r.checkpoints,
                r.elapsed.as_secs_f64(),
                r.rate()
            );
        }
        for backend in ["sqlite", "postgres"] {
            let of = |w, m| {
                rows.iter()
                    .find(|r| r.backend == backend && r.writers == w && r.mode == m)
            };
            if let (Some(many), Some(one)) = (of(64, Checkpoints::Off), of(1, Checkpoints::Off)) {
                println!(
                    "{backend}: 64 writers / 1 writer = {:.1}x (what group commit buys)",
                    many.rate() / one.rate()
                );
            }
            for writers in [64, 1] {
                let off = of(writers, Checkpoints::Off);
                for mode in [Checkpoints::Signed, Checkpoints::Witnessed] {
                    if let (Some(off), Some(on)) = (off, of(writers, mode)) {
                        println!(
                            "{backend}, {writers} writers: checkpoints {} {:.0}/s vs off {:.0}/s = {:.2}x",
                            mode.name(),
                            on.rate(),
                            off.rate(),
                            on.rate() / off.rate()
                        );
                    }
                }
            }
        }
        let target = rows
            .iter()
            .find(|r| r.backend == "sqlite" && r.writers == 64 && r.mode == Checkpoints::Witnessed)
            .map(Row::rate)
            .unwrap_or(0.0);
        println!(
            "target: >= 20,000 appends/s on SQLite with 64 writers, checkpoints and witness on: {target:.0}/s"
        );
        println!();
        println!("kept ledger verify over {VERIFY_RECORDS} records (100 checkpoints)");
        println!(
            "{:<10} {:>14} {:>14} {:>16}",
            "backend", "load seconds", "verify seconds", "records/s"
        );
        for (backend, (load, verify)) in &verifies {
            println!(
                "{:<10} {:>14.2} {:>14.2} {:>16.0}",
                backend,
                load.as_secs_f64(),
                verify.as_secs_f64(),
                VERIFY_RECORDS as f64 / verify.as_secs_f64()
            );
        }
        println!("target: verify 1,000,000 records in <= 2 s");
    });
}
