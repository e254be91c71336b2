//! Loading `kept.toml`: the example, every kind of load error with its position, and notice
//! hashes.

use kept_core::manifest::{
    CollectionKind, DEMO_ADDENDUM_TOML, EXAMPLE_TOML, LegalBasis, Manifest, ManifestError, Notice,
    NoticeText, RegimeKey, demo_toml, load,
};
use kept_core::regime::Regime;
use std::collections::BTreeMap;

/// 1-based line and column of the `nth` (0-based) occurrence of `needle` in `source`.
pub fn position(source: &str, needle: &str, nth: usize) -> (u32, u32) {
    let (offset, _) = source
        .match_indices(needle)
        .nth(nth)
        .unwrap_or_else(|| panic!("`{needle}` not found"));
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = source[line_start..offset].chars().count() + 1;
    (line as u32, column as u32)
}

fn load_err(source: &str) -> ManifestError {
    match load(source, "kept.toml") {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

fn assert_error_at(
    source: &str,
    code: &str,
    needle: &str,
    nth: usize,
    message_contains: &str,
) -> ManifestError {
    let error = load_err(source);
    let (line, column) = position(source, needle, nth);
    assert_eq!(error.code(), code, "{error}");
    let location = error.location().at.expect("a position");
    assert_eq!((location.line, location.column), (line, column), "{error}");
    assert!(
        error
            .to_string()
            .starts_with(&format!("kept.toml:{line}:{column}: ")),
        "{error}"
    );
    assert!(error.message().contains(message_contains), "{error}");
    error
}

#[test]
fn example_loads_with_the_ids_other_parts_rely_on() {
    let loaded = load(EXAMPLE_TOML, "kept.toml").unwrap();
    let m = &loaded.manifest;
    assert_eq!(m.organisation.name, "Larkspur Goods");
    assert_eq!(m.organisation.contact_email, "privacy@larkspur.example");
    assert!(m.organisation.dpo.is_some());
    assert!(m.organisation.postal_address.is_some());
    assert_eq!(m.organisation.brand_colour.as_deref(), Some("#2f6f4f"));
    assert_eq!(m.organisation.locales, ["en", "de", "fr", "es"]);
    let keys = |map: Vec<&String>| map.into_iter().cloned().collect::<Vec<_>>();
    assert_eq!(
        keys(m.teams.keys().collect()),
        ["engineering", "marketing", "privacy"]
    );
    assert_eq!(
        keys(m.channels.keys().collect()),
        ["email", "postal", "sms", "web"]
    );
    assert_eq!(
        keys(m.purposes.keys().collect()),
        [
            "essential.service.notifications.email",
            "essential.service.notifications.sms",
            "essential.service.operations",
            "loyalty.rewards",
            "marketing.advertising.third_party.targeted",
            "marketing.communications",
            "personalize.content.profiled",
        ]
    );
    assert_eq!(keys(m.topics.keys().collect()), ["newsletter", "offers"]);
    assert_eq!(m.topics["offers"].channels, ["email", "sms"]);
    assert_eq!(
        keys(m.notices.keys().collect()),
        ["checkout", "newsletter", "personalization", "rewards"]
    );
    assert_eq!(
        keys(m.collection_points.keys().collect()),
        [
            "checkout",
            "newsletter_signup",
            "rewards_signup",
            "web_shop"
        ]
    );
    assert_eq!(
        keys(m.systems.keys().collect()),
        [
            "ad_partner",
            "email_platform",
            "recommendations",
            "shop_backend",
            "sms_blaster"
        ]
    );
    assert_eq!(loaded.custom_purposes.len(), 1);
    assert!(loaded.custom_purposes.contains("loyalty.rewards"));

    let marketing = &m.purposes["marketing.communications"];
    // No checkout notice promises marketing, so soft opt-in could never apply: not enabled.
    assert!(!marketing.soft_opt_in);
    assert_eq!(marketing.retention_days, 730);
    // Every US regime is named: `us` alone would leave California and the states with a
    // privacy law to the default, consent.
    let us = [Regime::Ccpa, Regime::UsState, Regime::Us]
        .map(|r| (RegimeKey::Regime(r), LegalBasis::LegitimateInterests));
    assert_eq!(
        marketing.legal_basis,
        BTreeMap::from_iter(
            [(RegimeKey::Default, LegalBasis::Consent)]
                .into_iter()
                .chain(us)
        )
    );
    assert_eq!(
        m.purposes["essential.service.operations"].legal_basis,
        BTreeMap::from([(RegimeKey::Default, LegalBasis::Contract)])
    );
    let ads = &m.purposes["marketing.advertising.third_party.targeted"];
    for regime in [Regime::Us, Regime::Ccpa, Regime::UsState] {
        assert_eq!(
            ads.legal_basis[&RegimeKey::Regime(regime)],
            LegalBasis::LegitimateInterests
        );
    }

    let rewards = &m.notices["rewards"];
    assert_eq!(rewards.version, 1);
    assert!(!rewards.purposes.iter().any(|p| p.starts_with("marketing")));
    assert_eq!(rewards.locales.len(), 4);
    assert_eq!(rewards.hash, rewards.content_hash("rewards"));
    assert_eq!(rewards.hash.len(), 64);

    let signup = &m.collection_points["rewards_signup"];
    assert_eq!(signup.kind, CollectionKind::Signup);
    assert_eq!(signup.notice, "rewards");
    assert_eq!(signup.fields["phone"], "user.contact.phone_number");
    assert_eq!(
        m.collection_points["web_shop"].fields["page_views"],
        "user.behavior.browsing_history"
    );

    let sms = &m.systems["sms_blaster"];
    assert_eq!(sms.owner, "marketing");
    assert_eq!(sms.uses[0].purpose, "marketing.communications");
    assert_eq!(sms.uses[0].channels, ["sms"]);
    assert_eq!(sms.uses[0].categories, ["user.contact.phone_number"]);
    let hook = m.systems["ad_partner"].webhook.as_ref().unwrap();
    assert_eq!(hook.url, "http://127.0.0.1:9/ad-partner");
    assert!(hook.secret_env.is_some());

    assert_eq!(m.rules.forbid.len(), 2);
    assert!(m.policy.tighten.is_empty());
    assert!(loaded.server.is_none());
}

#[test]
fn the_typed_manifest_round_trips_through_serde() {
    let manifest = load(EXAMPLE_TOML, "kept.toml").unwrap().manifest;
    let json = serde_json::to_string(&manifest).unwrap();
    let back: Manifest = serde_json::from_str(&json).unwrap();
    assert_eq!(back, manifest);
}

#[test]
fn the_demo_adds_an_sms_offers_notice_and_its_opt_in() {
    let demo = load(&demo_toml(), "kept.toml").unwrap().manifest;
    let example = load(EXAMPLE_TOML, "kept.toml").unwrap().manifest;
    let notice = &demo.notices["sms_offers"];
    assert_eq!(notice.version, 1);
    assert_eq!(notice.purposes, ["marketing.communications"]);
    assert_eq!(notice.channels, ["sms"]);
    assert_eq!(notice.categories, ["user.contact.phone_number"]);
    for (locale, text) in &notice.locales {
        assert!(text.text.contains("STOP"), "{locale}");
        assert!(text.text.contains("52781"), "{locale}");
    }
    assert!(
        notice.locales["en"]
            .text
            .contains("Consent is not a condition of purchase")
    );
    let optin = &demo.collection_points["sms_offers_optin"];
    assert_eq!(optin.kind, CollectionKind::Preference);
    assert_eq!(optin.notice, "sms_offers");
    // Everything else is the example, unchanged.
    assert_eq!(demo.notices.len(), example.notices.len() + 1);
    assert_eq!(demo.notices["rewards"], example.notices["rewards"]);
    assert_eq!(demo.systems, example.systems);
    assert!(demo_toml().ends_with(DEMO_ADDENDUM_TOML));
}

#[test]
fn a_missing_owner_or_retention_still_loads_for_lint_to_report() {
    let source = EXAMPLE_TOML.replacen(
        "owner = \"engineering\"\nlegal_basis = \"contract\"\nretention = \"6y\"\n",
        "legal_basis = \"contract\"\n",
        1,
    );
    let loaded = load(&source, "kept.toml").unwrap();
    let purpose = &loaded.manifest.purposes["essential.service.operations"];
    assert_eq!(purpose.owner, "");
    assert_eq!(purpose.retention_days, 0);
}

#[test]
fn the_server_table_is_carried_unchecked() {
    let source = format!(
        "{EXAMPLE_TOML}\n[server]\nbind = \"127.0.0.1:8080\"\nanything = {{ nested = [1, 2] }}\n"
    );
    let server = load(&source, "kept.toml").unwrap().server.unwrap();
    assert_eq!(server["bind"].as_str(), Some("127.0.0.1:8080"));
    assert!(server.contains_key("anything"));
}

#[test]
fn a_syntax_error_names_its_line_and_column() {
    let source = EXAMPLE_TOML.replacen("[teams.marketing]", "[teams.marketing", 1);
    let error = load_err(&source);
    assert_eq!(error.code(), "manifest.syntax");
    let (line, _) = position(&source, "[teams.marketing", 0);
    assert_eq!(error.location().at.unwrap().line, line, "{error}");
    assert!(error.to_string().starts_with(&format!("kept.toml:{line}:")));
}

#[test]
fn a_syntax_error_the_parser_gives_no_words_for_still_says_what_is_wrong() {
    // A lone carriage return where a comment began: the TOML parser's message is empty. Found
    // by the `manifest` fuzzer.
    let source = EXAMPLE_TOML.replacen("# Channels", "\r Channels", 1);
    let error = load_err(&source);
    assert_eq!(error.code(), "manifest.syntax");
    assert_eq!(error.message(), "unexpected character U+000D here");
    let (line, column) = position(&source, "\r Channels", 0);
    let at = error.location().at.unwrap();
    assert_eq!((at.line, at.column), (line, column), "{error}");
}

#[test]
fn an_unknown_key_is_an_error_at_the_key() {
    let source = EXAMPLE_TOML.replacen(
        "name = \"Newsletter and offers\"",
        "name = \"Newsletter and offers\"\npurpse = \"typo\"",
        1,
    );
    let error = assert_error_at(
        &source,
        "manifest.unknown_key",
        "purpse",
        0,
        "unknown key `purpse`",
    );
    assert!(error.message().contains("`owner`"), "lists the known keys");

    // Deep inside an array of tables too.
    let source = EXAMPLE_TOML.replacen(
        "channels = [\"sms\"]\n\n[systems.recommendations]",
        "channels = [\"sms\"]\nchanel = \"sms\"\n\n[systems.recommendations]",
        1,
    );
    assert_error_at(
        &source,
        "manifest.unknown_key",
        "chanel",
        0,
        "unknown key `chanel`",
    );

    // And at the top level.
    let source = format!("{EXAMPLE_TOML}\n[purpose.typo]\nname = \"x\"\n");
    assert_error_at(
        &source,
        "manifest.unknown_key",
        "purpose.typo",
        0,
        "unknown key `purpose`",
    );
}

#[test]
fn a_typed_hash_is_an_unknown_key() {
    let source = EXAMPLE_TOML.replacen(
        "[notices.rewards]\nversion = 1\n",
        "[notices.rewards]\nversion = 1\nhash = \"00\"\n",
        1,
    );
    assert_error_at(
        &source,
        "manifest.unknown_key",
        "hash = ",
        0,
        "unknown key `hash`",
    );
}

#[test]
fn a_missing_required_key_points_at_its_table() {
    let source = EXAMPLE_TOML.replacen("name = \"Shop backend\"\n", "", 1);
    let error = load_err(&source);
    assert_eq!(error.code(), "manifest.missing_key");
    assert!(error.message().contains("missing key `name`"), "{error}");
    let (line, _) = position(&source, "[systems.shop_backend]", 0);
    assert_eq!(error.location().at.unwrap().line, line, "{error}");

    let error = load_err("[teams.marketing]\nname = \"Marketing\"\n");
    assert_eq!(error.code(), "manifest.missing_key");
    assert!(
        error.message().contains("missing key `organisation`"),
        "{error}"
    );
}

#[test]
fn malformed_values_are_errors_at_the_value() {
    let cases: &[(&str, &str, &str, &str)] = &[
        // (replace, with, needle at the error, message fragment)
        (
            "kind = \"signup\"",
            "kind = \"sign-up\"",
            "\"sign-up\"",
            "unknown value `sign-up`",
        ),
        (
            "retention = \"2y\"",
            "retention = \"2 years\"",
            "\"2 years\"",
            "invalid retention `2 years`",
        ),
        (
            "retention = \"2y\"",
            "retention = \"0d\"",
            "\"0d\"",
            "invalid retention `0d`",
        ),
        (
            "us = \"legitimate_interests\" }",
            "usa = \"legitimate_interests\" }",
            "usa",
            "unknown regime `usa`",
        ),
        (
            "legal_basis = \"contract\"",
            "legal_basis = \"contact\"",
            "\"contact\"",
            "unknown legal basis `contact`",
        ),
        (
            "us = \"legitimate_interests\" }",
            "us = \"legit\" }",
            "\"legit\"",
            "unknown legal basis `legit`",
        ),
        (
            "legal_basis = \"contract\"",
            "legal_basis = 3",
            "3\n",
            "expected a legal basis",
        ),
        ("version = 1", "version = 0", "0\n", "versions start at 1"),
        ("version = 1", "version = -1", "-1", "integer `-1`"),
        ("version = 1", "version = \"1\"", "\"1\"", "invalid type"),
        (
            "brand_colour = \"#2f6f4f\"",
            "brand_colour = \"green\"",
            "\"green\"",
            "invalid brand colour `green`",
        ),
        (
            "[channels]\nemail",
            "[channels]\nE-mail",
            "E-mail",
            "invalid key `E-mail` in `channels`",
        ),
        (
            "[purposes.\"loyalty.rewards\"]",
            "[purposes.\"Loyalty Rewards\"]",
            "\"Loyalty Rewards\"",
            "invalid key `Loyalty Rewards` in `purposes`",
        ),
        (
            "channels = [\"email\"]",
            "channels = \"email\"",
            "\"email\"\n",
            "expected an array",
        ),
        (
            "http://127.0.0.1:9/ad-partner",
            "ftp://127.0.0.1/ad-partner",
            "\"ftp://",
            "invalid webhook url",
        ),
        (
            "secret_env = \"KEPT_AD_PARTNER_SECRET\" }",
            "secret_env = \"KEPT_AD_PARTNER_SECRET\", acknowledge = \"maybe\" }",
            "\"maybe\"",
            "invalid acknowledge `maybe`, expected `callback` or `on_delivery`",
        ),
        (
            "contact_email = \"privacy@larkspur.example\"",
            "contact_email = { address = \"privacy@larkspur.example\" }",
            "{ address",
            "invalid type: table, expected a string",
        ),
        (
            "retention = \"2y\"\n",
            "retention = \"2y\"\nsoft_opt_in = \"yes\"\n",
            "\"yes\"",
            "invalid type",
        ),
    ];
    for (from, to, needle, fragment) in cases {
        assert!(EXAMPLE_TOML.contains(from), "{from}");
        let source = EXAMPLE_TOML.replacen(from, to, 1);
        let error = load_err(&source);
        assert_eq!(error.code(), "manifest.invalid_value", "{error}");
        let (line, column) = position(&source, needle, 0);
        let at = error.location().at.unwrap();
        assert_eq!((at.line, at.column), (line, column), "{to}: {error}");
        assert!(error.message().contains(fragment), "{error}");
        assert!(!error.message().contains("u32"), "no type names: {error}");
    }
}

#[test]
fn notice_hashes_follow_the_content() {
    let locales = BTreeMap::from([(
        "en".to_owned(),
        NoticeText {
            title: "Rewards".to_owned(),
            text: "We track your purchases.".to_owned(),
        },
    )]);
    let cats = vec![
        "user.name".to_owned(),
        "user.contact.phone_number".to_owned(),
    ];
    let purposes = vec!["loyalty.rewards".to_owned()];
    let channels = vec!["sms".to_owned()];
    let base = Notice::compute_hash("rewards", 1, &locales, &cats, &purposes, &channels);
    assert_eq!(base.len(), 64);
    assert!(
        base.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    );
    // INVARIANT: the encoding is frozen; a change here invalidates every recorded hash.
    assert_eq!(
        base,
        "3be12ce24e2cd1c55ce713e63815ff2fd358cc0c3a18cba1193ff2e64b52b7af"
    );

    let mut changed_text = locales.clone();
    changed_text.get_mut("en").unwrap().text = "We track your purchases and text you.".to_owned();
    let mut changed_title = locales.clone();
    changed_title.get_mut("en").unwrap().title = "Larkspur Rewards".to_owned();
    let mut extra_locale = locales.clone();
    extra_locale.insert(
        "de".to_owned(),
        NoticeText {
            title: "Prämien".to_owned(),
            text: "Wir erfassen Ihre Einkäufe.".to_owned(),
        },
    );
    let more_purposes = vec![
        "loyalty.rewards".to_owned(),
        "marketing.communications".to_owned(),
    ];
    let different = [
        Notice::compute_hash("other", 1, &locales, &cats, &purposes, &channels),
        Notice::compute_hash("rewards", 2, &locales, &cats, &purposes, &channels),
        Notice::compute_hash("rewards", 1, &changed_text, &cats, &purposes, &channels),
        Notice::compute_hash("rewards", 1, &changed_title, &cats, &purposes, &channels),
        Notice::compute_hash("rewards", 1, &extra_locale, &cats, &purposes, &channels),
        Notice::compute_hash("rewards", 1, &locales, &cats[..1], &purposes, &channels),
        Notice::compute_hash("rewards", 1, &locales, &cats, &more_purposes, &channels),
        Notice::compute_hash("rewards", 1, &locales, &cats, &purposes, &[]),
        // The same string moved from purposes to channels is a different promise.
        Notice::compute_hash("rewards", 1, &locales, &cats, &[], &purposes),
    ];
    for (i, hash) in different.iter().enumerate() {
        assert_ne!(hash, &base, "change {i} kept the hash");
    }

    // Order in the file and line endings are presentation, not promise.
    let reordered: Vec<String> = cats.iter().rev().cloned().collect();
    assert_eq!(
        Notice::compute_hash("rewards", 1, &locales, &reordered, &purposes, &channels),
        base
    );
    let mut crlf = locales.clone();
    crlf.get_mut("en").unwrap().text = "We track\r\nyour purchases.".to_owned();
    let mut lf = locales.clone();
    lf.get_mut("en").unwrap().text = "We track\nyour purchases.".to_owned();
    assert_eq!(
        Notice::compute_hash("rewards", 1, &crlf, &cats, &purposes, &channels),
        Notice::compute_hash("rewards", 1, &lf, &cats, &purposes, &channels)
    );
}

#[test]
fn the_loader_fills_notice_hashes_from_the_text() {
    let before = load(EXAMPLE_TOML, "kept.toml").unwrap().manifest;
    let source = EXAMPLE_TOML.replacen(
        "to track your purchases and reward points",
        "to track your purchases, reward points and birthdays",
        1,
    );
    let after = load(&source, "kept.toml").unwrap().manifest;
    assert_ne!(
        before.notices["rewards"].hash,
        after.notices["rewards"].hash
    );
    assert_eq!(
        before.notices["checkout"].hash,
        after.notices["checkout"].hash
    );
}

#[test]
fn the_hash_is_blake3_over_the_documented_encoding() {
    fn put(bytes: &mut Vec<u8>, item: &[u8]) {
        bytes.extend_from_slice(&(item.len() as u64).to_le_bytes());
        bytes.extend_from_slice(item);
    }
    let mut bytes = Vec::new();
    put(&mut bytes, b"kept.notice.v1");
    put(&mut bytes, b"news");
    bytes.extend_from_slice(&3u32.to_le_bytes());
    bytes.extend_from_slice(&1u64.to_le_bytes());
    put(&mut bytes, b"en");
    put(&mut bytes, b"Title");
    put(&mut bytes, b"Text");
    for list in [&[&b"a.b"[..], b"c"][..], &[b"p"], &[]] {
        bytes.extend_from_slice(&(list.len() as u64).to_le_bytes());
        for item in list {
            put(&mut bytes, item);
        }
    }
    let locales = BTreeMap::from([(
        "en".to_owned(),
        NoticeText {
            title: "Title".to_owned(),
            text: "Text".to_owned(),
        },
    )]);
    let hash = Notice::compute_hash(
        "news",
        3,
        &locales,
        &["c".to_owned(), "a.b".to_owned(), "c".to_owned()],
        &["p".to_owned()],
        &[],
    );
    assert_eq!(hash, blake3::hash(&bytes).to_hex().to_string());
}

mod notice_for {
    use kept_core::manifest::promises::{notice_for, tied_notices};
    use kept_core::manifest::{Manifest, demo_toml, load};

    fn demo() -> Manifest {
        load(&demo_toml(), "kept.toml").unwrap().manifest
    }

    fn id<'a>(found: Option<(&'a String, &'a kept_core::manifest::Notice)>) -> Option<&'a str> {
        found.map(|(id, _)| id.as_str())
    }

    #[test]
    fn the_purpose_itself_beats_a_parent_and_the_channel_counts() {
        let mut m = demo();
        const MC: &str = "marketing.communications";
        assert_eq!(
            id(notice_for(&m, MC, Some("email"), None)),
            Some("newsletter")
        );
        assert_eq!(
            id(notice_for(&m, MC, Some("sms"), None)),
            Some("sms_offers")
        );
        assert_eq!(id(notice_for(&m, MC, Some("postal"), None)), None);
        // Any channel: the first of the two by id.
        assert_eq!(id(notice_for(&m, MC, None, None)), Some("newsletter"));
        // Nothing promises it: none, never a notice about something else.
        assert_eq!(id(notice_for(&m, "analytics.reporting", None, None)), None);

        // A notice that lists only the parent purpose covers it when nothing closer does.
        let mut parent = m.notices["newsletter"].clone();
        parent.purposes = vec!["marketing".into()];
        m.notices.insert("a_brand".into(), parent);
        assert_eq!(
            id(notice_for(&m, MC, Some("email"), None)),
            Some("newsletter")
        );
        m.notices.remove("newsletter");
        assert_eq!(id(notice_for(&m, MC, Some("email"), None)), Some("a_brand"));
        assert_eq!(tied_notices(&m, MC, "email"), ["a_brand"]);
    }

    #[test]
    fn a_topic_that_names_its_notice_is_shown_with_it_and_only_if_it_promises() {
        let mut m = demo();
        const MC: &str = "marketing.communications";
        let mut second = m.notices["newsletter"].clone();
        second.version = 3;
        m.notices.insert("offers_mail".into(), second);
        assert_eq!(tied_notices(&m, MC, "email"), ["newsletter", "offers_mail"]);
        // Unnamed: the first by id; named: the topic's own.
        assert_eq!(
            id(notice_for(&m, MC, Some("email"), Some("offers"))),
            Some("newsletter")
        );
        m.topics.get_mut("offers").unwrap().notice = Some("offers_mail".into());
        assert_eq!(
            id(notice_for(&m, MC, Some("email"), Some("offers"))),
            Some("offers_mail")
        );
        assert_eq!(
            id(notice_for(&m, MC, Some("email"), Some("newsletter"))),
            Some("newsletter")
        );
        // The named notice does not promise SMS: no notice at all, not another one.
        assert_eq!(id(notice_for(&m, MC, Some("sms"), Some("offers"))), None);
    }

    #[test]
    fn a_named_notice_counts_only_when_it_promises_the_purpose_at_its_version() {
        use kept_core::manifest::promises::{Named, counts, mark_unpromised, named_notice};
        let m = demo();
        const MC: &str = "marketing.communications";
        let Named::Promising(n) = named_notice(&m, MC, Some("newsletter"), Some(1)) else {
            panic!("the newsletter promises marketing");
        };
        assert_eq!((n.id.as_str(), n.version), ("newsletter", 1));
        assert_eq!(n.hash, m.notices["newsletter"].hash);
        assert!(matches!(
            named_notice(&m, MC, Some("newsletter"), None),
            Named::Promising(_)
        ));
        assert_eq!(
            named_notice(&m, MC, Some("newsletter"), Some(2)),
            Named::Unpromised
        );
        assert_eq!(
            named_notice(&m, MC, Some("checkout"), None),
            Named::Unpromised
        );
        assert_eq!(named_notice(&m, MC, Some("nope"), None), Named::Unpromised);
        assert_eq!(named_notice(&m, MC, None, None), Named::Nothing);

        let mut record = kept_core::ledger::ConsentRecord {
            subject: kept_core::SubjectId(1),
            purpose: MC.into(),
            channel: None,
            topic: None,
            action: kept_core::ledger::ConsentAction::Given,
            notice: None,
            regime: "gdpr".into(),
            source: "collection".into(),
            method: kept_core::ledger::CollectionMethod::Banner,
            evidence: kept_core::ledger::Evidence {
                ip_hash: None,
                user_agent: None,
                text_hash: None,
                reference: None,
            },
            at: 0,
        };
        record.evidence.reference = Some(mark_unpromised(&m, "checkout", Some("m-1")));
        assert!(
            !counts(&record),
            "a yes under a notice that did not promise it"
        );
        record.evidence.reference = Some(format!(
            "merged from subject 3 ({})",
            mark_unpromised(&m, "x", None)
        ));
        assert!(
            !counts(&record),
            "still marked once carried to another subject"
        );
        record.action = kept_core::ledger::ConsentAction::Withdrawn;
        assert!(counts(&record), "a no always counts");
        record.action = kept_core::ledger::ConsentAction::Given;
        record.evidence.reference = Some("m-1".into());
        assert!(counts(&record));
    }
}
