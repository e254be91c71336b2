//! What an event adds to a profile: traits with their data category and provenance (the
//! collection point's field map, its notice and version), the subject's location, and how long
//! each piece may be kept (the retention of the purposes it serves).

use crate::identity::IdentifierKind;
use crate::manifest::Manifest;
use crate::subject::{Provenance, Trait};
use crate::{SubjectId, UnixMillis};
use serde_json::{Map, Value, json};

/// The category of a trait the collection point does not map: kept, but no notice covers it,
/// so no purpose may use it (fail closed).
pub const UNMAPPED_CATEGORY: &str = "user.unmapped";

/// Provenance `source` of everything the collection API writes.
pub const COLLECTION_SOURCE: &str = "collection";

/// Traits that are identifiers: their values are sealed with the identities, and the trait row
/// keeps only the category and provenance.
pub const IDENTIFIER_TRAITS: [(&str, IdentifierKind); 2] = [
    ("email", IdentifierKind::Email),
    ("phone", IdentifierKind::Phone),
];

const DAY: UnixMillis = 24 * 60 * 60 * 1000;

/// The traits of an `identify` call as profile rows. `collection_point` is the one the event
/// named (or its write key's default); one the manifest does not declare promises nothing.
pub fn profile_traits(
    manifest: &Manifest,
    collection_point: Option<&str>,
    traits: &Map<String, Value>,
    subject: SubjectId,
    at: UnixMillis,
) -> Vec<Trait> {
    let point_key = collection_point.unwrap_or_default();
    let point = manifest.collection_points.get(point_key);
    let notice = point.and_then(|p| manifest.notices.get_key_value(&p.notice));
    traits
        .iter()
        .map(|(key, value)| {
            let category = point
                .and_then(|p| p.fields.get(key))
                .cloned()
                .unwrap_or_else(|| UNMAPPED_CATEGORY.to_owned());
            let value = match IDENTIFIER_TRAITS.iter().find(|(k, _)| k == key) {
                Some((_, kind)) => json!({ "sealed_identifier": kind.as_str() }),
                None => value.clone(),
            };
            Trait {
                subject,
                key: key.clone(),
                value,
                category,
                provenance: Provenance {
                    collection_point: point_key.to_owned(),
                    notice_id: notice.map(|(id, _)| id.clone()).unwrap_or_default(),
                    notice_version: notice.map_or(0, |(_, n)| n.version),
                    collected_at: at,
                    source: COLLECTION_SOURCE.to_owned(),
                },
            }
        })
        .collect()
}

/// Where a subject is, from `context.location` and `context.timezone`. Anything unreadable is
/// left out (the subject then falls under the strictest regime), never an error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    /// ISO 3166-1 alpha-2.
    pub country: Option<String>,
    /// Subdivision code without the country prefix.
    pub region: Option<String>,
    /// IANA time zone.
    pub time_zone: Option<String>,
}

impl Location {
    pub fn is_empty(&self) -> bool {
        self.country.is_none() && self.region.is_none() && self.time_zone.is_none()
    }
}

pub fn location(context: &Map<String, Value>) -> Location {
    let loc = context.get("location").and_then(Value::as_object);
    let text = |name: &str| {
        loc.and_then(|l| l.get(name))
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let country = text("country").and_then(country_code);
    let region = text("region").and_then(|r| region_code(country.as_deref(), r));
    let time_zone = context
        .get("timezone")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|z| z.parse::<chrono_tz::Tz>().is_ok())
        .map(str::to_owned);
    Location {
        region: region.filter(|_| country.is_some()),
        country,
        time_zone,
    }
}

fn country_code(s: &str) -> Option<String> {
    if s.len() == 2 && s.chars().all(|c| c.is_ascii_alphabetic()) {
        return Some(s.to_ascii_uppercase());
    }
    let code = match s.to_ascii_lowercase().as_str() {
        "united states" | "united states of america" | "usa" => "US",
        "united kingdom" | "great britain" => "GB",
        "germany" | "deutschland" => "DE",
        "france" => "FR",
        "spain" | "españa" => "ES",
        "italy" | "italia" => "IT",
        "netherlands" | "the netherlands" => "NL",
        "belgium" => "BE",
        "austria" | "österreich" => "AT",
        "ireland" => "IE",
        "portugal" => "PT",
        "sweden" => "SE",
        "denmark" => "DK",
        "finland" => "FI",
        "norway" => "NO",
        "poland" => "PL",
        "switzerland" => "CH",
        "canada" => "CA",
        "brazil" | "brasil" => "BR",
        "mexico" => "MX",
        "australia" => "AU",
        "japan" => "JP",
        "india" => "IN",
        _ => return None,
    };
    Some(code.to_owned())
}

