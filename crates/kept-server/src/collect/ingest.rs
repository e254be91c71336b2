//! One collection request from checked messages to acknowledgement: every message's
//! identifiers and consent checked first (a bad one is rejected alone, before anything is
//! written), then identities resolved, consent changes written to the ledger, events and traits
//! committed, the index brought up to date, and deliveries queued for forwarding.

use super::Collector;
use super::body::Received;
use super::quarantine::Rejected;
use crate::clock::Clock;
use crate::connect::forwarder::Forwarder;
use crate::consent::ledger::Ledger;
use crate::http::client_ip::ClientIp;
use crate::http::error::ApiError;
use crate::identity::Identities;
use crate::identity::link::{self as identity, MessageIds};
use crate::index::IndexHandle;
use crate::observe;
use crate::subjects::consent::{decoded, ledger_state};
use axum::http::{HeaderMap, header};
use kept_core::collection::{
    COLLECTION_SOURCE, ConsentSnapshot, CurrentConsent, FieldError, Message, MessageKind,
    PurposeChoices, consent_changes, event_retain_until, level_of, profile_traits, purpose_choices,
    usable_purposes,
};
use kept_core::decision::PlaceId;
use kept_core::identity::Speaker;
use kept_core::index::Change;
use kept_core::ledger::{CollectionMethod, ConsentAction, ConsentRecord, Evidence};
use kept_core::manifest::{Manifest, promises};
use kept_core::regime::Regime;
use kept_core::signals::{ConsentSignals, gpc};
use kept_core::subject::Trait;
use kept_core::{SubjectId, UnixMillis};
use kept_store::collection::{EventWrite, NewEvent};
use kept_store::{ApiKeyRecord, Store};
use rand::RngCore;
use serde_json::{Map, Value, json};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

/// What the request itself says about the person sending it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFacts {
    /// `Sec-GPC: 1`.
    pub gpc: bool,
    /// The client's address (see `client_ip`: the peer, or what trusted proxies say).
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl RequestFacts {
    pub fn new(headers: &HeaderMap, ip: ClientIp) -> RequestFacts {
        RequestFacts {
            gpc: sends_gpc(headers),
            ip: ip.text(),
            // Kept as ledger evidence (collected consent, the preference page): cleaned and
            // cut to the ledger's limit here, the one place that reads it.
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|ua| {
                    crate::http::input::ledger_text_lossy(ua, crate::http::input::USER_AGENT_MAX)
                }),
        }
    }
}

/// Whether the browser sends Global Privacy Control (`Sec-GPC: 1`).
pub fn sends_gpc(headers: &HeaderMap) -> bool {
    gpc::from_header(headers.get(gpc::HEADER).and_then(|v| v.to_str().ok()))
}

/// What taking a request to committed reads and writes: the store, the ledger its consent
/// changes go to, the manifest, the index, identity resolution, the collector's caches, and
/// the forwarder deliveries are queued for (at the clock's time). Built by the handler.
#[derive(Clone, Copy)]
pub struct Ingest<'a> {
    pub store: &'a dyn Store,
    pub ledger: &'a Ledger,
    pub manifest: &'a Manifest,
    pub index: &'a IndexHandle,
    pub identities: &'a Identities,
    pub collector: &'a Collector,
    pub forwarder: &'a Forwarder,
    pub clock: &'a Clock,
}

impl std::fmt::Debug for Ingest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("store", &self.store)
            .field("collector", &self.collector)
            .finish_non_exhaustive()
    }
}

/// A message checked and ready to write.
struct Prepared {
    /// Its position in the request, and its text, should a later check reject it.
    index: usize,
    raw: String,
    message: Message,
    ids: MessageIds,
    signals: ConsentSignals,
    choices: PurposeChoices,
    point: Option<String>,
    message_id: String,
}

