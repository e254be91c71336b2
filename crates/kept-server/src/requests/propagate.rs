//! Propagation of a data subject request to the manifest's systems, through the outbox: the
//! obligation each system owes (erase, rectify, restrict, object, opt out, limit sensitive),
//! with the identifiers it knows the subject by and a callback to acknowledge it, and the
//! lifecycle steps systems that subscribe (`lifecycle = true`) are sent. Both are
//! `DeliveryKind::Obligation`: signed, retried, dead-lettered, never suppressed by a decision.
//!
//! INVARIANT: one obligation per (request, system): its outbox key is the request's
//! (`request:<id>`) and the system's, so queueing it again (a sweep after a crash between the
//! step and the queueing) adds nothing.

use crate::connect::sign::{message_id, rfc3339};
use crate::http::error::ApiError;
use crate::requests::work::{Work, owed};
use hmac::Mac as _;
use kept_core::UnixMillis;
use kept_core::identity::IdentifierKind;
use kept_core::manifest::{Acknowledge, System, is_within};
use kept_core::requests::{Request, RequestKind, State};
use kept_store::outbox::{DeliveryKind, NewDelivery};
use kept_store::requests::{RequestTask, Stepped};
use kept_store::{Store, StoreError};

/// The store setting holding the secret acknowledgement tokens are made with: 32 random bytes,
/// generated on first use, the same for every server sharing the database.
pub const ACK_SECRET_SETTING: &str = "requests.ack_secret";

/// What the outbox keys an obligation by, with its system.
pub fn obligation_key(request: u64) -> String {
    format!("request:{request}")
}

/// The request an obligation's outbox key names, if it is one.
pub fn obligation_request(event_id: &str) -> Option<u64> {
    event_id.strip_prefix("request:")?.parse().ok()
}

/// What the outbox keys a lifecycle step by: the step's place in the requests log.
fn lifecycle_key(request: u64, seq: u64) -> String {
    format!("request:{request}:step:{seq}")
}

/// The secret acknowledgement tokens are made with.
pub async fn ack_secret(store: &dyn Store) -> Result<[u8; 32], StoreError> {
    // Read first: only the very first use writes.
    let kept = match store.get_setting(ACK_SECRET_SETTING).await? {
        Some(kept) => kept,
        None => {
            let mut fresh = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut fresh);
            store
                .put_setting_if_absent(ACK_SECRET_SETTING, &fresh)
                .await?
        }
    };
    kept.as_slice()
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("setting `{ACK_SECRET_SETTING}` is not 32 bytes")))
}

fn ack_mac(secret: &[u8; 32], request: u64, system: &str) -> Option<hmac::Hmac<sha2::Sha256>> {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).ok()?;
    mac.update(b"kept.request-ack.v1\0");
    mac.update(request.to_string().as_bytes());
    mac.update(b"\0");
    mac.update(system.as_bytes());
    Some(mac)
}

/// The token a system acknowledges request `request`'s obligation with: the hex HMAC-SHA256
/// of the request and the system under the secret. It is the authority of the callback, which
/// needs no API key.
pub fn ack_token(secret: &[u8; 32], request: u64, system: &str) -> String {
    ack_mac(secret, request, system)
        .map(|mac| hex::encode(mac.finalize().into_bytes()))
        .unwrap_or_default()
}

/// Whether `token` is the acknowledgement token of `request` for `system`, compared in
/// constant time.
pub fn ack_matches(secret: &[u8; 32], request: u64, system: &str, token: &str) -> bool {
    let Ok(given) = hex::decode(token.trim()) else {
        return false;
    };
    ack_mac(secret, request, system).is_some_and(|mac| mac.verify_slice(&given).is_ok())
}

/// What a system is asked to do for a request of `kind`.
pub fn action(kind: RequestKind) -> Option<&'static str> {
    match kind {
        RequestKind::Erasure => Some("erase"),
        RequestKind::Rectification => Some("rectify"),
        RequestKind::Restriction => Some("restrict"),
        RequestKind::Objection => Some("object"),
        RequestKind::OptOut => Some("opt_out"),
        RequestKind::LimitSensitive => Some("limit_sensitive"),
        RequestKind::Access | RequestKind::Portability => None,
    }
}

/// The identifier kinds a system knows a subject by: the company's user id always, an email
/// address or a phone number when one of its declared uses reads that category.
fn known_by(system: &System, kind: IdentifierKind) -> bool {
    let category = match kind {
        IdentifierKind::UserId => return true,
        IdentifierKind::Email => kept_core::decision::EMAIL_CATEGORY,
        IdentifierKind::Phone => "user.contact.phone",
        IdentifierKind::AnonymousId => return false,
    };
    system
        .uses
        .iter()
        .flat_map(|u| &u.categories)
        .any(|declared| is_within(category, declared))
}

