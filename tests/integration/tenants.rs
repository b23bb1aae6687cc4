//! Tenants under concurrent load: each sees only its own wallets, operations and histories.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::auth::{call, secured, token};
use crate::client::Api;
use crate::harness::{eventually, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tenants_under_concurrent_load_never_see_each_other() {
    let stack = Stack::start(4);
    let server = secured(&stack, &[]);
    let _worker = stack.work("work-1");
    let http = reqwest::Client::new();
    let tenants = ["acme", "globex"];
    let tokens: Vec<String> = tenants
        .iter()
        .map(|t| token(&stack, t, "read,write"))
        .collect();
    let ready = eventually(Duration::from_secs(5), || async {
        let mut loaded = true;
        for token in &tokens {
            let answer = call(
                &http,
                &server.base,
                Method::GET,
                "/api/v1/wallets/00000000-0000-0000-0000-000000000000",
                Some(token),
                None,
            )
            .await;
            loaded &= answer.status == StatusCode::NOT_FOUND;
        }
        loaded
    })
    .await;
    assert!(ready, "tokens were not loaded");
    let mut loads = Vec::new();
    for token in &tokens {
        let (http, base, token) = (http.clone(), server.base.clone(), token.clone());
        loads.push(tokio::spawn(async move {
            tenant_load(&http, &base, &token).await
        }));
    }
    let mut results = Vec::new();
    for load in loads {
        results.push(load.await.expect("load task"));
    }
    for (mine, (wallets, operations)) in results.iter().enumerate() {
        let other = 1 - mine;
        let (their_wallets, their_operations) = &results[other];
        let settled = eventually(Duration::from_secs(30), || async {
            let (wallet, operation) = operations.last().expect("operations");
            let answer = call(
                &http,
                &server.base,
                Method::GET,
                &format!("/api/v1/wallets/{wallet}/operations/{operation}"),
                Some(&tokens[mine]),
                None,
            )
            .await;
            answer.body["status"] == "PROCESSED"
        })
        .await;
        assert!(settled, "{}'s operations were not processed", tenants[mine]);
        sees_only_its_own(
            &http,
            &server.base,
            &tokens[mine],
            tenants[mine],
            wallets,
            their_wallets,
            their_operations,
        )
        .await;
    }
    // Every event names its wallet's tenant, so consumers can keep tenants apart too.
    let database = crate::client::database(&stack.postgres.url()).await;
    let relayed = eventually(Duration::from_secs(30), || async {
        let row = database
            .query_one("SELECT count(*) FROM outbox", &[])
            .await
            .expect("outbox count");
        row.get::<_, i64>(0) == 0
    })
    .await;
    assert!(relayed, "the outbox did not drain");
    let events = crate::events::read_events(&stack.broker.address(), &stack.events_topic).await;
    let mut checked = 0;
    for (tenant, (wallets, _)) in tenants.iter().zip(&results) {
        for event in &events {
            let wallet = event["walletId"].as_str().unwrap_or_default();
            if wallets.iter().any(|mine| mine == wallet) {
                assert_eq!(event["tenant"], *tenant, "{event}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 2 * (4 + 40), "only {checked} events checked");
}

/// One tenant's load: four wallets, then forty deposits and transfers among them. Returns
/// the wallets and each (wallet, operation) accepted.
async fn tenant_load(
    http: &reqwest::Client,
    base: &str,
    token: &str,
) -> (Vec<String>, Vec<(String, String)>) {
    let mut wallets = Vec::new();
    for _ in 0..4 {
        let created = call(
            http,
            base,
            Method::POST,
            "/api/v1/wallets",
            Some(token),
            None,
        )
        .await;
        wallets.push(
            created.body["walletId"]
                .as_str()
                .expect("walletId")
                .to_owned(),
        );
    }
    let mut operations = Vec::new();
    for round in 0..40 {
        // Each transfer moves part of the deposit just made, so every one succeeds.
        let from = &wallets[(round / 2) % wallets.len()];
        let to = &wallets[(round / 2 + 1) % wallets.len()];
        let body = if round % 2 == 0 {
            json!({"operationType": "DEPOSIT", "amount": "5.00"})
        } else {
            json!({"operationType": "TRANSFER", "amount": "1.00", "toWalletId": to})
        };
        let answer = call(
            http,
            base,
            Method::POST,
            &format!("/api/v1/wallets/{from}/operations"),
            Some(token),
            Some(body),
        )
        .await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
        operations.push((
            from.clone(),
            answer.body["operationId"].as_str().expect("id").to_owned(),
        ));
    }
    (wallets, operations)
}

/// What `token`'s tenant (`tenant`, owning `wallets`) sees: its own histories hold only its
/// own wallets, and the other tenant's wallets and operations are not found.
async fn sees_only_its_own(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    tenant: &str,
    wallets: &[String],
    their_wallets: &[String],
    their_operations: &[(String, String)],
) {
    for wallet in wallets {
        let history = call(
            http,
            base,
            Method::GET,
            &format!("/api/v1/wallets/{wallet}/operations?limit=1000"),
            Some(token),
            None,
        )
        .await;
        for item in history.body["items"].as_array().expect("items") {
            for field in ["walletId", "toWalletId"] {
                if let Some(id) = item[field].as_str() {
                    assert!(
                        wallets.iter().any(|w| w == id),
                        "{} sees {id} of another tenant",
                        tenant
                    );
                }
            }
        }
    }
    for wallet in their_wallets {
        for path in [
            format!("/api/v1/wallets/{wallet}"),
            format!("/api/v1/wallets/{wallet}/operations"),
        ] {
            let answer = call(http, base, Method::GET, &path, Some(token), None).await;
            assert_eq!(
                answer.status,
                StatusCode::NOT_FOUND,
                "{} reads {path}",
                tenant
            );
        }
    }
    for (wallet, operation) in their_operations.iter().take(5) {
        let answer = call(
            http,
            base,
            Method::GET,
            &format!("/api/v1/wallets/{wallet}/operations/{operation}"),
            Some(token),
            None,
        )
        .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
    }
}

/// The `wallet_cache_lookups_total{result="hit"}` count on the public `/metrics`.
async fn cache_hits(http: &reqwest::Client, base: &str) -> u64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics answer")
        .text()
        .await
        .unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix("wallet_cache_lookups_total{result=\"hit\"} "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}

/// Proves the public metrics do not tell a tenant which ids are another tenant's wallets:
/// probing a cached foreign wallet leaves the cache hit count as a missing wallet does. Each
/// probe counted a hit before, so 20 probes told the prober the wallet exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn probing_another_tenants_wallet_moves_no_hit_count() {
    let stack = Stack::start(1);
    let server = secured(&stack, &[]);
    let http = reqwest::Client::new();
    let (owner, prober) = (
        token(&stack, "acme", "read,write"),
        token(&stack, "globex", "read"),
    );
    let created = eventually(Duration::from_secs(5), || async {
        call(
            &http,
            &server.base,
            Method::POST,
            "/api/v1/wallets",
            Some(&owner),
            Some(json!({})),
        )
        .await
        .status
            == StatusCode::CREATED
    })
    .await;
    assert!(created, "the owner's token was not loaded");
    let wallet = call(
        &http,
        &server.base,
        Method::POST,
        "/api/v1/wallets",
        Some(&owner),
        Some(json!({})),
    )
    .await
    .body["walletId"]
        .as_str()
        .expect("walletId")
        .to_owned();
    let path = format!("/api/v1/wallets/{wallet}");
    let cached = eventually(Duration::from_secs(10), || async {
        let before = cache_hits(&http, &server.base).await;
        let read = call(&http, &server.base, Method::GET, &path, Some(&owner), None).await;
        read.status == StatusCode::OK && cache_hits(&http, &server.base).await > before
    })
    .await;
    assert!(cached, "the owner's reads hit the cache");
    let loaded = eventually(Duration::from_secs(5), || async {
        call(&http, &server.base, Method::GET, &path, Some(&prober), None)
            .await
            .status
            == StatusCode::NOT_FOUND
    })
    .await;
    assert!(loaded, "the prober's token was not loaded");
    let before = cache_hits(&http, &server.base).await;
    for _ in 0..20 {
        let probe = call(&http, &server.base, Method::GET, &path, Some(&prober), None).await;
        assert_eq!(probe.status, StatusCode::NOT_FOUND);
    }
    assert_eq!(cache_hits(&http, &server.base).await, before);
}

/// Two tenants' API clients, once the server has loaded both tokens.
async fn two_tenants(stack: &Stack, server: &crate::harness::Server) -> (Api, Api) {
    let [acme, globex] = ["acme", "globex"]
        .map(|tenant| Api::with_token(&server.base, &token(stack, tenant, "read,write")));
    let loaded = eventually(Duration::from_secs(5), || async {
        let probe = "00000000-0000-0000-0000-000000000000";
        acme.balance(probe).await.status == StatusCode::NOT_FOUND
            && globex.balance(probe).await.status == StatusCode::NOT_FOUND
    })
    .await;
    assert!(loaded, "the tokens were not loaded");
    (acme, globex)
}

/// The balance, held amount and version a tenant reads for its wallet, once it reached
/// `version`.
async fn settled_balance(api: &Api, wallet: &str, version: i64) -> (String, String, i64) {
    let reached = eventually(Duration::from_secs(30), || async {
        api.balance(wallet).await.body["version"].as_i64() == Some(version)
    })
    .await;
    assert!(reached, "wallet {wallet} never reached version {version}");
    let read = api.balance(wallet).await.body;
    (
        read["balance"].as_str().expect("balance").to_owned(),
        read["held"].as_str().expect("held").to_owned(),
        read["version"].as_i64().expect("version"),
    )
}

/// What one tenant's history of a wallet holds: each item's type and amount, newest first.
async fn history_of(api: &Api, wallet: &str) -> Vec<(String, String)> {
    let page = api.history(wallet, "limit=100").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| {
            (
                item["operationType"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                item["amount"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Proves a wallet id belongs to its tenant: when acme has wallet X, globex creates its own X
/// (201, in another currency), and each tenant's balances, versions, holds, history, statuses,
/// balance at an instant, cached balances and events are its own, whatever the other does.
/// Before, globex's creation answered 409 "wallet id X is taken": the probe told globex that X
/// existed, and acme could take globex's predictable ids first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_wallet_id_in_two_tenants_is_two_wallets() {
    let stack = Stack::start(1);
    let server = secured(&stack, &[]);
    let _worker = stack.work("work-1");
    let (acme, globex) = two_tenants(&stack, &server).await;
    let x = uuid::Uuid::new_v4().to_string();
    let created = acme.create_wallet(json!({"walletId": x})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let theirs = globex
        .create_wallet(json!({"walletId": x, "currency": "EUR"}))
        .await;
    assert_eq!(theirs.status, StatusCode::CREATED, "{}", theirs.body);
    assert_eq!(theirs.body["currency"], "EUR");
    let again = globex
        .create_wallet(json!({"walletId": x, "currency": "EUR"}))
        .await;
    assert_eq!(
        again.status,
        StatusCode::OK,
        "re-creating its own X: {}",
        again.body
    );
    let y = globex.create_wallet(json!({"currency": "EUR"})).await.body["walletId"]
        .as_str()
        .expect("walletId")
        .to_owned();

    acme.fund(&x, "10.00").await;
    let hold = acme
        .submit_accepted(&json!({"walletId": x, "operationType": "HOLD", "amount": "3.00"}))
        .await;
    globex.fund(&x, "7.00").await;
    let transfer = globex
        .submit_accepted(&crate::client::transfer(&x, &y, "2.00"))
        .await;
    let moved = globex.settled(&x, &transfer, Duration::from_secs(30)).await;
    assert_eq!(moved["status"], "PROCESSED", "{moved}");
    let held = acme.settled(&x, &hold, Duration::from_secs(30)).await;
    assert_eq!(held["status"], "PROCESSED", "{held}");

    // Balances and versions, twice each: the second read is the cache's.
    for _ in 0..2 {
        assert_eq!(
            settled_balance(&acme, &x, 2).await,
            ("10.00".to_owned(), "3.00".to_owned(), 2)
        );
        assert_eq!(
            settled_balance(&globex, &x, 2).await,
            ("5.00".to_owned(), "0.00".to_owned(), 2)
        );
        assert_eq!(settled_balance(&globex, &y, 1).await.0, "2.00");
    }
    assert_eq!(acme.balance(&x).await.body["currency"], "USD");
    assert_eq!(acme.balance(&y).await.status, StatusCode::NOT_FOUND);

    // Each tenant's cache entry of X is its own.
    let mut redis = redis::Client::open(stack.redis.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connects to Redis");
    for (tenant, balance) in [("acme", "10.00"), ("globex", "5.00")] {
        let cached: Option<String> = redis::cmd("HGET")
            .arg(format!("wallet:{tenant}:{x}"))
            .arg("wallet")
            .query_async(&mut redis)
            .await
            .expect("reads Redis");
        let cached: Value = serde_json::from_str(&cached.expect("cached")).expect("json");
        assert_eq!(
            (cached["tenant"].as_str(), cached["balance"].as_str()),
            (Some(tenant), Some(balance))
        );
    }

    // Histories, statuses and holds.
    assert_eq!(
        history_of(&acme, &x).await,
        [
            ("HOLD".to_owned(), "3.00".to_owned()),
            ("DEPOSIT".to_owned(), "10.00".to_owned())
        ]
    );
    assert_eq!(
        history_of(&globex, &x).await,
        [
            ("TRANSFER".to_owned(), "2.00".to_owned()),
            ("DEPOSIT".to_owned(), "7.00".to_owned())
        ]
    );
    assert_eq!(acme.status(&x, &hold).await.body["status"], "PROCESSED");
    assert_eq!(globex.status(&x, &hold).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        acme.status(&x, &transfer).await.status,
        StatusCode::NOT_FOUND
    );
    let hold_path = format!("/api/v1/wallets/{x}/holds/{hold}");
    let mine = acme.raw(Method::GET, &hold_path, None, "").await;
    assert_eq!(
        (mine.status, mine.body["remaining"].as_str()),
        (StatusCode::OK, Some("3.00")),
        "{}",
        mine.body
    );
    let foreign = globex.raw(Method::GET, &hold_path, None, "").await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND, "{}", foreign.body);
    let listed = globex
        .raw(Method::GET, &format!("/api/v1/wallets/{x}/holds"), None, "")
        .await;
    assert_eq!(listed.body["items"], json!([]), "{}", listed.body);

    // The balance at an instant, from each tenant's own journal.
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let at = |api: Api| {
        let path = format!("/api/v1/wallets/{x}?at={}", now.replace('+', "%2B"));
        async move { api.raw(Method::GET, &path, None, "").await.body["balance"].clone() }
    };
    assert_eq!(at(acme.clone()).await, "10.00");
    assert_eq!(at(globex.clone()).await, "5.00");

    // Every event of X names its tenant, and each tenant's events carry its own numbers.
    let database = crate::client::database(&stack.postgres.url()).await;
    let relayed = eventually(Duration::from_secs(30), || async {
        let row = database
            .query_one("SELECT count(*) FROM outbox", &[])
            .await
            .expect("outbox count");
        row.get::<_, i64>(0) == 0
    })
    .await;
    assert!(relayed, "the outbox did not drain");
    let events = crate::events::read_events(&stack.broker.address(), &stack.events_topic).await;
    let mut last: std::collections::HashMap<String, String> = Default::default();
    for event in events
        .iter()
        .filter(|event| event["walletId"] == x.as_str())
    {
        let tenant = event["tenant"]
            .as_str()
            .expect("every event names its tenant");
        if let Some(balance) = event["balanceAfter"].as_str() {
            last.insert(tenant.to_owned(), balance.to_owned());
        }
    }
    assert_eq!(last.get("acme").map(String::as_str), Some("10"));
    assert_eq!(last.get("globex").map(String::as_str), Some("5"));
}

/// Proves a record naming a wallet of another tenant, produced to the topic by something
/// other than the API, is FAILED and changes nothing: the worker finds wallets in the
/// record's own tenant only, source and target alike. Before, the deposit was applied to
/// acme's wallet on behalf of globex.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_naming_another_tenants_wallet_is_failed() {
    let stack = Stack::start(1);
    let server = secured(&stack, &[]);
    let _worker = stack.work("work-1");
    let (acme, globex) = two_tenants(&stack, &server).await;
    let theirs = acme.new_wallet().await;
    let mine = globex.new_wallet().await;
    globex.fund(&mine, "5.00").await;
    let (deposit, transfer) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let messages = [
        json!({
            "v": 1, "tenant": "globex", "operationId": deposit, "walletId": theirs,
            "type": "DEPOSIT", "amount": "100", "acceptedAt": chrono::Utc::now(), "fingerprint": "f"
        }),
        json!({
            "v": 1, "tenant": "globex", "operationId": transfer, "walletId": mine,
            "type": "TRANSFER", "amount": "1", "toWalletId": theirs,
            "acceptedAt": chrono::Utc::now(), "fingerprint": "g"
        }),
    ];
    let values = messages
        .iter()
        .map(|message| serde_json::to_vec(message).expect("json"))
        .collect();
    crate::guarantees::produce_raw(&stack, values).await;
    let database = crate::client::database(&stack.postgres.url()).await;
    let ids = vec![deposit, transfer];
    let decided = || async {
        database
            .query(
                "SELECT status, reason FROM operations WHERE tenant = 'globex' AND id = ANY($1)
                 ORDER BY \"offset\"",
                &[&ids],
            )
            .await
            .expect("operations")
            .iter()
            .map(|row| (row.get::<_, String>(0), row.get::<_, Option<String>>(1)))
            .collect::<Vec<_>>()
    };
    let settled = eventually(Duration::from_secs(30), || async {
        decided().await.len() == 2
    })
    .await;
    assert!(settled, "the records were not decided");
    let decided = decided().await;
    assert_eq!(
        decided,
        [
            ("FAILED".to_owned(), Some("WALLET_NOT_FOUND".to_owned())),
            (
                "FAILED".to_owned(),
                Some("TARGET_WALLET_NOT_FOUND".to_owned())
            ),
        ]
    );
    let acme_wallet = acme.balance(&theirs).await.body;
    assert_eq!(
        (
            acme_wallet["balance"].as_str(),
            acme_wallet["version"].as_i64()
        ),
        (Some("0.00"), Some(0))
    );
    assert_eq!(globex.balance(&mine).await.body["balance"], "5.00");
}
