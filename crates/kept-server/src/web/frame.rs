//! The frame every page shares (the company's name and colour, the language choice, the
//! footer) and how a page is answered: HTML or a redirect, with the headers every page carries.

use crate::http::error::ApiError;
use crate::web::texts::{self, Texts};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kept_core::manifest::Organisation;

#[derive(Debug, Clone)]
pub struct LocaleChoice {
    pub code: &'static str,
    pub name: &'static str,
    pub selected: bool,
}

/// What the frame of every page shows: the company, its colour, the language choice.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub t: &'static Texts,
    pub org: String,
    pub brand: String,
    pub on_brand: &'static str,
    pub accent: String,
    pub locales: Vec<LocaleChoice>,
    pub contact_email: String,
    pub postal_address: Option<String>,
    pub signed_in: bool,
    pub csrf: String,
    /// The page the language form reloads.
    pub path: &'static str,
}

/// The frame for a page at `path` in language `t`, for `org`.
pub fn chrome(org: &Organisation, t: &'static Texts, path: &'static str) -> Chrome {
    let brand = org
        .brand_colour
        .clone()
        .filter(|c| parse_hex(c).is_some())
        .unwrap_or_else(|| "#33475b".to_owned());
    let rgb = parse_hex(&brand).unwrap_or((51, 71, 91));
    let on_white = contrast(luminance(rgb), 1.0);
    let on_brand = if contrast(luminance(rgb), 1.0) >= contrast(luminance(rgb), 0.0) {
        "#ffffff"
    } else {
        "#111111"
    };
    let offered: Vec<&'static Texts> = texts::ALL
        .iter()
        .copied()
        .filter(|l| org.locales.is_empty() || org.locales.iter().any(|o| o == l.code))
        .collect();
    Chrome {
        t,
        org: org.name.clone(),
        accent: if on_white >= 4.5 {
            brand.clone()
        } else {
            "#1f4e79".to_owned()
        },
        brand,
        on_brand,
        locales: offered
            .into_iter()
            .map(|l| LocaleChoice {
                code: l.code,
                name: l.language_name,
                selected: l.code == t.code,
            })
            .collect(),
        contact_email: org.contact_email.clone(),
        postal_address: org.postal_address.clone(),
        signed_in: false,
        csrf: String::new(),
        path,
    }
}

fn parse_hex(c: &str) -> Option<(u8, u8, u8)> {
    let h = c.strip_prefix('#')?;
    if h.len() != 6 {
        return None;
    }
    let byte = |i: usize| u8::from_str_radix(h.get(i..i + 2)?, 16).ok();
    Some((byte(0)?, byte(2)?, byte(4)?))
}

fn luminance((r, g, b): (u8, u8, u8)) -> f64 {
    let channel = |c: u8| {
        let c = f64::from(c) / 255.0;
        if c <= 0.039_28 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)
}

fn contrast(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    (hi + 0.05) / (lo + 0.05)
}

/// A day as pages show it (`2026-12-04`, UTC).
pub fn date(ms: kept_core::UnixMillis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// A moment as pages show it (`2026-12-04 09:30 UTC`).
pub fn datetime(ms: kept_core::UnixMillis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

/// An HTML answer with the headers every page carries.
pub fn html(status: StatusCode, body: Result<String, askama::Error>) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(e) => return ApiError::Internal(format!("page template: {e}")).into_response(),
    };
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    security_headers(h);
    response
}

/// The headers every page and redirect carries: not cached, not framed, no referrer to other
/// sites, nothing but inline styles and own images.
pub fn security_headers(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Links carry tokens: never hand them to another site in a referrer. (`no-referrer` would
    // also make browsers send `Origin: null` with the page's own forms, which are refused.)
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
}

/// A `303 See Other` to `to`, setting `cookies`.
pub fn redirect(to: &str, cookies: &[String]) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(to) {
        h.insert(header::LOCATION, v);
    }
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            h.append(header::SET_COOKIE, v);
        }
    }
    security_headers(h);
    response
}
