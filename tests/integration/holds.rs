//! Holds end to end: reserving funds, capturing them in part (to another wallet or out),
//! voiding and expiring what remains, the hold routes, and what holds do under load and
//! across a worker restart.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::auth::{call, secured, token};
use crate::client::{deposit, stored_and_relayed, withdraw, Api, Response, System};
use crate::events::read_events;
use crate::guarantees::SETTLE;
use crate::harness::{eventually, Stack};

fn hold(wallet: &str, amount: &str) -> Value {
    json!({"walletId": wallet, "operationType": "HOLD", "amount": amount})
}

fn capture(wallet: &str, hold: &str) -> Value {
    json!({"walletId": wallet, "operationType": "CAPTURE", "holdId": hold})
}

fn void(wallet: &str, hold: &str) -> Value {
    json!({"walletId": wallet, "operationType": "VOID", "holdId": hold})
}

/// An RFC 3339 time `seconds` from now.
fn in_seconds(seconds: i64) -> String {
    (Utc::now() + chrono::Duration::seconds(seconds)).to_rfc3339()
}

async fn get(api: &Api, path: &str) -> Response {
    api.raw(reqwest::Method::GET, path, None, "").await
}

async fn read_hold(api: &Api, wallet: &str, hold: &str) -> Response {
    get(api, &format!("/api/v1/wallets/{wallet}/holds/{hold}")).await
}

/// Submits `body` and waits for its decision; returns the operation id and its status.
async fn decided(api: &Api, body: &Value) -> (String, Value) {
    let id = api.submit_accepted(body).await;
    let wallet = body["walletId"].as_str().expect("walletId");
    let status = api.settled(wallet, &id, SETTLE).await;
    (id, status)
}

/// The wallet's history entry of `operation`, from PostgreSQL (a status from the cache shows
/// no amount).
async fn entry(api: &Api, wallet: &str, operation: &str) -> Value {
    let page = api.history(wallet, "limit=100").await.body;
    page["items"]
        .as_array()
        .and_then(|items| items.iter().find(|item| item["operationId"] == operation))
        .cloned()
        .unwrap_or_else(|| panic!("{operation} is in the history of {wallet}: {page}"))
}

async fn processed(api: &Api, body: &Value) -> String {
    let (id, status) = decided(api, body).await;
    assert_eq!(status["status"], "PROCESSED", "{body} → {status}");
    id
}

async fn failed_with(api: &Api, body: &Value, reason: &str) {
    let (_, status) = decided(api, body).await;
    assert_eq!(status["status"], "FAILED", "{body} → {status}");
    assert_eq!(status["reason"], reason, "{body} → {status}");
}

