//! The server's configuration: one typed struct, layered defaults → `[server]` in `kept.toml` →
//! `KEPT_*` environment → command-line flags. Every value is parsed where it is read, so an error
//! names the field and the layer it came from.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the server listens unless told otherwise.
pub const DEFAULT_BIND: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
    DEFAULT_PORT,
);
pub const DEFAULT_PORT: u16 = 7300;
pub const DEFAULT_DATABASE_URL: &str = "./kept-data/kept.db";
pub const DEFAULT_MANIFEST: &str = "./kept.toml";
pub const DEFAULT_DATA_DIR: &str = "./kept-data";
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// A database URL. It may carry a password, so `Debug` and `Display` show it redacted; only
/// `expose` hands out the real text, for the one place that connects.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> DatabaseUrl {
        DatabaseUrl(url.into())
    }

    /// The URL as given, password included. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password (in the user info or a `password=` parameter) replaced by
    /// `***`.
    pub fn redacted(&self) -> String {
        crate::store::redact(&self.0)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DatabaseUrl")
            .field(&self.redacted())
            .finish()
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable, for a terminal.
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Attempts at a webhook delivery before it becomes a dead letter unless configured: with the
/// default back-off (5 s doubling to an hour) the last one comes about ten hours after the first.
pub const DEFAULT_WEBHOOK_MAX_ATTEMPTS: u32 = 20;
/// The share of allowed decisions logged unless configured otherwise, in millionths (1%).
pub const DEFAULT_DECISION_LOG_SAMPLE_PPM: u32 = 10_000;
/// How long decision log entries are kept unless configured (`decision_log_retention`): two
/// years.
pub const DEFAULT_DECISION_LOG_RETENTION: Duration = Duration::from_secs(730 * 86_400);
/// Collected events admitted at once (parsed, resolved, waiting for their commit) unless
/// configured.
pub const DEFAULT_COLLECT_QUEUE: usize = 50_000;
/// Rejected messages the quarantine holds at most (`quarantine_limit`): the public key is in
/// every page, so anyone can send messages that are rejected, and the quarantine must not grow
/// without end.
pub const DEFAULT_QUARANTINE_LIMIT: u64 = 100_000;

/// The server's configuration once every layer has been applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub bind: SocketAddr,
    pub database_url: DatabaseUrl,
    /// The manifest (`kept.toml`) to load; ignored in demo mode.
    pub manifest: PathBuf,
    /// File holding the Ed25519 key that signs ledger checkpoints.
    pub ledger_key_file: Option<PathBuf>,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    /// A request still running after this long is answered with an error.
    pub request_timeout: Duration,
    /// How often the server looks for ledger records no checkpoint covers (appended by
    /// another process, or before an upgrade) and signs one. Every batch Kept appends already
    /// ends with its own checkpoint.
    pub checkpoint_interval: Duration,
    /// The witness file every checkpoint is also appended to (`ledger_witness`).
    pub ledger_witness: WitnessFile,
    /// A URL every checkpoint is also POSTed to, as witness lines (`ledger_witness_url`).
    pub ledger_witness_url: Option<String>,
    pub log_format: LogFormat,
    /// A `tracing` filter (`info`, `kept_server=debug,info`).
    pub log_filter: String,
    /// Where generated files (demo keys) are written.
    pub data_dir: PathBuf,
    /// Load the example manifest and the demo population.
    pub demo: bool,
    /// Attempts at a webhook delivery before it becomes a dead letter.
    pub webhook_max_attempts: u32,
    /// The share of allowed decisions written to the decision log, in millionths (denied ones
    /// always are). Configured as a share between 0 and 1 (`decision_log_sample_rate`).
    pub decision_log_sample_ppm: u32,
    /// Origins whose pages may call the collection endpoints (CORS); `*` for any.
    pub cors_origins: Vec<String>,
    /// ISO 3166-1 alpha-2 country that phone numbers without a country code are read in.
    pub default_country: Option<String>,
    /// Collected events admitted at once; beyond, clients are answered 429.
    pub collect_queue: usize,
    /// Rejected collected messages the quarantine holds at most.
    pub quarantine_limit: u64,
    /// How often expired events and traits are deleted.
    pub retention_interval: Duration,
    /// How long decision log entries are kept.
    pub decision_log_retention: Duration,
    /// File holding the 32-byte master secret identifiers are hashed and sealed with; without
    /// one a secret is generated and kept in the database.
    pub master_key_file: Option<PathBuf>,
    /// The address customers reach this server at (`https://privacy.shop.example`), used in
    /// the links the preference center sends; `None`: `http://` and the bind address.
    pub public_url: Option<String>,
    /// Mail server the preference center sends sign-in and confirmation links through;
    /// `None`: links are written to the log in demo mode and not sent otherwise.
    pub smtp_host: Option<String>,
    /// `None`: the TLS mode's usual port (25, 587 or 465).
    pub smtp_port: Option<u16>,
    pub smtp_tls: SmtpTls,
    pub smtp_user: Option<String>,
    pub smtp_password: Option<Secret>,
    /// The secret identity tokens are minted with: the shop's backend sends a public key's
    /// browser `HMAC-SHA256(identity_secret, userId)` so that it may speak for that user.
    /// `None`: the one the demo keeps in the database, if any; otherwise no token is valid.
    pub identity_secret: Option<Secret>,
    /// The `From` address of the preference center's mail.
    pub smtp_from: Option<String>,
    /// Reverse proxies in front of the server, each appending to `X-Forwarded-For`; 0 (the
    /// default) ignores that header and takes the connection's address as the client's.
    pub trusted_proxies: u8,
    /// Where a subject's choices are read from (`consent_reads`): the index (the default),
    /// or the store on every request, as a benchmark's point of comparison.
    pub consent_reads: ConsentReads,
}

