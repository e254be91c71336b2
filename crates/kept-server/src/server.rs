//! Starting and stopping the server: open the store (migrations run), record the manifest's
//! notice hashes, load the ledger key, load the demo when asked, bind; then serve until a
//! signal, let in-flight requests finish, and sign a final ledger checkpoint.

use crate::config::{Config, DatabaseUrl};
use crate::connect::{self, ForwardConfig, Forwarder};
use crate::consent::ledger::{self, Ledger};
use crate::demo::{self, DemoLoadError};
use crate::state::{self, AppState, Limits};
use crate::store;
use kept_core::manifest::Loaded;
use kept_store::{Store, StoreError};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// How long shutdown waits for the webhook worker's round in flight.
const FORWARDING_STOP: Duration = Duration::from_secs(5);

/// How often the work of requests in progress is swept (`requests::tasks::sweep`).
const REQUEST_SWEEP: Duration = Duration::from_secs(60);

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "no ledger signing key: set `ledger_key_file` in [server] of the manifest, \
         `KEPT_LEDGER_KEY_FILE` or `--ledger-key-file`; create a key with \
         `kept keys ledger-keygen kept-ledger.key` (or run `kept serve --demo`)"
    )]
    NoLedgerKey,
    #[error("cannot use the ledger key in `{path}`: {message}")]
    LedgerKey { path: PathBuf, message: String },
    #[error(transparent)]
    Demo(#[from] DemoLoadError),
    #[error("cannot listen on `{addr}`: {message}")]
    Bind { addr: SocketAddr, message: String },
    #[error("cannot create the data directory `{path}`: {message}")]
    DataDir { path: PathBuf, message: String },
    #[error("the server stopped: {0}")]
    Io(String),
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    #[error("cannot use the master key in `{path}`: {message}")]
    MasterKey { path: PathBuf, message: String },
    #[error(transparent)]
    Mail(#[from] crate::prefcenter::mail::MailError),
    #[error(transparent)]
    Witness(#[from] crate::consent::witness::WitnessError),
}

impl ServeError {
    pub fn code(&self) -> &'static str {
        match self {
            ServeError::Store(e) => e.code(),
            ServeError::NoLedgerKey => "serve.no_ledger_key",
            ServeError::LedgerKey { .. } => "serve.ledger_key",
            ServeError::Demo(e) => e.code(),
            ServeError::Bind { .. } => "serve.bind",
            ServeError::DataDir { .. } => "serve.data_dir",
            ServeError::Io(_) => "serve.io",
            ServeError::Index(e) => e.code(),
            ServeError::MasterKey { .. } => "serve.master_key",
            ServeError::Mail(e) => e.code(),
            ServeError::Witness(e) => e.code(),
        }
    }
}

/// A server that is bound and ready, not yet answering.
#[derive(Debug)]
pub struct Server {
    config: Config,
    state: AppState,
    listener: TcpListener,
    addr: SocketAddr,
    /// What other servers on the same database announce (PostgreSQL), heard since before the
    /// index was built.
    heard: Option<tokio::sync::mpsc::Receiver<kept_store::Heard>>,
}

impl Server {
    /// Opens the store, prepares the ledger (and the demo), and binds `config.bind`.
    pub async fn start(config: Config, loaded: Loaded) -> Result<Server, ServeError> {
        let manifest = loaded.manifest.clone();
        let started = Instant::now();
        let now = state::system_now();
        // Installed first so that the demo's appends are counted too.
        crate::observe::prometheus();
        create_sqlite_dir(&config.database_url)?;
        let store = store::open(config.database_url.expose()).await?;
        crate::console::datamap::record_notices(store.as_ref(), &manifest, now).await?;
        let signing_key = match (&config.ledger_key_file, config.demo) {
            (Some(path), _) => {
                ledger::load_signing_key(path).map_err(|e| ServeError::LedgerKey {
                    path: path.clone(),
                    message: e.to_string(),
                })?
            }
            (None, true) => ledger::demo_signing_key(store.as_ref()).await?,
            (None, false) => return Err(ServeError::NoLedgerKey),
        };
        let mut ledger = Ledger::new(store.clone(), signing_key);
        if let Some(path) = config.witness_path() {
            let witness = crate::consent::witness::Witness::open(
                &path,
                config.ledger_witness_url.as_deref(),
                WITNESS_RETRY,
            )?;
            ledger = ledger.with_witness(Arc::new(witness));
        }
        if let Some(path) = config.requests_witness_path() {
            let witness = crate::consent::witness::Witness::open(&path, None, WITNESS_RETRY)?;
            ledger = ledger.with_requests_witness(Arc::new(witness));
        }
        let ledger = Arc::new(ledger);
        // Records no checkpoint covers yet (a crash of an older release, another writer) are
        // covered before anything else is appended.
        if let Some(cp) = ledger.checkpoint_now().await? {
            tracing::warn!(
                seq = cp.seq,
                "signed a ledger checkpoint over records left without one (an older release's crash, or another writer)"
            );
        }
        let compiled = crate::index::compile(&manifest)
            .map_err(|e| crate::index::IndexError::Unavailable(e.to_string()))?;
        let master_key = match &config.master_key_file {
            Some(path) => Some(crate::identity::load_master_key(path).map_err(|message| {
                ServeError::MasterKey {
                    path: path.clone(),
                    message,
                }
            })?),
            None => None,
        };
        let startup = started.elapsed();

        let mut demo_time = Duration::ZERO;
        if config.demo {
            let demo_started = Instant::now();
            demo::load_if_empty(store.as_ref(), &ledger, &manifest, now, &config.data_dir).await?;
            demo_time = demo_started.elapsed();
        }
        // Other servers on the same database (PostgreSQL) are heard from before the build, so
        // nothing they write while it runs is missed.
        let heard = store.listen().await?;
        // Built after the demo so it holds the demo; from here every write applies to it.
        let index = crate::index::IndexHandle::with_compiled(compiled);
        index
            .load(store.as_ref(), state::system_now(), &mut |_| {})
            .await?;
        index.read_from_store(config.consent_reads == crate::config::ConsentReads::Store);

        let state = AppState::new(store, ledger, Arc::new(manifest))
            .with_manifest_source(Arc::new(loaded))
            .with_index(index)
            .with_limits(Limits {
                body_limit: config.body_limit,
                request_timeout: config.request_timeout,
                trusted_proxies: config.trusted_proxies,
            })
            .with_forwarder(Forwarder::new(ForwardConfig {
                max_attempts: config.webhook_max_attempts,
                ..ForwardConfig::default()
            }))
            .with_collector(crate::collect::Collector::new(
                crate::collect::CollectConfig {
                    cors_origins: config.cors_origins.clone(),
                    default_country: config.default_country.clone(),
                    queue_events: config.collect_queue,
                    quarantine_limit: config.quarantine_limit,
                    master_key,
                    identity_secret: config.identity_secret.clone(),
                    ..crate::collect::CollectConfig::default()
                },
            ));
        let mailer = crate::prefcenter::mail::Mailer::from_config(
            &config,
            &state.manifest.organisation.name,
        )?;
        let state = state.with_prefcenter(crate::prefcenter::PrefCenter::new(
            crate::prefcenter::PrefCenterConfig::from_config(&config),
            mailer,
        ));
        crate::collect::describe_metrics();
        crate::collect::quarantine::describe_metrics();
        if config.master_key_file.is_none() {
            tracing::info!(
                "identifiers are sealed with a master key kept in the database; set \
                 `master_key_file` to keep it apart from the data"
            );
        }
        state
            .decision_log
            .set_sample_rate(f64::from(config.decision_log_sample_ppm) / 1e6);
        state
            .decision_log
            .set_retention(config.decision_log_retention);
        for warning in connect::webhook_warnings(&state.manifest, &state.forward) {
            tracing::warn!("{warning}");
        }
        let bind_started = Instant::now();
        let listener = TcpListener::bind(config.bind)
            .await
            .map_err(|e| ServeError::Bind {
                addr: config.bind,
                message: e.to_string(),
            })?;
        let addr = listener
            .local_addr()
            .map_err(|e| ServeError::Io(e.to_string()))?;
        state.prefcenter.set_local_addr(addr);
        let ready = startup + bind_started.elapsed();
        tracing::info!(
            %addr,
            database = %config.database_url,
            backend = ?state.store.backend(),
            demo = config.demo,
            startup_ms = ready.as_millis() as u64,
            demo_load_ms = demo_time.as_millis() as u64,
            "kept is listening on http://{addr}"
        );
        Ok(Server {
            config,
            state,
            listener,
            addr,
            heard,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, lets in-flight requests finish, then signs a final
    /// checkpoint and closes the store.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let Server {
            config,
            state,
            listener,
            addr: _,
            heard,
        } = self;
        let following = heard.map(|heard| crate::sync::spawn(state.follower(), heard));
        let checkpoints = tokio::spawn(checkpoint_periodically(
            state.ledger.clone(),
            config.checkpoint_interval,
        ));
        // Deliveries left pending by an earlier run are picked up by the worker's first round.
        let (stop_forwarding, forwarding_stopped) = tokio::sync::watch::channel(false);
        let forwarding = connect::spawn_worker(state.forwarding(), forwarding_stopped.clone());
        // The work of requests left in progress by a crash is opened again at start.
        let sweep = crate::requests::tasks::spawn_sweep(
            state.work(),
            state.clock.clone(),
            REQUEST_SWEEP,
            forwarding_stopped.clone(),
        );
        let retention = crate::collect::retention::spawn_retention(
            state.retention(),
            config.retention_interval,
            forwarding_stopped,
        );
        let router = crate::router::router(state.clone());
        let served = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: finishing requests in flight");
        })
        .await;
        checkpoints.abort();
        if let Some(following) = following {
            following.abort();
        }
        // Lets the round in flight record its attempts; what is cut short is claimed again
        // after a restart, once its lease has run out.
        let _ = stop_forwarding.send(true);
        retention.abort();
        sweep.abort();
        let mut forwarding = forwarding;
        if tokio::time::timeout(FORWARDING_STOP, &mut forwarding)
            .await
            .is_err()
        {
            forwarding.abort();
        }
        // Whatever ended serving, what was acknowledged gets a signed checkpoint.
        match state.ledger.checkpoint_now().await {
            Ok(Some(cp)) => tracing::info!(seq = cp.seq, "final ledger checkpoint signed"),
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "final ledger checkpoint failed"),
        }
        state.decision_log.close().await;
        state.ledger.close().await;
        state.store.close().await?;
        tracing::info!("stopped");
        served.map_err(|e| ServeError::Io(e.to_string()))
    }
}

