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
//! so another server reading the store on hearing it sees the write.

use crate::clock::Clock;
use crate::identity::Identities;
use crate::index::{IndexError, IndexHandle};
use kept_core::index::Change;
use kept_core::{SubjectId, UnixMillis};
use kept_store::{Heard, Store};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;

/// Announcements that could not be sent (the write stands; other servers miss it until they
/// build their index again).
pub const ANNOUNCE_FAILED: &str = "kept_sync_announce_failed_total";
/// Subjects read again on hearing another server.
pub const SUBJECTS_REFRESHED: &str = "kept_sync_subjects_refreshed_total";
/// Whole index builds after announcements were missed.
pub const RELOADS: &str = "kept_sync_reloads_total";

const VERSION: &str = "kept1";
/// PostgreSQL refuses payloads of 8,000 bytes or more.
const MAX_MESSAGE: usize = 7_000;
/// How far back contacts count for frequency caps (as when the index is built).
const CONTACT_WINDOW: UnixMillis = 31 * 24 * 60 * 60 * 1000;

/// The subjects a batch of changes touched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Note {
    pub refresh: BTreeSet<u32>,
    pub forget: BTreeSet<u32>,
}

impl Note {
    pub fn of(changes: &[Change]) -> Note {
        let mut note = Note::default();
        for change in changes {
            let id = match change {
                Change::Subject(s) => s.id,
                Change::Trait(t) => t.subject,
                Change::Consent(r) => r.record.subject,
                Change::Preference(p) => p.subject,
                Change::Contact(c) => c.subject,
                Change::Interaction { subject, .. } => *subject,
                Change::ForgetTraits(id) => *id,
                Change::Forget(id) => {
                    note.forget.insert(id.0);
                    continue;
                }
            };
            note.refresh.insert(id.0);
        }
        // A subject forgotten and written again in one batch (never done today) is read again:
        // the store decides what it holds.
        for id in &note.refresh {
            note.forget.remove(id);
        }
        note
    }

    pub fn is_empty(&self) -> bool {
        self.refresh.is_empty() && self.forget.is_empty()
    }

    /// The announcements for this note, each within PostgreSQL's payload limit.
    pub fn messages(&self, origin: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (kind, ids) in [('r', &self.refresh), ('f', &self.forget)] {
            let head = format!("{VERSION} {origin} {kind} ");
            let mut message = head.clone();
            for id in ids {
                if message.len() > MAX_MESSAGE {
                    out.push(std::mem::replace(&mut message, head.clone()));
                }
                if message.len() > head.len() {
                    message.push(',');
                }
                let _ = write!(message, "{id}");
            }
            if message.len() > head.len() {
                out.push(message);
            }
        }
        out
    }
}

/// One announcement read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub origin: String,
    pub forget: bool,
    pub subjects: Vec<SubjectId>,
}

/// Reads an announcement; `None` for one this version cannot read.
pub fn parse(message: &str) -> Option<Announcement> {
    let mut parts = message.split(' ');
    if parts.next()? != VERSION {
        return None;
    }
    let origin = parts.next()?.to_owned();
    let forget = match parts.next()? {
        "r" => false,
        "f" => true,
        _ => return None,
    };
    let subjects = parts
        .next()?
        .split(',')
        .map(|id| id.parse().ok().map(SubjectId))
        .collect::<Option<Vec<_>>>()?;
    if parts.next().is_some() || origin.is_empty() {
        return None;
    }
    Some(Announcement {
        origin,
        forget,
        subjects,
    })
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use kept_core::subject::Contact;

    #[test]
    fn a_note_names_each_subject_once_and_forgetting_wins_only_alone() {
        let contact = |id| {
            Change::Contact(Contact {
                subject: SubjectId(id),
                channel: "email".into(),
                purpose: "marketing.communications".into(),
                topic: None,
                at: 0,
            })
        };
        let note = Note::of(&[
            contact(3),
            contact(3),
            Change::ForgetTraits(SubjectId(1)),
            Change::Forget(SubjectId(7)),
        ]);
        assert_eq!(note.refresh, BTreeSet::from([1, 3]));
        assert_eq!(note.forget, BTreeSet::from([7]));
        assert!(Note::of(&[]).is_empty());
    }

    #[test]
    fn messages_read_back_and_stay_under_the_payload_limit() {
        let note = Note {
            refresh: (0..5_000).collect(),
            forget: BTreeSet::from([42]),
        };
        let messages = note.messages("abc");
        assert!(messages.len() > 2);
        let mut refresh = BTreeSet::new();
        let mut forget = BTreeSet::new();
        for m in &messages {
            assert!(m.len() < 8_000, "{}", m.len());
            let a = parse(m).unwrap();
            assert_eq!(a.origin, "abc");
            let target = if a.forget { &mut forget } else { &mut refresh };
            target.extend(a.subjects.iter().map(|s| s.0));
        }
        assert_eq!(refresh, note.refresh);
        assert_eq!(forget, note.forget);
    }

    #[test]
    fn what_cannot_be_read_is_refused() {
        for bad in [
            "",
            "kept2 a r 1",
            "kept1 a x 1",
            "kept1 a r 1,b",
            "kept1 a r",
            "kept1 a r 1 extra",
            "kept1  r 1",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
