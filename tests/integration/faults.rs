//! The API when a dependency or the API process itself fails: clients retry with the same
//! key and nothing is applied twice.

use std::time::Duration;

use reqwest::StatusCode;

use crate::client::{deposit, transfer, Api, System};
use crate::harness::eventually;

const SETTLE: Duration = Duration::from_secs(60);

/// Retries a keyed submission until it is accepted, as a careful client would.
async fn submit_until_accepted(api: &Api, wallet: &str, key: &str, amount: &str) -> String {
    let start = std::time::Instant::now();
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(10),
            api.try_submit_with_key(wallet, key, &deposit(wallet, amount)),
        )
        .await;
        if let Ok(Some(response)) = attempt {
            if response.status == StatusCode::ACCEPTED {
                return response.body["operationId"]
                    .as_str()
                    .expect("id")
                    .to_owned();
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{key} was never accepted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Proves an unreachable broker answers 503 with Retry-After, and a retry with the same key
/// after the broker is back is applied exactly once.
#[tokio::test]
async fn broker_outage_is_a_retryable_503() {
    let mut system = System::start_with_own_broker(2);
    let api = system.api.clone();
    let wallet = api.new_wallet().await;
    system.stack.broker.stop();
    // A fresh client: the pooled connection idled while the broker stopped, and a client
    // reusing a connection the server is closing sees a transport error instead of an answer.
    let api = Api::new(&system.server.base);
    let response = api
        .submit_with_key(&wallet, "during-outage", &deposit(&wallet, "5.00"))
        .await;
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.code(), "BROKER_UNAVAILABLE");
    assert!(response.retry_after.is_some(), "Retry-After is set");
    system.stack.broker.start_again();
    let operation = submit_until_accepted(&api, &wallet, "during-outage", "5.00").await;
    let status = api.settled(&wallet, &operation, SETTLE).await;
    assert_eq!(status["status"], "PROCESSED");
    assert_eq!(api.balance(&wallet).await.body["version"], 1);
}

/// Proves that with Redis down, writes are still accepted and applied and balances are read
/// from PostgreSQL.
#[tokio::test]
async fn redis_outage_degrades_to_postgres() {
    let mut system = System::start(2);
    let api = system.api.clone();
    let wallet = api.new_wallet().await;
    api.fund(&wallet, "3.00").await;
    system.stack.redis.process.kill();
    api.fund(&wallet, "4.00").await;
    let balance = api.balance(&wallet).await;
    assert_eq!(balance.status, StatusCode::OK);
    assert_eq!(balance.body["balance"], "7.00");
    system.stack.redis.process.start();
    let refreshed = crate::harness::eventually(Duration::from_secs(10), || async {
        api.balance(&wallet).await.body["version"] == 2
    })
    .await;
    assert!(refreshed);
}

/// Proves a frozen Redis costs one request its deadline, not every request: once a call
/// timed out, the others fail at once and fall back to PostgreSQL (or answer 503 where only
/// Redis can tell), until Redis answers again, which is noticed within moments. Before, each
/// balance read waited out the deadline twice (the cache read and its refill).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_costs_its_deadline_once_not_per_request() {
    let stack = crate::harness::Stack::start(1);
    let timeout = Duration::from_secs(3);
    let server = stack.serve_with(&[("WALLET_REDIS__TIMEOUT_MS", timeout.as_millis().to_string())]);
    let _worker = stack.work("work-1");
    let api = Api::new(&server.base);
    let wallet = api.new_wallet().await;
    api.fund(&wallet, "3.00").await;
    stack.redis.pause();
    let first = api.balance(&wallet).await;
    assert_eq!(first.body["balance"], "3.00", "{:?}", first.body);
    let started = std::time::Instant::now();
    for _ in 0..10 {
        let read = api.balance(&wallet).await;
        assert_eq!(read.body["balance"], "3.00", "{:?}", read.body);
    }
    let took = started.elapsed();
    stack.redis.resume();
    assert!(
        took < timeout,
        "10 balance reads with Redis frozen took {took:?}, a deadline being {timeout:?}"
    );
    let back = eventually(Duration::from_secs(10), || async {
        api.submit_with_key(&wallet, "after-the-freeze", &deposit(&wallet, "1.00"))
            .await
            .status
            == StatusCode::ACCEPTED
    })
    .await;
    assert!(back, "a keyed submission was never accepted again");
}