/// Proves a hold reserves funds (`held` up, `available` down, balance unchanged), is captured
/// in part to another wallet, refuses a capture beyond what remains, is voided, then refuses
/// everything as HOLD_CLOSED; that the hold routes show each step, the list filters by state,
/// history and events name the hold, and `?at=` shows what was held then.
#[tokio::test]
async fn a_hold_is_captured_in_part_then_voided() {
    let system = System::start(2);
    let api = &system.api;
    let card = api.new_wallet().await;
    let shop = api.new_wallet().await;
    api.fund(&card, "100.00").await;

    let hold_id = processed(api, &hold(&card, "30.00")).await;
    let opened = read_hold(api, &card, &hold_id).await;
    assert_eq!(opened.status, StatusCode::OK, "{:?}", opened.body);
    assert_eq!(opened.body["state"], "OPEN");
    assert_eq!(opened.body["amount"], "30.00");
    assert_eq!(opened.body["remaining"], "30.00");
    assert_eq!(opened.body["captured"], "0.00");
    let expires_at: DateTime<Utc> = opened.body["expiresAt"]
        .as_str()
        .expect("expiresAt")
        .parse()
        .expect("a time");
    let week = expires_at - Utc::now();
    assert!(
        week > chrono::Duration::days(6) && week <= chrono::Duration::days(7),
        "the default expiry is 7 days: {week}"
    );
    let wallet = api.balance(&card).await.body;
    assert_eq!(
        (&wallet["balance"], &wallet["held"], &wallet["available"]),
        (&json!("100.00"), &json!("30.00"), &json!("70.00")),
        "{wallet}"
    );
    let reserved_at = Utc::now();

    failed_with(api, &withdraw(&card, "70.01"), "INSUFFICIENT_FUNDS").await;
    failed_with(api, &hold(&card, "70.01"), "INSUFFICIENT_FUNDS").await;
    let partial = json!({"walletId": card, "operationType": "CAPTURE", "holdId": hold_id,
                         "amount": "12.50", "toWalletId": shop});
    let (capture_id, status) = decided(api, &partial).await;
    assert_eq!(status["status"], "PROCESSED", "{status}");
    assert_eq!(status["balanceAfter"], "87.50");
    let settled = entry(api, &card, &capture_id).await;
    assert_eq!(settled["holdId"], json!(hold_id), "{settled}");
    assert_eq!(settled["heldAfter"], "17.50", "{settled}");
    let too_much = json!({"walletId": card, "operationType": "CAPTURE", "holdId": hold_id,
                          "amount": "17.51"});
    failed_with(api, &too_much, "CAPTURE_EXCEEDS_HOLD").await;
    let captured = read_hold(api, &card, &hold_id).await.body;
    assert_eq!(
        (
            &captured["captured"],
            &captured["remaining"],
            &captured["state"]
        ),
        (&json!("12.50"), &json!("17.50"), &json!("OPEN")),
        "{captured}"
    );

    let (void_id, status) = decided(api, &void(&card, &hold_id)).await;
    assert_eq!(status["status"], "PROCESSED", "{status}");
    let released = entry(api, &card, &void_id).await;
    assert_eq!(released["amount"], "17.50", "a void shows what it released");
    assert_eq!(released["operationType"], "VOID");
    failed_with(api, &capture(&card, &hold_id), "HOLD_CLOSED").await;
    failed_with(api, &void(&card, &hold_id), "HOLD_CLOSED").await;
    let voided = read_hold(api, &card, &hold_id).await.body;
    assert_eq!(
        (&voided["state"], &voided["remaining"]),
        (&json!("VOIDED"), &json!("0.00"))
    );
    let wallet = api.balance(&card).await.body;
    assert_eq!(
        (&wallet["balance"], &wallet["held"], &wallet["available"]),
        (&json!("87.50"), &json!("0.00"), &json!("87.50")),
        "{wallet}"
    );
    assert_eq!(api.balance(&shop).await.body["balance"], "12.50");

    let list = |query: &str| {
        let path = format!("/api/v1/wallets/{card}/holds?{query}");
        async move { get(api, &path).await }
    };
    let all = list("").await.body;
    assert_eq!(all["items"][0]["holdId"], json!(hold_id), "{all}");
    assert_eq!(
        list("state=VOIDED").await.body["items"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(list("state=OPEN").await.body["items"], json!([]));
    let bad = list("state=GONE").await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.code(), "INVALID_STATE");
    assert_eq!(list("sort=up").await.code(), "INVALID_QUERY");

    let history = api
        .history(&card, "type=CAPTURE&status=PROCESSED")
        .await
        .body;
    assert_eq!(
        history["items"][0]["operationId"],
        json!(capture_id),
        "{history}"
    );
    let then = get(
        api,
        &format!(
            "/api/v1/wallets/{card}?at={}",
            reserved_at.to_rfc3339().replace('+', "%2B")
        ),
    )
    .await
    .body;
    assert_eq!(
        (&then["held"], &then["available"]),
        (&json!("30.00"), &json!("70.00")),
        "{then}"
    );

    let db = system.database().await;
    assert!(stored_and_relayed(&db, 9, Duration::from_secs(60)).await);
    let events = read_events(&system.stack.broker.address(), &system.stack.events_topic).await;
    let of = |id: &str| {
        events
            .iter()
            .filter(|event| event["operationId"] == id)
            .cloned()
            .collect::<Vec<Value>>()
    };
    let placed = of(&hold_id);
    assert_eq!(placed.len(), 1);
    assert_eq!(placed[0]["holdId"], json!(hold_id));
    assert_eq!(placed[0]["heldAfter"], "30");
    let settled = of(&capture_id);
    assert_eq!(settled.len(), 2, "both wallets of a capture hear of it");
    assert!(settled.iter().all(|event| event["amount"] == "12.5"));
    assert_eq!(of(&void_id)[0]["amount"], "17.5");
}

/// Proves a capture or void names a hold only of its own wallet and tenant (another wallet's
/// is HOLD_NOT_FOUND, as is an id that is no hold), a capture without an amount takes all that
/// remains, and the hold route answers 404 for another wallet's hold.
#[tokio::test]
async fn holds_belong_to_their_wallet() {
    let system = System::start(2);
    let api = &system.api;
    let card = api.new_wallet().await;
    let other = api.new_wallet().await;
    api.fund(&card, "50").await;
    api.fund(&other, "50").await;
    let hold_id = processed(api, &hold(&card, "20")).await;

    failed_with(api, &capture(&other, &hold_id), "HOLD_NOT_FOUND").await;
    failed_with(api, &void(&other, &hold_id), "HOLD_NOT_FOUND").await;
    let deposit_id = processed(api, &deposit(&card, "1")).await;
    failed_with(api, &capture(&card, &deposit_id), "HOLD_NOT_FOUND").await;
    let missing = read_hold(api, &other, &hold_id).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.code(), "HOLD_NOT_FOUND");
    let nowhere = read_hold(api, &Uuid::new_v4().to_string(), &hold_id).await;
    assert_eq!(nowhere.code(), "WALLET_NOT_FOUND");

    let (capture_id, status) = decided(api, &capture(&card, &hold_id)).await;
    assert_eq!(status["status"], "PROCESSED", "{status}");
    assert_eq!(status["balanceAfter"], "31.00");
    let taken = entry(api, &card, &capture_id).await;
    assert_eq!(taken["amount"], "20.00", "what remained");
    let body = read_hold(api, &card, &hold_id).await.body;
    assert_eq!(
        (&body["state"], &body["captured"]),
        (&json!("CAPTURED"), &json!("20.00"))
    );
}

