//! The write path under load and failure: one hot wallet, order, idempotency, crashes,
//! several workers and the cache's version guard.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bigdecimal::{BigDecimal, Zero};
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;
use tokio::sync::Mutex;

use crate::client::{count_rows, deposit, withdraw, Api, System};
use crate::harness::eventually;

const SETTLE: Duration = Duration::from_secs(60);

/// Checks the journal of `wallet`: gapless versions from 1, each balance_after the running sum
/// of deltas and never negative, and the wallet row equal to the last entry.
async fn assert_journal_consistent(db: &tokio_postgres::Client, wallet: &str) -> i64 {
    let id = uuid::Uuid::parse_str(wallet).expect("uuid");
    let rows = db
        .query("SELECT version, delta::text, balance_after::text FROM entries WHERE wallet_id = $1 ORDER BY version", &[&id])
        .await
        .expect("entries");
    let mut running = BigDecimal::from(0);
    for (index, row) in rows.iter().enumerate() {
        let version: i64 = row.get(0);
        assert_eq!(version, index as i64 + 1, "versions are gapless");
        running += row
            .get::<_, String>(1)
            .parse::<BigDecimal>()
            .expect("delta");
        let after: BigDecimal = row.get::<_, String>(2).parse().expect("balance");
        assert_eq!(
            after, running,
            "balance_after is the running sum at version {version}"
        );
        assert!(after >= BigDecimal::zero(), "never negative");
    }
    let wallet_row = db
        .query_one(
            "SELECT balance::text, version FROM wallets WHERE id = $1",
            &[&id],
        )
        .await
        .expect("wallet");
    assert_eq!(
        wallet_row
            .get::<_, String>(0)
            .parse::<BigDecimal>()
            .expect("balance"),
        running
    );
    assert_eq!(wallet_row.get::<_, i64>(1), rows.len() as i64);
    rows.len() as i64
}

async fn settle_all(api: &Api, wallet: &str, operations: &[String]) -> Vec<serde_json::Value> {
    let mut statuses = Vec::with_capacity(operations.len());
    for operation in operations {
        statuses.push(api.settled(wallet, operation, SETTLE).await);
    }
    statuses
}

/// Proves 2,000 operations on one wallet from 32 concurrent clients all settle, the balance
/// equals the sum of processed deltas, versions are gapless and no balance is ever negative.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_wallet_under_concurrent_clients() {
    let system = System::start(4);
    let api = &system.api;
    let wallet = api.new_wallet().await;
    api.fund(&wallet, "100.00").await;
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let clients = (0..32).map(|client| {
        let (api, wallet, accepted) = (api.clone(), wallet.clone(), accepted.clone());
        async move {
            for n in (0..2000).filter(|n| n % 32 == client) {
                let body = if (client + n) % 3 == 0 {
                    withdraw(&wallet, "7.25")
                } else {
                    deposit(&wallet, "3.10")
                };
                let response = api.submit(&body).await;
                assert_eq!(response.status, StatusCode::ACCEPTED, "{:?}", response.body);
                let id = response.body["operationId"]
                    .as_str()
                    .expect("id")
                    .to_owned();
                accepted
                    .lock()
                    .await
                    .push((id, body["operationType"].as_str().expect("type").to_owned()));
            }
        }
    });
    join_all(clients).await;
    let accepted = accepted.lock().await.clone();
    assert_eq!(accepted.len(), 2000);
    let ids: Vec<String> = accepted.iter().map(|(id, _)| id.clone()).collect();
    let statuses = settle_all(api, &wallet, &ids).await;
    let mut expected = BigDecimal::from(100);
    for ((_, kind), status) in accepted.iter().zip(&statuses) {
        if status["status"] == "PROCESSED" {
            let amount: BigDecimal = if kind == "DEPOSIT" {
                "3.10".parse().expect("n")
            } else {
                "-7.25".parse().expect("n")
            };
            expected += amount;
        } else {
            assert_eq!(status["reason"], "INSUFFICIENT_FUNDS");
        }
    }
    let db = system.database().await;
    let versions = assert_journal_consistent(&db, &wallet).await;
    assert_eq!(
        versions,
        1 + accepted.len() as i64,
        "every operation has exactly one entry"
    );
    let balance: BigDecimal = api.balance(&wallet).await.body["balance"]
        .as_str()
        .expect("balance")
        .parse()
        .expect("n");
    assert_eq!(balance, expected);
}

