//! `kept ledger verify` against ledgers edited behind Kept's back, with and without the witness
//! file, and the crash test: a writer killed with SIGKILL mid-load loses nothing it
//! acknowledged and leaves nothing uncovered. On SQLite always, on PostgreSQL too when
//! `KEPT_TEST_DATABASE_URL` is set.

use kept_core::SubjectId;
use kept_core::ledger::{
    ChainHash, CollectionMethod, ConsentAction, ConsentRecord, Evidence, LedgerEntry, encode,
};
use kept_server::consent::ledger::{Ledger, SigningKey};
use kept_server::consent::witness::Witness;
use std::collections::BTreeSet;
use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::pin::Pin;
use std::process::{Command, Output, Stdio};

const RECORDS: u32 = 50;
/// Records per append: each batch commits with its checkpoint, so they land at 10, 20, … 50.
const BATCH: u32 = 10;
/// When verify judges: 100 s after the records, beyond the default 1 s interval + 60 s grace.
const NOW: &str = "1790000100000";

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

/// A ledger of 50 records with signed checkpoints at 10, 20, …, 50, each also in the witness
/// file at `witness`.
async fn write_ledger(url: &str, witness: &Path) -> SigningKey {
    let store = kept_server::store::open(url).await.unwrap();
    let key = SigningKey::from_bytes(&[11; 32]);
    let witness = Witness::open(witness, None, std::time::Duration::from_millis(10)).unwrap();
    let ledger = Ledger::new(store.clone(), key.clone()).with_witness(std::sync::Arc::new(witness));
    for first in (1..=RECORDS).step_by(BATCH as usize) {
        ledger
            .append_many((first..first + BATCH).map(record).collect())
            .await
            .unwrap();
    }
    let seqs: Vec<u64> = store
        .checkpoints()
        .await
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect();
    assert_eq!(seqs, vec![10, 20, 30, 40, 50]);
    ledger.close().await;
    store.close().await.unwrap();
    key
}

/// The chain as written, with record `changed` (if any) withdrawn instead: what an attacker who
/// rewrites from there recomputes.
fn rechained(changed: Option<u32>) -> Vec<LedgerEntry> {
    let mut prev = ChainHash::GENESIS;
    (1..=RECORDS)
        .map(|i| {
            let mut r = record(i);
            if Some(i) == changed {
                r.action = ConsentAction::Withdrawn;
            }
            let e = LedgerEntry::chain(&prev, u64::from(i), &r);
            prev = e.hash;
            e
        })
        .collect()
}

