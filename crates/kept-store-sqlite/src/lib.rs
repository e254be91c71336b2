//! Kept's `Store` on SQLite: the embedded default (`./kept-data/kept.db`, WAL).
//!
//! SQLite admits one writer at a time, so every write goes through a pool of exactly one
//! connection (writes queue in memory instead of spinning on the file lock) and ledger appends
//! and contacts are batched by the group committer; reads use their own pool and, with WAL,
//! never wait for the writer. `synchronous = FULL` makes a commit durable before it returns.

use async_trait::async_trait;
use kept_core::SubjectId;
use kept_core::UnixMillis;
use kept_core::ledger::{ChainHash, Checkpoint, ConsentRecord, LedgerEntry};
use kept_core::subject::{ChannelPreference, Contact, Subject, Trait};
use kept_store::columns::{
    CHECKPOINT_COLUMNS, chain_hash, dense_ids, ledger_subject, subject_id, to_i64, to_u32, to_u64,
};
use kept_store::columns::{
    api_key_row, checkpoint_row, contact_row, ledger_row, preference_row, subject_row, trait_row,
};
use kept_store::group_commit::{
    BatchWriter, ChainedRow, CheckpointSigner, GroupCommit, HotWrite, HotWritten, LastCheckpoint,
    SignerSlot, answer_hot_batch, hot_batch_uses, plan_checkpoint, plan_hot_batch,
};
use kept_store::{
    ApiKeyRecord, Backend, LedgerRow, NewSubject, NoticeContent, NoticeHash, Result, Store,
    StoreError, first_duplicate_user_id, last_trait_wins,
};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod corrections;
mod decision_log;
mod erasure;
mod gates;
mod migrations;
mod operators;
mod outbox;
mod prefcenter;
mod quarantine;
mod requests;
mod uses;

mod collection;

/// Rows per multi-row `INSERT`. Full chunks share one prepared statement; SQLite allows 32,766
/// bound values per statement, far above 500 rows of at most 9 columns.
const CHUNK: usize = 500;

/// Rows the group committer puts in one transaction at most.
const MAX_BATCH_ROWS: usize = 20_000;

/// Kept's store in one SQLite file.
pub struct SqliteStore {
    path: PathBuf,
    read: SqlitePool,
    write: SqlitePool,
    hot: GroupCommit<HotWriter>,
    /// The checkpoint signer the committer uses.
    signer: SignerSlot,
    /// Events and profile traits from the collection API.
    events: GroupCommit<collection::EventWriter>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Creates the database file readable by its owner only, unless it exists. It holds sealed
/// personal data, and (unless `master_key_file` keeps it apart) the key that unseals them;
/// SQLite gives its `-wal` and `-shm` files the database file's permissions.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

impl SqliteStore {
    /// Opens (creating it and its folder if needed) the database at `path` and runs the
    /// migrations. Must be called inside a Tokio runtime: it starts the group committer.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Unavailable(format!("cannot create `{}`: {e}", parent.display()))
            })?;
        }
        create_private(path).map_err(|e| {
            StoreError::Unavailable(format!("cannot create `{}`: {e}", path.display()))
        })?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .statement_cache_capacity(512)
            .pragma("temp_store", "memory")
            // 64 MiB of page cache per connection (the default is 2 MiB): event batches insert
            // into indexes all over the file, which would otherwise be re-read page by page.
            .pragma("cache_size", "-65536")
            // Checkpoint every 64 MiB of WAL rather than every 4 MiB: index pages written many
            // times between two checkpoints are copied into the database once.
            .pragma("wal_autocheckpoint", "16384");
        let unavailable = |e: sqlx::Error| {
            StoreError::Unavailable(format!("cannot open `{}`: {e}", path.display()))
        };
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(options.clone())
            .await
            .map_err(unavailable)?;
        migrations::migrator()
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))?
            .run(&write)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(60))
            // 4 MiB of page cache per reader, not the writer's 64: the index answers most
            // reads, and the operating system caches the file for all four readers at once.
            .connect_with(options.read_only(true).pragma("cache_size", "-4096"))
            .await
            .map_err(unavailable)?;
        let signer = SignerSlot::default();
        let hot = GroupCommit::start(
            HotWriter {
                pool: write.clone(),
                signer: signer.clone(),
                tip: None,
            },
            MAX_BATCH_ROWS,
        );
        let events = collection::start_event_committer(write.clone());
        Ok(SqliteStore {
            path: path.to_path_buf(),
            read,
            write,
            hot,
            signer,
            events,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn hot(&self, write: HotWrite) -> Result<HotWritten> {
        self.hot.submit(write).await
    }

    /// After a unique violation: the first user id of `subjects` that was already taken (by
    /// the batch itself or by a stored subject), to name it in the error.
    async fn taken_user_id(&self, subjects: &[NewSubject]) -> Option<String> {
        if let Some(dup) = first_duplicate_user_id(subjects) {
            return Some(dup.to_string());
        }
        for user_id in subjects.iter().filter_map(|s| s.user_id.as_deref()) {
            if let Ok(Some(_)) = self.subject_by_user_id(user_id).await {
                return Some(user_id.to_string());
            }
        }
        None
    }

    /// After a foreign key violation: names the first of `subjects` that does not exist.
    async fn missing_subject(
        &self,
        e: sqlx::Error,
        subjects: impl IntoIterator<Item = SubjectId>,
    ) -> StoreError {
        if !matches!(&e, sqlx::Error::Database(d) if d.is_foreign_key_violation()) {
            return db(e);
        }
        let mut checked = std::collections::HashSet::new();
        for id in subjects {
            if checked.insert(id) && matches!(self.subject(id).await, Ok(None)) {
                return StoreError::NotFound {
                    what: "subject",
                    key: id.to_string(),
                };
            }
        }
        db(e)
    }
}

/// The group committer's side: one transaction per batch on the single write connection.
///
/// It keeps the chain's tip and the last checkpoint between batches and writes a batch, with the
/// checkpoint of its new tip, as one script (`BEGIN IMMEDIATE; INSERT …; COMMIT`): a single
/// round trip to the connection's thread. Another process appending to the same file cannot
/// fork either chain: its rows take the positions this batch counted on, the primary key refuses
/// ours, and the batch is redone with the tip and the last checkpoint read under the write lock.
struct HotWriter {
    pool: SqlitePool,
    signer: SignerSlot,
    /// As of this committer's last commit; `None` after a failure or before the first batch,
    /// when it is read from the database.
    tip: Option<Tip>,
}

#[derive(Debug, Clone, Copy)]
struct Tip {
    ledger: (u64, ChainHash),
    checkpoint: LastCheckpoint,
}

impl HotWriter {
    /// Plans `batch` on `tip`: its rows, its contacts and the checkpoint it ends with.
    fn plan<'b>(
        signer: Option<&std::sync::Arc<dyn CheckpointSigner>>,
        tip: Tip,
        batch: &'b [HotWrite],
    ) -> (Tip, Vec<ChainedRow>, Vec<&'b Contact>, Option<Checkpoint>) {
        let (seq, hash, rows, contacts) = plan_hot_batch(tip.ledger, batch);
        let checkpoint = plan_checkpoint(signer, tip.ledger.0, (seq, hash), tip.checkpoint);
        let next = Tip {
            ledger: (seq, hash),
            checkpoint: checkpoint
                .as_ref()
                .map_or(tip.checkpoint, |c| (c.seq, c.digest())),
        };
        (next, rows, contacts, checkpoint)
    }
}

