//! `kept ledger verify` against ledgers edited behind Kept's back, and the crash test: a writer
//! killed with SIGKILL mid-load loses nothing it acknowledged. On SQLite always, on PostgreSQL
//! too when `KEPT_TEST_DATABASE_URL` is set.

use kept_core::SubjectId;
use kept_core::ledger::{
    ChainHash, CollectionMethod, ConsentAction, ConsentRecord, Evidence, LedgerEntry, encode,
};
use kept_server::ledger::{Ledger, SigningKey};
use std::collections::BTreeSet;
use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::pin::Pin;
use std::process::{Command, Output, Stdio};

const RECORDS: u32 = 50;
const CHECKPOINT_EVERY: u64 = 10;

fn record(i: u32) -> ConsentRecord {
    ConsentRecord {
        subject: SubjectId(i % 7),
        purpose: "marketing.communications".into(),
        channel: Some("sms".into()),
        topic: None,
        action: ConsentAction::Given,
        notice: None,
        regime: "tcpa".into(),
        source: "test".into(),
        method: CollectionMethod::Written,
        evidence: Evidence {
            reference: Some(format!("form-{i}")),
            ..Evidence::default()
        },
        at: 1_790_000_000_000 + i64::from(i),
    }
}

fn kept(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kept"))
        .args(args)
        .env_remove("KEPT_DATABASE_URL")
        .output()
        .expect("run kept")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A ledger of 50 records with signed checkpoints at 10, 20, …, 50.
async fn write_ledger(url: &str) -> SigningKey {
    let store = kept_server::store::open(url).await.unwrap();
    let key = SigningKey::from_bytes(&[11; 32]);
    let ledger = Ledger::new(store.clone(), key.clone()).with_checkpoint_every(CHECKPOINT_EVERY);
    for i in 1..=RECORDS {
        ledger.append(record(i)).await.unwrap();
    }
    assert_eq!(store.checkpoints().await.unwrap().len(), 5);
    store.close().await.unwrap();
    key
}

/// A database the tests can edit directly, bypassing Kept.
enum Db {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Db {
    async fn connect(url: &str) -> Db {
        if url.starts_with("postgres") {
            Db::Postgres(sqlx::PgPool::connect(url).await.unwrap())
        } else {
            Db::Sqlite(
                sqlx::SqlitePool::connect(&format!("sqlite://{url}"))
                    .await
                    .unwrap(),
            )
        }
    }

    /// Runs `sql` (placeholders `$1`, …) with blob parameters.
    async fn exec(&self, sql: &str, blobs: &[Vec<u8>]) {
        match self {
            Db::Sqlite(pool) => {
                let sql = sql.replace('$', "?");
                let mut q = sqlx::query(&sql);
                for b in blobs {
                    q = q.bind(b.clone());
                }
                q.execute(pool).await.unwrap();
            }
            Db::Postgres(pool) => {
                let mut q = sqlx::query(sql);
                for b in blobs {
                    q = q.bind(b.clone());
                }
                q.execute(pool).await.unwrap();
            }
        }
    }

    /// What an attacker does first: the append-only triggers are in the way.
    async fn drop_guards(&self) {
        match self {
            Db::Sqlite(_) => {
                self.exec("DROP TRIGGER ledger_no_update", &[]).await;
                self.exec("DROP TRIGGER ledger_no_delete", &[]).await;
            }
            Db::Postgres(_) => {
                self.exec("DROP TRIGGER ledger_append_only ON ledger", &[])
                    .await
            }
        }
    }

    async fn close(self) {
        match self {
            Db::Sqlite(pool) => pool.close().await,
            Db::Postgres(pool) => pool.close().await,
        }
    }
}

/// One way of tampering, and what verify must say about it.
struct Tamper {
    name: &'static str,
    /// The first bad record verify must name.
    first_bad: u64,
    code: &'static str,
    apply: fn(&Db) -> Pin<Box<dyn Future<Output = ()> + '_>>,
}

fn tampers() -> Vec<Tamper> {
    vec![
        Tamper {
            name: "a record's bytes edited",
            first_bad: 17,
            code: "ledger.hash",
            apply: |db| {
                Box::pin(async move {
                    let mut forged = record(17);
                    forged.action = ConsentAction::Withdrawn;
                    db.exec(
                        "UPDATE ledger SET bytes = $1 WHERE seq = 17",
                        &[encode(&forged)],
                    )
                    .await;
                })
            },
        },
        Tamper {
            name: "a record's subject column edited",
            first_bad: 23,
            code: "ledger.column",
            apply: |db| {
                Box::pin(db.exec(
                    "UPDATE ledger SET subject_id = subject_id + 1 WHERE seq = 23",
                    &[],
                ))
            },
        },
        Tamper {
            name: "a record's subject column set to no subject id at all",
            first_bad: 26,
            code: "ledger.corrupt_row",
            apply: |db| Box::pin(db.exec("UPDATE ledger SET subject_id = -5 WHERE seq = 26", &[])),
        },
        Tamper {
            name: "a record deleted",
            first_bad: 31,
            code: "ledger.sequence",
            apply: |db| Box::pin(db.exec("DELETE FROM ledger WHERE seq = 31", &[])),
        },
        Tamper {
            name: "the last records deleted",
            first_bad: 48,
            code: "ledger.checkpoint_beyond_end",
            apply: |db| Box::pin(db.exec("DELETE FROM ledger WHERE seq > 47", &[])),
        },
        Tamper {
            name: "two records swapped",
            first_bad: 12,
            code: "ledger.hash",
            apply: |db| {
                Box::pin(async move {
                    db.exec("UPDATE ledger SET seq = -1 WHERE seq = 12", &[])
                        .await;
                    db.exec("UPDATE ledger SET seq = 12 WHERE seq = 13", &[])
                        .await;
                    db.exec("UPDATE ledger SET seq = 13 WHERE seq = -1", &[])
                        .await;
                })
            },
        },
        Tamper {
            name: "a record edited and every later hash recomputed",
            first_bad: 50,
            code: "ledger.checkpoint_mismatch",
            apply: |db| {
                Box::pin(async move {
                    // Rewrite from record 44 on, consistently: only the checkpoint at 50 (signed
                    // with a key the attacker lacks) can tell.
                    let mut prev = ChainHash::GENESIS;
                    for i in 1..=RECORDS {
                        let mut r = record(i);
                        if i == 44 {
                            r.action = ConsentAction::Withdrawn;
                        }
                        let e = LedgerEntry::chain(&prev, u64::from(i), &r);
                        prev = e.hash;
                        if i >= 44 {
                            db.exec(
                                &format!("UPDATE ledger SET bytes = $1, hash = $2 WHERE seq = {i}"),
                                &[e.bytes, e.hash.0.to_vec()],
                            )
                            .await;
                        }
                    }
                })
            },
        },
        Tamper {
            name: "a checkpoint forged with another key",
            first_bad: 20,
            code: "ledger.checkpoint_signature",
            apply: |db| {
                Box::pin(async move {
                    let other = SigningKey::from_bytes(&[12; 32]);
                    let mut prev = ChainHash::GENESIS;
                    for i in 1..=20 {
                        prev = LedgerEntry::chain(&prev, u64::from(i), &record(i)).hash;
                    }
                    let forged = kept_core::ledger::Checkpoint::sign(&other, 20, prev, 0).signature;
                    db.exec(
                        "UPDATE ledger_checkpoints SET signature = $1 WHERE seq = 20",
                        &[forged.to_vec()],
                    )
                    .await;
                })
            },
        },
    ]
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Builds a fresh ledger with `fresh_url()` for every tampering and checks verify's verdict.
fn every_tampering_is_named(fresh_url: &mut dyn FnMut() -> String) {
    let rt = runtime();
    for tamper in tampers() {
        let url = fresh_url();
        let key = rt.block_on(write_ledger(&url));

        let clean = kept(&["ledger", "verify", "--database-url", &url]);
        assert_eq!(
            clean.status.code(),
            Some(0),
            "{}: untouched ledger did not verify: {}",
            tamper.name,
            String::from_utf8_lossy(&clean.stdout)
        );

        rt.block_on(async {
            let db = Db::connect(&url).await;
            db.drop_guards().await;
            (tamper.apply)(&db).await;
            db.close().await;
        });

        let text = kept(&["ledger", "verify", "--database-url", &url]);
        let stdout = String::from_utf8_lossy(&text.stdout);
        assert_eq!(text.status.code(), Some(1), "{}: {stdout}", tamper.name);
        assert!(
            stdout.contains(&format!("first bad record: {}", tamper.first_bad)),
            "{}: {stdout}",
            tamper.name
        );

        // The same verdict with the key given independently, as JSON.
        let public = hex_encode(key.verifying_key().as_bytes());
        let out = kept(&[
            "ledger",
            "verify",
            "--database-url",
            &url,
            "--public-key",
            &public,
            "--format",
            "json",
        ]);
        assert_eq!(out.status.code(), Some(1), "{}", tamper.name);
        let verdict = json(&out);
        assert_eq!(verdict["status"], "tampered", "{}", tamper.name);
        assert_eq!(
            verdict["first_bad_record"], tamper.first_bad,
            "{}: {verdict}",
            tamper.name
        );
        assert_eq!(
            verdict["error"]["code"], tamper.code,
            "{}: {verdict}",
            tamper.name
        );
        assert_eq!(verdict["key_source"], "argument");
    }
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn tampering_on_sqlite_is_detected_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    every_tampering_is_named(&mut || {
        n += 1;
        dir.path()
            .join(format!("case-{n}"))
            .join("kept.db")
            .to_string_lossy()
            .into_owned()
    });
}

/// A scratch schema on the test database, dropped when the guard goes.
struct Schema {
    admin_url: String,
    name: String,
}

impl Schema {
    fn create(admin_url: &str, label: &str) -> Schema {
        let name = format!(
            "kept_cli_{label}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        runtime().block_on(async {
            let pool = sqlx::PgPool::connect(admin_url).await.unwrap();
            sqlx::query(&format!("CREATE SCHEMA {name}"))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        });
        Schema {
            admin_url: admin_url.to_string(),
            name,
        }
    }

    fn url(&self) -> String {
        let sep = if self.admin_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{sep}options[search_path]={}", self.admin_url, self.name)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        runtime().block_on(async move {
            if let Ok(pool) = sqlx::PgPool::connect(&url).await {
                let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .execute(&pool)
                    .await;
                pool.close().await;
            }
        });
    }
}

