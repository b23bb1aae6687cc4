//! The batch transaction: fence, dedupe, lock, decide with the pure rules, write, advance.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use uuid::Uuid;

use super::holds::{lock_holds, write_holds};
use super::offsets::{advance_position, lock_position};
use super::outbox::write_outbox;
use super::writers::{write_dead_letters, write_entries, write_operations, write_wallets};
use super::{dedupe, prepared, Batch, BatchReport, DeadLetter, StoreError};
use crate::ledger::money::{decimal_from_db, Currency};
use crate::ledger::types::{Operation, OperationId, ScopedId, WalletId, WalletState};
use crate::ledger::{events, rules};

/// Applies a batch in one transaction: the partition's position is checked and advanced, the
/// operations already stored are dropped, the touched wallets are locked in id order (so two
/// workers never deadlock, transfers included), the pure rules decide, and everything is
/// written with one statement per table.
pub async fn apply_batch(
    client: &mut deadpool_postgres::Object,
    batch: &Batch,
    now: DateTime<Utc>,
) -> Result<BatchReport, StoreError> {
    assert!(
        batch.next_offset >= batch.from_offset,
        "a batch never moves backwards"
    );
    let transaction = client.transaction().await?;
    lock_position(&transaction, batch).await?;
    let (fresh, mut dead_letters, duplicates) = drop_known(&transaction, batch).await?;
    let (mut states, tenants) = lock_wallets(&transaction, &fresh).await?;
    let mut holds = lock_holds(&transaction, &fresh).await?;
    let operations: Vec<Operation> = fresh
        .iter()
        .map(|(_, operation)| operation.clone())
        .collect();
    let applied = rules::apply(&mut states, &mut holds, &operations);
    write_operations(
        &transaction,
        batch.partition,
        &fresh,
        &applied.outcomes,
        now,
    )
    .await?;
    write_entries(&transaction, &applied.entries, &tenants, now).await?;
    write_holds(
        &transaction,
        batch.partition,
        &applied.holds,
        &holds,
        &applied.entries,
        now,
    )
    .await?;
    let touched: HashSet<WalletId> = applied
        .entries
        .iter()
        .map(|entry| entry.wallet_id)
        .collect();
    let wallets = write_wallets(&transaction, &states, &touched, now).await?;
    let rejected: Vec<Operation> = batch
        .dead_letters
        .iter()
        .filter_map(|letter| letter.operation.clone())
        .collect();
    let mut events = events::for_batch(
        &operations,
        &applied.outcomes,
        &applied.entries,
        &tenants,
        now,
    );
    events.extend(events::for_rejected(&rejected, now));
    write_outbox(&transaction, &events, now).await?;
    dead_letters.extend(batch.dead_letters.iter().cloned());
    write_dead_letters(&transaction, batch, &dead_letters, now).await?;
    advance_position(&transaction, batch).await?;
    transaction.commit().await?;
    Ok(BatchReport {
        wallets,
        decided: operations.into_iter().zip(applied.outcomes).collect(),
        rejected,
        duplicates,
        processed_at: now,
    })
}

/// Drops operations whose id is already stored or repeats earlier in the batch.
async fn drop_known(
    client: &impl GenericClient,
    batch: &Batch,
) -> Result<(Vec<(i64, Operation)>, Vec<DeadLetter>, usize), StoreError> {
    let (tenants, ids): (Vec<&str>, Vec<Uuid>) = batch
        .operations
        .iter()
        .map(|(_, operation)| (operation.tenant.as_str(), operation.id.0))
        .unzip();
    let rows = client
        .query(
            &prepared(
                client,
                "SELECT o.tenant, o.id, o.fingerprint FROM operations o
                 JOIN unnest($1::text[], $2::uuid[]) AS t(tenant, id) USING (tenant, id)",
            )
            .await?,
            &[&tenants, &ids],
        )
        .await?;
    let stored = rows
        .iter()
        .map(|row| {
            let id = ScopedId {
                tenant: row.get(0),
                id: OperationId(row.get(1)),
            };
            (id, row.get(2))
        })
        .collect();
    Ok(dedupe(&batch.operations, stored))
}

/// Locks the wallets the operations touch, in id order; their states, and their tenants for
/// the events.
async fn lock_wallets(
    client: &impl GenericClient,
    operations: &[(i64, Operation)],
) -> Result<(HashMap<WalletId, WalletState>, HashMap<WalletId, String>), StoreError> {
    let mut ids: Vec<Uuid> = operations
        .iter()
        .flat_map(|(_, operation)| {
            std::iter::once(operation.wallet_id).chain(operation.kind.target())
        })
        .map(|id| id.0)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let rows = client
        .query(
            &prepared(client, "SELECT id, currency, balance::text, version, tenant, overdraft_limit::text, held::text FROM wallets WHERE id = ANY($1) ORDER BY id FOR UPDATE").await?,
            &[&ids],
        )
        .await?;
    let mut states = HashMap::with_capacity(rows.len());
    let mut tenants = HashMap::with_capacity(rows.len());
    for row in &rows {
        let id = WalletId(row.get(0));
        let currency: String = row.get(1);
        let balance: String = row.get(2);
        let overdraft_limit: String = row.get(5);
        let held: String = row.get(6);
        let state = WalletState {
            currency: Currency::parse(&currency).map_err(StoreError::corrupt)?,
            balance: decimal_from_db(&balance).map_err(StoreError::corrupt)?,
            overdraft_limit: decimal_from_db(&overdraft_limit).map_err(StoreError::corrupt)?,
            held: decimal_from_db(&held).map_err(StoreError::corrupt)?,
            version: row.get(3),
        };
        states.insert(id, state);
        tenants.insert(id, row.get(4));
    }
    Ok((states, tenants))
}
