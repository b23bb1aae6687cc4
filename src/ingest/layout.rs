//! The guard on the operations topic's partition count. A wallet's partition is
//! murmur2(walletId) mod the count, so a count changed on a live topic moves wallets to other
//! partitions while their older operations still wait in the old ones, and two workers may
//! then apply one wallet's operations out of order. `wallet migrate` records the count the
//! topic has once it is ready, and nothing produces to the topic under another count.

use deadpool_postgres::GenericClient;

use crate::clock;
use crate::ledger::store::{self, StoreError};

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "topic {topic} has {found} partitions, but its wallets were routed over {recorded} \
         when it was first used: a changed count moves wallets to other partitions while \
         their older operations still wait in the old ones. Refusing to produce to it; to \
         change the count, drain the topic with `wallet work` and move to a new one (see \
         Partitions in the README)"
    )]
    Changed {
        topic: String,
        recorded: i32,
        found: i32,
    },
    #[error("no partition count is recorded for topic {topic}; run `wallet migrate`")]
    Unrecorded { topic: String },
}

/// Whether `topic`, found with `found` partitions, keeps the count it was `recorded` with.
pub fn check(topic: &str, recorded: Option<i32>, found: i32) -> Result<(), LayoutError> {
    match recorded {
        Some(recorded) if recorded == found => Ok(()),
        Some(recorded) => Err(LayoutError::Changed {
            topic: topic.to_owned(),
            recorded,
            found,
        }),
        None => Err(LayoutError::Unrecorded {
            topic: topic.to_owned(),
        }),
    }
}

/// For `wallet migrate`, once the topic is ready: records `found` unless a count is recorded,
/// and checks it against the recorded one.
pub async fn record(client: &impl GenericClient, topic: &str, found: i32) -> anyhow::Result<()> {
    let recorded = store::record_partitions(client, topic, found, clock::now())
        .await
        .map_err(|error| unreadable(topic, &error))?;
    check(topic, Some(recorded), found)?;
    Ok(())
}

/// For a producer: checks `found` against the count `wallet migrate` recorded.
pub async fn require(client: &impl GenericClient, topic: &str, found: i32) -> anyhow::Result<()> {
    let recorded = store::recorded_partitions(client, topic)
        .await
        .map_err(|error| unreadable(topic, &error))?;
    check(topic, recorded, found)?;
    Ok(())
}

fn unreadable(topic: &str, error: &StoreError) -> anyhow::Error {
    anyhow::anyhow!(
        "reading the recorded partition count of topic {topic} (`wallet migrate` creates its \
         table): {}",
        error.describe()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves only the recorded count passes, that the refusal names both counts, and that a
    /// topic with no recorded count is refused too.
    #[test]
    fn only_the_recorded_count_passes() {
        assert_eq!(check("ops", Some(8), 8), Ok(()));
        let changed = check("ops", Some(8), 12).unwrap_err();
        let message = changed.to_string();
        assert!(message.contains("topic ops has 12 partitions"), "{message}");
        assert!(message.contains("routed over 8"), "{message}");
        assert!(
            check("ops", Some(8), 4).is_err(),
            "fewer partitions move wallets too"
        );
        assert_eq!(
            check("ops", None, 8),
            Err(LayoutError::Unrecorded {
                topic: "ops".to_owned()
            })
        );
    }
}
