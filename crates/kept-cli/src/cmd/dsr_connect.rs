//! `kept dsr find` and `kept dsr erase`: a subject's rows in the company's own databases, the
//! manifest's `[[dataset]]`s, through the connectors (`kept_connect`). `find` lists every row
//! and declared column found (what an access export includes); `erase --dry-run` lists every
//! row and column erasure would touch and how, changing nothing; `erase` applies it, one
//! transaction per database, all or nothing in each.

use crate::cmd::decide::Format;
use crate::cmd::source::{Source, setup};
use anyhow::Context;
use kept_connect::{ConnectError, Connector, Erased, Found, HashKey, Plan, RowAction, Subject};
use kept_core::identity::IdentifierKind;
use kept_core::manifest::dataset::Dataset;
use serde::Serialize;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

/// Who to look for, and where.
#[derive(Debug, Clone, clap::Args)]
pub struct SubjectArgs {
    /// The subject's email address; repeat for several
    #[arg(long = "email", value_name = "EMAIL")]
    emails: Vec<String>,
    /// The subject's phone number; repeat for several
    #[arg(long = "phone", value_name = "PHONE")]
    phones: Vec<String>,
    /// The subject's user id in the company's systems; repeat for several
    #[arg(long = "user-id", value_name = "ID")]
    user_ids: Vec<String>,
    /// Only this dataset (its `id` in the manifest); repeat for several [default: every one]
    #[arg(long = "dataset", value_name = "ID")]
    datasets: Vec<String>,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  kept dsr find --email ada@example.com
  kept dsr find --email ada@example.com --phone +4915112345678 --format json

Each dataset's URL is read from the environment variable its `url_env` names.")]
pub struct FindArgs {
    #[command(flatten)]
    subject: SubjectArgs,
    #[command(flatten)]
    source: Source,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  kept dsr erase --request 7
  kept dsr erase --request 7 --format json
  kept dsr erase --email ada@example.com --dry-run
  kept dsr erase --email ada@example.com --format json

With --request, the erasure request is carried out: every dataset, then Kept's own copy (data
key shredded, rows deleted but what the law keeps, identifiers on the suppression list), the
request moved to in_progress and, once every target is done, to completed. Run it again after
a failure or an interruption to finish. Exit status: 0 completed, 1 a target failed (the
request stays in progress), 2 refused or unusable input.

Without it, only the datasets: each database is changed in one transaction, children before
parents, and a failure rolls that database back. Erasing twice changes nothing the second
time.")]
pub struct EraseArgs {
    /// Carry out this erasure request (its subject is the request's)
    #[arg(long, value_name = "ID", conflicts_with_all = ["emails", "phones", "user_ids", "datasets", "dry_run"])]
    request: Option<u64>,
    #[command(flatten)]
    subject: SubjectArgs,
    /// List every row and column erasure would touch, and how; change nothing
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    source: Source,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// `kept dsr find` and `kept dsr erase`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Find a subject's rows in the company's own databases (the manifest's `[[dataset]]`s)
    Find(FindArgs),
    /// Erase a subject from the company's own databases; `--dry-run` shows every row and
    /// column it would touch
    Erase(EraseArgs),
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Find(args) => find(args).await,
        Command::Erase(args) => erase(args).await,
    }
}

#[derive(Debug, Serialize)]
struct Failure {
    dataset: String,
    code: &'static str,
    message: String,
}

#[derive(Debug, Serialize)]
struct FindReport {
    manifest: String,
    found: Vec<Found>,
    failed: Vec<Failure>,
}

#[derive(Debug, Serialize)]
struct EraseReport {
    manifest: String,
    dry_run: bool,
    /// Dry run: what would be done.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    planned: Vec<Plan>,
    /// Done and committed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    erased: Vec<Erased>,
    /// Rolled back (or never begun), with the reason.
    failed: Vec<Failure>,
}

pub async fn find(args: FindArgs) -> anyhow::Result<ExitCode> {
    let setup = setup(&args.source).map_err(anyhow::Error::msg)?;
    let subject = subject_of(&args.subject)?;
    let datasets = chosen(&setup.manifest.datasets, &args.subject.datasets)?;
    let mut report = FindReport {
        manifest: setup.manifest_label.clone(),
        found: Vec::new(),
        failed: Vec::new(),
    };
    for dataset in datasets {
        let started = Instant::now();
        progress(&format!("{}: searching…", dataset.id));
        let result = async {
            let mut connector = Connector::open(dataset, &env_lookup).await?;
            connector.find(&subject).await
        }
        .await;
        match result {
            Ok(found) => {
                progress(&format!(
                    "{}: {} rows in {} tables ({} ms)",
                    dataset.id,
                    found.rows(),
                    found.tables.iter().filter(|t| !t.rows.is_empty()).count(),
                    started.elapsed().as_millis()
                ));
                report.found.push(found);
            }
            Err(e) => report.failed.push(failure(dataset, &e)),
        }
    }
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => print_found(&report),
    }
    Ok(exit_code(&report.failed))
}

