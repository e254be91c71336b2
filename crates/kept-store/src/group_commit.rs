//! Group commit: concurrent writers hand their items to one committer task, which writes
//! whatever has queued up in a single transaction and then answers each writer. A batch that
//! extends the ledger ends with a signed checkpoint of its tip, in the same transaction.
//!
//! INVARIANT: a writer is answered `Ok` only after the transaction holding its item committed;
//! when a batch fails, every writer of that batch gets the error and nothing of it is written.
//! With a signer installed, no committed record is ever without a checkpoint covering it.
//! `run` answers only once `write_batch` has returned, and asserts in debug builds that a batch
//! has one waiting writer per item (so each is answered, with its output or the batch's error).
//! That `write_batch` returns only after its commit is each backend's part: the conformance
//! cases `close_refuses_later_writes` and `every_batch_ends_with_a_chained_checkpoint` check it
//! with the checkpoints, and `a_failed_batch_fails_every_writer_in_it` the failing batch.

use crate::{Result, StoreError};
use async_trait::async_trait;
use kept_core::ledger::{ChainHash, Checkpoint, ConsentRecord, LedgerEntry};
use kept_core::subject::Contact;
use std::fmt;
use std::sync::{Arc, RwLock};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Writes one batch of queued items in one transaction. Each backend implements it once.
#[async_trait]
pub trait BatchWriter: Send + 'static {
    type Item: Send + 'static;
    type Output: Send + 'static;

    /// Writes `items` in one transaction and returns one output per item, in order. Returns
    /// only after the commit; on error nothing of the batch may have been written.
    async fn write_batch(&mut self, items: Vec<Self::Item>) -> Result<Vec<Self::Output>>;

    /// How much of a batch's cap one item takes (its number of rows, say).
    fn weight(_item: &Self::Item) -> usize {
        1
    }
}

enum Message<I, O> {
    Write {
        item: I,
        reply: oneshot::Sender<Result<O>>,
    },
    Close,
}

/// The writers' side of a committer task.
pub struct GroupCommit<W: BatchWriter> {
    tx: mpsc::Sender<Message<W::Item, W::Output>>,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl<W: BatchWriter> fmt::Debug for GroupCommit<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupCommit")
            .field("closed", &self.tx.is_closed())
            .finish()
    }
}

/// How many writers may wait in the queue before `submit` itself waits (back pressure).
const QUEUE: usize = 8192;

impl<W: BatchWriter> GroupCommit<W> {
    /// Spawns the committer on the current Tokio runtime. A batch holds items until their
    /// weights reach `max_batch` (an item heavier than that still goes, alone or almost).
    pub fn start(writer: W, max_batch: usize) -> GroupCommit<W> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(run(writer, rx, max_batch.max(1)));
        GroupCommit {
            tx,
            task: std::sync::Mutex::new(Some(task)),
        }
    }

    /// Queues `item` and waits until the transaction holding it has committed. If the caller
    /// stops waiting, the item is still written.
    pub async fn submit(&self, item: W::Item) -> Result<W::Output> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Message::Write { item, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Writes everything already queued, then stops the committer; later `submit`s fail with
    /// `Closed`. Safe to call more than once.
    pub async fn close(&self) {
        // A full queue only delays the close; a closed one means the committer is already
        // stopping.
        let _ = self.tx.send(Message::Close).await;
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "the group committer stopped abnormally");
        }
    }
}

