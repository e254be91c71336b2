//! The quarantine on SQLite: rejected messages written in one transaction on the write
//! connection, read oldest first on the read pool, pruned by age.

use crate::db;
use kept_store::Result;
use kept_store::columns::{to_i64, to_u64};
use kept_store::quarantine::{MAX_QUARANTINE_PAGE, QuarantineEntry};
use sqlx::sqlite::SqlitePool;
use sqlx::{QueryBuilder, Sqlite};

/// Rows per `INSERT`: 8 bound values each, well under SQLite's 32,766.
const CHUNK: usize = 1000;

pub(crate) async fn write(pool: &SqlitePool, entries: Vec<QuarantineEntry>) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await.map_err(db)?;
    for chunk in entries.chunks(CHUNK) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO quarantine (received_at, key_id, key_name, position, code, path, \
             message, sealed) ",
        );
        insert.push_values(chunk, |mut row, e| {
            row.push_bind(e.received_at)
                .push_bind(e.key_id.as_str())
                .push_bind(e.key_name.as_str())
                .push_bind(i64::from(e.index))
                .push_bind(e.code.as_str())
                .push_bind(e.path.as_str())
                .push_bind(e.message.as_str())
                .push_bind(e.sealed.as_slice());
        });
        insert.build().execute(&mut *tx).await.map_err(db)?;
    }
    tx.commit().await.map_err(db)
}

pub(crate) async fn read(
    pool: &SqlitePool,
    after: Option<u64>,
    limit: u32,
) -> Result<Vec<QuarantineEntry>> {
    let rows = sqlx::query(
        "SELECT id, received_at, key_id, key_name, position, code, path, message, sealed \
         FROM quarantine WHERE id > ? ORDER BY id LIMIT ?",
    )
    .bind(after.map(to_i64).transpose()?.unwrap_or(0))
    .bind(i64::from(limit.clamp(1, MAX_QUARANTINE_PAGE)))
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.iter()
        .map(|r| kept_store::quarantine::entry_row(&crate::Cols(r)))
        .collect()
}

pub(crate) async fn len(pool: &SqlitePool) -> Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM quarantine")
        .fetch_one(pool)
        .await
        .map_err(db)?;
    to_u64(n, "quarantine length")
}

/// Deletes at most `limit` of the oldest entries received before `before`.
pub(crate) async fn prune(pool: &SqlitePool, before: i64, limit: u32) -> Result<u64> {
    let done = sqlx::query(
        "DELETE FROM quarantine WHERE id IN \
         (SELECT id FROM quarantine WHERE received_at < ? ORDER BY id LIMIT ?)",
    )
    .bind(before)
    .bind(i64::from(limit))
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(done.rows_affected())
}
