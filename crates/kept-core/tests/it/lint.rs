//! `kept lint`: each finding is produced by a small manifest that has the problem and not by
//! the same manifest without it; the example flags its SMS tool and the demo does not.

use crate::manifest::position;
use kept_core::lint::{Finding, RecordedNotice, Severity, codes, count, lint};
use kept_core::manifest::{EXAMPLE_TOML, demo_toml, load};
use std::collections::BTreeSet;

/// A small manifest with no findings at all; each test breaks one thing in it.
const CLEAN: &str = r#"
[organisation]
name = "Acme"
contact_email = "privacy@acme.example"
locales = ["en"]

[teams.marketing]
name = "Marketing"
owners = ["mia@acme.example"]

[channels]
email = { name = "Email" }
sms = { name = "Text message" }

[purposes."marketing.communications"]
name = "Newsletter"
description = "Send the newsletter."
owner = "marketing"
legal_basis = { default = "consent", ccpa = "legitimate_interests", us_state = "legitimate_interests", us = "legitimate_interests" }
retention = "2y"

[purposes."loyalty.rewards"]
custom = true
name = "Rewards"
description = "Track rewards."
owner = "marketing"
legal_basis = "contract"
retention = "1y"

[topics.news]
name = "News"
description = "Monthly news."
purpose = "marketing.communications"
channels = ["email"]

[notices.newsletter]
version = 1
categories = ["user.contact.email"]
purposes = ["marketing.communications"]
channels = ["email"]

[notices.newsletter.locales.en]
title = "Newsletter"
text = "We email you our newsletter."

[collection_points.signup]
name = "Sign-up"
kind = "signup"
notice = "newsletter"
fields = { email = "user.contact.email" }

[systems.mailer]
name = "Mailer"
owner = "marketing"

[[systems.mailer.uses]]
purpose = "marketing.communications"
categories = ["user.contact.email"]
channels = ["email"]

[[rules.forbid]]
category = "user.health_and_medical"
purpose = "marketing.*"
reason = "No health data for marketing."
"#;

fn findings(source: &str, recorded: &[RecordedNotice]) -> Vec<Finding> {
    let loaded = load(source, "kept.toml").unwrap_or_else(|e| panic!("{e}"));
    lint(&loaded, recorded)
}

fn codes_of(findings: &[Finding]) -> BTreeSet<&'static str> {
    findings.iter().map(|f| f.code).collect()
}

fn replace(from: &str, to: &str) -> String {
    assert!(
        CLEAN.contains(from),
        "`{from}` is not in the clean manifest"
    );
    CLEAN.replacen(from, to, 1)
}

/// Breaks `CLEAN` with one replacement and checks the findings are exactly `expected`, the
/// first of them at `needle`.
fn assert_finds(
    from: &str,
    to: &str,
    expected: &[&str],
    severity: Severity,
    needle: &str,
) -> Vec<Finding> {
    let source = replace(from, to);
    let found = findings(&source, &[]);
    assert_eq!(
        codes_of(&found),
        expected.iter().copied().collect(),
        "{found:#?}"
    );
    let first = found
        .iter()
        .find(|f| f.code == expected[0])
        .unwrap()
        .clone();
    assert_eq!(first.severity, severity);
    let (line, column) = position(&source, needle, 0);
    assert_eq!(
        (first.line, first.column),
        (Some(line), Some(column)),
        "{first:#?}"
    );
    assert_eq!(first.file, "kept.toml");
    found
}

#[test]
fn the_clean_manifest_has_no_findings() {
    assert_eq!(findings(CLEAN, &[]), []);
}

