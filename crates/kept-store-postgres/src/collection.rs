//! The collection API's storage on PostgreSQL: identities and merges are written in one
//! transaction per resolution round; events and profile traits go through their own group
//! committer, each batch one `UNNEST` insert.

use super::{PostgresStore, db};
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
use sqlx::postgres::{PgConnection, PgPool};
use std::collections::{HashMap, HashSet};

/// Rows the event committer puts in one transaction at most.
const MAX_EVENT_BATCH_ROWS: usize = 20_000;

/// Starts the committer that writes events and traits.
pub(crate) fn start_event_committer(pool: PgPool) -> GroupCommit<EventWriter> {
    GroupCommit::start(EventWriter { pool }, MAX_EVENT_BATCH_ROWS)
}

pub(crate) struct EventWriter {
    pool: PgPool,
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
        let mut tx = self.pool.begin().await.map_err(db)?;
        if !events.is_empty() {
            insert_events(&mut tx, &events).await?;
        }
        if !traits.is_empty() {
            upsert_traits(&mut tx, &traits).await?;
        }
        record_interactions(&mut tx, &interactions(&events)).await?;
        tx.commit().await.map_err(db)?;
        Ok(vec![(); count])
    }

    fn weight(item: &EventWrite) -> usize {
        item.rows()
    }
}

/// Moves each subject's last interaction forward to the time given, never back, in one
/// statement (subjects in id order).
pub(crate) async fn record_interactions(
    conn: &mut PgConnection,
    interactions: &[(SubjectId, UnixMillis)],
) -> Result<()> {
    if interactions.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = interactions.iter().map(|(s, _)| i64::from(s.0)).collect();
    let ats: Vec<i64> = interactions.iter().map(|(_, at)| *at).collect();
    sqlx::query(
        "UPDATE subjects AS s \
         SET last_interaction_at = GREATEST(COALESCE(s.last_interaction_at, t.at), t.at) \
         FROM UNNEST($1::BIGINT[], $2::BIGINT[]) AS t(id, at) WHERE s.id = t.id",
    )
    .bind(&ids)
    .bind(&ats)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(())
}

async fn insert_events(conn: &mut PgConnection, events: &[NewEvent]) -> Result<()> {
    let (keys, distinct) = consent_keys(events);
    let hashes: Vec<&[u8]> = distinct.iter().map(|(k, _)| k.as_slice()).collect();
    let consents: Vec<&str> = distinct.iter().map(|(_, c)| *c).collect();
    sqlx::query(
        "INSERT INTO event_consents (hash, consent) \
         SELECT * FROM UNNEST($1::BYTEA[], $2::TEXT[]) ON CONFLICT (hash) DO NOTHING",
    )
    .bind(&hashes)
    .bind(&consents)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    let col = |f: fn(&NewEvent) -> &str| -> Vec<&str> { events.iter().map(f).collect() };
    let names: Vec<Option<&str>> = events.iter().map(|e| e.name.as_deref()).collect();
    let subjects: Vec<i64> = events.iter().map(|e| i64::from(e.subject.0)).collect();
    let ats: Vec<i64> = events.iter().map(|e| e.at).collect();
    let received: Vec<i64> = events.iter().map(|e| e.received_at).collect();
    let retain: Vec<i64> = events.iter().map(|e| e.retain_until).collect();
    let consent_keys: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
    sqlx::query(
        "INSERT INTO events (source, message_id, subject_id, kind, name, at, received_at, \
         retain_until, consent_hash, properties, context, extra) \
         SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::TEXT[], $5::TEXT[], \
         $6::BIGINT[], $7::BIGINT[], $8::BIGINT[], $9::BYTEA[], $10::TEXT[], $11::TEXT[], \
         $12::TEXT[]) \
         ON CONFLICT (source, message_id) DO NOTHING",
    )
    .bind(col(|e| &e.source))
    .bind(col(|e| &e.message_id))
    .bind(&subjects)
    .bind(col(|e| &e.kind))
    .bind(&names)
    .bind(&ats)
    .bind(&received)
    .bind(&retain)
    .bind(&consent_keys)
    .bind(col(|e| &e.properties))
    .bind(col(|e| &e.context))
    .bind(col(|e| &e.extra))
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(())
}

