//! The data subject requests' cases.

use crate::requests::{ErasureState, NewErasureRequest};
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

pub async fn requests_erasure_is_filed_once_per_subject(store: Arc<dyn Store>) {
    let s = subject(store.as_ref()).await;
    assert!(store.erasure_requests(s).await.unwrap().is_empty());
    let new = NewErasureRequest {
        subject: s,
        regime: "gdpr".into(),
        source: "preference_center".into(),
        requested_at: T0,
        due_at: T0 + 30 * 24 * HOUR,
    };
    let first = store.file_erasure_request(new.clone()).await.unwrap();
    assert_eq!(first.subject, s);
    assert_eq!(first.state, ErasureState::Received);
    assert_eq!(first.due_at, T0 + 30 * 24 * HOUR);
    let again = store
        .file_erasure_request(NewErasureRequest {
            requested_at: T0 + HOUR,
            due_at: T0 + HOUR + 30 * 24 * HOUR,
            ..new.clone()
        })
        .await
        .unwrap();
    assert_eq!(again, first, "an open request is not filed twice");
    assert_eq!(store.erasure_requests(s).await.unwrap(), vec![first]);
    let missing = store
        .file_erasure_request(NewErasureRequest {
            subject: SubjectId(999_999),
            ..new
        })
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound { .. })),
        "{missing:?}"
    );
}
