//! One case (at least) per rulebook row: the row decides the case, and the decision cites it
//! (or, for rows that only add obligations, carries them). A row without a case fails the test.

use crate::decision::{DAY, S, date, now, req, test_manifest};
use kept_core::decision::{Compiled, DecisionRequest, ReasonCode};
use kept_core::ledger::{CollectionMethod, ConsentAction};
use kept_core::manifest::Tightening;
use kept_core::regime::Regime;
use kept_core::rulebook::{RuleOrigin, Rulebook};
use std::collections::BTreeSet;

const MARKETING: &str = "marketing.communications";
const ADS: &str = "marketing.advertising.third_party.targeted";
const PROFILED: &str = "personalize.content.profiled";
const HEALTH: &str = "user.health_and_medical";
const OPS: &str = "essential.service.operations";

/// How a case shows its row at work.
#[derive(PartialEq)]
enum Shows {
    /// The decision cites the row.
    Cites,
    /// The decision carries the row's obligations.
    Obligations,
    /// Only the reason is checked (a companion case, e.g. before a date).
    Reason,
}

struct Case {
    rule: &'static str,
    s: S,
    req: DecisionRequest,
    at: kept_core::UnixMillis,
    reason: ReasonCode,
    shows: Shows,
}

fn case(rule: &'static str, s: S, req: DecisionRequest, reason: ReasonCode) -> Case {
    Case {
        rule,
        s,
        req,
        at: now(),
        reason,
        shows: Shows::Cites,
    }
}

fn health(location: &str) -> S {
    S::at(location).with(HEALTH, "health_form", now() - DAY)
}

fn health_req() -> DecisionRequest {
    DecisionRequest::new(OPS).category(HEALTH)
}

fn gpc_cases(rule: &'static str, state: &str, from: kept_core::UnixMillis) -> [Case; 2] {
    [
        Case {
            at: from + DAY,
            ..case(
                rule,
                S::at(state).customer().gpc(),
                req(ADS, "web"),
                ReasonCode::DeniedGpc,
            )
        },
        Case {
            at: from - DAY,
            shows: Shows::Reason,
            ..case(
                rule,
                S::at(state).customer().gpc(),
                req(ADS, "web"),
                ReasonCode::AllowedOptOutRegime,
            )
        },
    ]
}

