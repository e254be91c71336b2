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
