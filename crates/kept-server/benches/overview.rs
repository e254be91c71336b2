//! The console overview's figure (issue 12): the page at `/admin`, rendered over the router for
//! a signed-in operator, with 1,000,000 synthetic subjects in the index (the audience
//! benchmark's population: six regimes, 40 % with a marketing consent record spread over the
//! last 30 days), beside the same people's aggregates computed in SQL on SQLite and on
//! PostgreSQL from the same rows, in the same run:
//!
//! - consent state per regime for each purpose scope that has records (one `GROUP BY` per
//!   scope, the subjects' regimes for the rest), and
//! - consent records per day over the last 30 days.
//!
//! The SQL is kinder to the databases than the index is to itself: each subject has at most
//! one record, so no "latest record per scope" is needed, and scopes without records are one
//! query for all. Kept's and each database's numbers must agree, or the benchmark stops.
//!
//!   cargo bench -p kept-server --bench overview
//!
//! Goal: p50 ≤ 50 ms for the whole page. `KEPT_BENCH_SUBJECTS` sets the population (default
//! 1,000,000), `KEPT_BENCH_ROUNDS` the rounds (default 30); PostgreSQL at
//! `KEPT_BENCH_DATABASE_URL` (by default the local server) is skipped with a note when it does
//! not answer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "bench code: a failed setup step ends the benchmark"
)]

#[path = "../../kept-core/benches/common/mod.rs"]
mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{DAY, NOW, PLACES, changes, person};
use kept_core::index::{Change, ConsentTally, DayCount};
use kept_core::ledger::ConsentAction;
use kept_server::consent::ledger::{Ledger, SigningKey};
use kept_server::state::AppState;
use kept_store::operators::OperatorRole;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

const SEED: u64 = 42;
const GOAL: Duration = Duration::from_millis(50);
const DAYS: i64 = 30;

/// When person `id`'s one consent record was made: spread over the last 30 days.
fn consent_at(id: u32) -> i64 {
    NOW - i64::from(id % 30) * DAY - 1000
}

/// One person's changes, their consent record moved to its day.
fn person_changes(id: u32, seq: &mut u64) -> Vec<Change> {
    changes(&person(SEED, id), seq)
        .into_iter()
        .map(|c| match c {
            Change::Consent(mut r) => {
                r.record.at = consent_at(id);
                Change::Consent(r)
            }
            other => other,
        })
        .collect()
}

fn action_name(a: ConsentAction) -> &'static str {
    match a {
        ConsentAction::Given => "given",
        ConsentAction::Withdrawn => "withdrawn",
        _ => "opted_out",
    }
}

/// The numbers both sides must agree on: per scope (purpose, channel) and regime, the counts
/// of given, withdrawn, opted out and no record; and per day, yes and no.
#[derive(Debug, PartialEq, Eq)]
struct Figures {
    states: BTreeMap<(String, Option<String>, String), [u64; 4]>,
    days: Vec<(i64, u64, u64)>,
}

fn kept_figures(tally: &ConsentTally, days: &[DayCount]) -> Figures {
    let mut states = BTreeMap::new();
    for s in &tally.scopes {
        // The two scopes the SQL computes; the index computed every other one as well.
        if s.purpose != common::MARKETING || !matches!(s.channel.as_deref(), None | Some("email")) {
            continue;
        }
        for (regime, c) in &s.regimes {
            states.insert(
                (
                    s.purpose.clone(),
                    s.channel.clone(),
                    regime.as_str().to_owned(),
                ),
                [c.given, c.withdrawn, c.opted_out, c.none],
            );
        }
    }
    Figures {
        states,
        days: days
            .iter()
            .filter(|d| d.given + d.refused > 0)
            .map(|d| (d.day, d.given, d.refused))
            .collect(),
    }
}