fn region_code(country: Option<&str>, s: &str) -> Option<String> {
    let s = match (country, s.split_once('-')) {
        (Some(c), Some((prefix, rest))) if prefix.eq_ignore_ascii_case(c) => rest,
        _ => s,
    };
    if (1..=3).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Some(s.to_ascii_uppercase());
    }
    if country != Some("US") {
        return None;
    }
    US_STATE_NAMES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(s))
        .map(|(_, code)| (*code).to_owned())
}

const US_STATE_NAMES: &[(&str, &str)] = &[
    ("Alabama", "AL"),
    ("Alaska", "AK"),
    ("Arizona", "AZ"),
    ("Arkansas", "AR"),
    ("California", "CA"),
    ("Colorado", "CO"),
    ("Connecticut", "CT"),
    ("Delaware", "DE"),
    ("District of Columbia", "DC"),
    ("Florida", "FL"),
    ("Georgia", "GA"),
    ("Hawaii", "HI"),
    ("Idaho", "ID"),
    ("Illinois", "IL"),
    ("Indiana", "IN"),
    ("Iowa", "IA"),
    ("Kansas", "KS"),
    ("Kentucky", "KY"),
    ("Louisiana", "LA"),
    ("Maine", "ME"),
    ("Maryland", "MD"),
    ("Massachusetts", "MA"),
    ("Michigan", "MI"),
    ("Minnesota", "MN"),
    ("Mississippi", "MS"),
    ("Missouri", "MO"),
    ("Montana", "MT"),
    ("Nebraska", "NE"),
    ("Nevada", "NV"),
    ("New Hampshire", "NH"),
    ("New Jersey", "NJ"),
    ("New Mexico", "NM"),
    ("New York", "NY"),
    ("North Carolina", "NC"),
    ("North Dakota", "ND"),
    ("Ohio", "OH"),
    ("Oklahoma", "OK"),
    ("Oregon", "OR"),
    ("Pennsylvania", "PA"),
    ("Rhode Island", "RI"),
    ("South Carolina", "SC"),
    ("South Dakota", "SD"),
    ("Tennessee", "TN"),
    ("Texas", "TX"),
    ("Utah", "UT"),
    ("Vermont", "VT"),
    ("Virginia", "VA"),
    ("Washington", "WA"),
    ("West Virginia", "WV"),
    ("Wisconsin", "WI"),
    ("Wyoming", "WY"),
];

// --- retention -------------------------------------------------------------------------------

/// The longest retention among `purposes` (days); purposes without one do not count.
pub fn retention_days<'a>(
    manifest: &Manifest,
    purposes: impl IntoIterator<Item = &'a String>,
) -> Option<u32> {
    purposes
        .into_iter()
        .filter_map(|p| manifest.purposes.get(p))
        .map(|p| p.retention_days)
        .filter(|d| *d > 0)
        .max()
}

/// The shortest retention the manifest declares: how long data that serves no purpose lasts.
pub fn shortest_retention_days(manifest: &Manifest) -> u32 {
    manifest
        .purposes
        .values()
        .map(|p| p.retention_days)
        .filter(|d| *d > 0)
        .min()
        .unwrap_or(0)
}

/// When an event received at `received_at` that may serve `usable` must be gone.
pub fn event_retain_until(
    manifest: &Manifest,
    usable: &[String],
    received_at: UnixMillis,
) -> UnixMillis {
    let days =
        retention_days(manifest, usable).unwrap_or_else(|| shortest_retention_days(manifest));
    received_at.saturating_add(UnixMillis::from(days).saturating_mul(DAY))
}