/// The body of an obligation: the Standard Webhooks envelope around what the system must do.
#[allow(clippy::too_many_arguments, reason = "one body, each part named")]
fn obligation_body(
    request: &Request,
    key: &str,
    system: &System,
    identifiers: &[(IdentifierKind, Option<String>, UnixMillis)],
    secret: &[u8; 32],
    base_url: &str,
    now: UnixMillis,
) -> String {
    let mut subject = serde_json::Map::new();
    for (kind, value, _) in identifiers {
        if let Some(value) = value
            && known_by(system, *kind)
            && !subject.contains_key(kind.as_str())
        {
            subject.insert(kind.as_str().to_owned(), value.clone().into());
        }
    }
    let acknowledge = system
        .webhook
        .as_ref()
        .map(|h| h.acknowledge)
        .unwrap_or_default();
    let mut data = serde_json::json!({
        "request": request.id,
        "kind": request.kind.as_str(),
        "action": action(request.kind),
        "system": key,
        "scope": request.scope,
        "subject": subject,
        "due_at": rfc3339(request.due_at),
        "acknowledge": acknowledge.as_str(),
    });
    if acknowledge == Acknowledge::Callback
        && let Some(data) = data.as_object_mut()
    {
        data.insert(
            "callback".to_owned(),
            serde_json::json!({
                "url": format!("{base_url}/v1/requests/{}/systems/{key}/ack", request.id),
                "token": ack_token(secret, request.id, key),
            }),
        );
    }
    serde_json::json!({
        "type": "request.obligation",
        "timestamp": rfc3339(now),
        "data": data,
    })
    .to_string()
}

/// Opens the work of a request in progress: a task for every target it owes, then an
/// obligation queued for every system target whose task is not settled. Idempotent: called
/// when the request enters `in_progress`, and again by the sweep for every request in
/// progress, it adds only what is missing. Returns the request's tasks.
pub async fn open(
    work: &Work,
    request: &Request,
    now: UnixMillis,
) -> Result<Vec<RequestTask>, ApiError> {
    let targets: Vec<String> = owed(&work.manifest, request)
        .iter()
        .map(ToString::to_string)
        .collect();
    // Read first: the sweep finds them all there, and writes nothing.
    let existing = work.store.request_tasks(request.id).await?;
    let tasks = if targets
        .iter()
        .all(|target| existing.iter().any(|t| &t.target == target))
    {
        existing
    } else {
        work.store
            .create_request_tasks(request.id, &targets, now)
            .await?
    };
    let owed_systems: Vec<&str> = tasks
        .iter()
        .filter(|t| !t.state.is_settled())
        .filter_map(|t| t.target.strip_prefix("system:"))
        .collect();
    if owed_systems.is_empty() || action(request.kind).is_none() {
        return Ok(tasks);
    }
    // Queued already for every system (the sweep's usual case): nothing to open again.
    let queued = work
        .store
        .deliveries_for_event(&obligation_key(request.id))
        .await?;
    let missing: Vec<&str> = owed_systems
        .into_iter()
        .filter(|s| !queued.iter().any(|d| d.system == *s))
        .collect();
    if missing.is_empty() {
        return Ok(tasks);
    }
    let secret = ack_secret(work.store.as_ref()).await?;
    let mut identifiers = crate::subjects::identifiers::opened(
        work.store.as_ref(),
        &work.identities,
        request.subject,
    )
    .await?;
    // The company's user id is the subject's own column, not a sealed identifier.
    if let Some(subject) = work.store.subject(request.subject).await?
        && let Some(user_id) = subject.user_id
    {
        identifiers.insert(
            0,
            (IdentifierKind::UserId, Some(user_id), subject.created_at),
        );
    }
    let event_id = obligation_key(request.id);
    let deliveries: Vec<NewDelivery> = missing
        .into_iter()
        .filter_map(|key| {
            let system = work.manifest.systems.get(key)?;
            Some(NewDelivery {
                kind: DeliveryKind::Obligation,
                message_id: message_id(&event_id, key),
                event_id: event_id.clone(),
                system: key.to_owned(),
                subject: request.subject,
                payload: obligation_body(
                    request,
                    key,
                    system,
                    &identifiers,
                    &secret,
                    &work.base_url,
                    now,
                ),
                created_at: now,
            })
        })
        .collect();
    queue(work, deliveries).await?;
    Ok(tasks)
}

