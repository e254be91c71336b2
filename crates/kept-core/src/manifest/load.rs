//! Loading a `kept.toml`: syntax, unknown keys and malformed values are errors that name the
//! file, line and column; everything else (dangling references, missing owners, broken
//! promises) is left for `kept lint`, which needs the positions recorded here.

use super::keys::{child_path, entry_path, item_path};
use super::model::*;
use super::raw::*;
use crate::regime::Regime;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::str::FromStr;
use toml::Spanned;

/// A loaded manifest: the typed model, the opaque `[server]` table, and what `kept lint` needs
/// to point at the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// In the typed model a purpose or system without an owner has an empty `owner`, and a
    /// purpose without retention has `retention_days == 0` (a written retention is never 0).
    pub manifest: Manifest,
    /// The `[server]` table, unchecked here: the server validates its own configuration.
    pub server: Option<toml::Table>,
    /// Where each entry, key and reference sits in the file, by key path.
    pub positions: Positions,
    /// Purpose keys marked `custom = true`: the organisation's own, not fideslang data uses.
    pub custom_purposes: BTreeSet<String>,
}

/// A position in the manifest file, both 1-based; the column counts characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Position {
    pub line: u32,
    pub column: u32,
}

/// Positions by key path (`systems.sms_blaster.uses[0].purpose`,
/// `purposes."marketing.communications"`), and the file they are in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Positions {
    pub file: String,
    by_path: BTreeMap<String, Position>,
}

impl Positions {
    pub fn get(&self, path: &str) -> Option<Position> {
        self.by_path.get(path).copied()
    }
}

/// Where an error is: the file, and the line and column when the error has a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorLocation {
    pub file: String,
    pub at: Option<Position>,
}

impl fmt::Display for ErrorLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some(at) => write!(f, "{}:{}:{}", self.file, at.line, at.column),
            None => f.write_str(&self.file),
        }
    }
}

/// Why a manifest could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Not valid TOML.
    #[error("{location}: {message}")]
    Syntax {
        location: ErrorLocation,
        message: String,
    },
    /// A key the manifest does not define (often a typo).
    #[error("{location}: {message}")]
    UnknownKey {
        location: ErrorLocation,
        message: String,
    },
    /// A key the manifest requires.
    #[error("{location}: {message}")]
    MissingKey {
        location: ErrorLocation,
        message: String,
    },
    /// A value of the wrong type or form.
    #[error("{location}: {message}")]
    InvalidValue {
        location: ErrorLocation,
        message: String,
    },
}

impl ManifestError {
    /// Stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            ManifestError::Syntax { .. } => "manifest.syntax",
            ManifestError::UnknownKey { .. } => "manifest.unknown_key",
            ManifestError::MissingKey { .. } => "manifest.missing_key",
            ManifestError::InvalidValue { .. } => "manifest.invalid_value",
        }
    }

    pub fn location(&self) -> &ErrorLocation {
        match self {
            ManifestError::Syntax { location, .. }
            | ManifestError::UnknownKey { location, .. }
            | ManifestError::MissingKey { location, .. }
            | ManifestError::InvalidValue { location, .. } => location,
        }
    }

    /// The message without the location.
    pub fn message(&self) -> &str {
        match self {
            ManifestError::Syntax { message, .. }
            | ManifestError::UnknownKey { message, .. }
            | ManifestError::MissingKey { message, .. }
            | ManifestError::InvalidValue { message, .. } => message,
        }
    }
}

/// A syntax error's message naming the character at `span`, for errors the parser gives none.
fn unexpected_character(source: &str, span: Option<Range<usize>>) -> String {
    let found = span
        .and_then(|s| source.get(s.start..))
        .and_then(|rest| rest.chars().next());
    match found {
        Some(c) if c.is_control() || c.is_whitespace() => {
            format!("unexpected character U+{:04X} here", u32::from(c))
        }
        Some(c) => format!("unexpected character `{c}` here"),
        None => "the file ends where more TOML was expected".to_owned(),
    }
}

