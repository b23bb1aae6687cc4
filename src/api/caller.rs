//! Who is calling: the bearer token of every `/api/v1` request, checked for its scope and
//! rate, and the same check for the service endpoints an operator chose not to make public.

use std::collections::BTreeMap;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpRequest, ResponseError};
use paperclip::actix::OperationModifier;
use paperclip::v2::models::{DefaultOperationRaw, DefaultSchemaRaw, SecurityScheme};
use paperclip::v2::schema::Apiv2Schema;

use super::{openapi, AppState, Problem};
use crate::auth::{Denied, Principal, Scope};
use crate::ledger::types::{ScopedWalletId, WalletId};

const SCHEME: &str = "bearer";

/// The authenticated caller of an `/api/v1` request. Reads need the `read` scope, anything
/// else `write`.
pub struct Caller(pub Principal);

impl Caller {
    /// The wallet `id` of the caller's tenant: a wallet id names a wallet only within a
    /// tenant, and a caller reaches no other tenant's.
    pub fn wallet(&self, id: WalletId) -> ScopedWalletId {
        ScopedWalletId {
            tenant: self.0.tenant.clone(),
            id,
        }
    }
}

impl FromRequest for Caller {
    type Error = Problem;
    type Future = std::future::Ready<Result<Self, Problem>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let scope = scope_of(request.method());
        let caller = match request.app_data::<web::Data<AppState>>() {
            Some(state) => authenticate(state, request.headers(), scope).map(Caller),
            None => Err(Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "Internal error",
                "the server is misconfigured",
            )),
        };
        std::future::ready(caller)
    }
}

fn authenticate(
    state: &AppState,
    headers: &header::HeaderMap,
    scope: Scope,
) -> Result<Principal, Problem> {
    let authorization = authorization(headers)?;
    state
        .tokens
        .authenticate(authorization, scope)
        .map_err(|denied| denied_problem(&denied))
}

/// The `Authorization` header's value. Several are refused: a proxy that reads the last
/// one would see another identity than this server, which reads the first.
pub fn authorization(headers: &header::HeaderMap) -> Result<Option<&str>, Problem> {
    let mut values = headers.get_all(header::AUTHORIZATION);
    let first = values.next();
    if values.next().is_some() {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "AMBIGUOUS_AUTHORIZATION",
            "Several Authorization headers",
            "send exactly one `Authorization` header",
        ));
    }
    Ok(first.and_then(|value| value.to_str().ok()))
}

/// The scope a request to `path` needs, known from its head alone: `read` for a GET or HEAD
/// under `/api/`, `write` for anything else there, `read` for a service endpoint that
/// `public` does not list, none elsewhere.
pub fn scope_needed(path: &str, method: &Method, public: &[String]) -> Option<Scope> {
    if path.starts_with("/api/") {
        return Some(scope_of(method));
    }
    let endpoint = service_endpoint(path)?;
    (!public.iter().any(|open| open == endpoint)).then_some(Scope::Read)
}

fn scope_of(method: &Method) -> Scope {
    if method == Method::GET || method == Method::HEAD {
        Scope::Read
    } else {
        Scope::Write
    }
}

pub fn denied_problem(denied: &Denied) -> Problem {
    match denied {
        Denied::Missing => Problem::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Authentication required",
            "send `Authorization: Bearer <token>`; `wallet token create` makes a token",
        )
        .challenging(),
        Denied::Unknown => Problem::new(
            StatusCode::UNAUTHORIZED,
            "INVALID_TOKEN",
            "Invalid token",
            "the token does not exist or was revoked",
        )
        .challenging(),
        Denied::Forbidden(scope) => Problem::new(
            StatusCode::FORBIDDEN,
            "INSUFFICIENT_SCOPE",
            "Insufficient scope",
            format!("this request needs a token with the `{scope}` scope"),
        ),
        Denied::Throttled(wait) => {
            let mut problem = Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                "Too many requests",
                "this token is over its rate limit; retry after `Retry-After` seconds",
            );
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            problem.retry_after_s = Some(u32::try_from(seconds.max(1)).unwrap_or(u32::MAX));
            problem
        }
    }
}

impl Apiv2Schema for Caller {}