fn postgres_url(what: &str) -> Option<String> {
    match std::env::var("KEPT_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: {what} on PostgreSQL (set KEPT_TEST_DATABASE_URL=postgres://…)"
            );
            None
        }
    }
}

#[test]
fn tampering_on_postgres_is_detected_and_named() {
    let Some(admin) = postgres_url("ledger tampering") else {
        return;
    };
    let mut schemas = Vec::new();
    every_tampering_is_named(&mut || {
        let schema = Schema::create(&admin, "tamper");
        let url = schema.url();
        schemas.push(schema);
        url
    });
}

/// Spawns the load generator, reads acknowledgements until `enough`, kills it with SIGKILL,
/// then checks that every acknowledged record is there and the chain verifies.
fn killed_writer_loses_nothing_acknowledged(url: &str, enough: usize) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kept"))
        .args([
            "ledger",
            "load-test",
            "--database-url",
            url,
            "--writers",
            "64",
            "--checkpoint-every",
            "500",
        ])
        .env_remove("KEPT_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut acked = BTreeSet::new();
    let mut line = String::new();
    while acked.len() < enough {
        line.clear();
        let n = stdout.read_line(&mut line).unwrap();
        if n == 0 {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("the load generator stopped early: {err}");
        }
        acked.insert(line.trim().parse::<u64>().unwrap());
    }
    // SIGKILL: no shutdown, no final checkpoint, whatever was in flight is cut.
    child.kill().unwrap();
    child.wait().unwrap();
    // Acknowledgements already printed before the kill count too; a cut last line does not.
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    let rest = String::from_utf8(rest).unwrap();
    let complete = rest
        .rsplit_once('\n')
        .map_or("", |(whole_lines, _)| whole_lines);
    for l in complete.lines() {
        acked.insert(l.parse::<u64>().unwrap());
    }

    let len = runtime().block_on(async {
        let store = kept_server::store::open(url).await.unwrap();
        let len = store.ledger_len().await.unwrap();
        let stored: BTreeSet<u64> = store
            .ledger_rows(0, u32::MAX)
            .await
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        let lost: Vec<&u64> = acked.difference(&stored).collect();
        assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
        assert!(!store.checkpoints().await.unwrap().is_empty());
        store.close().await.unwrap();
        len
    });
    assert!(len >= acked.len() as u64);

    let verify = kept(&[
        "ledger",
        "verify",
        "--database-url",
        url,
        "--format",
        "json",
    ]);
    let verdict = json(&verify);
    assert_eq!(verify.status.code(), Some(0), "{verdict}");
    assert_eq!(verdict["records"], len);
}