fn cases() -> Vec<Case> {
    use ReasonCode::*;
    let t = now();
    let mut v = vec![
        // GDPR and UK GDPR.
        case(
            "gdpr.lawful_basis",
            S::at("DE").customer(),
            req("essential.service.notifications.email", "email"),
            AllowedContract,
        ),
        case(
            "gdpr.lawful_basis",
            S::at("GB").customer(),
            req("essential.service.notifications.email", "email"),
            AllowedContract,
        ),
        case(
            "gdpr.special_categories",
            health("DE"),
            health_req(),
            DeniedNoConsent,
        ),
        Case {
            shows: Shows::Reason,
            ..case(
                "gdpr.special_categories",
                health("DE").given(OPS, None),
                health_req(),
                AllowedConsent,
            )
        },
        case(
            "gdpr.eprivacy.email_marketing",
            S::at("DE").with("user.contact.email", "newsletter_signup", t),
            req(MARKETING, "email"),
            DeniedNoConsent,
        ),
        case(
            "gdpr.eprivacy.email_marketing",
            S::at("GB").customer(),
            req(MARKETING, "email"),
            AllowedSoftOptIn,
        ),
        case(
            "gdpr.eprivacy.text_marketing",
            S::at("DE").customer(),
            req(MARKETING, "sms"),
            DeniedNoConsent,
        ),
        case(
            "gdpr.eprivacy.device_storage",
            S::at("DE").customer(),
            DecisionRequest::new(PROFILED)
                .channel("web")
                .category("user.behavior.browsing_history"),
            DeniedNoConsent,
        ),
        case(
            "gdpr.objection.direct_marketing",
            S::at("DE").customer().given(MARKETING, None).consent(
                ADS,
                None,
                None,
                ConsentAction::Objected,
                CollectionMethod::WebForm,
                t - DAY,
            ),
            req(MARKETING, "email"),
            DeniedObjected,
        ),
        // California.
        case(
            "ccpa.promises",
            S::at("US-CA").customer(),
            req(PROFILED, "web"),
            DeniedNoConsent,
        ),
        case(
            "ccpa.sale_sharing_opt_out",
            S::at("US-CA").customer(),
            req(ADS, "web"),
            AllowedOptOutRegime,
        ),
        case(
            "ccpa.sale_sharing_opt_out",
            S::at("US-CA").customer().gpc(),
            req(ADS, "web"),
            DeniedGpc,
        ),
        case(
            "ccpa.sensitive_limit",
            health("US-CA"),
            health_req(),
            AllowedOptOutRegime,
        ),
        Case {
            shows: Shows::Reason,
            ..case(
                "ccpa.sensitive_limit",
                health("US-CA").consent(
                    OPS,
                    None,
                    None,
                    ConsentAction::OptedOut,
                    CollectionMethod::WebForm,
                    t - DAY,
                ),
                health_req(),
                DeniedOptedOut,
            )
        },
        // Other US states.
        case(
            "us_state.promises",
            S::at("US-VA").customer(),
            req(PROFILED, "web"),
            DeniedNoConsent,
        ),
        case(
            "us_state.opt_out",
            S::at("US-VA").customer(),
            req(ADS, "web"),
            AllowedOptOutRegime,
        ),
        Case {
            shows: Shows::Reason,
            ..case(
                "us_state.opt_out",
                S::at("US-VA").customer().gpc(),
                req(ADS, "web"),
                AllowedOptOutRegime,
            )
        },
        case(
            "us_state.sensitive_opt_in",
            health("US-VA"),
            health_req(),
            DeniedNoConsent,
        ),
        case(
            "us_state.co.sensitive_refresh",
            health("US-CO").consent(
                OPS,
                None,
                None,
                ConsentAction::Given,
                CollectionMethod::WebForm,
                t - 25 * 30 * DAY,
            ),
            health_req(),
            DeniedExpired,
        ),
        Case {
            shows: Shows::Reason,
            ..case(
                "us_state.co.sensitive_refresh",
                health("US-CO").given(OPS, None),
                health_req(),
                AllowedConsent,
            )
        },
        // Counted from the last interaction, not the consent: a consent given 25 months ago
        // holds while the consumer interacted since (4 CCR 904-3 Rule 7.08)...
        Case {
            shows: Shows::Reason,
            ..case(
                "us_state.co.sensitive_refresh",
                health("US-CO")
                    .consent(
                        OPS,
                        None,
                        None,
                        ConsentAction::Given,
                        CollectionMethod::WebForm,
                        t - 25 * 30 * DAY,
                    )
                    .interacted(t - 90 * DAY),
                health_req(),
                AllowedConsent,
            )
        },
        // ...and expires 24 months after that interaction.
        case(
            "us_state.co.sensitive_refresh",
            health("US-CO")
                .consent(
                    OPS,
                    None,
                    None,
                    ConsentAction::Given,
                    CollectionMethod::WebForm,
                    t - 50 * 30 * DAY,
                )
                .interacted(t - 25 * 30 * DAY),
            health_req(),
            DeniedExpired,
        ),
        // A consent action of its own (here a "no" to marketing texts) is an interaction too.
        Case {
            shows: Shows::Reason,
            ..case(
                "us_state.co.sensitive_refresh",
                health("US-CO")
                    .consent(
                        OPS,
                        None,
                        None,
                        ConsentAction::Given,
                        CollectionMethod::WebForm,
                        t - 25 * 30 * DAY,
                    )
                    .consent(
                        MARKETING,
                        Some("sms"),
                        None,
                        ConsentAction::Withdrawn,
                        CollectionMethod::Reply,
                        t - 30 * DAY,
                    ),
                health_req(),
                AllowedConsent,
            )
        },
        // A US subject whose state is unknown gets every state's rules.
        case(
            "us_state.co.sensitive_refresh",
            health("US").consent(
                OPS,
                None,
                None,
                ConsentAction::Given,
                CollectionMethod::WebForm,
                t - 25 * 30 * DAY,
            ),
            health_req(),
            DeniedExpired,
        ),
        // Federal.
        case(
            "us.promises",
            S::at("US-FL").customer(),
            req(PROFILED, "web"),
            AllowedOptOutRegime,
        ),
        case(
            "us.tcpa.marketing_texts",
            S::at("US-FL").customer().given(MARKETING, Some("sms")),
            req(MARKETING, "sms"),
            DeniedNoConsent,
        ),
        Case {
            shows: Shows::Obligations,
            ..case(
                "us.tcpa.marketing_texts",
                S::at("US-TX").customer().consent(
                    MARKETING,
                    Some("sms"),
                    None,
                    ConsentAction::Given,
                    CollectionMethod::Written,
                    t - DAY,
                ),
                req(MARKETING, "sms"),
                AllowedConsent,
            )
        },
        case(
            "us.tcpa.marketing_texts",
            S::at("US-CA").customer(),
            req(MARKETING, "sms"),
            DeniedNoConsent,
        ),
        case(
            "us.can_spam.email",
            S::at("US-FL").customer(),
            req(MARKETING, "email"),
            AllowedOptOutRegime,
        ),
        Case {
            shows: Shows::Reason,
            ..case(
                "us.can_spam.email",
                S::at("US-FL").customer().consent(
                    MARKETING,
                    None,
                    None,
                    ConsentAction::OptedOut,
                    CollectionMethod::Reply,
                    t - DAY,
                ),
                req(MARKETING, "email"),
                DeniedOptedOut,
            )
        },
        Case {
            shows: Shows::Obligations,
            ..case(
                "bulk_senders.one_click_unsubscribe",
                S::at("US-FL").customer(),
                req(MARKETING, "email"),
                AllowedOptOutRegime,
            )
        },
        Case {
            shows: Shows::Obligations,
            ..case(
                "bulk_senders.one_click_unsubscribe",
                S::at("DE").customer(),
                req(MARKETING, "email"),
                AllowedSoftOptIn,
            )
        },
        // Canada.
        case(
            "casl.promises",
            S::at("CA").customer(),
            req(PROFILED, "web"),
            DeniedNoConsent,
        ),
        case(
            "casl.commercial_messages",
            S::at("CA")
                .with("user.contact.email", "newsletter_signup", t)
                .with("user.name", "checkout", t - 700 * DAY),
            req(MARKETING, "email"),
            AllowedImpliedConsent,
        ),
        case(
            "casl.commercial_messages",
            S::at("CA")
                .with("user.contact.email", "newsletter_signup", t)
                .with("user.name", "checkout", t - 740 * DAY),
            req(MARKETING, "email"),
            DeniedExpired,
        ),
        case(
            "casl.commercial_messages",
            S::at("CA").with("user.contact.email", "contact_form", t - 150 * DAY),
            req(MARKETING, "email"),
            AllowedImpliedConsent,
        ),
        case(
            "casl.commercial_messages",
            S::at("CA").with("user.contact.email", "contact_form", t - 200 * DAY),
            req(MARKETING, "email"),
            DeniedExpired,
        ),
        case(
            "casl.commercial_messages",
            S::at("CA").customer().consent(
                MARKETING,
                None,
                None,
                ConsentAction::Given,
                CollectionMethod::ImpliedInquiry,
                t - 200 * DAY,
            ),
            req(MARKETING, "email"),
            DeniedExpired,
        ),
        Case {
            shows: Shows::Reason,
            ..case(
                "casl.commercial_messages",
                S::at("CA").customer().consent(
                    MARKETING,
                    None,
                    None,
                    ConsentAction::Given,
                    CollectionMethod::WebForm,
                    t - 2000 * DAY,
                ),
                req(MARKETING, "email"),
                AllowedConsent,
            )
        },
        case(
            "casl.sensitive",
            health("CA"),
            health_req(),
            DeniedNoConsent,
        ),
        // Brazil.
        case(
            "lgpd.legal_bases",
            S::at("BR").customer(),
            req("essential.service.notifications.email", "email"),
            AllowedContract,
        ),
        case(
            "lgpd.sensitive",
            health("BR"),
            health_req(),
            DeniedNoConsent,
        ),
        // Unknown location.
        case(
            "strictest.declared_basis",
            S::at("ZZ").customer(),
            req("essential.service.notifications.email", "email"),
            AllowedContract,
        ),
        case(
            "strictest.opt_in",
            S::at("ZZ").with("user.contact.phone_number", "rewards_signup", t),
            req("loyalty.rewards", "sms"),
            DeniedNoConsent,
        ),
        case(
            "strictest.opt_in",
            S::at("ZZ").customer().given(MARKETING, None).consent(
                ADS,
                None,
                None,
                ConsentAction::Objected,
                CollectionMethod::WebForm,
                t - DAY,
            ),
            req(MARKETING, "email"),
            DeniedObjected,
        ),
        case(
            "strictest.marketing_texts",
            S::at("ZZ").customer().given(MARKETING, Some("sms")),
            req(MARKETING, "sms"),
            DeniedNoConsent,
        ),
        case(
            "strictest.sensitive",
            health("ZZ").consent(
                OPS,
                None,
                None,
                ConsentAction::Given,
                CollectionMethod::WebForm,
                t - 25 * 30 * DAY,
            ),
            health_req(),
            DeniedExpired,
        ),
        // Where the place is unknown the refresh counts from the consent, interaction or not.
        case(
            "strictest.sensitive",
            health("ZZ")
                .consent(
                    OPS,
                    None,
                    None,
                    ConsentAction::Given,
                    CollectionMethod::WebForm,
                    t - 25 * 30 * DAY,
                )
                .interacted(t - DAY),
            health_req(),
            DeniedExpired,
        ),
        case(
            "strictest.gpc",
            S::at("ZZ").customer().given(ADS, None).gpc(),
            req(ADS, "web"),
            DeniedGpc,
        ),
    ];
    v.extend(gpc_cases("us_state.co.gpc", "US-CO", date(2024, 7, 1)));
    v.extend(gpc_cases(
        "us_state.ct_tx_mt.gpc",
        "US-CT",
        date(2025, 1, 1),
    ));
    v.extend(gpc_cases(
        "us_state.ct_tx_mt.gpc",
        "US-TX",
        date(2025, 1, 1),
    ));
    v.extend(gpc_cases(
        "us_state.ct_tx_mt.gpc",
        "US-MT",
        date(2025, 1, 1),
    ));
    v.extend(gpc_cases("us_state.or_de.gpc", "US-OR", date(2026, 1, 1)));
    v.extend(gpc_cases("us_state.or_de.gpc", "US-DE", date(2026, 1, 1)));
    v.extend(gpc_cases("us_state.ne_nh.gpc", "US-NE", date(2025, 1, 1)));
    v.extend(gpc_cases("us_state.nj.gpc", "US-NJ", date(2025, 7, 15)));
    v.extend(gpc_cases("us_state.mn.gpc", "US-MN", date(2025, 7, 31)));
    v.extend(gpc_cases("us_state.md.gpc", "US-MD", date(2025, 10, 1)));
    v
}