/// Where `GET /v1/subjects/{id}/preferences` and the page read a subject's choices from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsentReads {
    /// The index snapshot, falling back to the store for what only it holds.
    #[default]
    Index,
    /// The store, on every request.
    Store,
}

/// Where the ledger's witness file is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum WitnessFile {
    /// `ledger-witness.log` in the data directory.
    #[default]
    InDataDir,
    At(PathBuf),
    /// `ledger_witness = "off"`: no witness file.
    Off,
}

/// The witness file's name in the data directory.
pub const DEFAULT_WITNESS_FILE: &str = "ledger-witness.log";

/// The requests log's witness file: beside the ledger's, under this name.
pub const REQUESTS_WITNESS_FILE: &str = "requests-witness.log";

impl Config {
    /// The witness file, `None` when switched off.
    pub fn witness_path(&self) -> Option<PathBuf> {
        match &self.ledger_witness {
            WitnessFile::InDataDir => Some(self.data_dir.join(DEFAULT_WITNESS_FILE)),
            WitnessFile::At(path) => Some(path.clone()),
            WitnessFile::Off => None,
        }
    }

    /// The requests log's witness file: [`REQUESTS_WITNESS_FILE`] in the ledger witness's
    /// folder, `None` when the ledger's witness is switched off.
    pub fn requests_witness_path(&self) -> Option<PathBuf> {
        let ledger = self.witness_path()?;
        Some(match ledger.parent() {
            Some(dir) => dir.join(REQUESTS_WITNESS_FILE),
            None => PathBuf::from(REQUESTS_WITNESS_FILE),
        })
    }
}

/// How the connection to the mail server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SmtpTls {
    /// Plain text (a relay on the same machine).
    None,
    /// Plain connection upgraded with `STARTTLS` (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// A secret configuration value: `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            bind: DEFAULT_BIND,
            database_url: DatabaseUrl::new(DEFAULT_DATABASE_URL),
            manifest: PathBuf::from(DEFAULT_MANIFEST),
            ledger_key_file: None,
            body_limit: DEFAULT_BODY_LIMIT,
            request_timeout: Duration::from_secs(30),
            checkpoint_interval: Duration::from_secs(1),
            ledger_witness: WitnessFile::InDataDir,
            ledger_witness_url: None,
            log_format: LogFormat::Pretty,
            log_filter: "info".to_owned(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            demo: false,
            webhook_max_attempts: DEFAULT_WEBHOOK_MAX_ATTEMPTS,
            decision_log_sample_ppm: DEFAULT_DECISION_LOG_SAMPLE_PPM,
            cors_origins: Vec::new(),
            default_country: None,
            collect_queue: DEFAULT_COLLECT_QUEUE,
            quarantine_limit: DEFAULT_QUARANTINE_LIMIT,
            retention_interval: Duration::from_secs(60 * 60),
            decision_log_retention: DEFAULT_DECISION_LOG_RETENTION,
            master_key_file: None,
            public_url: None,
            smtp_host: None,
            smtp_port: None,
            smtp_tls: SmtpTls::default(),
            smtp_user: None,
            smtp_password: None,
            identity_secret: None,
            smtp_from: None,
            trusted_proxies: 0,
            consent_reads: ConsentReads::Index,
        }
    }
}

