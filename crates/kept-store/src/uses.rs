//! The record of uses: every use of personal data Kept performs or is told about (a webhook
//! forward, an audience export, a recorded contact, a purpose-limited profile read), stored with the decision that allowed it
//! and never sampled or dropped, unlike the decision log of mere questions.

use crate::{Result, StoreError};
use kept_core::{SubjectId, UnixMillis};
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};

/// Uses one `uses_of` call returns at most.
pub const MAX_USES_PAGE: u32 = 1000;

/// What kind of use a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UseKind {
    /// An event sent to a system's webhook.
    Forward,
    /// The subjects of an audience export.
    Export,
    /// A message sent to a person, recorded through `POST /v1/contacts`.
    Contact,
    /// A purpose-limited profile read (`GET /v1/subjects/{id}/profile`): the traits of one
    /// category shown to the caller.
    Profile,
}

impl UseKind {
    pub const ALL: [UseKind; 4] = [
        UseKind::Forward,
        UseKind::Export,
        UseKind::Contact,
        UseKind::Profile,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UseKind::Forward => "forward",
            UseKind::Export => "export",
            UseKind::Contact => "contact",
            UseKind::Profile => "profile",
        }
    }

    pub fn parse(s: &str) -> Option<UseKind> {
        UseKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Who a use concerns: one subject, or a set of them (an export), stored as a serialized
/// roaring bitmap so a million-subject export is one row of a few hundred kilobytes at most.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UseSubjects {
    One(SubjectId),
    /// A portable roaring bitmap of subject ids, with how many it holds.
    Set {
        bitmap: Vec<u8>,
        count: u64,
    },
}

impl UseSubjects {
    /// The set of `ids`, serialized.
    pub fn set(ids: &RoaringBitmap) -> UseSubjects {
        let mut bitmap = Vec::with_capacity(ids.serialized_size());
        // Writing to a Vec cannot fail.
        let _ = ids.serialize_into(&mut bitmap);
        UseSubjects::Set {
            bitmap,
            count: ids.len(),
        }
    }

    /// Whether `subject` is among the subjects.
    pub fn contains(&self, subject: SubjectId) -> Result<bool> {
        match self {
            UseSubjects::One(s) => Ok(*s == subject),
            UseSubjects::Set { bitmap, .. } => Ok(set_from_bytes(bitmap)?.contains(subject.0)),
        }
    }

    /// How many subjects.
    pub fn count(&self) -> u64 {
        match self {
            UseSubjects::One(_) => 1,
            UseSubjects::Set { count, .. } => *count,
        }
    }
}

/// A stored set of subjects back as a bitmap.
pub fn set_from_bytes(bytes: &[u8]) -> Result<RoaringBitmap> {
    RoaringBitmap::deserialize_from(bytes)
        .map_err(|e| StoreError::Corrupt(format!("a use's subject set is malformed: {e}")))
}

/// One use, with the decision that allowed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UseRecord {
    /// Assigned by the store, increasing in write order; ignored when recording.
    pub id: u64,
    pub at: UnixMillis,
    pub kind: UseKind,
    pub subjects: UseSubjects,
    pub purpose: String,
    pub channel: Option<String>,
    pub topic: Option<String>,
    pub categories: Vec<String>,
    /// The reason code of the decision the use went ahead under (`allowed.consent`). A contact
    /// Kept is told about after the fact may carry a denial: that is what the record is for.
    pub reason: String,
    /// The decision's evidence as the decision API answers it (a JSON array), or for a set a
    /// JSON summary of the decisions over it.
    pub evidence: String,
    /// Who used the data: the system a forward went to, or the public id of the API key that
    /// exported or recorded.
    pub actor: String,
    /// What the use belongs to: a webhook delivery's message id, an export's id. For a
    /// forward, a second record with the same reference and purpose is not written (a retried
    /// delivery is one use).
    pub reference: Option<String>,
}

/// Which uses to read: those of one subject (sets that hold it included), newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UseQuery {
    pub subject: SubjectId,
    /// Only uses whose id is below this (`next_before` of the previous page).
    pub before: Option<u64>,
    /// At most this many, capped at [`MAX_USES_PAGE`].
    pub limit: u32,
}

impl UseQuery {
    pub fn page_size(&self) -> u32 {
        self.limit.clamp(1, MAX_USES_PAGE)
    }
}

/// The columns a use is stored in, the same on both backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UseColumns<'a> {
    pub at: i64,
    pub kind: &'static str,
    pub subject: Option<i64>,
    pub subjects: Option<&'a [u8]>,
    pub count: i64,
    pub purpose: &'a str,
    pub channel: Option<&'a str>,
    pub topic: Option<&'a str>,
    pub categories: String,
    pub reason: &'a str,
    pub evidence: &'a str,
    pub actor: &'a str,
    pub reference: Option<&'a str>,
}

