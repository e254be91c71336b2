//! Decisions: one example per reason code, and the fixtures the rulebook, index and seed
//! scenario tests share (the demo manifest plus a few additions so every rule can be reached).

use kept_core::decision::{
    Compiled, Decision, DecisionRequest, Evidence, ReasonCode, SequencedRecord, SubjectState,
    decide,
};
use kept_core::ledger::{CollectionMethod, ConsentAction, ConsentRecord, Evidence as Proof};
use kept_core::manifest::{
    Channel, CollectionKind, CollectionPoint, LegalBasis, Manifest, Notice, Purpose, RegimeKey,
    demo_toml, load,
};
use kept_core::regime::Regime;
use kept_core::rulebook::Obligation;
use kept_core::subject::{
    ChannelPreference, Contact, Frequency, Period, Provenance, QuietHours, Subject, Trait,
};
use kept_core::{SubjectId, UnixMillis};
use std::collections::BTreeMap;
use std::sync::Arc;

pub const DAY: UnixMillis = 24 * 60 * 60 * 1000;

/// Midnight UTC of a date.
pub fn date(y: i32, m: u32, d: u32) -> UnixMillis {
    chrono::NaiveDate::from_ymd_opt(y, m, d)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_millis()
}

/// The default decision time: noon UTC, 1 June 2026.
pub fn now() -> UnixMillis {
    date(2026, 6, 1) + 12 * 60 * 60 * 1000
}

/// The demo manifest (example + addendum).
pub fn demo_manifest() -> Manifest {
    load(&demo_toml(), "kept.toml").unwrap().manifest
}

/// The demo manifest plus what the rule tables need: more channels, an analytics purpose
/// with a basis only under GDPR, sensitive data under a notice, and an inquiry form.
pub fn test_manifest() -> Manifest {
    let mut m = demo_manifest();
    for c in ["phone", "push", "in_app"] {
        m.channels.insert(c.into(), Channel { name: c.into() });
    }
    m.purposes.insert(
        "analytics.reporting".into(),
        Purpose {
            name: "Reports".into(),
            description: "Aggregate reports.".into(),
            owner: "engineering".into(),
            legal_basis: BTreeMap::from([(RegimeKey::Regime(Regime::Gdpr), LegalBasis::Consent)]),
            retention_days: 30,
            soft_opt_in: false,
            sale_or_sharing: false,
            compatible_with: vec![],
            translations: BTreeMap::new(),
        },
    );
    let mut health = m.notices["newsletter"].clone();
    health.categories = vec!["user.health_and_medical".into()];
    health.purposes = vec![
        "essential.service.operations".into(),
        "analytics.reporting".into(),
    ];
    health.channels = vec!["email".into()];
    m.notices.insert("health".into(), health);
    m.collection_points.insert(
        "health_form".into(),
        CollectionPoint {
            name: "Health questionnaire".into(),
            notice: "health".into(),
            kind: CollectionKind::Other,
            fields: BTreeMap::from([("allergies".into(), "user.health_and_medical".into())]),
        },
    );
    // A checkout whose notice tells customers they will get emails about similar products
    // unless they object: what ePrivacy soft opt-in needs, and the example does not have.
    let mut order_emails = m.notices["newsletter"].clone();
    order_emails.purposes = vec!["marketing.communications".into()];
    m.notices.insert("order_emails".into(), order_emails);
    m.collection_points.insert(
        "checkout_offers".into(),
        CollectionPoint {
            name: "Checkout, order emails".into(),
            notice: "order_emails".into(),
            kind: CollectionKind::Purchase,
            fields: BTreeMap::from([("email".into(), "user.contact.email".into())]),
        },
    );
    m.purposes
        .get_mut("marketing.communications")
        .unwrap()
        .soft_opt_in = true;
    // Personalisation on consent in California and the other states with a privacy law, so
    // that the rows reading the declared basis there have a use that needs consent.
    let profiled = m.purposes.get_mut("personalize.content.profiled").unwrap();
    for regime in [Regime::Ccpa, Regime::UsState] {
        profiled
            .legal_basis
            .insert(RegimeKey::Regime(regime), LegalBasis::Consent);
    }
    m.collection_points.insert(
        "contact_form".into(),
        CollectionPoint {
            name: "Contact us".into(),
            notice: "newsletter".into(),
            kind: CollectionKind::Inquiry,
            fields: BTreeMap::from([("email".into(), "user.contact.email".into())]),
        },
    );
    m
}

