//! The demo population `kept serve --demo` loads: a few thousand customers of the example shop
//! spread over every regime, with traits carrying the provenance of the collection point that
//! gathered them, consent records, channel preferences and recent contacts.
//!
//! Pure and deterministic: the same seed, size, `now` and manifest give the same population.
//! Subject ids are dense `0..size`; a loader inserts the subjects first and maps the ids.

use crate::collection::profile::{retention_days, shortest_retention_days};
use crate::ledger::{CollectionMethod, ConsentAction, ConsentRecord, Evidence, NoticeRef};
use crate::manifest::Manifest;
use crate::regime::Regime;
use crate::subject::{
    ChannelPreference, Contact, Frequency, Period, Provenance, QuietHours, Subject, Trait,
};
use crate::{SubjectId, UnixMillis};
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

/// The seed `kept serve --demo` uses.
pub const DEFAULT_SEED: u64 = 7300;
/// The number of subjects `kept serve --demo` loads.
pub const DEFAULT_SIZE: u32 = 5_000;

/// Collection points of the demo manifest the population comes through.
pub const CHECKOUT: &str = "checkout";
pub const REWARDS_SIGNUP: &str = "rewards_signup";
pub const NEWSLETTER_SIGNUP: &str = "newsletter_signup";
pub const WEB_SHOP: &str = "web_shop";
pub const SMS_OFFERS_OPTIN: &str = "sms_offers_optin";

/// Purposes the demo's consent records name.
pub const MARKETING: &str = "marketing.communications";
pub const TARGETED_ADVERTISING: &str = "marketing.advertising.third_party.targeted";

const DAY: UnixMillis = 24 * 60 * 60 * 1000;
const MINUTE: UnixMillis = 60 * 1000;

/// Everything the demo loads, ids dense from 0.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoPopulation {
    /// `subjects[i].id == SubjectId(i)`.
    pub subjects: Vec<Subject>,
    /// Ordered by subject, then key.
    pub traits: Vec<Trait>,
    /// Ordered by time: the order they are appended to the ledger.
    pub consents: Vec<ConsentRecord>,
    pub preferences: Vec<ChannelPreference>,
    pub contacts: Vec<Contact>,
}

/// The manifest lacks something the demo population refers to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DemoError {
    #[error("the manifest has no collection point `{0}`, which the demo population uses")]
    MissingCollectionPoint(&'static str),
    #[error("the manifest has no notice `{0}`, which the demo population uses")]
    MissingNotice(String),
    #[error("the manifest has no purpose `{0}`, which the demo population uses")]
    MissingPurpose(&'static str),
}

impl DemoError {
    pub fn code(&self) -> &'static str {
        match self {
            DemoError::MissingCollectionPoint(_) => "demo.missing_collection_point",
            DemoError::MissingNotice(_) => "demo.missing_notice",
            DemoError::MissingPurpose(_) => "demo.missing_purpose",
        }
    }
}

struct Location {
    country: Option<&'static str>,
    region: Option<&'static str>,
    time_zone: Option<&'static str>,
    weight: u32,
}

const fn at(
    country: &'static str,
    region: Option<&'static str>,
    time_zone: &'static str,
    weight: u32,
) -> Location {
    Location {
        country: Some(country),
        region,
        time_zone: Some(time_zone),
        weight,
    }
}

