//! Access exports over HTTP, on whichever backend the tests run on: an access request's signed
//! links, the three formats (JSON checked against its published schema, the CSV zip, the page
//! in German with a planted script escaped), every download recorded with its hash, and the
//! refusals of links that are tampered, expired, of another request, or of a request rejected
//! or not yet verified. With `SHOP_POSTGRES_URL` (as `.ci/run` sets it), the export holds the
//! fixture shop's rows the connectors find.

use crate::support::{Answer, NOW, TestApp, get, post};
use axum::http::{StatusCode, header};
use kept_server::requests::export::{LINK_TTL, links};
use kept_server::subjects::export::SCHEMA;
use kept_store::Role;
use serde_json::{Value, json};
use std::io::Read as _;
use std::sync::Arc;

async fn file(app: &TestApp, user: &str, kind: &str) -> u64 {
    let answer = app
        .send(post(
            "/v1/requests",
            Some(app.key(Role::Privacy)),
            &json!({ "subject": { "user_id": user }, "kind": kind }).to_string(),
        ))
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    answer.json["id"].as_u64().unwrap()
}

async fn verify(app: &TestApp, id: u64) {
    let answer = app
        .send(post(
            &format!("/v1/requests/{id}/advance"),
            Some(app.key(Role::Privacy)),
            &json!({ "to": "verified",
                     "verification": { "method": "company_stated", "reference": "case-1" } })
            .to_string(),
        ))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
}

async fn links_of(app: &TestApp, id: u64, query: &str) -> Answer {
    app.send(get(
        &format!("/v1/requests/{id}/export{query}"),
        Some(app.key(Role::Privacy)),
    ))
    .await
}

/// The path and query of a link (the router answers paths, not URLs).
fn path_of(link: &str) -> &str {
    &link[link.find("/exports/").unwrap()..]
}

/// A trait planted through the collection API, as a shop's backend would send it.
async fn plant_trait(app: &TestApp, user: &str, name: &str) {
    let answer = app
        .send(post(
            "/v1/identify",
            Some(app.key(Role::Server)),
            &json!({
                "userId": user,
                "traits": { "name": name, "email": "ada@example.com" },
                "context": { "kept": { "collection_point": "checkout" } }
            })
            .to_string(),
        ))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
}

fn schema() -> jsonschema::Validator {
    jsonschema::validator_for(&serde_json::from_str::<Value>(SCHEMA).unwrap()).unwrap()
}

