//! Kept's `Store` on PostgreSQL, selected by a `postgres://` database URL.
//!
//! Several Kept servers may share one database. Each batches its ledger appends through its own
//! group committer; every batch locks the one-row `ledger_tip` table before reading the tip and
//! the last checkpoint, so the servers' batches extend one chain of records, and one chain of
//! checkpoints, one after the other. Batches are inserted with
//! `UNNEST` over arrays: one statement, prepared once, whatever the batch size.

use async_trait::async_trait;
use kept_core::ledger::{ChainHash, Checkpoint, ConsentRecord, LedgerEntry};
use kept_core::subject::{ChannelPreference, Contact, Subject, Trait};
use kept_core::{SubjectId, UnixMillis};
use kept_store::columns::{
    CHECKPOINT_COLUMNS, chain_hash, dense_ids, subject_id, to_i64, to_u32, to_u64,
};
use kept_store::columns::{
    api_key_row, checkpoint_row, contact_row, ledger_row, preference_row, subject_row, trait_row,
};
use kept_store::group_commit::{
    BatchWriter, ChainedRow, CheckpointSigner, GroupCommit, HotWrite, HotWritten, LastCheckpoint,
    SignerSlot, answer_hot_batch, plan_checkpoint, plan_hot_batch, touches_ledger,
};
use kept_store::{
    ApiKeyRecord, Backend, Heard, LedgerRow, NewSubject, NoticeContent, NoticeHash, Result, Store,
    StoreError, first_duplicate_user_id, last_trait_wins,
};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Row};
use std::fmt;
use std::str::FromStr;
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

/// Rows the group committer puts in one transaction at most.
const MAX_BATCH_ROWS: usize = 20_000;

/// Kept's store in a PostgreSQL database.
pub struct PostgresStore {
    /// The URL with its password replaced, for `Debug` and errors.
    redacted_url: String,
    pool: PgPool,
    hot: GroupCommit<HotWriter>,
    /// The checkpoint signer the committer uses.
    signer: SignerSlot,
    /// Events and profile traits from the collection API.
    events: GroupCommit<collection::EventWriter>,
    /// The `NOTIFY` channel servers on this database and schema announce changes on.
    channel: String,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.redacted_url)
            .finish_non_exhaustive()
    }
}

/// The one redactor of database URLs, in `kept_core::redact` so that the connectors to the
/// company's own databases use it too.
pub use kept_core::redact::redact_url;
use kept_core::redact::scrub;

/// The channel of one database and schema: servers on another schema of the same database
/// (tests run that way) hear nothing of this one. Hashed to fit PostgreSQL's 63-byte names.
fn announce_channel(database: &str, schema: &str) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(database.as_bytes());
    hasher.update(&[0]);
    hasher.update(schema.as_bytes());
    let hex = hasher.finalize().to_hex();
    format!("kept_index_{}", hex.get(..32).unwrap_or_default())
}