#[test]
fn dangling_references_point_at_the_reference() {
    // A purpose owned by a team that does not exist, with a suggestion.
    let found = assert_finds(
        "owner = \"marketing\"\nlegal_basis = \"contract\"",
        "owner = \"marketting\"\nlegal_basis = \"contract\"",
        &[codes::DANGLING_REFERENCE],
        Severity::Error,
        "\"marketting\"",
    );
    assert!(found[0].message.contains("team `marketting`"));
    assert!(found[0].message.contains("did you mean `marketing`?"));
    assert_eq!(found[0].path, "purposes.\"loyalty.rewards\".owner");

    // A system owned by a team that does not exist.
    assert_finds(
        "name = \"Mailer\"\nowner = \"marketing\"",
        "name = \"Mailer\"\nowner = \"sales\"",
        &[codes::DANGLING_REFERENCE],
        Severity::Error,
        "\"sales\"",
    );
    // A topic on an undeclared channel.
    let found = assert_finds(
        "purpose = \"marketing.communications\"\nchannels = [\"email\"]\n\n[notices",
        "purpose = \"marketing.communications\"\nchannels = [\"email\", \"push\"]\n\n[notices",
        &[codes::DANGLING_REFERENCE],
        Severity::Error,
        "\"push\"",
    );
    assert_eq!(found[0].path, "topics.news.channels[1]");
    // A consent manager's category mapped to an undeclared purpose.
    let found = assert_finds(
        "[[rules.forbid]]",
        "[consent_categories]\nC0004 = [\"marketing.communications\", \"marketing.ads\"]\n\n[[rules.forbid]]",
        &[codes::DANGLING_REFERENCE],
        Severity::Error,
        "\"marketing.ads\"",
    );
    assert_eq!(found[0].path, "consent_categories.C0004[1]");
    // A topic under an undeclared purpose.
    assert_finds(
        "purpose = \"marketing.communications\"\nchannels = [\"email\"]\n\n[notices",
        "purpose = \"marketing.communication\"\nchannels = [\"email\"]\n\n[notices",
        &[codes::DANGLING_REFERENCE],
        Severity::Error,
        "\"marketing.communication\"",
    );
    // A collection point showing an undeclared notice (so the real one is shown nowhere).
    let found = assert_finds(
        "notice = \"newsletter\"",
        "notice = \"newsleter\"",
        &[codes::DANGLING_REFERENCE, codes::NOTICE_UNUSED],
        Severity::Error,
        "\"newsleter\"",
    );
    assert!(
        found
            .iter()
            .any(|f| f.message.contains("notice `newsleter`"))
    );
    // A purpose declared compatible with one that does not exist.
    assert_finds(
        "custom = true\n",
        "custom = true\ncompatible_with = [\"analytics\"]\n",
        &[codes::DANGLING_REFERENCE],
        Severity::Error,
        "\"analytics\"",
    );
    // A notice promising an undeclared purpose, even a fideslang one.
    assert_finds(
        "purposes = [\"marketing.communications\"]\nchannels = [\"email\"]\n\n[notices.newsletter.locales.en]",
        "purposes = [\"marketing.communications\", \"analytics\"]\nchannels = [\"email\"]\n\n[notices.newsletter.locales.en]",
        &[codes::DANGLING_REFERENCE],
        Severity::Error,
        "\"analytics\"",
    );
}

#[test]
fn unknown_categories_are_reported_wherever_they_appear() {
    let found = assert_finds(
        "fields = { email = \"user.contact.email\" }",
        "fields = { email = \"user.contact.emial\" }",
        &[codes::CATEGORY_UNKNOWN],
        Severity::Error,
        "\"user.contact.emial\"",
    );
    assert!(
        found[0]
            .message
            .contains("did you mean `user.contact.email`?")
    );
    assert_eq!(found[0].path, "collection_points.signup.fields.email");

    // A category the manifest declares itself is known.
    let declared = replace(
        "fields = { email = \"user.contact.email\" }",
        "fields = { email = \"user.contact.email\", size = \"user.custom.shoe_size\" }",
    )
    .replacen(
        "categories = [\"user.contact.email\"]\npurposes",
        "categories = [\"user.contact.email\", \"user.custom.shoe_size\"]\npurposes",
        1,
    );
    assert_eq!(
        codes_of(&findings(&declared, &[])),
        BTreeSet::from([codes::CATEGORY_UNKNOWN])
    );
    let declared = format!(
        "{declared}\n[categories.\"user.custom.shoe_size\"]\nname = \"Shoe size\"\ndescription = \"For fitting.\"\n"
    );
    assert_eq!(findings(&declared, &[]), []);
}

