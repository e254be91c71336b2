//! Data subject requests on SQLite. Writes go through the single write connection, so the
//! read of an open request and the insert of a new one cannot interleave with another filing,
//! and a step's read of the request, its update and its log record form one transaction.

use super::{Cols, SqliteStore, db};
use async_trait::async_trait;
use kept_core::ledger::ChainHash;
use kept_core::requests::{
    LogRecord, Request, RequestError, TaskState, Transition, apply, intake_record,
};
use kept_core::{SubjectId, UnixMillis};
use kept_store::columns::{CHECKPOINT_COLUMNS, chain_hash, checkpoint_row, ledger_row, to_i64};
use kept_store::requests::{
    ERASURE_COLUMNS, ErasureRequest, NewErasureRequest, OpenCounts, QueueFilter, REQUEST_COLUMNS,
    RequestFilter, RequestStore, RequestTask, Stepped, TASK_COLUMNS, chain_step, check_tasks,
    erasure_row, request_row, scope_column, settled, task_row, verification_column,
};
use kept_store::{LedgerRow, Result, StoreError};
use sqlx::{Row, SqliteConnection};

const LOG_COLUMNS: &str = "seq, subject_id, bytes, hash, at";

/// The tasks of request `id`, by target, read on `conn`.
async fn tasks_on(conn: &mut SqliteConnection, id: u64) -> Result<Vec<RequestTask>> {
    let rows = sqlx::query(&format!(
        "SELECT {TASK_COLUMNS} FROM request_tasks WHERE request_id = ? ORDER BY target"
    ))
    .bind(to_i64(id)?)
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    rows.iter().map(|r| task_row(&Cols(r))).collect()
}

