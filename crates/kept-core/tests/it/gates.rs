//! The gates data subject requests put on a subject: each kind denies the uses it concerns
//! with its own reason and the request as evidence, necessary and legally obliged uses pass,
//! the index and audiences answer as the pure decision does, and lifting restores.

use crate::decision::{DAY, S, compiled, now, test_manifest};
use kept_core::SubjectId;
use kept_core::audience::{AudienceRequest, Candidates, evaluate};
use kept_core::decision::{
    Compiled, DecisionRequest, Evidence, GateKind, ReasonCode, SubjectGate, decide,
};
use kept_core::index::{Change, Index};
use kept_core::manifest::{LegalBasis, Purpose, RegimeKey};
use std::collections::BTreeMap;
use std::sync::Arc;

const MARKETING: &str = "marketing.communications";
const ADS: &str = "marketing.advertising.third_party.targeted";
const PROFILED: &str = "personalize.content.profiled";
const SHIPPING: &str = "essential.service.notifications.email";
const FRAUD: &str = "compliance.fraud_reporting";
const HEALTH: &str = "user.health_and_medical";

/// The test manifest with a purpose under a legal obligation that is not `essential`.
fn ctx() -> Arc<Compiled> {
    let mut m = test_manifest();
    m.purposes.insert(
        FRAUD.into(),
        Purpose {
            name: "Fraud reports".into(),
            description: "Report fraud as the law requires.".into(),
            owner: "engineering".into(),
            legal_basis: BTreeMap::from([(RegimeKey::Default, LegalBasis::LegalObligation)]),
            retention_days: 365,
            soft_opt_in: false,
            sale_or_sharing: false,
            compatible_with: vec![],
            translations: BTreeMap::new(),
        },
    );
    compiled(m)
}

fn gate(request: u64, kind: GateKind, purposes: &[&str], categories: &[&str]) -> SubjectGate {
    SubjectGate {
        request,
        subject: SubjectId(1),
        kind,
        purposes: purposes.iter().map(|p| (*p).to_owned()).collect(),
        categories: categories.iter().map(|c| (*c).to_owned()).collect(),
        since: now() - DAY,
    }
}

/// A New York customer (uses allowed until they opt out) with `gates`, answered by the pure
/// decision and by the index, which must agree; returns the reason.
fn reason(ctx: &Arc<Compiled>, gates: &[SubjectGate], req: &DecisionRequest) -> ReasonCode {
    let mut s = S::at("US-NY")
        .customer()
        .with(HEALTH, "health_form", now() - DAY);
    s.state.gates = gates.to_vec();
    let pure = decide(Some(&s.state), ctx, req, now());
    let mut changes = vec![Change::Subject(s.state.subject.clone())];
    changes.extend(s.state.traits.iter().cloned().map(Change::Trait));
    changes.push(Change::Gates {
        subject: SubjectId(1),
        gates: gates.to_vec(),
    });
    let index = Index::build(Arc::clone(ctx), changes);
    assert_eq!(index.decide(SubjectId(1), req, now()), pure, "{req:?}");
    if !pure.allowed && GateKind::ALL.iter().any(|k| k.reason() == pure.reason) {
        let request = gates
            .iter()
            .find(|g| g.kind.reason() == pure.reason)
            .unwrap()
            .request;
        assert_eq!(
            pure.evidence.as_slice(),
            &[Evidence::Request { id: request }]
        );
    }
    pure.reason
}

fn email(purpose: &str) -> DecisionRequest {
    DecisionRequest::new(purpose).channel("email")
}

#[test]
fn the_uses_allowed_before_any_gate() {
    let ctx = ctx();
    for req in [
        email(MARKETING),
        DecisionRequest::new(ADS),
        DecisionRequest::new(PROFILED),
        email(SHIPPING),
        DecisionRequest::new(FRAUD),
    ] {
        assert!(reason(&ctx, &[], &req).is_allowed(), "{req:?}");
    }
}

