//! History filters end to end: `type`, `status`, `from` and `to` combine, pages keep their
//! cursor semantics under a filter, and every bad value is a 422 naming its parameter.

use reqwest::StatusCode;
use serde_json::Value;

use crate::client::{deposit, transfer, withdraw, Api, System};
use crate::guarantees::SETTLE;

/// Submits each operation after the previous one is decided, so each is applied in a batch
/// (and at a time) of its own; returns their statuses.
async fn one_by_one(api: &Api, wallet: &str, bodies: &[Value]) -> Vec<Value> {
    let mut statuses = Vec::new();
    for body in bodies {
        let id = api.submit_accepted(body).await;
        statuses.push(api.settled(wallet, &id, SETTLE).await);
    }
    statuses
}

fn types_and_versions(page: &Value) -> Vec<(String, i64)> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| {
            (
                item["operationType"].as_str().expect("type").to_owned(),
                item["version"].as_i64().expect("version"),
            )
        })
        .collect()
}

async fn page(api: &Api, wallet: &str, query: String) -> Value {
    let page = api.history(wallet, &query).await;
    assert_eq!(page.status, StatusCode::OK, "{query}: {:?}", page.body);
    page.body
}

fn encoded(time: &str) -> String {
    url::form_urlencoded::byte_serialize(time.as_bytes()).collect()
}

/// Proves each filter and their combinations select exactly the matching entries, newest
/// first, and a filtered page's cursor leads to the next matching entries only.
#[tokio::test]
async fn filters_combine_and_keep_the_cursor_semantics() {
    let system = System::start(2);
    let api = &system.api;
    let wallet = api.new_wallet().await;
    let other = api.new_wallet().await;
    api.fund(&other, "5.00").await;
    let statuses = one_by_one(
        api,
        &wallet,
        &[
            deposit(&wallet, "10.00"),
            withdraw(&wallet, "50.00"),
            withdraw(&wallet, "2.00"),
            deposit(&wallet, "1.00"),
        ],
    )
    .await;
    one_by_one(api, &other, &[transfer(&other, &wallet, "3.00")]).await;
    let history = |query: String| page(api, &wallet, query);
    let owned = |pairs: &[(&str, i64)]| -> Vec<(String, i64)> {
        pairs
            .iter()
            .map(|(kind, v)| ((*kind).to_owned(), *v))
            .collect()
    };

    let page = history("type=WITHDRAW".to_owned()).await;
    assert_eq!(
        types_and_versions(&page),
        owned(&[("WITHDRAW", 3), ("WITHDRAW", 2)])
    );
    let page = history("status=FAILED".to_owned()).await;
    assert_eq!(types_and_versions(&page), owned(&[("WITHDRAW", 2)]));
    let page = history("type=WITHDRAW&status=PROCESSED".to_owned()).await;
    assert_eq!(types_and_versions(&page), owned(&[("WITHDRAW", 3)]));
    let page = history("type=TRANSFER".to_owned()).await;
    assert_eq!(
        types_and_versions(&page),
        owned(&[("TRANSFER", 5)]),
        "incoming"
    );

    let third = statuses[2]["processedAt"].as_str().expect("processedAt");
    let page = history(format!("from={}", encoded(third))).await;
    assert_eq!(
        types_and_versions(&page),
        owned(&[("TRANSFER", 5), ("DEPOSIT", 4), ("WITHDRAW", 3)]),
        "from is inclusive"
    );
    let page = history(format!("to={}&type=DEPOSIT", encoded(third))).await;
    assert_eq!(
        types_and_versions(&page),
        owned(&[("DEPOSIT", 1)]),
        "to is exclusive"
    );

    let first = history("type=DEPOSIT&limit=1".to_owned()).await;
    assert_eq!(types_and_versions(&first), owned(&[("DEPOSIT", 4)]));
    let cursor = first["nextCursor"]
        .as_str()
        .expect("a full page has a cursor");
    let second = history(format!("type=DEPOSIT&limit=1&cursor={cursor}")).await;
    assert_eq!(types_and_versions(&second), owned(&[("DEPOSIT", 1)]));
    let cursor = second["nextCursor"].as_str().expect("cursor");
    let last = history(format!("type=DEPOSIT&limit=1&cursor={cursor}")).await;
    assert_eq!(types_and_versions(&last), owned(&[]));
    assert!(last["nextCursor"].is_null());
}

/// Proves a bad filter is a 422 naming its parameter, like a bad limit or cursor.
#[tokio::test]
async fn bad_filters_are_refused() {
    let system = System::start(1);
    let api = &system.api;
    let wallet = api.new_wallet().await;
    for (query, code, field) in [
        ("type=deposit", "INVALID_OPERATION_TYPE", "type"),
        ("status=PENDING", "INVALID_STATUS", "status"),
        ("from=yesterday", "INVALID_TIME", "from"),
        ("to=2026-12-01T10:00:00+01:00", "INVALID_TIME", "to"),
        (
            "from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z",
            "INVALID_RANGE",
            "from",
        ),
        ("type=DEPOSIT&type=WITHDRAW", "INVALID_QUERY", "type"),
    ] {
        let refused = api.history(&wallet, query).await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert_eq!(refused.code(), code, "{query}");
        assert_eq!(refused.body["field"], field, "{query}");
    }
    let encoded = api.history(&wallet, "to=2026-12-01T10:00:00%2B01:00").await;
    assert_eq!(encoded.status, StatusCode::OK, "{:?}", encoded.body);
}