#[test]
fn purposes_need_a_known_key_an_owner_retention_and_a_legal_basis() {
    let found = assert_finds(
        "custom = true\n",
        "",
        &[codes::PURPOSE_UNKNOWN],
        Severity::Error,
        "\"loyalty.rewards\"]",
    );
    assert!(found[0].message.contains("custom = true"));

    let found = assert_finds(
        "owner = \"marketing\"\nlegal_basis = \"contract\"\n",
        "legal_basis = \"contract\"\n",
        &[codes::PURPOSE_NO_OWNER],
        Severity::Error,
        "\"loyalty.rewards\"]",
    );
    assert_eq!(found[0].path, "purposes.\"loyalty.rewards\"");

    assert_finds(
        "retention = \"1y\"\n",
        "",
        &[codes::PURPOSE_NO_RETENTION],
        Severity::Error,
        "\"loyalty.rewards\"]",
    );
    assert_finds(
        "legal_basis = \"contract\"\n",
        "",
        &[codes::PURPOSE_NO_LEGAL_BASIS],
        Severity::Error,
        "\"loyalty.rewards\"]",
    );
    let found = assert_finds(
        "legal_basis = \"contract\"\n",
        "legal_basis = { gdpr = \"contract\", ccpa = \"contract\" }\n",
        &[codes::PURPOSE_LEGAL_BASIS_INCOMPLETE],
        Severity::Warning,
        "\"loyalty.rewards\"]",
    );
    assert!(found[0].message.contains("`uk_gdpr`"));
    assert!(!found[0].message.contains("`ccpa`"));
}

#[test]
fn systems_need_an_owner() {
    assert_finds(
        "name = \"Mailer\"\nowner = \"marketing\"\n",
        "name = \"Mailer\"\n",
        &[codes::SYSTEM_NO_OWNER],
        Severity::Error,
        "mailer]",
    );
}

#[test]
fn a_use_no_notice_promised_is_flagged_per_channel() {
    let found = assert_finds(
        "categories = [\"user.contact.email\"]\nchannels = [\"email\"]\n\n[[rules",
        "categories = [\"user.contact.email\"]\nchannels = [\"email\", \"sms\"]\n\n[[rules",
        &[codes::SYSTEM_USE_NOT_PROMISED],
        Severity::Error,
        "\"marketing.communications\"\ncategories = [\"user.contact.email\"]\nchannels = [\"email\", \"sms\"]",
    );
    assert_eq!(found.len(), 1, "email is promised, only sms is not");
    assert!(found[0].message.contains("by `sms`"));
    assert!(found[0].message.contains("(`newsletter`)"));
    assert_eq!(found[0].path, "systems.mailer.uses[0]");

    // Fixed by a notice that promises the channel.
    let fixed = replace(
        "categories = [\"user.contact.email\"]\nchannels = [\"email\"]\n\n[[rules",
        "categories = [\"user.contact.email\"]\nchannels = [\"email\", \"sms\"]\n\n[[rules",
    )
    .replacen(
        "channels = [\"email\"]\n\n[notices.newsletter.locales.en]",
        "channels = [\"email\", \"sms\"]\n\n[notices.newsletter.locales.en]",
        1,
    );
    assert_eq!(findings(&fixed, &[]), []);

    // A category no notice covers at all.
    let found = assert_finds(
        "categories = [\"user.contact.email\"]\nchannels = [\"email\"]\n\n[[rules",
        "categories = [\"user.contact.email\", \"user.name\"]\nchannels = [\"email\"]\n\n[[rules",
        &[codes::SYSTEM_USE_NOT_PROMISED],
        Severity::Error,
        "\"marketing.communications\"\ncategories = [\"user.contact.email\", \"user.name\"]",
    );
    assert!(found[0].message.contains("no notice covers `user.name`"));
}

#[test]
fn a_purpose_may_use_data_promised_for_a_compatible_one() {
    let rewards_use = "\n[[systems.mailer.uses]]\npurpose = \"loyalty.rewards\"\ncategories = [\"user.contact.email\"]\n";
    let source = format!("{CLEAN}{rewards_use}");
    assert_eq!(
        codes_of(&findings(&source, &[])),
        BTreeSet::from([codes::SYSTEM_USE_NOT_PROMISED])
    );
    let compatible = source.replacen(
        "custom = true\n",
        "custom = true\ncompatible_with = [\"marketing.communications\"]\n",
        1,
    );
    assert_eq!(findings(&compatible, &[]), []);
}

#[test]
fn a_notice_listing_a_branch_promises_what_is_inside_it() {
    let source = replace(
        "categories = [\"user.contact.email\"]\npurposes = [\"marketing.communications\"]",
        "categories = [\"user.contact\"]\npurposes = [\"marketing.communications\"]",
    );
    // The collection point's email is inside `user.contact`, and so is the mailer's use.
    assert_eq!(findings(&source, &[]), []);
}