pub fn compiled(m: Manifest) -> Arc<Compiled> {
    Arc::new(Compiled::new(m).unwrap())
}

pub fn test_ctx() -> Arc<Compiled> {
    compiled(test_manifest())
}

/// A subject at a location (`"US-CO"`, `"DE"`, `"ZZ"`, or `""` for unknown).
pub fn subject(id: u32, location: &str) -> Subject {
    let (country, region) = match location.split_once('-') {
        Some((c, r)) => (Some(c.to_owned()), Some(r.to_owned())),
        None if location.is_empty() => (None, None),
        None => (Some(location.to_owned()), None),
    };
    Subject {
        id: SubjectId(id),
        user_id: Some(format!("u{id}")),
        country,
        region,
        time_zone: Some("Europe/Berlin".into()),
        created_at: date(2020, 1, 1),
        erasure_requested_at: None,
        suppressed: false,
        erased_at: None,
        erasure_suppressed_at: None,
    }
}

/// A trait of `category` collected at `point` (under its current notice) at `at`.
pub fn collected(m: &Manifest, id: u32, category: &str, point: &str, at: UnixMillis) -> Trait {
    let notice_id = m.collection_points[point].notice.clone();
    let notice: &Notice = &m.notices[&notice_id];
    Trait {
        subject: SubjectId(id),
        key: format!("{category}@{point}"),
        value: serde_json::json!("x"),
        category: category.into(),
        provenance: Provenance {
            collection_point: point.into(),
            notice_id,
            notice_version: notice.version,
            collected_at: at,
            source: "collection".into(),
        },
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "one argument per field a test varies, so each test's record reads as one line"
)]
pub fn record(
    seq: u64,
    id: u32,
    purpose: &str,
    channel: Option<&str>,
    topic: Option<&str>,
    action: ConsentAction,
    method: CollectionMethod,
    at: UnixMillis,
) -> SequencedRecord {
    SequencedRecord {
        seq,
        record: ConsentRecord {
            subject: SubjectId(id),
            purpose: purpose.into(),
            channel: channel.map(Into::into),
            topic: topic.map(Into::into),
            action,
            notice: None,
            regime: "gdpr".into(),
            source: "test".into(),
            method,
            evidence: Proof::default(),
            at,
        },
    }
}

/// A small builder for one subject's state.
pub struct S {
    pub m: Manifest,
    pub state: SubjectState,
    seq: u64,
}

impl S {
    pub fn at(location: &str) -> S {
        S {
            m: test_manifest(),
            state: SubjectState::new(subject(1, location)),
            seq: 0,
        }
    }
    pub fn with(mut self, category: &str, point: &str, at: UnixMillis) -> S {
        let t = collected(&self.m, 1, category, point, at);
        self.state.traits.push(t);
        self
    }
    /// The demo's usual contact data: email from the newsletter form, phone from the SMS opt-in,
    /// browsing from the web shop, and everything from checkout (whose order emails notice
    /// makes soft opt-in possible).
    pub fn customer(self) -> S {
        let t = now() - 30 * DAY;
        self.with("user.contact.email", "newsletter_signup", t)
            .with("user.contact.phone_number", "sms_offers_optin", t)
            .with("user.behavior.browsing_history", "web_shop", t)
            .with("user.contact.email", "checkout", t)
            .with("user.contact.email", "checkout_offers", t)
            .with("user.contact.address", "checkout", t)
    }
    /// The subject interacted at `at` (an event collected, a preference-center visit).
    pub fn interacted(mut self, at: UnixMillis) -> S {
        self.state.last_interaction = self.state.last_interaction.max(Some(at));
        self
    }
    pub fn consent(
        mut self,
        purpose: &str,
        channel: Option<&str>,
        topic: Option<&str>,
        action: ConsentAction,
        method: CollectionMethod,
        at: UnixMillis,
    ) -> S {
        self.seq += 1;
        self.state.consents.push(record(
            self.seq, 1, purpose, channel, topic, action, method, at,
        ));
        self
    }
    pub fn given(self, purpose: &str, channel: Option<&str>) -> S {
        self.consent(
            purpose,
            channel,
            None,
            ConsentAction::Given,
            CollectionMethod::WebForm,
            now() - DAY,
        )
    }
    pub fn gpc(self) -> S {
        self.consent(
            "marketing.advertising.third_party.targeted",
            None,
            None,
            ConsentAction::OptedOut,
            CollectionMethod::Gpc,
            date(2024, 1, 1),
        )
    }
    pub fn pref(
        mut self,
        channel: &str,
        frequency: Option<Frequency>,
        quiet: Option<QuietHours>,
    ) -> S {
        self.state.preferences.push(ChannelPreference {
            subject: SubjectId(1),
            channel: channel.into(),
            frequency,
            quiet_hours: quiet,
            updated_at: now() - DAY,
        });
        self
    }
    pub fn sent(mut self, channel: &str, purpose: &str, at: UnixMillis) -> S {
        self.state.contacts.push(Contact {
            subject: SubjectId(1),
            channel: channel.into(),
            purpose: purpose.into(),
            topic: None,
            at,
        });
        self
    }
    pub fn decide_at(&self, req: &DecisionRequest, at: UnixMillis) -> Decision {
        let ctx = Compiled::new(self.m.clone()).unwrap();
        decide(Some(&self.state), &ctx, req, at)
    }
    pub fn decide(&self, req: &DecisionRequest) -> Decision {
        self.decide_at(req, now())
    }
    /// The ids of the rulebook rows a decision cites.
    pub fn cited(&self, d: &Decision) -> Vec<String> {
        let ctx = Compiled::new(self.m.clone()).unwrap();
        d.evidence
            .iter()
            .filter_map(|e| match e {
                Evidence::Rule { rule } => ctx.rulebook().rule(*rule).map(|r| r.id.clone()),
                _ => None,
            })
            .collect()
    }
}