fn p(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let n: u32 = std::env::var("KEPT_BENCH_SUBJECTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let rounds: usize = std::env::var("KEPT_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    println!("console overview: {n} subjects, {rounds} rounds");

    // Kept: a SQLite store for what the page reads from the store, the population in the index.
    let dir = tempfile::tempdir().unwrap();
    let store = kept_server::store::open(dir.path().join("kept.db").to_str().unwrap())
        .await
        .unwrap();
    let manifest = Arc::new(common::manifest());
    let ledger = Arc::new(Ledger::new(store.clone(), SigningKey::from_bytes(&[7; 32])));
    let state = AppState::new(store.clone(), ledger, manifest).with_clock(Arc::new(|| NOW));
    state
        .index
        .load(store.as_ref(), NOW, &mut |_| {})
        .await
        .unwrap();
    let started = Instant::now();
    let mut seq = 0;
    let mut batch = Vec::new();
    for id in 0..n {
        batch.extend(person_changes(id, &mut seq));
        if batch.len() >= 200_000 {
            state.index.apply(std::mem::take(&mut batch)).await.unwrap();
        }
    }
    state.index.apply(batch).await.unwrap();
    println!(
        "  index: {n} subjects applied in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let snapshot = state.index.snapshot().unwrap();
    let figures = kept_figures(
        &snapshot.consent_tally(),
        &snapshot.consent_days(NOW, DAYS as usize),
    );

    let email = "bench@example.com";
    kept_server::console::accounts::create(
        store.as_ref(),
        email,
        OperatorRole::Marketing,
        "a long enough bench password",
        NOW,
    )
    .await
    .unwrap()
    .unwrap();
    let operator = store.operator_by_email(email).await.unwrap().unwrap();
    let token = kept_server::console::session::open(
        store.as_ref(),
        &operator,
        state.console.lifetimes,
        NOW,
    )
    .await
    .unwrap();
    let router = kept_server::router(state.clone());
    let cookie = format!("{}={token}", kept_server::console::session::COOKIE);
    let mut times = Vec::new();
    let mut size = 0;
    for round in 0..=rounds {
        let req = Request::get("/admin")
            .header(header::HOST, "127.0.0.1")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap();
        let start = Instant::now();
        let response = router.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let t = start.elapsed();
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        size = body.len();
        // The first round warms up and is not counted.
        if round > 0 {
            times.push(t);
        }
    }
    times.sort_unstable();
    let kept = p(&times, 0.5);
    let mut aggregates = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        let tally = snapshot.consent_tally();
        let days = snapshot.consent_days(NOW, DAYS as usize);
        aggregates.push(start.elapsed());
        std::hint::black_box((tally, days));
    }
    aggregates.sort_unstable();
    println!(
        "  Kept page: p50 {:.2} ms, p95 {:.2} ms ({size} bytes); the index's aggregates alone p50 {:.2} ms",
        ms(kept),
        ms(p(&times, 0.95)),
        ms(p(&aggregates, 0.5))
    );

    let lite = sqlite(n, rounds, &figures).await;
    let pg = postgres(n, rounds, &figures).await;
    println!();
    println!(
        "  {:<28} {:>10} {:>10}",
        "the same numbers", "p50 (ms)", "× Kept"
    );
    println!(
        "  {:<28} {:>10.2} {:>10}",
        "Kept, whole page",
        ms(kept),
        "1"
    );
    for (name, t) in [
        ("SQLite, aggregates only", lite),
        ("PostgreSQL, aggregates only", pg),
    ] {
        match t {
            Some(t) => println!(
                "  {:<28} {:>10.2} {:>9.1}x",
                name,
                ms(t),
                t.as_secs_f64() / kept.as_secs_f64()
            ),
            None => println!("  {name:<28} {:>10} {:>10}", "-", "-"),
        }
    }
    println!(
        "  goal: p50 ≤ {} ms for the page: {}",
        GOAL.as_millis(),
        if kept <= GOAL { "met" } else { "NOT met" }
    );
    store.close().await.unwrap();
}

/// A subject's row: id, regime, and its one consent record (channel, action, time), if any.
type SubjectRow = (
    u32,
    &'static str,
    Option<(Option<&'static str>, &'static str, i64)>,
);

/// The rows both databases hold: subjects with their regime, consents with their time.
fn rows(n: u32) -> impl Iterator<Item = SubjectRow> {
    (0..n).map(|id| {
        let p = person(SEED, id);
        let consent = p
            .consent
            .map(|(channel, action)| (channel, action_name(action), consent_at(id)));
        (id, PLACES[p.place].2, consent)
    })
}

/// The SQL the databases answer, with `?` placeholders (`$n` on PostgreSQL).
const BY_SCOPE_ANY: &str = "SELECT s.regime, c.action, count(*) FROM subjects s \
     LEFT JOIN consents c ON c.subject = s.id AND c.purpose = ? AND c.channel IS NULL \
     GROUP BY s.regime, c.action";
const BY_SCOPE_CHANNEL: &str = "SELECT s.regime, c.action, count(*) FROM subjects s \
     LEFT JOIN consents c ON c.subject = s.id AND c.purpose = ? \
     AND (c.channel IS NULL OR c.channel = ?) GROUP BY s.regime, c.action";
const BY_REGIME: &str = "SELECT regime, count(*) FROM subjects GROUP BY regime";
const BY_DAY: &str = "SELECT at / 86400000, action = 'given', count(*) FROM consents \
     WHERE at > ? GROUP BY 1, 2 ORDER BY 1";

/// Folds (regime, action, count) rows of one scope into the figures.
fn fold(
    states: &mut BTreeMap<(String, Option<String>, String), [u64; 4]>,
    channel: Option<&str>,
    rows: Vec<(String, Option<String>, i64)>,
) {
    for (regime, action, count) in rows {
        let e = states
            .entry((
                common::MARKETING.to_owned(),
                channel.map(Into::into),
                regime,
            ))
            .or_default();
        let i = match action.as_deref() {
            Some("given") => 0,
            Some("withdrawn") => 1,
            Some(_) => 2,
            None => 3,
        };
        e[i] += u64::try_from(count).unwrap();
    }
}

fn fold_days(rows: Vec<(i64, bool, i64)>) -> Vec<(i64, u64, u64)> {
    let mut days: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
    for (day, yes, count) in rows {
        let e = days.entry(day).or_default();
        if yes {
            e.0 += u64::try_from(count).unwrap();
        } else {
            e.1 += u64::try_from(count).unwrap();
        }
    }
    days.into_iter().map(|(d, (y, n))| (d, y, n)).collect()
}

async fn sqlite(n: u32, rounds: usize, kept: &Figures) -> Option<Duration> {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
    use sqlx::{ConnectOptions, Connection, Executor};
    let dir = tempfile::tempdir().unwrap();
    let mut db = SqliteConnectOptions::new()
        .filename(dir.path().join("peer.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Off)
        .synchronous(SqliteSynchronous::Off)
        .connect()
        .await
        .unwrap();
    db.execute(
        "PRAGMA cache_size = -1000000;
         CREATE TABLE subjects (id INTEGER PRIMARY KEY, regime TEXT NOT NULL);
         CREATE TABLE consents (subject INTEGER NOT NULL, purpose TEXT NOT NULL, channel TEXT,
                                action TEXT NOT NULL, at INTEGER NOT NULL);",
    )
    .await
    .unwrap();
    let start = Instant::now();
    let mut tx = db.begin().await.unwrap();
    for (id, regime, consent) in rows(n) {
        sqlx::query("INSERT INTO subjects VALUES (?, ?)")
            .bind(i64::from(id))
            .bind(regime)
            .execute(&mut *tx)
            .await
            .unwrap();
        if let Some((channel, action, at)) = consent {
            sqlx::query("INSERT INTO consents VALUES (?, ?, ?, ?, ?)")
                .bind(i64::from(id))
                .bind(common::MARKETING)
                .bind(channel)
                .bind(action)
                .bind(at)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
    }
    tx.commit().await.unwrap();
    db.execute(
        "CREATE INDEX consents_by_subject ON consents (subject, purpose, channel);
         CREATE INDEX consents_by_time ON consents (at);
         CREATE INDEX subjects_by_regime ON subjects (regime);
         ANALYZE;",
    )
    .await
    .unwrap();
    println!(
        "  SQLite: loaded and indexed in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let mut times = Vec::new();
    for round in 0..=rounds.min(10) {
        let start = Instant::now();
        let mut states = BTreeMap::new();
        let any: Vec<(String, Option<String>, i64)> = sqlx::query_as(BY_SCOPE_ANY)
            .bind(common::MARKETING)
            .fetch_all(&mut db)
            .await
            .unwrap();
        fold(&mut states, None, any);
        let email: Vec<(String, Option<String>, i64)> = sqlx::query_as(BY_SCOPE_CHANNEL)
            .bind(common::MARKETING)
            .bind("email")
            .fetch_all(&mut db)
            .await
            .unwrap();
        fold(&mut states, Some("email"), email);
        let regimes: Vec<(String, i64)> =
            sqlx::query_as(BY_REGIME).fetch_all(&mut db).await.unwrap();
        let days: Vec<(i64, bool, i64)> = sqlx::query_as(BY_DAY)
            .bind(NOW - DAYS * DAY)
            .fetch_all(&mut db)
            .await
            .unwrap();
        let t = start.elapsed();
        std::hint::black_box(regimes);
        let figures = Figures {
            states,
            days: fold_days(days),
        };
        assert_eq!(&figures, kept, "SQLite and Kept disagree");
        if round > 0 {
            times.push(t);
        }
    }
    times.sort_unstable();
    Some(p(&times, 0.5))
}

async fn postgres(n: u32, rounds: usize, kept: &Figures) -> Option<Duration> {
    use sqlx::{Connection, Executor, PgConnection};
    use std::fmt::Write as _;
    let url = std::env::var("KEPT_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut db = match PgConnection::connect(&url).await {
        Ok(db) => db,
        Err(e) => {
            println!("  PostgreSQL skipped: cannot connect ({e}); set KEPT_BENCH_DATABASE_URL");
            return None;
        }
    };
    let schema = format!("kept_bench_overview_{}", std::process::id());
    db.execute(
        format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
             SET search_path = {schema};
             CREATE UNLOGGED TABLE subjects (id bigint PRIMARY KEY, regime text NOT NULL);
             CREATE UNLOGGED TABLE consents (subject bigint NOT NULL, purpose text NOT NULL,
                                             channel text, action text NOT NULL, at bigint NOT NULL);"
        )
        .as_str(),
    )
    .await
    .unwrap();
    let start = Instant::now();
    let (mut subjects, mut consents) = (String::new(), String::new());
    for (id, regime, consent) in rows(n) {
        let _ = writeln!(subjects, "{id}\t{regime}");
        if let Some((channel, action, at)) = consent {
            let channel = channel.unwrap_or("\\N");
            let _ = writeln!(
                consents,
                "{id}\t{}\t{channel}\t{action}\t{at}",
                common::MARKETING
            );
        }
    }
    for (table, text) in [("subjects", subjects), ("consents", consents)] {
        let mut copy = db
            .copy_in_raw(format!("COPY {table} FROM STDIN").as_str())
            .await
            .unwrap();
        copy.send(text.into_bytes()).await.unwrap();
        copy.finish().await.unwrap();
    }
    db.execute(
        "CREATE INDEX consents_by_subject ON consents (subject, purpose, channel);
         CREATE INDEX consents_by_time ON consents (at);
         CREATE INDEX subjects_by_regime ON subjects (regime);
         ANALYZE subjects, consents;",
    )
    .await
    .unwrap();
    println!(
        "  PostgreSQL: loaded and indexed in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let pg = |sql: &str| {
        let mut i = 0;
        sql.chars()
            .map(|c| {
                if c == '?' {
                    i += 1;
                    format!("${i}")
                } else {
                    c.to_string()
                }
            })
            .collect::<String>()
    };
    let (any_sql, email_sql, day_sql) = (pg(BY_SCOPE_ANY), pg(BY_SCOPE_CHANNEL), pg(BY_DAY));
    let mut times = Vec::new();
    for round in 0..=rounds.min(10) {
        let start = Instant::now();
        let mut states = BTreeMap::new();
        let any: Vec<(String, Option<String>, i64)> = sqlx::query_as(&any_sql)
            .bind(common::MARKETING)
            .fetch_all(&mut db)
            .await
            .unwrap();
        fold(&mut states, None, any);
        let email: Vec<(String, Option<String>, i64)> = sqlx::query_as(&email_sql)
            .bind(common::MARKETING)
            .bind("email")
            .fetch_all(&mut db)
            .await
            .unwrap();
        fold(&mut states, Some("email"), email);
        let regimes: Vec<(String, i64)> =
            sqlx::query_as(BY_REGIME).fetch_all(&mut db).await.unwrap();
        let days: Vec<(i64, bool, i64)> = sqlx::query_as(&day_sql)
            .bind(NOW - DAYS * DAY)
            .fetch_all(&mut db)
            .await
            .unwrap();
        let t = start.elapsed();
        std::hint::black_box(regimes);
        let figures = Figures {
            states,
            days: fold_days(days),
        };
        assert_eq!(&figures, kept, "PostgreSQL and Kept disagree");
        if round > 0 {
            times.push(t);
        }
    }
    db.execute(format!("DROP SCHEMA {schema} CASCADE").as_str())
        .await
        .unwrap();
    times.sort_unstable();
    Some(p(&times, 0.5))
}
