//! Operation metadata end to end: bounded on the way in, part of the request's identity, and
//! shown in the status, the history, the stored operation and the events.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::client::{deposit, stored_and_relayed, System};
use crate::events::read_events;
use crate::guarantees::SETTLE;

fn labelled(wallet: &str, metadata: Value) -> Value {
    let mut body = deposit(wallet, "5.00");
    body["metadata"] = metadata;
    body
}

/// Proves metadata travels with its operation: the status (from the cache and from
/// PostgreSQL), the history, the stored row and the events all show it, and an operation
/// without metadata shows none.
#[tokio::test]
async fn metadata_is_kept_and_shown_everywhere() {
    let system = System::start(2);
    let api = &system.api;
    let wallet = api.new_wallet().await;
    let metadata = json!({"orderId": "A-1001", "shop": "Zürich \"Nord\""});
    let accepted = api.submit(&labelled(&wallet, metadata.clone())).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{:?}", accepted.body);
    let id = accepted.body["operationId"]
        .as_str()
        .expect("id")
        .to_owned();
    let status = api.settled(&wallet, &id, SETTLE).await;
    assert_eq!(status["status"], "PROCESSED", "{status}");
    assert_eq!(status["metadata"], metadata, "{status}");
    let bare = api.submit_accepted(&deposit(&wallet, "1.00")).await;
    let bare = api.settled(&wallet, &bare, SETTLE).await;
    assert!(bare.get("metadata").is_none(), "{bare}");

    let history = api.history(&wallet, "limit=10").await;
    let items = history.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{:?}", history.body);
    assert_eq!(items[1]["metadata"], metadata);
    assert!(items[0].get("metadata").is_none());

    let db = system.database().await;
    let operation: Uuid = id.parse().expect("uuid");
    let stored: String = db
        .query_one(
            "SELECT metadata::text FROM operations WHERE id = $1",
            &[&operation],
        )
        .await
        .expect("stored")
        .get(0);
    assert_eq!(
        serde_json::from_str::<Value>(&stored).expect("json"),
        metadata
    );
    assert!(stored_and_relayed(&db, 2, Duration::from_secs(60)).await);
    let events = read_events(&system.stack.broker.address(), &system.stack.events_topic).await;
    let event = events
        .iter()
        .find(|event| event["operationId"] == id.as_str())
        .expect("the operation's event");
    assert_eq!(event["metadata"], metadata, "{event}");
}

/// Proves metadata is part of the request's identity: the same id with the same metadata in
/// another key order is the same operation, with other metadata IDEMPOTENCY_KEY_REUSED.
#[tokio::test]
async fn metadata_is_part_of_the_fingerprint() {
    let system = System::start(1);
    let api = &system.api;
    let wallet = api.new_wallet().await;
    let id = Uuid::now_v7().to_string();
    let with = |metadata: Value| {
        let mut body = labelled(&wallet, metadata);
        body["operationId"] = json!(id);
        body
    };
    let first = api.submit(&with(json!({"a": "1", "b": "2"}))).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{:?}", first.body);
    let reordered = api.submit(&with(json!({"b": "2", "a": "1"}))).await;
    assert_eq!(
        reordered.status,
        StatusCode::ACCEPTED,
        "{:?}",
        reordered.body
    );
    let other = api.submit(&with(json!({"a": "1", "b": "3"}))).await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(other.code(), "IDEMPOTENCY_KEY_REUSED");
    let none = api.submit(&with(json!({}))).await;
    assert_eq!(none.code(), "IDEMPOTENCY_KEY_REUSED");
}

/// Proves each bound (16 keys, 64-character keys, 512-character values, strings only, no
/// NUL) is a 422 naming `metadata`, and what is just inside them is accepted.
#[tokio::test]
async fn metadata_beyond_its_bounds_is_refused() {
    let system = System::start(1);
    let api = &system.api;
    let wallet = api.new_wallet().await;
    let keys = |count: usize| -> Value {
        let map: Map<String, Value> = (0..count).map(|n| (format!("k{n}"), json!("v"))).collect();
        Value::Object(map)
    };
    let long_key = json!({ "é".repeat(65): "v" });
    let long_value = json!({ "k": "é".repeat(513) });
    for (metadata, code) in [
        (keys(17), "INVALID_METADATA"),
        (long_key, "INVALID_METADATA"),
        (long_value, "INVALID_METADATA"),
        (json!({"": "v"}), "INVALID_METADATA"),
        (json!({"k": "a\u{0}b"}), "INVALID_METADATA"),
        (json!({"k": 5}), "INVALID_FIELD"),
        (json!(["k"]), "INVALID_FIELD"),
    ] {
        let refused = api.submit(&labelled(&wallet, metadata.clone())).await;
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{metadata}: {:?}",
            refused.body
        );
        assert_eq!(refused.code(), code, "{metadata}");
        let field = refused.body["field"].as_str().unwrap_or_default();
        assert!(field.starts_with("metadata"), "{metadata}: {field}");
    }
    let inside = json!({ "é".repeat(64): "é".repeat(512) });
    for metadata in [keys(16), inside] {
        let accepted = api.submit(&labelled(&wallet, metadata.clone())).await;
        assert_eq!(accepted.status, StatusCode::ACCEPTED, "{metadata}");
    }
}
