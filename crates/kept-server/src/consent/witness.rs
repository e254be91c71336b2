//! A witness outside the database for the ledger and, in a file of its own, for the requests
//! log: every checkpoint, once committed, is appended to
//! a file and fsync'd (one line per checkpoint, `Checkpoint::to_witness_line`), and optionally
//! POSTed to a URL. Neither ever holds up an append: a dedicated thread writes the file, one
//! fsync per group of lines and at most one every `SYNC_EVERY` (unless a flush is asked for),
//! and a task posts with retries. A crash may leave the file a few checkpoints behind the
//! database, which a verification reads as a witness that has not seen the newest ones yet;
//! never ahead of it, since a line is written only after its checkpoint committed.

use kept_core::ledger::{Checkpoint, WitnessLineError};
use std::collections::VecDeque;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

/// Lines kept for the URL while it is unreachable; beyond, the oldest are dropped (the file
/// still has them).
const MAX_PENDING_POSTS: usize = 100_000;
/// Lines per POST.
const POST_BATCH: usize = 1_000;
/// The longest wait between two attempts at the URL.
const MAX_RETRY: Duration = Duration::from_secs(60);
/// The shortest time between two fsyncs of the witness file, so that it does not compete with
/// the database's own commits for the disk (every group commit signs a checkpoint). Lines that
/// come meanwhile are gathered into the next write.
const SYNC_EVERY: Duration = Duration::from_millis(50);

/// A witness that could not be set up or read.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    #[error("cannot open the witness `{path}`: {message}")]
    Open { path: PathBuf, message: String },
    #[error("the witness `{path}` line {line} is not a checkpoint: {error}")]
    Line {
        path: PathBuf,
        line: usize,
        error: WitnessLineError,
    },
}

impl WitnessError {
    pub fn code(&self) -> &'static str {
        match self {
            WitnessError::Open { .. } => "ledger.witness_open",
            WitnessError::Line { .. } => "ledger.witness_line",
        }
    }
}

enum Message {
    Line(String),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Appends checkpoints to the witness file (and the URL) in the order they committed.
pub struct Witness {
    path: PathBuf,
    tx: Mutex<Option<mpsc::Sender<Message>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    poster: Option<tokio::task::JoinHandle<()>>,
}

impl fmt::Debug for Witness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a token: only whether there is one.
        f.debug_struct("Witness")
            .field("path", &self.path)
            .field("posts", &self.poster.is_some())
            .finish()
    }
}

