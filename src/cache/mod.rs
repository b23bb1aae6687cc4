//! Redis: a fast, disposable copy of balances and operation statuses. Never the truth; every
//! read that misses or fails falls back to PostgreSQL.

mod balances;
mod decisions;
mod markers;
mod outage;
mod written;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

pub use balances::{BalanceSweep, CachedWallet};
pub use decisions::{Decisions, Watch};
pub use markers::{Marker, MarkerState};
use outage::Outage;
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
    /// Shared by every connection of the process: one that finds Redis down spares the
    /// others their wait.
    outage: Arc<Outage>,
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
    /// Not asked: Redis failed moments ago, with this cause, and is tried again shortly.
    #[error("Redis is unreachable, not asked (last failure: {0})")]
    Unreachable(String),
}

impl CacheError {
    /// Whether the error says Redis cannot be reached (rather than that it answered).
    fn is_unreachable(&self) -> bool {
        match self {
            CacheError::Timeout(_) | CacheError::Unreachable(_) => true,
            CacheError::Redis(error) => {
                error.is_io_error()
                    || error.is_connection_refusal()
                    || error.is_connection_dropped()
                    || error.is_timeout()
            }
            CacheError::Corrupt(_) => false,
        }
    }
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
            outage: Arc::new(Outage::default()),
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

    /// Runs one exchange with Redis under the configured deadline, or fails at once while
    /// Redis is known to be down.
    async fn with_connection<T, F, Fut>(&self, exchange: F) -> Result<T, CacheError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, CacheError>>,
    {
        self.outage.admit()?;
        let result = self.exchange(exchange).await;
        if let (true, Err(error)) = (self.outage.settle(&result), &result) {
            tracing::warn!(%error, "Redis is unreachable; its calls fail at once until it answers again");
            tokio::spawn(self.clone().probe());
        }
        result
    }

    async fn exchange<T, F, Fut>(&self, exchange: F) -> Result<T, CacheError>
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
            .unwrap_or(Err(CacheError::Timeout(self.timeout)))
    }

    /// Asks Redis every [`outage::PROBE_INTERVAL`] until it answers, then ends the outage.
    async fn probe(self) {
        loop {
            tokio::time::sleep(outage::PROBE_INTERVAL).await;
            match self.exchange(ping).await {
                Ok(()) => {
                    tracing::info!("Redis answers again");
                    self.outage.end();
                    return;
                }
                Err(error) => {
                    self.outage.settle(&Err::<(), _>(error));
                }
            }
        }
    }

    /// Changes each time Redis answers again after it could not be reached: what its calls
    /// missed meanwhile (they failed at once) may be asked for again.
    pub fn recoveries(&self) -> tokio::sync::watch::Receiver<u64> {
        self.outage.endings()
    }

    /// Answers whether Redis is reachable now.
    pub async fn ping(&self) -> Result<(), CacheError> {
        self.with_connection(ping).await
    }
}

async fn ping(mut connection: ConnectionManager) -> Result<(), CacheError> {
    redis::cmd("PING")
        .query_async::<String>(&mut connection)
        .await?;
    Ok(())
}
