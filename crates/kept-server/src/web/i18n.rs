//! Which language a page speaks: `?lang=`, else the language cookie a `?lang=` choice left,
//! else `Accept-Language`, among the languages the organisation offers.

use crate::web::cookie;
use crate::web::texts::{self, Texts};
use axum::http::{HeaderMap, header};

/// The language cookie: a choice made with `?lang=` sticks to the pages.
pub const LANG_COOKIE: &str = "kept_lang";

/// The language of this request: `?lang=`, the language cookie, `Accept-Language`.
pub fn language(offered: &[String], lang: Option<&str>, headers: &HeaderMap) -> &'static Texts {
    let chosen = lang.or_else(|| cookie::read(headers, LANG_COOKIE));
    let accept = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok());
    texts::choose(chosen, accept, offered)
}

/// The cookie that keeps the language chosen with `?lang=` for a year on the pages under `path`.
pub fn lang_cookie(path: &str, code: &str, secure: bool) -> String {
    format!(
        "{LANG_COOKIE}={code}; Path={path}; SameSite=Lax; Max-Age=31536000{}",
        if secure { "; Secure" } else { "" }
    )
}
