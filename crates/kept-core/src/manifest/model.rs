//! The typed manifest. Produced only by loading and checking a `kept.toml`; keys of every map
//! are the ids used everywhere else (purpose keys, channel keys, notice ids, …).

use crate::regime::Regime;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A checked manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub organisation: Organisation,
    pub teams: BTreeMap<String, Team>,
    pub purposes: BTreeMap<String, Purpose>,
    pub channels: BTreeMap<String, Channel>,
    pub topics: BTreeMap<String, Topic>,
    /// Custom data categories declared by the manifest (fideslang keys are known built-in).
    pub categories: BTreeMap<String, Category>,
    pub notices: BTreeMap<String, Notice>,
    pub collection_points: BTreeMap<String, CollectionPoint>,
    pub systems: BTreeMap<String, System>,
    pub rules: Rules,
    pub policy: Policy,
    /// What each consent-manager category (a key of `context.consent.categoryPreferences`)
    /// stands for, as purpose keys. A category that is itself a purpose key needs no entry.
    #[serde(default)]
    pub consent_categories: BTreeMap<String, Vec<String>>,
    /// The company's own databases the connectors walk for data subject requests
    /// (`[[dataset]]`, see `manifest::dataset`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<super::dataset::Dataset>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Organisation {
    pub name: String,
    pub contact_email: String,
    pub dpo: Option<Person>,
    /// Postal address, shown in marketing messages (CAN-SPAM) and the preference center.
    pub postal_address: Option<String>,
    /// Brand colour for customer-facing pages, `#RRGGBB`.
    pub brand_colour: Option<String>,
    /// Locales the customer-facing pages offer, the first being the default.
    pub locales: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub name: String,
    pub email: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Team {
    pub name: String,
    /// Email addresses of the people who answer for this team.
    pub owners: Vec<String>,
}

/// The lawful basis a purpose relies on (GDPR Art. 6(1) and its equivalents).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegalBasis {
    Consent,
    Contract,
    LegalObligation,
    VitalInterests,
    PublicTask,
    LegitimateInterests,
}

impl LegalBasis {
    pub const ALL: [LegalBasis; 6] = [
        LegalBasis::Consent,
        LegalBasis::Contract,
        LegalBasis::LegalObligation,
        LegalBasis::VitalInterests,
        LegalBasis::PublicTask,
        LegalBasis::LegitimateInterests,
    ];

    /// The basis as a manifest spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            LegalBasis::Consent => "consent",
            LegalBasis::Contract => "contract",
            LegalBasis::LegalObligation => "legal_obligation",
            LegalBasis::VitalInterests => "vital_interests",
            LegalBasis::PublicTask => "public_task",
            LegalBasis::LegitimateInterests => "legitimate_interests",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purpose {
    /// Human name ("Marketing messages").
    pub name: String,
    pub description: String,
    /// Team id.
    pub owner: String,
    /// The basis per regime; `default` applies where a regime has no entry.
    pub legal_basis: BTreeMap<RegimeKey, LegalBasis>,
    /// How long data used for this purpose is kept, in days.
    pub retention_days: u32,
    /// ePrivacy soft opt-in may be used for this purpose (email marketing of own similar
    /// products to customers whose email came from a purchase).
    pub soft_opt_in: bool,
    /// The purpose sells or shares personal data (CCPA "sale" and "sharing" for cross-context
    /// behavioural advertising), so an opt-out of sale or sharing stops it. Purposes under
    /// `marketing.advertising` and `third_party_sharing` are so without saying.
    #[serde(default)]
    pub sale_or_sharing: bool,
    /// Other purposes whose collected data this purpose may also use (declared compatible).
    pub compatible_with: Vec<String>,
    /// `name` and `description` in other languages, by locale (`de`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub translations: BTreeMap<String, Translation>,
}

impl Purpose {
    /// The legal basis this purpose relies on in `regime`: its own entry, else `default`.
    pub fn basis_in(&self, regime: crate::regime::Regime) -> Option<LegalBasis> {
        self.legal_basis
            .get(&RegimeKey::Regime(regime))
            .or_else(|| self.legal_basis.get(&RegimeKey::Default))
            .copied()
    }

    /// The name and description in `locale`, or as written when it has no translation there.
    pub fn text_in(&self, locale: &str) -> (&str, &str) {
        translated(&self.name, &self.description, &self.translations, locale)
    }
}

/// A name and description in one language.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Translation {
    pub name: String,
    pub description: String,
}

fn translated<'a>(
    name: &'a str,
    description: &'a str,
    translations: &'a BTreeMap<String, Translation>,
    locale: &str,
) -> (&'a str, &'a str) {
    match translations.get(locale) {
        Some(t) => (t.name.as_str(), t.description.as_str()),
        None => (name, description),
    }
}

