//! Signed-in sessions and the checks a form post passes: the session a signed cookie names
//! (live only while the store says so), its CSRF token, and whether the browser says the
//! request came from another site.

use crate::web::cookie;
use axum::http::{HeaderMap, header};
use kept_core::UnixMillis;
use kept_core::token::{Claims, Kind, TokenKeys};
use kept_store::{Store, StoreError};

/// A signed-in visitor: the session's claims and the CSRF token its forms carry.
#[derive(Debug)]
pub struct Session {
    pub claims: Claims,
    pub csrf: String,
}

/// The session the cookie `name` names, if it is signed by `keys` and live in `store` at `now`
/// for the subject it was opened for.
pub async fn open(
    keys: &TokenKeys,
    store: &dyn Store,
    name: &str,
    headers: &HeaderMap,
    now: UnixMillis,
) -> Result<Option<Session>, StoreError> {
    let Some(value) = cookie::read(headers, name) else {
        return Ok(None);
    };
    let Ok(claims) = keys.open(Kind::Session, value, now) else {
        return Ok(None);
    };
    // The cookie only names the session: it counts while the server says it is live, and for
    // the subject it was opened for (a revoked, expired or unknown id opens nothing).
    match store.live_session(&claims.id, now).await? {
        Some(subject) if subject == claims.subject() => Ok(Some(Session {
            csrf: keys.csrf(&claims.id),
            claims,
        })),
        _ => Ok(None),
    }
}

/// Whether the browser says this request came from another site. A request without these
/// headers (an old browser, a script) passes here and still needs its CSRF token.
pub fn cross_site(base_url: &str, headers: &HeaderMap) -> bool {
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site.trim(), "same-origin" | "none")
    {
        return true;
    }
    let Some(origin) = text(header::ORIGIN) else {
        return false;
    };
    let origin = origin.trim().trim_end_matches('/');
    if origin == "null" {
        return true;
    }
    let own_host = text(header::HOST).map(str::trim);
    let host_of = |o: &str| {
        o.strip_prefix("https://")
            .or_else(|| o.strip_prefix("http://"))
            .map(str::to_owned)
    };
    let matches_host = own_host.is_some_and(|h| host_of(origin).as_deref() == Some(h));
    let matches_public = origin == base_url.trim_end_matches('/');
    !(matches_host || matches_public)
}