impl OperationModifier for Caller {
    fn update_parameter(op: &mut DefaultOperationRaw) {
        let problems = [
            (
                StatusCode::BAD_REQUEST,
                "Several `Authorization` headers (`AMBIGUOUS_AUTHORIZATION`)",
            ),
            (
                StatusCode::UNAUTHORIZED,
                "No bearer token (`UNAUTHENTICATED`), or an unknown or revoked one \
                 (`INVALID_TOKEN`); `WWW-Authenticate: Bearer` is sent",
            ),
            (
                StatusCode::FORBIDDEN,
                "The token lacks the scope: `read` for GET, `write` otherwise \
                 (`INSUFFICIENT_SCOPE`)",
            ),
            (
                StatusCode::TOO_MANY_REQUESTS,
                "The token is over its rate limit (`RATE_LIMITED`); see `Retry-After`",
            ),
        ];
        for (status, description) in problems {
            openapi::problem(op, status, description);
        }
    }

    fn update_security(op: &mut DefaultOperationRaw) {
        op.security
            .push(BTreeMap::from([(SCHEME.to_owned(), Vec::new())]));
    }

    fn update_security_definitions(map: &mut BTreeMap<String, SecurityScheme>) {
        map.insert(
            SCHEME.to_owned(),
            SecurityScheme {
                type_: "apiKey".to_owned(),
                name: Some("Authorization".to_owned()),
                in_: Some("header".to_owned()),
                description: Some(
                    "`Bearer <token>`; tokens come from `wallet token create` and carry a \
                     tenant and the scopes `read` and/or `write`"
                        .to_owned(),
                ),
                ..Default::default()
            },
        );
    }

    fn update_definitions(_: &mut BTreeMap<String, DefaultSchemaRaw>) {}
}

/// Which configurable group a service path belongs to, if any.
fn service_endpoint(path: &str) -> Option<&'static str> {
    match path {
        "/healthz" => Some("healthz"),
        "/readyz" => Some("readyz"),
        "/metrics" => Some("metrics"),
        path if path.starts_with(openapi::SWAGGER_PATH) || path.starts_with("/openapi/") => {
            Some("docs")
        }
        _ => None,
    }
}

/// Asks for a `read` token on the service endpoints that `auth.public` does not list.
pub async fn service_access(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let denied = match (
        service_endpoint(request.path()),
        request.app_data::<web::Data<AppState>>(),
    ) {
        (Some(_), Some(state)) => {
            match scope_needed(request.path(), request.method(), &state.public) {
                Some(scope) => authenticate(state, request.headers(), scope).err(),
                None => None,
            }
        }
        _ => None,
    };
    match denied {
        Some(problem) => {
            let response = problem.error_response();
            Ok(request.into_response(response).map_into_right_body())
        }
        None => next
            .call(request)
            .await
            .map(ServiceResponse::map_into_left_body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_paths_fall_into_their_groups() {
        assert_eq!(service_endpoint("/healthz"), Some("healthz"));
        assert_eq!(service_endpoint("/swagger/index.html"), Some("docs"));
        assert_eq!(service_endpoint("/openapi/v2.json"), Some("docs"));
        assert_eq!(service_endpoint("/api/v1/wallets"), None);
    }

    #[test]
    fn the_scope_is_known_from_the_head() {
        let public = vec!["healthz".to_owned()];
        assert_eq!(
            scope_needed("/api/v1/wallets", &Method::POST, &public),
            Some(Scope::Write)
        );
        assert_eq!(
            scope_needed("/api/v1/wallets/x", &Method::HEAD, &public),
            Some(Scope::Read)
        );
        assert_eq!(scope_needed("/healthz", &Method::GET, &public), None);
        assert_eq!(
            scope_needed("/metrics", &Method::GET, &public),
            Some(Scope::Read)
        );
        assert_eq!(scope_needed("/elsewhere", &Method::POST, &public), None);
    }

    #[test]
    fn several_authorization_headers_are_refused() {
        let mut headers = header::HeaderMap::new();
        headers.append(header::AUTHORIZATION, "Bearer one".parse().expect("value"));
        assert_eq!(authorization(&headers).ok(), Some(Some("Bearer one")));
        headers.append(header::AUTHORIZATION, "Bearer two".parse().expect("value"));
        let refused = authorization(&headers).err().map(|problem| problem.code);
        assert_eq!(refused, Some("AMBIGUOUS_AUTHORIZATION"));
    }

    #[test]
    fn a_throttled_caller_is_told_when_to_retry() {
        let problem = denied_problem(&Denied::Throttled(std::time::Duration::from_millis(1500)));
        assert_eq!(problem.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(problem.retry_after_s, Some(2));
    }
}
