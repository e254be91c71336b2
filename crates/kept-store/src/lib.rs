//! The `Store` trait every Kept database backend implements, the types it speaks, the row
//! mapping both share (`columns`), and the conformance suite (`conformance`, behind the
//! `conformance` feature) that runs unchanged against each backend.
//!
//! INVARIANT: a write method returns `Ok` only after its transaction has committed. A contract
//! on each backend, not checkable from here: the conformance cases
//! `concurrent_appends_are_all_acknowledged_and_verify` and `close_refuses_later_writes` check
//! that every acknowledged write is there to read.

use async_trait::async_trait;
use kept_core::ledger::{ChainHash, Checkpoint, ConsentRecord, LedgerEntry};
use kept_core::subject::{ChannelPreference, Contact, Subject, Trait};
use kept_core::{SubjectId, UnixMillis};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub use group_commit::CheckpointSigner;

pub mod collection;
pub mod columns;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod corrections;
pub mod decision_log;
pub mod erasure;
pub mod gates;
pub mod group_commit;
#[cfg(feature = "migrate")]
pub mod migrate;

pub use decision_log::{DecisionCount, DecisionLogEntry, DecisionLogQuery};
pub mod operators;
pub mod outbox;
pub mod prefcenter;
pub mod quarantine;
pub mod requests;
pub mod uses;

pub use uses::{UseKind, UseQuery, UseRecord, UseSubjects};

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A storage failure, with a stable code for the HTTP and CLI layers. `Clone` because one failed
/// group commit answers every writer of its batch with the same error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database migration failed: {0}")]
    Migration(String),
    #[error("{what} `{key}` already exists")]
    Conflict { what: &'static str, key: String },
    #[error("{what} `{key}` not found")]
    NotFound { what: &'static str, key: String },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the store is shutting down")]
    Closed,
    #[error("database error: {0}")]
    Database(String),
}

impl StoreError {
    /// Stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "store.unavailable",
            StoreError::Migration(_) => "store.migration",
            StoreError::Conflict { .. } => "store.conflict",
            StoreError::NotFound { .. } => "store.not_found",
            StoreError::Corrupt(_) => "store.corrupt",
            StoreError::Closed => "store.closed",
            StoreError::Database(_) => "store.database",
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// An API key's role. Roles are not hierarchical except that `admin` may do everything, and
/// that a `server` key may do everything a `public` key may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A write key safe to ship in a browser: creates and extends anonymous profiles and
    /// records that browser's banner choices. It speaks for a known customer only with an
    /// identity token the shop's backend minted.
    Public,
    /// A secret write key for the shop's own servers: the Segment calls with their full
    /// semantics (identify, alias, consent of known customers).
    Server,
    /// Decisions and audiences.
    Decide,
    /// Data subject requests, the ledger, subject data.
    Privacy,
    Admin,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Public,
        Role::Server,
        Role::Decide,
        Role::Privacy,
        Role::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Public => "public",
            Role::Server => "server",
            Role::Decide => "decide",
            Role::Privacy => "privacy",
            Role::Admin => "admin",
        }
    }

    /// A role by its name. `collect`, the one write key before `public` and `server` existed,
    /// reads as `public`: such a key may have been shipped in a page, so it gets the powers
    /// that are safe there and no more (fail closed).
    pub fn parse(s: &str) -> Option<Role> {
        if s == LEGACY_COLLECT {
            return Some(Role::Public);
        }
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether a key with this role may call an endpoint that requires `required`.
    pub fn permits(self, required: Role) -> bool {
        self == Role::Admin
            || self == required
            || (self == Role::Server && required == Role::Public)
    }

    /// Whether a write with this key is the shop's own word (a server key, or an admin),
    /// rather than something a browser said.
    pub fn is_trusted_writer(self) -> bool {
        matches!(self, Role::Server | Role::Admin)
    }
}

/// The role name write keys had before they were split into `public` and `server`.
pub const LEGACY_COLLECT: &str = "collect";

/// An API key as stored: only a hash of the secret is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Public, non-secret prefix shown in listings (`kept_ab12cd34`).
    pub id: String,
    /// BLAKE3 of the full secret key.
    pub hash: [u8; 32],
    pub role: Role,
    pub name: String,
    pub created_at: UnixMillis,
    pub revoked_at: Option<UnixMillis>,
}

/// A notice's content hash as it was when last recorded, for `kept lint` to detect a text change
/// without a version bump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeHash {
    pub notice_id: String,
    pub version: u32,
    pub hash: String,
    pub recorded_at: UnixMillis,
}

