//! The consent ledger's records, their canonical byte encoding, the BLAKE3 hash chain, the
//! Ed25519-signed checkpoints chained to one another, and their witness-file line. Storage keeps
//! the bytes exactly as written; everything else (columns, indexes, the in-memory state) is
//! derived from them and can be checked against them.
//!
//! INVARIANT: `encode(decode(b)) == b` for every accepted `b`, and `decode` rejects anything
//! `encode` cannot produce, so one record has exactly one encoding. `decode` asserts the round
//! trip in debug builds; `decoded_columns` (the verifier's path, which builds no record) relies
//! on sharing `decode_view` with it; the property test `decoding_never_panics` and the fuzz
//! target `ledger_record` check both.

use crate::{SubjectId, UnixMillis};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The encoding's version byte; bump it when the layout changes, and keep decoding old ones.
///
/// - 1: the first layout.
/// - 2: the same layout; the action may also be `refused` (tag 6).
///
/// A record is written in the oldest version that can hold it (`version_of`), so a record has
/// one encoding, records that version 1 could hold keep their bytes, and version 1 bytes stored
/// before version 2 existed decode and verify unchanged.
pub const ENCODING_VERSION: u8 = 2;

/// The oldest encoding version `decode` still reads.
pub const OLDEST_ENCODING_VERSION: u8 = 1;

/// What a consent record says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ConsentAction {
    /// Consent given (opt-in), or a subscription to a topic.
    Given,
    /// Consent withdrawn, or a topic unsubscribed.
    Withdrawn,
    /// An opt-out (e.g. of sale or sharing, or of marketing in an opt-out regime).
    OptedOut,
    /// An objection (GDPR Art. 21), e.g. to direct marketing.
    Objected,
    /// The first step of a double opt-in: asked for, not yet confirmed; it does not count.
    Pending,
    /// Asked and declined: a box left unticked, a banner's "reject". Never given, so never
    /// withdrawn (ISO/IEC TS 27560 and W3C DPV keep the two apart). Denies like a withdrawal.
    Refused,
}

impl ConsentAction {
    pub const ALL: [ConsentAction; 6] = [
        ConsentAction::Given,
        ConsentAction::Withdrawn,
        ConsentAction::OptedOut,
        ConsentAction::Objected,
        ConsentAction::Pending,
        ConsentAction::Refused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConsentAction::Given => "given",
            ConsentAction::Withdrawn => "withdrawn",
            ConsentAction::OptedOut => "opted_out",
            ConsentAction::Objected => "objected",
            ConsentAction::Pending => "pending",
            ConsentAction::Refused => "refused",
        }
    }

    fn tag(self) -> u8 {
        match self {
            ConsentAction::Given => 1,
            ConsentAction::Withdrawn => 2,
            ConsentAction::OptedOut => 3,
            ConsentAction::Objected => 4,
            ConsentAction::Pending => 5,
            ConsentAction::Refused => 6,
        }
    }

    /// The first encoding version that can hold this action.
    fn since(self) -> u8 {
        match self {
            ConsentAction::Refused => 2,
            _ => 1,
        }
    }

    fn from_tag(tag: u8, version: u8) -> Option<Self> {
        ConsentAction::ALL
            .into_iter()
            .find(|a| a.tag() == tag && a.since() <= version)
    }

    /// Whether this is a "no": withdrawn, refused, opted out or objected.
    pub fn is_negative(self) -> bool {
        matches!(
            self,
            ConsentAction::Withdrawn
                | ConsentAction::Refused
                | ConsentAction::OptedOut
                | ConsentAction::Objected
        )
    }

    pub fn parse(s: &str) -> Option<Self> {
        ConsentAction::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// How the consent was collected (ISO/IEC TS 27560 "collection method").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CollectionMethod {
    /// A form with an unticked box or a toggle.
    WebForm,
    /// A consent banner choice.
    Banner,
    /// Through the API, on behalf of the company's own UI.
    Api,
    /// Confirmed by the link of a double opt-in email.
    DoubleOptIn,
    /// Written consent with a disclosure (TCPA "prior express written consent").
    Written,
    /// Implied by a purchase (CASL 2 years, ePrivacy soft opt-in).
    ImpliedPurchase,
    /// Implied by an inquiry (CASL 6 months).
    ImpliedInquiry,
    /// A Global Privacy Control signal.
    Gpc,
    /// A reply such as `STOP`, or a one-click unsubscribe.
    Reply,
    /// Imported from another system.
    Import,
}

