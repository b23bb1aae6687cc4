//! History filters end to end: `type`, `status`, `from` and `to` combine, pages keep their
//! cursor semantics under a filter, each page examines a bounded stretch of the journal, and
//! every bad value is a 422 naming its parameter.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::client::{deposit, transfer, withdraw, Api, System};
use crate::guarantees::SETTLE;
use crate::harness::{eventually, Stack};

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
    assert!(
        second["nextCursor"].is_null(),
        "a page ending at the first entry ends the history: {:?}",
        second["nextCursor"]
    );
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

/// The most entries a page examines in the bounded-scan test (`http.history_scan_max`).
const SCAN_MAX: usize = 40;

/// Follows `nextCursor` from the newest page to the end; returns each page's items.
async fn follow(api: &Api, wallet: &str, query: &str) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let asked = match &cursor {
            None => query.to_owned(),
            Some(cursor) => format!("{query}&cursor={cursor}"),
        };
        let body = page(api, wallet, asked).await;
        pages.push(body["items"].as_array().expect("items").clone());
        assert!(pages.len() <= 1_000, "{query}: the cursors never end");
        match body["nextCursor"].as_str() {
            None => return pages,
            Some(next) => cursor = Some(next.to_owned()),
        }
    }
}

fn versions(items: &[Value]) -> Vec<i64> {
    items
        .iter()
        .map(|item| item["version"].as_i64().expect("version"))
        .collect()
}

/// Proves a filter that matches little on a long journal answers a short (even empty) page
/// with a cursor below what the page examined, and that following the cursors returns
/// exactly the matching entries, newest first, none twice, down to the journal's start.
#[tokio::test]
async fn a_filtered_page_examines_a_bounded_stretch_and_pages_on() {
    let stack = Stack::start(1);
    let server = stack.serve_with(&[("WALLET_HTTP__HISTORY_SCAN_MAX", SCAN_MAX.to_string())]);
    let _worker = stack.work("work-1");
    let api = &Api::new(&server.base);
    let wallet = api.new_wallet().await;
    // 300 entries, none a VOID, two WITHDRAWs: one the batch's first (it fails, nothing is
    // there to take yet), one in the middle.
    let operations: Vec<Value> = (0..300)
        .map(|n| match n {
            0 | 150 => withdraw(&wallet, "1.00"),
            _ => deposit(&wallet, "1.00"),
        })
        .collect();
    let body = json!({ "operations": operations }).to_string();
    let answer = api
        .raw(
            Method::POST,
            "/api/v1/operations/batch",
            Some("application/json"),
            &body,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let applied = eventually(Duration::from_secs(60), || async {
        api.balance(&wallet).await.body["version"].as_i64() == Some(300)
    })
    .await;
    assert!(applied, "the batch was not applied");

    let first = page(api, &wallet, "type=VOID&limit=1".to_owned()).await;
    assert_eq!(first["items"], json!([]));
    assert_eq!(
        first["nextCursor"],
        json!((300 - SCAN_MAX + 1).to_string()),
        "an empty page that stopped at the bound still pages on"
    );
    let voids = follow(api, &wallet, "type=VOID&limit=1").await;
    assert_eq!(voids.len(), 300_usize.div_ceil(SCAN_MAX));
    assert!(voids.iter().all(Vec::is_empty), "{voids:?}");

    let journal = follow(api, &wallet, "limit=1000").await.concat();
    assert_eq!(versions(&journal), (1..=300).rev().collect::<Vec<i64>>());
    let matching = |field: &str, value: &str| -> Vec<i64> {
        let items: Vec<Value> = journal
            .iter()
            .filter(|item| item[field] == value)
            .cloned()
            .collect();
        versions(&items)
    };
    let withdraws = follow(api, &wallet, "type=WITHDRAW&limit=1").await;
    assert!(
        withdraws.iter().all(|page| page.len() <= 1),
        "{withdraws:?}"
    );
    let found = versions(&withdraws.concat());
    assert_eq!(found, matching("operationType", "WITHDRAW"));
    assert_eq!(found.len(), 2, "{found:?}");
    let failed = versions(&follow(api, &wallet, "status=FAILED").await.concat());
    assert_eq!(failed, matching("status", "FAILED"));
    assert_eq!(
        failed.len(),
        1,
        "the WITHDRAW before any deposit: {failed:?}"
    );
}
