//! What handlers take from a request: the JSON body, path ids, the idempotency header and
//! history paging. Each turns every way its part can be wrong into a problem, and documents
//! that part, and those problems, in the OpenAPI document.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest};
use paperclip::actix::OperationModifier;
use paperclip::v2::models::{
    DataType, DataTypeFormat, DefaultOperationRaw, DefaultSchemaRaw, Either, Parameter, ParameterIn,
};
use paperclip::v2::schema::Apiv2Schema;
use serde::de::DeserializeOwned;

use super::{body, edge, openapi, reply, Problem};
use crate::ledger::types::{HoldState, OperationId, OperationStatus, OperationType, WalletId};

/// A JSON request body of type `T`, checked for media type and size before it is parsed.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = Problem;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Problem>>>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let media_type = body::media_type(request);
        let bytes = web::Bytes::from_request(request, payload);
        Box::pin(async move {
            let declared = media_type?;
            let bytes = bytes.await.map_err(|error| unreadable(&error))?;
            body::require_media_type(declared, &bytes)?;
            body::json(&bytes).map(JsonBody)
        })
    }
}

/// Says what went wrong in the API's words; the reader's own messages name its internals.
fn unreadable(error: &actix_web::Error) -> Problem {
    if edge::is_body_timeout(error) {
        return Problem::request_timeout();
    }
    if error.as_response_error().status_code() == StatusCode::PAYLOAD_TOO_LARGE {
        return Problem::payload_too_large();
    }
    let detail = match error.as_error::<PayloadError>() {
        Some(PayloadError::Incomplete(_)) => "the request body ended before the length it declared",
        Some(PayloadError::EncodingCorrupted) => "the request body's encoding is corrupt",
        _ => "the request body could not be read",
    };
    Problem::new(
        StatusCode::BAD_REQUEST,
        "UNREADABLE_BODY",
        "Unreadable request body",
        detail,
    )
}

impl<T: Apiv2Schema> Apiv2Schema for JsonBody<T> {}

impl<T: Apiv2Schema> OperationModifier for JsonBody<T> {
    fn update_parameter(op: &mut DefaultOperationRaw) {
        op.parameters.push(Either::Right(Parameter {
            in_: ParameterIn::Body,
            name: "body".to_owned(),
            required: T::required(),
            schema: Some(openapi::reference::<T>()),
            ..Default::default()
        }));
        let problems = [
            (
                StatusCode::BAD_REQUEST,
                "The body is not JSON (`MALFORMED_JSON`) or cannot be read (`UNREADABLE_BODY`)",
            ),
            (
                StatusCode::REQUEST_TIMEOUT,
                "The body did not arrive within `http.request_timeout_ms` (`REQUEST_TIMEOUT`); \
                 the connection is closed",
            ),
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                "The body is larger than `http.body_bytes_max` (`PAYLOAD_TOO_LARGE`)",
            ),
            (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "`Content-Type` is not application/json (`UNSUPPORTED_MEDIA_TYPE`)",
            ),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "A field is unknown (`UNKNOWN_FIELD`), missing (`MISSING_FIELD`), of the wrong \
                 type (`INVALID_FIELD`) or has an invalid value; `field` names it",
            ),
        ];
        for (status, description) in problems {
            openapi::problem(op, status, description);
        }
    }

    fn update_definitions(map: &mut std::collections::BTreeMap<String, DefaultSchemaRaw>) {
        reply::define::<T>(map);
    }
}

/// `{walletId}` in the path.
pub struct WalletPath(pub WalletId);

impl FromRequest for WalletPath {
    type Error = Problem;
    type Future = std::future::Ready<Result<Self, Problem>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(path_uuid(request, "walletId").map(|id| WalletPath(WalletId(id))))
    }
}

impl Apiv2Schema for WalletPath {}

impl OperationModifier for WalletPath {
    fn update_parameter(op: &mut DefaultOperationRaw) {
        wallet_parameter(op);
        openapi::problem(
            op,
            StatusCode::NOT_FOUND,
            "No wallet has this id (`WALLET_NOT_FOUND`)",
        );
    }

    fn update_definitions(_: &mut std::collections::BTreeMap<String, DefaultSchemaRaw>) {}
}

/// `{walletId}` and `{operationId}` in the path.
pub struct OperationPath(pub WalletId, pub OperationId);

impl FromRequest for OperationPath {
    type Error = Problem;
    type Future = std::future::Ready<Result<Self, Problem>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let ids = wallet_and_operation(request, "operationId")
            .map(|(wallet, operation)| OperationPath(wallet, operation));
        std::future::ready(ids)
    }
}

impl Apiv2Schema for OperationPath {}

