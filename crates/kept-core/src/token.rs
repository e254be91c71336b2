//! The preference center's signed tokens: sign-in links, session cookies, double opt-in
//! confirmations, one-click unsubscribe links and sign-in form tokens, and the download links of
//! an access request's export. Each is
//! `base64url(claims) "." base64url(mac)`, the MAC a keyed BLAKE3 under a key of its own kind
//! derived from one server secret, so a token of one kind never passes as another. The random
//! id a new token carries is an input, as randomness is everywhere in this crate.
//!
//! INVARIANT: a token whose MAC does not check is never parsed further than its two halves.
//! An order of statements in `TokenKeys::open`, not a state to assert:
//! `a_tampered_token_is_refused` checks it with a payload that is not even JSON.

use crate::{SubjectId, UnixMillis};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Opens a session once (`/preferences/open`).
    Link,
    /// The session cookie.
    Session,
    /// Confirms a double opt-in, once.
    Confirm,
    /// One-click unsubscribe (RFC 8058); may be used again without harm.
    Unsubscribe,
    /// The sign-in form, before there is a session.
    SignInForm,
    /// Downloads the export that answers a data subject request (`Claims::request`), until it
    /// expires; it may be used again.
    Export,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Link,
        Kind::Session,
        Kind::Confirm,
        Kind::Unsubscribe,
        Kind::SignInForm,
        Kind::Export,
    ];

    fn context(self) -> &'static str {
        match self {
            Kind::Link => "kept 2026 preference center sign-in link v1",
            Kind::Session => "kept 2026 preference center session v1",
            Kind::Confirm => "kept 2026 preference center double opt-in v1",
            Kind::Unsubscribe => "kept 2026 preference center one-click unsubscribe v1",
            Kind::SignInForm => "kept 2026 preference center sign-in form v1",
            Kind::Export => "kept 2026 data subject request export link v1",
        }
    }

    fn slot(self) -> usize {
        match self {
            Kind::Link => 0,
            Kind::Session => 1,
            Kind::Confirm => 2,
            Kind::Unsubscribe => 3,
            Kind::SignInForm => 4,
            Kind::Export => 5,
        }
    }
}

/// What a double opt-in confirms, or what a one-click unsubscribe stops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    #[serde(rename = "p")]
    pub purpose: String,
    #[serde(rename = "c")]
    pub channel: String,
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
}

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(rename = "k")]
    pub kind: Kind,
    /// The subject it opens or acts for (0 for a sign-in form token, which has none).
    #[serde(rename = "s")]
    pub subject: u32,
    /// Random; the single-use id of links and confirmations, the session's id for CSRF.
    #[serde(rename = "i")]
    pub id: String,
    /// Milliseconds since the epoch after which it is refused.
    #[serde(rename = "e")]
    pub expires: UnixMillis,
    #[serde(rename = "o", default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<Topic>,
    /// The locale the page was shown in, carried to the next page.
    #[serde(rename = "l", default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// The data subject request an export link answers.
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub request: Option<u64>,
}

impl Claims {
    /// Claims with the random `id` the caller drew (the server: 128 random bits in hex).
    pub fn new(kind: Kind, subject: SubjectId, expires: UnixMillis, id: String) -> Claims {
        Claims {
            kind,
            subject: subject.0,
            id,
            expires,
            topic: None,
            locale: None,
            request: None,
        }
    }

    pub fn subject(&self) -> SubjectId {
        SubjectId(self.subject)
    }
}

/// Why a token was refused. The customer sees one message for all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's signature does not check")]
    Signature,
    #[error("the token is of another kind")]
    Kind,
    #[error("the token has expired")]
    Expired,
    #[error("the token was already used")]
    Spent,
}

impl TokenError {
    pub fn code(self) -> &'static str {
        match self {
            TokenError::Malformed => "prefcenter.token_malformed",
            TokenError::Signature => "prefcenter.token_signature",
            TokenError::Kind => "prefcenter.token_kind",
            TokenError::Expired => "prefcenter.token_expired",
            TokenError::Spent => "prefcenter.token_spent",
        }
    }
}

/// The MAC keys, one per kind, plus the CSRF key. `Debug` shows none of them.
#[derive(Clone)]
pub struct TokenKeys {
    kinds: [[u8; 32]; 6],
    csrf: [u8; 32],
}

impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKeys(***)")
    }
}