pub fn req(purpose: &str, channel: &str) -> DecisionRequest {
    DecisionRequest::new(purpose).channel(channel)
}

const MARKETING: &str = "marketing.communications";
const ADS: &str = "marketing.advertising.third_party.targeted";

/// Every reason code, each reached by one example.
fn examples() -> Vec<(ReasonCode, S, DecisionRequest, UnixMillis)> {
    use ReasonCode::*;
    let t = now();
    let mut erased = S::at("DE").customer();
    erased.state.subject.erasure_requested_at = Some(t - DAY);
    let mut suppressed = S::at("DE").customer();
    suppressed.state.subject.suppressed = true;
    let mut came_back = S::at("DE").customer();
    came_back.state.subject.erasure_suppressed_at = Some(t - DAY);
    let mut no_tz = S::at("DE").customer().given(MARKETING, None).pref(
        "email",
        None,
        Some(QuietHours {
            start_minute: 11 * 60,
            end_minute: 13 * 60,
        }),
    );
    no_tz.state.subject.time_zone = None;
    let gated = |kind: kept_core::decision::GateKind| {
        let mut s = S::at("US-CA").customer();
        s.state.gates.push(kept_core::decision::SubjectGate {
            request: 1,
            subject: SubjectId(1),
            kind,
            purposes: vec![],
            categories: vec![],
            since: t - DAY,
        });
        s
    };
    use kept_core::decision::GateKind;
    vec![
        (
            DeniedRestrictedByRequest,
            gated(GateKind::Restriction),
            req(MARKETING, "email"),
            t,
        ),
        (
            DeniedObjectedByRequest,
            gated(GateKind::Objection),
            req(MARKETING, "email"),
            t,
        ),
        (
            DeniedOptedOutOfSale,
            gated(GateKind::OptOutOfSale),
            DecisionRequest::new("marketing.advertising.third_party.targeted"),
            t,
        ),
        (
            DeniedSensitiveUseLimited,
            gated(GateKind::LimitSensitive),
            DecisionRequest::new(MARKETING).category("user.health_and_medical"),
            t,
        ),
        (
            AllowedConsent,
            S::at("DE").customer().given(MARKETING, Some("email")),
            req(MARKETING, "email"),
            t,
        ),
        (
            AllowedContract,
            S::at("DE").customer(),
            req("essential.service.notifications.email", "email"),
            t,
        ),
        (
            AllowedOptOutRegime,
            S::at("US-FL").customer(),
            req(MARKETING, "email"),
            t,
        ),
        (
            AllowedSoftOptIn,
            S::at("DE").customer(),
            req(MARKETING, "email"),
            t,
        ),
        (
            AllowedImpliedConsent,
            S::at("CA")
                .with("user.contact.email", "newsletter_signup", t - DAY)
                .with("user.name", "checkout", t - 300 * DAY),
            req(MARKETING, "email"),
            t,
        ),
        (
            DeniedUnknownPurpose,
            S::at("DE").customer(),
            req("marketing.telepathy", "email"),
            t,
        ),
        (
            DeniedUnknownChannel,
            S::at("DE").customer(),
            req(MARKETING, "pigeon"),
            t,
        ),
        (
            DeniedUnknownTopic,
            S::at("DE").customer(),
            req(MARKETING, "email").topic("gossip"),
            t,
        ),
        (
            DeniedErasurePending,
            erased,
            req("essential.service.notifications.email", "email"),
            t,
        ),
        (
            DeniedSuppressedAfterErasure,
            came_back,
            req(MARKETING, "email"),
            t,
        ),
        (
            DeniedSuppressed,
            suppressed,
            req("essential.service.notifications.email", "email"),
            t,
        ),
        (
            DeniedForbiddenUse,
            S::at("DE")
                .customer()
                .with("user.health_and_medical", "health_form", t),
            DecisionRequest::new(MARKETING).category("user.health_and_medical"),
            t,
        ),
        (
            DeniedNotPromised,
            S::at("DE").with("user.contact.phone_number", "rewards_signup", t),
            req(MARKETING, "sms"),
            t,
        ),
        (
            DeniedNoLegalBasis,
            S::at("US-FL").with("user.health_and_medical", "health_form", t),
            DecisionRequest::new("analytics.reporting").category("user.health_and_medical"),
            t,
        ),
        (
            DeniedObjected,
            S::at("DE").customer().given(MARKETING, None).consent(
                ADS,
                None,
                None,
                ConsentAction::Objected,
                CollectionMethod::WebForm,
                t - DAY,
            ),
            req(MARKETING, "email"),
            t,
        ),
        (
            DeniedWithdrawn,
            S::at("DE")
                .customer()
                .given(MARKETING, Some("email"))
                .consent(
                    MARKETING,
                    None,
                    None,
                    ConsentAction::Withdrawn,
                    CollectionMethod::WebForm,
                    t - DAY,
                ),
            req(MARKETING, "email"),
            t,
        ),
        (
            DeniedOptedOut,
            S::at("US-FL").customer().consent(
                MARKETING,
                Some("email"),
                None,
                ConsentAction::OptedOut,
                CollectionMethod::Reply,
                t - DAY,
            ),
            req(MARKETING, "email"),
            t,
        ),
        (
            DeniedUnsubscribed,
            S::at("DE")
                .customer()
                .consent(
                    MARKETING,
                    Some("email"),
                    Some("newsletter"),
                    ConsentAction::Withdrawn,
                    CollectionMethod::Reply,
                    t - 2 * DAY,
                )
                .given(MARKETING, None),
            req(MARKETING, "email").topic("newsletter"),
            t,
        ),
        (
            DeniedGpc,
            S::at("US-CA").customer().gpc(),
            req(ADS, "web"),
            t,
        ),
        (
            DeniedNoConsent,
            S::at("DE").with("user.contact.phone_number", "sms_offers_optin", t),
            req(MARKETING, "sms"),
            t,
        ),
        (
            DeniedRefused,
            // Asked at sign-up and declined: a refusal, not a withdrawal, and no consent.
            S::at("DE").customer().consent(
                MARKETING,
                Some("email"),
                None,
                ConsentAction::Refused,
                CollectionMethod::WebForm,
                t - DAY,
            ),
            req(MARKETING, "email"),
            t,
        ),
        (
            DeniedExpired,
            S::at("CA")
                .with("user.contact.email", "newsletter_signup", t - DAY)
                .with("user.name", "checkout", date(2023, 1, 1)),
            req(MARKETING, "email"),
            t,
        ),
        (
            DeniedFrequencyCap,
            S::at("US-FL")
                .customer()
                .pref(
                    "email",
                    Some(Frequency {
                        max: 2,
                        period: Period::Week,
                    }),
                    None,
                )
                .sent("email", MARKETING, t - DAY)
                .sent("email", MARKETING, t - 2 * DAY)
                .sent("email", "essential.service.notifications.email", t - DAY),
            req(MARKETING, "email"),
            t,
        ),
        (
            DeniedQuietHours,
            S::at("US-FL").customer().pref(
                "email",
                None,
                Some(QuietHours {
                    start_minute: 22 * 60,
                    end_minute: 7 * 60,
                }),
            ),
            req(MARKETING, "email"),
            // 23:30 in Berlin (the subject's zone) is 21:30 UTC in summer.
            date(2026, 6, 1) + (21 * 60 + 30) * 60 * 1000,
        ),
        (DeniedQuietHours, no_tz, req(MARKETING, "email"), t),
    ]
}

