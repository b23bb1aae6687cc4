//! Redis: a fast, disposable copy of balances and operation statuses. Never the truth; every
//! read that misses or fails falls back to PostgreSQL.

mod balances;
mod markers;

use deadpool_redis::redis;
use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use deadpool_redis::{Pool, PoolConfig, Runtime, Timeouts};

pub use balances::CachedWallet;
pub use markers::{Marker, MarkerState};

use crate::config::RedisConfig;

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
    #[error("no Redis connection: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis holds an unreadable entry: {0}")]
    Corrupt(#[from] serde_json::Error),
}

impl Cache {
    pub fn new(config: &RedisConfig) -> anyhow::Result<Cache> {
        let timeout = Duration::from_millis(config.timeout_ms);
        let mut pool_config = deadpool_redis::Config::from_url(config.url.clone());
        pool_config.pool = Some(PoolConfig {
            max_size: config.pool_size,
            timeouts: Timeouts {
                wait: Some(timeout),
                create: Some(timeout),
                recycle: Some(timeout),
            },
            ..PoolConfig::default()
        });
        let pool = pool_config
            .create_pool(Some(Runtime::Tokio1))
            .context("configuration: key `redis.url`")?;
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
        F: FnOnce(deadpool_redis::Connection) -> Fut,
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