/// A configuration field: its key in `[server]`, its environment variable and its flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Bind,
    DatabaseUrl,
    Manifest,
    LedgerKeyFile,
    BodyLimit,
    RequestTimeout,
    CheckpointInterval,
    LogFormat,
    LogFilter,
    DataDir,
    Demo,
    WebhookMaxAttempts,
    DecisionLogSampleRate,
    CorsOrigins,
    DefaultCountry,
    CollectQueue,
    QuarantineLimit,
    RetentionInterval,
    DecisionLogRetention,
    MasterKeyFile,
    PublicUrl,
    SmtpHost,
    SmtpPort,
    SmtpTls,
    SmtpUser,
    SmtpPassword,
    SmtpFrom,
    TrustedProxies,
    ConsentReads,
    LedgerWitness,
    LedgerWitnessUrl,
    IdentitySecret,
}

impl Key {
    pub const ALL: [Key; 32] = [
        Key::Bind,
        Key::DatabaseUrl,
        Key::Manifest,
        Key::LedgerKeyFile,
        Key::BodyLimit,
        Key::RequestTimeout,
        Key::CheckpointInterval,
        Key::LogFormat,
        Key::LogFilter,
        Key::DataDir,
        Key::Demo,
        Key::WebhookMaxAttempts,
        Key::DecisionLogSampleRate,
        Key::CorsOrigins,
        Key::DefaultCountry,
        Key::CollectQueue,
        Key::QuarantineLimit,
        Key::RetentionInterval,
        Key::DecisionLogRetention,
        Key::MasterKeyFile,
        Key::PublicUrl,
        Key::SmtpHost,
        Key::SmtpPort,
        Key::SmtpTls,
        Key::SmtpUser,
        Key::SmtpPassword,
        Key::SmtpFrom,
        Key::TrustedProxies,
        Key::ConsentReads,
        Key::LedgerWitness,
        Key::LedgerWitnessUrl,
        Key::IdentitySecret,
    ];

    /// The key in `[server]`.
    pub fn name(self) -> &'static str {
        match self {
            Key::Bind => "bind",
            Key::DatabaseUrl => "database_url",
            Key::Manifest => "manifest",
            Key::LedgerKeyFile => "ledger_key_file",
            Key::BodyLimit => "body_limit",
            Key::RequestTimeout => "request_timeout",
            Key::CheckpointInterval => "checkpoint_interval",
            Key::LogFormat => "log_format",
            Key::LogFilter => "log_filter",
            Key::DataDir => "data_dir",
            Key::Demo => "demo",
            Key::WebhookMaxAttempts => "webhook_max_attempts",
            Key::DecisionLogSampleRate => "decision_log_sample_rate",
            Key::CorsOrigins => "cors_origins",
            Key::DefaultCountry => "default_country",
            Key::CollectQueue => "collect_queue",
            Key::QuarantineLimit => "quarantine_limit",
            Key::RetentionInterval => "retention_interval",
            Key::DecisionLogRetention => "decision_log_retention",
            Key::MasterKeyFile => "master_key_file",
            Key::PublicUrl => "public_url",
            Key::SmtpHost => "smtp_host",
            Key::SmtpPort => "smtp_port",
            Key::SmtpTls => "smtp_tls",
            Key::SmtpUser => "smtp_user",
            Key::SmtpPassword => "smtp_password",
            Key::SmtpFrom => "smtp_from",
            Key::TrustedProxies => "trusted_proxies",
            Key::ConsentReads => "consent_reads",
            Key::LedgerWitness => "ledger_witness",
            Key::LedgerWitnessUrl => "ledger_witness_url",
            Key::IdentitySecret => "identity_secret",
        }
    }

    /// The environment variable (`KEPT_BIND`).
    pub fn env(self) -> String {
        format!("KEPT_{}", self.name().to_ascii_uppercase())
    }

    /// The variable naming a file that holds the value (`KEPT_BIND_FILE`): every key has one.
    pub fn env_file(self) -> String {
        format!("{}_FILE", self.env())
    }

    /// The command-line flag (`--bind`). A secret's flag names a file that holds it
    /// (`--smtp-password-file`), because a command line is visible to every user of the
    /// machine.
    pub fn flag(self) -> String {
        let flag = format!("--{}", self.name().replace('_', "-"));
        if self.is_secret() {
            format!("{flag}-file")
        } else {
            flag
        }
    }

    /// A value that must never be logged nor given on a command line.
    pub fn is_secret(self) -> bool {
        matches!(self, Key::SmtpPassword | Key::IdentitySecret)
    }

    /// Whether `[server]` may name a file holding it (`database_url_file`): the keys that may
    /// carry a password.
    fn file_in_file(self) -> bool {
        self.is_secret() || self == Key::DatabaseUrl
    }

    /// Whether `[server]` may set it: the manifest's own path cannot come from the manifest.
    fn in_file(self) -> bool {
        self != Key::Manifest
    }
}

