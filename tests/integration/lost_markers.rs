//! Idempotency markers Redis lost or refused to write: the answers stay those of the
//! operation PostgreSQL holds, and a wait for a decision ends when the decision comes.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::client::{deposit, Api, System};
use crate::harness::eventually;
use crate::wait::{post, submit_waiting};

const SETTLE: Duration = Duration::from_secs(60);

async fn redis(system: &System) -> redis::aio::MultiplexedConnection {
    redis::Client::open(system.stack.redis.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connects to Redis")
}

/// Whether a retry of the `first` request comes to be answered with its status, PROCESSED.
async fn retried_as_first(api: &Api, first: &Value) -> bool {
    eventually(SETTLE, || async {
        let retry = api.submit(first).await;
        retry.status.is_success() && retry.body["status"] == "PROCESSED"
    })
    .await
}

/// Proves an id reused with other content once Redis lost the first request's marker
/// (restarted empty, or the marker's TTL passed) stays the first request's: a wait for the
/// second request answers 422 IDEMPOTENCY_KEY_REUSED, the first request's retries answer its
/// status and the second's 422, and only the first was applied. The second request's
/// `Pending` marker used to stay: the first's retries got 422, and the second's wait answered
/// PROCESSED with the first's content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_reused_after_its_marker_is_lost_stays_the_first_requests() {
    let system = System::start(1);
    let api = &system.api;
    let wallet = api.new_wallet().await;
    let id = uuid::Uuid::new_v4().to_string();
    let with_id = |amount| {
        let mut body = deposit(&wallet, amount);
        body["operationId"] = json!(id);
        body
    };
    let (first, second) = (with_id("1.00"), with_id("2.00"));
    let decided = submit_waiting(&api.base, "wait=20", &first).await;
    assert_eq!(decided.body["status"], "PROCESSED", "{}", decided.body);
    let () = redis::cmd("FLUSHALL")
        .query_async(&mut redis(&system).await)
        .await
        .expect("the markers are gone");

    let reused = submit_waiting(&api.base, "wait=10", &second).await;
    assert_eq!(
        (reused.status, &reused.body["code"]),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!("IDEMPOTENCY_KEY_REUSED")
        ),
        "{}",
        reused.body
    );
    assert!(
        retried_as_first(api, &first).await,
        "a retry of the first: {}",
        api.submit(&first).await.body
    );
    let retry = api.submit(&second).await;
    assert_eq!(
        retry.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        retry.body
    );
    assert_eq!(retry.code(), "IDEMPOTENCY_KEY_REUSED");
    let status = api.status(&wallet, &id).await;
    assert_eq!(status.body["amount"], "1.00", "{:?}", status.body);
    assert_eq!(api.balance(&wallet).await.body["balance"], "1.00");
}

