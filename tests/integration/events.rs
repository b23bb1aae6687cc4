//! The outbox relay: every decided operation reaches the events topic, in per-wallet order,
//! through worker crashes and broker outages.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use rand::Rng;
use reqwest::StatusCode;
use rskafka::client::partition::UnknownTopicHandling;
use rskafka::client::ClientBuilder;
use serde_json::{json, Value};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::client::{
    count_rows, database, deposit, stored_and_relayed, transfer, withdraw, Api, System,
};
use crate::harness::{eventually, Stack};

/// Every event on the topic, partition by partition in topic order. rskafka retries a broker's
/// errors without end, so each reading has a deadline, and a reading that missed it (a
/// broker still settling after a fault) is made again on a new connection.
pub async fn read_events(broker: &str, events_topic: &str) -> Vec<Value> {
    for _ in 0..3 {
        let reading = read_events_once(broker, events_topic);
        match tokio::time::timeout(Duration::from_secs(30), reading).await {
            Ok(events) => return events,
            Err(_) => eprintln!("reading {events_topic} took over 30 s; reading it again"),
        }
    }
    panic!("{events_topic} could not be read within three 30-second attempts");
}

async fn read_events_once(broker: &str, events_topic: &str) -> Vec<Value> {
    let client = ClientBuilder::new(vec![broker.to_owned()])
        .build()
        .await
        .expect("connects");
    let topics = client.list_topics().await.expect("topics");
    let topic = topics
        .iter()
        .find(|topic| topic.name == events_topic)
        .expect("events topic");
    let mut events = Vec::new();
    for partition in topic.partitions.iter().copied() {
        let partition = client
            .partition_client(events_topic, partition, UnknownTopicHandling::Error)
            .await
            .expect("partition");
        let mut offset = 0;
        loop {
            let (records, high_watermark) = partition
                .fetch_records(offset, 1..10_000_000, 50)
                .await
                .expect("fetch");
            for record in records {
                offset = record.offset + 1;
                events.push(
                    serde_json::from_slice(record.record.value.as_deref().unwrap_or_default())
                        .expect("event JSON"),
                );
            }
            if offset >= high_watermark {
                break;
            }
        }
    }
    events
}

/// Waits until every accepted operation is stored and the outbox is empty, then checks the
/// topic: after dropping repeats by eventId, exactly one event per journal entry and per
/// created wallet, and each wallet's versions gapless from 0 in topic order.
async fn assert_events_complete(system: &System, operations: usize, wallets: usize) {
    let db = system.database().await;
    let drained = stored_and_relayed(&db, operations, Duration::from_secs(90)).await;
    assert!(drained, "every operation stored and the outbox drained");
    let entries = count_rows(&db, "entries").await;
    let events = read_events(&system.stack.broker.address(), &system.stack.events_topic).await;
    let mut seen = HashSet::new();
    let mut versions: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for event in &events {
        if !seen.insert(event["eventId"].as_str().expect("eventId").to_owned()) {
            continue;
        }
        if let Some(version) = event["version"].as_i64() {
            versions
                .entry(event["walletId"].as_str().expect("walletId").to_owned())
                .or_default()
                .push(version);
        }
    }
    assert_eq!(
        seen.len(),
        entries as usize + wallets,
        "one event per entry and per wallet"
    );
    assert_eq!(versions.len(), wallets);
    for (wallet, versions) in versions {
        let expected: Vec<i64> = (0..versions.len() as i64).collect();
        assert_eq!(
            versions, expected,
            "wallet {wallet}: versions in order and gapless"
        );
    }
}

async fn create_funded(api: &Api, count: usize) -> Vec<String> {
    let wallets: Vec<String> = join_all((0..count).map(|_| api.new_wallet())).await;
    for wallet in &wallets {
        api.fund(wallet, "1000.00").await;
    }
    wallets
}

