//! `kept lint`: checks a loaded manifest for broken references, missing owners and retention,
//! changed notice texts, uses of data that no notice promised, and the organisation's own
//! rules. Every finding has a stable code and points at the line it is about.

mod datasets;

use crate::decision::{Compiled, EMAIL_CATEGORY, SoftOptInNever};
use crate::fideslang;
use crate::manifest::{
    KNOWN_CHANNELS, LegalBasis, Loaded, Manifest, Purpose, RegimeKey, child_path, covers,
    entry_path, is_within, item_path, promises,
};
use crate::regime::Regime;
use crate::rulebook::Level;
use serde::Serialize;
use std::collections::BTreeMap;

/// A notice hash as recorded earlier (in the database), to catch a text changed without a
/// version bump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordedNotice {
    pub notice_id: String,
    pub version: u32,
    pub hash: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Fails `kept lint`.
    Error,
    /// Reported; fails `kept lint` only with `--deny-warnings`.
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One problem in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable machine code, see [`codes`].
    pub code: &'static str,
    pub severity: Severity,
    pub message: String,
    /// The key path the finding is about (`systems.sms_blaster.uses[0]`).
    pub path: String,
    /// The manifest file.
    pub file: String,
    pub line: Option<u32>,
    pub column: Option<u32>,
}

/// The stable finding codes.
pub mod codes {
    /// A reference to a team, purpose, channel, topic, notice or collection point that the
    /// manifest does not declare.
    pub const DANGLING_REFERENCE: &str = "manifest.dangling_reference";
    /// A data category that is neither a fideslang key nor declared under `[categories]`.
    pub const CATEGORY_UNKNOWN: &str = "category.unknown";
    /// A purpose key that is not a fideslang data use and is not marked `custom = true`.
    pub const PURPOSE_UNKNOWN: &str = "purpose.unknown";
    pub const PURPOSE_NO_OWNER: &str = "purpose.no_owner";
    pub const PURPOSE_NO_RETENTION: &str = "purpose.no_retention";
    pub const PURPOSE_NO_LEGAL_BASIS: &str = "purpose.no_legal_basis";
    /// Some regimes have no legal basis and there is no `default` (warning).
    pub const PURPOSE_LEGAL_BASIS_INCOMPLETE: &str = "purpose.legal_basis_incomplete";
    /// A `legal_basis` table names some regimes of one family (the US ones: `ccpa`,
    /// `us_state`, `us`; or `gdpr` and `uk_gdpr`) and leaves the others to a `default` that
    /// asks for something else (warning): e.g. `us = "legitimate_interests"` while California
    /// and the states with a privacy law fall to `default = "consent"`.
    pub const PURPOSE_LEGAL_BASIS_DEFAULT_CONTRADICTS: &str =
        "purpose.legal_basis_default_contradicts";
    /// `soft_opt_in = true` on a purpose it can never apply to (warning): no email channel, no
    /// regime whose rules allow it, or no purchase collection point collecting an email
    /// address under a notice that promises the purpose by email.
    pub const PURPOSE_SOFT_OPT_IN_NEVER_APPLIES: &str = "purpose.soft_opt_in_never_applies";
    /// `sale_or_sharing = true` on a purpose necessary for the service (`essential`,
    /// `operations`, `finance`): uses necessary for the service pass every request's gate, so
    /// the opt-out of sale or sharing would never stop it.
    pub const PURPOSE_SALE_OR_SHARING_ESSENTIAL: &str = "purpose.sale_or_sharing_essential";
    pub const SYSTEM_NO_OWNER: &str = "system.no_owner";
    /// A system uses a category for a purpose (and channel) that no notice covering that
    /// category promises.
    pub const SYSTEM_USE_NOT_PROMISED: &str = "system.use_not_promised";
    /// A notice's text or promises differ from the hash recorded for the same id and version.
    pub const NOTICE_CHANGED_WITHOUT_VERSION_BUMP: &str = "notice.changed_without_version_bump";
    /// A later version of the notice was already recorded (warning).
    pub const NOTICE_VERSION_BEHIND: &str = "notice.version_behind";
    /// Two notices promise the same purpose on the same channel equally closely and no topic
    /// names which one is shown, so the choice falls to the order of their ids (warning).
    pub const NOTICE_AMBIGUOUS: &str = "notice.ambiguous";
    /// A topic names a notice that does not promise the topic's purpose on its channels.
    pub const TOPIC_NOTICE_NOT_PROMISING: &str = "topic.notice_not_promising";
    /// A notice has no text for one of the organisation's locales (warning).
    pub const NOTICE_MISSING_LOCALE: &str = "notice.missing_locale";
    /// No collection point shows the notice, so nothing is collected under it (warning).
    pub const NOTICE_UNUSED: &str = "notice.unused";
    /// A collection point collects a category its notice does not cover.
    pub const COLLECTION_POINT_CATEGORY_NOT_IN_NOTICE: &str =
        "collection_point.category_not_in_notice";
    /// A use or a notice breaks one of the manifest's `[[rules.forbid]]`.
    pub const RULE_FORBIDDEN_USE: &str = "rule.forbidden_use";
    /// A rule or policy pattern matches no known key, so it can never apply (warning).
    pub const RULE_UNKNOWN_KEY: &str = "rule.unknown_key";
    /// A channel the rulebook does not know; decisions on it fail closed (warning).
    pub const CHANNEL_UNKNOWN: &str = "channel.unknown";
    pub const TEAM_NO_OWNERS: &str = "team.no_owners";
    pub const ORGANISATION_NO_LOCALES: &str = "organisation.no_locales";
    /// A purpose or topic has no name and description in one of the organisation's other
    /// locales; the preference center shows it in the first (warning).
    pub const TRANSLATION_MISSING: &str = "translation.missing";
    /// A translation for a locale the organisation does not list, shown to no one (warning).
    pub const TRANSLATION_UNKNOWN_LOCALE: &str = "translation.unknown_locale";
    /// A dataset column holds a category no notice covers.
    pub const DATASET_CATEGORY_NOT_IN_NOTICE: &str = "dataset.category_not_in_notice";
    /// A dataset table that no identity column reaches through the declared references.
    pub const DATASET_TABLE_UNREACHABLE: &str = "dataset.table_unreachable";
    /// A column kept on erasure for a purpose whose legal basis is neither a legal obligation
    /// nor a contract.
    pub const DATASET_KEEP_WITHOUT_OBLIGATION: &str = "dataset.keep_without_obligation";
    /// Erasure deletes a table's rows but keeps child rows that reference them.
    pub const DATASET_DELETE_LEAVES_CHILDREN: &str = "dataset.delete_leaves_children";
    /// Erasure nulls or hashes a key that kept child rows reference.
    pub const DATASET_KEY_ERASED: &str = "dataset.key_erased";
    /// A system's webhook names no `secret_env`: Kept signs every delivery, so it sends the
    /// system nothing, not even the obligations of data subject requests (warning).
    pub const WEBHOOK_UNSIGNED: &str = "webhook.unsigned";
}

