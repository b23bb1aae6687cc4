//! Balance entries `wallet:{tenant}:{id}`, written only through a version guard so an older
//! balance can never replace a newer one, whoever writes last. A dropped entry keeps its
//! version (a hash with no `wallet` field) so the guard still holds for it.

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Cache, CacheError, WRITE_CHUNK};
use crate::ledger::money::Currency;
use crate::ledger::store::Wallet;
use crate::ledger::types::{ScopedWalletId, WalletId};

/// A wallet as cached: what the balance endpoint answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedWallet {
    pub wallet_id: WalletId,
    pub tenant: String,
    pub currency: Currency,
    pub balance: String,
    /// How far below zero the balance may go, and what a debit may take. Both are absent
    /// from entries written before overdraft limits existed, whose wallets have a limit of 0
    /// and can spend exactly their balance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overdraft_limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<String>,
    /// What open holds reserve; absent from entries written before holds existed, whose
    /// wallets held nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl CachedWallet {
    pub fn scoped_id(&self) -> ScopedWalletId {
        ScopedWalletId {
            tenant: self.tenant.clone(),
            id: self.wallet_id,
        }
    }
}

impl From<&Wallet> for CachedWallet {
    fn from(wallet: &Wallet) -> Self {
        CachedWallet {
            wallet_id: wallet.id,
            tenant: wallet.tenant.clone(),
            currency: wallet.currency,
            balance: wallet.currency.format(&wallet.balance),
            overdraft_limit: Some(wallet.currency.format(&wallet.overdraft_limit)),
            available: Some(
                wallet
                    .currency
                    .format(&(&wallet.balance - &wallet.held + &wallet.overdraft_limit)),
            ),
            held: Some(wallet.currency.format(&wallet.held)),
            version: wallet.version,
            created_at: wallet.created_at,
            updated_at: wallet.updated_at,
        }
    }
}

/// Stores ARGV[2] under KEYS[1] only when its version ARGV[1] is newer than the stored one,
/// or is the version of a dropped entry (whose balance is gone).
const STORE_IF_NEWER: &str = r"
local current = redis.call('HGET', KEYS[1], 'version')
if current then
  local stored, offered = tonumber(current), tonumber(ARGV[1])
  if stored > offered or (stored == offered and redis.call('HEXISTS', KEYS[1], 'wallet') == 1) then
    return 0
  end
end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'wallet', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
";

/// Tenants are letters, digits, '-' and '_', so the colon keeps keys unambiguous; each tenant
/// has its own entry for an id, and its own version guard.
fn key(tenant: &str, id: WalletId) -> String {
    format!("wallet:{tenant}:{id}")
}

/// Matches the key of every balance entry, and of nothing else.
const KEY_PATTERN: &str = "wallet:*";

/// Where a walk dropping every cached balance stands between calls of
/// [`Cache::sweep_balances`]. After a long Redis outage a worker may have to walk millions of
/// keys (the idempotency markers among them), which must not stall its consumer in one go nor
/// start over after each failed round.
#[derive(Debug, Default)]
pub struct BalanceSweep {
    /// The Redis server walked, by its `run_id`: a cursor means nothing to another one (a
    /// restarted server hashes keys with a new seed), so the walk starts over there.
    server: Option<String>,
    /// SCAN's cursor: where the next round starts.
    cursor: u64,
    /// Entries looked at so far.
    seen: usize,
}

impl Cache {
    pub async fn balance(&self, id: &ScopedWalletId) -> Result<Option<CachedWallet>, CacheError> {
        let key = key(&id.tenant, id.id);
        self.with_connection(|mut connection| async move {
            let stored: Option<String> = redis::cmd("HGET")
                .arg(key)
                .arg("wallet")
                .query_async(&mut connection)
                .await?;
            Ok(stored.map(|text| serde_json::from_str(&text)).transpose()?)
        })
        .await
    }

    /// Drops the balances of `wallets`, so their next read comes from PostgreSQL. Unlike a
    /// write, this can never make a read go back in version, whatever was written meanwhile.
    /// Each entry keeps its version until its TTL ends: deleting it would let a write that
    /// was late already (a refill or a refresh resumed after a pause) put back a balance older
    /// than the one it held.
    pub async fn forget_balances(&self, wallets: &[ScopedWalletId]) -> Result<(), CacheError> {
        if wallets.is_empty() {
            return Ok(());
        }
        self.written.dropped(wallets);
        let mut pipeline = redis::pipe();
        for id in wallets {
            pipeline
                .cmd("HDEL")
                .arg(key(&id.tenant, id.id))
                .arg("wallet")
                .ignore();
        }
        self.with_connection(|mut connection| async move {
            pipeline.query_async::<()>(&mut connection).await?;
            Ok(())
        })
        .await
    }

