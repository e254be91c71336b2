//! The webhook outbox's cases: idempotent enqueueing, leases, attempts, dead letters, erasure,
//! and the delivery kinds.

use crate::outbox::{Attempt, Delivery, DeliveryKind, DeliveryState, NewDelivery, OutboxCounts};
use crate::{NewSubject, Store, StoreError};
use kept_core::SubjectId;
use std::collections::BTreeSet;
use std::sync::Arc;

const T0: i64 = 1_790_000_000_000;

async fn subjects(store: &dyn Store, n: usize) -> Vec<SubjectId> {
    store
        .insert_subjects(
            (0..n)
                .map(|_| NewSubject {
                    user_id: None,
                    country: Some("DE".into()),
                    region: None,
                    time_zone: None,
                    created_at: T0,
                })
                .collect(),
        )
        .await
        .unwrap()
}

/// A delivery whose fields all depend on `event` and `system`.
pub fn delivery(event: &str, system: &str, subject: SubjectId, at: i64) -> NewDelivery {
    NewDelivery {
        kind: DeliveryKind::Event,
        message_id: format!("msg_{event}_{system}"),
        event_id: event.to_owned(),
        system: system.to_owned(),
        subject,
        payload: format!(
            r#"{{"type":"event.track","data":{{"event":"{event}","to":"{system}"}}}}"#
        ),
        created_at: at,
    }
}

fn ids(deliveries: &[Delivery]) -> Vec<u64> {
    deliveries.iter().map(|d| d.id).collect()
}

pub async fn outbox_enqueue_is_idempotent_per_event_and_system(store: Arc<dyn Store>) {
    let s = subjects(store.as_ref(), 1).await[0];
    assert_eq!(
        store.outbox_counts().await.unwrap(),
        OutboxCounts::default()
    );
    let first = vec![
        delivery("e1", "crm", s, T0),
        delivery("e1", "ads", s, T0),
        delivery("e2", "crm", s, T0 + 1),
    ];
    assert_eq!(store.enqueue_deliveries(first.clone()).await.unwrap(), 3);
    // The same events again (a client retry), with one new pair: only the new one is queued,
    // and the stored ones keep their original payload.
    let mut again = first;
    again[0].payload = r#"{"changed":true}"#.into();
    again.push(delivery("e2", "ads", s, T0 + 2));
    assert_eq!(store.enqueue_deliveries(again).await.unwrap(), 1);
    assert_eq!(store.enqueue_deliveries(Vec::new()).await.unwrap(), 0);

    let e1 = store.deliveries_for_event("e1").await.unwrap();
    assert_eq!(
        e1.iter()
            .map(|d| d.system.as_str())
            .collect::<BTreeSet<_>>(),
        BTreeSet::from(["ads", "crm"])
    );
    let crm = e1.iter().find(|d| d.system == "crm").unwrap();
    assert_eq!(crm.payload, delivery("e1", "crm", s, T0).payload);
    assert_eq!(crm.message_id, "msg_e1_crm");
    assert_eq!(crm.subject, s);
    assert_eq!(crm.state, DeliveryState::Pending);
    assert_eq!(crm.kind, DeliveryKind::Event);
    assert_eq!(crm.attempts, 0);
    assert_eq!(crm.next_attempt_at, T0);
    assert_eq!(crm.created_at, T0);
    assert_eq!(crm.last_status, None);
    assert_eq!(crm.last_error, None);
    assert_eq!(store.delivery(crm.id).await.unwrap().as_ref(), Some(crm));
    assert_eq!(store.delivery(crm.id + 1000).await.unwrap(), None);
    assert!(store.deliveries_for_event("nope").await.unwrap().is_empty());
    assert_eq!(store.outbox_counts().await.unwrap().pending, 4);

    // A subject's deliveries page in id order; another subject's are not among them.
    let other = subjects(store.as_ref(), 1).await[0];
    store
        .enqueue_deliveries(vec![delivery("e9", "crm", other, T0)])
        .await
        .unwrap();
    let all = store.deliveries_of(s, None, 10).await.unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.iter().all(|d| d.subject == s));
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    let first_two = store.deliveries_of(s, None, 2).await.unwrap();
    let rest = store
        .deliveries_of(s, Some(first_two[1].id), 10)
        .await
        .unwrap();
    assert_eq!(
        ids(&first_two)
            .into_iter()
            .chain(ids(&rest))
            .collect::<Vec<_>>(),
        ids(&all)
    );
    assert_eq!(store.deliveries_of(other, None, 10).await.unwrap().len(), 1);
}

