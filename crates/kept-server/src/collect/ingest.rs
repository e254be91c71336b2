//! One collection request from checked messages to acknowledgement: every message's
//! identifiers and consent checked first (a bad one rejects the request before anything is
//! written), then identities resolved, consent changes written to the ledger, events and traits
//! committed, the index brought up to date, and deliveries queued for forwarding.

use super::identity::{self, MessageIds};
use crate::app::AppState;
use crate::error::ApiError;
use crate::observe;
use axum::http::{HeaderMap, header};
use kept_core::collection::{
    COLLECTION_SOURCE, ConsentSignals, ConsentSnapshot, CurrentConsent, FieldError, Message,
    MessageKind, PurposeChoices, consent_changes, event_retain_until, gpc_purpose, level_of,
    profile_traits, purpose_choices, signals, usable_purposes,
};
use kept_core::decision::PlaceId;
use kept_core::index::Change;
use kept_core::ledger::{
    self, CollectionMethod, ConsentAction, ConsentRecord, Evidence, NoticeRef,
};
use kept_core::manifest::{Manifest, is_within};
use kept_core::regime::Regime;
use kept_core::subject::Trait;
use kept_core::{SubjectId, UnixMillis};
use kept_store::ApiKeyRecord;
use kept_store::collection::{EventWrite, NewEvent};
use rand::RngCore;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{Hash, Hasher};

/// What the request itself says about the person sending it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFacts {
    /// `Sec-GPC: 1`.
    pub gpc: bool,
    /// The client address from `X-Forwarded-For` or `X-Real-IP`, when a proxy set one.
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl RequestFacts {
    pub fn from_headers(headers: &HeaderMap) -> RequestFacts {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        RequestFacts {
            gpc: text("sec-gpc") == Some("1"),
            ip: text("x-forwarded-for")
                .and_then(|v| v.split(',').next())
                .map(str::trim)
                .or_else(|| text("x-real-ip"))
                .map(str::to_owned),
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        }
    }
}

/// A message checked and ready to write.
struct Prepared {
    message: Message,
    ids: MessageIds,
    signals: ConsentSignals,
    choices: PurposeChoices,
    point: Option<String>,
    message_id: String,
}

