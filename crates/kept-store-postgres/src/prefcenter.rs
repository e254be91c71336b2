//! The preference center's storage on PostgreSQL: spent link ids and sessions. Several
//! servers may share the database: the primary key on `spent_tokens` and the partial unique
//! index on open erasure requests settle races, not a read before the write.

use super::{PostgresStore, db};
use async_trait::async_trait;
use kept_core::{SubjectId, UnixMillis};
use kept_store::Result;
use kept_store::columns::subject_id;
use kept_store::prefcenter::{NewSession, PrefCenterStore};

#[async_trait]
impl PrefCenterStore for PostgresStore {
    async fn spend_token(&self, id: &str, expires_at: UnixMillis, now: UnixMillis) -> Result<bool> {
        sqlx::query("DELETE FROM spent_tokens WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        let done = sqlx::query(
            "INSERT INTO spent_tokens (id, expires_at, spent_at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(expires_at)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn open_session(&self, session: NewSession) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("DELETE FROM prefcenter_sessions WHERE expires_at < $1")
            .bind(session.created_at)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query(
            "UPDATE prefcenter_sessions SET revoked_at = $1 \
             WHERE subject_id = $2 AND revoked_at IS NULL",
        )
        .bind(session.created_at)
        .bind(i64::from(session.subject.0))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let inserted = sqlx::query(
            "INSERT INTO prefcenter_sessions (id, subject_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&session.id)
        .bind(i64::from(session.subject.0))
        .bind(session.created_at)
        .bind(session.expires_at)
        .execute(&mut *tx)
        .await;
        if let Err(e) = inserted {
            drop(tx);
            return Err(self.missing_subject(e, [session.subject]).await);
        }
        // A visit to the preference center is an interaction.
        crate::collection::record_interactions(&mut tx, &[(session.subject, session.created_at)])
            .await?;
        tx.commit().await.map_err(db)
    }

    async fn live_session(&self, id: &str, now: UnixMillis) -> Result<Option<SubjectId>> {
        let row: Option<i64> = sqlx::query_scalar(
            "SELECT subject_id FROM prefcenter_sessions \
             WHERE id = $1 AND expires_at > $2 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(subject_id).transpose()
    }

    async fn revoke_session(&self, id: &str, now: UnixMillis) -> Result<()> {
        sqlx::query(
            "UPDATE prefcenter_sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn revoke_sessions(&self, subject: SubjectId, now: UnixMillis) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE prefcenter_sessions SET revoked_at = $1 \
             WHERE subject_id = $2 AND revoked_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .bind(i64::from(subject.0))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected())
    }
}
