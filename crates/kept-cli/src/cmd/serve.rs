//! `kept serve`: loads the manifest (or the demo one), resolves the configuration (defaults →
//! `[server]` of the manifest → `KEPT_*` → these flags) and runs the server until SIGINT or
//! SIGTERM.

use kept_server::config::{Config, Env, FileLayer, Flags, Key};
use std::path::Path;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Each flag overrides the `KEPT_*` environment variable of the same name (`--bind` → `KEPT_BIND`),
which overrides `[server]` in the manifest. `KEPT_DATABASE_URL_FILE` reads the database URL from a
file.

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
    /// The manifest to load; ignored with `--demo` [default: ./kept.toml]
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
            .set_opt(Key::TrustedProxies, self.trusted_proxies.clone());
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
    let (source, path) = if early.demo {
        (
            kept_core::manifest::demo_toml(),
            "kept.toml (demo)".to_owned(),
        )
    } else {
        let path = Config::manifest_path(&env, &flags);
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
    tracing::debug!(?config, "configuration");
    match kept_server::serve(config, loaded.manifest).await {
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
