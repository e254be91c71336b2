//! `kept init` and `kept lint` as a user runs them: exit statuses, text and JSON output.

use kept_core::manifest::{EXAMPLE_TOML, demo_toml};
use std::path::Path;
use std::process::{Command, Output};

fn kept(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kept"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run kept")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

fn status(output: &Output) -> i32 {
    output.status.code().expect("exited normally")
}

/// 1-based line and column of the first `needle` in `source`.
fn position(source: &str, needle: &str) -> (usize, usize) {
    let offset = source.find(needle).expect("needle in source");
    let before = &source[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        source[line_start..offset].chars().count() + 1,
    )
}

#[test]
fn init_writes_the_example_and_lint_flags_the_sms_tool() {
    let dir = tempfile::tempdir().unwrap();
    let output = kept(&["init", "shop"], dir.path());
    assert_eq!(status(&output), 0, "{}", stderr(&output));
    let written = std::fs::read_to_string(dir.path().join("shop/kept.toml")).unwrap();
    assert_eq!(written, EXAMPLE_TOML);

    let output = kept(&["lint", "shop/kept.toml"], dir.path());
    assert_eq!(status(&output), 1, "{}", stderr(&output));
    let text = stdout(&output);
    let (line, column) = position(
        EXAMPLE_TOML,
        "\"marketing.communications\"\ncategories = [\"user.contact.phone_number\"]",
    );
    assert!(
        text.contains(&format!(
            "shop/kept.toml:{line}:{column}: error[system.use_not_promised]: system `sms_blaster`"
        )),
        "{text}"
    );
    assert!(text.contains("at systems.sms_blaster.uses[0]"), "{text}");
    assert!(
        text.contains("shop/kept.toml: 1 error and 0 warnings"),
        "{text}"
    );
}

#[test]
fn init_demo_writes_the_manifest_the_demo_runs() {
    let dir = tempfile::tempdir().unwrap();
    let output = kept(&["init", "--demo", "demo"], dir.path());
    assert_eq!(status(&output), 0, "{}", stderr(&output));
    let written = std::fs::read_to_string(dir.path().join("demo/kept.toml")).unwrap();
    assert_eq!(written, kept_core::manifest::demo_toml());
}

#[test]
fn init_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kept.toml");
    std::fs::write(&path, "# ours\n").unwrap();

    let output = kept(&["init"], dir.path());
    assert_eq!(status(&output), 2);
    assert!(
        stderr(&output).contains("already exists"),
        "{}",
        stderr(&output)
    );
    assert!(stderr(&output).contains("--force"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "# ours\n");

    let output = kept(&["init", "--force"], dir.path());
    assert_eq!(status(&output), 0, "{}", stderr(&output));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), EXAMPLE_TOML);
}

#[test]
fn lint_reads_kept_toml_in_the_current_directory_by_default() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kept.toml"), demo_toml()).unwrap();
    let output = kept(&["lint"], dir.path());
    assert_eq!(status(&output), 0, "{}{}", stdout(&output), stderr(&output));
    assert!(stdout(&output).contains("kept.toml: no findings"));
}

#[test]
fn lint_json_is_a_stable_report() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kept.toml"), EXAMPLE_TOML).unwrap();
    let output = kept(&["lint", "--format", "json"], dir.path());
    assert_eq!(status(&output), 1);
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["file"], "kept.toml");
    assert_eq!(report["ok"], false);
    assert_eq!(report["errors"], 1);
    assert_eq!(report["warnings"], 0);
    let finding = &report["findings"][0];
    assert_eq!(finding["code"], "system.use_not_promised");
    assert_eq!(finding["severity"], "error");
    assert_eq!(finding["path"], "systems.sms_blaster.uses[0]");
    assert!(finding["line"].as_u64().unwrap() > 0);
    assert!(finding["column"].as_u64().unwrap() > 0);
    assert_eq!(report["findings"].as_array().unwrap().len(), 1);

    std::fs::write(dir.path().join("kept.toml"), demo_toml()).unwrap();
    let output = kept(&["lint", "--format", "json"], dir.path());
    assert_eq!(status(&output), 0);
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["findings"], serde_json::json!([]));
}

#[test]
fn warnings_alone_pass_unless_denied() {
    let dir = tempfile::tempdir().unwrap();
    let source = demo_toml().replacen(
        "web = { name = \"Web shop\" }",
        "web = { name = \"Web shop\" }\nfax = { name = \"Fax\" }",
        1,
    );
    std::fs::write(dir.path().join("kept.toml"), source).unwrap();
    let output = kept(&["lint"], dir.path());
    assert_eq!(status(&output), 0, "{}", stdout(&output));
    assert!(stdout(&output).contains("warning[channel.unknown]"));
    assert!(stdout(&output).contains("0 errors and 1 warning"));

    let output = kept(&["lint", "--deny-warnings"], dir.path());
    assert_eq!(status(&output), 1);
    let output = kept(&["lint", "--deny-warnings", "--format", "json"], dir.path());
    assert_eq!(status(&output), 1);
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["warnings"], 1);
}