#[test]
fn every_rulebook_row_has_a_case_and_decides_it() {
    let book = Rulebook::builtin().unwrap();
    let mut covered = BTreeSet::new();
    for c in cases() {
        let row = book
            .rules
            .iter()
            .find(|r| r.id == c.rule)
            .unwrap_or_else(|| panic!("no row `{}`", c.rule));
        let d = c.s.decide_at(&c.req, c.at);
        assert_eq!(d.reason, c.reason, "row {} with {:?}: {d:?}", c.rule, c.req);
        match c.shows {
            Shows::Cites => {
                assert!(
                    c.s.cited(&d).iter().any(|id| id == c.rule),
                    "row {} is not cited: {:?}",
                    c.rule,
                    c.s.cited(&d)
                );
                covered.insert(c.rule);
            }
            Shows::Obligations => {
                assert!(!row.obligations.is_empty());
                for o in row.obligations.iter() {
                    assert!(
                        d.obligations.contains(o),
                        "row {} obligation {o:?} missing",
                        c.rule
                    );
                }
                covered.insert(c.rule);
            }
            Shows::Reason => {}
        }
    }
    let missing: Vec<&str> = book
        .rules
        .iter()
        .map(|r| r.id.as_str())
        .filter(|id| !covered.contains(id))
        .collect();
    assert!(missing.is_empty(), "rows without a case: {missing:?}");
}