/// The layer a value came from, named in errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    /// `[server]` of this manifest file.
    File(PathBuf),
    /// This environment variable (or a `*_FILE` variable naming a file that holds the value).
    Env(String),
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("the default"),
            Origin::File(path) => write!(f, "[server] in `{}`", path.display()),
            Origin::Env(var) => write!(f, "environment variable `{var}`"),
            Origin::Flag(flag) => write!(f, "flag `{flag}`"),
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown key `{key}` in [server] of `{file}`; known keys: {known}")]
    UnknownKey {
        key: String,
        file: PathBuf,
        known: String,
    },
    #[error("invalid `{field}` from {origin}: {message}")]
    Invalid {
        field: &'static str,
        origin: Origin,
        message: String,
    },
    #[error("cannot read `{path}` named by {origin}: {message}")]
    SecretFile {
        path: PathBuf,
        origin: Origin,
        message: String,
    },
    #[error("both `{var}` and `{file_var}` are set; set only one")]
    Conflict { var: String, file_var: String },
}

impl ConfigError {
    pub fn code(&self) -> &'static str {
        match self {
            ConfigError::UnknownKey { .. } => "config.unknown_key",
            ConfigError::Invalid { .. } => "config.invalid_value",
            ConfigError::SecretFile { .. } => "config.secret_file",
            ConfigError::Conflict { .. } => "config.conflict",
        }
    }
}

/// A snapshot of the `KEPT_*` environment, so that loading is a function of its inputs.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    pub fn from_process() -> Env {
        Env::from_pairs(std::env::vars().filter(|(k, _)| k.starts_with("KEPT_")))
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Env {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    pub fn get(&self, var: &str) -> Option<&str> {
        self.vars.get(var).map(String::as_str)
    }
}

/// Prefixes of `KEPT_*` variables that are not settings: the test suites' and the benchmarks'
/// own (`KEPT_TEST_DATABASE_URL`, `KEPT_BENCH_SECONDS`).
const TOOL_PREFIXES: [&str; 2] = ["KEPT_TEST_", "KEPT_BENCH_"];

/// `KEPT_*` variables the end-to-end suites export for their own scripts, which a server they
/// start inherits.
const TOOL_VARIABLES: [&str; 5] = [
    "KEPT_BIN",
    "KEPT_DATA",
    "KEPT_URL",
    "KEPT_KEYS_FILE",
    "KEPT_WRITE_KEY",
];

/// A `KEPT_*` variable that is no setting, and so is ignored: most often a misspelt one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownVariable {
    pub var: String,
    /// The setting's variable nearest to it by edit distance.
    pub closest: Option<String>,
}

impl fmt::Display for UnknownVariable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown environment variable `{}` is ignored", self.var)?;
        match &self.closest {
            Some(closest) => write!(f, "; did you mean `{closest}`?"),
            None => Ok(()),
        }
    }
}

impl Env {
    /// The `KEPT_*` variables that are neither a setting nor its `_FILE`, nor one of `named`
    /// (the webhook secrets the manifest names, `secret_env`) or its `_FILE`, nor the test
    /// tools' own; each
    /// with the setting it most likely meant. `kept serve` logs them as warnings.
    pub fn unknown_variables<'n>(
        &self,
        named: impl IntoIterator<Item = &'n str>,
    ) -> Vec<UnknownVariable> {
        let named: Vec<&str> = named.into_iter().collect();
        let known: Vec<String> = Key::ALL
            .into_iter()
            .flat_map(|k| [k.env(), k.env_file()])
            .collect();
        self.vars
            .keys()
            .filter(|var| var.starts_with("KEPT_"))
            .filter(|var| !known.contains(var))
            .filter(|var| {
                let secret = var.strip_suffix("_FILE").unwrap_or(var);
                !named.contains(&secret)
            })
            .filter(|var| !TOOL_VARIABLES.contains(&var.as_str()))
            .filter(|var| !TOOL_PREFIXES.iter().any(|p| var.starts_with(p)))
            .map(|var| UnknownVariable {
                var: var.clone(),
                closest: kept_core::spelling::closest(var, known.iter().map(String::as_str))
                    .map(|(closest, _)| closest.to_owned()),
            })
            .collect()
    }
}

/// Values given as command-line flags, by field.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    values: Vec<(Key, FlagValue)>,
}

/// A flag's value, or the file that holds it (a secret's flag).
#[derive(Clone)]
enum FlagValue {
    Value(String),
    File(String),
}