/// Proves bad hold requests are refused with a 422 naming the field: a client's EXPIRE, an
/// expiry in the past, beyond `http.hold_expiry_max_s` or on another kind, a VOID with an
/// amount, a CAPTURE without its hold; and that a HOLD's request is identified by its own
/// content: retried without `expiresAt` it is the same operation, with another one it reuses
/// the key.
#[tokio::test]
async fn hold_requests_are_validated_and_idempotent() {
    let system = System::start(1);
    let api = &system.api;
    let card = api.new_wallet().await;
    let refused = |body: Value, code: &'static str, field: &'static str| (body, code, field);
    let cases = [
        refused(
            json!({"walletId": card, "operationType": "EXPIRE", "holdId": Uuid::new_v4()}),
            "INVALID_OPERATION_TYPE",
            "operationType",
        ),
        refused(
            json!({"walletId": card, "operationType": "HOLD", "amount": "1", "expiresAt": in_seconds(-1)}),
            "INVALID_EXPIRY",
            "expiresAt",
        ),
        refused(
            json!({"walletId": card, "operationType": "HOLD", "amount": "1", "expiresAt": in_seconds(31 * 86_400)}),
            "INVALID_EXPIRY",
            "expiresAt",
        ),
        refused(
            json!({"walletId": card, "operationType": "HOLD", "amount": "1", "expiresAt": "tomorrow"}),
            "INVALID_EXPIRY",
            "expiresAt",
        ),
        refused(
            json!({"walletId": card, "operationType": "DEPOSIT", "amount": "1", "expiresAt": in_seconds(60)}),
            "UNEXPECTED_FIELD",
            "expiresAt",
        ),
        refused(
            json!({"walletId": card, "operationType": "VOID", "amount": "1", "holdId": Uuid::new_v4()}),
            "UNEXPECTED_FIELD",
            "amount",
        ),
        refused(
            json!({"walletId": card, "operationType": "CAPTURE", "amount": "1"}),
            "MISSING_FIELD",
            "holdId",
        ),
        refused(
            json!({"walletId": card, "operationType": "HOLD"}),
            "MISSING_FIELD",
            "amount",
        ),
        refused(
            json!({"walletId": card, "operationType": "VOID", "holdId": "nope"}),
            "INVALID_ID",
            "holdId",
        ),
    ];
    for (body, code, field) in cases {
        let answer = api.submit(&body).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} → {:?}",
            answer.body
        );
        assert_eq!(answer.code(), code, "{body} → {:?}", answer.body);
        assert_eq!(answer.body["field"], field, "{body} → {:?}", answer.body);
        if code == "INVALID_OPERATION_TYPE" {
            let detail = answer.body["detail"].as_str().unwrap_or_default();
            assert!(
                detail.contains("VOID") && !detail.contains("EXPIRE"),
                "{detail}"
            );
        }
    }

    api.fund(&card, "10").await;
    let first = api
        .submit_with_key(&card, "reserve-1", &hold(&card, "5"))
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{:?}", first.body);
    let again = api
        .submit_with_key(&card, "reserve-1", &hold(&card, "5"))
        .await;
    assert!(again.status.is_success(), "{:?}", again.body);
    assert_eq!(again.body["operationId"], first.body["operationId"]);
    let later = json!({"walletId": card, "operationType": "HOLD", "amount": "5", "expiresAt": in_seconds(600)});
    let reused = api.submit_with_key(&card, "reserve-1", &later).await;
    assert_eq!(reused.code(), "IDEMPOTENCY_KEY_REUSED", "{:?}", reused.body);
}

