//! PostgreSQL refusing what a worker writes: for a while (disk full, read-only after a
//! failover), which is waited out, or for a record's own data, which makes it a dead letter
//! whose status is FAILED.

use serde_json::{json, Value};

use crate::client::{count_rows, database, deposit, Api, System};
use crate::guarantees::SETTLE;
use crate::harness::{eventually, free_port, Process, Stack};

/// A trigger that makes inserting an operation fail with the SQLSTATE in `fault` while a row
/// is there (for every amount, or only `amount` when set).
async fn install_fault(db: &tokio_postgres::Client) {
    db.batch_execute(
        "CREATE TABLE fault (sqlstate text NOT NULL, amount numeric);
         CREATE FUNCTION inject_fault() RETURNS trigger LANGUAGE plpgsql AS $$
         DECLARE code text;
         BEGIN
             SELECT sqlstate INTO code FROM fault WHERE amount IS NULL OR amount = NEW.amount LIMIT 1;
             IF code IS NOT NULL THEN
                 RAISE EXCEPTION 'injected fault %', code USING ERRCODE = code;
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER inject_fault BEFORE INSERT ON operations
             FOR EACH ROW EXECUTE FUNCTION inject_fault();",
    )
    .await
    .expect("fault trigger installs");
}

/// A worker serving `/readyz` and `/metrics` on a port of its own.
pub fn observed_worker(stack: &Stack, name: &str) -> (Process, String) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let worker = stack.spawn_wallet(
        name,
        &["work"],
        &[("WALLET_WORKER__METRICS_LISTEN", listen)],
    );
    (worker, format!("http://127.0.0.1:{port}"))
}

