//! The consent ledger service: appends through the store, whose committer ends every batch
//! with a checkpoint this service signs (and hands to the witness); the signing and verifying
//! keys; and `verify_ledger`, the streaming check behind `kept ledger verify`.
//!
//! INVARIANT: the verifying key is in the settings (`ledger.verifying_key`, and every key ever
//! used in `ledger.verifying_keys`) before any checkpoint it signed is stored. The signer is
//! installed in `Ledger::ready` only after `publish` returned, and debug builds read the key
//! back there before installing it.

use crate::consent::witness::Witness;
use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
use kept_core::UnixMillis;
use kept_core::ledger::{
    ChainHash, ChainVerifier, Checkpoint, Columns, ConsentRecord, LedgerEntry, Uncovered,
    VerifyError, check_checkpoint_chain, key_id,
};
use kept_store::{CheckpointSigner, LedgerRow, Store, StoreError};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Setting holding the current verifying key (hex).
pub const VERIFYING_KEY_SETTING: &str = "ledger.verifying_key";
/// Setting holding every verifying key that ever signed a checkpoint here (hex, one a line), so
/// checkpoints signed before a key change still verify.
pub const VERIFYING_KEYS_SETTING: &str = "ledger.verifying_keys";
/// Setting holding the demo's generated signing key (its 32-byte seed).
pub const DEMO_SIGNING_KEY_SETTING: &str = "ledger.signing_key";
/// How long a record may stay without a checkpoint before `verify` calls it tampering, beyond
/// the checkpoint interval: a restart's worth of time. Kept's own appends never wait at all
/// (each batch commits with its checkpoint); records from another writer wait for the next
/// round of `checkpoint_now`.
pub const DEFAULT_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

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

/// The wall clock in Unix milliseconds.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    })
}

/// What the store's committer calls to sign the checkpoint a batch ends with.
struct Signer {
    key: SigningKey,
    clock: Clock,
    witness: Option<Arc<Witness>>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &key_id(&self.key.verifying_key()))
            .field("witness", &self.witness)
            .finish_non_exhaustive()
    }
}

impl CheckpointSigner for Signer {
    fn sign(&self, seq: u64, hash: ChainHash, prev: ChainHash) -> Checkpoint {
        Checkpoint::sign(&self.key, seq, hash, (self.clock)(), prev)
    }

    fn committed(&self, checkpoint: &Checkpoint) {
        if let Some(witness) = &self.witness {
            witness.record(checkpoint);
        }
    }
}

/// Appends consent records; the store commits each batch with a checkpoint signed here.
pub struct Ledger {
    store: Arc<dyn Store>,
    key: SigningKey,
    clock: Clock,
    witness: Option<Arc<Witness>>,
    /// Where the requests log's checkpoints (signed by the same key) are witnessed.
    requests_witness: Option<Arc<Witness>>,
    /// Done once the verifying key is published and the signer installed in the store.
    ready: tokio::sync::OnceCell<()>,
}

impl fmt::Debug for Ledger {
    // The signing key stays out: only which key it is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger")
            .field("key_id", &key_id(&self.key.verifying_key()))
            .field("witness", &self.witness)
            .field("requests_witness", &self.requests_witness)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// A ledger over `store` signing with `key`. Its first append (or `checkpoint_now`)
    /// publishes the verifying key, then installs the signer in the store: from then on every
    /// batch the store commits ends with a checkpoint of its tip.
    pub fn new(store: Arc<dyn Store>, key: SigningKey) -> Ledger {
        Ledger {
            store,
            key,
            clock: system_clock(),
            witness: None,
            requests_witness: None,
            ready: tokio::sync::OnceCell::new(),
        }
    }

    pub fn with_clock(mut self, clock: Clock) -> Ledger {
        self.clock = clock;
        self
    }

    /// Also appends every checkpoint to `witness`.
    pub fn with_witness(mut self, witness: Arc<Witness>) -> Ledger {
        self.witness = Some(witness);
        self
    }

    /// Also appends every checkpoint of the requests log to `witness` (a file of its own).
    pub fn with_requests_witness(mut self, witness: Arc<Witness>) -> Ledger {
        self.requests_witness = Some(witness);
        self
    }