#[test]
fn forbidden_uses_break_the_rules() {
    let found = assert_finds(
        "categories = [\"user.contact.email\"]\nchannels = [\"email\"]\n\n[[rules",
        "categories = [\"user.contact.email\", \"user.health_and_medical.genetic\"]\nchannels = [\"email\"]\n\n[[rules",
        &[codes::RULE_FORBIDDEN_USE, codes::SYSTEM_USE_NOT_PROMISED],
        Severity::Error,
        "\"marketing.communications\"\ncategories = [\"user.contact.email\", \"user.health",
    );
    let rule = found
        .iter()
        .find(|f| f.code == codes::RULE_FORBIDDEN_USE)
        .unwrap();
    assert!(rule.message.contains("No health data for marketing."));
    assert!(rule.message.contains("rule 1"));

    // A notice promising health data for marketing breaks the rule too.
    assert_finds(
        "categories = [\"user.contact.email\"]\npurposes = [\"marketing.communications\"]",
        "categories = [\"user.contact.email\", \"user.health_and_medical\"]\npurposes = [\"marketing.communications\"]",
        &[codes::RULE_FORBIDDEN_USE],
        Severity::Error,
        "newsletter]",
    );

    // Health data for a purpose outside `marketing.*` is not this rule's business.
    let other = format!(
        "{CLEAN}\n[[systems.mailer.uses]]\npurpose = \"loyalty.rewards\"\ncategories = [\"user.health_and_medical\"]\n"
    );
    assert_eq!(
        codes_of(&findings(&other, &[])),
        BTreeSet::from([codes::SYSTEM_USE_NOT_PROMISED])
    );
}

#[test]
fn rule_patterns_that_match_nothing_are_reported() {
    assert_finds(
        "purpose = \"marketing.*\"",
        "purpose = \"marketting.*\"",
        &[codes::RULE_UNKNOWN_KEY],
        Severity::Warning,
        "\"marketting.*\"",
    );
    assert_finds(
        "category = \"user.health_and_medical\"",
        "category = \"user.helth\"",
        &[codes::RULE_UNKNOWN_KEY],
        Severity::Warning,
        "\"user.helth\"",
    );
    // A branch of the manifest's own purposes is known.
    let own = replace("purpose = \"marketing.*\"", "purpose = \"loyalty.*\"");
    assert_eq!(findings(&own, &[]), []);
    // Policy tightenings are checked the same way.
    let policy = format!(
        "{CLEAN}\n[[policy.tighten]]\nregime = \"us\"\npurpose = \"marketing.*\"\nchannel = \"sms\"\nreason = \"Opt-in for texts.\"\n"
    );
    assert_eq!(findings(&policy, &[]), []);
    let broken = policy.replacen("channel = \"sms\"", "channel = \"smss\"", 1);
    assert_eq!(
        codes_of(&findings(&broken, &[])),
        BTreeSet::from([codes::DANGLING_REFERENCE])
    );
}

#[test]
fn a_collection_point_must_collect_only_what_its_notice_covers() {
    let found = assert_finds(
        "fields = { email = \"user.contact.email\" }",
        "fields = { email = \"user.contact.email\", phone = \"user.contact.phone_number\" }",
        &[codes::COLLECTION_POINT_CATEGORY_NOT_IN_NOTICE],
        Severity::Error,
        "\"user.contact.phone_number\"",
    );
    assert_eq!(found[0].path, "collection_points.signup.fields.phone");
}

#[test]
fn notices_need_every_locale_and_a_collection_point() {
    let found = assert_finds(
        "locales = [\"en\"]",
        "locales = [\"en\", \"de\"]",
        &[codes::NOTICE_MISSING_LOCALE, codes::TRANSLATION_MISSING],
        Severity::Warning,
        "newsletter]",
    );
    assert!(found[0].message.contains("`de`"));

    let unused = format!(
        "{CLEAN}\n[notices.old]\nversion = 1\ncategories = [\"user.contact.email\"]\npurposes = [\"marketing.communications\"]\n[notices.old.locales.en]\ntitle = \"Old\"\ntext = \"Old text.\"\n"
    );
    let found = findings(&unused, &[]);
    assert_eq!(
        codes_of(&found),
        BTreeSet::from([codes::NOTICE_UNUSED]),
        "{found:#?}"
    );
    assert_eq!(found[0].path, "notices.old");
}

