//! Audience evaluation (a campaign dry run: marketing.communications by email over every
//! subject, across regimes, with weekly frequency caps) on the index at 1M and 10M synthetic
//! subjects, beside the same audience as one SQL query with indexes at 1M on SQLite and on
//! PostgreSQL. Prints the times, the ratios and the index memory per subject. Kept's and each
//! database's eligible counts must match, or the benchmark stops.
//!
//! cargo bench -p kept-core --bench audiences
//! (KEPT_BENCH_SIZES=1000000,10000000 and KEPT_BENCH_SQL=1000000 by default, 0 skips the SQL
//! peers; PostgreSQL at KEPT_BENCH_DATABASE_URL, by default the local server, is skipped with a
//! note when it does not answer)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "bench code: a failed setup step ends the benchmark"
)]

mod common;

use common::*;
use kept_core::SubjectId;
use kept_core::audience::{AudienceRequest, Candidates, PlaceFilter, evaluate};
use kept_core::index::Index;
use kept_core::ledger::ConsentAction;
use kept_core::regime::Regime;
use rusqlite::{Connection, params};
use std::time::Duration;

const SEED: u64 = 42;

fn campaign(candidates: Candidates) -> AudienceRequest {
    AudienceRequest {
        purpose: MARKETING.into(),
        channel: Some("email".into()),
        topic: None,
        categories: vec![],
        candidates,
        sample_size: 10,
    }
}