/// Takes one request's messages to committed (see the module's doc). `batch` says whether
/// error paths carry the event's index (`batch[3].event`).
pub async fn ingest(
    state: &AppState,
    key: &ApiKeyRecord,
    messages: Vec<Message>,
    request: &RequestFacts,
    batch: bool,
    received_at: UnixMillis,
) -> Result<(), ApiError> {
    let collector = &state.collect;
    let store = state.store.as_ref();
    let keys = collector.keys(store).await?;
    let compiled = state.index.compiled().map_err(ApiError::from)?.clone();
    let manifest = state.manifest.as_ref();
    let default_point = collector.default_point(store, &key.id).await?;
    let default_country = collector.config().default_country.clone();

    let mut prepared = Vec::with_capacity(messages.len());
    for (i, message) in messages.into_iter().enumerate() {
        let (base, index) = if batch {
            (format!("batch[{i}]"), Some(i))
        } else {
            (String::new(), None)
        };
        let ids = identity::identifiers(keys, &message, default_country.as_deref(), &base, index)?;
        let signals =
            signals(&message.context, request.gpc, &base).map_err(|e| invalid(e, index))?;
        let choices = purpose_choices(manifest, &signals.categories);
        let point = message
            .context_str(&["kept", "collection_point"])
            .map(str::to_owned)
            .or_else(|| default_point.clone());
        let message_id = message.message_id.clone().unwrap_or_else(random_id);
        prepared.push(Prepared {
            message,
            ids,
            signals,
            choices,
            point,
            message_id,
        });
    }

    let ids: Vec<MessageIds> = prepared.iter().map(|p| p.ids.clone()).collect();
    let outcome = identity::resolve_all(state, collector, keys, &ids, received_at).await?;

    let ip_hash = |m: &Message| {
        m.context_str(&["ip"])
            .or(request.ip.as_deref())
            .map(|ip| keys.ip_hash(ip))
    };
    let gpc_key = gpc_purpose(manifest);
    let mut records: Vec<ConsentRecord> = Vec::new();
    let mut current: HashMap<SubjectId, CurrentConsent> = HashMap::new();
    for (from, into) in &outcome.merges {
        records.extend(carried_over(state, *from, *into, &mut current, received_at).await?);
    }
    let mut usable: HashMap<(PlaceId, u64), Vec<String>> = HashMap::new();
    let mut fingerprints: Vec<(SubjectId, u64)> = Vec::new();
    let mut events = Vec::with_capacity(prepared.len());
    let mut traits: Vec<Trait> = Vec::new();
    let mut forwarded: Vec<(SubjectId, String, Value)> = Vec::with_capacity(prepared.len());
    for (p, subject) in prepared.iter().zip(&outcome.subjects) {
        let subject = *subject;
        let m = &p.message;
        let facts = outcome.facts_of(subject);
        let place = compiled.place_of(facts.country.as_deref(), facts.region.as_deref());
        let regime = Regime::resolve(facts.country.as_deref(), facts.region.as_deref());
        let at = m.event_time(received_at);
        let print = fingerprint(&p.choices, p.signals.gpc);
        let usable_for = usable
            .entry((place, print))
            .or_insert_with(|| {
                usable_purposes(
                    &compiled,
                    place,
                    &p.choices.purposes,
                    p.signals.gpc,
                    received_at,
                )
            })
            .clone();

        if p.signals.carried() || p.signals.gpc {
            let seen = !current.contains_key(&subject)
                && collector
                    .carried
                    .lock()
                    .is_ok_and(|c| c.get(&subject) == Some(&print));
            if !seen {
                let state_now = match current.entry(subject) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => e.insert(ledger_state(state, subject).await?),
                };
                let changes = consent_changes(
                    &p.choices.purposes,
                    p.signals.gpc,
                    state_now,
                    |purpose| level_of(&compiled, place, purpose),
                    &gpc_key,
                );
                state_now.apply(&changes);
                for c in changes {
                    let notice = notice_for(manifest, m, p.point.as_deref(), &c.purpose);
                    records.push(ConsentRecord {
                        subject,
                        purpose: c.purpose,
                        channel: None,
                        topic: None,
                        action: c.action,
                        notice,
                        regime: regime.as_str().to_owned(),
                        source: COLLECTION_SOURCE.to_owned(),
                        method: if c.gpc {
                            CollectionMethod::Gpc
                        } else {
                            CollectionMethod::Banner
                        },
                        evidence: Evidence {
                            ip_hash: ip_hash(m),
                            user_agent: m
                                .context_str(&["userAgent"])
                                .map(str::to_owned)
                                .or_else(|| request.user_agent.clone()),
                            text_hash: None,
                            reference: Some(p.message_id.clone()),
                        },
                        at: at.min(received_at),
                    });
                }
            }
            fingerprints.push((subject, print));
        }

        let profile = if m.kind == MessageKind::Identify {
            profile_traits(manifest, p.point.as_deref(), &m.traits, subject, at)
        } else {
            Vec::new()
        };
        let properties = match m.kind {
            MessageKind::Identify => Value::Object(
                profile
                    .iter()
                    .map(|t| (t.key.clone(), t.value.clone()))
                    .collect(),
            ),
            MessageKind::Group => json!({
                "groupId": m.group_id,
                "traits": Value::Object(m.traits.clone()),
            }),
            MessageKind::Alias => json!({ "previousId": m.previous_id }),
            _ => Value::Object(m.properties.clone()),
        };
        traits.extend(profile);
        let mut context = m.context.clone();
        if let Some(hash) = ip_hash(m) {
            context.remove("ip");
            context.insert("ip_hash".into(), Value::String(hash));
        }
        let snapshot = ConsentSnapshot {
            carried: p.signals.carried(),
            categories: p.signals.categories.clone(),
            purposes: p.choices.purposes.clone(),
            unmapped: p.choices.unmapped.clone(),
            gpc: p.signals.gpc,
            tcf: p.signals.tcf.clone(),
            gpp: p.signals.gpp.clone(),
            gpp_sections: p.signals.gpp_sections.clone(),
            us_privacy: p.signals.us_privacy.clone(),
            regime: regime.as_str().to_owned(),
            usable_for: usable_for.clone(),
        };
        let event = NewEvent {
            source: key.id.clone(),
            message_id: p.message_id.clone(),
            subject,
            kind: m.kind.as_str().to_owned(),
            name: m.name.clone(),
            at,
            received_at,
            retain_until: event_retain_until(manifest, &usable_for, received_at),
            consent: serde_json::to_string(&snapshot).map_err(internal)?,
            properties: properties.to_string(),
            context: Value::Object(context.clone()).to_string(),
        };
        forwarded.push((
            subject,
            format!("{}/{}", key.id, p.message_id),
            forward_view(m, &p.message_id, &properties, &context, &snapshot, at),
        ));
        events.push(event);
    }

    // Consent first: an event that withdrew consent must not be forwarded on the old state.
    let entries = if records.is_empty() {
        Vec::new()
    } else {
        let entries = state.ledger.append_many(records).await?;
        observe::count_ledger_appends(entries.len());
        metrics::counter!(super::CONSENT_RECORDS).increment(entries.len() as u64);
        entries
    };
    let kinds: Vec<&'static str> = prepared.iter().map(|p| p.message.kind.as_str()).collect();
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
    for (from, into) in &outcome.merges {
        changes.push(Change::Forget(*from));
        changes.extend(store.traits(*into).await?.into_iter().map(Change::Trait));
    }
    changes.extend(traits.into_iter().map(Change::Trait));
    state.index.apply(changes).await?;
    state.index.consents_appended(&entries).await?;
    if let Ok(mut carried) = collector.carried.lock() {
        if carried.len() > 1_000_000 {
            carried.clear();
        }
        carried.extend(fingerprints);
    }

    let to_forward: Vec<crate::forward::EventToForward<'_>> = forwarded
        .iter()
        .map(|(subject, id, event)| crate::forward::EventToForward {
            subject: *subject,
            event_id: id,
            event,
        })
        .collect();
    crate::forward::enqueue_for_events(state, &to_forward).await?;
    for kind in kinds {
        metrics::counter!(super::EVENTS, "type" => kind).increment(1);
    }
    Ok(())
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

