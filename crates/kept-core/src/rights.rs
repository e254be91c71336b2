//! When a data subject request must be answered: the law's deadlines per regime as rulebook rows
//! (`rulebook/rights.toml`, compiled in), each citing its source, and the one lookup every
//! request uses. A regime without a row, or a key Kept does not know, is answered as `strictest`:
//! Kept fails closed.

use crate::UnixMillis;
use crate::regime::Regime;
use chrono::{Datelike, Weekday};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The deadlines' source, as shipped.
pub const RIGHTS_TOML: &str = include_str!("rulebook/rights.toml");

const DAY: UnixMillis = 24 * 60 * 60 * 1000;

/// What a data subject asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    Access,
    Portability,
    Erasure,
    Rectification,
    Restriction,
    Objection,
    /// Opt-out of sale, sharing, targeted advertising or profiling.
    OptOut,
    /// Limit the use of sensitive personal information (Cal. Civ. Code 1798.121).
    LimitSensitive,
}

impl RequestKind {
    pub const ALL: [RequestKind; 8] = [
        RequestKind::Access,
        RequestKind::Portability,
        RequestKind::Erasure,
        RequestKind::Rectification,
        RequestKind::Restriction,
        RequestKind::Objection,
        RequestKind::OptOut,
        RequestKind::LimitSensitive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Access => "access",
            RequestKind::Portability => "portability",
            RequestKind::Erasure => "erasure",
            RequestKind::Rectification => "rectification",
            RequestKind::Restriction => "restriction",
            RequestKind::Objection => "objection",
            RequestKind::OptOut => "opt_out",
            RequestKind::LimitSensitive => "limit_sensitive",
        }
    }
}

impl fmt::Display for RequestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A span of time as the law counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Span {
    Days(u32),
    /// Monday to Friday. Public holidays are counted as working days, which can only make a
    /// deadline earlier than the law's: failing closed.
    BusinessDays(u32),
    /// Calendar months (a month after 31 January is the last day of February).
    Months(u32),
}

impl Span {
    /// The moment this span after `at` ends; saturates far in the future.
    pub fn after(self, at: UnixMillis) -> UnixMillis {
        match self {
            Span::Days(n) => at.saturating_add(UnixMillis::from(n).saturating_mul(DAY)),
            Span::Months(n) => crate::rulebook::add_months(at, n),
            Span::BusinessDays(n) => {
                let mut left = n;
                let mut t = at;
                while left > 0 {
                    t = t.saturating_add(DAY);
                    if t == UnixMillis::MAX {
                        return t;
                    }
                    let weekday = chrono::DateTime::from_timestamp_millis(t)
                        .map(|d| d.weekday())
                        .unwrap_or(Weekday::Mon);
                    if !matches!(weekday, Weekday::Sat | Weekday::Sun) {
                        left -= 1;
                    }
                }
                t
            }
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (n, unit) = match *self {
            Span::Days(n) => (n, "day"),
            Span::BusinessDays(n) => (n, "business day"),
            Span::Months(n) => (n, "month"),
        };
        let s = if n == 1 { "" } else { "s" };
        write!(f, "{n} {unit}{s}")
    }
}

/// One row: how long the law gives to answer a kind of request in some regimes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadlineRule {
    pub id: String,
    pub regimes: Vec<Regime>,
    /// Region codes (`QC`, `CO`); empty = every region.
    pub regions: Vec<String>,
    /// Empty = every kind.
    pub requests: Vec<RequestKind>,
    pub within: Span,
    /// How much later the answer may come when the subject is told so in time.
    pub extension: Option<Span>,
    /// The deadline for confirming receipt, where the law sets one.
    pub acknowledge: Option<Span>,
    pub source: String,
    pub note: Option<String>,
    /// Reported by secondary sources only.
    pub verify: bool,
}