/// Takes one request's messages to committed (see the module's doc), and returns the ones
/// rejected, each with the error its own call would have answered; the others are written as
/// they would have been had the rejected ones never been sent. `batch` says whether error
/// paths carry the event's index (`batch[3].event`). An `Err` is the request's: nothing of it
/// counts as answered.
pub async fn ingest(
    with: Ingest<'_>,
    key: &ApiKeyRecord,
    messages: Vec<Received>,
    request: &RequestFacts,
    batch: bool,
    received_at: UnixMillis,
) -> Result<Vec<Rejected>, ApiError> {
    let Ingest {
        store,
        ledger,
        manifest,
        index,
        identities,
        collector,
        forwarder: _,
        clock: _,
    } = with;
    let keys = identities.keys(store).await?;
    let compiled = index.compiled().map_err(ApiError::from)?.clone();
    let default_point = collector.default_point(store, &key.id).await?;
    let default_country = collector.config().default_country.clone();
    let identity_secret = if key.role.is_trusted_writer() {
        None
    } else {
        identities.identity_secret(store).await?
    };

    // Each message checked on its own: one that fails is rejected, and the others go on.
    let check = |message: Message, base: &str, index: Option<usize>| {
        let signals = kept_core::signals::read(
            &message.context.subset(&["consent", "gpc"]),
            request.gpc,
            base,
        )
        .map_err(|e| invalid(e, index))?;
        let choices = purpose_choices(manifest, &signals.categories);
        let speaker = speaker_of(key, identity_secret, &message, base, index)?;
        // What a public key may say of a known customer only with an identity token: traits,
        // and a consent that changes what the ledger says.
        let guarded = (message.kind == MessageKind::Identify
            && message
                .person_traits()
                .values()
                .any(|v| !v.is_null() && v.as_str().is_none_or(|t| !t.trim().is_empty())))
        .then_some("traits");
        let consent = (!choices.purposes.is_empty()).then(|| identity::ConsentAsk {
            purposes: choices.purposes.clone(),
            gpc: signals.gpc,
        });
        let ids = identity::identifiers(
            keys,
            &message,
            default_country.as_deref(),
            base,
            index,
            identity::Voice {
                speaker,
                guarded,
                consent,
            },
        )?;
        let named_point = message.context_str(&["kept", "collection_point"]);
        if let Some(p) = &named_point
            && !manifest.collection_points.contains_key(p)
        {
            // A point the manifest does not declare would give the traits no categories and
            // the consent no notice, silently: refused like any other unreadable field.
            return Err(ApiError::InvalidEvent {
                field: kept_core::collection::field_path(base, "context.kept.collection_point"),
                index,
                message: format!(
                    "`context.kept.collection_point` names an unknown collection point \
                     `{p}`; the manifest declares {}",
                    declared(manifest.collection_points.keys())
                ),
            });
        }
        let point = named_point.or_else(|| default_point.clone());
        let message_id = message.message_id.clone().unwrap_or_else(random_id);
        Ok::<_, ApiError>((message, ids, signals, choices, point, message_id))
    };
    let mut rejected = Vec::new();
    let mut prepared = Vec::with_capacity(messages.len());
    for Received {
        index: i,
        raw,
        message,
    } in messages
    {
        let (base, index) = if batch {
            (format!("batch[{i}]"), Some(i))
        } else {
            (String::new(), None)
        };
        match check(message, &base, index) {
            Ok((message, ids, signals, choices, point, message_id)) => prepared.push(Prepared {
                index: i,
                raw,
                message,
                ids,
                signals,
                choices,
                point,
                message_id,
            }),
            Err(error) => rejected.push(Rejected {
                index: i,
                raw,
                error,
            }),
        }
    }
    if prepared.is_empty() {
        return Ok(rejected);
    }

    let ids: Vec<&MessageIds> = prepared.iter().map(|p| &p.ids).collect();
    let reads = identity::Reads {
        store,
        index,
        manifest,
    };
    let mut outcome =
        identity::resolve_all(reads, identities, keys, &ids, &key.id, received_at).await?;
    drop(ids);
    // What resolution refused (a public key speaking for a known customer without a token, a
    // merge it may not make) is rejected alone; the outcome speaks of the others only.
    if !outcome.rejected.is_empty() {
        let mut refused: HashMap<usize, ApiError> = outcome.rejected.drain(..).collect();
        prepared = prepared
            .into_iter()
            .enumerate()
            .filter_map(|(position, p)| match refused.remove(&position) {
                Some(error) => {
                    rejected.push(Rejected {
                        index: p.index,
                        raw: p.raw,
                        error,
                    });
                    None
                }
                None => Some(p),
            })
            .collect();
    }

    let ip_hash = |m: &Message| {
        m.context_str(&["ip"])
            .or_else(|| request.ip.clone())
            .map(|ip| keys.ip_hash(&ip))
    };
    let gpc_key = gpc::purpose(manifest);
    let mut records: Vec<ConsentRecord> = Vec::new();
    let mut current: HashMap<SubjectId, CurrentConsent> = HashMap::new();
    for (from, into) in &outcome.merges {
        records.extend(carried_over(store, *from, *into, &mut current, received_at).await?);
    }
    // Events of one request mostly carry the same consent from the same regime: judged and
    // encoded once per distinct pair.
    let mut judged: HashMap<(PlaceId, u64), Judged> = HashMap::new();
    let mut fingerprints: Vec<(SubjectId, u64)> = Vec::new();
    let mut events = Vec::with_capacity(prepared.len());
    let mut traits: Vec<Trait> = Vec::new();
    // Where each (subject, key) is in `traits`.
    let mut trait_at: HashMap<(SubjectId, String), usize> = HashMap::new();
    // Merges in the order the messages made them, so traits land as one by one they would.
    let mut merge_steps = outcome.merges.iter().zip(&outcome.merged_by).peekable();
    let mut candidates: Vec<Candidate> = Vec::with_capacity(prepared.len());
    let mut counted: Vec<(&'static str, u64)> = Vec::new();
    for (i, (p, subject)) in prepared
        .into_iter()
        .zip(outcome.subjects.iter().copied())
        .enumerate()
    {
        let may_change_consent = outcome.may_change_consent.get(i).copied().unwrap_or(false);
        while let Some(((from, into), _)) = merge_steps.next_if(|(_, by)| **by <= i) {
            merge_traits(&mut traits, &mut trait_at, *from, *into);
        }
        let origin = outcome.origins.get(i).copied().unwrap_or(subject);
        let Prepared {
            index: position,
            raw,
            message: m,
            ids,
            signals,
            choices,
            point,
            message_id,
        } = p;
        let facts = outcome.facts_of(subject);
        let place = compiled.place_of(facts.country.as_deref(), facts.region.as_deref());
        let regime = Regime::resolve(facts.country.as_deref(), facts.region.as_deref());
        let at = m.event_time(received_at);
        let print = fingerprint(&choices, signals.gpc);
        let judgement = match judged.entry((place, signal_print(&signals, print))) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(judge(
                &compiled,
                manifest,
                place,
                regime,
                &signals,
                &choices,
                received_at,
            )?),
        };

        if signals.carried() || signals.gpc {
            let seen = !current.contains_key(&subject)
                && collector
                    .carried
                    .lock()
                    .is_ok_and(|c| c.get(&subject) == Some(&print));
            // A yes under a notice that did not promise it counts for nothing, so the same
            // choices sent again (under the right notice) must be looked at again.
            let mut unpromised = false;
            if !seen {
                let state_now = match current.entry(subject) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => e.insert(ledger_state(store, subject).await?),
                };
                let changes = consent_changes(
                    &choices.purposes,
                    signals.gpc,
                    state_now,
                    |purpose| level_of(&compiled, place, purpose),
                    &gpc_key,
                );
                // Checked when resolving; checked again against the ledger as it is now, so a
                // change made meanwhile does not let a public key's choice through.
                if !may_change_consent && changes.iter().any(|c| !c.gpc) {
                    rejected.push(Rejected {
                        index: position,
                        raw,
                        error: ids.guard_refused("context.consent.categoryPreferences"),
                    });
                    continue;
                }
                state_now.apply(&changes);
                for c in changes {
                    let (named, version) = named_notice(manifest, &m, point.as_deref(), &c.purpose);
                    // Evidence text the sender's SDK made up is kept, cleaned, not refused:
                    // refusing would lose the consent it is evidence for.
                    let evidence_id = crate::http::input::ledger_text_lossy(
                        &message_id,
                        crate::http::input::REFERENCE_MAX,
                    );
                    let mut reference = Some(evidence_id.clone());
                    let notice = match promises::named_notice(
                        manifest,
                        &c.purpose,
                        named.as_deref(),
                        version,
                    ) {
                        promises::Named::Promising(n) => Some(n),
                        promises::Named::Nothing => None,
                        promises::Named::Unpromised => {
                            unpromised = true;
                            reference = Some(promises::mark_unpromised(
                                manifest,
                                named.as_deref().unwrap_or_default(),
                                Some(&evidence_id),
                            ));
                            None
                        }
                    };
                    records.push(ConsentRecord {
                        subject,
                        purpose: c.purpose,
                        channel: None,
                        topic: None,
                        action: c.action,
                        notice,
                        regime: regime.as_str().to_owned(),
                        source: COLLECTION_SOURCE.to_owned(),
                        // The method follows the source: a browser's banner (or its GPC
                        // signal) through a public key, the shop's backend through a server key.
                        method: if c.gpc {
                            CollectionMethod::Gpc
                        } else if key.role.is_trusted_writer() {
                            CollectionMethod::Api
                        } else {
                            CollectionMethod::Banner
                        },
                        evidence: Evidence {
                            ip_hash: ip_hash(&m),
                            user_agent: m
                                .context_str(&["userAgent"])
                                .or_else(|| request.user_agent.clone())
                                .map(|ua| {
                                    crate::http::input::ledger_text_lossy(
                                        &ua,
                                        crate::http::input::USER_AGENT_MAX,
                                    )
                                }),
                            text_hash: None,
                            reference,
                        },
                        at: at.min(received_at),
                    });
                }
            }
            if !unpromised {
                fingerprints.push((subject, print));
            }
        }

        let ip = ip_hash(&m);
        let person = match m.kind {
            MessageKind::Identify => m.person_traits(),
            _ => Map::new(),
        };
        let Message {
            kind,
            user_id,
            anonymous_id,
            previous_id,
            group_id,
            name,
            traits: message_traits,
            properties,
            mut context,
            extra,
            ..
        } = m;
        // What the event adds beyond its context: a track's or page's own properties as sent,
        // or what an identify, group or alias call says.
        let shown = match kind {
            MessageKind::Identify => {
                let profile = profile_traits(manifest, point.as_deref(), &person, origin, at);
                let shown: Map<String, Value> = profile
                    .iter()
                    .map(|t| (t.key.clone(), t.value.clone()))
                    .collect();
                for t in profile {
                    // A later one of the same request replaces it, as a later call would.
                    match trait_at.entry((t.subject, t.key.clone())) {
                        Entry::Occupied(e) => {
                            if let Some(u) = traits.get_mut(*e.get()) {
                                *u = t;
                            }
                        }
                        Entry::Vacant(e) => {
                            e.insert(traits.len());
                            traits.push(t);
                        }
                    }
                }
                Some(shown)
            }
            MessageKind::Group => {
                let mut shown = Map::new();
                shown.insert("groupId".into(), json!(group_id));
                shown.insert("traits".into(), Value::Object(message_traits));
                Some(shown)
            }
            MessageKind::Alias => {
                let mut shown = Map::new();
                shown.insert("previousId".into(), json!(previous_id));
                Some(shown)
            }
            _ => None,
        };
        if let Some(hash) = ip {
            context.remove("ip");
            context.set_text("ip_hash", &hash);
        }
        // What the consent said is stored once, in the event's consent snapshot.
        context.remove("consent");
        context.seal_identifier_traits();
        let properties_json = match &shown {
            Some(map) => serde_json::to_string(map).map_err(internal)?,
            None => properties.get().to_owned(),
        };
        match counted.iter_mut().find(|(k, _)| *k == kind.as_str()) {
            Some((_, n)) => *n += 1,
            None => counted.push((kind.as_str(), 1)),
        }
        events.push(NewEvent {
            source: key.id.clone(),
            message_id: message_id.clone(),
            subject,
            kind: kind.as_str().to_owned(),
            name: name.clone(),
            at,
            received_at,
            retain_until: received_at.saturating_add(judgement.retention),
            consent: judgement.snapshot.clone(),
            properties: properties_json,
            context: context.to_json(),
            extra: extra.to_json(),
        });
        candidates.push(Candidate {
            subject,
            kind,
            message_id,
            user_id,
            anonymous_id,
            name,
            shown,
            properties,
            context,
            extra,
            regime: judgement.regime.clone(),
            at,
        });
    }

    // Consent first: an event that withdrew consent must not be forwarded on the old state.
    let entries = if records.is_empty() {
        Vec::new()
    } else {
        let entries = ledger.append_many(records).await?;
        observe::count_ledger_appends(entries.len());
        metrics::counter!(super::CONSENT_RECORDS).increment(entries.len() as u64);
        entries
    };
    let interactions = kept_store::collection::interactions(&events);
    store
        .write_events(EventWrite {
            events,
            traits: traits.clone(),
        })
        .await?;

    let mut changes: Vec<Change> = outcome
        .created
        .iter()
        .cloned()
        .map(Change::Subject)
        .collect();
    for id in &outcome.updated {
        if let Some(s) = store.subject(*id).await? {
            changes.push(Change::Subject(s));
        }
    }
    // The directory learns the merges first: the merged-away subjects' user ids keep naming
    // a subject (the survivor) while the index forgets them.
    index.record_merges(&outcome.merges, false)?;
    for (from, _) in &outcome.merges {
        changes.push(Change::Forget(*from));
    }
    let fresh: HashSet<SubjectId> = outcome.created.iter().map(|s| s.id).collect();
    let merged_into = outcome.merges.iter().map(|(_, into)| *into);
    changes.extend(crate::index::trait_changes(store, traits, &fresh, merged_into).await?);
    // A survivor's last interaction includes the merged subject's (the store took the later),
    // and the gates of the merged subject's data subject requests now stand on it.
    for (_, into) in &outcome.merges {
        if let Some(at) = store.last_interaction(*into).await? {
            changes.push(Change::Interaction { subject: *into, at });
        }
        changes.extend(crate::requests::gates::gate_changes(store, *into).await?);
    }
    // The subjects' own events are interactions (Colorado's consent refresh counts from them).
    changes.extend(
        interactions
            .into_iter()
            .map(|(subject, at)| Change::Interaction { subject, at }),
    );
    index.apply(changes).await?;
    index.consents_appended(&entries).await?;
    if let Ok(mut carried) = collector.carried.lock() {
        if carried.len() > 1_000_000 {
            carried.clear();
        }
        carried.extend(fingerprints);
    }

    forward(with, &key.id, candidates, received_at).await?;
    for (kind, n) in counted {
        metrics::counter!(super::EVENTS, "type" => kind).increment(n);
    }
    Ok(rejected)
}

