//! Data subject requests on PostgreSQL. Several servers may share the database: the partial
//! unique index on open erasure requests settles a race, not a read before the write.

use super::{Cols, PostgresStore, db};
use async_trait::async_trait;
use kept_core::SubjectId;
use kept_store::Result;
use kept_store::requests::{
    ERASURE_COLUMNS, ErasureRequest, NewErasureRequest, RequestStore, erasure_row,
};

#[async_trait]
impl RequestStore for PostgresStore {
    async fn file_erasure_request(&self, request: NewErasureRequest) -> Result<ErasureRequest> {
        let inserted = sqlx::query(&format!(
            "INSERT INTO erasure_requests (subject_id, regime, source, state, requested_at, \
             due_at) VALUES ($1, $2, $3, 'received', $4, $5) \
             ON CONFLICT (subject_id) WHERE state = 'received' DO NOTHING RETURNING {ERASURE_COLUMNS}"
        ))
        .bind(i64::from(request.subject.0))
        .bind(&request.regime)
        .bind(&request.source)
        .bind(request.requested_at)
        .bind(request.due_at)
        .fetch_optional(&self.pool)
        .await;
        match inserted {
            Ok(Some(row)) => erasure_row(&Cols(&row)),
            Ok(None) => {
                let row = sqlx::query(&format!(
                    "SELECT {ERASURE_COLUMNS} FROM erasure_requests \
                     WHERE subject_id = $1 AND state = 'received'"
                ))
                .bind(i64::from(request.subject.0))
                .fetch_one(&self.pool)
                .await
                .map_err(db)?;
                erasure_row(&Cols(&row))
            }
            Err(e) => Err(self.missing_subject(e, [request.subject]).await),
        }
    }

    async fn erasure_requests(&self, subject: SubjectId) -> Result<Vec<ErasureRequest>> {
        let rows = sqlx::query(&format!(
            "SELECT {ERASURE_COLUMNS} FROM erasure_requests WHERE subject_id = $1 ORDER BY id"
        ))
        .bind(i64::from(subject.0))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(|r| erasure_row(&Cols(r))).collect()
    }
}
