//! RFC 9457 problem details: every error the API answers, with a stable machine `code`.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::cache::CacheError;
use crate::ledger::store::StoreError;

#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub code: &'static str,
    pub title: &'static str,
    pub detail: String,
    /// The request field at fault, for validation errors.
    pub field: Option<&'static str>,
    pub retry_after_s: Option<u32>,
}

/// The wire form of a [`Problem`].
#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    problem_type: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl Problem {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Problem {
            status,
            code,
            title,
            detail: detail.into(),
            field: None,
            retry_after_s: None,
        }
    }

    pub fn with_field(mut self, field: &'static str) -> Self {
        self.field = Some(field);
        self
    }

    pub fn invalid(code: &'static str, field: &'static str, detail: impl Into<String>) -> Self {
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
        self.status
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
        let body = ProblemBody {
            problem_type: format!(
                "urn:wallet:problem:{}",
                self.code.to_ascii_lowercase().replace('_', "-")
            ),
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
            code: self.code,
            field: self.field,
        };
        response.body(serde_json::to_string(&body).unwrap_or_default())
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