pub async fn erase(args: EraseArgs) -> anyhow::Result<ExitCode> {
    if let Some(id) = args.request {
        return erase_request(id, &args.source, args.format).await;
    }
    let setup = setup(&args.source).map_err(anyhow::Error::msg)?;
    let subject = subject_of(&args.subject)?;
    let datasets = chosen(&setup.manifest.datasets, &args.subject.datasets)?;
    let key = hash_key(&setup.config).await?;
    let mut report = EraseReport {
        manifest: setup.manifest_label.clone(),
        dry_run: args.dry_run,
        planned: Vec::new(),
        erased: Vec::new(),
        failed: Vec::new(),
    };
    for dataset in datasets {
        let started = Instant::now();
        let verb = if args.dry_run { "planning" } else { "erasing" };
        progress(&format!("{}: {verb}…", dataset.id));
        let mut connector = match Connector::open(dataset, &env_lookup).await {
            Ok(c) => c,
            Err(e) => {
                report.failed.push(failure(dataset, &e));
                continue;
            }
        };
        if args.dry_run {
            match connector.plan_erase(&subject, &key).await {
                Ok(plan) => {
                    let (deleted, updated) = plan.counts();
                    progress(&format!(
                        "{}: would delete {deleted} rows and update {updated} ({} ms)",
                        dataset.id,
                        started.elapsed().as_millis()
                    ));
                    report.planned.push(plan);
                }
                Err(e) => report.failed.push(failure(dataset, &e)),
            }
        } else {
            match connector.erase(&subject, &key).await {
                Ok(erased) => {
                    progress(&format!(
                        "{}: deleted {} rows and updated {}, committed ({} ms)",
                        dataset.id,
                        erased.rows_deleted,
                        erased.rows_updated,
                        started.elapsed().as_millis()
                    ));
                    report.erased.push(erased);
                }
                Err(e) => report.failed.push(failure(dataset, &e)),
            }
        }
    }
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => print_erase(&report),
    }
    Ok(exit_code(&report.failed))
}

/// `kept dsr erase --request`: the erasure service the server's `POST /v1/requests/{id}/erase`
/// runs, offline against the database.
async fn erase_request(id: u64, source: &Source, format: Format) -> anyhow::Result<ExitCode> {
    let setup = setup(source).map_err(anyhow::Error::msg)?;
    let store = crate::cmd::dsr::open(source).await?;
    let work = crate::cmd::dsr::work(source, &store).await?;
    let identities = crate::cmd::source::identities(&setup.config).map_err(anyhow::Error::msg)?;
    let erasure = kept_server::requests::erase::Erasure {
        store: store.as_ref(),
        work: &work,
        identities: &identities,
        manifest: &setup.manifest,
        index: None,
        env: &kept_server::requests::erase::ProcessEnv,
    };
    let spinner = spinner(&format!("erasing request {id}"));
    let actor = "operator:cli";
    let result = kept_server::requests::erase::execute(
        &erasure,
        id,
        actor,
        kept_server::state::system_now(),
    )
    .await;
    spinner.finish_and_clear();
    let code = match result {
        Ok(outcome) => {
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&outcome)?),
                Format::Text => print_outcome(&outcome),
            }
            if outcome.done() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) if e.status().is_client_error() => {
            let format = match format {
                Format::Json => crate::cmd::dsr::Format::Json,
                Format::Text => crate::cmd::dsr::Format::Text,
            };
            crate::cmd::dsr::refused(&e, format);
            ExitCode::from(2)
        }
        Err(e) => return Err(anyhow::anyhow!("{e}")),
    };
    store.close().await?;
    Ok(code)
}

/// A spinner on a terminal, nothing elsewhere.
fn spinner(message: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        progress(&format!("{message}…"));
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner().with_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    bar
}

fn print_outcome(outcome: &kept_server::requests::erase::Outcome) {
    println!(
        "request {}  subject {}  {}",
        outcome.request,
        outcome.subject,
        outcome.state.as_str()
    );
    for t in &outcome.targets {
        let status = match t.status {
            kept_server::requests::erase::TargetStatus::Done => "done",
            kept_server::requests::erase::TargetStatus::Failed => "FAILED",
            kept_server::requests::erase::TargetStatus::Pending => "pending",
        };
        println!("  {:<24} {status:<8} {}", t.target, t.detail);
        for (table, n) in &t.counts {
            println!("      {table}: {n}");
        }
        for r in &t.retained {
            let until = r.until.map(|u| format!(" until {u}")).unwrap_or_default();
            println!(
                "      kept {} {} ({}) for {} ({}){until}",
                r.table, r.item, r.category, r.purpose, r.basis
            );
        }
    }
    if outcome.state != kept_core::requests::State::Completed {
        println!(
            "The request stays in progress: run `kept dsr erase --request {}` again.",
            outcome.request
        );
    }
}

fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn progress(line: &str) {
    eprintln!("{line}");
}

