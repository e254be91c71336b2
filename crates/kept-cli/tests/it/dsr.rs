//! `kept dsr` on a demo database: a request filed with its deadline, refused a step it may not
//! take (exit 1, with the code), taken through its steps, listed, shown with its log, and the
//! requests log verified, with the witness its steps were written to; without a ledger key nothing is written.

use crate::decide::demo_database;
use std::path::Path;
use std::process::{Command, Output};

fn dsr(dir: &Path, db: &str, manifest: &str, key: Option<&Path>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kept"));
    command
        .arg("dsr")
        .args(args)
        .args(["--database-url", db, "--manifest", manifest])
        .current_dir(dir)
        .env_remove("KEPT_DATABASE_URL")
        .env_remove("KEPT_MANIFEST")
        .env_remove("KEPT_LEDGER_KEY_FILE");
    if let Some(key) = key {
        command.env("KEPT_LEDGER_KEY_FILE", key);
    }
    command.output().expect("run kept")
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn a_request_is_filed_stepped_listed_shown_and_its_log_verified() {
    let dir = tempfile::tempdir().unwrap();
    let (db, manifest) = demo_database(dir.path());
    let key = dir.path().join("ledger.key");
    std::fs::write(&key, "03".repeat(32)).unwrap();
    let run = |args: &[&str]| dsr(dir.path(), &db, &manifest, Some(&key), args);

    let keyless = dsr(
        dir.path(),
        &db,
        &manifest,
        None,
        &["new", "--user-id", "u000011", "--kind", "erasure"],
    );
    assert!(!keyless.status.success(), "no key, no request");

    let filed = run(&[
        "new",
        "--user-id",
        "u000011",
        "--kind",
        "erasure",
        "--format",
        "json",
    ]);
    assert!(
        filed.status.success(),
        "{}",
        String::from_utf8_lossy(&filed.stderr)
    );
    let filed = json(&filed);
    let id = filed["id"].as_u64().unwrap().to_string();
    assert_eq!(filed["state"], "received");
    assert_eq!(filed["channel"], "operator");
    assert!(filed["due_at"].as_i64().unwrap() > filed["received_at"].as_i64().unwrap());
    assert_eq!(filed["log"][0]["actor"], "operator:cli");

    let refused = run(&["advance", &id, "--format", "json"]);
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(json(&refused)["code"], "request.unverified");

    let verified = run(&[
        "advance",
        &id,
        "--verification",
        "company-stated",
        "--reference",
        "case-42",
        "--format",
        "json",
    ]);
    assert!(verified.status.success());
    assert_eq!(json(&verified)["state"], "verified");
    let rejected = run(&[
        "reject",
        &id,
        "--reason",
        "not the subject",
        "--format",
        "json",
    ]);
    assert_eq!(json(&rejected)["state"], "rejected");
    let again = run(&["extend", &id, "--reason", "late"]);
    assert_eq!(again.status.code(), Some(1));

    let listed = json(&run(&["list", "--state", "rejected", "--format", "json"]));
    assert_eq!(listed["requests"][0]["id"].to_string(), id);
    let shown = json(&run(&["show", &id, "--format", "json"]));
    assert_eq!(shown["log"].as_array().unwrap().len(), 3);

    let verified = run(&["verify", "--format", "json"]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
    let verified = json(&verified);
    assert_eq!(verified["verdict"], "intact");
    assert_eq!(verified["records"], 3);
    assert_eq!(verified["checkpoints"], 3);
    assert_eq!(verified["witness"], serde_json::Value::Null);

    // Each step's checkpoint went to the requests log's witness beside the ledger's.
    let witness = dir.path().join("kept-data").join("requests-witness.log");
    let witness = witness.to_str().unwrap();
    let witnessed = json(&run(&["verify", "--witness", witness, "--format", "json"]));
    assert_eq!(witnessed["verdict"], "intact");
    assert_eq!(witnessed["witness"]["checkpoints"], 3);
    assert_eq!(witnessed["witness"]["last_seq"], 3);
}

/// Attaches the email address the demo database holds for `user_id` as an identifier (the demo
/// keeps it only as a trait), hashed with the database's own identity keys as the server would;
/// the sealed value is not read by a lookup. Returns the address.
fn attach_demo_email(db: &str, user_id: &str) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = kept_server::store::open(db).await.unwrap();
        let id = store.subject_by_user_id(user_id).await.unwrap().unwrap();
        let traits = store.traits(id).await.unwrap();
        let email = traits.iter().find(|t| t.key == "email").unwrap();
        let email = email.value.as_str().unwrap().to_owned();
        let identities = kept_server::identity::Identities::new(
            kept_server::identity::IdentityConfig::default(),
        );
        let keys = identities.keys(store.as_ref()).await.unwrap();
        let kind = kept_core::identity::IdentifierKind::Email;
        let subject = kept_core::identity::PlannedSubject::Existing(id);
        let write = kept_store::collection::IdentityWrite {
            attach: vec![kept_store::collection::NewIdentity {
                subject,
                key_subject: subject,
                kind,
                hash: keys.identifier_hash(kind, &email),
                sealed: vec![0; 48],
                verified: false,
            }],
            at: 1,
            ..Default::default()
        };
        store.write_identities(write).await.unwrap();
        store.close().await.unwrap();
        email
    })
}

