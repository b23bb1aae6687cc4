//! What a worker's partitions are waiting for. A partition that keeps retrying a batch or its
//! start (the database is full, read-only, unreachable) is not dead, but an operator must know:
//! readiness reports the worker degraded, with the cause, until the batch is applied or the
//! partition starts. A partition the worker refuses to apply from its stored position waits
//! for an operator: the worker is not ready until it applies again. A hold expiry that
//! cannot produce until an operator acts degrades the worker too.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Clone, Default)]
pub struct WorkerHealth {
    waiting: Arc<Mutex<BTreeMap<i32, Waiting>>>,
    /// Why the hold expiry produces nothing until an operator acts, while it does not.
    expiry_stopped: Arc<Mutex<Option<String>>>,
}

/// What one partition waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Waiting {
    /// Another attempt at a batch that failed with this cause.
    Retry(String),
    /// An operator: the stored position was refused for this reason.
    Operator(String),
}

impl fmt::Display for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Waiting::Retry(cause) => write!(f, "retrying: {cause}"),
            Waiting::Operator(reason) => write!(f, "refused: {reason}"),
        }
    }
}

impl WorkerHealth {
    /// The partition's batch, or its start, failed with `cause` and waits for another attempt.
    pub fn retrying(&self, partition: i32, cause: String) {
        self.partitions().insert(partition, Waiting::Retry(cause));
    }

    /// The partition is not applied from its stored position, for `reason`.
    pub fn refused(&self, partition: i32, reason: String) {
        self.partitions()
            .insert(partition, Waiting::Operator(reason));
    }

    /// The partition starts or applies again (or is no longer this worker's).
    pub fn recovered(&self, partition: i32) {
        self.partitions().remove(&partition);
    }

    /// The hold expiry cannot produce for `reason`, which only an operator can end: held
    /// funds stay held meanwhile. Answers whether the reason is new, so it is logged once.
    pub fn expiry_stopped(&self, reason: String) -> bool {
        let mut stopped = self.expiry();
        let new = stopped.as_deref() != Some(reason.as_str());
        *stopped = Some(reason);
        new
    }

    /// The hold expiry produces again.
    pub fn expiry_resumed(&self) {
        *self.expiry() = None;
    }

    /// None while every partition applies and holds expire; otherwise what each waiting
    /// partition waits for, and why holds do not expire.
    pub fn degraded(&self) -> Option<String> {
        let mut causes: Vec<String> = self
            .partitions()
            .iter()
            .map(|(partition, waiting)| format!("partition {partition} {waiting}"))
            .collect();
        if let Some(reason) = self.expiry().as_ref() {
            causes.push(format!("hold expiry stopped: {reason}"));
        }
        match causes.is_empty() {
            true => None,
            false => Some(causes.join("; ")),
        }
    }

    /// Whether some partition waits for an operator.
    pub fn any_refused(&self) -> bool {
        self.partitions()
            .values()
            .any(|waiting| matches!(waiting, Waiting::Operator(_)))
    }

    fn partitions(&self) -> std::sync::MutexGuard<'_, BTreeMap<i32, Waiting>> {
        // The map holds plain values: a panic elsewhere cannot leave it half-written.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn expiry(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.expiry_stopped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::WorkerHealth;

    /// Proves a retrying partition makes the worker degraded until it recovers.
    #[test]
    fn degraded_while_a_partition_retries() {
        let health = WorkerHealth::default();
        assert_eq!(health.degraded(), None);
        health.retrying(3, "resources: ERROR 53100: disk full".to_owned());
        let cause = health.degraded().expect("degraded");
        assert!(
            cause.contains("partition 3") && cause.contains("53100"),
            "{cause}"
        );
        assert!(!health.any_refused());
        health.recovered(3);
        assert_eq!(health.degraded(), None);
    }

    /// Proves a refused partition is named with its reason until it starts from an accepted
    /// position.
    #[test]
    fn refused_until_the_partition_starts() {
        let health = WorkerHealth::default();
        health.refused(
            1,
            "stored position 5 is beyond the partition's end".to_owned(),
        );
        assert!(health.any_refused());
        let cause = health.degraded().expect("degraded");
        assert!(
            cause.contains("partition 1 refused: stored position 5"),
            "{cause}"
        );
        health.recovered(1);
        assert!(!health.any_refused());
        assert_eq!(health.degraded(), None);
    }

    /// Proves a stopped hold expiry degrades the worker, is new only once per reason, and
    /// clears when it produces again.
    #[test]
    fn degraded_while_holds_cannot_expire() {
        let health = WorkerHealth::default();
        assert!(health.expiry_stopped("topic ops has 3 partitions".to_owned()));
        assert!(!health.expiry_stopped("topic ops has 3 partitions".to_owned()));
        let cause = health.degraded().expect("degraded");
        assert!(cause.contains("hold expiry stopped: topic ops"), "{cause}");
        assert!(!health.any_refused());
        health.expiry_resumed();
        assert_eq!(health.degraded(), None);
    }
}
