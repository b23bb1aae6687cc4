//! Kafka: topics, the producer, partition ownership, consumers and the message codec. No
//! business rules live here.

pub mod broker;
pub mod codec;
pub mod consumer;
pub mod expiry;
pub mod health;
pub mod lag;
pub mod layout;
pub mod lease;
pub mod outcomes;
pub mod owed;
pub mod partitioner;
pub mod producer;
pub mod reader;
pub mod relay;
pub mod resume;
pub mod worker;

use std::time::Duration;

/// How long a retry loop waits after `failures` consecutive failures: `step` doubled per
/// failure (twice `step` after the first), never more than `max`. Every retry loop of the
/// worker waits by it.
pub fn backoff(failures: u32, step: Duration, max: Duration) -> Duration {
    step.saturating_mul(1u32 << failures.min(16)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the wait doubles from twice the step and stops at the cap, whatever the count.
    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let step = Duration::from_millis(50);
        let max = Duration::from_secs(5);
        let waits: Vec<u128> = (1..=8)
            .map(|failures| backoff(failures, step, max).as_millis())
            .collect();
        assert_eq!(waits, vec![100, 200, 400, 800, 1_600, 3_200, 5_000, 5_000]);
        assert_eq!(backoff(u32::MAX, step, max), max);
        assert_eq!(backoff(0, step, max), step);
    }
}
