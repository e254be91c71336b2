//! The data subject requests' cases.

use crate::conformance::TestSigner;
use crate::requests::{ErasureState, NewErasureRequest, OpenCounts, QueueFilter, RequestFilter};
use crate::{NewSubject, Store, StoreError};
use kept_core::SubjectId;
use kept_core::decision::SubjectGate;
use kept_core::ledger::{ChainHash, Columns, check_checkpoint_chain};
use kept_core::regime::Regime;
use kept_core::requests::{
    Channel, Intake, LogRecord, Request, RequestKind, Scope, State, TaskState, Transition,
    Verification, VerificationMethod, decode_record,
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
    intake_at(subject, kind, T0)
}

fn intake_at(subject: SubjectId, kind: RequestKind, at: i64) -> Request {
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
            at,
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

pub async fn requests_queue_lists_open_ones_soonest_due_first(store: Arc<dyn Store>) {
    let s = subject(store.as_ref()).await;
    let file = |kind: RequestKind, at: i64| {
        let store = store.clone();
        async move {
            store
                .file_request(intake_at(s, kind, at), "k")
                .await
                .unwrap()
                .request
        }
    };
    let a = file(RequestKind::Access, T0 + 2 * HOUR).await;
    let b = file(RequestKind::Erasure, T0).await;
    let c = file(RequestKind::Access, T0 + HOUR).await;
    let d = file(RequestKind::Erasure, T0 - HOUR).await;
    let e = file(RequestKind::Erasure, T0).await;
    assert!(d.due_at < b.due_at && b.due_at == e.due_at && e.due_at < c.due_at);
    store
        .step_request(
            d.id,
            &Transition::Reject {
                reason: "not the subject".into(),
            },
            "k",
            T0,
        )
        .await
        .unwrap()
        .unwrap();
    store
        .step_request(a.id, &advance(Some(stated())), "k", T0 + 3 * HOUR)
        .await
        .unwrap()
        .unwrap();
    let ids = |list: Vec<Request>| list.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let all = QueueFilter {
        limit: 100,
        ..QueueFilter::default()
    };
    // The rejected one is closed: not in the queue. Equal due dates go by id.
    assert_eq!(
        ids(store.request_queue(&all).await.unwrap()),
        vec![b.id, e.id, c.id, a.id]
    );
    let access = QueueFilter {
        kind: Some(RequestKind::Access),
        ..all.clone()
    };
    assert_eq!(
        ids(store.request_queue(&access).await.unwrap()),
        vec![c.id, a.id]
    );
    let verified = QueueFilter {
        state: Some(State::Verified),
        ..all.clone()
    };
    assert_eq!(
        ids(store.request_queue(&verified).await.unwrap()),
        vec![a.id]
    );
    let rejected = QueueFilter {
        state: Some(State::Rejected),
        ..all.clone()
    };
    assert!(store.request_queue(&rejected).await.unwrap().is_empty());
    let first = QueueFilter {
        limit: 2,
        ..all.clone()
    };
    assert_eq!(
        ids(store.request_queue(&first).await.unwrap()),
        vec![b.id, e.id]
    );
    let next = QueueFilter {
        after: Some((e.due_at, e.id)),
        ..first.clone()
    };
    assert_eq!(
        ids(store.request_queue(&next).await.unwrap()),
        vec![c.id, a.id]
    );
    let between = QueueFilter {
        after: Some((b.due_at, b.id)),
        limit: 1,
        ..all
    };
    assert_eq!(
        ids(store.request_queue(&between).await.unwrap()),
        vec![e.id]
    );
}

pub async fn requests_complete_only_when_every_task_is_settled(store: Arc<dyn Store>) {
    let signer = TestSigner::new(4);
    store.set_checkpoint_signer(Some(signer.clone()));
    let s = subject(store.as_ref()).await;
    let id = store
        .file_request(intake(s, RequestKind::Erasure), "key:test")
        .await
        .unwrap()
        .request
        .id;
    let targets: Vec<String> = ["kept", "dataset:shop", "system:crm"]
        .map(str::to_owned)
        .to_vec();
    let missing = store.create_request_tasks(999_999, &targets, T0).await;
    assert!(
        matches!(missing, Err(StoreError::NotFound { .. })),
        "{missing:?}"
    );
    let tasks = store.create_request_tasks(id, &targets, T0).await.unwrap();
    assert_eq!(
        tasks.iter().map(|t| t.target.as_str()).collect::<Vec<_>>(),
        ["dataset:shop", "kept", "system:crm"]
    );
    assert!(tasks.iter().all(|t| t.state == TaskState::Pending
        && t.attempts == 0
        && t.detail.is_none()
        && t.created_at == T0));

    let settle = |target: &str, handled: bool, note: Option<&str>| Transition::Settle {
        target: target.to_owned(),
        handled,
        note: note.map(str::to_owned),
        detail: Some(r#"{"rows":3}"#.to_owned()),
    };
    // Nothing settles before the request is in progress.
    let early = store
        .step_request(id, &settle("kept", false, None), "kept", T0)
        .await
        .unwrap();
    assert_eq!(early.unwrap_err().code(), "request.not_in_progress");
    let step = |t: Transition, at: i64| {
        let store = store.clone();
        async move { store.step_request(id, &t, "key:test", at).await.unwrap() }
    };
    step(advance(Some(stated())), T0 + 1).await.unwrap();
    step(advance(None), T0 + 2).await.unwrap();

    // A try that failed is recorded without settling, and counted.
    let failed = store
        .set_request_task(
            id,
            "system:crm",
            TaskState::Failed,
            Some("answered 500"),
            T0 + 3,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.state, TaskState::Failed);
    assert_eq!(failed.attempts, 1);
    assert_eq!(failed.detail.as_deref(), Some("answered 500"));
    assert_eq!(failed.updated_at, T0 + 3);
    assert_eq!(
        store
            .set_request_task(id, "system:nope", TaskState::Failed, None, T0 + 3)
            .await
            .unwrap(),
        None
    );

    // Completing while tasks are open is refused, naming them, and changes nothing.
    let log_before = store.request_log_rows(0, u32::MAX).await.unwrap().len();
    let refused = step(advance(None), T0 + 4).await.unwrap_err();
    assert_eq!(refused.code(), "request.tasks_pending");
    assert_eq!(
        refused,
        kept_core::requests::RequestError::TasksPending {
            targets: targets_sorted(&["dataset:shop", "kept", "system:crm"])
        }
    );
    assert_eq!(
        store.request(id).await.unwrap().unwrap().state,
        State::InProgress
    );

    // Settling writes the task and its log record together.
    let done = step(settle("kept", false, None), T0 + 5).await.unwrap();
    assert_eq!(done.request.state, State::InProgress);
    assert!(done.entry.seq > 0);
    let unknown = step(settle("system:nope", false, None), T0 + 5).await;
    assert_eq!(unknown.unwrap_err().code(), "request.unknown_task");
    let again = step(settle("kept", false, None), T0 + 6).await;
    assert_eq!(again.unwrap_err().code(), "request.task_settled");
    let no_note = step(settle("system:crm", true, None), T0 + 6).await;
    assert_eq!(no_note.unwrap_err().code(), "request.reason_required");
    step(settle("system:crm", true, Some("removed by phone")), T0 + 7)
        .await
        .unwrap();
    step(settle("dataset:shop", false, None), T0 + 8)
        .await
        .unwrap();
    // A settled task never changes again, and a second creation keeps what is there.
    let unchanged = store
        .set_request_task(id, "kept", TaskState::Failed, Some("late"), T0 + 9)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(unchanged.state, TaskState::Done);
    let tasks = store
        .create_request_tasks(id, &targets, T0 + 9)
        .await
        .unwrap();
    let by = |target: &str| tasks.iter().find(|t| t.target == target).unwrap().clone();
    assert_eq!(by("kept").state, TaskState::Done);
    assert_eq!(by("kept").attempts, 1);
    assert_eq!(by("kept").detail.as_deref(), Some(r#"{"rows":3}"#));
    assert_eq!(by("kept").updated_at, T0 + 5);
    assert_eq!(by("system:crm").state, TaskState::Handled);
    assert_eq!(by("system:crm").detail.as_deref(), Some("removed by phone"));
    assert_eq!(by("system:crm").attempts, 1, "the failed try stays counted");
    assert_eq!(
        store.request_log_rows(0, u32::MAX).await.unwrap().len(),
        log_before + 3
    );

    let completed = step(advance(None), T0 + 10).await.unwrap();
    assert_eq!(completed.request.state, State::Completed);
    let records = verified_log(store.as_ref(), &signer).await;
    let settled: Vec<(String, String)> = records
        .iter()
        .filter(|r| r.from == Some(State::InProgress) && r.to == State::InProgress)
        .map(|r| {
            let get = |k: &str| {
                r.detail
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            (get("task"), get("task.state"))
        })
        .collect();
    assert_eq!(
        settled,
        [
            ("kept".to_owned(), "done".to_owned()),
            ("system:crm".to_owned(), "handled".to_owned()),
            ("dataset:shop".to_owned(), "done".to_owned()),
        ]
    );
}

fn targets_sorted(targets: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = targets.iter().map(|t| (*t).to_owned()).collect();
    out.sort();
    out
}

fn gate(request: &Request, kind: kept_core::decision::GateKind, at: i64) -> SubjectGate {
    SubjectGate {
        request: request.id,
        subject: request.subject,
        kind,
        purposes: vec!["marketing".into()],
        categories: vec!["user.behavior".into()],
        since: at,
    }
}

pub async fn requests_gates_are_put_once_read_and_lifted(store: Arc<dyn Store>) {
    use kept_core::decision::GateKind;
    let s = subject(store.as_ref()).await;
    let other = subject(store.as_ref()).await;
    let restriction = store
        .file_request(intake(s, RequestKind::Restriction), "key:k")
        .await
        .unwrap()
        .request;
    let opt_out = store
        .file_request(intake(s, RequestKind::OptOut), "key:k")
        .await
        .unwrap()
        .request;
    let objection = store
        .file_request(intake(other, RequestKind::Objection), "key:k")
        .await
        .unwrap()
        .request;
    assert!(store.gates_in_force().await.unwrap().is_empty());
    let restricted = gate(&restriction, GateKind::Restriction, T0);
    assert!(store.put_gate(&restricted).await.unwrap());
    // Putting it again, even changed, keeps the first.
    let changed = SubjectGate {
        since: T0 + HOUR,
        purposes: vec![],
        ..restricted.clone()
    };
    assert!(!store.put_gate(&changed).await.unwrap());
    let opted = gate(&opt_out, GateKind::OptOutOfSale, T0 + HOUR);
    let objected = gate(&objection, GateKind::Objection, T0 + 2 * HOUR);
    assert!(store.put_gate(&opted).await.unwrap());
    assert!(store.put_gate(&objected).await.unwrap());
    assert_eq!(
        store.gates_of(s).await.unwrap(),
        vec![restricted.clone(), opted.clone()]
    );
    assert_eq!(
        store.gates_in_force().await.unwrap(),
        vec![restricted.clone(), opted.clone(), objected.clone()]
    );
    assert_eq!(
        store
            .lift_gate(restriction.id, T0 + 3 * HOUR)
            .await
            .unwrap(),
        Some(restricted.clone())
    );
    assert_eq!(
        store
            .lift_gate(restriction.id, T0 + 4 * HOUR)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.lift_gate(999_999, T0).await.unwrap(), None);
    assert_eq!(store.gates_of(s).await.unwrap(), vec![opted.clone()]);
    // A lifted gate is not put back by its request.
    assert!(!store.put_gate(&restricted).await.unwrap());
    assert_eq!(store.gates_in_force().await.unwrap(), vec![opted, objected]);
    let missing = store
        .put_gate(&SubjectGate {
            request: 999_999,
            ..restricted
        })
        .await;
    assert!(
        matches!(
            missing,
            Err(StoreError::NotFound {
                what: "request",
                ..
            })
        ),
        "{missing:?}"
    );
}

pub async fn requests_corrections_are_filed_with_their_request_and_carried_out(
    store: Arc<dyn Store>,
) {
    use crate::collection::{IdentityWrite, NewIdentity};
    use crate::corrections::StoredCorrection;
    use kept_core::identity::{IdentifierHash, IdentifierKind, PlannedSubject};
    use kept_core::subject::{Provenance, Trait};
    let s = subject(store.as_ref()).await;
    let corrections = vec![
        StoredCorrection {
            target: "identifier:email".into(),
            sealed: vec![1; 40],
        },
        StoredCorrection {
            target: "trait:first_name".into(),
            sealed: vec![2; 40],
        },
    ];
    let filed = store
        .file_request_with(
            intake(s, RequestKind::Rectification),
            "key:k",
            vec![("corrections.digest".into(), "ab12".into())],
            corrections.clone(),
        )
        .await
        .unwrap();
    assert_eq!(
        store.corrections(filed.request.id).await.unwrap(),
        corrections
    );
    let record = decode_record(&filed.entry.bytes).unwrap();
    assert!(
        record
            .detail
            .contains(&("corrections.digest".into(), "ab12".into())),
        "{record:?}"
    );
    assert!(
        store
            .corrections(filed.request.id + 1)
            .await
            .unwrap()
            .is_empty()
    );
    // A request whose corrections cannot be written is not filed.
    let before = store
        .requests(&RequestFilter {
            limit: 100,
            ..RequestFilter::default()
        })
        .await
        .unwrap();
    let twice = store
        .file_request_with(
            intake(s, RequestKind::Rectification),
            "key:k",
            Vec::new(),
            vec![corrections[0].clone(), corrections[0].clone()],
        )
        .await;
    assert!(twice.is_err());
    let after = store
        .requests(&RequestFilter {
            limit: 100,
            ..RequestFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(before, after);

    let name = |value: &str, source: &str| Trait {
        subject: s,
        key: "first_name".into(),
        value: serde_json::json!(value),
        category: "user.name".into(),
        provenance: Provenance {
            collection_point: "signup".into(),
            notice_id: "newsletter".into(),
            notice_version: 1,
            collected_at: T0,
            source: source.into(),
        },
    };
    store
        .upsert_traits(vec![name("Ada", "collection")])
        .await
        .unwrap();
    let corrected = name("Augusta", "request:1");
    store.correct_traits(vec![corrected.clone()]).await.unwrap();
    assert_eq!(store.traits(s).await.unwrap(), vec![corrected]);

    let hash = |n: u8| IdentifierHash([n; 32]);
    let attach = |n: u8| NewIdentity {
        subject: PlannedSubject::Existing(s),
        key_subject: PlannedSubject::Existing(s),
        kind: IdentifierKind::Email,
        hash: hash(n),
        sealed: vec![n; 40],
        verified: false,
    };
    store
        .write_identities(IdentityWrite {
            attach: vec![attach(7), attach(8)],
            at: T0,
            ..IdentityWrite::default()
        })
        .await
        .unwrap();
    assert_eq!(
        store
            .drop_identities(s, IdentifierKind::Email, &hash(8))
            .await
            .unwrap(),
        1
    );
    let held: Vec<IdentifierHash> = store
        .identities_of(s)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.hash)
        .collect();
    assert_eq!(held, vec![hash(8)]);
    assert_eq!(
        store
            .drop_identities(s, IdentifierKind::Email, &hash(8))
            .await
            .unwrap(),
        0
    );
}
