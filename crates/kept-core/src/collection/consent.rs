//! Consent carried by an event: what its signals (`crate::signals`) mean as purposes, which
//! purposes the event may serve, and which ledger records it implies for the subject.
//!
//! Fail closed: a purpose that needs consent is usable only when the event itself said yes;
//! missing consent never counts as consent.

use crate::UnixMillis;
use crate::decision::{Compiled, DecisionRequest, PlaceId};
use crate::ledger::{CollectionMethod, ConsentAction, ConsentRecord};
use crate::manifest::Manifest;
use crate::rulebook::Level;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Consent-manager categories read as purposes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurposeChoices {
    /// Purpose key → yes or no. When two categories disagree about a purpose, no wins.
    pub purposes: BTreeMap<String, bool>,
    /// Categories the manifest does not map: recorded, and worth nothing.
    pub unmapped: Vec<String>,
}

/// Maps categories to purposes through the manifest's `[consent_categories]`; a category that
/// is itself a purpose key stands for that purpose.
pub fn purpose_choices(manifest: &Manifest, categories: &BTreeMap<String, bool>) -> PurposeChoices {
    let mut out = PurposeChoices::default();
    for (category, &yes) in categories {
        let purposes: Vec<&String> = match manifest.consent_categories.get(category) {
            Some(purposes) => purposes.iter().collect(),
            None => manifest
                .purposes
                .get_key_value(category)
                .map(|(k, _)| vec![k])
                .unwrap_or_default(),
        };
        let purposes: Vec<&String> = purposes
            .into_iter()
            .filter(|p| manifest.purposes.contains_key(*p))
            .collect();
        if purposes.is_empty() {
            out.unmapped.push(category.clone());
        }
        for p in purposes {
            let slot = out.purposes.entry(p.clone()).or_insert(yes);
            *slot = *slot && yes;
        }
    }
    out
}

/// The purposes an event may serve for a subject at `place`, judged from the event alone:
/// - no consent needed (contract, legal obligation) → usable;
/// - opt-out → usable unless the event said no, or carried GPC where GPC is an opt-out (and
///   always for advertising, sale and sharing);
/// - opt-in → usable only if the event said yes; written consent never comes with an event.
pub fn usable_purposes(
    compiled: &Compiled,
    place: PlaceId,
    choices: &BTreeMap<String, bool>,
    gpc: bool,
    now: UnixMillis,
) -> Vec<String> {
    compiled
        .manifest()
        .purposes
        .keys()
        .filter(|key| {
            let query = compiled.prepare(&DecisionRequest::new(key));
            if query.invalid.is_some() {
                return false;
            }
            let Some(req) = compiled.requirement(place, &query) else {
                return false;
            };
            let said = choices.get(*key).copied();
            match req.level {
                Level::None => true,
                Level::OptOut => {
                    let gpc_opts_out = gpc && crate::signals::gpc::stops(query.class, req.gpc, now);
                    said != Some(false) && !gpc_opts_out
                }
                Level::OptIn => said == Some(true),
                Level::OptInWritten => false,
            }
        })
        .cloned()
        .collect()
}

/// What the event carried, stored with it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentSnapshot {
    /// Whether the event carried any choice about purposes.
    pub carried: bool,
    pub categories: BTreeMap<String, bool>,
    pub purposes: BTreeMap<String, bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmapped: Vec<String>,
    pub gpc: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcf: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpp_sections: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub us_privacy: Option<String>,
    /// The subject's regime when the event arrived.
    pub regime: String,
    /// The purposes this event may serve (see [`usable_purposes`]).
    pub usable_for: Vec<String>,
}

/// A subject's consent as the ledger states it, for the scopes an event can change: each
/// purpose as a whole (no channel, no topic), and GPC.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CurrentConsent {
    pub purposes: BTreeMap<String, ConsentAction>,
    /// The latest GPC signal recorded.
    pub gpc: Option<ConsentAction>,
}

