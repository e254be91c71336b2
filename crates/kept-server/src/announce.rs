//! What one server tells the others on a shared PostgreSQL database after its writes: the
//! subjects they touched, as `kept1 <origin> <kind> <id>,<id>,…` (`r`: read them again; `f`:
//! forget them, erased or merged away), each within PostgreSQL's payload limit. The index
//! makes them (`Note`); `sync` reads them back (`parse`).

use kept_core::SubjectId;
use kept_core::index::Change;
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// Announcements that could not be sent (the write stands; other servers miss it until they
/// build their index again).
pub const ANNOUNCE_FAILED: &str = "kept_sync_announce_failed_total";
const VERSION: &str = "kept1";
/// PostgreSQL refuses payloads of 8,000 bytes or more.
const MAX_MESSAGE: usize = 7_000;
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
                Change::Gates { subject, .. } => *subject,
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

#[cfg(test)]
mod tests {
    use super::*;
    use kept_core::SubjectId;
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
