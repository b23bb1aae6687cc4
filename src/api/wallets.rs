//! Creating wallets and reading balances.

use actix_web::http::StatusCode;
use actix_web::web;
use bigdecimal::{BigDecimal, Zero};
use chrono::{DateTime, SecondsFormat, Utc};
use paperclip::actix::{api_v2_operation, Apiv2Schema};
use serde::{Deserialize, Serialize};

use super::caller::Caller;
use super::extract::{BalanceParams, CreationKey, JsonBody, WalletPath};
use super::reply::{Found, WalletReply};
use super::schema::{CurrencyText, UuidText};
use super::{body, lookup, AppState, Problem};
use crate::cache::CachedWallet;
use crate::clock;
use crate::ledger::database;
use crate::ledger::money::{self, Currency, MoneyError};
use crate::ledger::store::{self, Created, NewWallet, Wallet};
use crate::ledger::types::{ScopedWalletId, WalletId};

/// A new wallet. The body and each field may be left out.
#[derive(Debug, Default, Deserialize, Apiv2Schema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateWallet {
    /// Choose the id (or send an `Idempotency-Key`) to make creation safe to retry; a
    /// time-ordered UUID is generated otherwise. The id is unique within the caller's tenant:
    /// another tenant's wallet with the same id is another wallet.
    wallet_id: Option<UuidText>,
    /// USD when left out.
    currency: Option<CurrencyText>,
    /// How far below zero the balance may go: a non-negative decimal string with no more
    /// decimals than the currency allows; "0" (no overdraft) when left out. Fixed for the
    /// wallet's life.
    #[openapi(example = "\"100.00\"")]
    overdraft_limit: Option<String>,
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
    /// How far below zero the balance may go ("0": not at all).
    #[openapi(example = "\"100.00\"")]
    overdraft_limit: String,
    /// What open holds reserve: the sum of what remains of each.
    #[openapi(example = "\"20.00\"")]
    held: String,
    /// What a WITHDRAW, TRANSFER or HOLD may take now: `balance` − `held` + `overdraftLimit`.
    #[openapi(example = "\"205.50\"")]
    available: String,
    /// Journal entries applied to this wallet so far; 0 for a new wallet.
    version: i64,
    created_at: DateTime<Utc>,
    /// When the balance shown last changed (for `at`, the entry that set it).
    updated_at: DateTime<Utc>,
    /// The instant asked for with `at`: balance, held, available and version are as of then.
    #[serde(skip_serializing_if = "Option::is_none")]
    as_of: Option<DateTime<Utc>>,
}

impl From<CachedWallet> for WalletBody {
    fn from(wallet: CachedWallet) -> Self {
        // An entry cached before overdraft limits existed is a wallet whose limit is 0.
        let overdraft_limit = wallet
            .overdraft_limit
            .unwrap_or_else(|| wallet.currency.format(&BigDecimal::zero()));
        let available = wallet.available.unwrap_or_else(|| wallet.balance.clone());
        // An entry cached before holds existed is a wallet that held nothing.
        let held = wallet
            .held
            .unwrap_or_else(|| wallet.currency.format(&BigDecimal::zero()));
        WalletBody {
            wallet_id: wallet.wallet_id,
            currency: wallet.currency,
            balance: wallet.balance,
            overdraft_limit,
            held,
            available,
            version: wallet.version,
            created_at: wallet.created_at,
            updated_at: wallet.updated_at,
            as_of: None,
        }
    }
}

/// Create a wallet
///
/// Creates a wallet with a zero balance. Wallet ids belong to the caller's tenant: another
/// tenant's wallet with the same id is another wallet, and neither tenant can tell it exists.
/// Re-creating an existing id of the caller's tenant with the same currency and overdraft
/// limit answers the wallet (200); with another currency or limit, a 409 problem. An
/// `Idempotency-Key` without a `walletId` names the wallet as a `walletId` does.
#[api_v2_operation(tags(wallets), operation_id = "createWallet")]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    key: CreationKey,
    input: JsonBody<Option<CreateWallet>>,
) -> Result<WalletReply<WalletBody>, Problem> {
    let new = new_wallet(caller.0.tenant, input.0.unwrap_or_default(), key.0)?;
    let client = database::client(&state.pool).await?;
    let created = store::create_wallet(&client, &new, clock::now()).await?;
    let (created, wallet) = settled(created, &new)?;
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
        location: format!("/api/v1/wallets/{}", new.id),
        body: WalletBody::from(cached),
    })
}

