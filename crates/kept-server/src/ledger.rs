//! The consent ledger service: appends through the store and signs checkpoints; the signing
//! and verifying keys; and `verify_ledger`, the streaming check behind `kept ledger verify`.
//!
//! INVARIANT: the verifying key is in the settings (`ledger.verifying_key`, and every key ever
//! used in `ledger.verifying_keys`) before any checkpoint it signed is stored.

use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
use kept_core::UnixMillis;
use kept_core::ledger::{
    ChainHash, ChainVerifier, Checkpoint, ConsentRecord, LedgerEntry, VerifyError, key_id,
};
use kept_store::{LedgerRow, Store, StoreError};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Setting holding the current verifying key (hex).
pub const VERIFYING_KEY_SETTING: &str = "ledger.verifying_key";
/// Setting holding every verifying key that ever signed a checkpoint here (hex, one a line), so
/// checkpoints signed before a key change still verify.
pub const VERIFYING_KEYS_SETTING: &str = "ledger.verifying_keys";
/// Setting holding the demo's generated signing key (its 32-byte seed).
pub const DEMO_SIGNING_KEY_SETTING: &str = "ledger.signing_key";
/// Records between automatic checkpoints: one is signed whenever an append reaches a multiple.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 10_000;

/// A failure with a ledger key.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot read the ledger key file `{path}`: {message}")]
    KeyRead { path: PathBuf, message: String },
    #[error(
        "`{path}` holds no Ed25519 signing key Kept can read: expected a PKCS#8 PEM private key \
         or a 32-byte seed in hex or base64"
    )]
    KeyFormat { path: PathBuf },
    #[error(
        "`{input}` is not an Ed25519 public key: expected a file or a value holding a PEM public \
         key or 32 bytes in hex or base64"
    )]
    PublicKey { input: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl LedgerError {
    /// Stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            LedgerError::KeyRead { .. } => "ledger.key_read",
            LedgerError::KeyFormat { .. } => "ledger.key_format",
            LedgerError::PublicKey { .. } => "ledger.public_key",
            LedgerError::Store(e) => e.code(),
        }
    }
}

/// Where the time comes from; tests pass a fixed one.
pub type Clock = Arc<dyn Fn() -> UnixMillis + Send + Sync>;

fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    })
}

/// Appends consent records and signs checkpoints of the chain.
pub struct Ledger {
    store: Arc<dyn Store>,
    key: SigningKey,
    every: u64,
    clock: Clock,
    published: Arc<tokio::sync::OnceCell<()>>,
    /// The highest position this process signed; `checkpoint_now` skips a tip already signed.
    signed: AtomicU64,
}

