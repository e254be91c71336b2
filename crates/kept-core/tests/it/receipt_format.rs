//! Golden fixture of a consent receipt as the preference center issues it, with the checkpoint
//! covering its record: a change to the receipt's ledger part or to its fields fails here, and
//! a receipt issued today must keep verifying.

use ed25519_dalek::SigningKey;
use kept_core::SubjectId;
use kept_core::ledger::{
    ChainHash, Checkpoint, CollectionMethod, ConsentAction, ConsentRecord, Evidence, LedgerEntry,
};
use kept_core::receipt;

const FIXTURE: &str = "tests/fixtures/receipt/kantara-1.1-checkpoint-v2.json";

fn build() -> serde_json::Value {
    let manifest = kept_core::manifest::load(&kept_core::manifest::demo_toml(), "kept.toml")
        .unwrap()
        .manifest;
    let key = SigningKey::from_bytes(&[21; 32]);
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
    let covering = Checkpoint::sign(
        &key,
        3,
        ChainHash([5; 32]),
        1_790_000_000_200,
        ChainHash([6; 32]),
    );
    receipt::build(
        &manifest,
        receipt::Entry {
            seq: 2,
            hash: &entry.hash,
            bytes: &entry.bytes,
            record: &record,
            checkpoint: Some(&covering),
        },
        "en",
        "https://shop.example/preferences",
        &key.verifying_key(),
        receipt::signer(&key),
    )
}

#[test]
fn a_receipt_keeps_its_layout_and_verifies() {
    let path = format!("{}/{FIXTURE}", env!("CARGO_MANIFEST_DIR"));
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let built = build();
    // The ledger's part exactly; the rest by its fields (their text comes from the manifest).
    assert_eq!(
        built["kept"], stored["kept"],
        "the receipt's ledger part changed"
    );
    let fields = |v: &serde_json::Value| {
        v.as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<String>>()
    };
    assert_eq!(
        fields(&built),
        fields(&stored),
        "the receipt's fields changed"
    );
    let key = SigningKey::from_bytes(&[21; 32]).verifying_key();
    let verified = receipt::verify(&stored, Some(&key)).unwrap();
    assert_eq!((verified.seq, verified.checkpoint), (2, Some(3)));
}
