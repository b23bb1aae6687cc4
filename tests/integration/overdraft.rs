//! Overdraft limits end to end: a wallet made with a limit may go below zero down to minus
//! its limit, never further, and the database refuses a balance beyond it whoever writes it.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::client::{stored_and_relayed, transfer, withdraw, Api, System};
use crate::events::read_events;
use crate::guarantees::SETTLE;

async fn settled_submit(api: &Api, wallet: &str, body: &Value) -> Value {
    let accepted = api.submit(body).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{:?}", accepted.body);
    let id = accepted.body["operationId"].as_str().expect("operationId");
    api.settled(wallet, id, SETTLE).await
}

/// Proves a wallet with `overdraftLimit` shows it and what is available, withdraws and
/// transfers below zero down to minus the limit, and is refused INSUFFICIENT_FUNDS one cent
/// beyond.
#[tokio::test]
async fn a_balance_goes_down_to_minus_its_limit_and_no_further() {
    let system = System::start(2);
    let api = &system.api;
    let created = api.create_wallet(json!({"overdraftLimit": "50"})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["overdraftLimit"], "50.00");
    assert_eq!(created.body["available"], "50.00");
    assert_eq!(created.body["balance"], "0.00");
    let alice = created.body["walletId"].as_str().expect("id").to_owned();
    let bob = api.new_wallet().await;
    assert_eq!(api.balance(&bob).await.body["overdraftLimit"], "0.00");

    let status = settled_submit(api, &alice, &withdraw(&alice, "30.00")).await;
    assert_eq!(status["status"], "PROCESSED", "{status}");
    assert_eq!(status["balanceAfter"], "-30.00");
    let status = settled_submit(api, &alice, &withdraw(&alice, "20.01")).await;
    assert_eq!(status["status"], "FAILED", "{status}");
    assert_eq!(status["reason"], "INSUFFICIENT_FUNDS");
    let status = settled_submit(api, &alice, &transfer(&alice, &bob, "20.00")).await;
    assert_eq!(status["status"], "PROCESSED", "{status}");
    assert_eq!(status["balanceAfter"], "-50.00");

    let wallet = api.balance(&alice).await.body;
    assert_eq!(wallet["balance"], "-50.00", "{wallet}");
    assert_eq!(wallet["available"], "0.00", "{wallet}");
    let status = settled_submit(api, &bob, &withdraw(&bob, "20.01")).await;
    assert_eq!(
        status["reason"], "INSUFFICIENT_FUNDS",
        "a wallet without a limit stops at zero"
    );

    let db = system.database().await;
    assert!(stored_and_relayed(&db, 4, Duration::from_secs(60)).await);
    let events = read_events(&system.stack.broker.address(), &system.stack.events_topic).await;
    let created = |wallet: &str| {
        events
            .iter()
            .find(|event| event["type"] == "WalletCreated" && event["walletId"] == wallet)
            .map(|event| event["overdraftLimit"].clone())
    };
    assert_eq!(
        created(&alice),
        Some(json!("50")),
        "its event names the limit"
    );
    assert_eq!(created(&bob), Some(json!("0")));
}

/// Proves bad limits are refused with a 422 naming the field, and re-creating a wallet is
/// idempotent only with the same limit.
#[tokio::test]
async fn limits_are_validated_and_part_of_the_wallet() {
    let system = System::start(1);
    let api = &system.api;
    for bad in [
        json!("-1"),
        json!("1.005"),
        json!("ten"),
        json!(""),
        json!("1e41"),
    ] {
        let refused = api.create_wallet(json!({"overdraftLimit": bad})).await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert_eq!(refused.code(), "INVALID_OVERDRAFT_LIMIT", "{bad}");
        assert_eq!(refused.body["field"], "overdraftLimit", "{bad}");
    }
    let refused = api.create_wallet(json!({"overdraftLimit": 5})).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused.body["field"], "overdraftLimit");
    let jpy = api
        .create_wallet(json!({"currency": "JPY", "overdraftLimit": "1.5"}))
        .await;
    assert_eq!(jpy.code(), "INVALID_OVERDRAFT_LIMIT");

    let id = Uuid::now_v7().to_string();
    let first = api
        .create_wallet(json!({"walletId": id, "overdraftLimit": "10.00"}))
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    let again = api
        .create_wallet(json!({"walletId": id, "overdraftLimit": "10"}))
        .await;
    assert_eq!(again.status, StatusCode::OK, "the same limit by value");
    let other = api
        .create_wallet(json!({"walletId": id, "overdraftLimit": "20"}))
        .await;
    assert_eq!(other.status, StatusCode::CONFLICT);
    assert_eq!(other.code(), "WALLET_EXISTS");
}

/// Proves the schema itself keeps the floor: a balance below minus the limit is refused
/// whoever writes it, one at the floor is accepted.
#[tokio::test]
async fn the_database_refuses_a_balance_below_the_floor() {
    let system = System::start(1);
    let created = system
        .api
        .create_wallet(json!({"overdraftLimit": "5.00"}))
        .await;
    let id: Uuid = created.body["walletId"]
        .as_str()
        .and_then(|text| text.parse().ok())
        .expect("walletId");
    let db = system.database().await;
    let set = |balance: &'static str| {
        let db = &db;
        async move {
            db.execute(
                "UPDATE wallets SET balance = $2::text::numeric WHERE id = $1",
                &[&id, &balance],
            )
            .await
        }
    };
    assert!(set("-5.00").await.is_ok(), "the floor itself is allowed");
    let refused = set("-5.01").await.expect_err("below the floor");
    assert_eq!(
        refused.code(),
        Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION)
    );
}
