//! What the requests pages read, through the store and the requests service's own reads: the
//! queue (open requests soonest due first, each with its tasks counted) and one request with
//! its log decoded, its tasks (each settled one with who settled it) and the obligations sent
//! to its systems.

use crate::http::error::ApiError;
use crate::requests::service::{self, DUE_SOON};
use kept_core::UnixMillis;
use kept_core::requests::{LogRecord, Request};
use kept_store::outbox::Delivery;
use kept_store::requests::{QueueFilter, RequestTask};
use kept_store::{Store, StoreError};

/// How many requests a page of the queue shows.
pub const QUEUE_PAGE: u32 = 50;

/// How soon a request is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Open and past its due date.
    Overdue,
    /// Open and due within [`DUE_SOON`], as the overview and `/metrics` count it.
    Soon,
    Later,
}

/// How soon `request` is due at `now`.
pub fn due(request: &Request, now: UnixMillis) -> Due {
    if request.is_overdue(now) {
        Due::Overdue
    } else if request.state.is_open() && request.due_at <= now.saturating_add(DUE_SOON) {
        Due::Soon
    } else {
        Due::Later
    }
}

/// A request of the queue, with how many of its tasks are settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRow {
    pub request: Request,
    pub settled: usize,
    pub tasks: usize,
}

/// The open requests `filter` names, soonest due first (overdue ones first), with their tasks
/// counted.
pub async fn queue(store: &dyn Store, filter: &QueueFilter) -> Result<Vec<QueueRow>, StoreError> {
    let requests = store.request_queue(filter).await?;
    let mut rows = Vec::with_capacity(requests.len());
    for request in requests {
        let tasks = store.request_tasks(request.id).await?;
        rows.push(QueueRow {
            settled: tasks.iter().filter(|t| t.state.is_settled()).count(),
            tasks: tasks.len(),
            request,
        });
    }
    Ok(rows)
}

/// A task, and the step of the log that settled it, if one did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    pub task: RequestTask,
    /// Who settled it and when.
    pub settled_by: Option<(String, UnixMillis)>,
}

/// One request as its page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    pub request: Request,
    /// Its log, oldest first, with each record's position.
    pub log: Vec<(u64, LogRecord)>,
    pub tasks: Vec<TaskRow>,
    /// The obligations sent to the systems for it, one delivery per system.
    pub obligations: Vec<Delivery>,
}

/// Request `id` with its log and its tasks; `None` when there is no such request.
pub async fn request(store: &dyn Store, id: u64) -> Result<Option<Shown>, ApiError> {
    let request = match id {
        id if id > crate::http::error::MAX_ROW_ID => None,
        id => store.request(id).await?,
    };
    let Some(request) = request else {
        return Ok(None);
    };
    let log: Vec<(u64, LogRecord)> = service::log_of(store, id)
        .await?
        .into_iter()
        .map(|(seq, _, record)| (seq, record))
        .collect();
    let tasks = store
        .request_tasks(id)
        .await?
        .into_iter()
        .map(|task| {
            let settled_by = log
                .iter()
                .map(|(_, r)| r)
                .find(|r| {
                    detail(r, "task") == Some(task.target.as_str())
                        && detail(r, "task.state") == Some(task.state.as_str())
                        && task.state.is_settled()
                })
                .map(|r| (r.actor.clone(), r.at));
            TaskRow { task, settled_by }
        })
        .collect();
    let obligations = store
        .deliveries_for_event(&crate::requests::propagate::obligation_key(id))
        .await?;
    Ok(Some(Shown {
        request,
        log,
        tasks,
        obligations,
    }))
}

/// The value of `key` in a log record's detail.
pub fn detail<'a>(record: &'a LogRecord, key: &str) -> Option<&'a str> {
    record
        .detail
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}