impl CollectionMethod {
    pub const ALL: [CollectionMethod; 10] = [
        CollectionMethod::WebForm,
        CollectionMethod::Banner,
        CollectionMethod::Api,
        CollectionMethod::DoubleOptIn,
        CollectionMethod::Written,
        CollectionMethod::ImpliedPurchase,
        CollectionMethod::ImpliedInquiry,
        CollectionMethod::Gpc,
        CollectionMethod::Reply,
        CollectionMethod::Import,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CollectionMethod::WebForm => "web_form",
            CollectionMethod::Banner => "banner",
            CollectionMethod::Api => "api",
            CollectionMethod::DoubleOptIn => "double_opt_in",
            CollectionMethod::Written => "written",
            CollectionMethod::ImpliedPurchase => "implied_purchase",
            CollectionMethod::ImpliedInquiry => "implied_inquiry",
            CollectionMethod::Gpc => "gpc",
            CollectionMethod::Reply => "reply",
            CollectionMethod::Import => "import",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        CollectionMethod::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// The notice a record was given under: its id, version and the BLAKE3 hash of its text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NoticeRef {
    pub id: String,
    pub version: u32,
    /// Lowercase hex BLAKE3 of the notice's canonical text (see `manifest`).
    pub hash: String,
}

/// What shows the record is genuine. Personal data only ever as a keyed hash.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Evidence {
    /// Keyed hash (hex) of the client IP address.
    pub ip_hash: Option<String>,
    pub user_agent: Option<String>,
    /// Hash (hex) of the exact disclosure text shown (e.g. the TCPA disclosure).
    pub text_hash: Option<String>,
    /// Free reference: a request id, a message id, a form submission id.
    pub reference: Option<String>,
}

/// One entry of the consent ledger, before it is chained.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConsentRecord {
    pub subject: SubjectId,
    /// A purpose key from the manifest (`marketing.communications`).
    pub purpose: String,
    pub channel: Option<String>,
    pub topic: Option<String>,
    pub action: ConsentAction,
    pub notice: Option<NoticeRef>,
    /// The regime key that applied when the record was made (`gdpr`, `ccpa`, …).
    pub regime: String,
    /// Where the record came from: `preference_center`, `collection`, `api`, `demo`, …
    pub source: String,
    pub method: CollectionMethod,
    pub evidence: Evidence,
    pub at: UnixMillis,
}

/// A decoding failure: the bytes are not a record `encode` could have produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unsupported ledger encoding version {0}")]
    Version(u8),
    #[error("record ends early while reading {0}")]
    Truncated(&'static str),
    #[error("invalid {0} in record")]
    Invalid(&'static str),
    #[error("{0} trailing bytes after the record")]
    Trailing(usize),
}

/// The oldest encoding version that can hold `record`: the one `encode` writes.
pub fn version_of(record: &ConsentRecord) -> u8 {
    record.action.since()
}

/// The canonical bytes of a record.
pub fn encode(record: &ConsentRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    out.push(version_of(record));
    out.extend_from_slice(&record.subject.0.to_be_bytes());
    put_str(&mut out, &record.purpose);
    put_opt_str(&mut out, record.channel.as_deref());
    put_opt_str(&mut out, record.topic.as_deref());
    out.push(record.action.tag());
    match &record.notice {
        None => out.push(0),
        Some(n) => {
            out.push(1);
            put_str(&mut out, &n.id);
            out.extend_from_slice(&n.version.to_be_bytes());
            put_str(&mut out, &n.hash);
        }
    }
    put_str(&mut out, &record.regime);
    put_str(&mut out, &record.source);
    put_str(&mut out, record.method.as_str());
    put_opt_str(&mut out, record.evidence.ip_hash.as_deref());
    put_opt_str(&mut out, record.evidence.user_agent.as_deref());
    put_opt_str(&mut out, record.evidence.text_hash.as_deref());
    put_opt_str(&mut out, record.evidence.reference.as_deref());
    out.extend_from_slice(&record.at.to_be_bytes());
    out
}

/// Decodes canonical bytes; rejects anything that is not exactly what `encode` writes.
pub fn decode(bytes: &[u8]) -> Result<ConsentRecord, DecodeError> {
    let record = decode_view(bytes).map(RecordView::into_record)?;
    debug_assert!(
        encode(&record) == bytes,
        "accepted ledger bytes that `encode` would not write"
    );
    Ok(record)
}

/// The values a ledger row also stores in columns of its own (for lookups): whatever a store
/// keeps beside the bytes and the hash must equal what the bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Columns {
    pub subject: SubjectId,
    pub at: UnixMillis,
}

/// The column values of canonical bytes, checking that they decode without building the record
/// (verification runs this over every record of the ledger).
pub fn decoded_columns(bytes: &[u8]) -> Result<Columns, DecodeError> {
    decode_view(bytes).map(|view| Columns {
        subject: view.subject,
        at: view.at,
    })
}

/// A record read in place: its text fields borrow from the bytes. The one reading of the
/// layout, shared by `decode` and `decoded_columns`.
struct RecordView<'a> {
    subject: SubjectId,
    purpose: &'a str,
    channel: Option<&'a str>,
    topic: Option<&'a str>,
    action: ConsentAction,
    notice: Option<(&'a str, u32, &'a str)>,
    regime: &'a str,
    source: &'a str,
    method: CollectionMethod,
    evidence: [Option<&'a str>; 4],
    at: UnixMillis,
}