/// Proves the retry of a keyed HOLD after its `expiresAt` passed answers as the first did (the
/// same operation, PROCESSED), from its marker and, once the marker is gone, from PostgreSQL;
/// the same key with other content and a fresh key still get 422 INVALID_EXPIRY. The retry
/// used to be refused with INVALID_EXPIRY, as if it were a new request.
#[tokio::test]
async fn a_hold_retried_after_its_expiry_is_the_same_operation() {
    let system = System::start(1);
    let api = &system.api;
    let card = api.new_wallet().await;
    api.fund(&card, "10").await;
    let expires_at = in_seconds(2);
    let body =
        json!({"walletId": card, "operationType": "HOLD", "amount": "5", "expiresAt": expires_at});
    let first = api.submit_with_key(&card, "brief", &body).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{:?}", first.body);
    let id = first.body["operationId"].as_str().expect("id").to_owned();
    assert!(hold_becomes(api, &card, &id, "EXPIRED", SETTLE).await);
    let retried = |answer: Response, from: &str| {
        assert!(answer.status.is_success(), "{from}: {:?}", answer.body);
        assert_eq!(answer.body["operationId"], id, "{from}");
        assert_eq!(answer.body["status"], "PROCESSED", "{from}");
    };
    retried(api.submit_with_key(&card, "brief", &body).await, "marker");
    let redis = redis::Client::open(system.stack.redis.url()).expect("redis url");
    let mut redis = redis
        .get_multiplexed_async_connection()
        .await
        .expect("connects to Redis");
    let () = redis::cmd("DEL")
        .arg(format!("op:default:{id}"))
        .query_async(&mut redis)
        .await
        .expect("the marker is dropped");
    retried(
        api.submit_with_key(&card, "brief", &body).await,
        "PostgreSQL",
    );
    let other =
        json!({"walletId": card, "operationType": "HOLD", "amount": "6", "expiresAt": expires_at});
    for (key, body) in [("brief", &other), ("fresh", &body)] {
        let refused = api.submit_with_key(&card, key, body).await;
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{key}: {:?}",
            refused.body
        );
        assert_eq!(refused.code(), "INVALID_EXPIRY", "{key}");
    }
}

/// The hold's state, polled until it is `state` or the deadline passes.
async fn hold_becomes(
    api: &Api,
    wallet: &str,
    hold: &str,
    state: &str,
    deadline: Duration,
) -> bool {
    eventually(deadline, || async {
        read_hold(api, wallet, hold).await.body["state"] == state
    })
    .await
}

