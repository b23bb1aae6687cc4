//! Turning raw request bodies and path segments into domain values, with a problem for every
//! way they can be wrong.

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::HttpRequest;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::Problem;
use crate::ledger::money::{Amount, MoneyError};

/// Rejects a body declared as anything but JSON. Answers whether a type was declared: a body
/// without one is refused once it turns out not to be empty (`require_media_type`).
pub fn media_type(request: &HttpRequest) -> Result<bool, Problem> {
    let Some(declared) = request.headers().get(header::CONTENT_TYPE) else {
        return Ok(false);
    };
    let declared = declared.to_str().unwrap_or("(not ASCII)");
    let media_type = declared.split(';').next().unwrap_or_default().trim();
    if media_type.eq_ignore_ascii_case("application/json") {
        return Ok(true);
    }
    Err(unsupported(format!(
        "expected application/json, got {}",
        media_type.chars().take(64).collect::<String>()
    )))
}

/// A body with content needs `Content-Type: application/json`; an empty one needs nothing.
pub fn require_media_type(declared: bool, bytes: &[u8]) -> Result<(), Problem> {
    if declared || is_blank(bytes) {
        return Ok(());
    }
    Err(unsupported(
        "send the body with `Content-Type: application/json`".to_owned(),
    ))
}

fn unsupported(detail: String) -> Problem {
    Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UNSUPPORTED_MEDIA_TYPE",
        "Unsupported media type",
        detail,
    )
}

fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_whitespace)
}

/// Longest client-supplied name (an unknown field) repeated in a problem, in characters.
const ECHO_CHARS_MAX: usize = 64;

/// Parses a JSON body, which must be an object; an empty body is allowed only when `T` can be
/// empty (`Option`). A syntax error is a 400; a well-formed body of the wrong shape, or with
/// a wrong field, is a 422 naming the field.
pub fn json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let text = if is_blank(bytes) {
        b"null".as_slice()
    } else {
        bytes
    };
    let opening = text.iter().find(|byte| !byte.is_ascii_whitespace());
    // serde would read an array as a struct's fields in order; the API takes objects only.
    if text != b"null" && opening != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(text) {
                Ok(_) => Problem::invalid("INVALID_BODY", "body", "the body must be a JSON object"),
                Err(error) => malformed(&error),
            },
        );
    }
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    let value = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|error| json_problem(&error))?;
    deserializer.end().map_err(|error| malformed(&error))?;
    Ok(value)
}

fn malformed(error: &serde_json::Error) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "MALFORMED_JSON",
        "Malformed request body",
        format!(
            "the body is not valid JSON (line {}, column {})",
            error.line(),
            error.column()
        ),
    )
}

/// Words of the API, not of the parser: serde's messages name Rust types and echo values.
fn json_problem(error: &serde_path_to_error::Error<serde_json::Error>) -> Problem {
    let inner = error.inner();
    if !inner.is_data() {
        return malformed(inner);
    }
    let message = inner.to_string();
    // serde names an unknown or missing field only in its message, between backticks.
    let quoted: String = message
        .split('`')
        .nth(1)
        .unwrap_or_default()
        .chars()
        .take(ECHO_CHARS_MAX)
        .collect();
    let path: String = error
        .path()
        .to_string()
        .chars()
        .take(ECHO_CHARS_MAX)
        .collect();
    if message.starts_with("unknown field") {
        let detail = format!("`{quoted}` is not a field of this body");
        Problem::invalid("UNKNOWN_FIELD", quoted, detail)
    } else if message.starts_with("missing field") {
        let detail = format!("`{quoted}` is required");
        Problem::invalid("MISSING_FIELD", quoted, detail)
    } else if path == "." {
        Problem::invalid(
            "INVALID_BODY",
            "body",
            "the body does not have the expected shape",
        )
    } else {
        let detail = format!("`{path}` has the wrong type: {}", expectation(&message));
        Problem::invalid("INVALID_FIELD", path, detail)
    }
}