#[async_trait]
impl BatchWriter for HotWriter {
    type Item = HotWrite;
    type Output = HotWritten;

    async fn write_batch(&mut self, batch: Vec<HotWrite>) -> Result<Vec<HotWritten>> {
        let signer = self.signer.get();
        let mut conn = self.pool.acquire().await.map_err(db)?;
        // A round asking only for a checkpoint reads the tip under the lock: records another
        // process appended are invisible to the cached tip until they collide with ours.
        let only_checkpoint = batch.iter().all(|w| matches!(w, HotWrite::Checkpoint));
        let cached = self.tip.take().filter(|_| !only_checkpoint);
        if let Some(tip) = cached {
            let (next, rows, contacts, checkpoint) = HotWriter::plan(signer.as_ref(), tip, &batch);
            let used = hot_batch_uses(&batch);
            if rows.is_empty() && contacts.is_empty() && used.is_empty() && checkpoint.is_none() {
                self.tip = Some(tip);
                return Ok(answer_hot_batch(&batch, rows, None));
            }
            match write_script(&mut conn, &rows, &contacts, &used, checkpoint.as_ref()).await {
                Ok(()) => {
                    self.tip = Some(next);
                    if let (Some(signer), Some(cp)) = (&signer, &checkpoint) {
                        signer.committed(cp);
                    }
                    return Ok(answer_hot_batch(&batch, rows, checkpoint.as_ref()));
                }
                Err(e) => {
                    // Whatever failed, no transaction may stay open on the write connection.
                    let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                    if !matches!(&e, sqlx::Error::Database(d) if d.is_unique_violation()) {
                        return Err(db(e));
                    }
                    tracing::debug!("the ledger grew under this committer; re-reading its tip");
                }
            }
        }
        let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE")
            .await
            .map_err(db)?;
        let tip = Tip {
            ledger: read_tip(&mut tx).await?,
            checkpoint: read_last_checkpoint(&mut tx).await?,
        };
        let (next, rows, contacts, checkpoint) = HotWriter::plan(signer.as_ref(), tip, &batch);
        insert_ledger_rows(&mut tx, &rows).await?;
        insert_contacts(&mut tx, &contacts).await?;
        uses::insert(&mut tx, &hot_batch_uses(&batch)).await?;
        if let Some(cp) = &checkpoint {
            insert_checkpoint(&mut tx, cp, "").await.map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        self.tip = Some(next);
        if let (Some(signer), Some(cp)) = (&signer, &checkpoint) {
            signer.committed(cp);
        }
        Ok(answer_hot_batch(&batch, rows, checkpoint.as_ref()))
    }

    fn weight(item: &HotWrite) -> usize {
        item.rows()
    }
}

const LEDGER_INSERT: &str = "INSERT INTO ledger (seq, subject_id, at, bytes, hash) VALUES ";
const CONTACT_INSERT: &str =
    "INSERT INTO contacts (subject_id, channel, purpose, topic, at) VALUES ";
const CHECKPOINT_INSERT: &str = "INSERT INTO ledger_checkpoints \
     (seq, hash, at, key_id, signature, prev) VALUES (?, ?, ?, ?, ?, ?)";

/// One transaction as one script. Its text depends only on the row counts, so the prepared
/// statements are reused from the connection's cache.
async fn write_script(
    conn: &mut SqliteConnection,
    rows: &[ChainedRow],
    contacts: &[&Contact],
    used: &[&kept_store::UseRecord],
    checkpoint: Option<&Checkpoint>,
) -> Result<(), sqlx::Error> {
    let used = used
        .iter()
        .map(|u| u.columns())
        .collect::<Result<Vec<_>>>()
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let mut sql = String::from("BEGIN IMMEDIATE;");
    for chunk in rows.chunks(CHUNK) {
        sql.push_str(&values_sql(LEDGER_INSERT, 5, chunk.len(), ";"));
    }
    for chunk in contacts.chunks(CHUNK) {
        sql.push_str(&values_sql(CONTACT_INSERT, 5, chunk.len(), ";"));
    }
    for chunk in used.chunks(CHUNK) {
        sql.push_str(&values_sql(
            uses::INSERT,
            13,
            chunk.len(),
            " ON CONFLICT DO NOTHING;",
        ));
    }
    if checkpoint.is_some() {
        sql.push_str(CHECKPOINT_INSERT);
        sql.push(';');
    }
    sql.push_str("COMMIT;");
    let mut q = sqlx::query(&sql);
    for row in rows {
        let seq = i64::try_from(row.entry.seq).map_err(|_| {
            sqlx::Error::Protocol(format!("seq `{}` is out of range", row.entry.seq))
        })?;
        q = q
            .bind(seq)
            .bind(row.subject)
            .bind(row.at)
            .bind(row.entry.bytes.as_slice())
            .bind(row.entry.hash.0.as_slice());
    }
    for c in contacts {
        q = q
            .bind(i64::from(c.subject.0))
            .bind(c.channel.as_str())
            .bind(c.purpose.as_str())
            .bind(c.topic.as_deref())
            .bind(c.at);
    }
    for u in &used {
        q = q
            .bind(u.at)
            .bind(u.kind)
            .bind(u.subject)
            .bind(u.subjects)
            .bind(u.count)
            .bind(u.purpose)
            .bind(u.channel)
            .bind(u.topic)
            .bind(u.categories.as_str())
            .bind(u.reason)
            .bind(u.evidence)
            .bind(u.actor)
            .bind(u.reference);
    }
    if let Some(cp) = checkpoint {
        q = bind_checkpoint(q, cp)?;
    }
    q.execute(&mut *conn).await.map(|_| ())
}

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

fn bind_checkpoint<'q>(
    q: SqliteQuery<'q>,
    cp: &'q Checkpoint,
) -> Result<SqliteQuery<'q>, sqlx::Error> {
    let seq = i64::try_from(cp.seq)
        .map_err(|_| sqlx::Error::Protocol(format!("seq `{}` is out of range", cp.seq)))?;
    Ok(q.bind(seq)
        .bind(cp.hash.0.as_slice())
        .bind(cp.at)
        .bind(cp.key_id.as_str())
        .bind(cp.signature.as_slice())
        .bind(cp.prev.as_ref().map(|p| p.0.as_slice())))
}

