//! The overview's figures and charts. Counts of people come from the index (bitmap
//! cardinalities: how many known subjects of each regime stand in each consent state, and the
//! consent records of each recent day); the rest is one indexed read each: the ledger's length
//! and last checkpoint, requests due soon and overdue, decisions by reason over the last week
//! (the store's daily counts), webhook deliveries by state and the quarantine. The charts are
//! laid out here and drawn by the template as SVG, each beside a table with the same numbers.

use crate::requests::service::DUE_SOON;
use kept_core::UnixMillis;
use kept_core::index::{ConsentTally, DayCount, Snapshot, StateCounts};
use kept_store::{Store, StoreError};

/// Days the consent lines cover.
pub const LINE_DAYS: usize = 30;
/// Days the decisions chart covers.
pub const DECISION_DAYS: i64 = 7;

/// What the overview shows.
#[derive(Debug, Clone)]
pub struct Overview {
    pub subjects: u64,
    pub ledger_records: u64,
    /// The last checkpoint's record and when it was signed, as shown.
    pub last_checkpoint: Option<(u64, String)>,
    pub requests_due_soon: u64,
    pub requests_overdue: u64,
    pub pending: u64,
    pub delivered: u64,
    pub dead: u64,
    pub quarantined: u64,
    /// Consent state per purpose scope and regime (none when the index does not serve).
    pub states: Vec<StackedGroup>,
    pub lines: Lines,
    pub decisions: Vec<ReasonBar>,
}

/// Reads the overview's figures at `now`, the people's from `snapshot`.
pub async fn read(
    store: &dyn Store,
    snapshot: Option<&Snapshot>,
    now: UnixMillis,
) -> Result<Overview, StoreError> {
    let requests = store.open_request_counts(now, DUE_SOON).await?;
    let outbox = store.outbox_counts().await?;
    let since = kept_store::decision_log::day_of(now) - DECISION_DAYS + 1;
    let decisions = reason_bars(&store.decision_counts(since).await?);
    let (subjects, states, days) = match snapshot {
        Some(s) => {
            let tally = s.consent_tally();
            (
                tally.subjects,
                stacked(&tally),
                s.consent_days(now, LINE_DAYS),
            )
        }
        None => (store.subject_count().await?, Vec::new(), Vec::new()),
    };
    Ok(Overview {
        subjects,
        ledger_records: store.ledger_len().await?,
        last_checkpoint: store
            .last_checkpoint()
            .await?
            .map(|cp| (cp.seq, crate::web::frame::datetime(cp.at))),
        requests_due_soon: requests.due_soon,
        requests_overdue: requests.overdue,
        pending: outbox.pending,
        delivered: outbox.delivered,
        dead: outbox.dead,
        quarantined: store.quarantine_len().await?,
        states,
        lines: lines(&days),
        decisions,
    })
}

/// The consent states, in the order the bars stack them, with their colours (distinct for
/// colour blindness, and named in the legend and the table).
pub const STATES: [(&str, &str); 6] = [
    ("given", "#1a7f37"),
    ("withdrawn", "#bc4c00"),
    ("refused", "#cf222e"),
    ("opted_out", "#8250df"),
    ("objected", "#6e7781"),
    ("none", "#d0d7de"),
];

fn values(c: &StateCounts) -> [u64; 6] {
    [
        c.given,
        c.withdrawn,
        c.refused,
        c.opted_out,
        c.objected,
        c.none,
    ]
}

/// One purpose scope's bars, one per regime.
#[derive(Debug, Clone)]
pub struct StackedGroup {
    pub purpose: String,
    pub channel: Option<String>,
    pub rows: Vec<StackedRow>,
}

/// One regime's bar: its segments left to right, and the numbers for the table.
#[derive(Debug, Clone)]
pub struct StackedRow {
    pub regime: &'static str,
    pub total: u64,
    pub counts: [u64; 6],
    /// (x, width, colour, state, count) in a 0–600 wide bar.
    pub segments: Vec<(u32, u32, &'static str, &'static str, u64)>,
}

/// The width of a stacked bar.
pub const BAR: u64 = 600;

