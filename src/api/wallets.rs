//! Creating wallets and reading balances.

use actix_web::http::StatusCode;
use actix_web::web;
use chrono::{DateTime, Utc};
use paperclip::actix::{api_v2_operation, Apiv2Schema};
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use super::caller::Caller;
use super::directory::WalletFacts;
use super::extract::{JsonBody, WalletPath};
use super::reply::{Found, WalletReply};
use super::schema::{CurrencyText, UuidText};
use super::{body, AppState, Problem};
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
    let wallet = visible(&state, id, &caller.0.tenant)
        .await?
        .ok_or_else(|| Problem::wallet_not_found(id))?;
    Ok(Found(WalletBody::from(wallet)))
}

/// The wallet, when it exists and belongs to `tenant`. Another tenant's wallet is answered
/// exactly as a missing one, and costs what a missing one costs, or timing would tell them
/// apart: a cache lookup and a PostgreSQL read, without a cache refill.
pub async fn visible(
    state: &AppState,
    id: WalletId,
    tenant: &str,
) -> Result<Option<CachedWallet>, Problem> {
    if let Some(wallet) = cached(state, id)
        .await
        .filter(|wallet| wallet.tenant == tenant)
    {
        return Ok(Some(wallet));
    }
    match stored(state, id).await? {
        Some(wallet) if wallet.tenant == tenant => {
            refill(state, &wallet).await;
            Ok(Some(wallet))
        }
        _ => Ok(None),
    }
}

/// The wallet's currency when it exists and belongs to `tenant`, from this process's
/// directory when it has seen the wallet before. Only the caller's own wallets are
/// remembered, so that another tenant's wallet keeps costing what a missing one does.
pub async fn currency(
    state: &AppState,
    id: WalletId,
    tenant: &str,
) -> Result<Option<Currency>, Problem> {
    if let Some(facts) = state
        .directory
        .facts(id)
        .filter(|facts| *facts.tenant == *tenant)
    {
        return Ok(Some(facts.currency));
    }
    let Some(wallet) = visible(state, id, tenant).await? else {
        return Ok(None);
    };
    let facts = WalletFacts {
        currency: wallet.currency,
        tenant: Arc::from(wallet.tenant),
    };
    state.directory.remember(id, facts);
    Ok(Some(wallet.currency))
}

/// Looks a wallet up in the cache, falling back to PostgreSQL (and refilling the cache
/// through its version guard) on a miss or when Redis is unavailable.
pub async fn find(state: &AppState, id: WalletId) -> Result<Option<CachedWallet>, Problem> {
    if let Some(wallet) = cached(state, id).await {
        return Ok(Some(wallet));
    }
    let Some(wallet) = stored(state, id).await? else {
        return Ok(None);
    };
    refill(state, &wallet).await;
    Ok(Some(wallet))
}

/// The cached wallet; an unavailable cache counts as a miss.
async fn cached(state: &AppState, id: WalletId) -> Option<CachedWallet> {
    let lookup = state.cache.balance(id).await;
    let result = match &lookup {
        Ok(Some(_)) => "hit",
        Ok(None) => "miss",
        Err(_) => "error",
    };
    metrics::counter!("wallet_cache_lookups_total", "result" => result).increment(1);
    lookup.unwrap_or_else(|error| {
        tracing::warn!(%error, "cache read failed; reading PostgreSQL");
        None
    })
}

async fn stored(state: &AppState, id: WalletId) -> Result<Option<CachedWallet>, Problem> {
    let client = database::client(&state.pool).await?;
    Ok(store::wallet(&client, id)
        .await?
        .as_ref()
        .map(CachedWallet::from))
}

async fn refill(state: &AppState, wallet: &CachedWallet) {
    if let Err(error) = state
        .cache
        .store_balances(std::slice::from_ref(wallet))
        .await
    {
        tracing::warn!(%error, "cannot refill the cache");
    }
}
