//! Tenants under concurrent load: each sees only its own wallets, operations and histories.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::auth::{call, secured, token};
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
