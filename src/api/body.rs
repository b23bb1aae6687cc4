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

/// Parses a JSON body; an empty body is allowed only when `T` can be empty (`Option`).
pub fn json<T: DeserializeOwned>(request: &HttpRequest, bytes: &[u8]) -> Result<T, Problem> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("application/json");
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "Unsupported media type",
            format!("expected application/json, got {media_type}"),
        ));
    }
    let text = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"null".as_slice()
    } else {
        bytes
    };
    serde_json::from_slice(text).map_err(|error| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "MALFORMED_JSON",
            "Malformed request body",
            error.to_string(),
        )
    })
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