impl CurrentConsent {
    /// From the subject's records in ledger order.
    pub fn from_records<'a>(
        records: impl IntoIterator<Item = &'a ConsentRecord>,
    ) -> CurrentConsent {
        let mut out = CurrentConsent::default();
        for r in records {
            // A yes under a notice that did not promise it stands for nothing: a yes under the
            // right notice is then still recorded.
            if r.action == ConsentAction::Pending || !crate::manifest::promises::counts(r) {
                continue;
            }
            if r.method == CollectionMethod::Gpc {
                out.gpc = Some(r.action);
            } else if r.channel.is_none() && r.topic.is_none() {
                out.purposes.insert(r.purpose.clone(), r.action);
            }
        }
        out
    }

    /// The state after `changes` were recorded.
    pub fn apply(&mut self, changes: &[ConsentChange]) {
        for c in changes {
            if c.gpc {
                self.gpc = Some(c.action);
            } else {
                self.purposes.insert(c.purpose.clone(), c.action);
            }
        }
    }
}

/// One ledger record an event implies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentChange {
    pub purpose: String,
    pub action: ConsentAction,
    /// A GPC signal rather than a banner choice.
    pub gpc: bool,
}

/// The records that bring the ledger in line with what the event said: a yes where the latest
/// record is not a given consent, a no where it is not already negative (opted out where the
/// purpose is opt-out; where it needs opt-in, withdrawn when consent had been given, refused when
/// it never was: a "no" to a first question withdraws nothing), and a GPC opt-out when the last GPC
/// record is not one. Absence says nothing: no record is made for what the event did not carry.
pub fn consent_changes(
    choices: &BTreeMap<String, bool>,
    gpc: bool,
    current: &CurrentConsent,
    level_of: impl Fn(&str) -> Option<Level>,
    gpc_purpose: &str,
) -> Vec<ConsentChange> {
    let mut out = Vec::new();
    for (purpose, &yes) in choices {
        let latest = current.purposes.get(purpose).copied();
        let action = if yes {
            (latest != Some(ConsentAction::Given)).then_some(ConsentAction::Given)
        } else {
            let negative = latest.is_some_and(ConsentAction::is_negative);
            (!negative).then(|| match level_of(purpose) {
                Some(Level::OptOut) => ConsentAction::OptedOut,
                _ if latest == Some(ConsentAction::Given) => ConsentAction::Withdrawn,
                _ => ConsentAction::Refused,
            })
        };
        if let Some(action) = action {
            out.push(ConsentChange {
                purpose: purpose.clone(),
                action,
                gpc: false,
            });
        }
    }
    if gpc && current.gpc != Some(ConsentAction::OptedOut) {
        out.push(ConsentChange {
            purpose: gpc_purpose.to_owned(),
            action: ConsentAction::OptedOut,
            gpc: true,
        });
    }
    out
}

