//! The seed scenario, end to end on the demo manifest: the rewards programme's phone numbers
//! may not be texted offers (no notice promised it), until one member gives TCPA-grade written
//! consent through the SMS offers form; then that member alone may be.

use crate::decision::{DAY, collected, compiled, demo_manifest, now, record, subject};
use kept_core::SubjectId;
use kept_core::audience::{AudienceRequest, Candidates, evaluate};
use kept_core::decision::{DecisionRequest, Evidence, ReasonCode, SubjectState, decide};
use kept_core::demo;
use kept_core::index::{Change, Index};
use kept_core::ledger::{CollectionMethod, ConsentAction};

const MARKETING: &str = "marketing.communications";

fn texting_offers() -> DecisionRequest {
    DecisionRequest::new(MARKETING).channel("sms")
}

#[test]
fn rewards_phones_are_not_promised_until_a_member_gives_written_consent() {
    let m = demo_manifest();
    let ctx = compiled(m.clone());
    let t = now();
    let locations = ["US-TX", "US-FL", "US-CA", "DE", "GB", "US-NY"];
    let mut states: Vec<SubjectState> = Vec::new();
    for (i, loc) in locations.iter().enumerate() {
        let id = i as u32;
        let mut s = SubjectState::new(subject(id, loc));
        s.traits.push(collected(
            &m,
            id,
            "user.contact.phone_number",
            "rewards_signup",
            t - 90 * DAY,
        ));
        s.traits.push(collected(
            &m,
            id,
            "user.name",
            "rewards_signup",
            t - 90 * DAY,
        ));
        s.traits.push(collected(
            &m,
            id,
            "user.contact.email",
            "checkout",
            t - 100 * DAY,
        ));
        s.traits.push(collected(
            &m,
            id,
            "user.contact.phone_number",
            "checkout",
            t - 100 * DAY,
        ));
        states.push(s);
    }
    let mut index = Index::from_parts(
        ctx.clone(),
        states.iter().map(|s| s.subject.clone()),
        states.iter().flat_map(|s| s.traits.clone()),
        [],
        [],
        [],
    );
    let before = index.reader().snapshot();
    let req = texting_offers();
    for s in &states {
        let id = s.subject.id;
        let d = index.decide(id, &req, t);
        assert_eq!(d.reason, ReasonCode::DeniedNotPromised, "{id}");
        assert_eq!(
            d.evidence.as_slice(),
            &[Evidence::NotPromised { category: 0 }]
        );
        assert_eq!(d, decide(Some(s), &ctx, &req, t));
        // The same numbers may still be texted shipping updates: that was promised.
        let ship = DecisionRequest::new("essential.service.notifications.sms").channel("sms");
        assert!(index.decide(id, &ship, t).allowed, "{id}");
    }
    let campaign = AudienceRequest {
        purpose: MARKETING.into(),
        channel: Some("sms".into()),
        topic: None,
        categories: vec![],
        candidates: Candidates::All,
        sample_size: 10,
    };
    let result = evaluate(&index.snapshot(), &campaign, t);
    assert_eq!(result.eligible_count, 0);
    assert_eq!(
        result.excluded.get(&ReasonCode::DeniedNotPromised),
        Some(&6)
    );

    // Member 1 (Florida) ticks the SMS offers box: the number is collected again under the
    // SMS offers notice, and the ledger records written consent.
    let member = 1u32;
    let optin = collected(
        &m,
        member,
        "user.contact.phone_number",
        "sms_offers_optin",
        t - DAY,
    );
    let mut consent = record(
        1,
        member,
        MARKETING,
        Some("sms"),
        None,
        ConsentAction::Given,
        CollectionMethod::Written,
        t - DAY,
    );
    consent.record.notice = Some(kept_core::ledger::NoticeRef {
        id: "sms_offers".into(),
        version: 1,
        hash: m.notices["sms_offers"].hash.clone(),
    });
    index.apply_and_publish([
        Change::Trait(optin.clone()),
        Change::Consent(consent.clone()),
    ]);
    states[member as usize].traits.push(optin);
    states[member as usize].consents.push(consent);

    for s in &states {
        let id = s.subject.id;
        let d = index.decide(id, &req, t);
        assert_eq!(d, decide(Some(s), &ctx, &req, t));
        if id == SubjectId(member) {
            assert_eq!(d.reason, ReasonCode::AllowedConsent);
            let point = ctx.point_id("sms_offers_optin").unwrap();
            let notice = ctx.notice_id("sms_offers").unwrap();
            assert_eq!(
                d.evidence.as_slice(),
                &[
                    Evidence::Provenance {
                        category: 0,
                        point,
                        notice,
                        version: 1
                    },
                    Evidence::Ledger { seq: 1 },
                ]
            );
        } else {
            assert_eq!(d.reason, ReasonCode::DeniedNotPromised, "{id}");
        }
    }
    let result = evaluate(&index.snapshot(), &campaign, t);
    assert_eq!(result.eligible_count, 1);
    assert_eq!(result.sample, vec![SubjectId(member)]);
    assert_eq!(
        result.excluded.get(&ReasonCode::DeniedNotPromised),
        Some(&5)
    );
    // A reader still holding the earlier snapshot keeps its consistent view.
    assert_eq!(
        before.decide(SubjectId(member), &req, t).reason,
        ReasonCode::DeniedNotPromised
    );
}

