//! What the preference center keeps beyond the ledger: the ids of single-use links already
//! spent (so a link opens a session once), the sessions links opened (so a session can end
//! before its cookie expires), and the erasure requests customers made, each with the deadline
//! the law gives the company to answer.
//!
//! INVARIANT: `spend_token` answers `true` for a token id at most once, whatever the number of
//! servers sharing the database. A session revoked is never live again. Held by the database
//! (an insert that conflicts), not checkable in one process: the conformance cases
//! `prefcenter_concurrent_spends_let_one_through` and
//! `prefcenter_sessions_end_when_revoked_expired_or_replaced` check it.

use crate::{Result, StoreError};
use async_trait::async_trait;
use kept_core::{SubjectId, UnixMillis};
use serde::{Deserialize, Serialize};

/// Where an erasure request stands. The full request workflow comes later; the preference
/// center only files requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErasureState {
    /// Filed, not yet answered.
    Received,
    /// Carried out.
    Completed,
    /// Refused (with a reason given elsewhere).
    Refused,
}

impl ErasureState {
    pub const ALL: [ErasureState; 3] = [
        ErasureState::Received,
        ErasureState::Completed,
        ErasureState::Refused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErasureState::Received => "received",
            ErasureState::Completed => "completed",
            ErasureState::Refused => "refused",
        }
    }

    /// A stored state column.
    pub fn from_column(s: &str) -> Result<ErasureState> {
        ErasureState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown erasure request state `{s}`")))
    }
}

/// An erasure request to file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewErasureRequest {
    pub subject: SubjectId,
    /// The regime that applied when it was made (`gdpr`, `ccpa`, …): it sets the deadline.
    pub regime: String,
    /// `preference_center`, `api`, …
    pub source: String,
    pub requested_at: UnixMillis,
    /// When the answer is due at the latest.
    pub due_at: UnixMillis,
}

/// An erasure request as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureRequest {
    pub id: u64,
    pub subject: SubjectId,
    pub regime: String,
    pub source: String,
    pub state: ErasureState,
    pub requested_at: UnixMillis,
    pub due_at: UnixMillis,
}

/// A preference-center session to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    /// Random, unguessable; the signed cookie carries it.
    pub id: String,
    pub subject: SubjectId,
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
}

/// Storage for the preference center. Write methods return only after their commit.
#[async_trait]
pub trait PrefCenterStore: Send + Sync {
    /// Spends the single-use token `id` (valid until `expires_at`): `true` when this call spent
    /// it, `false` when it was spent before. Tokens that expired before `now` are forgotten on
    /// the way (an expired token is refused before it is ever spent).
    async fn spend_token(&self, id: &str, expires_at: UnixMillis, now: UnixMillis) -> Result<bool>;

    /// Files an erasure request, unless the subject already has one `Received`: then that one
    /// is returned unchanged (a second click does not restart the clock). A subject that does
    /// not exist is `NotFound`.
    async fn file_erasure_request(&self, request: NewErasureRequest) -> Result<ErasureRequest>;

    /// A subject's erasure requests, oldest first.
    async fn erasure_requests(&self, subject: SubjectId) -> Result<Vec<ErasureRequest>>;

    /// Opens `session` and, in the same commit, revokes every other session of its subject (a
    /// new sign-in ends the old ones). Sessions expired before `created_at` are forgotten on the
    /// way. A subject that does not exist is `NotFound`.
    async fn open_session(&self, session: NewSession) -> Result<()>;

    /// The subject of session `id` when it is live at `now`: stored, not expired, not revoked.
    async fn live_session(&self, id: &str, now: UnixMillis) -> Result<Option<SubjectId>>;

    /// Revokes session `id` (sign-out). Revoking an unknown or ended session is no error.
    async fn revoke_session(&self, id: &str, now: UnixMillis) -> Result<()>;

    /// Revokes every session of `subject` (erasure), answering how many were live.
    async fn revoke_sessions(&self, subject: SubjectId, now: UnixMillis) -> Result<u64>;
}

pub mod conformance {
    //! The preference center's conformance cases, run by every backend through
    //! [`prefcenter_conformance_tests!`](crate::prefcenter_conformance_tests).
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        reason = "test code: a failed expectation is a failed test"
    )]

    use super::{ErasureState, NewErasureRequest, NewSession};
    use crate::{NewSubject, Store, StoreError};
    use kept_core::SubjectId;
    use std::sync::Arc;

    /// Expands to one `#[tokio::test]` per preference-center case, each with a fresh store
    /// from the given [`Harness`](crate::conformance::Harness) type.
    #[macro_export]
    macro_rules! prefcenter_conformance_tests {
        ($harness:ty) => {
            $crate::prefcenter_conformance_tests!(@cases $harness;
                prefcenter_tokens_are_spent_once,
                prefcenter_concurrent_spends_let_one_through,
                prefcenter_erasure_requests_are_filed_once_per_subject,
                prefcenter_sessions_end_when_revoked_expired_or_replaced,
            );
        };
        (@cases $harness:ty; $($case:ident),* $(,)?) => {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    $crate::conformance::run_case::<$harness, _, _>(
                        $crate::prefcenter::conformance::$case,
                    )
                    .await;
                }
            )*
        };
    }

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

    pub async fn prefcenter_erasure_requests_are_filed_once_per_subject(store: Arc<dyn Store>) {
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
}