/// Proves a client that waits for each 202 sees its operations applied in exactly that
/// order, across batches and partitions.
#[tokio::test]
async fn acknowledged_order_is_applied_order() {
    let system = System::start(4);
    let api = &system.api;
    let wallets = vec![
        api.new_wallet().await,
        api.new_wallet().await,
        api.new_wallet().await,
    ];
    let mut sent: Vec<(String, String)> = Vec::new();
    for n in 0..150 {
        let wallet = &wallets[n % wallets.len()];
        let operation = api
            .submit_accepted(&deposit(wallet, &format!("{}.01", n + 1)))
            .await;
        sent.push((wallet.clone(), operation));
    }
    for (wallet, operation) in &sent {
        api.settled(wallet, operation, SETTLE).await;
    }
    let db = system.database().await;
    for wallet in &wallets {
        let id = uuid::Uuid::parse_str(wallet).expect("uuid");
        let applied: Vec<String> = db
            .query(
                "SELECT operation_id::text FROM entries WHERE wallet_id = $1 ORDER BY version",
                &[&id],
            )
            .await
            .expect("entries")
            .iter()
            .map(|row| row.get(0))
            .collect();
        let expected: Vec<String> = sent
            .iter()
            .filter(|(w, _)| w == wallet)
            .map(|(_, op)| op.clone())
            .collect();
        assert_eq!(applied, expected);
    }
}

/// Proves the same request sent 50 times at once is one operation, and the same key with
/// another body is a 422.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retries_apply_once() {
    let system = System::start(2);
    let api = &system.api;
    let wallet = api.new_wallet().await;
    let body = deposit(&wallet, "10.00");
    let responses = join_all((0..50).map(|_| {
        let (api, wallet, body) = (api.clone(), wallet.clone(), body.clone());
        async move { api.submit_with_key(&wallet, "payment-42", &body).await }
    }))
    .await;
    let mut ids = HashSet::new();
    for response in &responses {
        match response.status {
            StatusCode::ACCEPTED => {
                ids.insert(
                    response.body["operationId"]
                        .as_str()
                        .expect("id")
                        .to_owned(),
                );
            }
            StatusCode::CONFLICT => assert_eq!(response.code(), "REQUEST_IN_PROGRESS"),
            other => panic!("unexpected {other}: {:?}", response.body),
        }
    }
    assert_eq!(ids.len(), 1, "one operation id for one key");
    let operation = ids.into_iter().next().expect("one id");
    api.settled(&wallet, &operation, SETTLE).await;
    let again = api.submit_with_key(&wallet, "payment-42", &body).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.body["operationId"], operation.as_str());
    // A retry answers from the marker, which the worker finalises just after its commit.
    let finalised = eventually(SETTLE, || async {
        let again = api.submit_with_key(&wallet, "payment-42", &body).await;
        again.body["status"] == "PROCESSED"
    })
    .await;
    assert!(finalised, "a retry answers the final status");
    let reused = api
        .submit_with_key(&wallet, "payment-42", &deposit(&wallet, "11.00"))
        .await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reused.code(), "IDEMPOTENCY_KEY_REUSED");
    let explicit = json!({"walletId": wallet, "operationType": "DEPOSIT", "amount": "10", "operationId": operation});
    let same_by_value = api.submit(&explicit).await;
    assert_eq!(
        same_by_value.status,
        StatusCode::ACCEPTED,
        "10 and 10.00 are the same amount"
    );
    let balance = api.balance(&wallet).await;
    assert_eq!(balance.body["balance"], "10.00");
    assert_eq!(balance.body["version"], 1);
}