    /// Takes `sweep`, a walk dropping every cached balance as
    /// [`forget_balances`](Self::forget_balances) does, at most `rounds` SCAN rounds of about
    /// [`WRITE_CHUNK`] keys further, so no call holds its caller (or Redis) for long. For a
    /// worker that lost track of which balances it could not write: dropping a fresh one too
    /// costs a read from PostgreSQL, never a stale answer, and dropping one late is as safe.
    /// Returns how many entries the whole walk looked at once it has ended (the sweep is then
    /// spent), None while there is more to walk. On an error the sweep stays where its last
    /// round that succeeded left it, and the next call goes on from there.
    pub async fn sweep_balances(
        &self,
        sweep: &mut BalanceSweep,
        rounds: usize,
    ) -> Result<Option<usize>, CacheError> {
        let server = self.server_id().await?;
        if sweep.server.as_ref() != Some(&server) {
            *sweep = BalanceSweep {
                server: Some(server),
                ..BalanceSweep::default()
            };
        }
        for _ in 0..rounds {
            let (next, keys) = self.scan_balances(sweep.cursor).await?;
            self.drop_entries(&keys).await?;
            sweep.seen += keys.len();
            if next == 0 {
                return Ok(Some(sweep.seen));
            }
            sweep.cursor = next;
        }
        Ok(None)
    }

    /// The `run_id` of the Redis server answering: a new one each time a server starts.
    async fn server_id(&self) -> Result<String, CacheError> {
        let info: String = self
            .with_connection(|mut connection| async move {
                Ok(redis::cmd("INFO")
                    .arg("server")
                    .query_async(&mut connection)
                    .await?)
            })
            .await?;
        Ok(info
            .lines()
            .find_map(|line| line.strip_prefix("run_id:"))
            .unwrap_or_default()
            .trim()
            .to_owned())
    }

    /// One SCAN round over the balance entries from `cursor`: the next cursor and the keys.
    async fn scan_balances(&self, cursor: u64) -> Result<(u64, Vec<String>), CacheError> {
        self.with_connection(|mut connection| async move {
            Ok(redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(KEY_PATTERN)
                .arg("COUNT")
                .arg(WRITE_CHUNK)
                .arg("TYPE")
                .arg("hash")
                .query_async(&mut connection)
                .await?)
        })
        .await
    }

    /// Drops the balances of the entries `keys`, each keeping its version.
    async fn drop_entries(&self, keys: &[String]) -> Result<(), CacheError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut pipeline = redis::pipe();
        for key in keys {
            pipeline.cmd("HDEL").arg(key).arg("wallet").ignore();
        }
        self.with_connection(|mut connection| async move {
            pipeline.query_async::<()>(&mut connection).await?;
            Ok(())
        })
        .await?;
        // What this process wrote may be among them; dropped after its write, it is no longer
        // held, so a refresh must write it again.
        self.written.dropped_all();
        Ok(())
    }

    /// Whether this process lately wrote `version` of the wallet, or a newer one, so Redis
    /// holds it unless it lost the entry.
    pub fn holds_balance(&self, wallet: &ScopedWalletId, version: i64) -> bool {
        self.written.covers(wallet, version, Instant::now())
    }

    /// Brings the entries of freshly committed wallets up to date, skipping those this
    /// process already wrote at that version or a newer one. Returns how many were replaced.
    pub async fn refresh_balances(&self, wallets: &[CachedWallet]) -> Result<usize, CacheError> {
        let now = Instant::now();
        let missing: Vec<CachedWallet> = wallets
            .iter()
            .filter(|wallet| {
                !self
                    .written
                    .covers(&wallet.scoped_id(), wallet.version, now)
            })
            .cloned()
            .collect();
        self.store_balances(&missing).await
    }

    /// Stores every wallet whose version is newer than the cached one, in one round trip.
    /// Returns how many entries were replaced.
    pub async fn store_balances(&self, wallets: &[CachedWallet]) -> Result<usize, CacheError> {
        if wallets.is_empty() {
            return Ok(0);
        }
        let mut pipeline = redis::pipe();
        for wallet in wallets {
            pipeline
                .cmd("EVAL")
                .arg(STORE_IF_NEWER)
                .arg(1)
                .arg(key(&wallet.tenant, wallet.wallet_id))
                .arg(wallet.version)
                .arg(serde_json::to_string(wallet)?)
                .arg(self.balance_ttl_s);
        }
        let sent = Instant::now();
        let replaced: Vec<i64> = self
            .with_connection(|mut connection| async move {
                Ok(pipeline.query_async(&mut connection).await?)
            })
            .await?;
        // Replaced or refused as older, the entry now holds this version or a newer one.
        self.written.wrote(
            wallets
                .iter()
                .map(|wallet| (wallet.scoped_id(), wallet.version)),
            sent,
        );
        Ok(replaced.iter().filter(|&&stored| stored == 1).count())
    }
}