/// Where the shop's customers are: the EU, the UK, US states with and without a privacy law,
/// Canada, Brazil, and some whose location is unknown or outside every regime.
const LOCATIONS: &[Location] = &[
    at("DE", None, "Europe/Berlin", 7),
    at("FR", None, "Europe/Paris", 5),
    at("ES", None, "Europe/Madrid", 4),
    at("IT", None, "Europe/Rome", 4),
    at("NL", None, "Europe/Amsterdam", 3),
    at("IE", None, "Europe/Dublin", 2),
    at("SE", None, "Europe/Stockholm", 1),
    at("PL", None, "Europe/Warsaw", 1),
    at("AT", None, "Europe/Vienna", 1),
    at("BE", None, "Europe/Brussels", 1),
    at("PT", None, "Europe/Lisbon", 1),
    at("GB", None, "Europe/London", 9),
    at("US", Some("CA"), "America/Los_Angeles", 9),
    at("US", Some("CO"), "America/Denver", 3),
    at("US", Some("TX"), "America/Chicago", 5),
    at("US", Some("FL"), "America/New_York", 4),
    at("US", Some("NY"), "America/New_York", 4),
    at("US", Some("VA"), "America/New_York", 2),
    at("US", Some("WA"), "America/Los_Angeles", 2),
    at("US", Some("IL"), "America/Chicago", 2),
    at("US", Some("CT"), "America/New_York", 1),
    at("US", Some("OR"), "America/Los_Angeles", 1),
    at("US", Some("GA"), "America/New_York", 1),
    Location {
        country: Some("US"),
        region: None,
        time_zone: None,
        weight: 1,
    },
    at("CA", Some("ON"), "America/Toronto", 4),
    at("CA", Some("QC"), "America/Toronto", 2),
    at("CA", Some("BC"), "America/Vancouver", 2),
    at("BR", Some("SP"), "America/Sao_Paulo", 4),
    at("BR", Some("RJ"), "America/Sao_Paulo", 2),
    at("BR", Some("MG"), "America/Sao_Paulo", 1),
    at("JP", None, "Asia/Tokyo", 1),
    at("AU", None, "Australia/Sydney", 1),
    at("IN", None, "Asia/Kolkata", 1),
    UNKNOWN,
];

const UNKNOWN: Location = Location {
    country: None,
    region: None,
    time_zone: None,
    weight: 3,
};

const FIRST_NAMES: &[&str] = &[
    "Ana", "Ben", "Chloé", "Dario", "Elif", "Farah", "Gustav", "Hana", "Ines", "Jonas", "Kofi",
    "Lena", "Mateo", "Nora", "Oskar", "Priya", "Quinn", "Rosa", "Sven", "Tomás", "Uma", "Viktor",
    "Wen", "Ximena", "Yusuf", "Zoe", "Aisha", "Bruno", "Camila", "Dmitri", "Emma", "Felipe",
    "Grace", "Hiro", "Isla", "Jamal", "Keiko", "Liam", "Maya", "Noah",
];

const LAST_NAMES: &[&str] = &[
    "Almeida",
    "Becker",
    "Chen",
    "Dubois",
    "Eriksen",
    "Fischer",
    "García",
    "Hughes",
    "Ivanova",
    "Jensen",
    "Kowalski",
    "López",
    "Martin",
    "Nakamura",
    "O'Brien",
    "Patel",
    "Rossi",
    "Silva",
    "Tanaka",
    "Usman",
    "Van Dijk",
    "Walsh",
    "Xu",
    "Yilmaz",
    "Zimmermann",
    "Andersson",
    "Brown",
    "Costa",
    "Dias",
    "Evans",
    "Ferreira",
    "Gonzalez",
    "Hansen",
    "Kim",
    "Lefebvre",
    "Moreau",
    "Nguyen",
    "Okafor",
    "Popescu",
    "Schmidt",
];

const SHOP_CATEGORIES: &[&str] = &[
    "outdoor", "kitchen", "garden", "shoes", "books", "toys", "lighting", "textiles", "tools",
];

const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Mobile Safari/537.36",
];

/// The parts of the manifest the population refers to, looked up once.
struct Plan<'m> {
    manifest: &'m Manifest,
    /// Topics on email under the newsletter's purposes, first = the main newsletter.
    email_topics: Vec<String>,
    /// The topic SMS offers are sent under, if the manifest has one.
    sms_topic: Option<String>,
    personalization_purposes: Vec<String>,
}

