//! Golden fixtures of every stored format, read from `tests/fixtures/` (see its README): each
//! test decodes a checked-in file, encodes what it read again byte for byte, and recomputes its
//! hash, MAC, signature or seal, so a matched change to an encoder and its decoder cannot pass while
//! breaking what is already stored. Keys, seeds and times are fixed; nothing reads the clock.
//!
//! A missing fixture fails the test, unless `KEPT_WRITE_FIXTURES=1` is set: then it is written
//! from today's encoder (check it in). An existing fixture is never rewritten.

use ed25519_dalek::SigningKey;
use kept_core::SubjectId;
use kept_core::identity::{DataKey, IdentifierKind, IdentityKeys, identifier_aad, normalize};
use kept_core::ledger::{
    ChainHash, ChainVerifier, Checkpoint, CollectionMethod, ConsentAction, ConsentRecord, Evidence,
    LedgerEntry, NoticeRef, decode, encode,
};
use kept_core::manifest::{Notice, NoticeText};
use kept_core::receipt;
use kept_core::token::{Claims, Kind, TokenKeys, Topic};
use std::collections::BTreeMap;

/// Set to `1` to write the fixtures that are missing.
pub const WRITE_ENV: &str = "KEPT_WRITE_FIXTURES";

/// The text of `tests/fixtures/<path>`, written from `produce` first when it is missing and
/// `KEPT_WRITE_FIXTURES=1`.
pub fn golden(path: &str, produce: impl FnOnce() -> String) -> String {
    let full = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    match std::fs::read_to_string(&full) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if std::env::var(WRITE_ENV).as_deref() != Ok("1") {
                panic!(
                    "{full} is missing: run the test with {WRITE_ENV}=1 to write it from today's \
                     encoder, then check it in"
                );
            }
            let text = produce();
            if let Some(dir) = std::path::Path::new(&full).parent() {
                std::fs::create_dir_all(dir).unwrap();
            }
            std::fs::write(&full, &text).unwrap();
            text
        }
        Err(e) => panic!("{full}: {e}"),
    }
}

// --- the ledger's chain --------------------------------------------------------------------

fn record(action: ConsentAction, subject: u32, at: i64) -> ConsentRecord {
    ConsentRecord {
        subject: SubjectId(subject),
        purpose: "marketing.communications".into(),
        channel: Some("email".into()),
        topic: Some("newsletter".into()),
        action,
        notice: Some(NoticeRef {
            id: "newsletter".into(),
            version: 3,
            hash: "ab".repeat(32),
        }),
        regime: "gdpr".into(),
        source: "preference_center".into(),
        method: CollectionMethod::WebForm,
        evidence: Evidence {
            ip_hash: Some("cd".repeat(32)),
            user_agent: Some("Mozilla/5.0".into()),
            text_hash: Some("ef".repeat(32)),
            reference: Some(format!("req-{subject}")),
        },
        at,
    }
}

/// Four records chained from the genesis, version 1 and version 2 encodings mixed as a ledger
/// written before and after `refused` existed holds them.
fn chain() -> Vec<ConsentRecord> {
    vec![
        record(ConsentAction::Given, 1, 1_790_000_000_000),
        record(ConsentAction::Refused, 2, 1_790_000_000_001),
        record(ConsentAction::Withdrawn, 1, 1_790_000_000_002),
        record(ConsentAction::OptedOut, 3, 1_790_000_000_003),
    ]
}

#[test]
fn a_chain_of_both_encodings_keeps_its_bytes_and_hashes() {
    // `<seq> <bytes hex> <chain hash hex>` per line.
    let text = golden("ledger/chain.txt", || {
        let mut prev = ChainHash::GENESIS;
        let mut out = String::new();
        for (i, r) in chain().iter().enumerate() {
            let entry = LedgerEntry::chain(&prev, i as u64 + 1, r);
            out.push_str(&format!(
                "{} {} {}\n",
                entry.seq,
                hex::encode(&entry.bytes),
                entry.hash.to_hex()
            ));
            prev = entry.hash;
        }
        out
    });
    let mut verifier = ChainVerifier::new(std::iter::empty());
    let mut prev = ChainHash::GENESIS;
    let expected = chain();
    let mut versions = Vec::new();
    for (line, want) in text.lines().zip(&expected) {
        let [seq, bytes, hash] = line.split(' ').collect::<Vec<_>>()[..] else {
            panic!("malformed line `{line}`");
        };
        let seq: u64 = seq.parse().unwrap();
        let bytes = hex::decode(bytes).unwrap();
        let hash = ChainHash::from_slice(&hex::decode(hash).unwrap()).unwrap();
        versions.push(bytes[0]);
        assert_eq!(decode(&bytes).as_ref(), Ok(want), "record {seq} decodes");
        assert_eq!(
            encode(want),
            bytes,
            "record {seq} encodes to the stored bytes"
        );
        assert_eq!(
            LedgerEntry::chain(&prev, seq, want).hash,
            hash,
            "record {seq}"
        );
        verifier.push(seq, &bytes, &hash, None).unwrap();
        prev = hash;
    }
    assert_eq!(verifier.len(), expected.len() as u64);
    assert_eq!(versions, [1, 2, 1, 1], "both encoding versions are covered");
}

