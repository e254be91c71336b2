//! The decision log's writer: every denied decision and a sample of allowed ones are handed here
//! by the request that made them, queued in memory and written by one task in batches (one
//! transaction per batch). A request never waits for the log: when the queue is full its
//! entries are dropped, counted (`kept_decision_log_dropped_total`, and in the log's API
//! answer) and warned about, at most once a minute. Uses are not logged here: they go to the
//! record of uses (`crate::decide::uses`), which never drops.

use kept_core::decision::ReasonCode;
use kept_core::{SubjectId, UnixMillis};
use kept_store::{DecisionLogEntry, Store};
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

pub const DECISION_LOG_WRITTEN: &str = "kept_decision_log_written_total";
pub const DECISION_LOG_DROPPED: &str = "kept_decision_log_dropped_total";
pub const DECISION_LOG_FAILED: &str = "kept_decision_log_failed_total";

/// Entries waiting to be written at most unless started otherwise; past this, new ones are
/// dropped.
pub const DEFAULT_CAPACITY: usize = 200_000;
/// How often at most a full queue is warned about.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// Entries written per transaction at most, so a burst does not hold the write connection long.
const MAX_BATCH: usize = 5_000;

/// What the request path hands over: one request's entries, sharing their request texts.
#[derive(Debug, Default)]
pub struct Pending {
    /// When the request was asked.
    pub asked_at: UnixMillis,
    /// The public id of the key that asked.
    pub caller: String,
    pub requests: Vec<LoggedRequest>,
    pub items: Vec<PendingItem>,
    /// Evidence and obligations JSON of every item, back to back.
    pub text: Vec<u8>,
}

/// What was asked (shared by the items that asked the same).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoggedRequest {
    pub purpose: String,
    pub channel: Option<String>,
    pub topic: Option<String>,
    pub categories: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct PendingItem {
    pub subject: Option<SubjectId>,
    /// The time decided for (the request's `at`, else when it was asked).
    pub at: UnixMillis,
    /// Position in `Pending::requests`.
    pub request: u32,
    pub reason: ReasonCode,
    pub evidence: Range<usize>,
    pub obligations: Range<usize>,
}

impl Pending {
    pub fn new(asked_at: UnixMillis, caller: &str) -> Pending {
        Pending {
            asked_at,
            caller: caller.to_owned(),
            ..Pending::default()
        }
    }

    /// Adds an item decided for `at` whose evidence and obligations JSON are `evidence` and
    /// `obligations`.
    pub fn push(
        &mut self,
        subject: Option<SubjectId>,
        at: UnixMillis,
        request: u32,
        reason: ReasonCode,
        evidence: &[u8],
        obligations: &[u8],
    ) {
        let start = self.text.len();
        self.text.extend_from_slice(evidence);
        let middle = self.text.len();
        self.text.extend_from_slice(obligations);
        self.items.push(PendingItem {
            subject,
            at,
            request,
            reason,
            evidence: start..middle,
            obligations: middle..self.text.len(),
        });
    }

    fn into_entries(self) -> Vec<DecisionLogEntry> {
        let text = |r: &Range<usize>| {
            self.text
                .get(r.clone())
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_else(|| "[]".to_owned())
        };
        self.items
            .iter()
            .map(|item| {
                let request = self
                    .requests
                    .get(item.request as usize)
                    .cloned()
                    .unwrap_or_default();
                DecisionLogEntry {
                    id: 0,
                    at: item.at,
                    asked_at: self.asked_at,
                    subject: item.subject,
                    purpose: request.purpose,
                    channel: request.channel,
                    topic: request.topic,
                    categories: request.categories,
                    allowed: item.reason.is_allowed(),
                    reason: item.reason.as_str().to_owned(),
                    evidence: text(&item.evidence),
                    obligations: text(&item.obligations),
                    caller: self.caller.clone(),
                }
            })
            .collect()
    }
}

enum Message {
    Write(Pending),
    Close,
}

/// A cheap, cloneable handle on the log writer.
#[derive(Clone)]
pub struct DecisionLog {
    shared: Arc<Shared>,
}

struct Shared {
    tx: Option<mpsc::UnboundedSender<Message>>,
    queued: AtomicUsize,
    /// Entries waiting at most.
    capacity: usize,
    /// Entries dropped since start.
    dropped: AtomicU64,
    /// When a full queue was last warned about.
    warned: Mutex<Option<Instant>>,
    /// The sample rate of allowed decisions, as a threshold on a 64-bit random draw.
    threshold: AtomicU64,
    /// How long entries are kept, in milliseconds.
    retention_ms: AtomicU64,
    seed: AtomicU64,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Notified after every batch.
    written: Notify,
}

