//! The webhook outbox: deliveries to the systems the manifest names, kept in the database until
//! they are delivered, suppressed or given up on (dead letters), so that nothing is lost while a
//! destination is down or Kept restarts. A delivery is of one of two kinds: a collected event
//! forwarded (`Event`), which goes only where the decision allows it, or a notice the company
//! owes a system (`Obligation`: an erasure or a withdrawal to carry out), which is owed exactly
//! when the decision denies and so is never gated by it.
//!
//! INVARIANT: one delivery per (event id, system); enqueueing the same pair again is a no-op, so
//! a collector may enqueue after every retry of an event without sending it twice. Held by each
//! backend's unique key, not checkable here: the conformance case
//! `outbox_enqueue_is_idempotent_per_event_and_system` checks it.
//!
//! Claiming is a lease: a claimed delivery's `next_attempt_at` moves to the end of the lease, so
//! a server that dies mid-delivery leaves it to be claimed again once the lease has run out
//! (delivery is at least once; receivers deduplicate on the message id).

use crate::columns::{Row, subject_id, to_u32, to_u64};
use crate::{Result, StoreError};
use async_trait::async_trait;
use kept_core::{SubjectId, UnixMillis};
use serde::{Deserialize, Serialize};

/// What a delivery carries, and so what may stop it.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryKind {
    /// A collected event forwarded: sent only while the decision for every purpose the system
    /// declares allows it. Every delivery stored before kinds existed is one.
    #[default]
    Event,
    /// A notice the company owes the system (an erasure or a withdrawal to carry out): owed
    /// because the decision denies, so no decision suppresses it.
    Obligation,
}

impl DeliveryKind {
    pub const ALL: [DeliveryKind; 2] = [DeliveryKind::Event, DeliveryKind::Obligation];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryKind::Event => "event",
            DeliveryKind::Obligation => "obligation",
        }
    }

    /// A stored kind column.
    pub fn from_column(s: &str) -> Result<DeliveryKind> {
        DeliveryKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown delivery kind `{s}`")))
    }

    /// Whether the decision about the subject gates this delivery: asked before it is queued
    /// and again before each attempt, a denial suppressing it.
    pub fn gated_by_decision(self) -> bool {
        self == DeliveryKind::Event
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its first or next attempt.
    Pending,
    /// The destination answered 2xx.
    Delivered,
    /// Every attempt failed: kept as a dead letter until retried by hand.
    Dead,
    /// A decision denied it after it was queued (consent withdrawn, erasure, system gone); never
    /// sent.
    Suppressed,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 4] = [
        DeliveryState::Pending,
        DeliveryState::Delivered,
        DeliveryState::Dead,
        DeliveryState::Suppressed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
            DeliveryState::Suppressed => "suppressed",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryState> {
        DeliveryState::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// A stored state column.
    pub fn from_column(s: &str) -> Result<DeliveryState> {
        DeliveryState::parse(s)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown delivery state `{s}`")))
    }
}

/// A delivery to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    pub kind: DeliveryKind,
    /// The `webhook-id` the receiver sees, the same on every attempt.
    pub message_id: String,
    /// The collected event's id (its `messageId`), or for an obligation the id of what it
    /// carries out (one delivery per id and system).
    pub event_id: String,
    /// The manifest's system key.
    pub system: String,
    pub subject: SubjectId,
    /// The exact JSON body to send.
    pub payload: String,
    pub created_at: UnixMillis,
}

/// A delivery as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: u64,
    pub kind: DeliveryKind,
    pub message_id: String,
    pub event_id: String,
    pub system: String,
    pub subject: SubjectId,
    /// The JSON body; emptied once the delivery is delivered or suppressed (nothing left to
    /// send, so the personal data it holds is not kept).
    pub payload: String,
    pub state: DeliveryState,
    /// Attempts made since it was queued or last retried by hand.
    pub attempts: u32,
    /// When a pending delivery is due (or its claim runs out).
    pub next_attempt_at: UnixMillis,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
    /// The HTTP status of the last attempt, when the destination answered.
    pub last_status: Option<u16>,
    /// Why the last attempt failed, or why the delivery was suppressed.
    pub last_error: Option<String>,
}

/// What became of one attempt (or of a check before it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The destination answered 2xx.
    Delivered { at: UnixMillis, status: u16 },
    /// The attempt failed; `retry_at: None` makes it a dead letter.
    Failed {
        at: UnixMillis,
        status: Option<u16>,
        error: String,
        retry_at: Option<UnixMillis>,
    },
    /// Not sent, and never will be; does not count as an attempt.
    Suppressed { at: UnixMillis, reason: String },
}