/// Proves a hold expires by itself within seconds of its `expiresAt` and grace (an EXPIRE in the
/// wallet's history, what remained released), that a capture accepted after the expiry is
/// HOLD_CLOSED, and that a hold whose time came while no worker ran expires once the worker is
/// back, exactly once, even though the restarted worker scans it again.
#[tokio::test]
async fn holds_expire_once_across_a_worker_restart() {
    let mut system = System::start(2);
    let card = system.api.new_wallet().await;
    system.api.fund(&card, "100").await;
    let short = json!({"walletId": card, "operationType": "HOLD", "amount": "10", "expiresAt": in_seconds(2)});
    let quick = processed(&system.api, &short).await;
    let slow_body = json!({"walletId": card, "operationType": "HOLD", "amount": "20", "expiresAt": in_seconds(4)});
    let slow = processed(&system.api, &slow_body).await;

    assert!(
        hold_becomes(
            &system.api,
            &card,
            &quick,
            "EXPIRED",
            Duration::from_secs(20)
        )
        .await
    );
    let db = system.database().await;
    let lateness: f64 = db
        .query_one(
            "SELECT extract(epoch FROM o.processed_at - h.expires_at)::float8 FROM operations o
             JOIN holds h ON h.tenant = o.tenant AND h.hold_id = o.hold_id
             WHERE o.type = 'EXPIRE' AND o.hold_id = $1",
            &[&quick.parse::<Uuid>().expect("uuid")],
        )
        .await
        .expect("the expiry is stored")
        .get(0);
    let grace = wallet::config::WorkerConfig::default().hold_expiry_grace_ms as f64 / 1000.0;
    assert!(
        (grace..grace + 10.0).contains(&lateness),
        "expired {lateness} s after expiresAt, with a grace of {grace} s"
    );
    failed_with(&system.api, &capture(&card, &quick), "HOLD_CLOSED").await;

    system.worker.kill();
    let down_until = Utc::now() + chrono::Duration::seconds(5);
    while Utc::now() < down_until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let accepted = system.api.submit_accepted(&capture(&card, &slow)).await;
    system.worker.start();
    assert!(
        hold_becomes(
            &system.api,
            &card,
            &slow,
            "EXPIRED",
            Duration::from_secs(60)
        )
        .await
    );
    let status = system.api.settled(&card, &accepted, SETTLE).await;
    assert_eq!(
        status["reason"], "HOLD_CLOSED",
        "accepted after the expiry: {status}"
    );

    // Let more scans pass: each sees no open hold, so nothing is expired twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let expiries: i64 = db
        .query_one("SELECT count(*) FROM operations WHERE type = 'EXPIRE'", &[])
        .await
        .expect("counts")
        .get(0);
    assert_eq!(expiries, 2, "one EXPIRE per hold");
    let wallet = system.api.balance(&card).await.body;
    assert_eq!(
        (&wallet["balance"], &wallet["held"], &wallet["available"]),
        (&json!("100.00"), &json!("0.00"), &json!("100.00")),
        "{wallet}"
    );
    let history = system.api.history(&card, "type=EXPIRE").await.body;
    assert_eq!(
        history["items"].as_array().map(Vec::len),
        Some(2),
        "{history}"
    );
    assert_eq!(history["items"][0]["status"], "PROCESSED");
    assert_eq!(history["items"][0]["amount"], "20.00");
}

