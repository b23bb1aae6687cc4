//! Consumer positions: where a worker resumes a partition, and the fence that refuses a
//! batch from a worker that no longer owns it.

use deadpool_postgres::GenericClient;

use super::{prepared, Batch, StoreError};

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