#[test]
fn every_reason_code_has_an_example() {
    let mut seen = Vec::new();
    for (expected, s, r, at) in examples() {
        let d = s.decide_at(&r, at);
        assert_eq!(d.reason, expected, "request {r:?}: {d:?}");
        assert_eq!(d.allowed, expected.is_allowed());
        seen.push(expected);
    }
    // An unknown subject has no state at all.
    let ctx = test_ctx();
    let d = decide(None, &ctx, &req(MARKETING, "email"), now());
    assert_eq!(d.reason, ReasonCode::DeniedUnknownSubject);
    seen.push(d.reason);
    for code in ReasonCode::ALL {
        assert!(seen.contains(&code), "no example for {code}");
    }
}

#[test]
fn reason_codes_are_stable_strings() {
    for code in ReasonCode::ALL {
        assert_eq!(ReasonCode::parse(code.as_str()), Some(code));
        let prefix = if code.is_allowed() {
            "allowed."
        } else {
            "denied."
        };
        assert!(code.as_str().starts_with(prefix), "{code}");
    }
    assert_eq!(
        ReasonCode::DeniedNotPromised.as_str(),
        "denied.not_promised"
    );
    assert_eq!(
        ReasonCode::AllowedOptOutRegime.as_str(),
        "allowed.opt_out_regime"
    );
}

