//! `kept rules`, `kept decide` and `kept audience` on a demo database: the effective rulebook
//! with the manifest's tightenings, one decision explained, and the SMS campaign's dry run; and
//! every offline command finding the same manifest and database.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

fn kept(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kept"))
        .args(args)
        .current_dir(dir)
        .env_remove("KEPT_DATABASE_URL")
        .env_remove("KEPT_MANIFEST")
        .output()
        .expect("run kept")
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

/// A demo database in `dir`, and the demo manifest beside it.
pub(crate) fn demo_database(dir: &Path) -> (String, String) {
    let db = dir.join("kept.db");
    let manifest = dir.join("kept.toml");
    std::fs::write(&manifest, kept_core::manifest::demo_toml()).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = kept_server::store::open(db.to_str().unwrap())
            .await
            .unwrap();
        let ledger = kept_server::consent::ledger::Ledger::new(
            store.clone(),
            kept_server::consent::ledger::SigningKey::from_bytes(&[3; 32]),
        );
        let loaded = kept_core::manifest::load(&kept_core::manifest::demo_toml(), "kept.toml")
            .unwrap()
            .manifest;
        let now = kept_server::state::system_now();
        kept_server::demo::load_if_empty(store.as_ref(), &Arc::new(ledger), &loaded, now, dir)
            .await
            .unwrap()
            .unwrap();
        store.close().await.unwrap();
    });
    (
        db.to_str().unwrap().to_owned(),
        manifest.to_str().unwrap().to_owned(),
    )
}

