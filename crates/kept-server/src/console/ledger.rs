//! The ledger page's work: a verification run in the background with its progress (one at a
//! time; the page shows how far it got and, once done, what it proved and what it could not),
//! the witness compared with the database, and a receipt checked against the ledger.

use crate::consent::ledger::{Verdict, VerifyOptions, published_verifying_keys, verify_ledger};
use crate::consent::witness::read_witness;
use kept_core::UnixMillis;
use kept_store::{Store, StoreError};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How a finished verification ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Intact {
        proven: Vec<String>,
        unproven: Vec<String>,
    },
    Tampered {
        seq: u64,
        code: &'static str,
        message: String,
    },
    /// Checkpoints exist but no key to check them with was published.
    NoKey,
    /// The store could not be read.
    Failed(String),
}

/// One verification, running or done.
#[derive(Debug)]
struct Run {
    by: String,
    started_at: UnixMillis,
    total: u64,
    done: Arc<AtomicU64>,
    outcome: Option<(Outcome, UnixMillis)>,
}

/// A run as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunView {
    pub by: String,
    pub started_at: UnixMillis,
    pub total: u64,
    pub done: u64,
    pub outcome: Option<(Outcome, UnixMillis)>,
}

/// The last verification started from the console.
#[derive(Debug, Default)]
pub struct Runs {
    last: Mutex<Option<Run>>,
}

impl Runs {
    /// The last run, if there was one.
    pub fn view(&self) -> Option<RunView> {
        let last = self.last.lock().ok()?;
        last.as_ref().map(|r| RunView {
            by: r.by.clone(),
            started_at: r.started_at,
            total: r.total,
            done: r.done.load(Ordering::Relaxed),
            outcome: r.outcome.clone(),
        })
    }

    pub fn running(&self) -> bool {
        self.view().is_some_and(|v| v.outcome.is_none())
    }
}

/// Starts a verification of the ledger in `store` (against the keys the database publishes
/// and the witness file, if there is one) unless one is running: `false` when one is.
pub async fn start(
    runs: Arc<Runs>,
    store: Arc<dyn Store>,
    witness: Option<PathBuf>,
    by: String,
    clock: crate::clock::Clock,
) -> Result<bool, StoreError> {
    let total = store.ledger_len().await?;
    let done = Arc::new(AtomicU64::new(0));
    {
        let Ok(mut last) = runs.last.lock() else {
            return Ok(false);
        };
        if last.as_ref().is_some_and(|r| r.outcome.is_none()) {
            return Ok(false);
        }
        *last = Some(Run {
            by,
            started_at: clock(),
            total,
            done: done.clone(),
            outcome: None,
        });
    }
    tokio::spawn(async move {
        let outcome = verify(store, witness, done, clock.clone()).await;
        if let Ok(mut last) = runs.last.lock()
            && let Some(run) = last.as_mut()
        {
            run.outcome = Some((outcome, clock()));
        }
    });
    Ok(true)
}

async fn verify(
    store: Arc<dyn Store>,
    witness: Option<PathBuf>,
    done: Arc<AtomicU64>,
    clock: crate::clock::Clock,
) -> Outcome {
    let keys = match published_verifying_keys(store.as_ref()).await {
        Ok(k) => k,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let mut options = VerifyOptions::new(keys);
    options.now = clock();
    if let Some(path) = witness {
        match read_witness(&path) {
            Ok((checkpoints, _)) => options.witness = Some(checkpoints),
            Err(e) => return Outcome::Failed(e.to_string()),
        }
    }
    let verdict = verify_ledger(store, &options, move |n| done.store(n, Ordering::Relaxed)).await;
    match verdict {
        Ok(Verdict::Intact(report)) => Outcome::Intact {
            proven: report.proven(),
            unproven: report.unproven(),
        },
        Ok(Verdict::Tampered { finding, .. }) => Outcome::Tampered {
            seq: finding.seq,
            code: finding.code,
            message: finding.message,
        },
        Ok(Verdict::NoKey(_)) => Outcome::NoKey,
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// Where the witness stands beside the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WitnessState {
    /// No witness file is kept.
    Off,
    /// The file's last checkpoint is the database's checkpoint at that record.
    Agrees {
        path: String,
        last_seq: u64,
    },
    /// The file holds nothing yet.
    Empty {
        path: String,
    },
    /// The file's last checkpoint is not in the database as it is.
    Disagrees {
        path: String,
        last_seq: u64,
    },
    Unreadable {
        path: String,
        error: String,
    },
}

/// Compares the witness file's last checkpoint with the database's.
pub async fn witness_state(
    store: &dyn Store,
    witness: Option<PathBuf>,
) -> Result<WitnessState, StoreError> {
    let Some(path) = witness else {
        return Ok(WitnessState::Off);
    };
    let shown = path.display().to_string();
    let last = match read_witness(&path) {
        Ok((checkpoints, _)) => checkpoints.into_iter().max_by_key(|c| c.seq),
        Err(e) => {
            return Ok(WitnessState::Unreadable {
                path: shown,
                error: e.to_string(),
            });
        }
    };
    let Some(last) = last else {
        return Ok(WitnessState::Empty { path: shown });
    };
    let stored = store.checkpoint_covering(last.seq).await?;
    Ok(if stored.as_ref() == Some(&last) {
        WitnessState::Agrees {
            path: shown,
            last_seq: last.seq,
        }
    } else {
        WitnessState::Disagrees {
            path: shown,
            last_seq: last.seq,
        }
    })
}

/// What checking a receipt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptCheck {
    /// Signed by a key the ledger publishes, and the ledger holds the record it describes.
    Valid {
        seq: u64,
        subject: u32,
        purpose: String,
        action: String,
        at: UnixMillis,
    },
    Invalid {
        code: &'static str,
        message: String,
    },
}

/// Checks a pasted receipt: its signature, that the key is one the ledger publishes, and
/// that the ledger's record at its position says what the receipt says.
pub async fn check_receipt(store: &dyn Store, text: &str) -> Result<ReceiptCheck, StoreError> {
    let invalid = |code: &'static str, message: String| Ok(ReceiptCheck::Invalid { code, message });
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return invalid("receipt.not_json", format!("the receipt is not JSON: {e}")),
    };
    let verified = match kept_core::receipt::verify(&value, None) {
        Ok(v) => v,
        Err(e) => return invalid(e.code(), e.to_string()),
    };
    let keys = published_verifying_keys(store).await?;
    if !keys
        .iter()
        .any(|k| kept_core::ledger::key_id(k) == verified.key_id)
    {
        return invalid(
            "receipt.unknown_key",
            format!(
                "the receipt is signed by key {}, which this ledger does not publish",
                verified.key_id
            ),
        );
    }
    let row = store
        .ledger_rows(verified.seq.saturating_sub(1), 1)
        .await?
        .into_iter()
        .find(|r| r.seq == verified.seq);
    let record = row.and_then(|r| kept_core::ledger::decode(&r.bytes).ok());
    let Some(record) = record else {
        return invalid(
            "receipt.not_in_ledger",
            format!("the ledger holds no record {}", verified.seq),
        );
    };
    if record.subject.0 != verified.subject
        || record.purpose != verified.purpose
        || record.action.as_str() != verified.action
        || record.at != verified.at
    {
        return invalid(
            "receipt.not_in_ledger",
            format!(
                "the ledger's record {} is not the one the receipt describes",
                verified.seq
            ),
        );
    }
    Ok(ReceiptCheck::Valid {
        seq: verified.seq,
        subject: verified.subject,
        purpose: verified.purpose,
        action: verified.action,
        at: verified.at,
    })
}
