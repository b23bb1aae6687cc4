//! Appends operations to the operations topic, one batching producer per partition so that
//! concurrent requests share round trips, and a bulk path that hands a batch's records of
//! one partition to the broker in one request.

use std::time::{Duration, Instant};

use std::sync::Arc;

use anyhow::Context;
use chrono::Utc;
use deadpool_postgres::Pool;
use futures::future::join_all;
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient};
use rskafka::client::producer::aggregator::RecordAggregator;
use rskafka::client::producer::{BatchProducer, BatchProducerBuilder};
use rskafka::record::Record;

use super::{broker, codec, layout, partitioner};
use crate::config::KafkaConfig;
use crate::ledger::database;
use crate::ledger::types::{Operation, WalletId};

/// Largest bulk produce request, in bytes of records: below the broker's default
/// `message.max.bytes` (1,048,588), with room for the record batch's own framing.
const BULK_REQUEST_BYTES_MAX: usize = 900_000;

/// Framing of one record in a record batch beyond its key and value (lengths, offsets,
/// timestamp delta, attributes), at most.
const RECORD_OVERHEAD_BYTES: usize = 32;

/// A partition's producers: the batching one for single submissions, and its client for
/// bulk requests.
struct PartitionProducer {
    batching: BatchProducer<RecordAggregator>,
    client: Arc<PartitionClient>,
}

pub struct OperationProducer {
    client: rskafka::client::Client,
    topic: String,
    partitions: Vec<PartitionProducer>,
    timeout: Duration,
}

/// Why an operation may not be on the topic. The operation may still have been written (a
/// timeout can hide a success), which is why every operation carries an id the worker dedupes.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("the broker did not acknowledge within {0:?}")]
    Timeout(Duration),
    #[error("the broker refused the operation: {0}")]
    Broker(#[from] rskafka::client::producer::Error),
    #[error("the broker refused the request: {0}")]
    Request(String),
    #[error("the broker acknowledged fewer records than the request carried")]
    Unacknowledged,
    #[error("not sent: an earlier request for the same partition failed")]
    EarlierPartFailed,
}

impl From<rskafka::client::error::Error> for ProduceError {
    fn from(error: rskafka::client::error::Error) -> Self {
        ProduceError::Request(error.to_string())
    }
}

impl ProduceError {
    /// The same error for another operation of the same request.
    fn duplicate(&self) -> ProduceError {
        match self {
            ProduceError::Timeout(timeout) => ProduceError::Timeout(*timeout),
            ProduceError::Broker(error) => ProduceError::Request(error.to_string()),
            ProduceError::Request(message) => ProduceError::Request(message.clone()),
            ProduceError::Unacknowledged => ProduceError::Unacknowledged,
            ProduceError::EarlierPartFailed => ProduceError::EarlierPartFailed,
        }
    }
}

fn record(operation: &Operation) -> Record {
    Record {
        key: Some(operation.wallet_id.to_string().into_bytes()),
        value: Some(codec::encode(operation)),
        headers: Default::default(),
        timestamp: Utc::now(),
    }
}

fn record_size(record: &Record) -> usize {
    let length = |part: &Option<Vec<u8>>| part.as_ref().map_or(0, Vec::len);
    length(&record.key) + length(&record.value) + RECORD_OVERHEAD_BYTES
}

/// The requests of a bulk produce: for each of `partition_count` partitions, the indices of
/// its records in `placed` order, split into parts in that order. A part holds at most
/// `bound` bytes of records, unless it is a single larger record. `placed` gives each
/// record's partition and size.
fn parts(
    placed: impl Iterator<Item = (usize, usize)>,
    partition_count: usize,
    bound: usize,
) -> Vec<Vec<Vec<usize>>> {
    let mut parts: Vec<Vec<Vec<usize>>> = vec![Vec::new(); partition_count];
    let mut part_bytes = vec![0usize; partition_count];
    for (index, (partition, size)) in placed.enumerate() {
        let partition_parts = &mut parts[partition];
        match partition_parts.last_mut() {
            Some(part) if part_bytes[partition] + size <= bound => part.push(index),
            Some(_) | None => {
                partition_parts.push(vec![index]);
                part_bytes[partition] = 0;
            }
        }
        part_bytes[partition] += size;
    }
    parts
}