/// Proves a SIGKILLed API process loses nothing: every keyed request is retried until
/// accepted and each is applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_crash_with_client_retries_applies_each_once() {
    let mut system = System::start(4);
    let api = system.api.clone();
    let wallet = api.new_wallet().await;
    let mut operations = Vec::new();
    for n in 0..200 {
        if n == 100 {
            system.server.process.kill();
            system.server.start_again();
        }
        operations.push(submit_until_accepted(&api, &wallet, &format!("crash-{n}"), "1.00").await);
    }
    for operation in &operations {
        assert_eq!(
            api.settled(&wallet, operation, SETTLE).await["status"],
            "PROCESSED"
        );
    }
    let balance = api.balance(&wallet).await;
    assert_eq!(balance.body["balance"], "200.00");
    assert_eq!(balance.body["version"], 200);
}

/// Proves `wallet work` started while PostgreSQL is down waits for it instead of exiting, and
/// applies what was accepted meanwhile once it is back. It used to exit at once, so a worker
/// restarted during a database restart stayed down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_while_postgres_is_down_comes_up_with_it() {
    let mut stack = crate::harness::Stack::start(1);
    let server = stack.serve();
    let api = Api::new(&server.base);
    let wallet = api.new_wallet().await;
    stack.postgres.stop();
    let mut worker = stack.work("work-1");
    let waiting = crate::harness::eventually(SETTLE, || async {
        std::fs::read_to_string(&worker.log)
            .unwrap_or_default()
            .contains("PostgreSQL is not reachable yet; retrying")
    })
    .await;
    assert!(waiting, "the worker waits for PostgreSQL");
    let operation = submit_until_accepted(&api, &wallet, "after-restart", "3.00").await;
    stack.postgres.start_again();
    let status = api.settled(&wallet, &operation, SETTLE).await;
    assert_eq!(status["status"], "PROCESSED", "{status}");
    assert!(worker.is_running(), "the worker is still running");
}

/// Proves a submission whose id the client chose is refused with 503 while Redis cannot be
/// asked (its id may be bound to other content there), and is accepted and applied once when
/// retried after Redis is back. It used to be accepted blind, so a reused id with other
/// content got 202 and became a dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chosen_id_is_not_accepted_while_redis_is_down() {
    let mut system = System::start(1);
    let api = system.api.clone();
    let wallet = api.new_wallet().await;
    let keyed = api
        .submit_with_key(&wallet, "order-7", &deposit(&wallet, "5.00"))
        .await;
    assert_eq!(keyed.status, StatusCode::ACCEPTED, "{:?}", keyed.body);
    system.stack.redis.process.kill();
    let reused = api
        .submit_with_key(&wallet, "order-7", &deposit(&wallet, "9.00"))
        .await;
    assert_eq!(
        reused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        reused.body
    );
    assert_eq!(reused.code(), "CACHE_UNAVAILABLE");
    assert!(
        reused.retry_after.is_some(),
        "the answer says when to retry"
    );
    let fresh = api.submit(&deposit(&wallet, "1.00")).await;
    assert_eq!(
        fresh.status,
        StatusCode::ACCEPTED,
        "a generated id needs no marker"
    );
    system.stack.redis.process.start();
    let id = keyed.body["operationId"].as_str().expect("id").to_owned();
    assert_eq!(
        api.settled(&wallet, &id, SETTLE).await["status"],
        "PROCESSED"
    );
    let fresh_id = fresh.body["operationId"].as_str().expect("id").to_owned();
    assert_eq!(
        api.settled(&wallet, &fresh_id, SETTLE).await["status"],
        "PROCESSED"
    );
    let db = system.database().await;
    assert_eq!(crate::client::count_rows(&db, "dead_letters").await, 0);
    assert_eq!(api.balance(&wallet).await.body["balance"], "6.00");
}

