//! `kept dsr`: data subject requests offline, against the database, through the same service
//! the server's `/v1/requests` uses: file one, list, show with its log and tasks, take its
//! steps, mark a task handled by hand, and verify the requests log's chain and checkpoints;
//! `export` hands an access request's export over (`dsr_export`); `find` and `erase` are the
//! connectors' (`dsr_connect`). Obligations a step queues for the manifest's systems are sent by
//! the running server's worker.

use crate::cmd::source::{Source, config};
use anyhow::Context;
use kept_core::SubjectId;
use kept_core::identity::IdentifierKind;
use kept_core::regime::Regime;
use kept_core::requests::{
    Channel, Intake, Request, RequestKind, Scope, State, Target, Transition, Verification,
    VerificationMethod,
};
use kept_server::consent::ledger::{
    self, DEMO_SIGNING_KEY_SETTING, Ledger, SigningKey, VerifyingKey, published_verifying_keys,
};
use kept_server::http::error::ApiError;
use kept_server::requests::api::{LogView, RequestView};
use kept_server::requests::work::Work;
use kept_server::requests::{service, tasks};
use kept_store::Store;
use kept_store::requests::{MAX_REQUEST_PAGE, RequestFilter};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// File a data subject request; its due date comes from the law's deadline for the
    /// subject's regime and region
    #[command(after_help = "Examples:
  kept dsr new --user-id u000011 --kind erasure
  kept dsr new --subject 10 --kind access --verification company-stated --reference case-42
  kept dsr new --subject 10 --kind opt-out --format json | jq .due_at

