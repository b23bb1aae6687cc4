//! The served extras and the process's life: Swagger UI and request ids, readiness that
//! follows the dependencies, a clean SIGTERM under load, a worker's own metrics and readiness.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};

use crate::client::{deposit, System};
use crate::contract::Client;
use crate::harness::eventually;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swagger_ui_and_request_ids_are_served() {
    let system = System::start(1);
    let client = Client::new(&system.server.base).await;
    let bare = client.send(Method::GET, "/swagger", &[], None).await;
    assert_eq!(bare.status, StatusCode::OK, "DESIGN: GET /swagger is 200");
    let page = client
        .send(
            Method::GET,
            "/swagger/index.html?url=/openapi/v2.json",
            &[],
            None,
        )
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page
        .body
        .as_str()
        .is_some_and(|html| html.contains("swagger-ui")));
    let script = client
        .send(Method::GET, "/swagger/swagger-ui-bundle.js", &[], None)
        .await;
    assert_eq!(script.status, StatusCode::OK);
    assert!(
        script.content_type.contains("javascript"),
        "{}",
        script.content_type
    );

    let echoed = client
        .send(
            Method::GET,
            "/healthz",
            &[("x-request-id", "trace-42")],
            None,
        )
        .await;
    assert_eq!(echoed.request_id.as_deref(), Some("trace-42"));
    let generated = client.send(Method::GET, "/healthz", &[], None).await;
    let id = generated.request_id.expect("an id is generated");
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    let rejected = client
        .send(
            Method::GET,
            "/healthz",
            &[("x-request-id", "bad id with spaces")],
            None,
        )
        .await;
    assert_ne!(rejected.request_id.as_deref(), Some("bad id with spaces"));
    let logged = eventually(Duration::from_secs(10), || async {
        std::fs::read_to_string(&system.server.process.log).is_ok_and(|log| {
            log.lines()
                .any(|line| line.contains("trace-42") && line.contains("/healthz"))
        })
    })
    .await;
    assert!(logged, "the request log line with its id is missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_follows_the_dependencies() {
    let mut system = System::start(1);
    let client = Client::new(&system.server.base).await;
    let ready = client.call(Method::GET, "/readyz", "/readyz", None).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.body["status"], "ready");

    system.stack.postgres.stop();
    let down = eventually(Duration::from_secs(20), || async {
        let answer = client.call(Method::GET, "/readyz", "/readyz", None).await;
        answer.status == StatusCode::SERVICE_UNAVAILABLE
            && answer.body["checks"]["postgres"]["status"] == "down"
    })
    .await;
    assert!(down, "readiness did not report PostgreSQL down");
    system.stack.postgres.start_again();
    let back = eventually(Duration::from_secs(30), || async {
        client
            .call(Method::GET, "/readyz", "/readyz", None)
            .await
            .status
            == StatusCode::OK
    })
    .await;
    assert!(back, "readiness did not recover with PostgreSQL");

    system
        .stack
        .redis
        .process
        .stop_with(libc::SIGTERM, Duration::from_secs(10));
    let degraded = eventually(Duration::from_secs(20), || async {
        let answer = client.call(Method::GET, "/readyz", "/readyz", None).await;
        answer.status == StatusCode::OK && answer.body["status"] == "degraded"
    })
    .await;
    assert!(degraded, "readiness did not report Redis down as degraded");
    system.stack.redis.restart();
    let ready = eventually(Duration::from_secs(30), || async {
        client
            .call(Method::GET, "/readyz", "/readyz", None)
            .await
            .body["status"]
            == "ready"
    })
    .await;
    assert!(ready, "readiness did not recover with Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_loses_nothing_and_exits_cleanly() {
    let mut system = System::start(2);
    let api = system.api.clone();
    let wallet = api.new_wallet().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let api = api.clone();
        let wallet = wallet.clone();
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match api.try_submit(&deposit(&wallet, "1.00")).await {
                    Some(response) if response.status == StatusCode::ACCEPTED => accepted.push(
                        response.body["operationId"]
                            .as_str()
                            .expect("id")
                            .to_owned(),
                    ),
                    Some(_) => {}
                    None => break,
                }
            }
            accepted
        }));
    }
    let loaded = eventually(Duration::from_secs(20), || async {
        api.history(&wallet, "limit=1").await.body["items"][0]["version"]
            .as_i64()
            .is_some_and(|version| version >= 50)
    })
    .await;
    assert!(loaded, "the load did not get going");

    let started = Instant::now();
    let server_exit = system
        .server
        .process
        .stop_with(libc::SIGTERM, Duration::from_secs(15));
    assert_eq!(
        server_exit,
        Some(0),
        "wallet serve did not exit 0 on SIGTERM"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut accepted = Vec::new();
    for client in clients {
        accepted.extend(client.await.expect("client task"));
    }
    assert!(accepted.len() >= 50, "only {} accepted", accepted.len());
    let worker_exit = system
        .worker
        .stop_with(libc::SIGTERM, Duration::from_secs(15));
    assert_eq!(
        worker_exit,
        Some(0),
        "wallet work did not exit 0 on SIGTERM"
    );
    assert!(started.elapsed() < Duration::from_secs(25));

    // A fresh worker applies whatever the stopped one left; every 202 ends applied once.
    let _worker = system.stack.work("work-2");
    let database = system.database().await;
    let ids: Vec<uuid::Uuid> = accepted
        .iter()
        .map(|id| uuid::Uuid::parse_str(id).expect("uuid"))
        .collect();
    let settled = eventually(Duration::from_secs(60), || async {
        let row = database
            .query_one(
                "SELECT count(*) FROM operations WHERE id = ANY($1) AND status IN ('PROCESSED', 'FAILED')",
                &[&ids],
            )
            .await
            .expect("query");
        row.get::<_, i64>(0) == ids.len() as i64
    })
    .await;
    assert!(settled, "not every accepted operation was applied");
    let row = database
        .query_one(
            "SELECT count(*) FROM entries WHERE wallet_id = $1 AND operation_id = ANY($2)",
            &[&uuid::Uuid::parse_str(&wallet).expect("uuid"), &ids],
        )
        .await
        .expect("entries");
    let entries: i64 = row.get(0);
    assert_eq!(
        entries,
        ids.len() as i64,
        "an operation was applied twice or lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_serves_its_own_metrics() {
    let system = System::start(2);
    let port = crate::harness::free_port();
    let _observed = system.stack.spawn_wallet(
        "work-metrics",
        &["work"],
        &[("WALLET_WORKER__METRICS_LISTEN", format!("127.0.0.1:{port}"))],
    );
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/metrics");
    // Whichever worker owns a wallet's partition applies its deposits, so deposit to new
    // wallets (new partitions) until this worker shows a batch.
    let reported = eventually(Duration::from_secs(60), || async {
        let wallet = system.api.new_wallet().await;
        system.api.fund(&wallet, "1.00").await;
        let Ok(response) = http.get(&url).send().await else {
            return false;
        };
        let text = response.text().await.unwrap_or_default();
        text.contains("wallet_consumer_lag{partition=")
            && text.contains("wallet_batch_operations_bucket")
            && text.contains("wallet_batch_apply_duration_seconds_bucket")
    })
    .await;
    assert!(
        reported,
        "the worker's /metrics lacks batch and lag metrics"
    );
}

/// Proves a separate worker's `/readyz` follows what it cannot work without: ready with its
/// broker, 503 with the `kafka` check down while the broker is stopped, ready again after.
/// It used to answer 200 `ready` whatever the broker and PostgreSQL did.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workers_readiness_follows_its_broker() {
    let mut stack = crate::harness::Stack::start_with_own_broker(1);
    let port = crate::harness::free_port();
    let _worker = stack.spawn_wallet(
        "work-ready",
        &["work"],
        &[("WALLET_WORKER__METRICS_LISTEN", format!("127.0.0.1:{port}"))],
    );
    let url = format!("http://127.0.0.1:{port}/readyz");
    let readiness = || async {
        match reqwest::get(&url).await {
            Ok(response) => {
                let status = response.status();
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                Some((status, body))
            }
            Err(_) => None,
        }
    };
    let ready = |answer: Option<(StatusCode, serde_json::Value)>| {
        answer.is_some_and(|(status, body)| {
            status == StatusCode::OK
                && body["status"] == "ready"
                && body["checks"]["kafka"]["status"] == "up"
                && body["checks"]["postgres"]["status"] == "up"
        })
    };
    assert!(
        eventually(Duration::from_secs(30), || async {
            ready(readiness().await)
        })
        .await,
        "the worker becomes ready: {:?}",
        readiness().await
    );
    stack.broker.stop();
    let unavailable = eventually(Duration::from_secs(30), || async {
        readiness().await.is_some_and(|(status, body)| {
            status == StatusCode::SERVICE_UNAVAILABLE
                && body["status"] == "unavailable"
                && body["checks"]["kafka"]["status"] == "down"
        })
    })
    .await;
    assert!(unavailable, "without its broker: {:?}", readiness().await);
    stack.broker.start_again();
    assert!(
        eventually(Duration::from_secs(60), || async {
            ready(readiness().await)
        })
        .await,
        "ready again: {:?}",
        readiness().await
    );
}