#[test]
fn purposes_and_topics_speak_every_locale() {
    // German added: each purpose and the topic lack German words (the notice too).
    let german = replace("locales = [\"en\"]", "locales = [\"en\", \"de\"]");
    let found = findings(&german, &[]);
    let missing: Vec<&str> = found
        .iter()
        .filter(|f| f.code == codes::TRANSLATION_MISSING)
        .map(|f| f.path.as_str())
        .collect();
    assert_eq!(
        missing,
        [
            "purposes.\"marketing.communications\"",
            "purposes.\"loyalty.rewards\"",
            "topics.news"
        ]
    );
    // With them, and one for a language the organisation does not list.
    let translated = german
        .replace(
            "retention = \"2y\"",
            "retention = \"2y\"\nlocales.de = { name = \"Newsletter\", description = \"Den Newsletter senden.\" }",
        )
        .replace(
            "retention = \"1y\"",
            "retention = \"1y\"\nlocales.de = { name = \"Prämien\", description = \"Prämien erfassen.\" }\nlocales.fr = { name = \"Fidélité\", description = \"Suivre la fidélité.\" }",
        )
        .replacen(
            "channels = [\"email\"]\n\n[notices",
            "channels = [\"email\"]\nlocales.de = { name = \"Neuigkeiten\", description = \"Monatlich.\" }\n\n[notices",
            1,
        );
    let found = findings(&translated, &[]);
    assert_eq!(
        codes_of(&found),
        BTreeSet::from([
            codes::NOTICE_MISSING_LOCALE,
            codes::TRANSLATION_UNKNOWN_LOCALE
        ]),
        "{found:#?}"
    );
    let unknown = found
        .iter()
        .find(|f| f.code == codes::TRANSLATION_UNKNOWN_LOCALE)
        .unwrap();
    assert_eq!(unknown.path, "purposes.\"loyalty.rewards\".locales.fr");
    assert_eq!(unknown.line, Some(position(&translated, "locales.fr", 0).0));
    let loaded = load(&translated, "kept.toml").unwrap();
    let rewards = &loaded.manifest.purposes["loyalty.rewards"];
    assert_eq!(rewards.text_in("de"), ("Prämien", "Prämien erfassen."));
    assert_eq!(rewards.text_in("es"), ("Rewards", "Track rewards."));
    assert_eq!(
        loaded.manifest.topics["news"].text_in("de").0,
        "Neuigkeiten"
    );

    // A translation without its description is unusable input, named where it is.
    let broken = translated.replace(", description = \"Monatlich.\"", "");
    let error = load(&broken, "kept.toml").unwrap_err().to_string();
    assert!(error.contains("description"), "{error}");
    assert!(error.contains("kept.toml:"), "{error}");
}

#[test]
fn teams_channels_and_locales() {
    assert_finds(
        "owners = [\"mia@acme.example\"]",
        "owners = []",
        &[codes::TEAM_NO_OWNERS],
        Severity::Warning,
        "marketing]",
    );
    assert_finds(
        "sms = { name = \"Text message\" }",
        "sms = { name = \"Text message\" }\nfax = { name = \"Fax\" }",
        &[codes::CHANNEL_UNKNOWN],
        Severity::Warning,
        "fax",
    );
    assert_finds(
        "locales = [\"en\"]",
        "locales = []",
        &[codes::ORGANISATION_NO_LOCALES],
        Severity::Error,
        "[]",
    );
}

#[test]
fn a_notice_changed_without_a_version_bump_is_caught_against_recorded_hashes() {
    let recorded_hash = load(CLEAN, "kept.toml").unwrap().manifest.notices["newsletter"]
        .hash
        .clone();
    let recorded = |version, hash: &str| RecordedNotice {
        notice_id: "newsletter".to_owned(),
        version,
        hash: hash.to_owned(),
    };

    // Unchanged text: nothing to report.
    assert_eq!(findings(CLEAN, &[recorded(1, &recorded_hash)]), []);

    // The text changed, the version did not.
    let edited = replace(
        "We email you our newsletter.",
        "We email you our newsletter and share your address with partners.",
    );
    let found = findings(&edited, &[recorded(1, &recorded_hash)]);
    assert_eq!(
        codes_of(&found),
        BTreeSet::from([codes::NOTICE_CHANGED_WITHOUT_VERSION_BUMP])
    );
    let (line, column) = position(&edited, "1\ncategories", 0);
    assert_eq!((found[0].line, found[0].column), (Some(line), Some(column)));
    assert!(found[0].message.contains(&recorded_hash[..12]));

    // Fixed by raising the version.
    let bumped = edited.replacen("version = 1", "version = 2", 1);
    assert_eq!(findings(&bumped, &[recorded(1, &recorded_hash)]), []);

    // Without a database there is nothing to compare against.
    assert_eq!(findings(&edited, &[]), []);

    // Another notice's record does not matter.
    let other = RecordedNotice {
        notice_id: "other".to_owned(),
        version: 1,
        hash: "00".to_owned(),
    };
    assert_eq!(findings(&edited, &[other]), []);

    // A later version was already recorded: the manifest went backwards.
    let found = findings(
        CLEAN,
        &[
            recorded(1, &recorded_hash),
            recorded(2, "ab".repeat(32).as_str()),
        ],
    );
    assert_eq!(
        codes_of(&found),
        BTreeSet::from([codes::NOTICE_VERSION_BEHIND])
    );
    assert_eq!(found[0].severity, Severity::Warning);
}

