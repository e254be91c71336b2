//! The manifest exactly as written: every table rejects unknown keys, and every reference
//! keeps its position in the file so errors and findings can point at it. `load` checks this
//! and turns it into the typed `Manifest`.
//!
//! Keys that `kept lint` reports as missing (owners, retention, legal basis) are `Option` here
//! so that a manifest without them still loads.

use super::model::CollectionKind;
use crate::regime::Regime;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use toml::Spanned;

pub(super) type Key = Spanned<String>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawManifest {
    pub organisation: RawOrganisation,
    #[serde(default)]
    pub teams: BTreeMap<Key, RawTeam>,
    #[serde(default)]
    pub channels: BTreeMap<Key, RawChannel>,
    #[serde(default)]
    pub purposes: BTreeMap<Key, RawPurpose>,
    #[serde(default)]
    pub topics: BTreeMap<Key, RawTopic>,
    #[serde(default)]
    pub categories: BTreeMap<Key, RawCategory>,
    #[serde(default)]
    pub notices: BTreeMap<Key, RawNotice>,
    #[serde(default)]
    pub collection_points: BTreeMap<Key, RawCollectionPoint>,
    #[serde(default)]
    pub systems: BTreeMap<Key, RawSystem>,
    #[serde(default)]
    pub rules: RawRules,
    #[serde(default)]
    pub policy: RawPolicy,
    /// Consent-manager category (`context.consent.categoryPreferences` key) → purpose keys.
    #[serde(default)]
    pub consent_categories: BTreeMap<Key, Vec<Key>>,
    /// The company's own databases (`[[dataset]]`), for the connectors.
    #[serde(default)]
    pub dataset: Vec<super::dataset::RawDataset>,
    /// Server configuration; the server checks it, the manifest only carries it.
    pub server: Option<toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawOrganisation {
    pub name: String,
    pub contact_email: String,
    pub dpo: Option<RawPerson>,
    pub postal_address: Option<String>,
    pub brand_colour: Option<Spanned<String>>,
    pub locales: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawPerson {
    pub name: String,
    pub email: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawTeam {
    pub name: String,
    #[serde(default)]
    pub owners: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawChannel {
    pub name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawPurpose {
    pub name: String,
    pub description: String,
    pub owner: Option<Key>,
    pub legal_basis: Option<Spanned<RawLegalBasis>>,
    pub retention: Option<Spanned<String>>,
    pub soft_opt_in: Option<Spanned<bool>>,
    pub sale_or_sharing: Option<Spanned<bool>>,
    #[serde(default)]
    pub compatible_with: Vec<Key>,
    /// The key is the organisation's own, not a fideslang data use.
    #[serde(default)]
    pub custom: bool,
    /// The name and description in the organisation's other languages.
    #[serde(default)]
    pub locales: BTreeMap<Key, RawTranslation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawTranslation {
    pub name: String,
    pub description: String,
}

/// `legal_basis = "contract"` (every regime) or `legal_basis = { default = "consent", us = … }`.
#[derive(Debug)]
pub(super) enum RawLegalBasis {
    Everywhere(String),
    PerRegime(Vec<(Key, Spanned<String>)>),
}

impl<'de> Deserialize<'de> for RawLegalBasis {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawLegalBasis;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a legal basis such as \"consent\", or a table of them by regime")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawLegalBasis::Everywhere(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(RawLegalBasis::PerRegime(entries))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawTopic {
    pub name: String,
    pub description: String,
    pub purpose: Key,
    pub channels: Vec<Key>,
    /// The notice shown for the topic.
    #[serde(default)]
    pub notice: Option<Key>,
    /// The name and description in the organisation's other languages.
    #[serde(default)]
    pub locales: BTreeMap<Key, RawTranslation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawCategory {
    pub name: String,
    pub description: String,
    #[serde(default)]
    pub sensitive: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawNotice {
    pub version: Spanned<u32>,
    #[serde(default)]
    pub locales: BTreeMap<Key, RawNoticeText>,
    pub categories: Vec<Key>,
    pub purposes: Vec<Key>,
    #[serde(default)]
    pub channels: Vec<Key>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawNoticeText {
    pub title: String,
    pub text: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawCollectionPoint {
    pub name: String,
    pub kind: CollectionKind,
    pub notice: Key,
    pub fields: BTreeMap<Key, Key>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawSystem {
    pub name: String,
    pub owner: Option<Key>,
    #[serde(default)]
    pub uses: Vec<RawUse>,
    pub webhook: Option<RawWebhook>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawUse {
    pub purpose: Key,
    pub categories: Vec<Key>,
    #[serde(default)]
    pub channels: Vec<Key>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawWebhook {
    pub url: Spanned<String>,
    pub secret_env: Option<String>,
    pub acknowledge: Option<Spanned<String>>,
    #[serde(default)]
    pub lifecycle: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawRules {
    #[serde(default)]
    pub forbid: Vec<RawForbid>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawForbid {
    pub category: Key,
    pub purpose: Key,
    pub reason: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawPolicy {
    #[serde(default)]
    pub tighten: Vec<RawTightening>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawTightening {
    pub regime: Option<Regime>,
    pub purpose: Key,
    pub channel: Option<Key>,
    pub reason: String,
}