#[tokio::test]
async fn an_access_request_is_answered_through_signed_links_in_three_formats() {
    let app = TestApp::new().await;
    plant_trait(&app, "u1", "<script>alert(1)</script>").await;
    let id = file(&app, "u1", "access").await;
    verify(&app, id).await;
    let answer = links_of(&app, id, "?lang=de").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.json["request"], json!(id));
    assert_eq!(answer.json["expires_at"], json!(NOW + LINK_TTL));

    // JSON: valid against the published schema, holding the subject's data.
    let data = app
        .send(get(path_of(answer.json["json"].as_str().unwrap()), None))
        .await;
    assert_eq!(data.status, StatusCode::OK, "{}", data.text);
    assert_eq!(data.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(data.headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(
        data.headers[header::CONTENT_DISPOSITION],
        format!(
            "attachment; filename=\"my-data-{}.json\"",
            app.subjects[0].0
        )
    );
    let errors: Vec<String> = schema()
        .iter_errors(&data.json)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(data.json["format"], "kept-export-v1");
    assert_eq!(data.json["request"]["id"], json!(id));
    assert_eq!(data.json["subject"]["user_id"], "u1");
    let emails: Vec<&Value> = data.json["identifiers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "email")
        .collect();
    assert_eq!(emails[0]["value"], "ada@example.com");
    let name = data.json["traits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == "name")
        .unwrap();
    assert_eq!(name["collection_point"], "checkout");
    assert!(
        data.json["summary"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["section"] == "traits" && r["count"].as_u64() >= Some(2))
    );
    assert!(!data.json["purposes"].as_array().unwrap().is_empty());
    assert!(!data.json["recipients"].as_array().unwrap().is_empty());

    // The CSV bundle: one file per section, cells as the rest of Kept writes them.
    let zip = app
        .send(get(path_of(answer.json["csv"].as_str().unwrap()), None))
        .await;
    assert_eq!(zip.status, StatusCode::OK, "{}", zip.text);
    assert_eq!(zip.headers[header::CONTENT_TYPE], "application/zip");
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip.bytes)).unwrap();
    let names: Vec<String> = archive.file_names().map(str::to_owned).collect();
    for file in [
        "summary.csv",
        "identifiers.csv",
        "traits.csv",
        "events.csv",
        "consents.csv",
        "decisions.csv",
        "deliveries.csv",
        "merges.csv",
        "recipients.csv",
        "purposes.csv",
    ] {
        assert!(names.iter().any(|n| n == file), "{file} in {names:?}");
    }
    let mut identifiers = String::new();
    archive
        .by_name("identifiers.csv")
        .unwrap()
        .read_to_string(&mut identifiers)
        .unwrap();
    assert!(
        identifiers.starts_with("kind,value,since\n"),
        "{identifiers}"
    );
    assert!(
        identifiers.contains("email,ada@example.com,"),
        "{identifiers}"
    );

    // The page, in German as the links were asked for, the planted script escaped.
    let page = app
        .send(get(path_of(answer.json["html"].as_str().unwrap()), None))
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert_eq!(
        page.headers[header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
    assert!(page.text.contains("<html lang=\"de\">"), "{}", page.text);
    for heading in [
        "Was wir gespeichert haben",
        "Warum wir es speichern",
        "Seit wann",
        "An wen es ging",
    ] {
        assert!(page.text.contains(heading), "{heading}");
    }
    assert!(!page.text.contains("<script>alert(1)</script>"));
    assert!(
        page.text
            .contains("&#60;script&#62;alert(1)&#60;/script&#62;")
    );

    // Every download is in the request's log with the hash of what was handed over.
    let shown = app
        .send(get(
            &format!("/v1/requests/{id}"),
            Some(app.key(Role::Privacy)),
        ))
        .await;
    let notes: Vec<&Value> = shown.json["log"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["detail"]["note"] == "export handed over")
        .collect();
    assert_eq!(notes.len(), 3, "{}", shown.text);
    for (note, (format, body)) in notes.iter().zip([
        ("json", &data.bytes),
        ("csv", &zip_bytes_of(&app, &answer).await),
        ("html", &page.bytes),
    ]) {
        assert_eq!(note["detail"]["export.format"], format);
        assert_eq!(note["from"], "verified");
        assert_eq!(note["to"], "verified");
        assert_eq!(note["actor"], "export_link");
        if format != "csv" {
            assert_eq!(
                note["detail"]["export.blake3"],
                blake3::hash(body).to_hex().as_str()
            );
        }
    }
    assert_eq!(shown.json["state"], "verified", "a download moves nothing");
}

/// Downloads the zip again (its bytes were consumed by the archive reader).
async fn zip_bytes_of(app: &TestApp, links: &Answer) -> Vec<u8> {
    app.send(get(path_of(links.json["csv"].as_str().unwrap()), None))
        .await
        .bytes
}

#[tokio::test]
async fn links_are_refused_when_tampered_expired_or_of_another_request() {
    let app = TestApp::new().await;
    let id = file(&app, "u1", "access").await;
    // Not verified yet: no links.
    let early = links_of(&app, id, "").await;
    assert_eq!(early.status, StatusCode::CONFLICT, "{}", early.text);
    assert_eq!(early.code(), "export.not_ready");
    verify(&app, id).await;
    let answer = links_of(&app, id, "").await;
    let link = path_of(answer.json["json"].as_str().unwrap()).to_owned();

    // Tampered: one character of the signed claims changed.
    let token_start = "/exports/".len();
    let mut tampered = link.clone().into_bytes();
    tampered[token_start + 3] = if tampered[token_start + 3] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let tampered = String::from_utf8(tampered).unwrap();
    let refused = app.send(get(&tampered, None)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    assert_eq!(refused.code(), "export.link_invalid");
    assert!(!refused.text.contains("u1"));

    // Expired: a link minted a week and a moment ago.
    let keys = app.state.prefcenter.keys(app.store.as_ref()).await.unwrap();
    let request = app.store.request(id).await.unwrap().unwrap();
    let old = links(keys, "http://kept.test", &request, None, NOW - LINK_TTL - 1);
    let expired = app.send(get(path_of(&old.json), None)).await;
    assert_eq!(expired.status, StatusCode::FORBIDDEN, "{}", expired.text);
    assert_eq!(expired.code(), "export.link_expired");

    // Another request's id in a link signed for this subject: the subjects differ.
    let other = file(&app, "u2", "access").await;
    let mut forged = request.clone();
    forged.id = other;
    let wrong = links(keys, "http://kept.test", &forged, None, NOW);
    let mismatch = app.send(get(path_of(&wrong.json), None)).await;
    assert_eq!(mismatch.status, StatusCode::FORBIDDEN, "{}", mismatch.text);
    assert_eq!(mismatch.code(), "export.link_mismatch");

    // An unknown format names the field.
    let bad = app
        .send(get(&link.replace("format=json", "format=xml"), None))
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.text);
    assert_eq!(bad.json["error"]["field"], "format");

    // An erasure request is not answered with an export.
    let erasure = file(&app, "u2", "erasure").await;
    let not = links_of(&app, erasure, "").await;
    assert_eq!(not.status, StatusCode::CONFLICT, "{}", not.text);
    assert_eq!(not.code(), "export.not_exportable");

    // Rejected since the link was handed out: gone, and nothing more is logged.
    let rejected = app
        .send(post(
            &format!("/v1/requests/{id}/reject"),
            Some(app.key(Role::Privacy)),
            &json!({ "reason": "not the subject" }).to_string(),
        ))
        .await;
    assert_eq!(rejected.status, StatusCode::OK, "{}", rejected.text);
    let gone = app.send(get(&link, None)).await;
    assert_eq!(gone.status, StatusCode::GONE, "{}", gone.text);
    assert_eq!(gone.code(), "export.gone");
    let log = kept_server::requests::service::log_of(app.store.as_ref(), id)
        .await
        .unwrap();
    assert!(
        log.iter()
            .all(|(_, _, r)| r.detail.iter().all(|(k, _)| k != "export.blake3"))
    );
}

#[tokio::test]
async fn an_erased_subject_gets_no_export() {
    let app = TestApp::new().await;
    let id = file(&app, "u1", "access").await;
    verify(&app, id).await;
    let link = links_of(&app, id, "").await.json["json"]
        .as_str()
        .unwrap()
        .to_owned();
    app.store
        .set_erasure_requested(app.subjects[0], Some(NOW))
        .await
        .unwrap();
    let gone = app.send(get(path_of(&link), None)).await;
    assert_eq!(gone.status, StatusCode::GONE, "{}", gone.text);
    assert_eq!(gone.code(), "export.gone");
    let links = links_of(&app, id, "").await;
    assert_eq!(links.status, StatusCode::GONE, "{}", links.text);
}

#[tokio::test]
async fn completing_an_access_request_notes_its_exports_hash() {
    let app = TestApp::new().await;
    let id = file(&app, "u1", "access").await;
    verify(&app, id).await;
    for to in ["in_progress", "completed"] {
        let answer = app
            .send(post(
                &format!("/v1/requests/{id}/advance"),
                Some(app.key(Role::Privacy)),
                &json!({ "to": to, "note": "sent by mail" }).to_string(),
            ))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    }
    let shown = app
        .send(get(
            &format!("/v1/requests/{id}"),
            Some(app.key(Role::Privacy)),
        ))
        .await;
    let log = shown.json["log"].as_array().unwrap();
    let done = log.last().unwrap();
    assert_eq!(done["to"], "completed");
    assert_eq!(
        done["actor"], "kept",
        "completed once every task was settled"
    );
    // Kept's task was settled by the operator with their note and the export's hash.
    let settled = &log[log.len() - 2];
    assert_eq!(settled["detail"]["task"], "kept");
    assert_eq!(settled["detail"]["task.state"], "handled");
    let note = settled["detail"]["note"].as_str().unwrap();
    assert!(
        note.starts_with("sent by mail; export json blake3:"),
        "{note}"
    );
    // The in-progress step carried the note as given: only completion adds the hash.
    assert_eq!(log[log.len() - 3]["detail"]["note"], "sent by mail");
}

#[tokio::test]
async fn the_schema_is_published() {
    let app = TestApp::new().await;
    let answer = app.send(get("/schema/export-v1.json", None)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.headers[header::CONTENT_TYPE],
        "application/schema+json"
    );
    assert_eq!(answer.json["$id"], "/schema/export-v1.json");
    // The schema is strict enough to refuse a document that lost a section.
    let mut document = json!({});
    document["format"] = json!("kept-export-v1");
    assert!(!schema().is_valid(&document));
}

// --- the company's own databases -----------------------------------------------------------

const SHOP_TOML: &str = include_str!("../../../../tests/fixtures/shop/kept.toml");
const SHOP_POSTGRES: &str = include_str!("../../../../tests/fixtures/shop/postgres.sql");

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let host_end = url[scheme_end..]
        .find(['/', '?'])
        .map_or(url.len(), |i| scheme_end + i);
    format!("{}/{name}", &url[..host_end])
}

/// A fixture shop database of this test's own on the PostgreSQL server `SHOP_POSTGRES_URL`
/// names, or `None` (having said so) without one.
async fn shop_database(test: &str) -> Option<(String, String, String)> {
    use sqlx::Connection as _;
    let Some(server) = std::env::var("SHOP_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!("skipped: SHOP_POSTGRES_URL is not set (.ci/run sets it)");
        return None;
    };
    let name = format!("kept_shop_{test}_{}", std::process::id());
    let url = with_database(&server, &name);
    let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(&format!(
        "SET client_min_messages = warning; {SHOP_POSTGRES}"
    ))
    .execute(&mut db)
    .await
    .unwrap();
    Some((server, name, url))
}

async fn drop_database(server: &str, name: &str) {
    use sqlx::Connection as _;
    if let Ok(mut admin) = sqlx::PgConnection::connect(server).await {
        let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await;
    }
}

#[tokio::test]
async fn the_export_holds_the_rows_the_connectors_find_in_the_shop() {
    let Some((server, name, url)) = shop_database("export").await else {
        return;
    };
    let source = format!("{}\n{SHOP_TOML}", kept_core::manifest::demo_toml());
    let manifest = kept_core::manifest::load(&source, "kept.toml")
        .unwrap()
        .manifest;
    let mut app = TestApp::new().await.restart_with(manifest).await;
    // The PostgreSQL shop is this test's database; MariaDB's variable names nothing here, so
    // that dataset says why it could not be searched, and the rest of the export is still owed.
    app.state = app
        .state
        .clone()
        .with_dataset_urls(Arc::new(move |var: &str| {
            (var == "SHOP_POSTGRES_URL").then(|| url.clone())
        }));
    // The shop's customer number is Kept's user id: customer 1 is Ada.
    plant_trait(&app, "1", "Ada").await;
    let id = file(&app, "1", "access").await;
    verify(&app, id).await;
    let links = links_of(&app, id, "").await;
    let data = app
        .send(get(path_of(links.json["json"].as_str().unwrap()), None))
        .await;
    assert_eq!(data.status, StatusCode::OK, "{}", data.text);
    let errors: Vec<String> = schema()
        .iter_errors(&data.json)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    let databases = data.json["company_databases"].as_array().unwrap();
    let shop = databases.iter().find(|d| d["dataset"] == "shop").unwrap();
    assert!(shop.get("error").is_none(), "{shop}");
    let ids = |table: &str| -> Vec<String> {
        let t = shop["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["table"] == table)
            .unwrap();
        let mut v: Vec<String> = t["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r["id"]
                    .as_str()
                    .or(r["order_id"].as_str())
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        v.sort();
        v
    };
    // Ada's customer row, her addresses, her orders (the guest checkout by email too), their
    // lines and her tickets; none of Bob's.
    assert_eq!(ids("customers"), vec!["1"]);
    assert_eq!(ids("orders"), vec!["100", "101", "103"]);
    assert_eq!(ids("order_lines"), vec!["100", "100", "101", "103"]);
    let tickets = shop["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "support_tickets")
        .unwrap();
    assert_eq!(tickets["rows"].as_array().unwrap().len(), 2);
    assert!(!data.text.contains("bob@example.com"));
    let mysql = databases
        .iter()
        .find(|d| d["dataset"] == "shop_mysql")
        .unwrap();
    assert_eq!(mysql["error"]["code"], "connect.missing_url");

    // The zip has a file per table found, and the page names the shop.
    let zip = app
        .send(get(path_of(links.json["csv"].as_str().unwrap()), None))
        .await;
    let archive = zip::ZipArchive::new(std::io::Cursor::new(zip.bytes)).unwrap();
    assert!(
        archive
            .file_names()
            .any(|n| n == "company_databases/shop/orders.csv")
    );
    let page = app
        .send(get(path_of(links.json["html"].as_str().unwrap()), None))
        .await;
    assert!(
        page.text.contains("Web shop (PostgreSQL) · orders"),
        "{}",
        page.text
    );
    drop_database(&server, &name).await;
}