#[test]
fn a_request_is_filed_for_the_subject_an_email_address_names() {
    let dir = tempfile::tempdir().unwrap();
    let (db, manifest) = demo_database(dir.path());
    let key = dir.path().join("ledger.key");
    std::fs::write(&key, "03".repeat(32)).unwrap();
    let run = |args: &[&str]| dsr(dir.path(), &db, &manifest, Some(&key), args);
    let by_user = json(&run(&[
        "new",
        "--user-id",
        "u000011",
        "--kind",
        "access",
        "--format",
        "json",
    ]));
    let email = attach_demo_email(&db, "u000011");
    let by_email = run(&[
        "new",
        "--email",
        &email.to_uppercase(),
        "--kind",
        "erasure",
        "--format",
        "json",
    ]);
    assert!(
        by_email.status.success(),
        "{}",
        String::from_utf8_lossy(&by_email.stderr)
    );
    assert_eq!(json(&by_email)["subject"], by_user["subject"]);

    let unknown = run(&[
        "new",
        "--email",
        "nobody@example.invalid",
        "--kind",
        "access",
    ]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no subject is known"));
    let malformed = run(&["new", "--email", "not an address", "--kind", "access"]);
    assert_eq!(malformed.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&malformed.stderr).contains("--email"));
    let two = run(&[
        "new",
        "--email",
        &email,
        "--user-id",
        "u000011",
        "--kind",
        "access",
    ]);
    assert_eq!(two.status.code(), Some(2), "one identifier at a time");
}

