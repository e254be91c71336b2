//! What every handler can reach (`AppState`), where handlers read the time from (`Clock`) and
//! the limits applied to every request (`Limits`).

use crate::config::DEFAULT_BODY_LIMIT;
use crate::connect::forwarder::Forwarder;
use crate::consent::ledger::Ledger;
use crate::decide::log::DecisionLog;
use crate::http::auth::Authenticator;
use crate::index::IndexHandle;
use crate::observe;
use axum::extract::FromRef;
use kept_core::UnixMillis;
use kept_core::manifest::{Loaded, Manifest};
use kept_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use crate::clock::{Clock, system_now};

/// Limits applied to every request, and how far its client's address is believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub body_limit: usize,
    pub request_timeout: Duration,
    /// Reverse proxies in front that append to `X-Forwarded-For` (see `client_ip`).
    pub trusted_proxies: u8,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            body_limit: DEFAULT_BODY_LIMIT,
            request_timeout: Duration::from_secs(30),
            trusted_proxies: 0,
        }
    }
}

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub ledger: Arc<Ledger>,
    pub manifest: Arc<Manifest>,
    /// The manifest as loaded from its file (positions, custom purposes), for the console's
    /// live `kept lint`; `None` when the server was handed a bare manifest.
    pub manifest_source: Option<Arc<Loaded>>,
    pub auth: Arc<Authenticator>,
    pub metrics: PrometheusHandle,
    pub clock: Clock,
    pub limits: Limits,
    /// The in-memory index decisions and audiences read; every write path applies to it.
    pub index: IndexHandle,
    /// Where denied (and sampled allowed) decisions are logged, off the request path.
    pub decision_log: DecisionLog,
    /// Webhook forwarding: its settings, HTTP client and worker wake-up.
    pub forward: Arc<Forwarder>,
    /// First-party collection: its caches and admission gate.
    pub collect: Arc<crate::collect::Collector>,
    /// Identity: its keys and secret, the cache of known identifiers, the resolution lock.
    pub identity: Arc<crate::identity::Identities>,
    /// The preference center: its signing keys, mailer and sign-in limits.
    pub prefcenter: Arc<crate::prefcenter::PrefCenter>,
    /// The console: its token keys, session lifetimes and sign-in brakes.
    pub console: Arc<crate::console::Console>,
    /// Where the connectors read each dataset's URL: the environment variable it names.
    pub dataset_urls: Arc<crate::subjects::export::DatasetUrls>,
}

