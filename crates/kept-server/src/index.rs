//! The server's side of the in-memory index: the one writer thread that applies every committed
//! write and publishes snapshots, the directory beside it (user ids and locations of subjects),
//! and the build from the store at start.
//!
//! INVARIANT: a write path hands its `Change`s to `IndexHandle::apply` only after its
//! transaction committed, and answers its caller only after `apply` returned, so a decision made
//! after a write was acknowledged sees it. Readers take snapshots and never wait for the writer.
//! An order every write path keeps, not a state one point can assert: checked end to end by
//! `rewards_phones_are_not_promised_until_one_member_gives_written_consent` and
//! `a_toggle_writes_the_ledger_and_flips_the_decision_at_once`, which decide right after a write.

use kept_core::decision::{CompileError, Compiled, SequencedRecord};
use kept_core::index::{Change, Index, IndexReader, MemoryReport, Snapshot};
use kept_core::ledger::{self, LedgerEntry};
use kept_core::manifest::Manifest;
use kept_core::regime::Regime;
use kept_core::subject::{ChannelPreference, Contact, Subject, Trait};
use kept_core::{SubjectId, UnixMillis};
use kept_store::{LedgerRow, Store, StoreError};
use rustc_hash::{FxHashMap, FxHasher};
use std::fmt;
use std::hash::Hasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Subjects (and ledger records) read from the store per page while building.
const PAGE: u32 = 10_000;
/// Subjects whose traits are read per page while building.
const TRAIT_PAGE: u32 = 5_000;
/// Jobs that may wait for the writer; a write path waits (asynchronously) beyond that.
const QUEUE: usize = 1024;
/// How far back contacts are read at start: the longest frequency period, and a day of slack.
const CONTACT_WINDOW: UnixMillis = 31 * 24 * 60 * 60 * 1000;
/// Subjects in the index, set when it is built.
pub const INDEX_SUBJECTS: &str = "kept_index_subjects";
/// Index memory per subject, set when it is built.
pub const INDEX_BYTES_PER_SUBJECT: &str = "kept_index_bytes_per_subject";

/// Longest user id the directory keeps (longer ones are looked up nowhere and logged).
const MAX_USER_ID: usize = (1 << 24) - 1;

/// The changes for traits just committed to `store`. A subject new in the same write gets
/// its traits as they are; every other subject in `written`, and each of `reload`, has all
/// its traits dropped and the stored ones taken back, so a trait overwritten with new
/// provenance stops counting the old promise at once, as it would after a restart.
pub async fn trait_changes(
    store: &dyn Store,
    written: Vec<Trait>,
    fresh: &std::collections::HashSet<SubjectId>,
    reload: impl IntoIterator<Item = SubjectId>,
) -> Result<Vec<Change>, StoreError> {
    let mut changes = Vec::with_capacity(written.len());
    let mut again: Vec<SubjectId> = reload.into_iter().collect();
    for t in written {
        if fresh.contains(&t.subject) {
            changes.push(Change::Trait(t));
        } else {
            again.push(t.subject);
        }
    }
    again.sort_unstable();
    again.dedup();
    for id in again {
        changes.push(Change::ForgetTraits(id));
        changes.extend(store.traits(id).await?.into_iter().map(Change::Trait));
    }
    Ok(changes)
}

/// Why the index cannot answer or could not be built.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IndexError {
    #[error("decisions are unavailable: the manifest cannot be compiled: {0}")]
    Unavailable(String),
    #[error("the index is already loaded; a second load would count contacts twice")]
    AlreadyLoaded,
    #[error("ledger record {seq} cannot be decoded: {message}")]
    Corrupt { seq: u64, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the index writer stopped")]
    Stopped,
}

impl IndexError {
    pub fn code(&self) -> &'static str {
        match self {
            IndexError::Unavailable(_) => "index.unavailable",
            IndexError::AlreadyLoaded => "index.already_loaded",
            IndexError::Corrupt { .. } => "index.corrupt_record",
            IndexError::Store(e) => e.code(),
            IndexError::Stopped => "index.stopped",
        }
    }
}

