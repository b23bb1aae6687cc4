//! The balance at a point in time, end to end: read from the journal as of an instant, with
//! one indexed lookup, and refused for instants the journal cannot answer yet.

use chrono::{DateTime, Duration, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::client::{deposit, withdraw, Api, System};
use crate::guarantees::SETTLE;

async fn at(api: &Api, wallet: &str, instant: &str) -> crate::client::Response {
    let query: String = url::form_urlencoded::byte_serialize(instant.as_bytes()).collect();
    api.raw(
        reqwest::Method::GET,
        &format!("/api/v1/wallets/{wallet}?at={query}"),
        None,
        "",
    )
    .await
}

fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
        .map(|time| time.with_timezone(&Utc))
        .expect("an RFC 3339 time")
}

async fn expect_at(
    api: &Api,
    wallet: &str,
    instant: DateTime<Utc>,
    (balance, available, version): (&str, &str, i64),
) {
    let answer = at(api, wallet, &instant.to_rfc3339()).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "{instant}: {:?}",
        answer.body
    );
    assert_eq!(
        answer.body["balance"], balance,
        "{instant}: {:?}",
        answer.body
    );
    assert_eq!(answer.body["available"], available, "{instant}");
    assert_eq!(answer.body["version"], version, "{instant}");
    assert_eq!(time(&answer.body["asOf"]), instant);
}

/// Proves `at` answers the balance, version and available amount the journal had at each
/// instant: zero from creation to the first entry, each entry from its processing time on,
/// and the current balance now.
#[tokio::test]
async fn the_balance_as_of_each_instant_comes_from_the_journal() {
    let system = System::start(2);
    let api = &system.api;
    let created = api.create_wallet(json!({"overdraftLimit": "5"})).await;
    let wallet = created.body["walletId"].as_str().expect("id").to_owned();
    let created_at = time(&created.body["createdAt"]);
    let mut processed = Vec::new();
    for body in [
        deposit(&wallet, "10.00"),
        withdraw(&wallet, "3.00"),
        deposit(&wallet, "1.00"),
    ] {
        let id = api.submit_accepted(&body).await;
        let status = api.settled(&wallet, &id, SETTLE).await;
        processed.push(time(&status["processedAt"]));
    }
    let expect =
        |instant: DateTime<Utc>, balance: &'static str, available: &'static str, version: i64| {
            expect_at(api, &wallet, instant, (balance, available, version))
        };
    expect(created_at, "0.00", "5.00", 0).await;
    expect(processed[0] - Duration::microseconds(1), "0.00", "5.00", 0).await;
    expect(processed[0], "10.00", "15.00", 1).await;
    expect(
        processed[1] - Duration::microseconds(1),
        "10.00",
        "15.00",
        1,
    )
    .await;
    expect(processed[1], "7.00", "12.00", 2).await;
    expect(processed[2], "8.00", "13.00", 3).await;
    expect(Utc::now(), "8.00", "13.00", 3).await;
    let current = api.balance(&wallet).await.body;
    assert!(current.get("asOf").is_none(), "{current}");
}

