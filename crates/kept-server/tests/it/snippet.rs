//! kept.js as served (caching, compression, its size budget) and the banner configuration per
//! visitor: regime from the proxy's country header or the language, texts in the visitor's
//! language, purposes as the manifest and the rulebook make them.

use crate::support::{TestApp, send};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use kept_server::snippet::{KEPT_JS, gzip};
use std::io::Read;

/// The budget kept.js must stay under, gzipped.
const BUDGET: usize = 15 * 1024;

fn get_with(path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::builder().method("GET").uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn kept_js_is_small_cached_and_compressed() {
    let app = TestApp::new().await;
    let gzipped = gzip(KEPT_JS.as_bytes()).len();
    println!(
        "kept.js: {} bytes, {gzipped} bytes gzipped (budget {BUDGET})",
        KEPT_JS.len()
    );
    assert!(gzipped > 0 && gzipped < BUDGET, "{gzipped} bytes gzipped");

    let plain = send(app.router(), get_with("/kept.js", &[])).await;
    assert_eq!(plain.status, StatusCode::OK);
    assert_eq!(
        plain.headers[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(plain.headers[header::CACHE_CONTROL], "public, max-age=3600");
    assert!(plain.headers.get(header::CONTENT_ENCODING).is_none());
    assert_eq!(plain.text, KEPT_JS);
    let etag = plain.headers[header::ETAG].to_str().unwrap().to_owned();

    let compressed = raw(
        app.router(),
        get_with("/kept.js", &[("accept-encoding", "br;q=1, gzip;q=0.8")]),
    )
    .await;
    assert_eq!(compressed.0, StatusCode::OK);
    assert_eq!(compressed.1[header::CONTENT_ENCODING], "gzip");
    assert_eq!(compressed.2.len(), gzipped);
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(&compressed.2[..])
        .read_to_string(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, KEPT_JS);

    let again = send(
        app.router(),
        get_with("/kept.js", &[("if-none-match", &etag)]),
    )
    .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.text.is_empty());
    let changed = send(
        app.router(),
        get_with("/kept.js", &[("if-none-match", "\"something-else\"")]),
    )
    .await;
    assert_eq!(changed.status, StatusCode::OK);
}

/// An answer with its body as bytes (a gzipped body is not text).
async fn raw(
    router: axum::Router,
    req: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    use tower::ServiceExt;
    let response = router.oneshot(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, body.to_vec())
}

fn purpose<'a>(config: &'a serde_json::Value, key: &str) -> &'a serde_json::Value {
    config["purposes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["key"] == key)
        .unwrap_or_else(|| panic!("no purpose `{key}` in {config}"))
}

#[tokio::test]
async fn a_visitor_in_germany_gets_an_opt_in_banner_in_german() {
    let app = TestApp::new().await;
    let answer = send(
        app.router(),
        get_with(
            "/kept/config.json",
            &[
                ("cf-ipcountry", "DE"),
                ("accept-language", "de-DE,de;q=0.9,en;q=0.5"),
            ],
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(
        answer.headers[header::CACHE_CONTROL],
        "private, max-age=300"
    );
    assert!(
        answer.headers[header::VARY]
            .to_str()
            .unwrap()
            .contains("CF-IPCountry")
    );
    let c = &answer.json;
    assert_eq!(c["regime"], "gdpr");
    assert_eq!(c["mode"], "opt_in");
    assert_eq!(c["locale"], "de");
    assert_eq!(c["organisation"], "Larkspur Goods");
    assert_eq!(c["brand_colour"], "#2f6f4f");
    assert_eq!(c["texts"]["accept"], "Alle akzeptieren");
    assert_eq!(c["texts"]["reject"], "Alle ablehnen");
    assert!(
        c["texts"]["intro"]
            .as_str()
            .unwrap()
            .starts_with("Larkspur Goods ")
    );
    let shop = purpose(c, "personalize.content.profiled");
    assert_eq!(shop["requires"], "opt_in");
    assert_eq!(shop["class"], "personalize");
    // The purpose in the manifest's German words.
    assert_eq!(shop["name"], "Persönlicher Shop");
    assert!(
        shop["description"]
            .as_str()
            .unwrap()
            .starts_with("Im Webshop")
    );
    assert_eq!(shop["notice"]["id"], "personalization");
    assert_eq!(shop["notice"]["version"], 1);
    assert_eq!(
        shop["notice"]["title"],
        "Ein Shop, der weiß, was Ihnen gefällt"
    );
    let ads = purpose(c, "marketing.advertising.third_party.targeted");
    assert_eq!(
        (&ads["requires"], &ads["class"]),
        (&"opt_in".into(), &"advertising".into())
    );
    // Contract purposes are never asked about.
    assert_eq!(
        purpose(c, "essential.service.operations")["requires"],
        "none"
    );
    assert_eq!(c["gpc"], false);
}

#[tokio::test]
async fn a_visitor_in_california_with_gpc_gets_the_do_not_sell_choice() {
    let app = TestApp::new().await;
    let answer = send(
        app.router(),
        get_with(
            "/kept/config.json",
            &[
                ("x-kept-country", "US"),
                ("x-kept-region", "CA"),
                ("sec-gpc", "1"),
                ("accept-language", "en-US"),
            ],
        ),
    )
    .await;
    let c = &answer.json;
    assert_eq!(c["regime"], "ccpa");
    assert_eq!(c["gpc"], true);
    assert_eq!(c["locale"], "en");
    assert_eq!(
        c["texts"]["do_not_sell"],
        "Do not sell or share my personal information"
    );
    let ads = purpose(c, "marketing.advertising.third_party.targeted");
    assert_eq!(ads["requires"], "opt_out");
    assert_eq!(
        ads["gpc"], true,
        "GPC is an opt-out of sale and sharing here"
    );
}

#[tokio::test]
async fn the_regime_falls_back_to_the_language_then_to_strictest() {
    let app = TestApp::new().await;
    let by_language = send(
        app.router(),
        get_with("/kept/config.json", &[("accept-language", "fr-FR")]),
    )
    .await;
    assert_eq!(by_language.json["regime"], "gdpr");
    assert_eq!(by_language.json["texts"]["accept"], "Tout accepter");
    let unknown = send(app.router(), get_with("/kept/config.json", &[])).await;
    assert_eq!(unknown.json["regime"], "strictest");
    assert_eq!(unknown.json["mode"], "opt_in");
    assert_eq!(unknown.json["locale"], "en");
    // Everything consent-based is asked for when the place is unknown.
    let ads = purpose(&unknown.json, "marketing.advertising.third_party.targeted");
    assert_eq!(ads["requires"], "opt_in");
    // Florida: no state privacy law, ads are an opt-out, nothing needs a banner.
    let florida = send(
        app.router(),
        get_with(
            "/kept/config.json",
            &[("x-kept-country", "US"), ("x-kept-region", "FL")],
        ),
    )
    .await;
    assert_eq!(florida.json["regime"], "us");
    assert_eq!(florida.json["mode"], "opt_out");
}
