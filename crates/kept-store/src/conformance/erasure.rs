//! Conformance cases for erasure and the suppression list: one transaction deletes everything a
//! subject (and every subject merged into it) has, but the ledger and what a plan keeps; a
//! second erasure changes nothing; an identifier suppressed and collected again marks its new
//! holder.

use super::store::{event, ident, logged, new_identity};
use super::{T0, a_trait, new_subject, record};
use crate::Store;
use crate::collection::{EventWrite, IdentityWrite, NewMerge};
use crate::erasure::{ErasurePlan, KeepRule};
use crate::outbox::{DeliveryKind, NewDelivery};
use crate::prefcenter::NewSession;
use crate::{UseKind, UseRecord, UseSubjects};
use kept_core::SubjectId;
use kept_core::identity::{IdentifierKind as K, PlannedSubject};
use kept_core::subject::{ChannelPreference, Contact};
use std::sync::Arc;

const DAY: i64 = 24 * 60 * 60 * 1000;

fn keep_orders() -> Vec<KeepRule> {
    vec![KeepRule {
        // `a_trait` names a trait `orders` of category `user.orders`.
        category: "user.orders".into(),
        purpose: "essential.legal_obligation".into(),
        basis: "legal_obligation".into(),
        retention_days: 3650,
    }]
}

fn plan(subject: SubjectId, at: i64) -> ErasurePlan {
    ErasurePlan {
        subject,
        request: Some(7),
        keep: keep_orders(),
        suppress: vec![ident(90)],
        at,
    }
}

fn delivery(subject: SubjectId, id: &str, kind: DeliveryKind) -> NewDelivery {
    NewDelivery {
        kind,
        message_id: format!("msg-{id}"),
        event_id: id.into(),
        system: "crm".into(),
        subject,
        payload: "{}".into(),
        created_at: T0,
    }
}

/// A known customer `a` (user id column, email, a data key) with a browsing profile `b` merged
/// into it, and `c`, someone else; each holding a little of everything.
async fn people(store: &Arc<dyn Store>) -> (SubjectId, SubjectId, SubjectId) {
    let ids = store
        .write_identities(IdentityWrite {
            new_subjects: vec![
                new_subject(Some("u-a"), "DE"),
                new_subject(None, "DE"),
                new_subject(Some("u-c"), "FR"),
            ],
            keys: vec![
                (PlannedSubject::New(0), vec![1; 56]),
                (PlannedSubject::New(1), vec![2; 56]),
                (PlannedSubject::New(2), vec![3; 56]),
            ],
            attach: vec![
                new_identity(PlannedSubject::New(0), K::Email, 10),
                new_identity(PlannedSubject::New(1), K::AnonymousId, 11),
                new_identity(PlannedSubject::New(2), K::Email, 20),
            ],
            at: T0,
            ..IdentityWrite::default()
        })
        .await
        .unwrap();
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    for s in [a, b, c] {
        store
            .upsert_traits(vec![
                a_trait(s, "name", serde_json::json!("Someone"), 1),
                a_trait(s, "orders", serde_json::json!(3), 1),
            ])
            .await
            .unwrap();
        store
            .write_events(EventWrite {
                events: vec![event("k", &format!("m-{}", s.0), s, T0)],
                traits: Vec::new(),
            })
            .await
            .unwrap();
        store
            .put_channel_preference(&ChannelPreference {
                subject: s,
                channel: "email".into(),
                frequency: None,
                quiet_hours: None,
                updated_at: T0,
            })
            .await
            .unwrap();
        let contact = Contact {
            subject: s,
            channel: "email".into(),
            purpose: "marketing.communications".into(),
            topic: None,
            at: T0,
        };
        let used = UseRecord {
            id: 0,
            at: T0,
            kind: UseKind::Contact,
            subjects: UseSubjects::One(s),
            purpose: "marketing.communications".into(),
            channel: Some("email".into()),
            topic: None,
            categories: vec!["user.contact.email".into()],
            reason: "allowed.consent".into(),
            evidence: "[]".into(),
            actor: "kept_test".into(),
            reference: None,
        };
        store
            .record_contacts(vec![contact], vec![used])
            .await
            .unwrap();
        store
            .append_decision_log(vec![logged(
                1,
                Some(s.0),
                "marketing.communications",
                "denied.no_consent",
            )])
            .await
            .unwrap();
        store.append_consent(record(s.0, 1)).await.unwrap();
        store
            .open_session(NewSession {
                id: format!("session-{}", s.0),
                subject: s,
                created_at: T0,
                expires_at: T0 + DAY,
            })
            .await
            .unwrap();
        store
            .enqueue_deliveries(vec![
                delivery(s, &format!("e-{}", s.0), DeliveryKind::Event),
                delivery(s, &format!("o-{}", s.0), DeliveryKind::Obligation),
            ])
            .await
            .unwrap();
    }
    store
        .write_identities(IdentityWrite {
            merges: vec![NewMerge {
                from: PlannedSubject::Existing(b),
                into: PlannedSubject::Existing(a),
                reason: "identify".into(),
            }],
            at: T0 + 1,
            ..IdentityWrite::default()
        })
        .await
        .unwrap();
    (a, b, c)
}

