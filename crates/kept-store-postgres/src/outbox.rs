//! The webhook outbox on PostgreSQL. Several servers may share the database: a claim takes its
//! rows with `FOR UPDATE SKIP LOCKED`, so concurrent workers split the due deliveries between
//! them instead of waiting for, or sending, each other's.

use super::{Cols, PostgresStore, db};
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
impl Outbox for PostgresStore {
    async fn enqueue_deliveries(&self, deliveries: Vec<NewDelivery>) -> Result<u64> {
        if deliveries.is_empty() {
            return Ok(0);
        }
        let column =
            |f: fn(&NewDelivery) -> &str| -> Vec<&str> { deliveries.iter().map(f).collect() };
        let subjects: Vec<i64> = deliveries.iter().map(|d| i64::from(d.subject.0)).collect();
        let created: Vec<i64> = deliveries.iter().map(|d| d.created_at).collect();
        let done = sqlx::query(
            "INSERT INTO outbox (message_id, event_id, system, subject_id, payload, state, \
             attempts, next_attempt_at, created_at, updated_at, kind) \
             SELECT m, e, s, sub, p, 'pending', 0, c, c, c, k \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], \
                         $6::bigint[], $7::text[]) AS t (m, e, s, sub, p, c, k) \
             ON CONFLICT DO NOTHING",
        )
        .bind(column(|d| &d.message_id))
        .bind(column(|d| &d.event_id))
        .bind(column(|d| &d.system))
        .bind(&subjects)
        .bind(column(|d| &d.payload))
        .bind(&created)
        .bind(column(|d| d.kind.as_str()))
        .execute(&self.pool)
        .await;
        match done {
            Ok(done) => Ok(done.rows_affected()),
            Err(e) => {
                let subjects: Vec<SubjectId> = deliveries.iter().map(|d| d.subject).collect();
                Err(self.missing_subject(e, subjects).await)
            }
        }
    }

    async fn claim_due_deliveries(
        &self,
        now: UnixMillis,
        lease_until: UnixMillis,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(&format!(
            "WITH due AS ( \
                 SELECT id, next_attempt_at AS due_at FROM outbox \
                 WHERE state = 'pending' AND next_attempt_at <= $1 \
                 ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED) \
             UPDATE outbox SET next_attempt_at = $3 FROM due WHERE outbox.id = due.id \
             RETURNING due.due_at, {}",
            qualified("outbox")
        ))
        .bind(now)
        .bind(i64::from(limit))
        .bind(lease_until)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        // RETURNING has no order; hand them out oldest due first, as claimed.
        let mut claimed = rows
            .iter()
            .map(|row| {
                let due: i64 = row.try_get(0).map_err(db)?;
                Ok((due, delivery_row(&Cols(row), 1)?))
            })
            .collect::<Result<Vec<_>>>()?;
        claimed.sort_by_key(|(due, d)| (*due, d.id));
        Ok(claimed.into_iter().map(|(_, d)| d).collect())
    }

    async fn record_attempt(&self, id: u64, attempt: &Attempt) -> Result<()> {
        let query = match attempt {
            Attempt::Delivered { at, status } => sqlx::query(
                "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, payload = '', \
                 updated_at = $1, last_status = $2 WHERE id = $3 AND state = 'pending'",
            )
            .bind(*at)
            .bind(i64::from(*status)),
            Attempt::Failed {
                at,
                status,
                error,
                retry_at,
            } => sqlx::query(
                "UPDATE outbox SET state = $1, attempts = attempts + 1, \
                 next_attempt_at = COALESCE($2, next_attempt_at), updated_at = $3, \
                 last_status = $4, last_error = $5 WHERE id = $6 AND state = 'pending'",
            )
            .bind(attempt.state().as_str())
            .bind(*retry_at)
            .bind(*at)
            .bind(status.map(i64::from))
            .bind(error.as_str()),
            Attempt::Suppressed { at, reason } => sqlx::query(
                "UPDATE outbox SET state = 'suppressed', payload = '', updated_at = $1, \
                 last_error = $2 WHERE id = $3 AND state = 'pending'",
            )
            .bind(*at)
            .bind(reason.as_str()),
        };
        let done = query
            .bind(to_i64(id)?)
            .execute(&self.pool)
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
        sqlx::query(&format!("SELECT {COLUMNS} FROM outbox WHERE id = $1"))
            .bind(to_i64(id)?)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .as_ref()
            .map(|row| delivery_row(&Cols(row), 0))
            .transpose()
    }

    async fn deliveries_for_event(&self, event_id: &str) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM outbox WHERE event_id = $1 ORDER BY system"
        ))
        .bind(event_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(|row| delivery_row(&Cols(row), 0)).collect()
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
            "SELECT {COLUMNS} FROM outbox WHERE subject_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        ))
        .bind(i64::from(subject.0))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
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
            "SELECT {COLUMNS} FROM outbox WHERE state = 'dead' AND id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(|row| delivery_row(&Cols(row), 0)).collect()
    }

    async fn retry_dead_delivery(&self, id: u64, now: UnixMillis) -> Result<Delivery> {
        let row = sqlx::query(&format!(
            "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = $1, \
             updated_at = $1 WHERE id = $2 AND state = 'dead' RETURNING {COLUMNS}"
        ))
        .bind(now)
        .bind(to_i64(id)?)
        .fetch_optional(&self.pool)
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
        let done = sqlx::query("DELETE FROM outbox WHERE subject_id = $1 AND kind = 'event'")
            .bind(i64::from(subject.0))
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn outbox_counts(&self) -> Result<OutboxCounts> {
        let rows = sqlx::query("SELECT state, COUNT(*) FROM outbox GROUP BY state")
            .fetch_all(&self.pool)
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

/// `COLUMNS` prefixed with a table name, for statements that join.
fn qualified(table: &str) -> String {
    COLUMNS
        .split(',')
        .map(|c| format!("{table}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}