impl OperationModifier for OperationPath {
    fn update_parameter(op: &mut DefaultOperationRaw) {
        wallet_and_operation_parameters(
            op,
            "operationId",
            "The operation's id, as answered when it was accepted",
        );
        openapi::problem(
            op,
            StatusCode::NOT_FOUND,
            "No operation with this id involves this wallet (`OPERATION_NOT_FOUND`)",
        );
    }

    fn update_definitions(_: &mut std::collections::BTreeMap<String, DefaultSchemaRaw>) {}
}

/// `{walletId}` and `{holdId}` in the path.
pub struct HoldPath(pub WalletId, pub OperationId);

impl FromRequest for HoldPath {
    type Error = Problem;
    type Future = std::future::Ready<Result<Self, Problem>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let ids =
            wallet_and_operation(request, "holdId").map(|(wallet, hold)| HoldPath(wallet, hold));
        std::future::ready(ids)
    }
}

impl Apiv2Schema for HoldPath {}

impl OperationModifier for HoldPath {
    fn update_parameter(op: &mut DefaultOperationRaw) {
        wallet_and_operation_parameters(
            op,
            "holdId",
            "The hold's id: the operationId of the HOLD that placed it",
        );
        openapi::problem(
            op,
            StatusCode::NOT_FOUND,
            "No wallet has this id (`WALLET_NOT_FOUND`), or it has no hold with this id \
             (`HOLD_NOT_FOUND`)",
        );
    }

    fn update_definitions(_: &mut std::collections::BTreeMap<String, DefaultSchemaRaw>) {}
}

/// `{walletId}` and the operation id named `name` in the path.
fn wallet_and_operation(
    request: &HttpRequest,
    name: &'static str,
) -> Result<(WalletId, OperationId), Problem> {
    let wallet = path_uuid(request, "walletId")?;
    let operation = path_uuid(request, name)?;
    Ok((WalletId(wallet), OperationId(operation)))
}

fn wallet_and_operation_parameters(op: &mut DefaultOperationRaw, name: &str, description: &str) {
    wallet_parameter(op);
    openapi::parameter(
        op,
        ParameterIn::Path,
        name,
        description,
        true,
        DataType::String,
        Some(DataTypeFormat::Uuid),
    );
}

fn wallet_parameter(op: &mut DefaultOperationRaw) {
    openapi::parameter(
        op,
        ParameterIn::Path,
        "walletId",
        "The wallet's id",
        true,
        DataType::String,
        Some(DataTypeFormat::Uuid),
    );
    openapi::problem(
        op,
        StatusCode::UNPROCESSABLE_ENTITY,
        "A path id is not a UUID (`INVALID_ID`)",
    );
}

fn path_uuid(request: &HttpRequest, name: &'static str) -> Result<uuid::Uuid, Problem> {
    let text = request.match_info().get(name).unwrap_or_default();
    body::uuid(name, text)
}

/// The `Idempotency-Key` header, when the client sent one.
pub struct IdempotencyKey(pub Option<String>);

impl FromRequest for IdempotencyKey {
    type Error = Problem;
    type Future = std::future::Ready<Result<Self, Problem>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(idempotency_key(request).map(IdempotencyKey))
    }
}

/// The key, if sent. Several are refused, as several `Authorization` headers are: a proxy
/// that reads another one than this server, which would read the first, would take the
/// request for another operation.
fn idempotency_key(request: &HttpRequest) -> Result<Option<String>, Problem> {
    let mut values = request.headers().get_all("Idempotency-Key");
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "AMBIGUOUS_IDEMPOTENCY_KEY",
            "Several Idempotency-Key headers",
            "send at most one `Idempotency-Key` header",
        ));
    }
    // The draft sends the key as a structured-field string, so one pair of quotes is allowed.
    let key = value
        .to_str()
        .ok()
        .map(|key| {
            key.strip_prefix('"')
                .and_then(|key| key.strip_suffix('"'))
                .unwrap_or(key)
        })
        .filter(|key| is_idempotency_key(key));
    match key {
        Some(key) => Ok(Some(key.to_owned())),
        None => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "INVALID_IDEMPOTENCY_KEY",
            "Invalid Idempotency-Key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        )),
    }
}

/// 1 to 255 visible ASCII characters, as the problem says: no spaces, tabs or quotes.
fn is_idempotency_key(key: &str) -> bool {
    (1..=255).contains(&key.len())
        && key
            .bytes()
            .all(|byte| byte.is_ascii_graphic() && byte != b'"')
}

impl Apiv2Schema for IdempotencyKey {}

/// The `Idempotency-Key` header of a wallet's creation, when the client sent one.
pub struct CreationKey(pub Option<String>);

impl FromRequest for CreationKey {
    type Error = Problem;
    type Future = std::future::Ready<Result<Self, Problem>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(idempotency_key(request).map(CreationKey))
    }
}