/// What a notice version said, kept beside its hash so that two versions can be compared:
/// `content` is the notice's canonical JSON as the manifest stated it (titles and texts per
/// language, categories, purposes, channels). Keyed by id, version and hash; never overwritten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeContent {
    pub notice_id: String,
    pub version: u32,
    pub hash: String,
    pub content: String,
    pub recorded_at: UnixMillis,
}

/// A subject to create; the store assigns its dense id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSubject {
    pub user_id: Option<String>,
    pub country: Option<String>,
    pub region: Option<String>,
    pub time_zone: Option<String>,
    pub created_at: UnixMillis,
}

/// A raw ledger row for verification: the columns exactly as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRow {
    pub seq: u64,
    pub subject: SubjectId,
    pub at: UnixMillis,
    pub bytes: Vec<u8>,
    pub hash: Vec<u8>,
}

/// Persistence for Kept. One implementation per database; all pass `conformance`. The webhook
/// outbox (`outbox::Outbox`) and the collection API's storage (`collection::CollectionStore`)
/// are part of every store, and so are the preference center's (`prefcenter::PrefCenterStore`)
/// and the data subject requests' (`requests::RequestStore`), and erasure with its suppression
/// list (`erasure::ErasureStore`).
/// One thing heard from the other servers on a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// An announcement, as another server made it.
    Message(String),
    /// The connection listening was lost and made again: announcements in between are gone.
    Lost,
}