impl From<IndexError> for crate::http::error::ApiError {
    fn from(e: IndexError) -> crate::http::error::ApiError {
        use crate::http::error::ApiError;
        match e {
            IndexError::Store(e) => ApiError::Store(e),
            IndexError::Corrupt { .. } => ApiError::Store(StoreError::Corrupt(e.to_string())),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// What a build read and what the result takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadReport {
    pub subjects: u64,
    pub traits: u64,
    pub records: u64,
    pub preferences: u64,
    pub contacts: u64,
    pub took: Duration,
    pub memory: MemoryReport,
    /// The directory (user ids, locations), per known subject.
    pub directory_bytes_per_subject: f64,
}

/// How far a build has come, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadStep {
    /// `done` of `total` subjects read.
    Subjects {
        done: u64,
        total: u64,
    },
    /// Traits of `done` subjects read.
    Traits {
        done: u64,
    },
    /// `done` of `total` ledger records read.
    Ledger {
        done: u64,
        total: u64,
    },
    Preferences,
    Contacts,
    Done,
}

/// A cheap, cloneable handle on the index: snapshots for readers, `apply` for write paths.
#[derive(Clone)]
pub struct IndexHandle {
    live: Result<Arc<Live>, Arc<str>>,
}

struct Live {
    compiled: Arc<Compiled>,
    reader: IndexReader,
    directory: Arc<RwLock<Directory>>,
    jobs: mpsc::Sender<Job>,
    loaded: AtomicBool,
    /// Consent reads go to the store instead (`consent_reads = "store"`).
    reads_from_store: AtomicBool,
    /// Where applied changes are announced to other servers on the same database, once set.
    feed: std::sync::OnceLock<Feed>,
}

/// The store other servers listen on, and this server's name in what it announces.
struct Feed {
    store: Arc<dyn Store>,
    origin: String,
}

impl fmt::Debug for IndexHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.live {
            Ok(live) => f
                .debug_struct("IndexHandle")
                .field("subjects", &live.reader.snapshot().subject_count())
                .finish_non_exhaustive(),
            Err(e) => f.debug_tuple("IndexHandle::Unavailable").field(e).finish(),
        }
    }
}

enum Job {
    Apply {
        changes: Vec<Change>,
        done: oneshot::Sender<()>,
    },
    /// Starts building again from empty; writers are answered only once `Finish` publishes.
    Reset,
    Load(Part),
    Finish {
        started: Instant,
        done: oneshot::Sender<Result<LoadReport, IndexError>>,
    },
}

enum Part {
    Subjects(Vec<Subject>),
    Traits(Vec<Trait>),
    Ledger(Vec<LedgerRow>),
    Preferences(Vec<ChannelPreference>),
    Contacts(Vec<Contact>),
    /// Each subject's last recorded interaction (collected events, preference-center visits).
    Interactions(Vec<(SubjectId, UnixMillis)>),
    /// Merges in force, `(merged away, merged into)`: last, so the merged subjects' parts read
    /// before are dropped again.
    Merges(Vec<(SubjectId, SubjectId)>),
    /// The gates data subject requests put in force, by subject.
    Gates(Vec<kept_core::decision::SubjectGate>),
}

impl IndexHandle {
    /// An empty index for `manifest`, with its writer thread. A manifest that cannot be
    /// compiled gives a handle whose every answer is `IndexError::Unavailable` (the server
    /// refuses to start with one; see `compile`).
    pub fn new(manifest: &Manifest) -> IndexHandle {
        match compile(manifest) {
            Ok(compiled) => IndexHandle::with_compiled(compiled),
            Err(e) => {
                tracing::error!(code = e.code(), error = %e, "decisions are unavailable");
                IndexHandle {
                    live: Err(e.to_string().into()),
                }
            }
        }
    }

    /// An empty index for an already compiled manifest.
    pub fn with_compiled(compiled: Arc<Compiled>) -> IndexHandle {
        let index = Index::new(compiled.clone());
        let reader = index.reader();
        let directory = Arc::new(RwLock::new(Directory::default()));
        let (jobs, rx) = mpsc::channel(QUEUE);
        let writer_directory = directory.clone();
        let spawned = std::thread::Builder::new()
            .name("kept-index-writer".into())
            .spawn(move || write_loop(index, writer_directory, rx));
        if let Err(e) = spawned {
            // Without a writer every `apply` reports `Stopped`, and the server fails closed.
            tracing::error!(error = %e, "cannot start the index writer");
        }
        IndexHandle {
            live: Ok(Arc::new(Live {
                compiled,
                reader,
                directory,
                jobs,
                loaded: AtomicBool::new(false),
                reads_from_store: AtomicBool::new(false),
                feed: std::sync::OnceLock::new(),
            })),
        }
    }