pub async fn get_text(url: &str) -> String {
    match reqwest::get(url).await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

fn retries(metrics: &str, reason: &str) -> u64 {
    let prefix = format!("wallet_batch_retries_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}

/// Proves PostgreSQL refusing writes for a while (disk full, then read-only after a
/// failover) is waited out: the acknowledged deposit stays PENDING while the worker retries,
/// visibly (metric, degraded readiness naming the SQLSTATE), and is applied once the database
/// recovers; nothing becomes a dead letter. It used to be dead-lettered after ~300 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_errors_are_waited_out() {
    let stack = Stack::start(1);
    let server = stack.serve();
    let (_worker, endpoints) = observed_worker(&stack, "work-1");
    let api = Api::new(&server.base);
    let wallet = api.new_wallet().await;
    let db = database(&stack.postgres.url()).await;
    install_fault(&db).await;
    for (n, (sqlstate, reason)) in [("53100", "resources"), ("25006", "read_only")]
        .into_iter()
        .enumerate()
    {
        db.execute("INSERT INTO fault (sqlstate) VALUES ($1)", &[&sqlstate])
            .await
            .expect("fault on");
        let operation = api.submit_accepted(&deposit(&wallet, "1.00")).await;
        let retried = eventually(SETTLE, || async {
            retries(&get_text(&format!("{endpoints}/metrics")).await, reason) >= 5
        })
        .await;
        assert!(retried, "the worker retries {sqlstate} as {reason}");
        let readiness: Value =
            serde_json::from_str(&get_text(&format!("{endpoints}/readyz")).await).expect("json");
        assert_eq!(readiness["status"], "degraded", "{readiness}");
        let cause = readiness["checks"]["worker"]["error"]
            .as_str()
            .unwrap_or_default();
        assert!(
            cause.contains(sqlstate) && cause.contains("injected fault"),
            "{cause}"
        );
        assert_eq!(
            api.status(&wallet, &operation).await.body["status"],
            "PENDING"
        );
        db.execute("DELETE FROM fault", &[])
            .await
            .expect("fault off");
        let settled = api.settled(&wallet, &operation, SETTLE).await;
        assert_eq!(settled["status"], "PROCESSED", "{settled}");
        assert_eq!(api.balance(&wallet).await.body["version"], n as i64 + 1);
        let ready = eventually(SETTLE, || async {
            get_text(&format!("{endpoints}/readyz"))
                .await
                .contains("\"ready\"")
        })
        .await;
        assert!(ready, "readiness recovers");
    }
    assert_eq!(count_rows(&db, "dead_letters").await, 0);
}

/// Turns PostgreSQL read-only for every session but `db`'s, as after a failover to a server
/// that only reads, or back.
async fn set_read_only(db: &tokio_postgres::Client, on: bool) {
    let setting = match on {
        true => "ALTER SYSTEM SET default_transaction_read_only = on",
        false => "ALTER SYSTEM RESET default_transaction_read_only",
    };
    for statement in [
        "SET default_transaction_read_only = off",
        setting,
        "SELECT pg_reload_conf()",
    ] {
        db.simple_query(statement)
            .await
            .unwrap_or_else(|error| panic!("{statement}: {error}"));
    }
}

/// Proves a worker whose partition cannot start (PostgreSQL read-only, SQLSTATE 25006, when
/// the partition's position is written) is reported degraded with the SQLSTATE until it
/// starts, and ready once it has. Its `/readyz` used to say ready throughout, and the log
/// named no SQLSTATE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_that_cannot_start_is_degraded_with_its_sqlstate() {
    let stack = Stack::start(1);
    let db = database(&stack.postgres.url()).await;
    set_read_only(&db, true).await;
    let (worker, endpoints) = observed_worker(&stack, "work-1");
    let readyz = format!("{endpoints}/readyz");
    let degraded = eventually(SETTLE, || async {
        let readiness: Value = serde_json::from_str(&get_text(&readyz).await).unwrap_or_default();
        let cause = readiness["checks"]["worker"]["error"]
            .as_str()
            .unwrap_or_default();
        readiness["status"] == "degraded" && cause.contains("25006") && cause.contains("read_only")
    })
    .await;
    assert!(
        degraded,
        "{}\n{}",
        get_text(&readyz).await,
        crate::harness::tail(&worker.log)
    );
    set_read_only(&db, false).await;
    let ready = eventually(SETTLE, || async {
        get_text(&readyz).await.contains("\"ready\"")
    })
    .await;
    assert!(ready, "readiness recovers: {}", get_text(&readyz).await);
}

/// Proves a record whose own data the database refuses becomes a dead letter whose status
/// answers FAILED with a reason (it used to answer PENDING forever), and the partition goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_record_is_failed_not_pending() {
    let mut system = System::start(1);
    let api = system.api.clone();
    let wallet = api.new_wallet().await;
    let db = system.database().await;
    install_fault(&db).await;
    db.execute(
        "INSERT INTO fault (sqlstate, amount) VALUES ('22023', 13.13)",
        &[],
    )
    .await
    .expect("fault on");
    let refused = api.submit_accepted(&deposit(&wallet, "13.13")).await;
    let next = api.submit_accepted(&deposit(&wallet, "1.00")).await;
    let status = api.settled(&wallet, &refused, SETTLE).await;
    assert_eq!(
        (&status["status"], &status["reason"]),
        (&json!("FAILED"), &json!("REJECTED")),
        "{status}"
    );
    assert_eq!(
        api.settled(&wallet, &next, SETTLE).await["status"],
        "PROCESSED"
    );
    let row = db
        .query_one("SELECT operation_id::text, reason FROM dead_letters", &[])
        .await
        .expect("one dead letter");
    assert_eq!(row.get::<_, String>(0), refused);
    assert!(
        row.get::<_, String>(1).contains("22023"),
        "the reason names the SQLSTATE"
    );
    // Read from PostgreSQL too, not only from the marker the worker wrote.
    system.stack.redis.process.kill();
    let status = api.status(&wallet, &refused).await.body;
    assert_eq!(
        (&status["status"], &status["reason"]),
        (&json!("FAILED"), &json!("REJECTED")),
        "{status}"
    );
}

