//! Forwarding collected events to the systems the manifest gives a webhook, only where the
//! decision for every purpose the system declares allows it for that subject: no decision, no
//! delivery. Deliveries go through the durable outbox (`kept_store::outbox`): queued right after
//! the event is committed, signed per Standard Webhooks, retried with back-off and jitter, kept
//! as dead letters after the last try, and picked up again when Kept restarts.
//!
//! For an event (`DeliveryKind::Event`) the decision is asked once per event and system when
//! the event is queued (a denied subject's event is never stored for a system; collection asks
//! it and hands the answers over, `enqueue_decided`) and again just before each attempt
//! (consent withdrawn or an erasure requested in the meantime suppresses the delivery). The
//! second answer is recorded as the delivery's use (`kept_store::uses`, one per declared
//! purpose) before the request is sent. An obligation (`DeliveryKind::Obligation`: an erasure
//! or a withdrawal a system must carry out, a data subject request's obligation or step) is
//! owed exactly when the decision denies, so the worker sends it without asking, and records no
//! use; what became of a request's obligation is told to its task
//! (`requests::tasks::delivery_outcome`).

pub mod api;
pub mod backoff;
pub mod forwarder;
pub mod sign;

pub use forwarder::{DELIVERIES, ForwardConfig, Forwarder, QUEUED, WITHHELD, describe_metrics};
pub use sign::{message_id, rfc3339};

use crate::clock::Clock;
use crate::index::IndexHandle;
use futures::StreamExt;
use kept_core::decision::{Decision, DecisionRequest};
use kept_core::index::{IndexQuery, Snapshot};
use kept_core::manifest::{Manifest, System};
use kept_core::{SubjectId, UnixMillis};
use kept_store::outbox::{Attempt, Delivery, DeliveryKind, NewDelivery};
use kept_store::{Store, StoreError};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What forwarding reads and writes: the outbox (in the store), the decisions it asks (the
/// index), the systems and their webhooks (the manifest), the forwarder (settings, client,
/// worker wake-up) and the clock. Cheap to clone; the worker owns one.
#[derive(Clone)]
pub struct Forwarding {
    pub store: Arc<dyn Store>,
    pub index: IndexHandle,
    pub manifest: Arc<Manifest>,
    pub forwarder: Arc<Forwarder>,
    pub clock: Clock,
    /// The requests service, told what became of each obligation of a request (its task).
    pub requests: crate::requests::work::Work,
}

impl std::fmt::Debug for Forwarding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarding")
            .field("store", &self.store)
            .field("forwarder", &self.forwarder)
            .finish_non_exhaustive()
    }
}

/// One purpose a system declares, allowed for a subject: what was asked and what was answered.
/// The evidence is written out only for a delivery's use (`delivery_uses`), not for every
/// event that is merely queued.
#[derive(Debug, Clone)]
pub struct Allowed {
    pub request: DecisionRequest,
    pub query: IndexQuery,
    pub decision: Decision,
}

/// Whether `system` may receive an event of `subject` now: the purposes it declares, all
/// allowed (asked with the categories each use reads), or the first denial's reason code. No
/// index to ask, or no purpose declared, is a denial too.
pub fn decide_system(
    decisions: Option<&Snapshot>,
    system: &System,
    subject: SubjectId,
    now: UnixMillis,
) -> Result<Vec<Allowed>, String> {
    let Some(decisions) = decisions else {
        return Err(NO_DECISIONS.to_owned());
    };
    if system.uses.is_empty() {
        return Err(NO_PURPOSE.to_owned());
    }
    let mut allowed: Vec<Allowed> = Vec::with_capacity(system.uses.len());
    for one in &system.uses {
        let request = DecisionRequest {
            purpose: one.purpose.clone(),
            channel: None,
            topic: None,
            categories: one.categories.clone(),
        };
        let query = decisions.prepare(&request);
        let decision = decisions.decide_prepared(subject, &query, now);
        if !decision.allowed {
            return Err(decision.reason.as_str().to_owned());
        }
        allowed.push(Allowed {
            request,
            query,
            decision,
        });
    }
    Ok(allowed)
}

/// The purposes a system was allowed for, each once, in the order it declares them.
fn purposes(allowed: &[Allowed]) -> Vec<String> {
    let mut purposes: Vec<String> = Vec::with_capacity(allowed.len());
    for a in allowed {
        if !purposes.contains(&a.request.purpose) {
            purposes.push(a.request.purpose.clone());
        }
    }
    purposes
}