/// Proves many HOLDs, CAPTUREs and VOIDs racing on one wallet keep the invariants: the
/// balance is the sum of its entries, what is held is the sum of what open holds still
/// reserve, never more than the balance, no hold is captured beyond its amount, money is
/// conserved, and `wallet verify` finds the ledger clean.
#[tokio::test]
async fn racing_holds_on_one_wallet_keep_the_books() {
    let system = System::start(2);
    let api = &system.api;
    let card = api.new_wallet().await;
    let shop = api.new_wallet().await;
    api.fund(&card, "500").await;
    let rounds = (0..40).map(|round| {
        let card = card.clone();
        let shop = shop.clone();
        async move {
            let body = hold(&card, &format!("{}.00", 5 + round % 20));
            let (hold_id, status) = decided(api, &body).await;
            if status["status"] != "PROCESSED" {
                return;
            }
            let follow = match round % 4 {
                0 => vec![void(&card, &hold_id)],
                1 => vec![
                    json!({"walletId": card, "operationType": "CAPTURE", "holdId": hold_id,
                                 "amount": "2.00", "toWalletId": shop}),
                    capture(&card, &hold_id),
                ],
                2 => vec![capture(&card, &hold_id), void(&card, &hold_id)],
                _ => vec![withdraw(&card, "3.00")],
            };
            let submitted =
                futures::future::join_all(follow.iter().map(|body| api.submit_accepted(body)))
                    .await;
            for id in submitted {
                api.settled(&card, &id, SETTLE).await;
            }
        }
    });
    futures::future::join_all(rounds).await;

    let db = system.database().await;
    let row = db
        .query_one(
            "SELECT w.balance = (SELECT coalesce(sum(delta), 0) FROM entries WHERE wallet_id = w.id),
                    w.held = (SELECT coalesce(sum(amount - captured), 0) FROM holds
                              WHERE wallet_id = w.id AND state = 'OPEN'),
                    w.balance >= w.held,
                    (SELECT count(*) FROM holds WHERE wallet_id = w.id AND captured > amount),
                    (SELECT count(*) FROM holds WHERE wallet_id = w.id)
             FROM wallets w WHERE w.id = $1",
            &[&card.parse::<Uuid>().expect("uuid")],
        )
        .await
        .expect("the wallet");
    assert!(row.get::<_, bool>(0), "balance is the sum of its entries");
    assert!(row.get::<_, bool>(1), "held is what open holds reserve");
    assert!(row.get::<_, bool>(2), "nothing held beyond the balance");
    assert_eq!(
        row.get::<_, i64>(3),
        0,
        "no hold captured beyond its amount"
    );
    assert!(row.get::<_, i64>(4) > 0, "holds were placed");
    let card_total: String = db
        .query_one(
            "SELECT ((SELECT balance FROM wallets WHERE id = $1) + (SELECT balance FROM wallets WHERE id = $2))::text",
            &[&card.parse::<Uuid>().expect("uuid"), &shop.parse::<Uuid>().expect("uuid")],
        )
        .await
        .expect("totals")
        .get(0);
    let withdrawn: String = db
        .query_one(
            "SELECT coalesce(sum(-e.delta), 0)::text FROM entries e JOIN operations o
               ON o.tenant = e.tenant AND o.id = e.operation_id
             WHERE e.wallet_id = $1 AND o.status = 'PROCESSED'
               AND (o.type = 'WITHDRAW' OR (o.type = 'CAPTURE' AND o.to_wallet_id IS NULL))",
            &[&card.parse::<Uuid>().expect("uuid")],
        )
        .await
        .expect("withdrawals")
        .get(0);
    let total: bigdecimal::BigDecimal = card_total.parse().expect("decimal");
    let out: bigdecimal::BigDecimal = withdrawn.parse().expect("decimal");
    assert_eq!(
        total + out,
        bigdecimal::BigDecimal::from(500),
        "money is conserved"
    );
    let audit = system
        .stack
        .wallet_command(&["verify", "--json"])
        .output()
        .expect("wallet verify runs");
    let report = String::from_utf8_lossy(&audit.stdout);
    assert_eq!(audit.status.code(), Some(0), "{report}");
    let report: Value = serde_json::from_str(&report).expect("a JSON report");
    assert_eq!(report["violationCount"], 0, "{report}");
}