async fn run<W: BatchWriter>(
    mut writer: W,
    mut rx: mpsc::Receiver<Message<W::Item, W::Output>>,
    max_batch: usize,
) {
    let mut items = Vec::new();
    let mut replies = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut weight = 0;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Write { item, reply } => {
                    weight += W::weight(&item);
                    items.push(item);
                    replies.push(reply);
                }
                // Refuse new writers but keep draining the ones already queued.
                Message::Close => rx.close(),
            }
            if weight < max_batch {
                next = rx.try_recv().ok();
            }
        }
        if items.is_empty() {
            continue;
        }
        let count = items.len();
        debug_assert_eq!(replies.len(), count, "one waiting writer per queued item");
        match writer.write_batch(std::mem::take(&mut items)).await {
            Ok(outputs) if outputs.len() == count => {
                for (reply, output) in replies.drain(..).zip(outputs) {
                    // A writer that stopped waiting still had its item committed.
                    let _ = reply.send(Ok(output));
                }
            }
            Ok(outputs) => {
                let error = StoreError::Database(format!(
                    "a batch of {count} writes produced {} results",
                    outputs.len()
                ));
                for reply in replies.drain(..) {
                    let _ = reply.send(Err(error.clone()));
                }
            }
            Err(error) => {
                for reply in replies.drain(..) {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// A hot write the backends batch through their committer: ledger appends and sent messages.
#[derive(Debug, Clone)]
pub enum HotWrite {
    /// Records appended atomically, in order, after the tip.
    Consents(Vec<ConsentRecord>),
    /// Sent messages, with the uses they were (in the same transaction); or uses alone.
    Contacts(Vec<Contact>, Vec<crate::UseRecord>),
    /// Nothing to write, but the batch must end with a checkpoint if its tip has none yet
    /// (records appended before a signer was installed, or by another process).
    Checkpoint,
}

/// What a [`HotWrite`] produced.
#[derive(Debug, Clone)]
pub enum HotWritten {
    Entries(Vec<LedgerEntry>),
    Contacts,
    /// The checkpoint the batch signed, if it signed one.
    Checkpoint(Option<Checkpoint>),
}

/// Signs the checkpoint a ledger batch ends with. The ledger service installs one in its store
/// (`Store::set_checkpoint_signer`) once its verifying key is published.
pub trait CheckpointSigner: Send + Sync + fmt::Debug {
    /// A version 2 checkpoint of `(seq, hash)` chained after the checkpoint whose digest is
    /// `prev` (`ChainHash::GENESIS` when there is none).
    fn sign(&self, seq: u64, hash: ChainHash, prev: ChainHash) -> Checkpoint;
    /// Told of each checkpoint once the transaction holding it committed, in order (for the
    /// witness). Must not block.
    fn committed(&self, checkpoint: &Checkpoint);
}

/// The signer a store and its committer share; empty until the ledger service installs one.
#[derive(Debug, Clone, Default)]
pub struct SignerSlot(Arc<RwLock<Option<Arc<dyn CheckpointSigner>>>>);

impl SignerSlot {
    pub fn set(&self, signer: Option<Arc<dyn CheckpointSigner>>) {
        if let Ok(mut slot) = self.0.write() {
            *slot = signer;
        }
    }

    pub fn get(&self) -> Option<Arc<dyn CheckpointSigner>> {
        self.0.read().ok().and_then(|slot| slot.clone())
    }
}

/// The last checkpoint as the committer needs it: its position and its digest (`(0, GENESIS)`
/// before the first).
pub type LastCheckpoint = (u64, ChainHash);

/// The checkpoint a batch ending at `tip` must carry: one when a signer is installed and the
/// tip lies beyond the last checkpoint. `before` is the tip the batch found: records between
/// the last checkpoint and it were committed without one (by another writer, or an older
/// release), and signing over them is logged, so that an operator can account for them.
pub fn plan_checkpoint(
    signer: Option<&Arc<dyn CheckpointSigner>>,
    before: u64,
    tip: (u64, ChainHash),
    last: LastCheckpoint,
) -> Option<Checkpoint> {
    let signer = signer?;
    if tip.0 <= last.0 {
        return None;
    }
    if before > last.0 {
        tracing::warn!(
            first = last.0 + 1,
            last = before,
            checkpoint = tip.0,
            "ledger records were committed without a checkpoint (another writer, or an older release); this checkpoint covers them"
        );
    }
    Some(signer.sign(tip.0, tip.1, last.1))
}

impl HotWrite {
    /// Rows the write inserts, for the batch cap.
    pub fn rows(&self) -> usize {
        match self {
            HotWrite::Consents(r) => r.len(),
            HotWrite::Contacts(c, u) => c.len() + u.len(),
            HotWrite::Checkpoint => 1,
        }
        .max(1)
    }
}

/// A ledger row ready to insert: the entry plus the columns derived from its record.
#[derive(Debug, Clone)]
pub struct ChainedRow {
    pub entry: LedgerEntry,
    pub subject: i64,
    pub at: i64,
}

/// Chains every consent of `batch` after the tip `(seq, hash)`, in queue order, and collects
/// the contacts. Returns the new tip with the rows to insert.
pub fn plan_hot_batch(
    tip: (u64, ChainHash),
    batch: &[HotWrite],
) -> (u64, ChainHash, Vec<ChainedRow>, Vec<&Contact>) {
    let (mut seq, mut hash) = tip;
    let mut rows = Vec::new();
    let mut contacts = Vec::new();
    for write in batch {
        match write {
            HotWrite::Consents(records) => {
                for record in records {
                    seq += 1;
                    let entry = LedgerEntry::chain(&hash, seq, record);
                    hash = entry.hash;
                    rows.push(ChainedRow {
                        entry,
                        subject: i64::from(record.subject.0),
                        at: record.at,
                    });
                }
            }
            HotWrite::Contacts(c, _) => contacts.extend(c),
            HotWrite::Checkpoint => {}
        }
    }
    (seq, hash, rows, contacts)
}

/// Whether the batch must lock the ledger's tip: it appends, or asks for a checkpoint.
pub fn touches_ledger(batch: &[HotWrite]) -> bool {
    batch
        .iter()
        .any(|w| matches!(w, HotWrite::Consents(_) | HotWrite::Checkpoint))
}

/// The uses recorded with the contacts of `batch`, in queue order.
pub fn hot_batch_uses(batch: &[HotWrite]) -> Vec<&crate::UseRecord> {
    batch
        .iter()
        .flat_map(|write| match write {
            HotWrite::Contacts(_, uses) => uses.as_slice(),
            HotWrite::Consents(_) | HotWrite::Checkpoint => &[],
        })
        .collect()
}

/// Hands each write of a committed batch its result, taking the entries from `rows` in order.
pub fn answer_hot_batch(
    batch: &[HotWrite],
    rows: Vec<ChainedRow>,
    checkpoint: Option<&Checkpoint>,
) -> Vec<HotWritten> {
    let mut rows = rows.into_iter();
    batch
        .iter()
        .map(|write| match write {
            HotWrite::Consents(records) => {
                HotWritten::Entries(rows.by_ref().take(records.len()).map(|r| r.entry).collect())
            }
            HotWrite::Contacts(..) => HotWritten::Contacts,
            HotWrite::Checkpoint => HotWritten::Checkpoint(checkpoint.cloned()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Recorder {
        batches: Arc<AtomicUsize>,
        fail_with: Option<u32>,
    }

    #[async_trait]
    impl BatchWriter for Recorder {
        type Item = u32;
        type Output = u32;
        async fn write_batch(&mut self, items: Vec<u32>) -> Result<Vec<u32>> {
            self.batches.fetch_add(1, Ordering::SeqCst);
            if self.fail_with.is_some_and(|bad| items.contains(&bad)) {
                return Err(StoreError::Database("refused".into()));
            }
            Ok(items.into_iter().map(|i| i * 2).collect())
        }
    }

    #[tokio::test]
    async fn every_writer_gets_its_own_answer() {
        let batches = Arc::new(AtomicUsize::new(0));
        let gc = Arc::new(GroupCommit::start(
            Recorder {
                batches: batches.clone(),
                fail_with: None,
            },
            64,
        ));
        let tasks: Vec<_> = (0..200u32)
            .map(|i| {
                let gc = gc.clone();
                tokio::spawn(async move { (i, gc.submit(i).await) })
            })
            .collect();
        for t in tasks {
            let (i, out) = t.await.unwrap();
            assert_eq!(out.unwrap(), i * 2);
        }
        assert!(batches.load(Ordering::SeqCst) <= 200);
        gc.close().await;
        assert!(matches!(gc.submit(1).await, Err(StoreError::Closed)));
    }

    #[tokio::test]
    async fn a_failed_batch_fails_every_writer_in_it() {
        let gc = GroupCommit::start(
            Recorder {
                batches: Arc::new(AtomicUsize::new(0)),
                fail_with: Some(7),
            },
            64,
        );
        assert!(gc.submit(7).await.is_err());
        assert_eq!(gc.submit(8).await.unwrap(), 16);
    }
}
