//! The batch transaction: fence, dedupe, lock, decide with the pure rules, write, advance.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use uuid::Uuid;

use super::holds::{lock_holds, write_holds};
use super::offsets::{advance_position, lock_position};
use super::outbox::write_outbox;
use super::writers::{write_dead_letters, write_entries, write_operations, write_wallets};
use super::{dedupe, prepared, Batch, BatchReport, StoreError};
use crate::ledger::money::{decimal_from_db, Currency};
use crate::ledger::types::{Operation, OperationId, ScopedId, WalletId, WalletState};
use crate::ledger::{events, rules};

/// Whether a batch transaction first asks which of its operations are stored already, or
/// assumes none is and lets the operations insert tell. Stored ones are rare (a produce retried
/// after a lost acknowledgement, a marker Redis lost), and asking costs a lookup per operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    Assumed,
    LookedUp,
}

/// How often a batch is applied again when the operations insert finds ids stored meanwhile:
/// once after the assumption failed, once more for an id another partition's batch committed
/// between the lookup and the insert.
const ATTEMPTS: [Stored; 3] = [Stored::Assumed, Stored::LookedUp, Stored::LookedUp];

/// Applies a batch in one transaction: the partition's position is checked and advanced, the
/// operations already stored are dropped, the touched wallets are locked in id order (so two
/// workers never deadlock, transfers included), the pure rules decide, and everything is
/// written with one statement per table. A transaction in which the insert finds an id already
/// stored is rolled back and the batch applied again with the stored ids looked up first.
pub async fn apply_batch(
    client: &mut deadpool_postgres::Object,
    batch: &Batch,
    now: DateTime<Utc>,
) -> Result<BatchReport, StoreError> {
    assert!(
        batch.next_offset >= batch.from_offset,
        "a batch never moves backwards"
    );
    for stored in ATTEMPTS {
        if let Some(report) = apply_once(client, batch, now, stored).await? {
            return Ok(report);
        }
    }
    Err(StoreError::Corrupt(format!(
        "partition {} offsets {}..{}: operations kept conflicting with stored ones",
        batch.partition, batch.from_offset, batch.next_offset
    )))
}

/// One attempt; None when the insert found stored ids the attempt did not know of, and its
/// transaction was rolled back. The statements of each phase go out together (PostgreSQL runs
/// them in order, so the position is still locked before the wallets), and every answer is read
/// before the first error is returned: a later statement's error only says the transaction
/// was aborted.
async fn apply_once(
    client: &mut deadpool_postgres::Object,
    batch: &Batch,
    now: DateTime<Utc>,
    stored: Stored,
) -> Result<Option<BatchReport>, StoreError> {
    let transaction = client.transaction().await?;
    let (position, known, locked, holds) = tokio::join!(
        lock_position(&transaction, batch),
        stored_ids(&transaction, batch, stored),
        lock_wallets(&transaction, &batch.operations),
        lock_holds(&transaction, &batch.operations),
    );
    position?;
    let (fresh, mut dead_letters, duplicates) = dedupe(&batch.operations, known?);
    let ((mut states, tenants), mut holds) = (locked?, holds?);
    let operations: Vec<Operation> = fresh
        .iter()
        .map(|(_, operation)| operation.clone())
        .collect();
    let applied = rules::apply(&mut states, &mut holds, &operations);
    let touched: HashSet<WalletId> = applied
        .entries
        .iter()
        .map(|entry| entry.wallet_id)
        .collect();
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
    dead_letters.extend(batch.dead_letters.iter().cloned());
    let partition = batch.partition;
    let (inserted, entries, holds_written, wallets, outbox, letters, advanced) = tokio::join!(
        write_operations(&transaction, partition, &fresh, &applied.outcomes, now),
        write_entries(&transaction, &applied.entries, &tenants, now),
        write_holds(
            &transaction,
            partition,
            &applied.holds,
            &holds,
            &applied.entries,
            now
        ),
        write_wallets(&transaction, &states, &touched, now),
        write_outbox(&transaction, &events, now),
        write_dead_letters(&transaction, batch, &dead_letters, now),
        advance_position(&transaction, batch),
    );
    let inserted = inserted?;
    entries?;
    holds_written?;
    let wallets = wallets?;
    outbox?;
    letters?;
    advanced?;
    if inserted != fresh.len() as u64 {
        return Ok(None);
    }
    transaction.commit().await?;
    Ok(Some(BatchReport {
        wallets,
        currencies: states
            .iter()
            .map(|(id, state)| (*id, state.currency))
            .collect(),
        decided: operations.into_iter().zip(applied.outcomes).collect(),
        rejected,
        duplicates,
        processed_at: now,
    }))
}

/// The stored fingerprint of each operation id in the batch that is stored already, if asked.
async fn stored_ids(
    client: &impl GenericClient,
    batch: &Batch,
    stored: Stored,
) -> Result<HashMap<ScopedId, String>, StoreError> {
    match stored {
        Stored::Assumed => Ok(HashMap::new()),
        Stored::LookedUp => looked_up(client, batch).await,
    }
}

/// The operations of the batch whose id is stored, with their stored fingerprints.
async fn looked_up(
    client: &impl GenericClient,
    batch: &Batch,
) -> Result<HashMap<ScopedId, String>, StoreError> {
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
    Ok(rows
        .iter()
        .map(|row| {
            let id = ScopedId {
                tenant: row.get(0),
                id: OperationId(row.get(1)),
            };
            (id, row.get(2))
        })
        .collect())
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
