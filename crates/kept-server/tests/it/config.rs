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
        Config::manifest_path(&env, &Flags::new()).unwrap(),
        Path::new("env.toml")
    );
    let mut flags = Flags::new();
    flags.set(Key::Manifest, "flag.toml");
    assert_eq!(
        Config::manifest_path(&env, &flags).unwrap(),
        Path::new("flag.toml")
    );
    assert_eq!(
        Config::manifest_path(&Env::default(), &Flags::new()).unwrap(),
        Path::new("./kept.toml")
    );
    // The manifest's path, too, may come from a file.
    let dir = tempfile::tempdir().unwrap();
    let holder = dir.path().join("manifest-path");
    std::fs::write(&holder, "/etc/kept/kept.toml\n").unwrap();
    let env = Env::from_pairs([("KEPT_MANIFEST_FILE", holder.to_str().unwrap())]);
    assert_eq!(
        Config::manifest_path(&env, &Flags::new()).unwrap(),
        Path::new("/etc/kept/kept.toml")
    );
    let both = Env::from_pairs([
        ("KEPT_MANIFEST_FILE", holder.to_str().unwrap()),
        ("KEPT_MANIFEST", "env.toml"),
    ]);
    assert_eq!(
        Config::manifest_path(&both, &Flags::new())
            .unwrap_err()
            .code(),
        "config.conflict"
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

/// A value every key accepts, unlike its default, so that setting it shows. The `match` has no
/// catch-all: a new key must say how it is tested here.
fn sample(key: Key) -> &'static str {
    match key {
        Key::Bind => "127.0.0.1:7411",
        Key::DatabaseUrl => "postgres://kept:hunter2@db:5432/kept",
        Key::Manifest => "/etc/kept/kept.toml",
        Key::LedgerKeyFile => "/run/secrets/ledger.key",
        Key::BodyLimit => "64KiB",
        Key::RequestTimeout => "45s",
        Key::CheckpointInterval => "2m",
        Key::LogFormat => "json",
        Key::LogFilter => "kept_server=debug,info",
        Key::DataDir => "/var/lib/kept",
        Key::Demo => "true",
        Key::WebhookMaxAttempts => "7",
        Key::DecisionLogSampleRate => "0.5",
        Key::CorsOrigins => "https://shop.example, https://www.shop.example",
        Key::DefaultCountry => "de",
        Key::CollectQueue => "1000",
        Key::QuarantineLimit => "5000",
        Key::RetentionInterval => "10m",
        Key::DecisionLogRetention => "90d",
        Key::MasterKeyFile => "/run/secrets/master.key",
        Key::PublicUrl => "https://privacy.shop.example",
        Key::SmtpHost => "mail.shop.example",
        Key::SmtpPort => "2525",
        Key::SmtpTls => "tls",
        Key::SmtpUser => "kept",
        // White space inside a password is kept; only the file's line end goes.
        Key::SmtpPassword => " pass word ",
        Key::SmtpFrom => "Shop <privacy@shop.example>",
        Key::TrustedProxies => "2",
        Key::ConsentReads => "store",
        Key::LedgerWitness => "/mnt/offsite/witness.log",
        Key::LedgerWitnessUrl => "https://witness.example/kept",
        Key::IdentitySecret => "0123456789abcdef0123456789abcdef",
    }
}

#[test]
fn every_variable_can_name_a_file_holding_its_value() {
    let dir = tempfile::tempdir().unwrap();
    let default = load(None, &[], &Flags::new()).unwrap();
    for key in Key::ALL {
        let value = sample(key);
        let direct = load(None, &[(&key.env(), value)], &Flags::new())
            .unwrap_or_else(|e| panic!("`{}={value}`: {e}", key.env()));
        assert_ne!(direct, default, "`{}` changes the configuration", key.env());
        // Files written by `echo` or an editor end with a line end; Windows' with `\r\n`.
        for ending in ["", "\n", "\r\n"] {
            let path = dir.path().join(format!("{}{}", key.name(), ending.len()));
            std::fs::write(&path, format!("{value}{ending}")).unwrap();
            let file_var = key.env_file();
            let from_file = load(None, &[(&file_var, path.to_str().unwrap())], &Flags::new())
                .unwrap_or_else(|e| panic!("`{file_var}`: {e}"));
            assert_eq!(from_file, direct, "`{file_var}` with {ending:?}");
        }
    }
    let config = load(
        None,
        &[(
            "KEPT_SMTP_PASSWORD_FILE",
            dir.path().join("smtp_password1").to_str().unwrap(),
        )],
        &Flags::new(),
    )
    .unwrap();
    assert_eq!(config.smtp_password.unwrap().expose(), " pass word ");
}

