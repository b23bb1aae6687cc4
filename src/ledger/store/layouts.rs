//! The partition count each operations topic was first used with.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

use super::{prepared, StoreError};

/// Records `found` as `topic`'s partition count unless one is recorded, and answers the
/// recorded one: the same for every caller from the first on.
pub async fn record_partitions(
    client: &impl GenericClient,
    topic: &str,
    found: i32,
    now: DateTime<Utc>,
) -> Result<i32, StoreError> {
    client
        .execute(
            &prepared(
                client,
                "INSERT INTO topic_layouts (topic, partitions, recorded_at) VALUES ($1, $2, $3)
                 ON CONFLICT (topic) DO NOTHING",
            )
            .await?,
            &[&topic, &found, &now],
        )
        .await?;
    Ok(recorded_partitions(client, topic).await?.unwrap_or(found))
}

/// The partition count recorded for `topic`, if any.
pub async fn recorded_partitions(
    client: &impl GenericClient,
    topic: &str,
) -> Result<Option<i32>, StoreError> {
    let row = client
        .query_opt(
            &prepared(
                client,
                "SELECT partitions FROM topic_layouts WHERE topic = $1",
            )
            .await?,
            &[&topic],
        )
        .await?;
    Ok(row.map(|row| row.get(0)))
}