/// The traits a request gave `from` so far, moved to `into` as the store merges stored ones:
/// the survivor keeps its own where both have one, unless the merged one is newer.
fn merge_traits(
    traits: &mut Vec<Trait>,
    at: &mut HashMap<(SubjectId, String), usize>,
    from: SubjectId,
    into: SubjectId,
) {
    if !traits.iter().any(|t| t.subject == from) {
        return;
    }
    let (moved, kept): (Vec<Trait>, Vec<Trait>) = std::mem::take(traits)
        .into_iter()
        .partition(|t| t.subject == from);
    *traits = kept;
    at.clear();
    for (i, t) in traits.iter().enumerate() {
        at.insert((t.subject, t.key.clone()), i);
    }
    for mut t in moved {
        t.subject = into;
        match at.entry((into, t.key.clone())) {
            Entry::Occupied(e) => {
                if let Some(u) = traits.get_mut(*e.get())
                    && t.provenance.collected_at > u.provenance.collected_at
                {
                    *u = t;
                }
            }
            Entry::Vacant(e) => {
                e.insert(traits.len());
                traits.push(t);
            }
        }
    }
}

/// Who a message speaks for: a server key is the shop's word; a public key's message speaks
/// for its user only with a valid identity token (`context.kept.userHash`). A token that does
/// not match is refused, never ignored: it is a bug in the shop's backend or a forgery.
fn speaker_of(
    key: &ApiKeyRecord,
    secret: Option<&crate::config::Secret>,
    message: &Message,
    base: &str,
    index: Option<usize>,
) -> Result<Speaker, ApiError> {
    if key.role.is_trusted_writer() {
        return Ok(Speaker::Server);
    }
    let Some(token) = message.context_str(&["kept", "userHash"]) else {
        return Ok(Speaker::Browser);
    };
    let refuse = |message: String| ApiError::WriteKeyRefused {
        code: "collect.identity_token_invalid",
        field: kept_core::collection::field_path(base, "context.kept.userHash"),
        index,
        message,
    };
    let Some(user_id) = message.user_id.as_deref().map(str::trim) else {
        return Err(refuse(
            "`context.kept.userHash` needs the `userId` it was minted for in the same message"
                .to_owned(),
        ));
    };
    let Some(secret) = secret else {
        return Err(refuse(
            "this server has no `identity_secret`, so it accepts no identity token; set one \
             and mint tokens with it"
                .to_owned(),
        ));
    };
    if crate::identity::identity_token_matches(secret.expose(), user_id, &token) {
        Ok(Speaker::Token)
    } else {
        Err(refuse(
            "`context.kept.userHash` is not the identity token of this `userId`: it must be the \
             hex HMAC-SHA256 of the `userId` under the identity secret"
                .to_owned(),
        ))
    }
}

