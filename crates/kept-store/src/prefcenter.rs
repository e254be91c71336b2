//! What the preference center keeps beyond the ledger: the ids of single-use links already
//! spent (so a link opens a session once) and the sessions links opened (so a session can end
//! before its cookie expires). The requests customers file there are `requests`'.
//!
//! INVARIANT: `spend_token` answers `true` for a token id at most once, whatever the number of
//! servers sharing the database. A session revoked is never live again. Held by the database
//! (an insert that conflicts), not checkable in one process: the conformance cases
//! `prefcenter_concurrent_spends_let_one_through` and
//! `prefcenter_sessions_end_when_revoked_expired_or_replaced` check it.

use crate::Result;
use async_trait::async_trait;
use kept_core::{SubjectId, UnixMillis};

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
