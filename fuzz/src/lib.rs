//! The harnesses of Kept's fuzz targets, one function per target. Each feeds the fuzzer's bytes
//! to one of Kept's readers of untrusted input the way the product calls it, and checks what
//! must hold for every input: no panic, errors that carry their stable code, and where it is
//! cheap a round trip. A failed check panics, which is what the fuzzer reports.
//!
//! The fuzz targets (`fuzz_targets/`) only call these; `tests/corpora.rs` runs every committed
//! corpus file through them on stable Rust.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use kept_core::collection::{
    self, Context, IDENTIFIER_TRAITS, MessageError, MessageKind, parse_message_json,
};
use kept_core::decision::Compiled;
use kept_core::identity;
use kept_core::ledger::{self, Checkpoint, Columns, LedgerEntry};
use kept_core::manifest::{self, Manifest};
use kept_core::receipt::{self, ReceiptError};
use kept_core::token::{Claims, Kind, TokenKeys};
use serde_json::Value;
use std::sync::OnceLock;

/// A harness: takes the fuzzer's bytes, panics when a check fails.
pub type Harness = fn(&[u8]);

/// The targets by name, as `cargo fuzz` and the corpus folders name them.
pub const TARGETS: [(&str, Harness); 6] = [
    ("manifest", manifest),
    ("segment_message", segment_message),
    ("prefcenter_token", prefcenter_token),
    ("receipt", receipt),
    ("ledger_record", ledger_record),
    ("request_log_record", request_log_record),
];

/// A time between a token's issue and its expiry in the seeds (2026-06).
const NOW: i64 = 1_780_000_000_000;

/// The manifest loader from TOML text, then what the server does with a manifest that loads:
/// `kept lint`'s checks and the decision engine's compilation.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match manifest::load(text, "kept.toml") {
        Ok(loaded) => {
            let findings = kept_core::lint::lint(&loaded, &[]);
            let (errors, warnings) = kept_core::lint::count(&findings);
            assert_eq!(errors + warnings, findings.len());
            match Compiled::new(loaded.manifest) {
                Ok(compiled) => {
                    let _ = compiled.manifest();
                }
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        }
        Err(e) => {
            assert!(e.code().starts_with("manifest."), "{}", e.code());
            assert!(!e.message().is_empty(), "an error without a message: {e:?}");
            assert_eq!(e.location().file, "kept.toml");
        }
    }
}

/// The demo manifest, loaded once (what collection reads messages against).
fn demo_manifest() -> &'static Manifest {
    static DEMO: OnceLock<Manifest> = OnceLock::new();
    DEMO.get_or_init(
        || match manifest::load(&manifest::demo_toml(), "kept.toml") {
            Ok(loaded) => loaded.manifest,
            Err(e) => panic!("the demo manifest does not load: {e}"),
        },
    )
}

/// One Segment message as a batch item (`type` read from the message) and as a single call
/// (the kind chosen by the input's length), then the pure steps collection takes with a
/// message it accepted: its consent signals and the purposes they name, its location, the
/// identifiers in its traits and the traits it adds to a profile, its time, and sealing its
/// identifier traits. Round trips: a context written out reads back the same, and an
/// identifier normalised once is normalised for good.
pub fn segment_message(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let single = MessageKind::ALL
        .get(data.len() % MessageKind::ALL.len())
        .copied();
    for (kind, base) in [(None, "batch[0]"), (single, "")] {
        match parse_message_json(text, kind, base) {
            Ok(message) => accepted_message(message, base),
            Err(MessageError::NotJson(m)) => assert!(!m.is_empty()),
            Err(MessageError::Field(f)) => {
                assert!(f.path.starts_with(base), "`{}` not under `{base}`", f.path);
                assert!(!f.message.is_empty());
            }
        }
    }
}

