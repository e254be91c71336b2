//! Carrying out an erasure request: every dataset of the manifest through its connector (one
//! transaction per database), then Kept's own copy (`kept_store::erasure`: the data key
//! shredded, the rows deleted but what the law keeps, a suppression entry per identifier, a
//! tombstone), then the index and the identity cache forget the subject. The request goes to
//! `in_progress` before and to `completed` after, only when every target is done; the outcome of
//! each target is returned (and, on completion, written in the step's note).
//!
//! Kept's copy is erased last, and only once every dataset is: the connectors find the person by
//! the identifiers Kept holds, which its erasure destroys. Running it again after a failure or a
//! crash finishes the job: a dataset erased already has nothing left to find, and Kept's erasure
//! of an erased subject changes nothing.

use crate::http::error::ApiError;
use crate::identity::Identities;
use crate::index::IndexHandle;
use crate::requests::service;
use kept_connect::{Connector, HashKey, RowAction};
use kept_core::identity::{IdentifierHash, IdentifierKind, normalize};
use kept_core::index::Change;
use kept_core::manifest::Manifest;
use kept_core::manifest::dataset::Erasure as ColumnErasure;
use kept_core::manifest::model::LegalBasis;
use kept_core::regime::Regime;
use kept_core::requests::{RequestError, RequestKind, State, Transition};
use kept_core::{SubjectId, UnixMillis};
use kept_store::Store;
use kept_store::erasure::{ErasurePlan, ErasureReport, KeepRule};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Who the steps of an erasure are taken by, in the requests log, when a caller names nobody.
pub const ERASURE_ACTOR: &str = "kept:erasure";

/// What carrying out an erasure uses. The index is `None` offline (`kept dsr erase`), where
/// no index is kept; servers sharing a PostgreSQL database hear of it from the store.
#[derive(Debug)]
pub struct Erasure<'a> {
    pub store: &'a dyn Store,
    /// The requests service's handles: its steps, and the tasks each target settles.
    pub work: &'a crate::requests::work::Work,
    pub identities: &'a Identities,
    pub manifest: &'a Manifest,
    pub index: Option<&'a IndexHandle>,
    /// Where a dataset's URL is read from.
    pub env: &'a dyn Environment,
}

/// The variables a dataset's URL is read from: the process's environment in the product.
pub trait Environment: Send + Sync + std::fmt::Debug {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process's environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// Where one target stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TargetStatus {
    Done,
    Failed,
    /// Not run yet: Kept's copy waits until every dataset is erased.
    Pending,
}

/// Something a target kept, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RetainedItem {
    pub table: String,
    /// A trait's key, or a row count and the columns kept.
    pub item: String,
    pub category: String,
    pub purpose: String,
    /// `legal_obligation` or `contract`.
    pub basis: String,
    /// When its retention runs out, where Kept knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<UnixMillis>,
}

/// What became of one target: `kept` (Kept's own copy) or `dataset:<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TargetOutcome {
    pub target: String,
    pub status: TargetStatus,
    /// One line for people.
    pub detail: String,
    /// Rows deleted per table (`<table>`), and for a dataset rows updated (`<table>.updated`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retained: Vec<RetainedItem>,
    /// The stable code of the failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The outcome of carrying out an erasure request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Outcome {
    pub request: u64,
    #[schema(value_type = u32)]
    pub subject: SubjectId,
    /// The request's state afterwards: `completed` when every target is done, else
    /// `in_progress` (run it again to finish).
    #[schema(value_type = String)]
    pub state: State,
    pub targets: Vec<TargetOutcome>,
}

impl Outcome {
    pub fn done(&self) -> bool {
        self.targets.iter().all(|t| t.status == TargetStatus::Done)
    }

    /// One line per target, for the completing step's note (at most `MAX_TEXT` bytes).
    pub fn summary(&self) -> String {
        let mut text = String::from("erased:");
        for t in &self.targets {
            text.push_str(&format!(" {} {}", t.target, t.detail));
            text.push(';');
        }
        let mut end = text.len().min(kept_core::requests::MAX_TEXT);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text
    }
}

/// The keep rules of the manifest for a subject in `regime`: every category a dataset column
/// keeps for a purpose whose basis there is a legal obligation or a contract, for that
/// purpose's retention. One place answers "what must erasure keep", for Kept's traits as for
/// the datasets' columns.
pub fn retention_plan(manifest: &Manifest, regime: Regime) -> Vec<KeepRule> {
    let mut rules: Vec<KeepRule> = Vec::new();
    for dataset in &manifest.datasets {
        for table in &dataset.tables {
            for column in table.columns.values() {
                let ColumnErasure::Keep { purpose } = &column.erase else {
                    continue;
                };
                let Some((basis, days)) = keeping_basis(manifest, purpose, regime) else {
                    continue;
                };
                let rule = KeepRule {
                    category: column.category.clone(),
                    purpose: purpose.clone(),
                    basis: basis.as_str().to_owned(),
                    retention_days: days,
                };
                if !rules.contains(&rule) {
                    rules.push(rule);
                }
            }
        }
    }
    rules
}