#[test]
fn an_sms_opt_in_without_written_consent_is_not_enough_in_the_us() {
    let m = demo_manifest();
    let ctx = compiled(m.clone());
    let t = now();
    let mut s = SubjectState::new(subject(0, "US-TX"));
    s.traits.push(collected(
        &m,
        0,
        "user.contact.phone_number",
        "sms_offers_optin",
        t - DAY,
    ));
    s.consents.push(record(
        1,
        0,
        MARKETING,
        Some("sms"),
        None,
        ConsentAction::Given,
        CollectionMethod::WebForm,
        t - DAY,
    ));
    let d = decide(Some(&s), &ctx, &texting_offers(), t);
    assert_eq!(d.reason, ReasonCode::DeniedNoConsent);
}

#[test]
fn the_demo_population_agrees_between_index_and_decision() {
    let m = demo_manifest();
    let ctx = compiled(m.clone());
    let t = now();
    let pop = demo::population(demo::DEFAULT_SEED, 600, t, &m).unwrap();
    let consents: Vec<_> = pop
        .consents
        .iter()
        .enumerate()
        .map(|(i, r)| kept_core::decision::SequencedRecord {
            seq: i as u64 + 1,
            record: r.clone(),
        })
        .collect();
    let index = Index::from_parts(
        ctx.clone(),
        pop.subjects.clone(),
        pop.traits.clone(),
        consents.clone(),
        pop.preferences.clone(),
        pop.contacts.clone(),
    );
    let requests = [
        texting_offers(),
        DecisionRequest::new(MARKETING).channel("email"),
        DecisionRequest::new(MARKETING)
            .channel("email")
            .topic("newsletter"),
        DecisionRequest::new("marketing.advertising.third_party.targeted").channel("web"),
        DecisionRequest::new("personalize.content.profiled").channel("web"),
        DecisionRequest::new("essential.service.notifications.sms").channel("sms"),
    ];
    let mut texted = 0;
    let mut rewards_only = 0;
    for s in &pop.subjects {
        let state = SubjectState {
            subject: s.clone(),
            traits: pop
                .traits
                .iter()
                .filter(|x| x.subject == s.id)
                .cloned()
                .collect(),
            consents: consents
                .iter()
                .filter(|x| x.record.subject == s.id)
                .cloned()
                .collect(),
            preferences: pop
                .preferences
                .iter()
                .filter(|x| x.subject == s.id)
                .cloned()
                .collect(),
            contacts: pop
                .contacts
                .iter()
                .filter(|x| x.subject == s.id)
                .cloned()
                .collect(),
            last_interaction: None,
            gates: Vec::new(),
        };
        for r in &requests {
            assert_eq!(
                index.decide(s.id, r, t),
                decide(Some(&state), &ctx, r, t),
                "{} {r:?}",
                s.id
            );
        }
        let points: Vec<&str> = state
            .traits
            .iter()
            .filter(|x| x.category == "user.contact.phone_number")
            .map(|x| x.provenance.collection_point.as_str())
            .collect();
        let d = index.decide(s.id, &texting_offers(), t);
        if points.contains(&demo::REWARDS_SIGNUP) && !points.contains(&demo::SMS_OFFERS_OPTIN) {
            rewards_only += 1;
            if s.erasure_requested_at.is_none() && !s.suppressed {
                assert_eq!(d.reason, ReasonCode::DeniedNotPromised, "{}", s.id);
            }
        }
        if d.allowed {
            texted += 1;
            assert!(points.contains(&demo::SMS_OFFERS_OPTIN));
        }
    }
    assert!(rewards_only > 0);
    assert!(texted > 0);
}

#[test]
fn the_demo_population_holds_nothing_past_its_retention() {
    let m = demo_manifest();
    let t = now();
    let pop = demo::population(demo::DEFAULT_SEED, 600, t, &m).unwrap();
    let cutoffs = kept_core::collection::trait_cutoffs(&m, t);
    let cutoff_of = |notice: &str| {
        cutoffs
            .by_notice
            .iter()
            .find(|(n, _)| n == notice)
            .map_or(cutoffs.otherwise, |(_, before)| *before)
    };
    // What the retention job would delete on the demo's first start.
    let expired = pop
        .traits
        .iter()
        .filter(|x| x.provenance.collected_at < cutoff_of(&x.provenance.notice_id))
        .count();
    assert_eq!(expired, 0);
    // Still spread over the window, not all collected at `now`.
    let old = pop
        .traits
        .iter()
        .filter(|x| x.provenance.collected_at < t - 365 * DAY)
        .count();
    assert!(old > 0);
    assert!(pop.traits.iter().all(|x| x.provenance.collected_at <= t));
}

#[test]
fn the_demo_names_a_promising_notice_on_every_choice_it_records() {
    let m = demo_manifest();
    let pop = demo::population(demo::DEFAULT_SEED, 600, now(), &m).unwrap();
    let mut named = 0;
    // The choices made at a collection point (a sign-up, an unsubscription, a banner, the SMS
    // form) name the notice shown there; objections and GPC signals name none.
    let at_a_point = |r: &&kept_core::ledger::ConsentRecord| {
        r.evidence.reference.as_deref().is_some_and(|x| {
            ["-newsletter", "-unsubscribe", "-banner", "-sms-optin"]
                .iter()
                .any(|end| x.ends_with(end))
        })
    };
    for r in pop.consents.iter().filter(at_a_point) {
        let notice = r
            .notice
            .as_ref()
            .unwrap_or_else(|| panic!("a choice without a notice: {r:?}"));
        let shown = &m.notices[&notice.id];
        assert!(
            kept_core::manifest::promises::promises(shown, &r.purpose, None),
            "`{}` does not promise `{}`",
            notice.id,
            r.purpose
        );
        assert_eq!((notice.version, &notice.hash), (shown.version, &shown.hash));
        named += 1;
    }
    assert!(named > 100, "{named}");
}
