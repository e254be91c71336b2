//! Where the time comes from: the system clock in production, a fixed one in tests. Domain
//! code takes `now` as an input; handlers and workers read it from a `Clock`.

use kept_core::UnixMillis;
use std::sync::Arc;

/// Where handlers read the time from. The system clock in production; fixed in tests.
pub type Clock = Arc<dyn Fn() -> UnixMillis + Send + Sync>;

/// The current time from the system clock.
pub fn system_now() -> UnixMillis {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    UnixMillis::try_from(now.as_millis()).unwrap_or(UnixMillis::MAX)
}
