//! The HTTP contract: the OpenAPI document covers every route, real answers match it, every
//! error is a problem, and no hostile input gets past validation or breaks the server.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::client::{exchange, Response as Answer, System};
use crate::harness::eventually;

/// Every route the server answers, as (method, path template).
const ROUTES: [(&str, &str); 12] = [
    ("post", "/api/v1/wallets"),
    ("get", "/api/v1/wallets/{walletId}"),
    ("post", "/api/v1/wallet"),
    ("post", "/api/v1/wallets/{walletId}/operations"),
    ("get", "/api/v1/wallets/{walletId}/operations"),
    ("get", "/api/v1/wallets/{walletId}/operations/{operationId}"),
    ("get", "/api/v1/wallets/{walletId}/holds"),
    ("get", "/api/v1/wallets/{walletId}/holds/{holdId}"),
    ("post", "/api/v1/operations/batch"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

pub struct Client {
    base: String,
    http: reqwest::Client,
    spec: Value,
}

impl Client {
    pub async fn new(base: &str) -> Client {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client builds");
        let spec = http
            .get(format!("{base}/openapi/v2.json"))
            .send()
            .await
            .expect("spec answers")
            .json::<Value>()
            .await
            .expect("spec is JSON");
        Client {
            base: base.to_owned(),
            http,
            spec,
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Answer {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body.to_owned());
        }
        exchange(request).await.expect("the API answers")
    }

    /// Sends a JSON request to a route and checks the answer against the document.
    pub async fn call(
        &self,
        method: Method,
        template: &str,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let text = body.map(|body| body.to_string());
        let headers = [("content-type", "application/json")];
        let answer = self
            .send(method.clone(), path, &headers, text.as_deref())
            .await;
        self.conforms(&method, template, &answer);
        answer
    }

    /// Panics unless the answer's status is documented for the route and its body matches the
    /// documented schema; errors must be problems.
    pub fn conforms(&self, method: &Method, template: &str, answer: &Answer) {
        let operation = &self.spec["paths"][template][method.as_str().to_lowercase()];
        assert!(
            operation.is_object(),
            "{method} {template} is not in the document"
        );
        let response = &operation["responses"][answer.status.as_str()];
        assert!(
            response.is_object(),
            "{method} {template} answered {} which the document does not list: {}",
            answer.status,
            answer.body
        );
        let is_problem = response["schema"]["$ref"] == "#/definitions/Problem";
        if !answer.status.is_success() && is_problem {
            assert!(
                answer.content_type.starts_with("application/problem+json"),
                "{method} {template} {}: content type {}",
                answer.status,
                answer.content_type
            );
            for field in ["type", "title", "status", "detail", "code"] {
                assert!(
                    !answer.body[field].is_null(),
                    "problem without {field}: {}",
                    answer.body
                );
            }
            assert_eq!(answer.body["status"], answer.status.as_u16());
        }
        if let Some(schema) = response.get("schema") {
            if let Err(error) = validate(&self.spec, schema, &answer.body, "$") {
                panic!(
                    "{method} {template} {}: body does not match the document: {error}\n{}",
                    answer.status, answer.body
                );
            }
        }
    }
}

/// A strict reading of the Swagger 2 schema subset the document uses: a property the
/// document does not name is an error too, so the document cannot fall behind the code.
fn validate(spec: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference
            .strip_prefix("#/definitions/")
            .ok_or_else(|| format!("{at}: unsupported $ref {reference}"))?;
        let target = &spec["definitions"][name];
        if target.is_null() {
            return Err(format!("{at}: $ref to missing definition {name}"));
        }
        return validate(spec, target, value, at);
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            return Err(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    match schema["type"].as_str() {
        Some("object") | None if schema["properties"].is_object() => {
            let object = value
                .as_object()
                .ok_or_else(|| format!("{at}: expected an object, got {value}"))?;
            let properties = schema["properties"].as_object().expect("checked");
            for required in schema["required"].as_array().into_iter().flatten() {
                let name = required.as_str().unwrap_or_default();
                if !object.contains_key(name) {
                    return Err(format!("{at}: required property {name} is missing"));
                }
            }
            for (name, field) in object {
                let Some(property) = properties.get(name) else {
                    return Err(format!("{at}: property {name} is not documented"));
                };
                let required = schema["required"]
                    .as_array()
                    .is_some_and(|all| all.iter().any(|r| r == name));
                if field.is_null() && !required {
                    continue;
                }
                validate(spec, property, field, &format!("{at}.{name}"))?;
            }
            Ok(())
        }
        Some("object") => {
            if !value.is_object() {
                return Err(format!("{at}: expected an object, got {value}"));
            }
            if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
                for (name, field) in value.as_object().expect("checked") {
                    validate(spec, values, field, &format!("{at}.{name}"))?;
                }
            }
            Ok(())
        }
        Some("array") => {
            let items = value
                .as_array()
                .ok_or_else(|| format!("{at}: expected an array, got {value}"))?;
            for (index, item) in items.iter().enumerate() {
                validate(spec, &schema["items"], item, &format!("{at}[{index}]"))?;
            }
            Ok(())
        }
        Some("string") => {
            let text = value
                .as_str()
                .ok_or_else(|| format!("{at}: expected a string, got {value}"))?;
            match schema["format"].as_str() {
                Some("uuid") if uuid::Uuid::parse_str(text).is_err() => {
                    Err(format!("{at}: {text} is not a UUID"))
                }
                Some("date-time") if chrono::DateTime::parse_from_rfc3339(text).is_err() => {
                    Err(format!("{at}: {text} is not an RFC 3339 date-time"))
                }
                _ => Ok(()),
            }
        }
        Some("integer") if !(value.is_i64() || value.is_u64()) => {
            Err(format!("{at}: expected an integer, got {value}"))
        }
        Some("number") if !value.is_number() => {
            Err(format!("{at}: expected a number, got {value}"))
        }
        Some("boolean") if !value.is_boolean() => {
            Err(format!("{at}: expected a boolean, got {value}"))
        }
        _ => Ok(()),
    }
}

/// The OpenAPI 3 document gives each answer the content type it is sent with and marks what
/// can be `null`, which the Swagger 2 document cannot say.
fn v3_says_what_is_served(v3: &Value) {
    let problem = json!({"$ref": "#/components/schemas/Problem"});
    for (path, item) in v3["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            let Some(responses) = operation["responses"].as_object() else {
                continue;
            };
            for (status, response) in responses {
                let Some(content) = response["content"].as_object() else {
                    continue;
                };
                let types: Vec<&String> = content.keys().collect();
                let expected = if content.values().any(|media| media["schema"] == problem) {
                    "application/problem+json"
                } else if path == "/metrics" {
                    "text/plain"
                } else {
                    "application/json"
                };
                assert_eq!(types, [expected], "{method} {path} {status}");
            }
        }
    }
    let cursor = &v3["components"]["schemas"]["HistoryPage"]["properties"]["nextCursor"];
    assert_eq!(cursor["nullable"], true, "{cursor}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_document_covers_every_route_and_real_answers_match_it() {
    let system = System::start(4);
    let client = Client::new(&system.server.base).await;

    the_document_describes_every_route(&client).await;
    // Every route, answering success, through the document.
    let created = client
        .call(
            Method::POST,
            "/api/v1/wallets",
            "/api/v1/wallets",
            Some(json!({"currency": "EUR"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let wallet = created.body["walletId"]
        .as_str()
        .expect("walletId")
        .to_owned();
    let again = client
        .call(
            Method::POST,
            "/api/v1/wallets",
            "/api/v1/wallets",
            Some(json!({"walletId": wallet, "currency": "EUR"})),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK);
    let other = client
        .call(Method::POST, "/api/v1/wallets", "/api/v1/wallets", None)
        .await;
    assert_eq!(other.status, StatusCode::CREATED);
    let other = other.body["walletId"]
        .as_str()
        .expect("walletId")
        .to_owned();
    every_operation_route_answers_as_documented(&client, &wallet, &other).await;
    service_routes_answer_as_documented(&client).await;
}

/// The document lists exactly the served routes, each with a summary, a success, the
/// problems every API route may answer and the bearer token; its OpenAPI 3 twin agrees.
async fn the_document_describes_every_route(client: &Client) {
    let documented: Vec<(String, String)> = client.spec["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("path item")
                .keys()
                .filter(|key| *key != "parameters")
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect();
    let mut expected: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(method, path)| ((*method).to_owned(), (*path).to_owned()))
        .collect();
    let mut found = documented.clone();
    expected.sort();
    found.sort();
    assert_eq!(
        found, expected,
        "documented routes differ from served routes"
    );
    for (method, path) in &documented {
        let operation = &client.spec["paths"][path][method];
        assert!(
            operation["summary"].as_str().is_some_and(|s| !s.is_empty()),
            "{method} {path} has no summary"
        );
        let responses = operation["responses"].as_object().expect("responses");
        assert!(
            responses.keys().any(|status| status.starts_with('2')),
            "{method} {path} documents no success"
        );
        if path.starts_with("/api/") {
            for status in ["401", "403", "429", "503"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} does not document {status}"
                );
            }
            assert_eq!(
                operation["security"],
                json!([{"bearer": []}]),
                "{method} {path} does not ask for the bearer token"
            );
        }
    }
    assert_eq!(
        client.spec["securityDefinitions"]["bearer"]["type"],
        "apiKey"
    );
    assert_eq!(client.spec["securityDefinitions"]["bearer"]["in"], "header");
    let v3 = client
        .send(Method::GET, "/openapi/v3.json", &[], None)
        .await;
    assert_eq!(v3.status, StatusCode::OK);
    assert!(
        v3.body["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")),
        "{}",
        v3.body["openapi"]
    );
    assert_eq!(
        v3.body["paths"].as_object().map(|paths| paths.len()),
        client.spec["paths"].as_object().map(|paths| paths.len())
    );
    v3_says_what_is_served(&v3.body);
}

/// The operation routes answer through the document: a deposit PENDING then PROCESSED, an
/// overdraft FAILED, a transfer across currencies refused, a page of history and a balance.
async fn every_operation_route_answers_as_documented(client: &Client, wallet: &str, other: &str) {
    let accepted = client
        .call(
            Method::POST,
            "/api/v1/wallet",
            "/api/v1/wallet",
            Some(json!({"walletId": wallet, "operationType": "DEPOSIT", "amount": "100.00"})),
        )
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED);
    let operation = accepted.body["operationId"]
        .as_str()
        .expect("id")
        .to_owned();
    let status_path = format!("/api/v1/wallets/{wallet}/operations/{operation}");
    let status_template = "/api/v1/wallets/{walletId}/operations/{operationId}";
    let pending = client
        .call(Method::GET, status_template, &status_path, None)
        .await;
    assert_eq!(pending.status, StatusCode::OK);
    let processed = eventually(Duration::from_secs(30), || async {
        let answer = client
            .call(Method::GET, status_template, &status_path, None)
            .await;
        answer.body["status"] == "PROCESSED"
    })
    .await;
    assert!(processed, "the deposit was not processed");
    let operations_template = "/api/v1/wallets/{walletId}/operations";
    let withdrawal = client
        .call(
            Method::POST,
            operations_template,
            &format!("/api/v1/wallets/{wallet}/operations"),
            Some(json!({"operationType": "WITHDRAW", "amount": 500})),
        )
        .await;
    assert_eq!(withdrawal.status, StatusCode::ACCEPTED);
    let failed_path = format!(
        "/api/v1/wallets/{wallet}/operations/{}",
        withdrawal.body["operationId"].as_str().expect("id")
    );
    let failed = eventually(Duration::from_secs(30), || async {
        let answer = client
            .call(Method::GET, status_template, &failed_path, None)
            .await;
        answer.body["status"] == "FAILED"
    })
    .await;
    assert!(failed, "the overdraft did not fail");
    let transfer = client
        .call(
            Method::POST,
            operations_template,
            &format!("/api/v1/wallets/{wallet}/operations"),
            Some(json!({"operationType": "TRANSFER", "amount": "1.5", "toWalletId": other})),
        )
        .await;
    assert_eq!(
        transfer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        transfer.body
    );
    holds_answer_as_documented(client, wallet).await;
    let batch = client
        .call(
            Method::POST,
            "/api/v1/operations/batch",
            "/api/v1/operations/batch",
            Some(json!({"operations": [
                {"walletId": other, "operationType": "DEPOSIT", "amount": "1.00"},
                {"walletId": other, "operationType": "DEPOSIT", "amount": "1.001"},
            ]})),
        )
        .await;
    assert_eq!(batch.status, StatusCode::OK, "{}", batch.body);
    assert_eq!(
        batch.body["results"][1]["problem"]["code"],
        "INVALID_AMOUNT"
    );
    let history = client
        .call(
            Method::GET,
            operations_template,
            &format!("/api/v1/wallets/{wallet}/operations?limit=1"),
            None,
        )
        .await;
    assert_eq!(history.status, StatusCode::OK);
    assert_eq!(history.body["items"].as_array().map(Vec::len), Some(1));
    let balance = client
        .call(
            Method::GET,
            "/api/v1/wallets/{walletId}",
            &format!("/api/v1/wallets/{wallet}"),
            None,
        )
        .await;
    assert_eq!(balance.body["balance"], "100.00");
}

/// A HOLD is accepted, and the hold routes answer it, a page of holds and a missing hold as
/// the document says.
async fn holds_answer_as_documented(client: &Client, wallet: &str) {
    let placed = client
        .call(
            Method::POST,
            "/api/v1/wallet",
            "/api/v1/wallet",
            Some(json!({"walletId": wallet, "operationType": "HOLD", "amount": "1.00"})),
        )
        .await;
    assert_eq!(placed.status, StatusCode::ACCEPTED, "{}", placed.body);
    let hold = placed.body["operationId"].as_str().expect("id").to_owned();
    let hold_template = "/api/v1/wallets/{walletId}/holds/{holdId}";
    let hold_path = format!("/api/v1/wallets/{wallet}/holds/{hold}");
    let placed = eventually(Duration::from_secs(30), || async {
        let answer = client
            .call(Method::GET, hold_template, &hold_path, None)
            .await;
        answer.status == StatusCode::OK && answer.body["state"] == "OPEN"
    })
    .await;
    assert!(placed, "the hold was not placed");
    let page = client
        .call(
            Method::GET,
            "/api/v1/wallets/{walletId}/holds",
            &format!("/api/v1/wallets/{wallet}/holds?state=OPEN&limit=1"),
            None,
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(page.body["items"][0]["holdId"], json!(hold));
    let missing = client
        .call(
            Method::GET,
            hold_template,
            &format!("/api/v1/wallets/{wallet}/holds/{}", uuid::Uuid::new_v4()),
            None,
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.body);
    let voided = client
        .call(
            Method::POST,
            "/api/v1/wallet",
            "/api/v1/wallet",
            Some(json!({"walletId": wallet, "operationType": "VOID", "holdId": hold})),
        )
        .await;
    assert_eq!(voided.status, StatusCode::ACCEPTED, "{}", voided.body);
    let released = eventually(Duration::from_secs(30), || async {
        let answer = client
            .call(Method::GET, hold_template, &hold_path, None)
            .await;
        answer.body["state"] == "VOIDED"
    })
    .await;
    assert!(released, "the hold was not voided");
}

/// `/healthz`, `/readyz` and `/metrics` answer through the document.
async fn service_routes_answer_as_documented(client: &Client) {
    for path in ["/healthz", "/readyz"] {
        let answer = client.call(Method::GET, path, path, None).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.body);
    }
    let metrics = client.call(Method::GET, "/metrics", "/metrics", None).await;
    let text = metrics.body.as_str().expect("metrics are text").to_owned();
    for name in [
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "wallet_produce_duration_seconds_bucket",
        "wallet_cache_lookups_total",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}");
    }
    assert!(
        text.contains(r#"route="/api/v1/wallets/{walletId}""#),
        "requests are not labelled by route template"
    );
}
