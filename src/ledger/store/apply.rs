//! The batch transaction: fence, dedupe, lock, decide with the pure rules, write, advance.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use uuid::Uuid;

use super::holds::{lock_holds, write_holds};
use super::offsets::{advance_position, lock_position};
use super::outbox::write_outbox;
use super::writers::{write_dead_letters, write_entries, write_operations, write_wallets};
use super::{dedupe, prepared, scoped_values, Batch, BatchReport, StoreError};
use crate::ledger::money::{decimal_from_db, Currency};
use crate::ledger::types::{Hold, Operation, ScopedId, ScopedWalletId, WalletId, WalletState};
use crate::ledger::{events, rules};

/// Whether a batch transaction first asks which of its operations are stored already, or
/// assumes none is and lets the operations insert tell (by a unique violation on their key).
/// Stored ones are rare (a produce retried after a lost acknowledgement, a marker Redis lost),
/// and asking costs a lookup per operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    Assumed,
    LookedUp,
}

/// Applies a batch in one transaction: the partition's position is checked and advanced, the
/// operations already stored are dropped, the touched wallets (each in its operation's
/// tenant) are locked in (tenant, id) order (so two workers never deadlock, transfers
/// included), the pure rules decide, and everything is written with one statement per table. When the assumption that no operation is stored yet
/// fails, the transaction is rolled back and the batch applied again with the stored ids
/// looked up first; an id another batch stores between that lookup and the insert fails the
/// batch as a conflict, to be retried.
///
/// `now` is read once the batch's wallets are locked, and the batch is recorded at that time:
/// a reader of a wallet's past that waits for its lock (`store::wallet_settled`) then knows
/// that no batch still to commit is recorded before the instant it asks about.
pub async fn apply_batch(
    client: &mut deadpool_postgres::Object,
    batch: &Batch,
    now: impl Fn() -> DateTime<Utc>,
) -> Result<BatchReport, StoreError> {
    assert!(
        batch.next_offset >= batch.from_offset,
        "a batch never moves backwards"
    );
    match apply_once(client, batch, &now, Stored::Assumed).await {
        Err(error) if error.is_stored_operation() => {
            apply_once(client, batch, &now, Stored::LookedUp).await
        }
        applied => applied,
    }
}

/// One attempt, rolled back on any error. The position is locked first, on its own, so no
/// wallet is locked by a worker that does not own the partition; the operations go in before
/// the other writes, so an id stored already fails the attempt before they run. The statements
/// of each phase in between go out together.
async fn apply_once(
    client: &mut deadpool_postgres::Object,
    batch: &Batch,
    now: &impl Fn() -> DateTime<Utc>,
    stored: Stored,
) -> Result<BatchReport, StoreError> {
    let transaction = client.transaction().await?;
    lock_position(&transaction, batch).await?;
    let Found {
        known,
        mut states,
        changed,
        mut holds,
    } = read_batch(&transaction, batch, stored).await?;
    let now = now();
    let stored_before: Vec<ScopedId> = known.keys().cloned().collect();
    let (fresh, mut dead_letters, duplicates) = dedupe(&batch.operations, known);
    let operations: Vec<Operation> = fresh
        .iter()
        .map(|(_, operation)| operation.clone())
        .collect();
    let applied = rules::apply(&mut states, &mut holds, &operations);
    let touched: HashSet<&ScopedWalletId> =
        applied.entries.iter().map(|entry| &entry.wallet).collect();
    let rejected: Vec<Operation> = batch
        .dead_letters
        .iter()
        .filter_map(|letter| letter.operation.clone())
        .collect();
    let mut events = events::for_batch(&operations, &applied.outcomes, &applied.entries, now);
    events.extend(events::for_rejected(&rejected, now));
    dead_letters.extend(batch.dead_letters.iter().cloned());
    let partition = batch.partition;
    write_operations(&transaction, partition, &fresh, &applied.outcomes, now).await?;
    let wallets = match tokio::join!(
        write_entries(&transaction, &applied.entries, &changed, now),
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
    ) {
        (Ok(()), Ok(()), Ok(wallets), Ok(()), Ok(()), Ok(())) => wallets,
        (entries, holds, wallets, outbox, letters, advanced) => {
            return Err(StoreError::cause([
                entries.err(),
                holds.err(),
                wallets.err(),
                outbox.err(),
                letters.err(),
                advanced.err(),
            ]))
        }
    };
    transaction.commit().await?;
    Ok(BatchReport {
        wallets,
        currencies: states
            .iter()
            .map(|(id, state)| (id.clone(), state.currency))
            .collect(),
        decided: operations.into_iter().zip(applied.outcomes).collect(),
        rejected,
        stored_before,
        duplicates,
        processed_at: now,
    })
}

