//! The data subject requests' cases.

use crate::conformance::TestSigner;
use crate::requests::{ErasureState, NewErasureRequest, OpenCounts, RequestFilter};
use crate::{NewSubject, Store, StoreError};
use kept_core::SubjectId;
use kept_core::ledger::{ChainHash, Columns, check_checkpoint_chain};
use kept_core::regime::Regime;
use kept_core::requests::{
    Channel, Intake, LogRecord, Request, RequestKind, Scope, State, Transition, Verification,
    VerificationMethod, decode_record,
};
use kept_core::rights::Rights;
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

fn intake(subject: SubjectId, kind: RequestKind) -> Request {
    kept_core::requests::intake(
        &Rights::builtin().unwrap(),
        Intake {
            subject,
            kind,
            scope: Scope::default(),
            channel: Channel::Api,
            verification: None,
            regime: Regime::Gdpr,
            region: None,
            at: T0,
        },
    )
    .unwrap()
}

fn advance(verification: Option<Verification>) -> Transition {
    Transition::Advance {
        expect: None,
        verification,
        note: None,
    }
}

fn stated() -> Verification {
    Verification {
        method: VerificationMethod::CompanyStated,
        reference: Some("case-7".into()),
        agent: None,
    }
}

/// Checks the whole requests log: chained, every checkpoint signed and matching, and returns
/// the records.
async fn verified_log(store: &dyn Store, signer: &TestSigner) -> Vec<LogRecord> {
    let checkpoints = store.request_log_checkpoints().await.unwrap();
    check_checkpoint_chain(&checkpoints).unwrap();
    let mut verifier = kept_core::requests::verifier(checkpoints.iter().map(|c| c.seq));
    let rows = store.request_log_rows(0, u32::MAX).await.unwrap();
    for row in &rows {
        let hash = ChainHash::from_slice(&row.hash).unwrap();
        let columns = Columns {
            subject: row.subject,
            at: row.at,
        };
        verifier
            .push(row.seq, &row.bytes, &hash, Some(columns))
            .unwrap();
    }
    verifier
        .finish(&checkpoints, &signer.key.verifying_key())
        .unwrap();
    rows.iter()
        .map(|r| decode_record(&r.bytes).unwrap())
        .collect()
}

pub async fn requests_are_filed_stepped_and_logged(store: Arc<dyn Store>) {
    let signer = TestSigner::new(3);
    store.set_checkpoint_signer(Some(signer.clone()));
    let s = subject(store.as_ref()).await;
    let filed = store
        .file_request(intake(s, RequestKind::Erasure), "key:test")
        .await
        .unwrap();
    let id = filed.request.id;
    assert!(id > 0);
    assert_eq!(filed.request.state, State::Received);
    assert_eq!(filed.entry.seq, 1);
    assert!(
        filed.checkpoint.is_some(),
        "a step commits with its checkpoint"
    );
    assert!(
        signer.committed.lock().unwrap().is_empty(),
        "the ledger's witness is not told of the requests log's checkpoints"
    );
    assert_eq!(
        store.request(id).await.unwrap(),
        Some(filed.request.clone())
    );

    let verified = store
        .step_request(id, &advance(Some(stated())), "key:test", T0 + HOUR)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(verified.request.state, State::Verified);
    assert_eq!(verified.request.verification, Some(stated()));
    let extended = store
        .step_request(
            id,
            &Transition::Extend {
                reason: "three systems".into(),
                until: None,
            },
            "key:test",
            T0 + 2 * HOUR,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(extended.request.state, State::Extended);
    assert_eq!(Some(extended.request.due_at), filed.request.extension_until);
    let twice = store
        .step_request(
            id,
            &Transition::Extend {
                reason: "again".into(),
                until: None,
            },
            "key:test",
            T0 + 3 * HOUR,
        )
        .await
        .unwrap();
    assert_eq!(twice.unwrap_err().code(), "request.extended_twice");
    for at in [4, 5] {
        store
            .step_request(id, &advance(None), "key:test", T0 + at * HOUR)
            .await
            .unwrap()
            .unwrap();
    }
    let done = store.request(id).await.unwrap().unwrap();
    assert_eq!(done.state, State::Completed);

    let records = verified_log(store.as_ref(), &signer).await;
    let steps: Vec<(Option<State>, State)> = records.iter().map(|r| (r.from, r.to)).collect();
    assert_eq!(
        steps,
        vec![
            (None, State::Received),
            (Some(State::Received), State::Verified),
            (Some(State::Verified), State::Extended),
            (Some(State::Extended), State::InProgress),
            (Some(State::InProgress), State::Completed),
        ]
    );
    assert_eq!(store.request_log_of(id).await.unwrap().len(), 5);
    assert!(store.request_log_of(id + 1).await.unwrap().is_empty());

    let missing = store
        .step_request(id + 100, &advance(None), "key:test", T0)
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound { .. })),
        "{missing:?}"
    );
    let nobody = store
        .file_request(intake(SubjectId(999_999), RequestKind::Access), "key:test")
        .await;
    assert!(
        matches!(nobody, Err(StoreError::NotFound { .. })),
        "{nobody:?}"
    );
    assert_eq!(store.request_log_rows(0, 100).await.unwrap().len(), 5);
}