impl<'m> Plan<'m> {
    fn new(manifest: &'m Manifest) -> Result<Plan<'m>, DemoError> {
        for cp in [
            CHECKOUT,
            REWARDS_SIGNUP,
            NEWSLETTER_SIGNUP,
            WEB_SHOP,
            SMS_OFFERS_OPTIN,
        ] {
            let point = manifest
                .collection_points
                .get(cp)
                .ok_or(DemoError::MissingCollectionPoint(cp))?;
            if !manifest.notices.contains_key(&point.notice) {
                return Err(DemoError::MissingNotice(point.notice.clone()));
            }
        }
        for purpose in [MARKETING, TARGETED_ADVERTISING] {
            if !manifest.purposes.contains_key(purpose) {
                return Err(DemoError::MissingPurpose(purpose));
            }
        }
        let topics_on = |channel: &str| -> Vec<String> {
            let mut topics: Vec<String> = manifest
                .topics
                .iter()
                .filter(|(_, t)| t.purpose == MARKETING && t.channels.iter().any(|c| c == channel))
                .map(|(k, _)| k.clone())
                .collect();
            // The newsletter first, whatever the map order, so "the main topic" is stable.
            topics.sort_by_key(|k| (k != "newsletter", k.clone()));
            topics
        };
        let personalization_purposes = manifest
            .collection_points
            .get(WEB_SHOP)
            .and_then(|cp| manifest.notices.get(&cp.notice))
            .map(|n| {
                n.purposes
                    .iter()
                    .filter(|p| p.starts_with("personalize"))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        Ok(Plan {
            manifest,
            email_topics: topics_on("email"),
            sms_topic: topics_on("sms").into_iter().find(|t| t != "newsletter"),
            personalization_purposes,
        })
    }

    /// The notice a consent about `purpose` given at `collection_point` names: the point's own,
    /// judged as collection judges a notice a client names (`promises::named_notice`), so the
    /// demo's ledger never names a notice that does not promise the purpose.
    fn notice_of(&self, collection_point: &str, purpose: &str) -> Option<NoticeRef> {
        let cp = self.manifest.collection_points.get(collection_point)?;
        match crate::manifest::promises::named_notice(
            self.manifest,
            purpose,
            Some(&cp.notice),
            None,
        ) {
            crate::manifest::promises::Named::Promising(notice) => Some(notice),
            crate::manifest::promises::Named::Unpromised
            | crate::manifest::promises::Named::Nothing => None,
        }
    }
}

/// One person as generated, before it becomes rows.
struct Person {
    first: &'static str,
    last: &'static str,
    email: String,
    phone: String,
    city: &'static str,
}

/// Generates the demo population for `manifest` (the demo manifest, or one that declares the
/// same collection points and purposes).
pub fn population(
    seed: u64,
    size: u32,
    now: UnixMillis,
    manifest: &Manifest,
) -> Result<DemoPopulation, DemoError> {
    let plan = Plan::new(manifest)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let total_weight: u32 = LOCATIONS.iter().map(|l| l.weight).sum();
    let mut out = DemoPopulation {
        subjects: Vec::with_capacity(size as usize),
        traits: Vec::new(),
        consents: Vec::new(),
        preferences: Vec::new(),
        contacts: Vec::new(),
    };
    for i in 0..size {
        let id = SubjectId(i);
        let location = pick_location(&mut rng, total_weight);
        let created_at = now - rng.gen_range(DAY..3 * 365 * DAY);
        let person = person(&mut rng, i, location);
        let subject = Subject {
            id,
            user_id: rng.gen_bool(0.9).then(|| format!("u{:06}", i + 1)),
            country: location.country.map(str::to_owned),
            region: location.region.map(str::to_owned),
            time_zone: location.time_zone.map(str::to_owned),
            created_at,
            erasure_requested_at: None,
            suppressed: false,
            erased_at: None,
            erasure_suppressed_at: None,
        };
        let regime = subject.regime();
        generate_subject(&mut rng, &plan, &mut out, &subject, regime, &person, now);
        out.subjects.push(subject);
    }
    out.traits
        .sort_by(|a, b| (a.subject, &a.key).cmp(&(b.subject, &b.key)));
    out.consents.sort_by_key(|c| (c.at, c.subject));
    out.contacts.sort_by_key(|c| (c.at, c.subject));
    Ok(out)
}

fn pick_location(rng: &mut ChaCha8Rng, total_weight: u32) -> &'static Location {
    let mut ticket = rng.gen_range(0..total_weight);
    for location in LOCATIONS {
        if ticket < location.weight {
            return location;
        }
        ticket -= location.weight;
    }
    // Unreachable while the weights sum to `total_weight`.
    &UNKNOWN
}

fn choose<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> Option<&'a T> {
    if items.is_empty() {
        return None;
    }
    items.get(rng.gen_range(0..items.len()))
}

fn person(rng: &mut ChaCha8Rng, i: u32, location: &Location) -> Person {
    let first = choose(rng, FIRST_NAMES).copied().unwrap_or("Alex");
    let last = choose(rng, LAST_NAMES).copied().unwrap_or("Doe");
    let local: String = format!("{first}.{last}")
        .to_lowercase()
        .chars()
        .map(|c| match c {
            'é' => 'e',
            'á' => 'a',
            'í' => 'i',
            'ó' => 'o',
            'ú' => 'u',
            c if c.is_ascii_alphanumeric() || c == '.' => c,
            _ => '-',
        })
        .collect();
    let domain = choose(rng, &["example.com", "example.org", "example.net"])
        .copied()
        .unwrap_or("example.com");
    let email = format!("{local}.{}@{domain}", i + 1);
    let calling_code = match location.country {
        Some("US" | "CA") => "1",
        Some("GB") => "44",
        Some("BR") => "55",
        Some("DE") => "49",
        Some("FR") => "33",
        Some("ES") => "34",
        Some("IT") => "39",
        Some("NL") => "31",
        Some("JP") => "81",
        Some("AU") => "61",
        Some("IN") => "91",
        _ => "353",
    };
    let phone = format!("+{calling_code}555{:07}", rng.gen_range(0..10_000_000u32));
    let city = match (location.country, location.region) {
        (Some("US"), Some("CA")) => "Oakland",
        (Some("US"), Some("CO")) => "Denver",
        (Some("US"), Some("TX")) => "Austin",
        (Some("US"), Some("FL")) => "Tampa",
        (Some("US"), _) => "Springfield",
        (Some("CA"), Some("QC")) => "Montréal",
        (Some("CA"), _) => "Toronto",
        (Some("BR"), _) => "São Paulo",
        (Some("GB"), _) => "Leeds",
        (Some("DE"), _) => "Leipzig",
        (Some("FR"), _) => "Lyon",
        _ => "Lakeside",
    };
    Person {
        first,
        last,
        email,
        phone,
        city,
    }
}

fn trait_value(
    category: &str,
    person: &Person,
    country: Option<&str>,
    rng: &mut ChaCha8Rng,
    at_ms: UnixMillis,
) -> Option<serde_json::Value> {
    let value = if category == "user.contact.email" {
        json!(person.email)
    } else if category == "user.contact.phone_number" {
        json!(person.phone)
    } else if category.starts_with("user.contact.address") {
        json!({
            "line1": format!("{} Market Street", rng.gen_range(1..400)),
            "city": person.city,
            "postal_code": format!("{:05}", rng.gen_range(1000..99_999)),
            "country": country,
        })
    } else if category.starts_with("user.name") {
        json!(format!("{} {}", person.first, person.last))
    } else if category == "user.behavior.purchase_history" {
        json!({
            "orders": rng.gen_range(1..25),
            "lifetime_value_cents": rng.gen_range(1_500..250_000),
            "last_order_at": at_ms,
        })
    } else if category == "user.behavior.browsing_history" {
        let mut viewed: Vec<&str> = (0..rng.gen_range(1..4))
            .filter_map(|_| choose(rng, SHOP_CATEGORIES).copied())
            .collect();
        viewed.sort_unstable();
        viewed.dedup();
        json!({ "viewed_categories": viewed, "sessions": rng.gen_range(1..60) })
    } else {
        return None;
    };
    Some(value)
}

#[expect(
    clippy::too_many_arguments,
    reason = "one subject's generation reads all of these; a struct would only rename them"
)]
fn record(
    subject: &Subject,
    regime: Regime,
    purpose: &str,
    channel: Option<&str>,
    topic: Option<&str>,
    action: ConsentAction,
    notice: Option<NoticeRef>,
    source: &str,
    method: CollectionMethod,
    evidence: Evidence,
    at_ms: UnixMillis,
) -> ConsentRecord {
    ConsentRecord {
        subject: subject.id,
        purpose: purpose.to_owned(),
        channel: channel.map(str::to_owned),
        topic: topic.map(str::to_owned),
        action,
        notice,
        regime: regime.as_str().to_owned(),
        source: source.to_owned(),
        method,
        evidence,
        at: at_ms,
    }
}

