//! Consent receipts: one ledger record as a Kantara Consent Receipt v1.1 JSON document, with
//! the record's canonical bytes and chain hash under `kept`, signed with the ledger key. The
//! signature is Ed25519 over the receipt's canonical JSON (object keys sorted, no spaces)
//! without its `signature` member, so the file can be checked anywhere:
//! `kept ledger verify-receipt FILE`. `kept.checkpoint` carries the signed checkpoint that
//! covers the record (its witness line), so the receipt can be matched with a ledger and a
//! witness file later.

use crate::ledger::{self, ChainHash, Checkpoint, CollectionMethod, ConsentRecord, key_id};
use crate::manifest::Manifest;
use crate::rulebook::PurposeClass;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::{Map, Value, json};

/// The Kantara specification version receipts follow.
pub const VERSION: &str = "KI-CR-v1.1.0";
/// The signature algorithm named in receipts.
pub const ALGORITHM: &str = "Ed25519";

/// One ledger entry to make a receipt of.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub seq: u64,
    pub hash: &'a ChainHash,
    pub bytes: &'a [u8],
    pub record: &'a ConsentRecord,
    /// The checkpoint covering the record: the first at or after `seq`.
    pub checkpoint: Option<&'a Checkpoint>,
}

/// The receipt of `entry`, signed by `sign` (the ledger key) whose public half is `key`.
pub fn build(
    manifest: &Manifest,
    entry: Entry<'_>,
    language: &str,
    policy_url: &str,
    key: &VerifyingKey,
    sign: impl FnOnce(&[u8]) -> [u8; 64],
) -> Value {
    let r = entry.record;
    let org = &manifest.organisation;
    let purpose = manifest.purposes.get(&r.purpose);
    let notice = r.notice.as_ref().and_then(|n| manifest.notices.get(&n.id));
    let explicit = !matches!(
        r.method,
        CollectionMethod::ImpliedPurchase | CollectionMethod::ImpliedInquiry
    );
    let mut receipt = json!({
        "version": VERSION,
        "jurisdiction": r.regime,
        "consentTimestamp": r.at.div_euclid(1000),
        "collectionMethod": r.method.as_str(),
        "consentReceiptID": format!("kept-{}-{}", entry.seq, entry.hash.to_hex().get(..16).unwrap_or_default()),
        "publicKey": hex::encode(key.as_bytes()),
        "language": language,
        "piiPrincipalId": format!("subject:{}", r.subject.0),
        "piiControllers": [{
            "piiController": org.name,
            "contact": org.dpo.as_ref().map_or(org.name.as_str(), |d| d.name.as_str()),
            "address": org.postal_address.clone().unwrap_or_default(),
            "email": org.contact_email,
            "phone": "",
        }],
        "policyUrl": policy_url,
        "services": [{
            "service": purpose.map_or(r.purpose.as_str(), |p| p.name.as_str()),
            "purposes": [{
                "purpose": purpose.map_or("", |p| p.description.as_str()),
                "purposeCategory": [r.purpose],
                "consentType": if explicit { "EXPLICIT" } else { "IMPLICIT" },
                "piiCategory": notice.map(|n| n.categories.clone()).unwrap_or_default(),
                "primaryPurpose": true,
                "termination": format!("Change or withdraw at any time: {policy_url}"),
                "thirdPartyDisclosure": PurposeClass::of(&r.purpose) == PurposeClass::Advertising,
            }],
        }],
        "sensitive": false,
        "spiCat": [],
        "kept": {
            "ledger_seq": entry.seq,
            "chain_hash": entry.hash.to_hex(),
            "record": STANDARD.encode(entry.bytes),
            "action": r.action.as_str(),
            "channel": r.channel,
            "topic": r.topic,
            "notice": r.notice.as_ref().map(|n| json!({"id": n.id, "version": n.version, "hash": n.hash})),
            "source": r.source,
            "at": r.at,
            "checkpoint": entry.checkpoint.map(Checkpoint::to_witness_line),
        },
    });
    let signature = sign(&canonical(&receipt));
    if let Value::Object(map) = &mut receipt {
        map.insert(
            "signature".to_owned(),
            json!({
                "alg": ALGORITHM,
                "kid": key_id(key),
                "value": URL_SAFE_NO_PAD.encode(signature),
            }),
        );
    }
    receipt
}

