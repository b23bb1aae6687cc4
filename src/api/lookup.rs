//! Finding a wallet for a request: the cache, then this process's directory of wallets it
//! has seen, then PostgreSQL, refilling the cache from what PostgreSQL answered. Handlers
//! call it; none of them reads wallets another way.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::stream::{self, StreamExt};

use super::directory::WalletFacts;
use super::{AppState, Problem};
use crate::cache::CachedWallet;
use crate::ledger::database;
use crate::ledger::money::Currency;
use crate::ledger::store;
use crate::ledger::types::WalletId;

/// The wallet, when it exists and belongs to `tenant`. Another tenant's wallet is answered
/// exactly as a missing one, and costs what a missing one costs, or timing would tell them
/// apart: a cache lookup and a PostgreSQL read, without a cache refill.
pub async fn visible(
    state: &AppState,
    id: WalletId,
    tenant: &str,
) -> Result<Option<CachedWallet>, Problem> {
    if let Some(wallet) = cached(state, id, Some(tenant)).await {
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

/// Lookups one request runs at once. Each may take a PostgreSQL connection, and a request
/// that took the whole pool (16 by default) would stall every other tenant's requests.
pub const READS_PER_REQUEST: usize = 4;

/// The currencies of the wallets a request names, each distinct wallet looked up once, a
/// wallet that does not exist (or is another tenant's) included.
pub struct Currencies(HashMap<String, HashMap<WalletId, Result<Option<Currency>, Problem>>>);

impl Currencies {
    /// Looks up each distinct (tenant, wallet) of `named` as `currency` does, at most
    /// `READS_PER_REQUEST` at a time.
    pub async fn of(state: &AppState, named: impl IntoIterator<Item = (String, WalletId)>) -> Self {
        let distinct: HashSet<(String, WalletId)> = named.into_iter().collect();
        let found: Vec<_> = stream::iter(distinct)
            .map(|(tenant, id)| async move {
                let found = currency(state, id, &tenant).await;
                (tenant, id, found)
            })
            .buffer_unordered(READS_PER_REQUEST)
            .collect()
            .await;
        let mut currencies: HashMap<String, HashMap<_, _>> = HashMap::new();
        for (tenant, id, found) in found {
            currencies.entry(tenant).or_default().insert(id, found);
        }
        Currencies(currencies)
    }

    /// What `currency` answered for the wallet; one `of` was not asked about is a bug of the
    /// caller, answered as the internal error it is.
    pub fn get(&self, tenant: &str, id: WalletId) -> Result<Option<Currency>, Problem> {
        self.0
            .get(tenant)
            .and_then(|wallets| wallets.get(&id))
            .cloned()
            .unwrap_or_else(|| {
                tracing::error!(%id, "a wallet was validated without being looked up");
                Err(Problem::internal())
            })
    }
}

/// Looks a wallet up in the cache, falling back to PostgreSQL (and refilling the cache
/// through its version guard) on a miss or when Redis is unavailable.
pub async fn find(state: &AppState, id: WalletId) -> Result<Option<CachedWallet>, Problem> {
    if let Some(wallet) = cached(state, id, None).await {
        return Ok(Some(wallet));
    }
    let Some(wallet) = stored(state, id).await? else {
        return Ok(None);
    };
    refill(state, &wallet).await;
    Ok(Some(wallet))
}

/// The cached wallet, when `visible_to` (if any) owns it; an unavailable cache counts as a
/// miss. Another tenant's wallet is counted as a miss too: the public hit counter would
/// otherwise tell a prober which ids are someone's wallets.
async fn cached(state: &AppState, id: WalletId, visible_to: Option<&str>) -> Option<CachedWallet> {
    let lookup = state.cache.balance(id).await.map(|found| {
        found.filter(|wallet| visible_to.is_none_or(|tenant| wallet.tenant == tenant))
    });
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