/// The basis and retention of `purpose` in `regime` when it is one that keeps data through an
/// erasure (a legal obligation, or a contract).
fn keeping_basis(manifest: &Manifest, purpose: &str, regime: Regime) -> Option<(LegalBasis, u32)> {
    let p = manifest.purposes.get(purpose)?;
    let basis = p.basis_in(regime)?;
    matches!(basis, LegalBasis::LegalObligation | LegalBasis::Contract)
        .then_some((basis, p.retention_days))
}

/// Carries out erasure request `id` (see the module). Refused with `request.not_erasure` for
/// another kind and `request.not_executable` before it is verified or once it is closed.
pub async fn execute(
    e: &Erasure<'_>,
    id: u64,
    actor: &str,
    now: UnixMillis,
) -> Result<Outcome, ApiError> {
    let request = e
        .store
        .request(id)
        .await?
        .ok_or_else(|| service::not_found(id))?;
    if request.kind != RequestKind::Erasure {
        return Err(RequestError::NotErasure {
            id,
            kind: request.kind,
        }
        .into());
    }
    let working = request.working_state();
    if !request.state.is_open() || !matches!(working, State::Verified | State::InProgress) {
        return Err(RequestError::NotExecutable {
            id,
            state: request.state,
        }
        .into());
    }
    if working == State::Verified {
        let started = Transition::Advance {
            expect: Some(State::InProgress),
            verification: None,
            note: Some("erasure started".to_owned()),
        };
        service::step(e.work, id, &started, actor, now).await?;
    }
    // The request's tasks and obligations, opened again in case a crash came between the step
    // to `in_progress` and their opening (idempotent: only what is missing is added).
    if let Some(working) = e.store.request(id).await? {
        crate::requests::propagate::open(e.work, &working, now).await?;
    }

    // Every use stops now, while the datasets are erased.
    let subject = survivor(e.store, request.subject).await?;
    let row = e
        .store
        .subject(subject)
        .await?
        .ok_or_else(|| ApiError::Internal(format!("request {id} names no stored subject")))?;
    if row.erased_at.is_none() && row.erasure_requested_at.is_none() {
        e.store.set_erasure_requested(subject, Some(now)).await?;
        if let Some(index) = e.index
            && let Some(s) = e.store.subject(subject).await?
        {
            index.apply(vec![Change::Subject(s)]).await?;
        }
    }
    let regime = Regime::resolve(row.country.as_deref(), row.region.as_deref());
    let people = who(e, subject).await?;

    let mut targets = Vec::new();
    let keys = e.identities.keys(e.store).await?;
    let hash_key = HashKey(keys.dataset_hash_key());
    for dataset in &e.manifest.datasets {
        targets.push(
            erase_dataset(e.manifest, dataset, &people.clear, &hash_key, regime, e.env).await,
        );
    }
    let datasets_done = targets.iter().all(|t| t.status == TargetStatus::Done);
    if datasets_done {
        let plan = ErasurePlan {
            subject,
            request: Some(id),
            keep: retention_plan(e.manifest, regime),
            suppress: people.user_id_hashes.clone(),
            at: now,
        };
        match e.store.erase_subject(&plan).await {
            Ok(report) => {
                forget(e, &report, &people.hashes).await?;
                targets.insert(0, kept_done(&report));
            }
            Err(err) => targets.insert(
                0,
                TargetOutcome {
                    target: "kept".to_owned(),
                    status: TargetStatus::Failed,
                    detail: format!("failed: {err}"),
                    counts: BTreeMap::new(),
                    retained: Vec::new(),
                    error: Some(err.code().to_owned()),
                },
            ),
        }
    } else {
        targets.insert(
            0,
            TargetOutcome {
                target: "kept".to_owned(),
                status: TargetStatus::Pending,
                detail: "waits until every dataset is erased (its identifiers are what the \
                         connectors search by)"
                    .to_owned(),
                counts: BTreeMap::new(),
                retained: Vec::new(),
                error: None,
            },
        );
    }
    let mut outcome = Outcome {
        request: id,
        subject,
        state: State::InProgress,
        targets,
    };
    // Each target settles its task; the request completes once every system acknowledged
    // too (`requests::tasks`).
    for t in &outcome.targets {
        let Some(target) = kept_core::requests::Target::parse(&t.target) else {
            continue;
        };
        let reported = match t.status {
            TargetStatus::Done => crate::requests::tasks::Outcome::Done {
                detail: Some(t.detail.clone()),
            },
            TargetStatus::Failed => crate::requests::tasks::Outcome::Failed {
                error: format!("{}: {}", t.error.as_deref().unwrap_or("failed"), t.detail),
            },
            TargetStatus::Pending => continue,
        };
        match crate::requests::tasks::finish(e.work, id, &target, reported, now).await {
            // Run again after a crash: what was settled stays settled.
            Ok(_) | Err(ApiError::Request(RequestError::TaskSettled { .. })) => {}
            Err(err) => return Err(err),
        }
    }
    if let Some(stored) = e.store.request(id).await? {
        outcome.state = stored.state;
    }
    if !outcome.done() {
        for t in outcome
            .targets
            .iter()
            .filter(|t| t.status == TargetStatus::Failed)
        {
            tracing::warn!(
                request = id,
                target = %t.target,
                code = t.error.as_deref().unwrap_or(""),
                detail = %t.detail,
                "erasure target failed; the request stays in progress"
            );
        }
    }
    Ok(outcome)
}

