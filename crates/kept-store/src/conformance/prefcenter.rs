//! The preference center's cases: single-use tokens and sessions.

use crate::prefcenter::NewSession;
use crate::{NewSubject, Store, StoreError};
use kept_core::SubjectId;
use std::sync::Arc;

const T0: i64 = 1_790_000_000_000;
const HOUR: i64 = 60 * 60 * 1000;

async fn subject(store: &dyn Store) -> SubjectId {
    store
        .insert_subjects(vec![NewSubject {
            user_id: None,
            country: Some("DE".into()),
            region: None,
            time_zone: None,
            created_at: T0,
        }])
        .await
        .unwrap()[0]
}

pub async fn prefcenter_tokens_are_spent_once(store: Arc<dyn Store>) {
    assert!(store.spend_token("a1", T0 + HOUR, T0).await.unwrap());
    assert!(!store.spend_token("a1", T0 + HOUR, T0 + 1).await.unwrap());
    assert!(store.spend_token("b2", T0 + HOUR, T0 + 2).await.unwrap());
    // Forgetting expired ids must not make a live one spendable again.
    assert!(
        store
            .spend_token("c3", T0 + 3 * HOUR, T0 + 2 * HOUR)
            .await
            .unwrap()
    );
    assert!(
        !store
            .spend_token("c3", T0 + 3 * HOUR, T0 + 2 * HOUR + 1)
            .await
            .unwrap()
    );
}

pub async fn prefcenter_concurrent_spends_let_one_through(store: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.spend_token("same", T0 + HOUR, T0 + i).await.unwrap()
        }));
    }
    let mut spent = 0;
    for t in tasks {
        if t.await.unwrap() {
            spent += 1;
        }
    }
    assert_eq!(spent, 1);
}

pub async fn prefcenter_sessions_end_when_revoked_expired_or_replaced(store: Arc<dyn Store>) {
    let s = subject(store.as_ref()).await;
    let other = subject(store.as_ref()).await;
    let session = |id: &str, subject: SubjectId, at: i64| NewSession {
        id: id.into(),
        subject,
        created_at: at,
        expires_at: at + 2 * HOUR,
    };
    assert_eq!(store.live_session("a", T0).await.unwrap(), None);
    store.open_session(session("a", s, T0)).await.unwrap();
    store.open_session(session("x", other, T0)).await.unwrap();
    assert_eq!(store.live_session("a", T0 + 1).await.unwrap(), Some(s));
    // Expired: the row says so even though nobody revoked it.
    assert_eq!(store.live_session("a", T0 + 2 * HOUR).await.unwrap(), None);

    // Sign-out ends that session only.
    store.open_session(session("b", s, T0 + 1)).await.unwrap();
    assert_eq!(
        store.live_session("a", T0 + 2).await.unwrap(),
        None,
        "a new session of the subject revokes the old one"
    );
    assert_eq!(store.live_session("b", T0 + 2).await.unwrap(), Some(s));
    store.revoke_session("b", T0 + 3).await.unwrap();
    store.revoke_session("b", T0 + 4).await.unwrap();
    store.revoke_session("unknown", T0 + 4).await.unwrap();
    assert_eq!(store.live_session("b", T0 + 5).await.unwrap(), None);
    assert_eq!(store.live_session("x", T0 + 5).await.unwrap(), Some(other));

    // Erasure ends all of a subject's sessions, and nobody else's.
    store.open_session(session("c", s, T0 + 6)).await.unwrap();
    assert_eq!(store.revoke_sessions(s, T0 + 7).await.unwrap(), 1);
    assert_eq!(store.revoke_sessions(s, T0 + 8).await.unwrap(), 0);
    assert_eq!(store.live_session("c", T0 + 9).await.unwrap(), None);
    assert_eq!(store.live_session("x", T0 + 9).await.unwrap(), Some(other));

    // Forgetting expired rows never revives a revoked id.
    store
        .open_session(session("d", other, T0 + 3 * HOUR))
        .await
        .unwrap();
    assert_eq!(store.live_session("c", T0 + 9).await.unwrap(), None);

    let missing = store
        .open_session(session("e", SubjectId(999_999), T0))
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound { .. })),
        "{missing:?}"
    );
}