#[async_trait]
pub trait Store:
    outbox::Outbox
    + collection::CollectionStore
    + prefcenter::PrefCenterStore
    + requests::RequestStore
    + gates::GateStore
    + corrections::CorrectionStore
    + erasure::ErasureStore
    + operators::OperatorStore
    + Send
    + Sync
    + std::fmt::Debug
    + 'static
{
    fn backend(&self) -> Backend;

    /// Cheap liveness check for `/healthz`.
    async fn ping(&self) -> Result<()>;

    // --- consent ledger -------------------------------------------------------------------

    /// Appends one record, chained after the current tip. Concurrent calls are batched into
    /// one transaction (group commit); each returns only after that transaction committed.
    async fn append_consent(&self, record: ConsentRecord) -> Result<LedgerEntry>;

    /// Appends several records atomically, in order, in one transaction.
    async fn append_consents(&self, records: Vec<ConsentRecord>) -> Result<Vec<LedgerEntry>>;

    /// Rows with `seq > after`, in `seq` order, at most `limit`.
    async fn ledger_rows(&self, after: u64, limit: u32) -> Result<Vec<LedgerRow>>;

    /// Every entry of one subject, in `seq` order.
    async fn ledger_for_subject(&self, subject: SubjectId) -> Result<Vec<LedgerEntry>>;

    /// Number of records in the ledger (the tip's `seq`).
    async fn ledger_len(&self) -> Result<u64>;

    /// The last record's position and hash, `None` while the ledger is empty (what a checkpoint
    /// signs).
    async fn ledger_tip(&self) -> Result<Option<(u64, ChainHash)>> {
        let len = self.ledger_len().await?;
        let Some(after) = len.checked_sub(1) else {
            return Ok(None);
        };
        let rows = self.ledger_rows(after, 1).await?;
        match rows.first() {
            Some(row) => ChainHash::from_slice(&row.hash)
                .map(|hash| Some((row.seq, hash)))
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("record {} has a malformed hash", row.seq))
                }),
            None => Ok(None),
        }
    }

    /// Stores a checkpoint exactly as given (the first one at a position stands). Kept's own
    /// checkpoints are written by the committer instead, chained under the tip's lock.
    async fn put_checkpoint(&self, checkpoint: &Checkpoint) -> Result<()>;
    /// Every checkpoint, in `seq` order.
    async fn checkpoints(&self) -> Result<Vec<Checkpoint>>;

    /// Installs (or, with `None`, removes) the signer of the checkpoint each ledger batch ends
    /// with. Until one is installed, appends are committed without a checkpoint.
    fn set_checkpoint_signer(&self, signer: Option<Arc<dyn CheckpointSigner>>);

    /// Signs a checkpoint of the tip, under the same lock as appends, when none covers it yet.
    /// `None` when the ledger is empty, the tip is already covered, or no signer is installed.
    async fn checkpoint_tip(&self) -> Result<Option<Checkpoint>>;

    /// The first checkpoint at or after `seq`: the one that covers record `seq`.
    async fn checkpoint_covering(&self, seq: u64) -> Result<Option<Checkpoint>>;

    /// The checkpoint with the highest `seq`.
    async fn last_checkpoint(&self) -> Result<Option<Checkpoint>>;

    // --- notices --------------------------------------------------------------------------

    /// Records the hashes of the manifest's notices (idempotent per id and version).
    async fn record_notice_hashes(&self, hashes: &[NoticeHash]) -> Result<()>;
    async fn notice_hashes(&self) -> Result<Vec<NoticeHash>>;
    /// Records the manifest's notices as the server starts, in one transaction: each one's
    /// hash (as [`Store::record_notice_hashes`]: the first seen per id and version stays) and
    /// its content (inserted when its id, version and hash are new; never overwritten).
    async fn record_notices(&self, notices: &[NoticeContent]) -> Result<()>;
    /// Every content recorded for the notice `notice_id`, by version, then first recorded.
    async fn notice_contents(&self, notice_id: &str) -> Result<Vec<NoticeContent>>;

    // --- API keys -------------------------------------------------------------------------

    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<()>;
    /// The key with this hash if it exists and is not revoked.
    async fn api_key_by_hash(&self, hash: &[u8; 32]) -> Result<Option<ApiKeyRecord>>;
    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>>;
    async fn revoke_api_key(&self, id: &str, at: UnixMillis) -> Result<()>;

    // --- settings (small values such as generated secrets) -----------------------------

    async fn get_setting(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Sets `key`, replacing any value it had.
    async fn put_setting(&self, key: &str, value: &[u8]) -> Result<()>;
    /// Sets `key` only if it has no value yet; returns the value that is stored afterwards
    /// (so two servers starting at once agree on one generated secret).
    async fn put_setting_if_absent(&self, key: &str, value: &[u8]) -> Result<Vec<u8>>;

    // --- subjects -------------------------------------------------------------------------

    /// Creates subjects in one transaction; ids are assigned densely in insert order, the first
    /// subject ever created getting id 0 (so an index can be a plain vector). A `user_id` that
    /// is already taken fails the whole call with `Conflict`.
    async fn insert_subjects(&self, subjects: Vec<NewSubject>) -> Result<Vec<SubjectId>>;
    async fn subject(&self, id: SubjectId) -> Result<Option<Subject>>;
    async fn subject_by_user_id(&self, user_id: &str) -> Result<Option<SubjectId>>;
    /// Subjects with `id > after`, in id order, at most `limit` (for index builds and exports).
    async fn subjects_page(&self, after: Option<SubjectId>, limit: u32) -> Result<Vec<Subject>>;
    async fn subject_count(&self) -> Result<u64>;
    async fn set_erasure_requested(&self, id: SubjectId, at: Option<UnixMillis>) -> Result<()>;

    /// Inserts or replaces traits (keyed by subject and trait key), with provenance.
    async fn upsert_traits(&self, traits: Vec<Trait>) -> Result<()>;
    async fn traits(&self, subject: SubjectId) -> Result<Vec<Trait>>;
    /// Every trait of the first `limit` subjects with `id > after` that have traits, ordered by
    /// subject then key, for index builds. `limit` counts subjects, so one subject's traits are
    /// never split across pages and the next page starts after the last subject returned.
    async fn traits_page(&self, after: Option<SubjectId>, limit: u32) -> Result<Vec<Trait>>;

    async fn put_channel_preference(&self, pref: &ChannelPreference) -> Result<()>;
    async fn channel_preferences(&self, subject: SubjectId) -> Result<Vec<ChannelPreference>>;
    async fn all_channel_preferences(&self) -> Result<Vec<ChannelPreference>>;

    /// Records sent messages together with their uses, in one transaction (through the group
    /// committer): a contact is never stored without the decision it was sent under. Either
    /// list may be empty.
    async fn record_contacts(&self, contacts: Vec<Contact>, uses: Vec<UseRecord>) -> Result<()>;
    /// Contacts at or after `since`, for rebuilding frequency counters.
    async fn contacts_since(&self, since: UnixMillis) -> Result<Vec<Contact>>;
    /// One subject's contacts at or after `since`, in time order.
    async fn contacts_of(&self, subject: SubjectId, since: UnixMillis) -> Result<Vec<Contact>>;

    // --- servers sharing one database ---------------------------------------------------------

    /// Tells every other server on this database something changed (PostgreSQL: `NOTIFY` on
    /// a channel of this schema). A no-op where one server owns the database (SQLite).
    async fn announce(&self, _message: &str) -> Result<()> {
        Ok(())
    }

    /// What other servers announce, from now on, for as long as the receiver is held; `None`
    /// where no other server can write (SQLite). After `Heard::Lost` some announcements may
    /// have been missed.
    async fn listen(&self) -> Result<Option<tokio::sync::mpsc::Receiver<Heard>>> {
        Ok(None)
    }

    // --- decision log -----------------------------------------------------------------------

    /// Appends entries in one transaction; ids are assigned in order.
    async fn append_decision_log(&self, entries: Vec<DecisionLogEntry>) -> Result<()>;
    /// Entries matching `query`, newest (highest id) first.
    async fn decision_log(&self, query: &DecisionLogQuery) -> Result<Vec<DecisionLogEntry>>;
    /// Deletes at most `limit` of the oldest entries made before `before`; returns how many.
    async fn prune_decision_log(&self, before: UnixMillis, limit: u32) -> Result<u64>;

    /// Logged decisions per day and reason from day `since` (days since 1970-01-01) on,
    /// oldest first: what every `append_decision_log` added to, in its transaction.
    async fn decision_counts(&self, since: i64) -> Result<Vec<DecisionCount>>;

    // --- the quarantine of rejected messages ---------------------------------------------

    /// Writes rejected messages in one transaction; ids are assigned in order.
    async fn quarantine(&self, entries: Vec<quarantine::QuarantineEntry>) -> Result<()>;
    /// At most `limit` (capped at `quarantine::MAX_QUARANTINE_PAGE`) entries with an id above
    /// `after`, oldest first.
    async fn quarantined(
        &self,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Vec<quarantine::QuarantineEntry>>;
    /// How many entries the quarantine holds.
    async fn quarantine_len(&self) -> Result<u64>;
    /// Deletes at most `limit` of the oldest entries received before `before`; returns how many.
    async fn prune_quarantine(&self, before: UnixMillis, limit: u32) -> Result<u64>;

    // --- the record of uses ---------------------------------------------------------------

    /// Records uses in one transaction, through the group committer (a profile read or an
    /// export waits for one shared commit, not for one of its own); ids are assigned in order.
    /// A forward whose reference and purpose are already recorded is skipped.
    async fn record_uses(&self, uses: Vec<UseRecord>) -> Result<()> {
        self.record_contacts(Vec::new(), uses).await
    }

    /// The uses naming `subject` alone and every set of subjects (which may or may not hold
    /// it), newest first, with `id < before`, at most `limit`: the candidates `uses_of` sifts.
    async fn use_candidates(
        &self,
        subject: SubjectId,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<UseRecord>>;

    /// The uses that concern one subject, exports that held it included, newest first.
    async fn uses_of(&self, query: &UseQuery) -> Result<Vec<UseRecord>> {
        let limit = query.page_size();
        let want = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut out = Vec::new();
        let mut before = query.before;
        loop {
            let candidates = self.use_candidates(query.subject, before, limit).await?;
            let exhausted = candidates.len() < want;
            before = candidates.last().map(|u| u.id);
            uses::keep_subjects_uses(candidates, query.subject, want, &mut out)?;
            if exhausted || out.len() >= want || before.is_none() {
                return Ok(out);
            }
        }
    }

    // --- lifecycle ------------------------------------------------------------------------

    /// Writes whatever the group committer still holds, then closes the connections. Later
    /// writes fail with `Closed`. Dropping a store without closing it also lets queued writes
    /// finish, but nobody waits for them.
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// Keeps the last of several traits with the same subject and key, in first-seen order: one
/// upsert statement may not touch a row twice on PostgreSQL, and the last write should win.
pub fn last_trait_wins(traits: Vec<Trait>) -> Vec<Trait> {
    let mut position: std::collections::HashMap<(SubjectId, String), usize> =
        std::collections::HashMap::with_capacity(traits.len());
    let mut out: Vec<Trait> = Vec::with_capacity(traits.len());
    for t in traits {
        match position.get(&(t.subject, t.key.clone())) {
            Some(&i) => {
                if let Some(slot) = out.get_mut(i) {
                    *slot = t;
                }
            }
            None => {
                position.insert((t.subject, t.key.clone()), out.len());
                out.push(t);
            }
        }
    }
    out
}

/// The first user id that appears twice in `subjects`, to name it in a conflict.
pub fn first_duplicate_user_id(subjects: &[NewSubject]) -> Option<&str> {
    let mut seen = std::collections::HashSet::with_capacity(subjects.len());
    subjects
        .iter()
        .filter_map(|s| s.user_id.as_deref())
        .find(|u| !seen.insert(*u))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_collect_key_reads_as_public_and_a_server_key_may_collect() {
        assert_eq!(Role::parse("collect"), Some(Role::Public));
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert!(Role::Server.permits(Role::Public));
        assert!(!Role::Public.permits(Role::Server));
        assert!(Role::Admin.permits(Role::Server));
        assert!(Role::Server.is_trusted_writer() && !Role::Public.is_trusted_writer());
        assert_eq!(Role::parse("root"), None);
    }
}
