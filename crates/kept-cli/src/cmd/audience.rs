//! `kept audience`: a marketer's "can I send this?" in one command. Builds the index from the
//! database and dry-runs the campaign: how many may be reached, and a table of everyone who may
//! not, by reason, in the order of the gates. `--export` writes the eligible subjects' ids,
//! after recording the export as a use of each of them (`GET /v1/uses`), as the server does.

use crate::cmd::decide::{Format, build_index, now, print};
use crate::cmd::source::{Setup, Source, setup};
use anyhow::Context;
use kept_core::audience::{AudienceRequest, Candidates, evaluate};
use kept_core::decision::{DecisionRequest, ReasonCode};
use kept_server::decide::candidates::{FilterInput, filter_candidates};
use kept_server::index::IndexHandle;
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  kept audience --purpose marketing.communications --channel sms
  kept audience --purpose marketing.communications --channel email --topic offers --regime gdpr
  kept audience --purpose marketing.communications --channel sms --country US --export ids.csv
  kept audience --purpose personalize.content.profiled --format json

Each excluded subject is counted once, under the first gate that stopped it: the subject
(erasure, suppression), the promise (`denied.not_promised`), the legal basis, then the person's
own preferences.")]
pub struct Args {
    /// The purpose of the campaign (`marketing.communications`)
    #[arg(long, value_name = "PURPOSE")]
    purpose: String,
    /// The channel it goes out on (`email`, `sms`)
    #[arg(long, value_name = "CHANNEL")]
    channel: Option<String>,
    /// The topic people subscribed to (`offers`)
    #[arg(long, value_name = "TOPIC")]
    topic: Option<String>,
    /// A data category the campaign reads; repeat for several (default: the channel's)
    #[arg(long = "category", value_name = "CATEGORY")]
    categories: Vec<String>,
    /// Only subjects under this regime (`gdpr`, `ccpa`, `us_state`, …); repeat for several
    #[arg(long = "regime", value_name = "REGIME")]
    regimes: Vec<String>,
    /// Only subjects in this country (`US`, `DE`); repeat for several
    #[arg(long = "country", value_name = "CODE")]
    countries: Vec<String>,
    /// Only subjects in this region (`CA`, `TX`); repeat for several
    #[arg(long = "region", value_name = "CODE")]
    regions: Vec<String>,
    #[command(flatten)]
    source: Source,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Write the eligible subjects' ids here: CSV (`id,user_id`), or NDJSON for a `.ndjson` or
    /// `.jsonl` file
    #[arg(long, value_name = "FILE")]
    export: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    manifest: &'a str,
    purpose: &'a str,
    channel: Option<&'a str>,
    topic: Option<&'a str>,
    candidates: u64,
    eligible: u64,
    excluded: Vec<Row>,
    obligations: Vec<&'static str>,
    took_ms: f64,
    index_build_ms: u128,
    index_bytes_per_subject: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    exported_to: Option<String>,
}

