//! Where a worker resumes a partition: only at a stored position the broker holds and whose
//! record below is one PostgreSQL applied. A recreated topic stops that partition, said
//! plainly in the log, `/readyz` and `/metrics`, while the other partitions go on; an
//! operator moves the position with `wallet reposition`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;
use wallet::ingest::partitioner::partition_for;
use wallet::ledger::types::WalletId;

use crate::client::{deposit, Api};
use crate::guarantees::{first_partition, produce_raw};
use crate::harness::{eventually, free_port, tail, Process, Stack};

const DEADLINE: Duration = Duration::from_secs(60);

/// A new wallet whose operations go to `partition`.
async fn wallet_on(api: &Api, partition: i32, partitions: i32) -> String {
    loop {
        let wallet = api.new_wallet().await;
        let id = WalletId(Uuid::parse_str(&wallet).expect("a uuid"));
        if partition_for(id, partitions) == partition {
            return wallet;
        }
    }
}

/// Deletes the stack's operations topic and creates it again, empty, with as many
/// partitions: the operator mistake (or new broker cluster) this file is about.
async fn recreate_topic(stack: &Stack) {
    recreate_topic_with(stack, stack.partitions).await;
}

/// Deletes the stack's operations topic and creates it again, empty, with `partitions`.
pub async fn recreate_topic_with(stack: &Stack, partitions: i32) {
    let client = rskafka::client::ClientBuilder::new(vec![stack.broker.address()])
        .build()
        .await
        .expect("connects");
    let controller = client.controller_client().expect("controller");
    let topic = stack.operations_topic.clone();
    tokio::time::timeout(
        Duration::from_secs(30),
        controller.delete_topic(&topic, 5_000),
    )
    .await
    .expect("the delete is answered")
    .expect("topic deleted");
    // The broker refuses the name until the deletion has finished.
    let created = eventually(DEADLINE, || async {
        let create = controller.create_topic(&topic, partitions, 1, 5_000);
        matches!(
            tokio::time::timeout(Duration::from_secs(10), create).await,
            Ok(Ok(()))
        )
    })
    .await;
    assert!(created, "topic {topic} created again");
}

/// Submits a deposit under its own id until the API accepts it: right after the topic was
/// recreated the broker may answer for a moment that it does not know it.
async fn deposit_accepted(api: &Api, wallet: &str) -> String {
    let id = Uuid::new_v4().to_string();
    let mut body = deposit(wallet, "1.00");
    body["operationId"] = json!(id);
    let accepted = eventually(DEADLINE, || async {
        api.try_submit(&body)
            .await
            .is_some_and(|response| response.status == StatusCode::ACCEPTED)
    })
    .await;
    assert!(accepted, "deposit {id} accepted");
    id
}

async fn get(url: &str) -> Option<(StatusCode, String)> {
    let response = reqwest::get(url).await.ok()?;
    let status = response.status();
    Some((status, response.text().await.ok()?))
}

