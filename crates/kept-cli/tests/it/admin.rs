//! `kept admin`: an operator made offline signs in with what it printed once; bad input exits 2
//! naming the field; the list shows no secret.

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

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn an_operator_is_created_once_and_signs_in_with_what_was_printed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kept.db");
    let db = db.to_str().unwrap();
    let created = kept(
        dir.path(),
        &[
            "admin",
            "create-user",
            "--email",
            "Ana@Example.com",
            "--role",
            "privacy",
            "--database-url",
            db,
            "--format",
            "json",
        ],
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let created = json(&created);
    assert_eq!(created["email"], "ana@example.com");
    assert_eq!(created["role"], "privacy");
    let password = created["password"].as_str().unwrap().to_owned();
    assert!(password.len() >= 20);
    let secret = created["totp_secret"].as_str().unwrap();
    assert!(
        created["otpauth_url"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/Kept:")
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = kept_server::store::open(db).await.unwrap();
        let secret = kept_server::console::accounts::secret_from_base32(secret).unwrap();
        let now = kept_server::state::system_now();
        let code = kept_server::console::accounts::code_at(&secret, now);
        let signed = kept_server::console::accounts::sign_in(
            store.as_ref(),
            "ana@example.com",
            &password,
            &code,
            now,
        )
        .await
        .unwrap();
        assert!(
            signed.is_some(),
            "signs in with the printed password and secret"
        );
        store.close().await.unwrap();
    });

    let again = kept(
        dir.path(),
        &[
            "admin",
            "create-user",
            "--email",
            "ana@example.com",
            "--role",
            "admin",
            "--database-url",
            db,
        ],
    );
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let short = dir.path().join("pw.txt");
    std::fs::write(&short, "short\n").unwrap();
    let weak = kept(
        dir.path(),
        &[
            "admin",
            "create-user",
            "--email",
            "ben@example.com",
            "--role",
            "marketing",
            "--password-file",
            short.to_str().unwrap(),
            "--database-url",
            db,
            "--format",
            "json",
        ],
    );
    assert_eq!(weak.status.code(), Some(2));
    assert_eq!(json(&weak)["error"]["code"], "operator.password");
    let bad_email = kept(
        dir.path(),
        &[
            "admin",
            "create-user",
            "--email",
            "not an address",
            "--role",
            "marketing",
            "--database-url",
            db,
        ],
    );
    assert_eq!(bad_email.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_email.stderr).contains("`email`"));
    let bad_role = kept(
        dir.path(),
        &[
            "admin",
            "create-user",
            "--email",
            "cy@example.com",
            "--role",
            "root",
            "--database-url",
            db,
        ],
    );
    assert_eq!(bad_role.status.code(), Some(2));

    let listed = kept(
        dir.path(),
        &[
            "admin",
            "list-users",
            "--database-url",
            db,
            "--format",
            "json",
        ],
    );
    let listed = json(&listed);
    assert_eq!(listed["operators"].as_array().unwrap().len(), 1);
    assert_eq!(listed["operators"][0]["email"], "ana@example.com");
    let text = listed.to_string();
    assert!(
        !text.contains(&password) && !text.contains("argon2"),
        "no secret listed"
    );
}