/// Proves a batch item that reuses an id once Redis lost its marker is refused 422
/// IDEMPOTENCY_KEY_REUSED when the batch waits for its decisions, as a single submission
/// is, rather than answered the first request's PROCESSED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_item_reusing_an_id_whose_marker_is_lost_is_refused() {
    let system = System::start(1);
    let api = &system.api;
    let wallet = api.new_wallet().await;
    let id = uuid::Uuid::new_v4().to_string();
    let mut first = deposit(&wallet, "1.00");
    first["operationId"] = json!(id);
    let decided = submit_waiting(&api.base, "wait=20", &first).await;
    assert_eq!(decided.body["status"], "PROCESSED", "{}", decided.body);
    let () = redis::cmd("FLUSHALL")
        .query_async(&mut redis(&system).await)
        .await
        .expect("the markers are gone");

    let mut second = deposit(&wallet, "2.00");
    second["operationId"] = json!(id);
    let answer = post(
        &format!("{}/api/v1/operations/batch", api.base),
        &[("Prefer", "wait=10")],
        json!({ "operations": [second, deposit(&wallet, "3.00")] }).to_string(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let results = &answer.body["results"];
    assert_eq!(
        results[0]["problem"]["code"], "IDEMPOTENCY_KEY_REUSED",
        "{}",
        answer.body
    );
    assert_eq!(results[1]["status"], "PROCESSED", "{}", answer.body);
    assert_eq!(api.balance(&wallet).await.body["balance"], "4.00");
}

/// Proves a wait woken by the decision's announcement answers the decision at once while
/// Redis refuses to store it (out of memory: writes fail, PUBLISH still goes out), read from
/// PostgreSQL. It used to sleep to its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_answers_when_redis_refuses_the_final_marker() {
    let system = System::start(1);
    let api = &system.api;
    let wallet = api.new_wallet().await;
    let warm = submit_waiting(&api.base, "wait=20", &deposit(&wallet, "1.00")).await;
    assert_eq!(warm.body["status"], "PROCESSED", "{}", warm.body);
    let mut redis = redis(&system).await;
    for (name, value) in [("maxmemory-policy", "noeviction"), ("maxmemory", "1")] {
        let () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query_async(&mut redis)
            .await
            .expect("Redis takes the setting");
    }
    let refused: redis::RedisResult<()> = redis::cmd("SET")
        .arg("probe")
        .arg("1")
        .query_async(&mut redis)
        .await;
    assert!(refused.is_err(), "Redis refuses writes");

    let deadline = 20;
    let answer = submit_waiting(
        &api.base,
        &format!("wait={deadline}"),
        &deposit(&wallet, "2.00"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["status"], "PROCESSED", "{}", answer.body);
    assert!(
        answer.took < Duration::from_secs(deadline / 2),
        "answered after {:?}",
        answer.took
    );
}

/// Proves the first request's marker is written back once the read of its stored decision,
/// which failed when the reusing request was kept as a dead letter, succeeds again: the first
/// request's retries then answer its status, and the second's 422. The write-back used to be
/// tried once: the second request's `Pending` marker stayed for `redis.marker_ttl_s`, and the
/// first's retries got 422. A wallet currency the ledger cannot read stands in for a
/// PostgreSQL that fails that read (a pool timeout, a restart), as nothing else reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_requests_marker_is_written_back_once_its_read_recovers() {
    let system = System::start(1);
    let api = &system.api;
    let (wallet, other) = (api.new_wallet().await, api.new_wallet().await);
    let id = uuid::Uuid::new_v4().to_string();
    let with_id = |wallet: &str, amount| {
        let mut body = deposit(wallet, amount);
        body["operationId"] = json!(id);
        body
    };
    let (first, second) = (with_id(&wallet, "1.00"), with_id(&other, "2.00"));
    let decided = submit_waiting(&api.base, "wait=20", &first).await;
    assert_eq!(decided.body["status"], "PROCESSED", "{}", decided.body);
    let () = redis::cmd("FLUSHALL")
        .query_async(&mut redis(&system).await)
        .await
        .expect("the markers are gone");
    let db = system.database().await;
    let set_currency = |code: String| {
        let (db, wallet) = (&db, wallet.clone());
        async move {
            db.execute(
                "UPDATE wallets SET currency = $1 WHERE id = $2::text::uuid",
                &[&code, &wallet],
            )
            .await
            .expect("the wallet's currency is set")
        }
    };
    let currency: String = db
        .query_one(
            "SELECT currency FROM wallets WHERE id = $1::text::uuid",
            &[&wallet],
        )
        .await
        .expect("the wallet is stored")
        .get(0);
    assert_eq!(set_currency("X?".to_owned()).await, 1);

    api.submit_accepted(&second).await;
    let failed = eventually(SETTLE, || async {
        std::fs::read_to_string(&system.worker.log)
            .unwrap_or_default()
            .contains("cannot read the stored decisions")
    })
    .await;
    assert!(failed, "the read of the first request's decision fails");
    set_currency(currency).await;

    assert!(
        retried_as_first(api, &first).await,
        "a retry of the first: {}",
        api.submit(&first).await.body
    );
    let retry = api.submit(&second).await;
    assert_eq!(retry.code(), "IDEMPOTENCY_KEY_REUSED", "{}", retry.body);
    assert_eq!(api.balance(&wallet).await.body["balance"], "1.00");
    assert_eq!(api.balance(&other).await.body["balance"], "0.00");
}
