//! Erasure on PostgreSQL: one transaction that first locks the surviving subject's row, so two
//! servers erasing the same person take turns and the second finds it erased, with the
//! statements `kept_store::erasure` shares.

use super::{PostgresStore, db};
use async_trait::async_trait;
use kept_core::SubjectId;
use kept_core::identity::IdentifierHash;
use kept_store::columns::{subject_id, to_i64};
use kept_store::erasure::{
    DELETES, ErasurePlan, ErasureReport, ErasureStore, FAMILY, Retained, SUPPRESS_HELD,
    SUPPRESS_ONE, SURVIVOR, TOMBSTONE, retained_trait,
};
use kept_store::{Result, StoreError};
use sqlx::{PgConnection, Row};

/// The key of each trait of `subject`, with why the plan keeps it (`None`: erased).
async fn traits_kept(
    conn: &mut PgConnection,
    plan: &ErasurePlan,
    subject: SubjectId,
) -> Result<Vec<(String, Option<Retained>)>> {
    let rows = sqlx::query("SELECT key, category, collected_at FROM traits WHERE subject_id = $1")
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
impl ErasureStore for PostgresStore {
    async fn erase_subject(&self, plan: &ErasurePlan) -> Result<ErasureReport> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let survivor: Option<i64> = sqlx::query_scalar(SURVIVOR)
            .bind(i64::from(plan.subject.0))
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        let survivor = subject_id(survivor.unwrap_or(i64::from(plan.subject.0)))?;
        let erased: Option<Option<i64>> =
            sqlx::query_scalar("SELECT erased_at FROM subjects WHERE id = $1 FOR UPDATE")
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
        let family: Vec<i64> = sqlx::query_scalar(FAMILY)
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
        let request = plan.request.map(to_i64).transpose()?;
        for hash in &plan.suppress {
            let done = sqlx::query(SUPPRESS_ONE)
                .bind(hash.0.as_slice())
                .bind(request)
                .bind(plan.at)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            report.suppressed += done.rows_affected();
        }
        for member in &family {
            let done = sqlx::query(SUPPRESS_HELD)
                .bind(member)
                .bind(request)
                .bind(plan.at)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            report.suppressed += done.rows_affected();
            for (table, sql) in DELETES {
                let done = sqlx::query(sql)
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
                let done = sqlx::query("DELETE FROM traits WHERE subject_id = $1 AND key = $2")
                    .bind(member)
                    .bind(&key)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                report.count("traits", done.rows_affected());
            }
            sqlx::query(TOMBSTONE)
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
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<&[u8]> = hashes.iter().map(|h| h.0.as_slice()).collect();
        let found: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT hash FROM suppressions WHERE hash = ANY($1)")
                .bind(&list)
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        Ok(hashes
            .iter()
            .filter(|h| found.iter().any(|f| f.as_slice() == h.0.as_slice()))
            .copied()
            .collect())
    }
}
