//! The quarantine: collected messages rejected one by one (a batch's unreadable message, a
//! public key speaking for a known customer without a token) are kept for seven days, sealed,
//! so that nothing a client sent is lost silently. Counted in `/metrics`, listed opened by the
//! admin role (`GET /v1/quarantine`), deleted by the retention job. It holds at most
//! `quarantine_limit` messages; beyond, a rejected message is still answered as rejected and
//! counted (`kept_quarantine_messages_dropped_total`), but not held.

use super::Collector;
use crate::http::error::ApiError;
use crate::identity::Identities;
use kept_core::UnixMillis;
use kept_core::identity::IdentityKeys;
use kept_store::quarantine::QuarantineEntry;
use kept_store::{ApiKeyRecord, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use utoipa::ToSchema;

/// How long a rejected message is held.
pub const QUARANTINE_RETENTION: UnixMillis = 7 * 24 * 60 * 60 * 1000;

pub const QUARANTINED: &str = "kept_quarantine_messages_total";
pub const DROPPED: &str = "kept_quarantine_messages_dropped_total";
pub const HELD: &str = "kept_quarantine_messages_held";

/// A message rejected on its own, with the error its own call would have been answered with.
#[derive(Debug)]
pub struct Rejected {
    /// Its position in the request (0 for a single call).
    pub index: usize,
    /// The message as it was sent.
    pub raw: String,
    pub error: ApiError,
}

/// One rejected message of a batch, as the answer lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RejectedMessage {
    /// Its position in `batch`.
    pub index: usize,
    /// The field to blame, as a path into the request (`batch[3].context.consent.
    /// categoryPreferences.ads`), or the message itself (`batch[3]`).
    #[schema(example = "batch[3].event")]
    pub path: String,
    /// The stable error code its own call would have been answered with.
    #[schema(example = "request.invalid_event")]
    pub code: String,
    pub message: String,
}

impl Rejected {
    /// The field to blame; the message itself (`batch[3]`, or the body of a single call) when
    /// no field is.
    pub fn path(&self, batch: bool) -> String {
        match self.error.body().error.field {
            Some(field) => field,
            None if batch => format!("batch[{}]", self.index),
            None => "body".to_owned(),
        }
    }

    pub fn view(&self, batch: bool) -> RejectedMessage {
        RejectedMessage {
            index: self.index,
            path: self.path(batch),
            code: self.error.code().to_owned(),
            message: self.error.to_string(),
        }
    }
}

/// What a quarantined message is sealed to: where it came from, so that a sealed message
/// cannot be moved to another row and read as sent by another key or at another time.
fn aad(key_id: &str, received_at: UnixMillis, index: u32) -> Vec<u8> {
    let mut aad = b"kept quarantined message\0".to_vec();
    aad.extend_from_slice(key_id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&received_at.to_be_bytes());
    aad.extend_from_slice(&index.to_be_bytes());
    aad
}

/// The message as it is held: the write key it may carry is a secret, and is never stored.
fn without_write_key(raw: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(serde_json::Value::Object(mut map)) => {
            if map.remove("writeKey").is_none() {
                return raw.to_owned();
            }
            serde_json::Value::Object(map).to_string()
        }
        _ => raw.to_owned(),
    }
}

/// Seals the rejected messages of one request and writes them to the quarantine, before the
/// request is answered: a client told its message was rejected can find it there. The
/// collector counts what is held; the identity keys seal it.
pub async fn hold(
    store: &dyn Store,
    collector: &Collector,
    identities: &Identities,
    key: &ApiKeyRecord,
    received_at: UnixMillis,
    batch: bool,
    rejected: &[Rejected],
) -> Result<(), ApiError> {
    if rejected.is_empty() {
        return Ok(());
    }
    let held = held(store, collector).await?;
    let limit = collector.config().quarantine_limit;
    // Room is taken before the write, so that concurrent requests cannot both take the last
    // place; a failed write gives it back.
    let wanted = rejected.len() as u64;
    let room = held
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            Some(n.saturating_add(wanted.min(limit.saturating_sub(n))))
        })
        .map(|n| wanted.min(limit.saturating_sub(n)))
        .unwrap_or(0);
    let room = usize::try_from(room).unwrap_or(usize::MAX);
    let (kept, dropped) = rejected.split_at(room.min(rejected.len()));
    for r in dropped {
        metrics::counter!(DROPPED, "code" => r.error.code()).increment(1);
    }
    if !dropped.is_empty() {
        tracing::warn!(
            dropped = dropped.len(),
            limit,
            "the quarantine is full: rejected messages are counted but not held \
             (raise `quarantine_limit`, or read and fix what is being rejected)"
        );
    }
    if kept.is_empty() {
        return Ok(());
    }
    let written = seal_and_write(store, identities, key, received_at, batch, kept).await;
    if written.is_err() {
        held.fetch_sub(kept.len() as u64, Ordering::AcqRel);
    }
    written?;
    for r in kept {
        metrics::counter!(QUARANTINED, "code" => r.error.code()).increment(1);
    }
    metrics::gauge!(HELD).set(held.load(Ordering::Acquire) as f64);
    Ok(())
}

