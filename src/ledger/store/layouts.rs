//! The partition count each operations topic was first used with.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

use super::{prepared, StoreError};

/// The partition count recorded for `topic`; the first caller records `found`, the count the
/// broker gives it now, so the answer is the same for every process from then on.
pub async fn recorded_partitions(
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
    let row = client
        .query_one(
            &prepared(
                client,
                "SELECT partitions FROM topic_layouts WHERE topic = $1",
            )
            .await?,
            &[&topic],
        )
        .await?;
    Ok(row.get(0))
}
