//! Cookies: reading one from a request, and the `Set-Cookie` value of a session cookie.

use axum::http::{HeaderMap, header};

/// The value of one cookie of a request.
pub fn read<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// A session cookie `name` for the pages under `path`: out of scripts' reach, not sent with
/// other sites' requests but for top-level links, `Secure` when the pages are served by HTTPS.
pub fn session(name: &str, path: &str, value: &str, max_age_secs: i64, secure: bool) -> String {
    format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{}",
        if secure { "; Secure" } else { "" }
    )
}