/// Proves every acknowledged operation is applied exactly once when `wallet work` is
/// SIGKILLed in the middle of a stream and started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_crash_loses_and_doubles_nothing() {
    let mut system = System::start(4);
    let api = system.api.clone();
    let wallets = vec![api.new_wallet().await, api.new_wallet().await];
    let mut sent = Vec::new();
    for n in 0..600 {
        let wallet = &wallets[n % 2];
        let operation = api.submit_accepted(&deposit(wallet, "1.00")).await;
        sent.push((wallet.clone(), operation));
        if n == 300 {
            system.worker.kill();
        }
        if n == 450 {
            system.worker.start();
        }
    }
    for (wallet, operation) in &sent {
        let status = api.settled(wallet, operation, SETTLE).await;
        assert_eq!(status["status"], "PROCESSED");
    }
    let db = system.database().await;
    for wallet in &wallets {
        assert_eq!(assert_journal_consistent(&db, wallet).await, 300);
        assert_eq!(api.balance(wallet).await.body["balance"], "300.00");
    }
    assert_eq!(count_rows(&db, "operations").await, 600);
}

/// Proves two workers split the partitions, and killing one moves its partitions to the
/// other within 5 seconds, with processing continuing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_partitions_and_take_over() {
    let system = System::start(8);
    let mut second = system.stack.work("work-2");
    let db = system.database().await;
    let owners = || async {
        db.query_one(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.classid = 1463897168::oid
             GROUP BY a.pid ORDER BY count(*) LIMIT 1",
            &[],
        )
        .await
        .map(|row| row.get::<_, i64>(0))
        .unwrap_or(0)
    };
    let shared = eventually(Duration::from_secs(15), || async {
        let rows = db
            .query(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND classid = 1463897168::oid GROUP BY pid",
                &[],
            )
            .await
            .expect("locks");
        let counts: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
        counts.len() == 2 && counts.iter().all(|count| *count == 4)
    })
    .await;
    assert!(shared, "two workers hold four partitions each");
    assert!(owners().await == 4);
    second.kill();
    let took_over = eventually(Duration::from_secs(5), || async {
        let rows = db
            .query("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND classid = 1463897168::oid GROUP BY pid", &[])
            .await
            .expect("locks");
        rows.len() == 1 && rows[0].get::<_, i64>(0) == 8
    })
    .await;
    assert!(
        took_over,
        "the survivor owns all eight partitions within 5 s"
    );
    let api = &system.api;
    let wallets: Vec<String> = join_all((0..16).map(|_| api.new_wallet())).await;
    for wallet in &wallets {
        api.fund(wallet, "1.00").await;
    }
}

/// A cache entry of a USD wallet of the tenant `default`.
/// The wallet `id` of the default tenant, whose entries `cached_wallet` makes.
fn in_default(id: wallet::ledger::types::WalletId) -> wallet::ledger::types::ScopedWalletId {
    wallet::ledger::types::ScopedWalletId {
        tenant: "default".to_owned(),
        id,
    }
}

fn cached_wallet(
    id: wallet::ledger::types::WalletId,
    version: i64,
    balance: &str,
) -> wallet::cache::CachedWallet {
    let now = chrono::Utc::now();
    wallet::cache::CachedWallet {
        wallet_id: id,
        tenant: "default".to_owned(),
        currency: wallet::ledger::money::Currency::USD,
        balance: balance.to_owned(),
        overdraft_limit: None,
        available: None,
        held: None,
        version,
        created_at: now,
        updated_at: now,
    }
}

/// Proves the version guard: an older balance never replaces a newer one in Redis.
#[tokio::test]
async fn stale_cache_writes_are_ignored() {
    let system = System::start(2);
    let config = wallet::config::RedisConfig {
        url: system.stack.redis.url(),
        ..Default::default()
    };
    let cache = wallet::cache::Cache::new(&config).expect("cache");
    let entry = |version: i64, balance: &str| {
        cached_wallet(
            wallet::ledger::types::WalletId(uuid::Uuid::nil()),
            version,
            balance,
        )
    };
    assert_eq!(
        cache
            .store_balances(&[entry(5, "5.00")])
            .await
            .expect("stored"),
        1
    );
    assert_eq!(
        cache
            .store_balances(&[entry(4, "4.00")])
            .await
            .expect("ignored"),
        0
    );
    assert_eq!(
        cache
            .store_balances(&[entry(5, "9.99")])
            .await
            .expect("ignored"),
        0
    );
    let cached = cache
        .balance(&in_default(wallet::ledger::types::WalletId(
            uuid::Uuid::nil(),
        )))
        .await
        .expect("read")
        .expect("present");
    assert_eq!((cached.version, cached.balance.as_str()), (5, "5.00"));
    assert_eq!(
        cache
            .store_balances(&[entry(6, "6.00")])
            .await
            .expect("stored"),
        1
    );
}