impl fmt::Debug for Ledger {
    // The signing key stays out: only which key it is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger")
            .field("key_id", &key_id(&self.key.verifying_key()))
            .field("checkpoint_every", &self.every)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// A ledger over `store` signing with `key`, checkpointing every
    /// [`DEFAULT_CHECKPOINT_EVERY`] records and on [`Ledger::checkpoint_now`].
    ///
    /// Inside a Tokio runtime it starts publishing the verifying key at once; either way the
    /// key is published before the first checkpoint is stored.
    pub fn new(store: Arc<dyn Store>, key: SigningKey) -> Ledger {
        let published = Arc::new(tokio::sync::OnceCell::new());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (published, store, verifying) =
                (published.clone(), store.clone(), key.verifying_key());
            runtime.spawn(async move {
                let done = published
                    .get_or_try_init(|| publish(store.as_ref(), verifying))
                    .await;
                if let Err(e) = done {
                    tracing::debug!(error = %e, "publishing the ledger key failed; retried at the first checkpoint");
                }
            });
        }
        Ledger {
            store,
            key,
            every: DEFAULT_CHECKPOINT_EVERY,
            clock: system_clock(),
            published,
            signed: AtomicU64::new(0),
        }
    }

    /// Signs a checkpoint whenever an append reaches a multiple of `every` (at least 1).
    pub fn with_checkpoint_every(mut self, every: u64) -> Ledger {
        self.every = every.max(1);
        self
    }

    pub fn with_clock(mut self, clock: Clock) -> Ledger {
        self.clock = clock;
        self
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Signs `message` with the ledger key: consent receipts carry such a signature, so a
    /// receipt is as trustworthy as the ledger's checkpoints.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer as _;
        self.key.sign(message).to_bytes()
    }

    /// Appends one record; answers after it is committed.
    pub async fn append(&self, record: ConsentRecord) -> Result<LedgerEntry, StoreError> {
        let entry = self.store.append_consent(record).await?;
        self.after_append(std::slice::from_ref(&entry)).await;
        Ok(entry)
    }

    /// Appends records atomically and in order; answers after they are committed.
    pub async fn append_many(
        &self,
        records: Vec<ConsentRecord>,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        let entries = self.store.append_consents(records).await?;
        self.after_append(&entries).await;
        Ok(entries)
    }

    /// Signs the automatic checkpoint when these entries reach a multiple of `every`. The
    /// records are committed whatever happens here, so a failure is logged, not returned: the
    /// caller must not retry an append that succeeded.
    async fn after_append(&self, entries: &[LedgerEntry]) {
        let Some(entry) = entries.iter().rev().find(|e| e.seq % self.every == 0) else {
            return;
        };
        if let Err(e) = self.sign_and_store(entry.seq, entry.hash).await {
            tracing::warn!(error = %e, seq = entry.seq, "ledger checkpoint failed");
        }
    }

    /// Signs a checkpoint of the current tip unless it is already signed. `None` when there
    /// was nothing new to sign.
    pub async fn checkpoint_now(&self) -> Result<Option<Checkpoint>, StoreError> {
        let Some((seq, hash)) = self.store.ledger_tip().await? else {
            return Ok(None);
        };
        if seq <= self.signed.load(Ordering::Acquire) {
            return Ok(None);
        }
        self.sign_and_store(seq, hash).await.map(Some)
    }

    async fn sign_and_store(&self, seq: u64, hash: ChainHash) -> Result<Checkpoint, StoreError> {
        self.publish_verifying_key().await?;
        let checkpoint = Checkpoint::sign(&self.key, seq, hash, (self.clock)());
        self.store.put_checkpoint(&checkpoint).await?;
        self.signed.fetch_max(seq, Ordering::AcqRel);
        Ok(checkpoint)
    }

    /// Publishes the verifying key in the settings (done once, before the first checkpoint).
    pub async fn publish_verifying_key(&self) -> Result<(), StoreError> {
        self.published
            .get_or_try_init(|| publish(self.store.as_ref(), self.key.verifying_key()))
            .await
            .map(|_| ())
    }
}

async fn publish(store: &dyn Store, key: VerifyingKey) -> Result<(), StoreError> {
    let hex_key = hex::encode(key.as_bytes());
    store
        .put_setting(VERIFYING_KEY_SETTING, hex_key.as_bytes())
        .await?;
    let known = store
        .get_setting(VERIFYING_KEYS_SETTING)
        .await?
        .unwrap_or_default();
    let known = String::from_utf8_lossy(&known);
    if !known.lines().any(|l| l.trim() == hex_key) {
        let mut all = known.trim_end().to_string();
        if !all.is_empty() {
            all.push('\n');
        }
        all.push_str(&hex_key);
        store
            .put_setting(VERIFYING_KEYS_SETTING, all.as_bytes())
            .await?;
    }
    Ok(())
}