fn median(mut d: Vec<Duration>) -> Duration {
    d.sort_unstable();
    d[d.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct KeptRun {
    eligible: u64,
    all: Duration,
    filtered: Duration,
}

fn kept(n: u32) -> KeptRun {
    let ctx = compiled();
    let mut seq = 0u64;
    let (index, build) = time(|| {
        Index::build(
            ctx,
            (0..n).flat_map(|i| changes(&person(SEED, i), &mut seq)),
        )
    });
    let snapshot = index.snapshot();
    let memory = snapshot.memory();
    println!(
        "  {n} subjects: index built in {:.1} s; memory {:.1} bytes per subject ({:.0} MiB)",
        build.as_secs_f64(),
        memory.bytes_per_subject,
        (memory.bitmap_bytes + memory.entry_bytes) as f64 / (1024.0 * 1024.0)
    );
    let all = campaign(Candidates::All);
    let filtered = campaign(Candidates::Where(PlaceFilter {
        regimes: vec![Regime::UsState, Regime::Ccpa],
        regions: vec![],
    }));
    let result = evaluate(&snapshot, &all, NOW);
    let repeat: usize = std::env::var("KEPT_BENCH_REPEAT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(11);
    let mut times = Vec::new();
    for _ in 0..repeat {
        let (r, t) = time(|| evaluate(&snapshot, &all, NOW));
        assert_eq!(r.eligible_count, result.eligible_count);
        times.push(t);
    }
    let mut filtered_times = Vec::new();
    for _ in 0..11 {
        let (_, t) = time(|| evaluate(&snapshot, &filtered, NOW));
        filtered_times.push(t);
    }
    if n <= 1_000_000 {
        // The bitmaps must agree with deciding subject by subject.
        let q = snapshot.prepare(&all.decision_request());
        let one_by_one = (0..n)
            .filter(|i| snapshot.decide_prepared(SubjectId(*i), &q, NOW).allowed)
            .count() as u64;
        assert_eq!(one_by_one, result.eligible_count);
    }
    println!(
        "    eligible {} of {n}; excluded: {}",
        result.eligible_count,
        result
            .excluded
            .iter()
            .map(|(r, c)| format!("{r} {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    KeptRun {
        eligible: result.eligible_count,
        all: median(times),
        filtered: median(filtered_times),
    }
}

const SQL: &str = "
SELECT s.id FROM subjects s
LEFT JOIN consents c ON c.subject = s.id AND c.purpose = 'marketing.communications'
    AND (c.channel IS NULL OR c.channel = 'email')
WHERE s.erasure = 0 AND s.suppressed = 0
  AND EXISTS (SELECT 1 FROM provenance p WHERE p.subject = s.id
              AND p.category = 'user.contact.email' AND p.point = 'newsletter_signup')
  AND (
        c.action = 'given'
     OR (c.action IS NULL AND s.regime = 'us')
     OR (c.action IS NULL AND s.regime IN ('gdpr', 'uk_gdpr', 'ccpa', 'us_state')
         AND EXISTS (SELECT 1 FROM provenance p WHERE p.subject = s.id
                     AND p.category = 'user.contact.email' AND p.point = 'checkout'))
  )
  AND NOT EXISTS (
    SELECT 1 FROM preferences f WHERE f.subject = s.id AND f.channel = 'email'
      AND f.max <= (SELECT count(*) FROM contacts k WHERE k.subject = s.id AND k.channel = 'email'
                    AND k.at > ?1 - f.period_ms AND k.at <= ?1))
";

/// One row of the SQL peers' tables, for the same population the index is built from.
enum Row {
    Subject {
        id: u32,
        regime: &'static str,
        erasure: bool,
        suppressed: bool,
    },
    /// The email collected at this point (`newsletter_signup` or `checkout`).
    Provenance {
        id: u32,
        point: &'static str,
    },
    Consent {
        id: u32,
        channel: Option<&'static str>,
        action: &'static str,
        seq: i64,
    },
    /// A cap of two marketing emails a week.
    Cap {
        id: u32,
    },
    Contact {
        id: u32,
        at: i64,
    },
}

/// Every row of the first `n` synthetic people, in the order both loaders write them.
fn rows(n: u32) -> impl Iterator<Item = Row> {
    let mut seq = 0;
    (0..n).flat_map(move |i| {
        let p = person(SEED, i);
        let mut out = vec![Row::Subject {
            id: p.id,
            regime: PLACES[p.place].2,
            erasure: p.erasure,
            suppressed: p.suppressed,
        }];
        if p.email_newsletter {
            out.push(Row::Provenance {
                id: p.id,
                point: "newsletter_signup",
            });
        }
        if p.email_checkout {
            out.push(Row::Provenance {
                id: p.id,
                point: "checkout",
            });
        }
        if let Some((channel, action)) = p.consent {
            seq += 1;
            let action = match action {
                ConsentAction::Given => "given",
                ConsentAction::Withdrawn => "withdrawn",
                _ => "opted_out",
            };
            out.push(Row::Consent {
                id: p.id,
                channel,
                action,
                seq,
            });
        }
        if p.capped {
            out.push(Row::Cap { id: p.id });
            out.extend(p.sends.iter().map(|at| Row::Contact { id: p.id, at: *at }));
        }
        out
    })
}

fn sqlite(n: u32) -> (u64, Duration, Duration) {
    let path = std::env::temp_dir().join(format!("kept-bench-audience-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut db = Connection::open(&path).unwrap();
    db.execute_batch(
        "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -1000000;
         CREATE TABLE subjects (id INTEGER PRIMARY KEY, regime TEXT NOT NULL,
                                erasure INTEGER NOT NULL, suppressed INTEGER NOT NULL);
         CREATE TABLE provenance (subject INTEGER NOT NULL, category TEXT NOT NULL, point TEXT NOT NULL);
         CREATE TABLE consents (subject INTEGER NOT NULL, purpose TEXT NOT NULL, channel TEXT,
                                action TEXT NOT NULL, seq INTEGER NOT NULL);
         CREATE TABLE preferences (subject INTEGER NOT NULL, channel TEXT NOT NULL,
                                   max INTEGER NOT NULL, period_ms INTEGER NOT NULL);
         CREATE TABLE contacts (subject INTEGER NOT NULL, channel TEXT NOT NULL, at INTEGER NOT NULL);",
    )
    .unwrap();
    let (_, load) = time(|| {
        let tx = db.transaction().unwrap();
        {
            let mut subject = tx
                .prepare("INSERT INTO subjects VALUES (?1, ?2, ?3, ?4)")
                .unwrap();
            let mut provenance = tx
                .prepare("INSERT INTO provenance VALUES (?1, ?2, ?3)")
                .unwrap();
            let mut consent = tx
                .prepare("INSERT INTO consents VALUES (?1, ?2, ?3, ?4, ?5)")
                .unwrap();
            let mut pref = tx
                .prepare("INSERT INTO preferences VALUES (?1, 'email', 2, ?2)")
                .unwrap();
            let mut contact = tx
                .prepare("INSERT INTO contacts VALUES (?1, 'email', ?2)")
                .unwrap();
            for row in rows(n) {
                match row {
                    Row::Subject {
                        id,
                        regime,
                        erasure,
                        suppressed,
                    } => subject.execute(params![id, regime, erasure, suppressed]),
                    Row::Provenance { id, point } => {
                        provenance.execute(params![id, "user.contact.email", point])
                    }
                    Row::Consent {
                        id,
                        channel,
                        action,
                        seq,
                    } => consent.execute(params![id, MARKETING, channel, action, seq]),
                    Row::Cap { id } => pref.execute(params![id, 7 * DAY]),
                    Row::Contact { id, at } => contact.execute(params![id, at]),
                }
                .unwrap();
            }
        }
        tx.commit().unwrap();
        db.execute_batch(
            "CREATE INDEX provenance_by_subject ON provenance (subject, category, point);
             CREATE INDEX consents_by_subject ON consents (subject, purpose, channel);
             CREATE INDEX preferences_by_subject ON preferences (subject, channel);
             CREATE INDEX contacts_by_subject ON contacts (subject, channel, at);
             ANALYZE;",
        )
        .unwrap();
    });
    let run = |db: &Connection| -> Vec<i64> {
        let mut stmt = db.prepare_cached(SQL).unwrap();
        stmt.query_map(params![NOW], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let ids = run(&db);
    let mut times = Vec::new();
    for _ in 0..5 {
        let (r, t) = time(|| run(&db));
        assert_eq!(r.len(), ids.len());
        times.push(t);
    }
    drop(db);
    let _ = std::fs::remove_file(&path);
    (ids.len() as u64, load, median(times))
}

/// The same query for PostgreSQL: booleans are booleans and the parameter is `$1`.
fn pg_sql() -> String {
    SQL.replace(
        "s.erasure = 0 AND s.suppressed = 0",
        "NOT s.erasure AND NOT s.suppressed",
    )
    .replace("?1", "$1")
}

/// The same population and query on PostgreSQL, loaded with COPY into a schema of its own that
/// is dropped afterwards. `None` (with a note) when no server answers.
fn postgres(n: u32) -> Option<(u64, Duration, Duration)> {
    use sqlx::{Connection, Executor, PgConnection};
    use std::fmt::Write as _;

    let url = std::env::var("KEPT_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut db = match PgConnection::connect(&url).await {
            Ok(db) => db,
            Err(e) => {
                println!("  PostgreSQL skipped: cannot connect ({e}); set KEPT_BENCH_DATABASE_URL");
                return None;
            }
        };
        let schema = format!("kept_bench_audience_{}", std::process::id());
        db.execute(
            format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
                 SET search_path = {schema};
                 CREATE UNLOGGED TABLE subjects (id bigint PRIMARY KEY, regime text NOT NULL,
                                        erasure boolean NOT NULL, suppressed boolean NOT NULL);
                 CREATE UNLOGGED TABLE provenance (subject bigint NOT NULL, category text NOT NULL,
                                                   point text NOT NULL);
                 CREATE UNLOGGED TABLE consents (subject bigint NOT NULL, purpose text NOT NULL,
                                        channel text, action text NOT NULL, seq bigint NOT NULL);
                 CREATE UNLOGGED TABLE preferences (subject bigint NOT NULL, channel text NOT NULL,
                                           max bigint NOT NULL, period_ms bigint NOT NULL);
                 CREATE UNLOGGED TABLE contacts (subject bigint NOT NULL, channel text NOT NULL,
                                                 at bigint NOT NULL);"
            )
            .as_str(),
        )
        .await
        .unwrap();
        let start = std::time::Instant::now();
        let (mut subjects, mut provenance, mut consents, mut preferences, mut contacts) = (
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        );
        for row in rows(n) {
            let _ = match row {
                Row::Subject {
                    id,
                    regime,
                    erasure,
                    suppressed,
                } => {
                    writeln!(subjects, "{id}\t{regime}\t{erasure}\t{suppressed}")
                }
                Row::Provenance { id, point } => {
                    writeln!(provenance, "{id}\tuser.contact.email\t{point}")
                }
                Row::Consent {
                    id,
                    channel,
                    action,
                    seq,
                } => {
                    let channel = channel.unwrap_or("\\N");
                    writeln!(consents, "{id}\t{MARKETING}\t{channel}\t{action}\t{seq}")
                }
                Row::Cap { id } => writeln!(preferences, "{id}\temail\t2\t{}", 7 * DAY),
                Row::Contact { id, at } => writeln!(contacts, "{id}\temail\t{at}"),
            };
        }
        for (table, text) in [
            ("subjects", subjects),
            ("provenance", provenance),
            ("consents", consents),
            ("preferences", preferences),
            ("contacts", contacts),
        ] {
            let mut copy = db
                .copy_in_raw(format!("COPY {table} FROM STDIN").as_str())
                .await
                .unwrap();
            copy.send(text.into_bytes()).await.unwrap();
            copy.finish().await.unwrap();
        }
        db.execute(
            "CREATE INDEX provenance_by_subject ON provenance (subject, category, point);
             CREATE INDEX consents_by_subject ON consents (subject, purpose, channel);
             CREATE INDEX preferences_by_subject ON preferences (subject, channel);
             CREATE INDEX contacts_by_subject ON contacts (subject, channel, at);
             ANALYZE subjects, provenance, consents, preferences, contacts;",
        )
        .await
        .unwrap();
        let load = start.elapsed();
        let query = pg_sql();
        let mut eligible = None;
        let mut times = Vec::new();
        for _ in 0..6 {
            let start = std::time::Instant::now();
            let rows: Vec<(i64,)> = sqlx::query_as(&query)
                .bind(NOW)
                .fetch_all(&mut db)
                .await
                .unwrap();
            let t = start.elapsed();
            match eligible {
                // The first run warms the cache and is not counted.
                None => eligible = Some(rows.len() as u64),
                Some(e) => {
                    assert_eq!(e, rows.len() as u64);
                    times.push(t);
                }
            }
        }
        db.execute(format!("DROP SCHEMA {schema} CASCADE").as_str())
            .await
            .unwrap();
        Some((eligible.unwrap_or(0), load, median(times)))
    })
}

fn main() {
    let sizes: Vec<u32> = std::env::var("KEPT_BENCH_SIZES")
        .unwrap_or_else(|_| "1000000,10000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let sql_n: u32 = std::env::var("KEPT_BENCH_SQL")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    println!(
        "audiences: marketing.communications by email, all subjects, six regimes, weekly caps"
    );
    let mut rows = Vec::new();
    for n in &sizes {
        rows.push((*n, kept(*n)));
    }
    let lite = (sql_n > 0).then(|| {
        let (eligible, load, query) = sqlite(sql_n);
        println!(
            "  SQLite {sql_n} subjects: loaded and indexed in {:.1} s; eligible {eligible}",
            load.as_secs_f64()
        );
        (eligible, query)
    });
    let pg = (sql_n > 0)
        .then(|| postgres(sql_n))
        .flatten()
        .map(|(eligible, load, query)| {
            println!(
                "  PostgreSQL {sql_n} subjects: loaded and indexed in {:.1} s; eligible {eligible}",
                load.as_secs_f64()
            );
            (eligible, query)
        });
    println!();
    println!(
        "  {:<10} {:>13} {:>19} {:>12} {:>8} {:>16} {:>8}",
        "subjects",
        "Kept all (ms)",
        "Kept US filter (ms)",
        "SQLite (ms)",
        "ratio",
        "PostgreSQL (ms)",
        "ratio"
    );
    let peer = |name: &str, run: Option<(u64, Duration)>, n: u32, k: &KeptRun| match run {
        Some((eligible, query)) if n == sql_n => {
            assert_eq!(eligible, k.eligible, "{name} and Kept disagree");
            (
                format!("{:.1}", ms(query)),
                format!("{:.0}x", query.as_secs_f64() / k.all.as_secs_f64()),
            )
        }
        _ => ("-".into(), "-".into()),
    };
    for (n, k) in &rows {
        let (sqlite_ms, sqlite_ratio) = peer("SQLite", lite, *n, k);
        let (pg_ms, pg_ratio) = peer("PostgreSQL", pg, *n, k);
        println!(
            "  {:<10} {:>13.2} {:>19.2} {:>12} {:>8} {:>16} {:>8}",
            n,
            ms(k.all),
            ms(k.filtered),
            sqlite_ms,
            sqlite_ratio,
            pg_ms,
            pg_ratio
        );
    }
}
