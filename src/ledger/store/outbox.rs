//! The outbox: events written in the batch transaction, read and deleted by the relay.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use uuid::Uuid;

use super::{prepared, StoreError};
use crate::ledger::events::Event;
use crate::ledger::types::WalletId;

pub(super) async fn write_outbox(
    client: &impl GenericClient,
    events: &[Event],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = events.iter().map(|event| event.event_id).collect();
    let wallets: Vec<Uuid> = events.iter().map(|event| event.wallet_id.0).collect();
    let payloads = events
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<Vec<String>, _>>()
        .map_err(StoreError::corrupt)?;
    // WITH ORDINALITY keeps the journal order in the ids the relay publishes by.
    client
        .execute(
            &prepared(
                client,
                "INSERT INTO outbox (event_id, wallet_id, payload, created_at)
                 SELECT event_id, wallet_id, payload, $4
                 FROM unnest($1::uuid[], $2::uuid[], $3::text[]) WITH ORDINALITY AS t(event_id, wallet_id, payload, n)
                 ORDER BY n",
            )
            .await?,
            &[&ids, &wallets, &payloads, &now],
        )
        .await?;
    Ok(())
}

/// How many events wait in the outbox, and since when the oldest has.
pub async fn outbox_backlog(
    client: &impl tokio_postgres::GenericClient,
) -> Result<(i64, Option<DateTime<Utc>>), StoreError> {
    let row = client
        .query_one("SELECT count(*), min(created_at) FROM outbox", &[])
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// An event waiting in the outbox.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub wallet_id: WalletId,
    pub payload: String,
}

/// Locks and returns the oldest events, in the order they were written. A second relay asking
/// meanwhile waits for this one's transaction rather than skipping ahead, which keeps every
/// wallet's events in order.
pub async fn oldest_events(
    client: &impl GenericClient,
    limit: i64,
) -> Result<Vec<OutboxRow>, StoreError> {
    let rows = client
        .query(
            &prepared(
                client,
                "SELECT id, wallet_id, payload FROM outbox ORDER BY id LIMIT $1 FOR UPDATE",
            )
            .await?,
            &[&limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| OutboxRow {
            id: row.get(0),
            wallet_id: WalletId(row.get(1)),
            payload: row.get(2),
        })
        .collect())
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
