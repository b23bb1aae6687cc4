//! The guarantees under the faults that used to break them: a produce that fails or dies, a reused id
//! in one batch, tenants using the same ids, a worker frozen inside a batch transaction, and a
//! transfer's place in its target's order. PostgreSQL refusing writes is in `refusals`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::auth::wallet_cli;
use crate::client::{count_rows, database, deposit, transfer, withdraw, Api, System};
use crate::harness::{eventually, CommitCut, Stack};

pub const SETTLE: Duration = Duration::from_secs(60);

fn with_id(mut body: Value, id: &str) -> Value {
    body["operationId"] = json!(id);
    body
}

/// Submits until the API answers something other than 503 (the broker coming back), and
/// returns that answer.
async fn submit_past_outage(
    api: &Api,
    wallet: &str,
    key: &str,
    body: &Value,
) -> (StatusCode, Value) {
    let start = std::time::Instant::now();
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(10),
            api.try_submit_with_key(wallet, key, body),
        )
        .await;
        if let Ok(Some(response)) = attempt {
            if response.status != StatusCode::SERVICE_UNAVAILABLE {
                return (response.status, response.body);
            }
        }
        assert!(start.elapsed() < SETTLE, "{key} kept answering 503");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Proves a produce that failed leaves the key bound to its request's content: another
/// request with the key is 422 (it used to be accepted, then kept as a dead letter), and the
/// first request's retry is accepted and applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_produce_keeps_the_key_bound_to_its_content() {
    let mut stack = Stack::start_with_own_broker(1);
    let server = stack.serve();
    let _worker = stack.work("work-1");
    let api = Api::new(&server.base);
    let wallet = api.new_wallet().await;
    stack.broker.stop();
    // A fresh client: the pooled connection idled while the broker stopped.
    let api = Api::new(&server.base);
    let first = deposit(&wallet, "5.00");
    let response = api.submit_with_key(&wallet, "order-1", &first).await;
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    stack.broker.start_again();
    let (status, body) =
        submit_past_outage(&api, &wallet, "order-1", &deposit(&wallet, "7.00")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "IDEMPOTENCY_KEY_REUSED");
    let (status, body) = submit_past_outage(&api, &wallet, "order-1", &first).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let operation = body["operationId"].as_str().expect("id").to_owned();
    let settled = api.settled(&wallet, &operation, SETTLE).await;
    assert_eq!(settled["status"], "PROCESSED", "{settled}");
    let balance = api.balance(&wallet).await.body;
    assert_eq!(
        (balance["balance"].clone(), balance["version"].clone()),
        (json!("5.00"), json!(1))
    );
}

/// Proves a request whose process died while producing keeps its id bound to its content:
/// once `redis.accepting_ttl_s` has passed, another request with the id is 422 (its marker
/// used to expire, so it was accepted and then kept as a dead letter behind the record that
/// did land), and the first request's retry is accepted and applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_died_while_producing_keeps_its_id_bound() {
    let mut stack = Stack::start_with_own_broker(1);
    let serve_env = [
        ("WALLET_REDIS__ACCEPTING_TTL_S", "2".to_owned()),
        ("WALLET_KAFKA__REQUEST_TIMEOUT_MS", "1500".to_owned()),
    ];
    let mut server = stack.serve_with(&serve_env);
    // No worker until the end: a final status it wrote would bind the id on its own.
    let api = Api::new(&server.base);
    let wallet = api.new_wallet().await;
    let id = uuid::Uuid::new_v4().to_string();
    let first = with_id(deposit(&wallet, "5.00"), &id);
    stack.broker.pause();
    let hanging = {
        let (api, first) = (Api::new(&server.base), first.clone());
        tokio::spawn(async move { api.try_submit(&first).await })
    };
    let redis = redis::Client::open(stack.redis.url()).expect("redis url");
    let redis = redis
        .get_multiplexed_async_connection()
        .await
        .expect("connects to Redis");
    let key = format!("op:default:{id}");
    let accepting = std::cell::RefCell::new(None);
    let seen = eventually(SETTLE, || async {
        let marker: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut redis.clone())
            .await
            .unwrap_or_default();
        let marker: Option<Value> = marker.and_then(|text| serde_json::from_str(&text).ok());
        *accepting.borrow_mut() = marker.filter(|marker| marker["state"] == "ACCEPTING");
        accepting.borrow().is_some()
    })
    .await;
    assert!(seen, "the request is being produced");
    server.process.kill();
    stack.broker.resume();
    assert!(hanging.await.expect("the request task ends").is_none());
    server.start_again();
    let accepted_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(accepting.into_inner().expect("marker")["acceptedAt"].clone())
            .expect("acceptedAt");
    // What is tested is the passing of `redis.accepting_ttl_s`, so the wait is for the clock.
    let dead = eventually(SETTLE, || async {
        chrono::Utc::now() > accepted_at + chrono::Duration::milliseconds(2_500)
    })
    .await;
    assert!(dead, "the clock passes the accepting TTL");
    let api = Api::new(&server.base);
    let reused = with_id(deposit(&wallet, "7.00"), &id);
    let response = api.submit(&reused).await;
    assert_eq!(
        response.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        response.body
    );
    assert_eq!(response.code(), "IDEMPOTENCY_KEY_REUSED");
    let _worker = stack.work("work-1");
    let retry = api.submit(&first).await;
    assert_eq!(retry.status, StatusCode::ACCEPTED, "{:?}", retry.body);
    let settled = api.settled(&wallet, &id, SETTLE).await;
    assert_eq!(settled["status"], "PROCESSED", "{settled}");
    assert_eq!(api.balance(&wallet).await.body["balance"], "5.00");
    let db = database(&stack.postgres.url()).await;
    assert_eq!(count_rows(&db, "dead_letters").await, 0);
}

