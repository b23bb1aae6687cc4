//! Consumer positions: where a worker resumes a partition, and the fence that refuses a
//! batch from a worker that no longer owns it.

use deadpool_postgres::GenericClient;

use super::{prepared, Batch, StoreError};
use crate::ledger::types::ScopedId;

/// The partition's stored position, 0 when no worker has started it yet.
pub async fn stored_position(
    client: &impl GenericClient,
    topic: &str,
    partition: i32,
) -> Result<i64, StoreError> {
    let row = client
        .query_opt(
            &prepared(
                client,
                "SELECT next_offset FROM consumer_offsets WHERE topic = $1 AND partition = $2",
            )
            .await?,
            &[&topic, &partition],
        )
        .await?;
    Ok(row.map_or(0, |row| row.get(0)))
}

/// Where a worker resumes a partition; creates the position at offset 0 the first time.
pub async fn next_offset(
    client: &impl GenericClient,
    topic: &str,
    partition: i32,
) -> Result<i64, StoreError> {
    client
        .execute(
            &prepared(
                client,
                "INSERT INTO consumer_offsets (topic, partition, next_offset) VALUES ($1, $2, 0)
             ON CONFLICT DO NOTHING",
            )
            .await?,
            &[&topic, &partition],
        )
        .await?;
    stored_position(client, topic, partition).await
}

/// Whether PostgreSQL holds what became of the record at `offset` of the partition: its
/// operation `id` stored (by this record or an earlier copy of it), or this very record
/// (`payload`) kept as a dead letter there. A dead letter of another record at that offset is
/// one of a topic that has since been recreated. `id` is None for a record that could not be
/// read as an operation.
pub async fn record_applied(
    client: &impl GenericClient,
    topic: &str,
    partition: i32,
    offset: i64,
    payload: Option<&[u8]>,
    id: Option<&ScopedId>,
) -> Result<bool, StoreError> {
    let (tenant, uuid) = id.map(|id| (id.tenant.as_str(), id.id.0)).unzip();
    let row = client
        .query_one(
            &prepared(
                client,
                "SELECT EXISTS (SELECT 1 FROM dead_letters
                                WHERE topic = $1 AND partition = $2 AND \"offset\" = $3
                                  AND payload IS NOT DISTINCT FROM $6)
                     OR EXISTS (SELECT 1 FROM operations WHERE tenant = $4 AND id = $5)",
            )
            .await?,
            &[&topic, &partition, &offset, &tenant, &uuid, &payload],
        )
        .await?;
    Ok(row.get(0))
}

/// Moves the partition's position from `from` to `to`; false when it was no longer at
/// `from` (a worker applied a batch meanwhile). With `retire_as`, the partition's dead letters
/// at `to` and beyond are renamed to that topic in the same statement: they are of the
/// topic before it was recreated, and the records now at their offsets may be kept as dead
/// letters of their own.
pub async fn move_position(
    client: &impl GenericClient,
    topic: &str,
    partition: i32,
    from: i64,
    to: i64,
    retire_as: Option<&str>,
) -> Result<bool, StoreError> {
    let moved: i64 = client
        .query_one(
            &prepared(
                client,
                "WITH moved AS (
                     UPDATE consumer_offsets SET next_offset = $4
                     WHERE topic = $1 AND partition = $2 AND next_offset = $3
                     RETURNING 1
                 ), retired AS (
                     UPDATE dead_letters SET topic = $5
                     WHERE $5::text IS NOT NULL AND topic = $1 AND partition = $2
                       AND \"offset\" >= $4 AND EXISTS (SELECT 1 FROM moved)
                 )
                 SELECT count(*) FROM moved",
            )
            .await?,
            &[&topic, &partition, &from, &to, &retire_as],
        )
        .await?
        .get(0);
    Ok(moved == 1)
}

/// Locks the partition's position and checks that the batch starts there (fencing: a stale
/// owner's batch is refused).
pub(super) async fn lock_position(
    client: &impl GenericClient,
    batch: &Batch,
) -> Result<(), StoreError> {
    let stored: i64 = client
        .query_one(
            &prepared(client, "SELECT next_offset FROM consumer_offsets WHERE topic = $1 AND partition = $2 FOR UPDATE").await?,
            &[&batch.topic, &batch.partition],
        )
        .await?
        .get(0);
    if stored != batch.from_offset {
        return Err(StoreError::Fenced {
            partition: batch.partition,
            expected: batch.from_offset,
            stored,
        });
    }
    Ok(())
}

pub(super) async fn advance_position(
    client: &impl GenericClient,
    batch: &Batch,
) -> Result<(), StoreError> {
    client
        .execute(
            &prepared(
                client,
                "UPDATE consumer_offsets SET next_offset = $3 WHERE topic = $1 AND partition = $2",
            )
            .await?,
            &[&batch.topic, &batch.partition, &batch.next_offset],
        )
        .await?;
    Ok(())
}