/// Events received before this are past every purpose's retention, whatever they served.
pub fn event_cutoff(manifest: &Manifest, now: UnixMillis) -> UnixMillis {
    let days = retention_days(manifest, manifest.purposes.keys()).unwrap_or(0);
    now.saturating_sub(UnixMillis::from(days).saturating_mul(DAY))
}

/// How far back traits may reach: per notice, the longest retention among the purposes it
/// promised; for traits under a notice the manifest does not know, the shortest retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraitCutoffs {
    /// Notice id → traits collected before this time go.
    pub by_notice: Vec<(String, UnixMillis)>,
    /// For every other notice (including none).
    pub otherwise: UnixMillis,
}

pub fn trait_cutoffs(manifest: &Manifest, now: UnixMillis) -> TraitCutoffs {
    let before = |days: u32| now.saturating_sub(UnixMillis::from(days).saturating_mul(DAY));
    let shortest = shortest_retention_days(manifest);
    TraitCutoffs {
        by_notice: manifest
            .notices
            .iter()
            .map(|(id, n)| {
                let days = retention_days(manifest, &n.purposes).unwrap_or(shortest);
                (id.clone(), before(days))
            })
            .collect(),
        otherwise: before(shortest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        crate::manifest::load(&crate::manifest::demo_toml(), "kept.toml")
            .unwrap()
            .manifest
    }

    #[test]
    fn traits_take_category_and_provenance_from_the_collection_point() {
        let m = manifest();
        let traits = serde_json::json!({"email": "a@b.co", "name": "Ada", "shoe": 38});
        let rows = profile_traits(
            &m,
            Some("checkout"),
            traits.as_object().unwrap(),
            SubjectId(4),
            77,
        );
        let by_key = |k: &str| rows.iter().find(|t| t.key == k).unwrap();
        assert_eq!(by_key("email").category, "user.contact.email");
        assert_eq!(by_key("email").value["sealed_identifier"], "email");
        assert_eq!(by_key("name").value, "Ada");
        assert_eq!(by_key("shoe").category, UNMAPPED_CATEGORY);
        assert_eq!(by_key("name").provenance.notice_id, "checkout");
        assert_eq!(by_key("name").provenance.notice_version, 1);
        let nowhere = profile_traits(
            &m,
            Some("nope"),
            traits.as_object().unwrap(),
            SubjectId(4),
            77,
        );
        assert!(
            nowhere
                .iter()
                .all(|t| t.category == UNMAPPED_CATEGORY && t.provenance.notice_id.is_empty())
        );
    }

    #[test]
    fn locations_are_read_leniently() {
        let ctx = serde_json::json!({"location": {"country": "United States", "region": "California"}, "timezone": "America/Los_Angeles"});
        let l = location(ctx.as_object().unwrap());
        assert_eq!(l.country.as_deref(), Some("US"));
        assert_eq!(l.region.as_deref(), Some("CA"));
        assert_eq!(l.time_zone.as_deref(), Some("America/Los_Angeles"));
        let ctx = serde_json::json!({"location": {"country": "de", "region": "DE-BY"}, "timezone": "Mars/Base"});
        let l = location(ctx.as_object().unwrap());
        assert_eq!(
            (l.country.as_deref(), l.region.as_deref(), l.time_zone),
            (Some("DE"), Some("BY"), None)
        );
    }

    #[test]
    fn retention_follows_the_purposes_served() {
        let m = manifest();
        let ops = vec!["essential.service.operations".to_owned()];
        assert_eq!(event_retain_until(&m, &ops, 0), 6 * 365 * DAY);
        // Serving nothing: the shortest retention (90 days).
        assert_eq!(event_retain_until(&m, &[], 0), 90 * DAY);
        let cut = trait_cutoffs(&m, 1000 * DAY);
        let rewards = cut
            .by_notice
            .iter()
            .find(|(n, _)| n == "rewards")
            .unwrap()
            .1;
        // The rewards notice promised loyalty (3 years) and SMS notifications (90 days).
        assert_eq!(rewards, 1000 * DAY - 3 * 365 * DAY);
        assert_eq!(cut.otherwise, 1000 * DAY - 90 * DAY);
    }
}