/// Inserts one checkpoint; `conflict` is appended to the statement (`ON CONFLICT …`).
async fn insert_checkpoint(
    conn: &mut SqliteConnection,
    cp: &Checkpoint,
    conflict: &str,
) -> Result<(), sqlx::Error> {
    let sql = format!("{CHECKPOINT_INSERT}{conflict}");
    bind_checkpoint(sqlx::query(&sql), cp)?
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

async fn read_tip(conn: &mut SqliteConnection) -> Result<(u64, ChainHash)> {
    let row = sqlx::query("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?;
    match row {
        None => Ok((0, ChainHash::GENESIS)),
        Some(row) => {
            let seq = to_u64(row.try_get::<i64, _>(0).map_err(db)?, "ledger seq")?;
            let hash: Vec<u8> = row.try_get(1).map_err(db)?;
            Ok((seq, chain_hash(seq, &hash)?))
        }
    }
}

async fn read_last_checkpoint(conn: &mut SqliteConnection) -> Result<LastCheckpoint> {
    let row = sqlx::query(&format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM ledger_checkpoints ORDER BY seq DESC LIMIT 1"
    ))
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?;
    match row {
        None => Ok((0, ChainHash::GENESIS)),
        Some(row) => checkpoint_row(&Cols(&row)).map(|c| (c.seq, c.digest())),
    }
}

fn values_sql(head: &str, columns: usize, rows: usize, tail: &str) -> String {
    let one = format!("({})", vec!["?"; columns].join(","));
    let mut sql = String::with_capacity(head.len() + tail.len() + rows * (one.len() + 1));
    sql.push_str(head);
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&one);
    }
    sql.push_str(tail);
    sql
}

async fn insert_ledger_rows(conn: &mut SqliteConnection, rows: &[ChainedRow]) -> Result<()> {
    for chunk in rows.chunks(CHUNK) {
        let sql = values_sql(LEDGER_INSERT, 5, chunk.len(), "");
        let mut q = sqlx::query(&sql);
        for row in chunk {
            q = q
                .bind(to_i64(row.entry.seq)?)
                .bind(row.subject)
                .bind(row.at)
                .bind(row.entry.bytes.as_slice())
                .bind(row.entry.hash.0.as_slice());
        }
        q.execute(&mut *conn).await.map_err(db)?;
    }
    Ok(())
}