/// Signs with `key` directly (what the ledger service does with its own key): for tools and
/// tests that hold the key itself.
pub fn signer(key: &ed25519_dalek::SigningKey) -> impl FnOnce(&[u8]) -> [u8; 64] + '_ {
    move |message| {
        use ed25519_dalek::Signer as _;
        key.sign(message).to_bytes()
    }
}

/// The canonical bytes of a JSON value: object keys sorted, no insignificant space.
pub fn canonical(value: &Value) -> Vec<u8> {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let mut out = Map::with_capacity(map.len());
                for k in keys {
                    if let Some(v) = map.get(k) {
                        out.insert(k.clone(), sorted(v));
                    }
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_vec(&sorted(value)).unwrap_or_default()
}

/// What a valid receipt says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub key_id: String,
    pub seq: u64,
    pub subject: u32,
    pub purpose: String,
    pub action: String,
    pub at: i64,
    /// The position of the checkpoint the receipt carries, if it carries one (receipts from
    /// before checkpoints were carried do not).
    pub checkpoint: Option<u64>,
}

/// Why a receipt does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("the receipt is not a JSON object")]
    NotAnObject,
    #[error("the receipt has no valid `{0}`")]
    Missing(&'static str),
    #[error("the receipt is signed with `{0}`; only `Ed25519` is known")]
    Algorithm(String),
    #[error("the receipt was signed by key `{found}`, not by the expected key `{expected}`")]
    WrongKey { expected: String, found: String },
    #[error("the signature does not match the receipt: it was changed after signing")]
    Signature,
    #[error("the ledger record inside the receipt does not decode: {0}")]
    Record(String),
    #[error("the receipt's `{0}` does not match the ledger record it carries")]
    Mismatch(&'static str),
    #[error("the receipt's checkpoint {0}")]
    Checkpoint(String),
}

impl ReceiptError {
    pub fn code(&self) -> &'static str {
        match self {
            ReceiptError::NotAnObject => "receipt.not_an_object",
            ReceiptError::Missing(_) => "receipt.missing_field",
            ReceiptError::Algorithm(_) => "receipt.algorithm",
            ReceiptError::WrongKey { .. } => "receipt.wrong_key",
            ReceiptError::Signature => "receipt.signature",
            ReceiptError::Record(_) => "receipt.record",
            ReceiptError::Mismatch(_) => "receipt.mismatch",
            ReceiptError::Checkpoint(_) => "receipt.checkpoint",
        }
    }
}