/// The subject a request's data lives with: itself, or where merges took it.
async fn survivor(store: &dyn Store, subject: SubjectId) -> Result<SubjectId, ApiError> {
    Ok(store
        .survivors(&[subject])
        .await?
        .into_iter()
        .find(|(from, _)| *from == subject)
        .map_or(subject, |(_, into)| into))
}

/// The person as the connectors and the suppression list need them.
struct People {
    /// Identifiers in clear, for the connectors.
    clear: kept_connect::Subject,
    /// The keyed hashes Kept holds, for the identity cache.
    hashes: Vec<IdentifierHash>,
    /// The keyed hashes of user ids known only by the subjects' column.
    user_id_hashes: Vec<IdentifierHash>,
}

/// Opens the identifiers of `subject` and of every subject merged into it.
async fn who(e: &Erasure<'_>, subject: SubjectId) -> Result<People, ApiError> {
    let mut family = vec![subject];
    family.extend(e.store.merged_into(subject).await?);
    let keys = e.identities.keys(e.store).await?;
    let mut clear = kept_connect::Subject::new();
    let mut hashes = Vec::new();
    let mut user_id_hashes = Vec::new();
    for s in family {
        for held in e.store.identities_of(s).await? {
            hashes.push(held.hash);
        }
        for (kind, value, _) in
            crate::subjects::identifiers::opened(e.store, e.identities, s).await?
        {
            if let Some(value) = value {
                clear = with(clear, kind, &value);
            }
        }
        if let Some(user_id) = e.store.subject(s).await?.and_then(|r| r.user_id) {
            clear = with(clear, IdentifierKind::UserId, &user_id);
            if let Ok(normal) = normalize(IdentifierKind::UserId, &user_id, None) {
                user_id_hashes.push(keys.identifier_hash(IdentifierKind::UserId, &normal));
            }
        }
    }
    Ok(People {
        clear,
        hashes,
        user_id_hashes,
    })
}

/// `subject` with one more identifier, or as it was when the value cannot be searched for.
fn with(
    subject: kept_connect::Subject,
    kind: IdentifierKind,
    value: &str,
) -> kept_connect::Subject {
    match subject.clone().with(kind, value) {
        Ok(more) => more,
        Err(_) => subject,
    }
}

