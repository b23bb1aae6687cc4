//! Bulk submission (`POST /api/v1/operations/batch`) against the real stack: one result per
//! item in request order, items independent and each idempotent by its id, tenants kept
//! apart, the batch's bounds, and `Prefer: wait` on a batch.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::auth::{secured, token};
use crate::client::{database, deposit, transfer, withdraw, Api, System};
use crate::harness::{eventually, Stack};
use crate::wait::{post, Answer};

const BATCH: &str = "/api/v1/operations/batch";

async fn send_batch(base: &str, headers: &[(&str, &str)], body: String) -> Answer {
    post(&format!("{base}{BATCH}"), headers, body).await
}

async fn batch(base: &str, headers: &[(&str, &str)], operations: &[Value]) -> Answer {
    send_batch(
        base,
        headers,
        json!({ "operations": operations }).to_string(),
    )
    .await
}

fn with_id(mut body: Value, id: &str) -> Value {
    body["operationId"] = json!(id);
    body
}

/// The code of the problem of result `index`, or its status when it has none.
fn outcome(answer: &Answer, index: usize) -> String {
    let result = &answer.body["results"][index];
    match result["problem"]["code"].as_str() {
        Some(code) => code.to_owned(),
        None => result["status"].as_str().unwrap_or("?").to_owned(),
    }
}

/// Waits until the wallet's version is `version`, then answers its balance.
async fn balance_at_version(api: &Api, wallet: &str, version: i64) -> String {
    let reached = eventually(Duration::from_secs(30), || async {
        api.balance(wallet).await.body["version"] == version
    })
    .await;
    let body = api.balance(wallet).await.body;
    assert!(
        reached,
        "wallet {wallet} did not reach version {version}: {body}"
    );
    body["balance"].as_str().expect("balance").to_owned()
}

