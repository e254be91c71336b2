//! Resolving each message's identifiers (user id, anonymous id, email, phone) to one subject:
//! from the cache when every identifier is known and nothing changes, otherwise in a round that
//! reads the store, plans with `kept_core::identity::resolve` (guard rails included), seals the
//! new identifiers and writes everything in one transaction, retried when another writer took
//! an identifier first.

use crate::http::error::ApiError;
use crate::identity::Identities;
use crate::identity::cache::Facts;
use crate::index::IndexHandle;
use kept_core::collection::{IDENTIFIER_TRAITS, Location, Message, MessageKind, field_path};
use kept_core::identity::{
    Caps, Claim, DataKey, IdentifierHash, IdentifierKind, IdentityKeys, Overreach, OwnerFacts,
    PlannedSubject, Refusal, Speaker, check_speaker, identifier_aad, normalize, resolve,
    token_covers,
};
use kept_core::manifest::Manifest;
use kept_core::subject::Subject;
use kept_core::{SubjectId, UnixMillis};
use kept_store::collection::{IdentityWrite, NewIdentity, NewLocation, NewMerge};
use kept_store::{NewSubject, Store, StoreError};
use rand::RngCore;
use std::collections::{HashMap, HashSet};

/// What a resolution round reads: the store, the index (its rules and directory) and the
/// manifest.
#[derive(Debug, Clone, Copy)]
pub struct Reads<'a> {
    pub store: &'a dyn Store,
    pub index: &'a IndexHandle,
    pub manifest: &'a Manifest,
}

/// Resolution rounds tried before a request fails (each retry follows a concurrent write).
const ATTEMPTS: usize = 4;

/// One identifier of a message, normalised and hashed.
#[derive(Debug, Clone)]
pub struct Identifier {
    pub kind: IdentifierKind,
    pub value: String,
    pub hash: IdentifierHash,
}

/// A message's identifiers, as resolution reads them.
#[derive(Debug, Clone)]
pub struct MessageIds {
    /// `userId` first (it decides), then `anonymousId`, email and phone.
    pub ids: Vec<Identifier>,
    /// An `alias` call's `previousId`, as a user id and as an anonymous id: whichever is held.
    pub previous: Option<(Identifier, Identifier)>,
    pub location: Location,
    /// An `alias`: merging two known people is what was asked.
    pub explicit: bool,
    /// Who the message speaks for (its key's kind and identity token).
    pub speaker: Speaker,
    /// A public key's message that would change a known customer's traits: only allowed with
    /// an identity token. Names the field that does it.
    pub guarded: Option<&'static str>,
    /// The consent choices a public key's message carries: refused for a known customer
    /// without an identity token when they would change what the ledger says.
    pub consent: Option<ConsentAsk>,
    /// Where the message is, for errors: its path prefix (`batch[3]`) and index.
    pub base: String,
    pub index: Option<usize>,
}

/// Who a message speaks for, and what it says that a public key may say of a known customer
/// only with an identity token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voice {
    pub speaker: Speaker,
    /// The field that would change a known customer's traits (`traits`), if any.
    pub guarded: Option<&'static str>,
    pub consent: Option<ConsentAsk>,
}

/// The consent a message carries, as purposes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentAsk {
    pub purposes: std::collections::BTreeMap<String, bool>,
    pub gpc: bool,
}

impl MessageIds {
    /// Whether this message's identity token speaks for the one subject that holds every
    /// identifier the message names: it does when one of them is the user id it was minted for.
    fn token_for_holder(&self) -> bool {
        self.speaker == Speaker::Token
            && self
                .ids
                .first()
                .is_some_and(|i| i.kind == IdentifierKind::UserId)
    }

    /// Whether a public key's message, without an identity token, names a user id: held by a
    /// known customer, it would speak as them (`Overreach::SpeakAsKnown`).
    fn names_user_id(&self) -> bool {
        self.speaker != Speaker::Server
            && self
                .ids
                .first()
                .is_some_and(|i| i.kind == IdentifierKind::UserId)
    }

    fn email_or_phone(&self) -> impl Iterator<Item = &Identifier> {
        self.ids
            .iter()
            .filter(|i| matches!(i.kind, IdentifierKind::Email | IdentifierKind::Phone))
    }

    /// The 403 for a public key's message that did what only a server key, or a public key
    /// with an identity token, may do.
    fn refused(&self, overreach: Overreach) -> ApiError {
        let how = "send `context.kept.userHash`, the hex HMAC-SHA256 of the `userId` under the \
                   identity secret, minted by your backend (kept.js: `kept.identify(userId, \
                   traits, { userHash })`), or send the call from your backend with a `server` key";
        let (field, message) = match overreach {
            Overreach::AttachToKnown(kind) => (
                match kind {
                    IdentifierKind::UserId => "userId".to_owned(),
                    IdentifierKind::AnonymousId => "anonymousId".to_owned(),
                    other => format!("traits.{}", other.as_str()),
                },
                format!(
                    "a public write key may not attach an identifier (`{kind}`) to a known customer (one with a \
                     user id or a verified email or phone) without an identity token: {how}"
                ),
            ),
            Overreach::MergeIntoKnown => (
                "anonymousId".to_owned(),
                format!(
                    "a public write key may not merge another profile into a known customer \
                     without an identity token: {how}"
                ),
            ),
            Overreach::SpeakAsKnown => (
                "userId".to_owned(),
                format!(
                    "a public write key may not send calls as a known customer (their `userId`) \
                     without an identity token: {how}"
                ),
            ),
            Overreach::MergeKnown => (
                if self.explicit {
                    "previousId"
                } else {
                    "anonymousId"
                }
                .to_owned(),
                "a public write key may not merge a known customer (one with a user id or a \
                 verified email or phone) into another profile, with or without an identity \
                 token: send this call from your backend with a `server` key"
                    .to_owned(),
            ),
        };
        ApiError::WriteKeyRefused {
            code: overreach.code(),
            field: field_path(&self.base, &field),
            index: self.index,
            message,
        }
    }