// --- the preference center's tokens ----------------------------------------------------------

const TOKEN_SECRET: [u8; 32] = [9; 32];
const TOKEN_EXPIRES: i64 = 1_790_000_000_000;

fn claims(kind: Kind) -> Claims {
    let subject = if kind == Kind::SignInForm { 0 } else { 7 };
    let mut c = Claims::new(
        kind,
        SubjectId(subject),
        TOKEN_EXPIRES,
        "0123456789abcdef0123456789abcdef".into(),
    );
    if matches!(kind, Kind::Confirm | Kind::Unsubscribe) {
        c.topic = Some(Topic {
            purpose: "marketing.communications".into(),
            channel: "email".into(),
            topic: Some("newsletter".into()),
        });
    }
    if matches!(kind, Kind::Link | Kind::SignInForm) {
        c.locale = Some("de".into());
    }
    if kind == Kind::Export {
        c.request = Some(42);
    }
    c
}

fn kind_name(kind: Kind) -> String {
    serde_json::to_value(kind)
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn every_token_kind_keeps_its_signed_form() {
    let keys = TokenKeys::derive(&TOKEN_SECRET);
    for kind in Kind::ALL {
        let name = format!("token/{}-v1.txt", kind_name(kind));
        let stored = golden(&name, || format!("{}\n", keys.sign(&claims(kind))));
        let stored = stored.trim_end();
        assert_eq!(
            keys.open(kind, stored, TOKEN_EXPIRES - 1),
            Ok(claims(kind)),
            "{name}: opens"
        );
        assert_eq!(keys.sign(&claims(kind)), stored, "{name}: signs the same");
        for other in Kind::ALL.into_iter().filter(|k| *k != kind) {
            assert!(keys.open(other, stored, 0).is_err(), "{name} as {other:?}");
        }
    }
    let stored = golden("token/csrf-v1.txt", || {
        format!("{}\n", keys.csrf("0123456789abcdef"))
    });
    assert_eq!(keys.csrf("0123456789abcdef"), stored.trim_end());
    assert!(keys.csrf_matches("0123456789abcdef", stored.trim_end()));
    assert!(!keys.csrf_matches("another session", stored.trim_end()));
}

// --- notice hashes ---------------------------------------------------------------------------

fn notice_hash(line_ending: &str) -> String {
    let mut locales = BTreeMap::new();
    locales.insert(
        "en".to_owned(),
        NoticeText {
            title: "Newsletter".into(),
            text: format!("We send you our newsletter.{line_ending}Unsubscribe at any time."),
        },
    );
    locales.insert(
        "de".to_owned(),
        NoticeText {
            title: "Newsletter".into(),
            text: "Wir senden Ihnen unseren Newsletter.".into(),
        },
    );
    let list = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Notice::compute_hash(
        "newsletter",
        3,
        &locales,
        &list(&["user.contact.email", "user.name", "user.contact.email"]),
        &list(&["marketing.communications"]),
        &list(&["email", "web"]),
    )
}

#[test]
fn notice_hashes_keep_their_encoding() {
    let stored = golden("notice/kept.notice.v1.txt", || {
        format!("{}\n", notice_hash("\n"))
    });
    assert_eq!(notice_hash("\n"), stored.trim_end());
    // Line endings are normalised, so a checkout on another platform hashes the same.
    assert_eq!(notice_hash("\r\n"), stored.trim_end());
}

// --- receipts ----------------------------------------------------------------------------------

const RECEIPT_KEY: [u8; 32] = [21; 32];

/// The receipt of record 2, covered by a checkpoint of `version` (none: a receipt from before
/// receipts carried one), as the preference center issues it.
pub fn receipt_of(version: Option<u8>) -> serde_json::Value {
    let manifest = kept_core::manifest::load(&kept_core::manifest::demo_toml(), "kept.toml")
        .unwrap()
        .manifest;
    let key = SigningKey::from_bytes(&RECEIPT_KEY);
    let record = ConsentRecord {
        subject: SubjectId(7),
        purpose: "marketing.communications".into(),
        channel: Some("email".into()),
        topic: Some("newsletter".into()),
        action: ConsentAction::Given,
        notice: None,
        regime: "gdpr".into(),
        source: "preference_center".into(),
        method: CollectionMethod::DoubleOptIn,
        evidence: Evidence::default(),
        at: 1_790_000_000_123,
    };
    let first = LedgerEntry::chain(&ChainHash::GENESIS, 1, &record);
    let entry = LedgerEntry::chain(&first.hash, 2, &record);
    // Covered by the checkpoint of its batch, which ended at record 3.
    let covering = match version {
        None => None,
        Some(1) => Some(Checkpoint::sign_v1(
            &key,
            3,
            ChainHash([5; 32]),
            1_790_000_000_200,
        )),
        Some(_) => Some(Checkpoint::sign(
            &key,
            3,
            ChainHash([5; 32]),
            1_790_000_000_200,
            ChainHash([6; 32]),
        )),
    };
    let mut built = receipt::build(
        &manifest,
        receipt::Entry {
            seq: 2,
            hash: &entry.hash,
            bytes: &entry.bytes,
            record: &record,
            checkpoint: covering.as_ref(),
        },
        "en",
        "https://shop.example/preferences",
        &key.verifying_key(),
        receipt::signer(&key),
    );
    if version.is_none() {
        // Receipts issued before checkpoints were carried have no such field at all.
        use base64::Engine as _;
        let map = built.as_object_mut().unwrap();
        map["kept"].as_object_mut().unwrap().remove("checkpoint");
        let mut signature = map.remove("signature").unwrap();
        let signed = receipt::signer(&key)(&receipt::canonical(&built));
        signature["value"] = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(signed)
            .into();
        built
            .as_object_mut()
            .unwrap()
            .insert("signature".into(), signature);
    }
    built
}

#[test]
fn receipts_of_every_form_keep_their_bytes_and_verify() {
    let key = SigningKey::from_bytes(&RECEIPT_KEY).verifying_key();
    for (version, name) in [
        (None, "receipt/kantara-1.1-no-checkpoint.json"),
        (Some(1), "receipt/kantara-1.1-checkpoint-v1.json"),
        (Some(2), "receipt/kantara-1.1-checkpoint-v2.json"),
    ] {
        let text = golden(name, || {
            serde_json::to_string_pretty(&receipt_of(version)).unwrap() + "\n"
        });
        let stored: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            serde_json::to_string_pretty(&stored).unwrap() + "\n",
            text,
            "{name}: reads and writes back byte for byte"
        );
        let verified = receipt::verify(&stored, Some(&key)).unwrap();
        assert_eq!(
            (verified.seq, verified.checkpoint),
            (2, version.map(|_| 3)),
            "{name}"
        );
        let built = receipt_of(version);
        // The ledger's part exactly; the rest by its fields (their text comes from the
        // manifest, which may change).
        assert_eq!(
            built["kept"], stored["kept"],
            "{name}: the ledger part changed"
        );
        let fields =
            |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(
            fields(&built),
            fields(&stored),
            "{name}: the fields changed"
        );
        // A signature over other canonical bytes would not verify: one changed byte shows it.
        let mut tampered = stored.clone();
        tampered["kept"]["at"] = serde_json::json!(1_790_000_000_124i64);
        assert!(receipt::verify(&tampered, Some(&key)).is_err(), "{name}");
    }
}