    /// Hands a committed checkpoint of the requests log to its witness, if there is one.
    pub fn witness_request_checkpoint(&self, checkpoint: &Checkpoint) {
        if let Some(witness) = &self.requests_witness {
            witness.record(checkpoint);
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn witness(&self) -> Option<&Arc<Witness>> {
        self.witness.as_ref()
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

    async fn ready(&self) -> Result<(), StoreError> {
        self.ready
            .get_or_try_init(|| async {
                publish(self.store.as_ref(), self.key.verifying_key()).await?;
                if cfg!(debug_assertions) {
                    // A failed read proves nothing either way; a list without the key does.
                    let hex_key = hex::encode(self.key.verifying_key().as_bytes());
                    let listed = self.store.get_setting(VERIFYING_KEYS_SETTING).await;
                    debug_assert!(
                        listed.map_or(true, |keys| keys.is_some_and(|keys| {
                            String::from_utf8_lossy(&keys)
                                .lines()
                                .any(|l| l.trim() == hex_key)
                        })),
                        "the ledger would sign under a key the settings do not list"
                    );
                }
                self.store.set_checkpoint_signer(Some(Arc::new(Signer {
                    key: self.key.clone(),
                    clock: self.clock.clone(),
                    witness: self.witness.clone(),
                })));
                Ok::<(), StoreError>(())
            })
            .await
            .map(|_| ())
    }

    /// Appends one record; answers after it is committed with the checkpoint covering it.
    pub async fn append(&self, record: ConsentRecord) -> Result<LedgerEntry, StoreError> {
        self.ready().await?;
        self.store.append_consent(record).await
    }

    /// Appends records atomically and in order; answers after they are committed with the
    /// checkpoint covering them.
    pub async fn append_many(
        &self,
        records: Vec<ConsentRecord>,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        self.ready().await?;
        self.store.append_consents(records).await
    }

    /// Signs a checkpoint of the current tip unless one already covers it (records appended
    /// by another process, or before this release). `None` when there was nothing to sign.
    pub async fn checkpoint_now(&self) -> Result<Option<Checkpoint>, StoreError> {
        self.ready().await?;
        self.store.checkpoint_tip().await
    }

    /// The checkpoint covering record `seq`, signing one of the tip first if none does yet.
    pub async fn checkpoint_covering(&self, seq: u64) -> Result<Option<Checkpoint>, StoreError> {
        if let Some(cp) = self.store.checkpoint_covering(seq).await? {
            return Ok(Some(cp));
        }
        self.checkpoint_now().await?;
        self.store.checkpoint_covering(seq).await
    }

    /// Publishes the verifying key in the settings (done once, before the first checkpoint).
    pub async fn publish_verifying_key(&self) -> Result<(), StoreError> {
        self.ready().await
    }

    /// Waits until every checkpoint signed so far is in the witness file.
    pub async fn flush_witness(&self) {
        for witness in self.witness.iter().chain(&self.requests_witness) {
            witness.flush().await;
        }
    }

    /// Stops signing (the store commits later appends without a checkpoint) and closes the
    /// witness after writing what it holds.
    pub async fn close(&self) {
        if self.ready.initialized() {
            self.store.set_checkpoint_signer(None);
        }
        for witness in self.witness.iter().chain(&self.requests_witness) {
            witness.close().await;
        }
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

/// What `verify_ledger` checks against.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The verifying keys; empty checks the chain only.
    pub keys: Vec<VerifyingKey>,
    /// The checkpoints of a witness file, if one is given.
    pub witness: Option<Vec<Checkpoint>>,
    /// The time to judge uncovered records by (Unix milliseconds).
    pub now: UnixMillis,
    /// How long a record may stay without a checkpoint: the checkpoint interval plus a grace
    /// period, in milliseconds. Older uncovered records are tampering.
    pub allowance: i64,
}

impl VerifyOptions {
    /// `keys`, no witness, the wall clock, and one second plus [`DEFAULT_GRACE`].
    pub fn new(keys: Vec<VerifyingKey>) -> VerifyOptions {
        VerifyOptions {
            keys,
            witness: None,
            now: system_clock()(),
            allowance: 1_000 + i64::try_from(DEFAULT_GRACE.as_millis()).unwrap_or(i64::MAX),
        }
    }
}

/// What the witness vouched for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessReport {
    pub checkpoints: usize,
    pub last_seq: Option<u64>,
}

/// What a clean verification saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub records: u64,
    pub tip: Option<(u64, ChainHash)>,
    pub checkpoints: usize,
    /// Position of the last checkpoint, if any.
    pub last_checkpoint: Option<u64>,
    /// Version 1 checkpoints, from before checkpoints were chained.
    pub unchained_checkpoints: usize,
    /// Records after the last checkpoint, all within the allowance.
    pub uncovered: Option<Uncovered>,
    pub witness: Option<WitnessReport>,
}

impl VerifyReport {
    /// What this verification proves, one statement each.
    pub fn proven(&self) -> Vec<String> {
        let mut out = vec![match self.records {
            0 => "the ledger holds no records".to_string(),
            n => format!(
                "records 1 to {n} form an unbroken hash chain, and every stored column agrees with the record's bytes"
            ),
        }];
        if let Some(last) = self.last_checkpoint {
            out.push(format!(
                "{} signed checkpoints match the chain, chained to one another up to record {last}",
                self.checkpoints
            ));
        }
        if let Some(WitnessReport {
            checkpoints,
            last_seq: Some(last),
        }) = &self.witness
        {
            out.push(format!(
                "{checkpoints} witnessed checkpoints match the ledger and are all in the database: nothing up to record {last} was cut or rewritten"
            ));
        }
        out
    }

    /// What this verification could not prove, one statement each.
    pub fn unproven(&self) -> Vec<String> {
        let mut out = Vec::new();
        let covered = self.last_checkpoint.unwrap_or(0);
        match &self.witness {
            None if self.records > 0 => out.push(format!(
                "that nothing was cut after record {covered} together with its checkpoints: only a witness (--witness) can show the ledger's end"
            )),
            Some(w) if w.last_seq.unwrap_or(0) < covered => out.push(format!(
                "that records {} to {covered} were not rewritten together with their checkpoints: the witness ends at record {}",
                w.last_seq.unwrap_or(0) + 1,
                w.last_seq.unwrap_or(0)
            )),
            _ => {}
        }
        if let Some(u) = &self.uncovered {
            out.push(format!(
                "records {} to {} ({} records) are not yet covered by a checkpoint; they are recent enough (within the checkpoint interval and grace period) to be waiting for one",
                u.first_seq,
                u.first_seq + u.count - 1,
                u.count
            ));
        }
        if self.unchained_checkpoints > 0 {
            out.push(format!(
                "that none of the {} version 1 checkpoints (before checkpoints were chained) was deleted",
                self.unchained_checkpoints
            ));
        }
        out
    }
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

/// Checks every stored record in order (bytes, hash chain, the subject and `at` columns), then
/// every checkpoint against the chain and the keys (by key id), the chain of checkpoints, the
/// witness's checkpoints if given, and that no record beyond the last checkpoint is older than
/// the allowance. A non-empty ledger without any checkpoint is tampering. Empty `keys` checks
/// the chain only and reports [`Verdict::NoKey`] when there are checkpoints. `progress` is told
/// how many records have been checked after each page.
///
/// `Err` means the store could not be read; anything found wrong in what it holds is a
/// [`Verdict::Tampered`].
pub async fn verify_ledger(
    store: Arc<dyn Store>,
    options: &VerifyOptions,
    mut progress: impl FnMut(u64) + Send,
) -> Result<Verdict, StoreError> {
    let keys = options.keys.as_slice();
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
    let mut witness: Vec<Checkpoint> = options.witness.clone().unwrap_or_default();
    witness.sort_by_key(|c| c.seq);
    let mut verifier = ChainVerifier::new(checkpoints.iter().chain(witness.iter()).map(|c| c.seq));

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
        unchained_checkpoints: checkpoints.iter().filter(|c| c.prev.is_none()).count(),
        uncovered: verifier.uncovered(),
        witness: options.witness.as_ref().map(|_| WitnessReport {
            checkpoints: witness.len(),
            last_seq: witness.last().map(|c| c.seq),
        }),
    };
    let tampered = |finding: Finding| {
        Ok(Verdict::Tampered {
            verified: report.records,
            finding,
        })
    };
    if (!checkpoints.is_empty() || !witness.is_empty()) && keys.is_empty() {
        return Ok(Verdict::NoKey(report));
    }
    // The database's checkpoints: signed, matching the chain, chained to one another.
    let mut sorted: Vec<&Checkpoint> = checkpoints.iter().collect();
    sorted.sort_by_key(|c| c.seq);
    for checkpoint in &sorted {
        if let Err(e) = check_signed(&verifier, keys, checkpoint) {
            return tampered(e.into());
        }
    }
    let owned: Vec<Checkpoint> = sorted.iter().map(|c| (*c).clone()).collect();
    if let Err(e) = check_checkpoint_chain(&owned) {
        return tampered(e.into());
    }
    // The witness's checkpoints: each must match the ledger, then be in the database.
    for checkpoint in &witness {
        if let Err(e) = check_signed(&verifier, keys, checkpoint) {
            return tampered(witnessed(e));
        }
    }
    for checkpoint in &witness {
        if !checkpoints.contains(checkpoint) {
            return tampered(Finding {
                seq: checkpoint.seq,
                code: "ledger.checkpoint_missing",
                message: format!(
                    "the witnessed checkpoint at record {} is missing from the database: checkpoints were deleted or replaced",
                    checkpoint.seq
                ),
            });
        }
    }
    if report.records > 0 && checkpoints.is_empty() {
        return tampered(Finding {
            seq: 1,
            code: "ledger.no_checkpoint",
            message: format!(
                "{} records and not one checkpoint: every checkpoint was deleted, or none was ever signed",
                report.records
            ),
        });
    }
    if let Some(u) = report.uncovered {
        let late = u.oldest < options.now.saturating_sub(options.allowance);
        let future = u.newest > options.now.saturating_add(options.allowance);
        if late || future {
            let why = if late {
                "older than the checkpoint interval and grace period allow"
            } else {
                "dated in the future"
            };
            return tampered(Finding {
                seq: u.first_seq,
                code: "ledger.uncovered",
                message: format!(
                    "records {} to {} are not covered by any checkpoint and are {why}: they were appended behind Kept's back, or their checkpoints deleted",
                    u.first_seq,
                    u.first_seq + u.count - 1
                ),
            });
        }
    }
    Ok(Verdict::Intact(report))
}

/// A checkpoint's signature (by the key its id names) and its match with the chain.
fn check_signed(
    verifier: &ChainVerifier,
    keys: &[VerifyingKey],
    checkpoint: &Checkpoint,
) -> Result<(), VerifyError> {
    match keys.iter().find(|k| key_id(k) == checkpoint.key_id) {
        Some(key) => verifier.finish(std::slice::from_ref(checkpoint), key),
        None => Err(VerifyError::CheckpointSignature {
            seq: checkpoint.seq,
        }),
    }
}

/// A finding about a witnessed checkpoint, named as such.
fn witnessed(e: VerifyError) -> Finding {
    let (code, message) = match &e {
        VerifyError::CheckpointSignature { seq } => (
            "ledger.witness_signature",
            format!("the witnessed checkpoint at record {seq} is not signed by the ledger key"),
        ),
        VerifyError::CheckpointBeyondEnd { seq, len } => (
            "ledger.witness_beyond_end",
            format!(
                "the witness has a checkpoint at record {seq}, beyond the end of the ledger ({len} records): the tail was cut"
            ),
        ),
        VerifyError::CheckpointMismatch { seq } => (
            "ledger.witness_mismatch",
            format!(
                "the witnessed checkpoint at record {seq} does not match the ledger: a record up to {seq} was changed, removed or reordered"
            ),
        ),
        _ => (e.code(), e.to_string()),
    };
    Finding {
        seq: e.seq(),
        code,
        message,
    }
}

fn check_page(verifier: &mut ChainVerifier, rows: &[LedgerRow]) -> Result<(), Finding> {
    for row in rows {
        // A malformed stored hash cannot equal the computed one; `push` then names the record
        // (or the gap before it).
        let hash = ChainHash::from_slice(&row.hash).unwrap_or_default();
        let columns = Columns {
            subject: row.subject,
            at: row.at,
        };
        verifier.push(row.seq, &row.bytes, &hash, Some(columns))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consent::witness::Witness;
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
    async fn every_batch_is_checkpointed_and_witnessed() {
        let (dir, store) = store().await;
        let key = SigningKey::from_bytes(&[9; 32]);
        let path = dir.path().join("witness.log");
        let witness =
            Arc::new(Witness::open(&path, None, std::time::Duration::from_millis(10)).unwrap());
        let ledger = Ledger::new(store.clone(), key.clone())
            .with_clock(Arc::new(|| 1_234))
            .with_witness(witness);
        assert_eq!(ledger.checkpoint_now().await.unwrap(), None);
        for i in 0..12 {
            ledger.append(record(i)).await.unwrap();
        }
        ledger
            .append_many((12..25).map(record).collect())
            .await
            .unwrap();
        let checkpoints = store.checkpoints().await.unwrap();
        let seqs: Vec<u64> = checkpoints.iter().map(|c| c.seq).collect();
        assert_eq!(seqs, (1..=12).chain([25]).collect::<Vec<u64>>());
        assert!(
            checkpoints
                .iter()
                .all(|c| c.at == 1_234 && c.version() == 2)
        );
        // The tip is covered already.
        assert_eq!(ledger.checkpoint_now().await.unwrap(), None);
        assert_eq!(
            ledger.checkpoint_covering(14).await.unwrap().map(|c| c.seq),
            Some(25)
        );
        ledger.flush_witness().await;
        let (witnessed, torn) = crate::consent::witness::read_witness(&path).unwrap();
        assert_eq!((witnessed, torn), (checkpoints.clone(), 0));

        assert_eq!(
            published_verifying_keys(store.as_ref()).await.unwrap(),
            vec![key.verifying_key()]
        );
        let mut options = VerifyOptions::new(vec![key.verifying_key()]);
        options.witness = Some(checkpoints.clone());
        let verdict = verify_ledger(store.clone(), &options, |_| {})
            .await
            .unwrap();
        let Verdict::Intact(report) = verdict else {
            panic!("an untouched ledger did not verify: {verdict:?}");
        };
        assert_eq!(
            (report.records, report.checkpoints, report.last_checkpoint),
            (25, 13, Some(25))
        );
        assert_eq!(report.tip.map(|t| t.1), Some(checkpoints[12].hash));
        assert_eq!(report.uncovered, None);
        assert!(report.unproven().is_empty(), "{:?}", report.unproven());
        let stranger = SigningKey::from_bytes(&[8; 32]).verifying_key();
        match verify_ledger(store.clone(), &VerifyOptions::new(vec![stranger]), |_| {})
            .await
            .unwrap()
        {
            Verdict::Tampered { finding, .. } => {
                assert_eq!(
                    (finding.seq, finding.code),
                    (1, "ledger.checkpoint_signature")
                );
            }
            other => panic!("a checkpoint by an unknown key passed: {other:?}"),
        }
        assert!(matches!(
            verify_ledger(store.clone(), &VerifyOptions::new(vec![]), |_| {})
                .await
                .unwrap(),
            Verdict::NoKey(_)
        ));
        ledger.close().await;
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn records_appended_unsigned_wait_for_the_next_checkpoint() {
        let (_dir, store) = store().await;
        let key = SigningKey::from_bytes(&[9; 32]);
        // Appended with no signer installed: as another process, or an older release, would.
        store
            .append_consents((0..3).map(record).collect())
            .await
            .unwrap();
        let at = record(2).at;
        let mut options = VerifyOptions::new(vec![key.verifying_key()]);
        options.now = at + 500;
        // No checkpoint at all: fails whatever the time.
        let verdict = verify_ledger(store.clone(), &options, |_| {})
            .await
            .unwrap();
        assert!(
            matches!(&verdict, Verdict::Tampered { finding, .. } if finding.code == "ledger.no_checkpoint"),
            "{verdict:?}"
        );
        let ledger = Ledger::new(store.clone(), key.clone());
        ledger.append(record(3)).await.unwrap();
        // Checkpointed with the first signed batch; then two more arrive unsigned.
        ledger.close().await;
        store
            .append_consents((4..6).map(record).collect())
            .await
            .unwrap();
        let verdict = verify_ledger(store.clone(), &options, |_| {})
            .await
            .unwrap();
        let Verdict::Intact(report) = verdict else {
            panic!("recent uncovered records are not tampering: {verdict:?}");
        };
        let u = report.uncovered.unwrap();
        assert_eq!((u.first_seq, u.count), (5, 2));
        assert!(
            report
                .unproven()
                .iter()
                .any(|l| l.contains("not yet covered"))
        );
        options.now = at + 120_000;
        match verify_ledger(store.clone(), &options, |_| {})
            .await
            .unwrap()
        {
            Verdict::Tampered { finding, .. } => {
                assert_eq!((finding.seq, finding.code), (5, "ledger.uncovered"));
            }
            other => panic!("old uncovered records passed: {other:?}"),
        }
        // The next checkpoint (a restart) covers them.
        let ledger = Ledger::new(store.clone(), key.clone());
        assert_eq!(
            ledger.checkpoint_now().await.unwrap().map(|c| c.seq),
            Some(6)
        );
        assert!(matches!(
            verify_ledger(store.clone(), &options, |_| {})
                .await
                .unwrap(),
            Verdict::Intact(_)
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
            verify_ledger(store.clone(), &VerifyOptions::new(keys), |_| {})
                .await
                .unwrap(),
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