/// Starts the server on `config` and runs it until SIGINT or SIGTERM.
pub async fn serve(config: Config, loaded: Loaded) -> Result<(), ServeError> {
    Server::start(config, loaded)
        .await?
        .run(shutdown_signal())
        .await
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

/// The first wait before posting to the witness URL again.
const WITNESS_RETRY: Duration = Duration::from_secs(1);

/// Every `interval`, signs a checkpoint when records no checkpoint covers arrived (another
/// process on the database appending without signing). Kept's own appends need none of this:
/// each batch commits with its checkpoint.
async fn checkpoint_periodically(ledger: Arc<Ledger>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick completes at once; the server just started, nothing to sign yet.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        match ledger.checkpoint_now().await {
            // Kept's own batches commit with their checkpoint: whatever this covers was
            // appended by another writer, which an operator should be able to account for.
            Ok(Some(cp)) => tracing::warn!(
                seq = cp.seq,
                "signed a ledger checkpoint over records appended without one (by another process?)"
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "ledger checkpoint failed; retrying next time"),
        }
    }
}

/// SQLite cannot create the directory its file goes in; make it for the default
/// `./kept-data/kept.db` and the like.
fn create_sqlite_dir(url: &DatabaseUrl) -> Result<(), ServeError> {
    let text = url.expose();
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        return Ok(());
    }
    let path = text
        .strip_prefix("sqlite://")
        .or_else(|| text.strip_prefix("sqlite:"))
        .unwrap_or(text);
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    match std::path::Path::new(path).parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => std::fs::create_dir_all(dir)
            .map_err(|e| ServeError::DataDir {
                path: dir.to_path_buf(),
                message: e.to_string(),
            }),
        _ => Ok(()),
    }
}

/// Opens the store a configuration names, for commands that only need the database.
pub async fn open_store(url: &DatabaseUrl) -> Result<Arc<dyn Store>, ServeError> {
    create_sqlite_dir(url)?;
    Ok(store::open(url.expose()).await?)
}

/// Writes a new Ed25519 ledger signing key to `path` as a PKCS#8 PEM file only its owner can
/// read, refusing to replace an existing file (that would orphan every checkpoint it signed).
/// Returns the verifying key in hex, for `kept ledger verify --public-key`.
pub fn write_ledger_key(path: &std::path::Path) -> std::io::Result<String> {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let pem = key
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    demo::write_private(path, pem.as_bytes(), false).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            std::io::Error::new(
                e.kind(),
                "the file exists; a ledger key is never overwritten",
            )
        } else {
            e
        }
    })?;
    Ok(hex::encode(key.verifying_key().as_bytes()))
}
