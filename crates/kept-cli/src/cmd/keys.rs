//! `kept keys`: API keys (create, list, revoke) and the ledger's signing key.

use crate::cmd::source::{Source, config};
use anyhow::Context;
use kept_store::{Role, Store};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create an API key and print it once
    #[command(after_help = "\
The key is printed alone on standard output, so a script can capture it; it cannot be shown again.

Examples:
  kept keys create --role public --name \"web shop (browser)\"
  kept keys create --role server --name \"web shop (backend)\"
  kept keys create --role admin --format json")]
    Create(CreateArgs),
    /// List API keys (ids, roles, names; never the secrets)
    #[command(after_help = "Example:\n  kept keys list --format json")]
    List(ListArgs),
    /// Revoke an API key by its id (`kept_ab12cd34`)
    #[command(after_help = "\
A running server stops accepting the key within a few seconds.

Example:
  kept keys revoke kept_ab12cd34")]
    Revoke(RevokeArgs),
    /// Write a new Ed25519 key for signing ledger checkpoints to FILE (mode 0600)
    #[command(after_help = "\
Then point the server at it: `ledger_key_file` in [server], `KEPT_LEDGER_KEY_FILE` or
`--ledger-key-file`. Keep a copy: checkpoints signed with it are verified with its public key.

Example:
  kept keys ledger-keygen kept-ledger.key")]
    LedgerKeygen(KeygenArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RoleArg {
    Public,
    Server,
    Decide,
    Privacy,
    Admin,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Public => Role::Public,
            RoleArg::Server => Role::Server,
            RoleArg::Decide => Role::Decide,
            RoleArg::Privacy => Role::Privacy,
            RoleArg::Admin => Role::Admin,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// What the key may do: `public` (a write key safe in a browser: anonymous profiles and
    /// banner choices; known customers only with an identity token), `server` (a secret write
    /// key with full Segment semantics), `decide`, `privacy` or `admin`
    #[arg(long, value_enum)]
    role: RoleArg,
    /// What the key is for
    #[arg(long, default_value = "")]
    name: String,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    database: Source,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    database: Source,
}

#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    /// The key's id, as `kept keys list` shows it
    id: String,
    #[command(flatten)]
    database: Source,
}

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where to write the key; an existing file is not overwritten
    file: PathBuf,
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Create(args) => create(args).await,
        Command::List(args) => list(args).await,
        Command::Revoke(args) => revoke(args).await,
        Command::LedgerKeygen(args) => keygen(&args.file),
    }
}

/// Opens the database the settings name (found as every offline command finds it). Only
/// `create` may create it (the first key is made before the first `kept serve`); listing and
/// revoking read an existing one.
async fn open(source: &Source, create: bool) -> anyhow::Result<Arc<dyn Store>> {
    let config = config(source).map_err(anyhow::Error::msg)?;
    if !create {
        return Ok(kept_server::store::open_existing(config.database_url.expose()).await?);
    }
    let store = kept_server::server::open_store(&config.database_url)
        .await
        .with_context(|| format!("cannot open the database `{}`", config.database_url))?;
    Ok(store)
}

async fn create(args: CreateArgs) -> anyhow::Result<ExitCode> {
    let store = open(&args.database, true).await?;
    let now = kept_server::state::system_now();
    let (secret, record) =
        kept_server::http::auth::create_key(store.as_ref(), args.role.into(), &args.name, now)
            .await?;
    store.close().await?;
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::json!({
                "id": record.id,
                "key": secret.expose(),
                "role": record.role.as_str(),
                "name": record.name,
                "created_at": record.created_at,
            })
        ),
        Format::Text => {
            eprintln!(
                "created API key `{}` with role `{}`; it is shown only this once:",
                record.id,
                record.role.as_str()
            );
            println!("{}", secret.expose());
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let store = open(&args.database, false).await?;
    let keys = store.list_api_keys().await?;
    store.close().await?;
    match args.format {
        Format::Json => {
            let rows: Vec<_> = keys
                .iter()
                .map(|k| {
                    serde_json::json!({
                        "id": k.id,
                        "role": k.role.as_str(),
                        "name": k.name,
                        "created_at": k.created_at,
                        "revoked_at": k.revoked_at,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
        Format::Text => {
            if keys.is_empty() {
                eprintln!("no API keys yet; create one with `kept keys create --role admin`");
            } else {
                println!(
                    "{:<14} {:<8} {:<20} {:<20} NAME",
                    "ID", "ROLE", "CREATED", "REVOKED"
                );
                for k in &keys {
                    println!(
                        "{:<14} {:<8} {:<20} {:<20} {}",
                        k.id,
                        k.role.as_str(),
                        timestamp(k.created_at),
                        k.revoked_at
                            .map(timestamp)
                            .unwrap_or_else(|| "-".to_owned()),
                        k.name
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn revoke(args: RevokeArgs) -> anyhow::Result<ExitCode> {
    let store = open(&args.database, false).await?;
    let now = kept_server::state::system_now();
    let result = store.revoke_api_key(&args.id, now).await;
    store.close().await?;
    match result {
        Ok(()) => {
            eprintln!("revoked API key `{}`", args.id);
            Ok(ExitCode::SUCCESS)
        }
        Err(kept_store::StoreError::NotFound { .. }) => {
            eprintln!("error: no API key `{}`; see `kept keys list`", args.id);
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}

fn keygen(file: &Path) -> anyhow::Result<ExitCode> {
    let public = kept_server::server::write_ledger_key(file)
        .with_context(|| format!("cannot write a ledger key to `{}`", file.display()))?;
    eprintln!(
        "wrote a new ledger signing key to `{}` (readable by you only)",
        file.display()
    );
    println!("{public}");
    Ok(ExitCode::SUCCESS)
}

/// `2026-03-01 14:05:09` (UTC) for a table.
fn timestamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| ms.to_string())
}