fn decode_view(bytes: &[u8]) -> Result<RecordView<'_>, DecodeError> {
    let mut r = Reader { rest: bytes };
    let version = r.u8("version")?;
    if !(OLDEST_ENCODING_VERSION..=ENCODING_VERSION).contains(&version) {
        return Err(DecodeError::Version(version));
    }
    let subject = SubjectId(r.u32("subject")?);
    let purpose = r.str("purpose")?;
    let channel = r.opt_str("channel")?;
    let topic = r.opt_str("topic")?;
    let action =
        ConsentAction::from_tag(r.u8("action")?, version).ok_or(DecodeError::Invalid("action"))?;
    let notice = match r.u8("notice")? {
        0 => None,
        1 => Some((
            r.str("notice id")?,
            r.u32("notice version")?,
            r.str("notice hash")?,
        )),
        _ => return Err(DecodeError::Invalid("notice tag")),
    };
    let regime = r.str("regime")?;
    let source = r.str("source")?;
    let method = CollectionMethod::parse(r.str("method")?).ok_or(DecodeError::Invalid("method"))?;
    let evidence = [
        r.opt_str("ip hash")?,
        r.opt_str("user agent")?,
        r.opt_str("text hash")?,
        r.opt_str("reference")?,
    ];
    let at = r.i64("time")?;
    if !r.rest.is_empty() {
        return Err(DecodeError::Trailing(r.rest.len()));
    }
    // INVARIANT: one encoding per record, so a newer version than the record needs is refused.
    // Checked here in every build (an error, not a `debug_assert!`): stored bytes are input.
    if version != action.since() {
        return Err(DecodeError::Invalid("version"));
    }
    Ok(RecordView {
        subject,
        purpose,
        channel,
        topic,
        action,
        notice,
        regime,
        source,
        method,
        evidence,
        at,
    })
}

impl RecordView<'_> {
    fn into_record(self) -> ConsentRecord {
        let owned = |s: Option<&str>| s.map(str::to_string);
        let [ip_hash, user_agent, text_hash, reference] = self.evidence;
        ConsentRecord {
            subject: self.subject,
            purpose: self.purpose.to_string(),
            channel: owned(self.channel),
            topic: owned(self.topic),
            action: self.action,
            notice: self.notice.map(|(id, version, hash)| NoticeRef {
                id: id.to_string(),
                version,
                hash: hash.to_string(),
            }),
            regime: self.regime.to_string(),
            source: self.source.to_string(),
            method: self.method,
            evidence: Evidence {
                ip_hash: owned(ip_hash),
                user_agent: owned(user_agent),
                text_hash: owned(text_hash),
                reference: owned(reference),
            },
            at: self.at,
        }
    }
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    // Lengths are u32: no field of a record comes near 4 GiB (requests are size-limited).
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes().get(..len as usize).unwrap_or_default());
}

pub(crate) fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

pub(crate) struct Reader<'a> {
    pub(crate) rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?.first().copied().unwrap_or_default())
    }
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes(
            b.try_into().map_err(|_| DecodeError::Truncated(what))?,
        ))
    }
    pub(crate) fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        let b = self.take(8, what)?;
        Ok(i64::from_be_bytes(
            b.try_into().map_err(|_| DecodeError::Truncated(what))?,
        ))
    }
    pub(crate) fn str(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        let len = self.u32(what)? as usize;
        let b = self.take(len, what)?;
        std::str::from_utf8(b).map_err(|_| DecodeError::Invalid(what))
    }
    pub(crate) fn opt_str(&mut self, what: &'static str) -> Result<Option<&'a str>, DecodeError> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => Ok(Some(self.str(what)?)),
            _ => Err(DecodeError::Invalid(what)),
        }
    }
}

/// A BLAKE3 digest in the chain.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ChainHash(pub [u8; 32]);

impl ChainHash {
    /// The hash before the first record.
    pub const GENESIS: ChainHash = ChainHash([0; 32]);

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_slice(bytes: &[u8]) -> Option<ChainHash> {
        bytes.try_into().ok().map(ChainHash)
    }
}

impl fmt::Debug for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainHash({})", self.to_hex())
    }
}

/// `hash(n) = BLAKE3("kept-ledger-v1" ‖ seq(n) ‖ hash(n-1) ‖ bytes(n))`. The sequence number is
/// inside the hash so that moving a record to another position breaks the chain even if its
/// neighbours were rewritten consistently.
pub fn chain_hash(prev: &ChainHash, seq: u64, bytes: &[u8]) -> ChainHash {
    chain_hash_in(LEDGER_CHAIN, prev, seq, bytes)
}

/// The consent ledger's chain domain.
pub const LEDGER_CHAIN: &[u8] = b"kept-ledger-v1";

/// [`chain_hash`] for a chain of its own: `domain` keeps the hashes of one log from ever
/// standing for another's (the requests log chains under `kept-requests-v1`).
pub fn chain_hash_in(domain: &[u8], prev: &ChainHash, seq: u64, bytes: &[u8]) -> ChainHash {
    let mut h = blake3::Hasher::new();
    h.update(domain);
    h.update(&seq.to_be_bytes());
    h.update(&prev.0);
    h.update(bytes);
    ChainHash(*h.finalize().as_bytes())
}