impl DeadlineRule {
    /// Whether the row applies to a request of `kind` by a subject under `regime` in `region`
    /// (`None`: unknown, so every region's row applies).
    pub fn applies(&self, regime: Regime, region: Option<&str>, kind: RequestKind) -> bool {
        self.regimes.contains(&regime)
            && (self.requests.is_empty() || self.requests.contains(&kind))
            && (self.regions.is_empty()
                || region.is_none_or(|r| self.regions.iter().any(|x| x.eq_ignore_ascii_case(r))))
    }
}

/// When a request made at a given time must be answered, and by which row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline<'a> {
    pub rule: &'a DeadlineRule,
    /// When it was received.
    pub received_at: UnixMillis,
    /// The answer is due by then.
    pub due_at: UnixMillis,
    /// The latest an extended answer may come; `None` where the law allows no extension.
    pub extended_due_at: Option<UnixMillis>,
    /// Receipt is confirmed by then, where the law asks for it.
    pub acknowledge_by: Option<UnixMillis>,
}

/// The deadlines could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RightsError {
    #[error("request deadlines are not valid: {0}")]
    Parse(String),
    #[error("request deadline row `{id}`: {problem}")]
    Row { id: String, problem: String },
}

impl RightsError {
    pub fn code(&self) -> &'static str {
        match self {
            RightsError::Parse(_) => "rights.parse",
            RightsError::Row { .. } => "rights.row",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    deadline: Vec<RawRow>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRow {
    id: String,
    regimes: Vec<Regime>,
    #[serde(default)]
    regions: Vec<String>,
    #[serde(default)]
    requests: Vec<RequestKind>,
    within: Span,
    extension: Option<Span>,
    acknowledge: Option<Span>,
    source: String,
    note: Option<String>,
    #[serde(default)]
    verify: bool,
}

/// One printable row of `kept rules`' deadlines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadlineRow {
    pub id: String,
    pub regime: String,
    pub requests: String,
    pub within: String,
    pub extension: String,
    pub source: String,
}

/// The deadlines as shipped: rows in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rights {
    pub rules: Vec<DeadlineRule>,
}

impl Rights {
    /// The deadlines compiled into the binary.
    pub fn builtin() -> Result<Rights, RightsError> {
        Rights::parse(RIGHTS_TOML)
    }

    /// The deadlines compiled into the binary, read once for the life of the process.
    pub fn shipped() -> Result<&'static Rights, &'static RightsError> {
        static SHIPPED: std::sync::OnceLock<Result<Rights, RightsError>> =
            std::sync::OnceLock::new();
        SHIPPED.get_or_init(Rights::builtin).as_ref()
    }

    /// Reads deadline rows: each has a unique id, regimes and a source, and `strictest` has a
    /// row (it answers for every regime that has none).
    pub fn parse(source: &str) -> Result<Rights, RightsError> {
        let raw: RawFile =
            toml::from_str(source).map_err(|e| RightsError::Parse(e.message().to_owned()))?;
        let mut rules: Vec<DeadlineRule> = Vec::with_capacity(raw.deadline.len());
        for r in raw.deadline {
            let row_error = |problem: &str| RightsError::Row {
                id: r.id.clone(),
                problem: problem.to_owned(),
            };
            if rules.iter().any(|x| x.id == r.id) {
                return Err(row_error("the id is used twice"));
            }
            if r.regimes.is_empty() {
                return Err(row_error("no regime"));
            }
            if r.source.trim().is_empty() {
                return Err(row_error("no source"));
            }
            rules.push(DeadlineRule {
                id: r.id,
                regimes: r.regimes,
                regions: r.regions,
                requests: r.requests,
                within: r.within,
                extension: r.extension,
                acknowledge: r.acknowledge,
                source: r.source,
                note: r.note,
                verify: r.verify,
            });
        }
        let rights = Rights { rules };
        for kind in RequestKind::ALL {
            if !rights
                .rules
                .iter()
                .any(|r| r.applies(Regime::Strictest, None, kind))
            {
                return Err(RightsError::Row {
                    id: "strictest".to_owned(),
                    problem: format!("no row answers `{kind}` requests for `strictest`"),
                });
            }
        }
        Ok(rights)
    }