async fn seal_and_write(
    store: &dyn Store,
    identities: &Identities,
    key: &ApiKeyRecord,
    received_at: UnixMillis,
    batch: bool,
    rejected: &[Rejected],
) -> Result<(), ApiError> {
    let keys = identities.keys(store).await?;
    let mut entries = Vec::with_capacity(rejected.len());
    for r in rejected {
        let index = u32::try_from(r.index).unwrap_or(u32::MAX);
        let mut nonce = [0u8; 24];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
        let sealed = keys
            .quarantine_key()
            .seal(
                &aad(&key.id, received_at, index),
                without_write_key(&r.raw).as_bytes(),
                nonce,
            )
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        entries.push(QuarantineEntry {
            id: 0,
            received_at,
            key_id: key.id.clone(),
            key_name: key.name.clone(),
            index,
            code: r.error.code().to_owned(),
            path: r.path(batch),
            message: r.error.to_string(),
            sealed,
        });
    }
    store.quarantine(entries).await?;
    Ok(())
}

/// This process's count of held messages, read from the store the first time.
async fn held<'c>(
    store: &dyn Store,
    collector: &'c Collector,
) -> Result<&'c AtomicU64, StoreError> {
    collector
        .quarantine_held
        .get_or_try_init(|| async { store.quarantine_len().await.map(AtomicU64::new) })
        .await
}

/// Deletes what has been held longer than [`QUARANTINE_RETENTION`] at `now`, `per_round` rows
/// per statement; returns how many.
pub async fn prune(
    store: &dyn Store,
    collector: &Collector,
    now: UnixMillis,
    per_round: u32,
) -> Result<u64, StoreError> {
    let before = now.saturating_sub(QUARANTINE_RETENTION);
    let mut deleted = 0;
    loop {
        let n = store.prune_quarantine(before, per_round).await?;
        deleted += n;
        if n < u64::from(per_round) {
            break;
        }
        tokio::task::yield_now().await;
    }
    count_held(store, collector).await;
    Ok(deleted)
}

/// Counts the held messages again from the store (which other servers may write too), for
/// the limit and the gauge.
async fn count_held(store: &dyn Store, collector: &Collector) {
    match store.quarantine_len().await {
        Ok(n) => {
            match collector.quarantine_held.get() {
                Some(held) => held.store(n, Ordering::Release),
                None => {
                    let _ = collector.quarantine_held.set(AtomicU64::new(n));
                }
            }
            metrics::gauge!(HELD).set(n as f64);
        }
        Err(e) => tracing::warn!(error = %e, "cannot count the quarantine"),
    }
}

pub fn describe_metrics() {
    metrics::describe_counter!(
        QUARANTINED,
        "collected messages rejected one by one and held in the quarantine, by error code"
    );
    metrics::describe_counter!(
        DROPPED,
        "rejected messages not held because the quarantine was full (`quarantine_limit`), by error code"
    );
    metrics::describe_gauge!(HELD, "messages the quarantine holds");
}

/// One held message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QuarantinedView {
    /// Position, for paging.
    pub id: u64,
    /// Milliseconds since the Unix epoch.
    pub received_at: i64,
    /// The public id and the name of the write key that sent it.
    pub key_id: String,
    pub key_name: String,
    /// Its position in its request (0 for a single call).
    pub index: u32,
    /// Why it was rejected.
    pub code: String,
    pub path: String,
    pub message: String,
    /// The message as it was sent (without its `writeKey`): JSON, or the text when it was not.
    #[schema(value_type = Object)]
    pub body: serde_json::Value,
    /// When it is deleted: seven days after it was received.
    pub delete_after: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QuarantinePage {
    /// Oldest first.
    pub messages: Vec<QuarantinedView>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u64>,
}

fn opened(keys: &IdentityKeys, e: QuarantineEntry) -> Result<QuarantinedView, ApiError> {
    let text = keys
        .quarantine_key()
        .open(&aad(&e.key_id, e.received_at, e.index), &e.sealed)
        .map_err(|err| {
            ApiError::Store(StoreError::Corrupt(format!(
                "quarantined message {} does not open: {err}",
                e.id
            )))
        })?;
    let text = String::from_utf8_lossy(&text).into_owned();
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    Ok(QuarantinedView {
        id: e.id,
        received_at: e.received_at,
        delete_after: e.received_at.saturating_add(QUARANTINE_RETENTION),
        key_id: e.key_id,
        key_name: e.key_name,
        index: e.index,
        code: e.code,
        path: e.path,
        message: e.message,
        body,
    })
}

/// The held messages with an id above `after`, at most `limit` (which the caller keeps within
/// `MAX_QUARANTINE_PAGE`), opened with the identity keys, oldest first.
pub async fn page(
    store: &dyn Store,
    identities: &Identities,
    after: Option<u64>,
    limit: u32,
) -> Result<QuarantinePage, ApiError> {
    let keys = identities.keys(store).await?;
    let held = store.quarantined(after, limit).await?;
    let full = held.len() == usize::try_from(limit).unwrap_or(usize::MAX);
    let messages = held
        .into_iter()
        .map(|e| opened(keys, e))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(QuarantinePage {
        next_after: if full {
            messages.last().map(|m| m.id)
        } else {
            None
        },
        messages,
    })
}
