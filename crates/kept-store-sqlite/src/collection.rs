//! The collection API's storage on SQLite: identities and merges are written in one transaction
//! per resolution round; events and profile traits go through their own group committer, so
//! concurrent `/v1/batch` requests share one commit.

use super::{CHUNK, SqliteStore, db, values_sql};
use async_trait::async_trait;
use kept_core::collection::TraitCutoffs;
use kept_core::identity::{IdentifierCounts, IdentifierHash, IdentifierKind, PlannedSubject};
use kept_core::subject::Trait;
use kept_core::{SubjectId, UnixMillis};
use kept_store::collection::{
    CollectionStore, DeletedTraits, EventWrite, IdentityFacts, IdentityWrite, MergeEntry, NewEvent,
    StoredEvent, StoredIdentity, UndoneMerge, consent_keys, hash_column, interactions, kind_column,
    merge_row, undo_refusal,
};
use kept_store::columns::{dense_ids, subject_id, to_u32};
use kept_store::erasure::{CARRY_SUPPRESSED, MARK_SUPPRESSED};
use kept_store::group_commit::{BatchWriter, GroupCommit};
use kept_store::{Result, StoreError, last_trait_wins};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnection, SqlitePool};
use std::collections::{HashMap, HashSet};

/// Rows the event committer puts in one transaction at most.
const MAX_EVENT_BATCH_ROWS: usize = 20_000;

/// Starts the committer that writes events and traits on the write connection.
pub(crate) fn start_event_committer(pool: SqlitePool) -> GroupCommit<EventWriter> {
    GroupCommit::start(EventWriter { pool }, MAX_EVENT_BATCH_ROWS)
}

pub(crate) struct EventWriter {
    pool: SqlitePool,
}

#[async_trait]
impl BatchWriter for EventWriter {
    type Item = EventWrite;
    type Output = ();

    async fn write_batch(&mut self, batch: Vec<EventWrite>) -> Result<Vec<()>> {
        let count = batch.len();
        let mut events = Vec::new();
        let mut traits = Vec::new();
        for write in batch {
            events.extend(write.events);
            traits.extend(write.traits);
        }
        let traits = last_trait_wins(traits);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        insert_events(&mut tx, &events).await?;
        upsert_traits(&mut tx, &traits).await?;
        record_interactions(&mut tx, &interactions(&events)).await?;
        tx.commit().await.map_err(db)?;
        Ok(vec![(); count])
    }

    fn weight(item: &EventWrite) -> usize {
        item.rows()
    }
}

const EVENT_INSERT: &str = "INSERT INTO events (source, message_id, subject_id, kind, name, at, \
     received_at, retain_until, consent_hash, properties, context, extra) VALUES ";

async fn insert_events(conn: &mut SqliteConnection, events: &[NewEvent]) -> Result<()> {
    let (keys, distinct) = consent_keys(events);
    for chunk in distinct.chunks(CHUNK) {
        let sql = values_sql(
            "INSERT INTO event_consents (hash, consent) VALUES ",
            2,
            chunk.len(),
            " ON CONFLICT (hash) DO NOTHING",
        );
        let mut q = sqlx::query(&sql);
        for (key, consent) in chunk {
            q = q.bind(key.as_slice()).bind(*consent);
        }
        q.execute(&mut *conn).await.map_err(db)?;
    }
    for (chunk, keys) in events.chunks(CHUNK).zip(keys.chunks(CHUNK)) {
        let sql = values_sql(
            EVENT_INSERT,
            12,
            chunk.len(),
            " ON CONFLICT (source, message_id) DO NOTHING",
        );
        let mut q = sqlx::query(&sql);
        for (e, key) in chunk.iter().zip(keys) {
            q = q
                .bind(e.source.as_str())
                .bind(e.message_id.as_str())
                .bind(i64::from(e.subject.0))
                .bind(e.kind.as_str())
                .bind(e.name.as_deref())
                .bind(e.at)
                .bind(e.received_at)
                .bind(e.retain_until)
                .bind(key.as_slice())
                .bind(e.properties.as_str())
                .bind(e.context.as_str())
                .bind(e.extra.as_str());
        }
        q.execute(&mut *conn).await.map_err(db)?;
    }
    Ok(())
}