pub async fn outbox_claims_due_deliveries_oldest_first_under_a_lease(store: Arc<dyn Store>) {
    let s = subjects(store.as_ref(), 1).await[0];
    // Queued out of time order: the claim orders by due time, not by insertion.
    store
        .enqueue_deliveries(vec![
            delivery("late", "crm", s, T0 + 50),
            delivery("early", "crm", s, T0 + 10),
            delivery("future", "crm", s, T0 + 1_000),
        ])
        .await
        .unwrap();
    let lease = T0 + 500;
    let claimed = store
        .claim_due_deliveries(T0 + 100, lease, 10)
        .await
        .unwrap();
    assert_eq!(
        claimed
            .iter()
            .map(|d| d.event_id.as_str())
            .collect::<Vec<_>>(),
        ["early", "late"]
    );
    assert!(claimed.iter().all(|d| d.next_attempt_at == lease));
    // Leased: not claimable again before the lease runs out, even though they were due.
    assert!(
        store
            .claim_due_deliveries(T0 + 100, T0 + 600, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A worker that died holding them: once the lease has run out they are claimed again
    // (both now due at the same time, so in id order).
    let again = store
        .claim_due_deliveries(lease, lease + 500, 1)
        .await
        .unwrap();
    assert_eq!(again.len(), 1, "the limit is respected");
    let first_id = claimed.iter().map(|d| d.id).min().unwrap();
    let last_id = claimed.iter().map(|d| d.id).max().unwrap();
    assert_eq!(ids(&again), vec![first_id]);
    let rest = store
        .claim_due_deliveries(lease, lease + 500, 10)
        .await
        .unwrap();
    assert_eq!(ids(&rest), vec![last_id]);
    // Claiming never counts as an attempt.
    assert!(rest.iter().all(|d| d.attempts == 0));
}

pub async fn outbox_concurrent_claims_never_share_a_delivery(store: Arc<dyn Store>) {
    let s = subjects(store.as_ref(), 1).await[0];
    let queued: Vec<_> = (0..200)
        .map(|i| delivery(&format!("e{i}"), "crm", s, T0 + i))
        .collect();
    store.enqueue_deliveries(queued).await.unwrap();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let claimed = store
                        .claim_due_deliveries(T0 + 1_000, T0 + 60_000, 7)
                        .await
                        .unwrap();
                    if claimed.is_empty() {
                        break mine;
                    }
                    mine.extend(ids(&claimed));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let distinct: BTreeSet<_> = all.iter().copied().collect();
    assert_eq!(all.len(), 200, "every delivery claimed exactly once");
    assert_eq!(distinct.len(), 200);
}

pub async fn outbox_attempts_retry_deliver_suppress_and_die(store: Arc<dyn Store>) {
    let s = subjects(store.as_ref(), 1).await[0];
    store
        .enqueue_deliveries(vec![
            delivery("ok", "crm", s, T0),
            delivery("denied", "crm", s, T0),
            delivery("down", "crm", s, T0),
        ])
        .await
        .unwrap();
    let id = |event: &str| {
        let store = store.clone();
        let event = event.to_owned();
        async move { store.deliveries_for_event(&event).await.unwrap()[0].id }
    };
    let (ok, denied, down) = (id("ok").await, id("denied").await, id("down").await);

    // A failure with a retry time: still pending, due then, one attempt counted.
    store
        .record_attempt(
            ok,
            &Attempt::Failed {
                at: T0 + 1,
                status: Some(500),
                error: "the destination answered 500".into(),
                retry_at: Some(T0 + 5_000),
            },
        )
        .await
        .unwrap();
    let d = store.delivery(ok).await.unwrap().unwrap();
    assert_eq!(
        (d.state, d.attempts, d.next_attempt_at, d.last_status),
        (DeliveryState::Pending, 1, T0 + 5_000, Some(500))
    );
    assert_eq!(
        d.last_error.as_deref(),
        Some("the destination answered 500")
    );
    assert_eq!(d.updated_at, T0 + 1);
    assert!(!d.payload.is_empty());
    // Then delivered: the payload is dropped, the error of the earlier try stays readable.
    store
        .record_attempt(
            ok,
            &Attempt::Delivered {
                at: T0 + 6_000,
                status: 204,
            },
        )
        .await
        .unwrap();
    let d = store.delivery(ok).await.unwrap().unwrap();
    assert_eq!(
        (d.state, d.attempts, d.last_status, d.updated_at),
        (DeliveryState::Delivered, 2, Some(204), T0 + 6_000)
    );
    assert_eq!(d.payload, "");
    // A delivered delivery takes no further attempt.
    let again = store
        .record_attempt(
            ok,
            &Attempt::Delivered {
                at: T0 + 7_000,
                status: 200,
            },
        )
        .await;
    assert!(
        matches!(again, Err(StoreError::NotFound { .. })),
        "{again:?}"
    );

    // Suppressed: not an attempt, the reason kept, the payload dropped.
    store
        .record_attempt(
            denied,
            &Attempt::Suppressed {
                at: T0 + 2,
                reason: "denied.withdrawn".into(),
            },
        )
        .await
        .unwrap();
    let d = store.delivery(denied).await.unwrap().unwrap();
    assert_eq!((d.state, d.attempts), (DeliveryState::Suppressed, 0));
    assert_eq!(d.last_error.as_deref(), Some("denied.withdrawn"));
    assert_eq!(d.payload, "");

    // A failure without a retry time: a dead letter that keeps its payload for a later retry.
    store
        .record_attempt(
            down,
            &Attempt::Failed {
                at: T0 + 3,
                status: None,
                error: "connection refused".into(),
                retry_at: None,
            },
        )
        .await
        .unwrap();
    let d = store.delivery(down).await.unwrap().unwrap();
    assert_eq!(
        (d.state, d.attempts, d.last_status),
        (DeliveryState::Dead, 1, None)
    );
    assert_eq!(d.payload, delivery("down", "crm", s, T0).payload);
    // Nothing that is not pending is claimed.
    assert!(
        store
            .claim_due_deliveries(T0 + 100_000, T0 + 200_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.outbox_counts().await.unwrap(),
        OutboxCounts {
            pending: 0,
            delivered: 1,
            dead: 1,
            suppressed: 1
        }
    );
    let missing = store
        .record_attempt(
            down + 1000,
            &Attempt::Suppressed {
                at: T0,
                reason: "x".into(),
            },
        )
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound { .. })),
        "{missing:?}"
    );
}

