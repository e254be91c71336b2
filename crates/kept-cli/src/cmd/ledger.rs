//! `kept ledger`: verify the consent ledger's hash chain and signed checkpoints, and (hidden)
//! a load generator the crash test kills mid-write.

use crate::cmd::source::{Source, config};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kept_core::SubjectId;
use kept_core::ledger::{CollectionMethod, ConsentAction, ConsentRecord, Evidence, NoticeRef};
use kept_server::consent::ledger::{
    self, Ledger, Verdict, VerifyOptions, VerifyReport, VerifyingKey, published_verifying_keys,
    verify_ledger,
};
use kept_server::store;
use kept_store::Store;
use serde_json::json;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check the hash chain, every stored column, the signed checkpoints and their chain, and
    /// (with --witness) the witness file; name the first bad record
    #[command(after_help = "Examples:
  kept ledger verify
  kept ledger verify --witness kept-data/ledger-witness.log --public-key ledger.pub
  kept ledger verify --database-url postgres://kept@db.internal/kept --format json

Without a witness, the database cannot prove its own end: records cut together with their
checkpoints are only found when they leave records no checkpoint covers. Records beyond the
last checkpoint are tampering once they are older than --checkpoint-interval plus --grace;
younger ones are reported as not yet covered. What could and could not be proved is printed.

Exit status: 0 intact, 1 tampered (the first bad record is named), 2 unusable input.")]
    Verify(VerifyArgs),
    /// Check a consent receipt from the preference center: its signature and the ledger
    /// record inside it
    #[command(after_help = "Examples:
  kept ledger verify-receipt consent-receipt-42.json
  kept ledger verify-receipt consent-receipt-42.json --public-key ledger.pub

A receipt names the key that signed it, and anybody can make a key: a receipt is valid only
when that key is the ledger's. Pass the ledger's verifying key with --public-key (the stronger
check: a copy kept apart from the database); without it, the key must be one the database
(--database-url) publishes. The receipt carries the signed checkpoint covering its record; it
must be signed by the same key and cover the record.

Exit status: 0 valid, 1 changed, or not signed by the ledger's key, 2 unusable input.")]
    VerifyReceipt(VerifyReceiptArgs),
    /// Append records as fast as possible, printing each acknowledged seq (for crash tests)
    #[command(hide = true)]
    LoadTest(LoadTestArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    source: Source,
    /// The ledger's verifying key: a file (PEM or hex) or the key in hex; repeat it for keys
    /// used before a key change. Default: the keys the database publishes, which whoever can
    /// edit the ledger could also replace, so a copy kept elsewhere is the stronger check
    #[arg(long = "public-key", value_name = "FILE_OR_HEX")]
    public_keys: Vec<String>,
    /// A witness file (`ledger_witness` of the server, one checkpoint a line): every checkpoint
    /// in it must match the ledger and be in the database
    #[arg(long, value_name = "FILE")]
    witness: Option<std::path::PathBuf>,
    /// The time to judge uncovered records by, in Unix milliseconds (default: now)
    #[arg(long, value_name = "UNIX_MS")]
    now: Option<i64>,
    /// The server's `checkpoint_interval`
    #[arg(long, value_name = "DURATION", default_value = "1s")]
    checkpoint_interval: String,
    /// How much longer than the interval a record may wait for its checkpoint
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    grace: String,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, clap::Args)]
pub struct LoadTestArgs {
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Concurrent writers
    #[arg(long, default_value_t = 64)]
    writers: u32,
    /// Stop after this many records (0: run until killed)
    #[arg(long, default_value_t = 0)]
    records: u64,
    /// Also append every checkpoint to this witness file
    #[arg(long, value_name = "FILE")]
    witness: Option<std::path::PathBuf>,
}

/// The database the command reads, found as every offline command finds it.
fn database_url(source: &Source) -> anyhow::Result<String> {
    let config = config(source).map_err(anyhow::Error::msg)?;
    Ok(config.database_url.expose().to_owned())
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Verify(args) => verify(args).await,
        Command::VerifyReceipt(args) => verify_receipt(&args).await,
        Command::LoadTest(args) => load_test(args).await,
    }
}

// --- verify-receipt --------------------------------------------------------------------------