/// Moves each subject's last interaction forward to the time given, never back.
pub(crate) async fn record_interactions(
    conn: &mut SqliteConnection,
    interactions: &[(SubjectId, UnixMillis)],
) -> Result<()> {
    for (subject, at) in interactions {
        sqlx::query(
            "UPDATE subjects SET last_interaction_at = max(coalesce(last_interaction_at, ?1), ?1) \
             WHERE id = ?2",
        )
        .bind(*at)
        .bind(i64::from(subject.0))
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    }
    Ok(())
}

pub(crate) async fn upsert_traits(conn: &mut SqliteConnection, traits: &[Trait]) -> Result<()> {
    for chunk in traits.chunks(CHUNK) {
        let values: Vec<String> = chunk
            .iter()
            .map(|t| serde_json::to_string(&t.value))
            .collect::<Result<_, _>>()
            .map_err(|e| StoreError::Database(format!("cannot encode a trait value: {e}")))?;
        let sql = values_sql(
            "INSERT INTO traits (subject_id, key, value, category, collection_point, \
             notice_id, notice_version, collected_at, source) VALUES ",
            9,
            chunk.len(),
            " ON CONFLICT (subject_id, key) DO UPDATE SET value = excluded.value, \
             category = excluded.category, collection_point = excluded.collection_point, \
             notice_id = excluded.notice_id, notice_version = excluded.notice_version, \
             collected_at = excluded.collected_at, source = excluded.source",
        );
        let mut q = sqlx::query(&sql);
        for (t, value) in chunk.iter().zip(&values) {
            q = q
                .bind(i64::from(t.subject.0))
                .bind(t.key.as_str())
                .bind(value.as_str())
                .bind(t.category.as_str())
                .bind(t.provenance.collection_point.as_str())
                .bind(t.provenance.notice_id.as_str())
                .bind(i64::from(t.provenance.notice_version))
                .bind(t.provenance.collected_at)
                .bind(t.provenance.source.as_str());
        }
        q.execute(&mut *conn).await.map_err(db)?;
    }
    Ok(())
}

/// `(?,?,…)` with `n` places.
fn places(n: usize) -> String {
    let mut s = String::with_capacity(n * 2 + 2);
    s.push('(');
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push('?');
    }
    s.push(')');
    s
}

/// A unique or primary key violation inside an identity write: something was taken meanwhile.
fn taken(e: sqlx::Error, what: &'static str) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict {
            what,
            key: "taken by a concurrent write".to_owned(),
        },
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => StoreError::NotFound {
            what: "subject",
            key: "named by an identity write".to_owned(),
        },
        _ => db(e),
    }
}

const LOG_COLUMNS: &str = "SELECT id, action, from_subject_id, into_subject_id, cause, key_id, \
     at, undone_at, undoes FROM identity_log";

const MERGED_INTO: &str = "WITH RECURSIVE m(id) AS (SELECT ?1 UNION \
     SELECT merges.from_subject_id FROM merges JOIN m ON merges.into_subject_id = m.id)";

