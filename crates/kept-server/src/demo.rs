//! `--demo`: loads the demo population into an empty store and makes one API key per role,
//! written to `demo-keys.json` in the data directory for the README tour. A store that already
//! holds subjects or consent records is left as it is, so restarting the demo is idempotent.

use crate::consent::ledger::Ledger;
use crate::http::auth;
use crate::observe;
use kept_core::UnixMillis;
use kept_core::demo::{self, DemoError, DemoPopulation};
use kept_core::manifest::Manifest;
use kept_store::{NewSubject, Role, Store, StoreError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Records appended per ledger transaction while loading.
const LEDGER_CHUNK: usize = 2_000;
/// Traits written per transaction while loading.
const TRAIT_CHUNK: usize = 5_000;

/// The file the demo keys are written to, inside the data directory.
pub const KEYS_FILE: &str = "demo-keys.json";

#[derive(Debug, thiserror::Error)]
pub enum DemoLoadError {
    #[error(transparent)]
    Population(#[from] DemoError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the demo store handed back {got} subject ids for {want} subjects")]
    SubjectIds { want: usize, got: usize },
    #[error("cannot write the demo keys to `{path}`: {message}")]
    KeysFile { path: PathBuf, message: String },
    #[error("cannot create the demo console operator {0}")]
    Operator(String),
}

impl DemoLoadError {
    pub fn code(&self) -> &'static str {
        match self {
            DemoLoadError::Population(e) => e.code(),
            DemoLoadError::Store(e) => e.code(),
            DemoLoadError::SubjectIds { .. } => "demo.subject_ids",
            DemoLoadError::KeysFile { .. } => "demo.keys_file",
            DemoLoadError::Operator(_) => "demo.operator",
        }
    }
}

/// What loading did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoLoaded {
    pub subjects: usize,
    pub traits: usize,
    pub consents: usize,
    pub keys_file: PathBuf,
}

/// Loads the demo into `store` unless it already holds data. Returns `None` when it did
/// nothing.
pub async fn load_if_empty(
    store: &dyn Store,
    ledger: &Ledger,
    manifest: &Manifest,
    now: UnixMillis,
    data_dir: &Path,
) -> Result<Option<DemoLoaded>, DemoLoadError> {
    if store.subject_count().await? > 0 || store.ledger_len().await? > 0 {
        tracing::info!("demo data already loaded; starting with the store as it is");
        return Ok(None);
    }
    let started = Instant::now();
    tracing::info!(
        subjects = demo::DEFAULT_SIZE,
        "loading the demo population (first start only)"
    );
    let manifest_copy = manifest.clone();
    let population = tokio::task::spawn_blocking(move || {
        demo::population(demo::DEFAULT_SEED, demo::DEFAULT_SIZE, now, &manifest_copy)
    })
    .await
    .map_err(|e| StoreError::Database(format!("demo generation stopped: {e}")))??;
    let loaded = write_population(store, ledger, population).await?;
    let keys_file = data_dir.join(KEYS_FILE);
    write_demo_keys(store, now, &keys_file).await?;
    tracing::info!(
        subjects = loaded.0,
        traits = loaded.1,
        consents = loaded.2,
        ms = started.elapsed().as_millis() as u64,
        "demo population loaded"
    );
    Ok(Some(DemoLoaded {
        subjects: loaded.0,
        traits: loaded.1,
        consents: loaded.2,
        keys_file,
    }))
}