pub async fn requests_a_refused_step_changes_nothing(store: Arc<dyn Store>) {
    let signer = TestSigner::new(3);
    store.set_checkpoint_signer(Some(signer.clone()));
    let s = subject(store.as_ref()).await;
    let filed = store
        .file_request(intake(s, RequestKind::Access), "key:test")
        .await
        .unwrap();
    let refused = store
        .step_request(filed.request.id, &advance(None), "key:test", T0 + HOUR)
        .await
        .unwrap();
    assert_eq!(refused.unwrap_err().code(), "request.unverified");
    assert_eq!(
        store.request(filed.request.id).await.unwrap(),
        Some(filed.request.clone())
    );
    assert_eq!(store.request_log_rows(0, 100).await.unwrap().len(), 1);
    assert_eq!(store.request_log_checkpoints().await.unwrap().len(), 1);
    verified_log(store.as_ref(), &signer).await;
}

pub async fn requests_list_by_filter_and_count_what_is_due(store: Arc<dyn Store>) {
    let s = subject(store.as_ref()).await;
    let t = subject(store.as_ref()).await;
    let a = store
        .file_request(intake(s, RequestKind::Access), "k")
        .await
        .unwrap()
        .request;
    let b = store
        .file_request(intake(t, RequestKind::Erasure), "k")
        .await
        .unwrap()
        .request;
    let c = store
        .file_request(intake(t, RequestKind::Access), "k")
        .await
        .unwrap()
        .request;
    store
        .step_request(
            c.id,
            &Transition::Reject {
                reason: "not the subject".into(),
            },
            "k",
            T0 + HOUR,
        )
        .await
        .unwrap()
        .unwrap();
    let ids = |list: Vec<Request>| list.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let all = RequestFilter {
        limit: 100,
        ..RequestFilter::default()
    };
    assert_eq!(
        ids(store.requests(&all).await.unwrap()),
        vec![c.id, b.id, a.id]
    );
    let of_t = RequestFilter {
        subject: Some(t),
        ..all.clone()
    };
    assert_eq!(ids(store.requests(&of_t).await.unwrap()), vec![c.id, b.id]);
    let access = RequestFilter {
        kind: Some(RequestKind::Access),
        state: Some(State::Received),
        ..all.clone()
    };
    assert_eq!(ids(store.requests(&access).await.unwrap()), vec![a.id]);
    let page = RequestFilter {
        before: Some(c.id),
        limit: 1,
        ..all.clone()
    };
    assert_eq!(ids(store.requests(&page).await.unwrap()), vec![b.id]);
    let late = a.due_at + 1;
    let overdue = RequestFilter {
        open_due_before: Some(late),
        ..all.clone()
    };
    assert_eq!(
        ids(store.requests(&overdue).await.unwrap()),
        vec![b.id, a.id]
    );
    // The rest, filtered in the query so a page is never short: what the core calls not
    // overdue at that time.
    let on_time = RequestFilter {
        not_overdue_at: Some(late),
        ..all.clone()
    };
    let expected: Vec<u64> = store
        .requests(&all)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| !r.is_overdue(late))
        .map(|r| r.id)
        .collect();
    assert_eq!(expected, vec![c.id]);
    assert_eq!(ids(store.requests(&on_time).await.unwrap()), expected);
    let due_before = RequestFilter {
        due_before: Some(a.due_at),
        ..all.clone()
    };
    assert!(store.requests(&due_before).await.unwrap().is_empty());

    let counts = store
        .open_request_counts(late, 7 * 24 * HOUR)
        .await
        .unwrap();
    assert_eq!(
        counts,
        OpenCounts {
            due_soon: 0,
            overdue: 2
        }
    );
    let week_before = a.due_at - 7 * 24 * HOUR;
    let counts = store
        .open_request_counts(week_before, 7 * 24 * HOUR)
        .await
        .unwrap();
    assert_eq!(
        counts,
        OpenCounts {
            due_soon: 2,
            overdue: 0
        }
    );
    let counts = store.open_request_counts(T0, 7 * 24 * HOUR).await.unwrap();
    assert_eq!(counts, OpenCounts::default());
}
