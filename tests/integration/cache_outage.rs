//! A worker's cache upkeep while Redis does not answer: what it remembers stays bounded, and
//! balances still converge to PostgreSQL once Redis is back.

use std::time::Duration;

use reqwest::StatusCode;
use uuid::Uuid;

use crate::client::{database, deposit, Api};
use crate::harness::{eventually, tail, Stack};

const WALLETS: usize = 12;
const DROPS_MAX: usize = 4;

/// The wallet counts in the worker's `cache invalidation failed; will retry` lines: how many
/// wallets it kept a list of to drop.
fn pending_counts(log: &str) -> Vec<usize> {
    log.lines()
        .filter(|line| line.contains("cache invalidation failed; will retry"))
        .filter_map(|line| line.split("pending=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Proves the worker's list of wallets whose cached balances it must drop stays within
/// `worker.balance_drops_max` while Redis is frozen, and that every balance, each cached before
/// the outage, still converges to PostgreSQL once Redis answers again. The list used to grow by
/// every wallet a batch touched for as long as Redis stayed down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn balances_to_drop_stay_bounded_while_redis_is_frozen() {
    let stack = Stack::start(1);
    let quick = ("WALLET_REDIS__TIMEOUT_MS", "200".to_owned());
    let server = stack.serve_with(std::slice::from_ref(&quick));
    let api = Api::new(&server.base);
    let worker = stack.spawn_wallet(
        "work-drops",
        &["work"],
        &[
            quick.clone(),
            ("WALLET_WORKER__BALANCE_DROPS_MAX", DROPS_MAX.to_string()),
        ],
    );
    let mut wallets = Vec::new();
    for _ in 0..WALLETS {
        let wallet = api.new_wallet().await;
        api.fund(&wallet, "1.00").await;
        wallets.push(wallet);
    }
    for wallet in &wallets {
        let cached = eventually(Duration::from_secs(10), || async {
            api.balance(wallet).await.body["balance"] == "1.00"
        })
        .await;
        assert!(cached, "{wallet} reads 1.00");
    }

    stack.redis.process.send_signal(libc::SIGSTOP);
    for wallet in &wallets {
        let response = api.submit(&deposit(wallet, "1.00")).await;
        assert_eq!(response.status, StatusCode::ACCEPTED, "{:?}", response.body);
    }
    let db = database(&stack.postgres.url()).await;
    let ids: Vec<Uuid> = wallets
        .iter()
        .map(|wallet| Uuid::parse_str(wallet).expect("a uuid"))
        .collect();
    let applied = eventually(Duration::from_secs(60), || async {
        let row = db
            .query_one(
                "SELECT count(*) FROM wallets WHERE id = ANY($1) AND balance = 2",
                &[&ids],
            )
            .await
            .expect("counted");
        row.get::<_, i64>(0) == WALLETS as i64
    })
    .await;
    assert!(
        applied,
        "every second deposit applied while Redis is frozen"
    );
    // Once the partition is idle, the worker tries to drop what it listed (or everything).
    let tried = eventually(Duration::from_secs(30), || async {
        std::fs::read_to_string(&worker.log)
            .unwrap_or_default()
            .lines()
            .any(|line| line.contains("cache invalidation") && line.contains("failed; will retry"))
    })
    .await;
    stack.redis.process.send_signal(libc::SIGCONT);
    assert!(tried, "{}", tail(&worker.log));
    let log = std::fs::read_to_string(&worker.log).unwrap_or_default();
    let counts = pending_counts(&log);
    assert!(
        log.contains("every cached balance will be dropped once Redis answers")
            && counts.iter().all(|&count| count <= DROPS_MAX),
        "wallets to drop, as the worker counted them: {counts:?}\n{}",
        tail(&worker.log)
    );

    for wallet in &wallets {
        let converged = eventually(Duration::from_secs(10), || async {
            api.balance(wallet).await.body["balance"] == "2.00"
        })
        .await;
        assert!(
            converged,
            "{wallet} reads {:?} once Redis is back",
            api.balance(wallet).await.body
        );
    }
}

/// Balance entries the sweep test fills Redis with: several SCAN rounds' worth.
const ENTRIES: usize = 3_000;

/// Writes a balance entry at each of `keys`.
async fn fill(redis: &mut redis::aio::MultiplexedConnection, keys: &[String]) {
    let mut pipeline = redis::pipe();
    for key in keys {
        pipeline
            .cmd("HSET")
            .arg(key)
            .arg("wallet")
            .arg("{}")
            .arg("version")
            .arg(1)
            .ignore();
    }
    let () = pipeline.query_async(redis).await.expect("filled");
}

/// Whether each of `keys` still holds a balance (its `wallet` field).
async fn holding(redis: &mut redis::aio::MultiplexedConnection, keys: &[String]) -> Vec<bool> {
    let mut pipeline = redis::pipe();
    for key in keys {
        pipeline.cmd("HEXISTS").arg(key).arg("wallet");
    }
    pipeline.query_async(redis).await.expect("Redis answers")
}

/// Proves the walk dropping every cached balance goes a bounded number of SCAN rounds per
/// call, and that one interrupted by a failure (Redis frozen) goes on from where it stood: the
/// entries it had passed, written again since, are not dropped again, and every other one is.
/// The walk used to be made whole, inline in the consumer, and to start over from the first
/// key after any failed round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_of_every_balance_resumes_where_a_failure_stopped_it() {
    let server = crate::harness::Redis::start();
    let config = wallet::config::RedisConfig {
        url: server.url(),
        timeout_ms: 200,
        ..Default::default()
    };
    let cache = wallet::cache::Cache::new(&config).expect("cache");
    let mut redis = redis::Client::open(server.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connects to Redis");
    let keys: Vec<String> = (0..ENTRIES)
        .map(|n| format!("wallet:acme:{}", Uuid::from_u128(n as u128)))
        .collect();
    fill(&mut redis, &keys).await;

    let mut sweep = wallet::cache::BalanceSweep::default();
    let first = cache
        .sweep_balances(&mut sweep, 1)
        .await
        .expect("one round");
    assert_eq!(first, None, "one round does not walk {ENTRIES} keys");
    let passed: Vec<String> = keys
        .iter()
        .zip(holding(&mut redis, &keys).await)
        .filter(|(_, held)| !held)
        .map(|(key, _)| key.clone())
        .collect();
    assert!(
        !passed.is_empty() && passed.len() < ENTRIES,
        "{} dropped",
        passed.len()
    );

    server.process.send_signal(libc::SIGSTOP);
    let frozen = cache.sweep_balances(&mut sweep, 1).await;
    server.process.send_signal(libc::SIGCONT);
    assert!(frozen.is_err(), "a frozen Redis fails the round");
    fill(&mut redis, &passed).await;
    let sweep = tokio::sync::Mutex::new(sweep);
    let ended = eventually(Duration::from_secs(30), || async {
        let mut sweep = sweep.lock().await;
        matches!(cache.sweep_balances(&mut sweep, 1).await, Ok(Some(_)))
    })
    .await;
    assert!(ended, "the walk ends once Redis answers");
    assert!(
        holding(&mut redis, &passed).await.iter().all(|&held| held),
        "the entries passed before the failure are not walked again"
    );
    let rest: Vec<String> = keys
        .into_iter()
        .filter(|key| !passed.contains(key))
        .collect();
    assert!(
        holding(&mut redis, &rest).await.iter().all(|&held| !held),
        "every other entry is dropped"
    );
}