async fn write_population(
    store: &dyn Store,
    ledger: &Ledger,
    population: DemoPopulation,
) -> Result<(usize, usize, usize), DemoLoadError> {
    let DemoPopulation {
        subjects,
        traits,
        consents,
        preferences,
        contacts,
    } = population;
    let want = subjects.len();
    let ids = store
        .insert_subjects(
            subjects
                .into_iter()
                .map(|s| NewSubject {
                    user_id: s.user_id,
                    country: s.country,
                    region: s.region,
                    time_zone: s.time_zone,
                    created_at: s.created_at,
                })
                .collect(),
        )
        .await?;
    if ids.len() != want {
        return Err(DemoLoadError::SubjectIds {
            want,
            got: ids.len(),
        });
    }
    // The population numbers its subjects 0..n; the store may have numbered them otherwise.
    let map = |id: kept_core::SubjectId| ids.get(id.0 as usize).copied().unwrap_or(id);
    tracing::info!(subjects = want, "demo: subjects written");

    let trait_count = traits.len();
    let mut traits = traits;
    for t in &mut traits {
        t.subject = map(t.subject);
    }
    while !traits.is_empty() {
        let rest = traits.split_off(traits.len().min(TRAIT_CHUNK));
        store
            .upsert_traits(std::mem::replace(&mut traits, rest))
            .await?;
    }
    tracing::info!(traits = trait_count, "demo: traits written");

    let consent_count = consents.len();
    let mut consents = consents;
    for c in &mut consents {
        c.subject = map(c.subject);
    }
    while !consents.is_empty() {
        let rest = consents.split_off(consents.len().min(LEDGER_CHUNK));
        let batch = std::mem::replace(&mut consents, rest);
        let appended = ledger.append_many(batch).await?;
        observe::count_ledger_appends(appended.len());
    }
    tracing::info!(records = consent_count, "demo: consent records appended");

    for mut p in preferences {
        p.subject = map(p.subject);
        store.put_channel_preference(&p).await?;
    }
    store
        .record_contacts(
            contacts
                .into_iter()
                .map(|mut c| {
                    c.subject = map(c.subject);
                    c
                })
                .collect(),
            // The demo's past sends are invented history, not uses Kept was told about.
            Vec::new(),
        )
        .await?;
    ledger.checkpoint_now().await?;
    Ok((want, trait_count, consent_count))
}

/// Creates one key per role (a `public` and a `server` write key among them) and the identity
/// secret, logs the keys once and writes all to `path` (mode 0600). Logging a
/// secret is tolerable only here: demo keys guard demo data and the tour needs to show them.
async fn write_demo_keys(
    store: &dyn Store,
    now: UnixMillis,
    path: &Path,
) -> Result<(), DemoLoadError> {
    let mut keys = BTreeMap::new();
    for role in Role::ALL {
        let (secret, record) =
            auth::create_key(store, role, &format!("demo {}", role.as_str()), now).await?;
        keys.insert(role.as_str(), secret.expose().to_owned());
        // The secret itself goes only to the file, never to the log.
        tracing::info!(
            role = role.as_str(),
            id = %record.id,
            "demo API key created; its secret is in {}",
            path.display()
        );
    }
    // The identity secret the demo shop's backend would mint identity tokens with, so that
    // the tour can show a public key speaking for a known customer.
    let mut fresh = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut fresh);
    let secret = store
        .put_setting_if_absent(
            crate::identity::IDENTITY_SECRET_SETTING,
            hex::encode(fresh).as_bytes(),
        )
        .await?;
    keys.insert(
        "identity_secret",
        String::from_utf8_lossy(&secret).into_owned(),
    );
    let mut doc: serde_json::Map<String, serde_json::Value> = keys
        .into_iter()
        .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v)))
        .collect();
    doc.insert("operators".to_owned(), demo_operators(store, now).await?);
    let json = serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n";
    write_private(path, json.as_bytes(), true).map_err(|e| DemoLoadError::KeysFile {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// One console operator per role (`admin@larkspur.example`, …), each with a generated password
/// and TOTP secret, for the keys file: the tour signs in with them.
async fn demo_operators(
    store: &dyn Store,
    now: UnixMillis,
) -> Result<serde_json::Value, DemoLoadError> {
    let mut operators = serde_json::Map::new();
    for role in kept_store::operators::OperatorRole::ALL {
        let email = format!("{}@larkspur.example", role.as_str());
        let password = crate::console::accounts::generated_password();
        let created = crate::console::accounts::create(store, &email, role, &password, now).await;
        let created = match created {
            Ok(Ok(created)) => created,
            Ok(Err(e)) => {
                return Err(DemoLoadError::Operator(format!("{email}: {e}")));
            }
            Err(e) => return Err(DemoLoadError::Operator(format!("{email}: {e}"))),
        };
        tracing::info!(
            role = role.as_str(),
            email = %created.email,
            "demo console operator created; its password and TOTP secret are in the keys file"
        );
        operators.insert(
            role.as_str().to_owned(),
            serde_json::json!({
                "email": created.email,
                "password": password,
                "totp_secret": created.totp_secret,
            }),
        );
    }
    Ok(serde_json::Value::Object(operators))
}

/// Writes a file only its owner can read; an existing file is replaced only when `replace`.
pub(crate) fn write_private(path: &Path, bytes: &[u8], replace: bool) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    if replace {
        options.write(true).create(true).truncate(true);
    } else {
        options.write(true).create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    // `mode` applies only when the file is created; tighten one left by an earlier run too.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(bytes)?;
    file.sync_all()
}