pub async fn erasure_deletes_everything_but_what_the_law_keeps(store: Arc<dyn Store>) {
    let (a, b, c) = people(&store).await;
    let ledger_before = store.ledger_len().await.unwrap();
    // Named by the profile merged away: the survivor and everything merged into it go.
    let report = store.erase_subject(&plan(b, T0 + 10)).await.unwrap();
    assert_eq!(report.subject, a);
    assert_eq!(report.subjects, vec![a, b]);
    assert!(!report.already_erased);
    assert_eq!(report.erased_at, T0 + 10);
    // The email and the anonymous id (held by `a` since the merge), and the extra hash.
    assert_eq!(report.suppressed, 3);
    let deleted = |table: &str| report.deleted.get(table).copied().unwrap_or(0);
    assert_eq!(deleted("subject_keys"), 2);
    assert_eq!(deleted("identities"), 2);
    assert_eq!(deleted("events"), 2);
    assert_eq!(deleted("channel_preferences"), 2);
    assert_eq!(deleted("contacts"), 2);
    assert_eq!(deleted("uses"), 2);
    assert_eq!(deleted("decision_log"), 2);
    assert_eq!(deleted("prefcenter_sessions"), 2);
    assert_eq!(deleted("merges"), 1);
    assert_eq!(deleted("identity_log"), 1);
    assert_eq!(
        deleted("outbox"),
        2,
        "event deliveries go, obligations stay"
    );
    // `b`'s traits moved to `a` with the merge: `a` holds two, one kept for the law.
    assert_eq!(deleted("traits"), 1);
    assert_eq!(report.retained.len(), 1);
    let kept = &report.retained[0];
    assert_eq!(
        (kept.table.as_str(), kept.subject, kept.item.as_str()),
        ("traits", a, "orders")
    );
    assert_eq!(kept.purpose, "essential.legal_obligation");
    assert_eq!(kept.basis, "legal_obligation");
    assert_eq!(kept.until, T0 + 1 + 3650 * DAY);

    // The data keys are gone: nothing sealed can be opened; lookups find nobody.
    assert!(store.subject_keys(&[a, b]).await.unwrap().is_empty());
    assert!(
        store
            .find_identities(&[ident(10), ident(11)])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.identities_of(a).await.unwrap().is_empty());
    assert!(
        store
            .subjects_by_user_ids(&["u-a".into()])
            .await
            .unwrap()
            .is_empty()
    );
    let traits = store.traits(a).await.unwrap();
    assert_eq!(traits.len(), 1);
    assert_eq!(traits[0].key, "orders");
    assert!(store.events_of(a, None, 100).await.unwrap().is_empty());
    assert!(store.channel_preferences(a).await.unwrap().is_empty());
    assert!(store.contacts_of(a, 0).await.unwrap().is_empty());
    assert!(store.survivors(&[b]).await.unwrap().is_empty());
    // A tombstone: the id stays, with nothing that says who it was.
    for s in [a, b] {
        let tomb = store.subject(s).await.unwrap().unwrap();
        assert_eq!(tomb.erased_at, Some(T0 + 10));
        assert!(tomb.erasure_requested_at.is_some());
        assert_eq!(
            (tomb.user_id, tomb.country, tomb.time_zone),
            (None, None, None)
        );
    }
    // The ledger stays whole, and still verifies.
    assert_eq!(store.ledger_len().await.unwrap(), ledger_before);
    assert_eq!(store.ledger_for_subject(a).await.unwrap().len(), 1);
    assert_eq!(
        super::verify_stored_chain(store.as_ref()).await,
        ledger_before
    );
    // The suppression list holds the keyed hashes, nothing else.
    let mut listed = store
        .suppressed(&[ident(10), ident(11), ident(20), ident(90)])
        .await
        .unwrap();
    listed.sort();
    assert_eq!(listed, vec![ident(10), ident(11), ident(90)]);

    // Someone else is untouched.
    assert_eq!(store.traits(c).await.unwrap().len(), 2);
    assert_eq!(store.events_of(c, None, 100).await.unwrap().len(), 1);
    assert_eq!(store.subject_keys(&[c]).await.unwrap().len(), 1);
    assert_eq!(
        store.find_identities(&[ident(20)]).await.unwrap(),
        vec![(ident(20), c)]
    );
    let other = store.subject(c).await.unwrap().unwrap();
    assert_eq!(
        (other.erased_at, other.user_id.as_deref()),
        (None, Some("u-c"))
    );
}

