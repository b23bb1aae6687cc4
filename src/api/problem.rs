//! RFC 9457 problem details: every error the API answers, with a stable machine `code`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use actix_web::body::{BoxBody, EitherBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{HttpResponse, ResponseError};
use paperclip::actix::Apiv2Schema;
use paperclip::v2::models::{DefaultOperationRaw, DefaultSchemaRaw};
use paperclip::v2::schema::{Apiv2Errors, Apiv2Schema as _};
use serde::Serialize;

use super::openapi;

use crate::cache::CacheError;
use crate::ledger::store::StoreError;

#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub code: &'static str,
    pub title: &'static str,
    pub detail: String,
    /// The request field at fault, for validation errors.
    pub field: Option<Cow<'static, str>>,
    pub retry_after_s: Option<u32>,
    /// Whether to ask for a bearer token (`WWW-Authenticate`), as every 401 must.
    pub challenge: bool,
}

/// An RFC 9457 problem: `code` is stable and meant for programs, `detail` for people.
#[derive(Serialize, Apiv2Schema)]
#[openapi(rename = "Problem")]
struct ProblemBody<'a> {
    /// A URN naming the kind of problem, derived from `code`.
    #[serde(rename = "type")]
    #[openapi(example = "urn:wallet:problem:invalid-amount")]
    problem_type: String,
    /// Short summary of the kind of problem.
    #[openapi(example = "Invalid request")]
    title: &'a str,
    /// The HTTP status code.
    #[openapi(example = "422")]
    status: u16,
    /// What went wrong with this request.
    #[openapi(example = "amount has more decimals than USD allows (2)")]
    detail: &'a str,
    /// Stable machine-readable code.
    #[openapi(example = "INVALID_AMOUNT")]
    code: &'a str,
    /// The request field at fault, for validation errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[openapi(example = "amount")]
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
            challenge: false,
        }
    }

    pub fn challenging(mut self) -> Self {
        self.challenge = true;
        self
    }

    pub fn with_field(mut self, field: impl Into<Cow<'static, str>>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn invalid(
        code: &'static str,
        field: impl Into<Cow<'static, str>>,
        detail: impl Into<String>,
    ) -> Self {
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

    /// A request the server failed for a reason of its own, which it logged.
    pub fn internal() -> Self {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "Internal error",
            "the server failed the request",
        )
    }

    pub fn payload_too_large() -> Self {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            "Payload too large",
            "the request body is larger than the server accepts (key `http.body_bytes_max`, \
             for a batch `http.batch_body_bytes_max`)",
        )
    }

    /// The connection is closed after this answer: the rest of a stalled body may never come.
    pub fn request_timeout() -> Self {
        Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "REQUEST_TIMEOUT",
            "Request timeout",
            "the request body did not arrive in time (key `http.request_timeout_ms`)",
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

impl Problem {
    fn body(&self) -> ProblemBody<'_> {
        ProblemBody {
            problem_type: format!(
                "urn:wallet:problem:{}",
                self.code.to_ascii_lowercase().replace('_', "-")
            ),
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
            code: self.code,
            field: self.field.as_deref(),
        }
    }
}

/// A problem inside a successful answer (an item of a batch): `{"problem": {…}}`.
#[derive(Serialize)]
pub struct Refusal<'a> {
    problem: ProblemBody<'a>,
}

impl<'a> Refusal<'a> {
    pub fn of(problem: &'a Problem) -> Self {
        Refusal {
            problem: problem.body(),
        }
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
        if self.challenge {
            response.insert_header((header::WWW_AUTHENTICATE, r#"Bearer realm="wallet""#));
        }
        if self.status == StatusCode::REQUEST_TIMEOUT {
            response.force_close();
        }
        response.body(serde_json::to_string(&self.body()).unwrap_or_default())
    }
}

/// Every route can meet a failed dependency; what else a route answers is documented by the
/// extractors and replies it uses.
impl Apiv2Errors for Problem {
    fn update_error_definitions(op: &mut DefaultOperationRaw) {
        openapi::problem(
            op,
            StatusCode::SERVICE_UNAVAILABLE,
            "PostgreSQL, Redis or the broker is unavailable (`DATABASE_UNAVAILABLE`, \
             `CACHE_UNAVAILABLE`, `BROKER_UNAVAILABLE`); `Retry-After` says when to retry",
        );
        openapi::problem(
            op,
            StatusCode::INTERNAL_SERVER_ERROR,
            "A dependency failed in an unexpected way (`INTERNAL`)",
        );
    }

    fn update_definitions(map: &mut BTreeMap<String, DefaultSchemaRaw>) {
        map.insert(openapi::PROBLEM_SCHEMA.to_owned(), problem_schema());
    }
}

pub fn problem_schema() -> DefaultSchemaRaw {
    ProblemBody::raw_schema()
}

/// Errors actix-web answers before a handler runs (no route, wrong method) come out as plain
/// text; this turns each into a problem so clients parse one format.
pub fn framework_errors<B: 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new().default_handler(|response: ServiceResponse<B>| {
        // A JSON body is the application's own answer (a problem, or readiness's 503).
        let is_json = response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|value| {
                let value = value.as_bytes();
                value.starts_with(b"application/problem+json")
                    || value.starts_with(b"application/json")
            });
        if is_json {
            return Ok(ErrorHandlerResponse::Response(
                response.map_into_left_body(),
            ));
        }
        let status = response.status();
        let allowed = response
            .request()
            .match_pattern()
            .and_then(|pattern| super::allowed_methods(&pattern));
        let problem = framework_problem(status, allowed);
        let (request, _) = response.into_parts();
        let mut answer = problem.error_response();
        if let Some(allowed) = allowed.filter(|_| status == StatusCode::METHOD_NOT_ALLOWED) {
            answer
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allowed));
        }
        let replaced: ServiceResponse<EitherBody<B, BoxBody>> =
            ServiceResponse::new(request, answer).map_into_right_body();
        Ok(ErrorHandlerResponse::Response(replaced))
    })
}

/// The detail never repeats the request's method or path: they are the client's words, of any
/// length.
fn framework_problem(status: StatusCode, allowed: Option<&str>) -> Problem {
    match status {
        StatusCode::NOT_FOUND => {
            Problem::new(status, "ROUTE_NOT_FOUND", "Not found", "no such route")
        }
        StatusCode::METHOD_NOT_ALLOWED => Problem::new(
            status,
            "METHOD_NOT_ALLOWED",
            "Method not allowed",
            match allowed {
                Some(allowed) => format!("this route answers only {allowed} (see `Allow`)"),
                None => "this route does not answer this method".to_owned(),
            },
        ),
        StatusCode::PAYLOAD_TOO_LARGE => Problem::payload_too_large(),
        StatusCode::REQUEST_TIMEOUT => Problem::request_timeout(),
        status if status.is_server_error() => Problem::new(
            status,
            "INTERNAL",
            "Internal error",
            "the server failed the request",
        ),
        status => Problem::new(
            status,
            "BAD_REQUEST",
            "Bad request",
            status
                .canonical_reason()
                .unwrap_or("the request was rejected"),
        ),
    }
}

impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Self {
        if error.is_transient() {
            tracing::warn!(error = %error.describe(), "database unavailable");
            Problem::unavailable(
                "DATABASE_UNAVAILABLE",
                "the database is unavailable; retry later",
            )
        } else {
            tracing::error!(error = %error.describe(), "database error");
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