#[test]
fn the_example_flags_only_its_sms_marketing_tool() {
    let found = findings(EXAMPLE_TOML, &[]);
    assert_eq!(found.len(), 1, "{found:#?}");
    let sms = &found[0];
    assert_eq!(sms.code, codes::SYSTEM_USE_NOT_PROMISED);
    assert_eq!(sms.severity, Severity::Error);
    assert_eq!(sms.path, "systems.sms_blaster.uses[0]");
    let (line, column) = position(
        EXAMPLE_TOML,
        "\"marketing.communications\"\ncategories = [\"user.contact.phone_number\"]",
        0,
    );
    assert_eq!((sms.line, sms.column), (Some(line), Some(column)));
    assert!(sms.message.contains("`sms_blaster`"));
    assert!(sms.message.contains("`user.contact.phone_number`"));
    assert!(sms.message.contains("by `sms`"));
    assert!(sms.message.contains("`checkout`, `rewards`"));
    assert_eq!(count(&found), (1, 0));
}

#[test]
fn the_demo_manifest_is_clean() {
    assert_eq!(findings(&demo_toml(), &[]), []);
}

#[test]
fn findings_serialize_to_a_stable_shape() {
    let found = findings(EXAMPLE_TOML, &[]);
    let (line, column) = (found[0].line.unwrap(), found[0].column.unwrap());
    assert_eq!(
        serde_json::to_value(&found).unwrap(),
        serde_json::json!([{
            "code": "system.use_not_promised",
            "severity": "error",
            "message": "system `sms_blaster` uses `user.contact.phone_number` for `marketing.communications` by `sms`, but the notices that cover `user.contact.phone_number` (`checkout`, `rewards`) do not promise `marketing.communications` by `sms`; add a notice that promises it and collect under it",
            "path": "systems.sms_blaster.uses[0]",
            "file": "kept.toml",
            "line": line,
            "column": column,
        }])
    );
}

#[test]
fn findings_come_in_file_order() {
    let source = replace("retention = \"2y\"\n", "")
        .replacen(
            "name = \"Mailer\"\nowner = \"marketing\"\n",
            "name = \"Mailer\"\n",
            1,
        )
        .replacen("owners = [\"mia@acme.example\"]", "owners = []", 1);
    let found = findings(&source, &[]);
    assert_eq!(
        found.iter().map(|f| f.code).collect::<Vec<_>>(),
        [
            codes::TEAM_NO_OWNERS,
            codes::PURPOSE_NO_RETENTION,
            codes::SYSTEM_NO_OWNER
        ]
    );
    assert!(found.windows(2).all(|w| w[0].line < w[1].line));
}

/// A second notice promising the newsletter's purpose on email, shown at a form of its own.
const PROMO: &str = r#"[notices.promo]
version = 1
categories = ["user.contact.email"]
purposes = ["marketing.communications"]
channels = ["email"]

[notices.promo.locales.en]
title = "Promotions"
text = "We email you offers."

[collection_points.promo_form]
name = "Promotions"
kind = "signup"
notice = "promo"
fields = { email = "user.contact.email" }

[collection_points.signup]"#;