/// A record as stored: its position, its bytes exactly as written and its chain hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// 1-based position in the ledger; gapless.
    pub seq: u64,
    pub bytes: Vec<u8>,
    pub hash: ChainHash,
}

impl LedgerEntry {
    /// Chains `record` after `prev` at position `seq`.
    pub fn chain(prev: &ChainHash, seq: u64, record: &ConsentRecord) -> LedgerEntry {
        let bytes = encode(record);
        let hash = chain_hash(prev, seq, &bytes);
        LedgerEntry { seq, bytes, hash }
    }
}

/// A signed statement that the ledger had `hash` at position `seq` at time `at`.
///
/// Version 2 (every checkpoint signed now) also signs `prev`, the digest of the checkpoint
/// before it (`ChainHash::GENESIS` for the first), so the checkpoints form a chain of their own
/// and deleting one leaves a gap `verify` names. Version 1 (`prev` is `None`) predates that
/// chain; such checkpoints, stored by older releases, still verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: ChainHash,
    pub at: UnixMillis,
    /// Hex of the first 8 bytes of BLAKE3(public key): which key signed.
    pub key_id: String,
    pub signature: [u8; 64],
    /// The digest of the previous checkpoint; `None` for a version 1 checkpoint.
    pub prev: Option<ChainHash>,
}

/// The domain of each checkpoint version's signed message (and of its witness line).
const CHECKPOINT_V1: &str = "kept-ledger-checkpoint-v1";
const CHECKPOINT_V2: &str = "kept-ledger-checkpoint-v2";

impl Checkpoint {
    /// The signed message: `v1 = "kept-ledger-checkpoint-v1" ‖ seq ‖ hash ‖ at`,
    /// `v2 = "kept-ledger-checkpoint-v2" ‖ seq ‖ hash ‖ at ‖ prev` (integers big-endian).
    fn message_of(seq: u64, hash: &ChainHash, at: UnixMillis, prev: Option<&ChainHash>) -> Vec<u8> {
        let mut m = Vec::with_capacity(100);
        m.extend_from_slice(match prev {
            None => CHECKPOINT_V1.as_bytes(),
            Some(_) => CHECKPOINT_V2.as_bytes(),
        });
        m.extend_from_slice(&seq.to_be_bytes());
        m.extend_from_slice(&hash.0);
        m.extend_from_slice(&at.to_be_bytes());
        if let Some(prev) = prev {
            m.extend_from_slice(&prev.0);
        }
        m
    }

    fn message(&self) -> Vec<u8> {
        Checkpoint::message_of(self.seq, &self.hash, self.at, self.prev.as_ref())
    }

    /// Signs a version 2 checkpoint of `(seq, hash)` chained after the checkpoint whose
    /// [`Checkpoint::digest`] is `prev` (`ChainHash::GENESIS` when it is the first).
    pub fn sign(
        key: &SigningKey,
        seq: u64,
        hash: ChainHash,
        at: UnixMillis,
        prev: ChainHash,
    ) -> Checkpoint {
        let signature = key
            .sign(&Checkpoint::message_of(seq, &hash, at, Some(&prev)))
            .to_bytes();
        Checkpoint {
            seq,
            hash,
            at,
            key_id: key_id(&key.verifying_key()),
            signature,
            prev: Some(prev),
        }
    }

    /// Signs a version 1 checkpoint, as releases before the chain of checkpoints did. Kept
    /// never writes one any more: this exists for fixtures and for tests of old ledgers.
    pub fn sign_v1(key: &SigningKey, seq: u64, hash: ChainHash, at: UnixMillis) -> Checkpoint {
        let signature = key
            .sign(&Checkpoint::message_of(seq, &hash, at, None))
            .to_bytes();
        Checkpoint {
            seq,
            hash,
            at,
            key_id: key_id(&key.verifying_key()),
            signature,
            prev: None,
        }
    }

    /// 1 or 2.
    pub fn version(&self) -> u8 {
        if self.prev.is_some() { 2 } else { 1 }
    }

    pub fn verify_signature(&self, key: &VerifyingKey) -> bool {
        let sig = Signature::from_bytes(&self.signature);
        key.verify(&self.message(), &sig).is_ok()
    }

    /// What the next checkpoint signs as its `prev`: BLAKE3 of this one's signed message, so
    /// it covers the position, the hash, the time and (version 2) this checkpoint's own `prev`.
    pub fn digest(&self) -> ChainHash {
        ChainHash(*blake3::hash(&self.message()).as_bytes())
    }

    /// The checkpoint as one line of a witness file (no newline):
    ///
    /// `kept-ledger-checkpoint-v2 <seq> <hash> <at> <prev> <key id> <signature>`
    ///
    /// decimal `seq` and `at` (Unix milliseconds), lowercase hex for the rest; a version 1
    /// checkpoint has `-` for `prev`. The line holds everything needed to check the signature.
    pub fn to_witness_line(&self) -> String {
        let version = match self.prev {
            None => CHECKPOINT_V1,
            Some(_) => CHECKPOINT_V2,
        };
        format!(
            "{version} {} {} {} {} {} {}",
            self.seq,
            self.hash.to_hex(),
            self.at,
            self.prev.map_or_else(|| "-".to_string(), |p| p.to_hex()),
            self.key_id,
            hex::encode(self.signature),
        )
    }

