//! Operation markers `op:{id}`: the idempotency record of a request and, once a worker has
//! decided the operation, its final status.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Cache, CacheError};
use crate::ledger::types::{OperationId, WalletId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MarkerState {
    /// The API is producing the operation; nobody knows yet whether the broker has it.
    Accepting,
    /// The broker acknowledged the operation; no worker has decided it yet.
    Pending,
    Processed,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Marker {
    pub state: MarkerState,
    pub wallet_id: WalletId,
    pub fingerprint: String,
    pub accepted_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance_after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed_at: Option<DateTime<Utc>>,
}

/// Replaces this request's own `Accepting` marker (ARGV[1]) with `Pending` (ARGV[2]); also
/// writes it when the marker has expired, but never over another request's marker or a final
/// status a worker already wrote.
const PROMOTE_TO_PENDING: &str = r#"
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"#;

/// Deletes the marker only while it is still this request's `Accepting` marker (ARGV[1]).
const RELEASE_OWN: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

fn key(id: OperationId) -> String {
    format!("op:{id}")
}

impl Cache {
    pub async fn marker(&self, id: OperationId) -> Result<Option<Marker>, CacheError> {
        self.with_connection(|mut connection| async move {
            let stored: Option<String> = redis::cmd("GET")
                .arg(key(id))
                .query_async(&mut connection)
                .await?;
            Ok(stored.map(|text| serde_json::from_str(&text)).transpose()?)
        })
        .await
    }

    /// Writes an `Accepting` marker unless one exists; returns whether this call wrote it.
    /// The short TTL bounds how long a crashed request can block its retries.
    pub async fn claim(&self, id: OperationId, marker: &Marker) -> Result<bool, CacheError> {
        let value = serde_json::to_string(marker)?;
        let ttl = self.accepting_ttl_s;
        self.with_connection(|mut connection| async move {
            let written: Option<String> = redis::cmd("SET")
                .arg(key(id))
                .arg(value)
                .arg("NX")
                .arg("EX")
                .arg(ttl)
                .query_async(&mut connection)
                .await?;
            Ok(written.is_some())
        })
        .await
    }

    /// Turns this request's `Accepting` marker into `pending` after the broker's
    /// acknowledgement.
    pub async fn promote(
        &self,
        id: OperationId,
        accepting: &Marker,
        pending: &Marker,
    ) -> Result<(), CacheError> {
        let (accepting, pending) = (
            serde_json::to_string(accepting)?,
            serde_json::to_string(pending)?,
        );
        let ttl = self.marker_ttl_s;
        self.with_connection(|mut connection| async move {
            redis::cmd("EVAL")
                .arg(PROMOTE_TO_PENDING)
                .arg(1)
                .arg(key(id))
                .arg(accepting)
                .arg(pending)
                .arg(ttl)
                .query_async::<i64>(&mut connection)
                .await?;
            Ok(())
        })
        .await
    }

    /// Forgets this request's `Accepting` marker after its produce failed, so the client may
    /// retry at once; any other marker stays.
    pub async fn release(&self, id: OperationId, accepting: &Marker) -> Result<(), CacheError> {
        let accepting = serde_json::to_string(accepting)?;
        self.with_connection(|mut connection| async move {
            redis::cmd("EVAL")
                .arg(RELEASE_OWN)
                .arg(1)
                .arg(key(id))
                .arg(accepting)
                .query_async::<i64>(&mut connection)
                .await?;
            Ok(())
        })
        .await
    }

    /// Stores final statuses written by a worker after its commit, in one round trip.
    pub async fn store_outcomes(
        &self,
        outcomes: &[(OperationId, Marker)],
    ) -> Result<(), CacheError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let mut pipeline = redis::pipe();
        for (id, marker) in outcomes {
            pipeline
                .cmd("SET")
                .arg(key(*id))
                .arg(serde_json::to_string(marker)?)
                .arg("EX")
                .arg(self.marker_ttl_s)
                .ignore();
        }
        self.with_connection(|mut connection| async move {
            pipeline.query_async::<()>(&mut connection).await?;
            Ok(())
        })
        .await
    }
}
