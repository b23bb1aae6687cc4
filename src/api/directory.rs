//! The currency and tenant of wallets this process has already seen. A wallet is never
//! deleted and never changes either, so an entry never goes stale, and validating an
//! operation needs no round trip once its wallets are known.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::ledger::money::Currency;
use crate::ledger::types::WalletId;

/// What never changes about a wallet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletFacts {
    pub currency: Currency,
    pub tenant: Arc<str>,
}

pub struct WalletDirectory {
    wallets: Mutex<HashMap<WalletId, WalletFacts>>,
    entries_max: usize,
}

impl WalletDirectory {
    pub fn new(entries_max: usize) -> Self {
        WalletDirectory {
            wallets: Mutex::new(HashMap::new()),
            entries_max,
        }
    }

    pub fn facts(&self, id: WalletId) -> Option<WalletFacts> {
        self.wallets.lock().ok()?.get(&id).cloned()
    }

    /// Remembers a wallet; when full it starts over rather than grow without bound.
    pub fn remember(&self, id: WalletId, facts: WalletFacts) {
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
        let ids: Vec<WalletId> = (1..=3)
            .map(|n| WalletId(uuid::Uuid::from_u128(n)))
            .collect();
        let facts = WalletFacts {
            currency: Currency::USD,
            tenant: Arc::from("acme"),
        };
        directory.remember(ids[0], facts.clone());
        directory.remember(ids[1], facts.clone());
        assert_eq!(directory.facts(ids[0]), Some(facts.clone()));
        directory.remember(ids[2], facts.clone());
        assert_eq!(directory.facts(ids[0]), None);
        assert_eq!(directory.facts(ids[2]), Some(facts));
    }
}
