//! The currencies of wallets this process has already seen. A wallet is never deleted and
//! never changes currency, so an entry never goes stale, and validating an operation needs
//! no round trip once its wallets are known.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::ledger::money::Currency;
use crate::ledger::types::WalletId;

pub struct WalletDirectory {
    currencies: Mutex<HashMap<WalletId, Currency>>,
    entries_max: usize,
}

impl WalletDirectory {
    pub fn new(entries_max: usize) -> Self {
        WalletDirectory {
            currencies: Mutex::new(HashMap::new()),
            entries_max,
        }
    }

    pub fn currency(&self, id: WalletId) -> Option<Currency> {
        self.currencies.lock().ok()?.get(&id).copied()
    }

    /// Remembers a wallet; when full it starts over rather than grow without bound.
    pub fn remember(&self, id: WalletId, currency: Currency) {
        if let Ok(mut currencies) = self.currencies.lock() {
            if currencies.len() >= self.entries_max {
                currencies.clear();
            }
            currencies.insert(id, currency);
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
        directory.remember(ids[0], Currency::USD);
        directory.remember(ids[1], Currency::USD);
        assert_eq!(directory.currency(ids[0]), Some(Currency::USD));
        directory.remember(ids[2], Currency::USD);
        assert_eq!(directory.currency(ids[0]), None);
        assert_eq!(directory.currency(ids[2]), Some(Currency::USD));
    }
}