pub async fn outbox_dead_letters_are_listed_and_retried(store: Arc<dyn Store>) {
    let s = subjects(store.as_ref(), 1).await[0];
    let queued: Vec<_> = (0..5)
        .map(|i| delivery(&format!("e{i}"), "crm", s, T0))
        .collect();
    store.enqueue_deliveries(queued).await.unwrap();
    let claimed = store.claim_due_deliveries(T0, T0 + 10, 10).await.unwrap();
    assert_eq!(claimed.len(), 5);
    // Kill all but the middle one.
    for d in claimed.iter().filter(|d| d.event_id != "e2") {
        store
            .record_attempt(
                d.id,
                &Attempt::Failed {
                    at: T0 + 1,
                    status: Some(503),
                    error: "the destination answered 503".into(),
                    retry_at: None,
                },
            )
            .await
            .unwrap();
    }
    let all = store.dead_deliveries(None, 100).await.unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "in id order");
    assert!(all.iter().all(|d| d.state == DeliveryState::Dead));
    let first = store.dead_deliveries(None, 3).await.unwrap();
    let next = store
        .dead_deliveries(first.last().map(|d| d.id), 3)
        .await
        .unwrap();
    assert_eq!(
        ids(&first)
            .into_iter()
            .chain(ids(&next))
            .collect::<Vec<_>>(),
        ids(&all)
    );

    let retried = store.retry_dead_delivery(all[0].id, T0 + 50).await.unwrap();
    assert_eq!(
        (retried.state, retried.attempts, retried.next_attempt_at),
        (DeliveryState::Pending, 0, T0 + 50)
    );
    assert_eq!(retried.payload, all[0].payload);
    assert_eq!(store.dead_deliveries(None, 100).await.unwrap().len(), 3);
    // Due again with the one left pending (its claim ran out at T0 + 10).
    let survivor = store.deliveries_for_event("e2").await.unwrap()[0].id;
    let claimed = store
        .claim_due_deliveries(T0 + 50, T0 + 60, 10)
        .await
        .unwrap();
    assert_eq!(
        ids(&claimed).into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([all[0].id, survivor])
    );
    // Only a dead letter can be retried.
    let pending = all[0].id;
    assert!(matches!(
        store.retry_dead_delivery(pending, T0 + 70).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.retry_dead_delivery(u64::MAX / 2, T0 + 70).await,
        Err(StoreError::NotFound { .. })
    ));
}

