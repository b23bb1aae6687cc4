//! Consumer lag: per partition of the operations topic, the broker's end offset against the
//! stored position and who holds the partition's lease, plus the outbox backlog. `wallet lag`
//! prints it; the `wallet_consumer_lag` metric uses the same arithmetic.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::Context;
use chrono::{DateTime, Utc};
use rskafka::client::partition::OffsetAt;
use rskafka::client::Client as KafkaClient;
use serde::Serialize;
use tokio_postgres::Client;

use super::{broker, lease};
use crate::config::KafkaConfig;
use crate::ledger::{audit, store};

/// Records on the broker that the stored position has not reached.
pub fn lag(end_offset: i64, position: i64) -> i64 {
    (end_offset - position).max(0)
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionLag {
    pub partition: i32,
    pub end_offset: i64,
    pub position: i64,
    pub lag: i64,
    /// The worker holding the partition's lease, if any.
    pub owner: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LagReport {
    pub topic: String,
    pub partitions: Vec<PartitionLag>,
    pub total_lag: i64,
    pub outbox_rows: i64,
    /// Seconds since the oldest waiting event was written.
    pub outbox_age_s: Option<f64>,
}

/// Each partition's end offset (the offset the next record will get) on the broker.
pub async fn end_offsets(
    client: &KafkaClient,
    config: &KafkaConfig,
    topic: &str,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let count = broker::partition_count(client, config, topic).await?;
    let mut ends = BTreeMap::new();
    for partition in 0..count {
        let partition_client = broker::partition(client, config, topic, partition).await?;
        let end = tokio::time::timeout(
            config.request_timeout(),
            partition_client.get_offset(OffsetAt::Latest),
        )
        .await
        .with_context(|| format!("listing the end of partition {partition} timed out"))?
        .with_context(|| format!("listing the end of partition {partition}"))?;
        ends.insert(partition, end);
    }
    Ok(ends)
}

pub async fn report(
    db: &Client,
    kafka: &KafkaClient,
    config: &KafkaConfig,
    now: DateTime<Utc>,
) -> anyhow::Result<LagReport> {
    let topic = config.operations_topic.clone();
    let ends = end_offsets(kafka, config, &topic).await?;
    let stored: BTreeMap<i32, i64> = audit::positions(db)
        .await?
        .into_iter()
        .filter(|position| position.topic == topic)
        .map(|position| (position.partition, position.next_offset))
        .collect();
    let mut owners = lease::owners(db).await?;
    let partitions: Vec<PartitionLag> = ends
        .into_iter()
        .map(|(partition, end_offset)| {
            // A partition no batch has touched yet is read from its start.
            let position = stored.get(&partition).copied().unwrap_or(0);
            PartitionLag {
                partition,
                end_offset,
                position,
                lag: lag(end_offset, position),
                owner: owners.remove(&partition),
            }
        })
        .collect();
    let (outbox_rows, oldest) = store::outbox_backlog(db).await?;
    Ok(LagReport {
        topic,
        total_lag: partitions.iter().map(|partition| partition.lag).sum(),
        partitions,
        outbox_rows,
        outbox_age_s: oldest.map(|at| (now - at).num_milliseconds().max(0) as f64 / 1000.0),
    })
}

impl fmt::Display for LagReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "topic {}", self.topic)?;
        writeln!(
            f,
            "{:>9}  {:>12}  {:>12}  {:>10}  owner",
            "partition", "end offset", "position", "lag"
        )?;
        for partition in &self.partitions {
            writeln!(
                f,
                "{:>9}  {:>12}  {:>12}  {:>10}  {}",
                partition.partition,
                partition.end_offset,
                partition.position,
                partition.lag,
                partition.owner.as_deref().unwrap_or("-")
            )?;
        }
        writeln!(f, "total lag: {}", self.total_lag)?;
        match self.outbox_age_s {
            Some(age) => write!(
                f,
                "outbox: {} events waiting, the oldest for {age:.1} s",
                self.outbox_rows
            ),
            None => write!(f, "outbox: empty"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_records_not_yet_applied() {
        assert_eq!(lag(10, 4), 6);
        assert_eq!(lag(10, 10), 0);
        // A position beyond the end (a recreated topic) is no negative lag; `verify` reports it.
        assert_eq!(lag(3, 10), 0);
    }
}