#[derive(Debug, clap::Args)]
pub struct VerifyReceiptArgs {
    /// The receipt (JSON) to check
    #[arg(value_name = "FILE")]
    file: std::path::PathBuf,
    /// The ledger's verifying key (a file holding PEM or hex, or the key in hex) the receipt
    /// must be signed with; without it, the key must be among those the database publishes
    #[arg(long = "public-key", value_name = "FILE_OR_HEX")]
    public_key: Option<String>,
    /// The database (never created) whose published keys are checked without --public-key
    #[command(flatten)]
    source: Source,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// The keys a receipt may be signed with when none was given: those the database publishes.
/// `Err` says why there are none to compare with.
async fn published_receipt_keys(database_url: &str) -> Result<Vec<VerifyingKey>, String> {
    let store = store::open_existing(database_url)
        .await
        .map_err(|e| e.to_string())?;
    let keys = published_verifying_keys(store.as_ref()).await;
    let _ = store.close().await;
    keys.map_err(|e| e.to_string())
}

async fn verify_receipt(args: &VerifyReceiptArgs) -> anyhow::Result<ExitCode> {
    use kept_core::receipt;
    let format = args.format;
    let report = |code: u8, status: &str, error: Option<(&str, String)>, ok: Option<String>| {
        match (format, &error) {
            (Format::Text, Some((_, message))) if code == 2 => eprintln!("error: {message}"),
            (Format::Text, Some((_, message))) => println!("receipt INVALID: {message}"),
            (Format::Text, None) => println!("{}", ok.clone().unwrap_or_default()),
            (Format::Json, _) => println!(
                "{}",
                json!({
                    "status": status,
                    "error": error.as_ref().map(|(c, m)| json!({"code": c, "message": m})),
                    "detail": ok,
                })
            ),
        }
        Ok(ExitCode::from(code))
    };
    let expected = match args.public_key.as_deref().map(ledger::load_verifying_key) {
        None => None,
        Some(Ok(key)) => Some(key),
        Some(Err(e)) => return report(2, "unusable", Some((e.code(), e.to_string())), None),
    };
    let text = match std::fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) => {
            let message = format!("cannot read `{}`: {e}", args.file.display());
            return report(2, "unusable", Some(("receipt.read", message)), None);
        }
    };
    let value: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            let message = format!("`{}` is not JSON: {e}", args.file.display());
            return report(2, "unusable", Some(("receipt.not_json", message)), None);
        }
    };
    let verified = receipt::verify(&value, expected.as_ref());
    // A receipt that checks out under the key it names proves nothing until that key is known
    // to be the ledger's: anybody can sign a made-up receipt with a key of their own.
    let whose = match (&verified, &expected) {
        (Ok(_), Some(_)) => "the given ledger key".to_owned(),
        (Ok(v), None) => match published_receipt_keys(&database_url(&args.source)?).await {
            Ok(keys)
                if keys
                    .iter()
                    .any(|k| kept_core::ledger::key_id(k) == v.key_id) =>
            {
                "a key the database publishes as the ledger's (pass --public-key to check \
                 against a copy kept elsewhere)"
                    .to_owned()
            }
            Ok(_) => {
                let message = format!(
                    "the receipt is signed by key {}, which is not a key the ledger publishes: \
                     it was not signed by this ledger (pass --public-key with the ledger's \
                     verifying key to check against another)",
                    v.key_id
                );
                return report(1, "invalid", Some(("receipt.unknown_key", message)), None);
            }
            Err(why) => {
                let message = format!(
                    "the receipt is signed by key {}, but nothing says it is the ledger's key: \
                     {why}; pass --public-key with the ledger's verifying key",
                    v.key_id
                );
                return report(1, "invalid", Some(("receipt.unknown_key", message)), None);
            }
        },
        (Err(_), _) => String::new(),
    };
    match verified {
        Ok(v) => report(
            0,
            "valid",
            None,
            Some(format!(
                "receipt valid: ledger record {} ({} {} for subject {}), {}, signed by key {} — {whose}",
                v.seq,
                v.purpose,
                v.action,
                v.subject,
                match v.checkpoint {
                    Some(seq) => format!(
                        "covered by the signed checkpoint at record {seq} (match it with `kept ledger verify --witness`)"
                    ),
                    None => "with no checkpoint (issued before receipts carried one)".to_string(),
                },
                v.key_id
            )),
        ),
        Err(e) => report(1, "invalid", Some((e.code(), e.to_string())), None),
    }
}

// --- verify ----------------------------------------------------------------------------------

/// Where the verifying keys came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeySource {
    Argument,
    Database,
}

impl KeySource {
    fn as_str(self) -> &'static str {
        match self {
            KeySource::Argument => "argument",
            KeySource::Database => "database",
        }
    }
}