#[test]
fn a_request_in_progress_completes_once_its_tasks_are_handled() {
    let dir = tempfile::tempdir().unwrap();
    let (db, manifest) = demo_database(dir.path());
    let key = dir.path().join("ledger.key");
    std::fs::write(&key, "03".repeat(32)).unwrap();
    let run = |args: &[&str]| dsr(dir.path(), &db, &manifest, Some(&key), args);
    let filed = json(&run(&[
        "new",
        "--user-id",
        "u000011",
        "--kind",
        "opt-out",
        "--verification",
        "company-stated",
        "--reference",
        "case-7",
        "--format",
        "json",
    ]));
    let id = filed["id"].as_u64().unwrap().to_string();
    assert!(run(&["advance", &id]).status.success());
    let working = json(&run(&["advance", &id, "--format", "json"]));
    assert_eq!(working["state"], "in_progress");
    let targets: Vec<&str> = working["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["kept", "system:ad_partner"]);

    let early = run(&["advance", &id, "--to", "completed", "--format", "json"]);
    assert_eq!(early.status.code(), Some(1));
    assert_eq!(json(&early)["code"], "request.tasks_pending");
    let malformed = run(&["handled", &id, "shop", "--note", "x"]);
    assert_eq!(malformed.status.code(), Some(2));

    // Kept's own part, the opt-out's gate, was carried out on entering `in_progress`.
    let shown = json(&run(&["show", &id, "--format", "json"]));
    let kept = shown["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == "kept")
        .unwrap()
        .clone();
    assert_eq!(kept["state"], "done", "{kept}");
    assert_eq!(shown["state"], "in_progress");
    let done = run(&[
        "handled",
        &id,
        "system:ad_partner",
        "--note",
        "opted out in the partner's console",
    ]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let text = String::from_utf8_lossy(&done.stdout);
    assert!(text.contains("completed"), "{text}");
    assert!(text.contains("task system:ad_partner"), "{text}");
    let again = run(&[
        "handled", &id, "kept", "--note", "again", "--format", "json",
    ]);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(json(&again)["code"], "request.task_settled");
    let verified = json(&run(&["verify", "--format", "json"]));
    assert_eq!(verified["verdict"], "intact");
}

#[test]
fn an_access_request_is_exported_and_each_export_logged() {
    let dir = tempfile::tempdir().unwrap();
    let (db, manifest) = demo_database(dir.path());
    let key = dir.path().join("ledger.key");
    std::fs::write(&key, "03".repeat(32)).unwrap();
    let run = |args: &[&str]| dsr(dir.path(), &db, &manifest, Some(&key), args);
    let filed = json(&run(&[
        "new",
        "--user-id",
        "u000011",
        "--kind",
        "access",
        "--format",
        "json",
    ]));
    let id = filed["id"].as_u64().unwrap().to_string();

    // Not verified yet: refused with the code, nothing written.
    let early = run(&["export", &id]);
    assert_eq!(early.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&early.stderr).contains("export.not_ready"));

    let verified = run(&[
        "advance",
        &id,
        "--verification",
        "company-stated",
        "--reference",
        "case-7",
    ]);
    assert!(verified.status.success());
    let out = dir.path().join("export.json");
    let exported = run(&["export", &id, "--out", out.to_str().unwrap()]);
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    let document: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(document["format"], "kept-export-v1");
    assert_eq!(document["subject"]["user_id"], "u000011");
    assert_eq!(document["request"]["id"].to_string(), id);

    let page = run(&["export", &id, "--format", "html", "--lang", "de"]);
    assert!(page.status.success());
    let page = String::from_utf8_lossy(&page.stdout);
    assert!(page.contains("Was wir gespeichert haben"), "{page}");

    let shown = json(&run(&["show", &id, "--format", "json"]));
    let notes: Vec<&serde_json::Value> = shown["log"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["detail"]["note"] == "export handed over")
        .collect();
    assert_eq!(notes.len(), 2);
    assert_eq!(notes[0]["detail"]["export.format"], "json");
    assert_eq!(
        notes[0]["detail"]["export.blake3"],
        blake3::hash(&std::fs::read(&out).unwrap())
            .to_hex()
            .as_str()
    );
    assert_eq!(notes[1]["detail"]["export.format"], "html");
    assert_eq!(notes[0]["actor"], "operator:cli");

    // Links need the server's public URL.
    let no_base = run(&["export", &id, "--link"]);
    assert!(!no_base.status.success());
    let mut command = Command::new(env!("CARGO_BIN_EXE_kept"));
    let linked = command
        .args(["dsr", "export", &id, "--link"])
        .args(["--database-url", &db, "--manifest", &manifest])
        .current_dir(dir.path())
        .env_remove("KEPT_DATABASE_URL")
        .env_remove("KEPT_MANIFEST")
        .env("KEPT_LEDGER_KEY_FILE", &key)
        .env("KEPT_PUBLIC_URL", "https://kept.example.com")
        .output()
        .unwrap();
    assert!(
        linked.status.success(),
        "{}",
        String::from_utf8_lossy(&linked.stderr)
    );
    let links = json(&linked);
    assert!(
        links["json"]
            .as_str()
            .unwrap()
            .starts_with("https://kept.example.com/exports/")
    );

    // An erasure request is not answered with an export.
    let erasure = json(&run(&[
        "new",
        "--user-id",
        "u000012",
        "--kind",
        "erasure",
        "--format",
        "json",
    ]));
    let refused = run(&["export", &erasure["id"].as_u64().unwrap().to_string()]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("export.not_exportable"));
}

#[test]
fn a_restriction_advanced_offline_is_in_force_for_the_next_decision() {
    let dir = tempfile::tempdir().unwrap();
    let (db, manifest) = demo_database(dir.path());
    let key = dir.path().join("ledger.key");
    std::fs::write(&key, "03".repeat(32)).unwrap();
    let run = |args: &[&str]| dsr(dir.path(), &db, &manifest, Some(&key), args);
    let decide = || {
        let out = Command::new(env!("CARGO_BIN_EXE_kept"))
            .args([
                "decide",
                "--subject-user-id",
                "u000011",
                "--purpose",
                "marketing.communications",
                "--database-url",
                &db,
                "--manifest",
                &manifest,
                "--format",
                "json",
            ])
            .current_dir(dir.path())
            .env_remove("KEPT_DATABASE_URL")
            .env_remove("KEPT_MANIFEST")
            .output()
            .unwrap();
        json(&out)["reason"].as_str().unwrap().to_owned()
    };
    assert_ne!(decide(), "denied.restricted_by_request");
    let filed = json(&run(&[
        "new",
        "--user-id",
        "u000011",
        "--kind",
        "restriction",
        "--format",
        "json",
    ]));
    let id = filed["id"].as_u64().unwrap().to_string();
    let verified = run(&[
        "advance",
        &id,
        "--verification",
        "company-stated",
        "--reference",
        "case-7",
    ]);
    assert!(verified.status.success());
    let started = run(&["advance", &id, "--format", "json"]);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    assert_eq!(json(&started)["state"], "in_progress");
    assert_eq!(decide(), "denied.restricted_by_request");
}