#[test]
fn evidence_names_the_record_the_notice_and_the_rule() {
    let s = S::at("US-FL").customer().consent(
        MARKETING,
        Some("sms"),
        None,
        ConsentAction::Given,
        CollectionMethod::Written,
        now() - DAY,
    );
    let d = s.decide(&req(MARKETING, "sms"));
    assert_eq!(d.reason, ReasonCode::AllowedConsent);
    let ctx = Compiled::new(s.m.clone()).unwrap();
    let q = ctx.prepare(&req(MARKETING, "sms"));
    let explained = serde_json::to_value(d.explain(&ctx, &q)).unwrap();
    assert_eq!(explained["reason"], "allowed.consent");
    assert_eq!(explained["evidence"][0]["kind"], "provenance");
    assert_eq!(
        explained["evidence"][0]["collection_point"],
        "sms_offers_optin"
    );
    assert_eq!(explained["evidence"][0]["notice"], "sms_offers");
    assert_eq!(explained["evidence"][0]["notice_version"], 1);
    assert_eq!(
        explained["evidence"][1],
        serde_json::json!({"kind": "ledger", "seq": 1})
    );
    let obligations = explained["obligations"].as_array().unwrap();
    assert!(obligations.contains(&serde_json::json!("honour_stop_reply")));

    let denied = S::at("US-FL").customer().decide(&req(MARKETING, "sms"));
    assert_eq!(denied.reason, ReasonCode::DeniedNoConsent);
    assert_eq!(
        S::at("US-FL").cited(&denied),
        vec!["us.tcpa.marketing_texts"]
    );
    assert!(denied.obligations.is_empty());
}

