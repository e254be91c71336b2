//! Layered configuration: precedence, errors that name the field and the layer, `*_FILE`
//! secrets, and a database password that never shows.

use kept_server::config::{
    Config, ConfigError, DatabaseUrl, Env, FileLayer, Flags, Key, LogFormat,
};
use std::net::SocketAddr;
use std::path::Path;

fn table(text: &str) -> toml::Table {
    toml::from_str(text).unwrap()
}

fn load(
    file: Option<&toml::Table>,
    env: &[(&str, &str)],
    flags: &Flags,
) -> Result<Config, ConfigError> {
    let layer = file.map(|table| FileLayer {
        table,
        path: Path::new("kept.toml"),
    });
    Config::load(layer, &Env::from_pairs(env.iter().copied()), flags)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn defaults_apply_when_nothing_is_set() {
    let config = load(None, &[], &Flags::new()).unwrap();
    assert_eq!(config.bind, addr("127.0.0.1:7300"));
    assert_eq!(config.database_url.expose(), "./kept-data/kept.db");
    assert_eq!(config.manifest, Path::new("./kept.toml"));
    assert_eq!(config.body_limit, 1024 * 1024);
    assert_eq!(config.log_format, LogFormat::Pretty);
    assert_eq!(config.ledger_key_file, None);
    assert!(!config.demo);
}

#[test]
fn flags_beat_environment_beats_file_beats_defaults() {
    let file = table(
        r#"
        bind = "127.0.0.1:8000"
        body_limit = "64KiB"
        log_format = "json"
        demo = true
        "#,
    );
    let env = [("KEPT_BIND", "127.0.0.1:8001"), ("KEPT_BODY_LIMIT", "2048")];
    let mut flags = Flags::new();
    flags.set(Key::Bind, "127.0.0.1:8002");

    let all = load(Some(&file), &env, &flags).unwrap();
    assert_eq!(all.bind, addr("127.0.0.1:8002"), "the flag wins");
    assert_eq!(all.body_limit, 2048, "the environment beats the file");
    assert_eq!(
        all.log_format,
        LogFormat::Json,
        "the file beats the default"
    );
    assert!(all.demo);

    let no_flag = load(Some(&file), &env, &Flags::new()).unwrap();
    assert_eq!(no_flag.bind, addr("127.0.0.1:8001"));
    let file_only = load(Some(&file), &[], &Flags::new()).unwrap();
    assert_eq!(file_only.bind, addr("127.0.0.1:8000"));
    assert_eq!(file_only.body_limit, 64 * 1024);
}

#[test]
fn unknown_keys_in_the_file_are_named() {
    let file = table(r#"bnd = "127.0.0.1:8000""#);
    let err = load(Some(&file), &[], &Flags::new()).unwrap_err();
    assert_eq!(err.code(), "config.unknown_key");
    let message = err.to_string();
    assert!(message.contains("`bnd`"), "{message}");
    assert!(
        message.contains("`bind`"),
        "the known keys are listed: {message}"
    );
    // The manifest's own path cannot come from inside the manifest.
    let file = table(r#"manifest = "other.toml""#);
    assert_eq!(
        load(Some(&file), &[], &Flags::new()).unwrap_err().code(),
        "config.unknown_key"
    );
}

#[test]
fn bad_values_name_the_field_and_where_it_came_from() {
    let file = table(r#"body_limit = "lots""#);
    let message = load(Some(&file), &[], &Flags::new())
        .unwrap_err()
        .to_string();
    assert!(message.contains("`body_limit`"), "{message}");
    assert!(message.contains("[server] in `kept.toml`"), "{message}");
    assert!(message.contains("`lots`"), "{message}");

    let message = load(None, &[("KEPT_LOG_FORMAT", "xml")], &Flags::new())
        .unwrap_err()
        .to_string();
    assert!(message.contains("`log_format`"), "{message}");
    assert!(
        message.contains("environment variable `KEPT_LOG_FORMAT`"),
        "{message}"
    );

    let mut flags = Flags::new();
    flags.set(Key::Bind, "everywhere");
    let err = load(None, &[], &flags).unwrap_err();
    assert_eq!(err.code(), "config.invalid_value");
    let message = err.to_string();
    assert!(message.contains("`bind`"), "{message}");
    assert!(message.contains("flag `--bind`"), "{message}");

    let file = table("bind = 7300");
    let message = load(Some(&file), &[], &Flags::new())
        .unwrap_err()
        .to_string();
    assert!(message.contains("expected a string"), "{message}");
}

#[test]
fn secrets_can_come_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("database-url");
    std::fs::write(&secret, "postgres://kept:hunter2@db:5432/kept\n").unwrap();
    let var = secret.to_str().unwrap();
    let config = load(None, &[("KEPT_DATABASE_URL_FILE", var)], &Flags::new()).unwrap();
    assert_eq!(
        config.database_url.expose(),
        "postgres://kept:hunter2@db:5432/kept"
    );

    let both = load(
        None,
        &[
            ("KEPT_DATABASE_URL_FILE", var),
            ("KEPT_DATABASE_URL", "x.db"),
        ],
        &Flags::new(),
    )
    .unwrap_err();
    assert_eq!(both.code(), "config.conflict");

    let missing = load(
        None,
        &[("KEPT_DATABASE_URL_FILE", "/nonexistent/url")],
        &Flags::new(),
    )
    .unwrap_err();
    assert_eq!(missing.code(), "config.secret_file");
    assert!(missing.to_string().contains("KEPT_DATABASE_URL_FILE"));

    let file = table(&format!("database_url_file = {:?}", var));
    let from_file = load(Some(&file), &[], &Flags::new()).unwrap();
    assert_eq!(from_file.database_url, config.database_url);

    let key = load(
        None,
        &[("KEPT_LEDGER_KEY_FILE", "/run/secrets/ledger")],
        &Flags::new(),
    )
    .unwrap();
    assert_eq!(
        key.ledger_key_file.as_deref(),
        Some(Path::new("/run/secrets/ledger"))
    );
}

#[test]
fn the_database_password_never_shows() {
    let mut flags = Flags::new();
    flags.set(
        Key::DatabaseUrl,
        "postgres://kept:hunter2@db:5432/kept?password=hunter2",
    );
    let config = load(None, &[], &flags).unwrap();
    let debug = format!("{config:?}");
    let pretty = format!("{config:#?}");
    let display = config.database_url.to_string();
    for shown in [&debug, &pretty, &display] {
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("kept:***@db:5432"), "{shown}");
    }
    assert!(config.database_url.expose().contains("hunter2"));
    assert_eq!(
        format!("{:?}", DatabaseUrl::new("postgresql://u:p%40ss@h/d")),
        "DatabaseUrl(\"postgresql://u:***@h/d\")"
    );
}

#[test]
fn manifest_path_comes_from_the_environment_or_flags() {
    let env = Env::from_pairs([("KEPT_MANIFEST", "env.toml")]);
    assert_eq!(
        Config::manifest_path(&env, &Flags::new()),
        Path::new("env.toml")
    );
    let mut flags = Flags::new();
    flags.set(Key::Manifest, "flag.toml");
    assert_eq!(Config::manifest_path(&env, &flags), Path::new("flag.toml"));
    assert_eq!(
        Config::manifest_path(&Env::default(), &Flags::new()),
        Path::new("./kept.toml")
    );
}

#[test]
fn the_decision_log_sample_rate_is_a_share_between_0_and_1() {
    let default = load(None, &[], &Flags::new()).unwrap();
    assert_eq!(default.decision_log_sample_ppm, 10_000, "1% by default");
    let file = table("decision_log_sample_rate = 0.25");
    assert_eq!(
        load(Some(&file), &[], &Flags::new())
            .unwrap()
            .decision_log_sample_ppm,
        250_000
    );
    let env = [("KEPT_DECISION_LOG_SAMPLE_RATE", "1")];
    assert_eq!(
        load(Some(&file), &env, &Flags::new())
            .unwrap()
            .decision_log_sample_ppm,
        1_000_000
    );
    let mut flags = Flags::new();
    flags.set(Key::DecisionLogSampleRate, "1.5");
    let err = load(None, &[], &flags).unwrap_err();
    assert_eq!(err.code(), "config.invalid_value");
    assert!(
        err.to_string().contains("decision_log_sample_rate"),
        "{err}"
    );
}

#[test]
fn numbers_and_durations_are_read_from_the_file_and_from_text() {
    let file = table(
        "smtp_port = 2525\ncollect_queue = 10\nwebhook_max_attempts = 3\ntrusted_proxies = 1\nretention_interval = 60\ndecision_log_retention = \"90d\"",
    );
    let config = load(
        Some(&file),
        &[("KEPT_CHECKPOINT_INTERVAL", "2m")],
        &Flags::new(),
    )
    .unwrap();
    assert_eq!(config.smtp_port, Some(2525));
    assert_eq!(config.collect_queue, 10);
    assert_eq!(config.webhook_max_attempts, 3);
    assert_eq!(config.trusted_proxies, 1);
    assert_eq!(config.retention_interval.as_secs(), 60);
    assert_eq!(config.decision_log_retention.as_secs(), 90 * 86_400);
    assert_eq!(config.checkpoint_interval.as_secs(), 120);

    for (var, value, said) in [
        ("KEPT_SMTP_PORT", "0", "is not a port number"),
        (
            "KEPT_COLLECT_QUEUE",
            "many",
            "is not a positive whole number",
        ),
        (
            "KEPT_WEBHOOK_MAX_ATTEMPTS",
            "0",
            "is not a positive whole number",
        ),
        ("KEPT_TRUSTED_PROXIES", "17", "from 0 to 16"),
        ("KEPT_DECISION_LOG_RETENTION", "5y", "unknown unit"),
        ("KEPT_REQUEST_TIMEOUT", "0s", "longer than zero"),
    ] {
        let message = load(None, &[(var, value)], &Flags::new())
            .unwrap_err()
            .to_string();
        assert!(message.contains(said), "{var}={value}: {message}");
        assert!(message.contains(var), "{var}={value}: {message}");
    }
}

#[test]
fn the_ledger_witness_defaults_to_the_data_directory_and_can_move_or_stop() {
    let config = load(None, &[], &Flags::new()).unwrap();
    assert_eq!(
        config.witness_path(),
        Some(Path::new("./kept-data").join("ledger-witness.log"))
    );
    assert_eq!(config.ledger_witness_url, None);
    assert_eq!(config.checkpoint_interval.as_secs(), 1);
    let file = table(
        r#"
        data_dir = "/var/lib/kept"
        ledger_witness_url = "https://witness.example/kept"
        "#,
    );
    let config = load(Some(&file), &[], &Flags::new()).unwrap();
    assert_eq!(
        config.witness_path(),
        Some(Path::new("/var/lib/kept").join("ledger-witness.log"))
    );
    assert_eq!(
        config.ledger_witness_url.as_deref(),
        Some("https://witness.example/kept")
    );
    let env = [("KEPT_LEDGER_WITNESS", "/mnt/offsite/witness.log")];
    let config = load(None, &env, &Flags::new()).unwrap();
    assert_eq!(
        config.witness_path(),
        Some(Path::new("/mnt/offsite/witness.log").to_path_buf())
    );
    let config = load(None, &[("KEPT_LEDGER_WITNESS", "off")], &Flags::new()).unwrap();
    assert_eq!(config.witness_path(), None);
    let err = load(
        None,
        &[("KEPT_LEDGER_WITNESS_URL", "witness.example")],
        &Flags::new(),
    )
    .unwrap_err();
    assert_eq!(err.code(), "config.invalid_value");
    assert!(err.to_string().contains("`ledger_witness_url`"), "{err}");
}

#[test]
fn the_identity_secret_comes_from_a_file_and_never_shows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity-secret");
    std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").unwrap();
    let var = path.to_str().unwrap();
    let config = load(None, &[("KEPT_IDENTITY_SECRET_FILE", var)], &Flags::new()).unwrap();
    let secret = config.identity_secret.as_ref().unwrap();
    assert_eq!(secret.expose(), "0123456789abcdef0123456789abcdef");
    assert!(!format!("{config:?}").contains("0123456789abcdef"));
    let file = table(&format!("identity_secret_file = {var:?}"));
    let from_file = load(Some(&file), &[], &Flags::new()).unwrap();
    assert_eq!(from_file.identity_secret, config.identity_secret);
    // Too short to be a secret: refused, naming the field and where it came from.
    let short = load(None, &[("KEPT_IDENTITY_SECRET", "hunter2")], &Flags::new()).unwrap_err();
    assert_eq!(short.code(), "config.invalid_value");
    let message = short.to_string();
    assert!(message.contains("identity_secret") && message.contains("KEPT_IDENTITY_SECRET"));
    assert!(!message.contains("hunter2"), "{message}");
    let both = load(
        None,
        &[
            ("KEPT_IDENTITY_SECRET_FILE", var),
            ("KEPT_IDENTITY_SECRET", "0123456789abcdef0123"),
        ],
        &Flags::new(),
    )
    .unwrap_err();
    assert_eq!(both.code(), "config.conflict");
}
