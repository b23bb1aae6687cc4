//! Appends operations to the operations topic, one batching producer per partition so that
//! concurrent requests share round trips.

use std::time::{Duration, Instant};

use chrono::Utc;
use rskafka::client::producer::aggregator::RecordAggregator;
use rskafka::client::producer::{BatchProducer, BatchProducerBuilder};
use rskafka::record::Record;

use super::{broker, codec, partitioner};
use crate::config::KafkaConfig;
use crate::ledger::types::Operation;

pub struct OperationProducer {
    client: rskafka::client::Client,
    partitions: Vec<BatchProducer<RecordAggregator>>,
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
            let producer = BatchProducerBuilder::new(partition_client)
                .with_linger(Duration::from_millis(config.produce_linger_ms))
                .build(RecordAggregator::new(config.produce_batch_bytes_max));
            partitions.push(producer);
        }
        Ok(OperationProducer {
            client,
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
        let partition =
            partitioner::partition_for(operation.wallet_id, self.partitions.len() as i32);
        let record = Record {
            key: Some(operation.wallet_id.to_string().into_bytes()),
            value: Some(codec::encode(operation)),
            headers: Default::default(),
            timestamp: Utc::now(),
        };
        let producer = &self.partitions[partition as usize];
        let started = Instant::now();
        let produced = match tokio::time::timeout(self.timeout, producer.produce(record)).await {
            Ok(result) => result.map_err(ProduceError::from),
            Err(_) => Err(ProduceError::Timeout(self.timeout)),
        };
        let outcome = if produced.is_ok() { "ok" } else { "error" };
        metrics::histogram!("wallet_produce_duration_seconds", "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        produced
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