impl Witness {
    /// Opens (creating it and its folder) the witness file for appending, and starts posting to
    /// `url` when given (inside a Tokio runtime), retrying after `retry`, doubling up to a
    /// minute.
    pub fn open(path: &Path, url: Option<&str>, retry: Duration) -> Result<Witness, WitnessError> {
        let open_error = |e: std::io::Error| WitnessError::Open {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(open_error)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(open_error)?;
        let (posts, poster) = match url {
            Some(url) => {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .map_err(|e| WitnessError::Open {
                        path: path.to_path_buf(),
                        message: format!("cannot start the witness URL's client: {e}"),
                    })?;
                let task = tokio::spawn(post_lines(client, url.to_owned(), rx, retry));
                (Some(tx), Some(task))
            }
            None => (None, None),
        };
        let (tx, rx) = mpsc::channel();
        let shown = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("kept-witness".into())
            .spawn(move || write_lines(file, &shown, rx, posts))
            .map_err(open_error)?;
        Ok(Witness {
            path: path.to_path_buf(),
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            poster,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a committed checkpoint. Never blocks.
    pub fn record(&self, checkpoint: &Checkpoint) {
        self.send(Message::Line(checkpoint.to_witness_line()));
    }

    fn send(&self, message: Message) -> bool {
        match self.tx.lock().ok().and_then(|tx| tx.clone()) {
            Some(tx) => tx.send(message).is_ok(),
            None => false,
        }
    }

    /// Waits until every checkpoint queued so far is in the file and fsync'd.
    pub async fn flush(&self) {
        let (done, written) = tokio::sync::oneshot::channel();
        if self.send(Message::Flush(done)) {
            let _ = written.await;
        }
    }

    /// Writes what is queued and stops the writer; later checkpoints are not witnessed.
    pub async fn close(&self) {
        self.flush().await;
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        if let Some(poster) = &self.poster {
            poster.abort();
        }
    }
}

/// The writer thread: each wake-up gathers the queued lines (waiting, when the last fsync was
/// less than `SYNC_EVERY` ago and nobody asked for a flush, until then), writes them, then one
/// fsync.
fn write_lines(
    mut file: std::fs::File,
    path: &Path,
    rx: mpsc::Receiver<Message>,
    posts: Option<tokio::sync::mpsc::UnboundedSender<Vec<String>>>,
) {
    let mut last_sync: Option<std::time::Instant> = None;
    while let Ok(first) = rx.recv() {
        let mut lines = Vec::new();
        let mut flushes = Vec::new();
        let mut next = Some(first);
        loop {
            while let Some(message) = next.take() {
                match message {
                    Message::Line(line) => lines.push(line),
                    Message::Flush(done) => flushes.push(done),
                }
                next = rx.try_recv().ok();
            }
            let left =
                last_sync.map_or(Duration::ZERO, |at| SYNC_EVERY.saturating_sub(at.elapsed()));
            if !flushes.is_empty() || left.is_zero() {
                break;
            }
            match rx.recv_timeout(left) {
                Ok(message) => next = Some(message),
                Err(_) => break,
            }
        }
        if !lines.is_empty() {
            let mut text = lines.join("\n");
            text.push('\n');
            let written = file
                .write_all(text.as_bytes())
                .and_then(|()| file.sync_data());
            last_sync = Some(std::time::Instant::now());
            if let Err(e) = written {
                // The checkpoints are in the database; the witness of these is lost.
                tracing::error!(error = %e, path = %path.display(), lines = lines.len(), "writing the ledger witness failed");
            }
            if let Some(posts) = &posts {
                let _ = posts.send(lines);
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// The poster task: sends queued lines, oldest first, until the URL answers 2xx.
async fn post_lines(
    client: reqwest::Client,
    url: String,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Vec<String>>,
    retry: Duration,
) {
    let mut pending: VecDeque<String> = VecDeque::new();
    let mut wait = retry;
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(lines) => pending.extend(lines),
                None => return,
            }
        }
        while let Ok(lines) = rx.try_recv() {
            pending.extend(lines);
        }
        if pending.len() > MAX_PENDING_POSTS {
            let dropped = pending.len() - MAX_PENDING_POSTS;
            pending.drain(..dropped);
            tracing::warn!(
                dropped,
                "the ledger witness URL is behind; its oldest checkpoints were dropped (the witness file keeps them)"
            );
        }
        let n = pending.len().min(POST_BATCH);
        let mut body = String::new();
        for line in pending.iter().take(n) {
            body.push_str(line);
            body.push('\n');
        }
        let sent = client
            .post(&url)
            .header("content-type", "text/plain; charset=utf-8")
            .body(body)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        match sent {
            Ok(_) => {
                pending.drain(..n);
                wait = retry;
            }
            Err(e) => {
                // The URL itself stays out of the log: it may carry a token.
                tracing::warn!(error = %e.without_url(), retry_in = ?wait, "posting to the ledger witness URL failed");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_RETRY);
            }
        }
    }
}

/// Reads a witness file: its checkpoints in file order. Blank lines and lines starting with
/// `#` are skipped; an unfinished last line (a crash while writing it) is left out and counted.
pub fn read_witness(path: &Path) -> Result<(Vec<Checkpoint>, usize), WitnessError> {
    let text = std::fs::read(path).map_err(|e| WitnessError::Open {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let text = String::from_utf8_lossy(&text);
    let complete = text.ends_with('\n') || text.is_empty();
    let lines: Vec<&str> = text.lines().collect();
    let mut checkpoints = Vec::with_capacity(lines.len());
    let mut torn = 0;
    for (i, line) in lines.iter().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        match Checkpoint::from_witness_line(line) {
            Ok(cp) => checkpoints.push(cp),
            Err(_) if !complete && i + 1 == lines.len() => torn += 1,
            Err(error) => {
                return Err(WitnessError::Line {
                    path: path.to_path_buf(),
                    line: i + 1,
                    error,
                });
            }
        }
    }
    Ok((checkpoints, torn))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use kept_core::ledger::ChainHash;

    fn checkpoints(n: u64) -> Vec<Checkpoint> {
        let key = SigningKey::from_bytes(&[3; 32]);
        let mut prev = ChainHash::GENESIS;
        (1..=n)
            .map(|seq| {
                let cp = Checkpoint::sign(&key, seq, ChainHash([seq as u8; 32]), 7, prev);
                prev = cp.digest();
                cp
            })
            .collect()
    }

    #[tokio::test]
    async fn checkpoints_are_appended_in_order_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("witness.log");
        let witness = Witness::open(&path, None, Duration::from_millis(10)).unwrap();
        let cps = checkpoints(5);
        for cp in &cps[..3] {
            witness.record(cp);
        }
        witness.flush().await;
        assert_eq!(read_witness(&path).unwrap(), (cps[..3].to_vec(), 0));
        // Reopened (a restart): appended after what is there.
        witness.close().await;
        let witness = Witness::open(&path, None, Duration::from_millis(10)).unwrap();
        for cp in &cps[3..] {
            witness.record(cp);
        }
        witness.close().await;
        assert_eq!(read_witness(&path).unwrap(), (cps.clone(), 0));

        // A torn last line is left out; a bad line anywhere else is an error naming it.
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("kept-ledger-checkpoint-v2 6 ab");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(read_witness(&path).unwrap(), (cps.clone(), 1));
        text.push('\n');
        std::fs::write(&path, &text).unwrap();
        let err = read_witness(&path).unwrap_err();
        assert_eq!(err.code(), "ledger.witness_line");
        assert!(err.to_string().contains("line 6"), "{err}");
    }

    #[tokio::test]
    async fn checkpoints_are_posted_and_retried_until_accepted() {
        use axum::extract::State;
        use axum::http::StatusCode;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        #[derive(Clone)]
        struct Received {
            attempts: Arc<AtomicUsize>,
            lines: tokio::sync::mpsc::UnboundedSender<String>,
        }
        async fn take(State(r): State<Received>, body: String) -> StatusCode {
            // The first two attempts fail: the lines must come again.
            if r.attempts.fetch_add(1, Ordering::SeqCst) < 2 {
                return StatusCode::SERVICE_UNAVAILABLE;
            }
            for line in body.lines() {
                let _ = r.lines.send(line.to_owned());
            }
            StatusCode::NO_CONTENT
        }
        let (lines_tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel();
        let received = Received {
            attempts: Arc::new(AtomicUsize::new(0)),
            lines: lines_tx,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/witness", axum::routing::post(take))
            .with_state(received.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("witness.log");
        let url = format!("http://{addr}/witness");
        let witness = Witness::open(&path, Some(&url), Duration::from_millis(5)).unwrap();
        let cps = checkpoints(4);
        for cp in &cps {
            witness.record(cp);
        }
        witness.flush().await;
        let mut got = Vec::new();
        while got.len() < cps.len() {
            let line = tokio::time::timeout(Duration::from_secs(30), lines_rx.recv())
                .await
                .expect("the witness URL received every checkpoint")
                .unwrap();
            got.push(Checkpoint::from_witness_line(&line).unwrap());
        }
        assert_eq!(got, cps);
        assert!(received.attempts.load(Ordering::SeqCst) >= 3);
        assert_eq!(read_witness(&path).unwrap().0, cps);
        witness.close().await;
    }
}
