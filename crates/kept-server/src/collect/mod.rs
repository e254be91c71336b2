//! First-party collection, compatible with the Segment HTTP tracking API: the endpoints
//! (`/v1/identify` … `/v1/batch` and the one-letter paths browser libraries use), identity
//! resolution with its guard rails, consent on every event (fail closed), trait provenance,
//! the read API the tests and privacy team use, and the retention job.
//!
//! INVARIANT: a collection endpoint answers `{"success": true}` only after every event it
//! accepted is committed (or found already stored), every ledger record it implied is
//! committed, the index reflects both, and every message it rejected is in the quarantine.
//! An order of the ingest path, not a state one point can assert: checked end to end by
//! `a_track_call_is_committed_and_read_back`,
//! `a_consent_change_carried_by_an_event_is_written_to_the_ledger` and
//! `a_rejected_message_is_held_sealed_and_listed_to_admins`.

mod body;
pub mod ingest;
pub mod quarantine;
pub mod read;
pub mod retention;
pub mod routes;

use crate::identity::IdentityConfig;
use kept_core::identity::Caps;
use kept_store::{Store, StoreError};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A batch may hold at most this many bytes (after decompression).
pub const MAX_BATCH_BYTES: usize = 500 * 1024;
/// One event may hold at most this many bytes.
pub const MAX_EVENT_BYTES: usize = 32 * 1024;
/// A batch may hold at most this many events.
pub const MAX_BATCH_EVENTS: usize = 2500;
/// What a client is told to wait when the queue is full.
pub const RETRY_AFTER_SECS: u64 = 1;

pub const EVENTS: &str = "kept_collect_events_total";
pub const CONSENT_RECORDS: &str = "kept_collect_consent_records_total";

/// How collection behaves, from the server's configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct CollectConfig {
    /// Origins allowed to call the collection endpoints from a browser (CORS).
    pub cors_origins: Vec<String>,
    /// ISO 3166-1 alpha-2 country national phone numbers are read in.
    pub default_country: Option<String>,
    /// Events admitted at once before answering 429.
    pub queue_events: usize,
    pub caps: Caps,
    /// The master secret (32 bytes) identifiers are hashed and data keys wrapped with; `None`:
    /// generated once and kept in the database's settings.
    pub master_key: Option<[u8; 32]>,
    /// The secret identity tokens are minted with (`identity_secret`); `None`: the one in the
    /// database's settings, if any (the demo's), else a public key's token is never valid.
    pub identity_secret: Option<crate::config::Secret>,
    /// Rejected messages the quarantine holds at most; beyond, they are counted and dropped.
    pub quarantine_limit: u64,
}

impl Default for CollectConfig {
    fn default() -> CollectConfig {
        CollectConfig {
            cors_origins: Vec::new(),
            default_country: None,
            queue_events: crate::config::DEFAULT_COLLECT_QUEUE,
            caps: Caps::default(),
            master_key: None,
            identity_secret: None,
            quarantine_limit: crate::config::DEFAULT_QUARANTINE_LIMIT,
        }
    }
}

impl CollectConfig {
    /// What identity resolution needs of this configuration: the caps and the secrets.
    pub fn identity(&self) -> IdentityConfig {
        IdentityConfig {
            caps: self.caps,
            master_key: self.master_key,
            identity_secret: self.identity_secret.clone(),
            default_country: self.default_country.clone(),
        }
    }
}

impl fmt::Debug for CollectConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CollectConfig")
            .field("cors_origins", &self.cors_origins)
            .field("default_country", &self.default_country)
            .field("queue_events", &self.queue_events)
            .field("caps", &self.caps)
            .field("master_key", &self.master_key.map(|_| "***"))
            .field("identity_secret", &self.identity_secret)
            .field("quarantine_limit", &self.quarantine_limit)
            .finish()
    }
}

/// The collection service's state: its secrets, caches and admission gate.
pub struct Collector {
    config: CollectConfig,
    gate: Arc<Semaphore>,
    /// The consent each subject's events carried last, so that the ledger is read only when
    /// it changes.
    pub(crate) carried: Mutex<rustc_hash::FxHashMap<kept_core::SubjectId, u64>>,
    /// Write keys' default collection points, briefly remembered.
    points: Mutex<std::collections::HashMap<String, (Option<String>, Instant)>>,
    /// How many messages the quarantine holds, as this process last counted them: read from
    /// the store once, then kept up to date by what this process holds and prunes.
    pub(crate) quarantine_held: tokio::sync::OnceCell<std::sync::atomic::AtomicU64>,
}

impl fmt::Debug for Collector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Collector")
            .field("config", &self.config)
            .field("available", &self.gate.available_permits())
            .finish_non_exhaustive()
    }
}

impl Default for Collector {
    fn default() -> Collector {
        Collector::new(CollectConfig::default())
    }
}

/// How long a write key's default collection point is remembered.
const POINT_TTL: Duration = Duration::from_secs(5);

impl Collector {
    pub fn new(config: CollectConfig) -> Collector {
        let permits = config.queue_events.clamp(1, Semaphore::MAX_PERMITS);
        Collector {
            gate: Arc::new(Semaphore::new(permits)),
            carried: Mutex::new(rustc_hash::FxHashMap::default()),
            points: Mutex::new(std::collections::HashMap::new()),
            quarantine_held: tokio::sync::OnceCell::new(),
            config,
        }
    }

    pub fn config(&self) -> &CollectConfig {
        &self.config
    }

    /// Admits `events` events, or `None` when the queue is full (the caller answers 429).
    pub fn admit(&self, events: usize) -> Option<OwnedSemaphorePermit> {
        let cap = self.config.queue_events.clamp(1, Semaphore::MAX_PERMITS);
        let n = u32::try_from(events.clamp(1, cap)).unwrap_or(u32::MAX);
        self.gate.clone().try_acquire_many_owned(n).ok()
    }

    /// Takes `n` admission slots and holds them until the permit is dropped: for tests that
    /// need a full queue.
    pub fn occupy(&self, n: usize) -> Option<OwnedSemaphorePermit> {
        let n = u32::try_from(n).ok()?;
        self.gate.clone().try_acquire_many_owned(n).ok()
    }

    /// The collection point events sent with `key_id` are collected at when they name none.
    pub(crate) async fn default_point(
        &self,
        store: &dyn Store,
        key_id: &str,
    ) -> Result<Option<String>, StoreError> {
        if let Ok(points) = self.points.lock()
            && let Some((point, at)) = points.get(key_id)
            && at.elapsed() < POINT_TTL
        {
            return Ok(point.clone());
        }
        let point = store.key_collection_point(key_id).await?;
        if let Ok(mut points) = self.points.lock() {
            if points.len() > 10_000 {
                points.clear();
            }
            points.insert(key_id.to_owned(), (point.clone(), Instant::now()));
        }
        Ok(point)
    }

    pub(crate) fn forget_point(&self, key_id: &str) {
        if let Ok(mut points) = self.points.lock() {
            points.remove(key_id);
        }
    }
}

/// Declares the collection metrics.
pub fn describe_metrics() {
    metrics::describe_counter!(EVENTS, "events accepted by the collection API, by type");
    metrics::describe_counter!(
        crate::identity::MERGES,
        "subjects merged into another by identity resolution, by reason"
    );
    metrics::describe_counter!(
        crate::identity::REFUSALS,
        "identifiers not attached or subjects not merged by a guard rail, by kind and reason"
    );
    metrics::describe_counter!(
        CONSENT_RECORDS,
        "consent ledger records written because an event carried a consent change"
    );
}
