//! A synthetic population for the benchmarks, on the demo manifest: subjects over six regimes,
//! email addresses from the newsletter form (promised for marketing) and from checkout (a
//! purchase: soft opt-in), at most one marketing consent record each, and a weekly email cap with
//! recent sends for some. Simple enough that Cedar and SQL can express the same rule exactly,
//! which the benchmarks check by comparing answers.

#![allow(
    dead_code,
    reason = "shared by both benchmarks, and each uses only part of it"
)]

use kept_core::decision::{Compiled, DecisionRequest, SequencedRecord};
use kept_core::index::Change;
use kept_core::ledger::{CollectionMethod, ConsentAction, ConsentRecord, Evidence};
use kept_core::manifest::{Manifest, demo_toml, load};
use kept_core::subject::{
    ChannelPreference, Contact, Frequency, Period, Provenance, Subject, Trait,
};
use kept_core::{SubjectId, UnixMillis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const DAY: UnixMillis = 24 * 60 * 60 * 1000;
/// 1 June 2026, noon UTC.
pub const NOW: UnixMillis = 1_780_315_200_000;
pub const MARKETING: &str = "marketing.communications";

pub const PLACES: &[(&str, Option<&str>, &str)] = &[
    ("DE", None, "gdpr"),
    ("GB", None, "uk_gdpr"),
    ("US", Some("CA"), "ccpa"),
    ("US", Some("TX"), "us_state"),
    ("US", Some("FL"), "us"),
    ("ZZ", None, "strictest"),
];

/// One synthetic person.
#[derive(Debug, Clone)]
pub struct Person {
    pub id: u32,
    /// Index into `PLACES`.
    pub place: usize,
    pub erasure: bool,
    pub suppressed: bool,
    pub email_newsletter: bool,
    pub email_checkout: bool,
    /// (channel, action) of the one marketing record, if any.
    pub consent: Option<(Option<&'static str>, ConsentAction)>,
    /// A cap of two marketing emails a week.
    pub capped: bool,
    pub sends: Vec<UnixMillis>,
}

pub fn person(seed: u64, id: u32) -> Person {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (u64::from(id) << 20));
    let place = match rng.gen_range(0..100) {
        0..30 => 0,
        30..40 => 1,
        40..55 => 2,
        55..70 => 3,
        70..95 => 4,
        _ => 5,
    };
    let consent = rng.gen_bool(0.4).then(|| {
        let channel = if rng.gen_bool(0.5) {
            Some("email")
        } else {
            None
        };
        let action = match rng.gen_range(0..10) {
            0..6 => ConsentAction::Given,
            6..8 => ConsentAction::Withdrawn,
            _ => ConsentAction::OptedOut,
        };
        (channel, action)
    });
    let capped = rng.gen_bool(0.1);
    let sends = if capped {
        (0..rng.gen_range(0..4))
            .map(|_| NOW - rng.gen_range(0..10 * DAY))
            .collect()
    } else {
        Vec::new()
    };
    Person {
        id,
        place,
        erasure: rng.gen_bool(0.01),
        suppressed: rng.gen_bool(0.01),
        email_newsletter: rng.gen_bool(0.7),
        email_checkout: rng.gen_bool(0.5),
        consent,
        capped,
        sends,
    }
}

pub fn manifest() -> Manifest {
    load(&demo_toml(), "kept.toml")
        .map(|l| l.manifest)
        .unwrap_or_else(|e| panic!("demo manifest: {e}"))
}

pub fn compiled() -> Arc<Compiled> {
    Arc::new(Compiled::new(manifest()).unwrap_or_else(|e| panic!("compile: {e}")))
}

fn provenance(point: &str, notice: &str) -> Provenance {
    Provenance {
        collection_point: point.into(),
        notice_id: notice.into(),
        notice_version: 1,
        collected_at: NOW - 100 * DAY,
        source: "bench".into(),
    }
}

/// The changes that put one person into the index. `seq` is the ledger position to use.
pub fn changes(p: &Person, seq: &mut u64) -> Vec<Change> {
    let (country, region, _) = PLACES[p.place];
    let id = SubjectId(p.id);
    let mut out = vec![Change::Subject(Subject {
        id,
        user_id: None,
        country: Some(country.into()),
        region: region.map(Into::into),
        time_zone: Some("Europe/Berlin".into()),
        created_at: NOW - 400 * DAY,
        erasure_requested_at: p.erasure.then_some(NOW - DAY),
        suppressed: p.suppressed,
        erased_at: None,
        erasure_suppressed_at: None,
    })];
    let email = |point: &str, notice: &str| {
        Change::Trait(Trait {
            subject: id,
            key: format!("email@{point}"),
            value: serde_json::Value::Null,
            category: "user.contact.email".into(),
            provenance: provenance(point, notice),
        })
    };
    if p.email_newsletter {
        out.push(email("newsletter_signup", "newsletter"));
    }
    if p.email_checkout {
        out.push(email("checkout", "checkout"));
    }
    if let Some((channel, action)) = p.consent {
        *seq += 1;
        out.push(Change::Consent(SequencedRecord {
            seq: *seq,
            record: ConsentRecord {
                subject: id,
                purpose: MARKETING.into(),
                channel: channel.map(Into::into),
                topic: None,
                action,
                notice: None,
                regime: PLACES[p.place].2.into(),
                source: "bench".into(),
                method: CollectionMethod::WebForm,
                evidence: Evidence::default(),
                at: NOW - 50 * DAY,
            },
        }));
    }
    if p.capped {
        out.push(Change::Preference(ChannelPreference {
            subject: id,
            channel: "email".into(),
            frequency: Some(Frequency {
                max: 2,
                period: Period::Week,
            }),
            quiet_hours: None,
            updated_at: NOW - 30 * DAY,
        }));
        for at in &p.sends {
            out.push(Change::Contact(Contact {
                subject: id,
                channel: "email".into(),
                purpose: MARKETING.into(),
                topic: None,
                at: *at,
            }));
        }
    }
    out
}

/// Marketing emails sent in the cap's window, `(NOW - 7 days, NOW]`.
pub fn sent_this_week(p: &Person) -> i64 {
    p.sends
        .iter()
        .filter(|at| **at > NOW - 7 * DAY && **at <= NOW)
        .count() as i64
}

pub fn request() -> DecisionRequest {
    DecisionRequest::new(MARKETING).channel("email")
}

/// Percentile of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}
