//! Token buckets that slow down sign-in requests (the preference center's and the console's),
//! per email address and per client address, in memory (a restart forgets them; that is fine
//! for a brake on mail floods and password guessing). Time is an input.

use kept_core::UnixMillis;
use std::collections::HashMap;
use std::sync::Mutex;

/// Buckets kept at most; beyond, the full (idle) ones are dropped first.
const MAX_BUCKETS: usize = 100_000;

/// A bucket's shape: `burst` requests at once, then one every `refill_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub burst: u32,
    pub refill_ms: UnixMillis,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: UnixMillis,
}

/// Buckets of one rate, by key.
#[derive(Debug)]
pub struct Limiter {
    rate: Rate,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Limiter {
    pub fn new(rate: Rate) -> Limiter {
        Limiter {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refilled(&self, bucket: Bucket, now: UnixMillis) -> f64 {
        let elapsed = now.saturating_sub(bucket.at).max(0) as f64;
        let refill = elapsed / self.rate.refill_ms.max(1) as f64;
        (bucket.tokens + refill).min(f64::from(self.rate.burst))
    }

    /// Takes one token for `key` at `now`; `false` when the bucket is empty.
    pub fn take(&self, key: &str, now: UnixMillis) -> bool {
        let Ok(mut buckets) = self.buckets.lock() else {
            return false;
        };
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            let full = f64::from(self.rate.burst);
            buckets.retain(|_, b| self.refilled(*b, now) < full);
            if buckets.len() >= MAX_BUCKETS {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: f64::from(self.rate.burst),
            at: now,
        });
        let tokens = self.refilled(*bucket, now);
        if tokens < 1.0 {
            *bucket = Bucket { tokens, at: now };
            return false;
        }
        *bucket = Bucket {
            tokens: tokens - 1.0,
            at: now,
        };
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_empties_and_refills_with_time() {
        let limiter = Limiter::new(Rate {
            burst: 2,
            refill_ms: 1_000,
        });
        assert!(limiter.take("a", 0));
        assert!(limiter.take("a", 0));
        assert!(!limiter.take("a", 10));
        assert!(limiter.take("b", 10), "another key has its own bucket");
        assert!(limiter.take("a", 1_010));
        assert!(!limiter.take("a", 1_020));
    }
}
