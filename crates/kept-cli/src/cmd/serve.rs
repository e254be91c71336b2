//! `kept serve`: loads the manifest (or the demo one), resolves the configuration (defaults →
//! `[server]` of the manifest → `KEPT_*` → these flags) and runs the server until SIGINT or
//! SIGTERM.

use kept_server::config::{Config, Env, FileLayer, Flags, Key};
use std::path::Path;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Each flag overrides the `KEPT_*` environment variable of the same name (`--bind` → `KEPT_BIND`),
which overrides `[server]` in the manifest. Every variable may instead name a file holding its
value, with a `_FILE` suffix (`KEPT_DATABASE_URL_FILE`). Secrets are given as files only
(`--smtp-password-file`), since a command line is visible to every user of the machine.

Examples:
  kept serve --demo
  kept serve --manifest kept.toml --ledger-key-file kept-ledger.key
  kept serve --database-url postgres://kept@127.0.0.1:5432/kept --log-format json")]
pub struct Args {
    /// Run the example shop: the demo manifest, a demo population loaded on first start, and
    /// one API key per role written to `kept-data/demo-keys.json`
    #[arg(long)]
    demo: bool,
    /// Address to listen on (port 0 picks a free port) [default: 127.0.0.1:7300]
    #[arg(long, value_name = "ADDR")]
    bind: Option<String>,
    /// An SQLite file path or a `postgres://` URL [default: ./kept-data/kept.db]
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// The manifest to load [default: ./kept.toml; with `--demo`, the demo manifest]. With
    /// `--demo` it must declare what the demo population was collected under: the demo
    /// manifest with additions (`kept init --demo` writes it)
    #[arg(long, value_name = "PATH")]
    manifest: Option<String>,
    /// File holding the Ed25519 key that signs ledger checkpoints
    #[arg(long, value_name = "FILE")]
    ledger_key_file: Option<String>,
    /// Largest request body accepted (`1MiB`, `65536`) [default: 1MiB]
    #[arg(long, value_name = "SIZE")]
    body_limit: Option<String>,
    /// Answer a request still running after this long with an error [default: 30s]
    #[arg(long, value_name = "DURATION")]
    request_timeout: Option<String>,
    /// How often to look for ledger records no checkpoint covers (written by another process)
    /// and sign one; Kept's own appends commit with theirs [default: 1s]
    #[arg(long, value_name = "DURATION")]
    checkpoint_interval: Option<String>,
    /// File every ledger checkpoint is also appended to, or `off`
    /// [default: ledger-witness.log in the data directory]
    #[arg(long, value_name = "FILE")]
    ledger_witness: Option<String>,
    /// URL every ledger checkpoint is also POSTed to (text, one checkpoint a line)
    #[arg(long, value_name = "URL")]
    ledger_witness_url: Option<String>,
    /// `pretty` for a terminal, `json` for a log collector [default: pretty]
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Which logs to show, as a `tracing` filter [default: info]
    #[arg(long, value_name = "FILTER")]
    log_filter: Option<String>,
    /// Where generated files such as the demo keys go [default: ./kept-data]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<String>,
    /// Share of allowed decisions written to the decision log, 0 to 1 (denied ones always
    /// are) [default: 0.01]
    #[arg(long, value_name = "SHARE")]
    decision_log_sample_rate: Option<String>,
    /// Attempts at a webhook delivery before it is kept as a dead letter [default: 20]
    #[arg(long, value_name = "N")]
    webhook_max_attempts: Option<String>,
    /// Reverse proxies in front of Kept that append to `X-Forwarded-For`; with 0 the header
    /// is ignored and the connection's address is the client's [default: 0]
    #[arg(long, value_name = "N")]
    trusted_proxies: Option<String>,
    /// Where a subject's choices are read from: `index` (memory), or `store` (the database on
    /// every request, to compare in a benchmark) [default: index]
    #[arg(long, value_name = "FROM")]
    consent_reads: Option<String>,
    /// Origins whose pages may call the collection endpoints, comma-separated, or `*` for any
    #[arg(long, value_name = "ORIGINS")]
    cors_origins: Option<String>,
    /// Two-letter country that phone numbers without a country code are read in (`DE`)
    #[arg(long, value_name = "COUNTRY")]
    default_country: Option<String>,
    /// Collected events admitted at once; beyond, clients are answered 429 [default: 50000]
    #[arg(long, value_name = "N")]
    collect_queue: Option<String>,
    /// Rejected collected messages the quarantine holds at most; beyond, they are counted and
    /// dropped (0: none is held) [default: 100000]
    #[arg(long, value_name = "N")]
    quarantine_limit: Option<String>,
    /// How often expired events and traits are deleted [default: 1h]
    #[arg(long, value_name = "DURATION")]
    retention_interval: Option<String>,
    /// How long decision log entries are kept [default: 730d]
    #[arg(long, value_name = "DURATION")]
    decision_log_retention: Option<String>,
    /// File holding the 32-byte master secret identifiers are hashed and sealed with
    /// [default: one generated and kept in the database]
    #[arg(long, value_name = "FILE")]
    master_key_file: Option<String>,
    /// The address customers reach this server at, for the preference center's links
    /// (`https://privacy.shop.example`) [default: http:// and the bind address]
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// Mail server the preference center sends its links through
    #[arg(long, value_name = "HOST")]
    smtp_host: Option<String>,
    /// The mail server's port [default: the TLS mode's usual one, 25, 587 or 465]
    #[arg(long, value_name = "PORT")]
    smtp_port: Option<String>,
    /// `none`, `starttls` or `tls` [default: starttls]
    #[arg(long, value_name = "MODE")]
    smtp_tls: Option<String>,
    /// User name at the mail server
    #[arg(long, value_name = "USER")]
    smtp_user: Option<String>,
    /// File holding the password at the mail server
    #[arg(long, value_name = "FILE")]
    smtp_password_file: Option<String>,
    /// The `From` address of the preference center's mail (`Shop <privacy@shop.example>`)
    #[arg(long, value_name = "ADDRESS")]
    smtp_from: Option<String>,
    /// File holding the secret identity tokens are minted with (at least 16 characters)
    #[arg(long, value_name = "FILE")]
    identity_secret_file: Option<String>,
}

