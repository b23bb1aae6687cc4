//! Apache Kafka as the harness runs it, driven with rskafka the way the service drives it:
//! the protocol round trips the service relies on, and what the broker does that a stand-in
//! broker did differently.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;
use serde_json::Value;

use crate::client::{deposit, stored_and_relayed, System};
use crate::harness::Broker;

fn record(n: usize, value_bytes: usize) -> Record {
    let mut value = format!("value-{n}-").into_bytes();
    value.resize(value_bytes.max(value.len()), b'x');
    Record {
        key: Some(format!("key-{n}").into_bytes()),
        value: Some(value),
        headers: Default::default(),
        timestamp: Utc::now(),
    }
}

pub async fn connect(broker: &Broker) -> Client {
    ClientBuilder::new(vec![broker.address()])
        .build()
        .await
        .expect("connects")
}

async fn new_topic(client: &Client, topic: &str, partitions: i32) {
    client
        .controller_client()
        .expect("controller")
        .create_topic(topic, partitions, 1, 5_000)
        .await
        .expect("topic created");
}

/// A partition client; right after CreateTopics a KRaft broker may not know the topic yet.
async fn partition(client: &Client, topic: &str, partition: i32) -> Arc<PartitionClient> {
    let open = client.partition_client(topic, partition, UnknownTopicHandling::Retry);
    Arc::new(
        tokio::time::timeout(Duration::from_secs(30), open)
            .await
            .expect("the topic appears within 30 s")
            .expect("partition"),
    )
}

fn offsets(records: &[rskafka::record::RecordAndOffset]) -> Vec<i64> {
    records.iter().map(|record| record.offset).collect()
}

/// Proves records round-trip on Kafka: a topic with several partitions, a produced batch, a
/// fetch that starts inside that batch (Kafka answers with the whole batch; the client hands
/// out only the records from the position on), the earliest and latest offsets, and the data
/// still there after a controlled restart.
#[tokio::test]
async fn records_round_trip_and_survive_a_restart() {
    let mut broker = Broker::start();
    let client = connect(&broker).await;
    new_topic(&client, "round-trip", 3).await;
    let partition_one = partition(&client, "round-trip", 1).await;
    let produced = partition_one
        .produce(
            (0..10).map(|n| record(n, 8)).collect(),
            Compression::NoCompression,
        )
        .await
        .expect("produced");
    assert_eq!(produced, (0..10).collect::<Vec<i64>>());

    let (fetched, high_watermark) = partition_one
        .fetch_records(4, 1..1_000_000, 50)
        .await
        .expect("fetched");
    assert_eq!(high_watermark, 10);
    assert_eq!(
        offsets(&fetched),
        (4..10).collect::<Vec<i64>>(),
        "Kafka answers with the whole batch; rskafka drops what lies before the position"
    );
    assert_eq!(
        partition_one
            .get_offset(OffsetAt::Latest)
            .await
            .expect("latest"),
        10
    );
    assert_eq!(
        partition_one
            .get_offset(OffsetAt::Earliest)
            .await
            .expect("earliest"),
        0
    );

    drop(partition_one);
    drop(client);
    broker.stop();
    broker.start_again();
    let client = connect(&broker).await;
    let partition_one = partition(&client, "round-trip", 1).await;
    let (fetched, _) = partition_one
        .fetch_records(7, 1..1_000_000, 50)
        .await
        .expect("fetched");
    let from_seven: Vec<i64> = offsets(&fetched)
        .into_iter()
        .filter(|offset| *offset >= 7)
        .collect();
    assert_eq!(from_seven, vec![7, 8, 9]);
    let topics = client.list_topics().await.expect("topics");
    let topic = topics
        .iter()
        .find(|t| t.name == "round-trip")
        .expect("topic listed");
    assert_eq!(topic.partitions.len(), 3);
}

/// Proves produce requests on both sides of rskafka's 8 KiB write buffer (50 records of 150 B
/// fit, 60 do not, 2,000 are ~330 KiB) and LZ4-compressed ones are stored whole and in order.
#[tokio::test]
async fn produce_requests_of_every_size_are_stored_whole() {
    let broker = Broker::shared();
    let client = connect(&broker).await;
    new_topic(&client, "request-sizes", 1).await;
    let partition = partition(&client, "request-sizes", 0).await;
    let mut next = 0i64;
    for (count, compression) in [
        (50, Compression::NoCompression),
        (60, Compression::NoCompression),
        (2_000, Compression::NoCompression),
        (2_000, Compression::Lz4),
    ] {
        let produced = partition
            .produce((0..count).map(|n| record(n, 150)).collect(), compression)
            .await
            .expect("produced");
        assert_eq!(produced, (next..next + count as i64).collect::<Vec<i64>>());
        next += count as i64;
    }
    let mut seen = Vec::new();
    while seen.len() < next as usize {
        let position = seen.len() as i64;
        let (records, _) = partition
            .fetch_records(position, 1..10_000_000, 100)
            .await
            .expect("fetched");
        seen.extend(records.into_iter().filter(|r| r.offset >= position));
    }
    assert_eq!(offsets(&seen), (0..next).collect::<Vec<i64>>());
    let last = seen.last().and_then(|r| r.record.value.clone());
    assert!(last.is_some_and(|value| value.starts_with(b"value-1999-") && value.len() == 150));
}

/// Proves the events the relay writes (LZ4-compressed) are readable by Kafka's own Java
/// consumer, an independent client: every event of the wallet arrives as JSON.
#[tokio::test]
async fn events_are_read_by_kafkas_own_consumer() {
    let system = System::start(1);
    let api = &system.api;
    let wallet = api.new_wallet().await;
    for amount in ["1.00", "2.00", "3.00"] {
        api.submit_accepted(&deposit(&wallet, amount)).await;
    }
    let db = system.database().await;
    let relayed = stored_and_relayed(&db, 3, Duration::from_secs(30)).await;
    assert!(relayed, "the three deposits are applied and relayed");
    let output =
        std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh"))
            .args([
                "consume",
                &system.stack.broker.port.to_string(),
                &system.stack.events_topic,
                "4",
            ])
            .output()
            .expect("the console consumer runs");
    let events: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert_eq!(events.len(), 4, "a created wallet and three deposits");
    assert!(events
        .iter()
        .all(|event| event["walletId"] == wallet.as_str()));
}

/// Prints how long produce requests of either side of 8 KiB take against Kafka, for the
/// README's statement about Nagle's algorithm; a measurement, not a test (run it with
/// `cargo test --test integration -- --ignored --exact broker::produce_latency_by_request_size --nocapture`).
#[tokio::test]
#[ignore]
async fn produce_latency_by_request_size() {
    let broker = Broker::start();
    let client = connect(&broker).await;
    new_topic(&client, "latency", 1).await;
    let partition = partition(&client, "latency", 0).await;
    for count in [10, 40, 44, 48, 50, 60, 100, 300, 400, 430, 460, 500, 1_000] {
        let mut samples = Vec::new();
        for _ in 0..50 {
            let started = Instant::now();
            partition
                .produce(
                    (0..count).map(|n| record(n, 150)).collect(),
                    Compression::NoCompression,
                )
                .await
                .expect("produced");
            samples.push(started.elapsed());
        }
        samples.sort();
        println!(
            "{count:>4} records of 150 B: median {:?}, p90 {:?}",
            samples[samples.len() / 2],
            samples[samples.len() * 9 / 10]
        );
    }
}
