//! Finding a wallet of the caller's tenant for a request: the cache, then this process's
//! directory of wallets it has seen, then PostgreSQL, refilling the cache from what
//! PostgreSQL answered. Handlers call it; none of them reads wallets another way.

use std::collections::{HashMap, HashSet};

use futures::stream::{self, StreamExt};

use super::directory::WalletFacts;
use super::{AppState, Problem};
use crate::cache::CachedWallet;
use crate::ledger::database;
use crate::ledger::money::Currency;
use crate::ledger::store;
use crate::ledger::types::ScopedWalletId;

/// The wallet, when its tenant has one with its id: the cache, then PostgreSQL, refilling the
/// cache from what PostgreSQL answered. Another tenant's wallet with the same id is another
/// wallet, under another cache entry and another row.
pub async fn find(state: &AppState, id: &ScopedWalletId) -> Result<Option<CachedWallet>, Problem> {
    if let Some(wallet) = cached(state, id).await {
        return Ok(Some(wallet));
    }
    let Some(wallet) = stored(state, id).await? else {
        return Ok(None);
    };
    refill(state, &wallet).await;
    Ok(Some(wallet))
}

/// The wallet's currency when its tenant has it, from this process's directory when it has
/// seen the wallet before.
pub async fn currency(state: &AppState, id: &ScopedWalletId) -> Result<Option<Currency>, Problem> {
    if let Some(facts) = state.directory.facts(id) {
        return Ok(Some(facts.currency));
    }
    let Some(wallet) = find(state, id).await? else {
        return Ok(None);
    };
    let facts = WalletFacts {
        currency: wallet.currency,
    };
    state.directory.remember(id.clone(), facts);
    Ok(Some(wallet.currency))
}

/// Lookups one request runs at once. Each may take a PostgreSQL connection, and a request
/// that took the whole pool (16 by default) would stall every other tenant's requests.
pub const READS_PER_REQUEST: usize = 4;

/// The currencies of the wallets a request names, each distinct wallet of its tenant looked
/// up once, a wallet that does not exist included.
pub struct Currencies(HashMap<ScopedWalletId, Result<Option<Currency>, Problem>>);

impl Currencies {
    /// Looks up each distinct wallet of `named` as `currency` does, at most
    /// `READS_PER_REQUEST` at a time.
    pub async fn of(state: &AppState, named: impl IntoIterator<Item = ScopedWalletId>) -> Self {
        let distinct: HashSet<ScopedWalletId> = named.into_iter().collect();
        let found = stream::iter(distinct)
            .map(|id| async move {
                let found = currency(state, &id).await;
                (id, found)
            })
            .buffer_unordered(READS_PER_REQUEST)
            .collect()
            .await;
        Currencies(found)
    }

    /// What `currency` answered for the wallet; one `of` was not asked about is a bug of the
    /// caller, answered as the internal error it is.
    pub fn get(&self, id: &ScopedWalletId) -> Result<Option<Currency>, Problem> {
        self.0.get(id).cloned().unwrap_or_else(|| {
            tracing::error!(%id, "a wallet was validated without being looked up");
            Err(Problem::internal())
        })
    }
}

/// The cached wallet; an unavailable cache counts as a miss.
async fn cached(state: &AppState, id: &ScopedWalletId) -> Option<CachedWallet> {
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

async fn stored(state: &AppState, id: &ScopedWalletId) -> Result<Option<CachedWallet>, Problem> {
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