impl Args {
    fn flags(&self) -> Flags {
        let mut flags = Flags::new();
        if self.demo {
            flags.set(Key::Demo, "true");
        }
        flags
            .set_opt(Key::Bind, self.bind.clone())
            .set_opt(Key::DatabaseUrl, self.database_url.clone())
            .set_opt(Key::Manifest, self.manifest.clone())
            .set_opt(Key::LedgerKeyFile, self.ledger_key_file.clone())
            .set_opt(Key::BodyLimit, self.body_limit.clone())
            .set_opt(Key::RequestTimeout, self.request_timeout.clone())
            .set_opt(Key::CheckpointInterval, self.checkpoint_interval.clone())
            .set_opt(Key::LedgerWitness, self.ledger_witness.clone())
            .set_opt(Key::LedgerWitnessUrl, self.ledger_witness_url.clone())
            .set_opt(Key::LogFormat, self.log_format.clone())
            .set_opt(Key::LogFilter, self.log_filter.clone())
            .set_opt(Key::DataDir, self.data_dir.clone())
            .set_opt(
                Key::DecisionLogSampleRate,
                self.decision_log_sample_rate.clone(),
            )
            .set_opt(Key::WebhookMaxAttempts, self.webhook_max_attempts.clone())
            .set_opt(Key::TrustedProxies, self.trusted_proxies.clone())
            .set_opt(Key::ConsentReads, self.consent_reads.clone())
            .set_opt(Key::CorsOrigins, self.cors_origins.clone())
            .set_opt(Key::DefaultCountry, self.default_country.clone())
            .set_opt(Key::CollectQueue, self.collect_queue.clone())
            .set_opt(Key::QuarantineLimit, self.quarantine_limit.clone())
            .set_opt(Key::RetentionInterval, self.retention_interval.clone())
            .set_opt(
                Key::DecisionLogRetention,
                self.decision_log_retention.clone(),
            )
            .set_opt(Key::MasterKeyFile, self.master_key_file.clone())
            .set_opt(Key::PublicUrl, self.public_url.clone())
            .set_opt(Key::SmtpHost, self.smtp_host.clone())
            .set_opt(Key::SmtpPort, self.smtp_port.clone())
            .set_opt(Key::SmtpTls, self.smtp_tls.clone())
            .set_opt(Key::SmtpUser, self.smtp_user.clone())
            .set_file_opt(Key::SmtpPassword, self.smtp_password_file.clone())
            .set_opt(Key::SmtpFrom, self.smtp_from.clone())
            .set_file_opt(Key::IdentitySecret, self.identity_secret_file.clone());
        flags
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let env = Env::from_process();
    let flags = args.flags();
    // Demo mode and the manifest path decide which manifest to read, so they are resolved
    // from the environment and flags before `[server]` can be.
    let early = match Config::load(None, &env, &flags) {
        Ok(c) => c,
        Err(e) => return Ok(usage_error(&e.to_string())),
    };
    let named = match Config::early_setting(&env, &flags, Key::Manifest) {
        Ok(named) => named.is_some(),
        Err(e) => return Ok(usage_error(&e.to_string())),
    };
    let (source, path) = if early.demo && !named {
        (
            kept_core::manifest::demo_toml(),
            "kept.toml (demo)".to_owned(),
        )
    } else {
        let path = match Config::manifest_path(&env, &flags) {
            Ok(path) => path,
            Err(e) => return Ok(usage_error(&e.to_string())),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => (text, path.display().to_string()),
            Err(e) => {
                return Ok(usage_error(&format!(
                    "cannot read the manifest `{}`: {e}; write one with `kept init`, or try \
                     `kept serve --demo`",
                    path.display()
                )));
            }
        }
    };
    let loaded = match kept_core::manifest::load(&source, &path) {
        Ok(l) => l,
        Err(e) => return Ok(usage_error(&e.to_string())),
    };
    let file = loaded.server.as_ref().map(|table| FileLayer {
        table,
        path: Path::new(&path),
    });
    let config = match Config::load(file, &env, &flags) {
        Ok(c) => c,
        Err(e) => return Ok(usage_error(&e.to_string())),
    };
    kept_server::observe::init_logging(config.log_format, &config.log_filter);
    // A misspelt variable would otherwise leave its setting at the default without a word.
    let secrets = loaded
        .manifest
        .systems
        .values()
        .filter_map(|system| system.webhook.as_ref()?.secret_env.as_deref());
    for unknown in env.unknown_variables(secrets) {
        tracing::warn!(variable = %unknown.var, "{unknown}");
    }
    tracing::debug!(?config, "configuration");
    match kept_server::serve(config, loaded).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e @ kept_server::ServeError::NoLedgerKey) => Ok(usage_error(&e.to_string())),
        Err(e) => {
            tracing::error!(code = e.code(), "{e}");
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Unusable input (manifest, configuration): exit 2, like `kept lint`.
fn usage_error(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    /// Every setting has a flag, and that flag sets that setting and no other.
    #[test]
    fn every_setting_has_a_flag_that_sets_it() {
        for key in Key::ALL {
            let mut argv = vec!["kept".to_owned(), key.flag()];
            if key != Key::Demo {
                argv.push(format!("value-of-{}", key.name()));
            }
            let cli = Cli::try_parse_from(&argv)
                .unwrap_or_else(|e| panic!("`{}` for `{}`: {e}", key.flag(), key.name()));
            assert_eq!(
                cli.args.flags().keys().collect::<Vec<_>>(),
                [key],
                "`{}` sets `{}`",
                key.flag(),
                key.name()
            );
        }
    }
}
