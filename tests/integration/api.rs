//! The HTTP API end to end: happy paths and every validation error.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::client::{deposit, transfer, withdraw, System};

const SETTLE: Duration = Duration::from_secs(30);

/// Proves deposits, withdrawals and transfers are applied, with statuses, balances and both
/// sides' history.
#[tokio::test]
async fn deposit_withdraw_transfer_happy_paths() {
    let system = System::start(4);
    let api = &system.api;
    let alice = api.new_wallet().await;
    let bob = api.new_wallet().await;

    let created = api.balance(&alice).await;
    assert_eq!(created.status, StatusCode::OK);
    assert_eq!(created.body["balance"], "0.00");
    assert_eq!(created.body["version"], 0);
    assert_eq!(created.body["currency"], "USD");

    let accepted = api.submit(&deposit(&alice, "100.50")).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED);
    assert_eq!(accepted.body["status"], "PENDING");
    let operation = accepted.body["operationId"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        accepted.location.as_deref(),
        Some(format!("/api/v1/wallets/{alice}/operations/{operation}").as_str())
    );
    let status = api.settled(&alice, &operation, SETTLE).await;
    assert_eq!(status["status"], "PROCESSED");
    assert_eq!(status["balanceAfter"], "100.50");

    let accepted = api
        .submit(&json!({"walletId": alice, "operationType": "WITHDRAW", "amount": 0.5}))
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{:?}", accepted.body);
    let status = api
        .settled(
            &alice,
            accepted.body["operationId"].as_str().expect("id"),
            SETTLE,
        )
        .await;
    assert_eq!(status["balanceAfter"], "100.00");

    let accepted = api.submit(&transfer(&alice, &bob, "40")).await;
    let transfer_id = accepted.body["operationId"]
        .as_str()
        .expect("id")
        .to_owned();
    api.settled(&alice, &transfer_id, SETTLE).await;
    let accepted = api.submit(&withdraw(&alice, "1000")).await;
    let failed = api
        .settled(
            &alice,
            accepted.body["operationId"].as_str().expect("id"),
            SETTLE,
        )
        .await;
    assert_eq!(failed["status"], "FAILED");
    assert_eq!(failed["reason"], "INSUFFICIENT_FUNDS");

    let alice_balance = api.balance(&alice).await;
    assert_eq!(alice_balance.body["balance"], "60.00");
    assert_eq!(alice_balance.body["version"], 4);
    let bob_balance = api.balance(&bob).await;
    assert_eq!(bob_balance.body["balance"], "40.00");

    let history = api.history(&bob, "").await;
    assert_eq!(history.status, StatusCode::OK);
    let items = history.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["operationId"], transfer_id.as_str());
    assert_eq!(items[0]["delta"], "40.00");
    assert_eq!(items[0]["balanceAfter"], "40.00");
    let status_for_receiver = api.status(&bob, &transfer_id).await;
    assert_eq!(status_for_receiver.status, StatusCode::OK);

    let page = api.history(&alice, "limit=3").await;
    let versions: Vec<i64> = page.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["version"].as_i64().expect("v"))
        .collect();
    assert_eq!(versions, vec![4, 3, 2]);
    let cursor = page.body["nextCursor"].as_str().expect("cursor").to_owned();
    let rest = api
        .history(&alice, &format!("limit=3&cursor={cursor}"))
        .await;
    let versions: Vec<i64> = rest.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["version"].as_i64().expect("v"))
        .collect();
    assert_eq!(versions, vec![1]);
    assert!(rest.body["nextCursor"].is_null());
    // A full page that ends at the first entry is the end too: no cursor to an empty page.
    let whole = api.history(&alice, "limit=4").await;
    assert_eq!(whole.body["items"].as_array().map(Vec::len), Some(4));
    assert!(
        whole.body["nextCursor"].is_null(),
        "{:?}",
        whole.body["nextCursor"]
    );
}