/// Queues `deliveries` and wakes the worker when one was new.
async fn queue(work: &Work, deliveries: Vec<NewDelivery>) -> Result<(), StoreError> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let added = work.store.enqueue_deliveries(deliveries).await?;
    if added > 0 {
        metrics::counter!(crate::connect::forwarder::QUEUED).increment(added);
        if let Some(forwarder) = &work.forwarder {
            forwarder.wake();
        }
    }
    Ok(())
}

/// Whether a log record is a request entering a state (its intake, or a step to another state),
/// not a task settled while it stays where it is.
pub fn entered(record: &kept_core::requests::LogRecord) -> bool {
    record.from != Some(record.to)
}

/// The lifecycle event type of a request entering `state`.
pub fn lifecycle_type(state: State) -> String {
    format!("request.{}", state.as_str())
}

/// Queues one committed step of a request for every system that subscribes to the lifecycle
/// (`lifecycle = true` in its webhook): the request's id, kind, state and due date, and the
/// step's place in the requests log, no personal data. A step that does not change the state
/// (a task settled) is not one.
pub async fn lifecycle(work: &Work, stepped: &Stepped) -> Result<(), StoreError> {
    let request = &stepped.request;
    let record = kept_core::requests::decode_record(&stepped.entry.bytes)
        .map_err(|e| StoreError::Corrupt(format!("a step just written does not decode: {e}")))?;
    if !entered(&record) {
        return Ok(());
    }
    let event_id = lifecycle_key(request.id, stepped.entry.seq);
    let deliveries = work
        .manifest
        .webhook_systems()
        .filter(|(_, system)| system.webhook.as_ref().is_some_and(|h| h.lifecycle))
        .map(|(key, _)| NewDelivery {
            kind: DeliveryKind::Obligation,
            message_id: message_id(&event_id, key),
            event_id: event_id.clone(),
            system: key.to_owned(),
            subject: request.subject,
            payload: serde_json::json!({
                "type": lifecycle_type(request.state),
                "timestamp": rfc3339(record.at),
                "data": {
                    "request": request.id,
                    "kind": request.kind.as_str(),
                    "from": record.from.map(State::as_str),
                    "state": request.state.as_str(),
                    "due_at": rfc3339(request.due_at),
                    "seq": stepped.entry.seq,
                    "reason": record.reason,
                },
            })
            .to_string(),
            created_at: record.at,
        })
        .collect();
    queue(work, deliveries).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_tokens_name_one_request_and_one_system() {
        let secret = [7u8; 32];
        let token = ack_token(&secret, 12, "crm");
        assert_eq!(token.len(), 64);
        assert!(ack_matches(&secret, 12, "crm", &token));
        assert!(!ack_matches(&secret, 13, "crm", &token));
        assert!(!ack_matches(&secret, 12, "crm2", &token));
        assert!(!ack_matches(
            &secret,
            1,
            "2crm",
            &ack_token(&secret, 12, "crm")
        ));
        assert!(!ack_matches(&[8u8; 32], 12, "crm", &token));
        assert!(!ack_matches(&secret, 12, "crm", "not hex"));
        assert!(!ack_matches(&secret, 12, "crm", ""));
        assert_eq!(obligation_request(&obligation_key(12)), Some(12));
        assert_eq!(obligation_request("request:12:step:3"), None);
        assert_eq!(obligation_request("evt-1"), None);
    }

    #[test]
    fn a_system_is_sent_the_identifiers_its_uses_read() {
        let reading = |categories: &[&str]| System {
            name: "x".into(),
            owner: "t".into(),
            uses: vec![kept_core::manifest::SystemUse {
                purpose: "p".into(),
                categories: categories.iter().map(|c| (*c).to_owned()).collect(),
                channels: vec![],
            }],
            webhook: None,
        };
        let contact = reading(&["user.contact"]);
        let email = reading(&["user.contact.email"]);
        let browsing = reading(&["user.behavior.browsing_history"]);
        for (system, email_sent, phone_sent) in [
            (&contact, true, true),
            (&email, true, false),
            (&browsing, false, false),
        ] {
            assert!(known_by(system, IdentifierKind::UserId));
            assert_eq!(known_by(system, IdentifierKind::Email), email_sent);
            assert_eq!(known_by(system, IdentifierKind::Phone), phone_sent);
            assert!(!known_by(system, IdentifierKind::AnonymousId));
        }
    }
}