#[test]
fn consent_precedence_latest_covering_record_wins() {
    let t = now();
    let base = || S::at("DE").customer();
    // A broader withdrawal wins over an older narrower grant.
    let s = base()
        .consent(
            MARKETING,
            Some("email"),
            None,
            ConsentAction::Given,
            CollectionMethod::WebForm,
            t - 3 * DAY,
        )
        .consent(
            MARKETING,
            None,
            None,
            ConsentAction::Withdrawn,
            CollectionMethod::WebForm,
            t - 2 * DAY,
        );
    assert_eq!(
        s.decide(&req(MARKETING, "email")).reason,
        ReasonCode::DeniedWithdrawn
    );
    // A newer narrower grant wins over an older broader withdrawal, on its channel only.
    let s = s.consent(
        MARKETING,
        Some("email"),
        None,
        ConsentAction::Given,
        CollectionMethod::WebForm,
        t - DAY,
    );
    assert_eq!(
        s.decide(&req(MARKETING, "email")).reason,
        ReasonCode::AllowedConsent
    );
    assert_eq!(
        s.decide(&req(MARKETING, "sms")).reason,
        ReasonCode::DeniedWithdrawn
    );
    // A pending double opt-in counts for nothing.
    let s = S::at("DE")
        .with("user.contact.phone_number", "sms_offers_optin", t)
        .consent(
            MARKETING,
            Some("sms"),
            None,
            ConsentAction::Pending,
            CollectionMethod::DoubleOptIn,
            t - DAY,
        );
    assert_eq!(
        s.decide(&req(MARKETING, "sms")).reason,
        ReasonCode::DeniedNoConsent
    );
    // A topic subscription is a consent for that topic; unsubscribing it stays in force even
    // after a later purpose-wide grant.
    let s = base().consent(
        MARKETING,
        Some("email"),
        Some("newsletter"),
        ConsentAction::Given,
        CollectionMethod::DoubleOptIn,
        t - 2 * DAY,
    );
    let d = s.decide(&req(MARKETING, "email").topic("newsletter"));
    assert_eq!(d.reason, ReasonCode::AllowedConsent);
    assert!(d.evidence.contains(&Evidence::Ledger { seq: 1 }));
}

#[test]
fn soft_opt_in_needs_a_purchase_the_manifest_and_no_objection() {
    let t = now();
    // Email only from the newsletter form: no purchase, no soft opt-in.
    let s = S::at("DE").with("user.contact.email", "newsletter_signup", t);
    assert_eq!(
        s.decide(&req(MARKETING, "email")).reason,
        ReasonCode::DeniedNoConsent
    );
    // Nor with an email from a checkout whose notice never mentioned marketing: the customer
    // was not told, so could not object, when the address was collected (ePrivacy Art. 13(2)).
    let s = s.with("user.contact.email", "checkout", t);
    assert_eq!(
        s.decide(&req(MARKETING, "email")).reason,
        ReasonCode::DeniedNoConsent
    );
    // With an email from a checkout whose notice promised emails about similar products, it
    // applies, even with no other source promising the use...
    let s = S::at("DE").with("user.contact.email", "checkout_offers", t);
    let d = s.decide(&req(MARKETING, "email"));
    assert_eq!(d.reason, ReasonCode::AllowedSoftOptIn);
    assert_eq!(s.cited(&d), vec!["gdpr.eprivacy.email_marketing"]);
    assert!(d.obligations.contains(Obligation::IncludeUnsubscribeLink));
    // ...not after an opt-out...
    let opted = S::at("DE")
        .with("user.contact.email", "checkout_offers", t)
        .consent(
            MARKETING,
            Some("email"),
            None,
            ConsentAction::OptedOut,
            CollectionMethod::Reply,
            t - DAY,
        );
    assert_eq!(
        opted.decide(&req(MARKETING, "email")).reason,
        ReasonCode::DeniedOptedOut
    );
    // ...not by text...
    let sms = S::at("DE")
        .with("user.contact.phone_number", "sms_offers_optin", t)
        .with("user.contact.email", "checkout_offers", t);
    assert_eq!(
        sms.decide(&req(MARKETING, "sms")).reason,
        ReasonCode::DeniedNoConsent
    );
    // ...and not when the manifest does not enable it for the purpose.
    let mut off = S::at("DE").with("user.contact.email", "checkout_offers", t);
    off.m.purposes.get_mut(MARKETING).unwrap().soft_opt_in = false;
    assert_eq!(
        off.decide(&req(MARKETING, "email")).reason,
        ReasonCode::DeniedNoConsent
    );
}

#[test]
fn promises_follow_the_notice_version_and_compatible_purposes() {
    let t = now();
    // Data collected under an older version of the notice: that promise is unknown, so none.
    let mut s = S::at("US-FL").with("user.contact.email", "newsletter_signup", t);
    s.state.traits[0].provenance.notice_version = 0;
    let d = s.decide(&req(MARKETING, "email"));
    assert_eq!(d.reason, ReasonCode::DeniedNotPromised);
    assert_eq!(
        d.evidence.as_slice(),
        &[Evidence::NotPromised { category: 0 }]
    );
    // A purpose declared compatible with a promised one may use the data.
    let mut s = S::at("US-FL").with("user.contact.phone_number", "rewards_signup", t);
    assert_eq!(
        s.decide(&req(MARKETING, "sms")).reason,
        ReasonCode::DeniedNotPromised
    );
    s.m.purposes
        .get_mut(MARKETING)
        .unwrap()
        .compatible_with
        .push("loyalty.rewards".into());
    assert_eq!(
        s.decide(&req(MARKETING, "sms")).reason,
        ReasonCode::DeniedNoConsent
    );
}

