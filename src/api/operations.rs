//! Submitting operations and reading their status and history.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::submit::{self, Accepted, IdSource, Submission};
use super::{body, wallets, AppState, Problem};
use crate::cache::MarkerState;
use crate::ledger::database;
use crate::ledger::money::{format_decimal, Currency};
use crate::ledger::store::{self, HistoryItem, OperationRecord};
use crate::ledger::types::{OperationId, OperationKind, OperationStatus, OperationType, WalletId};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SubmitOperation {
    wallet_id: Option<String>,
    operation_type: String,
    amount: Box<RawValue>,
    to_wallet_id: Option<String>,
    operation_id: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct AcceptedBody {
    operation_id: OperationId,
    wallet_id: WalletId,
    status: OperationStatus,
}

/// `POST /api/v1/wallet`: the wallet id is in the body.
pub async fn submit(
    state: web::Data<AppState>,
    request: HttpRequest,
    bytes: web::Bytes,
) -> Result<HttpResponse, Problem> {
    respond(&state, &request, &bytes, None).await
}

/// `POST /api/v1/wallets/{walletId}/operations`: the wallet id is in the path.
pub async fn submit_for_wallet(
    state: web::Data<AppState>,
    request: HttpRequest,
    path: web::Path<String>,
    bytes: web::Bytes,
) -> Result<HttpResponse, Problem> {
    let wallet_id = WalletId(body::uuid("walletId", &path)?);
    respond(&state, &request, &bytes, Some(wallet_id)).await
}

async fn respond(
    state: &AppState,
    request: &HttpRequest,
    bytes: &[u8],
    path_wallet: Option<WalletId>,
) -> Result<HttpResponse, Problem> {
    let input: Option<SubmitOperation> = body::json(request, bytes)?;
    let input = input.ok_or_else(|| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "MALFORMED_JSON",
            "Malformed request body",
            "a JSON object is required",
        )
    })?;
    let submission = parse(request, input, path_wallet)?;
    let Accepted {
        id,
        wallet_id,
        status,
    } = submit::accept(state, submission).await?;
    Ok(HttpResponse::Accepted()
        .insert_header((
            "Location",
            format!("/api/v1/wallets/{wallet_id}/operations/{id}"),
        ))
        .json(AcceptedBody {
            operation_id: id,
            wallet_id,
            status,
        }))
}

