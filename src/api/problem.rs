//! RFC 9457 problem details: every error the API answers, with a stable machine `code`.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::cache::CacheError;
use crate::ledger::store::StoreError;

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    pub code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip)]
    pub retry_after_s: Option<u64>,
}

impl Problem {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Problem {
            problem_type: format!(
                "urn:wallet:problem:{}",
                code.to_ascii_lowercase().replace('_', "-")
            ),
            title,
            status: status.as_u16(),
            detail: detail.into(),
            code,
            field: None,
            retry_after_s: None,
        }
    }

    pub fn with_field(mut self, field: &str) -> Self {
        self.field = Some(field.to_owned());
        self
    }

    pub fn invalid(code: &'static str, field: &str, detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            code,
            "Invalid request",
            detail,
        )
        .with_field(field)
    }

    pub fn wallet_not_found(id: impl std::fmt::Display) -> Self {
        Problem::new(
            StatusCode::NOT_FOUND,
            "WALLET_NOT_FOUND",
            "Wallet not found",
            format!("wallet {id} does not exist"),
        )
    }

    pub fn unavailable(code: &'static str, detail: impl Into<String>) -> Self {
        let mut problem = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            code,
            "Dependency unavailable",
            detail,
        );
        problem.retry_after_s = Some(1);
        problem
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.detail)
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        ));
        if let Some(seconds) = self.retry_after_s {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        response.body(serde_json::to_string(self).unwrap_or_default())
    }
}

impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Self {
        if error.is_transient() {
            tracing::warn!(%error, "database unavailable");
            Problem::unavailable(
                "DATABASE_UNAVAILABLE",
                "the database is unavailable; retry later",
            )
        } else {
            tracing::error!(%error, "database error");
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "Internal error",
                "the database failed the request",
            )
        }
    }
}

impl From<CacheError> for Problem {
    fn from(error: CacheError) -> Self {
        tracing::warn!(%error, "cache unavailable");
        Problem::unavailable("CACHE_UNAVAILABLE", "the cache is unavailable; retry later")
    }
}