pub(crate) async fn upsert_traits(conn: &mut PgConnection, traits: &[Trait]) -> Result<()> {
    let values: Vec<String> = traits
        .iter()
        .map(|t| serde_json::to_string(&t.value))
        .collect::<Result<_, _>>()
        .map_err(|e| StoreError::Database(format!("cannot encode a trait value: {e}")))?;
    let col = |f: fn(&Trait) -> &str| -> Vec<&str> { traits.iter().map(f).collect() };
    let subjects: Vec<i64> = traits.iter().map(|t| i64::from(t.subject.0)).collect();
    let versions: Vec<i64> = traits
        .iter()
        .map(|t| i64::from(t.provenance.notice_version))
        .collect();
    let collected: Vec<i64> = traits.iter().map(|t| t.provenance.collected_at).collect();
    sqlx::query(
        "INSERT INTO traits (subject_id, key, value, category, collection_point, notice_id, \
         notice_version, collected_at, source) \
         SELECT s, k, v::JSONB, c, p, n, nv, ca, src FROM UNNEST($1::BIGINT[], $2::TEXT[], \
         $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::BIGINT[], $8::BIGINT[], \
         $9::TEXT[]) AS t(s, k, v, c, p, n, nv, ca, src) \
         ON CONFLICT (subject_id, key) DO UPDATE SET value = excluded.value, \
         category = excluded.category, collection_point = excluded.collection_point, \
         notice_id = excluded.notice_id, notice_version = excluded.notice_version, \
         collected_at = excluded.collected_at, source = excluded.source",
    )
    .bind(&subjects)
    .bind(col(|t| &t.key))
    .bind(&values)
    .bind(col(|t| &t.category))
    .bind(col(|t| &t.provenance.collection_point))
    .bind(col(|t| &t.provenance.notice_id))
    .bind(&versions)
    .bind(&collected)
    .bind(col(|t| &t.provenance.source))
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(())
}

/// A unique violation inside an identity write: something was taken meanwhile.
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

fn id_column(subjects: &[SubjectId]) -> Vec<i64> {
    subjects.iter().map(|s| i64::from(s.0)).collect()
}

const LOG_COLUMNS: &str = "SELECT id, action, from_subject_id, into_subject_id, cause, key_id, \
     at, undone_at, undoes FROM identity_log";

const MERGED_INTO: &str = "WITH RECURSIVE m(id) AS (SELECT $1::BIGINT UNION \
     SELECT merges.from_subject_id FROM merges JOIN m ON merges.into_subject_id = m.id)";