async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let format = args.format;
    let unusable = |code: &str, message: String| {
        match format {
            Format::Text => eprintln!("error: {message}"),
            Format::Json => println!(
                "{}",
                json!({ "status": "unusable", "error": { "code": code, "message": message } })
            ),
        }
        Ok(ExitCode::from(2))
    };

    let mut allowance = 0i64;
    for (flag, value) in [
        ("--checkpoint-interval", &args.checkpoint_interval),
        ("--grace", &args.grace),
    ] {
        match kept_server::config::parse_duration(value) {
            Ok(d) => {
                allowance =
                    allowance.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            }
            Err(e) => return unusable("ledger.duration", format!("{flag}: {e}")),
        }
    }
    let witness = match &args.witness {
        None => None,
        Some(path) => match kept_server::consent::witness::read_witness(path) {
            Ok((checkpoints, torn)) => {
                if torn > 0 && format == Format::Text {
                    eprintln!(
                        "note: the witness ends with an unfinished line (a crash while writing it); it was left out"
                    );
                }
                Some(checkpoints)
            }
            Err(e) => return unusable(e.code(), e.to_string()),
        },
    };
    let mut keys: Vec<VerifyingKey> = Vec::new();
    for value in &args.public_keys {
        match ledger::load_verifying_key(value) {
            Ok(key) => keys.push(key),
            Err(e) => return unusable(e.code(), e.to_string()),
        }
    }
    // Opening would create an empty database; verifying nothing is not what was asked.
    let store = match store::open_existing(&database_url(&args.source)?).await {
        Ok(store) => store,
        Err(e) => return unusable(e.code(), e.to_string()),
    };
    let source = if keys.is_empty() {
        match published_verifying_keys(store.as_ref()).await {
            Ok(published) => keys = published,
            Err(e) => return unusable(e.code(), e.to_string()),
        }
        KeySource::Database
    } else {
        KeySource::Argument
    };

    let total = store.ledger_len().await.unwrap_or(0);
    let bar = progress_bar(total);
    let mut options = VerifyOptions::new(keys.clone());
    options.witness = witness;
    options.allowance = allowance;
    if let Some(now) = args.now {
        options.now = now;
    }
    let verdict = verify_ledger(store.clone(), &options, {
        let bar = bar.clone();
        move |done| bar.set_position(done)
    })
    .await;
    bar.finish_and_clear();
    let _ = store.close().await;
    let verdict = match verdict {
        Ok(v) => v,
        Err(e) => return unusable(e.code(), e.to_string()),
    };

    match verdict {
        Verdict::Intact(report) => {
            match format {
                Format::Text => {
                    println!("ok: {}", describe(&report, &keys));
                    for line in report.proven() {
                        println!("proved: {line}");
                    }
                    for line in unproven(&report, source) {
                        println!("not proved: {line}");
                    }
                }
                Format::Json => println!(
                    "{}",
                    json!({
                        "status": "intact",
                        "records": report.records,
                        "tip": report.tip.map(|(seq, hash)| json!({ "seq": seq, "hash": hash.to_hex() })),
                        "checkpoints": report.checkpoints,
                        "last_checkpoint": report.last_checkpoint,
                        "uncovered": report.uncovered.map(|u| json!({
                            "first": u.first_seq,
                            "count": u.count,
                            "oldest_at": u.oldest,
                        })),
                        "witness": report.witness.as_ref().map(|w| json!({
                            "checkpoints": w.checkpoints,
                            "last": w.last_seq,
                        })),
                        "proven": report.proven(),
                        "unproven": unproven(&report, source),
                        "key_source": source.as_str(),
                    })
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Verdict::Tampered { verified, finding } => {
            match format {
                Format::Text => {
                    println!("TAMPERED: {}", finding.message);
                    println!(
                        "first bad record: {} ({verified} records before it verified)",
                        finding.seq
                    );
                }
                Format::Json => println!(
                    "{}",
                    json!({
                        "status": "tampered",
                        "first_bad_record": finding.seq,
                        "records_verified": verified,
                        "error": { "code": finding.code, "message": finding.message },
                        "key_source": source.as_str(),
                    })
                ),
            }
            Ok(ExitCode::from(1))
        }
        Verdict::NoKey(report) => unusable(
            "ledger.no_verifying_key",
            format!(
                "the chain of {} records is intact, but its {} checkpoints cannot be checked: \
                 the database publishes no verifying key (pass --public-key)",
                report.records, report.checkpoints
            ),
        ),
    }
}

/// What could not be proved, including where the keys came from.
fn unproven(report: &VerifyReport, source: KeySource) -> Vec<String> {
    let mut lines = report.unproven();
    if source == KeySource::Database && report.checkpoints > 0 {
        lines.push(
            "that the checkpoints were signed by your ledger key: the key came from the database (pass --public-key)"
                .to_string(),
        );
    }
    lines
}

fn describe(report: &VerifyReport, keys: &[VerifyingKey]) -> String {
    let tip = match report.tip {
        Some((seq, hash)) => format!("tip {seq} {}", hash.to_hex()),
        None => "the ledger is empty".to_string(),
    };
    let checkpoints = match report.checkpoints {
        0 => "no checkpoints yet".to_string(),
        n => {
            let ids: Vec<String> = keys.iter().map(kept_core::ledger::key_id).collect();
            format!(
                "{n} signed checkpoints verified (last at record {}, key {})",
                report.last_checkpoint.unwrap_or(0),
                ids.join(", ")
            )
        }
    };
    format!(
        "{} records, chain intact; {checkpoints}; {tip}",
        report.records
    )
}

fn progress_bar(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "verifying {wide_bar} {human_pos}/{human_len} records, {eta} left",
    ) {
        bar.set_style(style);
    }
    bar
}

// --- load-test -------------------------------------------------------------------------------

async fn load_test(args: LoadTestArgs) -> anyhow::Result<ExitCode> {
    let source = Source {
        database_url: args.database_url.clone(),
        manifest: None,
    };
    let store: Arc<dyn Store> = store::open(&database_url(&source)?).await?;
    let key = ledger::demo_signing_key(store.as_ref()).await?;
    let mut ledger = Ledger::new(store.clone(), key);
    if let Some(path) = &args.witness {
        let witness = kept_server::consent::witness::Witness::open(
            path,
            None,
            std::time::Duration::from_secs(1),
        )?;
        ledger = ledger.with_witness(Arc::new(witness));
    }
    let ledger = Arc::new(ledger);
    let (acks, mut acked) = tokio::sync::mpsc::unbounded_channel::<u64>();
    // One printer, so lines never interleave; it flushes whenever it has caught up, and a seq
    // is only ever printed after its commit.
    let printer = tokio::task::spawn_blocking(move || {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        while let Some(seq) = acked.blocking_recv() {
            if writeln!(out, "{seq}").is_err() {
                return;
            }
            while let Ok(seq) = acked.try_recv() {
                if writeln!(out, "{seq}").is_err() {
                    return;
                }
            }
            if out.flush().is_err() {
                return;
            }
        }
    });

    let issued = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..args.writers.max(1))
        .map(|w| {
            let ledger = ledger.clone();
            let acks = acks.clone();
            let issued = issued.clone();
            let limit = args.records;
            tokio::spawn(async move {
                loop {
                    let n = issued.fetch_add(1, Ordering::Relaxed);
                    if limit > 0 && n >= limit {
                        return Ok::<(), kept_store::StoreError>(());
                    }
                    let entry = ledger.append(load_record(w, n)).await?;
                    if acks.send(entry.seq).is_err() {
                        return Ok(());
                    }
                }
            })
        })
        .collect();
    drop(acks);
    for writer in writers {
        writer.await??;
    }
    ledger.checkpoint_now().await?;
    ledger.close().await;
    store.close().await?;
    printer.await?;
    Ok(ExitCode::SUCCESS)
}

fn load_record(writer: u32, n: u64) -> ConsentRecord {
    ConsentRecord {
        subject: SubjectId(u32::try_from(n % 100_000).unwrap_or_default()),
        purpose: "marketing.communications".into(),
        channel: Some("email".into()),
        topic: Some("newsletter".into()),
        action: if n.is_multiple_of(3) {
            ConsentAction::Withdrawn
        } else {
            ConsentAction::Given
        },
        notice: Some(NoticeRef {
            id: "newsletter".into(),
            version: 1,
            hash: "0".repeat(64),
        }),
        regime: "gdpr".into(),
        source: "load_test".into(),
        method: CollectionMethod::WebForm,
        evidence: Evidence {
            reference: Some(format!("writer-{writer}-{n}")),
            ..Evidence::default()
        },
        at: 1_790_000_000_000 + i64::try_from(n).unwrap_or_default(),
    }
}