/// Proves a worker does not skip the records of a recreated topic: partition `a` had three
/// records applied, the recreated topic holds five new ones there. The worker used to resume
/// at offset 3, apply the last two and skip the first three for good, saying nothing, while
/// the API had answered 202 for each. Now it refuses partition `a`: the error names the topic,
/// partition, stored position and the broker's range, `/readyz` answers 503 with the reason,
/// `wallet_partition_refused` is 1, and nothing of it is applied, while partition `b` (nothing
/// applied before) applies its new record. `wallet reposition` then moves `a` to the log start
/// and every one of its five records is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recreated_topic_stops_its_partition_instead_of_skipping_records() {
    let stack = Stack::start(2);
    let server = stack.serve();
    let api = Api::new(&server.base);
    let (a, b) = (0, 1);
    let on_a = wallet_on(&api, a, stack.partitions).await;
    let on_b = wallet_on(&api, b, stack.partitions).await;
    let (mut worker, port) = observed_worker(&stack);
    for _ in 0..3 {
        api.fund(&on_a, "1.00").await;
    }
    worker.kill();
    recreate_topic(&stack).await;
    let mut new_on_a = Vec::new();
    for _ in 0..5 {
        new_on_a.push(deposit_accepted(&api, &on_a).await);
    }
    let new_on_b = deposit_accepted(&api, &on_b).await;
    worker.start();

    let status = api.settled(&on_b, &new_on_b, DEADLINE).await;
    assert_eq!(
        status["status"], "PROCESSED",
        "partition b goes on: {status}"
    );
    assert!(
        refused_with(
            port,
            &[
                &format!("partition {a} refused"),
                "below stored position 3",
                "the topic was recreated",
            ]
        )
        .await
    );
    let metrics = get(&format!("http://127.0.0.1:{port}/metrics"))
        .await
        .map(|(_, text)| text)
        .unwrap_or_default();
    assert!(
        metrics.contains(&format!("wallet_partition_refused{{partition=\"{a}\"}} 1")),
        "{metrics}"
    );
    let log = std::fs::read_to_string(&worker.log).unwrap_or_default();
    assert!(
        log.lines().any(|line| line.contains("ERROR")
            && line.contains("refusing to apply the partition")
            && line.contains(&format!("topic={}", stack.operations_topic))
            && line.contains("stored_position=3")
            && line.contains("end=5")),
        "{}",
        tail(&worker.log)
    );
    for id in &new_on_a {
        let status = api.status(&on_a, id).await;
        assert_eq!(status.body["status"], "PENDING", "{:?}", status.body);
    }
    let balance = api.balance(&on_a).await;
    assert_eq!(balance.body["balance"], "3.00", "{:?}", balance.body);

    let moved = reposition(&stack, a);
    assert!(
        moved.contains("moved its stored position from 3 to 0"),
        "{moved}"
    );
    for id in &new_on_a {
        let status = api.settled(&on_a, id, DEADLINE).await;
        assert_eq!(status["status"], "PROCESSED", "{status}");
    }
    let balance = api.balance(&on_a).await;
    assert_eq!(balance.body["balance"], "8.00", "{:?}", balance.body);
    let readyz = format!("http://127.0.0.1:{port}/readyz");
    let ready = eventually(DEADLINE, || async {
        get(&readyz)
            .await
            .is_some_and(|(status, _)| status == StatusCode::OK)
    })
    .await;
    assert!(ready, "ready again: {:?}", get(&readyz).await);
    let again = stack
        .wallet_command(&["reposition", "--partition", &a.to_string()])
        .output()
        .expect("wallet reposition runs");
    assert!(
        !again.status.success(),
        "an accepted position is never moved"
    );
}

/// The stack's `wallet work`, serving `/readyz` and `/metrics` on a port of its own.
fn observed_worker(stack: &Stack) -> (Process, u16) {
    let port = free_port();
    let worker = stack.spawn_wallet(
        &format!("work-{port}"),
        &["work"],
        &[("WALLET_WORKER__METRICS_LISTEN", format!("127.0.0.1:{port}"))],
    );
    (worker, port)
}

/// Polls the worker's `/readyz` until it answers 503 with a reason holding every one of
/// `phrases`.
async fn refused_with(port: u16, phrases: &[&str]) -> bool {
    let readyz = format!("http://127.0.0.1:{port}/readyz");
    let refused = eventually(DEADLINE, || async {
        get(&readyz).await.is_some_and(|(status, body)| {
            let body: Value = serde_json::from_str(&body).unwrap_or_default();
            let reason = body["checks"]["worker"]["error"]
                .as_str()
                .unwrap_or_default();
            status == StatusCode::SERVICE_UNAVAILABLE
                && phrases.iter().all(|phrase| reason.contains(phrase))
        })
    })
    .await;
    if !refused {
        eprintln!("/readyz: {:?}", get(&readyz).await);
    }
    refused
}