/// Forwards notifications on `channel` to `heard` until the receiver is dropped. The listener
/// connects again by itself after a lost connection; that is passed on as `Heard::Lost`.
async fn forward_notifications(
    mut listener: sqlx::postgres::PgListener,
    channel: String,
    heard: tokio::sync::mpsc::Sender<Heard>,
) {
    loop {
        let next = match listener.try_recv().await {
            Ok(Some(n)) => Heard::Message(n.payload().to_owned()),
            Ok(None) => {
                tracing::warn!(channel, "lost the connection listening for other servers");
                Heard::Lost
            }
            Err(e) => {
                tracing::warn!(channel, error = %e, "cannot listen for other servers; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                Heard::Lost
            }
        };
        if heard.send(next).await.is_err() {
            return;
        }
    }
}

impl PostgresStore {
    /// Connects, runs the migrations and starts the group committer (inside a Tokio runtime).
    pub async fn connect(url: &str) -> Result<PostgresStore> {
        let redacted_url = redact_url(url);
        let options = PgConnectOptions::from_str(url).map_err(|e| {
            StoreError::Unavailable(scrub(
                &format!("invalid database url `{redacted_url}`: {e}"),
                url,
            ))
        })?;
        let unreachable = |e: sqlx::Error| {
            StoreError::Unavailable(scrub(
                &format!("cannot connect to `{redacted_url}`: {e}"),
                url,
            ))
        };
        // One direct connection first: the pool would keep retrying a refused connection until
        // its acquire timeout, and a wrong URL should fail at once.
        PgConnection::connect_with(&options)
            .await
            .map_err(unreachable)?
            .close()
            .await
            .map_err(unreachable)?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(unreachable)?;
        migrations::migrator()
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))?
            .run(&pool)
            .await
            .map_err(|e| StoreError::Migration(scrub(&e.to_string(), url)))?;
        let (database, schema): (String, String) =
            sqlx::query_as("SELECT current_database()::text, current_schema()::text")
                .fetch_one(&pool)
                .await
                .map_err(db)?;
        let channel = announce_channel(&database, &schema);
        let signer = SignerSlot::default();
        let hot = GroupCommit::start(
            HotWriter {
                pool: pool.clone(),
                signer: signer.clone(),
            },
            MAX_BATCH_ROWS,
        );
        let events = collection::start_event_committer(pool.clone());
        Ok(PostgresStore {
            redacted_url,
            pool,
            hot,
            signer,
            events,
            channel,
        })
    }

    async fn hot(&self, write: HotWrite) -> Result<HotWritten> {
        self.hot.submit(write).await
    }

    /// After a unique violation: the first user id of `subjects` that was already taken.
    async fn taken_user_id(&self, subjects: &[NewSubject]) -> Option<String> {
        if let Some(dup) = first_duplicate_user_id(subjects) {
            return Some(dup.to_string());
        }
        let user_ids: Vec<&str> = subjects
            .iter()
            .filter_map(|s| s.user_id.as_deref())
            .collect();
        sqlx::query_scalar("SELECT user_id FROM subjects WHERE user_id = ANY($1) LIMIT 1")
            .bind(&user_ids)
            .fetch_optional(&self.pool)
            .await
            .ok()
            .flatten()
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

/// The group committer's side: one transaction per batch, ending with the checkpoint of the
/// batch's tip, chained after the last checkpoint read under the tip's lock.
struct HotWriter {
    pool: PgPool,
    signer: SignerSlot,
}

#[async_trait]
impl BatchWriter for HotWriter {
    type Item = HotWrite;
    type Output = HotWritten;

    async fn write_batch(&mut self, batch: Vec<HotWrite>) -> Result<Vec<HotWritten>> {
        let signer = self.signer.get();
        let mut tx = self.pool.begin().await.map_err(db)?;
        // Only a batch that appends (or asks for a checkpoint) takes the tip's lock; contacts
        // need no order.
        let (tip, last) = if touches_ledger(&batch) {
            lock_tip(&mut tx).await?
        } else {
            ((0, ChainHash::GENESIS), (0, ChainHash::GENESIS))
        };
        let (seq, hash, rows, contacts) = plan_hot_batch(tip, &batch);
        let checkpoint = if touches_ledger(&batch) {
            plan_checkpoint(signer.as_ref(), tip.0, (seq, hash), last)
        } else {
            None
        };
        if !rows.is_empty() {
            insert_ledger_rows(&mut tx, &rows, seq, &hash, checkpoint.as_ref()).await?;
        } else if let Some(cp) = &checkpoint {
            insert_checkpoint(&mut tx, cp, "").await?;
        }
        let used = kept_store::group_commit::hot_batch_uses(&batch);
        if used.is_empty() {
            if !contacts.is_empty() {
                insert_contacts(&mut tx, &contacts).await?;
            }
        } else {
            uses::insert(&mut tx, &used, &contacts).await?;
        }
        tx.commit().await.map_err(db)?;
        if let (Some(signer), Some(cp)) = (&signer, &checkpoint) {
            signer.committed(cp);
        }
        Ok(answer_hot_batch(&batch, rows, checkpoint.as_ref()))
    }

    fn weight(item: &HotWrite) -> usize {
        item.rows()
    }
}

/// Locks the tip and reads it with the last checkpoint (whose digest the next one signs).
///
/// Two statements, not one join: under READ COMMITTED a statement that waited for the lock
/// re-reads only the locked row, so a checkpoint joined to it would be the one from before the
/// wait. The second statement takes a fresh snapshot, after the lock.
async fn lock_tip(conn: &mut PgConnection) -> Result<((u64, ChainHash), LastCheckpoint)> {
    let row = sqlx::query("SELECT seq, hash FROM ledger_tip WHERE id = 1 FOR UPDATE")
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
    let seq = to_u64(row.try_get(0).map_err(db)?, "ledger tip")?;
    let hash: Vec<u8> = row.try_get(1).map_err(db)?;
    let last = sqlx::query(&format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM ledger_checkpoints ORDER BY seq DESC LIMIT 1"
    ))
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?;
    let last = match last {
        None => (0, ChainHash::GENESIS),
        Some(row) => checkpoint_row(&Cols(&row)).map(|c| (c.seq, c.digest()))?,
    };
    Ok(((seq, chain_hash(seq, &hash)?), last))
}

