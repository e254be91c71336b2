//! The console's operators: accounts (email, team role, argon2id password hash, TOTP secret
//! with the last time step used), their server-side sessions, and the append-only audit log
//! of what they did.
//!
//! INVARIANT: `use_totp_step` answers `true` for an operator's time step at most once, and
//! never for a step at or before one already used, whatever the number of servers sharing the
//! database: a code seen once (by a shoulder, a proxy log) cannot sign in again. A session
//! revoked, idle too long or past its absolute end is never live again. The audit log is
//! only ever appended to (the database refuses updates and deletes).

use crate::Result;
use async_trait::async_trait;
use kept_core::UnixMillis;
use serde::{Deserialize, Serialize};

/// The team an operator works in, which decides the console pages they may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatorRole {
    /// Campaigns, and the data map and overview read-only.
    Marketing,
    /// Subjects, requests, the ledger, consent reports and the audit log.
    Privacy,
    /// Keys, systems, webhooks, the quarantine and settings.
    Engineering,
    /// Everything, and the operators themselves.
    Admin,
}

impl OperatorRole {
    pub const ALL: [OperatorRole; 4] = [
        OperatorRole::Marketing,
        OperatorRole::Privacy,
        OperatorRole::Engineering,
        OperatorRole::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OperatorRole::Marketing => "marketing",
            OperatorRole::Privacy => "privacy",
            OperatorRole::Engineering => "engineering",
            OperatorRole::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<OperatorRole> {
        OperatorRole::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// An operator account to create.
#[derive(Clone, PartialEq, Eq)]
pub struct NewOperator {
    /// Lowercase, trimmed.
    pub email: String,
    pub role: OperatorRole,
    /// An argon2id PHC string.
    pub password_hash: String,
    /// The TOTP shared secret (RFC 6238), 20 random bytes.
    pub totp_secret: Vec<u8>,
    pub created_at: UnixMillis,
}

impl std::fmt::Debug for NewOperator {
    // Neither the hash nor the secret is ever printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewOperator")
            .field("email", &self.email)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// An operator account as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Operator {
    pub id: u64,
    pub email: String,
    pub role: OperatorRole,
    pub password_hash: String,
    pub totp_secret: Vec<u8>,
    /// The last TOTP time step a sign-in used (0: none yet).
    pub totp_last_step: i64,
    pub created_at: UnixMillis,
    pub disabled_at: Option<UnixMillis>,
}

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operator")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("role", &self.role)
            .field("disabled_at", &self.disabled_at)
            .finish_non_exhaustive()
    }
}

/// A console session to open. The cookie carries a random token; the store keeps only its
/// digest, so a copy of the database opens no session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOperatorSession {
    /// Hex of the token's digest.
    pub id: String,
    pub operator: u64,
    pub created_at: UnixMillis,
    /// The absolute end, however active the session stays.
    pub expires_at: UnixMillis,
}

/// An entry to append to the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEntry {
    pub at: UnixMillis,
    /// The operator who acted (`None`: Kept itself, or someone not signed in).
    pub operator: Option<u64>,
    /// Who acted, as people read it (the operator's email, `cli`, `kept`).
    pub actor: String,
    /// What was done: a stable code (`sign_in`, `sign_out`, `request.advance`).
    pub action: String,
    /// What it was done to (`request:12`, `key:kept_ab12`).
    pub target: Option<String>,
    /// A short note, never a secret.
    pub detail: Option<String>,
}

/// An entry of the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub seq: u64,
    pub entry: NewAuditEntry,
}

/// Storage for the console's operators. Write methods return only after their commit.
#[async_trait]
pub trait OperatorStore: Send + Sync {
    /// Creates an operator; an email already used is a `Conflict`.
    async fn create_operator(&self, operator: NewOperator) -> Result<u64>;

    /// The operator with this (lowercase) email.
    async fn operator_by_email(&self, email: &str) -> Result<Option<Operator>>;

    async fn operator(&self, id: u64) -> Result<Option<Operator>>;

    /// Every operator, by id.
    async fn operators(&self) -> Result<Vec<Operator>>;

    /// Records that operator `id` signed in with TOTP time step `step`: `true` when `step` is
    /// later than every step used before (and is now the last), `false` when it is not (a
    /// replayed or older code) or the operator does not exist.
    async fn use_totp_step(&self, id: u64, step: i64) -> Result<bool>;

    /// Opens `session` and, in the same commit, forgets sessions that ended before it.
    async fn open_operator_session(&self, session: NewOperatorSession) -> Result<()>;

    /// The operator of session `id` when it is live at `now` (not revoked, before its absolute
    /// end, and used within `idle_ms`), marking it used at `now`.
    async fn touch_operator_session(
        &self,
        id: &str,
        now: UnixMillis,
        idle_ms: i64,
    ) -> Result<Option<u64>>;

    /// Revokes session `id` (sign-out). An unknown or ended session is no error.
    async fn revoke_operator_session(&self, id: &str, now: UnixMillis) -> Result<()>;

    /// Revokes every session of operator `operator` not revoked or past its absolute end yet,
    /// answering how many.
    async fn revoke_operator_sessions(&self, operator: u64, now: UnixMillis) -> Result<u64>;

    /// Appends an entry to the audit log, answering its sequence number.
    async fn append_audit(&self, entry: NewAuditEntry) -> Result<u64>;

    /// The audit log, newest first: entries before `before` (all when `None`), at most
    /// `limit`.
    async fn audit_log(&self, before: Option<u64>, limit: u32) -> Result<Vec<AuditEntry>>;
}

/// The columns [`operator_row`] reads, in order.
pub const OPERATOR_COLUMNS: &str =
    "id, email, role, password_hash, totp_secret, totp_last_step, created_at, disabled_at";

/// An operator from a row of [`OPERATOR_COLUMNS`], on either backend.
pub fn operator_row(row: &impl crate::columns::Row) -> Result<Operator> {
    let role = row.text(2)?;
    Ok(Operator {
        id: crate::columns::to_u64(row.int(0)?, "operator id")?,
        email: row.text(1)?,
        role: OperatorRole::parse(&role).ok_or_else(|| {
            crate::StoreError::Corrupt(format!("operator role `{role}` is not a role"))
        })?,
        password_hash: row.text(3)?,
        totp_secret: row.bytes(4)?,
        totp_last_step: row.int(5)?,
        created_at: row.int(6)?,
        disabled_at: row.int_opt(7)?,
    })
}

/// The columns [`audit_row`] reads, in order.
pub const AUDIT_COLUMNS: &str = "seq, at, operator_id, actor, action, target, detail";

/// An audit log entry from a row of [`AUDIT_COLUMNS`], on either backend.
pub fn audit_row(row: &impl crate::columns::Row) -> Result<AuditEntry> {
    Ok(AuditEntry {
        seq: crate::columns::to_u64(row.int(0)?, "audit seq")?,
        entry: NewAuditEntry {
            at: row.int(1)?,
            operator: row
                .int_opt(2)?
                .map(|id| crate::columns::to_u64(id, "operator id"))
                .transpose()?,
            actor: row.text(3)?,
            action: row.text(4)?,
            target: row.text_opt(5)?,
            detail: row.text_opt(6)?,
        },
    })
}