async fn insert_contacts(conn: &mut SqliteConnection, contacts: &[&Contact]) -> Result<()> {
    for chunk in contacts.chunks(CHUNK) {
        let sql = values_sql(CONTACT_INSERT, 5, chunk.len(), "");
        let mut q = sqlx::query(&sql);
        for c in chunk {
            q = q
                .bind(i64::from(c.subject.0))
                .bind(c.channel.as_str())
                .bind(c.purpose.as_str())
                .bind(c.topic.as_deref())
                .bind(c.at);
        }
        q.execute(&mut *conn).await.map_err(db)?;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.read)
            .await
            .map(|_| ())
            .map_err(db)
    }

    // --- consent ledger -------------------------------------------------------------------

    async fn append_consent(&self, record: ConsentRecord) -> Result<LedgerEntry> {
        match self.hot(HotWrite::Consents(vec![record])).await? {
            HotWritten::Entries(entries) => entries.into_iter().next().ok_or_else(lost),
            HotWritten::Contacts | HotWritten::Checkpoint(_) => Err(lost()),
        }
    }

    async fn append_consents(&self, records: Vec<ConsentRecord>) -> Result<Vec<LedgerEntry>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        match self.hot(HotWrite::Consents(records)).await? {
            HotWritten::Entries(entries) => Ok(entries),
            HotWritten::Contacts | HotWritten::Checkpoint(_) => Err(lost()),
        }
    }

    async fn ledger_rows(&self, after: u64, limit: u32) -> Result<Vec<LedgerRow>> {
        // Verification streams the whole ledger through here. Row by row, the driver hands
        // every row across threads one at a time; packed, SQLite concatenates a page into one
        // row of six columns, about three times faster.
        let packed = sqlx::query(PACKED_LEDGER_PAGE)
            .bind(to_i64(after)?)
            .bind(i64::from(limit))
            .fetch_one(&self.read)
            .await
            .map_err(db)?;
        match unpack_ledger_page(&packed)? {
            Some(rows) => Ok(rows),
            None => {
                let rows = sqlx::query(
                    "SELECT seq, subject_id, bytes, hash, at FROM ledger WHERE seq > ? \
                     ORDER BY seq LIMIT ?",
                )
                .bind(to_i64(after)?)
                .bind(i64::from(limit))
                .fetch_all(&self.read)
                .await
                .map_err(db)?;
                rows.iter().map(|r| ledger_row(&Cols(r))).collect()
            }
        }
    }

    async fn ledger_for_subject(&self, subject: SubjectId) -> Result<Vec<LedgerEntry>> {
        let rows =
            sqlx::query("SELECT seq, bytes, hash FROM ledger WHERE subject_id = ? ORDER BY seq")
                .bind(i64::from(subject.0))
                .fetch_all(&self.read)
                .await
                .map_err(db)?;
        rows.iter()
            .map(|row| {
                let seq = to_u64(row.try_get(0).map_err(db)?, "ledger seq")?;
                let hash: Vec<u8> = row.try_get(2).map_err(db)?;
                Ok(LedgerEntry {
                    seq,
                    bytes: row.try_get(1).map_err(db)?,
                    hash: chain_hash(seq, &hash)?,
                })
            })
            .collect()
    }

    async fn ledger_len(&self) -> Result<u64> {
        let len: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM ledger")
            .fetch_one(&self.read)
            .await
            .map_err(db)?;
        to_u64(len, "ledger length")
    }

    async fn ledger_tip(&self) -> Result<Option<(u64, ChainHash)>> {
        let mut conn = self.read.acquire().await.map_err(db)?;
        let (seq, hash) = read_tip(&mut conn).await?;
        Ok((seq > 0).then_some((seq, hash)))
    }

    fn set_checkpoint_signer(&self, signer: Option<std::sync::Arc<dyn CheckpointSigner>>) {
        self.signer.set(signer);
    }

    async fn checkpoint_tip(&self) -> Result<Option<Checkpoint>> {
        match self.hot(HotWrite::Checkpoint).await? {
            HotWritten::Checkpoint(checkpoint) => Ok(checkpoint),
            _ => Err(lost()),
        }
    }

    async fn checkpoint_covering(&self, seq: u64) -> Result<Option<Checkpoint>> {
        let row = sqlx::query(&format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM ledger_checkpoints WHERE seq >= ? ORDER BY seq LIMIT 1"
        ))
        .bind(to_i64(seq)?)
        .fetch_optional(&self.read)
        .await
        .map_err(db)?;
        row.as_ref().map(|r| checkpoint_row(&Cols(r))).transpose()
    }

    async fn last_checkpoint(&self) -> Result<Option<Checkpoint>> {
        let row = sqlx::query(&format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM ledger_checkpoints ORDER BY seq DESC LIMIT 1"
        ))
        .fetch_optional(&self.read)
        .await
        .map_err(db)?;
        row.as_ref().map(|r| checkpoint_row(&Cols(r))).transpose()
    }

    async fn put_checkpoint(&self, checkpoint: &Checkpoint) -> Result<()> {
        // Two servers may sign the same position; the first signature stands.
        let mut conn = self.write.acquire().await.map_err(db)?;
        insert_checkpoint(&mut conn, checkpoint, " ON CONFLICT (seq) DO NOTHING")
            .await
            .map_err(db)
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        let rows = sqlx::query(&format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM ledger_checkpoints ORDER BY seq"
        ))
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter().map(|r| checkpoint_row(&Cols(r))).collect()
    }

    // --- notices --------------------------------------------------------------------------

    async fn record_notice_hashes(&self, hashes: &[NoticeHash]) -> Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        for chunk in hashes.chunks(CHUNK) {
            let sql = values_sql(
                "INSERT INTO notice_hashes (notice_id, version, hash, recorded_at) VALUES ",
                4,
                chunk.len(),
                " ON CONFLICT (notice_id, version) DO NOTHING",
            );
            let mut q = sqlx::query(&sql);
            for h in chunk {
                q = q
                    .bind(h.notice_id.as_str())
                    .bind(i64::from(h.version))
                    .bind(h.hash.as_str())
                    .bind(h.recorded_at);
            }
            q.execute(&mut *tx).await.map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn notice_hashes(&self) -> Result<Vec<NoticeHash>> {
        let rows = sqlx::query(
            "SELECT notice_id, version, hash, recorded_at FROM notice_hashes \
             ORDER BY notice_id, version",
        )
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| {
                Ok(NoticeHash {
                    notice_id: row.try_get(0).map_err(db)?,
                    version: to_u32(row.try_get(1).map_err(db)?, "notice version")?,
                    hash: row.try_get(2).map_err(db)?,
                    recorded_at: row.try_get(3).map_err(db)?,
                })
            })
            .collect()
    }

    async fn record_notices(&self, notices: &[NoticeContent]) -> Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        for chunk in notices.chunks(CHUNK) {
            let sql = values_sql(
                "INSERT INTO notice_hashes (notice_id, version, hash, recorded_at) VALUES ",
                4,
                chunk.len(),
                " ON CONFLICT (notice_id, version) DO NOTHING",
            );
            let mut q = sqlx::query(&sql);
            for n in chunk {
                q = q
                    .bind(n.notice_id.as_str())
                    .bind(i64::from(n.version))
                    .bind(n.hash.as_str())
                    .bind(n.recorded_at);
            }
            q.execute(&mut *tx).await.map_err(db)?;
            let sql = values_sql(
                "INSERT INTO notice_texts (notice_id, version, hash, content, recorded_at) VALUES ",
                5,
                chunk.len(),
                " ON CONFLICT (notice_id, version, hash) DO NOTHING",
            );
            let mut q = sqlx::query(&sql);
            for n in chunk {
                q = q
                    .bind(n.notice_id.as_str())
                    .bind(i64::from(n.version))
                    .bind(n.hash.as_str())
                    .bind(n.content.as_str())
                    .bind(n.recorded_at);
            }
            q.execute(&mut *tx).await.map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn notice_contents(&self, notice_id: &str) -> Result<Vec<NoticeContent>> {
        let rows = sqlx::query(
            "SELECT notice_id, version, hash, content, recorded_at FROM notice_texts \
             WHERE notice_id = ? ORDER BY version, recorded_at, hash",
        )
        .bind(notice_id)
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| {
                Ok(NoticeContent {
                    notice_id: row.try_get(0).map_err(db)?,
                    version: to_u32(row.try_get(1).map_err(db)?, "notice version")?,
                    hash: row.try_get(2).map_err(db)?,
                    content: row.try_get(3).map_err(db)?,
                    recorded_at: row.try_get(4).map_err(db)?,
                })
            })
            .collect()
    }

    // --- API keys -------------------------------------------------------------------------

    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_keys (id, hash, role, name, created_at, revoked_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(key.id.as_str())
        .bind(key.hash.as_slice())
        .bind(key.role.as_str())
        .bind(key.name.as_str())
        .bind(key.created_at)
        .bind(key.revoked_at)
        .execute(&self.write)
        .await
        .map_err(|e| conflict(e, "api key", &key.id))?;
        Ok(())
    }

    async fn api_key_by_hash(&self, hash: &[u8; 32]) -> Result<Option<ApiKeyRecord>> {
        let row = sqlx::query(
            "SELECT id, hash, role, name, created_at, revoked_at FROM api_keys \
             WHERE hash = ? AND revoked_at IS NULL",
        )
        .bind(hash.as_slice())
        .fetch_optional(&self.read)
        .await
        .map_err(db)?;
        row.as_ref().map(|r| api_key_row(&Cols(r))).transpose()
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        let rows = sqlx::query(
            "SELECT id, hash, role, name, created_at, revoked_at FROM api_keys \
             ORDER BY created_at, id",
        )
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter().map(|r| api_key_row(&Cols(r))).collect()
    }

    async fn revoke_api_key(&self, id: &str, at: UnixMillis) -> Result<()> {
        // Revoking twice keeps the first revocation time.
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?")
                .bind(at)
                .bind(id)
                .execute(&self.write)
                .await
                .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "api key",
                key: id.to_string(),
            });
        }
        Ok(())
    }

    // --- settings -------------------------------------------------------------------------

    async fn get_setting(&self, key: &str) -> Result<Option<Vec<u8>>> {
        sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.read)
            .await
            .map_err(db)
    }

    async fn put_setting(&self, key: &str, value: &[u8]) -> Result<()> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES (?, ?) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.write)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn put_setting_if_absent(&self, key: &str, value: &[u8]) -> Result<Vec<u8>> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        sqlx::query("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let stored: Vec<u8> = sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
            .bind(key)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(stored)
    }

    // --- subjects -------------------------------------------------------------------------

    async fn insert_subjects(&self, subjects: Vec<NewSubject>) -> Result<Vec<SubjectId>> {
        if subjects.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let next: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id) + 1, 0) FROM subjects")
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        let first = to_u32(next, "subject id")?;
        let ids = dense_ids(first, subjects.len())?;
        for (chunk, chunk_ids) in subjects.chunks(CHUNK).zip(ids.chunks(CHUNK)) {
            let sql = values_sql(
                "INSERT INTO subjects (id, user_id, country, region, time_zone, created_at) VALUES ",
                6,
                chunk.len(),
                "",
            );
            let mut q = sqlx::query(&sql);
            for (s, id) in chunk.iter().zip(chunk_ids) {
                q = q
                    .bind(i64::from(id.0))
                    .bind(s.user_id.as_deref())
                    .bind(s.country.as_deref())
                    .bind(s.region.as_deref())
                    .bind(s.time_zone.as_deref())
                    .bind(s.created_at);
            }
            if let Err(e) = q.execute(&mut *tx).await {
                drop(tx);
                return Err(match &e {
                    sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict {
                        what: "subject with user id",
                        key: self.taken_user_id(&subjects).await.unwrap_or_default(),
                    },
                    _ => db(e),
                });
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(ids)
    }

    async fn subject(&self, id: SubjectId) -> Result<Option<Subject>> {
        let row = sqlx::query(&format!("{SUBJECT_COLUMNS} WHERE id = ?"))
            .bind(i64::from(id.0))
            .fetch_optional(&self.read)
            .await
            .map_err(db)?;
        row.as_ref().map(|r| subject_row(&Cols(r))).transpose()
    }

    async fn subject_by_user_id(&self, user_id: &str) -> Result<Option<SubjectId>> {
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM subjects WHERE user_id = ?")
            .bind(user_id)
            .fetch_optional(&self.read)
            .await
            .map_err(db)?;
        id.map(subject_id).transpose()
    }

    async fn subjects_page(&self, after: Option<SubjectId>, limit: u32) -> Result<Vec<Subject>> {
        let rows = sqlx::query(&format!(
            "{SUBJECT_COLUMNS} WHERE id > ? ORDER BY id LIMIT ?"
        ))
        .bind(after.map_or(-1, |s| i64::from(s.0)))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter().map(|r| subject_row(&Cols(r))).collect()
    }

    async fn subject_count(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM subjects")
            .fetch_one(&self.read)
            .await
            .map_err(db)?;
        to_u64(n, "subject count")
    }

    async fn set_erasure_requested(&self, id: SubjectId, at: Option<UnixMillis>) -> Result<()> {
        let done = sqlx::query("UPDATE subjects SET erasure_requested_at = ? WHERE id = ?")
            .bind(at)
            .bind(i64::from(id.0))
            .execute(&self.write)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "subject",
                key: id.to_string(),
            });
        }
        Ok(())
    }

    async fn upsert_traits(&self, traits: Vec<Trait>) -> Result<()> {
        let traits = last_trait_wins(traits);
        if traits.is_empty() {
            return Ok(());
        }
        let values: Vec<String> = traits
            .iter()
            .map(|t| serde_json::to_string(&t.value))
            .collect::<Result<_, _>>()
            .map_err(|e| StoreError::Database(format!("cannot encode a trait value: {e}")))?;
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        for (chunk, values) in traits.chunks(CHUNK).zip(values.chunks(CHUNK)) {
            let sql = values_sql(
                "INSERT INTO traits (subject_id, key, value, category, collection_point, \
                 notice_id, notice_version, collected_at, source) VALUES ",
                9,
                chunk.len(),
                " ON CONFLICT (subject_id, key) DO UPDATE SET value = excluded.value, \
                 category = excluded.category, collection_point = excluded.collection_point, \
                 notice_id = excluded.notice_id, notice_version = excluded.notice_version, \
                 collected_at = excluded.collected_at, source = excluded.source",
            );
            let mut q = sqlx::query(&sql);
            for (t, value) in chunk.iter().zip(values) {
                q = q
                    .bind(i64::from(t.subject.0))
                    .bind(t.key.as_str())
                    .bind(value.as_str())
                    .bind(t.category.as_str())
                    .bind(t.provenance.collection_point.as_str())
                    .bind(t.provenance.notice_id.as_str())
                    .bind(i64::from(t.provenance.notice_version))
                    .bind(t.provenance.collected_at)
                    .bind(t.provenance.source.as_str());
            }
            if let Err(e) = q.execute(&mut *tx).await {
                drop(tx);
                let subjects: Vec<SubjectId> = traits.iter().map(|t| t.subject).collect();
                return Err(self.missing_subject(e, subjects).await);
            }
        }
        tx.commit().await.map_err(db)
    }

    async fn traits(&self, subject: SubjectId) -> Result<Vec<Trait>> {
        let rows = sqlx::query(&format!(
            "{TRAIT_COLUMNS} WHERE subject_id = ? ORDER BY key"
        ))
        .bind(i64::from(subject.0))
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter().map(|r| trait_row(&Cols(r))).collect()
    }

    async fn traits_page(&self, after: Option<SubjectId>, limit: u32) -> Result<Vec<Trait>> {
        let rows = sqlx::query(&format!(
            "{TRAIT_COLUMNS} WHERE subject_id IN (SELECT DISTINCT subject_id FROM traits \
             WHERE subject_id > ?1 ORDER BY subject_id LIMIT ?2) ORDER BY subject_id, key"
        ))
        .bind(after.map_or(-1, |s| i64::from(s.0)))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter().map(|r| trait_row(&Cols(r))).collect()
    }

    async fn put_channel_preference(&self, pref: &ChannelPreference) -> Result<()> {
        let done = sqlx::query(
            "INSERT INTO channel_preferences (subject_id, channel, frequency_max, \
             frequency_period, quiet_start, quiet_end, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (subject_id, channel) DO UPDATE SET \
             frequency_max = excluded.frequency_max, frequency_period = excluded.frequency_period, \
             quiet_start = excluded.quiet_start, quiet_end = excluded.quiet_end, \
             updated_at = excluded.updated_at",
        )
        .bind(i64::from(pref.subject.0))
        .bind(pref.channel.as_str())
        .bind(pref.frequency.map(|f| i64::from(f.max)))
        .bind(pref.frequency.map(|f| f.period.as_str()))
        .bind(pref.quiet_hours.map(|q| i64::from(q.start_minute)))
        .bind(pref.quiet_hours.map(|q| i64::from(q.end_minute)))
        .bind(pref.updated_at)
        .execute(&self.write)
        .await;
        if let Err(e) = done {
            return Err(self.missing_subject(e, [pref.subject]).await);
        }
        Ok(())
    }

    async fn channel_preferences(&self, subject: SubjectId) -> Result<Vec<ChannelPreference>> {
        let rows = sqlx::query(&format!(
            "{PREFERENCE_COLUMNS} WHERE subject_id = ? ORDER BY channel"
        ))
        .bind(i64::from(subject.0))
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter().map(|r| preference_row(&Cols(r))).collect()
    }

    async fn all_channel_preferences(&self) -> Result<Vec<ChannelPreference>> {
        let rows = sqlx::query(&format!(
            "{PREFERENCE_COLUMNS} ORDER BY subject_id, channel"
        ))
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter().map(|r| preference_row(&Cols(r))).collect()
    }

    async fn record_contacts(
        &self,
        contacts: Vec<Contact>,
        uses: Vec<kept_store::UseRecord>,
    ) -> Result<()> {
        if contacts.is_empty() && uses.is_empty() {
            return Ok(());
        }
        self.hot(HotWrite::Contacts(contacts, uses))
            .await
            .map(|_| ())
    }

    async fn contacts_since(&self, since: UnixMillis) -> Result<Vec<Contact>> {
        let rows = sqlx::query(
            "SELECT subject_id, channel, purpose, topic, at FROM contacts WHERE at >= ? \
             ORDER BY at, id",
        )
        .bind(since)
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter().map(|r| contact_row(&Cols(r))).collect()
    }

    async fn contacts_of(&self, subject: SubjectId, since: UnixMillis) -> Result<Vec<Contact>> {
        let rows = sqlx::query(
            "SELECT subject_id, channel, purpose, topic, at FROM contacts \
             WHERE subject_id = ? AND at >= ? ORDER BY at, id",
        )
        .bind(i64::from(subject.0))
        .bind(since)
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter().map(|r| contact_row(&Cols(r))).collect()
    }

    async fn append_decision_log(&self, entries: Vec<kept_store::DecisionLogEntry>) -> Result<()> {
        decision_log::append(&self.write, entries).await
    }

    async fn use_candidates(
        &self,
        subject: SubjectId,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<kept_store::UseRecord>> {
        uses::candidates(&self.read, subject, before, limit).await
    }

    async fn decision_log(
        &self,
        query: &kept_store::DecisionLogQuery,
    ) -> Result<Vec<kept_store::DecisionLogEntry>> {
        decision_log::read(&self.read, query).await
    }

    async fn decision_counts(&self, since: i64) -> Result<Vec<kept_store::DecisionCount>> {
        decision_log::counts(&self.read, since).await
    }

    async fn prune_decision_log(&self, before: UnixMillis, limit: u32) -> Result<u64> {
        decision_log::prune(&self.write, before, limit).await
    }

    async fn quarantine(
        &self,
        entries: Vec<kept_store::quarantine::QuarantineEntry>,
    ) -> Result<()> {
        quarantine::write(&self.write, entries).await
    }

    async fn quarantined(
        &self,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Vec<kept_store::quarantine::QuarantineEntry>> {
        quarantine::read(&self.read, after, limit).await
    }

    async fn quarantine_len(&self) -> Result<u64> {
        quarantine::len(&self.read).await
    }

    async fn prune_quarantine(&self, before: UnixMillis, limit: u32) -> Result<u64> {
        quarantine::prune(&self.write, before, limit).await
    }

    async fn close(&self) -> Result<()> {
        self.events.close().await;
        self.hot.close().await;
        self.write.close().await;
        self.read.close().await;
        Ok(())
    }
}

/// A page of the ledger as one row: the integer columns as comma-separated text, the blobs
/// concatenated, with their lengths. The rows reach the aggregates in the subquery's order
/// (`unpack_ledger_page` checks, and the caller falls back to plain rows if not).
const PACKED_LEDGER_PAGE: &str = "SELECT count(*), group_concat(seq), group_concat(subject_id), \
     group_concat(length(bytes)), CAST(group_concat(bytes, '') AS BLOB), \
     group_concat(length(hash)), CAST(group_concat(hash, '') AS BLOB), group_concat(at) \
     FROM (SELECT seq, subject_id, at, bytes, hash FROM ledger WHERE seq > ? ORDER BY seq LIMIT ?)";

/// The rows of a packed page; `None` when they did not come in `seq` order.
fn unpack_ledger_page(packed: &SqliteRow) -> Result<Option<Vec<LedgerRow>>> {
    let count: i64 = packed.try_get(0).map_err(db)?;
    if count == 0 {
        return Ok(Some(Vec::new()));
    }
    let text = |i: usize| -> Result<String> {
        packed
            .try_get::<Option<String>, _>(i)
            .map_err(db)
            .map(Option::unwrap_or_default)
    };
    let blob = |i: usize| -> Result<Vec<u8>> {
        packed
            .try_get::<Option<Vec<u8>>, _>(i)
            .map_err(db)
            .map(Option::unwrap_or_default)
    };
    let (seqs, subjects, byte_lens, hash_lens) = (text(1)?, text(2)?, text(3)?, text(5)?);
    let ats = text(7)?;
    let (bytes, hashes) = (blob(4)?, blob(6)?);
    let malformed = || StoreError::Corrupt("a ledger page did not unpack".into());
    let int = |s: &str| s.parse::<i64>().map_err(|_| malformed());
    let len = |s: &str| s.parse::<usize>().map_err(|_| malformed());
    let capacity = usize::try_from(count).unwrap_or_default();
    let mut rows = Vec::with_capacity(capacity);
    let (mut at_bytes, mut at_hash) = (0usize, 0usize);
    let columns = seqs
        .split(',')
        .zip(subjects.split(','))
        .zip(byte_lens.split(','))
        .zip(hash_lens.split(','))
        .zip(ats.split(','));
    for ((((seq, subject), byte_len), hash_len), at) in columns {
        let seq = to_u64(int(seq)?, "ledger seq")?;
        if rows.last().is_some_and(|r: &LedgerRow| r.seq >= seq) {
            return Ok(None);
        }
        let (byte_len, hash_len) = (len(byte_len)?, len(hash_len)?);
        let row_bytes = bytes
            .get(at_bytes..at_bytes + byte_len)
            .ok_or_else(malformed)?;
        let row_hash = hashes
            .get(at_hash..at_hash + hash_len)
            .ok_or_else(malformed)?;
        at_bytes += byte_len;
        at_hash += hash_len;
        rows.push(LedgerRow {
            seq,
            subject: ledger_subject(seq, int(subject)?)?,
            at: int(at)?,
            bytes: row_bytes.to_vec(),
            hash: row_hash.to_vec(),
        });
    }
    if rows.len() != capacity || at_bytes != bytes.len() || at_hash != hashes.len() {
        return Err(malformed());
    }
    Ok(Some(rows))
}

const SUBJECT_COLUMNS: &str = "SELECT id, user_id, country, region, time_zone, created_at, \
     erasure_requested_at, suppressed, erased_at, erasure_suppressed_at FROM subjects";

const TRAIT_COLUMNS: &str = "SELECT subject_id, key, value, category, collection_point, \
     notice_id, notice_version, collected_at, source FROM traits";

const PREFERENCE_COLUMNS: &str = "SELECT subject_id, channel, frequency_max, frequency_period, \
     quiet_start, quiet_end, updated_at FROM channel_preferences";

/// A row of this backend read through `kept_store::columns::Row`, so the row mappers both
/// backends share can read it.
pub(crate) struct Cols<'r>(pub(crate) &'r sqlx::sqlite::SqliteRow);

