//! The console's data map as every team reads it: the live `kept lint` findings (with the
//! notice hashes the database recorded), each linking to the row of the element it is about,
//! and a notice's page with the versions the database recorded.

use crate::console::{PASSWORD, operator, page, session_cookie, try_sign_in};
use crate::support::{Answer, NOW, TestApp};
use axum::http::StatusCode;
use kept_server::console::accounts;
use kept_store::NoticeHash;
use kept_store::operators::OperatorRole;
use std::sync::Arc;

async fn cookie(app: &TestApp, email: &str, role: OperatorRole) -> String {
    let secret = operator(app, email, role).await;
    let signed = try_sign_in(app, email, PASSWORD, &accounts::code_at(&secret, NOW), None).await;
    session_cookie(&signed)
}

async fn read(app: &TestApp, cookie: &str, path: &str) -> Answer {
    app.send(page(path, Some(cookie))).await
}

/// The demo without a retention for its own purpose `loyalty.rewards` (an error about a
/// purpose whose key holds dots) and with a channel the rulebook does not know (a warning about
/// no row of the page).
fn flawed() -> kept_core::manifest::Loaded {
    let demo = kept_core::manifest::demo_toml();
    let source = demo
        .replacen(
            "legal_basis = \"contract\"\nretention = \"3y\"\n",
            "legal_basis = \"contract\"\n",
            1,
        )
        .replacen(
            "web = { name = \"Web shop\" }",
            "web = { name = \"Web shop\" }\nfax = { name = \"Fax\" }",
            1,
        );
    assert_ne!(source, demo);
    kept_core::manifest::load(&source, "kept.toml").unwrap()
}

#[tokio::test]
async fn the_demo_has_no_findings_and_every_team_reads_the_map() {
    let app = TestApp::new().await;
    for (email, role) in [
        ("mia@example.com", OperatorRole::Marketing),
        ("eli@example.com", OperatorRole::Engineering),
        ("pia@example.com", OperatorRole::Privacy),
    ] {
        let cookie = cookie(&app, email, role).await;
        let map = read(&app, &cookie, "/admin/data-map").await;
        assert_eq!(map.status, StatusCode::OK, "{email}");
        assert!(map.text.contains("No findings"), "{email}: {}", map.text);
        for id in [
            "purpose-marketing.communications",
            "notice-rewards",
            "point-rewards_signup",
            "system-email_platform",
        ] {
            assert!(map.text.contains(&format!("id=\"{id}\"")), "{email}: {id}");
        }
        let notice = read(&app, &cookie, "/admin/data-map/notices/rewards").await;
        assert_eq!(notice.status, StatusCode::OK, "{email}");
    }
}

#[tokio::test]
async fn findings_link_to_the_rows_they_are_about() {
    let app = TestApp::new().await;
    let loaded = flawed();
    let mut app = app.restart_with(loaded.manifest.clone()).await;
    app.state = app.state.clone().with_manifest_source(Arc::new(loaded));
    let cookie = cookie(&app, "pia@example.com", OperatorRole::Privacy).await;
    let map = read(&app, &cookie, "/admin/data-map").await;
    assert_eq!(map.status, StatusCode::OK);
    assert!(!map.text.contains("No findings"));
    // The error names the purpose and links to its row, which is on the page.
    assert!(map.text.contains("purpose.no_retention"), "{}", map.text);
    assert!(map.text.contains("href=\"#purpose-loyalty.rewards\""));
    assert!(map.text.contains("id=\"purpose-loyalty.rewards\""));
    // The warning is about a channel: the page has no row for it, so no link.
    assert!(map.text.contains("channel.unknown"));
    assert!(!map.text.contains("href=\"#channel-"));
    // Every link to a row has its row.
    for href in map.text.split("href=\"#").skip(1) {
        let id = href.split('"').next().unwrap();
        if id == "content" {
            continue;
        }
        assert!(
            map.text.contains(&format!("id=\"{id}\"")),
            "no row for #{id}"
        );
    }
}

#[tokio::test]
async fn a_notice_changed_without_a_version_bump_is_found_and_its_versions_shown() {
    let app = TestApp::new().await;
    let rewards = app.state.manifest.notices["rewards"].clone();
    // What an earlier server recorded: version 1 with other content, and a version 0.
    app.store
        .record_notice_hashes(&[
            NoticeHash {
                notice_id: "rewards".to_owned(),
                version: rewards.version,
                hash: "0".repeat(64),
                recorded_at: NOW - 86_400_000,
            },
            NoticeHash {
                notice_id: "rewards".to_owned(),
                version: 0,
                hash: "1".repeat(64),
                recorded_at: NOW - 2 * 86_400_000,
            },
        ])
        .await
        .unwrap();
    let cookie = cookie(&app, "eli@example.com", OperatorRole::Engineering).await;
    let map = read(&app, &cookie, "/admin/data-map").await;
    assert!(
        map.text.contains("notice.changed_without_version_bump"),
        "{}",
        map.text
    );
    assert!(map.text.contains("href=\"#notice-rewards\""));
    assert!(
        map.text
            .contains("href=\"/admin/data-map/notices/rewards\"")
    );

    let notice = read(&app, &cookie, "/admin/data-map/notices/rewards").await;
    assert_eq!(notice.status, StatusCode::OK);
    let t = &notice.text;
    assert!(t.contains(&rewards.hash), "the current version's hash");
    assert!(t.contains(&"0".repeat(64)) && t.contains(&"1".repeat(64)));
    assert!(t.contains("without a new version number"));
    assert!(t.contains("earlier version"));
    assert!(t.contains(&rewards.locales["en"].title));
    let older = t.find(&"1".repeat(64)).unwrap();
    assert!(older < t.find(&"0".repeat(64)).unwrap(), "oldest first");
    assert!(t.contains("not its text"), "says why there is no diff");

    let german = read(&app, &cookie, "/admin/data-map/notices/rewards?lang=de").await;
    assert!(
        german.text.contains("Erfasste Versionen"),
        "{}",
        german.text
    );
}

#[tokio::test]
async fn an_unknown_notice_is_a_404_page() {
    let app = TestApp::new().await;
    let cookie = cookie(&app, "mia@example.com", OperatorRole::Marketing).await;
    for path in [
        "/admin/data-map/notices/nope",
        "/admin/data-map/notices/%3Cscript%3E",
    ] {
        let answer = read(&app, &cookie, path).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        assert!(answer.text.contains("no such notice"), "{}", answer.text);
        assert!(!answer.text.contains("<script>"));
    }
}

#[tokio::test]
async fn a_server_handed_a_bare_manifest_says_it_cannot_lint() {
    let app = TestApp::new().await.restart().await;
    let cookie = cookie(&app, "mia@example.com", OperatorRole::Marketing).await;
    let map = read(&app, &cookie, "/admin/data-map").await;
    assert_eq!(map.status, StatusCode::OK);
    assert!(map.text.contains("kept lint"));
    assert!(!map.text.contains("No findings"));
}