    /// Reads a line written by [`Checkpoint::to_witness_line`]. The signature is not checked.
    pub fn from_witness_line(line: &str) -> Result<Checkpoint, WitnessLineError> {
        let fields: Vec<&str> = line.trim_end_matches(['\r', '\n']).split(' ').collect();
        let [version, seq, hash, at, prev, key_id, signature] = fields.as_slice() else {
            return Err(WitnessLineError::Fields(fields.len()));
        };
        let hash32 = |text: &str, what: &'static str| {
            hex::decode(text)
                .ok()
                .and_then(|b| ChainHash::from_slice(&b))
                .ok_or(WitnessLineError::Invalid(what))
        };
        let prev = match (*version, *prev) {
            (CHECKPOINT_V1, "-") => None,
            (CHECKPOINT_V2, prev) => Some(hash32(prev, "prev")?),
            (CHECKPOINT_V1, _) => return Err(WitnessLineError::Invalid("prev")),
            _ => return Err(WitnessLineError::Invalid("version")),
        };
        let key_ok = key_id.len() == 16
            && key_id
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !key_ok {
            return Err(WitnessLineError::Invalid("key id"));
        }
        Ok(Checkpoint {
            seq: seq
                .parse()
                .ok()
                .filter(|s| *s > 0)
                .ok_or(WitnessLineError::Invalid("seq"))?,
            hash: hash32(hash, "hash")?,
            at: at.parse().map_err(|_| WitnessLineError::Invalid("at"))?,
            key_id: (*key_id).to_string(),
            signature: hex::decode(signature)
                .ok()
                .and_then(|b| <[u8; 64]>::try_from(b).ok())
                .ok_or(WitnessLineError::Invalid("signature"))?,
            prev,
        })
    }
}

/// A witness-file line that is not one [`Checkpoint::to_witness_line`] writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WitnessLineError {
    #[error("expected 7 space-separated fields, found {0}")]
    Fields(usize),
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// Checks that checkpoints (sorted by `seq`, one per position) chain: each version 2
/// checkpoint's `prev` is the digest of the one before it, or `GENESIS` for the first. A
/// deleted checkpoint shows as a gap at the next one; a deleted last checkpoint leaves no gap
/// (the witness and the grace rule of `verify` are there for that).
pub fn check_checkpoint_chain(sorted: &[Checkpoint]) -> Result<(), VerifyError> {
    let mut before: Option<&Checkpoint> = None;
    for cp in sorted {
        if let Some(prev) = cp.prev {
            let expected = before.map_or(ChainHash::GENESIS, Checkpoint::digest);
            if prev != expected {
                return Err(VerifyError::CheckpointGap {
                    seq: cp.seq,
                    after: before.map_or(0, |b| b.seq),
                });
            }
        } else if before.is_some_and(|b| b.prev.is_some()) {
            // Nothing writes a version 1 checkpoint after a version 2 one.
            return Err(VerifyError::CheckpointGap {
                seq: cp.seq,
                after: before.map_or(0, |b| b.seq),
            });
        }
        before = Some(cp);
    }
    Ok(())
}

/// A short, stable name for a verifying key.
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = blake3::hash(key.as_bytes());
    hex::encode(digest.as_bytes().get(..8).unwrap_or_default())
}

/// What `verify` found wrong first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("record {found} is out of place: expected record {expected}")]
    Sequence { expected: u64, found: u64 },
    #[error("record {seq} does not decode: {error}")]
    Decode { seq: u64, error: DecodeError },
    #[error(
        "record {seq} has been altered: its hash does not follow from its bytes and the record before it"
    )]
    Hash { seq: u64 },
    #[error("record {seq}'s columns disagree with its stored bytes ({field})")]
    Column { seq: u64, field: &'static str },
    #[error("checkpoint at record {seq} is not signed by the ledger key")]
    CheckpointSignature { seq: u64 },
    #[error(
        "checkpoint at record {seq} does not match the ledger: a record up to {seq} was changed, removed or reordered"
    )]
    CheckpointMismatch { seq: u64 },
    #[error(
        "checkpoint at record {seq} is beyond the end of the ledger ({len} records): records were deleted"
    )]
    CheckpointBeyondEnd { seq: u64, len: u64 },
    #[error(
        "checkpoint at record {seq} does not follow the checkpoint at record {after}: a checkpoint between them was deleted"
    )]
    CheckpointGap { seq: u64, after: u64 },
}