/// `keys` as a list for a message: `` `a`, `b` ``, or `none`.
fn declared<'a>(keys: impl Iterator<Item = &'a String>) -> String {
    let list: Vec<String> = keys.map(|k| format!("`{k}`")).collect();
    if list.is_empty() {
        "none".to_owned()
    } else {
        list.join(", ")
    }
}

fn invalid(e: FieldError, index: Option<usize>) -> ApiError {
    ApiError::InvalidEvent {
        field: e.path,
        index,
        message: e.message,
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("kept-{}", hex::encode(bytes))
}

/// Identifies a consent state as an event carried it.
fn fingerprint(choices: &PurposeChoices, gpc: bool) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    choices.purposes.hash(&mut h);
    gpc.hash(&mut h);
    h.finish()
}

/// The consent of a merged subject, carried to the survivor where the survivor has said
/// nothing about that purpose (or said it earlier): the same choice, now on the survivor's
/// record, pointing back at the original.
async fn carried_over(
    store: &dyn Store,
    from: SubjectId,
    into: SubjectId,
    current: &mut HashMap<SubjectId, CurrentConsent>,
    now: UnixMillis,
) -> Result<Vec<ConsentRecord>, ApiError> {
    let theirs = decoded(store, from).await?;
    if theirs.is_empty() {
        return Ok(Vec::new());
    }
    let ours = decoded(store, into).await?;
    let latest_at = |records: &[ConsentRecord], pick: &dyn Fn(&ConsentRecord) -> bool| {
        records.iter().filter(|r| pick(r)).map(|r| r.at).max()
    };
    let mut latest: HashMap<(String, bool), &ConsentRecord> = HashMap::new();
    for r in &theirs {
        if r.action == ConsentAction::Pending
            || !promises::counts(r)
            || r.method != CollectionMethod::Gpc && (r.channel.is_some() || r.topic.is_some())
        {
            continue;
        }
        latest.insert((r.purpose.clone(), r.method == CollectionMethod::Gpc), r);
    }
    let mut out = Vec::new();
    for ((purpose, gpc), r) in latest {
        let survivor_at = if gpc {
            latest_at(&ours, &|o| o.method == CollectionMethod::Gpc)
        } else {
            latest_at(&ours, &|o| {
                o.purpose == purpose
                    && o.method != CollectionMethod::Gpc
                    && o.channel.is_none()
                    && o.topic.is_none()
            })
        };
        if survivor_at.is_some_and(|at| at >= r.at) {
            continue;
        }
        let mut record = r.clone();
        record.subject = into;
        record.source = COLLECTION_SOURCE.to_owned();
        record.evidence.reference = Some(format!(
            "merged from subject {}{}",
            from.0,
            r.evidence
                .reference
                .as_deref()
                .map(|x| format!(" ({x})"))
                .unwrap_or_default()
        ));
        record.at = record.at.min(now);
        out.push(record);
    }
    out.sort_by_key(|r| r.at);
    let mut survivor = CurrentConsent::from_records(&ours);
    survivor.apply(
        &out.iter()
            .map(|r| kept_core::collection::ConsentChange {
                purpose: r.purpose.clone(),
                action: r.action,
                gpc: r.method == CollectionMethod::Gpc,
            })
            .collect::<Vec<_>>(),
    );
    current.insert(into, survivor);
    Ok(out)
}

