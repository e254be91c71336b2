//! The console's data map as every team reads it: the live `kept lint` findings (with the
//! notice hashes the database recorded), each linking to the row of the element it is about,
//! and a notice's page with the versions the database recorded and the line diff of two of them.

use crate::console::{PASSWORD, operator, page, session_cookie, try_sign_in};
use crate::support::{Answer, NOW, TestApp};
use axum::http::StatusCode;
use kept_core::manifest::Manifest;
use kept_server::console::{accounts, datamap};
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
    // Neither recorded version kept its text (recorded before texts were): no diff, and why.
    assert!(
        t.contains("1 was recorded before Kept kept notice texts"),
        "{t}"
    );
    assert!(!t.contains("<ins>") && !t.contains("<del>"));

    let german = read(&app, &cookie, "/admin/data-map/notices/rewards?lang=de").await;
    assert!(
        german.text.contains("Erfasste Versionen"),
        "{}",
        german.text
    );
}

/// The demo's rewards notice as a later manifest states it: version 2, a new title, a line
/// added to the English text, and the email channel promised too.
fn rewards_v2(manifest: &Manifest) -> Manifest {
    let mut manifest = manifest.clone();
    let rewards = manifest.notices.get_mut("rewards").unwrap();
    rewards.version = 2;
    let en = rewards.locales.get_mut("en").unwrap();
    en.title = "Larkspur Rewards Club".to_owned();
    en.text
        .push_str("\nWe also text you before your points expire.");
    rewards.channels.push("email".to_owned());
    rewards.hash = rewards.content_hash("rewards");
    manifest
}

#[tokio::test]
async fn a_notice_changed_under_a_new_version_shows_its_changes_line_by_line() {
    let app = TestApp::new().await;
    let v1 = app.state.manifest.as_ref().clone();
    let old_hash = v1.notices["rewards"].hash.clone();
    // An older release recorded a version 0 by its hash alone.
    app.store
        .record_notice_hashes(&[NoticeHash {
            notice_id: "rewards".to_owned(),
            version: 0,
            hash: "1".repeat(64),
            recorded_at: NOW - 2 * 86_400_000,
        }])
        .await
        .unwrap();
    // The server starts with version 1, then again with version 2.
    datamap::record_notices(app.store.as_ref(), &v1, NOW - 86_400_000)
        .await
        .unwrap();
    let v2 = rewards_v2(&v1);
    let new_hash = v2.notices["rewards"].hash.clone();
    let app = app.restart_with(v2.clone()).await;
    datamap::record_notices(app.store.as_ref(), &v2, NOW)
        .await
        .unwrap();
    // Starting again records nothing twice and overwrites nothing.
    datamap::record_notices(app.store.as_ref(), &v2, NOW + 1)
        .await
        .unwrap();
    let kept = app.store.notice_contents("rewards").await.unwrap();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!(kept[0].content, v1.notices["rewards"].content_json());

    let cookie = cookie(&app, "mia@example.com", OperatorRole::Marketing).await;
    let notice = read(&app, &cookie, "/admin/data-map/notices/rewards").await;
    assert_eq!(notice.status, StatusCode::OK);
    let t = &notice.text;
    assert!(
        t.contains(&old_hash) && t.contains(&new_hash),
        "both versions"
    );
    // By default the previous version against the current one.
    assert!(
        t.contains("<td>removed</td><td lang=\"en\"><del>Larkspur Rewards</del></td>"),
        "{t}"
    );
    assert!(t.contains("<td>added</td><td lang=\"en\"><ins>Larkspur Rewards Club</ins></td>"));
    assert!(t.contains(
        "<td>added</td><td lang=\"en\"><ins>We also text you before your points expire.</ins></td>"
    ));
    assert!(t.contains("<td>unchanged</td><td lang=\"en\">Join with your phone number"));
    assert!(t.contains("<td>added</td><td><ins>email</ins></td>"));
    assert!(t.contains("<td>unchanged</td><td>sms</td>"));
    // German is unchanged, and says so.
    assert!(
        t.contains("<code>de</code> (title and text) <span class=\"muted\">(unchanged)</span>")
    );
    assert!(!t.contains("before Kept kept notice texts"));

    // Named by number or by hash, in either direction.
    let back = read(
        &app,
        &cookie,
        &format!("/admin/data-map/notices/rewards?from={new_hash}&to=1"),
    )
    .await;
    assert_eq!(back.status, StatusCode::OK);
    assert!(
        back.text
            .contains("<td>removed</td><td lang=\"en\"><del>Larkspur Rewards Club</del></td>")
    );

    // The version recorded by its hash alone cannot be compared, and the page says so.
    let old = read(&app, &cookie, "/admin/data-map/notices/rewards?from=0&to=2").await;
    assert_eq!(old.status, StatusCode::OK);
    assert!(
        old.text
            .contains("Version 0 was recorded before Kept kept notice texts"),
        "{}",
        old.text
    );
    assert!(old.text.contains("<td>not kept</td>"));
    assert!(!old.text.contains("<ins>"));

    let german = read(&app, &cookie, "/admin/data-map/notices/rewards?lang=de").await;
    assert!(
        german.text.contains("<td>hinzugefügt</td>"),
        "{}",
        german.text
    );
}

#[tokio::test]
async fn a_version_that_was_never_recorded_is_a_field_error() {
    let app = TestApp::new().await;
    datamap::record_notices(app.store.as_ref(), &app.state.manifest, NOW)
        .await
        .unwrap();
    let cookie = cookie(&app, "pia@example.com", OperatorRole::Privacy).await;
    for (query, field) in [
        ("from=7", "from"),
        ("from=1&to=nope", "to"),
        ("to=%3Cscript%3E", "to"),
        ("from=1&to=", ""),
    ] {
        let answer = read(
            &app,
            &cookie,
            &format!("/admin/data-map/notices/rewards?{query}"),
        )
        .await;
        if field.is_empty() {
            // Blank is the default, not an error: with one version there is nothing to compare.
            assert_eq!(answer.status, StatusCode::OK, "{query}");
            assert!(answer.text.contains("Only one version"), "{}", answer.text);
            continue;
        }
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert!(
            answer.text.contains(&format!(
                "<code>{field}</code>: is not a version of this notice"
            )),
            "{query}: {}",
            answer.text
        );
        assert!(!answer.text.contains("<script>"));
    }
    let unknown = read(&app, &cookie, "/admin/data-map/notices/nope?from=1").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
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