// A value is never shown: `--database-url` may carry a password.
impl fmt::Debug for FlagValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlagValue::Value(_) => f.write_str("Value(***)"),
            FlagValue::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

impl Flags {
    pub fn new() -> Flags {
        Flags::default()
    }

    pub fn set(&mut self, key: Key, value: impl Into<String>) -> &mut Flags {
        self.values.push((key, FlagValue::Value(value.into())));
        self
    }

    /// Sets `key` when the flag was given.
    pub fn set_opt(&mut self, key: Key, value: Option<impl Into<String>>) -> &mut Flags {
        if let Some(v) = value {
            self.set(key, v);
        }
        self
    }

    /// Sets `key` to the content of the file at `path`, when the flag was given (a secret's
    /// `--…-file` flag).
    pub fn set_file_opt(&mut self, key: Key, path: Option<impl Into<String>>) -> &mut Flags {
        if let Some(path) = path {
            self.values.push((key, FlagValue::File(path.into())));
        }
        self
    }

    /// The keys given, in the order given.
    pub fn keys(&self) -> impl Iterator<Item = Key> + '_ {
        self.values.iter().map(|(k, _)| *k)
    }

    fn get(&self, key: Key) -> Option<&FlagValue> {
        self.values
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }
}

/// The `[server]` table of a manifest, with the file it came from.
#[derive(Debug, Clone, Copy)]
pub struct FileLayer<'a> {
    pub table: &'a toml::Table,
    pub path: &'a Path,
}

