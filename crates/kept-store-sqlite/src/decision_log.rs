//! The decision log on SQLite: multi-row inserts in one transaction on the write connection,
//! and filtered reads newest first on the read pool.

use crate::db;
use kept_store::columns::to_i64;
use kept_store::decision_log::categories_column;
use kept_store::{DecisionCount, DecisionLogEntry, DecisionLogQuery, Result};
use sqlx::sqlite::SqlitePool;
use sqlx::{QueryBuilder, Row, Sqlite};

/// Rows per `INSERT`: 12 bound values each, well under SQLite's 32,766.
const CHUNK: usize = 1000;

pub(crate) async fn append(pool: &SqlitePool, entries: Vec<DecisionLogEntry>) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await.map_err(db)?;
    for chunk in entries.chunks(CHUNK) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO decision_log (at, subject_id, purpose, channel, topic, categories, \
             allowed, reason, evidence, obligations, caller, asked_at) ",
        );
        insert.push_values(chunk, |mut row, e| {
            row.push_bind(e.at)
                .push_bind(e.subject.map(|s| i64::from(s.0)))
                .push_bind(e.purpose.as_str())
                .push_bind(e.channel.as_deref())
                .push_bind(e.topic.as_deref())
                .push_bind(categories_column(&e.categories))
                .push_bind(e.allowed)
                .push_bind(e.reason.as_str())
                .push_bind(e.evidence.as_str())
                .push_bind(e.obligations.as_str())
                .push_bind(e.caller.as_str())
                .push_bind(e.asked_at);
        });
        insert.build().execute(&mut *tx).await.map_err(db)?;
    }
    for c in kept_store::decision_log::count_by_day(&entries) {
        sqlx::query(
            "INSERT INTO decision_counts (day, reason, allowed, count) VALUES (?, ?, ?, ?) \
             ON CONFLICT (day, reason) DO UPDATE SET count = count + excluded.count",
        )
        .bind(c.day)
        .bind(c.reason.as_str())
        .bind(c.allowed)
        .bind(to_i64(c.count)?)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    }
    tx.commit().await.map_err(db)
}

pub(crate) async fn counts(pool: &SqlitePool, since: i64) -> Result<Vec<DecisionCount>> {
    let rows = sqlx::query(
        "SELECT day, reason, allowed, count FROM decision_counts WHERE day >= ? \
         ORDER BY day, reason",
    )
    .bind(since)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.iter()
        .map(|r| {
            Ok(DecisionCount {
                day: r.try_get(0).map_err(db)?,
                reason: r.try_get(1).map_err(db)?,
                allowed: r.try_get(2).map_err(db)?,
                count: kept_store::columns::to_u64(r.try_get(3).map_err(db)?, "decision count")?,
            })
        })
        .collect()
}

pub(crate) async fn read(
    pool: &SqlitePool,
    query: &DecisionLogQuery,
) -> Result<Vec<DecisionLogEntry>> {
    let mut select = QueryBuilder::<Sqlite>::new(
        "SELECT id, at, subject_id, purpose, channel, topic, categories, allowed, reason, \
         evidence, obligations, caller, COALESCE(asked_at, at) FROM decision_log WHERE 1 = 1",
    );
    if let Some(subject) = query.subject {
        select
            .push(" AND subject_id = ")
            .push_bind(i64::from(subject.0));
    }
    if let Some(reason) = &query.reason {
        select.push(" AND reason = ").push_bind(reason.as_str());
    }
    if let Some(purpose) = &query.purpose {
        select.push(" AND purpose = ").push_bind(purpose.as_str());
    }
    if let Some(since) = query.since {
        select.push(" AND at >= ").push_bind(since);
    }
    if let Some(before) = query.before {
        select.push(" AND id < ").push_bind(to_i64(before)?);
    }
    select
        .push(" ORDER BY id DESC LIMIT ")
        .push_bind(i64::from(query.page_size()));
    let rows = select.build().fetch_all(pool).await.map_err(db)?;
    rows.iter()
        .map(|r| kept_store::decision_log::entry_row(&crate::Cols(r)))
        .collect()
}

/// Deletes at most `limit` of the oldest entries asked before `before` (oldest by id: entries
/// are written in the order they were asked, so this reads from the start of the table and stops early).
pub(crate) async fn prune(pool: &SqlitePool, before: i64, limit: u32) -> Result<u64> {
    let done = sqlx::query(
        "DELETE FROM decision_log WHERE id IN \
         (SELECT id FROM decision_log WHERE COALESCE(asked_at, at) < ? ORDER BY id LIMIT ?)",
    )
    .bind(before)
    .bind(i64::from(limit))
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(done.rows_affected())
}
