//! Creating wallets and reading balances.

use actix_web::http::StatusCode;
use actix_web::web;
use chrono::{DateTime, Utc};
use paperclip::actix::{api_v2_operation, Apiv2Schema};
use serde::{Deserialize, Serialize};

use super::caller::Caller;
use super::extract::{JsonBody, WalletPath};
use super::reply::{Found, WalletReply};
use super::schema::{CurrencyText, UuidText};
use super::{body, lookup, AppState, Problem};
use crate::cache::CachedWallet;
use crate::clock;
use crate::ledger::database;
use crate::ledger::money::Currency;
use crate::ledger::store::{self, Created};
use crate::ledger::types::WalletId;

/// A new wallet. The body and each field may be left out.
#[derive(Debug, Default, Deserialize, Apiv2Schema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateWallet {
    /// Choose the id to make creation safe to retry; a time-ordered UUID is generated
    /// otherwise.
    wallet_id: Option<UuidText>,
    /// USD when left out.
    currency: Option<CurrencyText>,
}

/// A wallet and its balance.
#[derive(Debug, Serialize, Apiv2Schema)]
#[serde(rename_all = "camelCase")]
pub struct WalletBody {
    wallet_id: WalletId,
    currency: Currency,
    /// Exact decimal, with the currency's decimals.
    #[openapi(example = "\"125.50\"")]
    balance: String,
    /// Journal entries applied to this wallet so far; 0 for a new wallet.
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<CachedWallet> for WalletBody {
    fn from(wallet: CachedWallet) -> Self {
        WalletBody {
            wallet_id: wallet.wallet_id,
            currency: wallet.currency,
            balance: wallet.balance,
            version: wallet.version,
            created_at: wallet.created_at,
            updated_at: wallet.updated_at,
        }
    }
}

/// Create a wallet
///
/// Creates a wallet with a zero balance. Re-creating an existing id with the same currency
/// answers the wallet (200); with another currency, a 409 problem.
#[api_v2_operation(tags(wallets), operation_id = "createWallet")]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    input: JsonBody<Option<CreateWallet>>,
) -> Result<WalletReply<WalletBody>, Problem> {
    let tenant = caller.0.tenant;
    let input = input.0.unwrap_or_default();
    let id = match input.wallet_id {
        Some(UuidText(text)) => WalletId(body::uuid("walletId", &text)?),
        None => clock::new_wallet_id(),
    };
    let currency = match input.currency {
        Some(CurrencyText(code)) => {
            Currency::parse(&code).map_err(|error| body::money_problem(&error))?
        }
        None => Currency::USD,
    };
    let client = database::client(&state.pool).await?;
    let created = store::create_wallet(&client, id, &tenant, currency, clock::now()).await?;
    let (created, wallet) = match created {
        Created::New(wallet) => (true, wallet),
        // Another tenant's wallet: the id is taken, and that is all this caller learns.
        Created::Existing(wallet) if wallet.tenant != tenant => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "WALLET_EXISTS",
                "Wallet exists",
                format!("wallet id {id} is taken; choose another"),
            ))
        }
        Created::Existing(wallet) if wallet.currency == currency => (false, wallet),
        Created::Existing(wallet) => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "WALLET_EXISTS",
                "Wallet exists",
                format!("wallet {id} exists with currency {}", wallet.currency),
            ))
        }
    };
    let cached = CachedWallet::from(&wallet);
    if let Err(error) = state
        .cache
        .store_balances(std::slice::from_ref(&cached))
        .await
    {
        tracing::warn!(%error, "cannot cache the new wallet");
    }
    Ok(WalletReply {
        created,
        location: format!("/api/v1/wallets/{id}"),
        body: WalletBody::from(cached),
    })
}

/// Read a wallet's balance
///
/// Served from the cache, or PostgreSQL when the cache misses. The balance includes every
/// operation applied so far; accepted operations still PENDING are not in it yet.
#[api_v2_operation(tags(wallets), operation_id = "getWallet")]
pub async fn balance(
    state: web::Data<AppState>,
    caller: Caller,
    path: WalletPath,
) -> Result<Found<WalletBody>, Problem> {
    let WalletPath(id) = path;
    let wallet = lookup::visible(&state, id, &caller.0.tenant)
        .await?
        .ok_or_else(|| Problem::wallet_not_found(id))?;
    Ok(Found(WalletBody::from(wallet)))
}
