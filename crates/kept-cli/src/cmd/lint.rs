//! `kept lint`: loads a manifest and reports its findings, as text for people or JSON for CI.
//! Exit status 0 when clean, 1 with findings, 2 when the manifest cannot be used at all.

use kept_core::lint::{Finding, RecordedNotice, Severity, count, lint};
use kept_core::manifest::{ManifestError, load};
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  kept lint                                  check ./kept.toml
  kept lint privacy/kept.toml --format json  for CI
  kept lint --database-url postgres://kept@127.0.0.1:5432/kept
                                             also catch notice texts changed without a
                                             version bump since they were recorded

Exit status: 0 no errors, 1 errors found (or warnings, with --deny-warnings),
2 the manifest could not be read or parsed (the message names file, line and column).")]
pub struct Args {
    /// The manifest to check
    #[arg(default_value = "kept.toml")]
    pub path: PathBuf,
    /// Compare notices against the hashes recorded in this database (`postgres://…` or an
    /// SQLite path)
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Exit 1 on warnings too
    #[arg(long)]
    pub deny_warnings: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// The JSON report. Field names are a contract with CI scripts.
#[derive(Debug, Serialize)]
struct Report<'a> {
    file: &'a str,
    ok: bool,
    errors: usize,
    warnings: usize,
    findings: &'a [Finding],
}

/// The JSON shape of an unusable manifest.
#[derive(Debug, Serialize)]
struct Unusable<'a> {
    file: &'a str,
    ok: bool,
    error: UnusableError<'a>,
}

#[derive(Debug, Serialize)]
struct UnusableError<'a> {
    code: &'a str,
    message: &'a str,
    line: Option<u32>,
    column: Option<u32>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let file = args.path.display().to_string();
    let source = match std::fs::read_to_string(&args.path) {
        Ok(source) => source,
        Err(e) => {
            let message = format!("cannot read `{file}`: {e}");
            return Ok(unusable(
                args.format,
                &file,
                "manifest.unreadable",
                &message,
                None,
            ));
        }
    };
    let loaded = match load(&source, &file) {
        Ok(loaded) => loaded,
        Err(e) => {
            return Ok(unusable(
                args.format,
                &file,
                e.code(),
                e.message(),
                Some(&e),
            ));
        }
    };
    let recorded = match &args.database_url {
        None => Vec::new(),
        Some(url) => match recorded_notices(url).await {
            Ok(recorded) => recorded,
            Err(e) => {
                let message = format!("cannot read recorded notices: {e:#}");
                return Ok(unusable(
                    args.format,
                    &file,
                    "lint.database",
                    &message,
                    None,
                ));
            }
        },
    };
    let findings = lint(&loaded, &recorded);
    let (errors, warnings) = count(&findings);
    let failed = errors > 0 || (args.deny_warnings && warnings > 0);
    match args.format {
        Format::Text => print_text(&file, &findings, errors, warnings),
        Format::Json => {
            let report = Report {
                file: &file,
                ok: !failed,
                errors,
                warnings,
                findings: &findings,
            };
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_text(file: &str, findings: &[Finding], errors: usize, warnings: usize) {
    for f in findings {
        let at = match (f.line, f.column) {
            (Some(line), Some(column)) => format!("{}:{line}:{column}", f.file),
            _ => f.file.clone(),
        };
        println!(
            "{at}: {}[{}]: {}\n    at {}",
            f.severity.as_str(),
            f.code,
            f.message,
            f.path
        );
    }
    if findings.is_empty() {
        println!("{file}: no findings");
    } else {
        println!(
            "{file}: {} and {}",
            plural(errors, Severity::Error.as_str()),
            plural(warnings, Severity::Warning.as_str())
        );
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Reports a manifest that could not be checked at all; exit status 2.
fn unusable(
    format: Format,
    file: &str,
    code: &str,
    message: &str,
    error: Option<&ManifestError>,
) -> ExitCode {
    match format {
        Format::Text => match error {
            // The same shape as a finding, so editors and CI read both alike.
            Some(e) => eprintln!("{}: error[{code}]: {message}", e.location()),
            None => eprintln!("{file}: error[{code}]: {message}"),
        },
        Format::Json => {
            let at = error.and_then(|e| e.location().at);
            let report = Unusable {
                file,
                ok: false,
                error: UnusableError {
                    code,
                    message,
                    line: at.map(|a| a.line),
                    column: at.map(|a| a.column),
                },
            };
            match serde_json::to_string_pretty(&report) {
                Ok(json) => println!("{json}"),
                Err(e) => eprintln!("error[{code}]: {message} ({e})"),
            }
        }
    }
    ExitCode::from(2)
}

/// The notice hashes recorded in the database.
async fn recorded_notices(url: &str) -> anyhow::Result<Vec<RecordedNotice>> {
    // Linting reads; it must not leave a fresh empty database behind a mistyped path.
    let store = kept_server::store::open_existing(url).await?;
    let hashes = store.notice_hashes().await?;
    Ok(hashes
        .into_iter()
        .map(|h| RecordedNotice {
            notice_id: h.notice_id,
            version: h.version,
            hash: h.hash,
        })
        .collect())
}