/// Loads and checks a manifest. `path` only names the file in errors and findings.
pub fn load(source: &str, path: &str) -> Result<Loaded, ManifestError> {
    let lines = LineIndex::new(source);
    // Parsing once without a schema tells a syntax error from a schema error: both come
    // back as the same error type from the typed parse.
    if let Err(e) = toml::from_str::<serde::de::IgnoredAny>(source) {
        let message = match e.message().trim() {
            // The parser says nothing of some characters it stops at (a lone carriage return).
            "" => unexpected_character(source, e.span()),
            m => m.replace('\n', "; "),
        };
        return Err(ManifestError::Syntax {
            location: lines.error_location(path, e.span()),
            message,
        });
    }
    let raw: RawManifest = toml::from_str(source).map_err(|e| schema_error(&lines, path, &e))?;
    Converter {
        lines: &lines,
        positions: Positions {
            file: path.to_owned(),
            by_path: BTreeMap::new(),
        },
    }
    .convert(raw)
}

/// Turns serde's wording into the manifest's own (keys and tables, not fields and structs).
fn schema_error(lines: &LineIndex, path: &str, e: &toml::de::Error) -> ManifestError {
    let location = lines.error_location(path, e.span());
    let raw = e.message().trim();
    let mut message = raw
        .replace("unknown field", "unknown key")
        .replace("missing field", "missing key")
        .replace("unknown variant", "unknown value")
        .replace(", there are no fields", "")
        .replace("expected a sequence", "expected an array")
        .replace("expected a map", "expected a table")
        .replace("invalid type: sequence", "invalid type: array")
        .replace("invalid type: map", "invalid type: table")
        .replace("expected u32", "expected a whole number from 1")
        .replace('\n', "; ");
    if message.starts_with("unknown key") {
        return ManifestError::UnknownKey { location, message };
    }
    if message.starts_with("missing key") {
        message.push_str(" in this table");
        return ManifestError::MissingKey { location, message };
    }
    ManifestError::InvalidValue { location, message }
}

/// Byte offsets to lines and columns.
struct LineIndex<'a> {
    source: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(source: &'a str) -> Self {
        let starts = std::iter::once(0)
            .chain(source.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { source, starts }
    }

    fn position(&self, offset: usize) -> Position {
        let line = self.starts.partition_point(|&start| start <= offset).max(1);
        let start = self.starts.get(line - 1).copied().unwrap_or(0);
        let column = self
            .source
            .get(start..offset.min(self.source.len()))
            .map_or(0, |s| s.chars().count());
        Position {
            line: u32::try_from(line).unwrap_or(u32::MAX),
            column: u32::try_from(column + 1).unwrap_or(u32::MAX),
        }
    }

    fn error_location(&self, file: &str, span: Option<Range<usize>>) -> ErrorLocation {
        ErrorLocation {
            file: file.to_owned(),
            at: span.map(|s| self.position(s.start)),
        }
    }
}

pub(super) struct Converter<'a> {
    lines: &'a LineIndex<'a>,
    positions: Positions,
}