/// Proves hold ids belong to their tenant: two tenants place holds with the same id, each
/// captures and reads only its own, and one cannot read or void the other's.
#[tokio::test]
async fn a_tenant_never_touches_another_tenants_hold() {
    let stack = Stack::start(2);
    let server = secured(&stack, &[]);
    let _worker = stack.work("work-1");
    let http = reqwest::Client::new();
    let [acme, globex] = ["acme", "globex"].map(|tenant| token(&stack, tenant, "read,write"));
    let as_tenant = |token: &str, method: Method, path: String, body: Option<Value>| {
        let (http, base, token) = (http.clone(), server.base.clone(), token.to_owned());
        async move { call(&http, &base, method, &path, Some(&token), body).await }
    };
    let loaded = eventually(Duration::from_secs(5), || async {
        let answer = as_tenant(&globex, Method::POST, "/api/v1/wallets".to_owned(), None).await;
        answer.status == StatusCode::CREATED
    })
    .await;
    assert!(loaded, "tokens were not loaded");
    let shared_id = Uuid::new_v4();
    let mut wallets = Vec::new();
    for (token, amount) in [(&acme, "30.00"), (&globex, "7.00")] {
        let created = as_tenant(token, Method::POST, "/api/v1/wallets".to_owned(), None).await;
        let wallet = created.body["walletId"]
            .as_str()
            .expect("walletId")
            .to_owned();
        for body in [
            json!({"operationType": "DEPOSIT", "amount": "50.00"}),
            json!({"operationType": "HOLD", "amount": amount, "operationId": shared_id}),
        ] {
            let path = format!("/api/v1/wallets/{wallet}/operations");
            let answer = as_tenant(token, Method::POST, path, Some(body)).await;
            assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
        }
        let placed = eventually(SETTLE, || async {
            let path = format!("/api/v1/wallets/{wallet}/holds/{shared_id}");
            as_tenant(token, Method::GET, path, None).await.body["state"] == "OPEN"
        })
        .await;
        assert!(placed, "the hold of {wallet} was not placed");
        wallets.push(wallet);
    }
    let (acme_wallet, globex_wallet) = (&wallets[0], &wallets[1]);

    let theirs = format!("/api/v1/wallets/{acme_wallet}/holds/{shared_id}");
    let read = as_tenant(&globex, Method::GET, theirs.clone(), None).await;
    assert_eq!(read.status, StatusCode::NOT_FOUND, "{}", read.body);
    let listed = format!("/api/v1/wallets/{acme_wallet}/holds");
    let list = as_tenant(&globex, Method::GET, listed, None).await;
    assert_eq!(list.status, StatusCode::NOT_FOUND, "{}", list.body);
    let void = json!({"walletId": acme_wallet, "operationType": "VOID", "holdId": shared_id});
    let refused = as_tenant(
        &globex,
        Method::POST,
        "/api/v1/wallet".to_owned(),
        Some(void),
    )
    .await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND, "{}", refused.body);

    let take = json!({"operationType": "CAPTURE", "holdId": shared_id});
    let path = format!("/api/v1/wallets/{globex_wallet}/operations");
    let captured = as_tenant(&globex, Method::POST, path, Some(take)).await;
    assert_eq!(captured.status, StatusCode::ACCEPTED, "{}", captured.body);
    let own = format!("/api/v1/wallets/{globex_wallet}/holds/{shared_id}");
    let settled = eventually(SETTLE, || async {
        as_tenant(&globex, Method::GET, own.clone(), None)
            .await
            .body["state"]
            == "CAPTURED"
    })
    .await;
    assert!(settled, "globex's capture was not applied");
    let own = as_tenant(&globex, Method::GET, own, None).await.body;
    assert_eq!(
        own["captured"], "7.00",
        "globex captured its own hold: {own}"
    );
    let untouched = as_tenant(&acme, Method::GET, theirs, None).await.body;
    assert_eq!(
        (&untouched["state"], &untouched["remaining"]),
        (&json!("OPEN"), &json!("30.00")),
        "{untouched}"
    );
}

/// Proves a client cannot take the id of a hold's EXPIRE: the id is refused, and the hold
/// expires at its time. Before, the DEPOSIT under that id was applied first, the EXPIRE
/// became a reused id kept as a dead letter, and the hold stayed open for good.
#[tokio::test]
async fn a_client_cannot_take_the_id_of_a_holds_expiry() {
    let system = System::start(2);
    let card = system.api.new_wallet().await;
    system.api.fund(&card, "100").await;
    let body = json!({"walletId": card, "operationType": "HOLD", "amount": "10", "expiresAt": in_seconds(2)});
    let held = processed(&system.api, &body).await;
    let due = wallet::ledger::store::DueHold {
        id: wallet::ledger::types::ScopedId {
            tenant: wallet::auth::DEFAULT_TENANT.to_owned(),
            id: wallet::ledger::types::OperationId(held.parse().expect("hold id")),
        },
        wallet_id: wallet::ledger::types::WalletId(card.parse().expect("wallet id")),
        expires_at: Utc::now(),
    };
    let expiry = wallet::ingest::expiry::expiry(&due, Utc::now()).id;
    let mut taken = deposit(&card, "1");
    taken["operationId"] = json!(expiry.to_string());
    let refused = system.api.submit(&taken).await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        refused.body
    );
    assert_eq!(
        refused.code(),
        "RESERVED_OPERATION_ID",
        "{:?}",
        refused.body
    );
    assert!(
        hold_becomes(
            &system.api,
            &card,
            &held,
            "EXPIRED",
            Duration::from_secs(20)
        )
        .await,
        "the hold expires"
    );
}