// --- identifiers: normalisation, keyed hashes and sealing ------------------------------------

const MASTER: [u8; 32] = [3; 32];

/// Raw identifiers as clients send them, one per kind, with the region phone numbers default to.
const IDENTIFIERS: [(IdentifierKind, &str); 4] = [
    (IdentifierKind::UserId, " user-42 "),
    (IdentifierKind::Email, " Ada.Lovelace@Example.COM "),
    (IdentifierKind::Phone, "(415) 555-0100"),
    (
        IdentifierKind::AnonymousId,
        "a1b2c3d4-0000-4000-8000-000000000000",
    ),
];

/// `hash <kind> <normalised> <hash hex>` per identifier, `ip <address> <hash hex>`,
/// `wrapped <hex>` (a data key wrapped under the master) and `sealed <hex>` (the email sealed
/// under that data key), with fixed nonces.
fn identity_lines() -> String {
    let keys = IdentityKeys::derive(&MASTER);
    let mut out = String::new();
    for (kind, raw) in IDENTIFIERS {
        let normalised = normalize(kind, raw, Some("US")).unwrap();
        let hash = keys.identifier_hash(kind, &normalised);
        out.push_str(&format!(
            "hash {} {normalised} {}\n",
            kind.as_str(),
            hex::encode(hash.0)
        ));
    }
    out.push_str(&format!("ip 203.0.113.7 {}\n", keys.ip_hash("203.0.113.7")));
    let data = DataKey([7; 32]);
    out.push_str(&format!(
        "wrapped {}\n",
        hex::encode(keys.seal_data_key(&data, [1; 24]).unwrap())
    ));
    let email = normalize(IdentifierKind::Email, IDENTIFIERS[1].1, None).unwrap();
    let aad = identifier_aad(
        IdentifierKind::Email,
        &keys.identifier_hash(IdentifierKind::Email, &email),
    );
    out.push_str(&format!(
        "sealed {}\n",
        hex::encode(data.seal(&aad, email.as_bytes(), [2; 24]).unwrap())
    ));
    out
}