/// Proves the final status names the record a worker applied, not a later record reusing its
/// id in the same batch: the applied request's retry is the same operation, not a 422.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_final_status_names_the_applied_record() {
    let mut system = System::start(1);
    let api = system.api.clone();
    let wallet = api.new_wallet().await;
    system.worker.kill();
    let id = uuid::Uuid::new_v4().to_string();
    let request = with_id(deposit(&wallet, "5.00"), &id);
    api.submit_accepted(&request).await;
    let impostor = json!({
        "v": 1, "tenant": "default", "operationId": id, "walletId": wallet, "type": "DEPOSIT",
        "amount": "7", "acceptedAt": chrono::Utc::now(), "fingerprint": "other"
    });
    produce_raw(
        &system.stack,
        vec![serde_json::to_vec(&impostor).expect("json")],
    )
    .await;
    system.worker.start();
    let settled = api.settled(&wallet, &id, SETTLE).await;
    assert_eq!(settled["status"], "PROCESSED", "{settled}");
    let retry = api.submit(&request).await;
    assert_eq!(retry.status, StatusCode::ACCEPTED, "{:?}", retry.body);
    assert_eq!(retry.body["status"], "PROCESSED");
    assert_eq!(api.balance(&wallet).await.body["balance"], "5.00");
    let db = system.database().await;
    let reason: String = db
        .query_one("SELECT reason FROM dead_letters", &[])
        .await
        .expect("the impostor is a dead letter")
        .get(0);
    assert!(reason.starts_with("IDEMPOTENCY_KEY_REUSED"), "{reason}");
}