#[test]
fn a_writer_killed_mid_load_on_sqlite_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("kept.db").to_string_lossy().into_owned();
    killed_writer_loses_nothing_acknowledged(&url, 3_000);
}

#[test]
fn a_writer_killed_mid_load_on_postgres_loses_nothing_acknowledged() {
    let Some(admin) = postgres_url("the crash test") else {
        return;
    };
    let schema = Schema::create(&admin, "crash");
    killed_writer_loses_nothing_acknowledged(&schema.url(), 3_000);
}

#[test]
fn verify_refuses_unusable_input_with_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.db");
    let out = kept(&[
        "ledger",
        "verify",
        "--database-url",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no database at"));

    let db = dir.path().join("kept.db").to_string_lossy().into_owned();
    runtime().block_on(write_ledger(&db));
    let out = kept(&[
        "ledger",
        "verify",
        "--database-url",
        &db,
        "--public-key",
        "not-a-key",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(json(&out)["error"]["code"], "ledger.public_key");
    assert!(!Path::new(&missing).exists(), "verify created a database");

    // An empty database file verifies as an empty ledger.
    let empty = dir.path().join("empty.db").to_string_lossy().into_owned();
    runtime().block_on(async {
        kept_server::store::open(&empty)
            .await
            .unwrap()
            .close()
            .await
            .unwrap();
    });
    let out = kept(&["ledger", "verify", "--database-url", &empty]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 records"));
}

#[test]
fn verify_reads_the_database_url_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kept.db").to_string_lossy().into_owned();
    runtime().block_on(write_ledger(&db));
    let out = Command::new(env!("CARGO_BIN_EXE_kept"))
        .args(["ledger", "verify"])
        .env("KEPT_DATABASE_URL", &db)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("50 records, chain intact"));
}

/// `kept ledger verify-receipt`: a receipt the preference center signed verifies; one with a
/// changed field, or checked against another key, does not.
#[test]
fn verify_receipt_accepts_a_signed_receipt_and_refuses_a_changed_one() {
    use kept_server::prefcenter::receipt;
    let manifest = kept_core::manifest::load(&kept_core::manifest::demo_toml(), "kept.toml")
        .unwrap()
        .manifest;
    let key = SigningKey::from_bytes(&[11; 32]);
    let record = record(3);
    let entry = LedgerEntry::chain(&ChainHash::GENESIS, 1, &record);
    let signed = receipt::build(
        &manifest,
        receipt::Entry {
            seq: 1,
            hash: &entry.hash,
            bytes: &entry.bytes,
            record: &record,
        },
        "en",
        "https://shop.example/preferences",
        &key.verifying_key(),
        receipt::signer(&key),
    );
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("receipt.json");
    std::fs::write(&good, serde_json::to_string_pretty(&signed).unwrap()).unwrap();
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let public = hex(key.verifying_key().as_bytes());

    let ok = kept(&[
        "ledger",
        "verify-receipt",
        good.to_str().unwrap(),
        "--public-key",
        &public,
    ]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("receipt valid"));

    let mut changed = signed.clone();
    changed["jurisdiction"] = "us".into();
    let bad = dir.path().join("changed.json");
    std::fs::write(&bad, changed.to_string()).unwrap();
    let refused = kept(&["ledger", "verify-receipt", bad.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stdout).contains("INVALID"));

    let other = hex(SigningKey::from_bytes(&[12; 32]).verifying_key().as_bytes());
    let wrong_key = kept(&[
        "ledger",
        "verify-receipt",
        good.to_str().unwrap(),
        "--public-key",
        &other,
    ]);
    assert_eq!(wrong_key.status.code(), Some(1));

    let missing = kept(&["ledger", "verify-receipt", "/nonexistent/receipt.json"]);
    assert_eq!(missing.status.code(), Some(2));
}
