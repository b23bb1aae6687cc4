//! The operator commands against a live system: `wallet verify` audits the ledger and
//! `wallet lag` shows how far the workers are behind the broker.

use std::time::Duration;

use serde_json::Value;

use crate::client::{deposit, transfer, withdraw, System};
use crate::harness::eventually;

const SETTLE: Duration = Duration::from_secs(30);

/// Runs `wallet ARGS --json`; its exit code and its report.
fn report(system: &System, args: &[&str]) -> (Option<i32>, Value) {
    let mut all = args.to_vec();
    all.push("--json");
    let output = system
        .stack
        .wallet_command(&all)
        .output()
        .expect("wallet runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|error| {
        panic!(
            "{error}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code(), report)
}

fn checks_of(report: &Value, subject: &str) -> Vec<String> {
    report["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .filter(|violation| violation["subject"] == subject)
        .map(|violation| violation["check"].as_str().unwrap_or_default().to_owned())
        .collect()
}

const ORPHAN_WALLET: &str = "00000000-0000-0000-0000-00000000dead";
const ORPHAN_OPERATION: &str = "00000000-0000-0000-0000-00000000beef";

/// Proves `wallet lag` sees every partition caught up with its lease holder, `wallet verify`
/// passes a consistent ledger, and then reports a corrupted balance, a version gap, a changed
/// entry (which no longer continues the one before it), an entry recorded before the one
/// before it, an entry on a wallet its operation does not name, a position beyond the
/// broker's end and an entry of no wallet and no operation (no foreign key refuses one), each
/// by its subject, with exit code 1.
#[tokio::test]
async fn verify_reports_each_corruption_and_lag_is_zero_when_caught_up() {
    let mut system = System::start(2);
    let api = &system.api;
    let [a, b, c] = [
        api.new_wallet().await,
        api.new_wallet().await,
        api.new_wallet().await,
    ];
    for wallet in [&a, &b, &c] {
        api.fund(wallet, "10.00").await;
    }
    let moved = api.submit_accepted(&transfer(&a, &b, "4.00")).await;
    let refused = api.submit_accepted(&withdraw(&c, "99.00")).await;
    let last = api.submit_accepted(&deposit(&c, "1.00")).await;
    assert_eq!(api.settled(&a, &moved, SETTLE).await["status"], "PROCESSED");
    assert_eq!(api.settled(&c, &refused, SETTLE).await["status"], "FAILED");
    assert_eq!(api.settled(&c, &last, SETTLE).await["status"], "PROCESSED");

    let caught_up = eventually(SETTLE, || async {
        let (code, lag) = report(&system, &["lag"]);
        code == Some(0)
            && lag["totalLag"] == 0
            && lag["outboxRows"] == 0
            && lag["partitions"].as_array().is_some_and(|parts| {
                parts.len() == 2 && parts.iter().all(|p| p["owner"].is_string())
            })
    })
    .await;
    assert!(caught_up, "{}", report(&system, &["lag"]).1);

    let (code, clean) = report(&system, &["verify"]);
    assert_eq!(code, Some(0), "{clean}");
    assert_eq!(clean["violationCount"], 0, "{clean}");
    assert_eq!(clean["wallets"], 3);
    assert_eq!(clean["operations"], 6);

    system.worker.kill();
    let db = system.database().await;
    for statement in [
        format!("UPDATE wallets SET balance = balance + 1 WHERE id = '{a}'"),
        format!(
            "UPDATE entries SET version = version + 10 WHERE wallet_id = '{b}' AND version = 1"
        ),
        format!("UPDATE entries SET delta = delta + 1 WHERE wallet_id = '{c}' AND version = 1"),
        "UPDATE consumer_offsets SET next_offset = next_offset + 1000 WHERE partition = 0"
            .to_owned(),
        format!(
            "UPDATE entries SET recorded_at = recorded_at - interval '1 hour'
             WHERE wallet_id = '{a}' AND version = 2"
        ),
        format!("UPDATE operations SET to_wallet_id = '{c}' WHERE id = '{moved}'"),
        format!(
            "INSERT INTO entries (wallet_id, version, operation_id, delta, balance_after, tenant, recorded_at)
             VALUES ('{ORPHAN_WALLET}', 1, '{ORPHAN_OPERATION}', 0, 0, 'default', now())"
        ),
        // Another tenant's wallet with a's id: its own, empty journal, which is consistent.
        format!(
            "INSERT INTO wallets (tenant, id, currency, balance, version, created_at, updated_at)
             VALUES ('acme', '{a}', 'USD', 0, 0, now(), now())"
        ),
    ] {
        db.execute(&statement, &[]).await.expect(&statement);
    }
    let (code, found) = report(&system, &["verify"]);
    assert_eq!(code, Some(1), "{found}");
    assert_eq!(
        checks_of(&found, &format!("wallet default/{a}")),
        vec!["balance equals the sum of its entries"]
    );
    assert_eq!(
        checks_of(&found, &format!("wallet default/{b}")),
        vec!["entry versions run 1, 2, 3, ... up to the wallet's version"]
    );
    assert_eq!(
        checks_of(&found, &format!("wallet default/{c}")),
        vec!["balance equals the sum of its entries"]
    );
    let funding_of_c = db
        .query_one(
            &format!(
                "SELECT operation_id::text FROM entries WHERE wallet_id = '{c}' AND version = 1"
            ),
            &[],
        )
        .await
        .expect("c's first entry")
        .get::<_, String>(0);
    assert_eq!(
        checks_of(&found, &format!("operation {funding_of_c}")),
        vec!["a processed operation's entries move exactly its amount"]
    );
    let topic = &system.stack.operations_topic;
    assert_eq!(
        checks_of(&found, &format!("partition {topic}/0")),
        vec!["stored position is at most the partition's end offset"]
    );
    assert_eq!(
        checks_of(&found, &format!("entry default/{ORPHAN_WALLET}/1")),
        vec![
            "every entry has its operation",
            "every entry has its wallet"
        ]
    );
    assert_eq!(
        checks_of(&found, &format!("entry default/{c}/1")),
        vec!["an entry's balance is the one before it plus its delta"]
    );
    assert_eq!(
        checks_of(&found, &format!("entry default/{a}/2")),
        vec!["entry times follow versions"]
    );
    assert_eq!(
        checks_of(&found, &format!("entry default/{b}/2")),
        vec!["an entry is on its operation's wallet or the one it credits"]
    );
    assert!(checks_of(&found, &format!("wallet acme/{a}")).is_empty());
    assert_eq!(found["violationCount"], 10, "{found}");
}
