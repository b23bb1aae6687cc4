//! The currency of wallets this process has already seen, by tenant and id. A wallet is never
//! deleted and never changes its currency, so an entry never goes stale, and validating an
//! operation needs no round trip once its wallets are known.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::ledger::money::Currency;
use crate::ledger::types::ScopedWalletId;

/// What never changes about a wallet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletFacts {
    pub currency: Currency,
}

pub struct WalletDirectory {
    wallets: Mutex<HashMap<ScopedWalletId, WalletFacts>>,
    entries_max: usize,
}

impl WalletDirectory {
    pub fn new(entries_max: usize) -> Self {
        WalletDirectory {
            wallets: Mutex::new(HashMap::new()),
            entries_max,
        }
    }

    pub fn facts(&self, id: &ScopedWalletId) -> Option<WalletFacts> {
        self.wallets.lock().ok()?.get(id).cloned()
    }

    /// Remembers a wallet; when full it starts over rather than grow without bound.
    pub fn remember(&self, id: ScopedWalletId, facts: WalletFacts) {
        if let Ok(mut wallets) = self.wallets.lock() {
            if wallets.len() >= self.entries_max {
                wallets.clear();
            }
            wallets.insert(id, facts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_up_to_its_bound() {
        let directory = WalletDirectory::new(2);
        let ids: Vec<ScopedWalletId> = (1..=3)
            .map(|n| ScopedWalletId {
                tenant: "acme".to_owned(),
                id: crate::ledger::types::WalletId(uuid::Uuid::from_u128(n)),
            })
            .collect();
        let facts = WalletFacts {
            currency: Currency::USD,
        };
        directory.remember(ids[0].clone(), facts.clone());
        directory.remember(ids[1].clone(), facts.clone());
        assert_eq!(directory.facts(&ids[0]), Some(facts.clone()));
        let other_tenant = ScopedWalletId {
            tenant: "globex".to_owned(),
            ..ids[0].clone()
        };
        assert_eq!(directory.facts(&other_tenant), None);
        directory.remember(ids[2].clone(), facts.clone());
        assert_eq!(directory.facts(&ids[0]), None);
        assert_eq!(directory.facts(&ids[2]), Some(facts));
    }
}