fn new_wallet(
    tenant: String,
    input: CreateWallet,
    key: Option<String>,
) -> Result<NewWallet, Problem> {
    let id = match (input.wallet_id, key) {
        (Some(UuidText(text)), _) => WalletId(body::uuid("walletId", &text)?),
        (None, Some(key)) => clock::keyed_wallet_id(&tenant, &key),
        (None, None) => clock::new_wallet_id(),
    };
    let currency = match input.currency {
        Some(CurrencyText(code)) => {
            Currency::parse(&code).map_err(|error| body::money_problem(&error))?
        }
        None => Currency::USD,
    };
    let overdraft_limit = match input.overdraft_limit {
        Some(text) => money::overdraft_limit(&text, currency).map_err(|error| {
            let detail = match error {
                MoneyError::NotPositive => "overdraftLimit must be zero or more".to_owned(),
                other => other.about("overdraftLimit"),
            };
            Problem::invalid("INVALID_OVERDRAFT_LIMIT", "overdraftLimit", detail)
        })?,
        None => BigDecimal::zero(),
    };
    Ok(NewWallet {
        id,
        tenant,
        currency,
        overdraft_limit,
    })
}

/// Whether the wallet was made now, and the wallet: one of the tenant that already had the id
/// answers as made before only when it is what was asked for.
fn settled(created: Created, new: &NewWallet) -> Result<(bool, Wallet), Problem> {
    let conflict = |detail: String| {
        Err(Problem::new(
            StatusCode::CONFLICT,
            "WALLET_EXISTS",
            "Wallet exists",
            detail,
        ))
    };
    let id = new.id;
    match created {
        Created::New(wallet) => Ok((true, wallet)),
        Created::Existing(wallet) if wallet.currency != new.currency => conflict(format!(
            "wallet {id} exists with currency {}",
            wallet.currency
        )),
        Created::Existing(wallet) if wallet.overdraft_limit != new.overdraft_limit => {
            conflict(format!(
                "wallet {id} exists with overdraftLimit {}",
                wallet.currency.format(&wallet.overdraft_limit)
            ))
        }
        Created::Existing(wallet) => Ok((false, wallet)),
    }
}

/// Read a wallet's balance
///
/// Served from the cache, or PostgreSQL when the cache misses. The balance includes every
/// operation applied so far; accepted operations still PENDING are not in it yet. With `at`,
/// the balance as of that instant, from the journal: the last entry applied at or before it
/// (version 0 and a zero balance between the wallet's creation and its first entry); an `at`
/// before the wallet was created answers 404, one in the future 422. An answer for `at` never
/// changes later: the read waits for a batch being applied to the wallet at that moment.
#[api_v2_operation(tags(wallets), operation_id = "getWallet")]
pub async fn balance(
    state: web::Data<AppState>,
    caller: Caller,
    path: WalletPath,
    query: BalanceParams,
) -> Result<Found<WalletBody>, Problem> {
    let WalletPath(id) = path;
    let wallet = caller.wallet(id);
    if let Some(at) = body::time("at", query.at.as_deref())? {
        return as_of(&state, &wallet, at).await.map(Found);
    }
    let wallet = lookup::find(&state, &wallet)
        .await?
        .ok_or_else(|| Problem::wallet_not_found(id))?;
    Ok(Found(WalletBody::from(wallet)))
}

/// The wallet as its journal had it at `at`.
async fn as_of(
    state: &AppState,
    scoped: &ScopedWalletId,
    at: DateTime<Utc>,
) -> Result<WalletBody, Problem> {
    let id = scoped.id;
    if at > clock::now() {
        return Err(Problem::invalid(
            "INVALID_TIME",
            "at",
            "at must not be in the future: later entries may still be applied before it",
        ));
    }
    let mut client = database::client(&state.pool).await?;
    let (wallet, entry) = store::wallet_at(&mut client, scoped, at, state.lease_lapse)
        .await?
        .ok_or_else(|| Problem::wallet_not_found(id))?;
    if at < wallet.created_at {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "WALLET_NOT_FOUND",
            "Wallet not found",
            format!(
                "wallet {id} did not exist yet at {}",
                at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
            ),
        ));
    }
    let then = match entry {
        Some(entry) => Wallet {
            balance: entry.balance_after,
            held: entry.held_after,
            version: entry.version,
            updated_at: entry.recorded_at,
            ..wallet
        },
        None => Wallet {
            balance: BigDecimal::zero(),
            held: BigDecimal::zero(),
            version: 0,
            updated_at: wallet.created_at,
            ..wallet
        },
    };
    Ok(WalletBody {
        as_of: Some(at),
        ..WalletBody::from(CachedWallet::from(&then))
    })
}