/// Proves a CAPTURE accepted just before its hold's `expiresAt` is applied, however late its
/// record reaches the partition within the produce deadline: the record is produced 3 s after
/// `expiresAt`, as by an API whose produce took that long. The hold used to be expired at
/// `expiresAt` by the next scan, so the capture, accepted in time, failed HOLD_CLOSED.
#[tokio::test]
async fn a_capture_accepted_in_time_wins_over_the_expiry_however_slow_its_produce() {
    use wallet::ledger::types::{Operation, OperationId, WalletId};
    let system = System::start(2);
    let card = system.api.new_wallet().await;
    system.api.fund(&card, "100").await;
    let expires_at = Utc::now() + chrono::Duration::seconds(1);
    let body = json!({"walletId": card, "operationType": "HOLD", "amount": "10", "expiresAt": expires_at.to_rfc3339()});
    let held = processed(&system.api, &body).await;
    let wallet_id = WalletId(card.parse().expect("wallet id"));
    let kind = wallet::ledger::kind::OperationKind::Capture {
        hold: OperationId(held.parse().expect("hold id")),
        target: None,
    };
    let metadata = wallet::ledger::metadata::Metadata::default();
    let capture = Operation {
        tenant: wallet::auth::DEFAULT_TENANT.to_owned(),
        id: wallet::clock::new_operation_id(),
        wallet_id,
        kind,
        amount: None,
        accepted_at: expires_at - chrono::Duration::milliseconds(100),
        fingerprint: kind.fingerprint(wallet_id, None, &metadata),
        metadata,
    };
    let late = expires_at + chrono::Duration::seconds(3);
    while Utc::now() < late {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kafka = wallet::config::KafkaConfig {
        brokers: system.stack.broker.address(),
        operations_topic: system.stack.operations_topic.clone(),
        partitions: system.stack.partitions,
        ..wallet::config::KafkaConfig::default()
    };
    let database = wallet::ledger::database::pool(&wallet::config::DatabaseConfig {
        url: system.stack.postgres.url(),
        ..Default::default()
    })
    .expect("a pool");
    let producer = wallet::ingest::producer::OperationProducer::connect(&kafka, &database)
        .await
        .expect("a producer connects");
    producer
        .produce(&capture)
        .await
        .expect("the capture is produced");
    let status = system
        .api
        .settled(&card, &capture.id.0.to_string(), SETTLE)
        .await;
    assert_eq!(status["status"], "PROCESSED", "{status}");
    let hold = read_hold(&system.api, &card, &held).await.body;
    assert_eq!(hold["state"], "CAPTURED", "{hold}");
    let wallet = system.api.balance(&card).await.body;
    assert_eq!(
        (&wallet["balance"], &wallet["held"]),
        (&json!("90.00"), &json!("0.00")),
        "{wallet}"
    );
}

/// Proves a hold recorded in a partition the topic no longer has (the README's move to a
/// topic with fewer partitions) still expires: the owner of partition 0 scans those too. It
/// stayed OPEN for good, its funds held, since no worker owns partition 7 of two.
#[tokio::test]
async fn a_hold_of_a_partition_the_topic_lost_still_expires() {
    let system = System::start(2);
    let card = system.api.new_wallet().await;
    system.api.fund(&card, "100").await;
    let body = json!({"walletId": card, "operationType": "HOLD", "amount": "10", "expiresAt": in_seconds(1)});
    let held = processed(&system.api, &body).await;
    let db = system.database().await;
    let moved = db
        .execute(
            "UPDATE holds SET partition = 7 WHERE hold_id = $1",
            &[&held.parse::<Uuid>().expect("hold id")],
        )
        .await
        .expect("the hold's partition is rewritten");
    assert_eq!(moved, 1);
    let grace = Duration::from_millis(wallet::config::WorkerConfig::default().hold_expiry_grace_ms);
    assert!(
        hold_becomes(
            &system.api,
            &card,
            &held,
            "EXPIRED",
            grace + Duration::from_secs(30)
        )
        .await,
        "the hold expires"
    );
    let wallet = system.api.balance(&card).await.body;
    assert_eq!(wallet["held"], "0.00", "{wallet}");
}
