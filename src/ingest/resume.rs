//! Whether a partition may resume at its stored position: checked against what the broker
//! holds whenever a worker starts reading the partition. A money system never skips records
//! nor jumps ahead by itself: a position outside the partition (records deleted before they
//! were applied, a recreated or truncated topic), or one whose record below is not one
//! PostgreSQL applied (a recreated topic that already grew past it), stops that partition
//! until an operator moves its position with `wallet reposition`.

use std::fmt;
use std::time::Duration;

use anyhow::Context;
use chrono::SecondsFormat;
use deadpool_postgres::GenericClient;
use rskafka::client::partition::{OffsetAt, PartitionClient};
use rskafka::client::Client as KafkaClient;

use super::{broker, codec};
use crate::clock;
use crate::config::KafkaConfig;
use crate::ledger::store;

/// The bytes asked for when reading the one record below the position; the broker answers
/// with the whole record batch holding it, however large.
const RECORD_BELOW_BYTES: i32 = 64 * 1024;

/// The offsets the broker holds of a partition: from its log start up to (excluding) its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub log_start: i64,
    pub end: i64,
}

/// Why a worker does not apply a partition from its stored position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "stored position {position} is below the partition's log start (the broker holds \
         {}..{}): records {position}..{} were deleted before they were applied",
        held.log_start, held.end, held.log_start
    )]
    Deleted { position: i64, held: Held },
    #[error(
        "stored position {position} is beyond the partition's end (the broker holds {}..{}): \
         the topic was recreated or its log truncated",
        held.log_start, held.end
    )]
    BeyondEnd { position: i64, held: Held },
    #[error(
        "the record at offset {} below stored position {position} is not one PostgreSQL \
         applied (the broker holds {}..{}): the topic was recreated",
        position - 1, held.log_start, held.end
    )]
    Foreign { position: i64, held: Held },
}

impl Refusal {
    pub fn position(&self) -> i64 {
        match self {
            Refusal::Deleted { position, .. }
            | Refusal::BeyondEnd { position, .. }
            | Refusal::Foreign { position, .. } => *position,
        }
    }

    /// Whether the records at the stored position may be other ones than those PostgreSQL
    /// kept: their dead letters are then of a topic that no longer exists.
    pub fn recreated(&self) -> bool {
        match self {
            Refusal::Deleted { .. } => false,
            Refusal::BeyondEnd { .. } | Refusal::Foreign { .. } => true,
        }
    }

    pub fn held(&self) -> Held {
        match self {
            Refusal::Deleted { held, .. }
            | Refusal::BeyondEnd { held, .. }
            | Refusal::Foreign { held, .. } => *held,
        }
    }
}

/// Whether `position` lies within what the broker holds; the end itself is a partition
/// applied up to its last record.
pub fn check_range(position: i64, held: Held) -> Result<(), Refusal> {
    if position < held.log_start {
        Err(Refusal::Deleted { position, held })
    } else if position > held.end {
        Err(Refusal::BeyondEnd { position, held })
    } else {
        Ok(())
    }
}

/// The offset of the last record `position` says was applied, when the broker still holds it.
pub fn record_below(position: i64, held: Held) -> Option<i64> {
    (position > held.log_start && position <= held.end).then(|| position - 1)
}

/// What the broker holds of `partition` now.
pub async fn held(partition: &PartitionClient, deadline: Duration) -> anyhow::Result<Held> {
    let offset = |at| async move {
        tokio::time::timeout(deadline, partition.get_offset(at))
            .await
            .context("listing the partition's offsets timed out")?
            .context("listing the partition's offsets")
    };
    Ok(Held {
        log_start: offset(OffsetAt::Earliest).await?,
        end: offset(OffsetAt::Latest).await?,
    })
}

/// Checks the stored `position` of `partition` against what the broker `held`, and the record
/// just below it against what PostgreSQL applied. Err when the check itself failed (broker or
/// database unreachable); Ok(Err) when the partition must not be applied from `position`.
pub async fn check(
    partition: &PartitionClient,
    held: Held,
    db: &impl GenericClient,
    topic: &str,
    position: i64,
    deadline: Duration,
) -> anyhow::Result<Result<(), Refusal>> {
    if let Err(refusal) = check_range(position, held) {
        return Ok(Err(refusal));
    }
    let Some(offset) = record_below(position, held) else {
        return Ok(Ok(()));
    };
    let fetch = partition.fetch_records(offset, 1..RECORD_BELOW_BYTES, 0);
    let (records, _) = tokio::time::timeout(deadline, fetch)
        .await
        .context("reading the record below the stored position timed out")?
        .context("reading the record below the stored position")?;
    let Some(record) = records.into_iter().find(|record| record.offset == offset) else {
        tracing::warn!(
            topic,
            partition = partition.partition(),
            offset,
            "no record at the offset below the stored position (a compacted topic?); only its range is checked"
        );
        return Ok(Ok(()));
    };
    let payload = record.record.value.as_deref();
    let id = payload
        .and_then(|value| codec::decode(value).ok())
        .map(|operation| operation.scoped_id());
    let applied = store::record_applied(
        db,
        topic,
        partition.partition(),
        offset,
        payload,
        id.as_ref(),
    )
    .await
    .map_err(|error| anyhow::anyhow!("{}", error.describe()))
    .context("looking up the record below the stored position")?;
    Ok(match applied {
        true => Ok(()),
        false => Err(Refusal::Foreign { position, held }),
    })
}