Steps are signed into the requests log with the ledger key: `ledger_key_file` in [server]
or KEPT_LEDGER_KEY_FILE (the demo's database holds its own).")]
    New(NewArgs),
    /// List requests, newest first
    #[command(after_help = "Examples:
  kept dsr list --overdue
  kept dsr list --state received --kind erasure --format json")]
    List(ListArgs),
    /// Show a request with every step of its log
    Show(ShowArgs),
    /// Take a request's next step: received → verified → in_progress → completed
    #[command(after_help = "Examples:
  kept dsr advance 7 --verification company-stated --reference case-42
  kept dsr advance 7 --to completed --note \"export sent\"

Exit status: 0 done, 1 refused (the reason's code is printed), 2 unusable input.")]
    Advance(AdvanceArgs),
    /// Extend a request's deadline, once, with a reason, within the rule's extension
    Extend(ExtendArgs),
    /// Reject a request, with a reason
    Reject(RejectArgs),
    /// Mark a task of a request in progress handled by hand, with a note; the request
    /// completes once every task is done or handled
    #[command(after_help = "Examples:
  kept dsr handled 7 system:crm --note \"erased in the CRM's console, ticket 4411\"
  kept dsr handled 7 dataset:shop --note \"rows removed by the DBA\"

Exit status: 0 done, 1 refused (the reason's code is printed), 2 unusable input.")]
    Handled(HandledArgs),
    /// Verify the requests log: its hash chain, every stored column, the signed checkpoints
    /// and their chain; name the first bad record
    #[command(
        after_help = "Exit status: 0 intact, 1 tampered (the first bad record is named), \
2 unusable input."
    )]
    Verify(VerifyArgs),
    /// Hand over the export that answers an access or portability request (JSON, CSV in a
    /// zip, or an HTML page), recorded in the request's log; or print its download links
    Export(crate::cmd::dsr_export::ExportArgs),
    /// `find` and `erase`: the subject in the company's own databases, through the connectors
    #[command(flatten)]
    Connect(crate::cmd::dsr_connect::Command),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KindArg {
    Access,
    Portability,
    Erasure,
    Rectification,
    Restriction,
    Objection,
    OptOut,
    LimitSensitive,
}

impl From<KindArg> for RequestKind {
    fn from(k: KindArg) -> RequestKind {
        match k {
            KindArg::Access => RequestKind::Access,
            KindArg::Portability => RequestKind::Portability,
            KindArg::Erasure => RequestKind::Erasure,
            KindArg::Rectification => RequestKind::Rectification,
            KindArg::Restriction => RequestKind::Restriction,
            KindArg::Objection => RequestKind::Objection,
            KindArg::OptOut => RequestKind::OptOut,
            KindArg::LimitSensitive => RequestKind::LimitSensitive,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StateArg {
    Received,
    Verified,
    InProgress,
    Completed,
    Rejected,
    Extended,
}

impl From<StateArg> for State {
    fn from(s: StateArg) -> State {
        match s {
            StateArg::Received => State::Received,
            StateArg::Verified => State::Verified,
            StateArg::InProgress => State::InProgress,
            StateArg::Completed => State::Completed,
            StateArg::Rejected => State::Rejected,
            StateArg::Extended => State::Extended,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MethodArg {
    VerifiedIdentifier,
    CompanyStated,
    Agent,
}

/// How identity was verified, as flags.
#[derive(Debug, Clone, clap::Args)]
pub struct VerificationArgs {
    /// How the requester's identity was verified
    #[arg(long, value_enum)]
    verification: Option<MethodArg>,
    /// What shows it: the company's case number, the agent's proof of authority
    #[arg(long, value_name = "TEXT")]
    reference: Option<String>,
    /// The authorised agent's name (with `--verification agent`)
    #[arg(long, value_name = "NAME")]
    agent: Option<String>,
}

impl VerificationArgs {
    fn verification(&self) -> Option<Verification> {
        self.verification.map(|m| Verification {
            method: match m {
                MethodArg::VerifiedIdentifier => VerificationMethod::VerifiedIdentifier,
                MethodArg::CompanyStated => VerificationMethod::CompanyStated,
                MethodArg::Agent => VerificationMethod::Agent,
            },
            reference: self.reference.clone(),
            agent: self.agent.clone(),
        })
    }
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("who").required(true)))]
pub struct NewArgs {
    /// The subject's internal id
    #[arg(long, value_name = "ID", group = "who")]
    subject: Option<u32>,
    /// The subject's user id in the company's systems
    #[arg(long, value_name = "USER_ID", group = "who")]
    user_id: Option<String>,
    /// The subject's email address (found by its keyed hash, as the server finds it)
    #[arg(long, value_name = "ADDRESS", group = "who")]
    email: Option<String>,
    /// The subject's phone number (found by its keyed hash)
    #[arg(long, value_name = "NUMBER", group = "who")]
    phone: Option<String>,
    #[arg(long, value_enum)]
    kind: KindArg,
    /// Only these purposes (repeat); default everything
    #[arg(long = "purpose", value_name = "KEY")]
    purposes: Vec<String>,
    /// Only these data categories (repeat)
    #[arg(long = "category", value_name = "KEY")]
    categories: Vec<String>,
    /// Only these systems (repeat)
    #[arg(long = "system", value_name = "NAME")]
    systems: Vec<String>,
    #[command(flatten)]
    verification: VerificationArgs,
    /// Who files it, for the log
    #[arg(long, value_name = "NAME", default_value = "cli")]
    operator: String,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    source: Source,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[arg(long, value_enum)]
    state: Option<StateArg>,
    #[arg(long, value_enum)]
    kind: Option<KindArg>,
    /// Only this subject's requests (internal id)
    #[arg(long, value_name = "ID")]
    subject: Option<u32>,
    /// Only open requests past their due date
    #[arg(long)]
    overdue: bool,
    /// At most this many
    #[arg(long, default_value_t = 100)]
    limit: u32,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    source: Source,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    id: u64,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    source: Source,
}

#[derive(Debug, clap::Args)]
pub struct AdvanceArgs {
    id: u64,
    /// The state meant to be reached; refused if the next step is another
    #[arg(long, value_enum)]
    to: Option<StateArg>,
    #[command(flatten)]
    verification: VerificationArgs,
    /// A note for the log
    #[arg(long)]
    note: Option<String>,
    #[arg(long, value_name = "NAME", default_value = "cli")]
    operator: String,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    source: Source,
}

#[derive(Debug, clap::Args)]
pub struct ExtendArgs {
    id: u64,
    /// Why more time is needed
    #[arg(long)]
    reason: String,
    /// The new due date in Unix milliseconds (default: the latest the rule allows)
    #[arg(long, value_name = "UNIX_MS")]
    until: Option<i64>,
    #[arg(long, value_name = "NAME", default_value = "cli")]
    operator: String,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    source: Source,
}

#[derive(Debug, clap::Args)]
pub struct RejectArgs {
    id: u64,
    /// Why it is refused
    #[arg(long)]
    reason: String,
    #[arg(long, value_name = "NAME", default_value = "cli")]
    operator: String,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    source: Source,
}

#[derive(Debug, clap::Args)]
pub struct HandledArgs {
    id: u64,
    /// The task: `kept`, `dataset:<name>` or `system:<name>`
    target: String,
    /// What was done, and how it is known
    #[arg(long)]
    note: String,
    #[arg(long, value_name = "NAME", default_value = "cli")]
    operator: String,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    source: Source,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The ledger's verifying key (a file, PEM or hex, or the key in hex); repeat for old
    /// keys. Default: the keys the database publishes
    #[arg(long = "public-key", value_name = "FILE_OR_HEX")]
    public_keys: Vec<String>,
    /// The time to judge uncovered records by, in Unix milliseconds (default: now)
    #[arg(long, value_name = "UNIX_MS")]
    now: Option<i64>,
    /// The requests log's witness file (`requests-witness.log` beside the ledger's witness),
    /// kept where the database's administrators cannot rewrite it: with it, a tail cut away
    /// together with its checkpoints is found too
    #[arg(long, value_name = "FILE")]
    witness: Option<std::path::PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    source: Source,
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::New(args) => new(args).await,
        Command::List(args) => list(args).await,
        Command::Show(args) => show(args).await,
        Command::Advance(args) => {
            let step = Transition::Advance {
                expect: args.to.map(State::from),
                verification: args.verification.verification(),
                note: args.note,
            };
            take(&args.source, args.id, &step, &args.operator, args.format).await
        }
        Command::Extend(args) => {
            let step = Transition::Extend {
                reason: args.reason,
                until: args.until,
            };
            take(&args.source, args.id, &step, &args.operator, args.format).await
        }
        Command::Reject(args) => {
            let step = Transition::Reject {
                reason: args.reason,
            };
            take(&args.source, args.id, &step, &args.operator, args.format).await
        }
        Command::Handled(args) => handled(args).await,
        Command::Verify(args) => verify(args).await,
        Command::Export(args) => crate::cmd::dsr_export::export(args).await,
        Command::Connect(c) => crate::cmd::dsr_connect::run(c).await,
    }
}

pub(crate) async fn open(source: &Source) -> anyhow::Result<Arc<dyn Store>> {
    let config = config(source).map_err(anyhow::Error::msg)?;
    Ok(kept_server::store::open_existing(config.database_url.expose()).await?)
}

/// The ledger, for its key: the configured key file, else the demo database's own key. A
/// database with neither gets no step written: its log would have records no checkpoint covers.
pub(crate) async fn ledger(source: &Source, store: &Arc<dyn Store>) -> anyhow::Result<Ledger> {
    let config = config(source).map_err(anyhow::Error::msg)?;
    let key = match &config.ledger_key_file {
        Some(path) => ledger::load_signing_key(path)
            .with_context(|| format!("cannot use the ledger key `{}`", path.display()))?,
        None => {
            let seed = store
                .get_setting(DEMO_SIGNING_KEY_SETTING)
                .await?
                .and_then(|s| <[u8; 32]>::try_from(s.as_slice()).ok())
                .context(
                    "no ledger key to sign the requests log with: set `ledger_key_file` in \
                     [server] or KEPT_LEDGER_KEY_FILE",
                )?;
            SigningKey::from_bytes(&seed)
        }
    };
    let mut ledger = Ledger::new(store.clone(), key);
    if let Some(path) = config.requests_witness_path() {
        let witness = kept_server::consent::witness::Witness::open(
            &path,
            None,
            std::time::Duration::from_secs(1),
        )?;
        ledger = ledger.with_requests_witness(Arc::new(witness));
    }
    Ok(ledger)
}

/// What the requests service works with, offline: the manifest (its datasets and systems),
/// the ledger, and the identity keys that open a subject's identifiers for an obligation.
/// Callbacks are addressed at `public_url`, else the address `kept serve` binds.
pub(crate) async fn work(source: &Source, store: &Arc<dyn Store>) -> anyhow::Result<Work> {
    let setup = crate::cmd::source::setup(source).map_err(anyhow::Error::msg)?;
    let ledger = ledger(source, store).await?;
    let identities = crate::cmd::source::identities(&setup.config).map_err(anyhow::Error::msg)?;
    let base_url = setup
        .config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", setup.config.bind));
    Ok(Work {
        store: store.clone(),
        ledger: Arc::new(ledger),
        manifest: Arc::new(setup.manifest),
        identities: Arc::new(identities),
        forwarder: None,
        base_url,
    })
}

fn now() -> i64 {
    kept_server::state::system_now()
}

fn print(view: &RequestView, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(view)?),
        Format::Text => {
            println!(
                "request {}  {}  subject {}  {}{}",
                view.id,
                view.kind,
                view.subject,
                view.state.as_str(),
                if view.overdue { "  OVERDUE" } else { "" }
            );
            println!(
                "  due {}  ({} under {}, {})",
                time(view.due_at),
                view.rule,
                view.regime,
                view.channel.as_str()
            );
            if let Some(until) = view.extension_until {
                println!("  extendable to {}", time(until));
            }
            if let Some(reason) = &view.reason {
                println!("  reason: {reason}");
            }
            for step in view.log.iter().flatten() {
                print_step(step);
            }
            for task in view.tasks.iter().flatten() {
                println!(
                    "  task {:<24} {:<8} {}{}",
                    task.target,
                    task.state.as_str(),
                    time(task.updated_at),
                    task.detail
                        .as_deref()
                        .map(|d| format!("  {d}"))
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

fn print_step(step: &LogView) {
    let from = step.from.map_or("", State::as_str);
    println!(
        "  #{:<5} {}  {:>11} → {:<11} by {}{}",
        step.seq,
        time(step.at),
        from,
        step.to.as_str(),
        step.actor,
        step.reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    );
}

fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
    )
}

/// An answer the server would give as a 4xx: printed with its code, exit 1.
pub(crate) fn refused(e: &ApiError, format: Format) -> ExitCode {
    let body = e.body();
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        ),
        Format::Text => eprintln!("refused ({}): {}", body.code, body.message),
    }
    ExitCode::from(1)
}

async fn with_log(store: &dyn Store, request: Request) -> anyhow::Result<RequestView> {
    let log = service::log_of(store, request.id)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .into_iter()
        .map(|(seq, hash, r)| LogView {
            seq,
            hash: hash.to_hex(),
            at: r.at,
            from: r.from,
            to: r.to,
            due_at: r.due_at,
            actor: r.actor,
            reason: r.reason,
            detail: r.detail.into_iter().collect(),
        })
        .collect();
    let tasks = store.request_tasks(request.id).await?;
    Ok(RequestView::new(request, now(), Some(log)).with_tasks(tasks))
}

async fn new(args: NewArgs) -> anyhow::Result<ExitCode> {
    let store = open(&args.source).await?;
    let identifier = match (&args.email, &args.phone) {
        (Some(email), _) => Some((IdentifierKind::Email, email.as_str())),
        (None, Some(phone)) => Some((IdentifierKind::Phone, phone.as_str())),
        (None, None) => None,
    };
    let id = match (args.subject, &args.user_id, identifier) {
        (Some(id), _, _) => Some(SubjectId(id)),
        (None, Some(user), _) => store.subject_by_user_id(user).await?,
        (None, None, Some((kind, raw))) => {
            let config = config(&args.source).map_err(anyhow::Error::msg)?;
            let normalized = match kept_core::identity::normalize(
                kind,
                raw,
                config.default_country.as_deref(),
            ) {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("--{}: {e}", kind.as_str());
                    return Ok(ExitCode::from(2));
                }
            };
            let identities = crate::cmd::source::identities(&config).map_err(anyhow::Error::msg)?;
            let keys = identities.keys(store.as_ref()).await?;
            let hash = keys.identifier_hash(kind, &normalized);
            store
                .find_identities(&[hash])
                .await?
                .first()
                .map(|(_, subject)| *subject)
        }
        (None, None, None) => None,
    };
    let subject = match id {
        Some(id) => store.subject(id).await?,
        None => None,
    };
    let Some(subject) = subject else {
        eprintln!("no subject is known by that identifier");
        return Ok(ExitCode::from(2));
    };
    let work = work(&args.source, &store).await?;
    let intake = Intake {
        subject: subject.id,
        kind: args.kind.into(),
        scope: Scope {
            purposes: args.purposes,
            categories: args.categories,
            systems: args.systems,
        },
        channel: Channel::Operator,
        verification: args.verification.verification(),
        regime: Regime::resolve(subject.country.as_deref(), subject.region.as_deref()),
        region: subject.region.clone(),
        at: now(),
    };
    let actor = format!("operator:{}", args.operator);
    let filed = service::file(&work, intake, &actor).await;
    let code = match filed {
        Ok(stepped) => {
            print(
                &with_log(store.as_ref(), stepped.request).await?,
                args.format,
            )?;
            ExitCode::SUCCESS
        }
        Err(e) if e.status().is_client_error() => refused(&e, args.format),
        Err(e) => return Err(anyhow::anyhow!("{e}")),
    };
    store.close().await?;
    Ok(code)
}

async fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    if !(1..=MAX_REQUEST_PAGE).contains(&args.limit) {
        eprintln!("--limit must be between 1 and {MAX_REQUEST_PAGE}");
        return Ok(ExitCode::from(2));
    }
    let store = open(&args.source).await?;
    let now = now();
    let filter = RequestFilter {
        state: args.state.map(State::from),
        kind: args.kind.map(RequestKind::from),
        subject: args.subject.map(SubjectId),
        due_before: None,
        open_due_before: args.overdue.then_some(now),
        not_overdue_at: None,
        before: None,
        limit: args.limit,
    };
    let requests = store.requests(&filter).await?;
    let views: Vec<RequestView> = requests
        .into_iter()
        .map(|r| RequestView::new(r, now, None))
        .collect();
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "requests": views }))?
        ),
        Format::Text => {
            if views.is_empty() {
                println!("no requests");
            }
            for v in &views {
                println!(
                    "{:>6}  {:<15} subject {:<8} {:<11} due {}{}",
                    v.id,
                    v.kind.as_str(),
                    v.subject,
                    v.state.as_str(),
                    time(v.due_at),
                    if v.overdue { "  OVERDUE" } else { "" }
                );
            }
        }
    }
    store.close().await?;
    Ok(ExitCode::SUCCESS)
}

async fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let store = open(&args.source).await?;
    let Some(request) = store.request(args.id).await? else {
        eprintln!("no data subject request has id `{}`", args.id);
        return Ok(ExitCode::from(2));
    };
    print(&with_log(store.as_ref(), request).await?, args.format)?;
    store.close().await?;
    Ok(ExitCode::SUCCESS)
}

async fn take(
    source: &Source,
    id: u64,
    step: &Transition,
    operator: &str,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let store = open(source).await?;
    let work = work(source, &store).await?;
    let actor = format!("operator:{operator}");
    let code = match service::step(&work, id, step, &actor, now()).await {
        Ok(stepped) if stepped.request.state == State::InProgress => {
            // Carried out as the server does it on `advance`: corrections written, gates put,
            // and Kept's own task settled.
            if let Err(e) = carry_out(source, &work, &stepped.request).await {
                eprintln!(
                    "error: request {id} is in progress, but carrying it out failed: {e}; run `kept dsr advance` again once fixed, or `POST /v1/requests/{id}/apply`"
                );
                store.close().await?;
                return Ok(ExitCode::FAILURE);
            }
            let request = store.request(id).await?.unwrap_or(stepped.request);
            print(&with_log(store.as_ref(), request).await?, format)?;
            ExitCode::SUCCESS
        }
        Ok(stepped) => {
            print(&with_log(store.as_ref(), stepped.request).await?, format)?;
            ExitCode::SUCCESS
        }
        Err(e) if e.status().is_client_error() => refused(&e, format),
        Err(e) => return Err(anyhow::anyhow!("{e}")),
    };
    store.close().await?;
    Ok(code)
}