/// The uses a delivery makes: one per purpose the system declares, under its decision, all
/// referring to the delivery (so its retries are one use).
fn delivery_uses(
    decisions: &Snapshot,
    d: &Delivery,
    allowed: Vec<Allowed>,
    now: UnixMillis,
) -> Vec<kept_store::UseRecord> {
    allowed
        .into_iter()
        .map(|a| {
            crate::decide::uses::Use {
                kind: kept_store::UseKind::Forward,
                at: now,
                request: &a.request,
                actor: &d.system,
                reference: Some(&d.message_id),
            }
            .of_one(
                d.subject,
                crate::decide::uses::decided(decisions, &a.query, a.decision),
            )
        })
        .collect()
}

/// The latest decision snapshot, or `None` (and every use denied) when there is none.
fn decisions(index: &IndexHandle) -> Option<Arc<Snapshot>> {
    match index.snapshot() {
        Ok(snapshot) => Some(snapshot),
        Err(e) => {
            tracing::warn!(error = %e, "no decisions: nothing is forwarded");
            None
        }
    }
}

/// Withheld because the server has no decision index to ask.
pub const NO_DECISIONS: &str = "forward.no_decisions";
/// Withheld because the system declares no purpose to decide on.
pub const NO_PURPOSE: &str = "forward.no_purpose";

/// One committed event to forward.
#[derive(Debug, Clone, Copy)]
pub struct EventToForward<'a> {
    pub subject: SubjectId,
    /// The event's id (its `messageId`): one delivery per event and system, however often the
    /// client retried it.
    pub event_id: &'a str,
    /// The event as stored, sent as `data.event`.
    pub event: &'a serde_json::Value,
}

/// What forwarding did with one event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Forwarded {
    /// Systems a delivery was queued for (or already was, for a retried event).
    pub queued: Vec<String>,
    /// Systems that were not sent the event, each with the reason code of the decision.
    pub withheld: Vec<Withheld>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Withheld {
    pub system: String,
    pub reason: String,
}

impl Forwarding {
    /// Queues the deliveries of one committed event. Call it after the event's commit and
    /// before answering the client, also for an event deduplicated as a retry (it is
    /// idempotent per event and system), so that a crash between the two leaves the client
    /// retrying rather than a delivery lost.
    pub async fn enqueue_for_event(
        &self,
        subject: SubjectId,
        event_id: &str,
        event: &serde_json::Value,
    ) -> Result<Forwarded, StoreError> {
        let mut out = self
            .enqueue_for_events(&[EventToForward {
                subject,
                event_id,
                event,
            }])
            .await?;
        Ok(out.pop().unwrap_or_default())
    }

    /// Queues the deliveries of several committed events in one transaction (a batch), one
    /// answer per event in order.
    pub async fn enqueue_for_events(
        &self,
        events: &[EventToForward<'_>],
    ) -> Result<Vec<Forwarded>, StoreError> {
        let now = (self.clock)();
        let snapshot = decisions(&self.index);
        let decided = events
            .iter()
            .map(|e| decide_systems(&self.manifest, snapshot.as_deref(), e.subject, now))
            .collect();
        enqueue_decided(self.store.as_ref(), &self.forwarder, events, decided, now).await
    }
}

/// The decision for each system with a webhook, asked once for an event's subject: the
/// purposes it is allowed for, or the reason it is withheld.
pub type SystemDecisions<'m> = Vec<(&'m str, Result<Vec<Allowed>, String>)>;

/// Asks, once per system with a webhook, whether it may receive an event of `subject` now.
pub fn decide_systems<'m>(
    manifest: &'m Manifest,
    decisions: Option<&Snapshot>,
    subject: SubjectId,
    now: UnixMillis,
) -> SystemDecisions<'m> {
    manifest
        .webhook_systems()
        .map(|(key, system)| (key, decide_system(decisions, system, subject, now)))
        .collect()
}

