//! Rectification on Postgres: a request filed with its sealed corrections in one transaction
//! (`RequestStore::file_request`'s, with them), traits corrected together with the copies
//! the identity log keeps, and the identifiers a corrected one replaces dropped.

use super::{Cols, PostgresStore, db};
use async_trait::async_trait;
use kept_core::SubjectId;
use kept_core::identity::{IdentifierHash, IdentifierKind};
use kept_core::requests::Request;
use kept_core::subject::Trait;
use kept_store::columns::{Row as _, to_i64};
use kept_store::corrections::{CorrectionStore, StoredCorrection};
use kept_store::requests::Stepped;
use kept_store::{Result, StoreError};

#[async_trait]
impl CorrectionStore for PostgresStore {
    async fn file_request_with(
        &self,
        request: Request,
        actor: &str,
        detail: Vec<(String, String)>,
        corrections: Vec<StoredCorrection>,
    ) -> Result<Stepped> {
        self.file_in(request, actor, detail, corrections).await
    }

    async fn corrections(&self, request: u64) -> Result<Vec<StoredCorrection>> {
        let rows = sqlx::query(
            "SELECT target, sealed FROM request_corrections WHERE request_id = $1 ORDER BY target",
        )
        .bind(to_i64(request)?)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                let row = Cols(r);
                Ok(StoredCorrection {
                    target: row.text(0)?,
                    sealed: row.bytes(1)?,
                })
            })
            .collect()
    }

    async fn correct_traits(&self, traits: Vec<Trait>) -> Result<()> {
        if traits.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(db)?;
        super::collection::upsert_traits(&mut tx, &traits).await?;
        for t in &traits {
            let value = serde_json::to_string(&t.value)
                .map_err(|e| StoreError::Database(format!("cannot encode a trait value: {e}")))?;
            sqlx::query(
                "UPDATE identity_log_traits SET value = $1::JSONB WHERE subject_id = $2 AND key = $3",
            )
            .bind(value)
            .bind(i64::from(t.subject.0))
            .bind(t.key.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn drop_identities(
        &self,
        subject: SubjectId,
        kind: IdentifierKind,
        keep: &IdentifierHash,
    ) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM identities WHERE subject_id = $1 AND kind = $2 AND hash <> $3",
        )
        .bind(i64::from(subject.0))
        .bind(kind.as_str())
        .bind(keep.0.as_slice())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected())
    }
}