#[test]
fn every_row_cites_a_source() {
    let book = Rulebook::builtin().unwrap();
    assert!(book.rules.len() >= 30);
    for r in &book.rules {
        assert!(!r.source.trim().is_empty(), "{}", r.id);
        assert!(!r.regimes.is_empty(), "{}", r.id);
    }
}

#[test]
fn a_manifest_tightening_requires_opt_in_and_never_loosens() {
    let mut m = test_manifest();
    m.policy.tighten.push(Tightening {
        regime: Some(Regime::Us),
        purpose: "marketing.*".into(),
        channel: Some("email".into()),
        reason: "Opt-in before any marketing email in the US.".into(),
    });
    let mut s = S::at("US-FL").with("user.contact.email", "newsletter_signup", now());
    s.m = m.clone();
    let d = s.decide(&req(MARKETING, "email"));
    assert_eq!(d.reason, ReasonCode::DeniedNoConsent);
    assert_eq!(s.cited(&d), vec!["manifest.tighten.1"]);
    // Other purposes are untouched.
    let mut web = S::at("US-FL").customer();
    web.m = m.clone();
    assert_eq!(
        web.decide(&req(PROFILED, "web")).reason,
        ReasonCode::AllowedOptOutRegime
    );
    // A tightening to opt-in cannot loosen the written consent TCPA asks for texts.
    m.policy.tighten.push(Tightening {
        regime: None,
        purpose: "marketing.communications".into(),
        channel: Some("sms".into()),
        reason: "Opt-in for texts.".into(),
    });
    let mut sms = S::at("US-FL").customer().given(MARKETING, Some("sms"));
    sms.m = m.clone();
    let d = sms.decide(&req(MARKETING, "sms"));
    assert_eq!(d.reason, ReasonCode::DeniedNoConsent);
    assert_eq!(sms.cited(&d), vec!["us.tcpa.marketing_texts"]);

    let ctx = Compiled::new(m).unwrap();
    let rows = ctx.rulebook().rows();
    let last = rows.last().unwrap();
    assert_eq!(last.id, "manifest.tighten.2");
    assert_eq!(last.purposes, "marketing.communications");
    assert!(last.source.contains("Opt-in for texts."));
    assert!(matches!(
        ctx.rulebook().rules().last().unwrap().origin,
        RuleOrigin::Manifest { .. }
    ));
}

#[test]
fn the_effective_table_prints_every_row_with_its_source() {
    let ctx = Compiled::new(test_manifest()).unwrap();
    let table = ctx.rulebook().table();
    let book = Rulebook::builtin().unwrap();
    assert_eq!(table.lines().count(), book.rules.len() + 1);
    assert!(table.starts_with("id"));
    let tcpa = table
        .lines()
        .find(|l| l.starts_with("us.tcpa.marketing_texts"))
        .unwrap();
    assert!(tcpa.contains("opt_in_written"));
    assert!(tcpa.contains("47 CFR 64.1200"));
    let co = table
        .lines()
        .find(|l| l.starts_with("us_state.co.gpc"))
        .unwrap();
    assert!(co.contains("GPC is an opt-out from 2024-07-01"));
    assert!(table.contains("(verify)"));
}
