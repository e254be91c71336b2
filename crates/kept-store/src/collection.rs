//! What the collection API stores: identities (keyed hash → subject, value sealed under the
//! subject's data key), merges, events (deduplicated per source on `messageId`), and the
//! retention deletes. Every `Store` implements [`CollectionStore`].
//!
//! INVARIANT: an identifier hash has exactly one holder, and a merged subject holds none: a
//! merge moves its identifiers to the subject it was merged into, so lookups follow merges.
//! Held by each backend's key on the hash and its merge statement, not checkable here: the
//! conformance cases `identities_attach_merge_and_follow` and `an_identity_conflict_writes_nothing`
//! check it.

use crate::{NewSubject, Result};
use async_trait::async_trait;
use kept_core::collection::TraitCutoffs;
use kept_core::identity::{IdentifierCounts, IdentifierHash, IdentifierKind, PlannedSubject};
use kept_core::subject::Trait;
use kept_core::{SubjectId, UnixMillis};
use serde::{Deserialize, Serialize};

/// What one retention pass over traits deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeletedTraits {
    pub count: u64,
    /// Every subject that lost a trait, ascending, each once: the decision index still holds
    /// those traits' provenance until it reloads these subjects.
    pub subjects: Vec<SubjectId>,
}

impl DeletedTraits {
    /// From the subject of every deleted row (repeats allowed).
    pub fn from_rows(mut subjects: Vec<SubjectId>) -> DeletedTraits {
        let count = subjects.len() as u64;
        subjects.sort_unstable();
        subjects.dedup();
        DeletedTraits { count, subjects }
    }
}

/// What resolution needs to know about a subject that holds identifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityFacts {
    pub subject: SubjectId,
    /// It has a user id (its own column, or a `user_id` identifier).
    pub identified: bool,
    /// It holds a verified email address or phone number.
    pub verified: bool,
    pub counts: IdentifierCounts,
    pub country: Option<String>,
    pub region: Option<String>,
    pub time_zone: Option<String>,
}

/// An identifier to attach. `key_subject` is the subject whose data key sealed the value (the
/// holder when attached; it stays when a merge moves the identifier to another holder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIdentity {
    pub subject: PlannedSubject,
    pub key_subject: PlannedSubject,
    pub kind: IdentifierKind,
    pub hash: IdentifierHash,
    pub sealed: Vec<u8>,
    /// It arrived through a server key, an identity token, a confirmed double opt-in or a
    /// signed link (see `Speaker::verifies`).
    pub verified: bool,
}

/// A subject merged into another: its identifiers and traits move; its events, ledger records
/// and id stay, and reads of the survivor follow the merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMerge {
    /// An existing subject, or one this same write creates (made by an earlier message of the
    /// batch, merged by a later one).
    pub from: PlannedSubject,
    pub into: PlannedSubject,
    /// `identify`, `alias`, …
    pub reason: String,
}

/// Location to give a subject that has none yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLocation {
    pub subject: SubjectId,
    pub country: Option<String>,
    pub region: Option<String>,
    pub time_zone: Option<String>,
}

/// Everything one resolution round writes, atomically. `PlannedSubject::New(i)` names the i-th
/// entry of `new_subjects`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityWrite {
    pub new_subjects: Vec<NewSubject>,
    /// Wrapped data keys, for new subjects and for existing ones that had none.
    pub keys: Vec<(PlannedSubject, Vec<u8>)>,
    pub attach: Vec<NewIdentity>,
    pub merges: Vec<NewMerge>,
    /// User ids for existing subjects that have none yet.
    pub user_ids: Vec<(SubjectId, String)>,
    pub locations: Vec<NewLocation>,
    /// Identifiers already held that are now verified.
    pub verify: Vec<IdentifierHash>,
    /// The API key whose request this is, for the identity log (`None`: Kept itself).
    pub key_id: Option<String>,
    pub at: UnixMillis,
}

impl IdentityWrite {
    pub fn is_empty(&self) -> bool {
        self.new_subjects.is_empty()
            && self.keys.is_empty()
            && self.attach.is_empty()
            && self.merges.is_empty()
            && self.user_ids.is_empty()
            && self.locations.is_empty()
            && self.verify.is_empty()
    }
}

/// An identifier as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredIdentity {
    pub hash: IdentifierHash,
    pub kind: IdentifierKind,
    pub subject: SubjectId,
    pub key_subject: SubjectId,
    pub sealed: Vec<u8>,
    pub created_at: UnixMillis,
    pub verified: bool,
}

/// One entry of the identity log: a merge, or the undoing of one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeEntry {
    pub id: i64,
    /// `merge` or `undo`.
    pub action: String,
    /// The subject merged away (or, for an undo, restored).
    pub from: SubjectId,
    /// The subject it was merged into.
    pub into: SubjectId,
    /// What caused it: `identify`, `alias`, `undo`.
    pub cause: String,
    /// The API key whose request did it; `None` when Kept did it itself.
    pub key_id: Option<String>,
    pub at: UnixMillis,
    /// For a merge: when it was undone. For an undo: `None`.
    pub undone_at: Option<UnixMillis>,
    /// For an undo: the merge it undid.
    pub undoes: Option<i64>,
}

