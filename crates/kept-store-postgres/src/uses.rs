//! The record of uses on PostgreSQL: one `UNNEST` insert inside the group committer's
//! transaction (with the contacts they record, if any), and a subject's candidates read
//! newest first.

use crate::db;
use kept_core::SubjectId;
use kept_core::subject::Contact;
use kept_store::columns::to_i64;
use kept_store::uses::USE_COLUMNS;
use kept_store::{Result, UseRecord};
use sqlx::postgres::{PgConnection, PgPool};

/// Inserts `uses` on `conn` (inside the caller's transaction, or as its own), and in the same
/// statement `contacts` (one round trip for the group committer's batch); a forward already
/// recorded is skipped. Returns how many uses were written.
pub(crate) async fn insert(
    conn: &mut PgConnection,
    uses: &[&UseRecord],
    contacts: &[&Contact],
) -> Result<u64> {
    if uses.is_empty() {
        return Ok(0);
    }
    let columns = uses
        .iter()
        .map(|u| u.columns())
        .collect::<Result<Vec<_>>>()?;
    let ats: Vec<i64> = columns.iter().map(|c| c.at).collect();
    let kinds: Vec<&str> = columns.iter().map(|c| c.kind).collect();
    let subjects: Vec<Option<i64>> = columns.iter().map(|c| c.subject).collect();
    let sets: Vec<Option<&[u8]>> = columns.iter().map(|c| c.subjects).collect();
    let counts: Vec<i64> = columns.iter().map(|c| c.count).collect();
    let purposes: Vec<&str> = columns.iter().map(|c| c.purpose).collect();
    let channels: Vec<Option<&str>> = columns.iter().map(|c| c.channel).collect();
    let topics: Vec<Option<&str>> = columns.iter().map(|c| c.topic).collect();
    let categories: Vec<&str> = columns.iter().map(|c| c.categories.as_str()).collect();
    let reasons: Vec<&str> = columns.iter().map(|c| c.reason).collect();
    let evidence: Vec<&str> = columns.iter().map(|c| c.evidence).collect();
    let actors: Vec<&str> = columns.iter().map(|c| c.actor).collect();
    let references: Vec<Option<&str>> = columns.iter().map(|c| c.reference).collect();
    let c_subjects: Vec<i64> = contacts.iter().map(|c| i64::from(c.subject.0)).collect();
    let c_channels: Vec<&str> = contacts.iter().map(|c| c.channel.as_str()).collect();
    let c_purposes: Vec<&str> = contacts.iter().map(|c| c.purpose.as_str()).collect();
    let c_topics: Vec<Option<&str>> = contacts.iter().map(|c| c.topic.as_deref()).collect();
    let c_ats: Vec<i64> = contacts.iter().map(|c| c.at).collect();
    // A data-modifying WITH always runs, so the contacts go in with the uses.
    let with_contacts = if contacts.is_empty() {
        ""
    } else {
        "WITH contacted AS (INSERT INTO contacts (subject_id, channel, purpose, topic, at) \
         SELECT * FROM UNNEST($14::BIGINT[], $15::TEXT[], $16::TEXT[], $17::TEXT[], \
         $18::BIGINT[])) "
    };
    // `WITH ORDINALITY` keeps the ids in the given order.
    let sql = format!(
        "{with_contacts}INSERT INTO uses (at, kind, subject_id, subjects, subject_count, \
         purpose, channel, topic, categories, reason, evidence, actor, reference) \
         SELECT at, kind, subject_id, subjects, subject_count, purpose, channel, topic, \
         categories, reason, evidence, actor, reference FROM UNNEST($1::BIGINT[], $2::TEXT[], \
         $3::BIGINT[], $4::BYTEA[], $5::BIGINT[], $6::TEXT[], $7::TEXT[], $8::TEXT[], \
         $9::TEXT[], $10::TEXT[], $11::TEXT[], $12::TEXT[], $13::TEXT[]) WITH ORDINALITY \
         AS t(at, kind, subject_id, subjects, subject_count, purpose, channel, topic, \
         categories, reason, evidence, actor, reference, n) ORDER BY n \
         ON CONFLICT DO NOTHING"
    );
    let mut query = sqlx::query(&sql)
        .bind(&ats)
        .bind(&kinds)
        .bind(&subjects)
        .bind(&sets)
        .bind(&counts)
        .bind(&purposes)
        .bind(&channels)
        .bind(&topics)
        .bind(&categories)
        .bind(&reasons)
        .bind(&evidence)
        .bind(&actors)
        .bind(&references);
    if !contacts.is_empty() {
        query = query
            .bind(&c_subjects)
            .bind(&c_channels)
            .bind(&c_purposes)
            .bind(&c_topics)
            .bind(&c_ats);
    }
    let done = query.execute(&mut *conn).await.map_err(db)?;
    Ok(done.rows_affected())
}

pub(crate) async fn candidates(
    pool: &PgPool,
    subject: SubjectId,
    before: Option<u64>,
    limit: u32,
) -> Result<Vec<UseRecord>> {
    let before = before.map(to_i64).transpose()?.unwrap_or(i64::MAX);
    let sql = format!(
        "SELECT {USE_COLUMNS} FROM (\
         (SELECT * FROM uses WHERE subject_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3) \
         UNION ALL \
         (SELECT * FROM uses WHERE subjects IS NOT NULL AND id < $2 ORDER BY id DESC LIMIT $3)\
         ) AS u ORDER BY id DESC LIMIT $3"
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
