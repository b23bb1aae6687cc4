//! Redis: a fast, disposable copy of balances and operation statuses. Never the truth; every
//! read that misses or fails falls back to PostgreSQL.

mod balances;
mod markers;

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use deadpool_redis::{Connection, Pool, PoolError, Runtime};

pub use balances::CachedWallet;
pub use markers::{Marker, MarkerState};

use crate::config::RedisConfig;

/// A pool of `redis.pool_size` connections, each checked out by one exchange at a time and
/// checked with a PING when it is checked out again, so a broken one is replaced before use.
#[derive(Clone)]
pub struct Cache {
    pool: Pool,
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
    #[error("no Redis connection: {0}")]
    Pool(#[from] PoolError),
    #[error("Redis holds an unreadable entry: {0}")]
    Corrupt(#[from] serde_json::Error),
}

impl Cache {
    /// Prepares the cache; the connection is made on first use, so a process starts even while
    /// Redis is down.
    pub fn new(config: &RedisConfig) -> anyhow::Result<Cache> {
        let timeout = Duration::from_millis(config.timeout_ms);
        let pool = deadpool_redis::Config::from_url(config.url.as_str())
            .builder()
            .context("configuration: key `redis.url`")?
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .context("configuration: key `redis.pool_size`")?;
        Ok(Cache {
            pool,
            timeout,
            balance_ttl_s: config.balance_ttl_s,
            marker_ttl_s: config.marker_ttl_s,
            accepting_ttl_s: config.accepting_ttl_s,
        })
    }

    /// Runs one exchange with Redis under the configured deadline.
    async fn with_connection<T, F, Fut>(&self, exchange: F) -> Result<T, CacheError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = Result<T, CacheError>>,
    {
        let attempt = async {
            let connection = self.pool.get().await?;
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
