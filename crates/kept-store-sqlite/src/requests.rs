//! Data subject requests on SQLite. Writes go through the single write connection, so the
//! read of an open request and the insert of a new one cannot interleave with another filing.

use super::{Cols, SqliteStore, db};
use async_trait::async_trait;
use kept_core::SubjectId;
use kept_store::Result;
use kept_store::requests::{
    ERASURE_COLUMNS, ErasureRequest, NewErasureRequest, RequestStore, erasure_row,
};

#[async_trait]
impl RequestStore for SqliteStore {
    async fn file_erasure_request(&self, request: NewErasureRequest) -> Result<ErasureRequest> {
        let mut tx = self.write.begin().await.map_err(db)?;
        let open = sqlx::query(&format!(
            "SELECT {ERASURE_COLUMNS} FROM erasure_requests WHERE subject_id = ? AND state = 'received'"
        ))
        .bind(i64::from(request.subject.0))
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        if let Some(row) = open {
            return erasure_row(&Cols(&row));
        }
        let inserted = sqlx::query(&format!(
            "INSERT INTO erasure_requests (subject_id, regime, source, state, requested_at, \
             due_at) VALUES (?, ?, ?, 'received', ?, ?) RETURNING {ERASURE_COLUMNS}"
        ))
        .bind(i64::from(request.subject.0))
        .bind(&request.regime)
        .bind(&request.source)
        .bind(request.requested_at)
        .bind(request.due_at)
        .fetch_one(&mut *tx)
        .await;
        let row = match inserted {
            Ok(row) => row,
            Err(e) => {
                drop(tx);
                return Err(self.missing_subject(e, [request.subject]).await);
            }
        };
        let stored = erasure_row(&Cols(&row))?;
        tx.commit().await.map_err(db)?;
        Ok(stored)
    }

    async fn erasure_requests(&self, subject: SubjectId) -> Result<Vec<ErasureRequest>> {
        let rows = sqlx::query(&format!(
            "SELECT {ERASURE_COLUMNS} FROM erasure_requests WHERE subject_id = ? ORDER BY id"
        ))
        .bind(i64::from(subject.0))
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter().map(|r| erasure_row(&Cols(r))).collect()
    }
}
