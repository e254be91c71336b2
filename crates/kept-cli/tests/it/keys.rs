//! `kept keys`: the two kinds of write key, and the old `collect` role refused with the choice.

use std::process::{Command, Output};

fn kept(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kept"))
        .args(args)
        .current_dir(dir)
        .env_remove("KEPT_DATABASE_URL")
        .env_remove("KEPT_MANIFEST")
        .output()
        .expect("run kept")
}

#[test]
fn public_and_server_write_keys_are_created_and_collect_is_no_role() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kept.db");
    let db = db.to_str().unwrap();
    for role in ["public", "server"] {
        let out = kept(
            dir.path(),
            &["keys", "create", "--role", role, "--database-url", db],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("kept_"));
    }
    let out = kept(
        dir.path(),
        &["keys", "list", "--format", "json", "--database-url", db],
    );
    assert!(out.status.success());
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("\"public\"") && listed.contains("\"server\""),
        "{listed}"
    );
    let out = kept(
        dir.path(),
        &["keys", "create", "--role", "collect", "--database-url", db],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("public") && err.contains("server"), "{err}");
}

/// Commands that only read never create a database: run where there is none, they exit 2,
/// say where they looked and how to point them at one, and leave nothing behind.
#[test]
fn reading_commands_never_create_a_database() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["keys", "list"][..],
        &["keys", "revoke", "kept_00000000"],
        &[
            "audience",
            "--purpose",
            "marketing.communications",
            "--channel",
            "email",
        ],
        &[
            "decide",
            "--subject-id",
            "1",
            "--purpose",
            "marketing.communications",
        ],
        &["ledger", "verify"],
    ] {
        let out = kept(dir.path(), args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stdout} {stderr}");
        assert!(
            format!("{stdout}{stderr}").contains("no database at `./kept-data/kept.db`"),
            "{args:?}: {stdout} {stderr}"
        );
        assert!(
            !dir.path().join("kept-data").exists(),
            "{args:?} created a database"
        );
    }
}