#[derive(Debug, Serialize)]
struct Row {
    reason: &'static str,
    count: u64,
    share: f64,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let setup = match setup(&args.source) {
        Ok(s) => s,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(ExitCode::from(2));
        }
    };
    let now = now();
    let (index, built) = match build_index(&setup, now).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    let filter = FilterInput {
        regimes: args.regimes.clone(),
        countries: args.countries.clone(),
        regions: args.regions.clone(),
    };
    let candidates = if filter == FilterInput::default() {
        Candidates::All
    } else {
        match filter_candidates(&index, &filter) {
            Ok(c) => c,
            Err(e) => {
                eprintln!(
                    "error: {}",
                    e.to_string().replace("candidates.filter.", "--")
                );
                return Ok(ExitCode::from(2));
            }
        }
    };
    let request = AudienceRequest {
        purpose: args.purpose.clone(),
        channel: args.channel.clone(),
        topic: args.topic.clone(),
        categories: args.categories.clone(),
        candidates,
        sample_size: 0,
    };
    let snapshot = index.snapshot()?;
    let started = Instant::now();
    let result = evaluate(&snapshot, &request, now);
    let took_ms = started.elapsed().as_secs_f64() * 1000.0;
    let excluded_total: u64 = result.excluded.values().sum();
    let candidates = result.eligible_count + excluded_total;
    let share = |n: u64| {
        if candidates == 0 {
            0.0
        } else {
            n as f64 * 100.0 / candidates as f64
        }
    };
    let exported_to = match &args.export {
        Some(path) => {
            let decision = DecisionRequest {
                purpose: args.purpose.clone(),
                channel: args.channel.clone(),
                topic: args.topic.clone(),
                categories: args.categories.clone(),
            };
            let used = kept_server::decide::uses::export_records(
                &snapshot,
                &result,
                &result.excluded,
                &decision,
                now,
                "cli",
                &kept_server::decide::uses::export_id(),
            );
            // Recorded before the file is written: an export that cannot be recorded is not
            // made.
            if let Err(e) = record_uses(&setup, used).await {
                eprintln!("error: the export was not written: {e:#}");
                return Ok(ExitCode::from(1));
            }
            write_export(&index, &result.eligible, path)?;
            Some(path.display().to_string())
        }
        None => None,
    };
    let report = Report {
        manifest: &setup.manifest_label,
        purpose: &args.purpose,
        channel: args.channel.as_deref(),
        topic: args.topic.as_deref(),
        candidates,
        eligible: result.eligible_count,
        excluded: result
            .excluded
            .iter()
            .map(|(reason, count)| Row {
                reason: reason.as_str(),
                count: *count,
                share: share(*count),
            })
            .collect(),
        obligations: result.obligations.iter().map(|o| o.as_str()).collect(),
        took_ms,
        index_build_ms: built.took.as_millis(),
        index_bytes_per_subject: built.memory.bytes_per_subject,
        exported_to,
    };
    match args.format {
        Format::Json => print(&(serde_json::to_string_pretty(&report)? + "\n"))?,
        Format::Text => print(&table(&report, share(result.eligible_count)))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes an export's uses to the database the index was built from.
async fn record_uses(setup: &Setup, used: Vec<kept_store::UseRecord>) -> anyhow::Result<()> {
    let store = kept_server::store::open_existing(setup.config.database_url.expose()).await?;
    let written = store
        .record_uses(used)
        .await
        .context("cannot record the export's uses");
    store.close().await.ok();
    written.map(|_| ())
}

fn table(r: &Report<'_>, eligible_share: f64) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    const BAR: usize = 30;
    let mut what = r.purpose.to_owned();
    if let Some(c) = r.channel {
        what.push_str(&format!(" by {c}"));
    }
    if let Some(t) = r.topic {
        what.push_str(&format!(", topic {t}"));
    }
    let _ = writeln!(out, "{what}: {} candidates\n", thousands(r.candidates));
    let width = r
        .excluded
        .iter()
        .map(|row| row.reason.len())
        .chain([ReasonCode::AllowedConsent.as_str().len(), "eligible".len()])
        .max()
        .unwrap_or(8);
    let bar = |share: f64| {
        let n = ((share / 100.0) * BAR as f64).round() as usize;
        let n = if share > 0.0 { n.max(1) } else { 0 };
        format!("{}{}", "█".repeat(n), "·".repeat(BAR.saturating_sub(n)))
    };
    let line = |out: &mut String, label: &str, count: u64, share: f64| {
        let _ = writeln!(
            out,
            "  {label:<width$}  {:>10}  {share:>5.1}%  {}",
            thousands(count),
            bar(share)
        );
    };
    line(&mut out, "eligible", r.eligible, eligible_share);
    if !r.excluded.is_empty() {
        let _ = writeln!(out, "  excluded, by the first gate that stopped them:");
        for row in &r.excluded {
            line(&mut out, row.reason, row.count, row.share);
        }
    }
    out.push('\n');
    if !r.obligations.is_empty() {
        let _ = writeln!(out, "Sending must: {}", r.obligations.join(", "));
    }
    if let Some(path) = &r.exported_to {
        let _ = writeln!(out, "Eligible ids written to {path}");
    }
    let _ = writeln!(
        out,
        "Evaluated in {:.2} ms (index built in {} ms, {:.0} bytes per subject; rules from {})",
        r.took_ms, r.index_build_ms, r.index_bytes_per_subject, r.manifest
    );
    out
}

/// `1234567` → `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn write_export(
    index: &IndexHandle,
    eligible: &roaring::RoaringBitmap,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let ndjson = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("ndjson") || e.eq_ignore_ascii_case("jsonl"));
    let file = std::fs::File::create(path)
        .map_err(|e| anyhow::anyhow!("cannot write `{}`: {e}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let directory = index.directory()?;
    if !ndjson {
        writeln!(out, "id,user_id")?;
    }
    for id in eligible {
        let user_id = directory.user_id(kept_core::SubjectId(id));
        if ndjson {
            let line = match user_id {
                Some(u) => serde_json::json!({ "id": id, "user_id": u }),
                None => serde_json::json!({ "id": id }),
            };
            writeln!(out, "{line}")?;
        } else {
            let u = user_id.map(kept_core::csv::field).unwrap_or_default();
            writeln!(out, "{id},{u}")?;
        }
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_are_grouped() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(1000), "1,000");
        assert_eq!(super::thousands(1_234_567), "1,234,567");
    }
}
