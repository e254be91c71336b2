//! The connectors' share of an access export: `find` over the fixture shop's five tables for a
//! subject with many rows (1,000 orders of 5 lines each, 200 tickets and addresses), on
//! PostgreSQL (`SHOP_POSTGRES_URL`) and MariaDB/MySQL (`SHOP_MYSQL_URL`), against the target
//! of issue 11 (p50 ≤ 200 ms for the whole export). Each table costs one query whatever its
//! rows, so the figure is a handful of round trips plus the rows' transfer.
//!
//!   SHOP_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/kept_shop \
//!   SHOP_MYSQL_URL=mysql://root@127.0.0.1:3306/kept_shop \
//!   cargo bench -p kept-connect --bench walk
//!
//! It loads its own copy of the fixture into `kept_shop_bench` on each server.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "benchmark code: a failure is a failed run"
)]

use kept_connect::{Connector, Subject};
use kept_core::identity::IdentifierKind;
use kept_core::manifest::dataset::{DatabaseKind, Dataset};
use kept_core::manifest::{demo_toml, load};
use sqlx::Connection;
use std::time::{Duration, Instant};

const SHOP_TOML: &str = include_str!("../../../tests/fixtures/shop/kept.toml");
const POSTGRES_SQL: &str = include_str!("../../../tests/fixtures/shop/postgres.sql");
const MYSQL_SQL: &str = include_str!("../../../tests/fixtures/shop/mysql.sql");
const ORDERS: u32 = 1_000;
const LINES_PER_ORDER: u32 = 5;
const TICKETS: u32 = 200;
const ADDRESSES: u32 = 200;
const ROUNDS: usize = 50;
const TARGET: Duration = Duration::from_millis(200);

fn dataset(kind: DatabaseKind) -> Dataset {
    let source = format!("{}\n{SHOP_TOML}", demo_toml());
    load(&source, "kept.toml")
        .unwrap()
        .manifest
        .datasets
        .into_iter()
        .find(|d| d.kind == kind)
        .unwrap()
}

/// The fixture plus the subject's many rows (ids from 10,000 up), in one script.
fn seed_sql(kind: DatabaseKind) -> String {
    let mut sql = String::from(match kind {
        DatabaseKind::Postgres => POSTGRES_SQL,
        DatabaseKind::Mysql => MYSQL_SQL,
    });
    let ts = match kind {
        DatabaseKind::Postgres => "2026-05-01T10:00:00Z",
        DatabaseKind::Mysql => "2026-05-01 10:00:00",
    };
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
    sql
}

fn with_database(url: &str, name: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let host_end = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    format!("{}/{name}", &url[..host_end])
}

async fn prepare(kind: DatabaseKind, server: &str) -> String {
    let url = with_database(server, "kept_shop_bench");
    match kind {
        DatabaseKind::Postgres => {
            let mut admin = sqlx::PgConnection::connect(server).await.unwrap();
            sqlx::raw_sql("DROP DATABASE IF EXISTS kept_shop_bench WITH (FORCE)")
                .execute(&mut admin)
                .await
                .unwrap();
            sqlx::raw_sql("CREATE DATABASE kept_shop_bench")
                .execute(&mut admin)
                .await
                .unwrap();
            let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
            let sql = format!(
                "SET client_min_messages = warning; {}; ANALYZE;",
                seed_sql(kind)
            );
            sqlx::raw_sql(&sql).execute(&mut db).await.unwrap();
        }
        DatabaseKind::Mysql => {
            let mut admin = sqlx::MySqlConnection::connect(server).await.unwrap();
            sqlx::raw_sql(
                "DROP DATABASE IF EXISTS kept_shop_bench; CREATE DATABASE kept_shop_bench",
            )
            .execute(&mut admin)
            .await
            .unwrap();
            let mut db = sqlx::MySqlConnection::connect(&url).await.unwrap();
            sqlx::raw_sql(&seed_sql(kind))
                .execute(&mut db)
                .await
                .unwrap();
        }
    }
    url
}

async fn run(kind: DatabaseKind, env: &str) {
    let Some(server) = std::env::var(env).ok().filter(|u| !u.is_empty()) else {
        println!("{kind}: skipped, {env} is not set");
        return;
    };
    let url = prepare(kind, &server).await;
    let dataset = dataset(kind);
    let lookup = move |name: &str| (name == dataset_env(kind)).then(|| url.clone());
    let mut connector = Connector::open(&dataset, &lookup).await.unwrap();
    let subject = Subject::new()
        .with(IdentifierKind::Email, "ada@example.com")
        .unwrap();
    // Warm the connection's statement cache as a server's pool would be.
    let rows = connector.find(&subject).await.unwrap().rows();
    let mut times = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let found = connector.find(&subject).await.unwrap();
        times.push(started.elapsed());
        assert_eq!(found.rows(), rows);
    }
    times.sort();
    let p50 = times[ROUNDS / 2];
    let p95 = times[ROUNDS * 95 / 100];
    println!(
        "{kind}: find over 5 tables, {rows} rows: p50 {:.1} ms, p95 {:.1} ms ({ROUNDS} rounds); target p50 ≤ {} ms for the whole export: {:.0}% of it",
        p50.as_secs_f64() * 1e3,
        p95.as_secs_f64() * 1e3,
        TARGET.as_millis(),
        p50.as_secs_f64() / TARGET.as_secs_f64() * 100.0
    );
}

fn dataset_env(kind: DatabaseKind) -> &'static str {
    match kind {
        DatabaseKind::Postgres => "SHOP_POSTGRES_URL",
        DatabaseKind::Mysql => "SHOP_MYSQL_URL",
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        run(DatabaseKind::Postgres, "SHOP_POSTGRES_URL").await;
        run(DatabaseKind::Mysql, "SHOP_MYSQL_URL").await;
    });
}