/// What a batch's operations find in the database, the wallets and holds locked.
struct Found {
    /// The fingerprints of the batch's ids stored already, if asked.
    known: HashMap<ScopedId, String>,
    states: HashMap<ScopedWalletId, WalletState>,
    /// When each locked wallet last changed, for the journal's times.
    changed: HashMap<ScopedWalletId, DateTime<Utc>>,
    holds: HashMap<ScopedId, Hold>,
}

/// Reads what the batch's operations touch in one round trip, once the position is locked.
async fn read_batch(
    client: &impl GenericClient,
    batch: &Batch,
    stored: Stored,
) -> Result<Found, StoreError> {
    match tokio::join!(
        stored_ids(client, batch, stored),
        lock_wallets(client, &batch.operations),
        lock_holds(client, &batch.operations),
    ) {
        (Ok(known), Ok(Locked { states, changed }), Ok(holds)) => Ok(Found {
            known,
            states,
            changed,
            holds,
        }),
        (known, wallets, holds) => {
            Err(StoreError::cause([known.err(), wallets.err(), holds.err()]))
        }
    }
}

/// The stored fingerprint of each operation id in the batch that is stored already, when
/// asked; none when assumed.
async fn stored_ids(
    client: &impl GenericClient,
    batch: &Batch,
    stored: Stored,
) -> Result<HashMap<ScopedId, String>, StoreError> {
    if stored == Stored::Assumed {
        return Ok(HashMap::new());
    }
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
    Ok(scoped_values(&rows))
}

/// The wallets a batch locked: their states, and when each last changed for the journal's
/// times.
struct Locked {
    states: HashMap<ScopedWalletId, WalletState>,
    changed: HashMap<ScopedWalletId, DateTime<Utc>>,
}

/// Locks the wallets the operations touch, each in its operation's tenant, in (tenant, id)
/// order: the order of the wallets key, the same in every batch.
async fn lock_wallets(
    client: &impl GenericClient,
    operations: &[(i64, Operation)],
) -> Result<Locked, StoreError> {
    let mut ids: Vec<ScopedWalletId> = operations
        .iter()
        .flat_map(|(_, operation)| operation.wallets())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let (tenants, ids): (Vec<&str>, Vec<Uuid>) =
        ids.iter().map(|id| (id.tenant.as_str(), id.id.0)).unzip();
    let rows = client
        .query(
            &prepared(
                client,
                "SELECT tenant, id, currency, balance::text, version, overdraft_limit::text, held::text, updated_at
                 FROM wallets JOIN unnest($1::text[], $2::uuid[]) AS t(tenant, id) USING (tenant, id)
                 ORDER BY tenant, id FOR UPDATE OF wallets",
            )
            .await?,
            &[&tenants, &ids],
        )
        .await?;
    let mut locked = Locked {
        states: HashMap::with_capacity(rows.len()),
        changed: HashMap::with_capacity(rows.len()),
    };
    for row in &rows {
        let id = ScopedWalletId {
            tenant: row.get(0),
            id: WalletId(row.get(1)),
        };
        let currency: String = row.get(2);
        let balance: String = row.get(3);
        let overdraft_limit: String = row.get(5);
        let held: String = row.get(6);
        let state = WalletState {
            currency: Currency::parse(&currency).map_err(StoreError::corrupt)?,
            balance: decimal_from_db(&balance).map_err(StoreError::corrupt)?,
            overdraft_limit: decimal_from_db(&overdraft_limit).map_err(StoreError::corrupt)?,
            held: decimal_from_db(&held).map_err(StoreError::corrupt)?,
            version: row.get(4),
        };
        locked.changed.insert(id.clone(), row.get(7));
        locked.states.insert(id, state);
    }
    Ok(locked)
}