#[test]
fn a_variable_and_its_file_together_are_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("value");
    std::fs::write(&path, "7\n").unwrap();
    for key in Key::ALL {
        let err = load(
            None,
            &[
                (&key.env(), sample(key)),
                (&key.env_file(), path.to_str().unwrap()),
            ],
            &Flags::new(),
        )
        .unwrap_err();
        assert_eq!(err.code(), "config.conflict", "{}", key.env());
        let message = err.to_string();
        assert!(
            message.contains(&format!("`{}`", key.env()))
                && message.contains(&format!("`{}`", key.env_file())),
            "{message}"
        );
    }
}

#[test]
fn an_unreadable_value_file_is_named_with_its_variable() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-file");
    let not_text = dir.path().join("binary");
    std::fs::write(&not_text, [0xff, 0xfe, 0x00]).unwrap();
    let folder = dir.path().to_path_buf();
    for (var, path) in [
        ("KEPT_WEBHOOK_MAX_ATTEMPTS_FILE", &missing),
        ("KEPT_LEDGER_KEY_FILE_FILE", &missing),
        ("KEPT_SMTP_PASSWORD_FILE", &not_text),
        ("KEPT_CORS_ORIGINS_FILE", &folder),
    ] {
        let err = load(None, &[(var, path.to_str().unwrap())], &Flags::new()).unwrap_err();
        assert_eq!(err.code(), "config.secret_file", "{var}");
        let message = err.to_string();
        assert!(message.contains(var), "{message}");
        assert!(message.contains(path.to_str().unwrap()), "{message}");
    }
    // The file's content is checked like the variable's, and the error says where it came from.
    let bad = dir.path().join("port");
    std::fs::write(&bad, "0\n").unwrap();
    let message = load(
        None,
        &[("KEPT_SMTP_PORT_FILE", bad.to_str().unwrap())],
        &Flags::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        message.contains("`smtp_port`") && message.contains("`KEPT_SMTP_PORT_FILE`"),
        "{message}"
    );
}

#[test]
fn a_secret_flag_names_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("smtp-password");
    std::fs::write(&path, "hunter2\n").unwrap();
    let mut flags = Flags::new();
    flags.set_file_opt(Key::SmtpPassword, Some(path.to_str().unwrap()));
    let config = load(None, &[("KEPT_SMTP_PASSWORD", "from-env")], &flags).unwrap();
    assert_eq!(config.smtp_password.unwrap().expose(), "hunter2");
    assert!(!format!("{flags:?}").contains("hunter2"));
    assert_eq!(Key::SmtpPassword.flag(), "--smtp-password-file");
    assert_eq!(Key::IdentitySecret.flag(), "--identity-secret-file");
    assert_eq!(Key::CorsOrigins.flag(), "--cors-origins");
}

#[test]
fn no_file_variable_is_another_setting() {
    for key in Key::ALL {
        assert!(
            Key::ALL
                .into_iter()
                .all(|other| other.env() != key.env_file()),
            "`{}` is ambiguous",
            key.env_file()
        );
    }
}