fn reposition(stack: &Stack, partition: i32) -> String {
    let output = stack
        .wallet_command(&["reposition", "--partition", &partition.to_string()])
        .output()
        .expect("wallet reposition runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Proves a running consumer whose topic is recreated under it stops at a stored position
/// beyond the new topic's end (the broker answers OFFSET_OUT_OF_RANGE), rather than waiting
/// there for offsets the new records below it never reach. It used to log warnings, hand the
/// partition back and take it again, forever, while `/readyz` said ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_whose_topic_is_recreated_stops_beyond_its_end() {
    let stack = Stack::start(2);
    let server = stack.serve();
    let api = Api::new(&server.base);
    let on_a = wallet_on(&api, 0, stack.partitions).await;
    let on_b = wallet_on(&api, 1, stack.partitions).await;
    let (_worker, port) = observed_worker(&stack);
    for _ in 0..3 {
        api.fund(&on_a, "1.00").await;
    }
    recreate_topic(&stack).await;
    let lost_below = deposit_accepted(&api, &on_a).await;
    let on_b_id = deposit_accepted(&api, &on_b).await;

    let status = api.settled(&on_b, &on_b_id, DEADLINE).await;
    assert_eq!(status["status"], "PROCESSED", "{status}");
    assert!(
        refused_with(
            port,
            &[
                "partition 0 refused",
                "stored position 3 is beyond the partition's end (the broker holds 0..1)"
            ]
        )
        .await
    );
    let status = api.status(&on_a, &lost_below).await;
    assert_eq!(status.body["status"], "PENDING", "{:?}", status.body);

    let moved = reposition(&stack, 0);
    assert!(moved.contains("from 3 to 0"), "{moved}");
    let status = api.settled(&on_a, &lost_below, DEADLINE).await;
    assert_eq!(status["status"], "PROCESSED", "{status}");
}

/// Proves records the broker deleted before they were applied (retention) stop their
/// partition: the worker used to fail its fetch at the stored position over and over, and
/// `/readyz` said ready. `wallet reposition` moves on to the log start and says which records
/// are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_deleted_before_they_were_applied_stop_their_partition() {
    let stack = Stack::start(1);
    let server = stack.serve();
    let api = Api::new(&server.base);
    let wallet = api.new_wallet().await;
    let (mut worker, port) = observed_worker(&stack);
    for _ in 0..3 {
        api.fund(&wallet, "1.00").await;
    }
    worker.kill();
    deposit_accepted(&api, &wallet).await;
    deposit_accepted(&api, &wallet).await;
    let partition = first_partition(&stack).await;
    tokio::time::timeout(Duration::from_secs(30), partition.delete_records(5, 5_000))
        .await
        .expect("the delete is answered")
        .expect("records 3 and 4 deleted");
    let kept = deposit_accepted(&api, &wallet).await;
    worker.start();

    assert!(
        refused_with(
            port,
            &["stored position 3 is below the partition's log start (the broker holds 5..6)"]
        )
        .await
    );
    let status = api.status(&wallet, &kept).await;
    assert_eq!(status.body["status"], "PENDING", "{:?}", status.body);
    let moved = reposition(&stack, 0);
    assert!(
        moved.contains("from 3 to 5") && moved.contains("records 3..5 are gone"),
        "{moved}"
    );
    let status = api.settled(&wallet, &kept, DEADLINE).await;
    assert_eq!(status["status"], "PROCESSED", "{status}");
}

/// Proves a dead letter at the offset below the stored position vouches only for the record
/// it kept. The old topic's offset 2 was an unreadable record, kept as a dead letter; the
/// recreated topic holds six new records, another unreadable one at offset 2. The worker used
/// to take the dead letter for that record, resume at 3 and skip the two deposits below it.
/// Now it refuses the partition, and `wallet reposition` moves the old topic's dead letters
/// aside, so the new record at offset 2 is kept as a dead letter of its own, where it used to
/// be dropped as a copy of the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_letter_below_the_position_vouches_only_for_its_own_record() {
    let stack = Stack::start(1);
    let server = stack.serve();
    let api = Api::new(&server.base);
    let wallet = api.new_wallet().await;
    let (mut worker, port) = observed_worker(&stack);
    api.fund(&wallet, "1.00").await;
    api.fund(&wallet, "1.00").await;
    produce_raw(&stack, vec![b"an old unreadable record".to_vec()]).await;
    let db = crate::client::database(&stack.postgres.url()).await;
    let letter_at_2 = || async {
        db.query_opt(
            "SELECT payload FROM dead_letters WHERE topic = $1 AND partition = 0 AND \"offset\" = 2",
            &[&stack.operations_topic],
        )
        .await
        .expect("dead letters")
        .map(|row| row.get::<_, Vec<u8>>(0))
    };
    let kept = eventually(DEADLINE, || async { letter_at_2().await.is_some() }).await;
    assert!(kept, "the old unreadable record is kept as a dead letter");
    worker.kill();
    recreate_topic(&stack).await;
    let mut deposits = vec![
        deposit_accepted(&api, &wallet).await,
        deposit_accepted(&api, &wallet).await,
    ];
    produce_raw(&stack, vec![b"a new unreadable record".to_vec()]).await;
    for _ in 0..3 {
        deposits.push(deposit_accepted(&api, &wallet).await);
    }
    worker.start();

    assert!(
        refused_with(
            port,
            &[
                "partition 0 refused",
                "below stored position 3",
                "the topic was recreated"
            ]
        )
        .await
    );
    let moved = reposition(&stack, 0);
    assert!(
        moved.contains("moved its stored position from 3 to 0")
            && moved.contains("dead letters of"),
        "{moved}"
    );
    for id in &deposits {
        let status = api.settled(&wallet, id, DEADLINE).await;
        assert_eq!(status["status"], "PROCESSED", "{status}");
    }
    let balance = api.balance(&wallet).await;
    assert_eq!(balance.body["balance"], "7.00", "{:?}", balance.body);
    let new_letter = eventually(DEADLINE, || async {
        letter_at_2().await.as_deref() == Some(b"a new unreadable record".as_slice())
    })
    .await;
    assert!(new_letter, "offset 2 holds {:?}", letter_at_2().await);
}