/// The verifying keys the database itself publishes (current first). A copy kept elsewhere is
/// a stronger check: whoever can edit the ledger can edit these too.
pub async fn published_verifying_keys(store: &dyn Store) -> Result<Vec<VerifyingKey>, StoreError> {
    let mut keys = Vec::new();
    for setting in [VERIFYING_KEY_SETTING, VERIFYING_KEYS_SETTING] {
        let Some(value) = store.get_setting(setting).await? else {
            continue;
        };
        for line in String::from_utf8_lossy(&value).lines() {
            let key = parse_verifying_key(line).ok_or_else(|| {
                StoreError::Corrupt(format!("setting `{setting}` holds a malformed key"))
            })?;
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    Ok(keys)
}

/// Loads the ledger signing key from `path`: a PKCS#8 PEM private key, or a 32-byte seed as
/// hex, base64 or raw bytes. The key's content never appears in an error.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, LedgerError> {
    let bytes = std::fs::read(path).map_err(|e| LedgerError::KeyRead {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let format = || LedgerError::KeyFormat {
        path: path.to_path_buf(),
    };
    // No text form of a key is 32 bytes long (hex takes 64, base64 44), so 32 bytes are raw.
    if let Ok(seed) = <[u8; 32]>::try_from(bytes.as_slice()) {
        return Ok(SigningKey::from_bytes(&seed));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| format())?.trim();
    if text.contains("-----BEGIN") {
        return SigningKey::from_pkcs8_pem(text).map_err(|_| format());
    }
    decode_32(text)
        .map(|seed| SigningKey::from_bytes(&seed))
        .ok_or_else(format)
}

/// The demo's signing key: generated on first start and kept in the settings, so restarts (and
/// several servers on one database) sign with the same key.
pub async fn demo_signing_key(store: &dyn Store) -> Result<SigningKey, StoreError> {
    let fresh = SigningKey::generate(&mut rand::rngs::OsRng);
    let stored = store
        .put_setting_if_absent(DEMO_SIGNING_KEY_SETTING, fresh.as_bytes())
        .await?;
    let seed = <[u8; 32]>::try_from(stored.as_slice()).map_err(|_| {
        StoreError::Corrupt(format!(
            "setting `{DEMO_SIGNING_KEY_SETTING}` does not hold a 32-byte key"
        ))
    })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// A verifying key from text: PEM (SubjectPublicKeyInfo), or 32 bytes in hex or base64.
pub fn parse_verifying_key(text: &str) -> Option<VerifyingKey> {
    let text = text.trim();
    if text.contains("-----BEGIN") {
        return VerifyingKey::from_public_key_pem(text).ok();
    }
    decode_32(text).and_then(|bytes| VerifyingKey::from_bytes(&bytes).ok())
}

/// `--public-key`: a file holding a verifying key, or the key itself.
pub fn load_verifying_key(file_or_value: &str) -> Result<VerifyingKey, LedgerError> {
    let path = Path::new(file_or_value);
    let parsed = if path.is_file() {
        let bytes = std::fs::read(path).map_err(|e| LedgerError::KeyRead {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        match <[u8; 32]>::try_from(bytes.as_slice()) {
            Ok(raw) => VerifyingKey::from_bytes(&raw).ok(),
            Err(_) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(parse_verifying_key),
        }
    } else {
        parse_verifying_key(file_or_value)
    };
    parsed.ok_or_else(|| LedgerError::PublicKey {
        input: file_or_value.to_string(),
    })
}

fn decode_32(text: &str) -> Option<[u8; 32]> {
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).ok()?
    } else {
        let engines = [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::URL_SAFE,
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        engines.iter().find_map(|e| e.decode(text).ok())?
    };
    bytes.try_into().ok()
}

// --- verification ----------------------------------------------------------------------------

/// Rows fetched per query while verifying; the next page is fetched while one is checked.
const VERIFY_PAGE: u32 = 50_000;

/// What a clean verification saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub records: u64,
    pub tip: Option<(u64, ChainHash)>,
    pub checkpoints: usize,
    /// Position of the last checkpoint, if any.
    pub last_checkpoint: Option<u64>,
}

/// The first thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The first bad record.
    pub seq: u64,
    pub code: &'static str,
    pub message: String,
}

impl From<VerifyError> for Finding {
    fn from(e: VerifyError) -> Finding {
        Finding {
            seq: e.seq(),
            code: e.code(),
            message: e.to_string(),
        }
    }
}

/// The verdict on a ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Intact(VerifyReport),
    /// Records before `verified` checked out; `finding` names the first bad one.
    Tampered {
        verified: u64,
        finding: Finding,
    },
    /// The chain is intact but checkpoints exist and no verifying key was available.
    NoKey(VerifyReport),
}

/// Checks every stored record in order (bytes, hash chain, subject column), then every
/// checkpoint against the chain and `keys` (by key id). Empty `keys` checks the chain only and
/// reports [`Verdict::NoKey`] when there are checkpoints. `progress` is told how many records
/// have been checked after each page.
///
/// `Err` means the store could not be read; anything found wrong in what it holds is a
/// [`Verdict::Tampered`].
pub async fn verify_ledger(
    store: Arc<dyn Store>,
    keys: &[VerifyingKey],
    mut progress: impl FnMut(u64) + Send,
) -> Result<Verdict, StoreError> {
    let checkpoints = match store.checkpoints().await {
        Ok(c) => c,
        Err(StoreError::Corrupt(message)) => {
            return Ok(Verdict::Tampered {
                verified: 0,
                finding: Finding {
                    seq: 0,
                    code: "ledger.checkpoint_corrupt",
                    message,
                },
            });
        }
        Err(e) => return Err(e),
    };
    let mut verifier = ChainVerifier::new(checkpoints.iter().map(|c| c.seq));

    // One task fetches pages while this one checks the previous page.
    let (pages_tx, mut pages) = tokio::sync::mpsc::channel::<Result<Vec<LedgerRow>, StoreError>>(2);
    let fetcher = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut after = 0;
            let mut limit = VERIFY_PAGE;
            loop {
                let page = store.ledger_rows(after, limit).await;
                // A row the store cannot even read fails its whole page: go on one row at a
                // time, so the rows before it are checked and the bad one is named.
                if matches!(page, Err(StoreError::Corrupt(_))) && limit > 1 {
                    limit = 1;
                    continue;
                }
                let last = match &page {
                    Ok(rows) => rows.last().map(|r| r.seq),
                    Err(_) => None,
                };
                let done = last.is_none();
                if pages_tx.send(page).await.is_err() || done {
                    return;
                }
                after = last.unwrap_or(after);
            }
        })
    };
    let mut outcome = None;
    while let Some(page) = pages.recv().await {
        let rows = match page {
            Ok(rows) if rows.is_empty() => break,
            Ok(rows) => rows,
            Err(StoreError::Corrupt(message)) => {
                let seq = verifier.len() + 1;
                outcome = Some(Verdict::Tampered {
                    verified: verifier.len(),
                    finding: Finding {
                        seq,
                        code: "ledger.corrupt_row",
                        message,
                    },
                });
                break;
            }
            Err(e) => {
                fetcher.abort();
                return Err(e);
            }
        };
        // Hashing a page takes tens of milliseconds: off the async workers.
        let (back, checked) = tokio::task::spawn_blocking(move || {
            let checked = check_page(&mut verifier, &rows);
            (verifier, checked)
        })
        .await
        .map_err(|e| StoreError::Database(format!("the verifier stopped: {e}")))?;
        verifier = back;
        if let Err(finding) = checked {
            outcome = Some(Verdict::Tampered {
                verified: verifier.len(),
                finding,
            });
            break;
        }
        progress(verifier.len());
    }
    fetcher.abort();
    if let Some(outcome) = outcome {
        return Ok(outcome);
    }

    let report = VerifyReport {
        records: verifier.len(),
        tip: (!verifier.is_empty()).then(|| (verifier.len(), verifier.tip())),
        checkpoints: checkpoints.len(),
        last_checkpoint: checkpoints.iter().map(|c| c.seq).max(),
    };
    if checkpoints.is_empty() {
        return Ok(Verdict::Intact(report));
    }
    if keys.is_empty() {
        return Ok(Verdict::NoKey(report));
    }
    let mut sorted: Vec<&Checkpoint> = checkpoints.iter().collect();
    sorted.sort_by_key(|c| c.seq);
    for checkpoint in sorted {
        let signer = keys.iter().find(|k| key_id(k) == checkpoint.key_id);
        let result = match signer {
            Some(key) => verifier.finish(std::slice::from_ref(checkpoint), key),
            None => Err(VerifyError::CheckpointSignature {
                seq: checkpoint.seq,
            }),
        };
        if let Err(e) = result {
            return Ok(Verdict::Tampered {
                verified: report.records,
                finding: e.into(),
            });
        }
    }
    Ok(Verdict::Intact(report))
}