impl fmt::Debug for AppState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppState")
            .field("store", &self.store)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State on the system clock with default limits.
    pub fn new(store: Arc<dyn Store>, ledger: Arc<Ledger>, manifest: Arc<Manifest>) -> AppState {
        let index = IndexHandle::new(&manifest);
        let decision_log = DecisionLog::start(store.clone());
        AppState {
            auth: Arc::new(Authenticator::new(store.clone())),
            store,
            ledger,
            manifest,
            manifest_source: None,
            metrics: prometheus(),
            clock: Arc::new(system_now),
            limits: Limits::default(),
            index,
            decision_log,
            forward: Arc::new(Forwarder::default()),
            collect: Arc::new(crate::collect::Collector::default()),
            identity: Arc::new(crate::identity::Identities::default()),
            prefcenter: Arc::new(crate::prefcenter::PrefCenter::default()),
            console: Arc::new(crate::console::Console::default()),
            dataset_urls: Arc::new(|name: &str| std::env::var(name).ok()),
        }
    }

    /// Reads the datasets' URLs through `urls` instead of the environment.
    pub fn with_dataset_urls(
        mut self,
        urls: Arc<crate::subjects::export::DatasetUrls>,
    ) -> AppState {
        self.dataset_urls = urls;
        self
    }

    /// Collects with `collector` (its configuration) instead of the defaults, and resolves
    /// identities with the caps and secrets that configuration names.
    pub fn with_collector(mut self, collector: crate::collect::Collector) -> AppState {
        let identity = crate::identity::Identities::new(collector.config().identity());
        self.identity = Arc::new(identity);
        self.collect = Arc::new(collector);
        self
    }

    /// Runs the preference center with `prefcenter` (its settings, its mailer).
    pub fn with_prefcenter(mut self, prefcenter: crate::prefcenter::PrefCenter) -> AppState {
        self.prefcenter = Arc::new(prefcenter);
        self
    }

    /// Forwards through `forwarder` (its settings, its secrets) instead of the defaults.
    pub fn with_forwarder(mut self, forwarder: Forwarder) -> AppState {
        self.forward = Arc::new(forwarder);
        self
    }

    /// Logs decisions through `log` instead of the writer `new` started.
    pub fn with_decision_log(mut self, log: DecisionLog) -> AppState {
        self.decision_log = log;
        self
    }

    /// Keeps the file `manifest` was loaded from, so the console can lint it.
    pub fn with_manifest_source(mut self, loaded: Arc<Loaded>) -> AppState {
        // INVARIANT: the source is the manifest this state runs, or lint would speak of
        // another one.
        debug_assert!(loaded.manifest == *self.manifest);
        self.manifest_source = Some(loaded);
        self
    }

    /// Replaces the (empty) index `new` made with one already built.
    pub fn with_index(mut self, index: IndexHandle) -> AppState {
        self.index = index;
        self
    }

    pub fn with_limits(mut self, limits: Limits) -> AppState {
        self.limits = limits;
        self
    }

    pub fn with_clock(mut self, clock: Clock) -> AppState {
        self.clock = clock;
        self
    }

    pub fn now(&self) -> UnixMillis {
        (self.clock)()
    }

    /// What the requests service works with, of this state: callbacks are addressed at the
    /// server's public URL (the preference center's, `public_url`).
    pub fn work(&self) -> crate::requests::work::Work {
        crate::requests::work::Work {
            store: self.store.clone(),
            ledger: self.ledger.clone(),
            manifest: self.manifest.clone(),
            identities: self.identity.clone(),
            forwarder: Some(self.forward.clone()),
            base_url: self.prefcenter.base_url().to_owned(),
        }
    }

    /// What following the other servers on one database needs of this state (`sync::spawn`).
    pub fn follower(&self) -> crate::sync::Follower {
        crate::sync::Follower {
            store: self.store.clone(),
            index: self.index.clone(),
            identity: self.identity.clone(),
            clock: self.clock.clone(),
        }
    }

    /// What forwarding (queueing deliveries, the worker's rounds) needs of this state.
    pub fn forwarding(&self) -> crate::connect::Forwarding {
        crate::connect::Forwarding {
            store: self.store.clone(),
            index: self.index.clone(),
            manifest: self.manifest.clone(),
            forwarder: self.forward.clone(),
            clock: self.clock.clone(),
            requests: self.work(),
        }
    }

    /// What the retention job needs of this state.
    pub fn retention(&self) -> crate::collect::retention::Retention {
        crate::collect::retention::Retention {
            store: self.store.clone(),
            manifest: self.manifest.clone(),
            index: self.index.clone(),
            decision_log: self.decision_log.clone(),
            collector: self.collect.clone(),
            clock: self.clock.clone(),
        }
    }

    /// What resolving the subject a caller names reads of this state.
    pub fn lookup(&self) -> crate::identity::resolve::Lookup<'_> {
        crate::identity::resolve::Lookup {
            store: self.store.as_ref(),
            index: &self.index,
            identities: &self.identity,
        }
    }

    /// What a change of mind in the preference center writes through, of this state.
    pub fn changes(&self) -> crate::prefcenter::model::Changes<'_> {
        crate::prefcenter::model::Changes {
            store: self.store.as_ref(),
            ledger: &self.ledger,
            index: &self.index,
            manifest: &self.manifest,
            identities: &self.identity,
            prefcenter: &self.prefcenter,
        }
    }

    /// What handing an access request's export over reads and writes of this state.
    pub fn hand_over(&self) -> crate::requests::export::HandOver<'_> {
        crate::requests::export::HandOver {
            export: self.export(),
            index: &self.index,
            work: self.work(),
        }
    }

    /// What taking a request's next step uses of this state (`requests::steps`).
    pub fn steps(&self) -> crate::requests::steps::Steps<'_> {
        crate::requests::steps::Steps {
            hand_over: self.hand_over(),
            carry: crate::requests::carry::CarryOut {
                store: self.store.as_ref(),
                identities: &self.identity,
                index: &self.index,
                manifest: &self.manifest,
            },
        }
    }

    /// What carrying out an erasure request uses of this state and of `work` (`AppState::work`);
    /// dataset URLs come from the process environment.
    pub fn erasure<'a>(
        &'a self,
        work: &'a crate::requests::work::Work,
    ) -> crate::requests::erase::Erasure<'a> {
        crate::requests::erase::Erasure {
            store: self.store.as_ref(),
            work,
            identities: &self.identity,
            manifest: &self.manifest,
            index: Some(&self.index),
            env: &crate::requests::erase::ProcessEnv,
        }
    }

    /// What exporting everything held about a subject reads of this state.
    pub fn export(&self) -> crate::subjects::export::Export<'_> {
        crate::subjects::export::Export {
            store: self.store.as_ref(),
            identities: &self.identity,
            manifest: &self.manifest,
            dataset_urls: self.dataset_urls.as_ref(),
        }
    }
}

/// The metrics recorder, with every metric described (the HTTP layer's, and forwarding's,
/// which counts from its own worker).
fn prometheus() -> PrometheusHandle {
    let handle = observe::prometheus();
    crate::connect::forwarder::describe_metrics();
    handle
}

impl FromRef<AppState> for Arc<Authenticator> {
    fn from_ref(state: &AppState) -> Arc<Authenticator> {
        state.auth.clone()
    }
}
