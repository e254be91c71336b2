//! The preference center's storage on SQLite: spent link ids and sessions. Writes go
//! through the single write connection, so `spend_token`'s insert is the one arbiter of which
//! request spends a token.

use super::{SqliteStore, db};
use async_trait::async_trait;
use kept_core::{SubjectId, UnixMillis};
use kept_store::Result;
use kept_store::columns::subject_id;
use kept_store::prefcenter::{NewSession, PrefCenterStore};

#[async_trait]
impl PrefCenterStore for SqliteStore {
    async fn spend_token(&self, id: &str, expires_at: UnixMillis, now: UnixMillis) -> Result<bool> {
        let mut tx = self.write.begin().await.map_err(db)?;
        sqlx::query("DELETE FROM spent_tokens WHERE expires_at < ?")
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let done = sqlx::query(
            "INSERT INTO spent_tokens (id, expires_at, spent_at) VALUES (?, ?, ?) \
             ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(expires_at)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn open_session(&self, session: NewSession) -> Result<()> {
        let mut tx = self.write.begin().await.map_err(db)?;
        sqlx::query("DELETE FROM prefcenter_sessions WHERE expires_at < ?")
            .bind(session.created_at)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query(
            "UPDATE prefcenter_sessions SET revoked_at = ? \
             WHERE subject_id = ? AND revoked_at IS NULL",
        )
        .bind(session.created_at)
        .bind(i64::from(session.subject.0))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let inserted = sqlx::query(
            "INSERT INTO prefcenter_sessions (id, subject_id, created_at, expires_at) \
             VALUES (?, ?, ?, ?)",
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
             WHERE id = ? AND expires_at > ? AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(&self.read)
        .await
        .map_err(db)?;
        row.map(subject_id).transpose()
    }

    async fn revoke_session(&self, id: &str, now: UnixMillis) -> Result<()> {
        sqlx::query(
            "UPDATE prefcenter_sessions SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&self.write)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn revoke_sessions(&self, subject: SubjectId, now: UnixMillis) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE prefcenter_sessions SET revoked_at = ? \
             WHERE subject_id = ? AND revoked_at IS NULL AND expires_at > ?",
        )
        .bind(now)
        .bind(i64::from(subject.0))
        .bind(now)
        .execute(&self.write)
        .await
        .map_err(db)?;
        Ok(done.rows_affected())
    }
}