/// Queues the deliveries of committed events whose systems were already decided
/// (`decide_systems`, one list per event, in order): a delivery for each system allowed, and
/// the others counted as withheld. One transaction; one answer per event.
pub async fn enqueue_decided(
    store: &dyn Store,
    forwarder: &Forwarder,
    events: &[EventToForward<'_>],
    decided: Vec<SystemDecisions<'_>>,
    now: UnixMillis,
) -> Result<Vec<Forwarded>, StoreError> {
    let mut deliveries = Vec::new();
    let mut answers = Vec::with_capacity(events.len());
    for (e, systems) in events.iter().zip(decided) {
        let mut answer = Forwarded::default();
        for (key, decision) in systems {
            match decision {
                Ok(allowed) => {
                    let purposes = purposes(&allowed);
                    deliveries.push(NewDelivery {
                        kind: DeliveryKind::Event,
                        message_id: message_id(e.event_id, key),
                        event_id: e.event_id.to_owned(),
                        system: key.to_owned(),
                        subject: e.subject,
                        payload: payload(key, &purposes, e.event, now),
                        created_at: now,
                    });
                    answer.queued.push(key.to_owned());
                }
                Err(reason) => {
                    count_withheld(key, &reason);
                    answer.withheld.push(Withheld {
                        system: key.to_owned(),
                        reason,
                    });
                }
            }
        }
        answers.push(answer);
    }
    if !deliveries.is_empty() {
        let added = store.enqueue_deliveries(deliveries).await?;
        if added > 0 {
            metrics::counter!(QUEUED).increment(added);
            forwarder.wake();
        }
    }
    Ok(answers)
}

/// Counts an event not queued for `system` because its decision was `reason`.
pub(crate) fn count_withheld(system: &str, reason: &str) {
    metrics::counter!(
        WITHHELD,
        "system" => system.to_owned(),
        "reason" => reason.to_owned()
    )
    .increment(1);
}

/// Problems with the manifest's webhooks, for the log at start (a secret that is not set).
pub fn webhook_warnings(manifest: &Manifest, forwarder: &Forwarder) -> Vec<String> {
    manifest
        .systems
        .iter()
        .filter_map(|(key, system)| {
            let hook = system.webhook.as_ref()?;
            sign::secret_for(hook.secret_env.as_deref(), &forwarder.secrets)
                .err()
                .map(|e| format!("system `{key}`: {e}"))
        })
        .collect()
}

/// The body sent: the Standard Webhooks envelope (`type`, `timestamp`, `data`) around the
/// event, naming the system and the purposes it was allowed for.
pub fn payload(
    system: &str,
    purposes: &[String],
    event: &serde_json::Value,
    now: UnixMillis,
) -> String {
    let kind = event
        .get("type")
        .and_then(serde_json::Value::as_str)
        .filter(|t| ["identify", "track", "page", "screen", "group", "alias"].contains(t))
        .unwrap_or("event");
    let body = serde_json::json!({
        "type": format!("event.{kind}"),
        "timestamp": rfc3339(now),
        "data": {
            "system": system,
            "purposes": purposes,
            "event": event,
        },
    });
    body.to_string()
}

/// What one round of the worker did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Round {
    pub claimed: usize,
    pub delivered: usize,
    /// Failed, to be tried again.
    pub retrying: usize,
    /// Failed for the last time: now dead letters.
    pub dead: usize,
    pub suppressed: usize,
}