#[async_trait]
impl CollectionStore for SqliteStore {
    async fn find_identities(
        &self,
        hashes: &[IdentifierHash],
    ) -> Result<Vec<(IdentifierHash, SubjectId)>> {
        let mut out = Vec::new();
        for chunk in hashes.chunks(CHUNK) {
            let sql = format!(
                "SELECT hash, subject_id FROM identities WHERE hash IN {}",
                places(chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for h in chunk {
                q = q.bind(h.0.as_slice());
            }
            for row in q.fetch_all(&self.read).await.map_err(db)? {
                out.push((
                    hash_column(&crate::Cols(&row), 0)?,
                    subject_id(row.try_get(1).map_err(db)?)?,
                ));
            }
        }
        Ok(out)
    }

    async fn subjects_by_user_ids(&self, user_ids: &[String]) -> Result<Vec<(String, SubjectId)>> {
        let mut out = Vec::new();
        for chunk in user_ids.chunks(CHUNK) {
            let sql = format!(
                "SELECT user_id, id FROM subjects WHERE user_id IN {}",
                places(chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for u in chunk {
                q = q.bind(u.as_str());
            }
            for row in q.fetch_all(&self.read).await.map_err(db)? {
                out.push((
                    row.try_get(0).map_err(db)?,
                    subject_id(row.try_get(1).map_err(db)?)?,
                ));
            }
        }
        Ok(out)
    }

    async fn identity_facts(&self, subjects: &[SubjectId]) -> Result<Vec<IdentityFacts>> {
        let mut out = Vec::new();
        for chunk in subjects.chunks(CHUNK) {
            let list = places(chunk.len());
            let sql = format!(
                "SELECT id, user_id IS NOT NULL, country, region, time_zone FROM subjects \
                 WHERE id IN {list}"
            );
            let mut q = sqlx::query(&sql);
            for s in chunk {
                q = q.bind(i64::from(s.0));
            }
            let rows = q.fetch_all(&self.read).await.map_err(db)?;
            let sql = format!(
                "SELECT subject_id, kind, COUNT(*), SUM(verified) FROM identities \
                 WHERE subject_id IN {list} GROUP BY subject_id, kind"
            );
            let mut q = sqlx::query(&sql);
            for s in chunk {
                q = q.bind(i64::from(s.0));
            }
            let mut counts: HashMap<SubjectId, IdentifierCounts> = HashMap::new();
            let mut verified: HashSet<SubjectId> = HashSet::new();
            for row in q.fetch_all(&self.read).await.map_err(db)? {
                let subject = subject_id(row.try_get(0).map_err(db)?)?;
                let n: i64 = row.try_get(2).map_err(db)?;
                let v: i64 = row.try_get(3).map_err(db)?;
                let kind = kind_column(&crate::Cols(&row), 1)?;
                if v > 0 && matches!(kind, IdentifierKind::Email | IdentifierKind::Phone) {
                    verified.insert(subject);
                }
                counts
                    .entry(subject)
                    .or_default()
                    .add(kind, u16::try_from(n).unwrap_or(u16::MAX));
            }
            for row in rows {
                let subject = subject_id(row.try_get(0).map_err(db)?)?;
                let counts = counts.get(&subject).copied().unwrap_or_default();
                let has_user_id: bool = row.try_get(1).map_err(db)?;
                out.push(IdentityFacts {
                    subject,
                    identified: has_user_id || counts.get(IdentifierKind::UserId) > 0,
                    verified: verified.contains(&subject),
                    counts,
                    country: row.try_get(2).map_err(db)?,
                    region: row.try_get(3).map_err(db)?,
                    time_zone: row.try_get(4).map_err(db)?,
                });
            }
        }
        Ok(out)
    }

    async fn subject_keys(&self, subjects: &[SubjectId]) -> Result<Vec<(SubjectId, Vec<u8>)>> {
        let mut out = Vec::new();
        for chunk in subjects.chunks(CHUNK) {
            let sql = format!(
                "SELECT subject_id, wrapped FROM subject_keys WHERE subject_id IN {}",
                places(chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for s in chunk {
                q = q.bind(i64::from(s.0));
            }
            for row in q.fetch_all(&self.read).await.map_err(db)? {
                out.push((
                    subject_id(row.try_get(0).map_err(db)?)?,
                    row.try_get(1).map_err(db)?,
                ));
            }
        }
        Ok(out)
    }

    async fn write_identities(&self, write: IdentityWrite) -> Result<Vec<SubjectId>> {
        if write.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let ids = if write.new_subjects.is_empty() {
            Vec::new()
        } else {
            let next: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id) + 1, 0) FROM subjects")
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
            dense_ids(to_u32(next, "subject id")?, write.new_subjects.len())?
        };
        let id_of = |r: PlannedSubject| -> Result<SubjectId> {
            match r {
                PlannedSubject::Existing(id) => Ok(id),
                PlannedSubject::New(i) => usize::try_from(i)
                    .ok()
                    .and_then(|i| ids.get(i).copied())
                    .ok_or_else(|| {
                        StoreError::Database(format!("an identity write names new subject {i}"))
                    }),
            }
        };
        for (s, id) in write.new_subjects.iter().zip(&ids) {
            sqlx::query(
                "INSERT INTO subjects (id, user_id, country, region, time_zone, created_at) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(i64::from(id.0))
            .bind(s.user_id.as_deref())
            .bind(s.country.as_deref())
            .bind(s.region.as_deref())
            .bind(s.time_zone.as_deref())
            .bind(s.created_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| taken(e, "subject with user id"))?;
        }
        for (subject, wrapped) in &write.keys {
            sqlx::query(
                "INSERT INTO subject_keys (subject_id, wrapped, created_at) VALUES (?, ?, ?)",
            )
            .bind(i64::from(id_of(*subject)?.0))
            .bind(wrapped.as_slice())
            .bind(write.at)
            .execute(&mut *tx)
            .await
            .map_err(|e| taken(e, "subject data key"))?;
        }
        for (subject, user_id) in &write.user_ids {
            sqlx::query("UPDATE subjects SET user_id = ? WHERE id = ? AND user_id IS NULL")
                .bind(user_id.as_str())
                .bind(i64::from(subject.0))
                .execute(&mut *tx)
                .await
                .map_err(|e| taken(e, "subject with user id"))?;
        }
        for l in &write.locations {
            sqlx::query(
                "UPDATE subjects SET country = ?, region = ? WHERE id = ? AND country IS NULL",
            )
            .bind(l.country.as_deref())
            .bind(l.region.as_deref())
            .bind(i64::from(l.subject.0))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            sqlx::query("UPDATE subjects SET time_zone = ? WHERE id = ? AND time_zone IS NULL")
                .bind(l.time_zone.as_deref())
                .bind(i64::from(l.subject.0))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        // Identifiers first, then merges: an identifier attached to a subject that a later
        // message of the same request merges away moves with it, as if sent one by one.
        for a in &write.attach {
            sqlx::query(
                "INSERT INTO identities (hash, kind, subject_id, key_subject_id, sealed, \
                 created_at, verified) VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(a.hash.0.as_slice())
            .bind(a.kind.as_str())
            .bind(i64::from(id_of(a.subject)?.0))
            .bind(i64::from(id_of(a.key_subject)?.0))
            .bind(a.sealed.as_slice())
            .bind(write.at)
            .bind(i64::from(a.verified))
            .execute(&mut *tx)
            .await
            .map_err(|e| taken(e, "identity"))?;
        }
        for m in &write.merges {
            let into = i64::from(id_of(m.into)?.0);
            let from = i64::from(id_of(m.from)?.0);
            sqlx::query(
                "INSERT INTO merges (from_subject_id, into_subject_id, reason, at) \
                 VALUES (?, ?, ?, ?)",
            )
            .bind(from)
            .bind(into)
            .bind(m.reason.as_str())
            .bind(write.at)
            .execute(&mut *tx)
            .await
            .map_err(|e| taken(e, "merge"))?;
            // The merged subject's interactions were the survivor's: its last one counts.
            sqlx::query(
                "UPDATE subjects SET last_interaction_at = max(coalesce(last_interaction_at, \
                 f.at), f.at) FROM (SELECT last_interaction_at AS at FROM subjects WHERE id = ?1 \
                 AND last_interaction_at IS NOT NULL) AS f WHERE id = ?2",
            )
            .bind(from)
            .bind(into)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            // The identity log, with what the merge moves, so that it can be undone.
            let log_id: i64 = sqlx::query_scalar(
                "INSERT INTO identity_log (action, from_subject_id, into_subject_id, cause, \
                 key_id, at) VALUES ('merge', ?, ?, ?, ?, ?) RETURNING id",
            )
            .bind(from)
            .bind(into)
            .bind(m.reason.as_str())
            .bind(write.key_id.as_deref())
            .bind(write.at)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
            sqlx::query(
                "INSERT INTO identity_log_identities (log_id, hash) \
                 SELECT ?, hash FROM identities WHERE subject_id = ?",
            )
            .bind(log_id)
            .bind(from)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            sqlx::query(
                "INSERT INTO identity_log_traits (log_id, subject_id, key, value, category, \
                 collection_point, notice_id, notice_version, collected_at, source) \
                 SELECT ?, subject_id, key, value, category, collection_point, notice_id, \
                 notice_version, collected_at, source FROM traits WHERE subject_id = ?",
            )
            .bind(log_id)
            .bind(from)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            sqlx::query("UPDATE identities SET subject_id = ? WHERE subject_id = ?")
                .bind(into)
                .bind(from)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            // The survivor keeps its own trait where both have one, unless the merged one is
            // newer.
            sqlx::query(
                "INSERT INTO traits (subject_id, key, value, category, collection_point, \
                 notice_id, notice_version, collected_at, source) \
                 SELECT ?1, key, value, category, collection_point, notice_id, notice_version, \
                 collected_at, source FROM traits WHERE subject_id = ?2 AND true \
                 ON CONFLICT (subject_id, key) DO UPDATE SET value = excluded.value, \
                 category = excluded.category, collection_point = excluded.collection_point, \
                 notice_id = excluded.notice_id, notice_version = excluded.notice_version, \
                 collected_at = excluded.collected_at, source = excluded.source \
                 WHERE excluded.collected_at > traits.collected_at",
            )
            .bind(into)
            .bind(from)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            sqlx::query("DELETE FROM traits WHERE subject_id = ?")
                .bind(from)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            sqlx::query(&crate::erasure::lite(CARRY_SUPPRESSED))
                .bind(from)
                .bind(into)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        // A suppressed identifier collected again marks its holder (after the merges: the
        // subject that holds it now).
        for a in &write.attach {
            sqlx::query(&crate::erasure::lite(MARK_SUPPRESSED))
                .bind(write.at)
                .bind(a.hash.0.as_slice())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        for hash in &write.verify {
            sqlx::query("UPDATE identities SET verified = 1 WHERE hash = ?")
                .bind(hash.0.as_slice())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(ids)
    }

    async fn identities_of(&self, subject: SubjectId) -> Result<Vec<StoredIdentity>> {
        let rows = sqlx::query(
            "SELECT hash, kind, subject_id, key_subject_id, sealed, created_at, verified \
             FROM identities WHERE subject_id = ? ORDER BY kind, created_at, hash",
        )
        .bind(i64::from(subject.0))
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| {
                Ok(StoredIdentity {
                    hash: hash_column(&crate::Cols(row), 0)?,
                    kind: kind_column(&crate::Cols(row), 1)?,
                    subject: subject_id(row.try_get(2).map_err(db)?)?,
                    key_subject: subject_id(row.try_get(3).map_err(db)?)?,
                    sealed: row.try_get(4).map_err(db)?,
                    created_at: row.try_get(5).map_err(db)?,
                    verified: row.try_get::<i64, _>(6).map_err(db)? != 0,
                })
            })
            .collect()
    }

    async fn verified_identities(&self, hashes: &[IdentifierHash]) -> Result<Vec<IdentifierHash>> {
        let mut out = Vec::new();
        for chunk in hashes.chunks(CHUNK) {
            let sql = format!(
                "SELECT hash FROM identities WHERE verified = 1 AND hash IN {}",
                places(chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for h in chunk {
                q = q.bind(h.0.as_slice());
            }
            for row in q.fetch_all(&self.read).await.map_err(db)? {
                out.push(hash_column(&crate::Cols(&row), 0)?);
            }
        }
        Ok(out)
    }

    async fn survivors(&self, subjects: &[SubjectId]) -> Result<Vec<(SubjectId, SubjectId)>> {
        let mut out = Vec::new();
        for s in subjects {
            let last: Option<i64> = sqlx::query_scalar(
                "WITH RECURSIVE f(id, depth) AS (SELECT ?1, 0 UNION ALL \
                 SELECT merges.into_subject_id, f.depth + 1 FROM merges \
                 JOIN f ON merges.from_subject_id = f.id WHERE f.depth < 64) \
                 SELECT id FROM f WHERE depth > 0 ORDER BY depth DESC LIMIT 1",
            )
            .bind(i64::from(s.0))
            .fetch_optional(&self.read)
            .await
            .map_err(db)?;
            if let Some(last) = last {
                out.push((*s, subject_id(last)?));
            }
        }
        Ok(out)
    }

    async fn merges_page(
        &self,
        after: Option<SubjectId>,
        limit: u32,
    ) -> Result<Vec<(SubjectId, SubjectId)>> {
        let rows = sqlx::query(
            "SELECT from_subject_id, into_subject_id FROM merges WHERE from_subject_id > ? \
             ORDER BY from_subject_id LIMIT ?",
        )
        .bind(after.map_or(-1, |s| i64::from(s.0)))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| {
                Ok((
                    subject_id(row.try_get(0).map_err(db)?)?,
                    subject_id(row.try_get(1).map_err(db)?)?,
                ))
            })
            .collect()
    }

    async fn identity_log(&self, before: Option<i64>, limit: u32) -> Result<Vec<MergeEntry>> {
        let rows = sqlx::query(&format!(
            "{LOG_COLUMNS} WHERE id < ? ORDER BY id DESC LIMIT ?"
        ))
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter().map(|r| merge_row(&crate::Cols(r))).collect()
    }

    async fn undo_merge(
        &self,
        id: i64,
        key_id: Option<&str>,
        at: UnixMillis,
    ) -> Result<UndoneMerge> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let row = sqlx::query(&format!("{LOG_COLUMNS} WHERE id = ? AND action = 'merge'"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .ok_or_else(|| StoreError::NotFound {
                what: "merge",
                key: id.to_string(),
            })?;
        let merge = merge_row(&crate::Cols(&row))?;
        if merge.undone_at.is_some() {
            return Err(undo_refusal(&format!("{id} (already undone)")));
        }
        let from = i64::from(merge.from.0);
        let into = i64::from(merge.into.0);
        let later: Option<i64> =
            sqlx::query_scalar("SELECT into_subject_id FROM merges WHERE from_subject_id = ?")
                .bind(into)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
        if later.is_some() {
            return Err(undo_refusal(&format!(
                "{id} (subject {into} was merged away since; undo that merge first)"
            )));
        }
        sqlx::query("DELETE FROM merges WHERE from_subject_id = ? AND into_subject_id = ?")
            .bind(from)
            .bind(into)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let identifiers = sqlx::query(
            "UPDATE identities SET subject_id = ?1 WHERE subject_id = ?2 AND hash IN \
             (SELECT hash FROM identity_log_identities WHERE log_id = ?3)",
        )
        .bind(from)
        .bind(into)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        // The survivor keeps a trait it had, or got later; the copy the merge gave it goes
        // back to the restored subject.
        sqlx::query(
            "DELETE FROM traits WHERE subject_id = ?1 AND EXISTS (SELECT 1 FROM \
             identity_log_traits l WHERE l.log_id = ?2 AND l.key = traits.key \
             AND l.collected_at = traits.collected_at AND l.value = traits.value \
             AND l.source = traits.source)",
        )
        .bind(into)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let traits = sqlx::query(
            "INSERT INTO traits (subject_id, key, value, category, collection_point, \
             notice_id, notice_version, collected_at, source) \
             SELECT ?1, key, value, category, collection_point, notice_id, notice_version, \
             collected_at, source FROM identity_log_traits WHERE log_id = ?2 AND true \
             ON CONFLICT (subject_id, key) DO NOTHING",
        )
        .bind(from)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        sqlx::query("DELETE FROM identity_log_traits WHERE log_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query("UPDATE identity_log SET undone_at = ? WHERE id = ?")
            .bind(at)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let undo_id: i64 = sqlx::query_scalar(
            "INSERT INTO identity_log (action, from_subject_id, into_subject_id, cause, key_id, \
             at, undoes) VALUES ('undo', ?, ?, 'undo', ?, ?, ?) RETURNING id",
        )
        .bind(from)
        .bind(into)
        .bind(key_id)
        .bind(at)
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(UndoneMerge {
            entry: MergeEntry {
                id: undo_id,
                action: "undo".to_owned(),
                from: merge.from,
                into: merge.into,
                cause: "undo".to_owned(),
                key_id: key_id.map(str::to_owned),
                at,
                undone_at: None,
                undoes: Some(id),
            },
            identifiers,
            traits,
        })
    }

    async fn identity_log_of(&self, subjects: &[SubjectId]) -> Result<Vec<MergeEntry>> {
        let mut out = Vec::new();
        for chunk in subjects.chunks(CHUNK) {
            let sql = format!(
                "{LOG_COLUMNS} WHERE from_subject_id IN {} ORDER BY id",
                places(chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for s in chunk {
                q = q.bind(i64::from(s.0));
            }
            for row in q.fetch_all(&self.read).await.map_err(db)? {
                out.push(merge_row(&crate::Cols(&row))?);
            }
        }
        out.sort_by_key(|m| m.id);
        Ok(out)
    }

    async fn merged_into(&self, subject: SubjectId) -> Result<Vec<SubjectId>> {
        let ids: Vec<i64> = sqlx::query_scalar(&format!(
            "{MERGED_INTO} SELECT id FROM m WHERE id <> ?1 ORDER BY id"
        ))
        .bind(i64::from(subject.0))
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        ids.into_iter().map(subject_id).collect()
    }

    async fn write_events(&self, write: EventWrite) -> Result<()> {
        if write.events.is_empty() && write.traits.is_empty() {
            return Ok(());
        }
        self.events.submit(write).await
    }

    async fn events_of(
        &self,
        subject: SubjectId,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredEvent>> {
        let rows = sqlx::query(&format!(
            "{MERGED_INTO} SELECT e.id, e.source, e.message_id, e.subject_id, e.kind, e.name, \
             e.at, e.received_at, e.retain_until, c.consent, e.properties, e.context, e.extra \
             FROM events e JOIN event_consents c ON c.hash = e.consent_hash \
             WHERE e.subject_id IN (SELECT id FROM m) AND e.id > ?2 ORDER BY e.id LIMIT ?3"
        ))
        .bind(i64::from(subject.0))
        .bind(after.unwrap_or(0))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| {
                Ok(StoredEvent {
                    id: row.try_get(0).map_err(db)?,
                    event: NewEvent {
                        source: row.try_get(1).map_err(db)?,
                        message_id: row.try_get(2).map_err(db)?,
                        subject: subject_id(row.try_get(3).map_err(db)?)?,
                        kind: row.try_get(4).map_err(db)?,
                        name: row.try_get(5).map_err(db)?,
                        at: row.try_get(6).map_err(db)?,
                        received_at: row.try_get(7).map_err(db)?,
                        retain_until: row.try_get(8).map_err(db)?,
                        consent: row.try_get(9).map_err(db)?,
                        properties: row.try_get(10).map_err(db)?,
                        context: row.try_get(11).map_err(db)?,
                        extra: row.try_get(12).map_err(db)?,
                    },
                })
            })
            .collect()
    }

    async fn delete_expired_events(
        &self,
        now: UnixMillis,
        received_before: UnixMillis,
        limit: u32,
    ) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM events WHERE id IN (SELECT id FROM events \
             WHERE retain_until <= ?1 OR received_at < ?2 LIMIT ?3)",
        )
        .bind(now)
        .bind(received_before)
        .bind(i64::from(limit))
        .execute(&self.write)
        .await
        .map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn delete_expired_traits(&self, cutoffs: &TraitCutoffs) -> Result<DeletedTraits> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let mut rows: Vec<i64> = Vec::new();
        for (notice, before) in &cutoffs.by_notice {
            let done: Vec<i64> = sqlx::query_scalar(
                "DELETE FROM traits WHERE notice_id = ? AND collected_at < ? \
                 RETURNING subject_id",
            )
            .bind(notice.as_str())
            .bind(*before)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
            rows.extend(done);
        }
        let sql = if cutoffs.by_notice.is_empty() {
            "DELETE FROM traits WHERE collected_at < ? RETURNING subject_id".to_owned()
        } else {
            format!(
                "DELETE FROM traits WHERE notice_id NOT IN {} AND collected_at < ? \
                 RETURNING subject_id",
                places(cutoffs.by_notice.len())
            )
        };
        let mut q = sqlx::query_scalar::<_, i64>(&sql);
        for (notice, _) in &cutoffs.by_notice {
            q = q.bind(notice.as_str());
        }
        let done = q
            .bind(cutoffs.otherwise)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        rows.extend(done);
        // The copies a merge keeps for its undo expire with the traits they copy.
        for (notice, before) in &cutoffs.by_notice {
            sqlx::query("DELETE FROM identity_log_traits WHERE notice_id = ? AND collected_at < ?")
                .bind(notice.as_str())
                .bind(*before)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        let sql = if cutoffs.by_notice.is_empty() {
            "DELETE FROM identity_log_traits WHERE collected_at < ?".to_owned()
        } else {
            format!(
                "DELETE FROM identity_log_traits WHERE notice_id NOT IN {} AND collected_at < ?",
                places(cutoffs.by_notice.len())
            )
        };
        let mut q = sqlx::query(&sql);
        for (notice, _) in &cutoffs.by_notice {
            q = q.bind(notice.as_str());
        }
        q.bind(cutoffs.otherwise)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        let subjects = rows.into_iter().map(subject_id).collect::<Result<_>>()?;
        Ok(DeletedTraits::from_rows(subjects))
    }

    async fn set_key_collection_point(&self, key_id: &str, point: Option<&str>) -> Result<()> {
        let done = match point {
            Some(point) => {
                sqlx::query(
                    "INSERT INTO api_key_collection_points (key_id, collection_point) \
                     VALUES (?, ?) ON CONFLICT (key_id) DO UPDATE SET \
                     collection_point = excluded.collection_point",
                )
                .bind(key_id)
                .bind(point)
                .execute(&self.write)
                .await
            }
            None => {
                sqlx::query("DELETE FROM api_key_collection_points WHERE key_id = ?")
                    .bind(key_id)
                    .execute(&self.write)
                    .await
            }
        };
        match done {
            Err(sqlx::Error::Database(d)) if d.is_foreign_key_violation() => {
                Err(StoreError::NotFound {
                    what: "api key",
                    key: key_id.to_owned(),
                })
            }
            Err(e) => Err(db(e)),
            Ok(_) => Ok(()),
        }
    }

    async fn key_collection_point(&self, key_id: &str) -> Result<Option<String>> {
        sqlx::query_scalar(
            "SELECT collection_point FROM api_key_collection_points WHERE key_id = ?",
        )
        .bind(key_id)
        .fetch_optional(&self.read)
        .await
        .map_err(db)
    }

    async fn last_interactions(&self) -> Result<Vec<(SubjectId, UnixMillis)>> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT id, last_interaction_at FROM subjects \
             WHERE last_interaction_at IS NOT NULL ORDER BY id",
        )
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|(id, at)| Ok((subject_id(id)?, at)))
            .collect()
    }

    async fn last_interaction(&self, subject: SubjectId) -> Result<Option<UnixMillis>> {
        let at: Option<Option<i64>> =
            sqlx::query_scalar("SELECT last_interaction_at FROM subjects WHERE id = ?")
                .bind(i64::from(subject.0))
                .fetch_optional(&self.read)
                .await
                .map_err(db)?;
        Ok(at.flatten())
    }
}
