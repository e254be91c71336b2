//! kept.js, the first-party snippet (`GET /kept.js`), and the banner configuration it reads
//! (`GET /kept/config.json`): the purposes a visitor is asked about in the visitor's regime and
//! language, with the notices that promise them. Neither needs a key: both are public, and the
//! configuration says nothing about any person.
//!
//! The visitor's regime comes from the country (and region) a proxy in front of Kept puts in a
//! header (`X-Kept-Country`/`X-Kept-Region`, Cloudflare's `CF-IPCountry`/`CF-Region-Code`,
//! CloudFront's viewer headers), else from the region of the preferred language, else it is
//! `strictest`: Kept asks for consent when it cannot tell.

mod texts;

use crate::http::error::ApiError;
use crate::state::AppState;
use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kept_core::UnixMillis;
use kept_core::decision::{Compiled, DecisionRequest};
use kept_core::manifest::Manifest;
use kept_core::regime::Regime;
use kept_core::rulebook::{Level, PurposeClass};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::OnceLock;

/// The snippet, as served.
pub const KEPT_JS: &str = include_str!("../../assets/kept.js");

/// How long browsers and caches keep kept.js before asking again (with its `ETag`).
const SCRIPT_CACHE: &str = "public, max-age=3600";
/// The configuration depends on where the visitor is: cached by the browser only, briefly.
const CONFIG_CACHE: &str = "private, max-age=300";

/// Headers a proxy may put the visitor's country in, in the order they are trusted.
const COUNTRY_HEADERS: [&str; 3] = [
    "x-kept-country",
    "cf-ipcountry",
    "cloudfront-viewer-country",
];
const REGION_HEADERS: [&str; 3] = [
    "x-kept-region",
    "cf-region-code",
    "cloudfront-viewer-country-region",
];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/kept.js", get(script))
        .route("/kept/config.json", get(config))
}

struct Script {
    etag: HeaderValue,
    gzip: Vec<u8>,
}

fn compiled_script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| {
        let hash = blake3::hash(KEPT_JS.as_bytes());
        let etag = format!(
            "\"{}\"",
            hex::encode(hash.as_bytes().get(..12).unwrap_or_default())
        );
        Script {
            etag: HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"kept\"")),
            gzip: gzip(KEPT_JS.as_bytes()),
        }
    })
}

/// `bytes` gzipped at the best compression (done once; the script never changes while Kept
/// runs). Empty if compression failed, and then the script goes out uncompressed.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder
        .write_all(bytes)
        .and_then(|()| encoder.finish())
        .unwrap_or_default()
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