#[test]
fn two_notices_promising_one_purpose_on_one_channel_need_a_topic_to_say_which_is_shown() {
    let tied = replace("[collection_points.signup]", PROMO);
    let found = findings(&tied, &[]);
    assert_eq!(
        codes_of(&found),
        [codes::NOTICE_AMBIGUOUS].into(),
        "{found:#?}"
    );
    let f = &found[0];
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(f.path, "notices.promo.purposes[0]");
    assert!(
        f.message.contains("`newsletter` and `promo`"),
        "{}",
        f.message
    );
    assert!(
        f.message.contains("`marketing.communications` on `email`"),
        "{}",
        f.message
    );
    let (line, column) = position(&tied, "\"marketing.communications\"", 3);
    assert_eq!((f.line, f.column), (Some(line), Some(column)), "{f:#?}");

    // On different channels they do not compete.
    let apart = tied.replacen(
        "channels = [\"email\"]\n\n[notices.promo.locales",
        "channels = [\"sms\"]\n\n[notices.promo.locales",
        1,
    );
    assert_ne!(apart, tied);
    assert!(
        findings(&apart, &[])
            .iter()
            .all(|f| f.code != codes::NOTICE_AMBIGUOUS)
    );

    // A topic of that purpose and channel naming its notice settles it.
    let settled = tied.replacen(
        "channels = [\"email\"]\n\n[notices.newsletter]",
        "channels = [\"email\"]\nnotice = \"promo\"\n\n[notices.newsletter]",
        1,
    );
    assert_ne!(settled, tied);
    assert_eq!(findings(&settled, &[]), []);
}

#[test]
fn a_topic_names_a_notice_that_exists_and_promises_it() {
    let found = assert_finds(
        "channels = [\"email\"]\n\n[notices.newsletter]",
        "channels = [\"email\"]\nnotice = \"newsleter\"\n\n[notices.newsletter]",
        &[codes::DANGLING_REFERENCE],
        Severity::Error,
        "\"newsleter\"",
    );
    assert_eq!(found[0].path, "topics.news.notice");

    let found = assert_finds(
        "channels = [\"email\"]\n\n[notices.newsletter]",
        "channels = [\"email\", \"sms\"]\nnotice = \"newsletter\"\n\n[notices.newsletter]",
        &[codes::TOPIC_NOTICE_NOT_PROMISING],
        Severity::Error,
        "\"newsletter\"\n",
    );
    assert!(found[0].message.contains("`sms`"), "{}", found[0].message);
}

/// A checkout collecting email addresses under `notice`, placed before the sign-up form.
fn checkout_under(notice: &str) -> String {
    format!(
        "[collection_points.checkout]\nname = \"Checkout\"\nkind = \"purchase\"\nnotice = \"{notice}\"\nfields = {{ email = \"user.contact.email\" }}\n\n[collection_points.signup]"
    )
}

/// A notice for orders that promises nothing about marketing.
const ORDERS: &str = r#"[notices.orders]
version = 1
categories = ["user.contact.email"]
purposes = ["loyalty.rewards"]
channels = ["email"]

[notices.orders.locales.en]
title = "Your order"
text = "We email you about your order."

"#;

#[test]
fn soft_opt_in_that_can_never_apply_is_a_warning_at_the_setting() {
    let soft = replace(
        "retention = \"2y\"\n",
        "retention = \"2y\"\nsoft_opt_in = true\n",
    );
    // No purchase point at all.
    let found = findings(&soft, &[]);
    assert_eq!(
        codes_of(&found),
        BTreeSet::from([codes::PURPOSE_SOFT_OPT_IN_NEVER_APPLIES]),
        "{found:#?}"
    );
    let warning = &found[0];
    assert_eq!(warning.severity, Severity::Warning);
    assert_eq!(
        warning.path,
        "purposes.\"marketing.communications\".soft_opt_in"
    );
    // At the value, as every finding about a setting.
    let (line, column) = position(&soft, "soft_opt_in = true", 0);
    let column = column + "soft_opt_in = ".len() as u32;
    assert_eq!((warning.line, warning.column), (Some(line), Some(column)));
    assert!(warning.message.contains("kind `purchase`"), "{warning:#?}");
    assert!(warning.message.contains("`user.contact.email`"));

    // A checkout whose notice never mentions marketing: still never.
    let silent = soft.replacen("[collection_points.signup]", &checkout_under("orders"), 1);
    let silent = silent.replacen(
        "[collection_points.",
        &format!("{ORDERS}[collection_points."),
        1,
    );
    assert_eq!(
        codes_of(&findings(&silent, &[])),
        BTreeSet::from([codes::PURPOSE_SOFT_OPT_IN_NEVER_APPLIES])
    );

    // A checkout shown with a notice that promises the newsletter by email: it can apply.
    let told = soft.replacen(
        "[collection_points.signup]",
        &checkout_under("newsletter"),
        1,
    );
    assert_eq!(findings(&told, &[]), []);

    // Unless the manifest's own policy asks for consent to marketing email everywhere.
    let tightened = format!(
        "{told}\n[[policy.tighten]]\npurpose = \"marketing.*\"\nchannel = \"email\"\nreason = \"Consent for every marketing email.\"\n"
    );
    let found = findings(&tightened, &[]);
    assert_eq!(
        codes_of(&found),
        BTreeSet::from([codes::PURPOSE_SOFT_OPT_IN_NEVER_APPLIES])
    );
    assert!(
        found[0].message.contains("no regime's rules allow it"),
        "{found:#?}"
    );

    // A policy on texts leaves email, and soft opt-in, as they were.
    let texts = format!(
        "{told}\n[[policy.tighten]]\npurpose = \"marketing.*\"\nchannel = \"sms\"\nreason = \"Consent for texts.\"\n"
    );
    assert_eq!(findings(&texts, &[]), []);
}

