//! The balances this process wrote to the cache lately, by wallet: a worker writes a batch's
//! balances right after its commit, and the outbox relay then finds the same versions in the
//! events it publishes. Whoever comes second may skip the write, and the relay its read of the
//! wallets from PostgreSQL too: Redis already holds that version or a newer one, unless it lost
//! the entry, and a lost entry is a miss that the next read fills from PostgreSQL, never a
//! stale balance. Redis coming back with older data than it answered (an append-only file
//! missing its last second, a lagging replica promoted) leaves a balance behind until the
//! wallet's next change, with or without the skip: the relay's repeat came milliseconds after
//! the worker's write and was lost with it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::ledger::types::ScopedWalletId;

/// Wallets remembered before the record starts over: about 80 bytes each with their tenant.
const WALLETS_MAX: usize = 100_000;

/// A write this process made, and when.
#[derive(Debug, Clone, Copy)]
struct Write {
    version: i64,
    at: Instant,
}

pub struct RecentWrites {
    writes: Mutex<HashMap<ScopedWalletId, Write>>,
    /// How long a remembered write still counts: well inside the entries' own TTL, so a skip
    /// seldom meets an entry Redis has expired (a write refused as older did not renew it), and
    /// then the wallet is only a miss until its next read fills it.
    trusted_for: Duration,
}

impl RecentWrites {
    /// For entries that live `entry_ttl` in Redis.
    pub fn new(entry_ttl: Duration) -> Self {
        RecentWrites {
            writes: Mutex::new(HashMap::new()),
            trusted_for: entry_ttl / 2,
        }
    }

    /// Whether this process wrote `version` of the wallet, or a newer one, lately.
    pub fn covers(&self, wallet: &ScopedWalletId, version: i64, now: Instant) -> bool {
        let Ok(writes) = self.writes.lock() else {
            return false;
        };
        writes.get(wallet).is_some_and(|write| {
            write.version >= version && now.duration_since(write.at) < self.trusted_for
        })
    }

    /// Remembers that Redis accepted or already had `version` of each wallet at `at`.
    pub fn wrote(&self, wallets: impl IntoIterator<Item = (ScopedWalletId, i64)>, at: Instant) {
        let Ok(mut writes) = self.writes.lock() else {
            return;
        };
        for (wallet, version) in wallets {
            if writes.len() >= WALLETS_MAX && !writes.contains_key(&wallet) {
                writes.clear();
            }
            let newer = writes
                .get(&wallet)
                .is_none_or(|write| write.version <= version);
            if newer {
                writes.insert(wallet, Write { version, at });
            }
        }
    }

    /// Forgets every wallet: each entry was dropped from Redis.
    pub fn dropped_all(&self) {
        if let Ok(mut writes) = self.writes.lock() {
            writes.clear();
        }
    }

    /// Forgets the wallets whose entries were dropped from Redis.
    pub fn dropped(&self, wallets: &[ScopedWalletId]) {
        if let Ok(mut writes) = self.writes.lock() {
            for wallet in wallets {
                writes.remove(wallet);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wallet(n: u128) -> ScopedWalletId {
        ScopedWalletId {
            tenant: "acme".to_owned(),
            id: crate::ledger::types::WalletId(uuid::Uuid::from_u128(n)),
        }
    }

    /// Proves a write covers its version and older ones, for half the entries' TTL, and no
    /// longer once the entry was dropped; a late older write never hides a newer one.
    #[test]
    fn a_write_covers_its_version_while_the_entry_surely_lives() {
        let start = Instant::now();
        let writes = RecentWrites::new(Duration::from_secs(60));
        writes.wrote([(wallet(1), 5)], start);
        assert!(writes.covers(&wallet(1), 5, start));
        assert!(writes.covers(&wallet(1), 4, start));
        assert!(!writes.covers(&wallet(1), 6, start));
        assert!(!writes.covers(&wallet(2), 1, start));
        let other_tenant = ScopedWalletId {
            tenant: "globex".to_owned(),
            ..wallet(1)
        };
        assert!(
            !writes.covers(&other_tenant, 1, start),
            "another tenant's wallet"
        );
        assert!(writes.covers(&wallet(1), 5, start + Duration::from_secs(29)));
        assert!(!writes.covers(&wallet(1), 5, start + Duration::from_secs(30)));
        writes.wrote([(wallet(1), 3)], start);
        assert!(writes.covers(&wallet(1), 5, start));
        writes.dropped(&[wallet(1)]);
        assert!(!writes.covers(&wallet(1), 1, start));
    }
}