/// `GET /kept.js`: the snippet, gzipped when the browser accepts it, revalidated by `ETag`.
async fn script(headers: HeaderMap) -> Response {
    let script = compiled_script();
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|tag| tag.trim() == script.etag || tag.trim() == "*")
        });
    let common = [
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static(SCRIPT_CACHE),
        ),
        (header::ETAG, script.etag.clone()),
        (header::VARY, HeaderValue::from_static("Accept-Encoding")),
    ];
    if cached {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    let js = (
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    let nosniff = (
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if accepts_gzip(&headers) && !script.gzip.is_empty() {
        let encoding = (header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        (common, [js, nosniff, encoding], script.gzip.clone()).into_response()
    } else {
        (common, [js, nosniff], KEPT_JS).into_response()
    }
}

/// Where a visitor is and which language they read, as far as the request tells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Visitor {
    /// ISO 3166-1 alpha-2, upper case.
    pub country: Option<String>,
    /// Subdivision without the country prefix (`CA`).
    pub region: Option<String>,
    /// The visitor's languages, most preferred first (`de-DE`, `en`).
    pub languages: Vec<String>,
    /// The browser sent `Sec-GPC: 1`.
    pub gpc: bool,
    /// The country came from a proxy's header (not guessed from the language).
    pub located: bool,
}

impl Visitor {
    pub fn from_headers(headers: &HeaderMap) -> Visitor {
        let first = |names: &[&str]| {
            names.iter().find_map(|name| {
                headers
                    .get(*name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(str::to_ascii_uppercase)
            })
        };
        let languages = preferred_languages(
            headers
                .get(header::ACCEPT_LANGUAGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default(),
        );
        // Cloudflare says `XX` for unknown and `T1` for Tor.
        let located_at = first(&COUNTRY_HEADERS)
            .filter(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()))
            .filter(|c| c != "XX");
        let located = located_at.is_some();
        let country = located_at.or_else(|| languages.first().and_then(|l| language_region(l)));
        let region = first(&REGION_HEADERS).map(|r| match r.split_once('-') {
            // `US-CA` as well as `CA`.
            Some((_, sub)) => sub.to_owned(),
            None => r,
        });
        let gpc = kept_core::signals::gpc::from_header(
            headers
                .get(kept_core::signals::gpc::HEADER)
                .and_then(|v| v.to_str().ok()),
        );
        Visitor {
            country,
            region,
            languages,
            gpc,
            located,
        }
    }

    pub fn regime(&self) -> Regime {
        Regime::resolve(self.country.as_deref(), self.region.as_deref())
    }
}

/// The language tags of an `Accept-Language` header, most preferred first, refused ones out.
pub fn preferred_languages(header: &str) -> Vec<String> {
    let mut tags: Vec<(f32, usize, String)> = header
        .split(',')
        .enumerate()
        .filter_map(|(i, part)| {
            let mut pieces = part.split(';');
            let tag = pieces.next()?.trim();
            if tag.is_empty() || tag == "*" {
                return None;
            }
            let q = pieces
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            (q > 0.0).then(|| (q, i, tag.to_owned()))
        })
        .collect();
    tags.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    tags.into_iter().map(|(_, _, tag)| tag).collect()
}

/// The country of a language tag's region (`de-DE` → `DE`); none for `en` or `es-419`.
fn language_region(tag: &str) -> Option<String> {
    tag.split(['-', '_'])
        .skip(1)
        .find(|s| s.len() == 2 && s.bytes().all(|b| b.is_ascii_alphabetic()))
        .map(str::to_ascii_uppercase)
}

/// The locale to show: the first of the visitor's languages the organisation offers (whole tag,
/// then its primary language), else the organisation's default.
pub fn pick_locale(offered: &[String], languages: &[String]) -> String {
    for lang in languages {
        let lower = lang.to_ascii_lowercase();
        let primary = lower.split(['-', '_']).next().unwrap_or_default();
        let found = offered
            .iter()
            .find(|o| o.to_ascii_lowercase() == lower)
            .or_else(|| offered.iter().find(|o| o.to_ascii_lowercase() == primary));
        if let Some(found) = found {
            return found.clone();
        }
    }
    offered.first().cloned().unwrap_or_else(|| "en".to_owned())
}

/// What kept.js shows one visitor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BannerConfig {
    /// The configuration's format.
    pub v: u32,
    pub organisation: String,
    pub regime: &'static str,
    /// Where a proxy in front of Kept located the visitor, sent back with every event as
    /// `context.location` so that the subject's regime is the banner's. Absent when the
    /// country was only guessed from the language: the subject's regime is then `strictest`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// `opt_in`: a banner asks before anything consent-based happens; `opt_out`: no banner,
    /// a "do not sell or share" link; `none`: nothing to choose here.
    pub mode: &'static str,
    pub locale: String,
    pub brand_colour: Option<String>,
    /// The request carried `Sec-GPC: 1`.
    pub gpc: bool,
    /// The manifest's purposes as they stand for this visitor; those that need no consent
    /// (contract, legal obligation) are listed as `none`, never asked about, always on.
    pub purposes: Vec<BannerPurpose>,
    /// Consent-manager categories (`analytics`) and the purposes each stands for, for
    /// `data-kept-purpose` on scripts.
    pub categories: BTreeMap<String, Vec<String>>,
    pub texts: texts::Texts,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BannerPurpose {
    pub key: String,
    pub name: String,
    pub description: String,
    /// `advertising`, `analytics`, `personalize`, `marketing` or `other` (for Google Consent
    /// Mode and the "do not sell or share" link).
    pub class: &'static str,
    /// `opt_in` (asked in the banner, off until the visitor says yes), `opt_out` (on until the
    /// visitor says no) or `none` (needs nobody's consent here).
    pub requires: &'static str,
    /// A Global Privacy Control signal counts as a "no" for it here.
    pub gpc: bool,
    /// The notice that promises it, in the visitor's language.
    pub notice: Option<BannerNotice>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BannerNotice {
    pub id: String,
    pub version: u32,
    pub title: String,
    pub text: String,
}

/// The banner for `visitor`, from the manifest and the rulebook as compiled for decisions.
pub fn banner_config(
    manifest: &Manifest,
    compiled: &Compiled,
    visitor: &Visitor,
    now: UnixMillis,
) -> BannerConfig {
    let regime = visitor.regime();
    let place = compiled.place_of(visitor.country.as_deref(), visitor.region.as_deref());
    let locale = pick_locale(&manifest.organisation.locales, &visitor.languages);
    let mut purposes = Vec::new();
    for (key, purpose) in &manifest.purposes {
        let query = compiled.prepare(&DecisionRequest::new(key));
        if query.invalid.is_some() {
            continue;
        }
        let Some(req) = compiled.requirement(place, &query) else {
            continue;
        };
        let requires = match req.level {
            Level::None => "none",
            Level::OptOut => "opt_out",
            Level::OptIn => "opt_in",
            // Written consent (TCPA) is never given through a banner.
            Level::OptInWritten => continue,
        };
        let class = PurposeClass::of(key);
        let (name, description) = purpose.text_in(&locale);
        purposes.push(BannerPurpose {
            key: key.clone(),
            name: name.to_owned(),
            description: description.to_owned(),
            class: match class {
                PurposeClass::Essential | PurposeClass::Other => "other",
                other => other.as_str(),
            },
            requires,
            gpc: kept_core::signals::gpc::stops(class, req.gpc, now),
            notice: banner_notice(manifest, key, &locale),
        });
    }
    let mode = if purposes.iter().any(|p| p.requires == "opt_in") {
        "opt_in"
    } else if purposes.iter().any(|p| p.requires == "opt_out") {
        "opt_out"
    } else {
        "none"
    };
    let offered: Vec<&str> = purposes.iter().map(|p| p.key.as_str()).collect();
    let categories = manifest
        .consent_categories
        .iter()
        .map(|(category, keys)| {
            let keys = keys
                .iter()
                .filter(|k| offered.contains(&k.as_str()))
                .cloned()
                .collect();
            (category.clone(), keys)
        })
        .collect();
    BannerConfig {
        v: 1,
        organisation: manifest.organisation.name.clone(),
        regime: regime.as_str(),
        country: visitor.country.clone().filter(|_| visitor.located),
        region: visitor.region.clone().filter(|_| visitor.located),
        mode,
        texts: texts::for_locale(&locale, &manifest.organisation.name),
        locale,
        brand_colour: manifest.organisation.brand_colour.clone(),
        gpc: visitor.gpc,
        purposes,
        categories,
    }
}

/// The notice shown for `purpose` (by the one rule in `kept-core`; a banner has no channel),
/// in `locale` or the first locale it has. Its id is what `kept.js` names when the choice is
/// sent, and so what the ledger records.
fn banner_notice(manifest: &Manifest, purpose: &str, locale: &str) -> Option<BannerNotice> {
    let (id, notice) = kept_core::manifest::promises::notice_for(manifest, purpose, None, None)?;
    let text = notice
        .locales
        .get(locale)
        .or_else(|| notice.locales.values().next())?;
    Some(BannerNotice {
        id: id.clone(),
        version: notice.version,
        title: text.title.clone(),
        text: text.text.clone(),
    })
}

/// `GET /kept/config.json`: the banner for the visitor making the request.
async fn config(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let visitor = Visitor::from_headers(&headers);
    let compiled = state.index.compiled()?;
    let body = banner_config(&state.manifest, compiled, &visitor, state.now());
    Ok((
        [
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static(CONFIG_CACHE),
            ),
            (
                header::VARY,
                HeaderValue::from_static(
                    "Accept-Language, Sec-GPC, X-Kept-Country, X-Kept-Region, CF-IPCountry, \
                     CF-Region-Code",
                ),
            ),
            // Public and personal to nobody: a page on another origin may read it.
            (
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            ),
        ],
        axum::Json(body),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_regime_comes_from_a_proxy_header_then_the_language_then_strictest() {
        let v = Visitor::from_headers(&headers(&[("cf-ipcountry", "de")]));
        assert_eq!(v.regime(), Regime::Gdpr);
        let v = Visitor::from_headers(&headers(&[
            ("x-kept-country", "US"),
            ("x-kept-region", "US-CA"),
            ("cf-ipcountry", "DE"),
        ]));
        assert_eq!(
            (v.regime(), v.region.as_deref()),
            (Regime::Ccpa, Some("CA"))
        );
        let v = Visitor::from_headers(&headers(&[
            ("cf-ipcountry", "XX"),
            ("accept-language", "fr-CA;q=0.4, pt-BR"),
        ]));
        assert_eq!(v.regime(), Regime::Lgpd);
        assert_eq!(v.languages, ["pt-BR", "fr-CA"]);
        for unknown in [
            headers(&[]),
            headers(&[("cf-ipcountry", "T1")]),
            headers(&[("accept-language", "en, es-419")]),
        ] {
            assert_eq!(Visitor::from_headers(&unknown).regime(), Regime::Strictest);
        }
        assert!(Visitor::from_headers(&headers(&[("sec-gpc", "1")])).gpc);
        assert!(!Visitor::from_headers(&headers(&[("sec-gpc", "0")])).gpc);
    }

    #[test]
    fn locales_match_whole_tags_then_languages_then_the_default() {
        let offered: Vec<String> = ["en", "de", "fr"].map(String::from).to_vec();
        let pick = |header: &str| pick_locale(&offered, &preferred_languages(header));
        assert_eq!(pick("de-AT, en;q=0.5"), "de");
        assert_eq!(pick("it, fr;q=0.1"), "fr");
        assert_eq!(pick("it"), "en");
        assert_eq!(pick("fr;q=0, de;q=0.2"), "de");
        assert_eq!(pick(""), "en");
    }

    #[test]
    fn gzip_is_accepted_unless_refused() {
        assert!(accepts_gzip(&headers(&[(
            "accept-encoding",
            "gzip, deflate, br"
        )])));
        assert!(!accepts_gzip(&headers(&[(
            "accept-encoding",
            "br, gzip;q=0"
        )])));
        assert!(!accepts_gzip(&headers(&[])));
    }
}
