//! `kept dsr find` and `kept dsr erase [--dry-run]` as an operator runs them, on the fixture
//! shop in PostgreSQL (`SHOP_POSTGRES_URL`, a database of the test's own on that server). The
//! connectors' own tests cover MariaDB/MySQL and the failures.

use kept_core::manifest::demo_toml;
use serde_json::Value;
use sqlx::Connection;
use std::path::Path;
use std::process::{Command, Output};

const SHOP_TOML: &str = include_str!("../../../../tests/fixtures/shop/kept.toml");
const POSTGRES_SQL: &str = include_str!("../../../../tests/fixtures/shop/postgres.sql");

fn kept(args: &[&str], dir: &Path, shop_url: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kept"));
    command
        .args(args)
        .args(["--manifest", "kept.toml", "--database-url", "kept.db"])
        .current_dir(dir)
        .env_remove("SHOP_MYSQL_URL")
        .env_remove("SHOP_POSTGRES_URL");
    if let Some(url) = shop_url {
        command.env("SHOP_POSTGRES_URL", url);
    }
    command.output().expect("run kept")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(output)))
}

fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kept.toml"),
        format!("{}\n{SHOP_TOML}", demo_toml()),
    )
    .unwrap();
    dir
}

#[test]
fn a_dataset_whose_variable_is_unset_fails_naming_it() {
    let dir = workdir();
    let output = kept(
        &[
            "dsr",
            "find",
            "--email",
            "ada@example.com",
            "--dataset",
            "shop_mysql",
        ],
        dir.path(),
        None,
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains(
            "the environment variable `SHOP_MYSQL_URL` that should hold its URL is not set"
        ),
        "{}",
        text(&output)
    );

    let output = kept(&["dsr", "find", "--dataset", "shop"], dir.path(), None);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output).contains("--email, --phone or --user-id"),
        "{}",
        text(&output)
    );
}

#[tokio::test]
async fn find_then_dry_run_then_erase() {
    let Ok(server) = std::env::var("SHOP_POSTGRES_URL") else {
        eprintln!(
            "skipped: SHOP_POSTGRES_URL is not set, so there is no PostgreSQL shop to test against (.ci/run sets it)"
        );
        return;
    };
    let name = format!("kept_shop_cli_{}", std::process::id());
    let host_end = server.rfind('/').unwrap();
    let url = format!("{}/{name}", &server[..host_end]);
    let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name}; "))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(&format!(
        "SET client_min_messages = warning; {POSTGRES_SQL}"
    ))
    .execute(&mut db)
    .await
    .unwrap();
    let dir = workdir();
    let subject = ["--email", "ada@example.com", "--dataset", "shop"];

    let mut args = vec!["dsr", "find"];
    args.extend(subject);
    args.extend(["--format", "json"]);
    let output = kept(&args, dir.path(), Some(&url));
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let report = json(&output);
    let rows: usize = report["found"][0]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["rows"].as_array().unwrap().len())
        .sum();
    assert_eq!(rows, 12, "{report:#}");
    assert!(
        text(&output).contains("shop: 12 rows in 5 tables"),
        "{}",
        text(&output)
    );

    let mut args = vec!["dsr", "erase", "--dry-run"];
    args.extend(subject);
    let output = kept(&args, dir.path(), Some(&url));
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let shown = text(&output);
    assert!(
        shown.contains("would delete 5 rows and update 3; nothing was changed"),
        "{shown}"
    );
    assert!(
        shown.contains("kept for essential.legal_obligation: currency, id, placed_at, total_cents"),
        "{shown}"
    );
    assert!(shown.contains("email: hashed to kept:"), "{shown}");
    let customers: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM customers")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(customers, 2, "the dry run changed the database");

    let mut args = vec!["dsr", "erase"];
    args.extend(subject);
    args.extend(["--format", "json"]);
    let output = kept(&args, dir.path(), Some(&url));
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let report = json(&output);
    assert_eq!(report["erased"][0]["rows_deleted"], 5, "{report:#}");
    assert_eq!(report["erased"][0]["rows_updated"], 3, "{report:#}");
    let left: Vec<String> = sqlx::query_scalar("SELECT email FROM customers")
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert_eq!(left, ["bob@example.com"]);
    // The keyed hash comes from Kept's own master secret, the same on every run.
    let hashed: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT email FROM orders WHERE id <> 102")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(hashed.len(), 1);
    assert!(hashed[0].starts_with("kept:"), "{hashed:?}");

    drop(db);
    let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await;
}