fn stacked(tally: &ConsentTally) -> Vec<StackedGroup> {
    // A purpose on one channel is drawn only where it stands otherwise than the purpose on
    // every channel (a record for that channel alone); the same bars again would say nothing.
    let same_as_purpose = |s: &kept_core::index::ScopeTally| {
        s.channel.is_some()
            && tally
                .scopes
                .iter()
                .any(|p| p.purpose == s.purpose && p.channel.is_none() && p.regimes == s.regimes)
    };
    tally
        .scopes
        .iter()
        // A scope nobody has a record for says nothing a table of people would not.
        .filter(|s| s.regimes.iter().any(|(_, c)| c.none < c.total()))
        .filter(|s| !same_as_purpose(s))
        .map(|s| StackedGroup {
            purpose: s.purpose.clone(),
            channel: s.channel.clone(),
            rows: s
                .regimes
                .iter()
                .map(|(regime, c)| {
                    let counts = values(c);
                    let total = c.total().max(1);
                    let mut x = 0u64;
                    let segments = counts
                        .iter()
                        .zip(STATES)
                        .filter(|(n, _)| **n > 0)
                        .map(|(n, (state, colour))| {
                            let start = x * BAR / total;
                            x += n;
                            let end = x * BAR / total;
                            (
                                u32::try_from(start).unwrap_or(0),
                                u32::try_from(end - start).unwrap_or(0),
                                colour,
                                state,
                                *n,
                            )
                        })
                        .collect();
                    StackedRow {
                        regime: regime.as_str(),
                        total: c.total(),
                        counts,
                        segments,
                    }
                })
                .collect(),
        })
        .collect()
}

/// The consent lines: yes and no per day.
#[derive(Debug, Clone, Default)]
pub struct Lines {
    /// (date, given, refused) oldest first, for the table.
    pub days: Vec<(String, u64, u64)>,
    /// SVG polyline points in a 600 × 160 plot.
    pub given: String,
    pub refused: String,
    pub max: u64,
    pub first: String,
    pub last: String,
}

/// The plot of the lines.
const PLOT_W: u64 = 600;
const PLOT_H: u64 = 160;

fn lines(days: &[DayCount]) -> Lines {
    if days.is_empty() {
        return Lines::default();
    }
    let max = days
        .iter()
        .map(|d| d.given.max(d.refused))
        .max()
        .unwrap_or(0)
        .max(1);
    let step = PLOT_W / u64::try_from(days.len().saturating_sub(1).max(1)).unwrap_or(1);
    let points = |pick: fn(&DayCount) -> u64| {
        days.iter()
            .enumerate()
            .map(|(i, d)| {
                let x = u64::try_from(i).unwrap_or(0) * step;
                let y = PLOT_H - pick(d) * PLOT_H / max;
                format!("{x},{y}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let date = |day: i64| {
        chrono::DateTime::from_timestamp_millis(day * 24 * 60 * 60 * 1000)
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_default()
    };
    Lines {
        days: days
            .iter()
            .map(|d| (date(d.day), d.given, d.refused))
            .collect(),
        given: points(|d| d.given),
        refused: points(|d| d.refused),
        max,
        first: days.first().map(|d| date(d.day)).unwrap_or_default(),
        last: days.last().map(|d| date(d.day)).unwrap_or_default(),
    }
}

/// One reason's bar of the decisions chart.
#[derive(Debug, Clone)]
pub struct ReasonBar {
    pub reason: String,
    pub allowed: bool,
    pub count: u64,
    pub y: u32,
    pub width: u32,
}

/// The widest reason bar.
const REASON_BAR: u64 = 400;

fn reason_bars(counts: &[kept_store::DecisionCount]) -> Vec<ReasonBar> {
    let mut by_reason: std::collections::BTreeMap<&str, (bool, u64)> = Default::default();
    for c in counts {
        let e = by_reason.entry(&c.reason).or_insert((c.allowed, 0));
        e.1 += c.count;
    }
    let mut rows: Vec<(&str, bool, u64)> = by_reason
        .into_iter()
        .map(|(r, (allowed, n))| (r, allowed, n))
        .collect();
    rows.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(b.0)));
    let max = rows.first().map_or(1, |r| r.2.max(1));
    rows.into_iter()
        .enumerate()
        .map(|(i, (reason, allowed, count))| ReasonBar {
            reason: reason.to_owned(),
            allowed,
            count,
            y: 4 + 26 * u32::try_from(i).unwrap_or(0),
            width: u32::try_from(count * REASON_BAR / max).unwrap_or(0),
        })
        .collect()
}
