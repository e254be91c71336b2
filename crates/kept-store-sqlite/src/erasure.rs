//! Erasure on SQLite: one `BEGIN IMMEDIATE` transaction on the single write connection, so no
//! other write interleaves with it, with the statements `kept_store::erasure` shares (written
//! with PostgreSQL's `$n` placeholders, read here as SQLite's `?n`).

use super::{SqliteStore, db};
use async_trait::async_trait;
use kept_core::SubjectId;
use kept_core::identity::IdentifierHash;
use kept_store::columns::subject_id;
use kept_store::erasure::{
    DELETES, ErasurePlan, ErasureReport, ErasureStore, FAMILY, Retained, SUPPRESS_HELD,
    SUPPRESS_ONE, SURVIVOR, TOMBSTONE, retained_trait,
};
use kept_store::{Result, StoreError};
use sqlx::{Row, SqliteConnection};

/// A shared statement with SQLite's numbered placeholders.
pub(crate) fn lite(sql: &str) -> String {
    sql.replace('$', "?")
}

/// The key of each trait of `subject`, with why the plan keeps it (`None`: erased).
async fn traits_kept(
    conn: &mut SqliteConnection,
    plan: &ErasurePlan,
    subject: SubjectId,
) -> Result<Vec<(String, Option<Retained>)>> {
    let rows = sqlx::query("SELECT key, category, collected_at FROM traits WHERE subject_id = ?")
        .bind(i64::from(subject.0))
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let key: String = row.try_get(0).map_err(db)?;
        let category: String = row.try_get(1).map_err(db)?;
        let collected_at: i64 = row.try_get(2).map_err(db)?;
        let kept = retained_trait(plan, subject, &key, &category, collected_at);
        out.push((key, kept));
    }
    Ok(out)
}

#[async_trait]
impl ErasureStore for SqliteStore {
    async fn erase_subject(&self, plan: &ErasurePlan) -> Result<ErasureReport> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let survivor: Option<i64> = sqlx::query_scalar(&lite(SURVIVOR))
            .bind(i64::from(plan.subject.0))
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        let survivor = subject_id(survivor.unwrap_or(i64::from(plan.subject.0)))?;
        let erased: Option<Option<i64>> =
            sqlx::query_scalar("SELECT erased_at FROM subjects WHERE id = ?")
                .bind(i64::from(survivor.0))
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
        let Some(erased) = erased else {
            return Err(StoreError::NotFound {
                what: "subject",
                key: plan.subject.to_string(),
            });
        };
        if let Some(at) = erased {
            let traits = traits_kept(&mut tx, plan, survivor).await?;
            let kept = traits.into_iter().filter_map(|(_, kept)| kept).collect();
            return Ok(ErasureReport::already(survivor, at, kept));
        }
        let family: Vec<i64> = sqlx::query_scalar(&lite(FAMILY))
            .bind(i64::from(survivor.0))
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        let mut report = ErasureReport {
            subject: survivor,
            subjects: family
                .iter()
                .map(|s| subject_id(*s))
                .collect::<Result<_>>()?,
            already_erased: false,
            erased_at: plan.at,
            deleted: Default::default(),
            retained: Vec::new(),
            suppressed: 0,
        };
        let request = plan.request.map(kept_store::columns::to_i64).transpose()?;
        for hash in &plan.suppress {
            let done = sqlx::query(&lite(SUPPRESS_ONE))
                .bind(hash.0.as_slice())
                .bind(request)
                .bind(plan.at)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            report.suppressed += done.rows_affected();
        }
        for member in &family {
            let done = sqlx::query(&lite(SUPPRESS_HELD))
                .bind(member)
                .bind(request)
                .bind(plan.at)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            report.suppressed += done.rows_affected();
            for (table, sql) in DELETES {
                let done = sqlx::query(&lite(sql))
                    .bind(member)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                report.count(table, done.rows_affected());
            }
            for (key, kept) in traits_kept(&mut tx, plan, subject_id(*member)?).await? {
                if let Some(kept) = kept {
                    report.retained.push(kept);
                    continue;
                }
                let done = sqlx::query("DELETE FROM traits WHERE subject_id = ? AND key = ?")
                    .bind(member)
                    .bind(&key)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                report.count("traits", done.rows_affected());
            }
            sqlx::query(&lite(TOMBSTONE))
                .bind(member)
                .bind(plan.at)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(report)
    }

    async fn suppressed(&self, hashes: &[IdentifierHash]) -> Result<Vec<IdentifierHash>> {
        let mut found: Vec<Vec<u8>> = Vec::new();
        for chunk in hashes.chunks(500) {
            let sql = format!(
                "SELECT hash FROM suppressions WHERE hash IN ({})",
                vec!["?"; chunk.len()].join(", ")
            );
            let mut q = sqlx::query_scalar::<_, Vec<u8>>(&sql);
            for hash in chunk {
                q = q.bind(hash.0.as_slice());
            }
            found.extend(q.fetch_all(&self.read).await.map_err(db)?);
        }
        Ok(hashes
            .iter()
            .filter(|h| found.iter().any(|f| f.as_slice() == h.0.as_slice()))
            .copied()
            .collect())
    }
}
