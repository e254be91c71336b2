//! Conversions between domain values and the plain columns both backends store them in, so the
//! two implementations cannot drift apart in how they read a row: a backend reads its driver's
//! row through [`Row`], and the row mappers here and beside each type (`outbox::delivery_row`,
//! `requests::erasure_row`, …) turn it into the domain's value. Only the SQL stays per dialect.

use crate::{ApiKeyRecord, LedgerRow, Result, Role, StoreError};
use kept_core::SubjectId;
use kept_core::ledger::{ChainHash, Checkpoint};
use kept_core::subject::{
    ChannelPreference, Contact, Frequency, Period, Provenance, QuietHours, Subject, Trait,
};

/// One row as a backend's driver read it, column by position, in the few types both databases
/// store (integers are 64-bit, booleans are SQLite integers or PostgreSQL booleans). Each
/// backend implements it once for its row type; a column of the wrong type is `Corrupt`.
pub trait Row {
    fn int(&self, i: usize) -> Result<i64>;
    fn int_opt(&self, i: usize) -> Result<Option<i64>>;
    fn text(&self, i: usize) -> Result<String>;
    fn text_opt(&self, i: usize) -> Result<Option<String>>;
    fn bytes(&self, i: usize) -> Result<Vec<u8>>;
    fn bytes_opt(&self, i: usize) -> Result<Option<Vec<u8>>>;
    fn flag(&self, i: usize) -> Result<bool>;
}

/// A sequence number as a signed 64-bit column.
pub fn to_i64(n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| StoreError::Database(format!("`{n}` is out of range")))
}

/// A stored count or sequence number, which is never negative.
pub fn to_u64(n: i64, what: &str) -> Result<u64> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("{what} `{n}` is negative")))
}

pub fn to_u32(n: i64, what: &str) -> Result<u32> {
    u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("{what} `{n}` is out of range")))
}

pub fn subject_id(n: i64) -> Result<SubjectId> {
    to_u32(n, "subject id").map(SubjectId)
}

/// `count` consecutive ids from `first`.
pub fn dense_ids(first: u32, count: usize) -> Result<Vec<SubjectId>> {
    (0..count)
        .map(|i| {
            u32::try_from(i)
                .ok()
                .and_then(|i| first.checked_add(i))
                .map(SubjectId)
                .ok_or_else(|| StoreError::Database("subject ids are exhausted".into()))
        })
        .collect()
}

/// A frequency cap from its two nullable columns.
pub fn frequency(max: Option<i64>, period: Option<&str>) -> Result<Option<Frequency>> {
    match (max, period) {
        (Some(max), Some(period)) => Ok(Some(Frequency {
            max: to_u32(max, "frequency")?,
            period: Period::parse(period).ok_or_else(|| {
                StoreError::Corrupt(format!("unknown frequency period `{period}`"))
            })?,
        })),
        _ => Ok(None),
    }
}

/// Quiet hours from their two nullable columns.
pub fn quiet_hours(start: Option<i64>, end: Option<i64>) -> Result<Option<QuietHours>> {
    let minute = |m: i64| {
        u16::try_from(m).map_err(|_| StoreError::Corrupt(format!("quiet hours minute `{m}`")))
    };
    match (start, end) {
        (Some(s), Some(e)) => Ok(Some(QuietHours {
            start_minute: minute(s)?,
            end_minute: minute(e)?,
        })),
        _ => Ok(None),
    }
}

/// A stored ledger subject column, which verify must be able to report even when it was
/// tampered to something that is not a subject id.
pub fn ledger_subject(seq: u64, subject: i64) -> Result<SubjectId> {
    u32::try_from(subject).map(SubjectId).map_err(|_| {
        StoreError::Corrupt(format!(
            "record {seq} has subject column `{subject}`, which is not a subject id"
        ))
    })
}

pub fn chain_hash(seq: u64, bytes: &[u8]) -> Result<kept_core::ledger::ChainHash> {
    kept_core::ledger::ChainHash::from_slice(bytes)
        .ok_or_else(|| StoreError::Corrupt(format!("record {seq} has a malformed hash")))
}

/// The columns of a `ledger_checkpoints` row, as read.
#[derive(Debug)]
pub struct CheckpointColumns {
    pub seq: i64,
    pub hash: Vec<u8>,
    pub at: i64,
    pub key_id: String,
    pub signature: Vec<u8>,
    /// `NULL` for a version 1 checkpoint.
    pub prev: Option<Vec<u8>>,
}

/// The SELECT list matching [`CheckpointColumns`], in order.
pub const CHECKPOINT_COLUMNS: &str = "seq, hash, at, key_id, signature, prev";

