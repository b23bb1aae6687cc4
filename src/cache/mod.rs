//! Redis: a fast, disposable copy of balances and operation statuses. Never the truth; every
//! read that misses or fails falls back to PostgreSQL.

mod balances;
mod decisions;
mod markers;
mod written;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

pub use balances::CachedWallet;
pub use decisions::{Decisions, Watch};
pub use markers::{Marker, MarkerState};
use written::RecentWrites;

use crate::config::RedisConfig;

/// Cache entries written per Redis round trip: large enough to amortise the trip, small
/// enough that one write never holds Redis for long.
pub const WRITE_CHUNK: usize = 500;

/// One multiplexed connection serves every concurrent request of a thread (`wallet serve` makes
/// one per HTTP worker thread: a connection whose driver runs on another thread costs every
/// request two cross-thread wake-ups); it reconnects by itself after a failure. (A checkout
/// pool adds a PING round trip to every command: deadpool-redis was measured 35–43 % slower
/// on a hot wallet, see the README's benchmarks.)
#[derive(Clone)]
pub struct Cache {
    client: redis::Client,
    connection: Arc<OnceCell<ConnectionManager>>,
    /// Shared by every connection of the process.
    written: Arc<RecentWrites>,
    timeout: Duration,
    balance_ttl_s: u64,
    marker_ttl_s: u64,
    accepting_ttl_s: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis holds an unreadable entry: {0}")]
    Corrupt(#[from] serde_json::Error),
}

impl Cache {
    /// Prepares the cache; the connection is made on first use, so a process starts even while
    /// Redis is down.
    pub fn new(config: &RedisConfig) -> anyhow::Result<Cache> {
        let client =
            redis::Client::open(config.url.as_str()).context("configuration: key `redis.url`")?;
        Ok(Cache {
            client,
            connection: Arc::new(OnceCell::new()),
            written: Arc::new(RecentWrites::new(Duration::from_secs(config.balance_ttl_s))),
            timeout: Duration::from_millis(config.timeout_ms),
            balance_ttl_s: config.balance_ttl_s,
            marker_ttl_s: config.marker_ttl_s,
            accepting_ttl_s: config.accepting_ttl_s,
        })
    }

    /// The same cache over a connection of its own, made on first use by the task that first
    /// needs it: its driver then runs on that task's thread.
    pub fn on_own_connection(&self) -> Cache {
        Cache {
            connection: Arc::new(OnceCell::new()),
            ..self.clone()
        }
    }

    async fn connection(&self) -> Result<ConnectionManager, CacheError> {
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout);
        let connection = self
            .connection
            .get_or_try_init(|| ConnectionManager::new_with_config(self.client.clone(), config))
            .await?;
        Ok(connection.clone())
    }

    /// Runs one exchange with Redis under the configured deadline.
    async fn with_connection<T, F, Fut>(&self, exchange: F) -> Result<T, CacheError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, CacheError>>,
    {
        let attempt = async {
            let connection = self.connection().await?;
            exchange(connection).await
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .map_err(|_| CacheError::Timeout(self.timeout))?
    }

    /// Answers whether Redis is reachable now.
    pub async fn ping(&self) -> Result<(), CacheError> {
        self.with_connection(|mut connection| async move {
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await?;
            Ok(())
        })
        .await
    }
}
