//! Tokens, scopes and tenants: nobody gets in where they do not belong.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::client::{exchange, Response as Answer};
use crate::harness::{eventually, Server, Stack};

/// Serves with authentication on; tokens are reloaded every `refresh_ms`.
pub fn secured(stack: &Stack, extra: &[(&str, String)]) -> Server {
    let mut env = vec![
        ("WALLET_AUTH__ENABLED", "true".to_owned()),
        ("WALLET_AUTH__REFRESH_INTERVAL_MS", "200".to_owned()),
    ];
    env.extend(extra.iter().cloned());
    stack.serve_with(&env)
}

/// Runs a `wallet` command against `stack` and returns what it printed; it must succeed.
pub fn wallet_cli(stack: &Stack, args: &[&str]) -> String {
    let output = stack.wallet_command(args).output().expect("wallet runs");
    assert!(
        output.status.success(),
        "wallet {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A token of `tenant` with `scopes`, as `wallet token create` prints it.
pub fn token(stack: &Stack, tenant: &str, scopes: &str) -> String {
    let secret = wallet_cli(
        stack,
        &[
            "token", "create", "--tenant", tenant, "--scopes", scopes, "--name", "test",
        ],
    );
    assert!(secret.starts_with("wlt_") && secret.len() >= 40, "{secret}");
    secret
}

fn token_id(stack: &Stack, tenant: &str) -> String {
    let listing = wallet_cli(stack, &["token", "list"]);
    listing
        .lines()
        .find(|line| line.split_whitespace().nth(1) == Some(tenant))
        .and_then(|line| line.split_whitespace().next())
        .expect("the token is listed")
        .to_owned()
}

/// Whether creating a wallet with `token` answers `status` within the 5 s a token change may
/// take to reach a server.
async fn creating_a_wallet_answers(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    status: StatusCode,
) -> bool {
    eventually(Duration::from_secs(5), || async {
        call(
            http,
            base,
            Method::POST,
            "/api/v1/wallets",
            Some(token),
            None,
        )
        .await
        .status
            == status
    })
    .await
}

pub async fn call(
    http: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let mut request = http.request(method, format!("{base}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    exchange(request).await.expect("the API answers")
}

/// A route as each kind of caller sees it: what its owner gets, and what another tenant gets
/// in its place.
struct Route {
    method: Method,
    path: String,
    body: Option<Value>,
    success: StatusCode,
    hidden: (StatusCode, &'static str),
}

/// Every route, on `wallet` and its `operation`.
fn routes(wallet: &str, operation: &str, deposit: &Value) -> Vec<Route> {
    let operations = format!("/api/v1/wallets/{wallet}/operations");
    vec![
        Route {
            method: Method::GET,
            path: format!("/api/v1/wallets/{wallet}"),
            body: None,
            success: StatusCode::OK,
            hidden: (StatusCode::NOT_FOUND, "WALLET_NOT_FOUND"),
        },
        Route {
            method: Method::POST,
            path: "/api/v1/wallet".to_owned(),
            body: Some(deposit.clone()),
            success: StatusCode::ACCEPTED,
            hidden: (StatusCode::NOT_FOUND, "WALLET_NOT_FOUND"),
        },
        Route {
            method: Method::POST,
            path: operations.clone(),
            body: Some(json!({"operationType": "DEPOSIT", "amount": "1.00"})),
            success: StatusCode::ACCEPTED,
            hidden: (StatusCode::NOT_FOUND, "WALLET_NOT_FOUND"),
        },
        Route {
            method: Method::GET,
            path: operations.clone(),
            body: None,
            success: StatusCode::OK,
            hidden: (StatusCode::NOT_FOUND, "WALLET_NOT_FOUND"),
        },
        Route {
            method: Method::GET,
            path: format!("{operations}/{operation}"),
            body: None,
            success: StatusCode::OK,
            hidden: (StatusCode::NOT_FOUND, "OPERATION_NOT_FOUND"),
        },
        // Last, as it makes the other tenant a wallet of its own with this id: a wallet id
        // belongs to its tenant, so the id the owner took is free in every other tenant.
        Route {
            method: Method::POST,
            path: "/api/v1/wallets".to_owned(),
            body: Some(json!({"walletId": wallet})),
            success: StatusCode::OK,
            hidden: (StatusCode::CREATED, ""),
        },
    ]
}

/// The tokens of each kind of caller: acme's owner, reader and writer, globex's owner, and
/// a revoked token.
struct Tokens<'a> {
    owner: &'a str,
    reader: &'a str,
    writer: &'a str,
    stranger: &'a str,
    revoked: &'a str,
}

/// Calls every route as each kind of caller; returns each answer that was not the documented
/// one.
async fn route_failures(
    http: &reqwest::Client,
    base: &str,
    routes: &[Route],
    tokens: &Tokens<'_>,
) -> Vec<String> {
    let mut failures = Vec::new();
    for route in routes {
        let wrong_scope = if route.method == Method::GET {
            tokens.writer
        } else {
            tokens.reader
        };
        let callers: [(&str, Option<&str>, StatusCode, &str); 6] = [
            (
                "no token",
                None,
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
            ),
            (
                "bad token",
                Some("wlt_not-a-real-token"),
                StatusCode::UNAUTHORIZED,
                "INVALID_TOKEN",
            ),
            (
                "revoked token",
                Some(tokens.revoked),
                StatusCode::UNAUTHORIZED,
                "INVALID_TOKEN",
            ),
            (
                "wrong scope",
                Some(wrong_scope),
                StatusCode::FORBIDDEN,
                "INSUFFICIENT_SCOPE",
            ),
            (
                "other tenant",
                Some(tokens.stranger),
                route.hidden.0,
                route.hidden.1,
            ),
            ("right token", Some(tokens.owner), route.success, ""),
        ];
        for (who, token, status, code) in callers {
            let answer = call(
                http,
                base,
                route.method.clone(),
                &route.path,
                token,
                route.body.clone(),
            )
            .await;
            let got_code = answer.body["code"].as_str().unwrap_or_default();
            if answer.status != status || got_code != code {
                failures.push(format!(
                    "{} {} as {who}: expected {status} {code}, got {} {}",
                    route.method, route.path, answer.status, answer.body
                ));
            }
            if status == StatusCode::UNAUTHORIZED
                && answer
                    .challenge
                    .as_deref()
                    .is_none_or(|c| !c.starts_with("Bearer"))
            {
                failures.push(format!(
                    "{} {} as {who}: no WWW-Authenticate: Bearer",
                    route.method, route.path
                ));
            }
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_route_answers_each_kind_of_caller_as_documented() {
    let stack = Stack::start(2);
    let server = secured(&stack, &[]);
    let _worker = stack.work("work-1");
    let http = reqwest::Client::new();
    let base = server.base.clone();
    let owner = token(&stack, "acme", "read,write");
    let reader = token(&stack, "acme", "read");
    let writer = token(&stack, "acme", "write");
    let stranger = token(&stack, "globex", "read,write");
    let revoked = token(&stack, "initech", "read,write");
    wallet_cli(&stack, &["token", "revoke", &token_id(&stack, "initech")]);
    // Tokens made after the server started count once it has reloaded them.
    let loaded = creating_a_wallet_answers(&http, &base, &stranger, StatusCode::CREATED).await
        && creating_a_wallet_answers(&http, &base, &revoked, StatusCode::UNAUTHORIZED).await;
    assert!(loaded, "the new tokens were not loaded");

    let created = call(
        &http,
        &base,
        Method::POST,
        "/api/v1/wallets",
        Some(&owner),
        None,
    )
    .await;
    let wallet = created.body["walletId"]
        .as_str()
        .expect("walletId")
        .to_owned();
    let theirs = call(
        &http,
        &base,
        Method::POST,
        "/api/v1/wallets",
        Some(&stranger),
        None,
    )
    .await;
    let their_wallet = theirs.body["walletId"]
        .as_str()
        .expect("walletId")
        .to_owned();
    let deposit = json!({"walletId": wallet, "operationType": "DEPOSIT", "amount": "10.00"});
    let accepted = call(
        &http,
        &base,
        Method::POST,
        "/api/v1/wallet",
        Some(&owner),
        Some(deposit.clone()),
    )
    .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.body);
    let operation = accepted.body["operationId"]
        .as_str()
        .expect("id")
        .to_owned();

    let operations = format!("/api/v1/wallets/{wallet}/operations");
    let routes = routes(&wallet, &operation, &deposit);
    let tokens = Tokens {
        owner: &owner,
        reader: &reader,
        writer: &writer,
        stranger: &stranger,
        revoked: &revoked,
    };
    let failures = route_failures(&http, &base, &routes, &tokens).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    another_tenants_wallet_is_answered_as_missing(&http, &base, &owner, &their_wallet, &operations)
        .await;

    let log = std::fs::read_to_string(&server.process.log).expect("server log");
    for secret in [&owner, &reader, &writer, &stranger, &revoked] {
        assert!(
            !log.contains(secret.as_str()),
            "a token is in the server log"
        );
    }
}

/// A missing wallet and another tenant's answer alike, to the byte but for the id, and a
/// transfer to another tenant's wallet finds no wallet.
async fn another_tenants_wallet_is_answered_as_missing(
    http: &reqwest::Client,
    base: &str,
    owner: &str,
    their_wallet: &str,
    operations: &str,
) {
    let missing = uuid::Uuid::new_v4().to_string();
    let absent = call(
        http,
        base,
        Method::GET,
        &format!("/api/v1/wallets/{missing}"),
        Some(owner),
        None,
    )
    .await;
    let hidden = call(
        http,
        base,
        Method::GET,
        &format!("/api/v1/wallets/{their_wallet}"),
        Some(owner),
        None,
    )
    .await;
    assert_eq!(absent.status, hidden.status);
    assert_eq!(
        absent.body["detail"]
            .as_str()
            .map(|d| d.replace(&missing, "ID")),
        hidden.body["detail"]
            .as_str()
            .map(|d| d.replace(their_wallet, "ID"))
    );
    let across = call(
        http,
        base,
        Method::POST,
        operations,
        Some(owner),
        Some(json!({"operationType": "TRANSFER", "amount": "1.00", "toWalletId": their_wallet})),
    )
    .await;
    assert_eq!(across.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(across.body["code"], "TARGET_WALLET_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_token_stops_working_on_every_server_in_time() {
    let stack = Stack::start(1);
    let first = secured(
        &stack,
        &[("WALLET_AUTH__REFRESH_INTERVAL_MS", "1000".to_owned())],
    );
    let second = secured(
        &stack,
        &[("WALLET_AUTH__REFRESH_INTERVAL_MS", "1000".to_owned())],
    );
    let http = reqwest::Client::new();
    let secret = token(&stack, "acme", "read,write");
    for server in [&first, &second] {
        let accepted =
            creating_a_wallet_answers(&http, &server.base, &secret, StatusCode::CREATED).await;
        assert!(accepted, "{} does not accept the token", server.base);
    }
    let revoked_at = Instant::now();
    wallet_cli(&stack, &["token", "revoke", &token_id(&stack, "acme")]);
    for server in [&first, &second] {
        let refused =
            creating_a_wallet_answers(&http, &server.base, &secret, StatusCode::UNAUTHORIZED).await;
        assert!(refused, "{} still accepts a revoked token", server.base);
    }
    assert!(
        revoked_at.elapsed() <= Duration::from_secs(5),
        "{:?}",
        revoked_at.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rate_limit_answers_429_and_recovers() {
    let stack = Stack::start(1);
    let server = secured(
        &stack,
        &[
            ("WALLET_AUTH__RATE_LIMIT_PER_S", "5".to_owned()),
            ("WALLET_AUTH__RATE_LIMIT_BURST", "5".to_owned()),
            ("WALLET_AUTH__PUBLIC", "[healthz]".to_owned()),
        ],
    );
    let http = reqwest::Client::new();
    let secret = token(&stack, "acme", "read");
    let path = "/api/v1/wallets/00000000-0000-0000-0000-000000000000";
    let loaded = eventually(Duration::from_secs(5), || async {
        call(&http, &server.base, Method::GET, path, Some(&secret), None)
            .await
            .status
            != StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(loaded, "the token was not loaded");
    let mut limited = None;
    for _ in 0..20 {
        let answer = call(&http, &server.base, Method::GET, path, Some(&secret), None).await;
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(answer);
            break;
        }
    }
    let limited = limited.expect("20 requests at once were never limited");
    assert_eq!(limited.body["code"], "RATE_LIMITED");
    let wait: u64 = limited
        .retry_after
        .as_deref()
        .and_then(|value| value.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=2).contains(&wait), "{wait}");
    let recovered = eventually(Duration::from_secs(5), || async {
        call(&http, &server.base, Method::GET, path, Some(&secret), None)
            .await
            .status
            == StatusCode::NOT_FOUND
    })
    .await;
    assert!(recovered, "the token stayed limited");

    // Service endpoints not listed as public want a read token too.
    let health = call(&http, &server.base, Method::GET, "/healthz", None, None).await;
    assert_eq!(health.status, StatusCode::OK);
    let metrics = call(&http, &server.base, Method::GET, "/metrics", None, None).await;
    assert_eq!(metrics.status, StatusCode::UNAUTHORIZED);
    let docs = call(
        &http,
        &server.base,
        Method::GET,
        "/openapi/v2.json",
        None,
        None,
    )
    .await;
    assert_eq!(docs.status, StatusCode::UNAUTHORIZED);
    let shown = eventually(Duration::from_secs(5), || async {
        call(
            &http,
            &server.base,
            Method::GET,
            "/openapi/v2.json",
            Some(&secret),
            None,
        )
        .await
        .status
            == StatusCode::OK
    })
    .await;
    assert!(shown, "a read token does not open the documents");
}