/// Proves creating a wallet with a chosen id is idempotent and a currency clash is a 409.
#[tokio::test]
async fn wallet_creation_is_idempotent() {
    let system = System::start(2);
    let api = &system.api;
    let id = uuid::Uuid::new_v4().to_string();
    let first = api
        .create_wallet(json!({"walletId": id, "currency": "EUR"}))
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.body["currency"], "EUR");
    let again = api
        .create_wallet(json!({"walletId": id, "currency": "EUR"}))
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["createdAt"], first.body["createdAt"]);
    let clash = api
        .create_wallet(json!({"walletId": id, "currency": "USD"}))
        .await;
    assert_eq!(clash.status, StatusCode::CONFLICT);
    assert_eq!(clash.code(), "WALLET_EXISTS");

    // An Idempotency-Key names the wallet too; it used to be ignored, and each retry made
    // another wallet.
    let keyed = api.create_wallet_with_key("customer-17", json!({})).await;
    assert_eq!(keyed.status, StatusCode::CREATED, "{:?}", keyed.body);
    let retried = api.create_wallet_with_key("customer-17", json!({})).await;
    assert_eq!(retried.status, StatusCode::OK, "{:?}", retried.body);
    assert_eq!(retried.body["walletId"], keyed.body["walletId"]);
    let other = api.create_wallet_with_key("customer-18", json!({})).await;
    assert_eq!(other.status, StatusCode::CREATED);
    assert_ne!(other.body["walletId"], keyed.body["walletId"]);
    let chosen = api
        .create_wallet_with_key("customer-17", json!({"walletId": id, "currency": "EUR"}))
        .await;
    assert_eq!(
        chosen.body["walletId"],
        id.as_str(),
        "walletId wins over the key"
    );
}

/// Submissions that must be refused, each with its status and problem code. `usd`, `other`,
/// `eur` and `jpy` exist (`other` in USD); `missing` does not.
fn invalid_submissions(
    usd: &str,
    other: &str,
    eur: &str,
    jpy: &str,
    missing: &str,
) -> Vec<(Value, u16, &'static str)> {
    vec![
        (
            json!({"walletId": "nope", "operationType": "DEPOSIT", "amount": "1"}),
            422,
            "INVALID_ID",
        ),
        (
            json!({"walletId": missing, "operationType": "DEPOSIT", "amount": "1"}),
            404,
            "WALLET_NOT_FOUND",
        ),
        (
            json!({"walletId": usd, "operationType": "STEAL", "amount": "1"}),
            422,
            "INVALID_OPERATION_TYPE",
        ),
        (
            json!({"walletId": usd, "operationType": "DEPOSIT", "amount": "0"}),
            422,
            "INVALID_AMOUNT",
        ),
        (
            json!({"walletId": usd, "operationType": "DEPOSIT", "amount": "-5"}),
            422,
            "INVALID_AMOUNT",
        ),
        (
            json!({"walletId": usd, "operationType": "DEPOSIT", "amount": "1.001"}),
            422,
            "INVALID_AMOUNT",
        ),
        (
            json!({"walletId": jpy, "operationType": "DEPOSIT", "amount": "1.5"}),
            422,
            "INVALID_AMOUNT",
        ),
        (
            json!({"walletId": usd, "operationType": "DEPOSIT", "amount": "1e400"}),
            422,
            "INVALID_AMOUNT",
        ),
        (
            json!({"walletId": usd, "operationType": "DEPOSIT", "amount": "99999999999999999999999999999999"}),
            422,
            "INVALID_AMOUNT",
        ),
        (
            json!({"walletId": usd, "operationType": "DEPOSIT", "amount": true}),
            422,
            "INVALID_AMOUNT",
        ),
        (
            json!({"walletId": usd, "operationType": "DEPOSIT"}),
            422,
            "MISSING_FIELD",
        ),
        (
            json!({"walletId": usd, "operationType": "DEPOSIT", "amount": "1", "extra": 1}),
            422,
            "UNKNOWN_FIELD",
        ),
        (
            json!({"walletId": usd, "operationType": "TRANSFER", "amount": "1"}),
            422,
            "MISSING_FIELD",
        ),
        (
            json!({"walletId": usd, "operationType": "DEPOSIT", "amount": "1", "toWalletId": other}),
            422,
            "UNEXPECTED_FIELD",
        ),
        (
            json!({"walletId": usd, "operationType": "TRANSFER", "amount": "1", "toWalletId": usd}),
            422,
            "SAME_WALLET",
        ),
        (
            json!({"walletId": usd, "operationType": "TRANSFER", "amount": "1", "toWalletId": missing}),
            422,
            "TARGET_WALLET_NOT_FOUND",
        ),
        (
            json!({"walletId": usd, "operationType": "TRANSFER", "amount": "1", "toWalletId": eur}),
            422,
            "CURRENCY_MISMATCH",
        ),
        (
            json!({"walletId": usd, "operationType": "DEPOSIT", "amount": "1", "operationId": "x"}),
            422,
            "INVALID_ID",
        ),
    ]
}