/// The notice a client named for its choice about `purpose`: from the notices it says it
/// showed, per purpose (`properties.notices` of a `Consent Updated` event, or
/// `context.kept.notices` on any event, both `{"<purpose>": {"id", "version"}}` as `kept.js`
/// sends them); else `context.kept.notice`; else the notice of the collection point the event
/// names (or its write key's). Never one the client did not name.
fn named_notice(
    manifest: &Manifest,
    m: &Message,
    point: Option<&str>,
    purpose: &str,
) -> (Option<String>, Option<u32>) {
    #[derive(serde::Deserialize)]
    struct Shown {
        id: String,
        #[serde(default)]
        version: Option<u32>,
    }
    #[derive(serde::Deserialize)]
    struct WithNotices {
        #[serde(default)]
        notices: Option<Value>,
    }
    let from_properties = serde_json::from_str::<WithNotices>(m.properties.get())
        .ok()
        .and_then(|p| p.notices);
    let from_context = || {
        m.context
            .value("kept")
            .and_then(|k| serde_json::from_value::<WithNotices>(k).ok())
            .and_then(|k| k.notices)
    };
    // A client that lists the notices it showed has said everything: a purpose it lists none
    // for was shown without one. A list that cannot be read names a notice nobody knows, so
    // the choice is recorded without one and marked (fail closed).
    if let Some(listed) = from_properties.or_else(from_context) {
        return match serde_json::from_value::<HashMap<String, Shown>>(listed) {
            Ok(mut shown) => match shown.remove(purpose) {
                Some(s) => (Some(s.id), s.version),
                None => (None, None),
            },
            Err(_) => (Some(String::new()), None),
        };
    }
    let named = m.context_str(&["kept", "notice"]).or_else(|| {
        point
            .and_then(|p| manifest.collection_points.get(p))
            .map(|p| p.notice.clone())
    });
    (named, None)
}

