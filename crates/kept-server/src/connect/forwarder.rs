//! The forwarding side of the server that `AppState` keeps, and that `Forwarding` hands the
//! service and its worker with the store, the index and the manifest: how deliveries are made
//! and retried, the HTTP client, the retry jitter, what wakes the worker, and the metrics it
//! counts. It imports no handler, so the state can hold it without reaching the routes.

use super::backoff::Backoff;
use super::sign::{self, SecretSource};
use rand::{Rng, SeedableRng};
use std::fmt;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::Notify;

/// How deliveries are made and retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardConfig {
    /// Attempts before a delivery becomes a dead letter (at least 1).
    pub max_attempts: u32,
    pub backoff: Backoff,
    /// A destination that has not answered after this long has failed the attempt.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// How often the worker looks for due deliveries when nothing wakes it.
    pub poll_interval: Duration,
    /// Deliveries claimed per round.
    pub batch: u32,
    /// Deliveries in flight at once.
    pub concurrency: usize,
}

impl Default for ForwardConfig {
    fn default() -> ForwardConfig {
        ForwardConfig {
            max_attempts: crate::config::DEFAULT_WEBHOOK_MAX_ATTEMPTS,
            backoff: Backoff::default(),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_secs(1),
            batch: 64,
            concurrency: 8,
        }
    }
}

impl ForwardConfig {
    /// How long a claim holds its deliveries: long enough for a whole round of attempts that
    /// all time out, so that a slow round is never claimed twice while a dead server's claims
    /// still come back within minutes.
    pub fn lease(&self) -> Duration {
        let rounds = u32::try_from(
            usize::try_from(self.batch)
                .unwrap_or(usize::MAX)
                .div_ceil(self.concurrency.max(1)),
        )
        .unwrap_or(u32::MAX);
        (self.request_timeout + self.connect_timeout)
            .saturating_mul(rounds.saturating_add(1))
            .saturating_add(Duration::from_secs(10))
    }
}

/// The forwarding side of the server: its settings, the HTTP client, and what wakes the worker.
pub struct Forwarder {
    pub(super) config: ForwardConfig,
    pub(super) secrets: SecretSource,
    client: OnceLock<Result<reqwest::Client, String>>,
    pub(super) wake: Notify,
    jitter: Mutex<rand::rngs::StdRng>,
}

impl fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Forwarder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Default for Forwarder {
    fn default() -> Forwarder {
        Forwarder::new(ForwardConfig::default())
    }
}

impl Forwarder {
    pub fn new(config: ForwardConfig) -> Forwarder {
        Forwarder {
            config,
            secrets: sign::environment(),
            client: OnceLock::new(),
            wake: Notify::new(),
            jitter: Mutex::new(rand::rngs::StdRng::from_entropy()),
        }
    }

    /// Reads webhook secrets from `secrets` instead of the process environment.
    pub fn with_secrets(mut self, secrets: SecretSource) -> Forwarder {
        self.secrets = secrets;
        self
    }

    /// Draws retry jitter from a seeded generator (reproducible tests).
    pub fn with_jitter_seed(self, seed: u64) -> Forwarder {
        Forwarder {
            jitter: Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)),
            ..self
        }
    }

    pub fn config(&self) -> &ForwardConfig {
        &self.config
    }

    /// Tells the worker that deliveries are due now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub(super) fn client(&self) -> Result<&reqwest::Client, String> {
        self.client
            .get_or_init(|| {
                reqwest::Client::builder()
                    .timeout(self.config.request_timeout)
                    .connect_timeout(self.config.connect_timeout)
                    // A webhook URL is the manifest's to choose; a redirect is not followed to
                    // somewhere the manifest never named.
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("Kept-Webhooks/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| format!("cannot build the HTTP client: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    pub(super) fn jitter(&self) -> f64 {
        match self.jitter.lock() {
            Ok(mut rng) => rng.r#gen::<f64>(),
            Err(_) => 1.0,
        }
    }
}

/// Events queued for delivery.
pub const QUEUED: &str = "kept_webhook_queued_total";
/// Events not queued for a system, by system and reason code.
pub const WITHHELD: &str = "kept_webhook_withheld_total";
/// Delivery attempts, by system and outcome (`delivered`, `failed`, `dead`, `suppressed`).
pub const DELIVERIES: &str = "kept_webhook_deliveries_total";

/// Describes the forwarding metrics (called once with the other descriptions).
pub fn describe_metrics() {
    metrics::describe_counter!(QUEUED, "webhook deliveries queued");
    metrics::describe_counter!(
        WITHHELD,
        "events not forwarded to a system because a decision denied it, by system and reason"
    );
    metrics::describe_counter!(
        DELIVERIES,
        "webhook delivery attempts, by system and outcome"
    );
}
