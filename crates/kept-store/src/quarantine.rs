//! The quarantine's types: collected messages rejected one by one, kept sealed for a week so
//! that nothing a client sent is lost silently, listed oldest first by the admin role.

use kept_core::UnixMillis;
use serde::{Deserialize, Serialize};

/// Entries one `quarantined` call returns at most.
pub const MAX_QUARANTINE_PAGE: u32 = 1000;

/// One rejected message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineEntry {
    /// Assigned by the store, increasing in write order; ignored when writing.
    pub id: u64,
    pub received_at: UnixMillis,
    /// The public id and the name of the write key that sent it.
    pub key_id: String,
    pub key_name: String,
    /// Its position in its request (0 for a single call).
    pub index: u32,
    /// Why it was rejected: the stable error code, the field to blame, the message.
    pub code: String,
    pub path: String,
    pub message: String,
    /// The message as sent, sealed by the caller (nonce ‖ ciphertext ‖ tag): the store never
    /// holds it readable.
    pub sealed: Vec<u8>,
}

/// An entry from `id, received_at, key_id, key_name, position, code, path, message, sealed`.
pub fn entry_row(row: &impl crate::columns::Row) -> crate::Result<QuarantineEntry> {
    Ok(QuarantineEntry {
        id: crate::columns::to_u64(row.int(0)?, "quarantine id")?,
        received_at: row.int(1)?,
        key_id: row.text(2)?,
        key_name: row.text(3)?,
        index: crate::columns::to_u32(row.int(4)?, "quarantine position")?,
        code: row.text(5)?,
        path: row.text(6)?,
        message: row.text(7)?,
        sealed: row.bytes(8)?,
    })
}