/// A regime, or the fallback used for every regime without an entry of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegimeKey {
    Default,
    #[serde(untagged)]
    Regime(Regime),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    pub name: String,
    pub description: String,
    /// Purpose key the topic belongs to.
    pub purpose: String,
    /// Channel keys the topic is sent on.
    pub channels: Vec<String>,
    /// The notice shown for this topic (in the preference center, and named by what it
    /// records); without one, the notice `promises::notice_for` finds for its purpose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
    /// `name` and `description` in other languages, by locale (`de`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub translations: BTreeMap<String, Translation>,
}

impl Topic {
    /// The name and description in `locale`, or as written when it has no translation there.
    pub fn text_in(&self, locale: &str) -> (&str, &str) {
        translated(&self.name, &self.description, &self.translations, locale)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Category {
    pub name: String,
    pub description: String,
    /// A special / sensitive category (GDPR Art. 9, CPRA sensitive PI): needs explicit consent.
    pub sensitive: bool,
}

/// A promise: the versioned text shown when data was collected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub version: u32,
    /// Text per locale (`en`, `de`, …).
    pub locales: BTreeMap<String, NoticeText>,
    /// Data category keys this notice covers.
    pub categories: Vec<String>,
    /// Purpose keys it promises.
    pub purposes: Vec<String>,
    /// Channel keys it promises.
    pub channels: Vec<String>,
    /// Lowercase hex BLAKE3 of the notice's canonical content; computed at load, never typed.
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeText {
    pub title: String,
    pub text: String,
}

/// What kind of interaction a collection point is; the rulebook reads it (a purchase starts
/// CASL implied consent and makes ePrivacy soft opt-in possible).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CollectionKind {
    Purchase,
    Inquiry,
    Signup,
    Account,
    Preference,
    Other,
}

/// A form or API where data enters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionPoint {
    pub name: String,
    /// Notice id shown at this point.
    pub notice: String,
    pub kind: CollectionKind,
    /// Field name → data category key.
    pub fields: BTreeMap<String, String>,
}

/// A system that uses personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct System {
    pub name: String,
    /// Team id.
    pub owner: String,
    pub uses: Vec<SystemUse>,
    pub webhook: Option<Webhook>,
}

/// One declared use: a purpose, the categories it reads, and the channels it reaches people on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemUse {
    pub purpose: String,
    pub categories: Vec<String>,
    pub channels: Vec<String>,
}

impl Manifest {
    /// The systems deliveries may go to, in key order: a webhook and a secret to sign with. One
    /// without a secret gets nothing (`kept lint` warns, `webhook.unsigned`): Kept never sends
    /// unsigned deliveries.
    pub fn webhook_systems(&self) -> impl Iterator<Item = (&str, &System)> {
        self.systems.iter().filter_map(|(key, system)| {
            let hook = system.webhook.as_ref()?;
            hook.secret_env.as_ref()?;
            Some((key.as_str(), system))
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub url: String,
    /// Name of the environment variable holding the signing secret (never the secret itself).
    pub secret_env: Option<String>,
    /// How the system says it carried out a data subject request's obligation.
    pub acknowledge: Acknowledge,
    /// Whether the system is sent every step of every data subject request
    /// (`request.received`, `request.verified`, …): `lifecycle = true`.
    pub lifecycle: bool,
}

/// How a system acknowledges an obligation (an erasure, a rectification, an opt-out to carry
/// out): `acknowledge = "callback"` (the default) or `"on_delivery"` in its webhook.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Acknowledge {
    /// The system posts to the callback URL the obligation carries, with its token, once done.
    #[default]
    Callback,
    /// The delivery answered 2xx is the acknowledgement (a system that acts on receipt).
    OnDelivery,
}

impl Acknowledge {
    pub const ALL: [Acknowledge; 2] = [Acknowledge::Callback, Acknowledge::OnDelivery];

    pub fn as_str(self) -> &'static str {
        match self {
            Acknowledge::Callback => "callback",
            Acknowledge::OnDelivery => "on_delivery",
        }
    }

    pub fn parse(s: &str) -> Option<Acknowledge> {
        Acknowledge::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// The organisation's own rules, checked by `kept lint`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    pub forbid: Vec<ForbiddenUse>,
}

/// "Never use `category` for `purpose`"; both may end in `.*` to cover a whole branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForbiddenUse {
    pub category: String,
    pub purpose: String,
    pub reason: String,
}

/// Ways the manifest tightens the rulebook (never loosens it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub tighten: Vec<Tightening>,
}

/// Require opt-in consent for a purpose (branch) and channel in a regime where the law
/// would allow less (e.g. all US subjects opt-in for SMS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tightening {
    /// `None` = every regime.
    pub regime: Option<Regime>,
    /// A purpose key, or a branch ending in `.*`.
    pub purpose: String,
    /// `None` = every channel.
    pub channel: Option<String>,
    pub reason: String,
}
