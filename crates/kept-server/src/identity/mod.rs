//! Who a subject is: the identity keys (derived from the master secret) identifiers are hashed
//! and sealed with, the identity token secret, the cache of known identifiers and the lock one
//! resolution round holds (`Identities`); linking the identifiers collected messages carry to
//! subjects, with the guard rails (`link`); finding the subject a caller names (`resolve`).

pub mod cache;
pub mod link;
pub mod resolve;

/// Subjects merged into another by identity resolution, by reason.
pub const MERGES: &str = "kept_identity_merges_total";
/// Identifiers not attached or subjects not merged by a guard rail, by kind and reason.
pub const REFUSALS: &str = "kept_identity_merge_refusals_total";

use crate::config::Secret;
use cache::IdentityCache;
use kept_core::identity::{Caps, IdentityKeys};
use kept_store::{Store, StoreError};
use std::fmt;
use std::path::Path;
use std::sync::Mutex;

/// Setting that holds the generated master secret when no key file is configured.
pub const MASTER_KEY_SETTING: &str = "collection.master_key";
/// Setting that holds the identity secret when none is configured (the demo writes one).
pub const IDENTITY_SECRET_SETTING: &str = "collection.identity_secret";

/// What identity resolution is configured with.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct IdentityConfig {
    /// Identifiers of each kind one subject may hold, and merges one message may make.
    pub caps: Caps,
    /// The master secret (32 bytes) identifiers are hashed and data keys wrapped with; `None`:
    /// generated once and kept in the database's settings.
    pub master_key: Option<[u8; 32]>,
    /// The secret identity tokens are minted with (`identity_secret`); `None`: the one in the
    /// database's settings, if any (the demo's), else a public key's token is never valid.
    pub identity_secret: Option<Secret>,
    /// ISO 3166-1 alpha-2 country national phone numbers are read in.
    pub default_country: Option<String>,
}

impl fmt::Debug for IdentityConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityConfig")
            .field("caps", &self.caps)
            .field("master_key", &self.master_key.map(|_| "***"))
            .field("identity_secret", &self.identity_secret)
            .field("default_country", &self.default_country)
            .finish()
    }
}

/// The identity service's state: its keys and secret, the cache of known identifiers, and the
/// lock of the resolution round. Collection, resolution, the preference center, merges and
/// the index's sync all read it.
pub struct Identities {
    config: IdentityConfig,
    keys: tokio::sync::OnceCell<IdentityKeys>,
    identity_secret: tokio::sync::OnceCell<Option<Secret>>,
    /// Identifiers known to belong to a subject, so that a message naming only known ones
    /// needs no round.
    pub(crate) cache: Mutex<IdentityCache>,
    /// One identity resolution round at a time in this process: concurrent rounds would only
    /// collide on the same new identifiers and retry.
    pub(crate) resolving: tokio::sync::Mutex<()>,
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identities")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Default for Identities {
    fn default() -> Identities {
        Identities::new(IdentityConfig::default())
    }
}

impl Identities {
    pub fn new(config: IdentityConfig) -> Identities {
        Identities {
            config,
            keys: tokio::sync::OnceCell::new(),
            identity_secret: tokio::sync::OnceCell::new(),
            cache: Mutex::new(IdentityCache::default()),
            resolving: tokio::sync::Mutex::new(()),
        }
    }

    pub fn config(&self) -> &IdentityConfig {
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
    pub async fn identity_secret(&self, store: &dyn Store) -> Result<Option<&Secret>, StoreError> {
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
                        .map(Secret::new),
                )
            })
            .await?;
        Ok(secret.as_ref())
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