/// What one distinct (place, consent) pair allows, judged once per request.
struct Judged {
    /// The event's consent snapshot, encoded.
    snapshot: String,
    /// How long after its arrival such an event is kept.
    retention: UnixMillis,
    regime: String,
}

fn judge(
    compiled: &kept_core::decision::Compiled,
    manifest: &Manifest,
    place: PlaceId,
    regime: Regime,
    signals: &ConsentSignals,
    choices: &PurposeChoices,
    received_at: UnixMillis,
) -> Result<Judged, ApiError> {
    let usable_for = usable_purposes(compiled, place, &choices.purposes, signals.gpc, received_at);
    let retention = event_retain_until(manifest, &usable_for, 0);
    let snapshot = ConsentSnapshot {
        carried: signals.carried(),
        categories: signals.categories.clone(),
        purposes: choices.purposes.clone(),
        unmapped: choices.unmapped.clone(),
        gpc: signals.gpc,
        tcf: signals.tcf.clone(),
        gpp: signals.gpp.clone(),
        gpp_sections: signals.gpp_sections.clone(),
        us_privacy: signals.us_privacy.clone(),
        regime: regime.as_str().to_owned(),
        usable_for,
    };
    Ok(Judged {
        snapshot: serde_json::to_string(&snapshot).map_err(internal)?,
        retention,
        regime: regime.as_str().to_owned(),
    })
}

