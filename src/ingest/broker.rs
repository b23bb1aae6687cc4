//! Connections to the Kafka-protocol broker, with the deadlines rskafka leaves unset.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::BackoffConfig;

use crate::config::KafkaConfig;

/// Connects to the cluster. rskafka retries forever by default; here every retry loop ends at
/// the configured request timeout, and the whole connect is bounded too.
pub async fn connect(config: &KafkaConfig) -> anyhow::Result<Client> {
    let brokers = config.broker_list();
    let backoff = BackoffConfig {
        init_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
        base: 2.0,
        deadline: Some(config.request_timeout()),
    };
    let build = ClientBuilder::new(brokers.clone())
        .client_id("wallet")
        .backoff_config(backoff)
        .build();
    tokio::time::timeout(config.request_timeout(), build)
        .await
        .map_err(anyhow::Error::from)
        .and_then(|result| result.map_err(anyhow::Error::from))
        .with_context(|| {
            format!(
                "cannot connect to the Kafka broker at {}",
                brokers.join(",")
            )
        })
}

/// Whether [`ensure_topic`] made the topic or found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicCreation {
    Created,
    /// It keeps the partitions it has, whatever the configured count.
    Existed,
}

/// Creates `topic` with `partitions` partitions; a topic that already exists is fine.
pub async fn ensure_topic(
    client: &Client,
    config: &KafkaConfig,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<TopicCreation> {
    let controller = client.controller_client()?;
    let timeout_ms = i32::try_from(config.request_timeout_ms).unwrap_or(i32::MAX);
    let create = controller.create_topic(topic, partitions, config.replication_factor, timeout_ms);
    match tokio::time::timeout(config.request_timeout(), create).await {
        Ok(Ok(())) => {
            tracing::info!(topic, partitions, "created topic");
            Ok(TopicCreation::Created)
        }
        Ok(Err(KafkaError::ServerError {
            protocol_error: ProtocolError::TopicAlreadyExists,
            ..
        })) => Ok(TopicCreation::Existed),
        Ok(Err(error)) => Err(error).with_context(|| format!("creating topic {topic}")),
        Err(elapsed) => Err(elapsed).with_context(|| format!("creating topic {topic}")),
    }
}

/// Waits until the broker lists `topic` with at least `partitions` partitions and returns how
/// many it has: right after CreateTopics a KRaft broker may still answer
/// UNKNOWN_TOPIC_OR_PARTITION, and a `serve` or `work` started just after `wallet migrate`
/// must find the topic.
pub async fn await_topic(
    client: &Client,
    config: &KafkaConfig,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<i32> {
    let deadline = tokio::time::Instant::now() + config.request_timeout();
    loop {
        match partition_count(client, config, topic).await {
            Ok(count) if count >= partitions => return Ok(count),
            Ok(_) | Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(count) => anyhow::bail!(
                "topic {topic} has {count} partitions, not the configured {partitions}"
            ),
            Err(error) => return Err(error),
        }
    }
}

/// A client for one partition. Unknown topics are errors, never an endless retry.
pub async fn partition(
    client: &Client,
    config: &KafkaConfig,
    topic: &str,
    partition: i32,
) -> anyhow::Result<Arc<PartitionClient>> {
    let make = client.partition_client(topic, partition, UnknownTopicHandling::Error);
    let partition_client = tokio::time::timeout(config.request_timeout(), make)
        .await
        .map_err(anyhow::Error::from)
        .and_then(|result| result.map_err(anyhow::Error::from))
        .with_context(|| format!("opening partition {partition} of topic {topic}"))?;
    Ok(Arc::new(partition_client))
}

/// The number of partitions `topic` has on the broker.
pub async fn partition_count(
    client: &Client,
    config: &KafkaConfig,
    topic: &str,
) -> anyhow::Result<i32> {
    let topics = tokio::time::timeout(config.request_timeout(), client.list_topics())
        .await
        .context("listing topics timed out")??;
    let found = topics
        .into_iter()
        .find(|candidate| candidate.name == topic)
        .with_context(|| format!("topic {topic} does not exist; run `wallet migrate`"))?;
    // A topic the broker lists with an error (no leader yet) has no partitions to use.
    anyhow::ensure!(
        !found.partitions.is_empty(),
        "topic {topic} has no usable partitions yet"
    );
    Ok(found.partitions.len() as i32)
}