#[test]
fn a_restriction_without_scope_stops_all_but_necessary_and_legally_obliged_uses() {
    let ctx = ctx();
    let all = [gate(7, GateKind::Restriction, &[], &[])];
    for req in [
        email(MARKETING),
        DecisionRequest::new(ADS),
        DecisionRequest::new(PROFILED),
    ] {
        assert_eq!(
            reason(&ctx, &all, &req),
            ReasonCode::DeniedRestrictedByRequest
        );
    }
    assert!(reason(&ctx, &all, &email(SHIPPING)).is_allowed());
    assert!(reason(&ctx, &all, &DecisionRequest::new(FRAUD)).is_allowed());
}

#[test]
fn a_restriction_with_scope_stops_only_its_purposes_and_categories() {
    let ctx = ctx();
    let personalize = [gate(7, GateKind::Restriction, &["personalize"], &[])];
    assert_eq!(
        reason(&ctx, &personalize, &DecisionRequest::new(PROFILED)),
        ReasonCode::DeniedRestrictedByRequest
    );
    assert!(reason(&ctx, &personalize, &email(MARKETING)).is_allowed());
    let browsing = [gate(8, GateKind::Restriction, &[], &["user.behavior"])];
    assert_eq!(
        reason(
            &ctx,
            &browsing,
            &DecisionRequest::new(PROFILED).category("user.behavior.browsing_history")
        ),
        ReasonCode::DeniedRestrictedByRequest
    );
    assert!(reason(&ctx, &browsing, &email(MARKETING)).is_allowed());
}

#[test]
fn an_objection_to_direct_marketing_stops_all_of_it_and_its_profiling() {
    let ctx = ctx();
    let objected = [gate(9, GateKind::Objection, &[MARKETING], &[])];
    for req in [
        email(MARKETING),
        DecisionRequest::new(ADS),
        DecisionRequest::new(PROFILED),
    ] {
        assert_eq!(
            reason(&ctx, &objected, &req),
            ReasonCode::DeniedObjectedByRequest
        );
    }
    assert!(reason(&ctx, &objected, &email(SHIPPING)).is_allowed());
    // An objection to profiling alone leaves the newsletter.
    let profiling = [gate(9, GateKind::Objection, &[PROFILED], &[])];
    assert_eq!(
        reason(&ctx, &profiling, &DecisionRequest::new(PROFILED)),
        ReasonCode::DeniedObjectedByRequest
    );
    assert!(reason(&ctx, &profiling, &email(MARKETING)).is_allowed());
}

#[test]
fn an_opt_out_of_sale_stops_sales_and_sharing_only() {
    let ctx = ctx();
    let opted = [gate(10, GateKind::OptOutOfSale, &[], &[])];
    assert_eq!(
        reason(&ctx, &opted, &DecisionRequest::new(ADS)),
        ReasonCode::DeniedOptedOutOfSale
    );
    assert!(reason(&ctx, &opted, &email(MARKETING)).is_allowed());
    assert!(reason(&ctx, &opted, &DecisionRequest::new(PROFILED)).is_allowed());
    // A purpose the manifest declares a sale is one, whatever its key.
    let mut m = test_manifest();
    m.purposes.get_mut(PROFILED).unwrap().sale_or_sharing = true;
    let declared = compiled(m);
    assert_eq!(
        reason(&declared, &opted, &DecisionRequest::new(PROFILED)),
        ReasonCode::DeniedOptedOutOfSale
    );
}

#[test]
fn a_limit_on_sensitive_data_stops_its_uses_beyond_the_necessary() {
    let ctx = ctx();
    let limited = [gate(11, GateKind::LimitSensitive, &[], &[])];
    assert_eq!(
        reason(
            &ctx,
            &limited,
            &DecisionRequest::new(PROFILED).category(HEALTH)
        ),
        ReasonCode::DeniedSensitiveUseLimited
    );
    assert!(reason(&ctx, &limited, &DecisionRequest::new(PROFILED)).is_allowed());
    assert_ne!(
        reason(
            &ctx,
            &limited,
            &DecisionRequest::new("essential.service.operations").category(HEALTH)
        ),
        ReasonCode::DeniedSensitiveUseLimited
    );
}

