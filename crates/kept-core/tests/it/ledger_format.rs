//! Golden fixtures of the ledger's stored format, one per encoding version: the bytes of a
//! known record and its chain hash. A change to `encode` that alters stored bytes, or a
//! `decode` that stops reading an old version, fails here even when both still agree.

use kept_core::SubjectId;
use kept_core::ledger::{
    ChainHash, CollectionMethod, ConsentAction, ConsentRecord, DecodeError, ENCODING_VERSION,
    Evidence, LedgerEntry, NoticeRef, decode, encode,
};

fn record(action: ConsentAction) -> ConsentRecord {
    ConsentRecord {
        subject: SubjectId(42),
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
            text_hash: None,
            reference: Some("req-1".into()),
        },
        at: 1_790_000_000_000,
    }
}

/// `<bytes hex>\n<chain hash hex after GENESIS at seq 1>\n`
fn fixture(name: &str) -> (Vec<u8>, String) {
    let path = format!(
        "{}/tests/fixtures/ledger/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut lines = text.lines();
    let bytes = hex::decode(lines.next().unwrap()).unwrap();
    (bytes, lines.next().unwrap().to_string())
}

fn check(name: &str, action: ConsentAction, version: u8) {
    let (bytes, hash) = fixture(name);
    assert_eq!(bytes.first(), Some(&version), "{name}: version byte");
    assert_eq!(decode(&bytes), Ok(record(action)), "{name}: decodes");
    assert_eq!(
        encode(&record(action)),
        bytes,
        "{name}: encodes to the stored bytes"
    );
    let entry = LedgerEntry::chain(&ChainHash::GENESIS, 1, &record(action));
    assert_eq!(entry.hash.to_hex(), hash, "{name}: chain hash");
}

#[test]
fn version_1_records_keep_their_bytes_and_hash() {
    check("v1-withdrawn.hex", ConsentAction::Withdrawn, 1);
    check("v1-given.hex", ConsentAction::Given, 1);
}

#[test]
fn refused_is_written_in_version_2() {
    assert_eq!(ENCODING_VERSION, 2);
    check("v2-refused.hex", ConsentAction::Refused, 2);
}

#[test]
fn one_encoding_per_record_across_versions() {
    // `refused` cannot be written in version 1 ...
    let mut v2 = encode(&record(ConsentAction::Refused));
    v2[0] = 1;
    assert_eq!(decode(&v2), Err(DecodeError::Invalid("action")));
    // ... and a record version 1 can hold is never written in version 2.
    let mut v1 = encode(&record(ConsentAction::Given));
    v1[0] = 2;
    assert_eq!(decode(&v1), Err(DecodeError::Invalid("version")));
    let mut future = encode(&record(ConsentAction::Given));
    future[0] = ENCODING_VERSION + 1;
    assert_eq!(
        decode(&future),
        Err(DecodeError::Version(ENCODING_VERSION + 1))
    );
}

/// `<witness line>\n<digest hex>\n`: a checkpoint of the `v1-given` record at seq 1, signed with
/// the seed `[5; 32]` (Ed25519 signatures are deterministic, so the bytes are fixed).
fn checkpoint_fixture(name: &str) -> (String, String) {
    let path = format!(
        "{}/tests/fixtures/ledger/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut lines = text.lines();
    (
        lines.next().unwrap().to_string(),
        lines.next().unwrap().to_string(),
    )
}

#[test]
fn checkpoints_of_both_versions_keep_their_signed_form() {
    use kept_core::ledger::{Checkpoint, check_checkpoint_chain};
    let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let hash = LedgerEntry::chain(&ChainHash::GENESIS, 1, &record(ConsentAction::Given)).hash;
    let v1 = Checkpoint::sign_v1(&key, 1, hash, 1_790_000_000_500);
    let v2 = Checkpoint::sign(&key, 1, hash, 1_790_000_000_600, v1.digest());
    for (name, cp, version) in [("checkpoint-v1.txt", &v1, 1), ("checkpoint-v2.txt", &v2, 2)] {
        let (line, digest) = checkpoint_fixture(name);
        let stored = Checkpoint::from_witness_line(&line).unwrap();
        assert_eq!(
            &stored, cp,
            "{name}: the same checkpoint is signed the same way"
        );
        assert_eq!(stored.version(), version, "{name}");
        assert!(stored.verify_signature(&key.verifying_key()), "{name}");
        assert_eq!(stored.to_witness_line(), line, "{name}: witness line");
        assert_eq!(stored.digest().to_hex(), digest, "{name}: digest");
    }
    // The version 2 checkpoint of the fixtures is chained after the version 1 one.
    assert!(check_checkpoint_chain(&[v1, v2]).is_ok());
}