/// What undoing a merge restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndoneMerge {
    /// The identity log entry of the undo.
    pub entry: MergeEntry,
    /// Identifiers moved back to the restored subject.
    pub identifiers: u64,
    /// Traits given back to the restored subject.
    pub traits: u64,
}

/// Why a merge cannot be undone.
pub fn undo_refusal(what: &str) -> crate::StoreError {
    crate::StoreError::Conflict {
        what: "merge",
        key: what.to_owned(),
    }
}

/// An event to store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Who sent it (the write key's id): `message_id` is unique per source.
    pub source: String,
    pub message_id: String,
    pub subject: SubjectId,
    /// `identify`, `track`, `page`, `screen`, `group`, `alias`.
    pub kind: String,
    /// The track event's or the page's name.
    pub name: Option<String>,
    /// When it happened (server clock, client skew corrected).
    pub at: UnixMillis,
    pub received_at: UnixMillis,
    /// When retention deletes it.
    pub retain_until: UnixMillis,
    /// JSON: the consent the event carried and what it may serve.
    pub consent: String,
    /// JSON object.
    pub properties: String,
    /// JSON object (the client IP replaced by its keyed hash).
    pub context: String,
    /// JSON object: the message's top-level fields Kept does not read (a page's `category`,
    /// `channel`, `integrations`, ...), as sent.
    pub extra: String,
}

/// Each subject's latest event time among `events`, by subject id: the interactions an event
/// write records (`subjects.last_interaction_at`, kept as the latest ever seen).
pub fn interactions(events: &[NewEvent]) -> Vec<(SubjectId, UnixMillis)> {
    let mut latest: std::collections::BTreeMap<SubjectId, UnixMillis> =
        std::collections::BTreeMap::new();
    for e in events {
        let at = latest.entry(e.subject).or_insert(e.at);
        *at = (*at).max(e.at);
    }
    latest.into_iter().collect()
}

/// An event as stored, with its position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub id: i64,
    #[serde(flatten)]
    pub event: NewEvent,
}

/// The key a consent snapshot is stored under (stores keep each distinct snapshot once).
pub fn consent_key(consent: &str) -> [u8; 16] {
    let hash = blake3::hash(consent.as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(hash.as_bytes().get(..16).unwrap_or(&[0; 16]));
    key
}

/// A consent snapshot's key and text.
pub type KeyedConsent<'a> = ([u8; 16], &'a str);

/// Each event's consent key, and the distinct snapshots among them (first seen first).
pub fn consent_keys(events: &[NewEvent]) -> (Vec<[u8; 16]>, Vec<KeyedConsent<'_>>) {
    let mut keys = Vec::with_capacity(events.len());
    let mut distinct: Vec<KeyedConsent<'_>> = Vec::new();
    for e in events {
        // Events mostly repeat one of a few snapshots: comparing is cheaper than hashing.
        let key = match distinct.iter().find(|(_, c)| *c == e.consent) {
            Some((k, _)) => *k,
            None => {
                let key = consent_key(&e.consent);
                distinct.push((key, e.consent.as_str()));
                key
            }
        };
        keys.push(key);
    }
    (keys, distinct)
}

/// Events and profile traits written together, through the store's group committer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventWrite {
    pub events: Vec<NewEvent>,
    pub traits: Vec<Trait>,
}

impl EventWrite {
    /// Rows it inserts, for the group committer's batch cap.
    pub fn rows(&self) -> usize {
        (self.events.len() + self.traits.len()).max(1)
    }
}

/// Storage for the collection API. Write methods return only after their commit.
#[async_trait]
pub trait CollectionStore: Send + Sync {
    /// The holder of each of `hashes` that has one.
    async fn find_identities(
        &self,
        hashes: &[IdentifierHash],
    ) -> Result<Vec<(IdentifierHash, SubjectId)>>;

    /// Subjects by their `user_id` column, for subjects made outside collection (imports, the
    /// demo) that hold no `user_id` identifier yet.
    async fn subjects_by_user_ids(&self, user_ids: &[String]) -> Result<Vec<(String, SubjectId)>>;

    /// Resolution facts of each of `subjects` that exists.
    async fn identity_facts(&self, subjects: &[SubjectId]) -> Result<Vec<IdentityFacts>>;

    /// The wrapped data key of each of `subjects` that has one.
    async fn subject_keys(&self, subjects: &[SubjectId]) -> Result<Vec<(SubjectId, Vec<u8>)>>;

    /// Writes `write` in one transaction and returns the ids given to its new subjects, in
    /// order (dense, like `insert_subjects`). When an identifier, a user id or a data key was
    /// taken meanwhile, nothing is written and the answer is `Conflict`: resolve again.
    /// Identifiers are attached before the merges are applied, so one attached to a subject
    /// that the same write merges away moves to the survivor (and into the merge's log entry).
    async fn write_identities(&self, write: IdentityWrite) -> Result<Vec<SubjectId>>;