#[test]
fn unknown_variables_are_named_with_the_closest_setting() {
    let env = Env::from_pairs([
        ("KEPT_DATABSE_URL", "x.db"),
        ("KEPT_SMTP_PASWORD_FILE", "/run/secrets/smtp"),
        ("KEPT_BIND", "127.0.0.1:7300"),
        ("KEPT_DATABASE_URL_FILE", "/run/secrets/url"),
        // Not settings, and read by Kept or its tools: no warning.
        ("KEPT_AD_PARTNER_SECRET", "whsec_x"),
        ("KEPT_AD_PARTNER_SECRET_FILE", "/run/secrets/ad-partner"),
        (
            "KEPT_TEST_DATABASE_URL",
            "postgres://postgres@127.0.0.1/postgres",
        ),
        ("KEPT_BENCH_SECONDS", "5"),
        ("KEPT_BIN", "target/debug/kept"),
        ("KEPT_URL", "http://127.0.0.1:7300"),
    ]);
    let unknown = env.unknown_variables(["KEPT_AD_PARTNER_SECRET"]);
    let shown: Vec<String> = unknown.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "unknown environment variable `KEPT_DATABSE_URL` is ignored; did you mean \
             `KEPT_DATABASE_URL`?",
            "unknown environment variable `KEPT_SMTP_PASWORD_FILE` is ignored; did you mean \
             `KEPT_SMTP_PASSWORD_FILE`?",
        ]
    );
    // A webhook secret the manifest does not name is not known.
    let unknown = env.unknown_variables([]);
    assert!(
        unknown.iter().any(|u| u.var == "KEPT_AD_PARTNER_SECRET")
            && unknown
                .iter()
                .any(|u| u.var == "KEPT_AD_PARTNER_SECRET_FILE"),
        "{unknown:?}"
    );
    assert!(Env::default().unknown_variables([]).is_empty());
}

/// One redactor for every database URL Kept shows (configuration, store errors), and no
/// password survives it, however the URL is malformed.
#[test]
fn no_password_shows_in_a_malformed_url() {
    for (url, shown) in [
        (
            "postgres://kept:hunter2@db:5432/kept",
            "postgres://kept:***@db:5432/kept",
        ),
        // No scheme.
        ("kept:hunter2@db:5432/kept", "kept:***@db:5432/kept"),
        ("postgres:/kept:hunter2@db/kept", "postgres:***@db/kept"),
        // `@`, `/`, `?` and `:` in the password, not percent-encoded.
        (
            "postgres://kept:hun@ter2@db/kept",
            "postgres://kept:***@db/kept",
        ),
        (
            "postgres://kept:hun/ter2@db/kept",
            "postgres://kept:***@db/kept",
        ),
        (
            "postgres://kept:hun?ter2@db/kept?sslmode=require",
            "postgres://kept:***@db/kept?sslmode=require",
        ),
        (
            "postgres://kept:hun:ter2@db/kept",
            "postgres://kept:***@db/kept",
        ),
        // Percent-encoded.
        (
            "postgres://kept:hun%40ter2@db/kept",
            "postgres://kept:***@db/kept",
        ),
        // In the query, under either name and any case.
        (
            "postgres://db/kept?user=kept&password=hunter2",
            "postgres://db/kept?user=kept&password=***",
        ),
        (
            "postgres://kept@db/kept?sslmode=verify-full&sslpassword=hunter2",
            "postgres://kept@db/kept?sslmode=verify-full&sslpassword=***",
        ),
        (
            "postgres://db/kept?PASSWORD=hunter2&application_name=x@y",
            "postgres://db/kept?PASSWORD=***&application_name=x@y",
        ),
        (
            "postgres://kept:hunter2@db/kept?password=hunter2",
            "postgres://kept:***@db/kept?password=***",
        ),
        // Nothing to hide: left as it is.
        ("postgres://kept@db/kept", "postgres://kept@db/kept"),
        ("postgres://db:5432/kept", "postgres://db:5432/kept"),
        ("./kept-data/kept.db", "./kept-data/kept.db"),
    ] {
        let url = DatabaseUrl::new(url);
        for redacted in [
            url.redacted(),
            url.to_string(),
            format!("{url:?}"),
            kept_server::store::redact(url.expose()),
        ] {
            assert!(!redacted.contains("hunter2"), "{redacted}");
            assert!(!redacted.contains("ter2"), "{redacted}");
            assert!(redacted.contains(shown), "{} → {redacted}", url.expose());
        }
    }
}