#[test]
fn unusable_manifests_exit_2_with_a_position() {
    let dir = tempfile::tempdir().unwrap();

    let output = kept(&["lint", "missing.toml"], dir.path());
    assert_eq!(status(&output), 2);
    assert!(
        stderr(&output).contains("cannot read `missing.toml`"),
        "{}",
        stderr(&output)
    );

    let source = EXAMPLE_TOML.replacen(
        "owner = \"marketing\"",
        "purpse = \"x\"\nowner = \"marketing\"",
        1,
    );
    std::fs::write(dir.path().join("kept.toml"), &source).unwrap();
    let output = kept(&["lint"], dir.path());
    assert_eq!(status(&output), 2);
    let (line, column) = position(&source, "purpse");
    assert!(
        stderr(&output).contains(&format!(
            "kept.toml:{line}:{column}: error[manifest.unknown_key]: unknown key `purpse`"
        )),
        "{}",
        stderr(&output)
    );
    assert!(stdout(&output).is_empty());

    let source = EXAMPLE_TOML.replacen("[teams.privacy]", "[teams.privacy", 1);
    std::fs::write(dir.path().join("kept.toml"), &source).unwrap();
    let output = kept(&["lint", "--format", "json"], dir.path());
    assert_eq!(status(&output), 2);
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["error"]["code"], "manifest.syntax");
    assert_eq!(
        report["error"]["line"].as_u64().unwrap() as usize,
        position(&source, "[teams.privacy").0
    );
}

#[test]
fn help_shows_examples() {
    let dir = tempfile::tempdir().unwrap();
    for command in ["lint", "init"] {
        let output = kept(&[command, "--help"], dir.path());
        assert_eq!(status(&output), 0);
        let help = stdout(&output);
        assert!(help.contains("Examples:"), "{help}");
        assert!(help.contains(&format!("kept {command}")), "{help}");
    }
}

#[tokio::test]
async fn lint_compares_notices_with_the_hashes_a_database_recorded() {
    use kept_core::manifest::load;
    use kept_store::NoticeHash;

    let dir = tempfile::tempdir().unwrap();
    let manifest_path = dir.path().join("kept.toml");
    std::fs::write(&manifest_path, demo_toml()).unwrap();
    let db = dir.path().join("kept.db");
    let db_url = db.to_str().unwrap().to_owned();
    let demo = load(&demo_toml(), "kept.toml").unwrap().manifest;
    let recorded = |hash: &str| NoticeHash {
        notice_id: "rewards".to_owned(),
        version: 1,
        hash: hash.to_owned(),
        recorded_at: 1_700_000_000_000,
    };

    // The database remembers the rewards notice with a different text under the same version.
    {
        let store = kept_server::store::open(&db_url).await.unwrap();
        store
            .record_notice_hashes(&[recorded(&"0".repeat(64))])
            .await
            .unwrap();
    }
    let output = kept(
        &["lint", "--database-url", &db_url, "--format", "json"],
        dir.path(),
    );
    assert_eq!(status(&output), 1, "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["errors"], 1);
    assert_eq!(
        report["findings"][0]["code"],
        "notice.changed_without_version_bump"
    );
    assert_eq!(report["findings"][0]["path"], "notices.rewards.version");

    // A database that is not there is unusable input, and linting does not create it.
    let output = kept(&["lint", "--database-url", "missing.db"], dir.path());
    assert_eq!(status(&output), 2);
    assert!(
        stderr(&output).contains("no database at `missing.db`"),
        "{}",
        stderr(&output)
    );
    assert!(!dir.path().join("missing.db").exists());

    // Without the database the same manifest is clean.
    assert_eq!(status(&kept(&["lint"], dir.path())), 0);

    // A database that recorded the current text agrees.
    let other_db = dir.path().join("other.db");
    let other_url = other_db.to_str().unwrap().to_owned();
    {
        let store = kept_server::store::open(&other_url).await.unwrap();
        store
            .record_notice_hashes(&[recorded(&demo.notices["rewards"].hash)])
            .await
            .unwrap();
    }
    let output = kept(&["lint", "--database-url", &other_url], dir.path());
    assert_eq!(status(&output), 0, "{}{}", stdout(&output), stderr(&output));
}

#[test]
fn lint_warnings_about_legal_bases_and_soft_opt_in_have_their_place_in_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    // The example as it was: `us` alone, and soft opt-in with no checkout promising marketing.
    let source = EXAMPLE_TOML
        .replacen(
            "legal_basis = { default = \"consent\", ccpa = \"legitimate_interests\", us_state = \"legitimate_interests\", us = \"legitimate_interests\" }\n",
            "legal_basis = { default = \"consent\", us = \"legitimate_interests\" }\nsoft_opt_in = true\n",
            1,
        );
    assert_ne!(source, EXAMPLE_TOML);
    std::fs::write(dir.path().join("kept.toml"), &source).unwrap();

    let output = kept(&["lint"], dir.path());
    assert_eq!(status(&output), 1, "{}", stderr(&output));
    let text = stdout(&output);
    let (line, column) = position(&source, "us = \"legitimate_interests\" }\nsoft_opt_in");
    assert!(
        text.contains(&format!(
            "kept.toml:{line}:{column}: warning[purpose.legal_basis_default_contradicts]: purpose `marketing.communications` declares `legitimate_interests` for `us`"
        )),
        "{text}"
    );
    let (line, column) = position(&source, "soft_opt_in = true");
    let column = column + "soft_opt_in = ".len();
    assert!(
        text.contains(&format!(
            "kept.toml:{line}:{column}: warning[purpose.soft_opt_in_never_applies]"
        )),
        "{text}"
    );
    assert!(text.contains("kept.toml: 1 error and 2 warnings"), "{text}");

    let output = kept(&["lint", "--format", "json"], dir.path());
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["errors"], 1);
    assert_eq!(report["warnings"], 2);
    let codes: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "purpose.legal_basis_default_contradicts",
            "purpose.soft_opt_in_never_applies",
            "system.use_not_promised"
        ]
    );
    let soft = &report["findings"][1];
    assert_eq!(soft["severity"], "warning");
    assert_eq!(soft["line"], line);
    assert_eq!(soft["column"], column);
}
