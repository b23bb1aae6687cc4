//! Operation markers `op:{tenant}:{id}`: the idempotency record of a request and, once a
//! worker has decided the operation, its final status. Ids are scoped by tenant here as
//! everywhere, so one tenant's marker can never block or reveal another's.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::decisions::DECIDED_CHANNEL;
use super::{Cache, CacheError};
use crate::ledger::types::{ScopedId, WalletId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MarkerState {
    /// The API is producing the operation; nobody knows yet whether the broker has it.
    Accepting,
    /// The produce failed, and a failed produce may still have written the record: the id
    /// stays bound to this content until a worker decides it (or the marker's TTL ends), so
    /// the same request may be retried and another one is refused.
    Uncertain,
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

/// Replaces this request's own marker (ARGV[1]) with ARGV[2]; also writes it when the marker
/// has expired, but never over another request's marker or a final status a worker already
/// wrote.
const REPLACE_OWN: &str = r#"
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"#;

/// Tenants are letters, digits, '-' and '_', so the colon keeps keys unambiguous.
pub(super) fn key(id: &ScopedId) -> String {
    format!("op:{}:{}", id.tenant, id.id)
}

impl Cache {
    pub async fn marker(&self, id: &ScopedId) -> Result<Option<Marker>, CacheError> {
        let key = key(id);
        self.with_connection(|mut connection| async move {
            let stored: Option<String> = redis::cmd("GET")
                .arg(key)
                .query_async(&mut connection)
                .await?;
            Ok(stored.map(|text| serde_json::from_str(&text)).transpose()?)
        })
        .await
    }

    /// Writes an `Accepting` marker unless one exists; returns whether this call wrote it.
    /// The short TTL bounds how long a crashed request can block its retries.
    pub async fn claim(&self, id: &ScopedId, marker: &Marker) -> Result<bool, CacheError> {
        let value = serde_json::to_string(marker)?;
        let ttl = self.accepting_ttl_s;
        let key = key(id);
        self.with_connection(|mut connection| async move {
            let written: Option<String> = redis::cmd("SET")
                .arg(key)
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

    /// Replaces this request's own marker `from` with `to`: `Pending` after the broker's
    /// acknowledgement, `Uncertain` after a failed produce. `to` keeps the id for the
    /// markers' full TTL.
    pub async fn replace_own(
        &self,
        id: &ScopedId,
        from: &Marker,
        to: &Marker,
    ) -> Result<(), CacheError> {
        let (from, to) = (serde_json::to_string(from)?, serde_json::to_string(to)?);
        let ttl = self.marker_ttl_s;
        let key = key(id);
        self.with_connection(|mut connection| async move {
            redis::cmd("EVAL")
                .arg(REPLACE_OWN)
                .arg(1)
                .arg(key)
                .arg(from)
                .arg(to)
                .arg(ttl)
                .query_async::<i64>(&mut connection)
                .await?;
            Ok(())
        })
        .await
    }

    /// Stores final statuses written by a worker after its commit and announces them to the
    /// requests waiting for them, in one round trip.
    pub async fn store_outcomes(&self, outcomes: &[(ScopedId, Marker)]) -> Result<(), CacheError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let mut pipeline = redis::pipe();
        let mut decided = String::new();
        for (id, marker) in outcomes {
            decided.push_str(&key(id));
            decided.push('\n');
            pipeline
                .cmd("SET")
                .arg(key(id))
                .arg(serde_json::to_string(marker)?)
                .arg("EX")
                .arg(self.marker_ttl_s)
                .ignore();
        }
        pipeline
            .cmd("PUBLISH")
            .arg(DECIDED_CHANNEL)
            .arg(decided)
            .ignore();
        self.with_connection(|mut connection| async move {
            pipeline.query_async::<()>(&mut connection).await?;
            Ok(())
        })
        .await
    }
}