impl TokenKeys {
    /// Derives every key from the server's preference-center secret.
    pub fn derive(secret: &[u8; 32]) -> TokenKeys {
        let mut kinds = [[0u8; 32]; 6];
        for kind in Kind::ALL {
            if let Some(slot) = kinds.get_mut(kind.slot()) {
                *slot = blake3::derive_key(kind.context(), secret);
            }
        }
        TokenKeys {
            kinds,
            csrf: blake3::derive_key("kept 2026 preference center csrf v1", secret),
        }
    }

    fn key(&self, kind: Kind) -> &[u8; 32] {
        // `slot` is always in range; the fallback only keeps indexing out of the code.
        self.kinds.get(kind.slot()).unwrap_or(&self.csrf)
    }

    /// The signed token for `claims`.
    pub fn sign(&self, claims: &Claims) -> String {
        let payload = serde_json::to_vec(claims).unwrap_or_default();
        let mac = blake3::keyed_hash(self.key(claims.kind), &payload);
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(mac.as_bytes())
        )
    }

    /// The claims of a token of `kind` that is genuine and not expired at `now`.
    pub fn open(&self, kind: Kind, token: &str, now: UnixMillis) -> Result<Claims, TokenError> {
        let (payload, mac) = token.trim().split_once('.').ok_or(TokenError::Malformed)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        let mac: [u8; 32] = URL_SAFE_NO_PAD
            .decode(mac)
            .ok()
            .and_then(|m| m.try_into().ok())
            .ok_or(TokenError::Malformed)?;
        // `blake3::Hash` compares in constant time.
        if blake3::keyed_hash(self.key(kind), &payload) != blake3::Hash::from(mac) {
            return Err(TokenError::Signature);
        }
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
        if claims.kind != kind {
            return Err(TokenError::Kind);
        }
        if now >= claims.expires {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// The CSRF token of a session: bound to its id, so it is worth nothing in another.
    pub fn csrf(&self, session_id: &str) -> String {
        URL_SAFE_NO_PAD.encode(blake3::keyed_hash(&self.csrf, session_id.as_bytes()).as_bytes())
    }

    /// Whether `presented` is the CSRF token of `session_id` (in constant time).
    pub fn csrf_matches(&self, session_id: &str, presented: &str) -> bool {
        let Some(mac) = URL_SAFE_NO_PAD
            .decode(presented.trim())
            .ok()
            .and_then(|m| <[u8; 32]>::try_from(m).ok())
        else {
            return false;
        };
        blake3::keyed_hash(&self.csrf, session_id.as_bytes()) == blake3::Hash::from(mac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::derive(&[9; 32])
    }

    #[test]
    fn a_token_opens_only_as_its_own_kind_before_it_expires() {
        let keys = keys();
        let claims = Claims::new(Kind::Link, SubjectId(4), 1_000, "id".into());
        let token = keys.sign(&claims);
        assert_eq!(keys.open(Kind::Link, &token, 999), Ok(claims));
        assert_eq!(
            keys.open(Kind::Link, &token, 1_000),
            Err(TokenError::Expired)
        );
        // Another kind's key: the signature fails before the kind is even read.
        assert_eq!(
            keys.open(Kind::Session, &token, 0),
            Err(TokenError::Signature)
        );
        assert_eq!(
            TokenKeys::derive(&[8; 32]).open(Kind::Link, &token, 0),
            Err(TokenError::Signature)
        );
    }

    #[test]
    fn a_tampered_token_is_refused() {
        let keys = keys();
        let token = keys.sign(&Claims::new(Kind::Link, SubjectId(4), 1_000, "id".into()));
        let (payload, mac) = token.split_once('.').unwrap();
        let mut json: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        json["s"] = 5.into();
        let forged = format!(
            "{}.{mac}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&json).unwrap())
        );
        assert_eq!(
            keys.open(Kind::Link, &forged, 0),
            Err(TokenError::Signature)
        );
        // Claims that would not parse, under a wrong MAC: refused for the MAC, unread.
        let unreadable = format!("{}.{mac}", URL_SAFE_NO_PAD.encode(b"{not json"));
        assert_eq!(
            keys.open(Kind::Link, &unreadable, 0),
            Err(TokenError::Signature)
        );
        assert_eq!(
            keys.open(Kind::Link, "nonsense", 0),
            Err(TokenError::Malformed)
        );
        assert_eq!(keys.open(Kind::Link, "a.b", 0), Err(TokenError::Malformed));
    }

    #[test]
    fn csrf_tokens_are_bound_to_their_session() {
        let keys = keys();
        let token = keys.csrf("session-a");
        assert!(keys.csrf_matches("session-a", &token));
        assert!(!keys.csrf_matches("session-b", &token));
        assert!(!keys.csrf_matches("session-a", ""));
    }
}