    /// The 403 for a public key's message that would change a known customer's profile or
    /// consent without a token.
    pub(crate) fn guard_refused(&self, field: &str) -> ApiError {
        ApiError::WriteKeyRefused {
            code: Overreach::AttachToKnown(IdentifierKind::UserId).code(),
            field: field_path(&self.base, field),
            index: self.index,
            message: format!(
                "a public write key may not change a known customer's `{field}` without an \
                 identity token: send `context.kept.userHash`, the hex HMAC-SHA256 of the \
                 `userId` under the identity secret, minted by your backend (kept.js: \
                 `kept.identify(userId, traits, {{ userHash }})`), or send the call from your \
                 backend with a `server` key"
            ),
        }
    }
}

/// Normalises and hashes a message's identifiers; `base` prefixes error paths (`batch[3]`).
pub fn identifiers(
    keys: &IdentityKeys,
    message: &Message,
    default_country: Option<&str>,
    base: &str,
    index: Option<usize>,
    voice: Voice,
) -> Result<MessageIds, ApiError> {
    let Voice {
        speaker,
        guarded,
        consent,
    } = voice;
    let make = |kind: IdentifierKind, raw: &str, field: &str| -> Result<Identifier, ApiError> {
        let value = normalize(kind, raw, default_country).map_err(|e| ApiError::InvalidEvent {
            field: field_path(base, field),
            index,
            message: e.to_string(),
        })?;
        Ok(Identifier {
            kind,
            hash: keys.identifier_hash(kind, &value),
            value,
        })
    };
    let mut ids = Vec::with_capacity(4);
    if let Some(u) = &message.user_id {
        ids.push(make(IdentifierKind::UserId, u, "userId")?);
    }
    if let Some(a) = &message.anonymous_id {
        ids.push(make(IdentifierKind::AnonymousId, a, "anonymousId")?);
    }
    let person = message.person_traits();
    for (key, kind) in IDENTIFIER_TRAITS {
        // Named where the client put it, so a rejection points at the field it sent.
        let field = if message.kind == MessageKind::Identify
            && message.traits.get(key).is_some_and(|v| !v.is_null())
        {
            format!("traits.{key}")
        } else {
            format!("context.traits.{key}")
        };
        match person.get(key) {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(s)) if s.trim().is_empty() => {}
            Some(serde_json::Value::String(s)) => {
                ids.push(make(kind, s, &field)?);
            }
            Some(serde_json::Value::Number(n)) if kind == IdentifierKind::Phone => {
                ids.push(make(kind, &n.to_string(), &field)?);
            }
            Some(_) => {
                return Err(ApiError::InvalidEvent {
                    field: field_path(base, &field),
                    index,
                    message: format!("`{key}` must be a string"),
                });
            }
        }
    }
    let previous = match &message.previous_id {
        Some(p) => Some((
            make(IdentifierKind::UserId, p, "previousId")?,
            make(IdentifierKind::AnonymousId, p, "previousId")?,
        )),
        None => None,
    };
    Ok(MessageIds {
        ids,
        previous,
        location: kept_core::collection::location(
            &message.context.subset(&["location", "timezone"]),
        ),
        explicit: message.kind == MessageKind::Alias,
        speaker,
        guarded: guarded.filter(|_| speaker != Speaker::Server),
        consent: consent.filter(|_| speaker != Speaker::Server),
        base: base.to_owned(),
        index,
    })
}

/// Where a request's messages landed.
#[derive(Debug, Default)]
pub struct Resolution {
    /// One per message, in order.
    pub subjects: Vec<SubjectId>,
    /// One per message: whether it may change its subject's consent (a server key's, one for
    /// a subject not known, or one whose identity token speaks for the subject).
    pub may_change_consent: Vec<bool>,
    pub facts: HashMap<SubjectId, Facts>,
    /// Subjects created, for the index.
    pub created: Vec<Subject>,
    /// Existing subjects given a user id or a location, for the index.
    pub updated: Vec<SubjectId>,
    /// `(merged, survivor)`.
    pub merges: Vec<(SubjectId, SubjectId)>,
    /// One per merge: the message whose resolution made it.
    pub merged_by: Vec<usize>,
    /// One per message: its subject when it was resolved, before later messages of the
    /// request merged it away (`subjects` names where it ends up).
    pub origins: Vec<SubjectId>,
    /// The messages refused (by their position in what was resolved), with why. Every other
    /// field speaks only of the messages not refused, in order: `subjects[0]` is the first
    /// message accepted, and `merged_by` counts accepted messages.
    pub rejected: Vec<(usize, ApiError)>,
}