#[test]
fn identifiers_keep_their_hashes_and_sealed_values_open() {
    let stored = golden("identity/keys-v1.txt", identity_lines);
    // Today's normalisation, hashing and sealing write the same lines ...
    assert_eq!(identity_lines(), stored);
    // ... and what is stored opens: the wrapped data key, then the identifier sealed under it.
    let keys = IdentityKeys::derive(&MASTER);
    let field = |name: &str| {
        stored
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| hex::decode(v.trim()).unwrap())
            .unwrap()
    };
    let data = keys.open_data_key(&field("wrapped ")).unwrap();
    assert_eq!(data, DataKey([7; 32]));
    let email = "ada.lovelace@example.com";
    let aad = identifier_aad(
        IdentifierKind::Email,
        &keys.identifier_hash(IdentifierKind::Email, email),
    );
    assert_eq!(
        data.open(&aad, &field("sealed ")).unwrap(),
        email.as_bytes()
    );
    // Bound to what it is: under another identifier's binding it does not open.
    let other = identifier_aad(
        IdentifierKind::Email,
        &keys.identifier_hash(IdentifierKind::Email, "someone@example.com"),
    );
    assert!(data.open(&other, &field("sealed ")).is_err());
}

// --- the requests log ----------------------------------------------------------------------

fn request_records() -> Vec<kept_core::requests::LogRecord> {
    use kept_core::requests::{LogRecord, RequestKind, State};
    let intake = LogRecord {
        request: 12,
        subject: SubjectId(42),
        kind: RequestKind::Erasure,
        from: None,
        to: State::Received,
        due_at: 1_792_592_000_000,
        actor: "key:kept_ab12cd34".into(),
        reason: None,
        detail: vec![
            ("channel".into(), "api".into()),
            ("regime".into(), "gdpr".into()),
            ("rule".into(), "gdpr.requests".into()),
            (
                "scope.purposes".into(),
                r#"["marketing.communications"]"#.into(),
            ),
            ("verification.method".into(), "company_stated".into()),
            ("verification.reference".into(), "case-1".into()),
        ],
        at: 1_790_000_000_000,
    };
    let extended = LogRecord {
        from: Some(State::Verified),
        to: State::Extended,
        due_at: 1_797_862_400_000,
        reason: Some("three connected systems to search".into()),
        detail: Vec::new(),
        at: 1_790_086_400_000,
        ..intake.clone()
    };
    vec![intake, extended]
}

/// One line per record: its bytes in hex, then its chain hash at its position after the one
/// before it.
fn request_lines() -> String {
    let mut prev = ChainHash::GENESIS;
    let mut out = String::new();
    for (i, record) in request_records().iter().enumerate() {
        let entry = kept_core::requests::chain(&prev, i as u64 + 1, record);
        out.push_str(&format!(
            "{} {}\n",
            hex::encode(&entry.bytes),
            entry.hash.to_hex()
        ));
        prev = entry.hash;
    }
    out
}

#[test]
fn requests_log_records_keep_their_bytes_and_chain() {
    let stored = golden("requests/log-v1.txt", request_lines);
    assert_eq!(request_lines(), stored);
    let mut verifier = kept_core::requests::verifier([]);
    for ((i, line), record) in stored.lines().enumerate().zip(request_records()) {
        let (bytes, hash) = line.split_once(' ').unwrap();
        let bytes = hex::decode(bytes).unwrap();
        assert_eq!(kept_core::requests::decode_record(&bytes), Ok(record));
        let hash = ChainHash::from_slice(&hex::decode(hash).unwrap()).unwrap();
        verifier.push(i as u64 + 1, &bytes, &hash, None).unwrap();
    }
    assert_eq!(verifier.len(), 2);
}
