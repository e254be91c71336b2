//! The console's sessions and form tokens. A session is a random token in a cookie that is
//! HttpOnly, SameSite=Strict and scoped to `/admin`; the store keeps only its BLAKE3 digest,
//! with an idle and an absolute end, so sign-out, an idle hour or a revoked account ends it on
//! every server at once. A new session is minted at every sign-in, whatever cookie came with
//! it (no fixation). Forms carry a CSRF token bound to the session; the sign-in form, before
//! there is a session, carries a signed, expiring form token. Both are keyed BLAKE3 under keys
//! derived from one console secret kept in the settings.

use crate::web::cookie;
use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kept_core::UnixMillis;
use kept_store::operators::{NewOperatorSession, Operator};
use kept_store::{Store, StoreError};
use rand::RngCore;

/// The session cookie.
pub const COOKIE: &str = "kept_console";
/// Where the console lives; the cookie is sent nowhere else.
pub const PATH: &str = "/admin";
/// The console secret's setting.
pub const SECRET_SETTING: &str = "console_secret";

/// How long sessions last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// Ended after this long without a request.
    pub idle_ms: i64,
    /// Ended after this long, however active.
    pub absolute_ms: i64,
    /// A sign-in form's token is good this long.
    pub form_ms: i64,
}

impl Default for Lifetimes {
    fn default() -> Lifetimes {
        Lifetimes {
            idle_ms: 30 * 60 * 1000,
            absolute_ms: 12 * 60 * 60 * 1000,
            form_ms: 60 * 60 * 1000,
        }
    }
}

/// The keys the console's tokens are made with. `Debug` shows none of them.
#[derive(Clone)]
pub struct Keys {
    csrf: [u8; 32],
    form: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(***)")
    }
}

impl Keys {
    /// The keys derived from the console secret in `store`'s settings (made on first use).
    pub async fn load(store: &dyn Store) -> Result<Keys, StoreError> {
        let mut fresh = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut fresh);
        let kept = store.put_setting_if_absent(SECRET_SETTING, &fresh).await?;
        let secret: [u8; 32] = kept.as_slice().try_into().map_err(|_| {
            StoreError::Corrupt(format!("setting `{SECRET_SETTING}` is not 32 bytes"))
        })?;
        Ok(Keys {
            csrf: blake3::derive_key("kept 2026 console csrf v1", &secret),
            form: blake3::derive_key("kept 2026 console sign-in form v1", &secret),
        })
    }

    /// The CSRF token of the session whose digest is `session_id`.
    pub fn csrf(&self, session_id: &str) -> String {
        URL_SAFE_NO_PAD.encode(blake3::keyed_hash(&self.csrf, session_id.as_bytes()).as_bytes())
    }

    /// Whether `presented` is the CSRF token of `session_id` (in constant time).
    pub fn csrf_matches(&self, session_id: &str, presented: &str) -> bool {
        decode32(presented).is_some_and(|mac| {
            blake3::keyed_hash(&self.csrf, session_id.as_bytes()) == blake3::Hash::from(mac)
        })
    }

    /// A sign-in form token good until `expires`.
    pub fn form_token(&self, expires: UnixMillis) -> String {
        let mac = blake3::keyed_hash(&self.form, &expires.to_be_bytes());
        format!("{expires}.{}", URL_SAFE_NO_PAD.encode(mac.as_bytes()))
    }

    /// Whether `presented` is a sign-in form token not expired at `now`.
    pub fn form_token_valid(&self, presented: &str, now: UnixMillis) -> bool {
        let Some((expires, mac)) = presented.trim().split_once('.') else {
            return false;
        };
        let (Ok(expires), Some(mac)) = (expires.parse::<i64>(), decode32(mac)) else {
            return false;
        };
        blake3::keyed_hash(&self.form, &expires.to_be_bytes()) == blake3::Hash::from(mac)
            && now < expires
    }
}

fn decode32(text: &str) -> Option<[u8; 32]> {
    URL_SAFE_NO_PAD
        .decode(text.trim())
        .ok()
        .and_then(|m| <[u8; 32]>::try_from(m).ok())
}

/// The digest a session is stored under.
pub fn digest(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

/// Opens a fresh session for `operator` at `now`: the token for the cookie.
pub async fn open(
    store: &dyn Store,
    operator: &Operator,
    lifetimes: Lifetimes,
    now: UnixMillis,
) -> Result<String, StoreError> {
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = URL_SAFE_NO_PAD.encode(raw);
    store
        .open_operator_session(NewOperatorSession {
            id: digest(&token),
            operator: operator.id,
            created_at: now,
            expires_at: now.saturating_add(lifetimes.absolute_ms),
        })
        .await?;
    Ok(token)
}

/// The `Set-Cookie` of a session token (or, empty and expired, of its end).
pub fn cookie(token: &str, lifetimes: Lifetimes, secure: bool) -> String {
    let max_age = if token.is_empty() {
        0
    } else {
        lifetimes.absolute_ms / 1000
    };
    format!(
        "{COOKIE}={token}; Path={PATH}; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    )
}

/// A signed-in operator: who, the session's digest and the CSRF token their forms carry.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub operator: Operator,
    pub session_id: String,
    pub csrf: String,
}

/// The operator whose live session the request's cookie names, marking it used at `now`.
pub async fn signed_in(
    store: &dyn Store,
    keys: &Keys,
    lifetimes: Lifetimes,
    headers: &HeaderMap,
    now: UnixMillis,
) -> Result<Option<SignedIn>, StoreError> {
    let Some(token) = cookie::read(headers, COOKIE).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let session_id = digest(token);
    let Some(id) = store
        .touch_operator_session(&session_id, now, lifetimes.idle_ms)
        .await?
    else {
        return Ok(None);
    };
    let Some(operator) = store.operator(id).await? else {
        return Ok(None);
    };
    Ok(Some(SignedIn {
        csrf: keys.csrf(&session_id),
        operator,
        session_id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys {
            csrf: [1; 32],
            form: [2; 32],
        }
    }

    #[test]
    fn a_csrf_token_is_worth_nothing_in_another_session() {
        let k = keys();
        let token = k.csrf("session-a");
        assert!(k.csrf_matches("session-a", &token));
        assert!(!k.csrf_matches("session-b", &token));
        assert!(!k.csrf_matches("session-a", ""));
        assert!(!k.csrf_matches("session-a", "not base64!"));
    }

    #[test]
    fn a_form_token_expires_and_cannot_be_stretched() {
        let k = keys();
        let token = k.form_token(1_000);
        assert!(k.form_token_valid(&token, 999));
        assert!(!k.form_token_valid(&token, 1_000));
        let (_, mac) = token.split_once('.').unwrap();
        assert!(
            !k.form_token_valid(&format!("9999.{mac}"), 999),
            "a later expiry"
        );
        assert!(!k.form_token_valid("garbage", 0));
    }
}
