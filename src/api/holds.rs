//! A wallet's holds: one by id, and the wallet's holds page by page, in one state or all.

use actix_web::http::StatusCode;
use actix_web::web;
use chrono::{DateTime, Utc};
use paperclip::actix::{api_v2_operation, Apiv2Schema};
use serde::Serialize;

use super::caller::Caller;
use super::extract::{HoldPath, HoldsParams, WalletPath};
use super::history_query::page;
use super::reply::Found;
use super::{lookup, AppState, Problem};
use crate::ledger::database;
use crate::ledger::money::Currency;
use crate::ledger::store::{self, HoldRecord};
use crate::ledger::types::{HoldState, OperationId, ScopedId, WalletId};

/// Funds a HOLD reserved, and what became of them.
#[derive(Debug, Serialize, Apiv2Schema)]
#[serde(rename_all = "camelCase")]
pub struct HoldBody {
    /// The operationId of the HOLD that placed it.
    hold_id: OperationId,
    wallet_id: WalletId,
    /// What the HOLD reserved.
    #[openapi(example = "\"20.00\"")]
    amount: String,
    /// What captures took from it so far.
    #[openapi(example = "\"5.00\"")]
    captured: String,
    /// What it still reserves: `amount` − `captured` while OPEN, "0" once closed.
    #[openapi(example = "\"15.00\"")]
    remaining: String,
    state: HoldState,
    /// When what remains is released, unless captured or voided before.
    expires_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
}

impl HoldBody {
    fn new(record: &HoldRecord, currency: Currency) -> Self {
        let hold = &record.hold;
        HoldBody {
            hold_id: record.id.id,
            wallet_id: hold.wallet_id,
            amount: currency.format(&hold.amount),
            captured: currency.format(&hold.captured),
            remaining: currency.format(&hold.remaining()),
            state: hold.state,
            expires_at: hold.expires_at,
            created_at: record.created_at,
        }
    }
}

/// A page of a wallet's holds, newest first.
#[derive(Debug, Serialize, Apiv2Schema)]
#[serde(rename_all = "camelCase")]
pub struct HoldPage {
    items: Vec<HoldBody>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    next_cursor: Option<String>,
}

/// Read a hold
///
/// A hold as the worker last applied it: PENDING captures and voids are not in it yet. Another
/// wallet's hold, or another tenant's, is answered as a missing one.
#[api_v2_operation(tags(holds), operation_id = "getHold")]
pub async fn hold(
    state: web::Data<AppState>,
    caller: Caller,
    path: HoldPath,
) -> Result<Found<HoldBody>, Problem> {
    let HoldPath(wallet_id, hold_id) = path;
    let scoped = caller.wallet(wallet_id);
    let wallet = lookup::find(&state, &scoped)
        .await?
        .ok_or_else(|| Problem::wallet_not_found(wallet_id))?;
    let client = database::client(&state.pool).await?;
    let id = ScopedId {
        tenant: scoped.tenant,
        id: hold_id,
    };
    let record = store::hold(&client, &id)
        .await?
        .filter(|record| record.hold.wallet_id == wallet_id)
        .ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                "HOLD_NOT_FOUND",
                "Hold not found",
                format!("wallet {wallet_id} has no hold {hold_id}"),
            )
        })?;
    Ok(Found(HoldBody::new(&record, wallet.currency)))
}

/// List a wallet's holds
///
/// Newest first, in one `state` when given. The cursor is the wallet version of the last HOLD
/// seen, so holds placed meanwhile never shift a page; keep `state` the same while following
/// `nextCursor`.
#[api_v2_operation(tags(holds), operation_id = "listHolds")]
pub async fn holds(
    state: web::Data<AppState>,
    caller: Caller,
    path: WalletPath,
    query: HoldsParams,
) -> Result<Found<HoldPage>, Problem> {
    let WalletPath(wallet_id) = path;
    let (limit, before_version) = page(
        query.limit.as_deref(),
        query.cursor.as_deref(),
        state.history_limit_max,
    )?;
    let hold_state = query
        .state
        .as_deref()
        .map(|text| {
            HoldState::parse(text).ok_or_else(|| {
                let names: Vec<&str> = HoldState::ALL.into_iter().map(HoldState::as_str).collect();
                let detail = format!("state must be one of {}", names.join(", "));
                Problem::invalid("INVALID_STATE", "state", detail)
            })
        })
        .transpose()?;
    let scoped = caller.wallet(wallet_id);
    let wallet = lookup::find(&state, &scoped)
        .await?
        .ok_or_else(|| Problem::wallet_not_found(wallet_id))?;
    let client = database::client(&state.pool).await?;
    let records = store::holds(
        &client,
        &scoped,
        hold_state,
        before_version,
        i64::from(limit),
    )
    .await?;
    let next_cursor = (records.len() == limit as usize)
        .then(|| records.last().map(|record| record.version.to_string()))
        .flatten();
    let items = records
        .iter()
        .map(|record| HoldBody::new(record, wallet.currency))
        .collect();
    Ok(Found(HoldPage { items, next_cursor }))
}