#[async_trait]
impl CollectionStore for PostgresStore {
    async fn find_identities(
        &self,
        hashes: &[IdentifierHash],
    ) -> Result<Vec<(IdentifierHash, SubjectId)>> {
        let list: Vec<&[u8]> = hashes.iter().map(|h| h.0.as_slice()).collect();
        let rows = sqlx::query("SELECT hash, subject_id FROM identities WHERE hash = ANY($1)")
            .bind(&list)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|row| {
                Ok((
                    hash_column(&crate::Cols(row), 0)?,
                    subject_id(row.try_get(1).map_err(db)?)?,
                ))
            })
            .collect()
    }

    async fn subjects_by_user_ids(&self, user_ids: &[String]) -> Result<Vec<(String, SubjectId)>> {
        let rows = sqlx::query("SELECT user_id, id FROM subjects WHERE user_id = ANY($1)")
            .bind(user_ids)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get(0).map_err(db)?,
                    subject_id(row.try_get(1).map_err(db)?)?,
                ))
            })
            .collect()
    }

    async fn identity_facts(&self, subjects: &[SubjectId]) -> Result<Vec<IdentityFacts>> {
        let ids = id_column(subjects);
        let rows = sqlx::query(
            "SELECT id, user_id IS NOT NULL, country, region, time_zone FROM subjects \
             WHERE id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let count_rows = sqlx::query(
            "SELECT subject_id, kind, COUNT(*), BOOL_OR(verified) FROM identities \
             WHERE subject_id = ANY($1) GROUP BY subject_id, kind",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut counts: HashMap<SubjectId, IdentifierCounts> = HashMap::new();
        let mut verified: HashSet<SubjectId> = HashSet::new();
        for row in &count_rows {
            let subject = subject_id(row.try_get(0).map_err(db)?)?;
            let n: i64 = row.try_get(2).map_err(db)?;
            let v: bool = row.try_get(3).map_err(db)?;
            let kind = kind_column(&crate::Cols(row), 1)?;
            if v && matches!(kind, IdentifierKind::Email | IdentifierKind::Phone) {
                verified.insert(subject);
            }
            counts
                .entry(subject)
                .or_default()
                .add(kind, u16::try_from(n).unwrap_or(u16::MAX));
        }
        rows.iter()
            .map(|row| {
                let subject = subject_id(row.try_get(0).map_err(db)?)?;
                let counts = counts.get(&subject).copied().unwrap_or_default();
                let has_user_id: bool = row.try_get(1).map_err(db)?;
                Ok(IdentityFacts {
                    subject,
                    identified: has_user_id || counts.get(IdentifierKind::UserId) > 0,
                    verified: verified.contains(&subject),
                    counts,
                    country: row.try_get(2).map_err(db)?,
                    region: row.try_get(3).map_err(db)?,
                    time_zone: row.try_get(4).map_err(db)?,
                })
            })
            .collect()
    }

    async fn subject_keys(&self, subjects: &[SubjectId]) -> Result<Vec<(SubjectId, Vec<u8>)>> {
        let rows =
            sqlx::query("SELECT subject_id, wrapped FROM subject_keys WHERE subject_id = ANY($1)")
                .bind(id_column(subjects))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        rows.iter()
            .map(|row| {
                Ok((
                    subject_id(row.try_get(0).map_err(db)?)?,
                    row.try_get(1).map_err(db)?,
                ))
            })
            .collect()
    }

    async fn write_identities(&self, write: IdentityWrite) -> Result<Vec<SubjectId>> {
        if write.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await.map_err(db)?;
        let ids = if write.new_subjects.is_empty() {
            Vec::new()
        } else {
            let count = i64::try_from(write.new_subjects.len())
                .map_err(|_| StoreError::Database("too many subjects in one write".into()))?;
            // The row lock orders concurrent writers; a rollback gives the ids back.
            let first: i64 = sqlx::query_scalar(
                "UPDATE subject_next_id SET next = next + $1 WHERE id = 1 RETURNING next - $1",
            )
            .bind(count)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
            dense_ids(to_u32(first, "subject id")?, write.new_subjects.len())?
        };
        let id_of = |r: PlannedSubject| -> Result<i64> {
            match r {
                PlannedSubject::Existing(id) => Ok(i64::from(id.0)),
                PlannedSubject::New(i) => usize::try_from(i)
                    .ok()
                    .and_then(|i| ids.get(i))
                    .map(|id| i64::from(id.0))
                    .ok_or_else(|| {
                        StoreError::Database(format!("an identity write names new subject {i}"))
                    }),
            }
        };
        for (s, id) in write.new_subjects.iter().zip(&ids) {
            sqlx::query(
                "INSERT INTO subjects (id, user_id, country, region, time_zone, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
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
                "INSERT INTO subject_keys (subject_id, wrapped, created_at) VALUES ($1, $2, $3)",
            )
            .bind(id_of(*subject)?)
            .bind(wrapped.as_slice())
            .bind(write.at)
            .execute(&mut *tx)
            .await
            .map_err(|e| taken(e, "subject data key"))?;
        }
        for (subject, user_id) in &write.user_ids {
            sqlx::query("UPDATE subjects SET user_id = $1 WHERE id = $2 AND user_id IS NULL")
                .bind(user_id.as_str())
                .bind(i64::from(subject.0))
                .execute(&mut *tx)
                .await
                .map_err(|e| taken(e, "subject with user id"))?;
        }
        for l in &write.locations {
            sqlx::query(
                "UPDATE subjects SET country = $1, region = $2 WHERE id = $3 AND country IS NULL",
            )
            .bind(l.country.as_deref())
            .bind(l.region.as_deref())
            .bind(i64::from(l.subject.0))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            sqlx::query("UPDATE subjects SET time_zone = $1 WHERE id = $2 AND time_zone IS NULL")
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
                 created_at, verified) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(a.hash.0.as_slice())
            .bind(a.kind.as_str())
            .bind(id_of(a.subject)?)
            .bind(id_of(a.key_subject)?)
            .bind(a.sealed.as_slice())
            .bind(write.at)
            .bind(a.verified)
            .execute(&mut *tx)
            .await
            .map_err(|e| taken(e, "identity"))?;
        }
        for m in &write.merges {
            let into = id_of(m.into)?;
            let from = id_of(m.from)?;
            sqlx::query(
                "INSERT INTO merges (from_subject_id, into_subject_id, reason, at) \
                 VALUES ($1, $2, $3, $4)",
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
                "UPDATE subjects s SET last_interaction_at = GREATEST(s.last_interaction_at, \
                 f.last_interaction_at) FROM subjects f \
                 WHERE s.id = $2 AND f.id = $1 AND f.last_interaction_at IS NOT NULL",
            )
            .bind(from)
            .bind(into)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            // The identity log, with what the merge moves, so that it can be undone.
            let log_id: i64 = sqlx::query_scalar(
                "INSERT INTO identity_log (action, from_subject_id, into_subject_id, cause, \
                 key_id, at) VALUES ('merge', $1, $2, $3, $4, $5) RETURNING id",
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
                 SELECT $1, hash FROM identities WHERE subject_id = $2",
            )
            .bind(log_id)
            .bind(from)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            sqlx::query(
                "INSERT INTO identity_log_traits (log_id, subject_id, key, value, category, \
                 collection_point, notice_id, notice_version, collected_at, source) \
                 SELECT $1, subject_id, key, value, category, collection_point, notice_id, \
                 notice_version, collected_at, source FROM traits WHERE subject_id = $2",
            )
            .bind(log_id)
            .bind(from)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            sqlx::query("UPDATE identities SET subject_id = $1 WHERE subject_id = $2")
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
                 SELECT $1, key, value, category, collection_point, notice_id, notice_version, \
                 collected_at, source FROM traits WHERE subject_id = $2 \
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
            sqlx::query("DELETE FROM traits WHERE subject_id = $1")
                .bind(from)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            sqlx::query(CARRY_SUPPRESSED)
                .bind(from)
                .bind(into)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        // A suppressed identifier collected again marks its holder (after the merges: the
        // subject that holds it now).
        for a in &write.attach {
            sqlx::query(MARK_SUPPRESSED)
                .bind(write.at)
                .bind(a.hash.0.as_slice())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        if !write.verify.is_empty() {
            let list: Vec<&[u8]> = write.verify.iter().map(|h| h.0.as_slice()).collect();
            sqlx::query("UPDATE identities SET verified = TRUE WHERE hash = ANY($1)")
                .bind(&list)
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
             FROM identities WHERE subject_id = $1 ORDER BY kind, created_at, hash",
        )
        .bind(i64::from(subject.0))
        .fetch_all(&self.pool)
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
                    verified: row.try_get(6).map_err(db)?,
                })
            })
            .collect()
    }

    async fn verified_identities(&self, hashes: &[IdentifierHash]) -> Result<Vec<IdentifierHash>> {
        let list: Vec<&[u8]> = hashes.iter().map(|h| h.0.as_slice()).collect();
        let rows = sqlx::query("SELECT hash FROM identities WHERE verified AND hash = ANY($1)")
            .bind(&list)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|row| hash_column(&crate::Cols(row), 0))
            .collect()
    }

    async fn survivors(&self, subjects: &[SubjectId]) -> Result<Vec<(SubjectId, SubjectId)>> {
        let mut out = Vec::new();
        for s in subjects {
            let last: Option<i64> = sqlx::query_scalar(
                "WITH RECURSIVE f(id, depth) AS (SELECT $1::BIGINT, 0 UNION ALL \
                 SELECT merges.into_subject_id, f.depth + 1 FROM merges \
                 JOIN f ON merges.from_subject_id = f.id WHERE f.depth < 64) \
                 SELECT id FROM f WHERE depth > 0 ORDER BY depth DESC LIMIT 1",
            )
            .bind(i64::from(s.0))
            .fetch_optional(&self.pool)
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
            "SELECT from_subject_id, into_subject_id FROM merges WHERE from_subject_id > $1 \
             ORDER BY from_subject_id LIMIT $2",
        )
        .bind(after.map_or(-1, |s| i64::from(s.0)))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
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
            "{LOG_COLUMNS} WHERE id < $1 ORDER BY id DESC LIMIT $2"
        ))
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
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
        let mut tx = self.pool.begin().await.map_err(db)?;
        let row = sqlx::query(&format!(
            "{LOG_COLUMNS} WHERE id = $1 AND action = 'merge' FOR UPDATE"
        ))
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
        let later: Option<i64> = sqlx::query_scalar(
            "SELECT into_subject_id FROM merges WHERE from_subject_id = $1 FOR UPDATE",
        )
        .bind(into)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        if later.is_some() {
            return Err(undo_refusal(&format!(
                "{id} (subject {into} was merged away since; undo that merge first)"
            )));
        }
        sqlx::query("DELETE FROM merges WHERE from_subject_id = $1 AND into_subject_id = $2")
            .bind(from)
            .bind(into)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let identifiers = sqlx::query(
            "UPDATE identities SET subject_id = $1 WHERE subject_id = $2 AND hash IN \
             (SELECT hash FROM identity_log_identities WHERE log_id = $3)",
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
            "DELETE FROM traits t USING identity_log_traits l WHERE t.subject_id = $1 \
             AND l.log_id = $2 AND l.key = t.key AND l.collected_at = t.collected_at \
             AND l.value = t.value AND l.source = t.source",
        )
        .bind(into)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let traits = sqlx::query(
            "INSERT INTO traits (subject_id, key, value, category, collection_point, \
             notice_id, notice_version, collected_at, source) \
             SELECT $1, key, value, category, collection_point, notice_id, notice_version, \
             collected_at, source FROM identity_log_traits WHERE log_id = $2 \
             ON CONFLICT (subject_id, key) DO NOTHING",
        )
        .bind(from)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        sqlx::query("DELETE FROM identity_log_traits WHERE log_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query("UPDATE identity_log SET undone_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let undo_id: i64 = sqlx::query_scalar(
            "INSERT INTO identity_log (action, from_subject_id, into_subject_id, cause, key_id, \
             at, undoes) VALUES ('undo', $1, $2, 'undo', $3, $4, $5) RETURNING id",
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
        let rows = sqlx::query(&format!(
            "{LOG_COLUMNS} WHERE from_subject_id = ANY($1) ORDER BY id"
        ))
        .bind(id_column(subjects))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(|r| merge_row(&crate::Cols(r))).collect()
    }

    async fn merged_into(&self, subject: SubjectId) -> Result<Vec<SubjectId>> {
        let ids: Vec<i64> = sqlx::query_scalar(&format!(
            "{MERGED_INTO} SELECT id FROM m WHERE id <> $1 ORDER BY id"
        ))
        .bind(i64::from(subject.0))
        .fetch_all(&self.pool)
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
             WHERE e.subject_id IN (SELECT id FROM m) AND e.id > $2 ORDER BY e.id LIMIT $3"
        ))
        .bind(i64::from(subject.0))
        .bind(after.unwrap_or(0))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
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
             WHERE retain_until <= $1 OR received_at < $2 LIMIT $3)",
        )
        .bind(now)
        .bind(received_before)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn delete_expired_traits(&self, cutoffs: &TraitCutoffs) -> Result<DeletedTraits> {
        let notices: Vec<&str> = cutoffs.by_notice.iter().map(|(n, _)| n.as_str()).collect();
        let befores: Vec<i64> = cutoffs.by_notice.iter().map(|(_, b)| *b).collect();
        let mut tx = self.pool.begin().await.map_err(db)?;
        let mut rows: Vec<i64> = sqlx::query_scalar(
            "DELETE FROM traits t USING UNNEST($1::TEXT[], $2::BIGINT[]) AS c(notice, before) \
             WHERE t.notice_id = c.notice AND t.collected_at < c.before \
             RETURNING t.subject_id",
        )
        .bind(&notices)
        .bind(&befores)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let rest: Vec<i64> = sqlx::query_scalar(
            "DELETE FROM traits WHERE NOT (notice_id = ANY($1)) AND collected_at < $2 \
             RETURNING subject_id",
        )
        .bind(&notices)
        .bind(cutoffs.otherwise)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        // The copies a merge keeps for its undo expire with the traits they copy.
        sqlx::query(
            "DELETE FROM identity_log_traits t USING UNNEST($1::TEXT[], $2::BIGINT[]) \
             AS c(notice, before) WHERE t.notice_id = c.notice AND t.collected_at < c.before",
        )
        .bind(&notices)
        .bind(&befores)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query(
            "DELETE FROM identity_log_traits WHERE NOT (notice_id = ANY($1)) \
             AND collected_at < $2",
        )
        .bind(&notices)
        .bind(cutoffs.otherwise)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        rows.extend(rest);
        let subjects = rows.into_iter().map(subject_id).collect::<Result<_>>()?;
        Ok(DeletedTraits::from_rows(subjects))
    }

    async fn set_key_collection_point(&self, key_id: &str, point: Option<&str>) -> Result<()> {
        let done = match point {
            Some(point) => {
                sqlx::query(
                    "INSERT INTO api_key_collection_points (key_id, collection_point) \
                     VALUES ($1, $2) ON CONFLICT (key_id) DO UPDATE SET \
                     collection_point = excluded.collection_point",
                )
                .bind(key_id)
                .bind(point)
                .execute(&self.pool)
                .await
            }
            None => {
                sqlx::query("DELETE FROM api_key_collection_points WHERE key_id = $1")
                    .bind(key_id)
                    .execute(&self.pool)
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
            "SELECT collection_point FROM api_key_collection_points WHERE key_id = $1",
        )
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)
    }

    async fn last_interactions(&self) -> Result<Vec<(SubjectId, UnixMillis)>> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT id, last_interaction_at FROM subjects \
             WHERE last_interaction_at IS NOT NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|(id, at)| Ok((subject_id(id)?, at)))
            .collect()
    }

    async fn last_interaction(&self, subject: SubjectId) -> Result<Option<UnixMillis>> {
        let at: Option<Option<i64>> =
            sqlx::query_scalar("SELECT last_interaction_at FROM subjects WHERE id = $1")
                .bind(i64::from(subject.0))
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        Ok(at.flatten())
    }
}