/// Proves an instant before the wallet existed is a 404, a future one or a malformed one a
/// 422 naming `at`, and an unknown parameter a 422 too.
#[tokio::test]
async fn instants_the_journal_cannot_answer_are_refused() {
    let system = System::start(1);
    let api = &system.api;
    let created = api.create_wallet(json!({})).await;
    let wallet = created.body["walletId"].as_str().expect("id").to_owned();
    let created_at = time(&created.body["createdAt"]);
    let before = at(
        api,
        &wallet,
        &(created_at - Duration::seconds(1)).to_rfc3339(),
    )
    .await;
    assert_eq!(before.status, StatusCode::NOT_FOUND, "{:?}", before.body);
    assert_eq!(before.code(), "WALLET_NOT_FOUND");
    let future = at(
        api,
        &wallet,
        &(Utc::now() + Duration::hours(1)).to_rfc3339(),
    )
    .await;
    assert_eq!(future.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(future.code(), "INVALID_TIME");
    let malformed = at(api, &wallet, "yesterday").await;
    assert_eq!(malformed.code(), "INVALID_TIME");
    assert_eq!(malformed.body["field"], "at");
    let unknown = api
        .raw(
            reqwest::Method::GET,
            &format!("/api/v1/wallets/{wallet}?when=now"),
            None,
            "",
        )
        .await;
    assert_eq!(unknown.code(), "INVALID_QUERY");
    let missing = at(
        api,
        &uuid::Uuid::now_v7().to_string(),
        &Utc::now().to_rfc3339(),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

/// Proves the lookup is one backward step on the journal's time index: no sort, no scan of
/// the wallet's entries. Sequential scans are turned off so the tiny test table cannot make
/// the planner prefer one; what is checked is that the index alone serves the order.
#[tokio::test]
async fn the_lookup_is_one_step_on_an_index() {
    let system = System::start(1);
    let api = &system.api;
    let wallet = api.new_wallet().await;
    api.fund(&wallet, "1.00").await;
    let db = system.database().await;
    db.batch_execute("SET enable_seqscan = off")
        .await
        .expect("set");
    let id: uuid::Uuid = wallet.parse().expect("uuid");
    let plan: Vec<String> = db
        .query(
            "EXPLAIN SELECT version, balance_after::text, recorded_at FROM entries
             WHERE tenant = 'default' AND wallet_id = $1 AND recorded_at <= $2
             ORDER BY recorded_at DESC, version DESC LIMIT 1",
            &[&id, &Utc::now()],
        )
        .await
        .expect("explain")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let plan = plan.join("\n");
    assert!(
        plan.contains("Index Scan Backward using entries_tenant_wallet_recorded"),
        "{plan}"
    );
    assert!(plan.starts_with("Limit"), "{plan}");
    assert!(!plan.contains("Sort"), "{plan}");
}

/// Proves a wallet's journal times follow its versions when the batch that changes it last
/// took its time first (a batch of another partition, or a worker whose clock runs behind):
/// the later entry is recorded no earlier than the one before it, so the balance at an
/// instant never goes back. Before, it was recorded at its batch's own earlier time.
#[tokio::test]
async fn journal_times_follow_versions_whatever_each_batch_took() {
    let mut system = System::start(1);
    let wallet = system.api.new_wallet().await;
    system.api.fund(&wallet, "10").await;
    system.worker.kill();
    let mut client = crate::client::store_client(&system.stack.postgres.url()).await;
    let topic = &system.stack.operations_topic;
    let start = Utc::now();
    for (step, took) in [(0, start + Duration::milliseconds(10)), (1, start)] {
        let position = ::wallet::ledger::store::next_offset(&client, topic, 0)
            .await
            .expect("the stored position");
        let operation = ::wallet::ledger::types::Operation {
            tenant: ::wallet::auth::DEFAULT_TENANT.to_owned(),
            id: ::wallet::ledger::types::OperationId(uuid::Uuid::now_v7()),
            wallet_id: ::wallet::ledger::types::WalletId(wallet.parse().expect("wallet id")),
            kind: ::wallet::ledger::types::OperationKind::Deposit,
            amount: Some(::wallet::ledger::money::Amount::parse("1").expect("amount")),
            accepted_at: start,
            fingerprint: format!("step {step}"),
            metadata: Default::default(),
        };
        let batch = ::wallet::ledger::store::Batch {
            topic: topic.clone(),
            partition: 0,
            from_offset: position,
            next_offset: position + 1,
            operations: vec![(position, operation)],
            dead_letters: Vec::new(),
        };
        ::wallet::ledger::store::apply_batch(&mut client, &batch, || took)
            .await
            .expect("the batch commits");
    }
    let db = system.database().await;
    let times: Vec<DateTime<Utc>> = db
        .query(
            "SELECT recorded_at FROM entries WHERE wallet_id = $1 ORDER BY version",
            &[&wallet.parse::<uuid::Uuid>().expect("uuid")],
        )
        .await
        .expect("entries")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(times.len(), 3, "{times:?}");
    assert!(
        times.windows(2).all(|pair| pair[0] <= pair[1]),
        "journal times go back: {times:?}"
    );
    let updated: DateTime<Utc> = db
        .query_one(
            "SELECT updated_at FROM wallets WHERE id = $1",
            &[&wallet.parse::<uuid::Uuid>().expect("uuid")],
        )
        .await
        .expect("wallet")
        .get(0);
    assert_eq!(Some(&updated), times.last(), "the wallet's last change");
}

/// A worker whose batch statements may outlast the 3 s [`hold_a_deposit`] holds one for: its
/// lease lapse is long enough that their bound (half of it) does.
fn patient_worker(stack: &crate::harness::Stack) -> crate::harness::Process {
    let lapse = ("WALLET_WORKER__LEASE_LAPSE_MS", "20000".to_owned());
    stack.spawn_wallet("work-1", &["work"], &[lapse])
}

/// Submits a deposit of 5 to `wallet` and returns once its batch, the wallet locked, is held
/// for 3 s inside its entries insert (the next batch's only).
async fn hold_a_deposit(db: &tokio_postgres::Client, api: &Api, wallet: &str) {
    db.batch_execute(
        "CREATE TABLE slow_once (pending bool);
         INSERT INTO slow_once VALUES (true);
         CREATE FUNCTION slow_entries() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN DELETE FROM slow_once; IF FOUND THEN PERFORM pg_sleep(3); END IF; RETURN NULL; END $$;
         CREATE TRIGGER slow_entries AFTER INSERT ON entries
             FOR EACH STATEMENT EXECUTE FUNCTION slow_entries();",
    )
    .await
    .expect("slow trigger installs");
    let accepted = api.submit(&deposit(wallet, "5")).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{:?}", accepted.body);
    assert!(
        some_session_waits_on(db, "PgSleep").await,
        "the batch never reached its entries insert"
    );
}

/// Whether a session comes to wait on `event` (`pg_stat_activity.wait_event`) in time.
async fn some_session_waits_on(db: &tokio_postgres::Client, event: &str) -> bool {
    crate::harness::eventually(SETTLE, || async {
        db.query(
            "SELECT 1 FROM pg_stat_activity WHERE wait_event = $1",
            &[&event],
        )
        .await
        .is_ok_and(|rows| !rows.is_empty())
    })
    .await
}

/// Proves an instant up to now is answered as it will always be. Asked while a batch that
/// has locked the wallet is still to commit (held inside its entries insert), the answer
/// waits for that batch; asked again once it committed, it is the same. Before, a batch was
/// recorded at a time read before its transaction began, so the first answer missed an entry
/// that the second one showed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instant_is_answered_the_same_before_and_after_a_slow_batch_commits() {
    let stack = crate::harness::Stack::start(1);
    let server = stack.serve();
    let _worker = patient_worker(&stack);
    let api = &Api::new(&server.base);
    let wallet = api.new_wallet().await;
    api.fund(&wallet, "10").await;
    let db = crate::client::database(&stack.postgres.url()).await;
    hold_a_deposit(&db, api, &wallet).await;
    let instant = Utc::now();
    let first = at(api, &wallet, &instant.to_rfc3339()).await;
    let committed = crate::harness::eventually(SETTLE, || async {
        api.balance(&wallet).await.body["version"] == 2
    })
    .await;
    assert!(committed, "the deposit was never applied");
    let second = at(api, &wallet, &instant.to_rfc3339()).await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    assert_eq!(
        (&first.body["version"], &first.body["balance"]),
        (&second.body["version"], &second.body["balance"]),
        "{instant}: first {:?}, then {:?}",
        first.body,
        second.body
    );
}

/// An API process frozen inside a read at an instant, holding the wallet's lock, keeps the
/// wallet's batches waiting no longer than a frozen worker would (half the lease lapse; 1 s
/// in the harness), where before they waited for as long as the process stayed frozen, and
/// with them every operation of the partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_process_frozen_in_a_read_at_an_instant_does_not_hold_up_the_wallets_batches() {
    let stack = crate::harness::Stack::start(1);
    let frozen = stack.serve();
    let server = stack.serve();
    let _worker = patient_worker(&stack);
    let api = &Api::new(&server.base);
    let wallet = api.new_wallet().await;
    api.fund(&wallet, "10").await;
    let db = crate::client::database(&stack.postgres.url()).await;
    hold_a_deposit(&db, api, &wallet).await;
    let reader = Api::new(&frozen.base);
    let read = {
        let wallet = wallet.clone();
        tokio::spawn(async move { at(&reader, &wallet, &Utc::now().to_rfc3339()).await })
    };
    assert!(
        some_session_waits_on(&db, "transactionid").await,
        "the read at an instant never waited for the batch"
    );
    frozen.process.send_signal(libc::SIGSTOP);
    let second = api.submit(&deposit(&wallet, "7")).await;
    assert_eq!(second.status, StatusCode::ACCEPTED, "{:?}", second.body);
    let id = uuid::Uuid::parse_str(&wallet).expect("wallet id");
    let applied = crate::harness::eventually(std::time::Duration::from_secs(12), || async {
        db.query_one("SELECT version FROM wallets WHERE id = $1", &[&id])
            .await
            .is_ok_and(|row| row.get::<_, i64>(0) == 3)
    })
    .await;
    frozen.process.send_signal(libc::SIGCONT);
    read.abort();
    assert!(
        applied,
        "the next deposit waited for the frozen API process's lock"
    );
}
