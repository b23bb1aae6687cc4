//! PostgreSQL persistence of the ledger: wallets, operations, entries and consumer positions.
//! The rules themselves live in `rules`; this module only loads, locks and writes, one job
//! per file.

mod apply;
mod batch;
mod error;
mod history;
mod holds;
mod journal;
mod layouts;
mod offsets;
mod operations;
mod outbox;
mod wallets;
mod writers;

use deadpool_postgres::GenericClient;

pub use apply::apply_batch;
pub use batch::{dedupe, Batch, BatchReport, DeadLetter};
pub use error::{remedy_for_sqlstate, Remedy, RetryReason, StoreError};
pub use history::{history, HistoryFilter, HistoryItem, HistoryPage, HistoryRequest};
pub use holds::{due_holds, hold, holds, DueHold, HoldRecord, ScannedPartitions};
pub use journal::{wallet_at, EntryAt};
pub use layouts::{record_partitions, recorded_partitions};
pub use offsets::{move_position, next_offset, record_applied, stored_position};
pub use operations::{
    decisions, operation, operations, rejected_operation, rejected_operations, Decisions,
    OperationRecord, RejectedRecord,
};
pub use outbox::{delete_events, oldest_events, outbox_backlog, OutboxRow};
pub use wallets::{create_wallet, wallet, wallets, Created, NewWallet, Wallet};

/// Goes through the connection's statement cache, so each statement is parsed and planned
/// once per connection instead of on every call.
async fn prepared(
    client: &impl GenericClient,
    sql: &str,
) -> Result<tokio_postgres::Statement, StoreError> {
    Ok(client.prepare_cached(sql).await?)
}

/// Rows of (tenant, operation id, value), each as the scoped id and its value.
fn scoped_values<'a, T, C>(rows: &'a [tokio_postgres::Row]) -> C
where
    T: tokio_postgres::types::FromSql<'a>,
    C: FromIterator<(crate::ledger::types::ScopedId, T)>,
{
    rows.iter()
        .map(|row| {
            let id = crate::ledger::types::ScopedId {
                tenant: row.get(0),
                id: crate::ledger::types::OperationId(row.get(1)),
            };
            (id, row.get(2))
        })
        .collect()
}