/// A stored position `wallet reposition` moved.
#[derive(Debug)]
pub struct Repositioned {
    pub topic: String,
    pub partition: i32,
    pub refusal: Refusal,
    pub to: i64,
    /// The topic name the partition's dead letters of the recreated topic were moved to.
    pub retired_as: Option<String>,
}

impl fmt::Display for Repositioned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "partition {} of {}: {}",
            self.partition, self.topic, self.refusal
        )?;
        write!(
            f,
            "moved its stored position from {} to {}, the partition's log start; workers apply \
             every record from there (those PostgreSQL holds already are dropped as duplicates)",
            self.refusal.position(),
            self.to
        )?;
        if let Refusal::Deleted { position, held } = self.refusal {
            write!(
                f,
                "\nrecords {position}..{} are gone and were never applied",
                held.log_start
            )?;
        }
        if let Some(retired) = &self.retired_as {
            write!(
                f,
                "\nits dead letters at offset {} and beyond are of the topic before it was \
                 recreated; they are kept as dead letters of \"{retired}\"",
                self.to
            )?;
        }
        Ok(())
    }
}

/// `wallet reposition`: moves the stored position of a partition the workers refuse to the
/// partition's log start. A position the workers accept is never moved.
pub async fn reposition(
    db: &impl GenericClient,
    kafka: &KafkaClient,
    config: &KafkaConfig,
    partition: i32,
) -> anyhow::Result<Repositioned> {
    let topic = config.operations_topic.clone();
    let partition_client = broker::partition(kafka, config, &topic, partition).await?;
    let describe = |error: store::StoreError| anyhow::anyhow!("{}", error.describe());
    let position = store::stored_position(db, &topic, partition)
        .await
        .map_err(describe)?;
    let deadline = config.request_timeout();
    let held = held(&partition_client, deadline).await?;
    let checked = check(&partition_client, held, db, &topic, position, deadline).await?;
    let Err(refusal) = checked else {
        anyhow::bail!(
            "partition {partition} of {topic} resumes at its stored position {position}, which \
             the broker holds and PostgreSQL applied up to: nothing to move"
        );
    };
    let to = refusal.held().log_start;
    let retire_as = refusal.recreated().then(|| {
        format!(
            "{topic} (before reposition at {})",
            clock::now().to_rfc3339_opts(SecondsFormat::Millis, true)
        )
    });
    let moved = store::move_position(db, &topic, partition, position, to, retire_as.as_deref())
        .await
        .map_err(describe)?;
    anyhow::ensure!(
        moved,
        "the stored position of partition {partition} moved meanwhile; run this again"
    );
    Ok(Repositioned {
        topic,
        partition,
        refusal,
        to,
        retired_as: retire_as,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELD: Held = Held {
        log_start: 10,
        end: 20,
    };

    /// Proves a position is accepted from the log start up to the end, and refused below or
    /// beyond, naming the broker's range.
    #[test]
    fn positions_outside_the_partition_are_refused() {
        for position in [10, 15, 20] {
            assert_eq!(check_range(position, HELD), Ok(()), "{position}");
        }
        assert_eq!(
            check_range(9, HELD),
            Err(Refusal::Deleted {
                position: 9,
                held: HELD
            })
        );
        assert_eq!(
            check_range(21, HELD),
            Err(Refusal::BeyondEnd {
                position: 21,
                held: HELD
            })
        );
        let recreated = Held {
            log_start: 0,
            end: 0,
        };
        let refusal = check_range(50_000, recreated).expect_err("beyond an empty partition");
        assert_eq!(refusal.position(), 50_000);
        assert_eq!(refusal.held(), recreated);
        assert!(refusal.to_string().contains("50000"), "{refusal}");
    }

    /// Proves the record below is checked only where the broker still holds it: not at the
    /// log start (retention deleted it, or nothing was applied yet) nor outside the range.
    #[test]
    fn the_record_below_is_one_the_broker_holds() {
        assert_eq!(record_below(10, HELD), None);
        assert_eq!(record_below(11, HELD), Some(10));
        assert_eq!(record_below(20, HELD), Some(19));
        assert_eq!(record_below(21, HELD), None);
        assert_eq!(record_below(5, HELD), None);
        let empty = Held {
            log_start: 0,
            end: 0,
        };
        assert_eq!(record_below(0, empty), None);
    }
}