/// Proves a pending transfer's status is read from both of its wallets, and that while Redis
/// is down a status PostgreSQL does not know yet is 503 with Retry-After, never 404: only the
/// marker knows a pending operation, and a client polling `Location` must not conclude that
/// an accepted one does not exist. Both used to be 404. No worker runs, so the transfer stays
/// pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_status_is_never_a_404() {
    let mut stack = crate::harness::Stack::start(1);
    let server = stack.serve();
    let api = Api::new(&server.base);
    let source = api.new_wallet().await;
    let target = api.new_wallet().await;
    let accepted = api
        .submit_with_key(&source, "pay-1", &transfer(&source, &target, "2.00"))
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{:?}", accepted.body);
    let id = accepted.body["operationId"]
        .as_str()
        .expect("id")
        .to_owned();
    for wallet in [&source, &target] {
        let pending = api.status(wallet, &id).await;
        assert_eq!(
            pending.status,
            StatusCode::OK,
            "{wallet}: {:?}",
            pending.body
        );
        assert_eq!(pending.body["status"], "PENDING", "{wallet}");
        assert_eq!(pending.body["walletId"], source.as_str(), "{wallet}");
    }
    stack.redis.process.kill();
    let unknown = api.status(&source, &id).await;
    assert_eq!(
        unknown.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        unknown.body
    );
    assert_eq!(unknown.code(), "CACHE_UNAVAILABLE");
    assert!(
        unknown.retry_after.is_some(),
        "the answer says when to retry"
    );
}

/// Proves an operation answered 202 is never 404 once its marker is lost (Redis restarted
/// empty, or a refused marker write): while its partition still has records to apply, its
/// status is 503 OPERATION_MAY_BE_PENDING; once applied, PROCESSED; and an id nobody
/// submitted is 404 once the partition is applied to its end. It was 404 until applied.
#[tokio::test]
async fn an_accepted_operation_whose_marker_is_lost_is_never_a_404() {
    let stack = crate::harness::Stack::start(1);
    let server = stack.serve();
    let api = Api::new(&server.base);
    let wallet = api.new_wallet().await;
    let id = api.submit_accepted(&deposit(&wallet, "2.00")).await;
    let redis = redis::Client::open(stack.redis.url()).expect("redis url");
    let mut redis = redis
        .get_multiplexed_async_connection()
        .await
        .expect("connects to Redis");
    let () = redis::cmd("FLUSHALL")
        .query_async(&mut redis)
        .await
        .expect("the markers are gone");
    let unknown = uuid::Uuid::now_v7().to_string();
    for asked in [&id, &unknown] {
        let answer = api.status(&wallet, asked).await;
        assert_eq!(
            answer.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{asked}: {:?}",
            answer.body
        );
        assert_eq!(answer.code(), "OPERATION_MAY_BE_PENDING");
        assert!(
            answer.retry_after.is_some(),
            "the answer says when to retry"
        );
    }
    let _worker = stack.work("work-1");
    assert_eq!(
        api.settled(&wallet, &id, SETTLE).await["status"],
        "PROCESSED"
    );
    let missing = eventually(SETTLE, || async {
        api.status(&wallet, &unknown).await.status == StatusCode::NOT_FOUND
    })
    .await;
    assert!(missing, "{:?}", api.status(&wallet, &unknown).await.body);
}

/// Whether the log at `path` has a line with every one of `parts`.
fn logged(path: &std::path::Path, parts: &[&str]) -> bool {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .any(|line| parts.iter().all(|part| line.contains(part)))
}

/// Proves a logged database error carries its SQLSTATE and the server's message: a request
/// the database fails (its table gone) and the worker's lease connection the server ends.
#[tokio::test]
async fn database_errors_are_logged_with_sqlstate_and_message() {
    let system = System::start(1);
    // An applied deposit: the worker holds its lease connection by then.
    let wallet = system.api.new_wallet().await;
    system.api.fund(&wallet, "1.00").await;
    let db = system.database().await;
    db.batch_execute("ALTER TABLE wallets RENAME TO wallets_away")
        .await
        .expect("the table goes away");
    let response = system.api.create_wallet(serde_json::json!({})).await;
    assert_eq!(response.status, StatusCode::INTERNAL_SERVER_ERROR);
    let server_log = system.server.process.log.clone();
    let seen = eventually(SETTLE, || async {
        logged(&server_log, &["database error", "42P01", "wallets"])
    })
    .await;
    assert!(seen, "{}", crate::harness::tail(&server_log));
    db.batch_execute("ALTER TABLE wallets_away RENAME TO wallets")
        .await
        .expect("the table comes back");

    db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE pid <> pg_backend_pid() AND datname = current_database()",
        &[],
    )
    .await
    .expect("the server ends the other sessions");
    let worker_log = system.worker.log.clone();
    let seen = eventually(SETTLE, || async {
        logged(
            &worker_log,
            &[
                "PostgreSQL connection closed",
                "57P01",
                "terminating connection",
            ],
        )
    })
    .await;
    assert!(seen, "{}", crate::harness::tail(&worker_log));
}
