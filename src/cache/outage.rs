//! Knowing that Redis is down, so that calls fail at once rather than each waiting out its
//! own deadline: with Redis refusing connections or frozen, every request would otherwise
//! pay `redis.timeout_ms` per exchange (a balance read two of them) before its fallback.
//!
//! A failure that says Redis cannot be reached begins an outage; while it lasts, calls fail at
//! once, and one task of the cache's (not a request) asks Redis every [`PROBE_INTERVAL`]
//! until it answers, which ends the outage.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

use super::CacheError;

/// How often Redis is asked whether it is back during an outage.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(200);

pub struct Outage {
    /// Whether an outage is on: the one check a call makes while Redis is well.
    on: AtomicBool,
    /// What the last failure was, for the error of the calls that were not let through.
    cause: Mutex<String>,
    /// Counts the outages ended: whoever missed news from Redis meanwhile asks again.
    ended: watch::Sender<u64>,
}

impl Default for Outage {
    fn default() -> Outage {
        Outage {
            on: AtomicBool::new(false),
            cause: Mutex::new(String::new()),
            ended: watch::channel(0).0,
        }
    }
}

impl Outage {
    /// Lets a call through, or fails it at once with the outage's cause.
    pub fn admit(&self) -> Result<(), CacheError> {
        match self.on.load(Ordering::Acquire) {
            false => Ok(()),
            true => Err(CacheError::Unreachable(self.cause().clone())),
        }
    }

    /// Records how a call ended; true when its failure began an outage, whose probing the
    /// caller then starts.
    pub fn settle<T>(&self, result: &Result<T, CacheError>) -> bool {
        match result {
            Err(error) if error.is_unreachable() => {
                *self.cause() = error.to_string();
                !self.on.swap(true, Ordering::AcqRel)
            }
            Ok(_) | Err(_) => false,
        }
    }

    /// Ends the outage: Redis answered a probe.
    pub fn end(&self) {
        if self.on.swap(false, Ordering::AcqRel) {
            self.ended.send_modify(|count| *count += 1);
        }
    }

    /// Changes each time an outage ends.
    pub fn endings(&self) -> watch::Receiver<u64> {
        self.ended.subscribe()
    }

    fn cause(&self) -> std::sync::MutexGuard<'_, String> {
        self.cause
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timed_out() -> Result<(), CacheError> {
        Err(CacheError::Timeout(Duration::from_secs(1)))
    }

    #[test]
    fn a_failure_fails_the_next_calls_at_once_until_the_outage_ends() {
        let outage = Outage::default();
        assert!(outage.admit().is_ok());
        assert!(outage.settle(&timed_out()), "the first failure begins it");
        assert!(!outage.settle(&timed_out()), "one outage, probed once");
        assert!(matches!(
            outage.admit(),
            Err(CacheError::Unreachable(cause)) if cause.contains("did not answer")
        ));
        let endings = outage.endings();
        outage.end();
        assert!(outage.admit().is_ok());
        assert!(
            endings.has_changed().unwrap_or(false),
            "the end is announced"
        );
    }

    #[test]
    fn an_answer_from_redis_begins_no_outage() {
        let outage = Outage::default();
        let answered: Result<(), CacheError> = Err(CacheError::Corrupt(
            serde_json::from_str::<u8>("x").expect_err("not JSON"),
        ));
        assert!(!outage.settle(&answered));
        assert!(!outage.settle(&Ok(())));
        assert!(outage.admit().is_ok());
    }
}
