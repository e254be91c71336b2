//! The preference center's signed tokens (the format is `kept_core::token`), with the server's
//! part: the random id each new token carries.

pub use kept_core::token::{Claims, Kind, TokenError, TokenKeys, Topic};

use kept_core::{SubjectId, UnixMillis};
use rand::RngCore;

/// 128 random bits in hex.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// New claims of `kind` for `subject`, with a fresh random id.
pub fn fresh(kind: Kind, subject: SubjectId, expires: UnixMillis) -> Claims {
    Claims::new(kind, subject, expires, random_id())
}