impl VerifyError {
    /// Stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::Sequence { .. } => "ledger.sequence",
            VerifyError::Decode { .. } => "ledger.decode",
            VerifyError::Hash { .. } => "ledger.hash",
            VerifyError::Column { .. } => "ledger.column",
            VerifyError::CheckpointSignature { .. } => "ledger.checkpoint_signature",
            VerifyError::CheckpointMismatch { .. } => "ledger.checkpoint_mismatch",
            VerifyError::CheckpointBeyondEnd { .. } => "ledger.checkpoint_beyond_end",
            VerifyError::CheckpointGap { .. } => "ledger.checkpoint_gap",
        }
    }

    /// The first record found bad: for a gap or a cut end, the first missing one; for a
    /// checkpoint that does not match or is not signed, the record it signs.
    pub fn seq(&self) -> u64 {
        match self {
            VerifyError::Sequence { expected, .. } => *expected,
            VerifyError::CheckpointBeyondEnd { len, .. } => len + 1,
            VerifyError::Decode { seq, .. }
            | VerifyError::Hash { seq }
            | VerifyError::Column { seq, .. }
            | VerifyError::CheckpointSignature { seq }
            | VerifyError::CheckpointMismatch { seq }
            | VerifyError::CheckpointGap { seq, .. } => *seq,
        }
    }
}

/// The records after the last checkpoint: no signature covers them yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uncovered {
    pub first_seq: u64,
    pub count: u64,
    /// The earliest and the latest `at` among them.
    pub oldest: UnixMillis,
    pub newest: UnixMillis,
}

/// Reads the columns a log's record also stores, checking that its bytes decode.
pub type ColumnsOf = fn(&[u8]) -> Result<Columns, DecodeError>;

/// Streaming verifier: feed it stored rows in `seq` order, then the checkpoints.
#[derive(Debug)]
pub struct ChainVerifier {
    /// The chain's domain (`LEDGER_CHAIN` for the consent ledger).
    domain: &'static [u8],
    /// How a record's bytes are decoded.
    columns_of: ColumnsOf,
    prev: ChainHash,
    next_seq: u64,
    /// Hashes at checkpointed positions, filled as rows pass by.
    wanted: std::collections::BTreeMap<u64, Option<ChainHash>>,
    /// The last position a checkpoint covers.
    covered_to: u64,
    uncovered: Option<Uncovered>,
}

impl ChainVerifier {
    /// `checkpoint_seqs`: the positions whose hashes the checkpoints will be compared with.
    pub fn new(checkpoint_seqs: impl IntoIterator<Item = u64>) -> ChainVerifier {
        ChainVerifier::for_chain(LEDGER_CHAIN, decoded_columns, checkpoint_seqs)
    }

    /// A verifier of another log built on the same chain and checkpoints: its chain `domain`
    /// and its records' decoder.
    pub fn for_chain(
        domain: &'static [u8],
        columns_of: ColumnsOf,
        checkpoint_seqs: impl IntoIterator<Item = u64>,
    ) -> ChainVerifier {
        let wanted: std::collections::BTreeMap<u64, Option<ChainHash>> =
            checkpoint_seqs.into_iter().map(|s| (s, None)).collect();
        ChainVerifier {
            domain,
            columns_of,
            prev: ChainHash::GENESIS,
            next_seq: 1,
            covered_to: wanted.keys().next_back().copied().unwrap_or(0),
            wanted,
            uncovered: None,
        }
    }

    /// Checks the next stored row. `columns` are the row's own columns, if it has them, which
    /// must agree with the bytes.
    pub fn push(
        &mut self,
        seq: u64,
        bytes: &[u8],
        stored_hash: &ChainHash,
        columns: Option<Columns>,
    ) -> Result<(), VerifyError> {
        if seq != self.next_seq {
            return Err(VerifyError::Sequence {
                expected: self.next_seq,
                found: seq,
            });
        }
        let computed = chain_hash_in(self.domain, &self.prev, seq, bytes);
        if &computed != stored_hash {
            return Err(VerifyError::Hash { seq });
        }
        let decoded =
            (self.columns_of)(bytes).map_err(|error| VerifyError::Decode { seq, error })?;
        if let Some(stored) = columns {
            let field = if stored.subject != decoded.subject {
                Some("subject")
            } else if stored.at != decoded.at {
                Some("at")
            } else {
                None
            };
            if let Some(field) = field {
                return Err(VerifyError::Column { seq, field });
            }
        }
        if let Some(slot) = self.wanted.get_mut(&seq) {
            *slot = Some(computed);
        }
        if seq > self.covered_to {
            let u = self.uncovered.get_or_insert(Uncovered {
                first_seq: seq,
                count: 0,
                oldest: decoded.at,
                newest: decoded.at,
            });
            u.count += 1;
            u.oldest = u.oldest.min(decoded.at);
            u.newest = u.newest.max(decoded.at);
        }
        self.prev = computed;
        self.next_seq += 1;
        Ok(())
    }

