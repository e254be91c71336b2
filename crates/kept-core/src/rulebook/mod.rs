//! The rulebook: the rules of each legal regime as data (`rulebook.toml`, compiled in), each row
//! citing its source, and the effective rulebook a manifest makes of it by tightening rows.
//! Which rows apply to a use is decided here; what they mean for one subject is `decision`'s job.

use crate::UnixMillis;
use crate::manifest::{LegalBasis, Manifest, covers};
use crate::regime::{Regime, US_STATES_WITH_LAW};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The rulebook's source, as shipped.
pub const RULEBOOK_TOML: &str = include_str!("rulebook.toml");

/// Why a purpose is pursued, as the law sorts it. Derived from the purpose key's fideslang
/// branch; a manifest's own keys (`loyalty.rewards`) are `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PurposeClass {
    Essential,
    /// Direct marketing messages.
    Marketing,
    /// Targeted advertising, sale and sharing of personal data.
    Advertising,
    /// Profiling and personalisation.
    Personalize,
    Analytics,
    Other,
}

impl PurposeClass {
    pub const ALL: [PurposeClass; 6] = [
        PurposeClass::Essential,
        PurposeClass::Marketing,
        PurposeClass::Advertising,
        PurposeClass::Personalize,
        PurposeClass::Analytics,
        PurposeClass::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PurposeClass::Essential => "essential",
            PurposeClass::Marketing => "marketing",
            PurposeClass::Advertising => "advertising",
            PurposeClass::Personalize => "personalize",
            PurposeClass::Analytics => "analytics",
            PurposeClass::Other => "other",
        }
    }

    /// The class of a purpose key, from its fideslang branch.
    pub fn of(purpose: &str) -> PurposeClass {
        let within = |branch: &str| crate::manifest::is_within(purpose, branch);
        if within("essential") || within("operations") || within("finance") {
            PurposeClass::Essential
        } else if within("marketing.advertising") || within("third_party_sharing") {
            PurposeClass::Advertising
        } else if within("marketing") {
            PurposeClass::Marketing
        } else if within("personalize") || within("functional") {
            PurposeClass::Personalize
        } else if within("analytics") || within("train_ai_system") {
            PurposeClass::Analytics
        } else {
            PurposeClass::Other
        }
    }

    /// Direct marketing in the sense of GDPR Art. 21(2): an objection to one such purpose
    /// reaches all of them.
    pub fn is_direct_marketing(self) -> bool {
        matches!(self, PurposeClass::Marketing | PurposeClass::Advertising)
    }
}

impl fmt::Display for PurposeClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a row asks for, before the manifest's declared basis is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleRequirement {
    /// Whatever the legal basis the manifest declares for the purpose asks for.
    DeclaredBasis,
    None,
    OptOut,
    OptIn,
    OptInWritten,
}

impl RuleRequirement {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleRequirement::DeclaredBasis => "declared_basis",
            RuleRequirement::None => "none",
            RuleRequirement::OptOut => "opt_out",
            RuleRequirement::OptIn => "opt_in",
            RuleRequirement::OptInWritten => "opt_in_written",
        }
    }
}

/// How much a use needs from the person, from least to most. `Ord` is strictness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Nothing: a contract or a legal obligation carries the use.
    None,
    /// Allowed unless the person opted out, withdrew or objected.
    OptOut,
    /// A given consent.
    OptIn,
    /// A given consent collected in writing (TCPA prior express written consent).
    OptInWritten,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::OptOut => "opt_out",
            Level::OptIn => "opt_in",
            Level::OptInWritten => "opt_in_written",
        }
    }

    /// What a declared legal basis asks for.
    pub fn of_basis(basis: LegalBasis) -> Level {
        match basis {
            LegalBasis::Consent => Level::OptIn,
            LegalBasis::LegitimateInterests | LegalBasis::PublicTask => Level::OptOut,
            LegalBasis::Contract | LegalBasis::LegalObligation | LegalBasis::VitalInterests => {
                Level::None
            }
        }
    }
}

/// Something an allowed use must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Obligation {
    IncludeUnsubscribeLink,
    IncludeOneClickUnsubscribe,
    IncludePostalAddress,
    IdentifySender,
    HonourStopReply,
    #[serde(rename = "honour_unsubscribe_within_2_days")]
    HonourUnsubscribeWithin2Days,
    #[serde(rename = "honour_opt_out_within_10_business_days")]
    HonourOptOutWithin10BusinessDays,
    #[serde(rename = "honour_opt_out_within_15_business_days")]
    HonourOptOutWithin15BusinessDays,
}

