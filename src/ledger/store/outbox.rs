//! The outbox: events written in the batch transaction, read and deleted by the relay.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use uuid::Uuid;

use super::{prepared, StoreError};
use crate::ledger::events::Event;
use crate::ledger::types::{ScopedWalletId, WalletId};

/// Writes the transaction's events as one row, in the order given (the journal's).
pub(super) async fn write_outbox(
    client: &impl GenericClient,
    events: &[Event],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let tenants: Vec<&str> = events.iter().map(|event| event.tenant.as_str()).collect();
    let wallets: Vec<Uuid> = events.iter().map(|event| event.wallet_id.0).collect();
    let payloads = events
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<Vec<String>, _>>()
        .map_err(StoreError::corrupt)?;
    let count = i32::try_from(events.len()).map_err(StoreError::corrupt)?;
    client
        .execute(
            &prepared(
                client,
                "INSERT INTO outbox (tenants, wallet_ids, payloads, events, created_at) VALUES ($5, $1, $2, $3, $4)",
            )
            .await?,
            &[&wallets, &payloads, &count, &now, &tenants],
        )
        .await?;
    Ok(())
}

/// How many events wait in the outbox, and since when the oldest has.
pub async fn outbox_backlog(
    client: &impl tokio_postgres::GenericClient,
) -> Result<(i64, Option<DateTime<Utc>>), StoreError> {
    let row = client
        .query_one(
            "SELECT coalesce(sum(events), 0)::bigint, min(created_at) FROM outbox",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// An event waiting in the outbox, in the row of the transaction that wrote it.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub row: i64,
    /// The wallet the event is about, in its tenant; the events topic is keyed by its id.
    pub wallet: ScopedWalletId,
    pub payload: String,
}

/// The oldest rows' events in the order they were written: whole rows, at least one, until
/// they hold `limit` events. Nothing is locked: a row stays until its events are published,
/// so any relay asking meanwhile starts from it rather than skipping ahead, which keeps every
/// wallet's events in order.
pub async fn oldest_events(
    client: &impl GenericClient,
    limit: i64,
) -> Result<Vec<OutboxRow>, StoreError> {
    let oldest = client
        .query(
            &prepared(client, "SELECT id, events FROM outbox ORDER BY id LIMIT $1").await?,
            &[&limit],
        )
        .await?;
    let counts: Vec<(i64, i32)> = oldest.iter().map(|row| (row.get(0), row.get(1))).collect();
    let (ids, events) = whole_rows(&counts, limit);
    let rows = client
        .query(
            &prepared(
                client,
                "SELECT id, tenants, wallet_ids, payloads FROM outbox WHERE id = ANY($1) ORDER BY id",
            )
            .await?,
            &[&ids],
        )
        .await?;
    let mut found = Vec::with_capacity(events.max(0) as usize);
    for row in &rows {
        let id: i64 = row.get(0);
        let tenants: Vec<String> = row.get(1);
        let wallets: Vec<Uuid> = row.get(2);
        let payloads: Vec<String> = row.get(3);
        if wallets.len() != payloads.len() || tenants.len() != payloads.len() {
            return Err(StoreError::Corrupt(format!(
                "outbox row {id} has {} wallets and {} tenants for {} events",
                wallets.len(),
                tenants.len(),
                payloads.len()
            )));
        }
        found.extend(tenants.into_iter().zip(wallets).zip(payloads).map(
            |((tenant, wallet), payload)| OutboxRow {
                row: id,
                wallet: ScopedWalletId {
                    tenant,
                    id: WalletId(wallet),
                },
                payload,
            },
        ));
    }
    Ok(found)
}

/// The first rows, at least one, whose events add up to at most `limit`, and their events.
fn whole_rows(counts: &[(i64, i32)], limit: i64) -> (Vec<i64>, i64) {
    let mut ids = Vec::new();
    let mut events = 0i64;
    for &(id, count) in counts {
        if !ids.is_empty() && events + i64::from(count) > limit {
            break;
        }
        ids.push(id);
        events += i64::from(count);
    }
    (ids, events)
}

pub async fn delete_events(client: &impl GenericClient, ids: &[i64]) -> Result<(), StoreError> {
    client
        .execute(
            &prepared(client, "DELETE FROM outbox WHERE id = ANY($1)").await?,
            &[&ids],
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::whole_rows;

    /// Proves a round takes whole rows up to its limit, and one row even when it holds more.
    #[test]
    fn a_round_takes_whole_rows_up_to_its_limit() {
        let counts = [(1, 3), (2, 4000), (3, 1)];
        assert_eq!(whole_rows(&counts, 2000), (vec![1], 3));
        assert_eq!(whole_rows(&counts[1..], 2000), (vec![2], 4000));
        assert_eq!(whole_rows(&counts, 4003), (vec![1, 2], 4003));
        assert_eq!(whole_rows(&counts, 10_000), (vec![1, 2, 3], 4004));
        assert_eq!(whole_rows(&[], 10), (vec![], 0));
    }
}