impl Attempt {
    /// The state the delivery is in after this attempt.
    pub fn state(&self) -> DeliveryState {
        match self {
            Attempt::Delivered { .. } => DeliveryState::Delivered,
            Attempt::Failed {
                retry_at: Some(_), ..
            } => DeliveryState::Pending,
            Attempt::Failed { retry_at: None, .. } => DeliveryState::Dead,
            Attempt::Suppressed { .. } => DeliveryState::Suppressed,
        }
    }
}

/// The SELECT list [`delivery_row`] reads, in order.
pub const DELIVERY_COLUMNS: &str = "id, message_id, event_id, system, subject_id, payload, state, \
                                    attempts, next_attempt_at, created_at, updated_at, \
                                    last_status, last_error, kind";

/// A delivery from [`DELIVERY_COLUMNS`] starting at column `at`.
pub fn delivery_row(row: &impl Row, at: usize) -> Result<Delivery> {
    Ok(Delivery {
        id: to_u64(row.int(at)?, "delivery id")?,
        message_id: row.text(at + 1)?,
        event_id: row.text(at + 2)?,
        system: row.text(at + 3)?,
        subject: subject_id(row.int(at + 4)?)?,
        payload: row.text(at + 5)?,
        state: DeliveryState::from_column(&row.text(at + 6)?)?,
        attempts: to_u32(row.int(at + 7)?, "delivery attempts")?,
        next_attempt_at: row.int(at + 8)?,
        created_at: row.int(at + 9)?,
        updated_at: row.int(at + 10)?,
        last_status: status_column(row.int_opt(at + 11)?)?,
        last_error: row.text_opt(at + 12)?,
        kind: DeliveryKind::from_column(&row.text(at + 13)?)?,
    })
}

/// A stored HTTP status column.
pub fn status_column(status: Option<i64>) -> Result<Option<u16>> {
    status
        .map(|s| {
            u16::try_from(s)
                .map_err(|_| StoreError::Corrupt(format!("HTTP status `{s}` is out of range")))
        })
        .transpose()
}

impl OutboxCounts {
    /// Adds `n` deliveries in `state`.
    pub fn add(&mut self, state: DeliveryState, n: u64) {
        match state {
            DeliveryState::Pending => self.pending += n,
            DeliveryState::Delivered => self.delivered += n,
            DeliveryState::Dead => self.dead += n,
            DeliveryState::Suppressed => self.suppressed += n,
        }
    }
}

/// How many deliveries are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxCounts {
    pub pending: u64,
    pub delivered: u64,
    pub dead: u64,
    pub suppressed: u64,
}

/// Persistence of the webhook outbox. Every `Store` is an `Outbox`; the conformance cases in
/// [`conformance`] run against each backend.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Queues deliveries, due at once, in one transaction. A delivery whose (event id, system)
    /// is already queued, in any state, is skipped. Returns how many were new.
    async fn enqueue_deliveries(&self, deliveries: Vec<NewDelivery>) -> Result<u64>;

    /// Claims up to `limit` pending deliveries due at `now` (oldest due first): each one's
    /// `next_attempt_at` becomes `lease_until`, so no other worker claims it meanwhile. Two
    /// concurrent claims never return the same delivery.
    async fn claim_due_deliveries(
        &self,
        now: UnixMillis,
        lease_until: UnixMillis,
        limit: u32,
    ) -> Result<Vec<Delivery>>;

    /// Records what became of an attempt on a pending delivery. `NotFound` when no pending
    /// delivery has this id.
    async fn record_attempt(&self, id: u64, attempt: &Attempt) -> Result<()>;

    async fn delivery(&self, id: u64) -> Result<Option<Delivery>>;

    /// Every delivery of one event, by system.
    async fn deliveries_for_event(&self, event_id: &str) -> Result<Vec<Delivery>>;

    /// Dead letters with `id > after`, in id order, at most `limit`.
    async fn dead_deliveries(&self, after: Option<u64>, limit: u32) -> Result<Vec<Delivery>>;

    /// Puts a dead letter back in the queue, due at `now`, with its attempts reset. `NotFound`
    /// when no dead letter has this id.
    async fn retry_dead_delivery(&self, id: u64, now: UnixMillis) -> Result<Delivery>;

    /// Deletes every event delivery of a subject (erasure). Its obligations stay: they are what
    /// carries the erasure out, and keep a payload only until delivered. Returns how many were
    /// deleted.
    async fn delete_subject_deliveries(&self, subject: SubjectId) -> Result<u64>;

    async fn outbox_counts(&self) -> Result<OutboxCounts>;

    /// A subject's deliveries with `id > after`, in id order, at most `limit` (an access
    /// export pages through them).
    async fn deliveries_of(
        &self,
        subject: SubjectId,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Vec<Delivery>>;
}