#[test]
fn the_first_kind_wins_and_lifting_restores() {
    let ctx = ctx();
    let both = [
        gate(12, GateKind::OptOutOfSale, &[], &[]),
        gate(13, GateKind::Restriction, &[], &[]),
    ];
    assert_eq!(
        reason(&ctx, &both, &DecisionRequest::new(ADS)),
        ReasonCode::DeniedRestrictedByRequest
    );
    let mut s = S::at("US-NY").customer();
    s.state.gates = both.to_vec();
    let mut changes = vec![Change::Subject(s.state.subject.clone())];
    changes.extend(s.state.traits.iter().cloned().map(Change::Trait));
    changes.push(Change::Gates {
        subject: SubjectId(1),
        gates: both.to_vec(),
    });
    let mut index = Index::build(Arc::clone(&ctx), changes);
    let req = email(MARKETING);
    assert_eq!(
        index.decide(SubjectId(1), &req, now()).reason,
        ReasonCode::DeniedRestrictedByRequest
    );
    // The restriction lifted: the opt-out stays, and does not reach the newsletter.
    index.apply_and_publish([Change::Gates {
        subject: SubjectId(1),
        gates: vec![both[0].clone()],
    }]);
    assert!(index.decide(SubjectId(1), &req, now()).allowed);
    assert_eq!(
        index
            .decide(SubjectId(1), &DecisionRequest::new(ADS), now())
            .reason,
        ReasonCode::DeniedOptedOutOfSale
    );
    // A subject read again (forgotten, then its changes) keeps only what it is sent.
    index.apply_and_publish([
        Change::Forget(SubjectId(1)),
        Change::Subject(s.state.subject.clone()),
    ]);
    assert_ne!(
        index
            .decide(SubjectId(1), &DecisionRequest::new(ADS), now())
            .reason,
        ReasonCode::DeniedOptedOutOfSale
    );
}

#[test]
fn audiences_count_gated_subjects_under_their_reason() {
    let ctx = ctx();
    let mut changes = Vec::new();
    for (id, kind) in [
        (1, None),
        (2, Some(GateKind::Restriction)),
        (3, Some(GateKind::Objection)),
        (4, Some(GateKind::OptOutOfSale)),
    ] {
        let mut s = S::at("US-NY").customer();
        s.state.subject.id = SubjectId(id);
        changes.push(Change::Subject(s.state.subject.clone()));
        for mut t in s.state.traits {
            t.subject = SubjectId(id);
            changes.push(Change::Trait(t));
        }
        if let Some(kind) = kind {
            let mut g = gate(u64::from(id), kind, &[], &[]);
            g.subject = SubjectId(id);
            changes.push(Change::Gates {
                subject: SubjectId(id),
                gates: vec![g],
            });
        }
    }
    let index = Index::build(ctx, changes);
    let audience = |purpose: &str| {
        evaluate(
            &index.snapshot(),
            &AudienceRequest {
                purpose: purpose.into(),
                channel: None,
                topic: None,
                categories: vec![],
                candidates: Candidates::All,
                sample_size: 10,
            },
            now(),
        )
    };
    let ads = audience(ADS);
    assert_eq!(ads.sample, vec![SubjectId(1)]);
    assert_eq!(
        ads.excluded,
        BTreeMap::from([
            (ReasonCode::DeniedRestrictedByRequest, 1),
            (ReasonCode::DeniedObjectedByRequest, 1),
            (ReasonCode::DeniedOptedOutOfSale, 1),
        ])
    );
    let profiled = audience(PROFILED);
    assert_eq!(profiled.sample, vec![SubjectId(1), SubjectId(4)]);
    let shipping = audience("essential.service.operations");
    assert_eq!(shipping.eligible_count, 4);
}