enum Raw<'a> {
    Text(&'a str),
    Toml(&'a toml::Value),
}

impl Config {
    /// The manifest path, which must be known before `[server]` can be read: flags, then the
    /// environment (`KEPT_MANIFEST` or the file `KEPT_MANIFEST_FILE` names), then the default.
    pub fn manifest_path(env: &Env, flags: &Flags) -> Result<PathBuf, ConfigError> {
        Ok(Config::early_setting(env, flags, Key::Manifest)?
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_MANIFEST)))
    }

    /// One setting's text without `[server]`, for what must be known before the manifest is
    /// read and for commands that never read it (`kept ledger verify`): the flag, else the
    /// environment (`KEPT_X` or the file `KEPT_X_FILE` names); `None` for the default.
    pub fn early_setting(
        env: &Env,
        flags: &Flags,
        key: Key,
    ) -> Result<Option<String>, ConfigError> {
        match flags.get(key) {
            Some(FlagValue::Value(value)) => Ok(Some(value.clone())),
            Some(FlagValue::File(path)) => {
                read_value_file(Path::new(path), &Origin::Flag(key.flag())).map(Some)
            }
            None => Ok(env_value(env, key)?.map(|(value, _)| value)),
        }
    }

    /// Applies the layers in order: defaults, `[server]` of the manifest, `KEPT_*`
    /// environment, flags. `*_FILE` variables (`KEPT_DATABASE_URL_FILE`) name a file whose
    /// content is the value.
    pub fn load(
        file: Option<FileLayer<'_>>,
        env: &Env,
        flags: &Flags,
    ) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        if let Some(file) = file {
            let origin = Origin::File(file.path.to_path_buf());
            for (name, value) in file.table {
                let plain = Key::ALL
                    .into_iter()
                    .find(|k| k.in_file() && k.name() == name);
                let indirect = Key::ALL
                    .into_iter()
                    .find(|k| k.file_in_file() && format!("{}_file", k.name()) == *name);
                if let Some(key) = plain {
                    config.apply(key, Raw::Toml(value), &origin)?;
                } else if let Some(key) = indirect {
                    let path = toml_str(key, value, &origin)?;
                    let text = read_value_file(Path::new(path), &origin)?;
                    config.apply(key, Raw::Text(&text), &origin)?;
                } else {
                    return Err(ConfigError::UnknownKey {
                        key: name.clone(),
                        file: file.path.to_path_buf(),
                        known: known_file_keys(),
                    });
                }
            }
        }
        for key in Key::ALL {
            if let Some((value, origin)) = env_value(env, key)? {
                config.apply(key, Raw::Text(&value), &origin)?;
            }
        }
        for key in Key::ALL {
            match flags.get(key) {
                Some(FlagValue::Value(value)) => {
                    config.apply(key, Raw::Text(value), &Origin::Flag(key.flag()))?;
                }
                Some(FlagValue::File(path)) => {
                    let origin = Origin::Flag(key.flag());
                    let text = read_value_file(Path::new(path), &origin)?;
                    config.apply(key, Raw::Text(&text), &origin)?;
                }
                None => {}
            }
        }
        Ok(config)
    }

    fn apply(&mut self, key: Key, raw: Raw<'_>, origin: &Origin) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            field: key.name(),
            origin: origin.clone(),
            message,
        };
        let text = |raw: &Raw<'_>| -> Result<String, ConfigError> {
            match raw {
                Raw::Text(s) => Ok((*s).to_owned()),
                Raw::Toml(v) => toml_str(key, v, origin).map(str::to_owned),
            }
        };
        // A number may be a TOML integer or text (from the environment or a flag).
        let number = |raw: &Raw<'_>| -> Result<String, ConfigError> {
            match raw {
                Raw::Toml(toml::Value::Integer(n)) => Ok(n.to_string()),
                other => text(other),
            }
        };
        match key {
            Key::Bind => self.bind = parse_bind(&text(&raw)?).map_err(invalid)?,
            Key::DatabaseUrl => {
                let url = text(&raw)?;
                if url.trim().is_empty() {
                    return Err(invalid("must not be empty".to_owned()));
                }
                self.database_url = DatabaseUrl::new(url.trim());
            }
            Key::Manifest => self.manifest = PathBuf::from(text(&raw)?),
            Key::LedgerKeyFile => {
                let path = text(&raw)?;
                self.ledger_key_file = (!path.is_empty()).then(|| PathBuf::from(path));
            }
            Key::BodyLimit => {
                self.body_limit = match raw {
                    Raw::Toml(toml::Value::Integer(n)) => usize::try_from(*n)
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| invalid(format!("`{n}` is not a positive size")))?,
                    other => parse_size(&text(&other)?).map_err(invalid)?,
                }
            }
            Key::RequestTimeout
            | Key::CheckpointInterval
            | Key::RetentionInterval
            | Key::DecisionLogRetention => {
                let duration = match raw {
                    Raw::Toml(toml::Value::Integer(n)) => u64::try_from(*n)
                        .ok()
                        .filter(|n| *n > 0)
                        .map(Duration::from_secs)
                        .ok_or_else(|| invalid(format!("`{n}` is not a positive duration")))?,
                    other => parse_duration(&text(&other)?).map_err(invalid)?,
                };
                *match key {
                    Key::RequestTimeout => &mut self.request_timeout,
                    Key::CheckpointInterval => &mut self.checkpoint_interval,
                    Key::RetentionInterval => &mut self.retention_interval,
                    _ => &mut self.decision_log_retention,
                } = duration;
            }
            Key::LogFormat => {
                self.log_format = match text(&raw)?.as_str() {
                    "pretty" => LogFormat::Pretty,
                    "json" => LogFormat::Json,
                    other => {
                        return Err(invalid(format!(
                            "`{other}` is not a log format; use `pretty` or `json`"
                        )));
                    }
                }
            }
            Key::LogFilter => self.log_filter = text(&raw)?,
            Key::DataDir => self.data_dir = PathBuf::from(text(&raw)?),
            Key::Demo => {
                self.demo = match raw {
                    Raw::Toml(toml::Value::Boolean(b)) => *b,
                    other => parse_bool(&text(&other)?).map_err(invalid)?,
                }
            }
            Key::WebhookMaxAttempts => {
                let n = number(&raw)?;
                self.webhook_max_attempts = whole(&n, |n: &u32| *n > 0)
                    .ok_or_else(|| invalid(format!("`{n}` is not a positive whole number")))?;
            }
            Key::DecisionLogSampleRate => {
                let rate = match raw {
                    Raw::Toml(toml::Value::Float(f)) => Ok(f.to_string()),
                    Raw::Toml(toml::Value::Integer(n)) => Ok(n.to_string()),
                    other => text(&other),
                }?;
                self.decision_log_sample_ppm = rate
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .map(|r| (r * 1_000_000.0).round() as u32)
                    .ok_or_else(|| invalid(format!("`{rate}` is not a share between 0 and 1")))?;
            }
            Key::CorsOrigins => {
                self.cors_origins = match raw {
                    Raw::Toml(toml::Value::Array(items)) => items
                        .iter()
                        .map(|v| {
                            v.as_str().map(|s| s.trim().to_owned()).ok_or_else(|| {
                                invalid(format!("expected strings, found {}", v.type_str()))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                    other => text(&other)?
                        .split(',')
                        .map(str::trim)
                        .filter(|o| !o.is_empty())
                        .map(str::to_owned)
                        .collect(),
                };
                for origin in &self.cors_origins {
                    let valid = origin == "*"
                        || origin.starts_with("http://")
                        || origin.starts_with("https://");
                    if !valid {
                        return Err(invalid(format!(
                            "`{origin}` is not an origin such as `https://shop.example`"
                        )));
                    }
                }
            }
            Key::DefaultCountry => {
                let country = text(&raw)?.trim().to_ascii_uppercase();
                if country.is_empty() {
                    self.default_country = None;
                } else if country.len() == 2 && country.chars().all(|c| c.is_ascii_alphabetic()) {
                    self.default_country = Some(country);
                } else {
                    return Err(invalid(format!(
                        "`{country}` is not a two-letter country code such as `DE`"
                    )));
                }
            }
            Key::CollectQueue => {
                let n = number(&raw)?;
                self.collect_queue = whole(&n, |n: &usize| *n > 0)
                    .ok_or_else(|| invalid(format!("`{n}` is not a positive whole number")))?;
            }
            Key::QuarantineLimit => {
                let n = number(&raw)?;
                self.quarantine_limit = whole(&n, |_: &u64| true)
                    .ok_or_else(|| invalid(format!("`{n}` is not a whole number of messages")))?;
            }
            Key::TrustedProxies => {
                let n = number(&raw)?;
                self.trusted_proxies = whole(&n, |n: &u8| *n <= 16).ok_or_else(|| {
                    invalid(format!("`{n}` is not a number of proxies from 0 to 16"))
                })?;
            }
            Key::ConsentReads => {
                self.consent_reads = match text(&raw)?.trim() {
                    "index" => ConsentReads::Index,
                    "store" => ConsentReads::Store,
                    other => {
                        return Err(invalid(format!(
                            "`{other}` is not where consent reads come from; use `index` or `store`"
                        )));
                    }
                };
            }
            Key::LedgerWitness => {
                let path = text(&raw)?.trim().to_owned();
                self.ledger_witness = match path.as_str() {
                    "" => WitnessFile::InDataDir,
                    "off" => WitnessFile::Off,
                    _ => WitnessFile::At(PathBuf::from(path)),
                };
            }
            Key::LedgerWitnessUrl => {
                let url = text(&raw)?.trim().to_owned();
                if url.is_empty() {
                    self.ledger_witness_url = None;
                } else if url.starts_with("http://") || url.starts_with("https://") {
                    self.ledger_witness_url = Some(url);
                } else {
                    return Err(invalid(format!(
                        "`{url}` is not a URL such as `https://witness.example/kept`"
                    )));
                }
            }
            Key::MasterKeyFile => {
                let path = text(&raw)?;
                self.master_key_file = (!path.is_empty()).then(|| PathBuf::from(path));
            }
            Key::PublicUrl => {
                let url = text(&raw)?.trim().trim_end_matches('/').to_owned();
                if url.is_empty() {
                    self.public_url = None;
                } else if url.starts_with("http://") || url.starts_with("https://") {
                    self.public_url = Some(url);
                } else {
                    return Err(invalid(format!(
                        "`{url}` is not a URL such as `https://privacy.shop.example`"
                    )));
                }
            }
            Key::SmtpHost => {
                let host = text(&raw)?.trim().to_owned();
                self.smtp_host = (!host.is_empty()).then_some(host);
            }
            Key::SmtpPort => {
                let port = number(&raw)?;
                self.smtp_port = Some(
                    whole(&port, |p: &u16| *p > 0)
                        .ok_or_else(|| invalid(format!("`{port}` is not a port number")))?,
                );
            }
            Key::SmtpTls => {
                self.smtp_tls = match text(&raw)?.trim() {
                    "none" => SmtpTls::None,
                    "starttls" => SmtpTls::Starttls,
                    "tls" => SmtpTls::Tls,
                    other => {
                        return Err(invalid(format!(
                            "`{other}` is not a TLS mode; use `none`, `starttls` or `tls`"
                        )));
                    }
                }
            }
            Key::SmtpUser => {
                let user = text(&raw)?.trim().to_owned();
                self.smtp_user = (!user.is_empty()).then_some(user);
            }
            Key::SmtpPassword => {
                let password = text(&raw)?;
                self.smtp_password = (!password.is_empty()).then(|| Secret::new(password));
            }
            Key::IdentitySecret => {
                let secret = text(&raw)?.trim().to_owned();
                if !secret.is_empty() && secret.len() < 16 {
                    return Err(invalid(
                        "an identity secret needs at least 16 characters (32 random bytes in \
                         hex is best)"
                            .to_owned(),
                    ));
                }
                self.identity_secret = (!secret.is_empty()).then(|| Secret::new(secret));
            }
            Key::SmtpFrom => {
                let from = text(&raw)?.trim().to_owned();
                if from.is_empty() {
                    self.smtp_from = None;
                } else if from.contains('@') {
                    self.smtp_from = Some(from);
                } else {
                    return Err(invalid(format!(
                        "`{from}` is not an address such as `Shop <privacy@shop.example>`"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// `key`'s value in the environment, as itself or read from the file its `_FILE` variable names,
/// with where it came from. The one place that reads `KEPT_*` settings: `KEPT_LEDGER_KEY_FILE`
/// is a path, and `KEPT_LEDGER_KEY_FILE_FILE` names a file holding that path.
fn env_value(env: &Env, key: Key) -> Result<Option<(String, Origin)>, ConfigError> {
    let var = key.env();
    let file_var = key.env_file();
    match (env.get(&var), env.get(&file_var)) {
        (Some(_), Some(_)) => Err(ConfigError::Conflict { var, file_var }),
        (Some(value), None) => Ok(Some((value.to_owned(), Origin::Env(var)))),
        (None, Some(path)) => {
            let origin = Origin::Env(file_var);
            let text = read_value_file(Path::new(path), &origin)?;
            Ok(Some((text, origin)))
        }
        (None, None) => Ok(None),
    }
}

/// `text` as a whole number that `accept` takes.
fn whole<T: std::str::FromStr>(text: &str, accept: impl Fn(&T) -> bool) -> Option<T> {
    text.trim().parse().ok().filter(accept)
}

fn known_file_keys() -> String {
    Key::ALL
        .into_iter()
        .filter(|k| k.in_file())
        .map(|k| format!("`{}`", k.name()))
        .chain(
            Key::ALL
                .into_iter()
                .filter(|k| k.file_in_file())
                .map(|k| format!("`{}_file`", k.name())),
        )
        .collect::<Vec<_>>()
        .join(", ")
}

fn toml_str<'v>(key: Key, value: &'v toml::Value, origin: &Origin) -> Result<&'v str, ConfigError> {
    value.as_str().ok_or_else(|| ConfigError::Invalid {
        field: key.name(),
        origin: origin.clone(),
        message: format!("expected a string, found {}", value.type_str()),
    })
}

/// The content of a file holding a value, without the line end an editor or `echo` leaves;
/// other white space is kept, as a password may hold it.
fn read_value_file(path: &Path, origin: &Origin) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
        .map_err(|e| ConfigError::SecretFile {
            path: path.to_path_buf(),
            origin: origin.clone(),
            message: e.to_string(),
        })
}

fn parse_bind(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Some(port) = s.strip_prefix("localhost:") {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("`{port}` is not a port number"))?;
        return Ok(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port));
    }
    s.parse()
        .map_err(|_| format!("`{s}` is not an address such as `127.0.0.1:7300`"))
}

/// `1048576`, `512KiB`, `1MiB`, `2MB`, `64kb`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a size such as `1MiB` or `65536`"))?;
    let multiplier: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" | "k" => 1024,
        "mb" => 1000 * 1000,
        "mib" | "m" => 1024 * 1024,
        "gb" => 1000 * 1000 * 1000,
        "gib" | "g" => 1024 * 1024 * 1024,
        _ => return Err(format!("`{s}` has an unknown unit; use B, KiB, MiB or GiB")),
    };
    n.checked_mul(multiplier)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{s}` is not a positive size that fits in memory"))
}

/// `30` (seconds), `30s`, `2m`, `500ms`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a duration such as `30s` or `2m`"))?;
    let d = match unit.trim() {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "d" => Duration::from_secs(n.saturating_mul(86_400)),
        _ => return Err(format!("`{s}` has an unknown unit; use ms, s, m, h or d")),
    };
    if d.is_zero() {
        return Err(format!("`{s}` must be longer than zero"));
    }
    Ok(d)
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(format!("`{s}` is not `true` or `false`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_in_user_info_and_query() {
        let url = DatabaseUrl::new("postgres://kept:s3cr3t@db.internal:5432/kept?sslmode=require");
        assert_eq!(
            url.redacted(),
            "postgres://kept:***@db.internal:5432/kept?sslmode=require"
        );
        let url = DatabaseUrl::new("postgres://db/kept?user=kept&password=s3cr3t");
        assert_eq!(url.redacted(), "postgres://db/kept?user=kept&password=***");
        assert_eq!(
            DatabaseUrl::new("./kept-data/kept.db").redacted(),
            "./kept-data/kept.db"
        );
        assert_eq!(
            DatabaseUrl::new("postgres://kept@db/kept").redacted(),
            "postgres://kept@db/kept"
        );
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("1MiB"), Ok(1024 * 1024));
        assert_eq!(parse_size("64 KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0s").is_err());
    }
}
