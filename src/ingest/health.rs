//! What a worker's partitions are waiting for. A partition that keeps retrying a batch (the
//! database is full, read-only, unreachable) is not dead, but an operator must know: readiness
//! reports the worker degraded, with the cause, until the batch is applied.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Clone, Default)]
pub struct WorkerHealth {
    retrying: Arc<Mutex<BTreeMap<i32, String>>>,
}

impl WorkerHealth {
    /// The partition's batch failed with `cause` and waits for another attempt.
    pub fn retrying(&self, partition: i32, cause: String) {
        self.partitions().insert(partition, cause);
    }

    /// The partition applies again (or is no longer this worker's).
    pub fn recovered(&self, partition: i32) {
        self.partitions().remove(&partition);
    }

    /// None while every partition applies; otherwise what each retrying one waits for.
    pub fn degraded(&self) -> Option<String> {
        let partitions = self.partitions();
        if partitions.is_empty() {
            return None;
        }
        let causes: Vec<String> = partitions
            .iter()
            .map(|(partition, cause)| format!("partition {partition} retrying: {cause}"))
            .collect();
        Some(causes.join("; "))
    }

    fn partitions(&self) -> std::sync::MutexGuard<'_, BTreeMap<i32, String>> {
        // The map holds plain strings: a panic elsewhere cannot leave it half-written.
        self.retrying.lock().unwrap_or_else(PoisonError::into_inner)
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
        health.recovered(3);
        assert_eq!(health.degraded(), None);
    }
}