fn failure(dataset: &Dataset, e: &ConnectError) -> Failure {
    progress(&format!("{}: failed: {e}", dataset.id));
    Failure {
        dataset: dataset.id.clone(),
        code: e.code(),
        message: e.to_string(),
    }
}

fn exit_code(failed: &[Failure]) -> ExitCode {
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn subject_of(args: &SubjectArgs) -> anyhow::Result<Subject> {
    let mut subject = Subject::new();
    for (kind, values) in [
        (IdentifierKind::Email, &args.emails),
        (IdentifierKind::Phone, &args.phones),
        (IdentifierKind::UserId, &args.user_ids),
    ] {
        for value in values {
            subject = subject
                .with(kind, value)
                .with_context(|| format!("--{}", kind.as_str().replace('_', "-")))?;
        }
    }
    if subject.is_empty() {
        anyhow::bail!("name the subject: --email, --phone or --user-id");
    }
    Ok(subject)
}

/// The datasets asked for, all by default.
fn chosen<'a>(all: &'a [Dataset], ids: &[String]) -> anyhow::Result<Vec<&'a Dataset>> {
    if all.is_empty() {
        anyhow::bail!(
            "the manifest declares no `[[dataset]]`: see \"Connectors to your own databases\" in README.md"
        );
    }
    if ids.is_empty() {
        return Ok(all.iter().collect());
    }
    ids.iter()
        .map(|id| {
            all.iter().find(|d| &d.id == id).ok_or_else(|| {
                let known: Vec<&str> = all.iter().map(|d| d.id.as_str()).collect();
                anyhow::anyhow!(
                    "--dataset `{id}` is not declared in the manifest (it declares {})",
                    known.join(", ")
                )
            })
        })
        .collect()
}

/// The `hash` strategy's key, derived from Kept's master secret as the server derives its
/// identity keys: the `master_key_file`, else the one kept in Kept's database.
async fn hash_key(config: &kept_server::config::Config) -> anyhow::Result<HashKey> {
    let identities = crate::cmd::source::identities(config).map_err(anyhow::Error::msg)?;
    let store = kept_server::store::open(config.database_url.expose())
        .await
        .context("opening Kept's database for the hash key")?;
    let keys = identities.keys(store.as_ref()).await?;
    Ok(HashKey(keys.dataset_hash_key()))
}

fn value(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("NULL")
}

fn print_found(report: &FindReport) {
    println!("Manifest: {}", report.manifest);
    for found in &report.found {
        println!(
            "\n{} ({}): {} rows",
            found.dataset,
            found.kind,
            found.rows()
        );
        for table in &found.tables {
            println!("  {}: {} rows", table.table, table.rows.len());
            for row in &table.rows {
                let cells: Vec<String> = row
                    .iter()
                    .map(|(c, v)| format!("{c}={}", value(v)))
                    .collect();
                println!("    {}", cells.join("  "));
            }
        }
    }
    print_failed(&report.failed);
}

fn print_plan(plan: &Plan) {
    for table in &plan.tables {
        let (deleted, updated) = table.counts();
        println!(
            "  {}: {} rows ({deleted} deleted, {updated} updated)",
            table.table,
            table.rows.len()
        );
        for row in &table.rows {
            let cells: Vec<String> = row
                .values
                .iter()
                .map(|(c, v)| format!("{c}={}", value(v)))
                .collect();
            let action = match row.action {
                RowAction::Delete => "delete",
                RowAction::Update => "update",
                RowAction::Unchanged => "keep",
            };
            println!("    {action:<6} {}", cells.join("  "));
            // What is kept, one line per purpose that requires it.
            let mut kept: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for change in &row.changes {
                match (change.strategy, &change.to, &change.purpose) {
                    ("keep", _, Some(purpose)) => {
                        kept.entry(purpose).or_default().push(&change.column);
                    }
                    ("hash", Some(to), _) => {
                        println!("           {}: hashed to {to}", change.column)
                    }
                    (strategy, _, _) => println!("           {}: {strategy}", change.column),
                }
            }
            for (purpose, columns) in kept {
                println!("           kept for {purpose}: {}", columns.join(", "));
            }
        }
    }
}

fn print_erase(report: &EraseReport) {
    println!("Manifest: {}", report.manifest);
    for plan in &report.planned {
        let (deleted, updated) = plan.counts();
        println!(
            "\n{} ({}), dry run: would delete {deleted} rows and update {updated}; nothing was changed",
            plan.dataset, plan.kind
        );
        print_plan(plan);
    }
    for erased in &report.erased {
        println!(
            "\n{} ({}): deleted {} rows and updated {}, committed",
            erased.plan.dataset, erased.plan.kind, erased.rows_deleted, erased.rows_updated
        );
        print_plan(&erased.plan);
    }
    print_failed(&report.failed);
}

fn print_failed(failed: &[Failure]) {
    for f in failed {
        println!("\n{}: FAILED ({}): {}", f.dataset, f.code, f.message);
    }
}
