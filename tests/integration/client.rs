//! An HTTP client for the API, one helper per endpoint, and a running system to point it at.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::{Process, Server, Stack};

/// An answer as tests read it: the status, the headers they check, and the body as JSON (or
/// as a JSON string when it is not JSON).
pub struct Response {
    pub status: StatusCode,
    pub content_type: String,
    pub location: Option<String>,
    pub retry_after: Option<String>,
    pub request_id: Option<String>,
    /// `WWW-Authenticate`.
    pub challenge: Option<String>,
    pub body: Value,
}

/// Sends a request and reads its answer; None when the API could not be reached. Every
/// test's HTTP goes through here.
pub async fn exchange(request: reqwest::RequestBuilder) -> Option<Response> {
    let response = request
        .send()
        .await
        .map_err(|error| eprintln!("request failed: {error:?}"))
        .ok()?;
    let status = response.status();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header("content-type").unwrap_or_default();
    let location = header("location");
    let retry_after = header("retry-after");
    let request_id = header("x-request-id");
    let challenge = header("www-authenticate");
    let text = response.text().await.ok()?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Some(Response {
        status,
        content_type,
        location,
        retry_after,
        request_id,
        challenge,
        body,
    })
}

impl Response {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }
}

#[derive(Clone)]
pub struct Api {
    pub base: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str) -> Api {
        Api::with_headers(base, reqwest::header::HeaderMap::new())
    }

    /// A client that sends `token` as its bearer token with every request.
    pub fn with_token(base: &str, token: &str) -> Api {
        let mut headers = reqwest::header::HeaderMap::new();
        let bearer = format!("Bearer {token}")
            .parse()
            .expect("a token is a header value");
        headers.insert(reqwest::header::AUTHORIZATION, bearer);
        Api::with_headers(base, headers)
    }

    fn with_headers(base: &str, headers: reqwest::header::HeaderMap) -> Api {
        Api {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .default_headers(headers)
                .build()
                .expect("client builds"),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Response {
        self.try_send(request).await.expect("the API answers")
    }

    /// Sends a request; None when the API could not be reached.
    async fn try_send(&self, request: reqwest::RequestBuilder) -> Option<Response> {
        exchange(request).await
    }

    pub async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> Response {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .body(body.to_owned());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        self.send(request).await
    }

    pub async fn create_wallet(&self, body: Value) -> Response {
        self.send(
            self.http
                .post(format!("{}/api/v1/wallets", self.base))
                .json(&body),
        )
        .await
    }

    pub async fn create_wallet_with_key(&self, key: &str, body: Value) -> Response {
        self.send(
            self.http
                .post(format!("{}/api/v1/wallets", self.base))
                .header("Idempotency-Key", key)
                .json(&body),
        )
        .await
    }

    pub async fn new_wallet(&self) -> String {
        let response = self.create_wallet(json!({})).await;
        assert_eq!(response.status, StatusCode::CREATED, "{:?}", response.body);
        response.body["walletId"]
            .as_str()
            .expect("walletId")
            .to_owned()
    }

    pub async fn balance(&self, wallet: &str) -> Response {
        self.send(
            self.http
                .get(format!("{}/api/v1/wallets/{wallet}", self.base)),
        )
        .await
    }

    /// Submits `body`, asserts the 202 and returns the operation id.
    pub async fn submit_accepted(&self, body: &Value) -> String {
        let response = self.submit(body).await;
        assert_eq!(
            response.status,
            StatusCode::ACCEPTED,
            "{body} → {:?}",
            response.body
        );
        response.body["operationId"]
            .as_str()
            .expect("operationId")
            .to_owned()
    }

    pub async fn submit(&self, body: &Value) -> Response {
        self.send(
            self.http
                .post(format!("{}/api/v1/wallet", self.base))
                .json(body),
        )
        .await
    }

    /// Submits `body` (which may carry its own `operationId`); None when the API could not
    /// be reached.
    pub async fn try_submit(&self, body: &Value) -> Option<Response> {
        let request = self
            .http
            .post(format!("{}/api/v1/wallet", self.base))
            .json(body);
        self.try_send(request).await
    }

    /// Reads a balance; None when the API could not be reached.
    pub async fn try_balance(&self, wallet: &str) -> Option<Response> {
        let request = self
            .http
            .get(format!("{}/api/v1/wallets/{wallet}", self.base));
        self.try_send(request).await
    }

    /// Reads an operation's status; None when the API could not be reached.
    pub async fn try_status(&self, wallet: &str, operation: &str) -> Option<Response> {
        let request = self.http.get(format!(
            "{}/api/v1/wallets/{wallet}/operations/{operation}",
            self.base
        ));
        self.try_send(request).await
    }

    pub async fn submit_with_key(&self, wallet: &str, key: &str, body: &Value) -> Response {
        self.try_submit_with_key(wallet, key, body)
            .await
            .expect("the API answers")
    }

    pub async fn try_submit_with_key(
        &self,
        wallet: &str,
        key: &str,
        body: &Value,
    ) -> Option<Response> {
        let request = self
            .http
            .post(format!("{}/api/v1/wallets/{wallet}/operations", self.base))
            .header("Idempotency-Key", key)
            .json(body);
        self.try_send(request).await
    }

    pub async fn status(&self, wallet: &str, operation: &str) -> Response {
        self.send(self.http.get(format!(
            "{}/api/v1/wallets/{wallet}/operations/{operation}",
            self.base
        )))
        .await
    }

    pub async fn history(&self, wallet: &str, query: &str) -> Response {
        self.send(self.http.get(format!(
            "{}/api/v1/wallets/{wallet}/operations?{query}",
            self.base
        )))
        .await
    }

    /// Polls the status until the operation is PROCESSED or FAILED.
    pub async fn settled(&self, wallet: &str, operation: &str, deadline: Duration) -> Value {
        let start = std::time::Instant::now();
        loop {
            let response = self.status(wallet, operation).await;
            if matches!(
                response.body["status"].as_str(),
                Some("PROCESSED" | "FAILED")
            ) {
                return response.body;
            }
            assert!(
                start.elapsed() < deadline,
                "operation {operation} did not settle: {:?}",
                response.body
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Deposits `amount` and waits until it is processed.
    pub async fn fund(&self, wallet: &str, amount: &str) {
        let response = self.submit(&deposit(wallet, amount)).await;
        assert_eq!(response.status, StatusCode::ACCEPTED, "{:?}", response.body);
        let operation = response.body["operationId"]
            .as_str()
            .expect("operationId")
            .to_owned();
        let status = self
            .settled(wallet, &operation, Duration::from_secs(30))
            .await;
        assert_eq!(status["status"], "PROCESSED", "{status}");
    }
}

pub fn deposit(wallet: &str, amount: &str) -> Value {
    json!({"walletId": wallet, "operationType": "DEPOSIT", "amount": amount})
}

pub fn withdraw(wallet: &str, amount: &str) -> Value {
    json!({"walletId": wallet, "operationType": "WITHDRAW", "amount": amount})
}

pub fn transfer(wallet: &str, to: &str, amount: &str) -> Value {
    json!({"walletId": wallet, "operationType": "TRANSFER", "amount": amount, "toWalletId": to})
}

/// The whole system: servers, one `wallet serve`, one `wallet work`, and a client.
/// Fields drop in order: the processes go before the stack, whose temp dir holds their logs.
pub struct System {
    pub server: Server,
    pub worker: Process,
    pub stack: Stack,
    pub api: Api,
}

impl System {
    /// The system on the shared broker.
    pub fn start(partitions: i32) -> System {
        System::on(Stack::start(partitions))
    }

    /// The system with a broker of its own, for tests that stop or kill it.
    pub fn start_with_own_broker(partitions: i32) -> System {
        System::on(Stack::start_with_own_broker(partitions))
    }

    fn on(stack: Stack) -> System {
        let server = stack.serve();
        let worker = stack.work("work-1");
        let api = Api::new(&server.base);
        System {
            stack,
            server,
            worker,
            api,
        }
    }

    pub async fn database(&self) -> tokio_postgres::Client {
        database(&self.stack.postgres.url()).await
    }
}

/// A connection to the PostgreSQL at `url`, driven in the background.
pub async fn database(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connects");
    tokio::spawn(connection);
    client
}

/// A pooled connection to the PostgreSQL at `url` as the workers open one, for tests that
/// call the store directly.
pub async fn store_client(url: &str) -> deadpool_postgres::Object {
    let config = ::wallet::config::DatabaseConfig {
        url: url.to_owned(),
        ..Default::default()
    };
    let pool = ::wallet::ledger::database::pool(&config).expect("pool");
    ::wallet::ledger::database::client(&pool)
        .await
        .expect("a connection")
}

/// The number of rows in `table`.
pub async fn count_rows(db: &tokio_postgres::Client, table: &str) -> i64 {
    db.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap_or_else(|error| panic!("counting {table}: {error}"))
        .get(0)
}

/// Polls until at least `operations` operations are stored and the outbox is empty.
pub async fn stored_and_relayed(
    db: &tokio_postgres::Client,
    operations: usize,
    deadline: Duration,
) -> bool {
    crate::harness::eventually(deadline, || async {
        count_rows(db, "operations").await as usize >= operations
            && count_rows(db, "outbox").await == 0
    })
    .await
}
