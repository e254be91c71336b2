//! Several servers on one PostgreSQL database: each announces the subjects its writes touched
//! (`NOTIFY`, through `Store::announce`), and every other one reads those subjects back from
//! the store and replaces them in its index, so a consent withdrawn through one server is
//! honoured by all of them.
//!
//! An announcement is `kept1 <origin> <kind> <id>,<id>,…`: `r` (read the subjects again) or `f`
//! (forget them: erased, or merged into another). The store is the truth: an announcement
//! carries no data, only which subjects to read again, so announcements arriving late or twice
//! change nothing. When the listening connection was lost, or an announcement cannot be read,
//! the whole index is built again from the store.
//!
//! INVARIANT: a server announces only after its write committed and its own index applied it,
//! so another server reading the store on hearing it sees the write. `IndexHandle::apply`
//! announces only once `apply_heard` has returned `Ok`; across two servers,
//! `what_one_server_writes_the_other_decides_on` checks it.

use crate::announce::{Announcement, parse};
use crate::clock::Clock;
use crate::identity::Identities;
use crate::index::{IndexError, IndexHandle};
use kept_core::index::Change;
use kept_core::{SubjectId, UnixMillis};
use kept_store::{Heard, Store};
use std::sync::Arc;

/// Subjects read again on hearing another server.
pub const SUBJECTS_REFRESHED: &str = "kept_sync_subjects_refreshed_total";
/// Whole index builds after announcements were missed.
pub const RELOADS: &str = "kept_sync_reloads_total";

/// How far back contacts count for frequency caps (as when the index is built).
const CONTACT_WINDOW: UnixMillis = 31 * 24 * 60 * 60 * 1000;

/// Everything the index holds about `subject`, read from `store`: dropped, then taken back.
pub async fn subject_changes(
    store: &dyn Store,
    subject: SubjectId,
    now: UnixMillis,
) -> Result<Vec<Change>, IndexError> {
    let mut changes = vec![Change::Forget(subject)];
    let Some(s) = store.subject(subject).await? else {
        return Ok(changes);
    };
    changes.push(Change::Subject(s));
    changes.extend(store.traits(subject).await?.into_iter().map(Change::Trait));
    for entry in store.ledger_for_subject(subject).await? {
        let record = kept_core::decision::SequencedRecord::from_entry(&entry).map_err(|e| {
            IndexError::Corrupt {
                seq: entry.seq,
                message: e.to_string(),
            }
        })?;
        changes.push(Change::Consent(record));
    }
    changes.extend(
        store
            .channel_preferences(subject)
            .await?
            .into_iter()
            .map(Change::Preference),
    );
    if let Some(at) = store.last_interaction(subject).await? {
        changes.push(Change::Interaction { subject, at });
    }
    let since = now.saturating_sub(CONTACT_WINDOW);
    changes.extend(
        store
            .contacts_of(subject, since)
            .await?
            .into_iter()
            .map(Change::Contact),
    );
    changes.extend(crate::requests::gates::gate_changes(store, subject).await?);
    Ok(changes)
}

/// What following the other servers reads and writes: the store they share, this server's
/// index and identity cache, and the clock.
#[derive(Clone)]
pub struct Follower {
    pub store: Arc<dyn Store>,
    pub index: IndexHandle,
    pub identity: Arc<Identities>,
    pub clock: Clock,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Follower {
    fn now(&self) -> UnixMillis {
        (self.clock)()
    }
}

/// Follows what the other servers on the follower's database announce (`heard`, from
/// `Store::listen`, taken before the index was built so nothing in between is missed), and
/// announces this server's own changes from now on.
pub fn spawn(
    state: Follower,
    heard: tokio::sync::mpsc::Receiver<Heard>,
) -> tokio::task::JoinHandle<()> {
    state.index.announce_to(state.store.clone());
    tokio::spawn(async move { follow(state, heard).await })
}

async fn follow(state: Follower, mut heard: tokio::sync::mpsc::Receiver<Heard>) {
    let own = state.index.origin().unwrap_or_default().to_owned();
    while let Some(next) = heard.recv().await {
        let result = match next {
            Heard::Message(message) => match parse(&message) {
                Some(a) if a.origin == own => Ok(()),
                Some(a) => hear(&state, a).await,
                None => {
                    tracing::warn!(
                        message = message.get(..80).unwrap_or(&message),
                        "an announcement this server cannot read: building the index again"
                    );
                    reload(&state).await
                }
            },
            Heard::Lost => reload(&state).await,
        };
        if let Err(e) = result {
            // Fail closed and try again: a build left part-way knows fewer subjects.
            tracing::error!(code = e.code(), error = %e, "cannot follow the other servers");
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            if let Err(e) = reload(&state).await {
                tracing::error!(code = e.code(), error = %e, "cannot build the index again");
            }
        }
    }
}

async fn hear(state: &Follower, a: Announcement) -> Result<(), IndexError> {
    if let Ok(mut cache) = state.identity.cache.lock() {
        cache.invalidate(&a.subjects, a.forget);
    }
    // A subject forgotten because it was merged away keeps naming its survivor; one read
    // again may have come back from a merge undone.
    let survivors = state.store.survivors(&a.subjects).await?;
    if a.forget {
        state.index.record_merges(&survivors, false)?;
        let changes = a.subjects.into_iter().map(Change::Forget).collect();
        return state.index.apply_heard(changes).await;
    }
    let unmerged: Vec<(SubjectId, SubjectId)> = a
        .subjects
        .iter()
        .filter(|s| !survivors.iter().any(|(from, _)| from == *s))
        .map(|s| (*s, *s))
        .collect();
    state.index.record_merges(&unmerged, true)?;
    let now = state.now();
    let n = a.subjects.len();
    for subject in a.subjects {
        let changes = subject_changes(state.store.as_ref(), subject, now).await?;
        state.index.apply_heard(changes).await?;
    }
    metrics::counter!(SUBJECTS_REFRESHED).increment(n as u64);
    Ok(())
}

async fn reload(state: &Follower) -> Result<(), IndexError> {
    metrics::counter!(RELOADS).increment(1);
    if let Ok(mut cache) = state.identity.cache.lock() {
        *cache = Default::default();
    }
    state
        .index
        .reload(state.store.as_ref(), state.now())
        .await
        .map(|_| ())
}