/// Checks a receipt: its signature under the key it names (which must be `expected`, when
/// given), and that its readable fields say what the signed ledger record says.
pub fn verify(receipt: &Value, expected: Option<&VerifyingKey>) -> Result<Verified, ReceiptError> {
    let Value::Object(map) = receipt else {
        return Err(ReceiptError::NotAnObject);
    };
    let mut unsigned = map.clone();
    let signature = unsigned
        .remove("signature")
        .ok_or(ReceiptError::Missing("signature"))?;
    let alg = signature
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(ReceiptError::Missing("signature.alg"))?;
    if alg != ALGORITHM {
        return Err(ReceiptError::Algorithm(alg.to_owned()));
    }
    let sig: [u8; 64] = signature
        .get("value")
        .and_then(Value::as_str)
        .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
        .and_then(|b| b.try_into().ok())
        .ok_or(ReceiptError::Missing("signature.value"))?;
    let key = map
        .get("publicKey")
        .and_then(Value::as_str)
        .and_then(|k| hex::decode(k).ok())
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
        .ok_or(ReceiptError::Missing("publicKey"))?;
    if let Some(expected) = expected
        && expected != &key
    {
        return Err(ReceiptError::WrongKey {
            expected: key_id(expected),
            found: key_id(&key),
        });
    }
    key.verify_strict(
        &canonical(&Value::Object(unsigned)),
        &Signature::from_bytes(&sig),
    )
    .map_err(|_| ReceiptError::Signature)?;

    let kept = map.get("kept").ok_or(ReceiptError::Missing("kept"))?;
    let bytes = kept
        .get("record")
        .and_then(Value::as_str)
        .and_then(|b| STANDARD.decode(b).ok())
        .ok_or(ReceiptError::Missing("kept.record"))?;
    let record = ledger::decode(&bytes).map_err(|e| ReceiptError::Record(e.to_string()))?;
    let seq = kept
        .get("ledger_seq")
        .and_then(Value::as_u64)
        .ok_or(ReceiptError::Missing("kept.ledger_seq"))?;
    let same = |field: &'static str, ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(ReceiptError::Mismatch(field))
        }
    };
    same(
        "kept.action",
        kept.get("action").and_then(Value::as_str) == Some(record.action.as_str()),
    )?;
    same(
        "collectionMethod",
        map.get("collectionMethod").and_then(Value::as_str) == Some(record.method.as_str()),
    )?;
    same(
        "jurisdiction",
        map.get("jurisdiction").and_then(Value::as_str) == Some(record.regime.as_str()),
    )?;
    same(
        "consentTimestamp",
        map.get("consentTimestamp").and_then(Value::as_i64) == Some(record.at.div_euclid(1000)),
    )?;
    same(
        "piiPrincipalId",
        map.get("piiPrincipalId").and_then(Value::as_str)
            == Some(format!("subject:{}", record.subject.0).as_str()),
    )?;
    let category = map
        .get("services")
        .and_then(|s| s.get(0))
        .and_then(|s| s.get("purposes"))
        .and_then(|p| p.get(0))
        .and_then(|p| p.get("purposeCategory"))
        .and_then(|c| c.get(0))
        .and_then(Value::as_str);
    same(
        "services[0].purposes[0].purposeCategory",
        category == Some(record.purpose.as_str()),
    )?;
    let checkpoint = match kept.get("checkpoint") {
        None | Some(Value::Null) => None,
        Some(line) => {
            let line = line
                .as_str()
                .ok_or(ReceiptError::Missing("kept.checkpoint"))?;
            let cp = Checkpoint::from_witness_line(line)
                .map_err(|e| ReceiptError::Checkpoint(format!("is not one: {e}")))?;
            if !cp.verify_signature(&key) {
                return Err(ReceiptError::Checkpoint(
                    "is not signed by the receipt's key".into(),
                ));
            }
            if cp.seq < seq {
                return Err(ReceiptError::Checkpoint(format!(
                    "at record {} does not cover record {seq}",
                    cp.seq
                )));
            }
            let chain = kept.get("chain_hash").and_then(Value::as_str);
            if cp.seq == seq && chain != Some(cp.hash.to_hex().as_str()) {
                return Err(ReceiptError::Checkpoint(format!(
                    "at record {seq} signs another chain hash than the record's"
                )));
            }
            Some(cp.seq)
        }
    };
    Ok(Verified {
        key_id: key_id(&key),
        seq,
        subject: record.subject.0,
        purpose: record.purpose,
        action: record.action.as_str().to_owned(),
        at: record.at,
        checkpoint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SubjectId;
    use crate::ledger::{ConsentAction, Evidence, LedgerEntry};
    use ed25519_dalek::{Signer, SigningKey};

    fn manifest() -> Manifest {
        crate::manifest::load(&crate::manifest::demo_toml(), "kept.toml")
            .unwrap()
            .manifest
    }

    fn receipt(key: &SigningKey) -> Value {
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
            at: 1_780_000_000_123,
        };
        let entry = LedgerEntry::chain(&ChainHash::GENESIS, 1, &record);
        let checkpoint = Checkpoint::sign(key, 1, entry.hash, 5, ChainHash::GENESIS);
        build(
            &manifest(),
            Entry {
                seq: 1,
                hash: &entry.hash,
                bytes: &entry.bytes,
                record: &record,
                checkpoint: Some(&checkpoint),
            },
            "en",
            "https://shop.example/preferences",
            &key.verifying_key(),
            |m| key.sign(m).to_bytes(),
        )
    }

    #[test]
    fn a_receipt_verifies_and_any_change_breaks_it() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let r = receipt(&key);
        let ok = verify(&r, Some(&key.verifying_key())).unwrap();
        assert_eq!((ok.seq, ok.subject, ok.action.as_str()), (1, 7, "given"));
        assert_eq!(ok.checkpoint, Some(1));

        let mut changed = r.clone();
        changed["services"][0]["purposes"][0]["purposeCategory"][0] = "loyalty.rewards".into();
        assert_eq!(verify(&changed, None), Err(ReceiptError::Signature));

        let other = SigningKey::from_bytes(&[4; 32]);
        assert!(matches!(
            verify(&r, Some(&other.verifying_key())),
            Err(ReceiptError::WrongKey { .. })
        ));
        // Re-signed by someone else with their own key: valid only if you trust that key.
        let mut forged = r.clone();
        forged["publicKey"] = hex::encode(other.verifying_key().as_bytes()).into();
        assert_eq!(verify(&forged, None), Err(ReceiptError::Signature));
    }

    #[test]
    fn the_checkpoint_must_be_the_ledgers_and_cover_the_record() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let other = SigningKey::from_bytes(&[4; 32]);
        let r = receipt(&key);
        let line = r["kept"]["checkpoint"].as_str().unwrap().to_owned();
        let cp = Checkpoint::from_witness_line(&line).unwrap();
        // Each change is re-signed with the receipt's key, so only the checkpoint is wrong.
        let resign = |mut changed: Value| {
            if let Value::Object(map) = &mut changed {
                map.remove("signature");
            }
            let sig = key.sign(&canonical(&changed)).to_bytes();
            changed["signature"] = json!({
                "alg": ALGORITHM, "kid": key_id(&key.verifying_key()),
                "value": URL_SAFE_NO_PAD.encode(sig),
            });
            changed
        };
        let cases = [
            Checkpoint::sign(&other, 1, cp.hash, 5, ChainHash::GENESIS),
            Checkpoint::sign(&key, 1, ChainHash([9; 32]), 5, ChainHash::GENESIS),
        ];
        for bad in cases {
            let mut changed = r.clone();
            changed["kept"]["checkpoint"] = bad.to_witness_line().into();
            assert!(matches!(
                verify(&resign(changed), None),
                Err(ReceiptError::Checkpoint(_))
            ));
        }
        let mut old = r.clone();
        old["kept"].as_object_mut().unwrap().remove("checkpoint");
        assert_eq!(verify(&resign(old), None).unwrap().checkpoint, None);
    }

    #[test]
    fn key_order_and_spacing_do_not_matter() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let r = receipt(&key);
        let pretty = serde_json::to_string_pretty(&r).unwrap();
        let reparsed: Value = serde_json::from_str(&pretty).unwrap();
        assert!(verify(&reparsed, None).is_ok());
    }

    #[test]
    fn a_number_reads_back_as_it_was_signed() {
        // A receipt is signed over the numbers it holds and checked over the numbers read back
        // from its file: a float read back a bit off (serde_json rounds some long ones wrongly
        // unless asked not to) made a just-signed receipt fail. Found by the `receipt` fuzzer.
        let key = SigningKey::from_bytes(&[3; 32]);
        let mut r = receipt(&key);
        if let Value::Object(map) = &mut r {
            map.remove("signature");
        }
        r["kept"]["extension"] = serde_json::from_str(
            "179000000066666666666666666666666666666666666666666666666666666666123",
        )
        .unwrap();
        let signature = key.sign(&canonical(&r)).to_bytes();
        r["signature"] = json!({
            "alg": ALGORITHM, "kid": key_id(&key.verifying_key()),
            "value": URL_SAFE_NO_PAD.encode(signature),
        });
        let reread: Value = serde_json::from_str(&r.to_string()).unwrap();
        assert_eq!(reread["kept"]["extension"], r["kept"]["extension"]);
        assert!(verify(&reread, Some(&key.verifying_key())).is_ok());
    }
}
