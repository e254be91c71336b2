//! API keys: how they are made, stored (hashed) and checked, and one extractor per role so that
//! a handler states the role it needs in its signature (`Authorized<Privacy>`).
//!
//! A key reads `kept_<id>_<secret>`: `kept_<id>` is public (shown in listings and logs), the
//! secret is 32 random bytes in hex. Only BLAKE3 of the whole key is stored.

use crate::http::error::ApiError;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::{HeaderMap, header, request::Parts};
use base64::Engine;
use kept_core::UnixMillis;
use kept_store::{ApiKeyRecord, Role, Store, StoreError};
use rand::{CryptoRng, RngCore};
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PREFIX: &str = "kept_";
const ID_HEX_LEN: usize = 8;
const SECRET_HEX_LEN: usize = 64;

/// How long a verified key is trusted without asking the store again. Revoking a key through
/// this server takes effect at once; on other servers sharing the database it takes effect
/// within this long.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(5);

/// Verified keys kept at most; the cache is emptied when it grows past this.
const KEY_CACHE_MAX: usize = 10_000;

/// A full API key. Shown once, when created; `Debug` shows only its public id.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecret(String);

impl ApiKeySecret {
    /// The key text, to print once or to send in `Authorization`.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeySecret({}_***)", key_id(&self.0).unwrap_or(PREFIX))
    }
}

/// The hash a key is stored and looked up by.
///
/// BLAKE3 rather than a password hash (argon2, bcrypt): a key carries 256 random bits, so
/// there is no dictionary to slow down and a brute force is hopeless at any speed; a slow hash
/// would only cost every API request milliseconds of CPU.
pub fn hash_key(key: &str) -> [u8; 32] {
    *blake3::hash(key.as_bytes()).as_bytes()
}

/// The public id (`kept_ab12cd34`) of a well-formed key, `None` for anything else.
pub fn key_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let well_formed = id.len() == ID_HEX_LEN
        && secret.len() == SECRET_HEX_LEN
        && id
            .bytes()
            .chain(secret.bytes())
            .all(|b| b.is_ascii_hexdigit());
    well_formed.then(|| key.get(..PREFIX.len() + ID_HEX_LEN))?
}

/// Makes a new key and the record to store for it.
pub fn generate_key(
    role: Role,
    name: &str,
    now: UnixMillis,
    rng: &mut (impl RngCore + CryptoRng),
) -> (ApiKeySecret, ApiKeyRecord) {
    let mut id = [0u8; ID_HEX_LEN / 2];
    let mut secret = [0u8; SECRET_HEX_LEN / 2];
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut secret);
    let public = format!("{PREFIX}{}", hex::encode(id));
    let key = format!("{public}_{}", hex::encode(secret));
    let record = ApiKeyRecord {
        id: public,
        hash: hash_key(&key),
        role,
        name: name.to_owned(),
        created_at: now,
        revoked_at: None,
    };
    (ApiKeySecret(key), record)
}

/// Creates and stores a key; the secret is returned once and never again.
pub async fn create_key(
    store: &dyn Store,
    role: Role,
    name: &str,
    now: UnixMillis,
) -> Result<(ApiKeySecret, ApiKeyRecord), StoreError> {
    let (secret, record) = generate_key(role, name, now, &mut rand::rngs::OsRng);
    store.insert_api_key(&record).await?;
    Ok((secret, record))
}

/// Checks presented keys against the store, remembering verified ones for `KEY_CACHE_TTL`.
/// Unknown keys are not remembered, so a key created on another server works at once.
pub struct Authenticator {
    store: Arc<dyn Store>,
    ttl: Duration,
    verified: Mutex<HashMap<[u8; 32], (ApiKeyRecord, Instant)>>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(store: Arc<dyn Store>) -> Authenticator {
        Authenticator::with_ttl(store, KEY_CACHE_TTL)
    }

