//! `kept admin`: the console's operator accounts, made offline against the database (the first
//! one before anyone can sign in), and listed.

use crate::cmd::source::{Source, config};
use anyhow::Context;
use kept_server::console::accounts::{self, AccountError};
use kept_store::Store;
use kept_store::operators::OperatorRole;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create an operator who signs in to the console at /admin with a password and an
    /// authenticator app
    #[command(after_help = "\
Prints the TOTP secret (and the password, when one was generated) once: add the secret to an
authenticator app, or open the otpauth:// URL as a QR code.

Examples:
  kept admin create-user --email ana@larkspur.example --role admin
  kept admin create-user --email ben@larkspur.example --role marketing --password-file pw.txt
  kept admin create-user --email cy@larkspur.example --role privacy --format json")]
    CreateUser(CreateArgs),
    /// List the operators (never their passwords or secrets)
    ListUsers(ListArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RoleArg {
    Marketing,
    Privacy,
    Engineering,
    Admin,
}

impl From<RoleArg> for OperatorRole {
    fn from(r: RoleArg) -> OperatorRole {
        match r {
            RoleArg::Marketing => OperatorRole::Marketing,
            RoleArg::Privacy => OperatorRole::Privacy,
            RoleArg::Engineering => OperatorRole::Engineering,
            RoleArg::Admin => OperatorRole::Admin,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    #[arg(long, value_name = "ADDRESS")]
    email: String,
    /// The team: marketing (campaigns), privacy (subjects, requests, ledger, audit log),
    /// engineering (keys, systems, webhooks), admin (everything, and operators)
    #[arg(long, value_enum)]
    role: RoleArg,
    /// A file holding the password (its first line); default: a strong one is generated and
    /// printed once
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    source: Source,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    source: Source,
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::CreateUser(args) => create(args).await,
        Command::ListUsers(args) => list(args).await,
    }
}

async fn open(source: &Source) -> anyhow::Result<Arc<dyn Store>> {
    let config = config(source).map_err(anyhow::Error::msg)?;
    kept_server::server::open_store(&config.database_url)
        .await
        .with_context(|| format!("cannot open the database `{}`", config.database_url))
}

async fn create(args: CreateArgs) -> anyhow::Result<ExitCode> {
    let (password, generated) = match &args.password_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the password file `{}`", path.display()))?;
            (text.lines().next().unwrap_or_default().to_owned(), false)
        }
        None => (accounts::generated_password(), true),
    };
    let store = open(&args.source).await?;
    let now = kept_server::state::system_now();
    let created = accounts::create(
        store.as_ref(),
        &args.email,
        args.role.into(),
        &password,
        now,
    )
    .await;
    store.close().await?;
    let created = match created.map_err(|e| anyhow::anyhow!("{e}"))? {
        Ok(c) => c,
        Err(e) => {
            let hint = match e {
                AccountError::Email => "give the operator's work address",
                AccountError::Password => "use a longer password, or leave --password-file out",
                AccountError::Taken => "`kept admin list-users` shows who exists",
            };
            match args.format {
                Format::Json => println!(
                    "{}",
                    serde_json::json!({ "error": { "code": e.code(), "message": e.to_string() } })
                ),
                Format::Text => eprintln!("error: {e} ({hint})"),
            }
            return Ok(ExitCode::from(2));
        }
    };
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::json!({
                "id": created.id,
                "email": created.email,
                "role": created.role.as_str(),
                "password": generated.then_some(&password),
                "totp_secret": created.totp_secret,
                "otpauth_url": created.otpauth_url,
            })
        ),
        Format::Text => {
            println!("operator {} ({})", created.email, created.role.as_str());
            if generated {
                println!("password:    {password}");
            }
            println!("TOTP secret: {}", created.totp_secret);
            println!("             {}", created.otpauth_url);
            println!("They sign in at /admin; these are shown only now.");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let store = open(&args.source).await?;
    let operators = store.operators().await?;
    store.close().await?;
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::json!({
                "operators": operators.iter().map(|o| serde_json::json!({
                    "id": o.id,
                    "email": o.email,
                    "role": o.role.as_str(),
                    "created_at": o.created_at,
                    "disabled_at": o.disabled_at,
                })).collect::<Vec<_>>()
            })
        ),
        Format::Text => {
            for o in &operators {
                println!(
                    "{:>4}  {:<12} {}{}",
                    o.id,
                    o.role.as_str(),
                    o.email,
                    if o.disabled_at.is_some() {
                        "  (disabled)"
                    } else {
                        ""
                    }
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
