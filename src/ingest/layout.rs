//! The guard on an operations topic's partition count. A wallet's partition is
//! murmur2(walletId) mod the count, so partitions added to a live topic move wallets to other
//! partitions while their older operations still wait in the old ones, and two workers may
//! then apply one wallet's operations out of order. The count a topic was first used with is
//! recorded in PostgreSQL, and nothing produces to the topic under another count.

use deadpool_postgres::GenericClient;

use crate::clock;
use crate::ledger::store;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "topic {topic} has {found} partitions, but its wallets were routed over {recorded} when it \
     was first used: partitions added to a live topic move wallets to other partitions while \
     their older operations still wait in the old ones. Refusing to produce to it; to change \
     the count, drain the topic and move to a new one (see Partitions in the README)"
)]
pub struct PartitionsChanged {
    pub topic: String,
    pub recorded: i32,
    pub found: i32,
}

/// Whether `topic`, found with `found` partitions, keeps the count it was `recorded` with.
pub fn check(topic: &str, recorded: i32, found: i32) -> Result<(), PartitionsChanged> {
    match recorded == found {
        true => Ok(()),
        false => Err(PartitionsChanged {
            topic: topic.to_owned(),
            recorded,
            found,
        }),
    }
}

/// Checks `found` against the count recorded for `topic`, recording it when the topic is
/// used for the first time.
pub async fn hold(client: &impl GenericClient, topic: &str, found: i32) -> anyhow::Result<()> {
    let recorded = store::recorded_partitions(client, topic, found, clock::now())
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "reading the recorded partition count of topic {topic} (`wallet migrate` \
                 creates its table): {}",
                error.describe()
            )
        })?;
    check(topic, recorded, found)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves only the recorded count passes, and that the refusal names both counts.
    #[test]
    fn only_the_recorded_count_passes() {
        assert_eq!(check("ops", 8, 8), Ok(()));
        let changed = check("ops", 8, 12).unwrap_err();
        assert_eq!((changed.recorded, changed.found), (8, 12));
        let message = changed.to_string();
        assert!(message.contains("topic ops has 12 partitions"), "{message}");
        assert!(message.contains("routed over 8"), "{message}");
        assert!(
            check("ops", 8, 4).is_err(),
            "fewer partitions move wallets too"
        );
    }
}
