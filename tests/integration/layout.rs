//! An operations topic keeps the partition count it was first used with: once its count has
//! changed, nothing produces to it, as wallets would then go to other partitions than their
//! older operations.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::database;
use crate::harness::{eventually, free_port, tail, Stack};
use crate::refusals::{get_text, observed_worker};
use crate::resume::recreate_topic_with;

const DEADLINE: Duration = Duration::from_secs(60);

/// Proves `migrate` records the count, that `serve` and `migrate` then refuse a topic that has
/// another one, naming both counts, that a worker on it reports its holds cannot expire, and
/// that `serve` refuses a topic with no recorded count. Before, `serve` started and routed
/// every wallet over the new count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_whose_partition_count_changed_is_refused() {
    let stack = Stack::start(2);
    let db = database(&stack.postgres.url()).await;
    let recorded: i32 = db
        .query_one(
            "SELECT partitions FROM topic_layouts WHERE topic = $1",
            &[&stack.operations_topic],
        )
        .await
        .expect("migrate recorded the topic's count")
        .get(0);
    assert_eq!(recorded, 2);

    recreate_topic_with(&stack, 3).await;
    assert!(
        eventually(DEADLINE, || partitions_listed(&stack, 3)).await,
        "the broker lists the new topic's partitions"
    );

    let refusal = format!(
        "topic {} has 3 partitions, but its wallets were routed over 2",
        stack.operations_topic
    );
    let stderr = refused_serve(&stack).await;
    assert!(stderr.contains(&refusal), "{stderr}");

    let migrate = stack
        .wallet_command(&["migrate"])
        .output()
        .expect("wallet migrate runs");
    let stderr = String::from_utf8_lossy(&migrate.stderr);
    assert!(!migrate.status.success(), "migrate refused: {stderr}");
    assert!(stderr.contains(&refusal), "{stderr}");

    let (worker, endpoints) = observed_worker(&stack, "work-1");
    let readyz = format!("{endpoints}/readyz");
    let degraded = eventually(DEADLINE, || async {
        let readiness: Value = serde_json::from_str(&get_text(&readyz).await).unwrap_or_default();
        let cause = readiness["checks"]["worker"]["error"]
            .as_str()
            .unwrap_or_default();
        readiness["status"] == "degraded"
            && cause.contains("hold expiry stopped")
            && cause.contains(&refusal)
    })
    .await;
    assert!(
        degraded,
        "a worker whose holds cannot expire says so: {}\n{}",
        get_text(&readyz).await,
        tail(&worker.log)
    );
    drop(worker);

    db.execute("DELETE FROM topic_layouts", &[])
        .await
        .expect("the record is gone");
    let stderr = refused_serve(&stack).await;
    let unrecorded = format!(
        "no partition count is recorded for topic {}",
        stack.operations_topic
    );
    assert!(stderr.contains(&unrecorded), "{stderr}");
}

/// Starts `wallet serve` and answers its stderr once it has exited unsuccessfully; fails the
/// test when it is still running after `DEADLINE`.
async fn refused_serve(stack: &Stack) -> String {
    let mut serve = stack
        .wallet_command(&["serve"])
        .env("WALLET_HTTP__LISTEN", format!("127.0.0.1:{}", free_port()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wallet serve starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = serve.try_wait().expect("waits for serve") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = serve.kill();
            panic!("wallet serve kept running on a topic it must refuse");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let output = serve.wait_with_output().expect("serve's output");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!status.success(), "serve refused to start: {stderr}");
    stderr
}

/// Whether the broker lists `count` usable partitions of the stack's operations topic.
async fn partitions_listed(stack: &Stack, count: usize) -> bool {
    let Ok(client) = rskafka::client::ClientBuilder::new(vec![stack.broker.address()])
        .build()
        .await
    else {
        return false;
    };
    client.list_topics().await.is_ok_and(|topics| {
        topics
            .iter()
            .any(|topic| topic.name == stack.operations_topic && topic.partitions.len() == count)
    })
}
