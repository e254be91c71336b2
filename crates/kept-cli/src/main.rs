//! The `kept` command: one binary for the server and every offline tool.

mod cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

// The collection API allocates and frees many small JSON values across threads, where the
// system allocator spends a third of the server's time; mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Kept: a self-hosted, privacy-first customer data platform that remembers the promises made
/// to every customer.
#[derive(Debug, Parser)]
#[command(name = "kept", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (collection API, decisions and audiences, consent ledger, preference center)
    // Boxed: one field per setting makes it far larger than the other commands.
    Serve(Box<cmd::serve::Args>),
    /// Write an example manifest (`kept.toml`) for a retail company
    Init(cmd::init::Args),
    /// Check a manifest: syntax, references, owners, retention, promises, rules
    Lint(cmd::lint::Args),
    /// Consent ledger tools: verify the chain and checkpoints
    #[command(subcommand)]
    Ledger(cmd::ledger::Command),
    /// Manage API keys
    #[command(subcommand)]
    Keys(cmd::keys::Command),
    /// The console's operators: create one (email, role, password, TOTP), list them
    #[command(subcommand)]
    Admin(cmd::admin::Command),
    /// Data subject requests: file, list, show, advance, extend, reject, verify the log; find
    /// and erase a subject in the company's own databases
    #[command(subcommand)]
    Dsr(cmd::dsr::Command),
    /// Print the HTTP API's OpenAPI document
    Openapi(cmd::openapi::Args),
    /// Print the effective rulebook: the law's rules with their sources, and the manifest's
    /// tightenings
    Rules(cmd::rules::Args),
    /// Decide one use offline, from the database: allowed or denied, with the evidence
    Decide(cmd::decide::Args),
    /// Dry-run a campaign: who may be reached, and a table of who may not and why
    Audience(cmd::audience::Args),
}

/// The allocators' settings `kept serve` runs with unless its environment sets them. Freed
/// memory goes back to the system at once: mimalloc otherwise keeps, while the server idles,
/// what the start-up (the demo load, the index build) freed. And SQLite's connection threads,
/// which allocate with the C library's malloc, share two arenas instead of keeping one each.
/// And mimalloc asks for no transparent huge pages: a 2 MiB page is resident whole however
/// little of it is used. Together they took the demo server from about 145 MiB resident after
/// start to about 84 with the first two, and to about 63 with the third (of which some 15 MiB
/// are the binary's own pages; `bench/consent-http.sh` prints it), with the same throughput.
/// All are read when the process starts, so the binary runs itself again with them (same
/// process id).
const ALLOCATOR_ENV: [(&str, &str); 3] = [
    ("MIMALLOC_PURGE_DELAY", "0"),
    ("MALLOC_ARENA_MAX", "2"),
    ("MIMALLOC_ALLOW_THP", "0"),
];

#[cfg(unix)]
fn with_allocator_settings() {
    if ALLOCATOR_ENV
        .iter()
        .all(|(name, _)| std::env::var_os(name).is_some())
    {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut again = std::process::Command::new(exe);
    again.args(std::env::args_os().skip(1));
    for (name, value) in ALLOCATOR_ENV {
        if std::env::var_os(name).is_none() {
            again.env(name, value);
        }
    }
    // Returns only when the binary could not be run again: go on as we are.
    let e = std::os::unix::process::CommandExt::exec(&mut again);
    eprintln!("warning: running with the allocators' default settings: {e}");
}

#[cfg(not(unix))]
fn with_allocator_settings() {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve(_)) {
        with_allocator_settings();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => cmd::serve::run(*args).await,
            Command::Init(args) => cmd::init::run(args).await,
            Command::Lint(args) => cmd::lint::run(args).await,
            Command::Ledger(c) => cmd::ledger::run(c).await,
            Command::Keys(c) => cmd::keys::run(c).await,
            Command::Admin(c) => cmd::admin::run(c).await,
            Command::Dsr(c) => cmd::dsr::run(c).await,
            Command::Openapi(args) => cmd::openapi::run(args).await,
            Command::Rules(args) => cmd::rules::run(args).await,
            Command::Decide(args) => cmd::decide::run(args).await,
            Command::Audience(args) => cmd::audience::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