#[test]
fn a_legal_basis_table_leaving_regimes_of_a_family_to_a_contradicting_default_is_a_warning() {
    let all_us = "legal_basis = { default = \"consent\", ccpa = \"legitimate_interests\", us_state = \"legitimate_interests\", us = \"legitimate_interests\" }";
    // `us` alone: California and the states with a privacy law fall to consent.
    let found = assert_finds(
        all_us,
        "legal_basis = { default = \"consent\", us = \"legitimate_interests\" }",
        &[codes::PURPOSE_LEGAL_BASIS_DEFAULT_CONTRADICTS],
        Severity::Warning,
        "us = \"legitimate_interests\" }",
    );
    let warning = &found[0];
    assert_eq!(
        warning.path,
        "purposes.\"marketing.communications\".legal_basis.us"
    );
    assert!(
        warning
            .message
            .contains("`ccpa`, `us_state` (California, the other US states with a privacy law) fall to `default = \"consent\"`"),
        "{warning:#?}"
    );
    assert!(
        warning
            .message
            .contains("opt-in consent where `us` asks for an opt-out")
    );

    // Naming one more still leaves the last one.
    let found = assert_finds(
        all_us,
        "legal_basis = { default = \"consent\", ccpa = \"legitimate_interests\", us = \"legitimate_interests\" }",
        &[codes::PURPOSE_LEGAL_BASIS_DEFAULT_CONTRADICTS],
        Severity::Warning,
        "ccpa = \"legitimate_interests\"",
    );
    assert!(found[0].message.contains("but `us_state` ("), "{found:#?}");
    assert!(found[0].message.contains("name it in `legal_basis`"));

    // The EU and the UK go together too.
    let found = assert_finds(
        all_us,
        "legal_basis = { default = \"legitimate_interests\", gdpr = \"consent\" }",
        &[codes::PURPOSE_LEGAL_BASIS_DEFAULT_CONTRADICTS],
        Severity::Warning,
        "gdpr = \"consent\"",
    );
    assert!(found[0].message.contains("`uk_gdpr` (the United Kingdom)"));

    // Not a contradiction: the same level under another name, the whole family named, or a
    // regime outside any family.
    for quiet in [
        "legal_basis = { default = \"legitimate_interests\", us = \"public_task\" }",
        "legal_basis = { default = \"consent\", gdpr = \"consent\", uk_gdpr = \"consent\", casl = \"legitimate_interests\" }",
        "legal_basis = { default = \"consent\", ccpa = \"consent\", us = \"consent\" }",
    ] {
        assert_eq!(findings(&replace(all_us, quiet), &[]), [], "{quiet}");
    }
}

#[test]
fn a_webhook_without_a_secret_is_warned_about() {
    let unsigned = replace(
        "owner = \"marketing\"\n\n[[systems.mailer.uses]]",
        "owner = \"marketing\"\nwebhook = { url = \"https://mailer.example/kept\", acknowledge = \"on_delivery\" }\n\n[[systems.mailer.uses]]",
    );
    let found = findings(&unsigned, &[]);
    assert_eq!(codes_of(&found), BTreeSet::from([codes::WEBHOOK_UNSIGNED]));
    assert_eq!(found[0].severity, Severity::Warning);
    assert!(
        found[0].message.contains("`mailer`"),
        "{}",
        found[0].message
    );
    let signed = replace(
        "owner = \"marketing\"\n\n[[systems.mailer.uses]]",
        "owner = \"marketing\"\nwebhook = { url = \"https://mailer.example/kept\", secret_env = \"KEPT_MAILER_SECRET\", lifecycle = true }\n\n[[systems.mailer.uses]]",
    );
    assert_eq!(findings(&signed, &[]), []);
}