#[test]
fn rules_show_the_law_and_the_manifests_tightenings() {
    let dir = tempfile::tempdir().unwrap();
    let law = kept(dir.path(), &["rules", "--format", "json"]);
    assert!(law.status.success());
    let law = json(&law);
    let rows = law["rules"].as_array().unwrap();
    assert!(rows.len() > 10);
    assert!(
        rows.iter()
            .all(|r| !r["source"].as_str().unwrap().is_empty())
    );
    assert!(
        rows.iter()
            .any(|r| r["id"].as_str().unwrap().contains("tcpa")),
        "{law}"
    );
    let deadlines = law["deadlines"].as_array().unwrap();
    let gdpr = deadlines
        .iter()
        .find(|d| d["id"] == "gdpr.requests")
        .unwrap_or_else(|| panic!("no GDPR deadline: {law}"));
    assert_eq!(gdpr["within"], "1 month");
    assert_eq!(gdpr["extension"], "2 months");
    assert!(gdpr["source"].as_str().unwrap().contains("Art. 12(3)"));

    let tightened = format!(
        "{}\n[[policy.tighten]]\nregime = \"us\"\npurpose = \"marketing.*\"\nchannel = \"sms\"\n\
         reason = \"Opt-in before any marketing text.\"\n",
        kept_core::manifest::EXAMPLE_TOML
    );
    let path = dir.path().join("kept.toml");
    std::fs::write(&path, tightened).unwrap();
    // Found as ./kept.toml, without naming it.
    let text = kept(dir.path(), &["rules"]);
    assert!(text.status.success());
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("1 from ./kept.toml"), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("manifest.tighten.1"))
        .unwrap_or_else(|| panic!("no tightening row:\n{text}"));
    assert!(row.contains("marketing.*") && row.contains("sms"), "{row}");
    assert!(row.contains("Opt-in before any marketing text."), "{row}");
    assert!(text.contains("request deadlines"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("lgpd.requests") && l.contains("15 days")),
        "{text}"
    );

    let missing = kept(dir.path(), &["rules", "--manifest", "nowhere.toml"]);
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn the_sms_campaign_reaches_only_the_opt_ins_and_decide_explains_why() {
    let dir = tempfile::tempdir().unwrap();
    let (db, manifest) = demo_database(dir.path());
    let export = dir.path().join("ids.csv");
    let out = kept(
        dir.path(),
        &[
            "audience",
            "--purpose",
            "marketing.communications",
            "--channel",
            "sms",
            "--database-url",
            &db,
            "--manifest",
            &manifest,
            "--format",
            "json",
            "--export",
            export.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out);
    let eligible = report["eligible"].as_u64().unwrap();
    let excluded = report["excluded"].as_array().unwrap();
    let not_promised = excluded
        .iter()
        .find(|e| e["reason"] == "denied.not_promised")
        .unwrap();
    assert!(eligible > 0, "{report}");
    assert!(
        not_promised["count"].as_u64().unwrap() > 10 * eligible,
        "{report}"
    );
    let total: u64 = eligible
        + excluded
            .iter()
            .map(|e| e["count"].as_u64().unwrap())
            .sum::<u64>();
    assert_eq!(report["candidates"], total);
    assert_eq!(total, kept_core::demo::DEFAULT_SIZE as u64);

    let csv = std::fs::read_to_string(&export).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("id,user_id"));
    let ids: Vec<String> = lines
        .map(|l| l.split(',').next().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len() as u64, eligible);
    // The export was recorded as a use of everyone in it, before the file was written.
    let first: u32 = ids[0].parse().unwrap();
    let used = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = kept_server::store::open(&db).await.unwrap();
            let used = store
                .uses_of(&kept_store::UseQuery {
                    subject: kept_core::SubjectId(first),
                    before: None,
                    limit: 10,
                })
                .await
                .unwrap();
            store.close().await.unwrap();
            used
        });
    assert_eq!(used.len(), 1, "{used:?}");
    assert_eq!(used[0].kind, kept_store::UseKind::Export);
    assert_eq!(used[0].actor, "cli");
    assert!(used[0].reason.starts_with("allowed."), "{:?}", used[0]);
    let summary: serde_json::Value = serde_json::from_str(&used[0].evidence).unwrap();
    assert_eq!(summary["eligible"], eligible);

    // The table a marketer reads.
    let text = kept(
        dir.path(),
        &[
            "audience",
            "--purpose",
            "marketing.communications",
            "--channel",
            "sms",
            "--database-url",
            &db,
            "--manifest",
            &manifest,
        ],
    );
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("denied.not_promised"), "{text}");
    assert!(text.contains('█'), "{text}");
    assert!(text.contains("5,000 candidates"), "{text}");

    // One of the eligible, decided alone: allowed, with the SMS offers form as provenance.
    let decide = |id: &str| {
        kept(
            dir.path(),
            &[
                "decide",
                "--subject-id",
                id,
                "--purpose",
                "marketing.communications",
                "--channel",
                "sms",
                "--database-url",
                &db,
                "--manifest",
                &manifest,
                "--format",
                "json",
            ],
        )
    };
    let allowed = decide(&ids[0]);
    assert_eq!(allowed.status.code(), Some(0));
    let answer = json(&allowed);
    assert_eq!(answer["allowed"], true);
    assert!(
        answer["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["collection_point"] == "sms_offers_optin"),
        "{answer}"
    );

    let denied = kept(
        dir.path(),
        &[
            "decide",
            "--subject-user-id",
            "nobody-at-all",
            "--purpose",
            "marketing.communications",
            "--database-url",
            &db,
            "--manifest",
            &manifest,
        ],
    );
    assert_eq!(denied.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&denied.stdout).contains("DENIED denied.unknown_subject"));
}

/// `kept decide --at` decides for a scheduled time and says which; a time out of range or
/// unreadable exits 2 naming `--at`.
#[test]
fn decide_at_a_scheduled_time() {
    let dir = tempfile::tempdir().unwrap();
    let (db, manifest) = demo_database(dir.path());
    let decide = |at: &str| {
        kept(
            dir.path(),
            &[
                "decide",
                "--subject-user-id",
                "nobody-at-all",
                "--purpose",
                "marketing.communications",
                "--database-url",
                &db,
                "--manifest",
                &manifest,
                "--format",
                "json",
                "--at",
                at,
            ],
        )
    };
    const DAY: i64 = 24 * 60 * 60 * 1000;
    let tomorrow = kept_server::state::system_now() + DAY;
    let out = decide(&tomorrow.to_string());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let answer = json(&out);
    assert_eq!(answer["at"], tomorrow, "{answer}");
    assert_eq!(answer["reason"], "denied.unknown_subject", "{answer}");
    let rfc3339 = chrono::DateTime::from_timestamp_millis(tomorrow)
        .unwrap()
        .to_rfc3339();
    assert_eq!(json(&decide(&rfc3339))["at"], tomorrow);

    for (at, says) in [
        ((tomorrow + 31 * DAY).to_string(), "more than 30 days ahead"),
        ("2020-01-01T00:00:00Z".to_owned(), "in the past"),
        ("next tuesday".to_owned(), "RFC 3339"),
    ] {
        let out = decide(&at);
        assert_eq!(out.status.code(), Some(2), "{at}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("`--at`") && stderr.contains(says),
            "{at}: {stderr}"
        );
    }
}