/// Rewrites records `from..=50` (record `from` withdrawn), every hash recomputed.
async fn rewrite_from(db: &Db, from: u32) {
    for e in rechained(Some(from)).into_iter().skip(from as usize - 1) {
        db.exec(
            &format!(
                "UPDATE ledger SET bytes = $1, hash = $2 WHERE seq = {}",
                e.seq
            ),
            &[e.bytes, e.hash.0.to_vec()],
        )
        .await;
    }
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
                for trigger in [
                    "ledger_no_update",
                    "ledger_no_delete",
                    "ledger_checkpoints_no_update",
                    "ledger_checkpoints_no_delete",
                ] {
                    self.exec(&format!("DROP TRIGGER {trigger}"), &[]).await;
                }
            }
            Db::Postgres(_) => {
                self.exec("DROP TRIGGER ledger_append_only ON ledger", &[])
                    .await;
                self.exec(
                    "DROP TRIGGER ledger_checkpoints_append_only ON ledger_checkpoints",
                    &[],
                )
                .await;
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

/// One way of tampering, and what verify must say about it: the first bad record and the code,
/// without a witness (`None`: the database alone cannot tell) and with the witness file.
struct Tamper {
    name: &'static str,
    without: Option<(u64, &'static str)>,
    with_witness: (u64, &'static str),
    apply: fn(&Db) -> Pin<Box<dyn Future<Output = ()> + '_>>,
}

fn tampers() -> Vec<Tamper> {
    vec![
        Tamper {
            name: "a record's bytes edited",
            without: Some((17, "ledger.hash")),
            with_witness: (17, "ledger.hash"),
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
            without: Some((23, "ledger.column")),
            with_witness: (23, "ledger.column"),
            apply: |db| {
                Box::pin(db.exec(
                    "UPDATE ledger SET subject_id = subject_id + 1 WHERE seq = 23",
                    &[],
                ))
            },
        },
        Tamper {
            name: "a record's at column edited",
            without: Some((17, "ledger.column")),
            with_witness: (17, "ledger.column"),
            apply: |db| {
                Box::pin(db.exec("UPDATE ledger SET at = at - 3600000 WHERE seq = 17", &[]))
            },
        },
        Tamper {
            name: "a record's subject column set to no subject id at all",
            without: Some((26, "ledger.corrupt_row")),
            with_witness: (26, "ledger.corrupt_row"),
            apply: |db| Box::pin(db.exec("UPDATE ledger SET subject_id = -5 WHERE seq = 26", &[])),
        },
        Tamper {
            name: "a record deleted",
            without: Some((31, "ledger.sequence")),
            with_witness: (31, "ledger.sequence"),
            apply: |db| Box::pin(db.exec("DELETE FROM ledger WHERE seq = 31", &[])),
        },
        Tamper {
            name: "the tail cut (the last records deleted)",
            without: Some((48, "ledger.checkpoint_beyond_end")),
            with_witness: (48, "ledger.checkpoint_beyond_end"),
            apply: |db| Box::pin(db.exec("DELETE FROM ledger WHERE seq > 47", &[])),
        },
        Tamper {
            name: "the tail cut with its checkpoint",
            // Records 41 to 45 are left without a checkpoint, long after they were written.
            without: Some((41, "ledger.uncovered")),
            with_witness: (46, "ledger.witness_beyond_end"),
            apply: |db| {
                Box::pin(async move {
                    db.exec("DELETE FROM ledger WHERE seq > 45", &[]).await;
                    db.exec("DELETE FROM ledger_checkpoints WHERE seq > 40", &[])
                        .await;
                })
            },
        },
        Tamper {
            name: "the tail cut with its checkpoints, right after a checkpoint",
            // What is left is a consistent, shorter ledger: only the witness knows its end.
            without: None,
            with_witness: (41, "ledger.witness_beyond_end"),
            apply: |db| {
                Box::pin(async move {
                    db.exec("DELETE FROM ledger WHERE seq > 40", &[]).await;
                    db.exec("DELETE FROM ledger_checkpoints WHERE seq > 40", &[])
                        .await;
                })
            },
        },
        Tamper {
            name: "a record forged onto the end with a recomputed chain hash",
            // No checkpoint will ever cover it, and it is too old to be waiting for one.
            without: Some((51, "ledger.uncovered")),
            with_witness: (51, "ledger.uncovered"),
            apply: |db| Box::pin(forge_append(db, 51)),
        },
        Tamper {
            name: "two records swapped",
            without: Some((12, "ledger.hash")),
            with_witness: (12, "ledger.hash"),
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
            // Only the checkpoint at 50 (signed with a key the attacker lacks) can tell.
            without: Some((50, "ledger.checkpoint_mismatch")),
            with_witness: (50, "ledger.checkpoint_mismatch"),
            apply: |db| Box::pin(rewrite_from(db, 44)),
        },
        Tamper {
            name: "a record rewritten, later hashes recomputed, every checkpoint deleted",
            without: Some((1, "ledger.no_checkpoint")),
            with_witness: (50, "ledger.witness_mismatch"),
            apply: |db| {
                Box::pin(async move {
                    rewrite_from(db, 44).await;
                    db.exec("DELETE FROM ledger_checkpoints", &[]).await;
                })
            },
        },
        Tamper {
            name: "a record rewritten, later hashes recomputed, the checkpoints after it deleted",
            without: Some((31, "ledger.uncovered")),
            with_witness: (50, "ledger.witness_mismatch"),
            apply: |db| {
                Box::pin(async move {
                    rewrite_from(db, 44).await;
                    db.exec("DELETE FROM ledger_checkpoints WHERE seq >= 40", &[])
                        .await;
                })
            },
        },
        Tamper {
            name: "a checkpoint deleted from the middle",
            without: Some((30, "ledger.checkpoint_gap")),
            with_witness: (30, "ledger.checkpoint_gap"),
            apply: |db| Box::pin(db.exec("DELETE FROM ledger_checkpoints WHERE seq = 20", &[])),
        },
        Tamper {
            name: "a checkpoint forged with another key",
            without: Some((20, "ledger.checkpoint_signature")),
            with_witness: (20, "ledger.checkpoint_signature"),
            apply: |db| {
                Box::pin(async move {
                    let other = SigningKey::from_bytes(&[12; 32]);
                    let hash = rechained(None)[19].hash;
                    let forged = kept_core::ledger::Checkpoint::sign(
                        &other,
                        20,
                        hash,
                        0,
                        ChainHash::GENESIS,
                    )
                    .signature;
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

/// Appends record `seq` after the tip with a correctly recomputed chain hash.
async fn forge_append(db: &Db, seq: u32) {
    let tip = rechained(None)[RECORDS as usize - 1].hash;
    let mut forged = record(seq);
    forged.action = ConsentAction::Withdrawn;
    let e = LedgerEntry::chain(&tip, u64::from(seq), &forged);
    db.exec(
        &format!(
            "INSERT INTO ledger (seq, subject_id, at, bytes, hash) VALUES ({seq}, {}, {}, $1, $2)",
            forged.subject.0, forged.at
        ),
        &[e.bytes, e.hash.0.to_vec()],
    )
    .await;
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// `kept ledger verify` on `url` with `extra` arguments, judged at [`NOW`].
fn verify(url: &str, extra: &[&str]) -> Output {
    let mut args = vec!["ledger", "verify", "--database-url", url, "--now", NOW];
    args.extend_from_slice(extra);
    kept(&args)
}

/// Builds a fresh ledger with `fresh_url()` for every tampering and checks verify's verdicts.
fn every_tampering_is_named(fresh_url: &mut dyn FnMut() -> String) {
    let rt = runtime();
    for tamper in tampers() {
        let url = fresh_url();
        let dir = tempfile::tempdir().unwrap();
        let witness_path = dir.path().join("ledger-witness.log");
        let witness = witness_path.to_str().unwrap();
        let key = rt.block_on(write_ledger(&url, &witness_path));
        let public = hex_encode(key.verifying_key().as_bytes());

        let clean = verify(&url, &["--witness", witness, "--public-key", &public]);
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

        // Without a witness, with the keys the database publishes, as text.
        let text = verify(&url, &[]);
        let stdout = String::from_utf8_lossy(&text.stdout);
        match tamper.without {
            Some((first_bad, _)) => {
                assert_eq!(text.status.code(), Some(1), "{}: {stdout}", tamper.name);
                assert!(
                    stdout.contains(&format!("first bad record: {first_bad}")),
                    "{}: {stdout}",
                    tamper.name
                );
            }
            None => {
                assert_eq!(text.status.code(), Some(0), "{}: {stdout}", tamper.name);
                assert!(
                    stdout.contains("not proved: that nothing was cut after record 40"),
                    "{}: {stdout}",
                    tamper.name
                );
            }
        }

        // The same verdict with the key given independently, as JSON.
        let out = verify(&url, &["--public-key", &public, "--format", "json"]);
        let verdict = json(&out);
        match tamper.without {
            Some((first_bad, code)) => {
                assert_eq!(out.status.code(), Some(1), "{}", tamper.name);
                assert_eq!(verdict["status"], "tampered", "{}", tamper.name);
                assert_eq!(
                    (
                        verdict["first_bad_record"].as_u64(),
                        verdict["error"]["code"].as_str()
                    ),
                    (Some(first_bad), Some(code)),
                    "{}: {verdict}",
                    tamper.name
                );
            }
            None => {
                assert_eq!(verdict["status"], "intact", "{}: {verdict}", tamper.name);
                assert!(!verdict["unproven"].as_array().unwrap().is_empty());
            }
        }
        assert_eq!(verdict["key_source"], "argument");

        // With the witness file.
        let out = verify(
            &url,
            &[
                "--witness",
                witness,
                "--public-key",
                &public,
                "--format",
                "json",
            ],
        );
        let verdict = json(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{} (witness): {verdict}",
            tamper.name
        );
        let (first_bad, code) = tamper.with_witness;
        assert_eq!(
            (
                verdict["first_bad_record"].as_u64(),
                verdict["error"]["code"].as_str()
            ),
            (Some(first_bad), Some(code)),
            "{} (witness): {verdict}",
            tamper.name
        );
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
    let dir = tempfile::tempdir().unwrap();
    let witness_path = dir.path().join("ledger-witness.log");
    let witness = witness_path.to_str().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kept"))
        .args([
            "ledger",
            "load-test",
            "--database-url",
            url,
            "--writers",
            "64",
            "--witness",
            witness,
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

    // Each batch committed with its checkpoint: nothing acknowledged, nor anything in flight
    // when the writer died, is left uncovered; the witness (which may lag the database by
    // the lines not yet written) matches it.
    let verify = kept(&[
        "ledger",
        "verify",
        "--database-url",
        url,
        "--witness",
        witness,
        "--format",
        "json",
    ]);
    let verdict = json(&verify);
    assert_eq!(verify.status.code(), Some(0), "{verdict}");
    assert_eq!(verdict["records"], len);
    assert_eq!(verdict["last_checkpoint"], len, "{verdict}");
    assert!(verdict["uncovered"].is_null(), "{verdict}");
    assert!(
        verdict["witness"]["checkpoints"].as_u64().unwrap() > 0,
        "{verdict}"
    );
}

/// Records appended without a checkpoint (another writer, or an older release that crashed):
/// reported as not yet covered while recent, as tampering once too old, and covered by the
/// checkpoint a (re)starting server signs.
fn uncovered_records_wait_then_are_covered(url: &str) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let witness = dir.path().join("ledger-witness.log");
    let key = rt.block_on(write_ledger(url, &witness));
    rt.block_on(async {
        let store = kept_server::store::open(url).await.unwrap();
        store
            .append_consents((51..=53).map(record).collect())
            .await
            .unwrap();
        store.close().await.unwrap();
    });
    let public = hex_encode(key.verifying_key().as_bytes());
    let witness = witness.to_str().unwrap();
    // 10 s after record 51: waiting for its checkpoint, not tampering.
    let recent = kept(&[
        "ledger",
        "verify",
        "--database-url",
        url,
        "--witness",
        witness,
        "--public-key",
        &public,
        "--now",
        "1790000010051",
        "--format",
        "json",
    ]);
    let verdict = json(&recent);
    assert_eq!(recent.status.code(), Some(0), "{verdict}");
    assert_eq!(verdict["uncovered"]["first"], 51, "{verdict}");
    assert_eq!(verdict["uncovered"]["count"], 3, "{verdict}");
    let text = kept(&[
        "ledger",
        "verify",
        "--database-url",
        url,
        "--now",
        "1790000010051",
    ]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("not proved: records 51 to 53"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
    // Later: too old to be waiting.
    let late = verify(url, &["--public-key", &public, "--format", "json"]);
    assert_eq!(late.status.code(), Some(1));
    assert_eq!(json(&late)["error"]["code"], "ledger.uncovered");
    assert_eq!(json(&late)["first_bad_record"], 51);

    // What a starting server does first.
    rt.block_on(async {
        let store = kept_server::store::open(url).await.unwrap();
        let ledger = Ledger::new(store.clone(), key.clone());
        let cp = ledger.checkpoint_now().await.unwrap().unwrap();
        assert_eq!(cp.seq, 53);
        store.close().await.unwrap();
    });
    let covered = verify(
        url,
        &[
            "--witness",
            witness,
            "--public-key",
            &public,
            "--format",
            "json",
        ],
    );
    let verdict = json(&covered);
    assert_eq!(covered.status.code(), Some(0), "{verdict}");
    assert!(verdict["uncovered"].is_null(), "{verdict}");
    assert_eq!(verdict["last_checkpoint"], 53);
}

#[test]
fn uncovered_records_on_sqlite_wait_then_are_covered() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("kept.db").to_string_lossy().into_owned();
    uncovered_records_wait_then_are_covered(&url);
}

#[test]
fn uncovered_records_on_postgres_wait_then_are_covered() {
    let Some(admin) = postgres_url("uncovered records") else {
        return;
    };
    let schema = Schema::create(&admin, "uncovered");
    uncovered_records_wait_then_are_covered(&schema.url());
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
    let witness = dir.path().join("ledger-witness.log");
    runtime().block_on(write_ledger(&db, &witness));
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
    let out = kept(&["ledger", "verify", "--database-url", &db, "--grace", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--grace"));
    let out = kept(&[
        "ledger",
        "verify",
        "--database-url",
        &db,
        "--witness",
        "/nonexistent/witness.log",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/witness.log"));
    let garbled = dir.path().join("garbled.log");
    std::fs::write(&garbled, "kept-ledger-checkpoint-v2 not a checkpoint\n").unwrap();
    let out = kept(&[
        "ledger",
        "verify",
        "--database-url",
        &db,
        "--witness",
        garbled.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(json(&out)["error"]["code"], "ledger.witness_line");
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
    runtime().block_on(write_ledger(&db, &dir.path().join("ledger-witness.log")));
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
    use kept_core::receipt;
    let manifest = kept_core::manifest::load(&kept_core::manifest::demo_toml(), "kept.toml")
        .unwrap()
        .manifest;
    let key = SigningKey::from_bytes(&[11; 32]);
    let record = record(3);
    let entry = LedgerEntry::chain(&ChainHash::GENESIS, 1, &record);
    let checkpoint =
        kept_core::ledger::Checkpoint::sign(&key, 1, entry.hash, 7, ChainHash::GENESIS);
    let signed = receipt::build(
        &manifest,
        receipt::Entry {
            seq: 1,
            hash: &entry.hash,
            bytes: &entry.bytes,
            record: &record,
            checkpoint: Some(&checkpoint),
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
    assert!(
        String::from_utf8_lossy(&ok.stdout)
            .contains("covered by the signed checkpoint at record 1")
    );

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

/// A receipt is signed by the key it names, and anybody can make a key: one forged with a key
/// of the forger's own is valid under that key, so without `--public-key` the key must be one
/// the ledger's database publishes.
#[test]
fn verify_receipt_without_a_key_trusts_only_the_ledgers_published_keys() {
    use kept_core::receipt;
    let manifest = kept_core::manifest::load(&kept_core::manifest::demo_toml(), "kept.toml")
        .unwrap()
        .manifest;
    let sign = |key: &SigningKey| {
        let record = record(3);
        let entry = LedgerEntry::chain(&ChainHash::GENESIS, 1, &record);
        let checkpoint =
            kept_core::ledger::Checkpoint::sign(key, 1, entry.hash, 7, ChainHash::GENESIS);
        receipt::build(
            &manifest,
            receipt::Entry {
                seq: 1,
                hash: &entry.hash,
                bytes: &entry.bytes,
                record: &record,
                checkpoint: Some(&checkpoint),
            },
            "en",
            "https://shop.example/preferences",
            &key.verifying_key(),
            receipt::signer(key),
        )
    };
    let ledger_key = SigningKey::from_bytes(&[11; 32]);
    let forger_key = SigningKey::from_bytes(&[66; 32]);
    let dir = tempfile::tempdir().unwrap();
    let genuine = dir.path().join("genuine.json");
    std::fs::write(&genuine, sign(&ledger_key).to_string()).unwrap();
    let forged = dir.path().join("forged.json");
    std::fs::write(&forged, sign(&forger_key).to_string()).unwrap();
    let db = dir.path().join("kept.db");
    let url = db.to_str().unwrap();
    let check = |file: &Path| {
        kept(&[
            "ledger",
            "verify-receipt",
            file.to_str().unwrap(),
            "--database-url",
            url,
            "--format",
            "json",
        ])
    };
    let code_of = |out: &Output| {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["error"]["code"].as_str().unwrap_or("").to_owned()
    };

    // No database to ask and no key given: nothing says whose key it is, and none is created.
    let unknown = check(&forged);
    assert_eq!(unknown.status.code(), Some(1));
    assert_eq!(code_of(&unknown), "receipt.unknown_key");
    assert!(!db.exists());

    // The ledger publishes its key: the genuine receipt is valid, the forged one is not.
    runtime().block_on(async {
        let store = kept_server::store::open(url).await.unwrap();
        Ledger::new(store.clone(), ledger_key.clone())
            .publish_verifying_key()
            .await
            .unwrap();
        store.close().await.unwrap();
    });
    let valid = check(&genuine);
    assert_eq!(
        valid.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&valid.stdout)
    );
    let refused = check(&forged);
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(code_of(&refused), "receipt.unknown_key");
}