/// A checkpoint from its row; a malformed column is `Corrupt`, naming the checkpoint.
pub fn checkpoint(c: CheckpointColumns) -> Result<Checkpoint> {
    let seq = to_u64(c.seq, "checkpoint seq")?;
    let malformed = |what: &str| {
        StoreError::Corrupt(format!("checkpoint at record {seq} has a malformed {what}"))
    };
    Ok(Checkpoint {
        seq,
        hash: ChainHash::from_slice(&c.hash).ok_or_else(|| malformed("hash"))?,
        at: c.at,
        key_id: c.key_id,
        signature: c
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| malformed("signature"))?,
        prev: match c.prev {
            None => None,
            Some(p) => Some(ChainHash::from_slice(&p).ok_or_else(|| malformed("previous digest"))?),
        },
    })
}

/// A checkpoint from a row of [`CHECKPOINT_COLUMNS`].
pub fn checkpoint_row(row: &impl Row) -> Result<Checkpoint> {
    checkpoint(CheckpointColumns {
        seq: row.int(0)?,
        hash: row.bytes(1)?,
        at: row.int(2)?,
        key_id: row.text(3)?,
        signature: row.bytes(4)?,
        prev: row.bytes_opt(5)?,
    })
}

/// A ledger row from `seq, subject_id, bytes, hash, at`, exactly as stored.
pub fn ledger_row(row: &impl Row) -> Result<LedgerRow> {
    let seq = to_u64(row.int(0)?, "ledger seq")?;
    Ok(LedgerRow {
        seq,
        subject: ledger_subject(seq, row.int(1)?)?,
        bytes: row.bytes(2)?,
        hash: row.bytes(3)?,
        at: row.int(4)?,
    })
}

/// An API key from `id, hash, role, name, created_at, revoked_at`.
pub fn api_key_row(row: &impl Row) -> Result<ApiKeyRecord> {
    let id = row.text(0)?;
    let hash = row.bytes(1)?;
    let role = row.text(2)?;
    Ok(ApiKeyRecord {
        hash: hash
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::Corrupt(format!("api key `{id}` has a malformed hash")))?,
        role: Role::parse(&role).ok_or_else(|| {
            StoreError::Corrupt(format!("api key `{id}` has unknown role `{role}`"))
        })?,
        name: row.text(3)?,
        created_at: row.int(4)?,
        revoked_at: row.int_opt(5)?,
        id,
    })
}

/// A subject from `id, user_id, country, region, time_zone, created_at,
/// erasure_requested_at, suppressed, erased_at, erasure_suppressed_at`.
pub fn subject_row(row: &impl Row) -> Result<Subject> {
    Ok(Subject {
        id: subject_id(row.int(0)?)?,
        user_id: row.text_opt(1)?,
        country: row.text_opt(2)?,
        region: row.text_opt(3)?,
        time_zone: row.text_opt(4)?,
        created_at: row.int(5)?,
        erasure_requested_at: row.int_opt(6)?,
        suppressed: row.flag(7)?,
        erased_at: row.int_opt(8)?,
        erasure_suppressed_at: row.int_opt(9)?,
    })
}

/// A trait from `subject_id, key, value (JSON text), category, collection_point, notice_id,
/// notice_version, collected_at, source`.
pub fn trait_row(row: &impl Row) -> Result<Trait> {
    let subject = subject_id(row.int(0)?)?;
    let key = row.text(1)?;
    let value = row.text(2)?;
    Ok(Trait {
        value: serde_json::from_str(&value).map_err(|e| {
            StoreError::Corrupt(format!(
                "trait `{key}` of subject {subject} is not JSON: {e}"
            ))
        })?,
        subject,
        key,
        category: row.text(3)?,
        provenance: Provenance {
            collection_point: row.text(4)?,
            notice_id: row.text(5)?,
            notice_version: to_u32(row.int(6)?, "notice version")?,
            collected_at: row.int(7)?,
            source: row.text(8)?,
        },
    })
}

/// A channel preference from `subject_id, channel, frequency_max, frequency_period,
/// quiet_start, quiet_end, updated_at`.
pub fn preference_row(row: &impl Row) -> Result<ChannelPreference> {
    Ok(ChannelPreference {
        subject: subject_id(row.int(0)?)?,
        channel: row.text(1)?,
        frequency: frequency(row.int_opt(2)?, row.text_opt(3)?.as_deref())?,
        quiet_hours: quiet_hours(row.int_opt(4)?, row.int_opt(5)?)?,
        updated_at: row.int(6)?,
    })
}

/// A contact from `subject_id, channel, purpose, topic, at`.
pub fn contact_row(row: &impl Row) -> Result<Contact> {
    Ok(Contact {
        subject: subject_id(row.int(0)?)?,
        channel: row.text(1)?,
        purpose: row.text(2)?,
        topic: row.text_opt(3)?,
        at: row.int(4)?,
    })
}
