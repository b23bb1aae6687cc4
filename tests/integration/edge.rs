//! The HTTP edge under attack: what a hostile client can and cannot make `wallet serve` do.
//! Each test starts from the finding of issue 19 it guards.

use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{eventually, Server, Stack};

/// Sends `request` as raw bytes and reads until the server closes the connection or `wait`
/// passes; returns what arrived and whether the server closed.
async fn exchange(port: u16, request: &[u8], wait: Duration) -> (String, bool) {
    exchange_then(port, request, wait, false).await
}

/// `exchange`, ending the request's side of the connection after it when `end` is set, as a
/// client that sends less body than it declared and gives up.
async fn exchange_then(port: u16, request: &[u8], wait: Duration, end: bool) -> (String, bool) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connects");
    stream.write_all(request).await.expect("writes");
    if end {
        stream.shutdown().await.expect("half-closes");
    }
    let mut answer = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    let mut buffer = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(read)) => answer.extend_from_slice(&buffer[..read]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&answer).into_owned(), closed)
}

fn log_size(server: &Server) -> u64 {
    std::fs::metadata(&server.process.log)
        .map(|metadata| metadata.len())
        .unwrap_or(0)
}

fn series(metrics: &str, name: &str) -> usize {
    metrics
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .count()
}

/// Finding 1: invented methods and paths add no metric series and only bounded log lines.
#[tokio::test]
async fn unique_methods_and_paths_leave_metrics_and_logs_bounded() {
    let stack = Stack::start(1);
    let server = stack.serve();
    let http = reqwest::Client::new();
    let metrics_url = format!("{}/metrics", server.base);
    let before = http.get(&metrics_url).send().await.expect("metrics");
    let before = before.text().await.expect("text");
    let log_before = log_size(&server);
    let requests = 2_000;
    let padding = "X".repeat(2_000);
    futures::stream::iter(0..requests)
        .map(|n| {
            let method = Method::from_bytes(format!("M{n}{padding}").as_bytes()).expect("token");
            let url = format!("{}/nowhere/{n}/{padding}", server.base);
            let http = http.clone();
            async move {
                let response = http.request(method, url).send().await.expect("answered");
                assert!(response.status().is_client_error(), "{}", response.status());
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let after = http.get(&metrics_url).send().await.expect("metrics");
    let after = after.text().await.expect("text");
    let added = series(&after, "http_requests_total") - series(&before, "http_requests_total");
    assert!(
        added <= 4,
        "{added} new series for {requests} invented requests"
    );
    assert!(
        after.len() < before.len() + 20_000,
        "/metrics grew to {}",
        after.len()
    );
    let logged = log_size(&server) - log_before;
    // Each request sent over 4 KB of method and path; a log line keeps a few hundred bytes.
    assert!(
        logged < requests * 1_000,
        "{logged} bytes of log for {requests} requests"
    );
}

/// Finding 2: a client that declares a body and stalls is answered 408 and disconnected at the
/// deadline, however many do it at once.
#[tokio::test]
async fn stalled_bodies_are_answered_408_and_disconnected() {
    let stack = Stack::start(1);
    let server = stack.serve_with(&[("WALLET_HTTP__REQUEST_TIMEOUT_MS", "1000".to_owned())]);
    let head = "POST /api/v1/wallet HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
                Content-Length: 200\r\n\r\n{";
    let started = Instant::now();
    let answers = futures::future::join_all(
        (0..50).map(|_| exchange(server.port, head.as_bytes(), Duration::from_secs(10))),
    )
    .await;
    for (answer, closed) in answers {
        assert!(closed, "a stalled connection stayed open: {answer:?}");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("REQUEST_TIMEOUT"), "{answer}");
    }
    assert!(started.elapsed() < Duration::from_secs(8));
    let (answer, closed) = exchange(
        server.port,
        b"GET /healthz HTTP/1.1\r\nHost: te",
        Duration::from_secs(10),
    )
    .await;
    assert!(closed, "a stalled head stayed open: {answer:?}");
}

/// Finding 3: Swagger UI ignores configuration in its query string, and every answer carries
/// the security headers.
#[tokio::test]
async fn swagger_ui_loads_only_our_document_and_answers_carry_security_headers() {
    let stack = Stack::start(1);
    let server = stack.serve();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let get = |path: String| {
        let request = http.get(format!("{}{path}", server.base));
        async move { request.send().await.expect("answered") }
    };
    let bare = get("/swagger".to_owned()).await;
    assert_eq!(bare.status(), StatusCode::OK);
    let bare = bare.text().await.expect("page");
    let plain = get("/swagger/index.html".to_owned()).await;
    let plain = plain.text().await.expect("page");
    assert_eq!(bare, plain, "/swagger is the page itself");
    let hostile =
        "/swagger/index.html?url=https://evil.example/x.json&configUrl=https://evil.example/c.json";
    let page = get(hostile.to_owned()).await;
    assert_eq!(page.status(), StatusCode::OK);
    check_security_headers(page.headers());
    let page = page.text().await.expect("page");
    assert_eq!(page, plain, "the query string changes nothing");
    assert!(!page.contains("evil.example") && !page.contains("<script>"));
    let script = get("/swagger/swagger-initializer.js".to_owned()).await;
    let script = script.text().await.expect("script");
    assert!(script.contains(r#"url: "/openapi/v2.json""#), "{script}");
    assert!(script.contains("queryConfigEnabled: false"), "{script}");
    let bundle = get("/swagger/swagger-ui-bundle.js".to_owned()).await;
    assert_eq!(bundle.status(), StatusCode::OK);
    // Swagger UI has this option since 4.1.3, the release that stopped obeying the query.
    assert!(bundle
        .text()
        .await
        .expect("bundle")
        .contains("queryConfigEnabled"));
    for path in [
        "/healthz",
        "/api/v1/wallets/nope",
        "/nowhere",
        "/openapi/v2.json",
    ] {
        check_security_headers(get(path.to_owned()).await.headers());
    }
}

fn check_security_headers(headers: &reqwest::header::HeaderMap) {
    let policy = headers["content-security-policy"].to_str().expect("ASCII");
    assert!(policy.contains("default-src 'self'"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
}

/// Finding 4: only JSON objects with a JSON content type, keys as documented, one
/// `Authorization` header and at most one `Idempotency-Key` (several used to be resolved to
/// the first).
#[tokio::test]
async fn lenient_inputs_are_refused() {
    let stack = Stack::start(1);
    let server = stack.serve();
    let http = reqwest::Client::new();
    let wallet = "0193a1b2-0000-7000-8000-0000000000a1";
    let submit = || http.post(format!("{}/api/v1/wallet", server.base));
    let cases = [
        (
            submit()
                .header("content-type", "application/json")
                .body(format!(r#"["{wallet}","DEPOSIT","2",null,null]"#)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_BODY",
        ),
        (
            submit().body(format!(
                r#"{{"walletId":"{wallet}","operationType":"DEPOSIT","amount":"2"}}"#
            )),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            submit()
                .header("content-type", "application/json")
                .header("idempotency-key", "with space")
                .body("{}"),
            StatusCode::BAD_REQUEST,
            "INVALID_IDEMPOTENCY_KEY",
        ),
        (
            submit()
                .header("content-type", "application/json")
                .header("idempotency-key", "with\ttab")
                .body("{}"),
            StatusCode::BAD_REQUEST,
            "INVALID_IDEMPOTENCY_KEY",
        ),
        (
            http.get(format!("{}/api/v1/wallets/{wallet}", server.base))
                .header("authorization", "Bearer one")
                .header("authorization", "Bearer two"),
            StatusCode::BAD_REQUEST,
            "AMBIGUOUS_AUTHORIZATION",
        ),
        (
            submit()
                .header("content-type", "application/json")
                .header("idempotency-key", "order-1")
                .header("idempotency-key", "order-2")
                .body(format!(
                    r#"{{"walletId":"{wallet}","operationType":"DEPOSIT","amount":"2"}}"#
                )),
            StatusCode::BAD_REQUEST,
            "AMBIGUOUS_IDEMPOTENCY_KEY",
        ),
    ];
    for (request, status, code) in cases {
        let response = request.send().await.expect("answered");
        assert_eq!(response.status(), status);
        let body: serde_json::Value = response.json().await.expect("a problem");
        assert_eq!(body["code"], code, "{body}");
    }
}

/// Finding 4: a client that expects `100 Continue` is refused before it sends its body when
/// its token or its declared size is wrong.
#[tokio::test]
async fn expect_continue_is_answered_only_after_the_checks() {
    let stack = Stack::start(1);
    let server = stack.serve_with(&[("WALLET_AUTH__ENABLED", "true".to_owned())]);
    let head = |extra: &str| {
        format!(
            "POST /api/v1/wallet HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
             Expect: 100-continue\r\n{extra}\r\n"
        )
    };
    let wait = Duration::from_secs(5);
    let (anonymous, _) =
        exchange(server.port, head("Content-Length: 10\r\n").as_bytes(), wait).await;
    assert!(anonymous.starts_with("HTTP/1.1 401"), "{anonymous}");
    let oversized = head("Content-Length: 10000000\r\nAuthorization: Bearer wlt_x\r\n");
    let (oversized, _) = exchange(server.port, oversized.as_bytes(), wait).await;
    assert!(oversized.starts_with("HTTP/1.1 413"), "{oversized}");
}

/// Finding 5: problems say what is wrong in the API's words, framework answers are problems
/// with `Allow` where it applies, HEAD works where GET does, and malformed heads are no
/// ERROR in the log.
#[tokio::test]
async fn answers_speak_the_api_and_garbage_is_not_an_error() {
    let stack = Stack::start(1);
    let server = stack.serve();
    let http = reqwest::Client::new();
    let wallet = "0193a1b2-0000-7000-8000-0000000000a1";
    let history = http
        .get(format!(
            "{}/api/v1/wallets/{wallet}/operations?sort=up",
            server.base
        ))
        .send()
        .await
        .expect("answered");
    assert_eq!(history.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let history = history.text().await.expect("text");
    assert!(!history.contains("deserialize"), "{history}");
    let wrong_type = http
        .post(format!("{}/api/v1/wallet", server.base))
        .header("content-type", "application/json")
        .body(r#"{"walletId":5,"operationType":"DEPOSIT","amount":"1"}"#)
        .send()
        .await
        .expect("answered");
    let wrong_type: serde_json::Value = wrong_type.json().await.expect("problem");
    assert_eq!(wrong_type["field"], "walletId", "{wrong_type}");
    assert!(!wrong_type["detail"]
        .as_str()
        .unwrap_or_default()
        .contains("struct"));
    let short = "POST /api/v1/wallet HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
                 Content-Length: 50\r\n\r\n{";
    let (short, _) =
        exchange_then(server.port, short.as_bytes(), Duration::from_secs(5), true).await;
    assert!(short.contains("UNREADABLE_BODY"), "{short}");
    assert!(
        !short.contains("EOF") && !short.contains("payload"),
        "{short}"
    );
    let delete = http
        .delete(format!("{}/api/v1/wallets", server.base))
        .send()
        .await
        .expect("answered");
    assert_eq!(delete.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(delete.headers()["allow"], "POST");
    let head = http
        .head(format!("{}/healthz", server.base))
        .send()
        .await
        .expect("answered");
    assert_eq!(head.status(), StatusCode::OK);
    let (garbage, _) = exchange(
        server.port,
        b"GARBAGE \x01\x02 NONSENSE\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
    let healthy = http.get(format!("{}/healthz", server.base)).send().await;
    assert!(healthy.is_ok_and(|response| response.status() == StatusCode::OK));
    let log = std::fs::read_to_string(&server.process.log).expect("log");
    assert!(!log.contains("ERROR"), "{log}");
}

/// Finding 4 and 5: every documented route answers 405 with the `Allow` header that the
/// document gives it (HEAD wherever GET is).
#[tokio::test]
async fn allow_headers_match_the_document() {
    let stack = Stack::start(1);
    let server = stack.serve();
    let http = reqwest::Client::new();
    let document: serde_json::Value = http
        .get(format!("{}/openapi/v2.json", server.base))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("document");
    let paths = document["paths"].as_object().expect("paths");
    for (path, operations) in paths {
        let mut methods: Vec<String> = operations
            .as_object()
            .expect("operations")
            .keys()
            .filter(|key| *key != "parameters")
            .map(|method| method.to_ascii_uppercase())
            .collect();
        if methods.iter().any(|method| method == "GET") {
            methods.push("HEAD".to_owned());
        }
        methods.sort();
        let concrete = path
            .replace("{walletId}", "0193a1b2-0000-7000-8000-0000000000a1")
            .replace("{operationId}", "0193a1b2-0000-7000-8000-0000000000b1");
        let response = http
            .request(Method::PATCH, format!("{}{concrete}", server.base))
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
        let allow = response.headers()["allow"].to_str().expect("ASCII");
        let mut allowed: Vec<&str> = allow.split(", ").collect();
        allowed.sort();
        assert_eq!(allowed, methods, "{path}");
    }
}

/// Scans of the `wallets` table so far, as PostgreSQL's statistics count them.
async fn wallet_table_scans(stack: &Stack) -> i64 {
    let (client, connection) =
        tokio_postgres::connect(&stack.postgres.url(), tokio_postgres::NoTls)
            .await
            .expect("connects");
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables \
             WHERE relname = 'wallets'",
            &[],
        )
        .await
        .expect("statistics");
    row.get(0)
}

/// Finding 6: another tenant's wallet costs what a missing one does. A missing id is always
/// read from PostgreSQL, so reading another tenant's cached wallet must read PostgreSQL too,
/// rather than answer its 404 straight from the cache.
#[tokio::test]
async fn a_foreign_wallet_costs_the_database_read_of_a_missing_one() {
    let stack = Stack::start(1);
    let owner = crate::auth::token(&stack, "owner", "read,write");
    let prober = crate::auth::token(&stack, "prober", "read,write");
    let server = crate::auth::secured(&stack, &[]);
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{}/api/v1/wallets", server.base))
        .bearer_auth(&owner)
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("answered");
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: serde_json::Value = created.json().await.expect("wallet");
    let wallet = created["walletId"].as_str().expect("walletId").to_owned();
    let before = wallet_table_scans(&stack).await;
    let probes = 20;
    for _ in 0..probes {
        let probe = http
            .get(format!("{}/api/v1/wallets/{wallet}", server.base))
            .bearer_auth(&prober)
            .send()
            .await
            .expect("answered");
        assert_eq!(probe.status(), StatusCode::NOT_FOUND);
    }
    // Statistics reach other sessions within seconds, not at once.
    let counted = eventually(Duration::from_secs(30), || async {
        wallet_table_scans(&stack).await >= before + probes
    })
    .await;
    assert!(
        counted,
        "probes of a cached foreign wallet skipped PostgreSQL"
    );
}

/// A connection whose request the server has begun (it answered `100 Continue`) and whose
/// body then stalls.
async fn stalled_after_continue(port: u16) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connects");
    let head = "POST /api/v1/wallet HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
                Expect: 100-continue\r\nContent-Length: 200\r\n\r\n";
    stream.write_all(head.as_bytes()).await.expect("writes");
    let mut answer = Vec::new();
    let mut buffer = [0u8; 256];
    while !String::from_utf8_lossy(&answer).contains("100 Continue") {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .expect("the server answers 100 Continue")
            .expect("reads");
        assert!(read > 0, "closed before 100 Continue");
        answer.extend_from_slice(&buffer[..read]);
    }
    stream.write_all(b"{").await.expect("writes");
    stream
}

/// Finding 2: one worker thread holds at most `http.connections_max` connections; another
/// client is served only once one of them is gone.
#[tokio::test]
async fn connections_beyond_the_bound_wait_for_a_free_slot() {
    let stack = Stack::start(1);
    let server = stack.serve_with(&[
        ("WALLET_HTTP__WORKERS", "1".to_owned()),
        ("WALLET_HTTP__CONNECTIONS_MAX", "2".to_owned()),
        ("WALLET_HTTP__REQUEST_TIMEOUT_MS", "2000".to_owned()),
    ]);
    let closes = [
        stalled_after_continue(server.port).await,
        stalled_after_continue(server.port).await,
    ]
    .map(|mut stream| {
        tokio::spawn(async move {
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
            Instant::now()
        })
    });
    let (answer, _) = exchange(
        server.port,
        b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(15),
    )
    .await;
    let answered = Instant::now();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let mut first_close = answered;
    for close in closes {
        first_close = first_close.min(close.await.expect("joins"));
    }
    // Without the bound the answer would come at once, two seconds before the first close;
    // the margin only absorbs the scheduling of the task that notices a close.
    assert!(
        answered + Duration::from_millis(500) >= first_close,
        "a third connection was served while two held the worker's slots"
    );
}
