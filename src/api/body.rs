//! Turning raw request bodies and path segments into domain values, with a problem for every
//! way they can be wrong.

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::HttpRequest;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::Problem;
use crate::ledger::money::{Amount, MoneyError};

/// Rejects a body declared as anything but JSON; a body with no `Content-Type` is read as
/// JSON, as curl users expect.
pub fn media_type(request: &HttpRequest) -> Result<(), Problem> {
    let declared = request
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|value| value.to_str().unwrap_or("(not ASCII)"));
    let Some(declared) = declared else {
        return Ok(());
    };
    let media_type = declared.split(';').next().unwrap_or_default().trim();
    if media_type.eq_ignore_ascii_case("application/json") {
        return Ok(());
    }
    Err(Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UNSUPPORTED_MEDIA_TYPE",
        "Unsupported media type",
        format!(
            "expected application/json, got {}",
            media_type.chars().take(64).collect::<String>()
        ),
    ))
}

/// Parses a JSON body; an empty body is allowed only when `T` can be empty (`Option`). A
/// syntax error is a 400; a well-formed body with a wrong field is a 422 naming the field.
pub fn json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let text = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"null".as_slice()
    } else {
        bytes
    };
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    let value = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|error| json_problem(&error))?;
    deserializer
        .end()
        .map_err(|error| malformed(error.to_string()))?;
    Ok(value)
}

fn malformed(detail: String) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "MALFORMED_JSON",
        "Malformed request body",
        detail,
    )
}

fn json_problem(error: &serde_path_to_error::Error<serde_json::Error>) -> Problem {
    let inner = error.inner();
    if !inner.is_data() {
        return malformed(inner.to_string());
    }
    let message = inner.to_string();
    let path = error.path().to_string();
    // serde names an unknown or missing field only in its message, between backticks.
    let quoted = message.split('`').nth(1).unwrap_or_default().to_owned();
    let (code, field) = if message.starts_with("unknown field") {
        ("UNKNOWN_FIELD", quoted)
    } else if message.starts_with("missing field") {
        ("MISSING_FIELD", quoted)
    } else if path == "." {
        ("INVALID_BODY", "body".to_owned())
    } else {
        ("INVALID_FIELD", path)
    };
    let detail = message
        .split(" at line ")
        .next()
        .unwrap_or_default()
        .to_owned();
    Problem::invalid(code, field, detail)
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

pub fn money_problem(error: &MoneyError) -> Problem {
    match error {
        MoneyError::UnsupportedCurrency(_) => {
            Problem::invalid("UNSUPPORTED_CURRENCY", "currency", error.to_string())
        }
        _ => invalid_amount(error.to_string()),
    }
}

fn invalid_amount(detail: impl Into<String>) -> Problem {
    Problem::invalid("INVALID_AMOUNT", "amount", detail)
}