/// Proves a worker's refresh skips a wallet only at a version its own process wrote: an entry
/// Redis lost is then a miss, never an older balance; another process (the relay of another
/// worker) still writes it, a newer version is always written, and once this process dropped
/// the entry it writes that version again.
#[tokio::test]
async fn a_refresh_skips_only_versions_this_process_wrote() {
    let redis = crate::harness::Redis::start();
    let config = wallet::config::RedisConfig {
        url: redis.url(),
        ..Default::default()
    };
    let here = wallet::cache::Cache::new(&config).expect("cache");
    let elsewhere = wallet::cache::Cache::new(&config).expect("cache");
    let id = wallet::ledger::types::WalletId(uuid::Uuid::from_u128(7));
    let entry = |version: i64| cached_wallet(id, version, &format!("{version}.00"));
    let refresh = |cache: &wallet::cache::Cache, version: i64| {
        let (cache, wallet) = (cache.clone(), entry(version));
        async move { cache.refresh_balances(&[wallet]).await.expect("refresh") }
    };
    let version = |cache: wallet::cache::Cache| async move {
        cache
            .balance(&in_default(id))
            .await
            .expect("read")
            .map(|wallet| wallet.version)
    };
    assert_eq!(refresh(&here, 5).await, 1, "a first write");
    let mut connection = redis::Client::open(redis.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connects to Redis");
    let () = redis::cmd("DEL")
        .arg(format!("wallet:default:{id}"))
        .query_async(&mut connection)
        .await
        .expect("the entry is lost");
    assert_eq!(refresh(&here, 5).await, 0, "skipped: this process wrote it");
    assert_eq!(
        version(here.clone()).await,
        None,
        "a miss, not a stale balance"
    );
    assert_eq!(refresh(&elsewhere, 5).await, 1, "another process writes it");
    assert_eq!(
        refresh(&here, 4).await,
        0,
        "an older version is never written"
    );
    assert_eq!(version(here.clone()).await, Some(5));
    assert_eq!(
        refresh(&here, 6).await,
        1,
        "a newer version is always written"
    );
    here.forget_balances(&[in_default(id)])
        .await
        .expect("dropped");
    assert_eq!(version(here.clone()).await, None);
    assert_eq!(refresh(&here, 6).await, 1, "written again once dropped");
    assert_eq!(version(here).await, Some(6));
}

/// Proves a dropped balance keeps its version guard: a write that was late already (a refill
/// read from PostgreSQL before a pause) cannot put back an older balance, while the dropped
/// version itself and newer ones are written. Before, the entry was deleted, and the older
/// balance came back until the wallet's next change.
#[tokio::test]
async fn a_dropped_balance_keeps_its_version_guard() {
    let redis = crate::harness::Redis::start();
    let config = wallet::config::RedisConfig {
        url: redis.url(),
        ..Default::default()
    };
    let cache = wallet::cache::Cache::new(&config).expect("cache");
    let id = wallet::ledger::types::WalletId(uuid::Uuid::from_u128(8));
    let store = |version: i64| {
        let (cache, wallet) = (
            cache.clone(),
            cached_wallet(id, version, &format!("{version}.00")),
        );
        async move { cache.store_balances(&[wallet]).await.expect("store") }
    };
    let version = || {
        let cache = cache.clone();
        async move {
            cache
                .balance(&in_default(id))
                .await
                .expect("read")
                .map(|wallet| wallet.version)
        }
    };
    assert_eq!(store(12).await, 1);
    cache
        .forget_balances(&[in_default(id)])
        .await
        .expect("dropped");
    assert_eq!(version().await, None, "a dropped balance is a miss");
    assert_eq!(store(11).await, 0, "an older balance never comes back");
    assert_eq!(version().await, None);
    assert_eq!(store(12).await, 1, "the dropped version is written again");
    assert_eq!(version().await, Some(12));
    assert_eq!(store(12).await, 0, "once, while it is there");
    assert_eq!(store(13).await, 1);
    assert_eq!(version().await, Some(13));
}

/// Proves two tenants' wallets with the same id have a balance entry and a version guard each:
/// a newer version of one never hides the other's, and dropping one leaves the other cached.
#[tokio::test]
async fn each_tenants_balance_entry_is_its_own() {
    let redis = crate::harness::Redis::start();
    let config = wallet::config::RedisConfig {
        url: redis.url(),
        ..Default::default()
    };
    let cache = wallet::cache::Cache::new(&config).expect("cache");
    let id = wallet::ledger::types::WalletId(uuid::Uuid::from_u128(9));
    let of = |tenant: &str, version: i64, balance: &str| wallet::cache::CachedWallet {
        tenant: tenant.to_owned(),
        ..cached_wallet(id, version, balance)
    };
    let scoped = |tenant: &str| wallet::ledger::types::ScopedWalletId {
        tenant: tenant.to_owned(),
        id,
    };
    let read = |tenant: &'static str| {
        let (cache, wallet) = (cache.clone(), scoped(tenant));
        async move {
            cache
                .balance(&wallet)
                .await
                .expect("read")
                .map(|cached| (cached.version, cached.balance))
        }
    };
    assert_eq!(
        cache
            .store_balances(&[of("acme", 9, "9.00"), of("globex", 2, "2.00")])
            .await
            .expect("stored"),
        2,
        "an older version of another tenant's wallet is a wallet of its own"
    );
    assert_eq!(read("acme").await, Some((9, "9.00".to_owned())));
    assert_eq!(read("globex").await, Some((2, "2.00".to_owned())));
    cache
        .forget_balances(&[scoped("acme")])
        .await
        .expect("dropped");
    assert_eq!(read("acme").await, None);
    assert_eq!(read("globex").await, Some((2, "2.00".to_owned())));
    assert_eq!(
        cache
            .store_balances(&[of("acme", 8, "8.00")])
            .await
            .expect("refused"),
        0,
        "the dropped entry keeps its own guard"
    );
    assert_eq!(
        cache
            .store_balances(&[of("globex", 3, "3.00")])
            .await
            .expect("stored"),
        1
    );
    assert_eq!(read("globex").await, Some((3, "3.00".to_owned())));
}

