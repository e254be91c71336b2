//! `kept rules`: the rulebook a manifest runs under — the law's rows, each with its legal
//! source, then the manifest's own tightenings — and the deadlines for answering data subject
//! requests per regime (`kept_core::rights`), as tables or as JSON. The manifest is the
//! one every offline command finds (`source::find_manifest`), the demo's when there is none.

use crate::cmd::decide::{Format, print};
use crate::cmd::source::{Source, find_manifest};
use kept_core::rights::Rights;
use kept_core::rulebook::{EffectiveRulebook, Rulebook};
use kept_server::config::Env;
use serde::Serialize;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
The manifest is found as `kept audience` and `kept decide` find it: --manifest, else
$KEPT_MANIFEST, else ./kept.toml, else the demo's.

Examples:
  kept rules
  kept rules --manifest kept.toml --format json
  kept rules | grep tcpa")]
pub struct Args {
    /// The manifest whose `policy.tighten` rows are added [default: $KEPT_MANIFEST or
    /// ./kept.toml; without one, the demo's]
    #[arg(long, value_name = "PATH")]
    manifest: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Serialize)]
struct Report {
    manifest: String,
    rules: Vec<kept_core::rulebook::RuleRow>,
    /// When each kind of data subject request must be answered, per regime.
    deadlines: Vec<kept_core::rights::DeadlineRow>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rulebook = match Rulebook::builtin() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let rights = match Rights::builtin() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let source = Source {
        database_url: None,
        manifest: args.manifest,
    };
    let found = match find_manifest(&source, &Env::from_process()) {
        Ok(found) => found,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(ExitCode::from(2));
        }
    };
    let manifest = match kept_core::manifest::load(&found.text, &found.label) {
        Ok(loaded) => loaded.manifest,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let effective = EffectiveRulebook::new(&rulebook, &manifest);
    match args.format {
        Format::Json => {
            let report = Report {
                manifest: found.label,
                rules: effective.rows(),
                deadlines: rights.rows(),
            };
            print(&(serde_json::to_string_pretty(&report)? + "\n"))?;
        }
        Format::Text => {
            let tightenings = manifest.policy.tighten.len();
            let total = effective.rules().len();
            let heading = format!(
                "{total} rules: {} from the law, {tightenings} from {} (policy.tighten)",
                total - tightenings,
                found.label
            );
            let deadlines = format!(
                "{} request deadlines (the earliest that applies wins)",
                rights.rules.len()
            );
            print(&format!(
                "{heading}\n\n{}\n{deadlines}\n\n{}",
                effective.table(),
                rights.table()
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
