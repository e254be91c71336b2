//! The console's operators on SQLite: accounts, sessions and the audit log.
//! A TOTP step is used by one conditional update (`totp_last_step < step`), so two servers
//! racing with the same code let one through.

use super::{Cols, SqliteStore, db};
use async_trait::async_trait;
use kept_core::UnixMillis;
use kept_store::columns::to_i64;
use kept_store::operators::{
    AUDIT_COLUMNS, AuditEntry, NewAuditEntry, NewOperator, NewOperatorSession, OPERATOR_COLUMNS,
    Operator, OperatorStore, audit_row, operator_row,
};
use kept_store::{Result, StoreError};

#[async_trait]
impl OperatorStore for SqliteStore {
    async fn create_operator(&self, operator: NewOperator) -> Result<u64> {
        let id: std::result::Result<i64, sqlx::Error> = sqlx::query_scalar(
            "INSERT INTO operators (email, role, password_hash, totp_secret, created_at) VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
        )
        .bind(&operator.email)
        .bind(operator.role.as_str())
        .bind(&operator.password_hash)
        .bind(&operator.totp_secret)
        .bind(operator.created_at)
        .fetch_one(&self.write)
        .await;
        match id {
            Ok(id) => kept_store::columns::to_u64(id, "operator id"),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict {
                what: "operator",
                key: operator.email,
            }),
            Err(e) => Err(db(e)),
        }
    }

    async fn operator_by_email(&self, email: &str) -> Result<Option<Operator>> {
        let row = sqlx::query(&format!(
            "SELECT {OPERATOR_COLUMNS} FROM operators WHERE email = ?"
        ))
        .bind(email)
        .fetch_optional(&self.read)
        .await
        .map_err(db)?;
        row.map(|r| operator_row(&Cols(&r))).transpose()
    }

    async fn operator(&self, id: u64) -> Result<Option<Operator>> {
        let row = sqlx::query(&format!(
            "SELECT {OPERATOR_COLUMNS} FROM operators WHERE id = ?"
        ))
        .bind(to_i64(id)?)
        .fetch_optional(&self.read)
        .await
        .map_err(db)?;
        row.map(|r| operator_row(&Cols(&r))).transpose()
    }

    async fn operators(&self) -> Result<Vec<Operator>> {
        let rows = sqlx::query(&format!(
            "SELECT {OPERATOR_COLUMNS} FROM operators ORDER BY id"
        ))
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter().map(|r| operator_row(&Cols(r))).collect()
    }

    async fn use_totp_step(&self, id: u64, step: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE operators SET totp_last_step = ?1 WHERE id = ?2 AND totp_last_step < ?3 AND disabled_at IS NULL",
        )
        .bind(step)
        .bind(to_i64(id)?)
        .bind(step)
        .execute(&self.write)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn open_operator_session(&self, session: NewOperatorSession) -> Result<()> {
        let mut tx = self.write.begin().await.map_err(db)?;
        sqlx::query("DELETE FROM operator_sessions WHERE expires_at < ?1")
            .bind(session.created_at)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let inserted = sqlx::query(
            "INSERT INTO operator_sessions (id, operator_id, created_at, last_seen_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(&session.id)
        .bind(to_i64(session.operator)?)
        .bind(session.created_at)
        .bind(session.created_at)
        .bind(session.expires_at)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => tx.commit().await.map_err(db),
            Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                Err(StoreError::NotFound {
                    what: "operator",
                    key: session.operator.to_string(),
                })
            }
            Err(e) => Err(db(e)),
        }
    }

    async fn touch_operator_session(
        &self,
        id: &str,
        now: UnixMillis,
        idle_ms: i64,
    ) -> Result<Option<u64>> {
        let operator: Option<i64> = sqlx::query_scalar(
            "UPDATE operator_sessions SET last_seen_at = ?1 WHERE id = ?2 AND revoked_at IS NULL AND expires_at > ?3 AND last_seen_at >= ?4 AND operator_id IN (SELECT id FROM operators WHERE disabled_at IS NULL) RETURNING operator_id",
        )
        .bind(now)
        .bind(id)
        .bind(now)
        .bind(now.saturating_sub(idle_ms))
        .fetch_optional(&self.write)
        .await
        .map_err(db)?;
        operator
            .map(|o| kept_store::columns::to_u64(o, "operator id"))
            .transpose()
    }

    async fn revoke_operator_session(&self, id: &str, now: UnixMillis) -> Result<()> {
        sqlx::query(
            "UPDATE operator_sessions SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&self.write)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn revoke_operator_sessions(&self, operator: u64, now: UnixMillis) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE operator_sessions SET revoked_at = ?1 WHERE operator_id = ?2 AND revoked_at IS NULL AND expires_at > ?3",
        )
        .bind(now)
        .bind(to_i64(operator)?)
        .bind(now)
        .execute(&self.write)
        .await
        .map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn append_audit(&self, entry: NewAuditEntry) -> Result<u64> {
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO audit_log (at, operator_id, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING seq",
        )
        .bind(entry.at)
        .bind(entry.operator.map(to_i64).transpose()?)
        .bind(&entry.actor)
        .bind(&entry.action)
        .bind(&entry.target)
        .bind(&entry.detail)
        .fetch_one(&self.write)
        .await
        .map_err(db)?;
        kept_store::columns::to_u64(seq, "audit seq")
    }

    async fn audit_log(&self, before: Option<u64>, limit: u32) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE (?1 IS NULL OR seq < ?1) ORDER BY seq DESC LIMIT ?2"
        ))
        .bind(before.map(to_i64).transpose()?)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter().map(|r| audit_row(&Cols(r))).collect()
    }
}
