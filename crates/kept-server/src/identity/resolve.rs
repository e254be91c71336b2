//! Which subject a caller means. Every endpoint that names a subject by user id, internal id,
//! email, phone or anonymous id resolves it through `resolve_subjects`, the one place that knows
//! how: ids are taken as they are, user ids are read from the index's directory (kept current
//! by every write, never a database query per item), and email, phone and anonymous ids are
//! looked up by keyed hash, as the collection API stored them, in one query per request.

use crate::http::error::ApiError;
use crate::identity::Identities;
use crate::index::IndexHandle;
use kept_core::SubjectId;
use kept_core::identity::{IdentifierHash, IdentifierKind, normalize};
use kept_store::Store;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::HashMap;
use utoipa::ToSchema;

/// What resolving reads: the index's directory, the store, and the identity keys and default
/// country identifiers were stored with.
#[derive(Debug, Clone, Copy)]
pub struct Lookup<'a> {
    pub store: &'a dyn Store,
    pub index: &'a IndexHandle,
    pub identities: &'a Identities,
}

/// How a request names a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectName<'a> {
    /// Kept's internal id.
    Id(u32),
    UserId(Cow<'a, str>),
    Email(Cow<'a, str>),
    Phone(Cow<'a, str>),
    AnonymousId(Cow<'a, str>),
}

/// Who a call is about (a decision, a contact, a data subject request): exactly one
/// identifier.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubjectInput {
    /// The company's own user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "u-1042")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<String>,
    /// Kept's internal subject id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
}

impl SubjectInput {
    /// The one identifier it holds, or the error naming `field`.
    pub fn reference(&self, field: &str) -> Result<SubjectName<'_>, ApiError> {
        check_one_identifier(
            field,
            [
                ("user_id", self.user_id.as_deref()),
                ("email", self.email.as_deref()),
                ("phone", self.phone.as_deref()),
                ("anonymous_id", self.anonymous_id.as_deref()),
            ],
            self.id,
        )?;
        fn given(v: &Option<String>) -> Option<Cow<'_, str>> {
            v.as_deref().map(Cow::Borrowed)
        }
        Ok(if let Some(v) = given(&self.user_id) {
            SubjectName::UserId(v)
        } else if let Some(v) = given(&self.email) {
            SubjectName::Email(v)
        } else if let Some(v) = given(&self.phone) {
            SubjectName::Phone(v)
        } else if let Some(v) = given(&self.anonymous_id) {
            SubjectName::AnonymousId(v)
        } else {
            SubjectName::Id(self.id.unwrap_or_default())
        })
    }
}

/// Checks that exactly one identifier names a subject in the object at `field` (its
/// `user_id`, `email`, `phone`, `anonymous_id` as given, then its `id`) and that none given is
/// empty: the 422 naming the field otherwise. Every API that takes a subject object checks it
/// here, then builds its `SubjectName` from the one given.
pub fn check_one_identifier(
    field: &str,
    given: [(&'static str, Option<&str>); 4],
    id: Option<u32>,
) -> Result<(), ApiError> {
    let count = given.iter().filter(|(_, v)| v.is_some()).count() + usize::from(id.is_some());
    if count != 1 {
        return Err(ApiError::invalid_field(
            field,
            format!(
                "`{field}` must hold exactly one of `user_id`, `email`, `phone`, \
                 `anonymous_id`, `id` (it holds {count})"
            ),
        ));
    }
    for (kind, value) in given {
        if value.is_some_and(|v| v.trim().is_empty()) {
            return Err(ApiError::invalid_field(
                format!("{field}.{kind}"),
                format!("`{field}.{kind}` is empty"),
            ));
        }
    }
    Ok(())
}

impl SubjectName<'_> {
    /// The kind of identifier, as the API names it.
    pub fn kind(&self) -> &'static str {
        match self {
            SubjectName::Id(_) => "id",
            SubjectName::UserId(_) => "user_id",
            SubjectName::Email(_) => "email",
            SubjectName::Phone(_) => "phone",
            SubjectName::AnonymousId(_) => "anonymous_id",
        }
    }
}

/// The subject each reference names, in order; `None` for a subject Kept does not know (its
/// decisions are `denied.unknown_subject`). Ids and user ids are read from the directory under
/// one lock for the whole list; email addresses, phone numbers and anonymous ids are looked up
/// together, by keyed hash, in one store query for the whole list.
pub async fn resolve_subjects(
    state: Lookup<'_>,
    refs: &[SubjectName<'_>],
) -> Result<Vec<Option<SubjectId>>, ApiError> {
    let mut out = Vec::with_capacity(refs.len());
    let mut identities = Vec::new();
    {
        let directory = state.index.directory()?;
        for (i, r) in refs.iter().enumerate() {
            out.push(match r {
                // A subject merged away is its survivor now, as its identifiers are.
                SubjectName::Id(id) => Some(directory.survivor(SubjectId(*id))),
                SubjectName::UserId(u) => directory.subject(u),
                SubjectName::Email(v) => {
                    identities.push((i, IdentifierKind::Email, v.as_ref()));
                    None
                }
                SubjectName::Phone(v) => {
                    identities.push((i, IdentifierKind::Phone, v.as_ref()));
                    None
                }
                SubjectName::AnonymousId(v) => {
                    identities.push((i, IdentifierKind::AnonymousId, v.as_ref()));
                    None
                }
            });
        }
    }
    if !identities.is_empty() {
        let found = resolve_identities(state, &identities).await?;
        for ((i, _, _), subject) in identities.iter().zip(found) {
            if let Some(slot) = out.get_mut(*i) {
                *slot = subject;
            }
        }
    }
    Ok(out)
}

/// Email addresses, phone numbers and anonymous ids, normalised and hashed with the identity
/// keys as the collection API stores them, then looked up in one query. A malformed one
/// (an email without `@`) names nobody.
async fn resolve_identities(
    state: Lookup<'_>,
    identities: &[(usize, IdentifierKind, &str)],
) -> Result<Vec<Option<SubjectId>>, ApiError> {
    let store = state.store;
    let keys = state.identities.keys(store).await?;
    let country = state.identities.config().default_country.as_deref();
    let hashes: Vec<Option<IdentifierHash>> = identities
        .iter()
        .map(|(_, kind, raw)| {
            normalize(*kind, raw, country)
                .ok()
                .map(|value| keys.identifier_hash(*kind, &value))
        })
        .collect();
    let wanted: Vec<IdentifierHash> = hashes.iter().flatten().copied().collect();
    let holders: HashMap<IdentifierHash, SubjectId> =
        store.find_identities(&wanted).await?.into_iter().collect();
    Ok(hashes
        .iter()
        .map(|h| h.and_then(|h| holders.get(&h).copied()))
        .collect())
}