/// Proves a record that cannot be decoded becomes a dead letter and an operation on a missing
/// wallet becomes FAILED, and the partition moves on to the next record.
#[tokio::test]
async fn poison_records_do_not_stop_the_partition() {
    let system = System::start(1);
    let api = &system.api;
    let wallet = api.new_wallet().await;
    let client = rskafka::client::ClientBuilder::new(vec![system.stack.broker.address()])
        .build()
        .await
        .expect("connects");
    let partition = client
        .partition_client(
            &system.stack.operations_topic,
            0,
            rskafka::client::partition::UnknownTopicHandling::Error,
        )
        .await
        .expect("partition");
    let missing = uuid::Uuid::new_v4();
    let orphan = uuid::Uuid::new_v4();
    let orphan_message = json!({
        "v": 1, "operationId": orphan, "walletId": missing, "type": "DEPOSIT", "amount": "1",
        "acceptedAt": chrono::Utc::now(), "fingerprint": "f"
    });
    let records = [
        b"not json".to_vec(),
        serde_json::to_vec(&orphan_message).expect("json"),
    ]
    .into_iter()
    .map(|value| rskafka::record::Record {
        key: None,
        value: Some(value),
        headers: Default::default(),
        timestamp: chrono::Utc::now(),
    })
    .collect();
    let offsets = partition
        .produce(records, Default::default())
        .await
        .expect("produced");
    api.fund(&wallet, "2.00").await;
    let db = system.database().await;
    let dead = db
        .query_one(
            "SELECT \"offset\", reason FROM dead_letters WHERE partition = 0",
            &[],
        )
        .await
        .expect("one dead letter");
    assert_eq!(dead.get::<_, i64>(0), offsets[0]);
    assert!(dead
        .get::<_, String>(1)
        .contains("not an operation message"));
    let failed = db
        .query_one(
            "SELECT status, reason FROM operations WHERE id = $1",
            &[&orphan],
        )
        .await
        .expect("orphan recorded");
    assert_eq!(
        (
            failed.get::<_, String>(0).as_str(),
            failed.get::<_, String>(1).as_str()
        ),
        ("FAILED", "WALLET_NOT_FOUND")
    );
}