pub async fn outbox_erasure_deletes_a_subjects_deliveries(store: Arc<dyn Store>) {
    let ids = subjects(store.as_ref(), 2).await;
    let (gone, kept) = (ids[0], ids[1]);
    store
        .enqueue_deliveries(vec![
            delivery("a", "crm", gone, T0),
            delivery("a", "ads", gone, T0),
            delivery("b", "crm", kept, T0),
        ])
        .await
        .unwrap();
    assert_eq!(store.delete_subject_deliveries(gone).await.unwrap(), 2);
    assert_eq!(store.delete_subject_deliveries(gone).await.unwrap(), 0);
    assert!(store.deliveries_for_event("a").await.unwrap().is_empty());
    assert_eq!(store.deliveries_for_event("b").await.unwrap().len(), 1);
    assert_eq!(store.outbox_counts().await.unwrap().pending, 1);
}

pub async fn outbox_obligations_and_events_are_kinds_of_delivery(store: Arc<dyn Store>) {
    let ids = subjects(store.as_ref(), 1).await;
    let s = ids[0];
    let obligation = |request: &str, system: &str| NewDelivery {
        kind: DeliveryKind::Obligation,
        ..delivery(request, system, s, T0)
    };
    assert_eq!(
        store
            .enqueue_deliveries(vec![
                delivery("e1", "crm", s, T0),
                obligation("erasure-1", "crm"),
                obligation("erasure-1", "ads"),
            ])
            .await
            .unwrap(),
        3
    );
    // One delivery per id and system whatever the kind: an obligation queued again is not
    // owed twice.
    assert_eq!(
        store
            .enqueue_deliveries(vec![obligation("erasure-1", "crm")])
            .await
            .unwrap(),
        0
    );
    let owed = store.deliveries_for_event("erasure-1").await.unwrap();
    assert_eq!(owed.len(), 2);
    assert!(owed.iter().all(|d| d.kind == DeliveryKind::Obligation));
    assert!(!DeliveryKind::Obligation.gated_by_decision());
    assert!(DeliveryKind::Event.gated_by_decision());
    // A claim hands out both kinds, each as stored.
    let claimed = store.claim_due_deliveries(T0, T0 + 10, 10).await.unwrap();
    let kinds: BTreeSet<(String, DeliveryKind)> = claimed
        .iter()
        .map(|d| (d.event_id.clone(), d.kind))
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            ("e1".to_owned(), DeliveryKind::Event),
            ("erasure-1".to_owned(), DeliveryKind::Obligation),
        ])
    );
    let owed_crm = owed.iter().find(|d| d.system == "crm").unwrap();
    store
        .record_attempt(
            owed_crm.id,
            &Attempt::Delivered {
                at: T0 + 1,
                status: 200,
            },
        )
        .await
        .unwrap();
    let delivered = store.delivery(owed_crm.id).await.unwrap().unwrap();
    assert_eq!(
        (delivered.kind, delivered.state),
        (DeliveryKind::Obligation, DeliveryState::Delivered)
    );
    // Erasure deletes the subject's events, never what is owed to carry it out.
    assert_eq!(store.delete_subject_deliveries(s).await.unwrap(), 1);
    assert!(store.deliveries_for_event("e1").await.unwrap().is_empty());
    assert_eq!(
        store.deliveries_for_event("erasure-1").await.unwrap().len(),
        2
    );
}