async fn handled(args: HandledArgs) -> anyhow::Result<ExitCode> {
    let Some(target) = Target::parse(&args.target) else {
        eprintln!(
            "`{}` is not a task target: `kept`, `dataset:<name>` or `system:<name>`",
            args.target
        );
        return Ok(ExitCode::from(2));
    };
    let store = open(&args.source).await?;
    let work = work(&args.source, &store).await?;
    let actor = format!("operator:{}", args.operator);
    let done = tasks::handled(&work, args.id, &target, &args.note, &actor, now()).await;
    let code = match done {
        Ok(settled) if settled.replayed => refused(
            &ApiError::from(kept_core::requests::RequestError::TaskSettled {
                target: target.to_string(),
            }),
            args.format,
        ),
        Ok(settled) => {
            print(
                &with_log(store.as_ref(), settled.request).await?,
                args.format,
            )?;
            ExitCode::SUCCESS
        }
        Err(e) if e.status().is_client_error() => refused(&e, args.format),
        Err(e) => return Err(anyhow::anyhow!("{e}")),
    };
    store.close().await?;
    Ok(code)
}

/// Carries out a request that entered `in_progress` offline, through the server's service
/// (`requests::carry`), and settles its task for Kept's own data. The index it updates is this
/// command's own; it announces the subject to servers sharing a PostgreSQL database, and a
/// server on SQLite reads the gates at start.
async fn carry_out(
    source: &Source,
    work: &Work,
    request: &kept_core::requests::Request,
) -> anyhow::Result<()> {
    let setup = crate::cmd::source::setup(source).map_err(anyhow::Error::msg)?;
    let identities = crate::cmd::source::identities(&setup.config).map_err(anyhow::Error::msg)?;
    let index = kept_server::index::IndexHandle::new(&setup.manifest);
    index.announce_to(work.store.clone());
    let outcome = kept_server::requests::carry::CarryOut {
        store: work.store.as_ref(),
        identities: &identities,
        index: &index,
        manifest: &setup.manifest,
    }
    .request(request, now())
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(detail) = outcome.detail() {
        tasks::finish(
            work,
            request.id,
            &Target::Kept,
            tasks::Outcome::Done {
                detail: Some(detail),
            },
            now(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(())
}

async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let witness = match &args.witness {
        None => None,
        Some(path) => match kept_server::consent::witness::read_witness(path) {
            Ok((checkpoints, torn)) => {
                if torn > 0 && args.format == Format::Text {
                    eprintln!(
                        "note: the witness ends with an unfinished line (a crash while writing it); it was left out"
                    );
                }
                Some(checkpoints)
            }
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(2));
            }
        },
    };
    let store = open(&args.source).await?;
    let keys: Vec<VerifyingKey> = if args.public_keys.is_empty() {
        published_verifying_keys(store.as_ref()).await?
    } else {
        let mut keys = Vec::new();
        for k in &args.public_keys {
            match ledger::load_verifying_key(k) {
                Ok(key) => keys.push(key),
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::from(2));
                }
            }
        }
        keys
    };
    let at = args.now.unwrap_or_else(now);
    let verdict = service::verify_log(store.as_ref(), &keys, at, witness.as_deref()).await?;
    store.close().await?;
    match (verdict, args.format) {
        (Ok(report), Format::Json) => println!(
            "{}",
            serde_json::json!({
                "verdict": "intact",
                "records": report.records,
                "checkpoints": report.checkpoints,
                "last_checkpoint": report.last_checkpoint,
                "uncovered": report.uncovered,
                "witness": report.witnessed.map(|(checkpoints, last)| serde_json::json!({
                    "checkpoints": checkpoints,
                    "last_seq": last,
                })),
            })
        ),
        (Ok(report), Format::Text) => {
            println!(
                "intact: records 1 to {} of the requests log form an unbroken hash chain, and every stored column agrees with its bytes",
                report.records
            );
            if let Some(last) = report.last_checkpoint {
                println!(
                    "{} signed checkpoints match the chain, chained to one another up to record {last}",
                    report.checkpoints
                );
            }
            if report.uncovered > 0 {
                println!("{} recent records wait for a checkpoint", report.uncovered);
            }
            match report.witnessed {
                Some((checkpoints, Some(last))) => println!(
                    "{checkpoints} witnessed checkpoints match the log and are all in the database: nothing up to record {last} was cut or rewritten"
                ),
                Some((_, None)) => println!("the witness holds no checkpoint yet"),
                None => println!(
                    "not proven: that nothing was cut after the last checkpoint together with it: only a witness (--witness) can show the log's end"
                ),
            }
        }
        (Err(finding), format) => {
            match format {
                Format::Json => println!(
                    "{}",
                    serde_json::json!({
                        "verdict": "tampered",
                        "seq": finding.seq,
                        "code": finding.code,
                        "message": finding.message,
                    })
                ),
                Format::Text => println!(
                    "TAMPERED at record {} ({}): {}",
                    finding.seq, finding.code, finding.message
                ),
            }
            return Ok(ExitCode::from(1));
        }
    }
    Ok(ExitCode::SUCCESS)
}
