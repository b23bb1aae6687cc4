//! Reading a wallet's journal at a point in time.

use std::time::Duration;

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

use super::wallets::wallet_settled;
use super::{prepared, StoreError, Wallet};
use crate::ledger::database;
use crate::ledger::money::decimal_from_db;
use crate::ledger::types::ScopedWalletId;

/// The wallet's last journal entry at or before an instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryAt {
    pub version: i64,
    pub balance_after: BigDecimal,
    pub held_after: BigDecimal,
    pub recorded_at: DateTime<Utc>,
}

/// The wallet and its last entry recorded at or before `at` (none when it had none yet), read
/// once every batch that has locked the wallet committed: an `at` up to now is answered as it
/// will always be answered. The wallet's lock is held under the bounds of `lease_lapse` (see
/// [`database::lock_holding_transaction`]).
pub async fn wallet_at(
    client: &mut deadpool_postgres::Object,
    wallet: &ScopedWalletId,
    at: DateTime<Utc>,
    lease_lapse: Duration,
) -> Result<Option<(Wallet, Option<EntryAt>)>, StoreError> {
    let transaction = client.transaction().await?;
    transaction
        .batch_execute(&database::lock_holding_transaction(lease_lapse))
        .await?;
    let Some(found) = wallet_settled(&transaction, wallet).await? else {
        return Ok(None);
    };
    let entry = entry_at(&transaction, wallet, at).await?;
    transaction.commit().await?;
    Ok(Some((found, entry)))
}

/// The last entry of the wallet recorded at or before `at`, or none when it had none yet: one
/// backward step on the `(tenant, wallet_id, recorded_at, version)` index, never a scan.
async fn entry_at(
    client: &impl GenericClient,
    wallet: &ScopedWalletId,
    at: DateTime<Utc>,
) -> Result<Option<EntryAt>, StoreError> {
    let row = client
        .query_opt(
            &prepared(
                client,
                "SELECT version, balance_after::text, recorded_at, held_after::text FROM entries
                 WHERE tenant = $3 AND wallet_id = $1 AND recorded_at <= $2
                 ORDER BY recorded_at DESC, version DESC LIMIT 1",
            )
            .await?,
            &[&wallet.id.0, &at, &wallet.tenant],
        )
        .await?;
    row.map(|row| {
        let balance_after: String = row.get(1);
        let held_after: String = row.get(3);
        Ok(EntryAt {
            version: row.get(0),
            balance_after: decimal_from_db(&balance_after).map_err(StoreError::corrupt)?,
            held_after: decimal_from_db(&held_after).map_err(StoreError::corrupt)?,
            recorded_at: row.get(2),
        })
    })
    .transpose()
}