    /// When a request of `kind`, received at `at` from a subject under `regime` in `region`,
    /// must be answered: of the rows that apply, the one due first (a tie goes to the shorter
    /// extension). A regime no row answers is answered as `strictest`.
    pub fn deadline(
        &self,
        regime: Regime,
        region: Option<&str>,
        kind: RequestKind,
        at: UnixMillis,
    ) -> Option<Deadline<'_>> {
        self.earliest(regime, region, kind, at)
            .or_else(|| self.earliest(Regime::Strictest, None, kind, at))
    }

    /// [`Rights::deadline`] for a regime as stored (a request filed under a key this version
    /// does not know is answered as `strictest`).
    pub fn deadline_for_key(
        &self,
        regime: &str,
        region: Option<&str>,
        kind: RequestKind,
        at: UnixMillis,
    ) -> Option<Deadline<'_>> {
        let regime = regime.parse().unwrap_or(Regime::Strictest);
        self.deadline(regime, region, kind, at)
    }

    fn earliest(
        &self,
        regime: Regime,
        region: Option<&str>,
        kind: RequestKind,
        at: UnixMillis,
    ) -> Option<Deadline<'_>> {
        self.rules
            .iter()
            .filter(|r| r.applies(regime, region, kind))
            .map(|rule| {
                let due_at = rule.within.after(at);
                Deadline {
                    rule,
                    received_at: at,
                    due_at,
                    extended_due_at: rule.extension.map(|e| e.after(due_at)),
                    acknowledge_by: rule.acknowledge.map(|a| a.after(at)),
                }
            })
            .min_by_key(|d| (d.due_at, d.extended_due_at.unwrap_or(d.due_at)))
    }

    /// The table `kept rules` prints after the rules, one row per deadline.
    pub fn rows(&self) -> Vec<DeadlineRow> {
        self.rules
            .iter()
            .map(|r| {
                let mut regime = r
                    .regimes
                    .iter()
                    .map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                if !r.regions.is_empty() {
                    regime = format!("{regime} ({})", r.regions.join(", "));
                }
                let requests = if r.requests.is_empty() {
                    "*".to_owned()
                } else {
                    r.requests
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let mut within = r.within.to_string();
                if let Some(a) = r.acknowledge {
                    within.push_str(&format!("; acknowledge within {a}"));
                }
                DeadlineRow {
                    id: r.id.clone(),
                    regime,
                    requests,
                    within,
                    extension: r
                        .extension
                        .map_or_else(|| "none".to_owned(), |e| e.to_string()),
                    source: if r.verify {
                        format!("{} (verify)", r.source)
                    } else {
                        r.source.clone()
                    },
                }
            })
            .collect()
    }

    /// `rows()` as an aligned text table.
    pub fn table(&self) -> String {
        let header = DeadlineRow {
            id: "id".into(),
            regime: "regime".into(),
            requests: "requests".into(),
            within: "within".into(),
            extension: "extension".into(),
            source: "source".into(),
        };
        let rows: Vec<DeadlineRow> = std::iter::once(header).chain(self.rows()).collect();
        let cells = |r: &DeadlineRow| {
            [
                r.id.clone(),
                r.regime.clone(),
                r.requests.clone(),
                r.within.clone(),
                r.extension.clone(),
                r.source.clone(),
            ]
        };
        crate::rulebook::aligned_table(&rows.iter().map(cells).collect::<Vec<_>>())
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::indexing_slicing,
        reason = "test code: a failed expectation is a failed test"
    )]
    use super::*;

    /// 2026-03-02, a Monday, 10:00 UTC.
    const MONDAY: UnixMillis = 1_772_445_600_000;

    fn at(y: i32, m: u32, d: u32) -> UnixMillis {
        chrono::NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(10, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis()
    }

    fn rights() -> Rights {
        Rights::builtin().unwrap()
    }

    /// The row, due date and extended due date of an erasure request made at `t`.
    fn erasure(regime: Regime, region: Option<&str>, t: UnixMillis) -> (String, i64, Option<i64>) {
        let rights = rights();
        let d = rights
            .deadline(regime, region, RequestKind::Erasure, t)
            .unwrap();
        (d.rule.id.clone(), d.due_at, d.extended_due_at)
    }

    #[test]
    fn the_test_dates_are_what_they_say() {
        assert_eq!(MONDAY, at(2026, 3, 2));
        assert_eq!(
            chrono::DateTime::from_timestamp_millis(MONDAY)
                .unwrap()
                .weekday(),
            Weekday::Mon
        );
    }

    #[test]
    fn gdpr_and_uk_gdpr_one_calendar_month_extendable_by_two() {
        for regime in [Regime::Gdpr, Regime::UkGdpr] {
            let (id, due, extended) = erasure(regime, None, at(2026, 1, 31));
            assert_eq!(id, "gdpr.requests");
            assert_eq!(due, at(2026, 2, 28), "{regime}: a month after 31 January");
            assert_eq!(extended, Some(at(2026, 4, 28)));
        }
    }

    #[test]
    fn ccpa_45_days_extendable_once_by_45_acknowledged_in_10_business_days() {
        let rights = rights();
        let d = rights
            .deadline(Regime::Ccpa, Some("CA"), RequestKind::Erasure, MONDAY)
            .unwrap();
        assert_eq!(d.rule.id, "ccpa.requests");
        assert_eq!(d.due_at, MONDAY + 45 * DAY);
        assert_eq!(d.extended_due_at, Some(MONDAY + 90 * DAY));
        // Two weeks of five working days: the Monday two weeks on.
        assert_eq!(d.acknowledge_by, Some(MONDAY + 14 * DAY));
    }

    #[test]
    fn ccpa_opt_outs_within_15_business_days() {
        let rights = rights();
        let d = rights
            .deadline(Regime::Ccpa, None, RequestKind::OptOut, MONDAY)
            .unwrap();
        assert_eq!(d.rule.id, "ccpa.opt_out");
        assert_eq!(d.due_at, MONDAY + 21 * DAY);
        assert_eq!(d.extended_due_at, None);
    }

    #[test]
    fn us_state_laws_45_days_extendable_by_45() {
        let (id, due, extended) = erasure(Regime::UsState, Some("VA"), MONDAY);
        assert_eq!(id, "us_state.requests");
        assert_eq!(
            (due, extended),
            (MONDAY + 45 * DAY, Some(MONDAY + 90 * DAY))
        );
    }

    #[test]
    fn colorado_opt_outs_within_15_days_and_an_unknown_state_gets_them_too() {
        let rights = rights();
        for region in [Some("CO"), None] {
            let d = rights
                .deadline(Regime::UsState, region, RequestKind::OptOut, MONDAY)
                .unwrap();
            assert_eq!(d.rule.id, "us_state.co.opt_out", "{region:?}");
            assert_eq!(d.due_at, MONDAY + 15 * DAY);
        }
        let virginia = rights
            .deadline(Regime::UsState, Some("VA"), RequestKind::OptOut, MONDAY)
            .unwrap();
        assert_eq!(virginia.rule.id, "us_state.requests");
    }

    #[test]
    fn the_rest_of_the_us_is_answered_as_the_state_laws_ask() {
        let (id, due, extended) = erasure(Regime::Us, Some("FL"), MONDAY);
        assert_eq!(id, "us.requests");
        assert_eq!(
            (due, extended),
            (MONDAY + 45 * DAY, Some(MONDAY + 90 * DAY))
        );
    }

    #[test]
    fn pipeda_30_days_extendable_by_30_and_quebec_30_days_without() {
        let (id, due, extended) = erasure(Regime::Casl, Some("ON"), MONDAY);
        assert_eq!(id, "casl.pipeda.requests");
        assert_eq!(
            (due, extended),
            (MONDAY + 30 * DAY, Some(MONDAY + 60 * DAY))
        );
        for region in [Some("QC"), Some("qc"), None] {
            let (id, due, extended) = erasure(Regime::Casl, region, MONDAY);
            assert_eq!(id, "casl.qc.requests", "{region:?}");
            assert_eq!((due, extended), (MONDAY + 30 * DAY, None));
        }
    }

    #[test]
    fn lgpd_15_days() {
        let (id, due, extended) = erasure(Regime::Lgpd, None, MONDAY);
        assert_eq!(id, "lgpd.requests");
        assert_eq!((due, extended), (MONDAY + 15 * DAY, None));
    }

    #[test]
    fn an_unknown_place_or_regime_gets_the_strictest_deadline() {
        let (id, due, extended) = erasure(Regime::Strictest, None, MONDAY);
        assert_eq!(id, "strictest.requests");
        assert_eq!((due, extended), (MONDAY + 15 * DAY, None));
        let rights = rights();
        let stored = rights
            .deadline_for_key("martian", None, RequestKind::Access, MONDAY)
            .unwrap();
        assert_eq!(stored.rule.id, "strictest.requests");
        // No deadline of any regime is earlier, nor allows less extension.
        for regime in Regime::ALL {
            for kind in RequestKind::ALL {
                let d = rights.deadline(regime, None, kind, MONDAY).unwrap();
                assert!(d.due_at >= stored.due_at, "{regime} {kind}");
            }
        }
    }

    #[test]
    fn every_regime_and_kind_has_a_deadline_with_a_source() {
        let rights = rights();
        for regime in Regime::ALL {
            for kind in RequestKind::ALL {
                let d = rights.deadline(regime, None, kind, MONDAY).unwrap();
                assert!(!d.rule.source.is_empty());
                assert!(d.due_at > MONDAY);
            }
        }
    }

    #[test]
    fn business_days_skip_weekends() {
        let friday = at(2026, 3, 6);
        assert_eq!(Span::BusinessDays(1).after(friday), at(2026, 3, 9));
        assert_eq!(Span::BusinessDays(5).after(MONDAY), at(2026, 3, 9));
        assert_eq!(Span::BusinessDays(0).after(MONDAY), MONDAY);
        assert_eq!(Span::Days(1).after(i64::MAX - 1), i64::MAX);
    }

    #[test]
    fn bad_rows_are_refused() {
        let row = |extra: &str| {
            format!(
                "[[deadline]]\nid = \"strictest\"\nregimes = [\"strictest\"]\nwithin = {{ days = 1 }}\n{extra}"
            )
        };
        assert_eq!(
            Rights::parse(&row("source = \"\"\n")).map_err(|e| e.code()),
            Err("rights.row")
        );
        assert!(Rights::parse(&row("source = \"s\"\n")).is_ok());
        assert!(Rights::parse(&row("source = \"s\"\nwithin_days = 3\n")).is_err());
        let no_strictest = "[[deadline]]\nid = \"g\"\nregimes = [\"gdpr\"]\nwithin = { days = 1 }\nsource = \"s\"\n";
        assert_eq!(
            Rights::parse(no_strictest).map_err(|e| e.code()),
            Err("rights.row")
        );
    }

    #[test]
    fn the_printed_table_names_every_row_and_its_source() {
        let rights = rights();
        let table = rights.table();
        for r in &rights.rules {
            assert!(table.contains(&r.id), "{}", r.id);
        }
        assert!(table.contains("1 month"));
        assert!(table.contains("GDPR Art. 12(3)"));
    }
}