/// `kept` in `dir` with `KEPT_MANIFEST` set (or not) and no other `KEPT_*` setting.
fn kept_with_manifest_env(dir: &Path, manifest: Option<&Path>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kept"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("KEPT_DATABASE_URL")
        .env_remove("KEPT_MANIFEST");
    if let Some(path) = manifest {
        command.env("KEPT_MANIFEST", path);
    }
    command.output().expect("run kept")
}

#[test]
fn offline_commands_find_the_same_manifest_and_database() {
    let data = tempfile::tempdir().unwrap();
    let (db, _) = demo_database(data.path());
    // A manifest elsewhere whose [server] table names the database, as the server would run it.
    let shop = tempfile::tempdir().unwrap();
    let manifest = shop.path().join("kept.toml");
    std::fs::write(
        &manifest,
        format!(
            "{}\n[server]\ndatabase_url = \"{db}\"\n",
            kept_core::manifest::demo_toml()
        ),
    )
    .unwrap();
    let sms = [
        "audience",
        "--purpose",
        "marketing.communications",
        "--channel",
        "sms",
        "--format",
        "json",
    ];

    // Found as ./kept.toml, and through KEPT_MANIFEST from a folder without one: every command
    // reads that manifest and the database its [server] table names.
    let elsewhere = tempfile::tempdir().unwrap();
    for (dir, named, label) in [
        (shop.path(), None, "./kept.toml".to_owned()),
        (
            elsewhere.path(),
            Some(manifest.as_path()),
            manifest.display().to_string(),
        ),
    ] {
        let rules = kept_with_manifest_env(dir, named, &["rules", "--format", "json"]);
        assert!(rules.status.success(), "{rules:?}");
        assert_eq!(json(&rules)["manifest"], label.as_str());
        let audience = kept_with_manifest_env(dir, named, &sms);
        assert!(audience.status.success(), "{audience:?}");
        let audience = json(&audience);
        assert_eq!(audience["manifest"], label.as_str());
        assert_eq!(audience["candidates"], 5000, "{audience}");
        let verify = kept_with_manifest_env(dir, named, &["ledger", "verify"]);
        let text = String::from_utf8_lossy(&verify.stdout);
        assert!(
            verify.status.success() && text.starts_with("ok:"),
            "{verify:?}"
        );
        let keys = kept_with_manifest_env(dir, named, &["keys", "list"]);
        assert!(keys.status.success(), "{keys:?}");
    }

    // A manifest named but missing is an error for every one of them, never a fallback.
    let missing = elsewhere.path().join("missing.toml");
    for args in [
        &["rules"][..],
        &sms[..],
        &["ledger", "verify"][..],
        &["keys", "list"][..],
    ] {
        let out = kept_with_manifest_env(elsewhere.path(), Some(&missing), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("missing.toml"), "{args:?}: {stderr}");
    }

    // Without any manifest, `kept rules` runs the demo's, as `kept audience` does.
    let rules = kept_with_manifest_env(elsewhere.path(), None, &["rules", "--format", "json"]);
    assert!(rules.status.success(), "{rules:?}");
    assert!(
        json(&rules)["manifest"]
            .as_str()
            .unwrap()
            .contains("demo manifest"),
        "{rules:?}"
    );
}
