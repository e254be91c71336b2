//! The quarantine on PostgreSQL: rejected messages written with one `UNNEST` insert, read
//! oldest first, pruned by age.

use crate::db;
use kept_store::Result;
use kept_store::columns::{to_i64, to_u64};
use kept_store::quarantine::{MAX_QUARANTINE_PAGE, QuarantineEntry};
use sqlx::postgres::PgPool;

pub(crate) async fn write(pool: &PgPool, entries: Vec<QuarantineEntry>) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let received: Vec<i64> = entries.iter().map(|e| e.received_at).collect();
    let key_ids: Vec<&str> = entries.iter().map(|e| e.key_id.as_str()).collect();
    let key_names: Vec<&str> = entries.iter().map(|e| e.key_name.as_str()).collect();
    let positions: Vec<i64> = entries.iter().map(|e| i64::from(e.index)).collect();
    let codes: Vec<&str> = entries.iter().map(|e| e.code.as_str()).collect();
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    let messages: Vec<&str> = entries.iter().map(|e| e.message.as_str()).collect();
    let sealed: Vec<&[u8]> = entries.iter().map(|e| e.sealed.as_slice()).collect();
    // One statement is one transaction; `WITH ORDINALITY` keeps the ids in the given order.
    sqlx::query(
        "INSERT INTO quarantine (received_at, key_id, key_name, position, code, path, message, \
         sealed) \
         SELECT received_at, key_id, key_name, position, code, path, message, sealed \
         FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::TEXT[], \
         $6::TEXT[], $7::TEXT[], $8::BYTEA[]) \
         WITH ORDINALITY AS t(received_at, key_id, key_name, position, code, path, message, \
         sealed, n) ORDER BY n",
    )
    .bind(&received)
    .bind(&key_ids)
    .bind(&key_names)
    .bind(&positions)
    .bind(&codes)
    .bind(&paths)
    .bind(&messages)
    .bind(&sealed)
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(())
}

pub(crate) async fn read(
    pool: &PgPool,
    after: Option<u64>,
    limit: u32,
) -> Result<Vec<QuarantineEntry>> {
    let rows = sqlx::query(
        "SELECT id, received_at, key_id, key_name, position, code, path, message, sealed \
         FROM quarantine WHERE id > $1 ORDER BY id LIMIT $2",
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

pub(crate) async fn len(pool: &PgPool) -> Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM quarantine")
        .fetch_one(pool)
        .await
        .map_err(db)?;
    to_u64(n, "quarantine length")
}

/// Deletes at most `limit` of the oldest entries received before `before`.
pub(crate) async fn prune(pool: &PgPool, before: i64, limit: u32) -> Result<u64> {
    let done = sqlx::query(
        "DELETE FROM quarantine WHERE id IN \
         (SELECT id FROM quarantine WHERE received_at < $1 ORDER BY id LIMIT $2)",
    )
    .bind(before)
    .bind(i64::from(limit))
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(done.rows_affected())
}