/// Erases the person from one dataset: done with its counts and what it kept, or failed with
/// the error (its database rolled back).
async fn erase_dataset(
    manifest: &Manifest,
    dataset: &kept_core::manifest::dataset::Dataset,
    person: &kept_connect::Subject,
    key: &HashKey,
    regime: Regime,
    env: &dyn Environment,
) -> TargetOutcome {
    let target = format!("dataset:{}", dataset.id);
    let failed = |err: kept_connect::ConnectError| TargetOutcome {
        target: target.clone(),
        status: TargetStatus::Failed,
        detail: format!("failed: {err}"),
        counts: BTreeMap::new(),
        retained: Vec::new(),
        error: Some(err.code().to_owned()),
    };
    if person.is_empty() {
        // Kept's copy is erased only after every dataset was: nothing is left to search by.
        return TargetOutcome {
            target,
            status: TargetStatus::Done,
            detail: "nothing to search by: Kept holds no identifier of the subject any more"
                .to_owned(),
            counts: BTreeMap::new(),
            retained: Vec::new(),
            error: None,
        };
    }
    let url = match kept_connect::url_of(dataset, &|name| env.var(name)) {
        Ok(url) => url,
        Err(err) => return failed(err),
    };
    // The drivers' futures cannot move between threads: the connector runs on a blocking
    // thread of its own, driven by this runtime.
    let (job_dataset, job_person, job_key) = (dataset.clone(), person.clone(), key.clone());
    let runtime = tokio::runtime::Handle::current();
    let job = tokio::task::spawn_blocking(move || {
        runtime.block_on(async move {
            let mut connector = Connector::connect(&job_dataset, &url).await?;
            connector.erase(&job_person, &job_key).await
        })
    });
    let erased = match job.await {
        Ok(Ok(erased)) => erased,
        Ok(Err(err)) => return failed(err),
        Err(join) => {
            return TargetOutcome {
                target,
                status: TargetStatus::Failed,
                detail: format!("failed: the connector stopped: {join}"),
                counts: BTreeMap::new(),
                retained: Vec::new(),
                error: Some("server.internal".to_owned()),
            };
        }
    };
    let mut counts = BTreeMap::new();
    let mut retained: BTreeMap<(String, String), (u64, Vec<String>, String)> = BTreeMap::new();
    for table in &erased.plan.tables {
        let (deleted, updated) = table.counts();
        if deleted > 0 {
            counts.insert(table.table.clone(), deleted);
        }
        if updated > 0 {
            counts.insert(format!("{}.updated", table.table), updated);
        }
        for row in table.rows.iter().filter(|r| r.action != RowAction::Delete) {
            for change in &row.changes {
                let Some(purpose) = change
                    .purpose
                    .as_ref()
                    .filter(|_| change.strategy == "keep")
                else {
                    continue;
                };
                let category = dataset
                    .tables
                    .iter()
                    .find(|t| t.name == table.table)
                    .and_then(|t| t.columns.get(&change.column))
                    .map(|c| c.category.clone())
                    .unwrap_or_default();
                let entry = retained
                    .entry((table.table.clone(), purpose.clone()))
                    .or_insert_with(|| (0, Vec::new(), category));
                if !entry.1.contains(&change.column) {
                    entry.1.push(change.column.clone());
                }
            }
        }
        for ((t, _), entry) in retained.iter_mut() {
            if *t == table.table {
                entry.0 = table
                    .rows
                    .iter()
                    .filter(|r| r.action != RowAction::Delete)
                    .count() as u64;
            }
        }
    }
    let retained: Vec<RetainedItem> = retained
        .into_iter()
        .map(
            |((table, purpose), (rows, columns, category))| RetainedItem {
                item: format!("{rows} rows: {}", columns.join(", ")),
                basis: keeping_basis(manifest, &purpose, regime)
                    .map_or_else(|| "undeclared".to_owned(), |(b, _)| b.as_str().to_owned()),
                table,
                category,
                purpose,
                until: None,
            },
        )
        .collect();
    TargetOutcome {
        target,
        status: TargetStatus::Done,
        detail: format!(
            "done: {} rows deleted, {} updated, {} kept for the law",
            erased.rows_deleted,
            erased.rows_updated,
            retained.len()
        ),
        counts,
        retained,
        error: None,
    }
}

/// Kept's target, done.
fn kept_done(report: &ErasureReport) -> TargetOutcome {
    let rows: u64 = report.deleted.values().sum();
    let detail = if report.already_erased {
        "done: erased already, nothing changed".to_owned()
    } else {
        format!(
            "done: {rows} rows deleted, data key shredded, {} identifiers suppressed, {} kept for the law",
            report.suppressed,
            report.retained.len()
        )
    };
    TargetOutcome {
        target: "kept".to_owned(),
        status: TargetStatus::Done,
        detail,
        counts: report.deleted.clone(),
        retained: report
            .retained
            .iter()
            .map(|r| RetainedItem {
                table: r.table.clone(),
                item: r.item.clone(),
                category: r.category.clone(),
                purpose: r.purpose.clone(),
                basis: r.basis.clone(),
                until: Some(r.until),
            })
            .collect(),
        error: None,
    }
}

/// The index and the identity cache forget the erased subjects.
async fn forget(
    e: &Erasure<'_>,
    report: &ErasureReport,
    hashes: &[IdentifierHash],
) -> Result<(), ApiError> {
    if let Ok(mut cache) = e.identities.cache.lock() {
        cache.forget(hashes);
        cache.invalidate(&report.subjects, true);
    }
    if let Some(index) = e.index {
        let changes = report
            .subjects
            .iter()
            .copied()
            .map(Change::Forget)
            .collect();
        index.apply(changes).await?;
    } else {
        // Offline: servers sharing the database hear of it (a no-op on SQLite).
        let note = crate::announce::Note::of(
            &report
                .subjects
                .iter()
                .copied()
                .map(Change::Forget)
                .collect::<Vec<_>>(),
        );
        for message in note.messages("offline") {
            if let Err(err) = e.store.announce(&message).await {
                tracing::warn!(error = %err, "cannot tell the servers of the erasure");
            }
        }
    }
    Ok(())
}