impl Forwarding {
    /// Claims the deliveries due at `now` and attempts each once.
    pub async fn deliver_due(&self, now: UnixMillis) -> Result<Round, StoreError> {
        let forwarder = self.forwarder.as_ref();
        let config = &forwarder.config;
        let lease = i64::try_from(config.lease().as_millis()).unwrap_or(i64::MAX);
        let claimed = self
            .store
            .claim_due_deliveries(now, now.saturating_add(lease), config.batch)
            .await?;
        let mut round = Round {
            claimed: claimed.len(),
            ..Round::default()
        };
        let snapshot = decisions(&self.index);
        let mut cleared = Vec::with_capacity(claimed.len());
        let mut used = Vec::new();
        for d in claimed {
            match prepare(&self.manifest, forwarder, snapshot.as_deref(), &d, now) {
                Ok((ready, uses)) => {
                    used.extend(uses);
                    cleared.push((d, Ok(ready)));
                }
                Err(outcome) => cleared.push((d, Err(outcome))),
            }
        }
        // The round's uses are recorded in one transaction before any of its data leaves; when
        // they cannot be, nothing is sent and every delivery is tried again like a refused one.
        let unrecorded = match self.store.record_uses(used).await {
            Ok(_) => None,
            Err(e) => Some(format!("cannot record the use: {e}")),
        };
        let unrecorded = unrecorded.as_deref();
        let attempts: Vec<(Delivery, Attempt)> = futures::stream::iter(cleared)
            .map(|(d, ready)| async move {
                let attempt = match (ready, unrecorded) {
                    (Err(outcome), _) => outcome,
                    (Ok(_), Some(error)) => {
                        failed(forwarder, &d, now, None, error.to_owned(), None)
                    }
                    (Ok(ready), None) => send(forwarder, &d, ready, now).await,
                };
                (d, attempt)
            })
            .buffer_unordered(config.concurrency.max(1))
            .collect()
            .await;
        for (d, attempt) in attempts {
            let outcome = match &attempt {
                Attempt::Delivered { .. } => {
                    round.delivered += 1;
                    "delivered"
                }
                Attempt::Failed {
                    retry_at: Some(_),
                    error,
                    ..
                } => {
                    round.retrying += 1;
                    tracing::debug!(system = %d.system, delivery = d.id, attempts = d.attempts + 1, %error, "webhook delivery failed; will retry");
                    "failed"
                }
                Attempt::Failed {
                    retry_at: None,
                    error,
                    ..
                } => {
                    round.dead += 1;
                    tracing::warn!(system = %d.system, delivery = d.id, attempts = d.attempts + 1, %error, "webhook delivery failed for the last time; kept as a dead letter");
                    "dead"
                }
                Attempt::Suppressed { reason, .. } => {
                    round.suppressed += 1;
                    tracing::debug!(system = %d.system, delivery = d.id, %reason, "webhook delivery suppressed");
                    "suppressed"
                }
            };
            metrics::counter!(DELIVERIES, "system" => d.system.clone(), "outcome" => outcome)
                .increment(1);
            match self.store.record_attempt(d.id, &attempt).await {
                Ok(()) if d.kind == DeliveryKind::Obligation => {
                    crate::requests::tasks::delivery_outcome(&self.requests, &d, &attempt).await;
                }
                Ok(()) => {}
                // Erased meanwhile: nothing left to record.
                Err(StoreError::NotFound { .. }) => {}
                // Left claimed: it comes back when the lease runs out (at least once).
                Err(e) => {
                    tracing::warn!(delivery = d.id, error = %e, "cannot record a webhook attempt")
                }
            }
        }
        Ok(round)
    }
}

/// A delivery cleared to go: where, the secret to sign with, and the uses it makes.
struct Ready {
    url: String,
    secret: sign::WebhookSecret,
    /// A handle on the forwarder's client (cheap to clone: it shares its connections).
    client: reqwest::Client,
}

/// Everything an attempt checks before sending: the system and its webhook still there, for an
/// event the decision for every purpose the system declares (asked again now), a secret and a
/// client. Returns the delivery cleared to go with its uses, or the attempt's outcome without
/// sending. An obligation (an erasure or a withdrawal the system must carry out) is owed
/// because the decision denies, so it is not asked, and it is no use of the subject's data
/// for a purpose: it records none.
fn prepare(
    manifest: &Manifest,
    forwarder: &Forwarder,
    decisions: Option<&Snapshot>,
    d: &Delivery,
    now: UnixMillis,
) -> Result<(Ready, Vec<kept_store::UseRecord>), Attempt> {
    let suppressed = |reason: String| Attempt::Suppressed { at: now, reason };
    let Some(system) = manifest.systems.get(&d.system) else {
        return Err(suppressed(format!(
            "the system `{}` is no longer in the manifest",
            d.system
        )));
    };
    let Some(hook) = &system.webhook else {
        return Err(suppressed(format!(
            "the system `{}` no longer has a webhook",
            d.system
        )));
    };
    let uses = match d.kind {
        DeliveryKind::Event => {
            let allowed = decide_system(decisions, system, d.subject, now).map_err(suppressed)?;
            // `decide_system` denies without a snapshot, so there is one here.
            let Some(decisions) = decisions else {
                return Err(suppressed(NO_DECISIONS.to_owned()));
            };
            delivery_uses(decisions, d, allowed, now)
        }
        DeliveryKind::Obligation => Vec::new(),
    };
    let secret = sign::secret_for(hook.secret_env.as_deref(), &forwarder.secrets)
        .map_err(|e| failed(forwarder, d, now, None, e.to_string(), None))?;
    let client = forwarder
        .client()
        .map_err(|e| failed(forwarder, d, now, None, e, None))?;
    Ok((
        Ready {
            url: hook.url.clone(),
            secret,
            client: client.clone(),
        },
        uses,
    ))
}