impl Resolution {
    pub fn facts_of(&self, s: SubjectId) -> Facts {
        self.facts.get(&s).cloned().unwrap_or_default()
    }
}

/// Resolves every message of a request.
pub async fn resolve_all(
    state: Reads<'_>,
    identities: &Identities,
    keys: &IdentityKeys,
    messages: &[&MessageIds],
    key_id: &str,
    now: UnixMillis,
) -> Result<Resolution, ApiError> {
    let caps = identities.config().caps;
    if let Some(outcome) = from_cache(identities, messages, &caps) {
        return Ok(outcome);
    }
    let _round = identities.resolving.lock().await;
    let mut last = None;
    for _ in 0..ATTEMPTS {
        match round(state, identities, keys, messages, &caps, key_id, now).await {
            Ok(outcome) => return Ok(outcome),
            Err(ApiError::Store(e @ StoreError::Conflict { .. })) => {
                tracing::debug!(error = %e, "identity resolution raced another writer; resolving again");
                if let Ok(mut cache) = identities.cache.lock() {
                    cache.forget(&all_hashes(messages));
                }
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::Store(last.unwrap_or_else(|| {
        StoreError::Unavailable("identity resolution did not settle".into())
    })))
}

fn all_hashes(messages: &[&MessageIds]) -> Vec<IdentifierHash> {
    let mut out = Vec::new();
    for m in messages {
        out.extend(m.ids.iter().map(|i| i.hash));
        if let Some((u, a)) = &m.previous {
            out.push(u.hash);
            out.push(a.hash);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The claims of one message, holders looked up by `holder`. An alias's previous id is a user
/// id if someone holds it as one, else an anonymous id.
fn claims_of(
    m: &MessageIds,
    mut holder: impl FnMut(&IdentifierHash) -> Option<PlannedSubject>,
) -> Vec<Claim> {
    let mut claims: Vec<Claim> = Vec::with_capacity(m.ids.len() + 1);
    // The message's own user id comes first: it is the one that decides.
    let user = m.ids.first().filter(|i| i.kind == IdentifierKind::UserId);
    let mut ordered: Vec<&Identifier> = user.into_iter().collect();
    if let Some((as_user, as_anon)) = &m.previous {
        ordered.push(if holder(&as_user.hash).is_some() {
            as_user
        } else {
            as_anon
        });
    }
    ordered.extend(m.ids.iter().skip(usize::from(user.is_some())));
    for i in ordered {
        claims.push(Claim {
            kind: i.kind,
            hash: i.hash,
            owner: holder(&i.hash),
        });
    }
    claims
}

fn identifier_value<'a>(m: &'a MessageIds, hash: &IdentifierHash) -> Option<&'a Identifier> {
    m.ids.iter().find(|i| i.hash == *hash).or_else(|| {
        m.previous
            .as_ref()
            .and_then(|(u, a)| [u, a].into_iter().find(|i| i.hash == *hash))
    })
}

fn report(refusals: &[Refusal], quiet: bool) {
    for r in refusals {
        metrics::counter!(
            super::REFUSALS,
            "kind" => r.kind.as_str(),
            "reason" => r.reason.as_str()
        )
        .increment(1);
        let holder = match r.holder {
            Some(PlannedSubject::Existing(id)) => Some(id.0),
            _ => None,
        };
        if quiet {
            tracing::debug!(
                kind = r.kind.as_str(),
                reason = r.reason.as_str(),
                holder,
                "identifier not merged"
            );
        } else {
            tracing::info!(
                kind = r.kind.as_str(),
                reason = r.reason.as_str(),
                holder,
                "identifier not merged"
            );
        }
    }
}

/// Every message resolved from the cache, when all its identifiers are known there and
/// resolution would change nothing.
fn from_cache(
    identities: &Identities,
    messages: &[&MessageIds],
    caps: &Caps,
) -> Option<Resolution> {
    let cache = identities.cache.lock().ok()?;
    let mut outcome = Resolution::default();
    let mut refused = Vec::new();
    for m in messages {
        // What a server key or a token says of an email or phone verifies it: a round does.
        if m.speaker.verifies()
            && m.email_or_phone()
                .any(|i| !cache.verified.contains(&i.hash))
        {
            return None;
        }
        // The common case: every identifier is already held by one subject, which then
        // resolution would leave as it is.
        let mut held = m
            .ids
            .iter()
            .map(|i| cache.holder(&i.hash))
            .chain(m.previous.iter().map(|_| None));
        if let Some(Some(first)) = held.next()
            && held.all(|h| h == Some(first))
            && let Some(facts) = cache.facts.get(&first)
            && !(facts.country.is_none() && m.location.country.is_some())
            && !(facts.time_zone.is_none() && m.location.time_zone.is_some())
            && !((m.guarded.is_some() || m.consent.is_some() || m.names_user_id())
                && facts.known()
                && !m.token_for_holder())
        {
            outcome
                .may_change_consent
                .push(m.speaker == Speaker::Server || !facts.known() || m.token_for_holder());
            outcome.facts.insert(first, facts.clone());
            outcome.subjects.push(first);
            continue;
        }
        let mut missing = false;
        let claims = claims_of(m, |h| match cache.holder(h) {
            Some(s) => Some(PlannedSubject::Existing(s)),
            None => {
                missing = true;
                None
            }
        });
        if missing {
            return None;
        }
        let mut owners = HashMap::new();
        for c in &claims {
            if let Some(PlannedSubject::Existing(s)) = c.owner {
                owners.insert(PlannedSubject::Existing(s), cache.facts.get(&s)?.owner());
            }
        }
        let plan = resolve(&claims, &owners, m.explicit, caps);
        let Some(PlannedSubject::Existing(subject)) = plan.subject else {
            return None;
        };
        let plan_subject = PlannedSubject::Existing(subject);
        if check_speaker(&claims, &plan, &owners, m.speaker).is_err() {
            return None;
        }
        let facts = cache.facts.get(&subject)?;
        let relocate = facts.country.is_none() && m.location.country.is_some()
            || facts.time_zone.is_none() && m.location.time_zone.is_some();
        if !plan.attach.is_empty()
            || !plan.merge.is_empty()
            || relocate
            || ((m.guarded.is_some() || m.consent.is_some() || m.names_user_id())
                && facts.known()
                && !(m.speaker == Speaker::Token && token_covers(&claims, plan_subject)))
        {
            return None;
        }
        refused.extend(plan.refused);
        outcome.may_change_consent.push(
            m.speaker == Speaker::Server
                || !facts.known()
                || (m.speaker == Speaker::Token && token_covers(&claims, plan_subject)),
        );
        outcome.facts.insert(subject, facts.clone());
        outcome.subjects.push(subject);
    }
    drop(cache);
    report(&refused, true);
    outcome.origins = outcome.subjects.clone();
    Some(outcome)
}

/// The consent of the subjects a round has planned for, as the ledger states it and as the
/// round's earlier messages changed it: what a later message's consent is compared with, as
/// it would be had the earlier ones been sent alone before it.
#[derive(Default)]
struct Consents(HashMap<PlannedSubject, kept_core::collection::CurrentConsent>);

impl Consents {
    async fn current(
        &mut self,
        state: Reads<'_>,
        s: PlannedSubject,
    ) -> Result<&mut kept_core::collection::CurrentConsent, ApiError> {
        use std::collections::hash_map::Entry;
        match self.0.entry(s) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(e) => {
                let current = match s {
                    PlannedSubject::Existing(id) => {
                        crate::subjects::consent::ledger_state(state.store, id).await?
                    }
                    PlannedSubject::New(_) => kept_core::collection::CurrentConsent::default(),
                };
                Ok(e.insert(current))
            }
        }
    }

    /// After `from` was merged into `into`: what the survivor has not said, the merged one's
    /// choice says (as the merge carries it over).
    async fn merge(
        &mut self,
        state: Reads<'_>,
        from: PlannedSubject,
        into: PlannedSubject,
    ) -> Result<(), ApiError> {
        let theirs = self.current(state, from).await?.clone();
        let ours = self.current(state, into).await?;
        for (purpose, action) in theirs.purposes {
            ours.purposes.entry(purpose).or_insert(action);
        }
        if ours.gpc.is_none() {
            ours.gpc = theirs.gpc;
        }
        Ok(())
    }
}

/// Why a public key's message may not be applied as planned, if it may not: a merge or an
/// identifier it may not make (`check_speaker`), or, for a known customer its token does not
/// speak for, traits, a consent change or calls under their user id.
async fn refusal(
    state: Reads<'_>,
    m: &MessageIds,
    claims: &[Claim],
    plan: &kept_core::identity::Resolution,
    owners: &HashMap<PlannedSubject, OwnerFacts>,
    facts: &HashMap<PlannedSubject, Facts>,
    consents: &mut Consents,
) -> Result<Option<ApiError>, ApiError> {
    if let Err(overreach) = check_speaker(claims, plan, owners, m.speaker) {
        return Ok(Some(m.refused(overreach)));
    }
    let Some(s) = plan.subject else {
        return Ok(None);
    };
    if !owners.get(&s).is_some_and(OwnerFacts::known)
        || (m.speaker == Speaker::Token && token_covers(claims, s))
    {
        return Ok(None);
    }
    if let Some(field) = m.guarded {
        return Ok(Some(m.guard_refused(field)));
    }
    if let Some(ask) = &m.consent {
        let f = facts.get(&s).cloned().unwrap_or_default();
        let current = consents.current(state, s).await?;
        let changes = crate::subjects::consent::consent_changes_for(
            state.index,
            state.manifest,
            current,
            f.country.as_deref(),
            f.region.as_deref(),
            &ask.purposes,
            ask.gpc,
        )?;
        if changes.iter().any(|c| !c.gpc) {
            return Ok(Some(m.guard_refused("context.consent.categoryPreferences")));
        }
    }
    if m.names_user_id()
        && claims
            .iter()
            .any(|c| c.kind == IdentifierKind::UserId && c.owner == Some(s))
    {
        return Ok(Some(m.refused(Overreach::SpeakAsKnown)));
    }
    Ok(None)
}

/// One resolution round against the store: read what is known of the messages' identifiers,
/// plan every message in order, seal the new identifiers, write it all in one transaction,
/// and remember what is now true.
async fn round(
    state: Reads<'_>,
    identities: &Identities,
    keys: &IdentityKeys,
    messages: &[&MessageIds],
    caps: &Caps,
    key_id: &str,
    now: UnixMillis,
) -> Result<Resolution, ApiError> {
    let known = read_known(state.store, messages).await?;
    let mut plan = Planning::new(known, key_id, now, messages.len());
    for (position, m) in messages.iter().enumerate() {
        plan.message(state, position, m, caps, now).await?;
    }
    report(&plan.refused, false);
    let data_keys = seal_identifiers(state.store, identities, keys, &mut plan).await?;
    let (outcome, ids) = write_plan(state.store, &mut plan).await?;
    remember(identities, &plan, &outcome, data_keys, &ids)?;
    count_merges(messages, &outcome);
    Ok(outcome)
}

/// What the store knows of a round's identifiers before it plans: the subject holding each,
/// those subjects' facts, and which of the identifiers its messages verify are verified.
struct Known {
    holders: HashMap<IdentifierHash, SubjectId>,
    facts: HashMap<PlannedSubject, Facts>,
    verified: HashSet<IdentifierHash>,
}

/// Reads who holds the messages' identifiers (by hash, and user ids also by the subjects'
/// column), the holders' facts, and which held identifiers are verified.
async fn read_known(store: &dyn Store, messages: &[&MessageIds]) -> Result<Known, ApiError> {
    let hashes = all_hashes(messages);
    let mut holders: HashMap<IdentifierHash, SubjectId> =
        store.find_identities(&hashes).await?.into_iter().collect();
    // Subjects made outside collection know their user id only by its column.
    let mut by_column: HashMap<String, IdentifierHash> = HashMap::new();
    for m in messages {
        let user_ids = m
            .ids
            .iter()
            .filter(|i| i.kind == IdentifierKind::UserId)
            .chain(m.previous.as_ref().map(|(u, _)| u));
        for u in user_ids {
            if !holders.contains_key(&u.hash) {
                by_column.insert(u.value.clone(), u.hash);
            }
        }
    }
    if !by_column.is_empty() {
        let user_ids: Vec<String> = by_column.keys().cloned().collect();
        let found = store.subjects_by_user_ids(&user_ids).await?;
        // A subject merged away holds nothing: its user id names the subject it went to.
        let ids: Vec<SubjectId> = found.iter().map(|(_, s)| *s).collect();
        let survivors: HashMap<SubjectId, SubjectId> =
            store.survivors(&ids).await?.into_iter().collect();
        for (user_id, subject) in found {
            if let Some(hash) = by_column.get(&user_id) {
                holders.insert(*hash, survivors.get(&subject).copied().unwrap_or(subject));
            }
        }
    }
    let mut known: Vec<SubjectId> = holders.values().copied().collect();
    known.sort();
    known.dedup();
    let mut facts: HashMap<PlannedSubject, Facts> = HashMap::new();
    for f in store.identity_facts(&known).await? {
        facts.insert(
            PlannedSubject::Existing(f.subject),
            Facts {
                identified: f.identified,
                verified: f.verified,
                counts: f.counts,
                country: f.country,
                region: f.region,
                time_zone: f.time_zone,
            },
        );
    }
    // Which identifiers held already are verified, for messages that verify what they name.
    let to_check: Vec<IdentifierHash> = messages
        .iter()
        .filter(|m| m.speaker.verifies())
        .flat_map(|m| m.email_or_phone().map(|i| i.hash))
        .filter(|h| holders.contains_key(h))
        .collect();
    let verified: HashSet<IdentifierHash> = if to_check.is_empty() {
        HashSet::new()
    } else {
        store
            .verified_identities(&to_check)
            .await?
            .into_iter()
            .collect()
    };
    Ok(Known {
        holders,
        facts,
        verified,
    })
}

/// A round's plan, built message by message, each seeing what the earlier ones did.
struct Planning {
    /// Who holds each identifier, as the messages planned so far leave it.
    view: HashMap<IdentifierHash, PlannedSubject>,
    facts: HashMap<PlannedSubject, Facts>,
    verified: HashSet<IdentifierHash>,
    /// What the round writes in its one transaction.
    write: IdentityWrite,
    /// Identifiers to attach: the subject, the identifier, whether it is verified.
    intents: Vec<(PlannedSubject, Identifier, bool)>,
    /// Each accepted message's subject; follows later merges.
    placed: Vec<PlannedSubject>,
    /// Each accepted message's subject as it was resolved.
    origins: Vec<PlannedSubject>,
    may_change: Vec<bool>,
    merges: Vec<(PlannedSubject, PlannedSubject)>,
    merged_by: Vec<usize>,
    relocated: HashSet<SubjectId>,
    renamed: HashSet<SubjectId>,
    refused: Vec<Refusal>,
    rejected: Vec<(usize, ApiError)>,
    consents: Consents,
}

impl Planning {
    fn new(known: Known, key_id: &str, now: UnixMillis, messages: usize) -> Planning {
        Planning {
            view: known
                .holders
                .iter()
                .map(|(h, s)| (*h, PlannedSubject::Existing(*s)))
                .collect(),
            facts: known.facts,
            verified: known.verified,
            write: IdentityWrite {
                at: now,
                key_id: Some(key_id.to_owned()),
                ..IdentityWrite::default()
            },
            intents: Vec::new(),
            placed: Vec::with_capacity(messages),
            origins: Vec::with_capacity(messages),
            may_change: Vec::with_capacity(messages),
            merges: Vec::new(),
            merged_by: Vec::new(),
            relocated: HashSet::new(),
            renamed: HashSet::new(),
            refused: Vec::new(),
            rejected: Vec::new(),
            consents: Consents::default(),
        }
    }

    /// Plans one message: refused alone, or placed on a subject (a new one if it names none
    /// known) with its merges, identifiers, verifications, location and consent.
    async fn message(
        &mut self,
        state: Reads<'_>,
        position: usize,
        m: &MessageIds,
        caps: &Caps,
        now: UnixMillis,
    ) -> Result<(), ApiError> {
        let claims = claims_of(m, |h| self.view.get(h).copied());
        let owners: HashMap<PlannedSubject, OwnerFacts> =
            self.facts.iter().map(|(r, f)| (*r, f.owner())).collect();
        let plan = resolve(&claims, &owners, m.explicit, caps);
        // A message refused here is rejected alone, before it changes anything the later
        // ones see: as if it had never been sent.
        if let Some(error) = refusal(
            state,
            m,
            &claims,
            &plan,
            &owners,
            &self.facts,
            &mut self.consents,
        )
        .await?
        {
            self.rejected.push((position, error));
            return Ok(());
        }
        let accepted = self.placed.len();
        self.may_change.push(
            m.speaker == Speaker::Server
                || !plan.subject.is_some_and(|s| {
                    owners.get(&s).is_some_and(OwnerFacts::known)
                        && !(m.speaker == Speaker::Token && token_covers(&claims, s))
                }),
        );
        self.refused.extend(plan.refused.iter().copied());
        let subject = match plan.subject {
            Some(s) => s,
            None => self.new_subject(m, now),
        };
        for from in &plan.merge {
            self.merge(state, m, *from, subject, accepted).await?;
        }
        for (kind, hash) in &plan.attach {
            self.attach(m, *kind, hash, subject);
        }
        self.verify_named(m, subject);
        self.relocate(m, subject);
        self.carry_consent(state, m, subject).await?;
        self.placed.push(subject);
        self.origins.push(subject);
        Ok(())
    }

    /// A new subject for a message that names none known, where the message says it is.
    fn new_subject(&mut self, m: &MessageIds, now: UnixMillis) -> PlannedSubject {
        let n = u32::try_from(self.write.new_subjects.len()).unwrap_or(u32::MAX);
        self.write.new_subjects.push(NewSubject {
            user_id: None,
            country: m.location.country.clone(),
            region: m.location.region.clone(),
            time_zone: m.location.time_zone.clone(),
            created_at: now,
        });
        self.facts.insert(
            PlannedSubject::New(n),
            Facts {
                country: m.location.country.clone(),
                region: m.location.region.clone(),
                time_zone: m.location.time_zone.clone(),
                ..Facts::default()
            },
        );
        PlannedSubject::New(n)
    }

    /// Merges `from` into `subject`: its facts, the identifiers it held, the messages placed
    /// on it and its consent go to the survivor.
    async fn merge(
        &mut self,
        state: Reads<'_>,
        m: &MessageIds,
        from: PlannedSubject,
        subject: PlannedSubject,
        accepted: usize,
    ) -> Result<(), ApiError> {
        let from_facts = self.facts.remove(&from).unwrap_or_default();
        let into = self.facts.entry(subject).or_default();
        into.counts = into.counts.plus(&from_facts.counts);
        into.identified |= from_facts.identified;
        into.verified |= from_facts.verified;
        if into.country.is_none() {
            into.country = from_facts.country;
            into.region = from_facts.region;
        }
        if into.time_zone.is_none() {
            into.time_zone = from_facts.time_zone;
        }
        for holder in self.view.values_mut() {
            if *holder == from {
                *holder = subject;
            }
        }
        for p in self.placed.iter_mut() {
            if *p == from {
                *p = subject;
            }
        }
        self.write.merges.push(NewMerge {
            from,
            into: subject,
            reason: if m.explicit { "alias" } else { "identify" }.to_owned(),
        });
        self.merges.push((from, subject));
        self.merged_by.push(accepted);
        self.consents.merge(state, from, subject).await
    }

    /// Attaches the identifier `hash` the message names to `subject` (a user id also names
    /// the subject).
    fn attach(
        &mut self,
        m: &MessageIds,
        kind: IdentifierKind,
        hash: &IdentifierHash,
        subject: PlannedSubject,
    ) {
        let Some(identifier) = identifier_value(m, hash) else {
            return;
        };
        self.view.insert(*hash, subject);
        let f = self.facts.entry(subject).or_default();
        f.counts.add(kind, 1);
        if m.speaker.verifies() && matches!(kind, IdentifierKind::Email | IdentifierKind::Phone) {
            f.verified = true;
            self.verified.insert(*hash);
        }
        if kind == IdentifierKind::UserId {
            f.identified = true;
            match subject {
                PlannedSubject::New(n) => {
                    if let Some(s) = usize::try_from(n)
                        .ok()
                        .and_then(|n| self.write.new_subjects.get_mut(n))
                    {
                        s.user_id.get_or_insert_with(|| identifier.value.clone());
                    }
                }
                PlannedSubject::Existing(id) => {
                    if self.renamed.insert(id) {
                        self.write.user_ids.push((id, identifier.value.clone()));
                    }
                }
            }
        }
        self.intents
            .push((subject, identifier.clone(), m.speaker.verifies()));
    }

    /// What a server key or a token names again of the subject's own becomes verified.
    fn verify_named(&mut self, m: &MessageIds, subject: PlannedSubject) {
        if !m.speaker.verifies() {
            return;
        }
        for i in m.email_or_phone() {
            if self.view.get(&i.hash) == Some(&subject) && self.verified.insert(i.hash) {
                self.write.verify.push(i.hash);
                self.facts.entry(subject).or_default().verified = true;
            }
        }
    }

    /// Where the message says it is, for a known subject with no country or time zone yet.
    /// A browser does not move a known customer (their regime would follow).
    fn relocate(&mut self, m: &MessageIds, subject: PlannedSubject) {
        let may_relocate =
            m.speaker.verifies() || !self.facts.get(&subject).is_some_and(Facts::known);
        let PlannedSubject::Existing(id) = subject else {
            return;
        };
        if !may_relocate {
            return;
        }
        let f = self.facts.entry(subject).or_default();
        let country = f.country.is_none() && m.location.country.is_some();
        let zone = f.time_zone.is_none() && m.location.time_zone.is_some();
        if (country || zone) && self.relocated.insert(id) {
            if country {
                f.country = m.location.country.clone();
                f.region = m.location.region.clone();
            }
            if zone {
                f.time_zone = m.location.time_zone.clone();
            }
            self.write.locations.push(NewLocation {
                subject: id,
                country: m.location.country.clone().filter(|_| country),
                region: m.location.region.clone().filter(|_| country),
                time_zone: m.location.time_zone.clone().filter(|_| zone),
            });
        }
    }

    /// What this message's consent changes, the next ones compare with.
    async fn carry_consent(
        &mut self,
        state: Reads<'_>,
        m: &MessageIds,
        subject: PlannedSubject,
    ) -> Result<(), ApiError> {
        let Some(ask) = &m.consent else {
            return Ok(());
        };
        let f = self.facts.get(&subject).cloned().unwrap_or_default();
        let current = self.consents.current(state, subject).await?;
        let changes = crate::subjects::consent::consent_changes_for(
            state.index,
            state.manifest,
            current,
            f.country.as_deref(),
            f.region.as_deref(),
            &ask.purposes,
            ask.gpc,
        )?;
        current.apply(&changes);
        Ok(())
    }
}

/// Seals the new identifiers, each under its subject's data key: the cached or stored one,
/// or a fresh one (every new subject gets a key, whether or not it holds an identifier yet).
async fn seal_identifiers(
    store: &dyn Store,
    identities: &Identities,
    keys: &IdentityKeys,
    plan: &mut Planning,
) -> Result<HashMap<PlannedSubject, DataKey>, ApiError> {
    let mut data_keys: HashMap<PlannedSubject, DataKey> = HashMap::new();
    let mut need: Vec<SubjectId> = Vec::new();
    if let Ok(cache) = identities.cache.lock() {
        for (s, _, _) in &plan.intents {
            if let PlannedSubject::Existing(id) = s
                && !data_keys.contains_key(s)
            {
                match cache.keys.get(id) {
                    Some(k) => {
                        data_keys.insert(*s, k.clone());
                    }
                    None => need.push(*id),
                }
            }
        }
    }
    need.sort();
    need.dedup();
    if !need.is_empty() {
        for (id, wrapped) in store.subject_keys(&need).await? {
            let key = keys.open_data_key(&wrapped).map_err(|e| {
                ApiError::Store(StoreError::Corrupt(format!(
                    "the data key of subject {id} does not open: {e}"
                )))
            })?;
            data_keys.insert(PlannedSubject::Existing(id), key);
        }
    }
    let write = &mut plan.write;
    let mut rng = rand::rngs::OsRng;
    let mut fresh_key =
        |subject: PlannedSubject, write: &mut IdentityWrite| -> Result<DataKey, ApiError> {
            let mut bytes = [0u8; 32];
            rng.fill_bytes(&mut bytes);
            let key = DataKey(bytes);
            let mut nonce = [0u8; 24];
            rng.fill_bytes(&mut nonce);
            let wrapped = keys
                .seal_data_key(&key, nonce)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            write.keys.push((subject, wrapped));
            Ok(key)
        };
    let new_refs = (0..write.new_subjects.len())
        .map(|i| PlannedSubject::New(u32::try_from(i).unwrap_or(u32::MAX)));
    let wanted: Vec<PlannedSubject> = plan
        .intents
        .iter()
        .map(|(s, _, _)| *s)
        .chain(new_refs)
        .collect();
    for s in wanted {
        if let std::collections::hash_map::Entry::Vacant(slot) = data_keys.entry(s) {
            slot.insert(fresh_key(s, write)?);
        }
    }
    for (subject, identifier, verifies) in &plan.intents {
        let key = data_keys
            .get(subject)
            .ok_or_else(|| ApiError::Internal("a data key went missing".into()))?;
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = key
            .seal(
                &identifier_aad(identifier.kind, &identifier.hash),
                identifier.value.as_bytes(),
                nonce,
            )
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        write.attach.push(NewIdentity {
            subject: *subject,
            key_subject: *subject,
            kind: identifier.kind,
            hash: identifier.hash,
            sealed,
            verified: *verifies,
        });
    }
    Ok(data_keys)
}

/// The id a planned subject has once the round is written (`ids`: the new subjects' ids).
fn real(ids: &[SubjectId], r: PlannedSubject) -> Result<SubjectId, ApiError> {
    match r {
        PlannedSubject::Existing(id) => Ok(id),
        PlannedSubject::New(n) => usize::try_from(n)
            .ok()
            .and_then(|n| ids.get(n).copied())
            .ok_or_else(|| ApiError::Internal(format!("new subject {n} got no id"))),
    }
}

/// Writes the plan in one transaction and says where each message landed, in subject ids;
/// also returns the new subjects' ids.
async fn write_plan(
    store: &dyn Store,
    plan: &mut Planning,
) -> Result<(Resolution, Vec<SubjectId>), ApiError> {
    let write = std::mem::take(&mut plan.write);
    let new_subjects = write.new_subjects.clone();
    let user_ids = write.user_ids.clone();
    let locations: Vec<SubjectId> = write.locations.iter().map(|l| l.subject).collect();
    let attached: Vec<(PlannedSubject, IdentifierHash)> =
        write.attach.iter().map(|a| (a.subject, a.hash)).collect();
    let at = write.at;
    let ids = store.write_identities(write).await?;
    let real = |r: PlannedSubject| real(&ids, r);
    // An identifier on the suppression list (erased before) collected again: the store marked
    // its holder in the write; the index learns it here.
    let hashes: Vec<_> = attached.iter().map(|(_, h)| *h).collect();
    let suppressed = if hashes.is_empty() {
        Vec::new()
    } else {
        store.suppressed(&hashes).await?
    };
    let mut marked: Vec<PlannedSubject> = attached
        .iter()
        .filter(|(_, h)| suppressed.contains(h))
        .map(|(s, _)| *s)
        .collect();
    if !marked.is_empty() {
        tracing::info!(
            identifiers = marked.len(),
            "identifiers suppressed after an erasure were collected again; their subjects are suppressed"
        );
    }
    marked.dedup();

    let mut outcome = Resolution {
        may_change_consent: std::mem::take(&mut plan.may_change),
        merged_by: std::mem::take(&mut plan.merged_by),
        rejected: std::mem::take(&mut plan.rejected),
        ..Resolution::default()
    };
    for p in &plan.placed {
        outcome.subjects.push(real(*p)?);
    }
    for o in &plan.origins {
        outcome.origins.push(real(*o)?);
    }
    for (from, into) in &plan.merges {
        outcome.merges.push((real(*from)?, real(*into)?));
    }
    for (i, s) in new_subjects.into_iter().enumerate() {
        let id = real(PlannedSubject::New(u32::try_from(i).unwrap_or(u32::MAX)))?;
        outcome.created.push(Subject {
            id,
            user_id: s.user_id,
            country: s.country,
            region: s.region,
            time_zone: s.time_zone,
            created_at: s.created_at,
            erasure_requested_at: None,
            suppressed: false,
            erased_at: None,
            erasure_suppressed_at: marked
                .contains(&PlannedSubject::New(u32::try_from(i).unwrap_or(u32::MAX)))
                .then_some(at),
        });
    }
    // Existing subjects marked, and the survivors of merges (which carry a mark along), are
    // read back from the store.
    let mut reread: Vec<SubjectId> = Vec::new();
    for m in &marked {
        if let PlannedSubject::Existing(id) = m {
            reread.push(*id);
        }
    }
    reread.extend(outcome.merges.iter().map(|(_, into)| *into));
    outcome.updated = user_ids
        .iter()
        .map(|(id, _)| *id)
        .chain(locations)
        .chain(reread)
        .collect();
    outcome.updated.sort();
    outcome.updated.dedup();
    for (r, f) in &plan.facts {
        outcome.facts.insert(real(*r)?, f.clone());
    }
    Ok((outcome, ids))
}

/// Remembers what is now true in the identity cache: holders, merges, facts, data keys and
/// verified identifiers.
fn remember(
    identities: &Identities,
    plan: &Planning,
    outcome: &Resolution,
    data_keys: HashMap<PlannedSubject, DataKey>,
    ids: &[SubjectId],
) -> Result<(), ApiError> {
    if let Ok(mut cache) = identities.cache.lock() {
        cache.make_room();
        for (hash, r) in &plan.view {
            cache.holders.insert(*hash, real(ids, *r)?);
        }
        for (from, into) in &outcome.merges {
            cache.merged.insert(*from, *into);
            cache.facts.remove(from);
        }
        for (id, f) in &outcome.facts {
            cache.facts.insert(*id, f.clone());
        }
        for (r, k) in data_keys {
            cache.keys.insert(real(ids, r)?, k);
        }
        cache.verified.extend(plan.verified.iter().copied());
    }
    Ok(())
}

/// Counts and logs the round's merges.
fn count_merges(messages: &[&MessageIds], outcome: &Resolution) {
    for (from, into) in &outcome.merges {
        let reason = if messages.iter().any(|m| m.explicit) {
            "alias"
        } else {
            "identify"
        };
        metrics::counter!(super::MERGES, "reason" => reason).increment(1);
        tracing::info!(merged = from.0, into = into.0, reason, "subjects merged");
    }
}