/// Everything about the signals that changes the stored snapshot.
fn signal_print(signals: &ConsentSignals, choices_print: u64) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    choices_print.hash(&mut h);
    signals.categories.hash(&mut h);
    signals.tcf.hash(&mut h);
    signals.gpp.hash(&mut h);
    signals.gpp_sections.hash(&mut h);
    signals.us_privacy.hash(&mut h);
    h.finish()
}

/// A committed event, kept until forwarding has decided on it.
struct Candidate {
    subject: SubjectId,
    kind: MessageKind,
    message_id: String,
    user_id: Option<String>,
    anonymous_id: Option<String>,
    name: Option<String>,
    /// What an identify, group or alias call says; `None` for the others, whose
    /// `properties` are the client's.
    shown: Option<Map<String, Value>>,
    properties: Box<serde_json::value::RawValue>,
    context: kept_core::collection::Context,
    /// The message's top-level fields Kept does not read, as sent (also stored in `extra`).
    extra: kept_core::collection::Context,
    regime: String,
    at: UnixMillis,
}

/// Queues the deliveries of committed events. Only an event that some system with a webhook
/// may receive (its decision allows the subject, as the forwarder asks it) is turned into the
/// destination's JSON: most events go nowhere, and building that JSON for each would cost more
/// than storing them.
async fn forward(
    with: Ingest<'_>,
    source: &str,
    candidates: Vec<Candidate>,
    now: UnixMillis,
) -> Result<(), ApiError> {
    let Ingest {
        store,
        manifest,
        index,
        forwarder,
        clock,
        ..
    } = with;
    if manifest.webhook_systems().next().is_none() {
        return Ok(());
    }
    let decisions = index.snapshot().ok();
    let mut views: Vec<(SubjectId, String, Value)> = Vec::new();
    let mut decided: Vec<crate::connect::SystemDecisions<'_>> = Vec::new();
    for c in candidates {
        // Asked once per system here; the forwarder queues from these answers.
        let systems =
            crate::connect::decide_systems(manifest, decisions.as_deref(), c.subject, now);
        if systems.iter().any(|(_, d)| d.is_ok()) {
            // Queued for some system: the forwarder counts the ones it is withheld from.
            views.push((
                c.subject,
                format!("{source}/{}", c.message_id),
                forward_view(c),
            ));
            decided.push(systems);
        } else {
            // Refused by every system, so it never reaches the forwarder: counted here.
            for (key, reason) in systems
                .iter()
                .filter_map(|(k, d)| Some((k, d.as_ref().err()?)))
            {
                crate::connect::count_withheld(key, reason);
            }
        }
    }
    if views.is_empty() {
        return Ok(());
    }
    let to_forward: Vec<crate::connect::EventToForward<'_>> = views
        .iter()
        .map(|(subject, id, event)| crate::connect::EventToForward {
            subject: *subject,
            event_id: id,
            event,
        })
        .collect();
    crate::connect::enqueue_decided(store, forwarder, &to_forward, decided, clock()).await?;
    Ok(())
}