impl SqliteStore {
    /// Appends `record` to the requests log inside `conn`'s transaction, with its checkpoint.
    async fn append_request_log(
        &self,
        conn: &mut SqliteConnection,
        record: &LogRecord,
    ) -> Result<(
        kept_core::ledger::LedgerEntry,
        Option<kept_core::ledger::Checkpoint>,
    )> {
        let tip = sqlx::query("SELECT seq, hash FROM request_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?;
        let tip = match tip {
            None => (0, ChainHash::GENESIS),
            Some(row) => {
                let seq = kept_store::columns::to_u64(row.try_get(0).map_err(db)?, "log seq")?;
                let hash: Vec<u8> = row.try_get(1).map_err(db)?;
                (seq, chain_hash(seq, &hash)?)
            }
        };
        let last = sqlx::query(&format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM request_log_checkpoints ORDER BY seq DESC LIMIT 1"
        ))
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?;
        let last = match last {
            None => (0, ChainHash::GENESIS),
            Some(row) => checkpoint_row(&Cols(&row)).map(|c| (c.seq, c.digest()))?,
        };
        let signer = self.signer.get();
        let (entry, checkpoint) = chain_step(record, tip, last, signer.as_ref());
        sqlx::query(
            "INSERT INTO request_log (seq, request_id, subject_id, at, bytes, hash) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(to_i64(entry.seq)?)
        .bind(to_i64(record.request)?)
        .bind(i64::from(record.subject.0))
        .bind(record.at)
        .bind(entry.bytes.as_slice())
        .bind(entry.hash.0.as_slice())
        .execute(&mut *conn)
        .await
        .map_err(db)?;
        if let Some(cp) = &checkpoint {
            sqlx::query(
                "INSERT INTO request_log_checkpoints (seq, hash, at, key_id, signature, prev) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(to_i64(cp.seq)?)
            .bind(cp.hash.0.as_slice())
            .bind(cp.at)
            .bind(cp.key_id.as_str())
            .bind(cp.signature.as_slice())
            .bind(cp.prev.as_ref().map(|p| p.0.as_slice()))
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        }
        Ok((entry, checkpoint))
    }

    /// Files `request` with `detail` added to its intake record and `corrections` written
    /// beside it, in one transaction.
    pub(crate) async fn file_in(
        &self,
        request: Request,
        actor: &str,
        detail: Vec<(String, String)>,
        corrections: Vec<kept_store::corrections::StoredCorrection>,
    ) -> Result<Stepped> {
        let mut tx = self.write.begin().await.map_err(db)?;
        let inserted = sqlx::query(&format!(
            "INSERT INTO requests (subject_id, kind, scope, channel, verification, regime, \
             region, rule, state, resume, received_at, due_at, acknowledge_by, extension_until, \
             extended_at, reason, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {REQUEST_COLUMNS}"
        ))
        .bind(i64::from(request.subject.0))
        .bind(request.kind.as_str())
        .bind(scope_column(&request.scope))
        .bind(request.channel.as_str())
        .bind(verification_column(request.verification.as_ref()))
        .bind(&request.regime)
        .bind(&request.region)
        .bind(&request.rule)
        .bind(request.state.as_str())
        .bind(request.resume.map(|s| s.as_str()))
        .bind(request.received_at)
        .bind(request.due_at)
        .bind(request.acknowledge_by)
        .bind(request.extension_until)
        .bind(request.extended_at)
        .bind(&request.reason)
        .bind(request.updated_at)
        .fetch_one(&mut *tx)
        .await;
        let row = match inserted {
            Ok(row) => row,
            Err(e) => {
                drop(tx);
                return Err(self.missing_subject(e, [request.subject]).await);
            }
        };
        let stored = request_row(&Cols(&row))?;
        for c in &corrections {
            sqlx::query(
                "INSERT INTO request_corrections (request_id, target, sealed) VALUES (?, ?, ?)",
            )
            .bind(to_i64(stored.id)?)
            .bind(c.target.as_str())
            .bind(c.sealed.as_slice())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        let mut record = intake_record(&stored, actor);
        record.detail.extend(detail);
        record.detail.sort();
        let (entry, checkpoint) = self.append_request_log(&mut tx, &record).await?;
        tx.commit().await.map_err(db)?;
        Ok(Stepped {
            request: stored,
            entry,
            checkpoint,
        })
    }
}

#[async_trait]
impl RequestStore for SqliteStore {
    async fn file_request(&self, request: Request, actor: &str) -> Result<Stepped> {
        self.file_in(request, actor, Vec::new(), Vec::new()).await
    }

    async fn step_request(
        &self,
        id: u64,
        step: &Transition,
        actor: &str,
        now: UnixMillis,
    ) -> Result<std::result::Result<Stepped, RequestError>> {
        let mut tx = self.write.begin().await.map_err(db)?;
        let row = sqlx::query(&format!(
            "SELECT {REQUEST_COLUMNS} FROM requests WHERE id = ?"
        ))
        .bind(to_i64(id)?)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let Some(row) = row else {
            return Err(StoreError::NotFound {
                what: "request",
                key: id.to_string(),
            });
        };
        let current = request_row(&Cols(&row))?;
        let applied = match apply(&current, step, actor, now) {
            Ok(applied) => applied,
            Err(refused) => return Ok(Err(refused)),
        };
        let next = &applied.request;
        let tasks = tasks_on(&mut tx, id).await?;
        if let Err(refused) = check_tasks(step, next.state, &tasks) {
            return Ok(Err(refused));
        }
        if let Some((target, state, detail)) = settled(step) {
            sqlx::query(
                "UPDATE request_tasks SET state = ?, detail = COALESCE(?, detail), \
                 attempts = attempts + ?, updated_at = ? WHERE request_id = ? AND target = ?",
            )
            .bind(state.as_str())
            .bind(detail)
            .bind(i64::from(state == TaskState::Done))
            .bind(now)
            .bind(to_i64(id)?)
            .bind(target)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        sqlx::query(
            "UPDATE requests SET verification = ?, state = ?, resume = ?, due_at = ?, \
             extended_at = ?, reason = ?, updated_at = ? WHERE id = ?",
        )
        .bind(verification_column(next.verification.as_ref()))
        .bind(next.state.as_str())
        .bind(next.resume.map(|s| s.as_str()))
        .bind(next.due_at)
        .bind(next.extended_at)
        .bind(&next.reason)
        .bind(next.updated_at)
        .bind(to_i64(id)?)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let (entry, checkpoint) = self.append_request_log(&mut tx, &applied.record).await?;
        tx.commit().await.map_err(db)?;
        Ok(Ok(Stepped {
            request: applied.request,
            entry,
            checkpoint,
        }))
    }

    async fn create_request_tasks(
        &self,
        id: u64,
        targets: &[String],
        now: UnixMillis,
    ) -> Result<Vec<RequestTask>> {
        let mut tx = self.write.begin().await.map_err(db)?;
        let exists = sqlx::query("SELECT 1 FROM requests WHERE id = ?")
            .bind(to_i64(id)?)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        if exists.is_none() {
            return Err(StoreError::NotFound {
                what: "request",
                key: id.to_string(),
            });
        }
        for target in targets {
            sqlx::query(
                "INSERT INTO request_tasks (request_id, target, state, attempts, created_at, \
                 updated_at) VALUES (?, ?, 'pending', 0, ?, ?) \
                 ON CONFLICT (request_id, target) DO NOTHING",
            )
            .bind(to_i64(id)?)
            .bind(target)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        let tasks = tasks_on(&mut tx, id).await?;
        tx.commit().await.map_err(db)?;
        Ok(tasks)
    }

    async fn set_request_task(
        &self,
        id: u64,
        target: &str,
        state: TaskState,
        detail: Option<&str>,
        now: UnixMillis,
    ) -> Result<Option<RequestTask>> {
        let mut tx = self.write.begin().await.map_err(db)?;
        sqlx::query(
            "UPDATE request_tasks SET state = ?, detail = ?, attempts = attempts + ?, \
             updated_at = ? WHERE request_id = ? AND target = ? \
             AND state NOT IN ('done', 'handled')",
        )
        .bind(state.as_str())
        .bind(detail)
        .bind(i64::from(state == TaskState::Failed))
        .bind(now)
        .bind(to_i64(id)?)
        .bind(target)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let task = tasks_on(&mut tx, id)
            .await?
            .into_iter()
            .find(|t| t.target == target);
        tx.commit().await.map_err(db)?;
        Ok(task)
    }

    async fn request_tasks(&self, id: u64) -> Result<Vec<RequestTask>> {
        let mut conn = self.read.acquire().await.map_err(db)?;
        tasks_on(&mut conn, id).await
    }

    async fn request(&self, id: u64) -> Result<Option<Request>> {
        let row = sqlx::query(&format!(
            "SELECT {REQUEST_COLUMNS} FROM requests WHERE id = ?"
        ))
        .bind(to_i64(id)?)
        .fetch_optional(&self.read)
        .await
        .map_err(db)?;
        row.map(|r| request_row(&Cols(&r))).transpose()
    }

    async fn requests(&self, filter: &RequestFilter) -> Result<Vec<Request>> {
        let rows = sqlx::query(&format!(
            "SELECT {REQUEST_COLUMNS} FROM requests \
             WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR kind = ?2) \
             AND (?3 IS NULL OR subject_id = ?3) AND (?4 IS NULL OR due_at < ?4) \
             AND (?5 IS NULL OR (due_at < ?5 AND state NOT IN ('completed', 'rejected'))) \
             AND (?6 IS NULL OR id < ?6) \
             AND (?8 IS NULL OR state IN ('completed', 'rejected') OR due_at >= ?8) \
             ORDER BY id DESC LIMIT ?7"
        ))
        .bind(filter.state.map(|s| s.as_str()))
        .bind(filter.kind.map(|k| k.as_str()))
        .bind(filter.subject.map(|s| i64::from(s.0)))
        .bind(filter.due_before)
        .bind(filter.open_due_before)
        .bind(filter.before.map(to_i64).transpose()?)
        .bind(i64::from(filter.limit))
        .bind(filter.not_overdue_at)
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter().map(|r| request_row(&Cols(r))).collect()
    }

    async fn request_queue(&self, filter: &QueueFilter) -> Result<Vec<Request>> {
        let rows = sqlx::query(&format!(
            "SELECT {REQUEST_COLUMNS} FROM requests \
             WHERE state NOT IN ('completed', 'rejected') \
             AND (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR kind = ?2) \
             AND (?3 IS NULL OR due_at > ?3 OR (due_at = ?3 AND id > ?4)) \
             ORDER BY due_at, id LIMIT ?5"
        ))
        .bind(filter.state.map(|s| s.as_str()))
        .bind(filter.kind.map(|k| k.as_str()))
        .bind(filter.after.map(|(due_at, _)| due_at))
        .bind(filter.after.map(|(_, id)| to_i64(id)).transpose()?)
        .bind(i64::from(filter.limit))
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter().map(|r| request_row(&Cols(r))).collect()
    }

    async fn open_request_counts(&self, now: UnixMillis, window: i64) -> Result<OpenCounts> {
        let row = sqlx::query(
            "SELECT COUNT(*) FILTER (WHERE due_at < ?1), \
             COUNT(*) FILTER (WHERE due_at >= ?1 AND due_at <= ?2) \
             FROM requests WHERE state NOT IN ('completed', 'rejected')",
        )
        .bind(now)
        .bind(now.saturating_add(window))
        .fetch_one(&self.read)
        .await
        .map_err(db)?;
        let count = |i: usize| -> Result<u64> {
            kept_store::columns::to_u64(row.try_get(i).map_err(db)?, "request count")
        };
        Ok(OpenCounts {
            overdue: count(0)?,
            due_soon: count(1)?,
        })
    }

    async fn request_log_of(&self, id: u64) -> Result<Vec<LedgerRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {LOG_COLUMNS} FROM request_log WHERE request_id = ? ORDER BY seq"
        ))
        .bind(to_i64(id)?)
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter().map(|r| ledger_row(&Cols(r))).collect()
    }

    async fn request_log_rows(&self, after: u64, limit: u32) -> Result<Vec<LedgerRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {LOG_COLUMNS} FROM request_log WHERE seq > ? ORDER BY seq LIMIT ?"
        ))
        .bind(to_i64(after)?)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter().map(|r| ledger_row(&Cols(r))).collect()
    }

    async fn request_log_checkpoints(&self) -> Result<Vec<kept_core::ledger::Checkpoint>> {
        let rows = sqlx::query(&format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM request_log_checkpoints ORDER BY seq"
        ))
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter().map(|r| checkpoint_row(&Cols(r))).collect()
    }

    async fn file_erasure_request(&self, request: NewErasureRequest) -> Result<ErasureRequest> {
        let mut tx = self.write.begin().await.map_err(db)?;
        let open = sqlx::query(&format!(
            "SELECT {ERASURE_COLUMNS} FROM erasure_requests WHERE subject_id = ? AND state = 'received'"
        ))
        .bind(i64::from(request.subject.0))
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        if let Some(row) = open {
            return erasure_row(&Cols(&row));
        }
        let inserted = sqlx::query(&format!(
            "INSERT INTO erasure_requests (subject_id, regime, source, state, requested_at, \
             due_at) VALUES (?, ?, ?, 'received', ?, ?) RETURNING {ERASURE_COLUMNS}"
        ))
        .bind(i64::from(request.subject.0))
        .bind(&request.regime)
        .bind(&request.source)
        .bind(request.requested_at)
        .bind(request.due_at)
        .fetch_one(&mut *tx)
        .await;
        let row = match inserted {
            Ok(row) => row,
            Err(e) => {
                drop(tx);
                return Err(self.missing_subject(e, [request.subject]).await);
            }
        };
        let stored = erasure_row(&Cols(&row))?;
        tx.commit().await.map_err(db)?;
        Ok(stored)
    }

    async fn erasure_requests(&self, subject: SubjectId) -> Result<Vec<ErasureRequest>> {
        let rows = sqlx::query(&format!(
            "SELECT {ERASURE_COLUMNS} FROM erasure_requests WHERE subject_id = ? ORDER BY id"
        ))
        .bind(i64::from(subject.0))
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter().map(|r| erasure_row(&Cols(r))).collect()
    }
}
