//! The webhook outbox on SQLite. Writes go through the single write connection, so a claim (a
//! read of the due rows and their lease, in one `BEGIN IMMEDIATE` transaction) can never hand
//! the same delivery to two workers.

use super::{Cols, SqliteStore, db};
use async_trait::async_trait;
use kept_core::{SubjectId, UnixMillis};
use kept_store::columns::{to_i64, to_u64};
use kept_store::outbox::{
    Attempt, Delivery, DeliveryState, NewDelivery, Outbox, OutboxCounts, delivery_row,
};
use kept_store::{Result, StoreError};
use sqlx::Row;

use kept_store::outbox::DELIVERY_COLUMNS as COLUMNS;

#[async_trait]
impl Outbox for SqliteStore {
    async fn enqueue_deliveries(&self, deliveries: Vec<NewDelivery>) -> Result<u64> {
        if deliveries.is_empty() {
            return Ok(0);
        }
        let mut tx = self.write.begin().await.map_err(db)?;
        let mut added = 0;
        for d in &deliveries {
            let done = sqlx::query(
                "INSERT INTO outbox (message_id, event_id, system, subject_id, payload, state, \
                 attempts, next_attempt_at, created_at, updated_at, kind) \
                 VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(&d.message_id)
            .bind(&d.event_id)
            .bind(&d.system)
            .bind(i64::from(d.subject.0))
            .bind(&d.payload)
            .bind(d.created_at)
            .bind(d.created_at)
            .bind(d.created_at)
            .bind(d.kind.as_str())
            .execute(&mut *tx)
            .await;
            match done {
                Ok(done) => added += done.rows_affected(),
                Err(e) => {
                    drop(tx);
                    let subjects: Vec<SubjectId> = deliveries.iter().map(|d| d.subject).collect();
                    return Err(self.missing_subject(e, subjects).await);
                }
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(added)
    }

    async fn claim_due_deliveries(
        &self,
        now: UnixMillis,
        lease_until: UnixMillis,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        let mut conn = self.write.acquire().await.map_err(db)?;
        let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE")
            .await
            .map_err(db)?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM outbox WHERE state = 'pending' AND next_attempt_at <= ? \
             ORDER BY next_attempt_at, id LIMIT ?"
        ))
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let mut claimed = rows
            .iter()
            .map(|r| delivery_row(&Cols(r), 0))
            .collect::<Result<Vec<_>>>()?;
        for d in &mut claimed {
            sqlx::query("UPDATE outbox SET next_attempt_at = ? WHERE id = ?")
                .bind(lease_until)
                .bind(to_i64(d.id)?)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            d.next_attempt_at = lease_until;
        }
        tx.commit().await.map_err(db)?;
        Ok(claimed)
    }

    async fn record_attempt(&self, id: u64, attempt: &Attempt) -> Result<()> {
        let query = match attempt {
            Attempt::Delivered { at, status } => sqlx::query(
                "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, payload = '', \
                 updated_at = ?, last_status = ? WHERE id = ? AND state = 'pending'",
            )
            .bind(*at)
            .bind(i64::from(*status)),
            Attempt::Failed {
                at,
                status,
                error,
                retry_at,
            } => sqlx::query(
                "UPDATE outbox SET state = ?, attempts = attempts + 1, \
                 next_attempt_at = COALESCE(?, next_attempt_at), updated_at = ?, \
                 last_status = ?, last_error = ? WHERE id = ? AND state = 'pending'",
            )
            .bind(attempt.state().as_str())
            .bind(*retry_at)
            .bind(*at)
            .bind(status.map(i64::from))
            .bind(error.as_str()),
            Attempt::Suppressed { at, reason } => sqlx::query(
                "UPDATE outbox SET state = 'suppressed', payload = '', updated_at = ?, \
                 last_error = ? WHERE id = ? AND state = 'pending'",
            )
            .bind(*at)
            .bind(reason.as_str()),
        };
        let done = query
            .bind(to_i64(id)?)
            .execute(&self.write)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "pending delivery",
                key: id.to_string(),
            });
        }
        Ok(())
    }

    async fn delivery(&self, id: u64) -> Result<Option<Delivery>> {
        sqlx::query(&format!("SELECT {COLUMNS} FROM outbox WHERE id = ?"))
            .bind(to_i64(id)?)
            .fetch_optional(&self.read)
            .await
            .map_err(db)?
            .as_ref()
            .map(|r| delivery_row(&Cols(r), 0))
            .transpose()
    }

    async fn deliveries_for_event(&self, event_id: &str) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM outbox WHERE event_id = ? ORDER BY system"
        ))
        .bind(event_id)
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter().map(|r| delivery_row(&Cols(r), 0)).collect()
    }

    async fn deliveries_of(
        &self,
        subject: SubjectId,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        let after = match after {
            Some(a) => to_i64(a)?,
            None => -1,
        };
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM outbox WHERE subject_id = ? AND id > ? ORDER BY id LIMIT ?"
        ))
        .bind(i64::from(subject.0))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter().map(|r| delivery_row(&Cols(r), 0)).collect()
    }

    async fn dead_deliveries(&self, after: Option<u64>, limit: u32) -> Result<Vec<Delivery>> {
        let after = match after {
            Some(a) => to_i64(a)?,
            None => -1,
        };
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM outbox WHERE state = 'dead' AND id > ? ORDER BY id LIMIT ?"
        ))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter().map(|r| delivery_row(&Cols(r), 0)).collect()
    }

    async fn retry_dead_delivery(&self, id: u64, now: UnixMillis) -> Result<Delivery> {
        let row = sqlx::query(&format!(
            "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?, \
             updated_at = ? WHERE id = ? AND state = 'dead' RETURNING {COLUMNS}"
        ))
        .bind(now)
        .bind(now)
        .bind(to_i64(id)?)
        .fetch_optional(&self.write)
        .await
        .map_err(db)?;
        match row {
            Some(row) => delivery_row(&Cols(&row), 0),
            None => Err(StoreError::NotFound {
                what: "dead letter",
                key: id.to_string(),
            }),
        }
    }

    async fn delete_subject_deliveries(&self, subject: SubjectId) -> Result<u64> {
        let done = sqlx::query("DELETE FROM outbox WHERE subject_id = ? AND kind = 'event'")
            .bind(i64::from(subject.0))
            .execute(&self.write)
            .await
            .map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn outbox_counts(&self) -> Result<OutboxCounts> {
        let rows = sqlx::query("SELECT state, COUNT(*) FROM outbox GROUP BY state")
            .fetch_all(&self.read)
            .await
            .map_err(db)?;
        let mut counts = OutboxCounts::default();
        for row in &rows {
            let state: String = row.try_get(0).map_err(db)?;
            let n = to_u64(row.try_get(1).map_err(db)?, "outbox count")?;
            counts.add(DeliveryState::from_column(&state)?, n);
        }
        Ok(counts)
    }
}
