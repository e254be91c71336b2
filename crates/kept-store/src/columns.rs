//! Conversions between domain values and the plain columns both backends store them in, so the
//! two implementations cannot drift apart in how they read a row.

use crate::{Result, StoreError};
use kept_core::SubjectId;
use kept_core::ledger::{ChainHash, Checkpoint};
use kept_core::subject::{Frequency, Period, QuietHours};

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