fn record_duration(started: Instant, ok: bool) {
    let outcome = if ok { "ok" } else { "error" };
    metrics::histogram!("wallet_produce_duration_seconds", "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
}

impl OperationProducer {
    /// Opens a producer for every partition of the operations topic, which must exist; the
    /// partition count is the topic's, whatever the configuration says, and must be the one
    /// `wallet migrate` recorded in `database` (see [`layout`]).
    pub async fn connect(config: &KafkaConfig, database: &Pool) -> anyhow::Result<Self> {
        let client = broker::connect(config).await?;
        let count = broker::partition_count(&client, config, &config.operations_topic).await?;
        let recorder = database::client(database)
            .await
            .map_err(|error| anyhow::anyhow!(error.describe()))?;
        layout::require(&recorder, &config.operations_topic, count).await?;
        drop(recorder);
        let mut partitions = Vec::with_capacity(count as usize);
        for partition in 0..count {
            let partition_client =
                broker::partition(&client, config, &config.operations_topic, partition).await?;
            // Requests above rskafka's 8 KiB write buffer take two socket writes and stall on
            // Nagle's algorithm for ~40 ms, so batches stay below that size.
            let batching = BatchProducerBuilder::new(partition_client.clone())
                .with_linger(Duration::from_millis(config.produce_linger_ms))
                .build(RecordAggregator::new(config.produce_batch_bytes_max));
            partitions.push(PartitionProducer {
                batching,
                client: partition_client,
            });
        }
        Ok(OperationProducer {
            client,
            topic: config.operations_topic.clone(),
            partitions,
            timeout: config.request_timeout(),
        })
    }

    /// Appends `operation` to its wallet's partition and returns the offset once the broker
    /// has acknowledged it.
    ///
    /// # Cancellation
    /// Dropping the future may or may not leave the operation on the topic.
    pub async fn produce(&self, operation: &Operation) -> Result<i64, ProduceError> {
        let producer = &self.partitions[self.partition_of(operation)];
        let started = Instant::now();
        let produced =
            match tokio::time::timeout(self.timeout, producer.batching.produce(record(operation)))
                .await
            {
                Ok(result) => result.map_err(ProduceError::from),
                Err(_) => Err(ProduceError::Timeout(self.timeout)),
            };
        record_duration(started, produced.is_ok());
        produced
    }

    /// Appends `operations`, each to its wallet's partition in the order given, with one
    /// request per partition, all partitions at once. A partition whose records exceed one
    /// request's bound gets several, one after another: in flight together, a retried one
    /// could land after its successors and reorder a wallet's operations. Once one fails,
    /// the partition's later parts are not sent, for the same reason. Answers each
    /// operation's offset or error, in order.
    ///
    /// # Cancellation
    /// Dropping the future may or may not leave each operation on the topic.
    pub async fn produce_all(&self, operations: &[Operation]) -> Vec<Result<i64, ProduceError>> {
        let records: Vec<Record> = operations.iter().map(record).collect();
        let placed = operations
            .iter()
            .zip(&records)
            .map(|(operation, record)| (self.partition_of(operation), record_size(record)));
        let plan = parts(placed, self.partitions.len(), BULK_REQUEST_BYTES_MAX);
        let mut records: Vec<Option<Record>> = records.into_iter().map(Some).collect();
        let sends = plan.into_iter().enumerate().map(|(partition, parts)| {
            let parts: Vec<(Vec<usize>, Vec<Record>)> = parts
                .into_iter()
                .map(|indices| {
                    let batch = indices
                        .iter()
                        .filter_map(|&index| records[index].take())
                        .collect();
                    (indices, batch)
                })
                .collect();
            self.send_in_order(partition, parts)
        });
        let mut produced: Vec<Option<Result<i64, ProduceError>>> =
            (0..operations.len()).map(|_| None).collect();
        for (indices, result) in join_all(sends).await.into_iter().flatten() {
            match result {
                Ok(offsets) => {
                    for (index, offset) in indices.into_iter().zip(offsets) {
                        produced[index] = Some(Ok(offset));
                    }
                }
                Err(error) => {
                    for index in indices {
                        produced[index] = Some(Err(error.duplicate()));
                    }
                }
            }
        }
        produced
            .into_iter()
            .map(|result| result.unwrap_or(Err(ProduceError::Unacknowledged)))
            .collect()
    }

    /// Sends the parts of one partition one after another, each once its predecessor was
    /// acknowledged; answers each part's indices with its outcome.
    async fn send_in_order(
        &self,
        partition: usize,
        parts: Vec<(Vec<usize>, Vec<Record>)>,
    ) -> Vec<(Vec<usize>, Result<Vec<i64>, ProduceError>)> {
        let mut answered = Vec::with_capacity(parts.len());
        let mut failed = false;
        for (indices, batch) in parts {
            let produced = match failed {
                true => Err(ProduceError::EarlierPartFailed),
                false => self.send(partition, batch).await,
            };
            failed |= produced.is_err();
            answered.push((indices, produced));
        }
        answered
    }

    /// One bulk request to `partition`.
    async fn send(&self, partition: usize, batch: Vec<Record>) -> Result<Vec<i64>, ProduceError> {
        let client = &self.partitions[partition].client;
        let started = Instant::now();
        let sent = tokio::time::timeout(
            self.timeout,
            client.produce(batch, Compression::NoCompression),
        );
        let produced = match sent.await {
            Ok(result) => result.map_err(ProduceError::from),
            Err(_) => Err(ProduceError::Timeout(self.timeout)),
        };
        record_duration(started, produced.is_ok());
        produced
    }

    fn partition_of(&self, operation: &Operation) -> usize {
        partitioner::partition_for(operation.wallet_id, self.partitions.len() as i32) as usize
    }

    /// The topic, and the partition `wallet`'s operations go to.
    pub fn partition_of_wallet(&self, wallet: WalletId) -> (&str, i32) {
        let partition = partitioner::partition_for(wallet, self.partitions.len() as i32);
        (&self.topic, partition)
    }

    /// The partition's end offset: every record the broker acknowledged on it lies below.
    pub async fn end_offset(&self, partition: i32) -> anyhow::Result<i64> {
        let producer = usize::try_from(partition)
            .ok()
            .and_then(|index| self.partitions.get(index))
            .with_context(|| format!("no partition {partition}"))?;
        tokio::time::timeout(self.timeout, producer.client.get_offset(OffsetAt::Latest))
            .await
            .with_context(|| format!("the end of partition {partition} within {:?}", self.timeout))?
            .with_context(|| format!("the end of partition {partition}"))
    }

    /// Whether the broker answers a metadata request within `deadline`.
    pub async fn reachable(&self, deadline: Duration) -> Result<(), String> {
        match tokio::time::timeout(deadline, self.client.list_topics()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {deadline:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Proves a partition's records are split where the next would pass the bound, and
    /// that a record larger than the bound travels alone.
    #[test]
    fn a_part_ends_where_the_next_record_would_pass_the_bound() {
        let placed = [
            (0, 40),
            (1, 10),
            (0, 60),
            (0, 1),
            (0, 150),
            (0, 100),
            (1, 90),
        ];
        let planned = parts(placed.into_iter(), 3, 100);
        assert_eq!(planned[0], vec![vec![0, 2], vec![3], vec![4], vec![5]]);
        assert_eq!(planned[1], vec![vec![1, 6]]);
        assert!(planned[2].is_empty());
    }

    proptest! {
        /// Proves every record is in exactly one part of its own partition, a partition's
        /// parts hold its records in the order given, and a part of several records stays
        /// within the bound.
        #[test]
        fn parts_keep_each_partitions_order(
            placed in prop::collection::vec((0usize..4, 1usize..400), 0..200),
            bound in 1usize..1_000,
        ) {
            let planned = parts(placed.iter().copied(), 4, bound);
            for (partition, partition_parts) in planned.iter().enumerate() {
                let in_order: Vec<usize> = partition_parts.iter().flatten().copied().collect();
                let expected: Vec<usize> = (0..placed.len())
                    .filter(|&index| placed[index].0 == partition)
                    .collect();
                prop_assert_eq!(in_order, expected);
                for part in partition_parts {
                    let bytes: usize = part.iter().map(|&index| placed[index].1).sum();
                    prop_assert!(part.len() == 1 || bytes <= bound);
                }
            }
        }
    }
}