impl Obligation {
    pub const ALL: [Obligation; 8] = [
        Obligation::IncludeUnsubscribeLink,
        Obligation::IncludeOneClickUnsubscribe,
        Obligation::IncludePostalAddress,
        Obligation::IdentifySender,
        Obligation::HonourStopReply,
        Obligation::HonourUnsubscribeWithin2Days,
        Obligation::HonourOptOutWithin10BusinessDays,
        Obligation::HonourOptOutWithin15BusinessDays,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Obligation::IncludeUnsubscribeLink => "include_unsubscribe_link",
            Obligation::IncludeOneClickUnsubscribe => "include_one_click_unsubscribe",
            Obligation::IncludePostalAddress => "include_postal_address",
            Obligation::IdentifySender => "identify_sender",
            Obligation::HonourStopReply => "honour_stop_reply",
            Obligation::HonourUnsubscribeWithin2Days => "honour_unsubscribe_within_2_days",
            Obligation::HonourOptOutWithin10BusinessDays => {
                "honour_opt_out_within_10_business_days"
            }
            Obligation::HonourOptOutWithin15BusinessDays => {
                "honour_opt_out_within_15_business_days"
            }
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of obligations, small enough to copy into every decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Obligations(u16);

impl Obligations {
    pub const NONE: Obligations = Obligations(0);

    pub fn insert(&mut self, o: Obligation) {
        self.0 |= o.bit();
    }

    pub fn union(self, other: Obligations) -> Obligations {
        Obligations(self.0 | other.0)
    }

    pub fn contains(self, o: Obligation) -> bool {
        self.0 & o.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Obligation> {
        Obligation::ALL
            .into_iter()
            .filter(move |o| self.contains(*o))
    }
}

impl FromIterator<Obligation> for Obligations {
    fn from_iter<T: IntoIterator<Item = Obligation>>(iter: T) -> Self {
        let mut set = Obligations::NONE;
        for o in iter {
            set.insert(o);
        }
        set
    }
}

impl Serialize for Obligations {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter().map(Obligation::as_str))
    }
}

/// CASL implied consent: how long it lasts after a purchase and after an inquiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImpliedConsent {
    pub purchase_months: u32,
    pub inquiry_months: u32,
}

/// What a consent's refresh interval counts from.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum RefreshFrom {
    /// When the consent was given. `Ord`: the stricter of the two comes first.
    #[default]
    Consent,
    /// The later of when the consent was given and the subject's last interaction with the
    /// company (4 CCR 904-3 Rule 7.08: "without interaction"). What counts as an interaction:
    /// `decision::SubjectState::last_interaction`.
    LastInteraction,
}

/// Where a row comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RuleOrigin {
    /// The shipped rulebook.
    Law,
    /// A manifest `policy.tighten` row, for the purposes `purpose` covers (`marketing.*`).
    Manifest { purpose: String },
}

/// One row of the rulebook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub id: String,
    pub regimes: Vec<Regime>,
    /// US state codes; empty = every state. Only `us_state` rows use it.
    pub regions: Vec<String>,
    /// Empty = every class.
    pub classes: Vec<PurposeClass>,
    /// Empty = every channel, and uses through no channel.
    pub channels: Vec<String>,
    /// Applies only when a sensitive data category is involved.
    pub sensitive: bool,
    pub requirement: RuleRequirement,
    pub soft_opt_in: bool,
    pub implied: Option<ImpliedConsent>,
    pub refresh_months: Option<u32>,
    /// What `refresh_months` counts from.
    pub refresh_from: RefreshFrom,
    /// From when a GPC signal counts as an opt-out (`i64::MIN` = always).
    pub gpc_from: Option<UnixMillis>,
    pub objection_absolute: bool,
    pub obligations: Obligations,
    pub source: String,
    pub note: Option<String>,
    /// The row's date was reported by secondary sources only.
    pub verify: bool,
    pub origin: RuleOrigin,
}

impl Rule {
    /// Whether this row applies to a use of `purpose` (of `class`) through `channel` for a
    /// subject at `place`. `sensitive`: a sensitive category is involved.
    pub fn applies(
        &self,
        place: Place,
        purpose: &str,
        class: PurposeClass,
        channel: Option<&str>,
        sensitive: bool,
    ) -> bool {
        if !self.regimes.contains(&place.regime) {
            return false;
        }
        // An unknown US state gets every state's rule: failing closed.
        if !self.regions.is_empty()
            && place
                .region
                .is_some_and(|r| !self.regions.iter().any(|x| x == r))
        {
            return false;
        }
        if !self.classes.is_empty() && !self.classes.contains(&class) {
            return false;
        }
        if let RuleOrigin::Manifest { purpose: pattern } = &self.origin
            && !covers(pattern, purpose)
        {
            return false;
        }
        if !self.channels.is_empty()
            && !channel.is_some_and(|c| self.channels.iter().any(|x| x == c))
        {
            return false;
        }
        !self.sensitive || sensitive
    }