    fn live(&self) -> Result<&Live, IndexError> {
        self.live
            .as_deref()
            .map_err(|e| IndexError::Unavailable(e.to_string()))
    }

    pub fn compiled(&self) -> Result<&Arc<Compiled>, IndexError> {
        Ok(&self.live()?.compiled)
    }

    /// The latest published snapshot.
    pub fn snapshot(&self) -> Result<Arc<Snapshot>, IndexError> {
        Ok(self.live()?.reader.snapshot())
    }

    /// Records merges (`(merged away, merged into)`) in the directory, so the merged-away
    /// subjects' user ids and ids name their survivors; with `undone`, forgets them again.
    /// Called before the index forgets (or takes back) those subjects.
    pub fn record_merges(
        &self,
        merges: &[(SubjectId, SubjectId)],
        undone: bool,
    ) -> Result<(), IndexError> {
        let mut dir = self
            .live()?
            .directory
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (from, into) in merges {
            if undone {
                dir.unmerged(*from);
            } else {
                dir.merged(*from, *into);
            }
        }
        Ok(())
    }

    /// The directory, for resolving user ids and reading locations. Hold it briefly: the
    /// writer waits for it to publish new subjects.
    pub fn directory(&self) -> Result<RwLockReadGuard<'_, Directory>, IndexError> {
        let live = self.live()?;
        Ok(live
            .directory
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Sends consent reads to the store (`true`) or lets the index serve them (the default).
    pub fn read_from_store(&self, yes: bool) {
        if let Ok(live) = self.live() {
            live.reads_from_store.store(yes, Ordering::Relaxed);
        }
    }

    /// Whether consent reads may be served from the index.
    pub fn serves_reads(&self) -> bool {
        self.live()
            .is_ok_and(|live| !live.reads_from_store.load(Ordering::Relaxed))
    }

    /// The regime of a subject the index knows, from the location the directory keeps (as
    /// `Subject::regime` reads the stored one); `None` for a subject it does not know.
    pub fn regime(&self, snapshot: &Snapshot, id: SubjectId) -> Option<Regime> {
        snapshot.subject(id)?;
        let directory = self.directory().ok()?;
        let location = directory.location(id)?;
        Some(Regime::resolve(
            location.country.as_deref(),
            location.region.as_deref(),
        ))
    }

    /// From now on, announces the subjects every `apply` touched on `store`, for the other
    /// servers on the same database (see `sync`). Set once; later calls change nothing.
    pub fn announce_to(&self, store: Arc<dyn Store>) {
        if let Ok(live) = self.live() {
            let origin = format!("{:016x}", rand::random::<u64>());
            let _ = live.feed.set(Feed { store, origin });
        }
    }

    /// This server's name in its announcements, once `announce_to` was called.
    pub fn origin(&self) -> Option<&str> {
        let live = self.live().ok()?;
        live.feed.get().map(|f| f.origin.as_str())
    }

    /// Applies committed writes and publishes them; returns once readers see them, and once
    /// the subjects they touched are announced to other servers. A handle whose manifest did
    /// not compile ignores writes (it answers nothing anyway).
    pub async fn apply(&self, changes: Vec<Change>) -> Result<(), IndexError> {
        let feed = self.live().ok().and_then(|live| live.feed.get());
        let note = feed.map(|_| crate::announce::Note::of(&changes));
        self.apply_heard(changes).await?;
        if let (Some(feed), Some(note)) = (feed, note) {
            for message in note.messages(&feed.origin) {
                if let Err(e) = feed.store.announce(&message).await {
                    // The write is committed and this server sees it; the others see it after
                    // their next reload. Counted, so an operator can alert on it.
                    metrics::counter!(crate::announce::ANNOUNCE_FAILED).increment(1);
                    tracing::error!(error = %e, "cannot announce a change to the other servers");
                }
            }
        }
        Ok(())
    }

    /// Applies changes heard from another server (or committed here), without announcing them.
    pub async fn apply_heard(&self, changes: Vec<Change>) -> Result<(), IndexError> {
        if changes.is_empty() {
            return Ok(());
        }
        let Ok(live) = self.live() else {
            return Ok(());
        };
        let (done, published) = oneshot::channel();
        live.jobs
            .send(Job::Apply { changes, done })
            .await
            .map_err(|_| IndexError::Stopped)?;
        published.await.map_err(|_| IndexError::Stopped)
    }

    /// Applies ledger entries just committed (decoding them).
    pub async fn consents_appended(&self, entries: &[LedgerEntry]) -> Result<(), IndexError> {
        let changes = entries
            .iter()
            .map(|e| {
                SequencedRecord::from_entry(e)
                    .map(Change::Consent)
                    .map_err(|err| IndexError::Corrupt {
                        seq: e.seq,
                        message: err.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.apply(changes).await
    }

    /// After retention deleted traits of `subjects`: drops every trait the index holds for
    /// each and takes back the ones `store` still holds, one publish per subject, so no
    /// decision or audience counts a promise for data that is gone. A trait written between
    /// the read and the publish may be missed until the next start; that only denies more.
    pub async fn reload_traits(
        &self,
        store: &dyn Store,
        subjects: &[SubjectId],
    ) -> Result<(), IndexError> {
        let none = std::collections::HashSet::new();
        for id in subjects {
            let changes = trait_changes(store, Vec::new(), &none, [*id]).await?;
            self.apply(changes).await?;
        }
        Ok(())
    }

    /// Builds the index from everything in `store`, streaming it page by page to the writer
    /// (which decodes and applies it off the async workers), then publishes it. Only once,
    /// on an empty index.
    pub async fn load(
        &self,
        store: &dyn Store,
        now: UnixMillis,
        progress: &mut (dyn FnMut(LoadStep) + Send),
    ) -> Result<LoadReport, IndexError> {
        let live = self.live()?;
        if live.loaded.swap(true, Ordering::AcqRel) {
            return Err(IndexError::AlreadyLoaded);
        }
        let report = self.stream(store, now, progress).await?;
        metrics::gauge!(INDEX_SUBJECTS).set(report.memory.subjects as f64);
        metrics::gauge!(INDEX_BYTES_PER_SUBJECT).set(report.memory.bytes_per_subject);
        tracing::info!(
            subjects = report.subjects,
            traits = report.traits,
            records = report.records,
            preferences = report.preferences,
            contacts = report.contacts,
            ms = report.took.as_millis() as u64,
            index_bytes_per_subject = format_args!("{:.1}", report.memory.bytes_per_subject),
            directory_bytes_per_subject = format_args!("{:.1}", report.directory_bytes_per_subject),
            "index built"
        );
        Ok(report)
    }

    /// Builds the whole index again from `store` (after announcements from other servers may
    /// have been missed). Readers keep the last snapshot and writers wait until the new one is
    /// published; if the build fails part-way, what was read is published (fewer subjects
    /// known: decisions deny more, never less) and the error returned, to try again.
    pub async fn reload(
        &self,
        store: &dyn Store,
        now: UnixMillis,
    ) -> Result<LoadReport, IndexError> {
        let live = self.live()?;
        live.jobs
            .send(Job::Reset)
            .await
            .map_err(|_| IndexError::Stopped)?;
        let report = self.stream(store, now, &mut |_| {}).await;
        if report.is_err() {
            let (done, finished) = oneshot::channel();
            let started = Instant::now();
            let _ = live.jobs.send(Job::Finish { started, done }).await;
            let _ = finished.await;
        }
        let report = report?;
        tracing::info!(
            subjects = report.subjects,
            ms = report.took.as_millis() as u64,
            "index built again from the store"
        );
        Ok(report)
    }

    /// Streams everything in `store` to the writer and publishes it with `Finish`.
    async fn stream(
        &self,
        store: &dyn Store,
        now: UnixMillis,
        progress: &mut (dyn FnMut(LoadStep) + Send),
    ) -> Result<LoadReport, IndexError> {
        let live = self.live()?;
        let started = Instant::now();
        let send = |part| async {
            live.jobs
                .send(Job::Load(part))
                .await
                .map_err(|_| IndexError::Stopped)
        };

        let total = store.subject_count().await?;
        let mut done = 0u64;
        let mut after = None;
        loop {
            let page = store.subjects_page(after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            done += page.len() as u64;
            send(Part::Subjects(page)).await?;
            progress(LoadStep::Subjects {
                done,
                total: total.max(done),
            });
        }

        let mut after = None;
        let mut subjects = 0u64;
        loop {
            let page = store.traits_page(after, TRAIT_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.subject);
            let mut previous = None;
            for t in &page {
                if previous != Some(t.subject) {
                    subjects += 1;
                    previous = Some(t.subject);
                }
            }
            send(Part::Traits(page)).await?;
            progress(LoadStep::Traits { done: subjects });
        }

        let records = store.ledger_len().await?;
        let mut after = 0;
        loop {
            let rows = store.ledger_rows(after, PAGE).await?;
            let Some(last) = rows.last() else { break };
            after = last.seq;
            send(Part::Ledger(rows)).await?;
            progress(LoadStep::Ledger {
                done: after,
                total: records.max(after),
            });
        }

        send(Part::Preferences(store.all_channel_preferences().await?)).await?;
        progress(LoadStep::Preferences);
        let since = now.saturating_sub(CONTACT_WINDOW);
        send(Part::Contacts(store.contacts_since(since).await?)).await?;
        progress(LoadStep::Contacts);
        send(Part::Interactions(store.last_interactions().await?)).await?;

        let mut after = None;
        loop {
            let page = store.merges_page(after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.0);
            send(Part::Merges(page)).await?;
        }
        send(Part::Gates(store.gates_in_force().await?)).await?;

        let (done, report) = oneshot::channel();
        live.jobs
            .send(Job::Finish { started, done })
            .await
            .map_err(|_| IndexError::Stopped)?;
        let report = report.await.map_err(|_| IndexError::Stopped)??;
        progress(LoadStep::Done);
        Ok(report)
    }
}

/// Compiles the manifest and the rulebook for decisions.
pub fn compile(manifest: &Manifest) -> Result<Arc<Compiled>, CompileError> {
    Compiled::new(manifest.clone()).map(Arc::new)
}

/// The writer thread: applies whatever is queued, publishes once, then answers every writer of
/// that round. Ends when every handle is gone.
fn write_loop(mut index: Index, directory: Arc<RwLock<Directory>>, mut jobs: mpsc::Receiver<Job>) {
    let mut counts = Counts::default();
    let mut failure: Option<IndexError> = None;
    let mut waiting = Vec::new();
    // While building again: writers applied to the new build, answered when it is published.
    let mut rebuilding = false;
    let mut held = Vec::new();
    while let Some(first) = jobs.blocking_recv() {
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Apply { changes, done } => {
                    apply(&mut index, &directory, changes);
                    if rebuilding {
                        held.push(done);
                    } else {
                        waiting.push(done);
                    }
                }
                Job::Reset => {
                    // The directory is kept: requests keep resolving user ids while the build
                    // runs, and it puts every subject again. An entry left for a subject the
                    // store no longer has resolves to one the new index does not know: denied.
                    index.reset();
                    counts = Counts::default();
                    failure = None;
                    rebuilding = true;
                }
                Job::Load(part) => {
                    if let Err(e) = load_part(&mut index, &directory, part, &mut counts) {
                        failure.get_or_insert(e);
                    }
                }
                Job::Finish { started, done } => {
                    index.publish();
                    rebuilding = false;
                    waiting.append(&mut held);
                    let result = match failure.take() {
                        Some(e) => Err(e),
                        None => Ok(report(&index, &directory, counts, started.elapsed())),
                    };
                    let _ = done.send(result);
                }
            }
            // Answer writers at least every so often even when more keep coming.
            if waiting.len() < 4096 {
                next = jobs.try_recv().ok();
            }
        }
        if !waiting.is_empty() {
            index.publish();
            for done in waiting.drain(..) {
                // A writer that stopped waiting still had its change applied.
                let _ = done.send(());
            }
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    subjects: u64,
    traits: u64,
    records: u64,
    preferences: u64,
    contacts: u64,
}

fn report(
    index: &Index,
    directory: &RwLock<Directory>,
    counts: Counts,
    took: Duration,
) -> LoadReport {
    let memory = index.snapshot().memory();
    let directory_bytes = directory
        .read()
        .map(|d| d.bytes())
        .unwrap_or_else(|e| e.into_inner().bytes());
    LoadReport {
        subjects: counts.subjects,
        traits: counts.traits,
        records: counts.records,
        preferences: counts.preferences,
        contacts: counts.contacts,
        took,
        memory,
        directory_bytes_per_subject: directory_bytes as f64 / memory.subjects.max(1) as f64,
    }
}

fn apply(index: &mut Index, directory: &RwLock<Directory>, changes: Vec<Change>) {
    let touches_directory = changes
        .iter()
        .any(|c| matches!(c, Change::Subject(_) | Change::Forget(_)));
    if touches_directory {
        // Before the index: a subject the index knows is always resolvable.
        let mut dir = directory
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for change in &changes {
            match change {
                Change::Subject(s) => dir.put(s),
                Change::Forget(id) => dir.forget(*id),
                _ => {}
            }
        }
    }
    for change in changes {
        index.apply(change);
    }
}

fn load_part(
    index: &mut Index,
    directory: &RwLock<Directory>,
    part: Part,
    counts: &mut Counts,
) -> Result<(), IndexError> {
    match part {
        Part::Subjects(subjects) => {
            counts.subjects += subjects.len() as u64;
            {
                let mut dir = directory
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for s in &subjects {
                    dir.put(s);
                }
            }
            for s in subjects {
                index.apply(Change::Subject(s));
            }
        }
        Part::Traits(traits) => {
            counts.traits += traits.len() as u64;
            for t in traits {
                index.apply(Change::Trait(t));
            }
        }
        Part::Ledger(rows) => {
            counts.records += rows.len() as u64;
            for row in rows {
                let record = ledger::decode(&row.bytes).map_err(|e| IndexError::Corrupt {
                    seq: row.seq,
                    message: e.to_string(),
                })?;
                index.apply(Change::Consent(SequencedRecord {
                    seq: row.seq,
                    record,
                }));
            }
        }
        Part::Preferences(prefs) => {
            counts.preferences += prefs.len() as u64;
            for p in prefs {
                index.apply(Change::Preference(p));
            }
        }
        Part::Contacts(contacts) => {
            counts.contacts += contacts.len() as u64;
            for c in contacts {
                index.apply(Change::Contact(c));
            }
        }
        Part::Interactions(interactions) => {
            for (subject, at) in interactions {
                index.apply(Change::Interaction { subject, at });
            }
        }
        Part::Merges(merges) => {
            {
                let mut dir = directory
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for (from, into) in &merges {
                    dir.merged(*from, *into);
                }
            }
            for (from, _) in merges {
                index.apply(Change::Forget(from));
            }
        }
        Part::Gates(gates) => {
            // One change per subject holding them: a merged-away subject's gates stand on the
            // subject it was merged into.
            let mut by_holder: std::collections::BTreeMap<SubjectId, Vec<_>> = Default::default();
            {
                let dir = directory
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for g in gates {
                    by_holder
                        .entry(dir.survivor(g.subject))
                        .or_default()
                        .push(g);
                }
            }
            for (subject, gates) in by_holder {
                index.apply(Change::Gates { subject, gates });
            }
        }
    }
    Ok(())
}

/// Where a subject is, as the store keeps it (normalised to upper case).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Residence {
    pub country: Option<Box<str>>,
    pub region: Option<Box<str>>,
}

/// A location that has no subject yet.
const NO_LOCATION: u16 = u16::MAX;

/// User ids and locations of every subject, beside the index. User ids are kept once, in one
/// text arena, and found through a map from their 64-bit hash (a few bytes per subject instead
/// of a string per subject twice); the rare user id whose hash another one took lives in
/// `overflow`, so a lookup is exact whatever the hash does.
#[derive(Default)]
pub struct Directory {
    by_hash: FxHashMap<u64, u32>,
    overflow: FxHashMap<Box<str>, u32>,
    /// Per subject id: `start << 24 | len` of its user id in `text`; 0 = none.
    spans: Vec<u64>,
    text: String,
    /// Per subject id: its location's position in `location_keys`.
    locations: Vec<u16>,
    location_keys: Vec<Residence>,
    location_ids: FxHashMap<Residence, u16>,
    /// Subjects merged into another: their user id (kept linked) names the survivor.
    merged: FxHashMap<u32, u32>,
}

impl fmt::Debug for Directory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Directory")
            .field("subjects", &self.spans.len())
            .field("locations", &self.location_keys.len())
            .finish_non_exhaustive()
    }
}

fn hash_user_id(user_id: &str) -> u64 {
    let mut h = FxHasher::default();
    h.write(user_id.as_bytes());
    h.finish()
}

fn normalise(code: Option<&str>) -> Option<Box<str>> {
    code.map(|c| c.trim().to_ascii_uppercase().into_boxed_str())
        .filter(|c| !c.is_empty())
}

impl Directory {
    /// The subject with this user id: the one that holds it now, when the subject it was
    /// given to was merged into another.
    pub fn subject(&self, user_id: &str) -> Option<SubjectId> {
        self.holder(user_id).map(|id| self.survivor(id))
    }

    fn holder(&self, user_id: &str) -> Option<SubjectId> {
        let h = hash_user_id(user_id);
        if let Some(&id) = self.by_hash.get(&h)
            && self.user_id_of(id) == Some(user_id)
        {
            return Some(SubjectId(id));
        }
        if self.overflow.is_empty() {
            return None;
        }
        self.overflow.get(user_id).map(|&id| SubjectId(id))
    }

    /// The subject `id` was merged into, merges followed to the end; `id` itself when it
    /// was not merged away.
    pub fn survivor(&self, id: SubjectId) -> SubjectId {
        let mut at = id.0;
        // Merges never form a cycle; the bound only guards against a corrupt directory.
        for _ in 0..64 {
            match self.merged.get(&at) {
                Some(next) => at = *next,
                None => break,
            }
        }
        SubjectId(at)
    }

    fn merged(&mut self, from: SubjectId, into: SubjectId) {
        if from != into {
            self.merged.insert(from.0, into.0);
        }
    }

    fn unmerged(&mut self, from: SubjectId) {
        self.merged.remove(&from.0);
    }

    /// The user id of a subject.
    pub fn user_id(&self, id: SubjectId) -> Option<&str> {
        self.user_id_of(id.0)
    }

    fn user_id_of(&self, id: u32) -> Option<&str> {
        let span = *self.spans.get(id as usize)?;
        if span == 0 {
            return None;
        }
        let start = (span >> 24) as usize;
        let len = (span & 0xff_ffff) as usize;
        self.text.get(start..start + len)
    }

    /// Where a subject is; `None` for a subject the directory does not know.
    pub fn location(&self, id: SubjectId) -> Option<&Residence> {
        let slot = *self.locations.get(id.0 as usize)?;
        self.location_keys.get(usize::from(slot))
    }

    /// The countries subjects are located in, sorted.
    pub fn countries(&self) -> Vec<&str> {
        let mut countries: Vec<&str> = self
            .location_keys
            .iter()
            .filter_map(|l| l.country.as_deref())
            .collect();
        countries.sort_unstable();
        countries.dedup();
        countries
    }

    /// Every subject whose location passes `keep`, in id order.
    pub fn subjects_where(&self, keep: impl Fn(&Residence) -> bool) -> Vec<SubjectId> {
        let wanted: Vec<bool> = self.location_keys.iter().map(keep).collect();
        self.locations
            .iter()
            .enumerate()
            .filter(|(_, slot)| wanted.get(usize::from(**slot)).copied().unwrap_or(false))
            .filter_map(|(id, _)| u32::try_from(id).ok().map(SubjectId))
            .collect()
    }

    fn put(&mut self, s: &Subject) {
        let id = s.id.0;
        let slot = id as usize;
        if self.spans.len() <= slot {
            self.spans.resize(slot + 1, 0);
            self.locations.resize(slot + 1, NO_LOCATION);
        }
        if self.user_id_of(id) != s.user_id.as_deref() {
            self.unlink(id);
            if let Some(user_id) = &s.user_id {
                self.link(id, user_id);
            }
        }
        let location = Residence {
            country: normalise(s.country.as_deref()),
            region: normalise(s.region.as_deref()),
        };
        let next = u16::try_from(self.location_keys.len()).unwrap_or(NO_LOCATION);
        let position = match self.location_ids.get(&location) {
            Some(p) => *p,
            // Past 65,535 distinct places a subject is filed under none: only country filters
            // miss it, never a decision.
            None if next == NO_LOCATION => NO_LOCATION,
            None => {
                self.location_ids.insert(location.clone(), next);
                self.location_keys.push(location);
                next
            }
        };
        if let Some(l) = self.locations.get_mut(slot) {
            *l = position;
        }
    }

    fn forget(&mut self, id: SubjectId) {
        // A subject merged away keeps its user id, which now names its survivor.
        if self.merged.contains_key(&id.0) {
            return;
        }
        self.unlink(id.0);
        if let Some(l) = self.locations.get_mut(id.0 as usize) {
            *l = NO_LOCATION;
        }
    }

    fn link(&mut self, id: u32, user_id: &str) {
        let start = self.text.len() as u64;
        if user_id.len() > MAX_USER_ID || start >= 1 << 40 {
            tracing::warn!(
                subject = id,
                "a user id too long to index; look it up by id"
            );
            return;
        }
        self.text.push_str(user_id);
        if let Some(span) = self.spans.get_mut(id as usize) {
            *span = start << 24 | user_id.len() as u64;
        }
        let h = hash_user_id(user_id);
        match self.by_hash.get(&h).copied() {
            Some(other) if other != id && self.user_id_of(other) != Some(user_id) => {
                self.overflow.insert(user_id.into(), id);
            }
            _ => {
                self.by_hash.insert(h, id);
            }
        }
    }

    fn unlink(&mut self, id: u32) {
        let Some(old) = self.user_id_of(id).map(str::to_owned) else {
            return;
        };
        let h = hash_user_id(&old);
        if self.by_hash.get(&h) == Some(&id) {
            self.by_hash.remove(&h);
        }
        if self.overflow.get(old.as_str()) == Some(&id) {
            self.overflow.remove(old.as_str());
        }
        if let Some(span) = self.spans.get_mut(id as usize) {
            *span = 0;
        }
    }

    /// Approximate bytes held.
    pub fn bytes(&self) -> usize {
        let map = |n: usize, entry: usize| n * (entry + 1) * 8 / 7;
        map(self.by_hash.capacity(), 12)
            + map(self.overflow.capacity(), 20)
            + self.overflow.keys().map(|k| k.len()).sum::<usize>()
            + self.spans.capacity() * 8
            + self.text.capacity()
            + self.locations.capacity() * 2
            + self.location_keys.len() * 64
            + map(self.merged.capacity(), 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(id: u32, user_id: Option<&str>, country: Option<&str>) -> Subject {
        Subject {
            id: SubjectId(id),
            user_id: user_id.map(str::to_owned),
            country: country.map(str::to_owned),
            region: None,
            time_zone: None,
            created_at: 0,
            erasure_requested_at: None,
            suppressed: false,
            erased_at: None,
            erasure_suppressed_at: None,
        }
    }

    #[test]
    fn the_directory_finds_user_ids_both_ways_and_follows_changes() {
        let mut d = Directory::default();
        d.put(&subject(0, Some("u-0"), Some("de")));
        d.put(&subject(2, Some("u-2"), Some("US")));
        d.put(&subject(1, None, None));
        assert_eq!(d.subject("u-0"), Some(SubjectId(0)));
        assert_eq!(d.subject("u-2"), Some(SubjectId(2)));
        assert_eq!(d.subject("u-1"), None);
        assert_eq!(d.user_id(SubjectId(2)), Some("u-2"));
        assert_eq!(d.user_id(SubjectId(1)), None);
        assert_eq!(
            d.location(SubjectId(0)).unwrap().country.as_deref(),
            Some("DE")
        );

        // A changed user id: the old one no longer resolves, the new one does.
        d.put(&subject(2, Some("u-two"), Some("US")));
        assert_eq!(d.subject("u-2"), None);
        assert_eq!(d.subject("u-two"), Some(SubjectId(2)));
        d.forget(SubjectId(0));
        assert_eq!(d.subject("u-0"), None);
        assert_eq!(
            d.subjects_where(|l| l.country.as_deref() == Some("US")),
            vec![SubjectId(2)]
        );
    }

    #[test]
    fn a_hash_collision_does_not_confuse_two_user_ids() {
        let mut d = Directory::default();
        d.put(&subject(0, Some("a"), None));
        d.put(&subject(1, Some("b"), None));
        // Force what a collision does: "c" files under the hash "a" already holds.
        let h = hash_user_id("a");
        d.text.push('c');
        let start = (d.text.len() - 1) as u64;
        d.spans.push(start << 24 | 1);
        d.locations.push(NO_LOCATION);
        assert_eq!(d.by_hash.get(&h), Some(&0));
        d.overflow.insert("c".into(), 2);
        assert_eq!(d.subject("a"), Some(SubjectId(0)));
        assert_eq!(d.subject("c"), Some(SubjectId(2)));
        assert_eq!(d.subject("b"), Some(SubjectId(1)));
        d.unlink(2);
        assert_eq!(d.subject("c"), None);
        assert_eq!(d.subject("a"), Some(SubjectId(0)));
    }
}
