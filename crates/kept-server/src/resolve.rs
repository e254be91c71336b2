//! Which subject a caller means. Every endpoint that names a subject by user id, internal id,
//! email, phone or anonymous id resolves it through `resolve_subjects`, the one place that knows
//! how: ids are taken as they are, user ids are read from the index's directory (kept current
//! by every write, never a database query per item), and email, phone and anonymous ids go to
//! `resolve_identities`.

use crate::app::AppState;
use crate::index::IndexError;
use kept_core::SubjectId;
use std::borrow::Cow;

/// How a request names a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectRef<'a> {
    /// Kept's internal id.
    Id(u32),
    UserId(Cow<'a, str>),
    Email(Cow<'a, str>),
    Phone(Cow<'a, str>),
    AnonymousId(Cow<'a, str>),
}

impl SubjectRef<'_> {
    /// The kind of identifier, as the API names it.
    pub fn kind(&self) -> &'static str {
        match self {
            SubjectRef::Id(_) => "id",
            SubjectRef::UserId(_) => "user_id",
            SubjectRef::Email(_) => "email",
            SubjectRef::Phone(_) => "phone",
            SubjectRef::AnonymousId(_) => "anonymous_id",
        }
    }
}

/// An identifier kind looked up by keyed hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityKind {
    Email,
    Phone,
    AnonymousId,
}

/// The subject each reference names, in order; `None` for a subject Kept does not know (its
/// decisions are `denied.unknown_subject`). The directory is read under one lock for the whole
/// list.
pub fn resolve_subjects(
    state: &AppState,
    refs: &[SubjectRef<'_>],
) -> Result<Vec<Option<SubjectId>>, IndexError> {
    let mut out = Vec::with_capacity(refs.len());
    let mut identities = Vec::new();
    {
        let directory = state.index.directory()?;
        for (i, r) in refs.iter().enumerate() {
            out.push(match r {
                SubjectRef::Id(id) => Some(SubjectId(*id)),
                SubjectRef::UserId(u) => directory.subject(u),
                SubjectRef::Email(v) => {
                    identities.push((i, IdentityKind::Email, v.as_ref()));
                    None
                }
                SubjectRef::Phone(v) => {
                    identities.push((i, IdentityKind::Phone, v.as_ref()));
                    None
                }
                SubjectRef::AnonymousId(v) => {
                    identities.push((i, IdentityKind::AnonymousId, v.as_ref()));
                    None
                }
            });
        }
    }
    if !identities.is_empty() {
        let found = resolve_identities(state, &identities);
        for ((i, _, _), subject) in identities.iter().zip(found) {
            if let Some(slot) = out.get_mut(*i) {
                *slot = subject;
            }
        }
    }
    Ok(out)
}

/// Email addresses, phone numbers and anonymous ids, looked up by keyed hash in the identity
/// store. Until that lookup is wired here, no such identifier resolves: their decisions are
/// denied as `denied.unknown_subject`, which fails closed.
pub fn resolve_identities(
    _state: &AppState,
    identities: &[(usize, IdentityKind, &str)],
) -> Vec<Option<SubjectId>> {
    vec![None; identities.len()]
}