    /// The requirement in words, with its extras, for the printed table.
    pub fn requirement_text(&self) -> String {
        let mut text = self.requirement.as_str().to_owned();
        if self.soft_opt_in {
            text.push_str("; soft opt-in");
        }
        if let Some(i) = self.implied {
            text.push_str(&format!(
                "; implied {} months after a purchase, {} after an inquiry",
                i.purchase_months, i.inquiry_months
            ));
        }
        if let Some(m) = self.refresh_months {
            match self.refresh_from {
                RefreshFrom::Consent => text.push_str(&format!("; refresh after {m} months")),
                RefreshFrom::LastInteraction => {
                    text.push_str(&format!("; refresh after {m} months without interaction"))
                }
            }
        }
        if let Some(from) = self.gpc_from {
            if from == i64::MIN {
                text.push_str("; GPC is an opt-out");
            } else {
                text.push_str(&format!("; GPC is an opt-out from {}", date_text(from)));
            }
        }
        if self.objection_absolute {
            text.push_str("; objection absolute");
        }
        text
    }
}

fn date_text(at: UnixMillis) -> String {
    chrono::DateTime::from_timestamp_millis(at)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| at.to_string())
}

/// Where a subject is, as far as the rulebook cares: the regime, and for `us_state` the state
/// (`None` when the state is unknown, so every state's rules apply).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Place {
    pub regime: Regime,
    pub region: Option<&'static str>,
}

impl Place {
    /// Every place, in a fixed order: the index of a place here is its id.
    pub fn all() -> Vec<Place> {
        let mut places: Vec<Place> = Regime::ALL
            .into_iter()
            .filter(|r| *r != Regime::UsState)
            .map(|regime| Place {
                regime,
                region: None,
            })
            .collect();
        places.push(Place {
            regime: Regime::UsState,
            region: None,
        });
        places.extend(US_STATES_WITH_LAW.iter().map(|s| Place {
            regime: Regime::UsState,
            region: Some(*s),
        }));
        places
    }

    /// The place of a subject located at `country` and `region` (see `Regime::resolve`).
    pub fn resolve(country: Option<&str>, region: Option<&str>) -> Place {
        let regime = Regime::resolve(country, region);
        let region = if regime == Regime::UsState {
            region.and_then(|r| {
                let r = r.trim().to_ascii_uppercase();
                US_STATES_WITH_LAW.iter().copied().find(|s| *s == r)
            })
        } else {
            None
        };
        Place { regime, region }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.region {
            Some(r) => write!(f, "{}/{}", self.regime, r),
            None => write!(f, "{}", self.regime),
        }
    }
}

/// The rulebook could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulebookError {
    #[error("rulebook is not valid: {0}")]
    Parse(String),
    #[error("rulebook row `{id}`: {problem}")]
    Row { id: String, problem: String },
}

impl RulebookError {
    pub fn code(&self) -> &'static str {
        match self {
            RulebookError::Parse(_) => "rulebook.parse",
            RulebookError::Row { .. } => "rulebook.row",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    rule: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: String,
    regimes: Vec<Regime>,
    #[serde(default)]
    regions: Vec<String>,
    #[serde(default)]
    classes: Vec<PurposeClass>,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    sensitive: bool,
    requirement: RuleRequirement,
    #[serde(default)]
    soft_opt_in: bool,
    implied: Option<ImpliedConsent>,
    refresh_months: Option<u32>,
    #[serde(default)]
    refresh_from: RefreshFrom,
    gpc_from: Option<String>,
    objection: Option<String>,
    #[serde(default)]
    obligations: Vec<Obligation>,
    source: String,
    note: Option<String>,
    #[serde(default)]
    verify: bool,
}

/// The law as shipped: rows in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rulebook {
    pub rules: Vec<Rule>,
}

impl Rulebook {
    /// The rulebook compiled into the binary.
    pub fn builtin() -> Result<Rulebook, RulebookError> {
        Rulebook::parse(RULEBOOK_TOML)
    }

