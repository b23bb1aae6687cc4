//! Appends operations to the operations topic, one batching producer per partition so that
//! concurrent requests share round trips, and a bulk path that hands a batch's records of
//! one partition to the broker in one request.

use std::time::{Duration, Instant};

use std::sync::Arc;

use anyhow::Context;
use chrono::Utc;
use futures::future::join_all;
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient};
use rskafka::client::producer::aggregator::RecordAggregator;
use rskafka::client::producer::{BatchProducer, BatchProducerBuilder};
use rskafka::record::Record;

use super::{broker, codec, partitioner};
use crate::config::KafkaConfig;
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

fn record_duration(started: Instant, ok: bool) {
    let outcome = if ok { "ok" } else { "error" };
    metrics::histogram!("wallet_produce_duration_seconds", "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
}

impl OperationProducer {
    /// Opens a producer for every partition of the operations topic, which must exist; the
    /// partition count is the topic's, whatever the configuration says.
    pub async fn connect(config: &KafkaConfig) -> anyhow::Result<Self> {
        let client = broker::connect(config).await?;
        let count = broker::partition_count(&client, config, &config.operations_topic).await?;
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
    /// request per partition (more only when a partition's records exceed one request's
    /// bound), all in flight at once. Answers each operation's offset or error, in order.
    ///
    /// # Cancellation
    /// Dropping the future may or may not leave each operation on the topic.
    pub async fn produce_all(&self, operations: &[Operation]) -> Vec<Result<i64, ProduceError>> {
        let mut requests: Vec<Vec<usize>> = vec![Vec::new(); self.partitions.len()];
        let mut chunks = Vec::new();
        let mut request_bytes = vec![0usize; self.partitions.len()];
        let mut records: Vec<Option<Record>> = Vec::with_capacity(operations.len());
        for (index, operation) in operations.iter().enumerate() {
            let partition = self.partition_of(operation);
            let record = record(operation);
            let size = record_size(&record);
            if !requests[partition].is_empty()
                && request_bytes[partition] + size > BULK_REQUEST_BYTES_MAX
            {
                chunks.push((partition, std::mem::take(&mut requests[partition])));
                request_bytes[partition] = 0;
            }
            requests[partition].push(index);
            request_bytes[partition] += size;
            records.push(Some(record));
        }
        chunks.extend(
            requests
                .into_iter()
                .enumerate()
                .filter(|(_, indices)| !indices.is_empty()),
        );
        let sends = chunks.into_iter().map(|(partition, indices)| {
            let batch: Vec<Record> = indices
                .iter()
                .filter_map(|&index| records[index].take())
                .collect();
            self.send(partition, indices, batch)
        });
        let mut produced: Vec<Option<Result<i64, ProduceError>>> =
            (0..operations.len()).map(|_| None).collect();
        for (indices, result) in join_all(sends).await {
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

    /// One bulk request to `partition`; answers the indices it carried with its outcome.
    async fn send(
        &self,
        partition: usize,
        indices: Vec<usize>,
        batch: Vec<Record>,
    ) -> (Vec<usize>, Result<Vec<i64>, ProduceError>) {
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
        (indices, produced)
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
