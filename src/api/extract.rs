//! What handlers take from a request: the JSON body, path ids, the idempotency header and
//! history paging. Each turns every way its part can be wrong into a problem, and documents
//! that part, and those problems, in the OpenAPI document.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest};
use paperclip::actix::OperationModifier;
use paperclip::v2::models::{
    DataType, DataTypeFormat, DefaultOperationRaw, DefaultSchemaRaw, Either, Parameter, ParameterIn,
};
use paperclip::v2::schema::Apiv2Schema;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::{body, openapi, reply, Problem};
use crate::ledger::types::{OperationId, WalletId};

/// A JSON request body of type `T`, checked for media type and size before it is parsed.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = Problem;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Problem>>>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let media_type = body::media_type(request);
        let bytes = web::Bytes::from_request(request, payload);
        Box::pin(async move {
            media_type?;
            let bytes = bytes.await.map_err(|error| unreadable(&error))?;
            body::json(&bytes).map(JsonBody)
        })
    }
}

fn unreadable(error: &actix_web::Error) -> Problem {
    if error.as_response_error().status_code() == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            "Payload too large",
            "the request body is larger than the server accepts (key `http.body_bytes_max`)",
        )
    } else {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "UNREADABLE_BODY",
            "Unreadable request body",
            error.to_string(),
        )
    }
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
        let ids = path_uuid(request, "walletId").and_then(|wallet| {
            path_uuid(request, "operationId")
                .map(|operation| OperationPath(WalletId(wallet), OperationId(operation)))
        });
        std::future::ready(ids)
    }
}

impl Apiv2Schema for OperationPath {}

impl OperationModifier for OperationPath {
    fn update_parameter(op: &mut DefaultOperationRaw) {
        wallet_parameter(op);
        openapi::parameter(
            op,
            ParameterIn::Path,
            "operationId",
            "The operation's id, as answered when it was accepted",
            true,
            DataType::String,
            Some(DataTypeFormat::Uuid),
        );
        openapi::problem(
            op,
            StatusCode::NOT_FOUND,
            "No operation with this id involves this wallet (`OPERATION_NOT_FOUND`)",
        );
    }

    fn update_definitions(_: &mut std::collections::BTreeMap<String, DefaultSchemaRaw>) {}
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

fn idempotency_key(request: &HttpRequest) -> Result<Option<String>, Problem> {
    let Some(value) = request.headers().get("Idempotency-Key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(|key| key.trim().trim_matches('"'))
        .filter(|key| !key.is_empty() && key.len() <= 255);
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

impl Apiv2Schema for IdempotencyKey {}

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
        openapi::problem(
            op,
            StatusCode::BAD_REQUEST,
            "Idempotency-Key is empty, too long or not ASCII (`INVALID_IDEMPOTENCY_KEY`)",
        );
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

/// `limit` and `cursor` of a history page, as text so each bad value gets its own problem.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

impl FromRequest for HistoryParams {
    type Error = Problem;
    type Future = std::future::Ready<Result<Self, Problem>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let params = web::Query::<HistoryParams>::from_query(request.query_string())
            .map(web::Query::into_inner)
            .map_err(|error| Problem::invalid("INVALID_QUERY", "query", error.to_string()));
        std::future::ready(params)
    }
}

impl Apiv2Schema for HistoryParams {}

impl OperationModifier for HistoryParams {
    fn update_parameter(op: &mut DefaultOperationRaw) {
        openapi::parameter(
            op,
            ParameterIn::Query,
            "limit",
            "Operations per page, 1 to `http.history_limit_max` (default 50)",
            false,
            DataType::Integer,
            Some(DataTypeFormat::Int32),
        );
        openapi::parameter(
            op,
            ParameterIn::Query,
            "cursor",
            "`nextCursor` of the previous page; absent for the newest page",
            false,
            DataType::String,
            None,
        );
        openapi::problem(
            op,
            StatusCode::UNPROCESSABLE_ENTITY,
            "An unknown query parameter (`INVALID_QUERY`), or a bad `limit` (`INVALID_LIMIT`) \
             or `cursor` (`INVALID_CURSOR`)",
        );
    }

    fn update_definitions(_: &mut std::collections::BTreeMap<String, DefaultSchemaRaw>) {}
}