    /// Reads a rulebook; every row must have an id (unique), regimes and a source.
    pub fn parse(source: &str) -> Result<Rulebook, RulebookError> {
        let raw: RawFile =
            toml::from_str(source).map_err(|e| RulebookError::Parse(e.message().to_owned()))?;
        let mut rules = Vec::with_capacity(raw.rule.len());
        for r in raw.rule {
            let row_error = |problem: &str| RulebookError::Row {
                id: r.id.clone(),
                problem: problem.to_owned(),
            };
            if rules.iter().any(|x: &Rule| x.id == r.id) {
                return Err(row_error("the id is used twice"));
            }
            if r.regimes.is_empty() {
                return Err(row_error("no regime"));
            }
            if r.refresh_from != RefreshFrom::Consent && r.refresh_months.is_none() {
                return Err(row_error("`refresh_from` without `refresh_months`"));
            }
            if r.source.trim().is_empty() {
                return Err(row_error("no source"));
            }
            if !r.regions.is_empty() && r.regimes != [Regime::UsState] {
                return Err(row_error("regions are only for `us_state` rows"));
            }
            let gpc_from = match r.gpc_from.as_deref() {
                None => None,
                Some("always") => Some(i64::MIN),
                Some(date) => Some(
                    chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
                        .ok()
                        .and_then(|d| d.and_hms_opt(0, 0, 0))
                        .map(|d| d.and_utc().timestamp_millis())
                        .ok_or_else(|| row_error("`gpc_from` is not a date (YYYY-MM-DD)"))?,
                ),
            };
            let objection_absolute = match r.objection.as_deref() {
                None => false,
                Some("absolute") => true,
                Some(_) => return Err(row_error("`objection` can only be \"absolute\"")),
            };
            rules.push(Rule {
                id: r.id,
                regimes: r.regimes,
                regions: r.regions,
                classes: r.classes,
                channels: r.channels,
                sensitive: r.sensitive,
                requirement: r.requirement,
                soft_opt_in: r.soft_opt_in,
                implied: r.implied,
                refresh_months: r.refresh_months,
                refresh_from: r.refresh_from,
                gpc_from,
                objection_absolute,
                obligations: r.obligations.into_iter().collect(),
                source: r.source,
                note: r.note,
                verify: r.verify,
                origin: RuleOrigin::Law,
            });
        }
        Ok(Rulebook { rules })
    }
}

/// The rulebook a manifest runs under: the law's rows, then one opt-in row per
/// `policy.tighten` entry. Rows only ever add requirements, so a tightening cannot loosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveRulebook {
    rules: Vec<Rule>,
}

/// One printable row of `kept rules`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleRow {
    pub id: String,
    pub regime: String,
    pub purposes: String,
    pub channels: String,
    pub data: String,
    pub requirement: String,
    pub obligations: String,
    pub source: String,
}