/// Proves operations a batch stored, produced again later (a produce retried after its
/// acknowledgement was lost), are duplicates in the later batch, their id reused with other
/// content a dead letter, and the new operations of that batch are applied once: the batch
/// assumes nothing is stored, its insert finds the stored ids, and it is applied again. One
/// of them is a HOLD voided since, which placed again would break the hold's own row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_operation_produced_again_is_dropped_and_the_rest_applied() {
    let mut system = System::start(1);
    let api = system.api.clone();
    let wallet = api.new_wallet().await;
    let stored = uuid::Uuid::new_v4().to_string();
    let hold = uuid::Uuid::new_v4().to_string();
    let void = json!({"walletId": wallet, "operationType": "VOID", "holdId": hold});
    for body in [
        with_id(deposit(&wallet, "5.00"), &stored),
        with_id(
            json!({"walletId": wallet, "operationType": "HOLD", "amount": "1.00"}),
            &hold,
        ),
        void,
    ] {
        let id = api.submit_accepted(&body).await;
        assert_eq!(
            api.settled(&wallet, &id, SETTLE).await["status"],
            "PROCESSED"
        );
    }
    let records = vec![
        record_of(&system.stack, &stored).await,
        record_of(&system.stack, &hold).await,
    ];
    system.worker.kill();
    let before = uuid::Uuid::new_v4().to_string();
    api.submit_accepted(&with_id(deposit(&wallet, "2.00"), &before))
        .await;
    let impostor = json!({
        "v": 1, "tenant": "default", "operationId": stored, "walletId": wallet, "type": "DEPOSIT",
        "amount": "7", "acceptedAt": chrono::Utc::now(), "fingerprint": "other"
    });
    let mut produced = records;
    produced.push(serde_json::to_vec(&impostor).expect("json"));
    produce_raw(&system.stack, produced).await;
    let after = uuid::Uuid::new_v4().to_string();
    api.submit_accepted(&with_id(deposit(&wallet, "1.00"), &after))
        .await;
    system.worker.start();
    for id in [&before, &after] {
        assert_eq!(
            api.settled(&wallet, id, SETTLE).await["status"],
            "PROCESSED"
        );
    }
    let balance = api.balance(&wallet).await.body;
    let seen = (
        balance["balance"].as_str(),
        balance["held"].as_str(),
        balance["version"].as_i64(),
    );
    assert_eq!(seen, (Some("8.00"), Some("0.00"), Some(5)), "{balance}");
    let db = system.database().await;
    assert_eq!(count_rows(&db, "operations").await, 5);
    let state: String = db
        .query_one("SELECT state FROM holds", &[])
        .await
        .expect("the one hold")
        .get(0);
    assert_eq!(state, "VOIDED");
    let reason: String = db
        .query_one("SELECT reason FROM dead_letters", &[])
        .await
        .expect("the impostor is the one dead letter")
        .get(0);
    assert!(reason.starts_with("IDEMPOTENCY_KEY_REUSED"), "{reason}");
}

/// A client of the operations topic's partition 0, the only one of a one-partition system.
pub async fn first_partition(stack: &Stack) -> rskafka::client::partition::PartitionClient {
    rskafka::client::ClientBuilder::new(vec![stack.broker.address()])
        .build()
        .await
        .expect("connects")
        .partition_client(
            &stack.operations_topic,
            0,
            rskafka::client::partition::UnknownTopicHandling::Error,
        )
        .await
        .expect("partition")
}

/// The bytes of the record on the operations topic that carries operation `id`.
async fn record_of(stack: &Stack, id: &str) -> Vec<u8> {
    let partition = first_partition(stack).await;
    let (records, _) = partition
        .fetch_records(0, 1..1_000_000, 1_000)
        .await
        .expect("fetched");
    records
        .into_iter()
        .filter_map(|record| record.record.value)
        .find(|value| {
            serde_json::from_slice::<Value>(value)
                .is_ok_and(|operation| operation["operationId"] == id)
        })
        .expect("the record is on the topic")
}

/// Produces `values` to partition 0 of the operations topic, as no API would.
pub async fn produce_raw(stack: &Stack, values: Vec<Vec<u8>>) {
    let partition = first_partition(stack).await;
    let records = values
        .into_iter()
        .map(|value| rskafka::record::Record {
            key: None,
            value: Some(value),
            headers: Default::default(),
            timestamp: chrono::Utc::now(),
        })
        .collect();
    partition
        .produce(records, Default::default())
        .await
        .expect("produced");
}