/// Proves SIGTERM answers a request that waits for its decision (`Prefer: wait`) before the
/// server stops: the client gets its 202 and operation id at once, instead of a connection
/// cut at the shutdown deadline that leaves it unsure whether the operation was accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_answers_a_waiting_request_before_stopping() {
    let mut system = System::start(1);
    let wallet = system.api.new_wallet().await;
    system.worker.kill();
    let base = system.server.base.clone();
    let waiting = tokio::spawn({
        let (base, body) = (base.clone(), deposit(&wallet, "1.00"));
        async move { crate::wait::submit_waiting(&base, "wait=30", &body).await }
    });
    let waits = eventually(Duration::from_secs(10), || async {
        crate::wait::waiters(&base)
            .await
            .is_some_and(|count| count >= 1.0)
    })
    .await;
    assert!(waits, "the request waits for its decision");
    let exit = system
        .server
        .process
        .stop_with(libc::SIGTERM, Duration::from_secs(15));
    let answer = waiting.await.expect("the waiting request is answered");
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    assert_eq!(answer.body["status"], "PENDING", "{}", answer.body);
    assert!(answer.body["operationId"].is_string(), "{}", answer.body);
    assert!(
        answer.took < Duration::from_secs(8),
        "answered after {:?}",
        answer.took
    );
    assert_eq!(exit, Some(0), "wallet serve exits 0 on SIGTERM");
}