impl EffectiveRulebook {
    pub fn new(rulebook: &Rulebook, manifest: &Manifest) -> EffectiveRulebook {
        let mut rules = rulebook.rules.clone();
        for (i, t) in manifest.policy.tighten.iter().enumerate() {
            rules.push(Rule {
                id: format!("manifest.tighten.{}", i + 1),
                regimes: t.regime.map_or_else(|| Regime::ALL.to_vec(), |r| vec![r]),
                regions: Vec::new(),
                classes: Vec::new(),
                channels: t.channel.iter().cloned().collect(),
                sensitive: false,
                requirement: RuleRequirement::OptIn,
                soft_opt_in: false,
                implied: None,
                refresh_months: None,
                refresh_from: RefreshFrom::Consent,
                gpc_from: None,
                objection_absolute: false,
                obligations: Obligations::NONE,
                source: format!("manifest policy.tighten: {}", t.reason),
                note: None,
                verify: false,
                origin: RuleOrigin::Manifest {
                    purpose: t.purpose.clone(),
                },
            });
        }
        EffectiveRulebook { rules }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn rule(&self, id: RuleId) -> Option<&Rule> {
        self.rules.get(usize::from(id.0))
    }

    pub fn find(&self, id: &str) -> Option<RuleId> {
        self.rules
            .iter()
            .position(|r| r.id == id)
            .and_then(|i| u16::try_from(i).ok())
            .map(RuleId)
    }

    /// The table `kept rules` prints, one row per rule.
    pub fn rows(&self) -> Vec<RuleRow> {
        let list = |items: Vec<String>| {
            if items.is_empty() {
                "*".to_owned()
            } else {
                items.join(", ")
            }
        };
        self.rules
            .iter()
            .map(|r| {
                let mut regime = list(r.regimes.iter().map(|x| x.to_string()).collect());
                if !r.regions.is_empty() {
                    regime = format!("{regime} ({})", r.regions.join(", "));
                }
                let purposes = match &r.origin {
                    RuleOrigin::Manifest { purpose } => purpose.clone(),
                    RuleOrigin::Law => list(r.classes.iter().map(|c| c.to_string()).collect()),
                };
                RuleRow {
                    id: r.id.clone(),
                    regime,
                    purposes,
                    channels: list(r.channels.clone()),
                    data: if r.sensitive { "sensitive" } else { "any" }.to_owned(),
                    requirement: r.requirement_text(),
                    obligations: r
                        .obligations
                        .iter()
                        .map(Obligation::as_str)
                        .collect::<Vec<_>>()
                        .join(", "),
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
        let header = RuleRow {
            id: "id".into(),
            regime: "regime".into(),
            purposes: "purposes".into(),
            channels: "channels".into(),
            data: "data".into(),
            requirement: "requirement".into(),
            obligations: "obligations".into(),
            source: "source".into(),
        };
        let rows: Vec<RuleRow> = std::iter::once(header).chain(self.rows()).collect();
        let cells = |r: &RuleRow| {
            [
                r.id.clone(),
                r.regime.clone(),
                r.purposes.clone(),
                r.channels.clone(),
                r.data.clone(),
                r.requirement.clone(),
                r.obligations.clone(),
                r.source.clone(),
            ]
        };
        aligned_table(&rows.iter().map(cells).collect::<Vec<_>>())
    }
}

/// Rows of cells as a text table: each column as wide as its widest cell, two spaces between
/// columns, no trailing blanks. `kept rules` prints the rules and the request deadlines so.
pub fn aligned_table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// A row's position in the effective rulebook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct RuleId(pub u16);

/// Calendar months after `at`, for expiries; saturates far in the future. Shared by the decision
/// and the index so both read an expiry the same way.
pub fn add_months(at: UnixMillis, months: u32) -> UnixMillis {
    chrono::DateTime::from_timestamp_millis(at)
        .and_then(|d| d.checked_add_months(chrono::Months::new(months)))
        .map_or(i64::MAX, |d| d.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_rulebook_parses_and_every_regime_has_a_declared_basis_row() {
        let book = Rulebook::builtin().unwrap();
        for regime in Regime::ALL {
            assert!(
                book.rules
                    .iter()
                    .any(|r| r.requirement == RuleRequirement::DeclaredBasis
                        && r.regimes.contains(&regime)),
                "{regime} has no declared-basis row"
            );
        }
    }

    #[test]
    fn obligation_names_match_their_serialised_form() {
        for o in Obligation::ALL {
            let json = serde_json::to_value(o).unwrap();
            assert_eq!(json, serde_json::json!(o.as_str()));
        }
    }

    #[test]
    fn classes_follow_fideslang_branches() {
        assert_eq!(
            PurposeClass::of("marketing.communications"),
            PurposeClass::Marketing
        );
        assert_eq!(
            PurposeClass::of("marketing.advertising.third_party.targeted"),
            PurposeClass::Advertising
        );
        assert_eq!(
            PurposeClass::of("essential.service.notifications.sms"),
            PurposeClass::Essential
        );
        assert_eq!(
            PurposeClass::of("personalize.content.profiled"),
            PurposeClass::Personalize
        );
        assert_eq!(PurposeClass::of("loyalty.rewards"), PurposeClass::Other);
        assert_eq!(PurposeClass::of("marketingfoo"), PurposeClass::Other);
    }

    #[test]
    fn bad_rows_are_refused() {
        let no_source =
            "[[rule]]\nid = \"x\"\nregimes = [\"gdpr\"]\nrequirement = \"opt_in\"\nsource = \"\"\n";
        assert_eq!(
            Rulebook::parse(no_source).map_err(|e| e.code()),
            Err("rulebook.row")
        );
        let bad_date = "[[rule]]\nid = \"x\"\nregimes = [\"gdpr\"]\nrequirement = \"opt_in\"\ngpc_from = \"soon\"\nsource = \"s\"\n";
        assert!(Rulebook::parse(bad_date).is_err());
        assert!(Rulebook::parse("[[rule]]\nid = 1\n").is_err());
    }

    #[test]
    fn months_are_calendar_months() {
        let jan31 = chrono::NaiveDate::from_ymd_opt(2024, 1, 31)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis();
        let feb29 = chrono::NaiveDate::from_ymd_opt(2024, 2, 29)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis();
        assert_eq!(add_months(jan31, 1), feb29);
        assert_eq!(add_months(i64::MAX - 1, 1), i64::MAX);
    }
}