fn accepted_message(mut message: collection::Message, base: &str) {
    for context in [&message.context, &message.extra] {
        let again = Context::parse(&context.to_json());
        assert_eq!(
            again.as_ref(),
            Some(context),
            "a context does not read back"
        );
    }
    let manifest = demo_manifest();
    if let Ok(signals) =
        kept_core::signals::read(&message.context.subset(&["consent", "gpc"]), false, base)
    {
        let _ = collection::purpose_choices(manifest, &signals.categories);
    }
    let _ = collection::location(&message.context.subset(&["location", "timezone"]));
    let person = message.person_traits();
    for (key, kind) in IDENTIFIER_TRAITS {
        if let Some(Value::String(raw)) = person.get(key)
            && let Ok(normal) = identity::normalize(kind, raw, None)
        {
            assert_eq!(
                identity::normalize(kind, &normal, None).as_deref(),
                Ok(normal.as_str()),
                "normalising `{raw}` twice changes it"
            );
        }
    }
    let _ = collection::profile_traits(
        manifest,
        message
            .context_str(&["kept", "collection_point"])
            .as_deref(),
        &person,
        kept_core::SubjectId(1),
        NOW,
    );
    for received in [0, NOW, i64::MIN, i64::MAX] {
        let _ = message.event_time(received);
    }
    message.context.seal_identifier_traits();
    let sealed = message.context.traits();
    for (key, _) in IDENTIFIER_TRAITS {
        if let Some(v) = sealed.get(key) {
            assert!(
                v.get("sealed_identifier").is_some(),
                "`{key}` left in clear"
            );
        }
    }
}

fn token_keys() -> &'static TokenKeys {
    static KEYS: OnceLock<TokenKeys> = OnceLock::new();
    KEYS.get_or_init(|| TokenKeys::derive(&[9; 32]))
}

/// A preference-center token as it arrives in a link, a cookie or a form, opened as every kind;
/// and the same bytes read as a token's claims, signed and opened again (the fuzzer cannot forge
/// a MAC, so this is how it reaches the claims). The CSRF check takes it too.
pub fn prefcenter_token(data: &[u8]) {
    let keys = token_keys();
    if let Ok(text) = std::str::from_utf8(data) {
        for kind in Kind::ALL {
            match keys.open(kind, text, NOW) {
                Ok(claims) => {
                    assert_eq!(claims.kind, kind);
                    assert!(NOW < claims.expires);
                    assert_eq!(keys.open(kind, &keys.sign(&claims), NOW), Ok(claims));
                }
                Err(e) => assert!(e.code().starts_with("prefcenter.token_")),
            }
        }
        let _ = keys.csrf_matches(text, text);
        assert!(keys.csrf_matches(text, &keys.csrf(text)));
    }
    if let Ok(claims) = serde_json::from_slice::<Claims>(data) {
        let token = keys.sign(&claims);
        let opened = keys.open(claims.kind, &token, NOW);
        if NOW < claims.expires {
            assert_eq!(opened, Ok(claims.clone()), "a signed token does not open");
        } else {
            assert_eq!(opened, Err(kept_core::token::TokenError::Expired));
        }
        for other in Kind::ALL.into_iter().filter(|k| *k != claims.kind) {
            assert_eq!(
                keys.open(other, &token, NOW),
                Err(kept_core::token::TokenError::Signature),
                "a token opens as another kind"
            );
        }
    }
}

fn receipt_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::from_bytes(&[21; 32]))
}

