//! `kept rules`: the rulebook a manifest runs under — the law's rows, each with its legal
//! source, then the manifest's own tightenings — as a table or as JSON.

use crate::cmd::decide::{Format, print};
use kept_core::rulebook::{EffectiveRulebook, Rulebook};
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Without --manifest, ./kept.toml is used when it exists; otherwise only the law's rows are shown.

Examples:
  kept rules
  kept rules --manifest kept.toml --format json
  kept rules | grep tcpa")]
pub struct Args {
    /// The manifest whose `policy.tighten` rows are added [default: ./kept.toml if present]
    #[arg(long, value_name = "PATH")]
    manifest: Option<PathBuf>,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Serialize)]
struct Report {
    manifest: Option<String>,
    rules: Vec<kept_core::rulebook::RuleRow>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rulebook = match Rulebook::builtin() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let default = PathBuf::from("kept.toml");
    let path = match &args.manifest {
        Some(p) => Some(p.clone()),
        None => default.exists().then_some(default),
    };
    // Without a manifest the example's stands in: it tightens nothing, so only law rows show.
    let (text, label) = match &path {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(text) => (text, Some(p.display().to_string())),
            Err(e) => {
                eprintln!("error: cannot read the manifest `{}`: {e}", p.display());
                return Ok(ExitCode::from(2));
            }
        },
        None => (kept_core::manifest::EXAMPLE_TOML.to_owned(), None),
    };
    let manifest = match kept_core::manifest::load(&text, label.as_deref().unwrap_or("kept.toml")) {
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
                manifest: label,
                rules: effective.rows(),
            };
            print(&(serde_json::to_string_pretty(&report)? + "\n"))?;
        }
        Format::Text => {
            let tightenings = manifest.policy.tighten.len();
            let total = effective.rules().len();
            let heading = match &label {
                Some(l) => format!(
                    "{total} rules: {} from the law, {tightenings} from {l} (policy.tighten)",
                    total - tightenings
                ),
                None => {
                    format!("{total} rules from the law (no manifest: add one with --manifest)")
                }
            };
            print(&format!("{heading}\n\n{}", effective.table()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
