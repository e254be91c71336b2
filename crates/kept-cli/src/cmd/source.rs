//! Where the offline commands read from: which manifest (`--manifest`, else `KEPT_MANIFEST`, else
//! `./kept.toml`, else the demo's) and which database (resolved as `kept serve` resolves it,
//! with the manifest's `[server]` table as a layer). Every offline command asks here, so none
//! finds a different manifest or database than another.

use kept_core::manifest::Manifest;
use kept_server::config::{Config, Env, FileLayer, Flags, Key};
use std::path::Path;

/// The `--database-url` and `--manifest` flags of an offline command.
#[derive(Debug, Clone, clap::Args)]
pub struct Source {
    /// An SQLite file path or a `postgres://` URL [default: $KEPT_DATABASE_URL, the manifest's
    /// [server] database_url, or ./kept-data/kept.db]
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// The manifest the server runs [default: $KEPT_MANIFEST or ./kept.toml; without one, the
    /// demo's]
    #[arg(long, value_name = "PATH")]
    pub manifest: Option<String>,
}

/// A manifest's text and, for people, which manifest it is.
pub struct FoundManifest {
    pub text: String,
    pub label: String,
}

/// The manifest an offline command runs under: the one named (flag or `KEPT_MANIFEST`, which
/// must be readable), else `./kept.toml`, else the demo's, as `kept serve --demo` runs it.
pub fn find_manifest(source: &Source, env: &Env) -> Result<FoundManifest, String> {
    let path = Config::manifest_path(env, &flags(source)).map_err(|e| e.to_string())?;
    let named = source.manifest.is_some()
        || env.get(&Key::Manifest.env()).is_some()
        || env.get(&Key::Manifest.env_file()).is_some();
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(FoundManifest {
            text,
            label: path.display().to_string(),
        }),
        Err(_) if !named => Ok(FoundManifest {
            text: kept_core::manifest::demo_toml(),
            label: "the demo manifest (no ./kept.toml)".to_owned(),
        }),
        Err(e) => Err(format!(
            "cannot read the manifest `{}`: {e}",
            path.display()
        )),
    }
}

/// The manifest and configuration an offline command runs with.
pub struct Setup {
    pub manifest: Manifest,
    /// Which manifest it is, for people.
    pub manifest_label: String,
    pub config: Config,
}

/// Loads the manifest [`find_manifest`] finds and resolves the configuration as `kept serve`
/// would. An unusable input is an `Err` with the message to print.
pub fn setup(source: &Source) -> Result<Setup, String> {
    let env = Env::from_process();
    let found = find_manifest(source, &env)?;
    let loaded = kept_core::manifest::load(&found.text, &found.label).map_err(|e| e.to_string())?;
    let file = loaded.server.as_ref().map(|table| FileLayer {
        table,
        path: Path::new(&found.label),
    });
    let config = Config::load(file, &env, &flags(source)).map_err(|e| e.to_string())?;
    Ok(Setup {
        manifest: loaded.manifest,
        manifest_label: found.label,
        config,
    })
}

/// The configuration of an offline command that needs no manifest (`kept keys`, `kept ledger`),
/// for its database: the same one [`setup`] resolves, but only the manifest's `[server]` table
/// is read, so a manifest `kept lint` would refuse does not keep an operator from the keys or
/// the ledger.
pub fn config(source: &Source) -> Result<Config, String> {
    let env = Env::from_process();
    let found = find_manifest(source, &env)?;
    let mut doc: toml::Table = toml::from_str(&found.text)
        .map_err(|e| format!("cannot parse `{}`: {}", found.label, e.message().trim()))?;
    let server = match doc.remove("server") {
        Some(toml::Value::Table(table)) => Some(table),
        _ => None,
    };
    let file = server.as_ref().map(|table| FileLayer {
        table,
        path: Path::new(&found.label),
    });
    Config::load(file, &env, &flags(source)).map_err(|e| e.to_string())
}

fn flags(source: &Source) -> Flags {
    let mut flags = Flags::new();
    flags
        .set_opt(Key::DatabaseUrl, source.database_url.clone())
        .set_opt(Key::Manifest, source.manifest.clone());
    flags
}

/// The identity service an offline command hashes and opens identifiers with, derived from
/// Kept's master secret as the server derives it: the `master_key_file`, else the one kept in
/// Kept's database (read on first use), and the configured default country for phone numbers.
pub fn identities(config: &Config) -> Result<kept_server::identity::Identities, String> {
    let master_key = match &config.master_key_file {
        Some(path) => Some(kept_server::identity::load_master_key(path)?),
        None => None,
    };
    Ok(kept_server::identity::Identities::new(
        kept_server::identity::IdentityConfig {
            master_key,
            default_country: config.default_country.clone(),
            ..Default::default()
        },
    ))
}
