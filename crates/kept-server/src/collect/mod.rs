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
mod identity;
mod ingest;
pub mod quarantine;
pub mod read;
pub mod retention;
pub mod routes;

pub use ingest::{RequestFacts, sends_gpc};
pub use retention::{RetentionReport, run_retention, spawn_retention};

use kept_core::identity::{Caps, IdentityKeys};
use kept_store::{Store, StoreError};
use std::fmt;
use std::path::Path;
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
/// Setting that holds the generated master secret when no key file is configured.
pub const MASTER_KEY_SETTING: &str = "collection.master_key";
/// Setting that holds the identity secret when none is configured (the demo writes one).
pub const IDENTITY_SECRET_SETTING: &str = "collection.identity_secret";

pub const EVENTS: &str = "kept_collect_events_total";
pub const MERGES: &str = "kept_identity_merges_total";
pub const REFUSALS: &str = "kept_identity_merge_refusals_total";
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

/// Reads a master secret file: 32 bytes as 64 hex digits or base64, or the raw bytes.
pub fn load_master_key(path: &Path) -> Result<[u8; 32], String> {
    use base64::Engine as _;
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    let decoded = hex::decode(text)
        .ok()
        .or_else(|| base64::engine::general_purpose::STANDARD.decode(text).ok())
        .unwrap_or(bytes);
    decoded.as_slice().try_into().map_err(|_| {
        format!(
            "`{}` must hold 32 bytes (64 hex digits or base64)",
            path.display()
        )
    })
}

/// The collection service's state: its secrets, caches and admission gate.
pub struct Collector {
    config: CollectConfig,
    keys: tokio::sync::OnceCell<IdentityKeys>,
    identity_secret: tokio::sync::OnceCell<Option<crate::config::Secret>>,
    gate: Arc<Semaphore>,
    pub(crate) cache: Mutex<identity::IdentityCache>,
    /// The consent each subject's events carried last, so that the ledger is read only when
    /// it changes.
    pub(crate) carried: Mutex<rustc_hash::FxHashMap<kept_core::SubjectId, u64>>,
    /// Write keys' default collection points, briefly remembered.
    points: Mutex<std::collections::HashMap<String, (Option<String>, Instant)>>,
    /// One identity resolution round at a time in this process: concurrent rounds would only
    /// collide on the same new identifiers and retry.
    pub(crate) resolving: tokio::sync::Mutex<()>,
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
            keys: tokio::sync::OnceCell::new(),
            identity_secret: tokio::sync::OnceCell::new(),
            cache: Mutex::new(identity::IdentityCache::default()),
            carried: Mutex::new(rustc_hash::FxHashMap::default()),
            points: Mutex::new(std::collections::HashMap::new()),
            resolving: tokio::sync::Mutex::new(()),
            quarantine_held: tokio::sync::OnceCell::new(),
            config,
        }
    }

    pub fn config(&self) -> &CollectConfig {
        &self.config
    }

    /// The identity keys, derived from the configured master secret or the one kept in the
    /// store (generated on first use).
    pub async fn keys(&self, store: &dyn Store) -> Result<&IdentityKeys, StoreError> {
        self.keys
            .get_or_try_init(|| async {
                let master = match self.config.master_key {
                    Some(master) => master,
                    None => {
                        let mut fresh = [0u8; 32];
                        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut fresh);
                        let kept = store
                            .put_setting_if_absent(MASTER_KEY_SETTING, &fresh)
                            .await?;
                        kept.as_slice().try_into().map_err(|_| {
                            StoreError::Corrupt(format!(
                                "setting `{MASTER_KEY_SETTING}` is not 32 bytes"
                            ))
                        })?
                    }
                };
                Ok(IdentityKeys::derive(&master))
            })
            .await
    }

    /// The secret identity tokens are checked with: the configured one, else the one kept in
    /// the database (the demo's); `None` when there is neither.
    pub async fn identity_secret(
        &self,
        store: &dyn Store,
    ) -> Result<Option<&crate::config::Secret>, StoreError> {
        let secret = self
            .identity_secret
            .get_or_try_init(|| async {
                if let Some(secret) = &self.config.identity_secret {
                    return Ok(Some(secret.clone()));
                }
                let stored = store.get_setting(IDENTITY_SECRET_SETTING).await?;
                Ok::<_, StoreError>(
                    stored
                        .and_then(|b| String::from_utf8(b).ok())
                        .filter(|s| !s.is_empty())
                        .map(crate::config::Secret::new),
                )
            })
            .await?;
        Ok(secret.as_ref())
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

/// The identity token for `user_id`: the hex HMAC-SHA256 of the user id under the identity
/// secret, as the shop's backend computes it (Intercom's `user_hash` pattern). A browser sends
/// it as `context.kept.userHash`; with it a public key speaks for that user.
pub fn identity_token(secret: &str, user_id: &str) -> String {
    use hmac::Mac as _;
    match hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(user_id.as_bytes());
            hex::encode(mac.finalize().into_bytes())
        }
        // HMAC takes a key of any length; this arm is never taken.
        Err(_) => String::new(),
    }
}

/// Whether `token` (hex) is the identity token for `user_id`, compared in constant time.
pub fn identity_token_matches(secret: &str, user_id: &str, token: &str) -> bool {
    use hmac::Mac as _;
    let Ok(given) = hex::decode(token.trim()) else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(user_id.as_bytes());
    mac.verify_slice(&given).is_ok()
}

/// Declares the collection metrics.
pub fn describe_metrics() {
    metrics::describe_counter!(EVENTS, "events accepted by the collection API, by type");
    metrics::describe_counter!(
        MERGES,
        "subjects merged into another by identity resolution, by reason"
    );
    metrics::describe_counter!(
        REFUSALS,
        "identifiers not attached or subjects not merged by a guard rail, by kind and reason"
    );
    metrics::describe_counter!(
        CONSENT_RECORDS,
        "consent ledger records written because an event carried a consent change"
    );
    quarantine::describe_metrics();
}
