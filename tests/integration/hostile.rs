//! Hostile and malformed requests: each gets its documented problem, and the server stays
//! healthy after all of them.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::client::System;
use crate::contract::Client;

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

/// Every hostile request, grouped by what it attacks. `usd` and `usd_other` are USD wallets,
/// `jpy` a JPY one; `missing` names no wallet.
fn hostile_cases(usd: &str, usd_other: &str, jpy: &str, missing: &str) -> Vec<Case> {
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
    vec![
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
    ]
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
    let cases = hostile_cases(&usd, &usd_other, &jpy, &missing);
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