    pub fn with_ttl(store: Arc<dyn Store>, ttl: Duration) -> Authenticator {
        Authenticator {
            store,
            ttl,
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// The stored record of a presented key, if the key is valid and not revoked.
    pub async fn verify(&self, presented: &str) -> Result<ApiKeyRecord, ApiError> {
        if key_id(presented).is_none() {
            return Err(ApiError::InvalidKey);
        }
        let hash = hash_key(presented);
        if let Some(record) = self.cached(&hash) {
            return Ok(record);
        }
        let record = self
            .store
            .api_key_by_hash(&hash)
            .await?
            .filter(|r| r.revoked_at.is_none())
            .ok_or(ApiError::InvalidKey)?;
        if let Ok(mut verified) = self.verified.lock() {
            if verified.len() >= KEY_CACHE_MAX {
                verified.clear();
            }
            verified.insert(hash, (record.clone(), Instant::now()));
        }
        Ok(record)
    }

    fn cached(&self, hash: &[u8; 32]) -> Option<ApiKeyRecord> {
        let verified = self.verified.lock().ok()?;
        let (record, at) = verified.get(hash)?;
        (at.elapsed() < self.ttl).then(|| record.clone())
    }

    /// The stored record of a presented key whose role permits `required`: the key checked
    /// (`verify`), then its role, and the request's span names the key.
    pub async fn authorize(
        &self,
        presented: &str,
        required: Role,
    ) -> Result<ApiKeyRecord, ApiError> {
        let key = self.verify(presented).await?;
        if !key.role.permits(required) {
            return Err(ApiError::forbidden(key.role, required));
        }
        tracing::Span::current().record("key", key.id.as_str());
        Ok(key)
    }

    /// Drops a key from the cache, so that its revocation takes effect on this server at once.
    pub fn forget(&self, id: &str) {
        if let Ok(mut verified) = self.verified.lock() {
            verified.retain(|_, (record, _)| record.id != id);
        }
    }
}

/// The key a request presents: `Authorization: Bearer <key>`, or HTTP Basic with the key as
/// the user name and an empty password (how Segment SDKs send a write key).
pub fn presented_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::MissingKey);
    };
    let value = value.to_str().map_err(|_| ApiError::InvalidKey)?.trim();
    let (scheme, credentials) = value.split_once(' ').ok_or(ApiError::InvalidKey)?;
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        Ok(credentials.to_owned())
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .map_err(|_| ApiError::InvalidKey)?;
        let text = String::from_utf8(decoded).map_err(|_| ApiError::InvalidKey)?;
        let user = text.split_once(':').map_or(text.as_str(), |(user, _)| user);
        Ok(user.to_owned())
    } else {
        Err(ApiError::InvalidKey)
    }
}

/// A role an endpoint requires; implemented by the marker types in `role`.
pub trait RequiredRole: Send + Sync + 'static {
    const ROLE: Role;
}

/// Marker types naming the role an endpoint requires.
pub mod role {
    use super::RequiredRole;
    use kept_store::Role;

    #[derive(Debug)]
    pub struct Public;
    #[derive(Debug)]
    pub struct Decide;
    #[derive(Debug)]
    pub struct Privacy;
    #[derive(Debug)]
    pub struct Admin;

    impl RequiredRole for Public {
        const ROLE: Role = Role::Public;
    }
    impl RequiredRole for Decide {
        const ROLE: Role = Role::Decide;
    }
    impl RequiredRole for Privacy {
        const ROLE: Role = Role::Privacy;
    }
    impl RequiredRole for Admin {
        const ROLE: Role = Role::Admin;
    }
}

/// A request authenticated by a key whose role permits `R`. Extracting it is the role check.
#[derive(Debug)]
pub struct Authorized<R> {
    pub key: ApiKeyRecord,
    role: PhantomData<R>,
}

impl<S, R> FromRequestParts<S> for Authorized<R>
where
    S: Send + Sync,
    Arc<Authenticator>: FromRef<S>,
    R: RequiredRole,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let presented = presented_key(&parts.headers)?;
        let auth = Arc::<Authenticator>::from_ref(state);
        let key = auth.authorize(&presented, R::ROLE).await?;
        Ok(Authorized {
            key,
            role: PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use rand::SeedableRng;

    #[test]
    fn keys_are_well_formed_and_hashed() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let (secret, record) = generate_key(Role::Privacy, "ops", 5, &mut rng);
        assert_eq!(key_id(secret.expose()), Some(record.id.as_str()));
        assert_eq!(record.hash, hash_key(secret.expose()));
        assert!(!format!("{secret:?}").contains(&secret.expose()[20..]));
        assert_eq!(key_id("kept_12345678_short"), None);
        assert_eq!(key_id("nope"), None);
    }

    #[test]
    fn reads_bearer_and_basic_credentials() {
        let mut headers = HeaderMap::new();
        assert!(matches!(presented_key(&headers), Err(ApiError::MissingKey)));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer kept_x"),
        );
        assert_eq!(presented_key(&headers).unwrap(), "kept_x");
        let basic = base64::engine::general_purpose::STANDARD.encode("kept_y:");
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {basic}")).unwrap(),
        );
        assert_eq!(presented_key(&headers).unwrap(), "kept_y");
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Digest x"));
        assert!(matches!(presented_key(&headers), Err(ApiError::InvalidKey)));
    }
}