impl Converter<'_> {
    pub(super) fn mark(&mut self, path: String, span: Range<usize>) {
        let at = self.lines.position(span.start);
        self.positions.by_path.insert(path, at);
    }

    /// Records a reference's position and hands back its value.
    pub(super) fn reference(&mut self, path: String, key: &Spanned<String>) -> String {
        self.mark(path, key.span());
        key.get_ref().clone()
    }

    fn references(&mut self, base: &str, keys: &[Spanned<String>]) -> Vec<String> {
        keys.iter()
            .enumerate()
            .map(|(i, key)| self.reference(item_path(base, i), key))
            .collect()
    }

    pub(super) fn invalid(&self, span: Range<usize>, message: String) -> ManifestError {
        ManifestError::InvalidValue {
            location: self.lines.error_location(&self.positions.file, Some(span)),
            message,
        }
    }

    /// Records an entry's position and checks its key's form.
    fn entry(
        &mut self,
        section: &str,
        key: &Spanned<String>,
        dotted: bool,
    ) -> Result<String, ManifestError> {
        let id = key.get_ref();
        let valid = !id.is_empty()
            && id.split('.').all(|segment| {
                !segment.is_empty()
                    && segment.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
                    })
            })
            && (dotted || !id.contains('.'));
        if !valid {
            let form = if dotted {
                "lowercase letters, digits, `_` and `-`, in `.`-separated segments"
            } else {
                "lowercase letters, digits, `_` and `-`"
            };
            return Err(self.invalid(
                key.span(),
                format!("invalid key `{id}` in `{section}`, expected {form}"),
            ));
        }
        self.mark(entry_path(section, id), key.span());
        Ok(id.clone())
    }

    fn convert(mut self, raw: RawManifest) -> Result<Loaded, ManifestError> {
        let organisation = self.organisation(raw.organisation)?;

        let mut teams = BTreeMap::new();
        for (key, team) in raw.teams {
            let id = self.entry("teams", &key, false)?;
            teams.insert(
                id,
                Team {
                    name: team.name,
                    owners: team.owners,
                },
            );
        }

        let mut channels = BTreeMap::new();
        for (key, channel) in raw.channels {
            let id = self.entry("channels", &key, false)?;
            channels.insert(id, Channel { name: channel.name });
        }

        let mut purposes = BTreeMap::new();
        let mut custom_purposes = BTreeSet::new();
        for (key, purpose) in raw.purposes {
            let id = self.entry("purposes", &key, true)?;
            if purpose.custom {
                custom_purposes.insert(id.clone());
            }
            let converted = self.purpose(&entry_path("purposes", &id), purpose)?;
            purposes.insert(id, converted);
        }

        let mut topics = BTreeMap::new();
        for (key, topic) in raw.topics {
            let id = self.entry("topics", &key, false)?;
            let base = entry_path("topics", &id);
            let converted = Topic {
                name: topic.name,
                description: topic.description,
                purpose: self.reference(child_path(&base, "purpose"), &topic.purpose),
                channels: self.references(&child_path(&base, "channels"), &topic.channels),
                notice: topic
                    .notice
                    .map(|n| self.reference(child_path(&base, "notice"), &n)),
                translations: self.translations(&base, topic.locales),
            };
            topics.insert(id, converted);
        }

        let mut categories = BTreeMap::new();
        for (key, category) in raw.categories {
            let id = self.entry("categories", &key, true)?;
            categories.insert(
                id,
                Category {
                    name: category.name,
                    description: category.description,
                    sensitive: category.sensitive,
                },
            );
        }

        let mut notices = BTreeMap::new();
        for (key, notice) in raw.notices {
            let id = self.entry("notices", &key, false)?;
            let converted = self.notice(&id, notice)?;
            notices.insert(id, converted);
        }

        let mut collection_points = BTreeMap::new();
        for (key, point) in raw.collection_points {
            let id = self.entry("collection_points", &key, false)?;
            let base = entry_path("collection_points", &id);
            let fields_base = child_path(&base, "fields");
            let mut fields = BTreeMap::new();
            for (field, category) in &point.fields {
                let category = self.reference(child_path(&fields_base, field.get_ref()), category);
                fields.insert(field.get_ref().clone(), category);
            }
            let converted = CollectionPoint {
                name: point.name,
                notice: self.reference(child_path(&base, "notice"), &point.notice),
                kind: point.kind,
                fields,
            };
            collection_points.insert(id, converted);
        }

        let mut systems = BTreeMap::new();
        for (key, system) in raw.systems {
            let id = self.entry("systems", &key, false)?;
            let converted = self.system(&entry_path("systems", &id), system)?;
            systems.insert(id, converted);
        }

        let mut forbid = Vec::new();
        for (i, rule) in raw.rules.forbid.into_iter().enumerate() {
            let base = item_path("rules.forbid", i);
            self.mark(base.clone(), rule.category.span());
            forbid.push(ForbiddenUse {
                category: self.reference(child_path(&base, "category"), &rule.category),
                purpose: self.reference(child_path(&base, "purpose"), &rule.purpose),
                reason: rule.reason,
            });
        }

        let mut tighten = Vec::new();
        for (i, t) in raw.policy.tighten.into_iter().enumerate() {
            let base = item_path("policy.tighten", i);
            self.mark(base.clone(), t.purpose.span());
            tighten.push(Tightening {
                regime: t.regime,
                purpose: self.reference(child_path(&base, "purpose"), &t.purpose),
                channel: t
                    .channel
                    .map(|c| self.reference(child_path(&base, "channel"), &c)),
                reason: t.reason,
            });
        }

        let datasets = self.datasets(raw.dataset)?;

        let mut consent_categories = BTreeMap::new();
        for (key, purposes) in raw.consent_categories {
            // Consent managers name their categories their own way (`Advertising`, `C0004`),
            // so any non-empty key is accepted here.
            let id = key.get_ref().clone();
            if id.trim().is_empty() {
                return Err(
                    self.invalid(key.span(), "a consent category must have a name".to_owned())
                );
            }
            let base = entry_path("consent_categories", &id);
            self.mark(base.clone(), key.span());
            let purposes = self.references(&base, &purposes);
            consent_categories.insert(id, purposes);
        }

        Ok(Loaded {
            manifest: Manifest {
                organisation,
                teams,
                purposes,
                channels,
                topics,
                categories,
                notices,
                collection_points,
                systems,
                rules: Rules { forbid },
                policy: Policy { tighten },
                consent_categories,
                datasets,
            },
            server: raw.server,
            positions: self.positions,
            custom_purposes,
        })
    }

    fn organisation(&mut self, raw: RawOrganisation) -> Result<Organisation, ManifestError> {
        if let Some(colour) = &raw.brand_colour {
            let hex = colour.get_ref().strip_prefix('#').unwrap_or_default();
            if hex.len() != 6 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(self.invalid(
                    colour.span(),
                    format!(
                        "invalid brand colour `{}`, expected `#` and six hex digits such as `#2f6f4f`",
                        colour.get_ref()
                    ),
                ));
            }
        }
        let locales = match raw.locales {
            Some(locales) => {
                self.mark("organisation.locales".to_owned(), locales.span());
                locales.into_inner()
            }
            None => vec!["en".to_owned()],
        };
        Ok(Organisation {
            name: raw.name,
            contact_email: raw.contact_email,
            dpo: raw.dpo.map(|p| Person {
                name: p.name,
                email: p.email,
            }),
            postal_address: raw.postal_address,
            brand_colour: raw.brand_colour.map(Spanned::into_inner),
            locales,
        })
    }

    fn purpose(&mut self, base: &str, raw: RawPurpose) -> Result<Purpose, ManifestError> {
        let owner = raw
            .owner
            .map(|o| self.reference(child_path(base, "owner"), &o))
            .unwrap_or_default();
        let legal_basis = match raw.legal_basis {
            None => BTreeMap::new(),
            Some(spanned) => {
                let span = spanned.span();
                self.legal_basis(&child_path(base, "legal_basis"), span, spanned.into_inner())?
            }
        };
        let retention_days = match &raw.retention {
            None => 0,
            Some(r) => parse_retention(r.get_ref()).ok_or_else(|| {
                self.invalid(
                    r.span(),
                    format!(
                        "invalid retention `{}`, expected a positive number of days, weeks, months or years such as `90d`, `6w`, `18m` or `2y`",
                        r.get_ref()
                    ),
                )
            })?,
        };
        Ok(Purpose {
            name: raw.name,
            description: raw.description,
            owner,
            legal_basis,
            retention_days,
            soft_opt_in: raw.soft_opt_in.is_some_and(|soft| {
                self.mark(child_path(base, "soft_opt_in"), soft.span());
                soft.into_inner()
            }),
            sale_or_sharing: raw.sale_or_sharing.is_some_and(|sale| {
                self.mark(child_path(base, "sale_or_sharing"), sale.span());
                sale.into_inner()
            }),
            compatible_with: self
                .references(&child_path(base, "compatible_with"), &raw.compatible_with),
            translations: self.translations(base, raw.locales),
        })
    }

    /// `locales` of a purpose or topic, each position recorded for lint.
    fn translations(
        &mut self,
        base: &str,
        raw: BTreeMap<Spanned<String>, RawTranslation>,
    ) -> BTreeMap<String, Translation> {
        let locales_base = child_path(base, "locales");
        raw.into_iter()
            .map(|(locale, t)| {
                self.mark(child_path(&locales_base, locale.get_ref()), locale.span());
                (
                    locale.into_inner(),
                    Translation {
                        name: t.name,
                        description: t.description,
                    },
                )
            })
            .collect()
    }

    /// A purpose's `legal_basis`, each regime key's position recorded for lint under `base`.
    fn legal_basis(
        &mut self,
        base: &str,
        span: Range<usize>,
        raw: RawLegalBasis,
    ) -> Result<BTreeMap<RegimeKey, LegalBasis>, ManifestError> {
        let entries = match raw {
            RawLegalBasis::Everywhere(basis) => {
                vec![(RegimeKey::Default, Spanned::new(span, basis))]
            }
            RawLegalBasis::PerRegime(entries) => {
                let mut converted = Vec::new();
                for (regime, basis) in entries {
                    let key = if regime.get_ref() == "default" {
                        RegimeKey::Default
                    } else {
                        let parsed = Regime::from_str(regime.get_ref()).map_err(|_| {
                            self.invalid(
                                regime.span(),
                                format!(
                                    "unknown regime `{}` in `legal_basis`, expected `default` or one of {}",
                                    regime.get_ref(),
                                    quoted_list(Regime::ALL.iter().map(|r| r.as_str()))
                                ),
                            )
                        })?;
                        RegimeKey::Regime(parsed)
                    };
                    self.mark(child_path(base, regime.get_ref()), regime.span());
                    converted.push((key, basis));
                }
                converted
            }
        };
        let mut map = BTreeMap::new();
        for (key, basis) in entries {
            let parsed = parse_legal_basis(basis.get_ref()).ok_or_else(|| {
                self.invalid(
                    basis.span(),
                    format!(
                        "unknown legal basis `{}`, expected one of {}",
                        basis.get_ref(),
                        quoted_list(LegalBasis::ALL.iter().map(|b| b.as_str()))
                    ),
                )
            })?;
            map.insert(key, parsed);
        }
        Ok(map)
    }

    fn notice(&mut self, id: &str, raw: RawNotice) -> Result<Notice, ManifestError> {
        let base = entry_path("notices", id);
        let version = *raw.version.get_ref();
        if version == 0 {
            return Err(self.invalid(
                raw.version.span(),
                format!("invalid version `0` for notice `{id}`, versions start at 1"),
            ));
        }
        self.mark(child_path(&base, "version"), raw.version.span());
        let locales_base = child_path(&base, "locales");
        let mut locales = BTreeMap::new();
        for (locale, text) in raw.locales {
            self.mark(child_path(&locales_base, locale.get_ref()), locale.span());
            locales.insert(
                locale.into_inner(),
                NoticeText {
                    title: text.title,
                    text: text.text,
                },
            );
        }
        let categories = self.references(&child_path(&base, "categories"), &raw.categories);
        let purposes = self.references(&child_path(&base, "purposes"), &raw.purposes);
        let channels = self.references(&child_path(&base, "channels"), &raw.channels);
        let hash = Notice::compute_hash(id, version, &locales, &categories, &purposes, &channels);
        Ok(Notice {
            version,
            locales,
            categories,
            purposes,
            channels,
            hash,
        })
    }

    fn system(&mut self, base: &str, raw: RawSystem) -> Result<System, ManifestError> {
        let owner = raw
            .owner
            .map(|o| self.reference(child_path(base, "owner"), &o))
            .unwrap_or_default();
        let mut uses = Vec::new();
        for (i, u) in raw.uses.iter().enumerate() {
            let use_base = item_path(&child_path(base, "uses"), i);
            self.mark(use_base.clone(), u.purpose.span());
            uses.push(SystemUse {
                purpose: self.reference(child_path(&use_base, "purpose"), &u.purpose),
                categories: self.references(&child_path(&use_base, "categories"), &u.categories),
                channels: self.references(&child_path(&use_base, "channels"), &u.channels),
            });
        }
        let webhook = match raw.webhook {
            None => None,
            Some(w) => {
                let url = w.url.get_ref();
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(self.invalid(
                        w.url.span(),
                        format!(
                            "invalid webhook url `{url}`, expected an `https://` or `http://` url"
                        ),
                    ));
                }
                let acknowledge = match &w.acknowledge {
                    None => Acknowledge::default(),
                    Some(a) => Acknowledge::parse(a.get_ref()).ok_or_else(|| {
                        self.invalid(
                            a.span(),
                            format!(
                                "invalid acknowledge `{}`, expected `callback` or `on_delivery`",
                                a.get_ref()
                            ),
                        )
                    })?,
                };
                Some(Webhook {
                    url: w.url.into_inner(),
                    secret_env: w.secret_env,
                    acknowledge,
                    lifecycle: w.lifecycle,
                })
            }
        };
        Ok(System {
            name: raw.name,
            owner,
            uses,
            webhook,
        })
    }
}

