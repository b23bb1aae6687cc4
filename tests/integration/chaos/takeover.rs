//! Regressions the bank test found, each a focused test: a paused worker's partitions are
//! taken over, and the cache catches up with a batch whose worker died before writing it.

use std::time::{Duration, Instant};

use futures::future::join_all;
use rskafka::client::partition::UnknownTopicHandling;
use rskafka::client::ClientBuilder;

use crate::client::System;
use crate::harness::eventually;

/// Proves a worker paused for longer than its lease loses its partitions to the live worker,
/// which goes on applying operations meanwhile, and that once resumed it rejoins and nothing
/// is applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_worker_loses_its_partitions() {
    let system = System::start(8);
    let second = system.stack.spawn_wallet("work-2", &["work"], &[]);
    let db = system.database().await;
    let holdings = || async {
        let rows = db
            .query(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2
                   AND classid = 1463897168::oid GROUP BY pid ORDER BY count(*)",
                &[],
            )
            .await
            .expect("locks");
        rows.iter()
            .map(|row| row.get::<_, i64>(0))
            .collect::<Vec<i64>>()
    };
    let split = eventually(Duration::from_secs(15), || async {
        holdings().await == [4, 4]
    })
    .await;
    assert!(split, "two workers hold four partitions each");
    let api = &system.api;
    let wallets: Vec<String> = join_all((0..16).map(|_| api.new_wallet())).await;
    second.send_signal(libc::SIGSTOP);
    let paused = Instant::now();
    let took_over = eventually(Duration::from_secs(10), || async {
        holdings().await == [8]
    })
    .await;
    assert!(
        took_over,
        "the live worker owns all eight partitions while the other is paused: {:?}",
        holdings().await
    );
    eprintln!("taken over {:?} after the pause began", paused.elapsed());
    for wallet in &wallets {
        api.fund(wallet, "1.00").await;
    }
    second.send_signal(libc::SIGCONT);
    let rejoined = eventually(Duration::from_secs(15), || async {
        holdings().await == [4, 4]
    })
    .await;
    assert!(
        rejoined,
        "the resumed worker rejoins: {:?}",
        holdings().await
    );
    for wallet in &wallets {
        api.fund(wallet, "2.00").await;
        let balance = api.balance(wallet).await;
        assert_eq!(balance.body["balance"], "3.00", "{:?}", balance.body);
        assert_eq!(balance.body["version"], 2, "{:?}", balance.body);
    }
    let stored: i64 = db
        .query_one("SELECT count(*) FROM entries", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(stored, 32, "each deposit has exactly one entry");
}

/// Proves the cache catches up with a batch whose worker died between its commit and its own
/// cache write (killed in that window, or stopped mid-commit when its partition moved), the
/// failure `bank` found: the batch is committed here exactly as such a worker leaves it, and
/// the next worker must bring Redis to the committed balance although the partition has
/// nothing left to consume and the wallet sees no further operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_catches_up_with_a_batch_whose_worker_died() {
    let mut system = System::start(1);
    let api = system.api.clone();
    let account = api.new_wallet().await;
    api.fund(&account, "1.00").await;
    assert_eq!(api.balance(&account).await.body["version"], 1);
    system.worker.kill();
    let operation = api
        .submit_accepted(&crate::client::deposit(&account, "2.00"))
        .await;
    let mut client = crate::client::store_client(&system.stack.postgres.url()).await;
    let position = ::wallet::ledger::store::next_offset(&client, &system.stack.operations_topic, 0)
        .await
        .expect("the stored position");
    let kafka = ClientBuilder::new(vec![system.stack.broker.address()])
        .build()
        .await
        .expect("connects to the broker");
    let partition = kafka
        .partition_client(
            &system.stack.operations_topic,
            0,
            UnknownTopicHandling::Error,
        )
        .await
        .expect("partition");
    let (records, _) = partition
        .fetch_records(position, 1..1_000_000, 100)
        .await
        .expect("fetch");
    let operations: Vec<(i64, ::wallet::ledger::types::Operation)> = records
        .into_iter()
        .filter(|record| record.offset >= position)
        .map(|record| {
            let value = record.record.value.expect("a value");
            let operation = ::wallet::ingest::codec::decode(&value).expect("an operation");
            (record.offset, operation)
        })
        .collect();
    assert_eq!(operations.len(), 1, "the deposit waits on the topic");
    assert_eq!(operations[0].1.id.to_string(), operation);
    let batch = ::wallet::ledger::store::Batch {
        topic: system.stack.operations_topic.clone(),
        partition: 0,
        from_offset: position,
        next_offset: operations[0].0 + 1,
        operations,
        dead_letters: Vec::new(),
    };
    ::wallet::ledger::store::apply_batch(&mut client, &batch, chrono::Utc::now)
        .await
        .expect("the batch commits");
    let stale = api.balance(&account).await;
    assert_eq!(
        (
            stale.body["version"].as_i64(),
            stale.body["balance"].as_str()
        ),
        (Some(1), Some("1.00")),
        "the cache still holds the balance from before the batch"
    );
    system.worker.start();
    let converged = eventually(Duration::from_secs(10), || async {
        let balance = api.balance(&account).await;
        balance.body["version"] == 2 && balance.body["balance"] == "3.00"
    })
    .await;
    assert!(
        converged,
        "the cache converges to the committed balance: {:?}",
        api.balance(&account).await.body
    );
}