fn check_page(verifier: &mut ChainVerifier, rows: &[LedgerRow]) -> Result<(), Finding> {
    for row in rows {
        // A malformed stored hash cannot equal the computed one; `push` then names the record
        // (or the gap before it).
        let hash = ChainHash::from_slice(&row.hash).unwrap_or_default();
        verifier.push(row.seq, &row.bytes, &hash, Some(row.subject))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kept_core::SubjectId;
    use kept_core::ledger::{CollectionMethod, ConsentAction, Evidence};

    fn record(i: u32) -> ConsentRecord {
        ConsentRecord {
            subject: SubjectId(i % 7),
            purpose: "marketing.communications".into(),
            channel: Some("email".into()),
            topic: None,
            action: ConsentAction::Given,
            notice: None,
            regime: "gdpr".into(),
            source: "test".into(),
            method: CollectionMethod::WebForm,
            evidence: Evidence::default(),
            at: 1_790_000_000_000 + i64::from(i),
        }
    }

    async fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(dir.path().join("kept.db").to_str().unwrap())
            .await
            .unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn checkpoints_land_on_multiples_and_on_demand() {
        let (_dir, store) = store().await;
        let key = SigningKey::from_bytes(&[9; 32]);
        let ledger = Ledger::new(store.clone(), key.clone())
            .with_checkpoint_every(10)
            .with_clock(Arc::new(|| 1_234));
        assert_eq!(ledger.checkpoint_now().await.unwrap(), None);
        for i in 0..12 {
            ledger.append(record(i)).await.unwrap();
        }
        ledger
            .append_many((12..25).map(record).collect())
            .await
            .unwrap();
        let seqs: Vec<u64> = store
            .checkpoints()
            .await
            .unwrap()
            .iter()
            .map(|c| c.seq)
            .collect();
        assert_eq!(seqs, vec![10, 20]);
        let tip = ledger.checkpoint_now().await.unwrap().unwrap();
        assert_eq!((tip.seq, tip.at), (25, 1_234));
        assert_eq!(ledger.checkpoint_now().await.unwrap(), None);

        assert_eq!(
            published_verifying_keys(store.as_ref()).await.unwrap(),
            vec![key.verifying_key()]
        );
        let verdict = verify_ledger(store.clone(), &[key.verifying_key()], |_| {})
            .await
            .unwrap();
        assert_eq!(
            verdict,
            Verdict::Intact(VerifyReport {
                records: 25,
                tip: Some((25, tip.hash)),
                checkpoints: 3,
                last_checkpoint: Some(25),
            })
        );
        let stranger = SigningKey::from_bytes(&[8; 32]).verifying_key();
        match verify_ledger(store.clone(), &[stranger], |_| {})
            .await
            .unwrap()
        {
            Verdict::Tampered { finding, .. } => {
                assert_eq!(
                    (finding.seq, finding.code),
                    (10, "ledger.checkpoint_signature")
                );
            }
            other => panic!("a checkpoint by an unknown key passed: {other:?}"),
        }
        assert!(matches!(
            verify_ledger(store.clone(), &[], |_| {}).await.unwrap(),
            Verdict::NoKey(_)
        ));
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_new_key_is_added_to_the_published_ones() {
        let (_dir, store) = store().await;
        let first = SigningKey::from_bytes(&[1; 32]);
        let second = SigningKey::from_bytes(&[2; 32]);
        let ledger = Ledger::new(store.clone(), first.clone());
        ledger.append(record(1)).await.unwrap();
        ledger.checkpoint_now().await.unwrap();
        let ledger = Ledger::new(store.clone(), second.clone());
        ledger.append(record(2)).await.unwrap();
        ledger.checkpoint_now().await.unwrap();
        let keys = published_verifying_keys(store.as_ref()).await.unwrap();
        assert_eq!(keys, vec![second.verifying_key(), first.verifying_key()]);
        assert!(matches!(
            verify_ledger(store.clone(), &keys, |_| {}).await.unwrap(),
            Verdict::Intact(_)
        ));
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn the_demo_key_is_stable_across_restarts() {
        let (_dir, store) = store().await;
        let a = demo_signing_key(store.as_ref()).await.unwrap();
        let b = demo_signing_key(store.as_ref()).await.unwrap();
        assert_eq!(a.to_bytes(), b.to_bytes());
        store.close().await.unwrap();
    }

    #[test]
    fn signing_keys_load_from_pem_hex_base64_and_raw() {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let key = SigningKey::from_bytes(&[5; 32]);
        let dir = tempfile::tempdir().unwrap();
        let pem = key
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
        let forms: [(&str, Vec<u8>); 4] = [
            ("key.pem", pem.as_bytes().to_vec()),
            (
                "key.hex",
                format!("{}\n", hex::encode([5u8; 32])).into_bytes(),
            ),
            ("key.b64", b64.into_bytes()),
            ("key.raw", vec![5u8; 32]),
        ];
        for (name, content) in forms {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            let loaded = load_signing_key(&path).unwrap();
            assert_eq!(loaded.to_bytes(), key.to_bytes(), "{name}");
        }

        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, "not a key at all").unwrap();
        let err = load_signing_key(&bad).unwrap_err();
        assert_eq!(err.code(), "ledger.key_format");
        assert!(err.to_string().contains("bad.key"));
        assert!(!err.to_string().contains("not a key at all"));
        let missing = load_signing_key(&dir.path().join("missing.key")).unwrap_err();
        assert_eq!(missing.code(), "ledger.key_read");
        assert!(missing.to_string().contains("missing.key"));
    }

    #[test]
    fn public_keys_load_from_a_file_or_a_value() {
        use ed25519_dalek::pkcs8::EncodePublicKey;
        let key = SigningKey::from_bytes(&[6; 32]).verifying_key();
        let hex_key = hex::encode(key.as_bytes());
        assert_eq!(load_verifying_key(&hex_key).unwrap(), key);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.pub");
        let pem = key
            .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .unwrap();
        std::fs::write(&path, pem).unwrap();
        assert_eq!(load_verifying_key(path.to_str().unwrap()).unwrap(), key);
        assert_eq!(
            load_verifying_key("zz").unwrap_err().code(),
            "ledger.public_key"
        );
    }

    #[test]
    fn debug_shows_which_key_but_not_the_key() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let (_dir, store) = store().await;
            let key = SigningKey::from_bytes(&[7; 32]);
            let ledger = Ledger::new(store.clone(), key.clone());
            let shown = format!("{ledger:?}");
            assert!(shown.contains(&key_id(&key.verifying_key())));
            assert!(!shown.contains(&hex::encode(key.to_bytes())));
            assert!(!shown.contains("[7, 7"));
            store.close().await.unwrap();
        });
    }
}