/// One tenant's view of the API.
struct Tenant {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Tenant {
    async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("answers");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn new_wallet(&self) -> String {
        let (status, body) = self
            .send(
                self.http
                    .post(format!("{}/api/v1/wallets", self.base))
                    .json(&json!({})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["walletId"].as_str().expect("walletId").to_owned()
    }

    async fn submit(&self, wallet: &str, key: Option<&str>, body: &Value) -> (StatusCode, Value) {
        let mut request = self
            .http
            .post(format!("{}/api/v1/wallets/{wallet}/operations", self.base))
            .json(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        self.send(request).await
    }

    async fn status(&self, wallet: &str, operation: &str) -> (StatusCode, Value) {
        let url = format!(
            "{}/api/v1/wallets/{wallet}/operations/{operation}",
            self.base
        );
        self.send(self.http.get(url)).await
    }

    async fn settled(&self, wallet: &str, operation: &str) -> Value {
        let start = std::time::Instant::now();
        loop {
            let (_, status) = self.status(wallet, operation).await;
            if matches!(status["status"].as_str(), Some("PROCESSED" | "FAILED")) {
                return status;
            }
            assert!(
                start.elapsed() < SETTLE,
                "{operation} did not settle: {status}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Proves operation ids belong to their tenant: two tenants using the same explicit id and
/// the same key each get their own operation applied, and neither sees the other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_own_their_operation_ids() {
    let stack = Stack::start(2);
    // Tokens first: the server loads them when it starts.
    let server_env = [("WALLET_AUTH__ENABLED", "true".to_owned())];
    let tokens = ["acme", "globex"].map(|name| {
        wallet_cli(
            &stack,
            &[
                "token",
                "create",
                "--tenant",
                name,
                "--scopes",
                "read,write",
                "--name",
                "test",
            ],
        )
    });
    let server = stack.serve_with(&server_env);
    let _worker = stack.work("work-1");
    let [acme, globex] = tokens.map(|token| Tenant {
        http: reqwest::Client::new(),
        base: server.base.clone(),
        token,
    });
    let (acme_wallet, globex_wallet) = (acme.new_wallet().await, globex.new_wallet().await);
    let shared_id = uuid::Uuid::new_v4().to_string();
    let mut decided = Vec::new();
    for (tenant, wallet, explicit, keyed, total) in [
        (&acme, &acme_wallet, "5.00", "3.00", "8.00"),
        (&globex, &globex_wallet, "7.00", "4.00", "11.00"),
    ] {
        let body = with_id(deposit(wallet, explicit), &shared_id);
        let (status, answer) = tenant.submit(wallet, None, &body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        assert_eq!(answer["operationId"], shared_id.as_str());
        let (status, answer) = tenant
            .submit(wallet, Some("order-1"), &deposit(wallet, keyed))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        let keyed_id = answer["operationId"].as_str().expect("id").to_owned();
        decided.push((tenant, wallet, explicit, keyed_id, total));
    }
    // Each tenant's explicit id carries its own deposit: balanceAfter is its own wallet's.
    for (tenant, wallet, explicit, keyed_id, total) in decided {
        let status = tenant.settled(wallet, &shared_id).await;
        assert_eq!(
            (&status["status"], &status["balanceAfter"]),
            (&json!("PROCESSED"), &json!(explicit))
        );
        let status = tenant.settled(wallet, &keyed_id).await;
        assert_eq!(
            (&status["status"], &status["balanceAfter"]),
            (&json!("PROCESSED"), &json!(total))
        );
    }
    let (status, _) = globex.status(&acme_wallet, &shared_id).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Proves a worker frozen inside a batch transaction does not stall its partition, even
/// frozen while its statement runs: another worker applies it within the lease lapse plus a
/// few seconds, and the frozen one, resumed, writes nothing twice. It used to stay undecided
/// until the frozen worker resumed, and then, mid-statement, until `statement_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_worker_does_not_stall_its_partition() {
    let stack = Stack::start(1);
    let server = stack.serve();
    let lapse = ("WALLET_WORKER__LEASE_LAPSE_MS", "2000".to_owned());
    // Its sessions are named, so that only its statements are slow.
    let named = format!("{}?application_name=work-frozen", stack.postgres.url());
    let frozen = stack.spawn_wallet(
        "work-frozen",
        &["work"],
        &[lapse.clone(), ("WALLET_DATABASE__URL", named)],
    );
    let api = Api::new(&server.base);
    let wallet = api.new_wallet().await;
    // The first worker owns the only partition before the second one starts.
    api.fund(&wallet, "1.00").await;
    let _standby = stack.spawn_wallet("work-standby", &["work"], &[lapse]);
    let db = database(&stack.postgres.url()).await;
    db.batch_execute(
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.amount = 7.77 AND current_setting('application_name') = 'work-frozen' THEN
                 PERFORM pg_sleep(60);
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER slow BEFORE INSERT ON operations FOR EACH ROW EXECUTE FUNCTION slow();",
    )
    .await
    .expect("slow trigger installs");
    let operation = api.submit_accepted(&deposit(&wallet, "7.77")).await;
    let inside = eventually(SETTLE, || async {
        let row = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'",
                &[],
            )
            .await
            .expect("activity");
        row.get::<_, i64>(0) > 0
    })
    .await;
    assert!(inside, "the first worker is inside the batch transaction");
    frozen.send_signal(libc::SIGSTOP);
    let frozen_at = std::time::Instant::now();
    let settled = api
        .settled(&wallet, &operation, Duration::from_secs(20))
        .await;
    assert_eq!(settled["status"], "PROCESSED");
    eprintln!(
        "taken over and applied {:?} after the freeze",
        frozen_at.elapsed()
    );
    frozen.send_signal(libc::SIGCONT);
    api.fund(&wallet, "1.00").await;
    let balance = api.balance(&wallet).await.body;
    assert_eq!(
        (balance["balance"].clone(), balance["version"].clone()),
        (json!("9.77"), json!(3))
    );
}

/// Proves the causal case of a transfer's order: a client that waited for a transfer S→D to
/// be PROCESSED and then withdraws from D sees the credit, on every pair of partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_after_a_processed_transfer_sees_its_credit() {
    let system = System::start(8);
    let api = &system.api;
    let pairs = futures::future::join_all((0..16).map(|_| async {
        let (source, target) = (api.new_wallet().await, api.new_wallet().await);
        api.fund(&source, "30.00").await;
        let moved = api
            .submit_accepted(&transfer(&source, &target, "30.00"))
            .await;
        assert_eq!(
            api.settled(&source, &moved, SETTLE).await["status"],
            "PROCESSED"
        );
        let spent = api.submit_accepted(&withdraw(&target, "30.00")).await;
        let status = api.settled(&target, &spent, SETTLE).await;
        (target, moved, status)
    }))
    .await;
    for (target, moved, status) in pairs {
        assert_eq!(status["status"], "PROCESSED", "{status}");
        let history = api.history(&target, "limit=10").await.body;
        let versions: Vec<(i64, String)> = history["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|item| {
                (
                    item["version"].as_i64().unwrap_or(0),
                    item["operationId"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        assert_eq!(
            versions[1],
            (1, moved),
            "the credit is the target's first entry"
        );
        assert_eq!(versions.len(), 2);
    }
}

/// Proves a batch whose commit PostgreSQL made but whose answer the worker lost (the
/// connection dropped right after the COMMIT went out) is finalised all the same: the retry
/// finds the position moved by its own commit, and the worker then writes the statuses
/// PostgreSQL holds, so a client retrying the request is told PROCESSED, and drops the
/// balance it cannot refresh, so reads show the deposit; nothing is applied twice. The
/// worker used to take that for another worker's fencing and move on: the retry answered
/// PENDING until the marker's TTL and the cached balance stayed at version 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_commit_answer_still_finalises_the_batch() {
    let stack = Stack::start(1);
    let server = stack.serve();
    let api = Api::new(&server.base);
    let wallet = api.new_wallet().await;
    let cached = api.balance(&wallet).await;
    assert_eq!(cached.body["version"], 0, "{:?}", cached.body);
    let submitted = api
        .submit_with_key(&wallet, "lost-answer", &deposit(&wallet, "5.00"))
        .await;
    assert_eq!(
        submitted.status,
        StatusCode::ACCEPTED,
        "{:?}",
        submitted.body
    );
    let cut = CommitCut::start(stack.postgres.port).await;
    let _worker = stack.spawn_wallet("work-1", &["work"], &[("WALLET_DATABASE__URL", cut.url())]);
    let finalised = eventually(SETTLE, || async {
        let retried = api
            .submit_with_key(&wallet, "lost-answer", &deposit(&wallet, "5.00"))
            .await;
        retried.body["status"] == "PROCESSED"
    })
    .await;
    assert!(finalised, "a retry of the request is told it was processed");
    assert_eq!(cut.cuts(), 1, "the answer to the batch's commit was lost");
    let refreshed = eventually(Duration::from_secs(10), || async {
        let balance = api.balance(&wallet).await;
        balance.body["balance"] == "5.00" && balance.body["version"] == 1
    })
    .await;
    assert!(refreshed, "reads show the committed deposit");
    let db = database(&stack.postgres.url()).await;
    assert_eq!(count_rows(&db, "operations").await, 1);
    assert_eq!(count_rows(&db, "entries").await, 1);
}