/// Proves items are answered in request order and independently: valid ones accepted,
/// invalid ones with the single route's problem and status, a repeated id with the same
/// content answered as the same operation and with other content refused; each valid
/// operation is applied exactly once; and a repeat of the whole batch changes nothing.
#[tokio::test]
async fn a_mixed_batch_answers_each_item_and_applies_each_once() {
    let system = System::start(2);
    let api = &system.api;
    let (a, b) = (api.new_wallet().await, api.new_wallet().await);
    let ids: Vec<String> = (0..3).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let unknown = uuid::Uuid::new_v4().to_string();
    let operations = vec![
        with_id(deposit(&a, "10.00"), &ids[0]),
        with_id(deposit(&a, "-1"), &ids[1]),
        with_id(deposit(&unknown, "1"), &ids[2]),
        json!(5),
        with_id(deposit(&b, "5"), &uuid::Uuid::new_v4().to_string()),
        with_id(deposit(&a, "10.00"), &ids[0]),
        with_id(deposit(&a, "11.00"), &ids[0]),
        json!({"walletId": a, "operationType": "DEPOSIT", "amount": "1", "colour": "red"}),
        with_id(transfer(&a, &b, "2.50"), &uuid::Uuid::new_v4().to_string()),
    ];
    let answer = batch(&api.base, &[], &operations).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let results = answer.body["results"].as_array().expect("results");
    assert_eq!(results.len(), operations.len(), "{}", answer.body);
    let outcomes: Vec<String> = (0..operations.len()).map(|i| outcome(&answer, i)).collect();
    assert_eq!(outcomes[0], "PENDING");
    assert_eq!(outcomes[1], "INVALID_AMOUNT");
    assert_eq!(outcomes[2], "WALLET_NOT_FOUND");
    assert_eq!(results[2]["problem"]["status"], 404);
    assert_eq!(outcomes[3], "INVALID_BODY");
    assert_eq!(outcomes[4], "PENDING");
    assert!(
        ["PENDING", "PROCESSED"].contains(&outcomes[5].as_str()),
        "the same operation again: {}",
        results[5]
    );
    assert_eq!(outcomes[6], "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(results[6]["problem"]["status"], 422);
    assert_eq!(outcomes[7], "UNKNOWN_FIELD");
    assert_eq!(outcomes[8], "PENDING");
    for index in [0, 4, 5, 8] {
        assert_eq!(
            results[index]["operationId"],
            operations[index]["operationId"]
        );
        assert_eq!(results[index]["walletId"], operations[index]["walletId"]);
    }

    // a: the deposit once, then the transfer out; b: its deposit and the transfer in.
    assert_eq!(balance_at_version(api, &a, 2).await, "7.50");
    assert_eq!(balance_at_version(api, &b, 2).await, "7.50");
    for index in [0, 4, 8] {
        let wallet = operations[index]["walletId"].as_str().expect("wallet");
        let id = operations[index]["operationId"].as_str().expect("id");
        let settled = api.settled(wallet, id, Duration::from_secs(30)).await;
        assert_eq!(settled["status"], "PROCESSED", "{settled}");
    }

    let again = batch(&api.base, &[], &operations).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    for (index, first) in outcomes.iter().enumerate() {
        let expected = match first.as_str() {
            "PENDING" => "PROCESSED",
            other => other,
        };
        assert_eq!(outcome(&again, index), expected, "{}", again.body);
    }
    // A deposit acknowledged after the repeat is applied after anything the repeat applied.
    let marker = api.submit_accepted(&deposit(&a, "0.01")).await;
    api.settled(&a, &marker, Duration::from_secs(30)).await;
    assert_eq!(balance_at_version(api, &a, 3).await, "7.51");
    assert_eq!(balance_at_version(api, &b, 2).await, "7.50");
}

/// Proves an item naming another tenant's wallet gets that item's 404 (or, as a transfer's
/// target, the single route's 422) and nothing else changes; the caller's own items are
/// accepted beside it.
#[tokio::test]
async fn a_batch_item_cannot_touch_another_tenants_wallet() {
    let stack = Stack::start(2);
    let server = secured(&stack, &[]);
    let _worker = stack.work("work-1");
    let acme = Api::with_token(&server.base, &token(&stack, "acme", "read,write"));
    let globex_token = token(&stack, "globex", "read,write");
    let globex = Api::with_token(&server.base, &globex_token);
    let loaded = eventually(Duration::from_secs(5), || async {
        acme.create_wallet(json!({})).await.status == StatusCode::CREATED
            && globex.create_wallet(json!({})).await.status == StatusCode::CREATED
    })
    .await;
    assert!(loaded, "tokens were not loaded");
    let theirs = acme.new_wallet().await;
    let mine = globex.new_wallet().await;
    let bearer = format!("Bearer {globex_token}");
    let answer = batch(
        &server.base,
        &[("Authorization", &bearer)],
        &[
            deposit(&mine, "3"),
            deposit(&theirs, "1"),
            transfer(&mine, &theirs, "1"),
            withdraw(&theirs, "1"),
        ],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(outcome(&answer, 0), "PENDING");
    assert_eq!(outcome(&answer, 1), "WALLET_NOT_FOUND");
    assert_eq!(answer.body["results"][1]["problem"]["status"], 404);
    assert_eq!(outcome(&answer, 2), "TARGET_WALLET_NOT_FOUND");
    assert_eq!(outcome(&answer, 3), "WALLET_NOT_FOUND");
    assert_eq!(balance_at_version(&globex, &mine, 1).await, "3.00");
    let untouched = acme.balance(&theirs).await.body;
    assert_eq!(untouched["version"], 0, "{untouched}");
}

/// Proves the bounds: an empty batch and one over `http.batch_operations_max` are refused
/// whole with 422; a body over `http.batch_body_bytes_max` with 413, while a batch body
/// larger than `http.body_bytes_max` is taken; and `Idempotency-Key` is refused with 400.
#[tokio::test]
async fn a_batch_is_bounded() {
    let stack = Stack::start(1);
    let server = stack.serve_with(&[
        ("WALLET_HTTP__BODY_BYTES_MAX", "1024".to_owned()),
        ("WALLET_HTTP__BATCH_BODY_BYTES_MAX", "4096".to_owned()),
        ("WALLET_HTTP__BATCH_OPERATIONS_MAX", "12".to_owned()),
    ]);
    let api = Api::new(&server.base);
    let wallet = api.new_wallet().await;

    let empty = batch(&server.base, &[], &[]).await;
    assert_eq!(empty.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(empty.body["code"], "EMPTY_BATCH");
    let thirteen = vec![json!({}); 13];
    let over = batch(&server.base, &[], &thirteen).await;
    assert_eq!(over.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(over.body["code"], "TOO_MANY_OPERATIONS");

    let twelve = vec![deposit(&wallet, "1"); 12];
    let body = json!({ "operations": twelve }).to_string();
    assert!(body.len() > 1024 && body.len() <= 4096, "{}", body.len());
    let taken = send_batch(&server.base, &[], body).await;
    assert_eq!(taken.status, StatusCode::OK, "{}", taken.body);
    assert!((0..12).all(|index| outcome(&taken, index) == "PENDING"));

    let padding = " ".repeat(4096);
    let too_large = send_batch(
        &server.base,
        &[],
        format!(r#"{{"operations":[{}]{padding}}}"#, deposit(&wallet, "1")),
    )
    .await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(too_large.body["code"], "PAYLOAD_TOO_LARGE");

    let keyed = batch(
        &server.base,
        &[("Idempotency-Key", "order-1")],
        &[deposit(&wallet, "1")],
    )
    .await;
    assert_eq!(keyed.status, StatusCode::BAD_REQUEST);
    assert_eq!(keyed.body["code"], "IDEMPOTENCY_KEY_NOT_SUPPORTED");
}

/// Proves `Prefer: wait` on a batch: decided items carry their final status (PROCESSED with
/// `balanceAfter`, FAILED with `reason`), refused ones their problem, an item without an id
/// gets a fresh one, and the answer does not wait for items that were never accepted.
#[tokio::test]
async fn a_batch_waits_for_its_decisions() {
    let system = System::start(2);
    let api = &system.api;
    let wallet = api.new_wallet().await;
    let answer = batch(
        &api.base,
        &[("Prefer", "wait=20")],
        &[
            deposit(&wallet, "10"),
            withdraw(&wallet, "1000"),
            deposit(&wallet, "0"),
            deposit(&wallet, "2"),
        ],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.preference_applied.as_deref(), Some("wait=20"));
    let results = &answer.body["results"];
    assert_eq!(results[0]["status"], "PROCESSED", "{}", answer.body);
    assert_eq!(results[0]["balanceAfter"], "10.00");
    assert_eq!(results[1]["status"], "FAILED");
    assert_eq!(results[1]["reason"], "INSUFFICIENT_FUNDS");
    assert_eq!(outcome(&answer, 2), "INVALID_AMOUNT");
    assert_eq!(results[3]["status"], "PROCESSED");
    assert_ne!(results[0]["operationId"], results[3]["operationId"]);
    assert!(
        answer.took < Duration::from_secs(15),
        "a refused item must not hold the wait: {:?}",
        answer.took
    );
    let status = api
        .status(&wallet, results[0]["operationId"].as_str().expect("id"))
        .await;
    assert_eq!(results[0], status.body, "the same body as the status URL");
}

/// The sum of `wallet serve`'s counter `name` over its labels, from its metrics.
async fn counted(base: &str, name: &str) -> u64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The produce requests `wallet serve` has made so far.
async fn produce_requests(base: &str) -> u64 {
    counted(base, "wallet_produce_duration_seconds_count").await
}

/// Proves a batch costs one produce request per partition, not one per item: 1,000
/// operations on one wallet are one request; and that without a worker a waiting batch
/// answers 200 at its deadline with every item still PENDING.
#[tokio::test]
async fn a_batch_is_one_produce_request_per_partition() {
    let stack = Stack::start(2);
    let server = stack.serve();
    let api = Api::new(&server.base);
    let wallet = api.new_wallet().await;
    let before = produce_requests(&server.base).await;
    let operations = vec![deposit(&wallet, "1"); 1000];
    let answer = batch(&server.base, &[], &operations).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!((0..1000).all(|index| outcome(&answer, index) == "PENDING"));
    assert_eq!(produce_requests(&server.base).await - before, 1);

    let waited = batch(&server.base, &[("Prefer", "wait=1")], &operations[..3]).await;
    assert_eq!(waited.status, StatusCode::OK, "{}", waited.body);
    assert_eq!(waited.preference_applied.as_deref(), Some("wait=1"));
    assert!((0..3).all(|index| outcome(&waited, index) == "PENDING"));
    assert!(
        waited.took >= Duration::from_secs(1) && waited.took < Duration::from_secs(5),
        "answered after {:?}",
        waited.took
    );
}

/// Proves a batch keeps the single route's rule while Redis cannot be asked: an item whose
/// id the client chose is refused with its 503 `CACHE_UNAVAILABLE`, one with a generated id
/// is accepted and applied; retried once Redis is back, the refused item is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_without_redis_refuses_only_its_chosen_ids() {
    let mut system = System::start(1);
    let api = system.api.clone();
    let wallet = api.new_wallet().await;
    let chosen = with_id(deposit(&wallet, "5.00"), &uuid::Uuid::new_v4().to_string());
    system.stack.redis.process.kill();
    let answer = batch(&api.base, &[], &[chosen.clone(), deposit(&wallet, "1.00")]).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(outcome(&answer, 0), "CACHE_UNAVAILABLE");
    assert_eq!(answer.body["results"][0]["problem"]["status"], 503);
    assert_eq!(outcome(&answer, 1), "PENDING");
    assert_eq!(balance_at_version(&api, &wallet, 1).await, "1.00");
    system.stack.redis.process.start();
    let retried = eventually(Duration::from_secs(30), || async {
        outcome(
            &batch(&api.base, &[], std::slice::from_ref(&chosen)).await,
            0,
        ) != "CACHE_UNAVAILABLE"
    })
    .await;
    assert!(retried, "the chosen id is accepted once Redis is back");
    assert_eq!(balance_at_version(&api, &wallet, 2).await, "6.00");
}

/// Proves a batch repeating one id costs one produce round with the broker down: 15 identical
/// keyed items each get the first one's 503 within two produce deadlines, and the same id
/// with other content its 422. Each repeat used to be a round of its own that waited the
/// whole deadline again (15 deadlines here; hours for a batch of 10,000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_repeating_one_id_is_one_produce_round() {
    const DEADLINE: Duration = Duration::from_millis(3_000);
    let mut stack = Stack::start_with_own_broker(1);
    let timeout = DEADLINE.as_millis().to_string();
    let server = stack.serve_with(&[("WALLET_KAFKA__REQUEST_TIMEOUT_MS", timeout)]);
    let api = Api::new(&server.base);
    let wallet = api.new_wallet().await;
    let id = uuid::Uuid::new_v4().to_string();
    let mut operations = vec![with_id(deposit(&wallet, "1.00"), &id); 15];
    operations.push(with_id(deposit(&wallet, "2.00"), &id));
    stack.broker.stop();
    let answer = batch(&server.base, &[], &operations).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    for index in 0..15 {
        assert_eq!(
            outcome(&answer, index),
            "BROKER_UNAVAILABLE",
            "{}",
            answer.body
        );
    }
    assert_eq!(outcome(&answer, 15), "IDEMPOTENCY_KEY_REUSED");
    assert!(
        answer.took < 2 * DEADLINE,
        "answered after {:?}",
        answer.took
    );
}

/// The wallet lookups `wallet serve` has made so far (cache hits, misses and errors): each
/// one that misses the cache also reads PostgreSQL.
async fn wallet_lookups(base: &str) -> u64 {
    counted(base, "wallet_cache_lookups_total").await
}

/// Proves a batch looks each wallet it names up once: 1,000 items on an unknown wallet cost
/// one lookup (and one PostgreSQL read), not 1,000, and each gets its 404; 1,000 items on a
/// wallet this server has not seen, one lookup too, and each is accepted. Every item used to
/// be looked up on its own, all at once, queueing the PostgreSQL pool for every tenant.
#[tokio::test]
async fn a_batch_looks_each_wallet_up_once() {
    let stack = Stack::start(1);
    let creator = stack.serve();
    let wallet = Api::new(&creator.base).new_wallet().await;
    let server = stack.serve();
    let unknown = uuid::Uuid::new_v4().to_string();

    let before = wallet_lookups(&server.base).await;
    let answer = batch(&server.base, &[], &vec![deposit(&unknown, "1"); 1000]).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!((0..1000).all(|index| outcome(&answer, index) == "WALLET_NOT_FOUND"));
    assert_eq!(wallet_lookups(&server.base).await - before, 1);

    let before = wallet_lookups(&server.base).await;
    let answer = batch(&server.base, &[], &vec![deposit(&wallet, "1"); 1000]).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!((0..1000).all(|index| outcome(&answer, index) == "PENDING"));
    assert_eq!(wallet_lookups(&server.base).await - before, 1);
}

/// Proves a partition's parts are produced one after another, each only once the one before
/// it was acknowledged: with the topic refusing requests over 600 KB, a batch of 3,500
/// operations on one wallet (two parts: about 850 KB, then about 330 KB) is refused whole,
/// its second part never sent. Sent together, the second part landed while the first was
/// refused, and a wallet's operations could land out of request order (a retried first
/// part after its successor).
#[tokio::test]
async fn a_partitions_parts_are_produced_in_order() {
    const OPERATIONS: usize = 3_500;
    let stack = Stack::start(1);
    let server = stack.serve();
    let api = Api::new(&server.base);
    let (wallet, probe) = (api.new_wallet().await, api.new_wallet().await);
    let operations = vec![deposit(&wallet, "1"); OPERATIONS];
    let before = produce_requests(&server.base).await;
    let taken = batch(&server.base, &[], &operations).await;
    assert!((0..OPERATIONS).all(|index| outcome(&taken, index) == "PENDING"));
    assert_eq!(
        produce_requests(&server.base).await - before,
        2,
        "the batch spans two parts"
    );

    stack
        .broker
        .set_topic_config(&stack.operations_topic, "max.message.bytes=600000");
    // One part of about 800 KB, refused once the broker applies the setting.
    let probes = vec![deposit(&probe, "1"); 2_400];
    let refusing = eventually(Duration::from_secs(30), || async {
        outcome(&batch(&server.base, &[], &probes).await, 0) == "BROKER_UNAVAILABLE"
    })
    .await;
    assert!(refusing, "the broker did not apply max.message.bytes");

    let before = produce_requests(&server.base).await;
    let refused = batch(&server.base, &[], &operations).await;
    assert_eq!(refused.status, StatusCode::OK, "{}", refused.body);
    let outcomes: Vec<String> = (0..OPERATIONS).map(|i| outcome(&refused, i)).collect();
    let landed = outcomes.iter().filter(|o| o.as_str() == "PENDING").count();
    assert_eq!(landed, 0, "operations after a refused part were produced");
    assert!(outcomes.iter().all(|o| o == "BROKER_UNAVAILABLE"));
    assert_eq!(produce_requests(&server.base).await - before, 1);
}

/// The statements PostgreSQL has logged so far that read `table` (`log_statement = all`).
fn statements_reading(log: &std::path::Path, table: &str) -> usize {
    let text = std::fs::read_to_string(log).expect("the PostgreSQL log reads");
    let from = format!("FROM {table}");
    let reads = |line: &str| {
        line.match_indices(&from).any(|(at, _)| {
            let next = line[at + from.len()..].chars().next();
            !next.is_some_and(|next| next.is_alphanumeric() || next == '_')
        })
    };
    // A statement's later lines are logged indented under its first.
    let mut entries: Vec<String> = Vec::new();
    for line in text.lines() {
        match (line.starts_with('\t'), entries.last_mut()) {
            (true, Some(entry)) => entry.push_str(line),
            (true, None) | (false, _) => entries.push(line.to_owned()),
        }
    }
    entries
        .iter()
        .filter(|entry| entry.contains("LOG:") && reads(entry))
        .count()
}

/// Proves a batch reads the decisions of its undecided items from PostgreSQL in one
/// statement per table, not one per item: 1,000 items on one wallet answered at once
/// (`Prefer: wait=0`, no worker, so none decided) cost one read of `operations` and one of
/// `dead_letters`. They cost 1,000 of each.
#[tokio::test]
async fn a_batch_reads_its_undecided_items_at_once() {
    let stack = Stack::start(1);
    let db = database(&stack.postgres.url()).await;
    for statement in [
        "ALTER SYSTEM SET log_statement = 'all'",
        "SELECT pg_reload_conf()",
    ] {
        db.batch_execute(statement)
            .await
            .expect("statement logging on");
    }
    // A new session starts with the postmaster's settings, once it reloaded them.
    let logging = eventually(Duration::from_secs(10), || async {
        let session = database(&stack.postgres.url()).await;
        let row = session.query_one("SHOW log_statement", &[]).await;
        row.is_ok_and(|row| row.get::<_, String>(0) == "all")
    })
    .await;
    assert!(logging, "PostgreSQL did not reload log_statement");
    let server = stack.serve();
    let api = Api::new(&server.base);
    let wallet = api.new_wallet().await;
    let log = &stack.postgres.process.log;
    let before = (
        statements_reading(log, "operations"),
        statements_reading(log, "dead_letters"),
    );
    let answer = batch(
        &server.base,
        &[("Prefer", "wait=0")],
        &vec![deposit(&wallet, "1"); 1000],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!((0..1000).all(|index| outcome(&answer, index) == "PENDING"));
    let after = (
        statements_reading(log, "operations"),
        statements_reading(log, "dead_letters"),
    );
    assert_eq!((after.0 - before.0, after.1 - before.1), (1, 1));
}
