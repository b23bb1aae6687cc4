//! The HTTP contract: the OpenAPI document covers every route, real answers match it, every
//! error is a problem, and no hostile input gets past validation or breaks the server.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::client::{deposit, System};
use crate::harness::eventually;

/// Every route the server answers, as (method, path template).
const ROUTES: [(&str, &str); 9] = [
    ("post", "/api/v1/wallets"),
    ("get", "/api/v1/wallets/{walletId}"),
    ("post", "/api/v1/wallet"),
    ("post", "/api/v1/wallets/{walletId}/operations"),
    ("get", "/api/v1/wallets/{walletId}/operations"),
    ("get", "/api/v1/wallets/{walletId}/operations/{operationId}"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

/// An answer, as the contract sees it.
struct Answer {
    status: StatusCode,
    content_type: String,
    request_id: Option<String>,
    body: Value,
}

struct Client {
    base: String,
    http: reqwest::Client,
    spec: Value,
}

impl Client {
    async fn new(base: &str) -> Client {
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

    async fn send(
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
        let response = request.send().await.expect("the API answers");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        let status = response.status();
        let content_type = header("content-type").unwrap_or_default();
        let request_id = header("x-request-id");
        let text = response.text().await.expect("body reads");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            content_type,
            request_id,
            body,
        }
    }

    /// Sends a JSON request to a route and checks the answer against the document.
    async fn call(
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
    fn conforms(&self, method: &Method, template: &str, answer: &Answer) {
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

/// One hostile or malformed request and what it must get.
struct Case {
    method: Method,
    template: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<String>,
    status: u16,
    code: &'static str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_inputs_get_documented_problems() {
    let system = System::start(2);
    let api = &system.api;
    let client = Client::new(&system.server.base).await;
    let usd = api.new_wallet().await;
    let usd_other = api.new_wallet().await;
    let jpy = api.create_wallet(json!({"currency": "JPY"})).await.body["walletId"]
        .as_str()
        .expect("walletId")
        .to_owned();
    let missing = uuid::Uuid::new_v4().to_string();
    let ops = format!("/api/v1/wallets/{usd}/operations");
    let ops_template = "/api/v1/wallets/{walletId}/operations";
    let json_type = || vec![("content-type", "application/json".to_owned())];
    let submit = |body: String, status: u16, code: &'static str| Case {
        method: Method::POST,
        template: ops_template,
        path: ops.clone(),
        headers: json_type(),
        body: Some(body),
        status,
        code,
    };
    let amount = |amount: &str, status: u16, code: &'static str| {
        submit(
            format!(r#"{{"operationType":"DEPOSIT","amount":{amount}}}"#),
            status,
            code,
        )
    };
    let get = |template: &'static str, path: String, status: u16, code: &'static str| Case {
        method: Method::GET,
        template,
        path,
        headers: vec![],
        body: None,
        status,
        code,
    };
    let create = |body: &str, status: u16, code: &'static str| Case {
        method: Method::POST,
        template: "/api/v1/wallets",
        path: "/api/v1/wallets".to_owned(),
        headers: json_type(),
        body: Some(body.to_owned()),
        status,
        code,
    };
    let huge_digits = "9".repeat(10_000);
    let cases = vec![
        // Amounts.
        amount(r#""1e1000000000""#, 422, "INVALID_AMOUNT"),
        amount("1e1000000000", 422, "INVALID_AMOUNT"),
        amount("1e-1000000000", 422, "INVALID_AMOUNT"),
        amount(&format!(r#""{huge_digits}""#), 422, "INVALID_AMOUNT"),
        amount(&huge_digits, 422, "INVALID_AMOUNT"),
        amount(r#""NaN""#, 422, "INVALID_AMOUNT"),
        amount(r#""Infinity""#, 422, "INVALID_AMOUNT"),
        amount(r#""-0""#, 422, "INVALID_AMOUNT"),
        amount("-0", 422, "INVALID_AMOUNT"),
        amount(r#""0""#, 422, "INVALID_AMOUNT"),
        amount(r#""-5""#, 422, "INVALID_AMOUNT"),
        amount(r#""+5""#, 422, "INVALID_AMOUNT"),
        amount(r#"" 5""#, 422, "INVALID_AMOUNT"),
        amount(r#""5 ""#, 422, "INVALID_AMOUNT"),
        amount(r#""0x10""#, 422, "INVALID_AMOUNT"),
        amount(r#""1,000.00""#, 422, "INVALID_AMOUNT"),
        amount(r#""10.001""#, 422, "INVALID_AMOUNT"),
        amount(r#""""#, 422, "INVALID_AMOUNT"),
        amount("true", 422, "INVALID_AMOUNT"),
        amount("null", 422, "INVALID_AMOUNT"),
        amount(r#"["1"]"#, 422, "INVALID_AMOUNT"),
        amount(r#"{"value":"1"}"#, 422, "INVALID_AMOUNT"),
        amount(r#""1e2""#, 202, ""),
        // Other fields of an operation.
        submit(
            r#"{"operationType":"DEPOSIT"}"#.to_owned(),
            422,
            "MISSING_FIELD",
        ),
        submit(
            r#"{"operationType":"DEPOSIT","amount":"1","color":"red"}"#.to_owned(),
            422,
            "UNKNOWN_FIELD",
        ),
        submit(
            r#"{"operationType":"STEAL","amount":"1"}"#.to_owned(),
            422,
            "INVALID_OPERATION_TYPE",
        ),
        submit(
            r#"{"operationType":5,"amount":"1"}"#.to_owned(),
            422,
            "INVALID_FIELD",
        ),
        submit(
            format!(r#"{{"operationType":"TRANSFER","amount":"1","toWalletId":"{usd}"}}"#),
            422,
            "SAME_WALLET",
        ),
        submit(
            format!(r#"{{"operationType":"TRANSFER","amount":"1","toWalletId":"{jpy}"}}"#),
            422,
            "CURRENCY_MISMATCH",
        ),
        submit(
            format!(r#"{{"operationType":"TRANSFER","amount":"1","toWalletId":"{missing}"}}"#),
            422,
            "TARGET_WALLET_NOT_FOUND",
        ),
        submit(
            r#"{"operationType":"TRANSFER","amount":"1","toWalletId":"not-a-uuid"}"#.to_owned(),
            422,
            "INVALID_ID",
        ),
        submit(
            format!(r#"{{"operationType":"DEPOSIT","amount":"1","toWalletId":"{usd_other}"}}"#),
            422,
            "UNEXPECTED_FIELD",
        ),
        submit(
            format!(r#"{{"walletId":"{usd_other}","operationType":"DEPOSIT","amount":"1"}}"#),
            422,
            "WALLET_MISMATCH",
        ),
        submit(
            r#"{"operationType":"DEPOSIT","amount":"1","operationId":"x"}"#.to_owned(),
            422,
            "INVALID_ID",
        ),
        // Bodies.
        submit(
            r#"{"operationType":"DEPOSIT","#.to_owned(),
            400,
            "MALFORMED_JSON",
        ),
        submit(
            r#"{"operationType":"DEPOSIT","amount":"1"} {}"#.to_owned(),
            400,
            "MALFORMED_JSON",
        ),
        submit(String::new(), 422, "INVALID_BODY"),
        submit("[]".to_owned(), 422, "INVALID_BODY"),
        submit("\u{0}\u{1}binary".to_owned(), 400, "MALFORMED_JSON"),
        submit(
            format!(
                r#"{{"operationType":"DEPOSIT","amount":"1","pad":"{}"}}"#,
                "x".repeat(20_000)
            ),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        Case {
            headers: vec![("content-type", "text/plain".to_owned())],
            ..submit(
                r#"{"operationType":"DEPOSIT","amount":"1"}"#.to_owned(),
                415,
                "UNSUPPORTED_MEDIA_TYPE",
            )
        },
        Case {
            headers: vec![(
                "content-type",
                "application/x-www-form-urlencoded".to_owned(),
            )],
            ..submit(
                "operationType=DEPOSIT&amount=1".to_owned(),
                415,
                "UNSUPPORTED_MEDIA_TYPE",
            )
        },
        Case {
            headers: vec![
                ("content-type", "application/json".to_owned()),
                ("idempotency-key", "k".repeat(300)),
            ],
            ..submit(
                r#"{"operationType":"DEPOSIT","amount":"1"}"#.to_owned(),
                400,
                "INVALID_IDEMPOTENCY_KEY",
            )
        },
        Case {
            method: Method::POST,
            template: "/api/v1/wallet",
            path: "/api/v1/wallet".to_owned(),
            headers: json_type(),
            body: Some(r#"{"operationType":"DEPOSIT","amount":"1"}"#.to_owned()),
            status: 422,
            code: "MISSING_FIELD",
        },
        Case {
            method: Method::POST,
            template: "/api/v1/wallet",
            path: "/api/v1/wallet".to_owned(),
            headers: json_type(),
            body: Some(format!(
                r#"{{"walletId":"{missing}","operationType":"DEPOSIT","amount":"1"}}"#
            )),
            status: 404,
            code: "WALLET_NOT_FOUND",
        },
        Case {
            path: format!("/api/v1/wallets/{jpy}/operations"),
            ..amount(r#""1.5""#, 422, "INVALID_AMOUNT")
        },
        Case {
            path: "/api/v1/wallets/not-a-uuid/operations".to_owned(),
            ..amount(r#""1""#, 422, "INVALID_ID")
        },
        // Wallet creation.
        create(r#"{"currency":"XXX"}"#, 422, "UNSUPPORTED_CURRENCY"),
        create(r#"{"currency":"usd"}"#, 422, "UNSUPPORTED_CURRENCY"),
        create(r#"{"walletId":"123"}"#, 422, "INVALID_ID"),
        create(r#"{"walletId":null,"owner":"me"}"#, 422, "UNKNOWN_FIELD"),
        create(
            &format!(r#"{{"walletId":"{jpy}","currency":"USD"}}"#),
            409,
            "WALLET_EXISTS",
        ),
        create("{", 400, "MALFORMED_JSON"),
        // Paths and queries.
        get(
            "/api/v1/wallets/{walletId}",
            format!("/api/v1/wallets/{missing}"),
            404,
            "WALLET_NOT_FOUND",
        ),
        get(
            "/api/v1/wallets/{walletId}",
            "/api/v1/wallets/42".to_owned(),
            422,
            "INVALID_ID",
        ),
        get(
            "/api/v1/wallets/{walletId}",
            "/api/v1/wallets/%00%01".to_owned(),
            422,
            "INVALID_ID",
        ),
        get(
            "/api/v1/wallets/{walletId}/operations/{operationId}",
            format!("/api/v1/wallets/{usd}/operations/{missing}"),
            404,
            "OPERATION_NOT_FOUND",
        ),
        get(
            "/api/v1/wallets/{walletId}/operations/{operationId}",
            format!("/api/v1/wallets/{usd}/operations/nope"),
            422,
            "INVALID_ID",
        ),
        get(ops_template, format!("{ops}?limit=0"), 422, "INVALID_LIMIT"),
        get(
            ops_template,
            format!("{ops}?limit=100000"),
            422,
            "INVALID_LIMIT",
        ),
        get(
            ops_template,
            format!("{ops}?limit=-1"),
            422,
            "INVALID_LIMIT",
        ),
        get(
            ops_template,
            format!("{ops}?cursor=abc"),
            422,
            "INVALID_CURSOR",
        ),
        get(
            ops_template,
            format!("{ops}?cursor=-5"),
            422,
            "INVALID_CURSOR",
        ),
        get(ops_template, format!("{ops}?page=2"), 422, "INVALID_QUERY"),
        get(
            ops_template,
            format!("/api/v1/wallets/{missing}/operations"),
            404,
            "WALLET_NOT_FOUND",
        ),
    ];
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let headers: Vec<(&str, &str)> = case
            .headers
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        let answer = client
            .send(
                case.method.clone(),
                &case.path,
                &headers,
                case.body.as_deref(),
            )
            .await;
        let code = answer.body["code"].as_str().unwrap_or_default();
        if answer.status.as_u16() != case.status || code != case.code {
            failures.push(format!(
                "{} {} body {:.80?}: expected {} {}, got {} {}",
                case.method,
                case.path.chars().take(80).collect::<String>(),
                case.body.as_deref().unwrap_or_default(),
                case.status,
                case.code,
                answer.status,
                answer.body
            ));
            continue;
        }
        client.conforms(&case.method, case.template, &answer);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Requests that never reach a handler are problems too.
    let framework = [
        (Method::GET, "/nowhere", 404, "ROUTE_NOT_FOUND"),
        (Method::DELETE, "/api/v1/wallets", 405, "METHOD_NOT_ALLOWED"),
        (Method::PUT, &*ops, 405, "METHOD_NOT_ALLOWED"),
        (
            Method::GET,
            "/swagger/not-a-file.js",
            404,
            "ROUTE_NOT_FOUND",
        ),
    ];
    for (method, path, status, code) in framework {
        let answer = client.send(method.clone(), path, &[], None).await;
        assert_eq!(
            answer.status.as_u16(),
            status,
            "{method} {path}: {}",
            answer.body
        );
        assert_eq!(answer.body["code"], code, "{method} {path}");
        assert!(answer.content_type.starts_with("application/problem+json"));
    }
    // The server is still healthy after all of it.
    let answer = client.send(Method::GET, "/healthz", &[], None).await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swagger_ui_and_request_ids_are_served() {
    let system = System::start(1);
    let client = Client::new(&system.server.base).await;
    let bare = client.send(Method::GET, "/swagger", &[], None).await;
    assert!(bare.status.is_redirection(), "{}", bare.status);
    let page = client
        .send(
            Method::GET,
            "/swagger/index.html?url=/openapi/v2.json",
            &[],
            None,
        )
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page
        .body
        .as_str()
        .is_some_and(|html| html.contains("swagger-ui")));
    let script = client
        .send(Method::GET, "/swagger/swagger-ui-bundle.js", &[], None)
        .await;
    assert_eq!(script.status, StatusCode::OK);
    assert!(
        script.content_type.contains("javascript"),
        "{}",
        script.content_type
    );

    let echoed = client
        .send(
            Method::GET,
            "/healthz",
            &[("x-request-id", "trace-42")],
            None,
        )
        .await;
    assert_eq!(echoed.request_id.as_deref(), Some("trace-42"));
    let generated = client.send(Method::GET, "/healthz", &[], None).await;
    let id = generated.request_id.expect("an id is generated");
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    let rejected = client
        .send(
            Method::GET,
            "/healthz",
            &[("x-request-id", "bad id with spaces")],
            None,
        )
        .await;
    assert_ne!(rejected.request_id.as_deref(), Some("bad id with spaces"));
    let logged = eventually(Duration::from_secs(10), || async {
        std::fs::read_to_string(&system.server.process.log).is_ok_and(|log| {
            log.lines()
                .any(|line| line.contains("trace-42") && line.contains("/healthz"))
        })
    })
    .await;
    assert!(logged, "the request log line with its id is missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_follows_the_dependencies() {
    let mut system = System::start(1);
    let client = Client::new(&system.server.base).await;
    let ready = client.call(Method::GET, "/readyz", "/readyz", None).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.body["status"], "ready");

    system.stack.postgres.stop();
    let down = eventually(Duration::from_secs(20), || async {
        let answer = client.call(Method::GET, "/readyz", "/readyz", None).await;
        answer.status == StatusCode::SERVICE_UNAVAILABLE
            && answer.body["checks"]["postgres"]["status"] == "down"
    })
    .await;
    assert!(down, "readiness did not report PostgreSQL down");
    system.stack.postgres.start_again();
    let back = eventually(Duration::from_secs(30), || async {
        client
            .call(Method::GET, "/readyz", "/readyz", None)
            .await
            .status
            == StatusCode::OK
    })
    .await;
    assert!(back, "readiness did not recover with PostgreSQL");

    system
        .stack
        .redis
        .process
        .stop_with(libc::SIGTERM, Duration::from_secs(10));
    let degraded = eventually(Duration::from_secs(20), || async {
        let answer = client.call(Method::GET, "/readyz", "/readyz", None).await;
        answer.status == StatusCode::OK && answer.body["status"] == "degraded"
    })
    .await;
    assert!(degraded, "readiness did not report Redis down as degraded");
    system.stack.redis.restart();
    let ready = eventually(Duration::from_secs(30), || async {
        client
            .call(Method::GET, "/readyz", "/readyz", None)
            .await
            .body["status"]
            == "ready"
    })
    .await;
    assert!(ready, "readiness did not recover with Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_loses_nothing_and_exits_cleanly() {
    let mut system = System::start(2);
    let api = system.api.clone();
    let wallet = api.new_wallet().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let api = api.clone();
        let wallet = wallet.clone();
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match api.try_submit(&deposit(&wallet, "1.00")).await {
                    Some(response) if response.status == StatusCode::ACCEPTED => accepted.push(
                        response.body["operationId"]
                            .as_str()
                            .expect("id")
                            .to_owned(),
                    ),
                    Some(_) => {}
                    None => break,
                }
            }
            accepted
        }));
    }
    let loaded = eventually(Duration::from_secs(20), || async {
        api.history(&wallet, "limit=1").await.body["items"][0]["version"]
            .as_i64()
            .is_some_and(|version| version >= 50)
    })
    .await;
    assert!(loaded, "the load did not get going");

    let started = Instant::now();
    let server_exit = system
        .server
        .process
        .stop_with(libc::SIGTERM, Duration::from_secs(15));
    assert_eq!(
        server_exit,
        Some(0),
        "wallet serve did not exit 0 on SIGTERM"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut accepted = Vec::new();
    for client in clients {
        accepted.extend(client.await.expect("client task"));
    }
    assert!(accepted.len() >= 50, "only {} accepted", accepted.len());
    let worker_exit = system
        .worker
        .stop_with(libc::SIGTERM, Duration::from_secs(15));
    assert_eq!(
        worker_exit,
        Some(0),
        "wallet work did not exit 0 on SIGTERM"
    );
    assert!(started.elapsed() < Duration::from_secs(25));

    // A fresh worker applies whatever the stopped one left; every 202 ends applied once.
    let _worker = system.stack.work("work-2");
    let database = system.database().await;
    let ids: Vec<uuid::Uuid> = accepted
        .iter()
        .map(|id| uuid::Uuid::parse_str(id).expect("uuid"))
        .collect();
    let settled = eventually(Duration::from_secs(60), || async {
        let row = database
            .query_one(
                "SELECT count(*) FROM operations WHERE id = ANY($1) AND status IN ('PROCESSED', 'FAILED')",
                &[&ids],
            )
            .await
            .expect("query");
        row.get::<_, i64>(0) == ids.len() as i64
    })
    .await;
    assert!(settled, "not every accepted operation was applied");
    let row = database
        .query_one(
            "SELECT count(*) FROM entries WHERE wallet_id = $1 AND operation_id = ANY($2)",
            &[&uuid::Uuid::parse_str(&wallet).expect("uuid"), &ids],
        )
        .await
        .expect("entries");
    let entries: i64 = row.get(0);
    assert_eq!(
        entries,
        ids.len() as i64,
        "an operation was applied twice or lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_serves_its_own_metrics() {
    let system = System::start(2);
    let port = crate::harness::free_port();
    let _observed = system.stack.spawn_wallet(
        "work-metrics",
        &["work"],
        &[("WALLET_WORKER__METRICS_LISTEN", format!("127.0.0.1:{port}"))],
    );
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/metrics");
    // Whichever worker owns a wallet's partition applies its deposits, so deposit to new
    // wallets (new partitions) until this worker shows a batch.
    let reported = eventually(Duration::from_secs(60), || async {
        let wallet = system.api.new_wallet().await;
        system.api.fund(&wallet, "1.00").await;
        let Ok(response) = http.get(&url).send().await else {
            return false;
        };
        let text = response.text().await.unwrap_or_default();
        text.contains("wallet_consumer_lag{partition=")
            && text.contains("wallet_batch_operations_bucket")
            && text.contains("wallet_batch_apply_duration_seconds_bucket")
    })
    .await;
    assert!(
        reported,
        "the worker's /metrics lacks batch and lag metrics"
    );
}