    /// Number of rows verified so far.
    pub fn len(&self) -> u64 {
        self.next_seq - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The hash of the last verified row.
    pub fn tip(&self) -> ChainHash {
        self.prev
    }

    /// The rows pushed so far that lie beyond every checkpoint position given to `new`.
    pub fn uncovered(&self) -> Option<Uncovered> {
        self.uncovered
    }

    /// Checks the checkpoints (in any order) once every row has been pushed.
    pub fn finish(
        &self,
        checkpoints: &[Checkpoint],
        key: &VerifyingKey,
    ) -> Result<(), VerifyError> {
        let mut sorted: Vec<&Checkpoint> = checkpoints.iter().collect();
        sorted.sort_by_key(|c| c.seq);
        for cp in sorted {
            if !cp.verify_signature(key) {
                return Err(VerifyError::CheckpointSignature { seq: cp.seq });
            }
            match self.wanted.get(&cp.seq).copied().flatten() {
                Some(h) if h == cp.hash => {}
                Some(_) => return Err(VerifyError::CheckpointMismatch { seq: cp.seq }),
                None => {
                    return Err(VerifyError::CheckpointBeyondEnd {
                        seq: cp.seq,
                        len: self.len(),
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(subject: u32) -> ConsentRecord {
        ConsentRecord {
            subject: SubjectId(subject),
            purpose: "marketing.communications".into(),
            channel: Some("sms".into()),
            topic: None,
            action: ConsentAction::Given,
            notice: Some(NoticeRef {
                id: "sms_marketing".into(),
                version: 2,
                hash: "ab".repeat(32),
            }),
            regime: "us".into(),
            source: "preference_center".into(),
            method: CollectionMethod::Written,
            evidence: Evidence {
                ip_hash: Some("cd".repeat(32)),
                user_agent: Some("Mozilla/5.0".into()),
                text_hash: None,
                reference: None,
            },
            at: 1_790_000_000_000,
        }
    }

    fn opt_text() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(".{0,20}")
    }

    prop_compose! {
        fn any_record()(
            subject in any::<u32>(), purpose in ".{0,30}", channel in opt_text(), topic in opt_text(),
            action in proptest::sample::select(ConsentAction::ALL.to_vec()),
            method in proptest::sample::select(CollectionMethod::ALL.to_vec()),
            notice in proptest::option::of((".{0,10}", any::<u32>(), "[0-9a-f]{64}")),
            regime in "[a-z_]{2,10}", source in ".{0,12}",
            ip in opt_text(), ua in opt_text(), text in opt_text(), reference in opt_text(),
            at in any::<i64>(),
        ) -> ConsentRecord {
            ConsentRecord {
                subject: SubjectId(subject), purpose, channel, topic, action,
                notice: notice.map(|(id, version, hash)| NoticeRef { id, version, hash }),
                regime, source, method,
                evidence: Evidence { ip_hash: ip, user_agent: ua, text_hash: text, reference },
                at,
            }
        }
    }

    proptest! {
        #[test]
        fn encoding_round_trips(record in any_record()) {
            let bytes = encode(&record);
            prop_assert_eq!(decode(&bytes), Ok(record.clone()));
            prop_assert_eq!(encode(&decode(&bytes).unwrap()), bytes);
        }

        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(record) = decode(&bytes) {
                prop_assert_eq!(encode(&record), bytes.clone());
            }
            prop_assert_eq!(
                decoded_columns(&bytes).ok(),
                decode(&bytes).ok().map(|r| Columns { subject: r.subject, at: r.at })
            );
        }
    }

    #[test]
    fn decoding_rejects_trailing_and_truncated_bytes() {
        let mut bytes = encode(&sample(7));
        bytes.push(0);
        assert_eq!(decode(&bytes), Err(DecodeError::Trailing(1)));
        bytes.truncate(bytes.len() - 3);
        assert!(matches!(decode(&bytes), Err(DecodeError::Truncated(_))));
    }

    fn chain(n: u32) -> Vec<LedgerEntry> {
        let mut prev = ChainHash::GENESIS;
        (1..=n)
            .map(|i| {
                let e = LedgerEntry::chain(&prev, u64::from(i), &sample(i));
                prev = e.hash;
                e
            })
            .collect()
    }

    fn verify(
        entries: &[LedgerEntry],
        cps: &[Checkpoint],
        key: &VerifyingKey,
    ) -> Result<(), VerifyError> {
        let mut v = ChainVerifier::new(cps.iter().map(|c| c.seq));
        for e in entries {
            v.push(e.seq, &e.bytes, &e.hash, None)?;
        }
        v.finish(cps, key)
    }

    #[test]
    fn verifier_names_the_first_bad_record() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let entries = chain(10);
        let cps = vec![Checkpoint::sign(
            &key,
            10,
            entries[9].hash,
            0,
            ChainHash::GENESIS,
        )];
        assert_eq!(verify(&entries, &cps, &key.verifying_key()), Ok(()));

        let mut edited = entries.clone();
        edited[4].bytes = encode(&ConsentRecord {
            action: ConsentAction::Withdrawn,
            ..sample(5)
        });
        assert_eq!(
            verify(&edited, &cps, &key.verifying_key()),
            Err(VerifyError::Hash { seq: 5 })
        );

        let mut deleted = entries.clone();
        deleted.remove(3);
        assert_eq!(
            verify(&deleted, &cps, &key.verifying_key()),
            Err(VerifyError::Sequence {
                expected: 4,
                found: 5
            })
        );

        let truncated = &entries[..8];
        assert_eq!(
            verify(truncated, &cps, &key.verifying_key()),
            Err(VerifyError::CheckpointBeyondEnd { seq: 10, len: 8 })
        );

        let other = SigningKey::from_bytes(&[8; 32]);
        let forged = vec![Checkpoint::sign(
            &other,
            10,
            entries[9].hash,
            0,
            ChainHash::GENESIS,
        )];
        assert_eq!(
            verify(&entries, &forged, &key.verifying_key()),
            Err(VerifyError::CheckpointSignature { seq: 10 })
        );
    }

    #[test]
    fn rewriting_the_whole_tail_is_caught_by_a_checkpoint() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let entries = chain(10);
        let cps = vec![Checkpoint::sign(
            &key,
            10,
            entries[9].hash,
            0,
            ChainHash::GENESIS,
        )];
        // An attacker with database access rewrites record 3 and re-chains everything after it.
        let mut rewritten: Vec<LedgerEntry> = entries[..2].to_vec();
        let mut prev = entries[1].hash;
        for i in 3..=10u32 {
            let mut r = sample(i);
            if i == 3 {
                r.action = ConsentAction::Withdrawn;
            }
            let e = LedgerEntry::chain(&prev, u64::from(i), &r);
            prev = e.hash;
            rewritten.push(e);
        }
        assert_eq!(
            verify(&rewritten, &cps, &key.verifying_key()),
            Err(VerifyError::CheckpointMismatch { seq: 10 })
        );
    }

    #[test]
    fn a_column_that_disagrees_with_the_bytes_is_named() {
        let entries = chain(3);
        let mut v = ChainVerifier::new([]);
        let e = &entries[0];
        let at = decode(&e.bytes).unwrap().at;
        let good = Columns {
            subject: SubjectId(1),
            at,
        };
        assert_eq!(v.push(1, &e.bytes, &e.hash, Some(good)), Ok(()));
        let e = &entries[1];
        let edited = Columns {
            subject: SubjectId(2),
            at: at + 1,
        };
        assert_eq!(
            v.push(2, &e.bytes, &e.hash, Some(edited)),
            Err(VerifyError::Column {
                seq: 2,
                field: "at"
            })
        );
        assert_eq!(v.uncovered().map(|u| (u.first_seq, u.count)), Some((1, 1)));
    }

    #[test]
    fn deleting_a_checkpoint_leaves_a_gap_in_their_chain() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let entries = chain(9);
        let mut cps: Vec<Checkpoint> = Vec::new();
        for seq in [3u64, 6, 9] {
            let prev = cps.last().map_or(ChainHash::GENESIS, Checkpoint::digest);
            let i = usize::try_from(seq).unwrap() - 1;
            cps.push(Checkpoint::sign(&key, seq, entries[i].hash, 0, prev));
        }
        assert_eq!(check_checkpoint_chain(&cps), Ok(()));
        assert_eq!(verify(&entries, &cps, &key.verifying_key()), Ok(()));
        let mut middle = cps.clone();
        middle.remove(1);
        assert_eq!(
            check_checkpoint_chain(&middle),
            Err(VerifyError::CheckpointGap { seq: 9, after: 3 })
        );
        assert_eq!(
            check_checkpoint_chain(&cps[1..]),
            Err(VerifyError::CheckpointGap { seq: 6, after: 0 })
        );
        // Old ledgers: version 1 checkpoints, then the first version 2 one chained after them.
        let v1 = Checkpoint::sign_v1(&key, 3, entries[2].hash, 0);
        let v2 = Checkpoint::sign(&key, 6, entries[5].hash, 0, v1.digest());
        assert!(v1.verify_signature(&key.verifying_key()));
        assert_eq!(check_checkpoint_chain(&[v1.clone(), v2.clone()]), Ok(()));
        assert!(check_checkpoint_chain(&[v2.clone(), v1.clone()]).is_err());
        // A changed `prev` is not what was signed.
        let mut moved = v2;
        moved.prev = Some(ChainHash::GENESIS);
        assert!(!moved.verify_signature(&key.verifying_key()));
    }

    #[test]
    fn witness_lines_round_trip_and_reject_garbage() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let entries = chain(2);
        let v1 = Checkpoint::sign_v1(&key, 1, entries[0].hash, 5);
        let v2 = Checkpoint::sign(&key, 2, entries[1].hash, 6, v1.digest());
        for cp in [v1, v2] {
            let line = cp.to_witness_line();
            assert_eq!(Checkpoint::from_witness_line(&line), Ok(cp.clone()));
            assert_eq!(Checkpoint::from_witness_line(&format!("{line}\n")), Ok(cp));
        }
        for bad in [
            "",
            "kept-ledger-checkpoint-v2 1 2 3",
            "kept-ledger-checkpoint-v3 1 00 0 - 0011223344556677 00",
            "kept-ledger-checkpoint-v1 0 00 0 - 0011223344556677 00",
        ] {
            assert!(Checkpoint::from_witness_line(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn witness_lines_never_panic(line in ".{0,300}") {
            let _ = Checkpoint::from_witness_line(&line);
        }
    }
}