impl kept_store::columns::Row for Cols<'_> {
    fn int(&self, i: usize) -> Result<i64> {
        self.0.try_get(i).map_err(db)
    }
    fn int_opt(&self, i: usize) -> Result<Option<i64>> {
        self.0.try_get(i).map_err(db)
    }
    fn text(&self, i: usize) -> Result<String> {
        self.0.try_get(i).map_err(db)
    }
    fn text_opt(&self, i: usize) -> Result<Option<String>> {
        self.0.try_get(i).map_err(db)
    }
    fn bytes(&self, i: usize) -> Result<Vec<u8>> {
        self.0.try_get(i).map_err(db)
    }
    fn bytes_opt(&self, i: usize) -> Result<Option<Vec<u8>>> {
        self.0.try_get(i).map_err(db)
    }
    fn flag(&self, i: usize) -> Result<bool> {
        // SQLite has no boolean type: a flag is an integer, 0 or not.
        self.0.try_get::<i64, _>(i).map(|n| n != 0).map_err(db)
    }
}

fn lost() -> StoreError {
    StoreError::Database("the group committer lost a write's result".into())
}

/// Maps a driver error to the store's vocabulary.
fn db(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => StoreError::Closed,
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => StoreError::Unavailable(e.to_string()),
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
            StoreError::Corrupt(e.to_string())
        }
        other => StoreError::Database(other.to_string()),
    }
}

fn conflict(e: sqlx::Error, what: &'static str, key: &str) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict {
            what,
            key: key.to_string(),
        },
        _ => db(e),
    }
}