impl Apiv2Schema for CreationKey {}

impl OperationModifier for CreationKey {
    fn update_parameter(op: &mut DefaultOperationRaw) {
        openapi::parameter(
            op,
            ParameterIn::Header,
            "Idempotency-Key",
            "Makes retries safe: without a `walletId`, the wallet's id derives from the key (in \
             the caller's tenant), so the same key gives the same wallet. A `walletId` in the \
             body wins over this header",
            false,
            DataType::String,
            None,
        );
        key_problems(op);
    }
}

/// The refusals of an `Idempotency-Key` header, whichever route reads it.
fn key_problems(op: &mut DefaultOperationRaw) {
    openapi::problem(
        op,
        StatusCode::BAD_REQUEST,
        "Idempotency-Key is not 1 to 255 visible ASCII characters \
         (`INVALID_IDEMPOTENCY_KEY`), or was sent more than once (`AMBIGUOUS_IDEMPOTENCY_KEY`)",
    );
}

impl OperationModifier for IdempotencyKey {
    fn update_parameter(op: &mut DefaultOperationRaw) {
        openapi::parameter(
            op,
            ParameterIn::Header,
            "Idempotency-Key",
            "Makes retries safe: the same key and request give the same operation. \
             `operationId` in the body does the same and wins over this header",
            false,
            DataType::String,
            None,
        );
        key_problems(op);
        openapi::problem(
            op,
            StatusCode::CONFLICT,
            "A request with this operation id is still being accepted (`REQUEST_IN_PROGRESS`); \
             retry after `Retry-After` seconds",
        );
        openapi::problem(
            op,
            StatusCode::UNPROCESSABLE_ENTITY,
            "This operation id was used for a different request (`IDEMPOTENCY_KEY_REUSED`)",
        );
    }

    fn update_definitions(_: &mut std::collections::BTreeMap<String, DefaultSchemaRaw>) {}
}

/// `limit`, `cursor` and the filters of a history page, as text so each bad value gets its
/// own problem.
#[derive(Debug, Default)]
pub struct HistoryParams {
    pub limit: Option<String>,
    pub cursor: Option<String>,
    /// `type`.
    pub operation_type: Option<String>,
    pub status: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

impl FromRequest for HistoryParams {
    type Error = Problem;
    type Future = std::future::Ready<Result<Self, Problem>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(history_params(request.query_string()))
    }
}

fn history_params(query: &str) -> Result<HistoryParams, Problem> {
    let [limit, cursor, operation_type, status, from, to] =
        query_params(query, ["limit", "cursor", "type", "status", "from", "to"])?;
    Ok(HistoryParams {
        limit,
        cursor,
        operation_type,
        status,
        from,
        to,
    })
}

/// The values of `names`, in their order: each parameter at most once, and no others; a
/// problem names the parameter, cut short.
fn query_params<const N: usize>(
    query: &str,
    names: [&'static str; N],
) -> Result<[Option<String>; N], Problem> {
    let mut values: [Option<String>; N] = std::array::from_fn(|_| None);
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let Some(slot) = names.iter().position(|known| *known == name) else {
            let name: String = name.chars().take(64).collect();
            let detail = format!("`{name}` is not a parameter here; use {}", names.join(", "));
            return Err(Problem::invalid("INVALID_QUERY", name, detail));
        };
        if values[slot].replace(value.into_owned()).is_some() {
            let detail = format!("`{name}` is given more than once");
            return Err(Problem::invalid("INVALID_QUERY", name.into_owned(), detail));
        }
    }
    Ok(values)
}

/// `limit`, `cursor` and `state` of a page of holds, as text so each bad value gets its own
/// problem.
#[derive(Debug, Default)]
pub struct HoldsParams {
    pub limit: Option<String>,
    pub cursor: Option<String>,
    pub state: Option<String>,
}

impl FromRequest for HoldsParams {
    type Error = Problem;
    type Future = std::future::Ready<Result<Self, Problem>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let parsed = query_params(request.query_string(), ["limit", "cursor", "state"]);
        std::future::ready(parsed.map(|[limit, cursor, state]| HoldsParams {
            limit,
            cursor,
            state,
        }))
    }
}

impl Apiv2Schema for HoldsParams {}

impl OperationModifier for HoldsParams {
    fn update_parameter(op: &mut DefaultOperationRaw) {
        page_parameters(op, "Holds");
        openapi::enum_parameter(
            op,
            ParameterIn::Query,
            "state",
            "Only holds in this state",
            HoldState::ALL.into_iter().map(HoldState::as_str),
        );
        openapi::problem(
            op,
            StatusCode::UNPROCESSABLE_ENTITY,
            "An unknown query parameter (`INVALID_QUERY`), or a bad `limit` (`INVALID_LIMIT`), \
             `cursor` (`INVALID_CURSOR`) or `state` (`INVALID_STATE`)",
        );
    }