/// Checks a manifest. `recorded` are the notice hashes stored earlier (empty without a
/// database). Findings come back in file order.
pub fn lint(loaded: &Loaded, recorded: &[RecordedNotice]) -> Vec<Finding> {
    let mut linter = Linter {
        loaded,
        manifest: &loaded.manifest,
        findings: Vec::new(),
    };
    linter.organisation();
    linter.teams_and_channels();
    linter.purposes();
    linter.topics();
    linter.notices(recorded);
    linter.ambiguous_notices();
    linter.collection_points();
    linter.systems();
    linter.rules_and_policy();
    linter.consent_categories();
    linter.datasets();
    let mut findings = linter.findings;
    findings.sort_by_key(|f| (f.line.is_none(), f.line, f.column, f.code));
    findings
}

/// Counts of findings by severity.
pub fn count(findings: &[Finding]) -> (usize, usize) {
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    (errors, findings.len() - errors)
}

struct Linter<'a> {
    loaded: &'a Loaded,
    manifest: &'a Manifest,
    findings: Vec<Finding>,
}

impl Linter<'_> {
    fn report(&mut self, code: &'static str, severity: Severity, path: String, message: String) {
        let at = self.loaded.positions.get(&path);
        self.findings.push(Finding {
            code,
            severity,
            message,
            file: self.loaded.positions.file.clone(),
            line: at.map(|a| a.line),
            column: at.map(|a| a.column),
            path,
        });
    }

    fn error(&mut self, code: &'static str, path: String, message: String) {
        self.report(code, Severity::Error, path, message);
    }

    fn warning(&mut self, code: &'static str, path: String, message: String) {
        self.report(code, Severity::Warning, path, message);
    }

    fn dangling<'k>(
        &mut self,
        path: String,
        what: &str,
        section: &str,
        key: &str,
        known: impl Iterator<Item = &'k String>,
    ) {
        let hint = did_you_mean(key, known.map(String::as_str));
        self.error(
            codes::DANGLING_REFERENCE,
            path,
            format!("{what} `{key}` is not declared under `[{section}]`{hint}"),
        );
    }

    fn check_team(&mut self, path: String, team: &str) {
        if !self.manifest.teams.contains_key(team) {
            self.dangling(path, "team", "teams", team, self.manifest.teams.keys());
        }
    }

    fn check_purpose(&mut self, path: String, purpose: &str) {
        if !self.manifest.purposes.contains_key(purpose) {
            self.dangling(
                path,
                "purpose",
                "purposes",
                purpose,
                self.manifest.purposes.keys(),
            );
        }
    }

    fn check_channel(&mut self, path: String, channel: &str) {
        if !self.manifest.channels.contains_key(channel) {
            self.dangling(
                path,
                "channel",
                "channels",
                channel,
                self.manifest.channels.keys(),
            );
        }
    }

    /// Reports an unknown category; true when the category is known.
    fn check_category(&mut self, path: String, category: &str) -> bool {
        if self.manifest.knows_category(category) {
            return true;
        }
        let known = fideslang::DATA_CATEGORIES
            .iter()
            .map(|c| c.key)
            .chain(self.manifest.categories.keys().map(String::as_str));
        let hint = did_you_mean(category, known);
        self.error(
            codes::CATEGORY_UNKNOWN,
            path,
            format!(
                "unknown data category `{category}`: not a fideslang category and not declared under `[categories]`{hint}"
            ),
        );
        false
    }

    fn organisation(&mut self) {
        if self.manifest.organisation.locales.is_empty() {
            self.error(
                codes::ORGANISATION_NO_LOCALES,
                "organisation.locales".to_owned(),
                "the organisation offers no locale; list at least one, the default first"
                    .to_owned(),
            );
        }
    }

    fn teams_and_channels(&mut self) {
        for (id, team) in &self.manifest.teams {
            if team.owners.is_empty() {
                self.warning(
                    codes::TEAM_NO_OWNERS,
                    entry_path("teams", id),
                    format!("team `{id}` has no owners; list who answers for it"),
                );
            }
        }
        for id in self.manifest.channels.keys() {
            if !KNOWN_CHANNELS.contains(&id.as_str()) {
                self.warning(
                    codes::CHANNEL_UNKNOWN,
                    entry_path("channels", id),
                    format!(
                        "channel `{id}` is not one the rulebook knows ({}); every decision on it will be denied",
                        KNOWN_CHANNELS.join(", ")
                    ),
                );
            }
        }
    }

    fn purposes(&mut self) {
        for (id, purpose) in &self.manifest.purposes {
            let base = entry_path("purposes", id);
            self.translations("purpose", id, &base, &purpose.translations);
            if fideslang::data_use(id).is_none() && !self.loaded.custom_purposes.contains(id) {
                let hint = did_you_mean(id, fideslang::DATA_USES.iter().map(|u| u.key));
                self.error(
                    codes::PURPOSE_UNKNOWN,
                    base.clone(),
                    format!(
                        "purpose `{id}` is not a fideslang data use; if it is your own, add `custom = true`{hint}"
                    ),
                );
            }
            if purpose.owner.is_empty() {
                self.error(
                    codes::PURPOSE_NO_OWNER,
                    base.clone(),
                    format!("purpose `{id}` has no owner; add `owner = \"<team>\"`"),
                );
            } else {
                self.check_team(child_path(&base, "owner"), &purpose.owner);
            }
            if purpose.retention_days == 0 {
                self.error(
                    codes::PURPOSE_NO_RETENTION,
                    base.clone(),
                    format!(
                        "purpose `{id}` has no retention; add how long its data is kept, e.g. `retention = \"2y\"`"
                    ),
                );
            }
            if purpose.legal_basis.is_empty() {
                self.error(
                    codes::PURPOSE_NO_LEGAL_BASIS,
                    base.clone(),
                    format!(
                        "purpose `{id}` has no legal basis; add e.g. `legal_basis = \"consent\"`"
                    ),
                );
            } else if !purpose.legal_basis.contains_key(&RegimeKey::Default) {
                let missing: Vec<&str> = Regime::ALL
                    .iter()
                    .filter(|r| !purpose.legal_basis.contains_key(&RegimeKey::Regime(**r)))
                    .map(|r| r.as_str())
                    .collect();
                if !missing.is_empty() {
                    self.warning(
                        codes::PURPOSE_LEGAL_BASIS_INCOMPLETE,
                        base.clone(),
                        format!(
                            "purpose `{id}` has no legal basis for {} and no `default`; decisions there will be denied",
                            backticked(&missing)
                        ),
                    );
                }
            }
            self.legal_basis_families(id, &base, purpose);
            for (i, other) in purpose.compatible_with.iter().enumerate() {
                self.check_purpose(item_path(&child_path(&base, "compatible_with"), i), other);
            }
        }
        self.soft_opt_in();
        self.sale_or_sharing();
    }

    /// A purpose declared a sale or sharing that is also necessary for the service: the
    /// opt-out's gate leaves necessary uses alone, so the declaration would promise an opt-out
    /// that never happens.
    fn sale_or_sharing(&mut self) {
        for (id, purpose) in &self.manifest.purposes {
            if purpose.sale_or_sharing
                && crate::rulebook::PurposeClass::of(id) == crate::rulebook::PurposeClass::Essential
            {
                self.error(
                    codes::PURPOSE_SALE_OR_SHARING_ESSENTIAL,
                    child_path(&entry_path("purposes", id), "sale_or_sharing"),
                    format!(
                        "purpose `{id}` is declared `sale_or_sharing`, but it is necessary for the service (its key is under `essential`, `operations` or `finance`), and necessary uses pass an opt-out of sale or sharing; give the sale or sharing a purpose of its own"
                    ),
                );
            }
        }
    }

    /// Regimes of one family left to a `default` that asks for another level than the ones
    /// the table names: most likely a regime forgotten, as `us` alone does not reach
    /// California or the states with a privacy law.
    fn legal_basis_families(&mut self, id: &str, base: &str, purpose: &Purpose) {
        let Some(default) = purpose.legal_basis.get(&RegimeKey::Default).copied() else {
            return;
        };
        let table = child_path(base, "legal_basis");
        for family in REGIME_FAMILIES {
            let named: Vec<(Regime, LegalBasis)> = family
                .iter()
                .filter_map(|r| {
                    let basis = purpose.legal_basis.get(&RegimeKey::Regime(*r))?;
                    Some((*r, *basis))
                })
                .collect();
            let Some((first, first_basis)) = named
                .iter()
                .find(|(_, b)| Level::of_basis(*b) != Level::of_basis(default))
                .copied()
            else {
                continue;
            };
            let defaulted: Vec<Regime> = family
                .iter()
                .filter(|r| !purpose.legal_basis.contains_key(&RegimeKey::Regime(**r)))
                .copied()
                .collect();
            if defaulted.is_empty() {
                continue;
            }
            let keys: Vec<&str> = defaulted.iter().map(|r| r.as_str()).collect();
            let places: Vec<&str> = defaulted.iter().map(|r| regime_in_words(*r)).collect();
            self.warning(
                codes::PURPOSE_LEGAL_BASIS_DEFAULT_CONTRADICTS,
                child_path(&table, first.as_str()),
                format!(
                    "purpose `{id}` declares `{}` for `{first}` ({}), but {} ({}) fall to `default = \"{}\"`, which asks for {} where `{first}` asks for {}; name {} in `legal_basis` with the basis meant there",
                    first_basis.as_str(),
                    regime_in_words(first),
                    backticked(&keys),
                    places.join(", "),
                    default.as_str(),
                    level_in_words(Level::of_basis(default)),
                    level_in_words(Level::of_basis(first_basis)),
                    if keys.len() == 1 { "it" } else { "them" },
                ),
            );
        }
    }

    /// `soft_opt_in = true` where no customer could ever be reached by it. Asked of the
    /// decisions' own rule (`Compiled::soft_opt_in_never`), so lint and decisions agree.
    fn soft_opt_in(&mut self) {
        if !self.manifest.purposes.values().any(|p| p.soft_opt_in) {
            return;
        }
        // A manifest that does not compile for decisions has errors of its own to fix first.
        let Ok(compiled) = Compiled::new(self.manifest.clone()) else {
            return;
        };
        for (id, purpose) in &self.manifest.purposes {
            if !purpose.soft_opt_in {
                continue;
            }
            let Some(never) = compiled.soft_opt_in_never(id) else {
                continue;
            };
            let why = match never {
                SoftOptInNever::NoEmailChannel => {
                    "it is for email only, and no `email` channel is declared; remove it".to_owned()
                }
                SoftOptInNever::NoRegime => format!(
                    "no regime's rules allow it for `{id}` with the legal bases and policy the manifest declares (ePrivacy soft opt-in stands in for consent to marketing emails); remove it"
                ),
                SoftOptInNever::NoPurchasePromise => format!(
                    "no collection point of kind `purchase` collects `{EMAIL_CATEGORY}` under a notice that promises `{id}` by `email`, and soft opt-in reaches only customers told of it when they bought; remove it, or collect email addresses at checkout under a notice that promises `{id}`"
                ),
            };
            self.warning(
                codes::PURPOSE_SOFT_OPT_IN_NEVER_APPLIES,
                child_path(&entry_path("purposes", id), "soft_opt_in"),
                format!("purpose `{id}` enables `soft_opt_in`, but it can never apply: {why}"),
            );
        }
    }

    /// A purpose's or topic's translations against the organisation's locales: the first is
    /// the language `name` is written in, every other one should have its own.
    fn translations(
        &mut self,
        what: &str,
        id: &str,
        base: &str,
        translations: &BTreeMap<String, crate::manifest::Translation>,
    ) {
        let locales = &self.manifest.organisation.locales;
        let missing: Vec<&str> = locales
            .iter()
            .skip(1)
            .filter(|l| !translations.contains_key(*l))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            self.warning(
                codes::TRANSLATION_MISSING,
                base.to_owned(),
                format!(
                    "{what} `{id}` has no `locales` entry for {}; customers using it will see its name in `{}`",
                    backticked(&missing),
                    locales.first().map_or("", String::as_str)
                ),
            );
        }
        for locale in translations.keys() {
            if !locales.contains(locale) {
                self.warning(
                    codes::TRANSLATION_UNKNOWN_LOCALE,
                    child_path(&child_path(base, "locales"), locale),
                    format!(
                        "{what} `{id}` has a translation for `{locale}`, which `organisation.locales` does not list; add it there or remove it"
                    ),
                );
            }
        }
    }

    fn topics(&mut self) {
        for (id, topic) in &self.manifest.topics {
            let base = entry_path("topics", id);
            self.translations("topic", id, &base, &topic.translations);
            self.check_purpose(child_path(&base, "purpose"), &topic.purpose);
            for (i, channel) in topic.channels.iter().enumerate() {
                self.check_channel(item_path(&child_path(&base, "channels"), i), channel);
            }
            let Some(named) = &topic.notice else {
                continue;
            };
            let path = child_path(&base, "notice");
            let Some(notice) = self.manifest.notices.get(named) else {
                self.dangling(
                    path,
                    "notice",
                    "notices",
                    named,
                    self.manifest.notices.keys(),
                );
                continue;
            };
            let unpromised: Vec<&str> = topic
                .channels
                .iter()
                .filter(|c| !promises::promises(notice, &topic.purpose, Some(c)))
                .map(String::as_str)
                .collect();
            if !unpromised.is_empty() {
                self.error(
                    codes::TOPIC_NOTICE_NOT_PROMISING,
                    path,
                    format!(
                        "topic `{id}` is shown with notice `{named}`, which does not promise `{}` on {}; name a notice that does",
                        topic.purpose,
                        backticked(&unpromised)
                    ),
                );
            }
        }
    }

    /// Where two notices promise a purpose on a channel equally closely, the customer may be
    /// shown either; a topic naming its notice settles it, else the finding says to.
    /// Essential purposes are left out: no one is asked about them, so no record names the
    /// notice shown.
    fn ambiguous_notices(&mut self) {
        for purpose in self.manifest.purposes.keys() {
            if crate::rulebook::PurposeClass::of(purpose)
                == crate::rulebook::PurposeClass::Essential
            {
                continue;
            }
            for channel in self.manifest.channels.keys() {
                let tied = promises::tied_notices(self.manifest, purpose, channel);
                let [first, second, ..] = tied.as_slice() else {
                    continue;
                };
                let settled = self.manifest.topics.values().any(|t| {
                    t.notice.is_some()
                        && &t.purpose == purpose
                        && t.channels.iter().any(|c| c == channel)
                });
                if settled {
                    continue;
                }
                let base = entry_path("notices", second);
                let at = self.manifest.notices.get(*second).and_then(|n| {
                    n.purposes
                        .iter()
                        .position(|p| is_within(purpose, p))
                        .map(|i| item_path(&child_path(&base, "purposes"), i))
                });
                self.warning(
                    codes::NOTICE_AMBIGUOUS,
                    at.unwrap_or(base),
                    format!(
                        "notices `{first}` and `{second}` both promise `{purpose}` on `{channel}`; add `notice = \"…\"` to a topic of that purpose and channel to say which one customers are shown"
                    ),
                );
            }
        }
    }

    /// Each consent manager category maps to declared purposes, or choices made in the banner
    /// would reach nothing (and be read as no consent at all).
    fn consent_categories(&mut self) {
        for (id, purposes) in &self.manifest.consent_categories {
            let base = entry_path("consent_categories", id);
            for (i, purpose) in purposes.iter().enumerate() {
                self.check_purpose(item_path(&base, i), purpose);
            }
        }
    }

    fn notices(&mut self, recorded: &[RecordedNotice]) {
        for (id, notice) in &self.manifest.notices {
            let base = entry_path("notices", id);
            for (i, category) in notice.categories.iter().enumerate() {
                self.check_category(item_path(&child_path(&base, "categories"), i), category);
            }
            for (i, purpose) in notice.purposes.iter().enumerate() {
                self.check_purpose(item_path(&child_path(&base, "purposes"), i), purpose);
            }
            for (i, channel) in notice.channels.iter().enumerate() {
                self.check_channel(item_path(&child_path(&base, "channels"), i), channel);
            }
            let missing: Vec<&str> = self
                .manifest
                .organisation
                .locales
                .iter()
                .filter(|l| !notice.locales.contains_key(*l))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                self.warning(
                    codes::NOTICE_MISSING_LOCALE,
                    base.clone(),
                    format!(
                        "notice `{id}` has no text in {}; customers using it will see the default locale",
                        backticked(&missing)
                    ),
                );
            }
            if !self
                .manifest
                .collection_points
                .values()
                .any(|p| &p.notice == id)
            {
                self.warning(
                    codes::NOTICE_UNUSED,
                    base.clone(),
                    format!(
                        "no collection point shows notice `{id}`, so no data is collected under it"
                    ),
                );
            }
            let same_id = recorded.iter().filter(|r| &r.notice_id == id);
            let mut latest = 0;
            for r in same_id {
                latest = latest.max(r.version);
                if r.version == notice.version && r.hash != notice.hash {
                    self.error(
                        codes::NOTICE_CHANGED_WITHOUT_VERSION_BUMP,
                        child_path(&base, "version"),
                        format!(
                            "notice `{id}` changed since version {} was recorded (hash {} now, {} recorded); raise `version` so consent given under the old text stays tied to it",
                            notice.version,
                            short(&notice.hash),
                            short(&r.hash)
                        ),
                    );
                }
            }
            if latest > notice.version {
                self.warning(
                    codes::NOTICE_VERSION_BEHIND,
                    child_path(&base, "version"),
                    format!(
                        "notice `{id}` is at version {} but version {latest} was already recorded",
                        notice.version
                    ),
                );
            }
            for (i, rule) in self.manifest.rules.forbid.iter().enumerate() {
                let category = notice
                    .categories
                    .iter()
                    .find(|c| rule_covers_category(&rule.category, c));
                let purpose = notice.purposes.iter().find(|p| covers(&rule.purpose, p));
                if let (Some(category), Some(purpose)) = (category, purpose) {
                    self.error(
                        codes::RULE_FORBIDDEN_USE,
                        base.clone(),
                        format!(
                            "notice `{id}` promises `{category}` for `{purpose}`, which rule {} forbids: {}",
                            i + 1,
                            rule.reason
                        ),
                    );
                }
            }
        }
    }

    fn collection_points(&mut self) {
        for (id, point) in &self.manifest.collection_points {
            let base = entry_path("collection_points", id);
            let notice = self.manifest.notices.get(&point.notice);
            if notice.is_none() {
                self.dangling(
                    child_path(&base, "notice"),
                    "notice",
                    "notices",
                    &point.notice,
                    self.manifest.notices.keys(),
                );
            }
            for (field, category) in &point.fields {
                let path = child_path(&child_path(&base, "fields"), field);
                if !self.check_category(path.clone(), category) {
                    continue;
                }
                if let Some(notice) = notice
                    && !notice.categories.iter().any(|c| is_within(category, c))
                {
                    self.error(
                            codes::COLLECTION_POINT_CATEGORY_NOT_IN_NOTICE,
                            path,
                            format!(
                                "collection point `{id}` collects `{field}` (`{category}`) but its notice `{}` does not cover that category",
                                point.notice
                            ),
                        );
                }
            }
        }
    }

    fn systems(&mut self) {
        for (id, system) in &self.manifest.systems {
            let base = entry_path("systems", id);
            if system.owner.is_empty() {
                self.error(
                    codes::SYSTEM_NO_OWNER,
                    base.clone(),
                    format!("system `{id}` has no owner; add `owner = \"<team>\"`"),
                );
            } else {
                self.check_team(child_path(&base, "owner"), &system.owner);
            }
            if let Some(hook) = &system.webhook
                && hook.secret_env.is_none()
            {
                self.warning(
                    codes::WEBHOOK_UNSIGNED,
                    child_path(&base, "webhook"),
                    format!(
                        "system `{id}` has a webhook without `secret_env`; Kept sends only signed deliveries, so it gets no events, no request steps and no obligations to carry out"
                    ),
                );
            }
            for (u, system_use) in system.uses.iter().enumerate() {
                let use_base = item_path(&child_path(&base, "uses"), u);
                let purpose = &system_use.purpose;
                self.check_purpose(child_path(&use_base, "purpose"), purpose);
                for (i, channel) in system_use.channels.iter().enumerate() {
                    self.check_channel(item_path(&child_path(&use_base, "channels"), i), channel);
                }
                for (i, category) in system_use.categories.iter().enumerate() {
                    let path = item_path(&child_path(&use_base, "categories"), i);
                    if !self.check_category(path, category) {
                        continue;
                    }
                    self.check_promised(id, &use_base, category, purpose, &system_use.channels);
                }
                for (i, rule) in self.manifest.rules.forbid.iter().enumerate() {
                    if !covers(&rule.purpose, purpose) {
                        continue;
                    }
                    let forbidden = system_use
                        .categories
                        .iter()
                        .find(|c| rule_covers_category(&rule.category, c));
                    if let Some(category) = forbidden {
                        self.error(
                            codes::RULE_FORBIDDEN_USE,
                            use_base.clone(),
                            format!(
                                "system `{id}` uses `{category}` for `{purpose}`, which rule {} forbids: {}",
                                i + 1,
                                rule.reason
                            ),
                        );
                    }
                }
            }
        }
    }

    /// One finding per category × channel that no notice promises.
    fn check_promised(
        &mut self,
        system: &str,
        use_base: &str,
        category: &str,
        purpose: &str,
        channels: &[String],
    ) {
        let covering: Vec<&str> = self
            .manifest
            .notices
            .iter()
            .filter(|(_, n)| n.categories.iter().any(|c| is_within(category, c)))
            .map(|(id, _)| id.as_str())
            .collect();
        let channels: Vec<Option<&str>> = if channels.is_empty() {
            vec![None]
        } else {
            channels.iter().map(|c| Some(c.as_str())).collect()
        };
        for channel in channels {
            let promised = self
                .manifest
                .notices
                .values()
                .any(|n| promises::promises_use(self.manifest, n, category, purpose, channel));
            if promised {
                continue;
            }
            let by = channel.map(|c| format!(" by `{c}`")).unwrap_or_default();
            let why = if covering.is_empty() {
                format!("no notice covers `{category}`")
            } else {
                format!(
                    "the notices that cover `{category}` ({}) do not promise `{purpose}`{by}",
                    backticked(&covering)
                )
            };
            self.error(
                codes::SYSTEM_USE_NOT_PROMISED,
                use_base.to_owned(),
                format!(
                    "system `{system}` uses `{category}` for `{purpose}`{by}, but {why}; add a notice that promises it and collect under it"
                ),
            );
        }
    }

    fn rules_and_policy(&mut self) {
        for (i, rule) in self.manifest.rules.forbid.iter().enumerate() {
            let base = item_path("rules.forbid", i);
            if !self.category_pattern_known(&rule.category) {
                self.warning(
                    codes::RULE_UNKNOWN_KEY,
                    child_path(&base, "category"),
                    format!(
                        "rule {} names category `{}`, which matches no known category, so it never applies",
                        i + 1,
                        rule.category
                    ),
                );
            }
            if !self.purpose_pattern_known(&rule.purpose) {
                self.warning(
                    codes::RULE_UNKNOWN_KEY,
                    child_path(&base, "purpose"),
                    format!(
                        "rule {} names purpose `{}`, which matches no known purpose, so it never applies",
                        i + 1,
                        rule.purpose
                    ),
                );
            }
        }
        for (i, tightening) in self.manifest.policy.tighten.iter().enumerate() {
            let base = item_path("policy.tighten", i);
            if !self.purpose_pattern_known(&tightening.purpose) {
                self.warning(
                    codes::RULE_UNKNOWN_KEY,
                    child_path(&base, "purpose"),
                    format!(
                        "policy {} names purpose `{}`, which matches no known purpose, so it never applies",
                        i + 1,
                        tightening.purpose
                    ),
                );
            }
            if let Some(channel) = &tightening.channel {
                self.check_channel(child_path(&base, "channel"), channel);
            }
        }
    }

    fn category_pattern_known(&self, pattern: &str) -> bool {
        let branch = pattern.strip_suffix(".*").unwrap_or(pattern);
        branch == "*"
            || fideslang::DATA_CATEGORIES
                .iter()
                .any(|c| is_within(c.key, branch))
            || self
                .manifest
                .categories
                .keys()
                .any(|c| is_within(c, branch))
    }

    fn purpose_pattern_known(&self, pattern: &str) -> bool {
        let branch = pattern.strip_suffix(".*").unwrap_or(pattern);
        branch == "*"
            || fideslang::DATA_USES
                .iter()
                .any(|u| is_within(u.key, branch))
            || self.manifest.purposes.keys().any(|p| is_within(p, branch))
    }
}