    /// Which of `hashes` are held and verified.
    async fn verified_identities(&self, hashes: &[IdentifierHash]) -> Result<Vec<IdentifierHash>>;

    /// For each of `subjects` that was merged away, the subject that holds its identifiers now
    /// (merges followed to the end).
    async fn survivors(&self, subjects: &[SubjectId]) -> Result<Vec<(SubjectId, SubjectId)>>;

    /// Merges in force (not undone), `(merged away, merged into)`, ordered by the merged-away
    /// subject, those after `after`, at most `limit`: for index builds.
    async fn merges_page(
        &self,
        after: Option<SubjectId>,
        limit: u32,
    ) -> Result<Vec<(SubjectId, SubjectId)>>;

    /// The identity log, newest first: entries with `id < before` (all when `None`), at most
    /// `limit`.
    async fn identity_log(&self, before: Option<i64>, limit: u32) -> Result<Vec<MergeEntry>>;

    /// Undoes merge `id` in one transaction: the merged-away subject gets back the identifiers
    /// and traits it had, the merge stops counting, and the undo is logged. `NotFound` for no
    /// such merge; `Conflict` for one already undone, or whose survivor was itself merged
    /// away since (undo that one first).
    async fn undo_merge(
        &self,
        id: i64,
        key_id: Option<&str>,
        at: UnixMillis,
    ) -> Result<UndoneMerge>;

    /// The identifiers `subject` holds.
    async fn identities_of(&self, subject: SubjectId) -> Result<Vec<StoredIdentity>>;

    /// Subjects merged into `subject`, directly or through others.
    async fn merged_into(&self, subject: SubjectId) -> Result<Vec<SubjectId>>;

    /// The identity log entries of the subjects merged away (or restored) among `subjects`,
    /// oldest first: with `subjects` a subject and those [`merged_into`](Self::merged_into)
    /// it, every merge that made it what it is, and its own merge if it was merged away.
    async fn identity_log_of(&self, subjects: &[SubjectId]) -> Result<Vec<MergeEntry>>;

    /// Inserts events (skipping any whose `(source, message_id)` is stored) and upserts
    /// traits, in one transaction shared with other writers (group commit). The same
    /// transaction moves each subject's last interaction to its latest event, if later
    /// (`interactions`).
    async fn write_events(&self, write: EventWrite) -> Result<()>;

    /// Every subject's last recorded interaction (its latest collected event or
    /// preference-center visit), in one query, for building the index.
    async fn last_interactions(&self) -> Result<Vec<(SubjectId, UnixMillis)>>;

    /// One subject's last recorded interaction.
    async fn last_interaction(&self, subject: SubjectId) -> Result<Option<UnixMillis>>;

    /// Events of `subject` and of every subject merged into it, with `id > after`, in id
    /// order, at most `limit`.
    async fn events_of(
        &self,
        subject: SubjectId,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredEvent>>;

    /// Deletes at most `limit` events whose `retain_until` is at or before `now` or that were
    /// received before `received_before`; returns how many.
    async fn delete_expired_events(
        &self,
        now: UnixMillis,
        received_before: UnixMillis,
        limit: u32,
    ) -> Result<u64>;

    /// Deletes traits collected before their notice's cutoff, in one transaction; says how
    /// many and whose.
    async fn delete_expired_traits(&self, cutoffs: &TraitCutoffs) -> Result<DeletedTraits>;

    /// Sets (or with `None` clears) the collection point events sent with API key `key_id`
    /// are collected at when they name none.
    async fn set_key_collection_point(&self, key_id: &str, point: Option<&str>) -> Result<()>;
    async fn key_collection_point(&self, key_id: &str) -> Result<Option<String>>;
}

/// An identity log entry from `id, action, from_subject, into_subject, cause, key_id, at,
/// undone_at, undoes`.
pub fn merge_row(row: &impl crate::columns::Row) -> Result<MergeEntry> {
    use crate::columns::subject_id;
    Ok(MergeEntry {
        id: row.int(0)?,
        action: row.text(1)?,
        from: subject_id(row.int(2)?)?,
        into: subject_id(row.int(3)?)?,
        cause: row.text(4)?,
        key_id: row.text_opt(5)?,
        at: row.int(6)?,
        undone_at: row.int_opt(7)?,
        undoes: row.int_opt(8)?,
    })
}

/// An identifier's keyed hash from column `i`.
pub fn hash_column(row: &impl crate::columns::Row, i: usize) -> Result<IdentifierHash> {
    IdentifierHash::from_slice(&row.bytes(i)?)
        .ok_or_else(|| crate::StoreError::Corrupt("an identity hash is not 32 bytes".into()))
}

/// An identifier's kind from column `i`.
pub fn kind_column(row: &impl crate::columns::Row, i: usize) -> Result<IdentifierKind> {
    let kind = row.text(i)?;
    IdentifierKind::parse(&kind)
        .ok_or_else(|| crate::StoreError::Corrupt(format!("unknown identifier kind `{kind}`")))
}