/// Inserts one checkpoint; `conflict` is appended to the statement (`ON CONFLICT …`).
async fn insert_checkpoint(conn: &mut PgConnection, cp: &Checkpoint, conflict: &str) -> Result<()> {
    sqlx::query(&format!(
        "INSERT INTO ledger_checkpoints (seq, hash, at, key_id, signature, prev) \
         VALUES ($1, $2, $3, $4, $5, $6){conflict}"
    ))
    .bind(to_i64(cp.seq)?)
    .bind(cp.hash.0.as_slice())
    .bind(cp.at)
    .bind(cp.key_id.as_str())
    .bind(cp.signature.as_slice())
    .bind(cp.prev.as_ref().map(|p| p.0.as_slice()))
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(())
}

async fn insert_ledger_rows(
    conn: &mut PgConnection,
    rows: &[ChainedRow],
    tip_seq: u64,
    tip_hash: &ChainHash,
    checkpoint: Option<&Checkpoint>,
) -> Result<()> {
    let seqs: Vec<i64> = rows
        .iter()
        .map(|r| to_i64(r.entry.seq))
        .collect::<Result<_>>()?;
    let subjects: Vec<i64> = rows.iter().map(|r| r.subject).collect();
    let ats: Vec<i64> = rows.iter().map(|r| r.at).collect();
    let bytes: Vec<&[u8]> = rows.iter().map(|r| r.entry.bytes.as_slice()).collect();
    let hashes: Vec<&[u8]> = rows.iter().map(|r| r.entry.hash.0.as_slice()).collect();
    // One round trip for the rows, their checkpoint and the new tip (a data-modifying WITH
    // always runs).
    sqlx::query(
        "WITH appended AS (INSERT INTO ledger (seq, subject_id, at, bytes, hash) \
         SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::BYTEA[], $5::BYTEA[])), \
         signed AS (INSERT INTO ledger_checkpoints (seq, hash, at, key_id, signature, prev) \
         SELECT $8::BIGINT, $9::BYTEA, $10::BIGINT, $11::TEXT, $12::BYTEA, $13::BYTEA \
         WHERE $8::BIGINT IS NOT NULL) \
         UPDATE ledger_tip SET seq = $6, hash = $7 WHERE id = 1",
    )
    .bind(&seqs)
    .bind(&subjects)
    .bind(&ats)
    .bind(&bytes)
    .bind(&hashes)
    .bind(to_i64(tip_seq)?)
    .bind(tip_hash.0.as_slice())
    .bind(checkpoint.map(|c| to_i64(c.seq)).transpose()?)
    .bind(checkpoint.map(|c| c.hash.0.as_slice()))
    .bind(checkpoint.map(|c| c.at))
    .bind(checkpoint.map(|c| c.key_id.as_str()))
    .bind(checkpoint.map(|c| c.signature.as_slice()))
    .bind(checkpoint.and_then(|c| c.prev.as_ref()).map(|p| p.0.as_slice()))
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(())
}

