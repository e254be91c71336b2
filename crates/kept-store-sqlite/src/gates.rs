//! The gates data subject requests put on a subject's data, on Sqlite: one row per request
//! (`INSERT … ON CONFLICT DO NOTHING`, so putting one again changes nothing), lifted by
//! setting `lifted_at` once.

use super::{Cols, SqliteStore, db};
use async_trait::async_trait;
use kept_core::decision::SubjectGate;
use kept_core::{SubjectId, UnixMillis};
use kept_store::columns::to_i64;
use kept_store::gates::{GATE_COLUMNS, GateStore, gate_row, keys_column};
use kept_store::requests::RequestStore;
use kept_store::{Result, StoreError};

#[async_trait]
impl GateStore for SqliteStore {
    async fn put_gate(&self, gate: &SubjectGate) -> Result<bool> {
        let written = sqlx::query(
            "INSERT INTO subject_restrictions \
             (request_id, subject_id, kind, purposes, categories, since) \
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (request_id) DO NOTHING",
        )
        .bind(to_i64(gate.request)?)
        .bind(i64::from(gate.subject.0))
        .bind(gate.kind.as_str())
        .bind(keys_column(&gate.purposes))
        .bind(keys_column(&gate.categories))
        .bind(gate.since)
        .execute(&self.write)
        .await;
        match written {
            Ok(done) => Ok(done.rows_affected() == 1),
            Err(e) => {
                if matches!(self.request(gate.request).await, Ok(None)) {
                    return Err(StoreError::NotFound {
                        what: "request",
                        key: gate.request.to_string(),
                    });
                }
                Err(self.missing_subject(e, [gate.subject]).await)
            }
        }
    }

    async fn lift_gate(&self, request: u64, at: UnixMillis) -> Result<Option<SubjectGate>> {
        let row = sqlx::query(&format!(
            "UPDATE subject_restrictions SET lifted_at = ? \
             WHERE request_id = ? AND lifted_at IS NULL RETURNING {GATE_COLUMNS}"
        ))
        .bind(at)
        .bind(to_i64(request)?)
        .fetch_optional(&self.write)
        .await
        .map_err(db)?;
        row.map(|r| gate_row(&Cols(&r))).transpose()
    }

    async fn gates_of(&self, subject: SubjectId) -> Result<Vec<SubjectGate>> {
        let rows = sqlx::query(&format!(
            "SELECT {GATE_COLUMNS} FROM subject_restrictions \
             WHERE subject_id = ? AND lifted_at IS NULL ORDER BY request_id"
        ))
        .bind(i64::from(subject.0))
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter().map(|r| gate_row(&Cols(r))).collect()
    }

    async fn gates_in_force(&self) -> Result<Vec<SubjectGate>> {
        let rows = sqlx::query(&format!(
            "SELECT {GATE_COLUMNS} FROM subject_restrictions \
             WHERE lifted_at IS NULL ORDER BY subject_id, request_id"
        ))
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter().map(|r| gate_row(&Cols(r))).collect()
    }
}