/// What serde expected, e.g. "a string", from "invalid type: integer `5`, expected a string".
fn expectation(message: &str) -> String {
    let expected = message
        .split(" at line ")
        .next()
        .and_then(|text| text.rsplit_once("expected "))
        .map(|(_, expected)| expected)
        .filter(|expected| !expected.contains("struct"))
        .unwrap_or("see the API document");
    format!("expected {expected}")
}

pub fn uuid(field: &'static str, text: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(text)
        .map_err(|_| Problem::invalid("INVALID_ID", field, format!("{field} must be a UUID")))
}

/// An amount given as a JSON string (`"10.50"`) or a JSON number (`10.50`), read from its
/// exact text: it never passes through a float.
pub fn amount(raw: &RawValue) -> Result<Amount, Problem> {
    let text = raw.get();
    let decimal = if text.starts_with('"') {
        serde_json::from_str::<String>(text)
            .map_err(|_| invalid_amount("amount must be a decimal string or number"))?
    } else if text.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
        text.to_owned()
    } else {
        return Err(invalid_amount("amount must be a decimal string or number"));
    };
    Amount::parse(&decimal).map_err(|error| money_problem(&error))
}

/// An RFC 3339 time; a `+` offset must be sent as `%2B`, since a query reads `+` as a space.
pub fn time(name: &'static str, text: Option<&str>) -> Result<Option<DateTime<Utc>>, Problem> {
    text.map(|text| {
        DateTime::parse_from_rfc3339(text)
            .map(|time| time.with_timezone(&Utc))
            .map_err(|_| {
                let detail = format!(
                    "{name} must be an RFC 3339 time such as 2026-12-01T10:00:00Z \
                     (write a + offset as %2B)"
                );
                Problem::invalid("INVALID_TIME", name, detail)
            })
    })
    .transpose()
}

pub fn money_problem(error: &MoneyError) -> Problem {
    match error {
        MoneyError::UnsupportedCurrency(_) => {
            Problem::invalid("UNSUPPORTED_CURRENCY", "currency", error.to_string())
        }
        MoneyError::Malformed(_)
        | MoneyError::NotPositive
        | MoneyError::TooLarge
        | MoneyError::TooPrecise { .. }
        | MoneyError::TooManyDecimals(_) => invalid_amount(error.to_string()),
    }
}

fn invalid_amount(detail: impl Into<String>) -> Problem {
    Problem::invalid("INVALID_AMOUNT", "amount", detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Shape {
        name: String,
        count: Option<u32>,
    }

    fn code(bytes: &[u8]) -> &'static str {
        json::<Shape>(bytes).map_or_else(|problem| problem.code, |_| "OK")
    }

    #[test]
    fn only_objects_are_bodies() {
        assert_eq!(code(br#"{"name":"a"}"#), "OK");
        assert_eq!(code(br#"["a", 1]"#), "INVALID_BODY");
        assert_eq!(code(b"\"a\""), "INVALID_BODY");
        assert_eq!(code(b"[1,"), "MALFORMED_JSON");
        assert!(json::<Option<Shape>>(b"  ").is_ok_and(|shape| shape.is_none()));
    }

    #[test]
    fn problems_use_the_api_words() {
        let problem = json::<Shape>(br#"{"name":5}"#).expect_err("wrong type");
        assert_eq!(problem.field.as_deref(), Some("name"));
        assert!(!problem.detail.contains("struct"), "{}", problem.detail);
        let unknown = "u".repeat(1_000);
        let body = format!(r#"{{"name":"a","{unknown}":1}}"#);
        let problem = json::<Shape>(body.as_bytes()).expect_err("unknown field");
        assert_eq!(problem.code, "UNKNOWN_FIELD");
        assert!(problem.detail.len() < 200, "{}", problem.detail);
        let problem = json::<Shape>(b"{\"name\":").expect_err("cut short");
        assert!(problem.detail.starts_with("the body is not valid JSON"));
    }

    #[test]
    fn a_body_with_content_needs_a_json_type() {
        assert!(require_media_type(false, b"").is_ok());
        assert!(require_media_type(true, b"{}").is_ok());
        let refused = require_media_type(false, b"{}").expect_err("no type");
        assert_eq!(refused.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}