/// A failed attempt: retried after the back-off, or a dead letter after the last one.
fn failed(
    forwarder: &Forwarder,
    d: &Delivery,
    now: UnixMillis,
    status: Option<u16>,
    error: String,
    retry_after: Option<Duration>,
) -> Attempt {
    let failed = d.attempts.saturating_add(1);
    let retry_at = (failed < forwarder.config.max_attempts).then(|| {
        let delay = forwarder
            .config
            .backoff
            .delay_with(failed, forwarder.jitter(), retry_after);
        now.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX))
    });
    Attempt::Failed {
        at: now,
        status,
        error,
        retry_at,
    }
}

/// Signs and posts one cleared delivery.
async fn send(forwarder: &Forwarder, d: &Delivery, ready: Ready, now: UnixMillis) -> Attempt {
    let timestamp = now.div_euclid(1000);
    let signature = ready
        .secret
        .sign(&d.message_id, timestamp, d.payload.as_bytes());
    let sent = ready
        .client
        .post(&ready.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", &d.message_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(d.payload.clone())
        .send()
        .await;
    match sent {
        Ok(response) if response.status().is_success() => Attempt::Delivered {
            at: now,
            status: response.status().as_u16(),
        },
        Ok(response) => {
            let status = response.status();
            let asked = backoff::retry_after(
                response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()),
            );
            failed(
                forwarder,
                d,
                now,
                Some(status.as_u16()),
                format!("the destination answered {status}"),
                asked,
            )
        }
        Err(e) => failed(forwarder, d, now, None, describe(&e), None),
    }
}

/// A transport error in words, without the URL (it may carry a token).
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "the destination did not answer in time"
    } else if e.is_connect() {
        "cannot connect to the destination"
    } else {
        "the request failed"
    };
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !causes.contains(&text) {
            causes.push(text);
        }
        source = cause.source();
    }
    if causes.is_empty() {
        what.to_owned()
    } else {
        format!("{what}: {}", causes.join(": "))
    }
}

/// Runs rounds until `stop` turns true: at once (deliveries left pending by a previous run
/// resume at start), whenever an event is queued, and every `poll_interval`.
pub fn spawn_worker(
    forwarding: Forwarding,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let forwarder = forwarding.forwarder.clone();
        let config = forwarder.config.clone();
        loop {
            if *stop.borrow() {
                break;
            }
            let full = match forwarding.deliver_due((forwarding.clock)()).await {
                Ok(round) => round.claimed >= usize::try_from(config.batch).unwrap_or(usize::MAX),
                Err(StoreError::Closed) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim webhook deliveries; trying again");
                    false
                }
            };
            if full {
                // More are due: go on, letting other tasks run in between.
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                () = forwarder.wake.notified() => {}
                () = tokio::time::sleep(config.poll_interval) => {}
                changed = stop.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_stable_per_event_and_system() {
        let a = message_id("e1", "crm");
        assert_eq!(a, message_id("e1", "crm"));
        assert_ne!(a, message_id("e1", "ads"));
        assert_ne!(a, message_id("e2", "crm"));
        // No ambiguity from where one part ends.
        assert_ne!(message_id("e1c", "rm"), a);
        assert!(a.starts_with("msg_") && a.len() == 36, "{a}");
    }

    #[test]
    fn the_payload_is_the_standard_envelope() {
        let event = serde_json::json!({"type": "track", "event": "Order Completed"});
        let body: serde_json::Value = serde_json::from_str(&payload(
            "crm",
            &["marketing.communications".to_owned()],
            &event,
            1_790_000_000_123,
        ))
        .unwrap();
        assert_eq!(body["type"], "event.track");
        assert_eq!(body["timestamp"], "2026-09-21T14:13:20.123Z");
        assert_eq!(body["data"]["system"], "crm");
        assert_eq!(body["data"]["purposes"][0], "marketing.communications");
        assert_eq!(body["data"]["event"], event);
        let odd = payload("crm", &[], &serde_json::json!({"type": "<script>"}), 0);
        assert!(odd.contains(r#""type":"event.event""#), "{odd}");
    }

    #[test]
    fn the_lease_outlasts_a_round_of_timeouts() {
        let config = ForwardConfig::default();
        // 64 deliveries, 8 at a time: 8 waves of at most 15 s each.
        assert!(config.lease() >= Duration::from_secs(8 * 15));
        assert!(config.lease() <= Duration::from_secs(10 * 60));
    }
}