fn parse(
    request: &HttpRequest,
    input: SubmitOperation,
    path_wallet: Option<WalletId>,
) -> Result<Submission, Problem> {
    let body_wallet = input
        .wallet_id
        .as_deref()
        .map(|text| body::uuid("walletId", text))
        .transpose()?
        .map(WalletId);
    let wallet_id = match (path_wallet, body_wallet) {
        (Some(path), Some(body)) if path != body => {
            return Err(Problem::invalid(
                "WALLET_MISMATCH",
                "walletId",
                "walletId in the body differs from the path",
            ))
        }
        (Some(wallet), _) | (None, Some(wallet)) => wallet,
        (None, None) => {
            return Err(Problem::invalid(
                "MISSING_FIELD",
                "walletId",
                "walletId is required",
            ))
        }
    };
    let operation_type = OperationType::parse(&input.operation_type).ok_or_else(|| {
        Problem::invalid(
            "INVALID_OPERATION_TYPE",
            "operationType",
            "operationType must be DEPOSIT, WITHDRAW or TRANSFER",
        )
    })?;
    let target = input
        .to_wallet_id
        .as_deref()
        .map(|text| body::uuid("toWalletId", text))
        .transpose()?
        .map(WalletId);
    let kind = match (operation_type, target) {
        (OperationType::Deposit, None) => OperationKind::Deposit,
        (OperationType::Withdraw, None) => OperationKind::Withdraw,
        (OperationType::Transfer, Some(target)) => OperationKind::Transfer { target },
        (OperationType::Transfer, None) => {
            return Err(Problem::invalid(
                "MISSING_FIELD",
                "toWalletId",
                "a TRANSFER needs toWalletId",
            ))
        }
        (_, Some(_)) => {
            return Err(Problem::invalid(
                "UNEXPECTED_FIELD",
                "toWalletId",
                "only a TRANSFER has toWalletId",
            ))
        }
    };
    let amount = body::amount(&input.amount)?;
    let id = match (input.operation_id.as_deref(), idempotency_key(request)?) {
        (Some(text), _) => IdSource::Explicit(OperationId(body::uuid("operationId", text)?)),
        (None, Some(key)) => IdSource::IdempotencyKey(key),
        (None, None) => IdSource::Generated,
    };
    Ok(Submission {
        wallet_id,
        kind,
        amount,
        id,
    })
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

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusBody {
    operation_id: OperationId,
    wallet_id: WalletId,
    status: OperationStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    operation_type: Option<OperationType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to_wallet_id: Option<WalletId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    balance_after: Option<String>,
    accepted_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    processed_at: Option<DateTime<Utc>>,
}

impl StatusBody {
    fn from_record(record: &OperationRecord, currency: Option<Currency>) -> Self {
        let money = |value: &bigdecimal::BigDecimal| match currency {
            Some(currency) => currency.format(value),
            None => format_decimal(value),
        };
        StatusBody {
            operation_id: record.id,
            wallet_id: record.wallet_id,
            status: record.status,
            operation_type: Some(record.operation_type),
            amount: Some(money(&record.amount)),
            to_wallet_id: record.to_wallet_id,
            reason: record.reason.clone(),
            balance_after: record.balance_after.as_ref().map(money),
            accepted_at: record.accepted_at,
            processed_at: Some(record.processed_at),
        }
    }
}

/// `GET /api/v1/wallets/{walletId}/operations/{operationId}`: a final status from the cache,
/// otherwise from PostgreSQL, otherwise PENDING while the marker says the broker has it.
pub async fn status(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Problem> {
    let (wallet_text, operation_text) = path.into_inner();
    let wallet_id = WalletId(body::uuid("walletId", &wallet_text)?);
    let id = OperationId(body::uuid("operationId", &operation_text)?);
    let not_found = || {
        Problem::new(
            StatusCode::NOT_FOUND,
            "OPERATION_NOT_FOUND",
            "Operation not found",
            format!("operation {id} does not exist for wallet {wallet_id}"),
        )
    };
    let marker = match state.cache.marker(id).await {
        Ok(marker) => marker.filter(|marker| marker.wallet_id == wallet_id),
        Err(error) => {
            tracing::warn!(%error, "cache read failed; reading PostgreSQL");
            None
        }
    };
    if let Some(marker) = marker
        .as_ref()
        .filter(|marker| matches!(marker.state, MarkerState::Processed | MarkerState::Failed))
    {
        let status = if marker.state == MarkerState::Processed {
            OperationStatus::Processed
        } else {
            OperationStatus::Failed
        };
        return Ok(HttpResponse::Ok().json(StatusBody {
            operation_id: id,
            wallet_id,
            status,
            operation_type: None,
            amount: None,
            to_wallet_id: None,
            reason: marker.reason.clone(),
            balance_after: marker.balance_after.clone(),
            accepted_at: marker.accepted_at,
            processed_at: marker.processed_at,
        }));
    }
    let client = database::client(&state.pool).await?;
    if let Some(record) = store::operation(&client, id).await? {
        if record.wallet_id != wallet_id && record.to_wallet_id != Some(wallet_id) {
            return Err(not_found());
        }
        let currency = wallets::find(&state, record.wallet_id)
            .await?
            .map(|wallet| wallet.currency);
        return Ok(HttpResponse::Ok().json(StatusBody::from_record(&record, currency)));
    }
    // An `Accepting` marker is a request still being produced, or one whose process died
    // before producing: nothing the client was told is accepted, so nothing to show yet.
    let marker = marker
        .filter(|marker| marker.state == MarkerState::Pending)
        .ok_or_else(not_found)?;
    Ok(HttpResponse::Ok().json(StatusBody {
        operation_id: id,
        wallet_id,
        status: OperationStatus::Pending,
        operation_type: None,
        amount: None,
        to_wallet_id: None,
        reason: None,
        balance_after: None,
        accepted_at: marker.accepted_at,
        processed_at: None,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct HistoryEntry {
    version: i64,
    delta: String,
    /// `balanceAfter` is this wallet's balance after the entry (the receiver's, for an
    /// incoming transfer).
    #[serde(flatten)]
    operation: StatusBody,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct HistoryPage {
    items: Vec<HistoryEntry>,
    next_cursor: Option<String>,
}

const HISTORY_LIMIT_DEFAULT: u32 = 50;

/// `GET /api/v1/wallets/{walletId}/operations?limit=&cursor=`: the wallet's journal, newest
/// first. The cursor is the last version seen, so new operations never shift a page.
pub async fn history(
    state: web::Data<AppState>,
    path: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, Problem> {
    let wallet_id = WalletId(body::uuid("walletId", &path)?);
    let query = web::Query::<HistoryQuery>::from_query(request.query_string())
        .map_err(|error| Problem::invalid("INVALID_QUERY", "query", error.to_string()))?;
    let limit = match query.limit.as_deref() {
        None => HISTORY_LIMIT_DEFAULT.min(state.history_limit_max),
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|limit| (1..=state.history_limit_max).contains(limit))
            .ok_or_else(|| {
                Problem::invalid(
                    "INVALID_LIMIT",
                    "limit",
                    format!("limit must be between 1 and {}", state.history_limit_max),
                )
            })?,
    };
    let before = match query.cursor.as_deref() {
        None => i64::MAX,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|cursor| *cursor > 0)
            .ok_or_else(|| {
                Problem::invalid(
                    "INVALID_CURSOR",
                    "cursor",
                    "cursor must be a value returned as nextCursor",
                )
            })?,
    };
    let wallet = wallets::find(&state, wallet_id)
        .await?
        .ok_or_else(|| Problem::wallet_not_found(wallet_id))?;
    let client = database::client(&state.pool).await?;
    let items = store::history(&client, wallet_id, before, i64::from(limit)).await?;
    let next_cursor = (items.len() == limit as usize)
        .then(|| items.last().map(|item| item.version.to_string()))
        .flatten();
    let items = items
        .iter()
        .map(
            |HistoryItem {
                 version,
                 delta,
                 balance_after,
                 operation,
             }| {
                let mut operation = StatusBody::from_record(operation, Some(wallet.currency));
                operation.balance_after = Some(wallet.currency.format(balance_after));
                HistoryEntry {
                    version: *version,
                    delta: wallet.currency.format(delta),
                    operation,
                }
            },
        )
        .collect();
    Ok(HttpResponse::Ok().json(HistoryPage { items, next_cursor }))
}
