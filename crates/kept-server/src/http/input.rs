//! The limits on client input: the range a client-given time may take (a fact that happened,
//! or the time a decision is asked for), and the length and characters of text that reaches
//! the append-only ledger. One place, so that every endpoint and the CLI refuse the same
//! things with the same words, and the OpenAPI limits match.

use crate::http::error::ApiError;
use kept_core::UnixMillis;

/// The earliest time a client may give: 2000-01-01T00:00:00Z. Nothing Kept stores predates it,
/// and a time before it (`i64::MIN`) is a client bug, not a fact to keep.
pub const EARLIEST: UnixMillis = 946_684_800_000;

/// How far ahead of the server's clock a time that already happened may be (clocks differ a
/// little).
pub const CLOCK_SKEW: UnixMillis = 5 * 60 * 1000;

/// How far ahead a decision may be asked for (`at`), for a scheduled send: the index holds
/// contacts of the last month, enough to count a frequency cap up to then.
pub const MAX_AHEAD: UnixMillis = 30 * 24 * 60 * 60 * 1000;

/// The time a decision is asked for (`at`), checked against `now`: at most [`MAX_AHEAD`]
/// ahead; up to [`CLOCK_SKEW`] behind (the caller's clock running behind) counts as now.
/// Further back is a 422 naming `field` (built only then): the index knows the present, not
/// the past, so an answer for an earlier time would not be true.
pub fn scheduled_time(
    at: UnixMillis,
    now: UnixMillis,
    field: impl Fn() -> String,
) -> Result<UnixMillis, ApiError> {
    if at > now.saturating_add(MAX_AHEAD) {
        let field = field();
        return Err(ApiError::invalid_field(
            field.clone(),
            format!("`{field}` is more than 30 days ahead"),
        ));
    }
    if at < now.saturating_sub(CLOCK_SKEW) {
        let field = field();
        return Err(ApiError::invalid_field(
            field.clone(),
            format!(
                "`{field}` is in the past: a decision is for now or a time up to 30 days ahead"
            ),
        ));
    }
    Ok(at.max(now))
}

/// A time the client says something happened at: from [`EARLIEST`] to `now` plus
/// [`CLOCK_SKEW`]; anything else is a 422 naming `field`.
pub fn past_time(field: &str, at: UnixMillis, now: UnixMillis) -> Result<UnixMillis, ApiError> {
    if at < EARLIEST {
        return Err(ApiError::invalid_field(
            field,
            format!("`{field}` must be at or after 2000-01-01 ({EARLIEST} ms since the epoch)"),
        ));
    }
    if at > now.saturating_add(CLOCK_SKEW) {
        return Err(ApiError::invalid_field(
            field,
            format!("`{field}` is in the future"),
        ));
    }
    Ok(at)
}

/// Longest `source` of a consent record, in characters.
pub const SOURCE_MAX: usize = 100;
/// Longest evidence `reference` (a request, form or message id), in characters.
pub const REFERENCE_MAX: usize = 200;
/// Longest evidence `user_agent`, in characters.
pub const USER_AGENT_MAX: usize = 512;
/// Longest evidence hash (`ip_hash`, `text_hash`), in characters: room for a hex SHA-512.
pub const HASH_MAX: usize = 128;

/// Text a client sends that the ledger will keep forever: at most `max` characters and no
/// control characters (NUL, newlines, escapes), or a 422 naming `field`.
pub fn ledger_text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    let length = value.chars().count();
    if length > max {
        return Err(ApiError::invalid_field(
            field,
            format!("`{field}` is {length} characters long; at most {max} are allowed"),
        ));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(ApiError::invalid_field(
            field,
            format!(
                "`{field}` holds the control character U+{:04X}; it is not allowed",
                u32::from(c)
            ),
        ));
    }
    Ok(())
}

/// [`ledger_text`] for an optional field.
pub fn ledger_text_opt(field: &str, value: Option<&str>, max: usize) -> Result<(), ApiError> {
    value.map_or(Ok(()), |v| ledger_text(field, v, max))
}

/// The same limits applied without refusing, for text the client did not choose to send
/// (a browser's `User-Agent`, a message id an SDK made up): control characters are dropped and
/// the rest cut to `max` characters. Refusing would lose the consent it is evidence for.
pub fn ledger_text_lossy(value: &str, max: usize) -> String {
    value
        .chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_outside_the_range_are_refused_with_the_field() {
        let now = 1_780_000_000_000;
        for bad in [
            i64::MIN,
            -1,
            0,
            EARLIEST - 1,
            now + CLOCK_SKEW + 1,
            i64::MAX,
        ] {
            let err = past_time("at", bad, now).unwrap_err();
            assert_eq!(err.code(), "request.invalid_field");
            assert_eq!(err.body().error.field.as_deref(), Some("at"));
        }
        for good in [EARLIEST, now, now + CLOCK_SKEW] {
            assert_eq!(past_time("at", good, now).unwrap(), good);
        }
    }

    #[test]
    fn ledger_text_refuses_long_text_and_control_characters() {
        assert!(ledger_text("source", "api", SOURCE_MAX).is_ok());
        assert!(ledger_text("source", &"é".repeat(SOURCE_MAX), SOURCE_MAX).is_ok());
        assert!(ledger_text("source", &"a".repeat(SOURCE_MAX + 1), SOURCE_MAX).is_err());
        for bad in ["a\0b", "a\nb", "\u{1b}[31m", "\u{7f}"] {
            let err = ledger_text("source", bad, SOURCE_MAX).unwrap_err();
            assert_eq!(err.body().error.field.as_deref(), Some("source"));
        }
        assert_eq!(ledger_text_lossy("Moz\0illa\n/5.0", 6), "Mozill");
    }
}