impl fmt::Debug for DecisionLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecisionLog")
            .field("queued", &self.shared.queued.load(Ordering::Relaxed))
            .field("sample_rate", &self.sample_rate())
            .finish()
    }
}

fn threshold(rate: f64) -> u64 {
    if rate.is_nan() || rate <= 0.0 {
        0
    } else if rate >= 1.0 {
        u64::MAX
    } else {
        (rate * u64::MAX as f64) as u64
    }
}

impl DecisionLog {
    /// Starts the writer on the current Tokio runtime. Outside a runtime nothing is written
    /// (every entry counts as dropped).
    pub fn start(store: Arc<dyn Store>) -> DecisionLog {
        DecisionLog::start_with_capacity(store, DEFAULT_CAPACITY)
    }

    /// Starts the writer with room for `capacity` waiting entries (0: every entry is dropped,
    /// which tests use to stand for an overloaded log).
    pub fn start_with_capacity(store: Arc<dyn Store>, capacity: usize) -> DecisionLog {
        let runtime = tokio::runtime::Handle::try_current().ok();
        let (tx, rx) = match runtime {
            Some(_) => {
                let (tx, rx) = mpsc::unbounded_channel();
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let shared = Arc::new(Shared {
            tx,
            queued: AtomicUsize::new(0),
            capacity,
            dropped: AtomicU64::new(0),
            warned: Mutex::new(None),
            threshold: AtomicU64::new(threshold(
                f64::from(crate::config::DEFAULT_DECISION_LOG_SAMPLE_PPM) / 1e6,
            )),
            retention_ms: AtomicU64::new(
                u64::try_from(crate::config::DEFAULT_DECISION_LOG_RETENTION.as_millis())
                    .unwrap_or(u64::MAX),
            ),
            seed: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
            task: Mutex::new(None),
            written: Notify::new(),
        });
        if let (Some(rx), Some(runtime)) = (rx, runtime) {
            let handle = runtime.spawn(write_loop(store, rx, Arc::downgrade(&shared)));
            if let Ok(mut slot) = shared.task.lock() {
                *slot = Some(handle);
            }
        }
        DecisionLog { shared }
    }

    /// Logs this share (0 to 1) of allowed decisions; denied ones are always logged.
    pub fn set_sample_rate(&self, rate: f64) {
        self.shared
            .threshold
            .store(threshold(rate), Ordering::Relaxed);
    }

    pub fn set_retention(&self, keep: Duration) {
        let ms = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX);
        self.shared.retention_ms.store(ms, Ordering::Relaxed);
    }

    /// Entries made before this are deleted by the retention job.
    pub fn cutoff(&self, now: UnixMillis) -> UnixMillis {
        let keep = self.shared.retention_ms.load(Ordering::Relaxed);
        now.saturating_sub(UnixMillis::try_from(keep).unwrap_or(UnixMillis::MAX))
    }

    pub fn sample_rate(&self) -> f64 {
        self.shared.threshold.load(Ordering::Relaxed) as f64 / u64::MAX as f64
    }

    /// A sampler for one request's allowed decisions.
    pub fn sampler(&self) -> Sampler {
        let seed = self
            .shared
            .seed
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        Sampler {
            state: splitmix(seed) | 1,
            threshold: self.shared.threshold.load(Ordering::Relaxed),
        }
    }

    /// Whether `n` more entries would fit in the queue now (a request that would only have
    /// them dropped skips collecting them).
    pub fn has_room(&self, n: usize) -> bool {
        self.shared.tx.is_some()
            && self.shared.queued.load(Ordering::Relaxed) + n <= self.shared.capacity
    }

    /// Counts entries dropped without being collected, and warns (at most once a minute).
    pub fn dropped(&self, n: usize) {
        if n == 0 {
            return;
        }
        metrics::counter!(DECISION_LOG_DROPPED).increment(n as u64);
        let total = self.shared.dropped.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        let due = match self.shared.warned.lock() {
            Ok(mut last) => {
                let due = last.is_none_or(|t| t.elapsed() >= WARN_EVERY);
                if due {
                    *last = Some(Instant::now());
                }
                due
            }
            Err(_) => false,
        };
        if due {
            tracing::warn!(
                dropped = total,
                "the decision log is full: entries are dropped ({total} since start); uses are \
                 recorded in full regardless"
            );
        }
    }

    /// Entries dropped since start because the queue was full.
    pub fn dropped_total(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Queues a request's entries, or drops and counts them when the queue is full.
    pub fn submit(&self, pending: Pending) {
        let n = pending.items.len();
        if n == 0 {
            return;
        }
        let Some(tx) = &self.shared.tx else {
            self.dropped(n);
            return;
        };
        let queued = self.shared.queued.fetch_add(n, Ordering::AcqRel);
        if queued + n > self.shared.capacity || tx.send(Message::Write(pending)).is_err() {
            self.shared.queued.fetch_sub(n, Ordering::AcqRel);
            self.dropped(n);
        }
    }

    /// Writes what is queued, then stops the writer; later entries are dropped.
    pub async fn close(&self) {
        if let Some(tx) = &self.shared.tx {
            let _ = tx.send(Message::Close);
        }
        let task = self.shared.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "the decision log writer stopped abnormally");
        }
    }