/// The event as a destination receives it: Segment's shape, with the IP address hashed.
fn forward_view(c: Candidate) -> Value {
    let timestamp = chrono::DateTime::from_timestamp_millis(c.at)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    let properties = match c.shown {
        Some(shown) => shown,
        None => serde_json::from_str(c.properties.get()).unwrap_or_default(),
    };
    let mut out = Map::new();
    out.insert("type".into(), Value::from(c.kind.as_str()));
    out.insert("messageId".into(), Value::from(c.message_id));
    out.insert("userId".into(), json!(c.user_id));
    out.insert("anonymousId".into(), json!(c.anonymous_id));
    out.insert("timestamp".into(), json!(timestamp));
    out.insert("regime".into(), Value::from(c.regime));
    match c.kind {
        MessageKind::Track => {
            out.insert("event".into(), json!(c.name));
            out.insert("properties".into(), Value::Object(properties));
        }
        MessageKind::Page | MessageKind::Screen => {
            out.insert("name".into(), json!(c.name));
            out.insert("properties".into(), Value::Object(properties));
        }
        MessageKind::Identify => {
            out.insert("traits".into(), Value::Object(properties));
        }
        MessageKind::Group | MessageKind::Alias => out.extend(properties),
    }
    out.insert("context".into(), Value::Object(c.context.to_map()));
    // The fields Kept does not read (a page's `category`, `integrations`, ...) go on as the
    // client sent them, as a Segment destination receives the message; the ones Kept writes
    // itself come first.
    for (key, value) in c.extra.to_map() {
        out.entry(key).or_insert(value);
    }
    Value::Object(out)
}