pub async fn erasure_is_idempotent(store: Arc<dyn Store>) {
    let (a, _, c) = people(&store).await;
    let first = store.erase_subject(&plan(a, T0 + 10)).await.unwrap();
    let second = store.erase_subject(&plan(a, T0 + 20)).await.unwrap();
    assert!(second.already_erased);
    assert_eq!(second.subject, a);
    assert_eq!(second.erased_at, T0 + 10, "the first erasure's time stands");
    assert!(second.deleted.is_empty());
    assert_eq!(second.suppressed, 0);
    assert_eq!(second.retained, first.retained);
    assert_eq!(store.traits(a).await.unwrap().len(), 1);
    assert_eq!(store.traits(c).await.unwrap().len(), 2);
    // Nobody: not found, and nothing written.
    let missing = store.erase_subject(&plan(SubjectId(999), T0)).await;
    assert!(matches!(missing, Err(crate::StoreError::NotFound { .. })));
}

pub async fn erasure_suppressed_identifiers_mark_their_new_holder(store: Arc<dyn Store>) {
    let (a, _, _) = people(&store).await;
    store.erase_subject(&plan(a, T0 + 10)).await.unwrap();
    // The erased email comes back on a new profile; an unrelated one comes with it.
    let ids = store
        .write_identities(IdentityWrite {
            new_subjects: vec![new_subject(None, "DE"), new_subject(None, "DE")],
            keys: vec![
                (PlannedSubject::New(0), vec![4; 56]),
                (PlannedSubject::New(1), vec![5; 56]),
            ],
            attach: vec![
                new_identity(PlannedSubject::New(0), K::Email, 10),
                new_identity(PlannedSubject::New(1), K::Email, 30),
            ],
            at: T0 + 100,
            ..IdentityWrite::default()
        })
        .await
        .unwrap();
    let (back, fresh) = (ids[0], ids[1]);
    let back_row = store.subject(back).await.unwrap().unwrap();
    assert_eq!(back_row.erasure_suppressed_at, Some(T0 + 100));
    assert_eq!(back_row.erased_at, None);
    let fresh_row = store.subject(fresh).await.unwrap().unwrap();
    assert_eq!(fresh_row.erasure_suppressed_at, None);
    // Merged into someone, the mark goes along.
    store
        .write_identities(IdentityWrite {
            merges: vec![NewMerge {
                from: PlannedSubject::Existing(back),
                into: PlannedSubject::Existing(fresh),
                reason: "identify".into(),
            }],
            at: T0 + 200,
            ..IdentityWrite::default()
        })
        .await
        .unwrap();
    let fresh_row = store.subject(fresh).await.unwrap().unwrap();
    assert_eq!(fresh_row.erasure_suppressed_at, Some(T0 + 100));
}
