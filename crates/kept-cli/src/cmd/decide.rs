//! `kept decide`: one decision, offline, from the database: the index is built from the store
//! (as the server does at start) and the decision is explained with its evidence. Also what
//! `kept audience` shares with it: the index build with a progress bar, and the output helpers.

use crate::cmd::source::{Setup, Source, setup};
use indicatif::{ProgressBar, ProgressStyle};
use kept_core::decision::{DecisionRequest, Explained, ExplainedEvidence};
use kept_server::index::{IndexHandle, LoadReport, LoadStep};
use serde::Serialize;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Builds the index from the database (the server's own, or any copy of it) and decides as the
server would, now or, with --at, at a time up to 30 days ahead (a scheduled send: quiet hours,
frequency caps and expiry are evaluated then).

Examples:
  kept decide --subject-user-id u000042 --purpose marketing.communications --channel sms
  kept decide --subject-user-id u000042 --purpose personalize.content.profiled \\
      --category user.behavior.browsing_history --format json
  kept decide --subject-user-id u000042 --purpose marketing.communications --channel sms \\
      --at 2026-12-05T09:00:00+01:00
  kept decide --subject-id 7 --purpose marketing.communications --channel email --topic offers \\
      --database-url postgres://kept@127.0.0.1:5432/kept --manifest kept.toml

Exit status: 0 allowed, 1 denied, 2 the manifest or the database could not be used.")]
pub struct Args {
    /// The subject's user id (the company's own)
    #[arg(long, value_name = "USER_ID", required_unless_present = "subject_id")]
    subject_user_id: Option<String>,
    /// The subject's internal id, instead of a user id
    #[arg(long, value_name = "ID", conflicts_with = "subject_user_id")]
    subject_id: Option<u32>,
    /// The purpose the data would be used for (`marketing.communications`)
    #[arg(long, value_name = "PURPOSE")]
    purpose: String,
    /// The channel the person would be reached through (`email`, `sms`)
    #[arg(long, value_name = "CHANNEL")]
    channel: Option<String>,
    /// The topic, inside the purpose and channel (`offers`)
    #[arg(long, value_name = "TOPIC")]
    topic: Option<String>,
    /// A data category the use reads; repeat for several (default: the channel's)
    #[arg(long = "category", value_name = "CATEGORY")]
    categories: Vec<String>,
    /// Decide for this time instead of now: RFC 3339 or Unix milliseconds, at most 30 days
    /// ahead
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    #[command(flatten)]
    source: Source,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Opens the store and builds the index from it, showing progress on a terminal.
pub async fn build_index(setup: &Setup, now: i64) -> anyhow::Result<(IndexHandle, LoadReport)> {
    let store = kept_server::store::open_existing(setup.config.database_url.expose()).await?;
    let compiled = kept_server::index::compile(&setup.manifest)
        .map_err(|e| anyhow::anyhow!("the manifest cannot be compiled for decisions: {e}"))?;
    let index = IndexHandle::with_compiled(compiled);
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_message("reading subjects");
    let shown = bar.clone();
    let mut progress = move |step: LoadStep| match step {
        LoadStep::Subjects { done, total } => {
            shown.set_length(total);
            shown.set_position(done);
        }
        LoadStep::Traits { done } => {
            shown.set_message("reading traits");
            shown.set_position(done);
        }
        LoadStep::Ledger { done, total } => {
            shown.set_message("reading the consent ledger");
            shown.set_length(total);
            shown.set_position(done);
        }
        LoadStep::Preferences => shown.set_message("reading preferences"),
        LoadStep::Contacts => shown.set_message("reading recent contacts"),
        LoadStep::Done => {}
    };
    let report = index.load(store.as_ref(), now, &mut progress).await;
    bar.finish_and_clear();
    store.close().await.ok();
    Ok((index, report?))
}

/// Writes to standard output; a reader that went away (`| head`) is not an error.
pub fn print(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

pub fn now() -> i64 {
    kept_server::state::system_now()
}

#[derive(Debug, Serialize)]
struct Answer<'a> {
    subject: Option<u32>,
    user_id: Option<&'a str>,
    purpose: &'a str,
    channel: Option<&'a str>,
    topic: Option<&'a str>,
    /// The time decided for, when `--at` gave one (Unix milliseconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    at: Option<i64>,
    #[serde(flatten)]
    decision: &'a Explained,
}

/// `--at` as a time to decide for, checked as the server checks a request's `at`.
fn decision_time(at: &str, now: i64) -> Result<i64, String> {
    let parsed = match at.trim().parse::<i64>() {
        Ok(ms) => Some(ms),
        Err(_) => kept_core::collection::parse_time(at),
    };
    let at = parsed.ok_or_else(|| {
        format!("`--at` must be an RFC 3339 time or Unix milliseconds (got `{at}`)")
    })?;
    kept_server::http::input::scheduled_time(at, now, || "--at".to_owned())
        .map_err(|e| e.to_string())
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
    let at = match args
        .at
        .as_deref()
        .map(|at| decision_time(at, now))
        .transpose()
    {
        Ok(at) => at,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(ExitCode::from(2));
        }
    };
    let (index, _) = match build_index(&setup, now).await {
        Ok(built) => built,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    let subject = match (&args.subject_user_id, args.subject_id) {
        (_, Some(id)) => Some(kept_core::SubjectId(id)),
        (Some(user_id), None) => index.directory()?.subject(user_id),
        (None, None) => None,
    };
    let request = DecisionRequest {
        purpose: args.purpose.clone(),
        channel: args.channel.clone(),
        topic: args.topic.clone(),
        categories: args.categories.clone(),
    };
    let snapshot = index.snapshot()?;
    let query = snapshot.prepare(&request);
    let decision = match subject {
        Some(id) => snapshot.decide_prepared(id, &query, at.unwrap_or(now)),
        None => kept_core::decision::decide_query(
            None,
            snapshot.compiled(),
            &query.query,
            at.unwrap_or(now),
        ),
    };
    let explained = decision.explain(snapshot.compiled(), &query.query);
    let user_id = subject.and_then(|id| {
        index
            .directory()
            .ok()
            .and_then(|d| d.user_id(id).map(str::to_owned))
    });
    match args.format {
        Format::Json => {
            let answer = Answer {
                subject: subject.map(|s| s.0),
                user_id: user_id.as_deref().or(args.subject_user_id.as_deref()),
                purpose: &args.purpose,
                channel: args.channel.as_deref(),
                topic: args.topic.as_deref(),
                at,
                decision: &explained,
            };
            print(&(serde_json::to_string_pretty(&answer)? + "\n"))?;
        }
        Format::Text => {
            let who = match (&user_id, subject) {
                (Some(u), Some(id)) => format!("subject {} (user id {u})", id.0),
                (None, Some(id)) => format!("subject {}", id.0),
                _ => format!("user id {}", args.subject_user_id.as_deref().unwrap_or("?")),
            };
            let mut what = args.purpose.clone();
            if let Some(c) = &args.channel {
                what.push_str(&format!(" by {c}"));
            }
            if let Some(t) = &args.topic {
                what.push_str(&format!(" ({t})"));
            }
            if let Some(at) = at.and_then(chrono::DateTime::from_timestamp_millis) {
                what.push_str(&format!(
                    ", at {}",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ));
            }
            let mut text = format!("{who}, {what}, setup from {}\n", setup.manifest_label);
            text.push_str(&format!(
                "{} {}\n",
                if explained.allowed {
                    "ALLOWED"
                } else {
                    "DENIED"
                },
                explained.reason
            ));
            for e in &explained.evidence {
                text.push_str(&format!("  evidence: {}\n", evidence_text(e)));
            }
            let obligations: Vec<&str> = explained.obligations.iter().map(|o| o.as_str()).collect();
            if !obligations.is_empty() {
                text.push_str(&format!("  obligations: {}\n", obligations.join(", ")));
            }
            print(&text)?;
        }
    }
    Ok(if explained.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn evidence_text(e: &ExplainedEvidence) -> String {
    match e {
        ExplainedEvidence::Ledger { seq } => format!("consent ledger record {seq}"),
        ExplainedEvidence::Provenance {
            category,
            collection_point,
            notice,
            notice_version,
        } => format!(
            "{category} collected at `{collection_point}` under notice `{notice}` v{notice_version}, which promised this use"
        ),
        ExplainedEvidence::NotPromised { category } => {
            format!("{category} was never collected under a notice promising this use")
        }
        ExplainedEvidence::Rule { id, source } => format!("rule `{id}` ({source})"),
        ExplainedEvidence::ForbiddenUse {
            category,
            purpose,
            reason,
        } => format!("the manifest forbids {category} for {purpose}: {reason}"),
        ExplainedEvidence::Implied {
            collection_point,
            collected_at,
        } => {
            let when = chrono::DateTime::from_timestamp_millis(*collected_at).map_or_else(
                || collected_at.to_string(),
                |d| d.format("%Y-%m-%d").to_string(),
            );
            format!("implied consent from data collected at `{collection_point}` on {when}")
        }
        ExplainedEvidence::FrequencyCap {
            channel,
            max,
            period,
            sent,
        } => format!("{sent} sent by {channel} this {period}; the person chose at most {max}"),
        ExplainedEvidence::QuietHours {
            channel,
            start,
            end,
            local_time,
        } => format!("quiet hours on {channel} {start}–{end}; it is {local_time} there"),
        ExplainedEvidence::TimeZoneFallback { note } => (*note).to_owned(),
        ExplainedEvidence::Request { id } => {
            format!("data subject request {id} (restriction, objection, opt-out or limit)")
        }
    }
}
