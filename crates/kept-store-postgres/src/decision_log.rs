//! The decision log on PostgreSQL: one `UNNEST` insert per batch, and filtered reads newest
//! first.

use crate::db;
use kept_store::columns::to_i64;
use kept_store::decision_log::categories_column;
use kept_store::{DecisionCount, DecisionLogEntry, DecisionLogQuery, Result};
use sqlx::postgres::PgPool;
use sqlx::{Postgres, QueryBuilder, Row};

pub(crate) async fn append(pool: &PgPool, entries: Vec<DecisionLogEntry>) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let ats: Vec<i64> = entries.iter().map(|e| e.at).collect();
    let subjects: Vec<Option<i64>> = entries
        .iter()
        .map(|e| e.subject.map(|s| i64::from(s.0)))
        .collect();
    let purposes: Vec<&str> = entries.iter().map(|e| e.purpose.as_str()).collect();
    let channels: Vec<Option<&str>> = entries.iter().map(|e| e.channel.as_deref()).collect();
    let topics: Vec<Option<&str>> = entries.iter().map(|e| e.topic.as_deref()).collect();
    let categories: Vec<String> = entries
        .iter()
        .map(|e| categories_column(&e.categories))
        .collect();
    let allowed: Vec<bool> = entries.iter().map(|e| e.allowed).collect();
    let reasons: Vec<&str> = entries.iter().map(|e| e.reason.as_str()).collect();
    let evidence: Vec<&str> = entries.iter().map(|e| e.evidence.as_str()).collect();
    let obligations: Vec<&str> = entries.iter().map(|e| e.obligations.as_str()).collect();
    let callers: Vec<&str> = entries.iter().map(|e| e.caller.as_str()).collect();
    let asked: Vec<i64> = entries.iter().map(|e| e.asked_at).collect();
    // The entries and the day's counts in one transaction; `WITH ORDINALITY` keeps the ids in
    // the given order.
    let mut tx = pool.begin().await.map_err(db)?;
    sqlx::query(
        "INSERT INTO decision_log (at, subject_id, purpose, channel, topic, categories, allowed, \
         reason, evidence, obligations, caller, asked_at) \
         SELECT at, subject_id, purpose, channel, topic, categories, allowed, reason, evidence, \
         obligations, caller, asked_at FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], \
         $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::BOOLEAN[], $8::TEXT[], $9::TEXT[], $10::TEXT[], \
         $11::TEXT[], $12::BIGINT[]) \
         WITH ORDINALITY AS t(at, subject_id, purpose, channel, topic, categories, allowed, \
         reason, evidence, obligations, caller, asked_at, n) ORDER BY n",
    )
    .bind(&ats)
    .bind(&subjects)
    .bind(&purposes)
    .bind(&channels)
    .bind(&topics)
    .bind(&categories)
    .bind(&allowed)
    .bind(&reasons)
    .bind(&evidence)
    .bind(&obligations)
    .bind(&callers)
    .bind(&asked)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    let counted = kept_store::decision_log::count_by_day(&entries);
    let days: Vec<i64> = counted.iter().map(|c| c.day).collect();
    let reasons: Vec<&str> = counted.iter().map(|c| c.reason.as_str()).collect();
    let allowed: Vec<bool> = counted.iter().map(|c| c.allowed).collect();
    let counts = counted
        .iter()
        .map(|c| to_i64(c.count))
        .collect::<Result<Vec<i64>>>()?;
    sqlx::query(
        "INSERT INTO decision_counts (day, reason, allowed, count) \
         SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::BOOLEAN[], $4::BIGINT[]) \
         ON CONFLICT (day, reason) DO UPDATE SET count = decision_counts.count + excluded.count",
    )
    .bind(&days)
    .bind(&reasons)
    .bind(&allowed)
    .bind(&counts)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)
}

pub(crate) async fn counts(pool: &PgPool, since: i64) -> Result<Vec<DecisionCount>> {
    let rows = sqlx::query(
        "SELECT day, reason, allowed, count FROM decision_counts WHERE day >= $1 \
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

pub(crate) async fn read(pool: &PgPool, query: &DecisionLogQuery) -> Result<Vec<DecisionLogEntry>> {
    let mut select = QueryBuilder::<Postgres>::new(
        "SELECT id, at, subject_id, purpose, channel, topic, categories, allowed, reason, \
         evidence, obligations, caller, COALESCE(asked_at, at) FROM decision_log WHERE TRUE",
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
pub(crate) async fn prune(pool: &PgPool, before: i64, limit: u32) -> Result<u64> {
    let done = sqlx::query(
        "DELETE FROM decision_log WHERE id IN \
         (SELECT id FROM decision_log WHERE COALESCE(asked_at, at) < $1 ORDER BY id LIMIT $2)",
    )
    .bind(before)
    .bind(i64::from(limit))
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(done.rows_affected())
}