fn parse_legal_basis(s: &str) -> Option<LegalBasis> {
    LegalBasis::ALL.into_iter().find(|b| b.as_str() == s)
}

/// `90d`, `6w`, `18m`, `2y` → days. A month counts 30 days and a year 365: retention is a
/// ceiling for deletion jobs, not a calendar date.
pub fn parse_retention(s: &str) -> Option<u32> {
    let s = s.trim();
    let unit = s.chars().last()?;
    let days_per_unit = match unit {
        'd' => 1,
        'w' => 7,
        'm' => 30,
        'y' => 365,
        _ => return None,
    };
    let number = s.strip_suffix(unit)?;
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let count: u32 = number.parse().ok()?;
    count.checked_mul(days_per_unit).filter(|days| *days > 0)
}

fn quoted_list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_parses_units_and_rejects_nonsense() {
        assert_eq!(parse_retention("90d"), Some(90));
        assert_eq!(parse_retention("6w"), Some(42));
        assert_eq!(parse_retention("18m"), Some(540));
        assert_eq!(parse_retention("2y"), Some(730));
        for bad in [
            "",
            "d",
            "0d",
            "2 years",
            "-1d",
            "1.5y",
            "2Y",
            "99999999999y",
        ] {
            assert_eq!(parse_retention(bad), None, "{bad}");
        }
    }

    #[test]
    fn line_index_counts_characters_from_one() {
        let lines = LineIndex::new("a = 1\nbé = 2\n");
        assert_eq!(lines.position(0), Position { line: 1, column: 1 });
        assert_eq!(lines.position(6), Position { line: 2, column: 1 });
        // `=` after a two-byte character is the fourth character of line 2.
        assert_eq!(lines.position(10), Position { line: 2, column: 4 });
    }
}