/// Proves every validation error answers its status and problem code, before anything is
/// produced.
#[tokio::test]
async fn validation_errors_are_problems() {
    let system = System::start(2);
    let api = &system.api;
    let usd = api.new_wallet().await;
    let other = api.new_wallet().await;
    let eur = api.create_wallet(json!({"currency": "EUR"})).await.body["walletId"]
        .as_str()
        .expect("id")
        .to_owned();
    let jpy = api.create_wallet(json!({"currency": "JPY"})).await.body["walletId"]
        .as_str()
        .expect("id")
        .to_owned();
    let missing = uuid::Uuid::new_v4().to_string();
    let cases = invalid_submissions(&usd, &other, &eur, &jpy, &missing);
    for (body, status, code) in cases {
        let response = api.submit(&body).await;
        assert_eq!(
            response.status.as_u16(),
            status,
            "{body} → {:?}",
            response.body
        );
        assert_eq!(response.code(), code, "{body} → {:?}", response.body);
        assert_eq!(response.content_type, "application/problem+json");
    }
    let not_json = api
        .raw(
            Method::POST,
            "/api/v1/wallet",
            Some("application/json"),
            "{not json",
        )
        .await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
    let wrong_type = api
        .raw(Method::POST, "/api/v1/wallet", Some("text/plain"), "{}")
        .await;
    assert_eq!(wrong_type.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let unknown = api.raw(Method::GET, "/nowhere", None, "").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.content_type, "application/problem+json");
    let bad_path = api.balance("not-a-uuid").await;
    assert_eq!(bad_path.code(), "INVALID_ID");
    let absent = api.balance(&missing).await;
    assert_eq!(absent.status, StatusCode::NOT_FOUND);
    assert_eq!(absent.code(), "WALLET_NOT_FOUND");
    let unknown_operation = api.status(&usd, &missing).await;
    assert_eq!(unknown_operation.status, StatusCode::NOT_FOUND);
    let bad_limit = api.history(&usd, "limit=0").await;
    assert_eq!(bad_limit.code(), "INVALID_LIMIT");
    let bad_cursor = api.history(&usd, "cursor=abc").await;
    assert_eq!(bad_cursor.code(), "INVALID_CURSOR");
    let bad_currency = api.create_wallet(json!({"currency": "XXX"})).await;
    assert_eq!(bad_currency.code(), "UNSUPPORTED_CURRENCY");
    let balance = api.balance(&usd).await;
    assert_eq!(balance.body["version"], 0, "nothing was applied");
}

/// Proves the status of an operation is not visible under another wallet.
#[tokio::test]
async fn status_of_another_wallets_operation_is_not_found() {
    let system = System::start(2);
    let api = &system.api;
    let owner = api.new_wallet().await;
    let stranger = api.new_wallet().await;
    let accepted = api.submit(&deposit(&owner, "5")).await;
    let operation = accepted.body["operationId"]
        .as_str()
        .expect("id")
        .to_owned();
    api.settled(&owner, &operation, SETTLE).await;
    let response = api.status(&stranger, &operation).await;
    assert_eq!(response.status, StatusCode::NOT_FOUND);
    assert_eq!(response.code(), "OPERATION_NOT_FOUND");
}

/// Proves a final status answered from the cache shows what the stored record shows: the
/// type, the amount in the wallet's currency (also for a FAILED operation, whose wallet the
/// batch did not change), the target and the hold, not only the status.
#[tokio::test]
async fn a_status_from_the_cache_equals_the_stored_one() {
    let system = System::start(1);
    let api = &system.api;
    let alice = api.new_wallet().await;
    let bob = api.new_wallet().await;
    let hold = json!({"walletId": alice, "operationType": "HOLD", "amount": "2"});
    let bodies = [
        (alice.clone(), deposit(&alice, "10")),
        (alice.clone(), withdraw(&alice, "50")),
        (alice.clone(), transfer(&alice, &bob, "3")),
        (alice.clone(), hold),
    ];
    let redis = redis::Client::open(system.stack.redis.url()).expect("redis url");
    let mut redis = redis
        .get_multiplexed_async_connection()
        .await
        .expect("connects to Redis");
    for (wallet, body) in bodies {
        let id = api.submit_accepted(&body).await;
        let cached = api.settled(&wallet, &id, SETTLE).await;
        assert!(cached["operationType"].is_string(), "{cached}");
        let () = redis::cmd("DEL")
            .arg(format!("op:default:{id}"))
            .query_async(&mut redis)
            .await
            .expect("the marker is dropped");
        let stored = api.status(&wallet, &id).await.body;
        assert_eq!(cached, stored, "{body}");
    }
}
