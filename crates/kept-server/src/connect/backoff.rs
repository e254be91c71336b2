//! When to try a failed delivery again: exponential back-off with jitter, capped, and a
//! destination's own `Retry-After` honoured within the cap.

use std::time::Duration;

/// How retries are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failed attempt, before jitter.
    pub first: Duration,
    /// No delay is longer than this.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            first: Duration::from_secs(5),
            max: Duration::from_secs(60 * 60),
        }
    }
}

impl Backoff {
    /// The delay after `failed` attempts (1 for the first failure). `jitter` in `[0, 1]` scales
    /// it between half and all of the exponential delay, so that deliveries that failed
    /// together (a destination that was down) do not all come back at the same instant.
    pub fn delay(&self, failed: u32, jitter: f64) -> Duration {
        let doublings = failed.saturating_sub(1).min(32);
        let exponential = self
            .first
            .checked_mul(1u32 << doublings.min(31))
            .unwrap_or(self.max)
            .min(self.max);
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            1.0
        };
        exponential.mul_f64(0.5 + jitter / 2.0)
    }

    /// The delay after `failed` attempts when the destination asked for `retry_after`: never
    /// sooner than it asked, never later than the cap.
    pub fn delay_with(&self, failed: u32, jitter: f64, retry_after: Option<Duration>) -> Duration {
        let delay = self.delay(failed, jitter);
        match retry_after {
            Some(asked) => delay.max(asked).min(self.max),
            None => delay,
        }
    }
}

/// A `Retry-After` header in seconds (the HTTP-date form is not worth a date parser here: it
/// falls back to the back-off).
pub fn retry_after(value: Option<&str>) -> Option<Duration> {
    value?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_first_delay_up_to_the_cap() {
        let b = Backoff {
            first: Duration::from_secs(5),
            max: Duration::from_secs(60),
        };
        let full: Vec<u64> = (1..=6).map(|n| b.delay(n, 1.0).as_secs()).collect();
        assert_eq!(full, [5, 10, 20, 40, 60, 60]);
        assert_eq!(b.delay(1, 0.0), Duration::from_millis(2_500));
        assert_eq!(b.delay(3, 0.5), Duration::from_secs(15));
        // Huge attempt counts and odd jitter stay within bounds.
        assert_eq!(b.delay(u32::MAX, 1.0), Duration::from_secs(60));
        assert_eq!(b.delay(2, f64::NAN), Duration::from_secs(10));
        assert_eq!(b.delay(2, 7.0), Duration::from_secs(10));
        assert_eq!(b.delay(0, 1.0), Duration::from_secs(5));
    }

    #[test]
    fn retry_after_is_honoured_within_the_cap() {
        let b = Backoff {
            first: Duration::from_secs(5),
            max: Duration::from_secs(60),
        };
        let asked = retry_after(Some(" 30 "));
        assert_eq!(asked, Some(Duration::from_secs(30)));
        assert_eq!(b.delay_with(1, 1.0, asked), Duration::from_secs(30));
        assert_eq!(
            b.delay_with(1, 1.0, retry_after(Some("3600"))),
            Duration::from_secs(60)
        );
        assert_eq!(
            b.delay_with(4, 1.0, retry_after(Some("1"))),
            Duration::from_secs(40)
        );
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after(None), None);
    }
}