    fn update_definitions(_: &mut std::collections::BTreeMap<String, DefaultSchemaRaw>) {}
}

/// `limit` and `cursor` of a list paged by wallet version.
fn page_parameters(op: &mut DefaultOperationRaw, items: &str) {
    openapi::parameter(
        op,
        ParameterIn::Query,
        "limit",
        &format!("{items} per page, 1 to `http.history_limit_max` (default 50)"),
        false,
        DataType::Integer,
        Some(DataTypeFormat::Int32),
    );
    openapi::parameter(
        op,
        ParameterIn::Query,
        "cursor",
        "`nextCursor` of the previous page, asked with the same filters; absent for the \
         newest page",
        false,
        DataType::String,
        None,
    );
}

/// `at` of a balance read, as text so a bad value gets its own problem.
#[derive(Debug, Default)]
pub struct BalanceParams {
    pub at: Option<String>,
}

impl FromRequest for BalanceParams {
    type Error = Problem;
    type Future = std::future::Ready<Result<Self, Problem>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let parsed = query_params(request.query_string(), ["at"]);
        std::future::ready(parsed.map(|[at]| BalanceParams { at }))
    }
}

impl Apiv2Schema for BalanceParams {}

impl OperationModifier for BalanceParams {
    fn update_parameter(op: &mut DefaultOperationRaw) {
        openapi::time_parameter(
            op,
            "at",
            "The balance as of this RFC 3339 time, from the journal; not later than now",
        );
        openapi::problem(
            op,
            StatusCode::UNPROCESSABLE_ENTITY,
            "An unknown query parameter (`INVALID_QUERY`), or an `at` that is not an RFC 3339 \
             time or is in the future (`INVALID_TIME`)",
        );
    }

    fn update_definitions(_: &mut std::collections::BTreeMap<String, DefaultSchemaRaw>) {}
}

impl Apiv2Schema for HistoryParams {}

impl OperationModifier for HistoryParams {
    fn update_parameter(op: &mut DefaultOperationRaw) {
        page_parameters(op, "Operations");
        openapi::enum_parameter(
            op,
            ParameterIn::Query,
            "type",
            "Only operations of this type",
            OperationType::ALL.into_iter().map(OperationType::as_str),
        );
        openapi::enum_parameter(
            op,
            ParameterIn::Query,
            "status",
            "Only operations with this outcome (history holds decided operations only)",
            OperationStatus::DECIDED
                .into_iter()
                .map(OperationStatus::as_str),
        );
        for (name, description) in [
            (
                "from",
                "Only operations applied at or after this RFC 3339 time",
            ),
            ("to", "Only operations applied before this RFC 3339 time"),
        ] {
            openapi::time_parameter(op, name, description);
        }
        openapi::problem(
            op,
            StatusCode::UNPROCESSABLE_ENTITY,
            "An unknown query parameter (`INVALID_QUERY`), or a bad `limit` (`INVALID_LIMIT`), \
             `cursor` (`INVALID_CURSOR`), `type` (`INVALID_OPERATION_TYPE`), `status` \
             (`INVALID_STATUS`), `from` or `to` (`INVALID_TIME`), or `from` after `to` \
             (`INVALID_RANGE`)",
        );
    }

    fn update_definitions(_: &mut std::collections::BTreeMap<String, DefaultSchemaRaw>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_visible_ascii() {
        assert!(is_idempotency_key("order-42"));
        assert!(!is_idempotency_key("with space"));
        assert!(!is_idempotency_key("with\ttab"));
        assert!(!is_idempotency_key(""));
        assert!(!is_idempotency_key(&"k".repeat(256)));
    }

    #[test]
    fn history_parameters_are_known_and_single() {
        let params = history_params("limit=5&cursor=9").expect("valid");
        assert_eq!(params.limit.as_deref(), Some("5"));
        assert_eq!(params.cursor.as_deref(), Some("9"));
        let unknown = history_params("sort=up").expect_err("unknown");
        assert_eq!(unknown.field.as_deref(), Some("sort"));
        assert!(
            !unknown.detail.contains("deserialize"),
            "{}",
            unknown.detail
        );
        assert!(history_params("limit=1&limit=2").is_err());
        let filtered = history_params("type=DEPOSIT&to=x").expect("valid");
        assert_eq!(filtered.operation_type.as_deref(), Some("DEPOSIT"));
        assert_eq!(filtered.to.as_deref(), Some("x"));
        assert_eq!(filtered.from, None);
    }
}