async fn insert_contacts(conn: &mut PgConnection, contacts: &[&Contact]) -> Result<()> {
    let subjects: Vec<i64> = contacts.iter().map(|c| i64::from(c.subject.0)).collect();
    let channels: Vec<&str> = contacts.iter().map(|c| c.channel.as_str()).collect();
    let purposes: Vec<&str> = contacts.iter().map(|c| c.purpose.as_str()).collect();
    let topics: Vec<Option<&str>> = contacts.iter().map(|c| c.topic.as_deref()).collect();
    let ats: Vec<i64> = contacts.iter().map(|c| c.at).collect();
    sqlx::query(
        "INSERT INTO contacts (subject_id, channel, purpose, topic, at) \
         SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::BIGINT[])",
    )
    .bind(&subjects)
    .bind(&channels)
    .bind(&purposes)
    .bind(&topics)
    .bind(&ats)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
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
        let rows = sqlx::query(
            "SELECT seq, subject_id, bytes, hash, at FROM ledger WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(to_i64(after)?)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(|r| ledger_row(&Cols(r))).collect()
    }

    async fn ledger_for_subject(&self, subject: SubjectId) -> Result<Vec<LedgerEntry>> {
        let rows =
            sqlx::query("SELECT seq, bytes, hash FROM ledger WHERE subject_id = $1 ORDER BY seq")
                .bind(i64::from(subject.0))
                .fetch_all(&self.pool)
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
        let len: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0)::BIGINT FROM ledger")
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        to_u64(len, "ledger length")
    }

    async fn ledger_tip(&self) -> Result<Option<(u64, ChainHash)>> {
        let row = sqlx::query("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        match row {
            None => Ok(None),
            Some(row) => {
                let seq = to_u64(row.try_get(0).map_err(db)?, "ledger seq")?;
                let hash: Vec<u8> = row.try_get(1).map_err(db)?;
                Ok(Some((seq, chain_hash(seq, &hash)?)))
            }
        }
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
            "SELECT {CHECKPOINT_COLUMNS} FROM ledger_checkpoints WHERE seq >= $1 \
             ORDER BY seq LIMIT 1"
        ))
        .bind(to_i64(seq)?)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(|r| checkpoint_row(&Cols(r))).transpose()
    }

    async fn last_checkpoint(&self) -> Result<Option<Checkpoint>> {
        let row = sqlx::query(&format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM ledger_checkpoints ORDER BY seq DESC LIMIT 1"
        ))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(|r| checkpoint_row(&Cols(r))).transpose()
    }

    async fn put_checkpoint(&self, checkpoint: &Checkpoint) -> Result<()> {
        // Two servers may sign the same position; the first signature stands.
        let mut conn = self.pool.acquire().await.map_err(db)?;
        insert_checkpoint(&mut conn, checkpoint, " ON CONFLICT (seq) DO NOTHING").await
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        let rows = sqlx::query(&format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM ledger_checkpoints ORDER BY seq"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(|r| checkpoint_row(&Cols(r))).collect()
    }

    // --- notices --------------------------------------------------------------------------

    async fn record_notice_hashes(&self, hashes: &[NoticeHash]) -> Result<()> {
        if hashes.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = hashes.iter().map(|h| h.notice_id.as_str()).collect();
        let versions: Vec<i64> = hashes.iter().map(|h| i64::from(h.version)).collect();
        let digests: Vec<&str> = hashes.iter().map(|h| h.hash.as_str()).collect();
        let ats: Vec<i64> = hashes.iter().map(|h| h.recorded_at).collect();
        sqlx::query(
            "INSERT INTO notice_hashes (notice_id, version, hash, recorded_at) \
             SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::TEXT[], $4::BIGINT[]) \
             ON CONFLICT (notice_id, version) DO NOTHING",
        )
        .bind(&ids)
        .bind(&versions)
        .bind(&digests)
        .bind(&ats)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn notice_hashes(&self) -> Result<Vec<NoticeHash>> {
        let rows = sqlx::query(
            "SELECT notice_id, version, hash, recorded_at FROM notice_hashes \
             ORDER BY notice_id, version",
        )
        .fetch_all(&self.pool)
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
        if notices.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = notices.iter().map(|n| n.notice_id.as_str()).collect();
        let versions: Vec<i64> = notices.iter().map(|n| i64::from(n.version)).collect();
        let digests: Vec<&str> = notices.iter().map(|n| n.hash.as_str()).collect();
        let contents: Vec<&str> = notices.iter().map(|n| n.content.as_str()).collect();
        let ats: Vec<i64> = notices.iter().map(|n| n.recorded_at).collect();
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query(
            "INSERT INTO notice_hashes (notice_id, version, hash, recorded_at) \
             SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::TEXT[], $4::BIGINT[]) \
             ON CONFLICT (notice_id, version) DO NOTHING",
        )
        .bind(&ids)
        .bind(&versions)
        .bind(&digests)
        .bind(&ats)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query(
            "INSERT INTO notice_texts (notice_id, version, hash, content, recorded_at) \
             SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::BIGINT[]) \
             ON CONFLICT (notice_id, version, hash) DO NOTHING",
        )
        .bind(&ids)
        .bind(&versions)
        .bind(&digests)
        .bind(&contents)
        .bind(&ats)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn notice_contents(&self, notice_id: &str) -> Result<Vec<NoticeContent>> {
        let rows = sqlx::query(
            "SELECT notice_id, version, hash, content, recorded_at FROM notice_texts \
             WHERE notice_id = $1 ORDER BY version, recorded_at, hash",
        )
        .bind(notice_id)
        .fetch_all(&self.pool)
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
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(key.id.as_str())
        .bind(key.hash.as_slice())
        .bind(key.role.as_str())
        .bind(key.name.as_str())
        .bind(key.created_at)
        .bind(key.revoked_at)
        .execute(&self.pool)
        .await
        .map_err(|e| conflict(e, "api key", &key.id))?;
        Ok(())
    }

    async fn api_key_by_hash(&self, hash: &[u8; 32]) -> Result<Option<ApiKeyRecord>> {
        let row = sqlx::query(
            "SELECT id, hash, role, name, created_at, revoked_at FROM api_keys \
             WHERE hash = $1 AND revoked_at IS NULL",
        )
        .bind(hash.as_slice())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(|r| api_key_row(&Cols(r))).transpose()
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        let rows = sqlx::query(
            "SELECT id, hash, role, name, created_at, revoked_at FROM api_keys \
             ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(|r| api_key_row(&Cols(r))).collect()
    }

    async fn revoke_api_key(&self, id: &str, at: UnixMillis) -> Result<()> {
        // Revoking twice keeps the first revocation time.
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2")
                .bind(at)
                .bind(id)
                .execute(&self.pool)
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
        sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)
    }

    async fn put_setting(&self, key: &str, value: &[u8]) -> Result<()> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn put_setting_if_absent(&self, key: &str, value: &[u8]) -> Result<Vec<u8>> {
        // Either this insert wins, or another's committed value is there to read: an insert
        // that conflicts waits for the other transaction first.
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_one(&self.pool)
            .await
            .map_err(db)
    }

    // --- subjects -------------------------------------------------------------------------

    async fn insert_subjects(&self, subjects: Vec<NewSubject>) -> Result<Vec<SubjectId>> {
        if subjects.is_empty() {
            return Ok(Vec::new());
        }
        let count = i64::try_from(subjects.len())
            .map_err(|_| StoreError::Database("too many subjects in one call".into()))?;
        let mut tx = self.pool.begin().await.map_err(db)?;
        // The row lock taken by this update orders concurrent inserts; a rollback gives the
        // ids back, so they stay dense.
        let first: i64 = sqlx::query_scalar(
            "UPDATE subject_next_id SET next = next + $1 WHERE id = 1 RETURNING next - $1",
        )
        .bind(count)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        let ids = dense_ids(to_u32(first, "subject id")?, subjects.len())?;
        let id_column: Vec<i64> = ids.iter().map(|id| i64::from(id.0)).collect();
        let user_ids: Vec<Option<&str>> = subjects.iter().map(|s| s.user_id.as_deref()).collect();
        let countries: Vec<Option<&str>> = subjects.iter().map(|s| s.country.as_deref()).collect();
        let regions: Vec<Option<&str>> = subjects.iter().map(|s| s.region.as_deref()).collect();
        let zones: Vec<Option<&str>> = subjects.iter().map(|s| s.time_zone.as_deref()).collect();
        let created: Vec<i64> = subjects.iter().map(|s| s.created_at).collect();
        let inserted = sqlx::query(
            "INSERT INTO subjects (id, user_id, country, region, time_zone, created_at) \
             SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], \
             $6::BIGINT[])",
        )
        .bind(&id_column)
        .bind(&user_ids)
        .bind(&countries)
        .bind(&regions)
        .bind(&zones)
        .bind(&created)
        .execute(&mut *tx)
        .await;
        if let Err(e) = inserted {
            drop(tx);
            return Err(match &e {
                sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict {
                    what: "subject with user id",
                    key: self.taken_user_id(&subjects).await.unwrap_or_default(),
                },
                _ => db(e),
            });
        }
        tx.commit().await.map_err(db)?;
        Ok(ids)
    }

    async fn subject(&self, id: SubjectId) -> Result<Option<Subject>> {
        let row = sqlx::query(&format!("{SUBJECT_COLUMNS} WHERE id = $1"))
            .bind(i64::from(id.0))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(|r| subject_row(&Cols(r))).transpose()
    }

    async fn subject_by_user_id(&self, user_id: &str) -> Result<Option<SubjectId>> {
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM subjects WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        id.map(subject_id).transpose()
    }

    async fn subjects_page(&self, after: Option<SubjectId>, limit: u32) -> Result<Vec<Subject>> {
        let rows = sqlx::query(&format!(
            "{SUBJECT_COLUMNS} WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after.map_or(-1, |s| i64::from(s.0)))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(|r| subject_row(&Cols(r))).collect()
    }

    async fn subject_count(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM subjects")
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        to_u64(n, "subject count")
    }

    async fn set_erasure_requested(&self, id: SubjectId, at: Option<UnixMillis>) -> Result<()> {
        let done = sqlx::query("UPDATE subjects SET erasure_requested_at = $1 WHERE id = $2")
            .bind(at)
            .bind(i64::from(id.0))
            .execute(&self.pool)
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
        let subjects: Vec<i64> = traits.iter().map(|t| i64::from(t.subject.0)).collect();
        let keys: Vec<&str> = traits.iter().map(|t| t.key.as_str()).collect();
        let categories: Vec<&str> = traits.iter().map(|t| t.category.as_str()).collect();
        let points: Vec<&str> = traits
            .iter()
            .map(|t| t.provenance.collection_point.as_str())
            .collect();
        let notices: Vec<&str> = traits
            .iter()
            .map(|t| t.provenance.notice_id.as_str())
            .collect();
        let versions: Vec<i64> = traits
            .iter()
            .map(|t| i64::from(t.provenance.notice_version))
            .collect();
        let collected: Vec<i64> = traits.iter().map(|t| t.provenance.collected_at).collect();
        let sources: Vec<&str> = traits
            .iter()
            .map(|t| t.provenance.source.as_str())
            .collect();
        let done = sqlx::query(
            "INSERT INTO traits (subject_id, key, value, category, collection_point, notice_id, \
             notice_version, collected_at, source) \
             SELECT s, k, v::JSONB, c, p, n, nv, ca, src FROM UNNEST($1::BIGINT[], $2::TEXT[], \
             $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::BIGINT[], $8::BIGINT[], \
             $9::TEXT[]) AS t(s, k, v, c, p, n, nv, ca, src) \
             ON CONFLICT (subject_id, key) DO UPDATE SET value = excluded.value, \
             category = excluded.category, collection_point = excluded.collection_point, \
             notice_id = excluded.notice_id, notice_version = excluded.notice_version, \
             collected_at = excluded.collected_at, source = excluded.source",
        )
        .bind(&subjects)
        .bind(&keys)
        .bind(&values)
        .bind(&categories)
        .bind(&points)
        .bind(&notices)
        .bind(&versions)
        .bind(&collected)
        .bind(&sources)
        .execute(&self.pool)
        .await;
        if let Err(e) = done {
            let subjects: Vec<SubjectId> = traits.iter().map(|t| t.subject).collect();
            return Err(self.missing_subject(e, subjects).await);
        }
        Ok(())
    }

    async fn traits(&self, subject: SubjectId) -> Result<Vec<Trait>> {
        let rows = sqlx::query(&format!(
            "{TRAIT_COLUMNS} WHERE subject_id = $1 ORDER BY key"
        ))
        .bind(i64::from(subject.0))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(|r| trait_row(&Cols(r))).collect()
    }

    async fn traits_page(&self, after: Option<SubjectId>, limit: u32) -> Result<Vec<Trait>> {
        let rows = sqlx::query(&format!(
            "{TRAIT_COLUMNS} WHERE subject_id IN (SELECT DISTINCT subject_id FROM traits \
             WHERE subject_id > $1 ORDER BY subject_id LIMIT $2) ORDER BY subject_id, key"
        ))
        .bind(after.map_or(-1, |s| i64::from(s.0)))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(|r| trait_row(&Cols(r))).collect()
    }

    async fn put_channel_preference(&self, pref: &ChannelPreference) -> Result<()> {
        let done = sqlx::query(
            "INSERT INTO channel_preferences (subject_id, channel, frequency_max, \
             frequency_period, quiet_start, quiet_end, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
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
        .execute(&self.pool)
        .await;
        if let Err(e) = done {
            return Err(self.missing_subject(e, [pref.subject]).await);
        }
        Ok(())
    }

    async fn channel_preferences(&self, subject: SubjectId) -> Result<Vec<ChannelPreference>> {
        let rows = sqlx::query(&format!(
            "{PREFERENCE_COLUMNS} WHERE subject_id = $1 ORDER BY channel"
        ))
        .bind(i64::from(subject.0))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(|r| preference_row(&Cols(r))).collect()
    }

    async fn all_channel_preferences(&self) -> Result<Vec<ChannelPreference>> {
        let rows = sqlx::query(&format!(
            "{PREFERENCE_COLUMNS} ORDER BY subject_id, channel"
        ))
        .fetch_all(&self.pool)
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
            "SELECT subject_id, channel, purpose, topic, at FROM contacts WHERE at >= $1 \
             ORDER BY at, id",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(|r| contact_row(&Cols(r))).collect()
    }

    async fn announce(&self, message: &str) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&self.channel)
            .bind(message)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn listen(&self) -> Result<Option<tokio::sync::mpsc::Receiver<Heard>>> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool)
            .await
            .map_err(db)?;
        listener.listen(&self.channel).await.map_err(db)?;
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(forward_notifications(listener, self.channel.clone(), tx));
        Ok(Some(rx))
    }

    async fn contacts_of(&self, subject: SubjectId, since: UnixMillis) -> Result<Vec<Contact>> {
        let rows = sqlx::query(
            "SELECT subject_id, channel, purpose, topic, at FROM contacts \
             WHERE subject_id = $1 AND at >= $2 ORDER BY at, id",
        )
        .bind(i64::from(subject.0))
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(|r| contact_row(&Cols(r))).collect()
    }

    async fn append_decision_log(&self, entries: Vec<kept_store::DecisionLogEntry>) -> Result<()> {
        decision_log::append(&self.pool, entries).await
    }

    async fn decision_log(
        &self,
        query: &kept_store::DecisionLogQuery,
    ) -> Result<Vec<kept_store::DecisionLogEntry>> {
        decision_log::read(&self.pool, query).await
    }

    async fn decision_counts(&self, since: i64) -> Result<Vec<kept_store::DecisionCount>> {
        decision_log::counts(&self.pool, since).await
    }

    async fn prune_decision_log(&self, before: UnixMillis, limit: u32) -> Result<u64> {
        decision_log::prune(&self.pool, before, limit).await
    }

    async fn quarantine(
        &self,
        entries: Vec<kept_store::quarantine::QuarantineEntry>,
    ) -> Result<()> {
        quarantine::write(&self.pool, entries).await
    }

    async fn quarantined(
        &self,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Vec<kept_store::quarantine::QuarantineEntry>> {
        quarantine::read(&self.pool, after, limit).await
    }

    async fn quarantine_len(&self) -> Result<u64> {
        quarantine::len(&self.pool).await
    }

    async fn prune_quarantine(&self, before: UnixMillis, limit: u32) -> Result<u64> {
        quarantine::prune(&self.pool, before, limit).await
    }

    async fn use_candidates(
        &self,
        subject: SubjectId,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<kept_store::UseRecord>> {
        uses::candidates(&self.pool, subject, before, limit).await
    }

    async fn close(&self) -> Result<()> {
        self.events.close().await;
        self.hot.close().await;
        self.pool.close().await;
        Ok(())
    }
}

const SUBJECT_COLUMNS: &str = "SELECT id, user_id, country, region, time_zone, created_at, \
     erasure_requested_at, suppressed, erased_at, erasure_suppressed_at FROM subjects";

const TRAIT_COLUMNS: &str = "SELECT subject_id, key, value::TEXT, category, collection_point, \
     notice_id, notice_version, collected_at, source FROM traits";

const PREFERENCE_COLUMNS: &str = "SELECT subject_id, channel, frequency_max, frequency_period, \
     quiet_start, quiet_end, updated_at FROM channel_preferences";

/// A row of this backend read through `kept_store::columns::Row`, so the row mappers both
/// backends share can read it.
pub(crate) struct Cols<'r>(pub(crate) &'r sqlx::postgres::PgRow);

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
        self.0.try_get(i).map_err(db)
    }
}

fn lost() -> StoreError {
    StoreError::Database("the group committer lost a write's result".into())
}

/// Maps a driver error to the store's vocabulary.
fn db(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => StoreError::Closed,
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
            StoreError::Unavailable(e.to_string())
        }
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
