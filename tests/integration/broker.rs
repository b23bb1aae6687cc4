//! The broker as the harness runs it, driven with rskafka the way the service drives it.

use std::sync::Arc;

use chrono::Utc;
use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};
use rskafka::client::ClientBuilder;
use rskafka::record::Record;

use crate::harness::Broker;

fn record(n: usize) -> Record {
    Record {
        key: Some(format!("key-{n}").into_bytes()),
        value: Some(format!("value-{n}").into_bytes()),
        headers: Default::default(),
        timestamp: Utc::now(),
    }
}

/// Proves records round-trip: a topic with several partitions, a produced batch fetched from
/// an offset inside it, the latest offset listed, and the data still there after a restart.
#[tokio::test]
async fn records_round_trip_and_survive_a_restart() {
    let mut broker = Broker::start();
    let client = ClientBuilder::new(vec![broker.address()])
        .build()
        .await
        .expect("connects");
    client
        .controller_client()
        .expect("controller")
        .create_topic("round-trip", 3, 1, 5_000)
        .await
        .expect("topic created");
    let partition = Arc::new(
        client
            .partition_client("round-trip", 1, UnknownTopicHandling::Retry)
            .await
            .expect("partition"),
    );
    let offsets = partition
        .produce((0..10).map(record).collect(), Default::default())
        .await
        .expect("produced");
    assert_eq!(offsets, (0..10).collect::<Vec<i64>>());

    let (fetched, high_watermark) = partition
        .fetch_records(4, 1..1_000_000, 50)
        .await
        .expect("fetched");
    assert_eq!(high_watermark, 10);
    let values: Vec<String> = fetched
        .iter()
        .map(|r| {
            String::from_utf8_lossy(r.record.value.as_deref().unwrap_or_default()).into_owned()
        })
        .collect();
    assert_eq!(fetched.first().map(|r| r.offset), Some(4), "{values:?}");
    assert_eq!(values.first().map(String::as_str), Some("value-4"));
    assert_eq!(
        partition
            .get_offset(OffsetAt::Latest)
            .await
            .expect("latest"),
        10
    );

    drop(partition);
    drop(client);
    broker.stop();
    broker.start_again();
    let client = ClientBuilder::new(vec![broker.address()])
        .build()
        .await
        .expect("reconnects");
    let partition = client
        .partition_client("round-trip", 1, UnknownTopicHandling::Retry)
        .await
        .expect("partition");
    assert_eq!(
        partition
            .get_offset(OffsetAt::Latest)
            .await
            .expect("latest"),
        10
    );
    let (fetched, _) = partition
        .fetch_records(7, 1..1_000_000, 50)
        .await
        .expect("fetched");
    let offsets: Vec<i64> = fetched.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![7, 8, 9]);
    let topics = client.list_topics().await.expect("topics");
    let topic = topics
        .iter()
        .find(|t| t.name == "round-trip")
        .expect("topic listed");
    assert_eq!(topic.partitions.len(), 3);
}
