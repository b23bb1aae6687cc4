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