/// The opt-in level of a purpose at a place, as the rulebook and manifest set it.
pub fn level_of(compiled: &Compiled, place: PlaceId, purpose: &str) -> Option<Level> {
    let query = compiled.prepare(&DecisionRequest::new(purpose));
    if query.invalid.is_some() {
        return None;
    }
    compiled.requirement(place, &query).map(|r| r.level)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        let mut m = crate::manifest::load(&crate::manifest::demo_toml(), "kept.toml")
            .unwrap()
            .manifest;
        m.consent_categories.insert(
            "Advertising".into(),
            vec!["marketing.advertising.third_party.targeted".into()],
        );
        m
    }

    #[test]
    fn categories_map_to_purposes_and_no_wins() {
        let m = manifest();
        let mut cats = BTreeMap::new();
        cats.insert("Advertising".to_owned(), true);
        cats.insert(
            "marketing.advertising.third_party.targeted".to_owned(),
            false,
        );
        cats.insert("Mystery".to_owned(), true);
        let c = purpose_choices(&m, &cats);
        assert!(!c.purposes["marketing.advertising.third_party.targeted"]);
        assert_eq!(c.unmapped, vec!["Mystery".to_owned()]);
    }

    #[test]
    fn missing_consent_is_never_consent() {
        let compiled = Compiled::new(manifest()).unwrap();
        let gdpr = compiled.place_of(Some("DE"), None);
        let none = usable_purposes(&compiled, gdpr, &BTreeMap::new(), false, 0);
        assert!(none.contains(&"essential.service.operations".to_owned()));
        assert!(!none.contains(&"personalize.content.profiled".to_owned()));
        let mut yes = BTreeMap::new();
        yes.insert("personalize.content.profiled".to_owned(), true);
        let some = usable_purposes(&compiled, gdpr, &yes, false, 0);
        assert!(some.contains(&"personalize.content.profiled".to_owned()));
        // Opt-out in the US: usable until the person says no, and GPC stops advertising.
        let us = compiled.place_of(Some("US"), Some("FL"));
        let open = usable_purposes(&compiled, us, &BTreeMap::new(), false, 0);
        assert!(open.contains(&"marketing.advertising.third_party.targeted".to_owned()));
        let gpc = usable_purposes(&compiled, us, &BTreeMap::new(), true, 0);
        assert!(!gpc.contains(&"marketing.advertising.third_party.targeted".to_owned()));
        // Unknown place: the strictest regime.
        let unknown = compiled.place_of(None, None);
        let strict = usable_purposes(&compiled, unknown, &BTreeMap::new(), false, 0);
        assert!(!strict.contains(&"marketing.advertising.third_party.targeted".to_owned()));
    }

    #[test]
    fn changes_only_where_the_ledger_differs() {
        let mut choices = BTreeMap::new();
        choices.insert("a".to_owned(), true);
        choices.insert("b".to_owned(), false);
        choices.insert("c".to_owned(), false);
        // Never asked before: a "no" is a refusal, not a withdrawal.
        choices.insert("d".to_owned(), false);
        let mut current = CurrentConsent::default();
        current.purposes.insert("a".into(), ConsentAction::Given);
        current.purposes.insert("c".into(), ConsentAction::Given);
        let changes = consent_changes(
            &choices,
            true,
            &current,
            |p| {
                Some(if p == "b" {
                    Level::OptOut
                } else {
                    Level::OptIn
                })
            },
            "ads",
        );
        let summary: Vec<(&str, ConsentAction, bool)> = changes
            .iter()
            .map(|c| (c.purpose.as_str(), c.action, c.gpc))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("b", ConsentAction::OptedOut, false),
                ("c", ConsentAction::Withdrawn, false),
                ("d", ConsentAction::Refused, false),
                ("ads", ConsentAction::OptedOut, true),
            ]
        );
        current.apply(&changes);
        assert!(consent_changes(&choices, true, &current, |_| None, "ads").is_empty());
    }

    #[test]
    fn the_manifest_maps_consent_manager_categories() {
        let toml = format!(
            "{}\n[consent_categories]\nAdvertising = [\"marketing.advertising.third_party.targeted\"]\nC0004 = [\"personalize.content.profiled\", \"marketing.communications\"]\n",
            crate::manifest::demo_toml()
        );
        let loaded = crate::manifest::load(&toml, "kept.toml").unwrap();
        let m = loaded.manifest;
        assert_eq!(m.consent_categories["C0004"].len(), 2);
        assert!(loaded.positions.get("consent_categories.C0004").is_some());
        let mut cats = BTreeMap::new();
        cats.insert("C0004".to_owned(), true);
        let c = purpose_choices(&m, &cats);
        assert!(
            c.purposes["personalize.content.profiled"] && c.purposes["marketing.communications"]
        );
        let bad = format!(
            "{}\n[consent_categories]\nAds = \"not a list\"\n",
            crate::manifest::demo_toml()
        );
        assert!(crate::manifest::load(&bad, "kept.toml").is_err());
    }
}