fn evidence(rng: &mut ChaCha8Rng, reference: String) -> Evidence {
    let mut ip = [0u8; 16];
    rng.fill(&mut ip);
    Evidence {
        ip_hash: Some(hex::encode(blake3::hash(&ip).as_bytes())),
        user_agent: choose(rng, USER_AGENTS).map(|s| (*s).to_owned()),
        text_hash: None,
        reference: Some(reference),
    }
}

/// When a field first given at `first` was last given again, so that what the population
/// holds at `now` is inside the retention its notice's purposes declare (the same window the
/// retention job applies): a person who came through long ago has come back since (a later
/// order, a profile update). Deterministic and without drawing from the generator, so the
/// rest of the population does not change with the manifest's retention.
fn within_retention(
    manifest: &Manifest,
    notice: Option<&crate::manifest::Notice>,
    first: UnixMillis,
    now: UnixMillis,
) -> UnixMillis {
    let days = notice
        .and_then(|n| retention_days(manifest, &n.purposes))
        .unwrap_or_else(|| shortest_retention_days(manifest));
    let window = UnixMillis::from(days) * DAY;
    let age = now - first;
    if window <= 0 || age < window {
        return first;
    }
    now - age % window
}

fn generate_subject(
    rng: &mut ChaCha8Rng,
    plan: &Plan<'_>,
    out: &mut DemoPopulation,
    subject: &Subject,
    regime: Regime,
    person: &Person,
    now: UnixMillis,
) {
    let i = subject.id.0;
    let span = (now - subject.created_at).max(DAY);
    let when = |rng: &mut ChaCha8Rng, after: UnixMillis| -> UnixMillis {
        let room = (now - after).max(MINUTE);
        after + rng.gen_range(0..room)
    };

    // Which collection points this person went through, in time order.
    let customer = rng.gen_bool(0.7);
    let rewards = customer && rng.gen_bool(0.4);
    let newsletter = rng.gen_bool(0.35);
    let sms_offers = rewards && rng.gen_bool(0.1);
    let web_shop = rng.gen_bool(0.6) || !(customer || newsletter);
    let mut events: Vec<(UnixMillis, &'static str)> = Vec::new();
    let first_seen = subject.created_at + rng.gen_range(0..span.min(30 * DAY));
    if customer {
        events.push((first_seen, CHECKOUT));
    }
    if web_shop {
        events.push((subject.created_at + rng.gen_range(0..span), WEB_SHOP));
    }
    if newsletter {
        events.push((
            subject.created_at + rng.gen_range(0..span),
            NEWSLETTER_SIGNUP,
        ));
    }
    let mut rewards_at = None;
    if rewards {
        let t = when(rng, first_seen);
        rewards_at = Some(t);
        events.push((t, REWARDS_SIGNUP));
    }
    if let (true, Some(after)) = (sms_offers, rewards_at) {
        events.push((when(rng, after), SMS_OFFERS_OPTIN));
    }
    events.sort_by_key(|(t, cp)| (*t, *cp));

    // Traits: every field each collection point collects, the latest collection winning.
    let mut traits: Vec<Trait> = Vec::new();
    for (t, cp_id) in &events {
        let Some(cp) = plan.manifest.collection_points.get(*cp_id) else {
            continue;
        };
        let notice = plan.manifest.notices.get(&cp.notice);
        let version = notice.map_or(1, |n| n.version);
        let collected_at = within_retention(plan.manifest, notice, *t, now);
        for (field, category) in &cp.fields {
            let Some(value) = trait_value(category, person, subject.country.as_deref(), rng, *t)
            else {
                continue;
            };
            let new = Trait {
                subject: subject.id,
                key: field.clone(),
                value,
                category: category.clone(),
                provenance: Provenance {
                    collection_point: (*cp_id).to_owned(),
                    notice_id: cp.notice.clone(),
                    notice_version: version,
                    collected_at,
                    source: "demo".to_owned(),
                },
            };
            match traits.iter_mut().find(|old| old.key == new.key) {
                Some(old) => *old = new,
                None => traits.push(new),
            }
        }
    }
    out.traits.extend(traits);

    let opt_in_regime = matches!(
        regime,
        Regime::Gdpr | Regime::UkGdpr | Regime::Strictest | Regime::Lgpd
    );
    let mut subscribed_email: Vec<String> = Vec::new();
    let mut subscribed_sms: Option<Option<String>> = None;
    for (t, cp_id) in &events {
        let t = *t;
        match *cp_id {
            NEWSLETTER_SIGNUP => {
                let Some(notice) = plan.notice_of(NEWSLETTER_SIGNUP, MARKETING) else {
                    continue;
                };
                let method = if matches!(regime, Regime::Gdpr | Regime::UkGdpr) {
                    CollectionMethod::DoubleOptIn
                } else {
                    CollectionMethod::WebForm
                };
                for (n, topic) in plan.email_topics.iter().enumerate() {
                    if n > 0 && !rng.gen_bool(0.6) {
                        continue;
                    }
                    out.consents.push(record(
                        subject,
                        regime,
                        MARKETING,
                        Some("email"),
                        Some(topic),
                        ConsentAction::Given,
                        Some(notice.clone()),
                        "collection",
                        method,
                        evidence(rng, format!("demo-{i}-newsletter")),
                        t,
                    ));
                    subscribed_email.push(topic.clone());
                }
                if rng.gen_bool(0.15)
                    && let Some(topic) = choose(rng, &subscribed_email).cloned()
                {
                    out.consents.push(record(
                        subject,
                        regime,
                        MARKETING,
                        Some("email"),
                        Some(&topic),
                        ConsentAction::Withdrawn,
                        Some(notice.clone()),
                        "preference_center",
                        if rng.gen_bool(0.5) {
                            CollectionMethod::Reply
                        } else {
                            CollectionMethod::WebForm
                        },
                        evidence(rng, format!("demo-{i}-unsubscribe")),
                        when(rng, t),
                    ));
                    subscribed_email.retain(|s| *s != topic);
                }
            }
            WEB_SHOP => {
                if opt_in_regime && rng.gen_bool(0.55) {
                    for purpose in &plan.personalization_purposes {
                        let notice = plan.notice_of(WEB_SHOP, purpose);
                        out.consents.push(record(
                            subject,
                            regime,
                            purpose,
                            Some("web"),
                            None,
                            ConsentAction::Given,
                            notice,
                            "collection",
                            CollectionMethod::Banner,
                            evidence(rng, format!("demo-{i}-banner")),
                            t,
                        ));
                    }
                }
                let gpc_share = if regime.is_us() { 0.15 } else { 0.03 };
                if rng.gen_bool(gpc_share) {
                    let mut ev = evidence(rng, format!("demo-{i}-gpc"));
                    ev.reference = Some(crate::signals::gpc::EVIDENCE.to_owned());
                    out.consents.push(record(
                        subject,
                        regime,
                        TARGETED_ADVERTISING,
                        None,
                        None,
                        ConsentAction::OptedOut,
                        None,
                        "collection",
                        CollectionMethod::Gpc,
                        ev,
                        t,
                    ));
                }
            }
            SMS_OFFERS_OPTIN => {
                let Some(notice) = plan.notice_of(SMS_OFFERS_OPTIN, MARKETING) else {
                    continue;
                };
                let mut ev = evidence(rng, format!("demo-{i}-sms-optin"));
                // The TCPA disclosure shown is the notice's own text, so its hash is the
                // notice's.
                ev.text_hash = Some(notice.hash.clone());
                out.consents.push(record(
                    subject,
                    regime,
                    MARKETING,
                    Some("sms"),
                    plan.sms_topic.as_deref(),
                    ConsentAction::Given,
                    Some(notice.clone()),
                    "collection",
                    CollectionMethod::Written,
                    ev,
                    t,
                ));
                subscribed_sms = Some(plan.sms_topic.clone());
                if rng.gen_bool(0.1) {
                    out.consents.push(record(
                        subject,
                        regime,
                        MARKETING,
                        Some("sms"),
                        plan.sms_topic.as_deref(),
                        ConsentAction::Withdrawn,
                        Some(notice),
                        "sms_reply",
                        CollectionMethod::Reply,
                        evidence(rng, format!("demo-{i}-stop")),
                        when(rng, t),
                    ));
                    subscribed_sms = None;
                }
            }
            _ => {}
        }
    }

    // A few people in GDPR countries object to direct marketing altogether (Art. 21).
    if matches!(regime, Regime::Gdpr | Regime::UkGdpr) && !events.is_empty() && rng.gen_bool(0.03) {
        out.consents.push(record(
            subject,
            regime,
            MARKETING,
            None,
            None,
            ConsentAction::Objected,
            None,
            "preference_center",
            CollectionMethod::WebForm,
            evidence(rng, format!("demo-{i}-objection")),
            when(rng, subject.created_at),
        ));
        subscribed_email.clear();
        subscribed_sms = None;
    }

    // Channel preferences and recent messages for people still subscribed.
    let updated_at = when(rng, subject.created_at);
    if !subscribed_email.is_empty() {
        if rng.gen_bool(0.25) {
            out.preferences.push(ChannelPreference {
                subject: subject.id,
                channel: "email".to_owned(),
                frequency: Some(Frequency {
                    max: rng.gen_range(1..4),
                    period: if rng.gen_bool(0.7) {
                        Period::Week
                    } else {
                        Period::Month
                    },
                }),
                quiet_hours: rng.gen_bool(0.3).then_some(QuietHours {
                    start_minute: 21 * 60,
                    end_minute: 8 * 60,
                }),
                updated_at,
            });
        }
        for _ in 0..rng.gen_range(0..4) {
            out.contacts.push(Contact {
                subject: subject.id,
                channel: "email".to_owned(),
                purpose: MARKETING.to_owned(),
                topic: choose(rng, &subscribed_email).cloned(),
                at: now - rng.gen_range(MINUTE..30 * DAY),
            });
        }
    }
    if let Some(topic) = subscribed_sms {
        if rng.gen_bool(0.5) {
            out.preferences.push(ChannelPreference {
                subject: subject.id,
                channel: "sms".to_owned(),
                frequency: Some(Frequency {
                    max: 4,
                    period: Period::Month,
                }),
                quiet_hours: Some(QuietHours {
                    start_minute: 20 * 60 + rng.gen_range(0..4) * 15,
                    end_minute: 9 * 60,
                }),
                updated_at,
            });
        }
        for _ in 0..rng.gen_range(0..3) {
            out.contacts.push(Contact {
                subject: subject.id,
                channel: "sms".to_owned(),
                purpose: MARKETING.to_owned(),
                topic: topic.clone(),
                at: now - rng.gen_range(MINUTE..30 * DAY),
            });
        }
    }
}