#[test]
fn frequency_caps_count_only_the_period_and_not_essential_messages() {
    let t = now();
    let weekly = Some(Frequency {
        max: 2,
        period: Period::Week,
    });
    let s = S::at("US-FL")
        .customer()
        .pref("email", weekly, None)
        .sent("email", MARKETING, t - DAY)
        .sent("email", MARKETING, t - 8 * DAY)
        .sent("email", "essential.service.notifications.email", t - DAY);
    assert_eq!(
        s.decide(&req(MARKETING, "email")).reason,
        ReasonCode::AllowedOptOutRegime
    );
    // Essential messages are never held back by a cap.
    let s = s.sent("email", MARKETING, t - 2 * DAY);
    assert_eq!(
        s.decide(&req(MARKETING, "email")).reason,
        ReasonCode::DeniedFrequencyCap
    );
    assert_eq!(
        s.decide(&req("essential.service.notifications.email", "email"))
            .reason,
        ReasonCode::AllowedContract
    );
}

#[test]
fn quiet_hours_read_the_subjects_time_zone_or_say_utc() {
    let quiet = Some(QuietHours {
        start_minute: 22 * 60,
        end_minute: 7 * 60,
    });
    let mut s = S::at("US-FL").customer().pref("email", None, quiet);
    // 06:30 UTC is 08:30 in Berlin: outside quiet hours there.
    let morning = date(2026, 6, 1) + (6 * 60 + 30) * 60 * 1000;
    assert_eq!(
        s.decide_at(&req(MARKETING, "email"), morning).reason,
        ReasonCode::AllowedOptOutRegime
    );
    s.state.subject.time_zone = Some("Mars/Olympus_Mons".into());
    let d = s.decide_at(&req(MARKETING, "email"), morning);
    assert_eq!(d.reason, ReasonCode::DeniedQuietHours);
    assert!(d.evidence.contains(&Evidence::TimeZoneFallback));
    let noon = date(2026, 6, 1) + 12 * 60 * 60 * 1000;
    let d = s.decide_at(&req(MARKETING, "email"), noon);
    assert!(d.allowed);
    assert!(d.evidence.contains(&Evidence::TimeZoneFallback));
}

#[test]
fn unknown_location_fails_closed() {
    let s = S::at("").customer();
    let d = s.decide(&req(MARKETING, "email"));
    assert_eq!(d.reason, ReasonCode::DeniedNoConsent);
    assert_eq!(s.cited(&d), vec!["strictest.opt_in"]);
}

#[test]
fn a_stored_ledger_entry_becomes_a_sequenced_record() {
    let r = record(
        7,
        3,
        MARKETING,
        Some("sms"),
        None,
        ConsentAction::Given,
        CollectionMethod::Written,
        now(),
    );
    let entry =
        kept_core::ledger::LedgerEntry::chain(&kept_core::ledger::ChainHash::GENESIS, 7, &r.record);
    assert_eq!(SequencedRecord::from_entry(&entry).unwrap(), r);
    let mut broken = entry.clone();
    broken.bytes.push(0);
    assert!(SequencedRecord::from_entry(&broken).is_err());
}

#[test]
fn a_subject_suppressed_after_an_erasure_gets_only_essential_uses() {
    let t = now();
    let mut came_back = S::at("DE").customer();
    came_back.state.subject.erasure_suppressed_at = Some(t - DAY);
    let essential = came_back.decide_at(&req("essential.service.notifications.email", "email"), t);
    assert_ne!(essential.reason, ReasonCode::DeniedSuppressedAfterErasure);
    for purpose in [MARKETING, "personalize.content.profiled"] {
        let d = came_back.decide_at(&DecisionRequest::new(purpose), t);
        assert_eq!(
            d.reason,
            ReasonCode::DeniedSuppressedAfterErasure,
            "{purpose}"
        );
    }
    // An erased subject is a tombstone: Kept knows it no more.
    let mut erased = S::at("DE").customer();
    erased.state.subject.erased_at = Some(t - DAY);
    let d = erased.decide_at(&req(MARKETING, "email"), t);
    assert_eq!(d.reason, ReasonCode::DeniedUnknownSubject);
}