/// The subject's consent as its ledger records state it now.
async fn ledger_state(state: &AppState, subject: SubjectId) -> Result<CurrentConsent, ApiError> {
    let records = decoded(state, subject).await?;
    Ok(CurrentConsent::from_records(&records))
}

async fn decoded(state: &AppState, subject: SubjectId) -> Result<Vec<ConsentRecord>, ApiError> {
    state
        .store
        .ledger_for_subject(subject)
        .await?
        .iter()
        .map(|e| {
            ledger::decode(&e.bytes).map_err(|err| {
                ApiError::Store(kept_store::StoreError::Corrupt(format!(
                    "record {} does not decode: {err}",
                    e.seq
                )))
            })
        })
        .collect()
}

/// The consent of a merged subject, carried to the survivor where the survivor has said
/// nothing about that purpose (or said it earlier): the same choice, now on the survivor's
/// record, pointing back at the original.
async fn carried_over(
    state: &AppState,
    from: SubjectId,
    into: SubjectId,
    current: &mut HashMap<SubjectId, CurrentConsent>,
    now: UnixMillis,
) -> Result<Vec<ConsentRecord>, ApiError> {
    let theirs = decoded(state, from).await?;
    if theirs.is_empty() {
        return Ok(Vec::new());
    }
    let ours = decoded(state, into).await?;
    let latest_at = |records: &[ConsentRecord], pick: &dyn Fn(&ConsentRecord) -> bool| {
        records.iter().filter(|r| pick(r)).map(|r| r.at).max()
    };
    let mut latest: HashMap<(String, bool), &ConsentRecord> = HashMap::new();
    for r in &theirs {
        if r.action == ConsentAction::Pending
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

/// The notice a banner choice about `purpose` was given under: the one the event names
/// (`context.kept.notice`), else its collection point's if it promises the purpose, else the
/// first notice that does.
fn notice_for(
    manifest: &Manifest,
    m: &Message,
    point: Option<&str>,
    purpose: &str,
) -> Option<NoticeRef> {
    let promises = |id: &str| {
        manifest
            .notices
            .get(id)
            .filter(|n| n.purposes.iter().any(|p| is_within(purpose, p)))
    };
    let named = m.context_str(&["kept", "notice"]);
    let from_point = point
        .and_then(|p| manifest.collection_points.get(p))
        .map(|p| p.notice.as_str());
    let id = named
        .filter(|id| manifest.notices.contains_key(*id))
        .or_else(|| from_point.filter(|id| promises(id).is_some()))
        .or_else(|| {
            manifest
                .notices
                .iter()
                .find(|(id, _)| promises(id).is_some())
                .map(|(id, _)| id.as_str())
        })?;
    let notice = manifest.notices.get(id)?;
    Some(NoticeRef {
        id: id.to_owned(),
        version: notice.version,
        hash: notice.hash.clone(),
    })
}

/// The event as a destination receives it: Segment's shape, with the IP address hashed.
fn forward_view(
    m: &Message,
    message_id: &str,
    properties: &Value,
    context: &Map<String, Value>,
    consent: &ConsentSnapshot,
    at: UnixMillis,
) -> Value {
    let timestamp = chrono::DateTime::from_timestamp_millis(at)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    let mut out = json!({
        "type": m.kind.as_str(),
        "messageId": message_id,
        "userId": m.user_id,
        "anonymousId": m.anonymous_id,
        "timestamp": timestamp,
        "context": Value::Object(context.clone()),
        "consent": { "regime": consent.regime, "usable_for": consent.usable_for },
    });
    if let Value::Object(o) = &mut out {
        match m.kind {
            MessageKind::Track => {
                o.insert("event".into(), json!(m.name));
                o.insert("properties".into(), properties.clone());
            }
            MessageKind::Page | MessageKind::Screen => {
                o.insert("name".into(), json!(m.name));
                o.insert("properties".into(), properties.clone());
            }
            MessageKind::Identify => {
                o.insert("traits".into(), properties.clone());
            }
            MessageKind::Group | MessageKind::Alias => {
                if let Value::Object(p) = properties {
                    for (k, v) in p {
                        o.insert(k.clone(), v.clone());
                    }
                }
            }
        }
    }
    out
}
