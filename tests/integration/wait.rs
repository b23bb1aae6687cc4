//! `Prefer: wait=N` on submissions, against the real stack: the answer carries the worker's
//! decision when it comes in time, and is the usual 202 at the deadline when it does not.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::client::{deposit, withdraw, Api, System};
use crate::harness::{eventually, Stack};

/// A submission's answer with what these tests look at.
pub struct Answer {
    pub status: StatusCode,
    pub preference_applied: Option<String>,
    pub body: Value,
    pub took: Duration,
}

pub async fn submit_waiting(base: &str, prefer: &str, body: &Value) -> Answer {
    post(
        &format!("{base}/api/v1/wallet"),
        &[("Prefer", prefer)],
        body.to_string(),
    )
    .await
}

/// Posts a JSON `body` to `url` with `headers`, and times the answer.
pub async fn post(url: &str, headers: &[(&str, &str)], body: String) -> Answer {
    let started = Instant::now();
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .timeout(Duration::from_secs(60))
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the API answers");
    let status = response.status();
    let preference_applied = response
        .headers()
        .get("Preference-Applied")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = response.json().await.expect("a JSON body");
    Answer {
        status,
        preference_applied,
        body,
        took: started.elapsed(),
    }
}

/// The requests of `wallet serve` waiting for a decision now, from its metrics.
pub async fn waiters(base: &str) -> Option<f64> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("wallet_decision_waiters "))
        .and_then(|value| value.trim().parse().ok())
}

/// Proves a wait answers 200 with the final status, the same body the status URL gives,
/// for a PROCESSED and a FAILED decision; that a retry of a decided operation answers at
/// once; and that a wait beyond the maximum is clamped and says so.
#[tokio::test]
async fn a_wait_answers_the_decision() {
    let system = System::start(2);
    let api = &system.api;
    let wallet = api.new_wallet().await;

    let operation = uuid::Uuid::new_v4().to_string();
    let mut body = deposit(&wallet, "10.00");
    body["operationId"] = json!(operation);
    let answer = submit_waiting(&api.base, "wait=20", &body).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.preference_applied.as_deref(), Some("wait=20"));
    assert_eq!(answer.body["status"], "PROCESSED");
    assert_eq!(answer.body["balanceAfter"], "10.00");
    let status = api.status(&wallet, &operation).await;
    assert_eq!(answer.body, status.body, "the same body as the status URL");

    let retried = submit_waiting(&api.base, "wait=100", &body).await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.body);
    assert_eq!(retried.body, answer.body, "a retry gets the same decision");
    assert_eq!(
        retried.preference_applied.as_deref(),
        Some("wait=30"),
        "clamped to http.prefer_wait_max_s"
    );
    assert!(
        retried.took < Duration::from_secs(5),
        "a decided operation answers at once, took {:?}",
        retried.took
    );

    let answer = submit_waiting(
        &api.base,
        "respond-async, wait=20",
        &withdraw(&wallet, "25"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["status"], "FAILED");
    assert_eq!(answer.body["reason"], "INSUFFICIENT_FUNDS");
    assert_eq!(
        waiters(&api.base).await,
        Some(0.0),
        "no waiter is left behind"
    );
}

/// Proves that without a worker the answer is the usual 202 once the wait is over, not
/// before and not much later; that a malformed wait is ignored; that a client giving up
/// leaves no waiter behind, while its operation is still accepted; and that a worker
/// started during a wait turns it into a 200.
#[tokio::test]
async fn a_wait_without_a_worker_answers_202_at_its_deadline() {
    let stack = Stack::start(2);
    let server = stack.serve();
    let api = Api::new(&server.base);
    let wallet = api.new_wallet().await;

    let answer = submit_waiting(&api.base, "wait=2", &deposit(&wallet, "1")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    assert_eq!(answer.body["status"], "PENDING");
    assert_eq!(answer.preference_applied.as_deref(), Some("wait=2"));
    assert!(
        answer.took >= Duration::from_secs(2) && answer.took < Duration::from_secs(5),
        "answered after {:?}",
        answer.took
    );

    let answer = submit_waiting(&api.base, "wait=soon", &deposit(&wallet, "1")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    assert_eq!(
        answer.preference_applied, None,
        "a malformed wait is ignored"
    );
    assert!(
        answer.took < Duration::from_secs(2),
        "took {:?}",
        answer.took
    );

    let abandoned = reqwest::Client::new()
        .post(format!("{}/api/v1/wallet", api.base))
        .header("Prefer", "wait=30")
        .json(&deposit(&wallet, "1"))
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(abandoned.is_err(), "the client gives up before the answer");
    let left = eventually(Duration::from_secs(10), || async {
        waiters(&api.base).await == Some(0.0)
    })
    .await;
    assert!(
        left,
        "the abandoned request still waits: {:?}",
        waiters(&api.base).await
    );

    let (base, last) = (api.base.clone(), deposit(&wallet, "2"));
    let waiting = tokio::spawn(async move { submit_waiting(&base, "wait=30", &last).await });
    let registered = eventually(Duration::from_secs(10), || async {
        waiters(&api.base).await == Some(1.0)
    })
    .await;
    assert!(registered, "the request does not wait");
    let _worker = stack.work("work-1");
    let answer = waiting.await.expect("the request task ends");
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["status"], "PROCESSED");
    let all_applied = eventually(Duration::from_secs(20), || async {
        api.balance(&wallet).await.body["balance"] == "5.00"
    })
    .await;
    assert!(
        all_applied,
        "the abandoned request's operation was accepted all the same"
    );
}

/// Proves the subscription comes back after Redis restarts: a wait still answers the
/// decision, not the 202 of its deadline.
#[tokio::test]
async fn a_wait_survives_a_redis_restart() {
    let mut system = System::start(2);
    let wallet = system.api.new_wallet().await;
    let answer = submit_waiting(&system.api.base, "wait=20", &deposit(&wallet, "1")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);

    system.stack.redis.restart();
    let answer = submit_waiting(&system.api.base, "wait=20", &deposit(&wallet, "1")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["status"], "PROCESSED");
    assert!(
        answer.took < Duration::from_secs(15),
        "decided in {:?}",
        answer.took
    );
}

/// Proves a wait answers the decision PostgreSQL holds when no final marker announced it (a
/// worker that committed and died before writing its markers leaves them `Pending`): at the
/// deadline the answer is 200 with the stored status. It used to be 202 PENDING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_finds_a_decision_its_marker_missed() {
    let system = System::start(1);
    let api = &system.api;
    let wallet = api.new_wallet().await;
    let id = uuid::Uuid::new_v4().to_string();
    let mut body = deposit(&wallet, "4.00");
    body["operationId"] = json!(id);
    api.submit_accepted(&body).await;
    assert_eq!(
        api.settled(&wallet, &id, Duration::from_secs(60)).await["status"],
        "PROCESSED"
    );
    let redis = redis::Client::open(system.stack.redis.url()).expect("redis url");
    let mut redis = redis
        .get_multiplexed_async_connection()
        .await
        .expect("connects to Redis");
    let key = format!("op:default:{id}");
    let marker: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .expect("the final marker");
    let mut pending: Value = serde_json::from_str(&marker).expect("marker JSON");
    pending["state"] = json!("PENDING");
    let () = redis::cmd("SET")
        .arg(&key)
        .arg(pending.to_string())
        .query_async(&mut redis)
        .await
        .expect("the marker is set back");
    let answer = submit_waiting(&system.server.base, "wait=1", &body).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["status"], "PROCESSED", "{}", answer.body);
    assert_eq!(answer.body["amount"], "4.00", "the stored operation's body");
}
