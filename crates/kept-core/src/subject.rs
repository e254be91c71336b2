//! What Kept knows about a subject, as the store hands it to the decision engine and the index:
//! location (for the regime), provenance of each data category, channel preferences and
//! contact history. Consent state itself is derived from the ledger.

use crate::regime::Regime;
use crate::{SubjectId, UnixMillis};
use serde::{Deserialize, Serialize};

/// A subject's stable facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    pub id: SubjectId,
    /// The company's own user id, if known.
    pub user_id: Option<String>,
    /// ISO 3166-1 alpha-2.
    pub country: Option<String>,
    /// Subdivision code without the country prefix (`CA`, `CO`).
    pub region: Option<String>,
    /// IANA time zone name (`America/Denver`), for quiet hours.
    pub time_zone: Option<String>,
    pub created_at: UnixMillis,
    /// Set when an erasure request is pending: every use is denied from then on.
    pub erasure_requested_at: Option<UnixMillis>,
    /// On the suppression list: never contacted.
    pub suppressed: bool,
    /// Set once the subject is erased: a tombstone that keeps its id from being given to anyone
    /// else (the ledger and the requests log name subjects by id). Nothing else of it is held
    /// but what the law requires; decisions know it no more.
    #[serde(default)]
    pub erased_at: Option<UnixMillis>,
    /// Set when the subject was found holding an identifier suppressed after an earlier
    /// erasure (its keyed hash is on the suppression list): every use for a purpose that is
    /// not essential is denied (`denied.suppressed_after_erasure`).
    #[serde(default)]
    pub erasure_suppressed_at: Option<UnixMillis>,
}

impl Subject {
    pub fn regime(&self) -> Regime {
        Regime::resolve(self.country.as_deref(), self.region.as_deref())
    }
}

/// Where one trait (and so one data category) of a subject came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    pub collection_point: String,
    pub notice_id: String,
    pub notice_version: u32,
    pub collected_at: UnixMillis,
    /// `collection`, `import`, `demo`, `api`, …, or `request:<id>` for a value a
    /// rectification request corrected.
    pub source: String,
}

impl Provenance {
    /// The `source` of a value data subject request `id` corrected.
    pub fn corrected_source(id: u64) -> String {
        format!("request:{id}")
    }

    /// The rectification request that corrected the value, if one did ("corrected by request
    /// N" where a person or the privacy team reads it).
    pub fn corrected_by_request(&self) -> Option<u64> {
        self.source.strip_prefix("request:")?.parse().ok()
    }
}

/// One trait of a subject's profile, with its data category and provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trait {
    pub subject: SubjectId,
    pub key: String,
    pub value: serde_json::Value,
    /// A data category key (`user.contact.phone_number`).
    pub category: String,
    pub provenance: Provenance,
}

/// How often a person agreed to be contacted on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Day,
    Week,
    Month,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }

    pub fn parse(s: &str) -> Option<Period> {
        match s {
            "day" => Some(Period::Day),
            "week" => Some(Period::Week),
            "month" => Some(Period::Month),
            _ => None,
        }
    }

    /// The period's length in milliseconds (a month counts as 30 days).
    pub fn millis(self) -> UnixMillis {
        const DAY: UnixMillis = 24 * 60 * 60 * 1000;
        match self {
            Period::Day => DAY,
            Period::Week => 7 * DAY,
            Period::Month => 30 * DAY,
        }
    }
}

/// A frequency cap chosen by the person: at most `max` messages per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Frequency {
    pub max: u32,
    pub period: Period,
}

/// Local times (minutes after midnight) between which the person is not contacted. `start >
/// end` wraps midnight (22:00–07:00).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QuietHours {
    pub start_minute: u16,
    pub end_minute: u16,
}

/// A subject's choices for one channel (topic subscriptions live in the ledger).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelPreference {
    pub subject: SubjectId,
    pub channel: String,
    /// `None` = "as it happens".
    pub frequency: Option<Frequency>,
    pub quiet_hours: Option<QuietHours>,
    pub updated_at: UnixMillis,
}

/// A message actually sent, for frequency caps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub subject: SubjectId,
    pub channel: String,
    pub purpose: String,
    pub topic: Option<String>,
    pub at: UnixMillis,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrected_value_names_its_request_and_nothing_else_does() {
        let mut p = Provenance {
            collection_point: "checkout".into(),
            notice_id: "checkout".into(),
            notice_version: 1,
            collected_at: 0,
            source: Provenance::corrected_source(12),
        };
        assert_eq!(p.source, "request:12");
        assert_eq!(p.corrected_by_request(), Some(12));
        for other in ["collection", "request:", "request:x", "requests:3"] {
            p.source = other.into();
            assert_eq!(p.corrected_by_request(), None, "{other}");
        }
    }
}