/// Proves a refused TRANSFER's status is read from both of its wallets, as a processed one's
/// is, from PostgreSQL too once its marker is gone. From the target wallet it used to be 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_transfer_is_failed_from_both_wallets() {
    let system = System::start(1);
    let api = system.api.clone();
    let (source, target) = (api.new_wallet().await, api.new_wallet().await);
    api.fund(&source, "20.00").await;
    let db = system.database().await;
    install_fault(&db).await;
    db.execute(
        "INSERT INTO fault (sqlstate, amount) VALUES ('22023', 13.13)",
        &[],
    )
    .await
    .expect("fault on");
    let refused = api
        .submit_accepted(&crate::client::transfer(&source, &target, "13.13"))
        .await;
    api.settled(&source, &refused, SETTLE).await;
    let mut redis = redis::Client::open(system.stack.redis.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connects to Redis");
    for flushed in [false, true] {
        if flushed {
            let () = redis::cmd("FLUSHALL")
                .query_async(&mut redis)
                .await
                .expect("the markers are gone");
        }
        for wallet in [&source, &target] {
            let status = api.status(wallet, &refused).await;
            assert_eq!(
                (
                    status.status,
                    &status.body["status"],
                    &status.body["reason"]
                ),
                (
                    reqwest::StatusCode::OK,
                    &json!("FAILED"),
                    &json!("REJECTED")
                ),
                "from {wallet}, markers flushed: {flushed}: {}",
                status.body
            );
            assert_eq!(status.body["walletId"], source.as_str());
        }
    }
}

/// Operations inserted by one statement above which the slow trigger holds the insert.
const SLOW_ABOVE: i64 = 4;

/// A trigger that holds an insert of more than `SLOW_ABOVE` operations far past a batch
/// session's statement timeout, as a throttled PostgreSQL holds a big batch; smaller inserts
/// pass at once.
async fn install_slow_big_inserts(db: &tokio_postgres::Client) {
    db.batch_execute(&format!(
        "CREATE FUNCTION slow_big_inserts() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF (SELECT count(*) FROM inserted) > {SLOW_ABOVE} THEN
                 PERFORM pg_sleep(600);
             END IF;
             RETURN NULL;
         END $$;
         CREATE TRIGGER slow_big_inserts AFTER INSERT ON operations
             REFERENCING NEW TABLE AS inserted
             FOR EACH STATEMENT EXECUTE FUNCTION slow_big_inserts();"
    ))
    .await
    .expect("slow trigger installs");
}

/// Proves a batch that cannot finish within the statement timeout (SQLSTATE 57014 on every
/// attempt) is applied in smaller parts: deposits accepted while no worker ran, met by the
/// worker as one big batch, are all PROCESSED exactly once and in offset order (the wallet's
/// entry versions follow the records' offsets), and the retries are counted as
/// `statement_timeout`. The worker used to retry the same batch forever, so the partition
/// stalled and every deposit stayed PENDING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_too_slow_for_the_statement_timeout_is_applied_in_parts() {
    const DEPOSITS: i64 = 16;
    let stack = Stack::start(1);
    let server = stack.serve();
    let api = Api::new(&server.base);
    let wallet = api.new_wallet().await;
    let db = database(&stack.postgres.url()).await;
    install_slow_big_inserts(&db).await;
    let mut operations = Vec::new();
    for _ in 0..DEPOSITS {
        operations.push(api.submit_accepted(&deposit(&wallet, "1.00")).await);
    }
    let (_worker, endpoints) = observed_worker(&stack, "work-1");
    for operation in &operations {
        let status = api.settled(&wallet, operation, SETTLE).await;
        assert_eq!(status["status"], "PROCESSED", "{status}");
    }
    let rows = db
        .query(
            "SELECT e.version FROM operations o JOIN entries e ON e.operation_id = o.id
             ORDER BY o.\"offset\"",
            &[],
        )
        .await
        .expect("entries read");
    let versions: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
    assert_eq!(versions, (1..=DEPOSITS).collect::<Vec<i64>>());
    let balance = api.balance(&wallet).await;
    assert_eq!(balance.body["balance"], "16.00", "{:?}", balance.body);
    assert_eq!(count_rows(&db, "dead_letters").await, 0);
    let metrics = get_text(&format!("{endpoints}/metrics")).await;
    assert!(
        retries(&metrics, "statement_timeout") >= 1,
        "the timed-out attempts are counted: {metrics}"
    );
}
