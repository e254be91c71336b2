//! Settings on the command line: every `serve` setting has a flag, and commands that never read
//! the manifest still take the database from a `_FILE` variable.

use kept_server::config::Key;
use std::process::{Command, Output};

fn kept(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kept"))
        .args(args)
        .current_dir(dir)
        .env_remove("KEPT_DATABASE_URL")
        .env_remove("KEPT_DATABASE_URL_FILE")
        .env_remove("KEPT_MANIFEST")
        .envs(env.iter().copied())
        .output()
        .expect("run kept")
}

#[test]
fn serve_help_lists_a_flag_for_every_setting() {
    let dir = tempfile::tempdir().unwrap();
    let out = kept(dir.path(), &["serve", "--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for key in Key::ALL {
        let flag = key.flag();
        assert!(
            help.lines()
                .any(|line| line.trim_start().starts_with(&format!("{flag} "))
                    || line.trim() == flag),
            "`kept serve --help` has no `{flag}` for `{}`:\n{help}",
            key.name()
        );
    }
}

#[test]
fn ledger_verify_reads_the_database_url_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let holder = dir.path().join("database-url");
    let elsewhere = dir.path().join("elsewhere.db");
    std::fs::write(&holder, format!("{}\n", elsewhere.display())).unwrap();
    let holder = holder.to_str().unwrap();
    let out = kept(
        dir.path(),
        &["ledger", "verify"],
        &[("KEPT_DATABASE_URL_FILE", holder)],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("elsewhere.db"),
        "looked where the file says: {stderr}"
    );
    assert!(!elsewhere.exists() && !dir.path().join("kept-data").exists());

    let both = kept(
        dir.path(),
        &["ledger", "verify"],
        &[
            ("KEPT_DATABASE_URL_FILE", holder),
            ("KEPT_DATABASE_URL", "other.db"),
        ],
    );
    let stderr = String::from_utf8_lossy(&both.stderr);
    assert_eq!(both.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`KEPT_DATABASE_URL`") && stderr.contains("`KEPT_DATABASE_URL_FILE`"),
        "{stderr}"
    );
}

/// `kept serve` logs a misspelt variable with the setting it meant, and not the webhook secret
/// the manifest names. Without a ledger key it stops right after, so no server is left running.
#[test]
fn serve_warns_about_an_unknown_variable() {
    let dir = tempfile::tempdir().unwrap();
    let init = kept(dir.path(), &["init"], &[]);
    assert!(init.status.success());
    let manifest = std::fs::read_to_string(dir.path().join("kept.toml")).unwrap();
    assert!(manifest.contains("KEPT_AD_PARTNER_SECRET"));
    let db = dir.path().join("kept.db");
    let out = kept(
        dir.path(),
        &[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--database-url",
            db.to_str().unwrap(),
            "--log-format",
            "json",
            "--ledger-witness",
            "off",
        ],
        &[
            ("KEPT_DATABSE_URL", "x.db"),
            (
                "KEPT_AD_PARTNER_SECRET",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ),
        ],
    );
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2), "{logs}");
    assert!(
        logs.contains("did you mean `KEPT_DATABASE_URL`?") && logs.contains("\"WARN\""),
        "{logs}"
    );
    assert!(!logs.contains("KEPT_AD_PARTNER_SECRET"), "{logs}");
    assert!(!logs.contains("whsec_"), "{logs}");
}