/// A receipt file as `kept ledger verify-receipt` reads it, verified as it is; then signed
/// again with a known key (as the fuzzer cannot forge a signature) and verified after a trip
/// through its text, which must never fail on the signature: this reaches the checks behind it
/// (the ledger record inside, the fields that must match it, the checkpoint).
pub fn receipt(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let key = receipt_key();
    let checked = |value: &Value, expected| match receipt::verify(value, expected) {
        Ok(verified) => {
            assert_eq!(
                value.pointer("/kept/ledger_seq").and_then(Value::as_u64),
                Some(verified.seq)
            );
            Ok(verified)
        }
        Err(e) => {
            assert!(e.code().starts_with("receipt."));
            assert!(!e.to_string().is_empty());
            Err(e)
        }
    };
    let _ = checked(&value, None);
    let Value::Object(mut map) = value else {
        return;
    };
    map.remove("signature");
    map.insert(
        "publicKey".to_owned(),
        Value::String(hex::encode(key.verifying_key().as_bytes())),
    );
    let unsigned = Value::Object(map);
    let signature = (receipt::signer(key))(&receipt::canonical(&unsigned));
    let Value::Object(mut map) = unsigned else {
        return;
    };
    map.insert(
        "signature".to_owned(),
        serde_json::json!({
            "alg": receipt::ALGORITHM,
            "kid": ledger::key_id(&key.verifying_key()),
            "value": URL_SAFE_NO_PAD.encode(signature),
        }),
    );
    let text = Value::Object(map).to_string();
    let Ok(reread) = serde_json::from_str::<Value>(&text) else {
        panic!("a receipt written out does not read back: {text}");
    };
    if let Err(e) = checked(&reread, Some(&key.verifying_key())) {
        assert!(
            !matches!(
                e,
                ReceiptError::Signature
                    | ReceiptError::WrongKey { .. }
                    | ReceiptError::Algorithm(_)
                    | ReceiptError::NotAnObject
            ) && !matches!(
                e,
                ReceiptError::Missing(f) if f.starts_with("signature") || f == "publicKey"
            ),
            "a receipt signed just now does not verify: {e}"
        );
    }
}

/// A ledger record's stored bytes: anything `decode` accepts encodes back to exactly those
/// bytes (one encoding per record), and the column check agrees with it. The same bytes as a
/// witness-file line: a checkpoint read from one writes out to a line that reads back the same.
/// A record of the requests log as the store hands its bytes to `kept dsr verify`: it decodes
/// only to what `encode_record` writes, and the column check agrees with the decoder.
pub fn request_log_record(data: &[u8]) {
    use kept_core::requests;
    match requests::decode_record(data) {
        Ok(record) => {
            assert_eq!(
                requests::encode_record(&record),
                data,
                "a second encoding of a requests log record"
            );
            assert_eq!(
                requests::record_columns(data),
                Ok(Columns {
                    subject: record.subject,
                    at: record.at,
                })
            );
            let entry = requests::chain(&ledger::ChainHash::GENESIS, 1, &record);
            assert_eq!(entry.bytes, data);
        }
        Err(e) => {
            assert_eq!(requests::record_columns(data).err(), Some(e.clone()));
            assert!(!e.to_string().is_empty());
        }
    }
}

pub fn ledger_record(data: &[u8]) {
    let decoded = ledger::decode(data);
    let columns = ledger::decoded_columns(data);
    match &decoded {
        Ok(record) => {
            assert_eq!(
                ledger::encode(record),
                data,
                "a second encoding of a record"
            );
            assert_eq!(
                columns,
                Ok(Columns {
                    subject: record.subject,
                    at: record.at,
                })
            );
            let entry = LedgerEntry::chain(&ledger::ChainHash::GENESIS, 1, record);
            assert_eq!(entry.bytes, data);
        }
        Err(e) => {
            assert_eq!(
                columns.err().as_ref(),
                Some(e),
                "the column check disagrees"
            );
            assert!(!e.to_string().is_empty());
        }
    }
    if let Ok(line) = std::str::from_utf8(data)
        && let Ok(checkpoint) = Checkpoint::from_witness_line(line)
    {
        let written = checkpoint.to_witness_line();
        assert_eq!(
            Checkpoint::from_witness_line(&written),
            Ok(checkpoint.clone())
        );
        let _ = checkpoint.verify_signature(&receipt_key().verifying_key());
        let _ = checkpoint.digest();
    }
}