impl UseRecord {
    pub fn columns(&self) -> Result<UseColumns<'_>> {
        let (subject, subjects, count) = match &self.subjects {
            UseSubjects::One(s) => (Some(i64::from(s.0)), None, 1),
            UseSubjects::Set { bitmap, count } => (
                None,
                Some(bitmap.as_slice()),
                crate::columns::to_i64(*count)?,
            ),
        };
        Ok(UseColumns {
            at: self.at,
            kind: self.kind.as_str(),
            subject,
            subjects,
            count,
            purpose: &self.purpose,
            channel: self.channel.as_deref(),
            topic: self.topic.as_deref(),
            categories: crate::decision_log::categories_column(&self.categories),
            reason: &self.reason,
            evidence: &self.evidence,
            actor: &self.actor,
            reference: self.reference.as_deref(),
        })
    }
}

/// A use from a row of [`USE_COLUMNS`].
pub fn use_row(r: &impl crate::columns::Row) -> Result<UseRecord> {
    use_from_columns(
        r.int(0)?,
        r.int(1)?,
        &r.text(2)?,
        r.int_opt(3)?,
        r.bytes_opt(4)?,
        r.int(5)?,
        r.text(6)?,
        r.text_opt(7)?,
        r.text_opt(8)?,
        &r.text(9)?,
        r.text(10)?,
        r.text(11)?,
        r.text(12)?,
        r.text_opt(13)?,
    )
}

/// A use back from its columns, in the order `USE_COLUMNS` names them.
#[expect(
    clippy::too_many_arguments,
    reason = "one argument per stored column, in the order both backends select them"
)]
pub fn use_from_columns(
    id: i64,
    at: i64,
    kind: &str,
    subject: Option<i64>,
    subjects: Option<Vec<u8>>,
    count: i64,
    purpose: String,
    channel: Option<String>,
    topic: Option<String>,
    categories: &str,
    reason: String,
    evidence: String,
    actor: String,
    reference: Option<String>,
) -> Result<UseRecord> {
    let kind = UseKind::parse(kind)
        .ok_or_else(|| StoreError::Corrupt(format!("use {id} has an unknown kind `{kind}`")))?;
    let subjects = match (subject, subjects) {
        (Some(s), None) => UseSubjects::One(crate::columns::subject_id(s)?),
        (None, Some(bitmap)) => UseSubjects::Set {
            bitmap,
            count: crate::columns::to_u64(count, "use count")?,
        },
        _ => {
            return Err(StoreError::Corrupt(format!(
                "use {id} names neither one subject nor a set"
            )));
        }
    };
    Ok(UseRecord {
        id: crate::columns::to_u64(id, "use id")?,
        at,
        kind,
        subjects,
        purpose,
        channel,
        topic,
        categories: crate::decision_log::categories_from_column(categories)?,
        reason,
        evidence,
        actor,
        reference,
    })
}

/// The columns every read selects, in `use_from_columns` order.
pub const USE_COLUMNS: &str = "id, at, kind, subject_id, subjects, subject_count, purpose, \
    channel, topic, categories, reason, evidence, actor, reference";

/// Moves the candidates (a subject's own uses and every set, newest first) that concern
/// `subject` to `out`, until `out` holds `limit`.
pub fn keep_subjects_uses(
    candidates: Vec<UseRecord>,
    subject: SubjectId,
    limit: usize,
    out: &mut Vec<UseRecord>,
) -> Result<()> {
    for u in candidates {
        if out.len() >= limit {
            break;
        }
        if u.subjects.contains(subject)? {
            out.push(u);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_round_trips_and_answers_membership() {
        let ids: RoaringBitmap = (0..100_000u32).filter(|i| i % 3 == 0).collect();
        let set = UseSubjects::set(&ids);
        assert_eq!(set.count(), ids.len());
        assert!(set.contains(SubjectId(99_999)).unwrap());
        assert!(!set.contains(SubjectId(99_998)).unwrap());
        let UseSubjects::Set { bitmap, .. } = &set else {
            panic!("a set")
        };
        assert_eq!(set_from_bytes(bitmap).unwrap(), ids);
        assert!(set_from_bytes(b"not a bitmap").is_err());
    }

    /// The stored form of a set is the portable roaring format: these bytes must keep reading
    /// as this set, and this set must keep writing as these bytes.
    #[test]
    fn the_stored_set_format_is_fixed() {
        let ids: RoaringBitmap = [0, 1, 2, 65_535, 65_536, 1_000_000, u32::MAX]
            .into_iter()
            .collect();
        let UseSubjects::Set { bitmap, count } = UseSubjects::set(&ids) else {
            panic!("a set")
        };
        assert_eq!(count, 7);
        let fixture = include_str!("../tests/fixtures/uses/set-v1.hex").trim();
        assert_eq!(hex(&bitmap), fixture);
        assert_eq!(set_from_bytes(&bitmap).unwrap(), ids);
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