    /// Waits until everything queued so far has been written (or has failed to be).
    pub async fn flush(&self) {
        loop {
            let written = self.shared.written.notified();
            tokio::pin!(written);
            // Registered before the check, so a batch finishing in between still wakes us.
            written.as_mut().enable();
            if self.shared.queued.load(Ordering::Acquire) == 0 || self.shared.tx.is_none() {
                return;
            }
            written.await;
        }
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Draws which allowed decisions to log: xorshift, good enough for sampling and far cheaper
/// than a cryptographic generator per decision.
#[derive(Debug, Clone)]
pub struct Sampler {
    state: u64,
    threshold: u64,
}

impl Sampler {
    pub fn hit(&mut self) -> bool {
        if self.threshold == 0 {
            return false;
        }
        if self.threshold == u64::MAX {
            return true;
        }
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x < self.threshold
    }
}

async fn write_loop(
    store: Arc<dyn Store>,
    mut rx: mpsc::UnboundedReceiver<Message>,
    shared: std::sync::Weak<Shared>,
) {
    // After `Close` the channel refuses new entries but still yields the queued ones, then
    // ends: everything accepted is written.
    while let Some(first) = rx.recv().await {
        let mut batch = Vec::new();
        let mut rows = 0;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Write(pending) => {
                    rows += pending.items.len();
                    batch.push(pending);
                }
                Message::Close => rx.close(),
            }
            if rows < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if rows > 0 {
            write(&store, batch, rows).await;
        }
        if let Some(shared) = shared.upgrade() {
            shared.queued.fetch_sub(rows, Ordering::AcqRel);
            shared.written.notify_waiters();
        }
    }
}

/// Converts and writes one batch on a blocking thread: under a flood of denials this is the
/// busiest work in the server, and it must not hold the async workers that answer requests.
async fn write(store: &Arc<dyn Store>, batch: Vec<Pending>, rows: usize) {
    let store = store.clone();
    let runtime = tokio::runtime::Handle::current();
    let written = tokio::task::spawn_blocking(move || {
        let entries = batch.into_iter().flat_map(Pending::into_entries).collect();
        runtime.block_on(store.append_decision_log(entries))
    })
    .await;
    match written {
        Ok(Ok(())) => metrics::counter!(DECISION_LOG_WRITTEN).increment(rows as u64),
        Ok(Err(e)) => {
            metrics::counter!(DECISION_LOG_FAILED).increment(rows as u64);
            tracing::warn!(code = e.code(), error = %e, entries = rows, "decision log write failed");
        }
        Err(e) => {
            metrics::counter!(DECISION_LOG_FAILED).increment(rows as u64);
            tracing::error!(error = %e, entries = rows, "the decision log write stopped abnormally");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sampler_hits_about_its_rate() {
        let mut s = Sampler {
            state: splitmix(7) | 1,
            threshold: threshold(0.01),
        };
        let hits = (0..100_000).filter(|_| s.hit()).count();
        assert!((700..1300).contains(&hits), "{hits}");
        let mut never = Sampler {
            state: 1,
            threshold: threshold(0.0),
        };
        assert!(!(0..1000).any(|_| never.hit()));
        let mut always = Sampler {
            state: 1,
            threshold: threshold(1.0),
        };
        assert!((0..1000).all(|_| always.hit()));
    }
}