/// Sends `count` mixed operations from 16 clients, retrying each with its key until accepted.
async fn drive(api: &Api, wallets: &[String], count: usize, prefix: &str) {
    let next = Arc::new(Mutex::new(0usize));
    let clients = (0..16).map(|_| {
        let (api, wallets, next) = (api.clone(), wallets.to_vec(), next.clone());
        let prefix = prefix.to_owned();
        async move {
            loop {
                let n = {
                    let mut next = next.lock().await;
                    if *next >= count {
                        return;
                    }
                    *next += 1;
                    *next
                };
                let (source, target, kind) = {
                    let mut rng = rand::rng();
                    (
                        rng.random_range(0..wallets.len()),
                        rng.random_range(0..wallets.len()),
                        rng.random_range(0..5),
                    )
                };
                let body = match kind {
                    0 | 1 => deposit(&wallets[source], "2.50"),
                    2 | 3 if source != target => {
                        transfer(&wallets[source], &wallets[target], "3.00")
                    }
                    _ => withdraw(&wallets[source], "4.00"),
                };
                let key = format!("{prefix}-{n}");
                let start = std::time::Instant::now();
                loop {
                    if let Ok(Some(response)) = tokio::time::timeout(
                        Duration::from_secs(10),
                        api.try_submit_with_key(&wallets[source], &key, &body),
                    )
                    .await
                    {
                        if response.status == StatusCode::ACCEPTED {
                            break;
                        }
                    }
                    assert!(
                        start.elapsed() < Duration::from_secs(60),
                        "{key} never accepted"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    join_all(clients).await;
}

/// Proves a mixed run of 5,000 operations yields exactly the expected events, per-wallet
/// versions gapless and increasing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_yields_its_events() {
    let system = System::start(4);
    let wallets = create_funded(&system.api, 20).await;
    drive(&system.api, &wallets, 5_000, "mixed").await;
    assert_events_complete(&system, 5_000 + 20, 20).await;
}

/// Proves killing `wallet work` while the relay publishes loses no event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_crash_during_relay_loses_no_event() {
    let mut system = System::start(4);
    let wallets = create_funded(&system.api, 8).await;
    drive(&system.api, &wallets, 600, "before").await;
    system.worker.kill();
    drive(&system.api, &wallets, 400, "during").await;
    system.worker.start();
    assert_events_complete(&system, 1_000 + 8, 8).await;
}

/// Proves a broker outage under load loses no event and the outbox drains afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_loses_no_event() {
    let mut system = System::start_with_own_broker(4);
    let wallets = create_funded(&system.api, 8).await;
    let api = system.api.clone();
    let load = {
        let wallets = wallets.clone();
        tokio::spawn(async move { drive(&api, &wallets, 1_500, "outage").await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    system.stack.broker.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    system.stack.broker.start_again();
    load.await.expect("load finished");
    assert_events_complete(&system, 1_500 + 8, 8).await;
}

/// Proves the relay keeps no transaction open while it publishes: with the broker frozen for
/// longer than its sessions may sit idle in a transaction (half the lease lapse), the round
/// still deletes what it published, and the event is published once, not once per round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_broker_makes_the_relay_publish_each_event_once() {
    let mut stack = Stack::start_with_own_broker(1);
    let lapse = Duration::from_millis(2_000);
    let _worker = stack.spawn_wallet(
        "work-1",
        &["work"],
        &[(
            "WALLET_WORKER__LEASE_LAPSE_MS",
            lapse.as_millis().to_string(),
        )],
    );
    let db = database(&stack.postgres.url()).await;
    let relayed = |event: Uuid| {
        let db = &db;
        async move {
            let payload = json!({"eventId": event, "type": "Probe"}).to_string();
            db.execute(
                "INSERT INTO outbox (tenants, wallet_ids, payloads, events, created_at)
                 VALUES (ARRAY['default'], $1, $2, 1, now())",
                &[&vec![Uuid::now_v7()], &vec![payload]],
            )
            .await
            .expect("outbox row");
            eventually(Duration::from_secs(30), || async {
                count_rows(db, "outbox").await == 0
            })
            .await
        }
    };
    assert!(relayed(Uuid::now_v7()).await, "the relay runs");
    stack.broker.pause();
    let probe = Uuid::now_v7();
    let inserted = relayed(probe);
    tokio::pin!(inserted);
    // The fault lasts longer than a transaction may stay idle, and less than a request may.
    let frozen = tokio::time::timeout(lapse + Duration::from_secs(1), &mut inserted).await;
    assert!(
        frozen.is_err(),
        "nothing is published while the broker is frozen"
    );
    stack.broker.resume();
    assert!(inserted.await, "the outbox drains once the broker is back");
    let published = read_events(&stack.broker.address(), &stack.events_topic)
        .await
        .iter()
        .filter(|event| event["eventId"] == probe.to_string())
        .count();
    assert_eq!(published, 1, "the probe event is published once");
}
