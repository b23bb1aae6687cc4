//! Creating wallets and reading balances.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::{body, AppState, Problem};
use crate::cache::CachedWallet;
use crate::clock;
use crate::ledger::database;
use crate::ledger::money::Currency;
use crate::ledger::store::{self, Created};
use crate::ledger::types::WalletId;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateWallet {
    wallet_id: Option<String>,
    currency: Option<String>,
}

/// `POST /api/v1/wallets`: 201 with a new wallet, 200 when the id exists with the same
/// currency, 409 when it exists with another.
pub async fn create(
    state: web::Data<AppState>,
    request: HttpRequest,
    bytes: web::Bytes,
) -> Result<HttpResponse, Problem> {
    let input: Option<CreateWallet> = body::json(&request, &bytes)?;
    let input = input.unwrap_or_default();
    let id = match input.wallet_id.as_deref() {
        Some(text) => WalletId(body::uuid("walletId", text)?),
        None => clock::new_wallet_id(),
    };
    let currency = match input.currency.as_deref() {
        Some(code) => Currency::parse(code).map_err(|error| body::money_problem(&error))?,
        None => Currency::USD,
    };
    let client = database::client(&state.pool).await?;
    let (status, wallet) = match store::create_wallet(&client, id, currency, clock::now()).await? {
        Created::New(wallet) => (StatusCode::CREATED, wallet),
        Created::Existing(wallet) if wallet.currency == currency => (StatusCode::OK, wallet),
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
    Ok(HttpResponse::build(status)
        .insert_header(("Location", format!("/api/v1/wallets/{id}")))
        .json(cached))
}

/// `GET /api/v1/wallets/{walletId}`: the balance from Redis, or PostgreSQL on a miss.
pub async fn balance(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let id = WalletId(body::uuid("walletId", &path)?);
    let wallet = find(&state, id)
        .await?
        .ok_or_else(|| Problem::wallet_not_found(id))?;
    Ok(HttpResponse::Ok().json(wallet))
}

/// The wallet's currency, from this process's directory when it has seen the wallet before;
/// None when the wallet does not exist.
pub async fn currency(state: &AppState, id: WalletId) -> Result<Option<Currency>, Problem> {
    if let Some(currency) = state.directory.currency(id) {
        return Ok(Some(currency));
    }
    let wallet = find(state, id).await?;
    if let Some(wallet) = &wallet {
        state.directory.remember(id, wallet.currency);
    }
    Ok(wallet.map(|wallet| wallet.currency))
}

/// Looks a wallet up in the cache, falling back to PostgreSQL (and refilling the cache
/// through its version guard) on a miss or when Redis is unavailable.
pub async fn find(state: &AppState, id: WalletId) -> Result<Option<CachedWallet>, Problem> {
    match state.cache.balance(id).await {
        Ok(Some(wallet)) => return Ok(Some(wallet)),
        Ok(None) => {}
        Err(error) => tracing::warn!(%error, "cache read failed; reading PostgreSQL"),
    }
    let client = database::client(&state.pool).await?;
    let Some(wallet) = store::wallet(&client, id).await? else {
        return Ok(None);
    };
    let cached = CachedWallet::from(&wallet);
    if let Err(error) = state
        .cache
        .store_balances(std::slice::from_ref(&cached))
        .await
    {
        tracing::warn!(%error, "cannot refill the cache");
    }
    Ok(Some(cached))
}
