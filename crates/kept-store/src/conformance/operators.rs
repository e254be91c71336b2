//! The console's cases: operator accounts, TOTP steps used once, sessions that end, and the
//! audit log that is only appended to.

use crate::operators::{NewAuditEntry, NewOperator, NewOperatorSession, OperatorRole};
use crate::{Store, StoreError};
use std::sync::Arc;

const T0: i64 = 1_790_000_000_000;
const MINUTE: i64 = 60 * 1000;

fn operator(email: &str, role: OperatorRole) -> NewOperator {
    NewOperator {
        email: email.to_owned(),
        role,
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$hash-of-{email}"),
        totp_secret: email.as_bytes().to_vec(),
        created_at: T0,
    }
}

pub async fn operators_are_created_once_per_email_and_read_back(store: Arc<dyn Store>) {
    let a = store
        .create_operator(operator("ana@example.com", OperatorRole::Privacy))
        .await
        .unwrap();
    let b = store
        .create_operator(operator("ben@example.com", OperatorRole::Marketing))
        .await
        .unwrap();
    assert_ne!(a, b);
    let again = store
        .create_operator(operator("ana@example.com", OperatorRole::Admin))
        .await;
    assert!(
        matches!(again, Err(StoreError::Conflict { .. })),
        "{again:?}"
    );
    let ana = store
        .operator_by_email("ana@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ana.id, a);
    assert_eq!(ana.role, OperatorRole::Privacy, "the first account stands");
    assert_eq!(ana.totp_secret, b"ana@example.com");
    assert_eq!(ana.totp_last_step, 0);
    assert_eq!(
        ana.password_hash,
        operator("ana@example.com", OperatorRole::Privacy).password_hash
    );
    assert_eq!(
        store.operator(b).await.unwrap().unwrap().email,
        "ben@example.com"
    );
    assert!(
        store
            .operator_by_email("nobody@example.com")
            .await
            .unwrap()
            .is_none()
    );
    let all: Vec<u64> = store
        .operators()
        .await
        .unwrap()
        .iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(all, vec![a, b]);
}

pub async fn operators_use_each_totp_step_once_and_only_forward(store: Arc<dyn Store>) {
    let id = store
        .create_operator(operator("ana@example.com", OperatorRole::Privacy))
        .await
        .unwrap();
    assert!(store.use_totp_step(id, 100).await.unwrap());
    assert!(
        !store.use_totp_step(id, 100).await.unwrap(),
        "a replayed step"
    );
    assert!(!store.use_totp_step(id, 99).await.unwrap(), "an older step");
    assert!(store.use_totp_step(id, 101).await.unwrap());
    assert!(
        !store.use_totp_step(id + 1000, 500).await.unwrap(),
        "nobody"
    );
    // Two servers racing with the same code: one gets through.
    let (x, y) = tokio::join!(store.use_totp_step(id, 200), store.use_totp_step(id, 200));
    assert_eq!([x.unwrap(), y.unwrap()].iter().filter(|ok| **ok).count(), 1);
}

pub async fn operator_sessions_end_when_revoked_idle_or_expired(store: Arc<dyn Store>) {
    let a = store
        .create_operator(operator("ana@example.com", OperatorRole::Privacy))
        .await
        .unwrap();
    let open = |id: &str, at: i64| NewOperatorSession {
        id: id.to_owned(),
        operator: a,
        created_at: at,
        expires_at: at + 60 * MINUTE,
    };
    let idle = 10 * MINUTE;
    store.open_operator_session(open("s1", T0)).await.unwrap();
    assert_eq!(
        store
            .touch_operator_session("s1", T0 + MINUTE, idle)
            .await
            .unwrap(),
        Some(a)
    );
    // Used within the idle time again and again, until the absolute end.
    let mut at = T0 + MINUTE;
    while at + 9 * MINUTE < T0 + 60 * MINUTE {
        at += 9 * MINUTE;
        assert_eq!(
            store.touch_operator_session("s1", at, idle).await.unwrap(),
            Some(a)
        );
    }
    assert_eq!(
        store
            .touch_operator_session("s1", T0 + 60 * MINUTE, idle)
            .await
            .unwrap(),
        None,
        "past the absolute end"
    );
    // Idle too long.
    store.open_operator_session(open("s2", T0)).await.unwrap();
    assert_eq!(
        store
            .touch_operator_session("s2", T0 + 11 * MINUTE, idle)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .touch_operator_session("s2", T0 + 12 * MINUTE, idle)
            .await
            .unwrap(),
        None,
        "an idle session does not come back"
    );
    // Revoked one by one, and all at once.
    store.open_operator_session(open("s3", T0)).await.unwrap();
    store.revoke_operator_session("s3", T0 + 1).await.unwrap();
    assert_eq!(
        store
            .touch_operator_session("s3", T0 + 2, idle)
            .await
            .unwrap(),
        None
    );
    store
        .revoke_operator_session("unknown", T0 + 3)
        .await
        .unwrap();
    store.open_operator_session(open("s4", T0)).await.unwrap();
    store.open_operator_session(open("s5", T0)).await.unwrap();
    // s1, s2 (idle, but not yet revoked), s4 and s5.
    assert_eq!(store.revoke_operator_sessions(a, T0 + 4).await.unwrap(), 4);
    assert_eq!(store.revoke_operator_sessions(a, T0 + 5).await.unwrap(), 0);
    assert_eq!(
        store
            .touch_operator_session("s4", T0 + 5, idle)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .touch_operator_session("s5", T0 + 5, idle)
            .await
            .unwrap(),
        None
    );
    // A session for nobody is refused.
    let orphan = store
        .open_operator_session(NewOperatorSession {
            operator: a + 1000,
            ..open("s6", T0)
        })
        .await;
    assert!(
        matches!(orphan, Err(StoreError::NotFound { .. })),
        "{orphan:?}"
    );
}

pub async fn audit_log_appends_and_pages_newest_first(store: Arc<dyn Store>) {
    let entry = |i: i64| NewAuditEntry {
        at: T0 + i,
        operator: (i % 2 == 0).then_some(7),
        actor: format!("actor{i}"),
        action: "request.advance".to_owned(),
        target: Some(format!("request:{i}")),
        detail: (i % 3 == 0).then(|| "a note".to_owned()),
    };
    let mut seqs = Vec::new();
    for i in 0..5 {
        seqs.push(store.append_audit(entry(i)).await.unwrap());
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    let page = store.audit_log(None, 3).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![seqs[4], seqs[3], seqs[2]]
    );
    assert_eq!(page[0].entry, entry(4));
    let next = store.audit_log(Some(seqs[2]), 10).await.unwrap();
    assert_eq!(
        next.iter().map(|e| e.entry.clone()).collect::<Vec<_>>(),
        vec![entry(1), entry(0)]
    );
}
