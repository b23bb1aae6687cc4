//! One log line and one metrics sample per request, under the request's id. Metric labels
//! come from closed sets (standard methods or `other`, route templates or `unmatched`, the
//! status), and the client's own words are cut and escaped before they reach the log, so
//! neither grows with what clients invent.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing::Instrument;

use super::edge;
use crate::clock;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Reuses the caller's `X-Request-Id` when it is a sane token, so one id follows a request
/// through proxies; otherwise makes one. The id is echoed in the response and in every log
/// line written while the request runs.
pub async fn request_log(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|value| is_token(value))
        .map(str::to_owned)
        .unwrap_or_else(clock::new_request_id);
    let method = request.method().clone();
    let path = edge::loggable(request.path());
    let span = tracing::info_span!("request", request_id = %id);
    let result = next.call(request).instrument(span).await;
    let latency = started.elapsed();
    let (status, route) = match &result {
        Ok(response) => (
            response.status().as_u16(),
            response
                .request()
                .match_pattern()
                .unwrap_or_else(|| "unmatched".to_owned()),
        ),
        Err(error) => (
            error.as_response_error().status_code().as_u16(),
            "unmatched".to_owned(),
        ),
    };
    let labels = [
        ("method", edge::method_label(&method).to_owned()),
        ("route", route.clone()),
        ("status", status.to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(latency.as_secs_f64());
    tracing::info!(
        request_id = %id,
        method = %edge::loggable(method.as_str()),
        path,
        route,
        status,
        latency_ms = latency.as_secs_f64() * 1000.0,
        "request"
    );
    let mut response = result?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    Ok(response)
}

fn is_token(value: &str) -> bool {
    (1..=128).contains(&value.len())
        && value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.:".contains(&byte))
}