/// A rule about a category also applies to a use of a wider branch that contains it: using
/// all of `user` for marketing includes health data.
fn rule_covers_category(pattern: &str, category: &str) -> bool {
    let branch = pattern.strip_suffix(".*").unwrap_or(pattern);
    covers(pattern, category) || is_within(branch, category)
}

/// Regimes that one legal-basis choice is usually meant for together.
const REGIME_FAMILIES: [&[Regime]; 2] = [
    &[Regime::Ccpa, Regime::UsState, Regime::Us],
    &[Regime::Gdpr, Regime::UkGdpr],
];

fn regime_in_words(regime: Regime) -> &'static str {
    match regime {
        Regime::Gdpr => "the EU and EEA",
        Regime::UkGdpr => "the United Kingdom",
        Regime::Ccpa => "California",
        Regime::UsState => "the other US states with a privacy law",
        Regime::Us => "the US states without a privacy law",
        Regime::Casl => "Canada",
        Regime::Lgpd => "Brazil",
        Regime::Strictest => "unknown places",
    }
}

fn level_in_words(level: Level) -> &'static str {
    match level {
        Level::None => "no consent",
        Level::OptOut => "an opt-out",
        Level::OptIn | Level::OptInWritten => "opt-in consent",
    }
}

fn backticked(items: &[&str]) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// ` (did you mean `x`?)` for the closest known key within a few edits, or nothing.
fn did_you_mean<'k>(key: &str, known: impl Iterator<Item = &'k str>) -> String {
    match crate::spelling::closest(key, known) {
        Some((candidate, distance)) if distance > 0 && distance <= 3 => {
            format!(" (did you mean `{candidate}`?)")
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_only_for_near_misses() {
        let known = ["marketing", "engineering"];
        assert_eq!(
            did_you_mean("marketng", known.iter().copied()),
            " (did you mean `marketing`?)"
        );
        assert_eq!(did_you_mean("legal", known.iter().copied()), "");
    }
}
