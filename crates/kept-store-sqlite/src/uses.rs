//! The record of uses on SQLite: inserts inside the group committer's transaction (with the
//! contacts they record, if any), and a subject's candidates read newest first on the read
//! pool.

use crate::db;
use kept_core::SubjectId;
use kept_store::columns::to_i64;
use kept_store::uses::USE_COLUMNS;
use kept_store::{Result, UseRecord};
use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::{QueryBuilder, Sqlite};

/// Rows per `INSERT`: 13 bound values each, well under SQLite's 32,766.
const CHUNK: usize = 1000;

/// The head of a multi-row insert, for the group committer's script.
pub(crate) const INSERT: &str = "INSERT INTO uses (at, kind, subject_id, subjects, subject_count, \
    purpose, channel, topic, categories, reason, evidence, actor, reference) VALUES ";

/// Inserts `uses` on `conn` (inside the caller's transaction); a forward already recorded is
/// skipped. Returns how many rows were written.
pub(crate) async fn insert(conn: &mut SqliteConnection, uses: &[&UseRecord]) -> Result<u64> {
    let mut written = 0;
    for chunk in uses.chunks(CHUNK) {
        let columns = chunk
            .iter()
            .map(|u| u.columns())
            .collect::<Result<Vec<_>>>()?;
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO uses (at, kind, subject_id, subjects, subject_count, purpose, channel, \
             topic, categories, reason, evidence, actor, reference) ",
        );
        insert.push_values(&columns, |mut row, c| {
            row.push_bind(c.at)
                .push_bind(c.kind)
                .push_bind(c.subject)
                .push_bind(c.subjects)
                .push_bind(c.count)
                .push_bind(c.purpose)
                .push_bind(c.channel)
                .push_bind(c.topic)
                .push_bind(c.categories.as_str())
                .push_bind(c.reason)
                .push_bind(c.evidence)
                .push_bind(c.actor)
                .push_bind(c.reference);
        });
        insert.push(" ON CONFLICT DO NOTHING");
        written += insert
            .build()
            .execute(&mut *conn)
            .await
            .map_err(db)?
            .rows_affected();
    }
    Ok(written)
}

pub(crate) async fn candidates(
    pool: &SqlitePool,
    subject: SubjectId,
    before: Option<u64>,
    limit: u32,
) -> Result<Vec<UseRecord>> {
    let before = before.map(to_i64).transpose()?.unwrap_or(i64::MAX);
    let sql = format!(
        "SELECT {USE_COLUMNS} FROM (\
         SELECT * FROM (SELECT * FROM uses WHERE subject_id = ?1 AND id < ?2 \
         ORDER BY id DESC LIMIT ?3) \
         UNION ALL \
         SELECT * FROM (SELECT * FROM uses WHERE subjects IS NOT NULL AND id < ?2 \
         ORDER BY id DESC LIMIT ?3)) ORDER BY id DESC LIMIT ?3"
    );
    let rows = sqlx::query(&sql)
        .bind(i64::from(subject.0))
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(db)?;
    rows.iter()
        .map(|r| kept_store::uses::use_row(&crate::Cols(r)))
        .collect()
}
