//! The outbox relay: publishes the events the batch transactions stored to the events topic,
//! keyed by wallet, then deletes them. At least once: a crash between publishing and deleting
//! publishes again, and consumers drop repeats by `eventId` (or by the wallet's `version`).
//!
//! No transaction is open while the relay publishes. Its sessions end a transaction left idle
//! for half the lease lapse, and one round may spend longer than that on the broker (a slow or
//! paused broker, a large row sent in many requests): holding the rows' locks meanwhile made
//! every such round fail at its delete and publish the same events again, forever. A relay
//! that lost its lead while publishing may publish a row that its successor publishes too;
//! each event is still first published in its wallet's order, and repeats are dropped as
//! after a crash.
//!
//! The outbox is also the durable record of which wallets changed, so before deleting the
//! events the relay writes those wallets' current balances to the cache. The worker that
//! committed them has normally done so already, in this process, and then the relay skips
//! them; this covers a worker that died or was stopped between its commit and its own cache
//! write, which would otherwise leave the cache behind until the wallet's next change.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use futures::future::try_join_all;
use rskafka::client::partition::{Compression, PartitionClient};
use rskafka::client::Client;
use rskafka::record::Record;
use tokio_util::sync::CancellationToken;

use super::{broker, partitioner};
use crate::cache::{self, Cache, CachedWallet};
use crate::config::{KafkaConfig, WorkerConfig};
use crate::ledger::database;
use crate::ledger::store::{self, OutboxRow};
use crate::ledger::types::ScopedWalletId;

/// Uncompressed bytes of events per produce request.
const RELAY_REQUEST_BYTES_MAX: usize = 256 * 1024;
/// The first retry after a failed round waits twice this.
const RETRY_STEP: Duration = Duration::from_millis(50);

pub struct OutboxRelay {
    pool: deadpool_postgres::Pool,
    cache: Cache,
    partitions: Vec<Arc<PartitionClient>>,
    config: WorkerConfig,
    kafka: KafkaConfig,
}

impl OutboxRelay {
    pub async fn connect(
        client: &Client,
        kafka: &KafkaConfig,
        config: &WorkerConfig,
        pool: deadpool_postgres::Pool,
        cache: Cache,
    ) -> anyhow::Result<Self> {
        let count = broker::partition_count(client, kafka, &kafka.events_topic).await?;
        let mut partitions = Vec::with_capacity(count as usize);
        for partition in 0..count {
            partitions
                .push(broker::partition(client, kafka, &kafka.events_topic, partition).await?);
        }
        Ok(OutboxRelay {
            pool,
            cache,
            partitions,
            config: config.clone(),
            kafka: kafka.clone(),
        })
    }

    /// Publishes until cancelled; pauses while the outbox is empty and backs off on errors
    /// (the rows stay, so nothing is lost while the broker is away).
    #[tracing::instrument(skip_all)]
    pub async fn run(self, cancel: CancellationToken) {
        let mut failures = 0u32;
        loop {
            let pause = match self.publish_once().await {
                Ok(0) => Duration::from_millis(self.config.relay_idle_ms),
                Ok(_) => {
                    failures = 0;
                    continue;
                }
                Err(error) => {
                    failures += 1;
                    let max = Duration::from_millis(self.config.retry_backoff_max_ms);
                    let delay = super::backoff(failures, RETRY_STEP, max);
                    tracing::warn!(error = %format!("{error:#}"), retry_in_ms = delay.as_millis() as u64, "events not published; retrying");
                    delay
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One round: read the oldest events, publish them partition by partition (in order within
    /// each), bring the cache up to date for their wallets, delete them. Returns how many were
    /// published.
    async fn publish_once(&self) -> anyhow::Result<usize> {
        let client = database::client(&self.pool).await?;
        let rows = store::oldest_events(&client, self.config.relay_batch_max as i64).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let count = self.partitions.len() as i32;
        let mut by_partition: Vec<Vec<&OutboxRow>> = vec![Vec::new(); self.partitions.len()];
        for row in &rows {
            by_partition[partitioner::partition_for(row.wallet.id, count) as usize].push(row);
        }
        let publishes = by_partition
            .iter()
            .enumerate()
            .filter(|(_, rows)| !rows.is_empty())
            .map(|(partition, rows)| self.publish(&self.partitions[partition], rows));
        try_join_all(publishes).await?;
        self.refresh_cache(&client, &rows).await?;
        let mut ids: Vec<i64> = rows.iter().map(|row| row.row).collect();
        ids.dedup();
        store::delete_events(&client, &ids).await?;
        Ok(rows.len())
    }

    /// Writes the current balance of every wallet the events name to the cache, through its
    /// version guard, unless this process lately wrote the version of the wallet's last event
    /// or a newer one (the committing worker normally has). Before the events are deleted, so
    /// a relay that dies here leaves them for the next one to publish and refresh again. Redis
    /// being away is logged, not an error: events never wait for the cache, and reads fall
    /// back to PostgreSQL meanwhile.
    async fn refresh_cache(
        &self,
        client: &impl deadpool_postgres::GenericClient,
        rows: &[OutboxRow],
    ) -> anyhow::Result<()> {
        let ids: Vec<ScopedWalletId> = newest_versions(rows)
            .into_iter()
            .filter(|(wallet, version)| !self.cache.holds_balance(wallet, *version))
            .map(|(wallet, _)| wallet)
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let wallets = store::wallets(client, &ids)
            .await
            .context("reading the wallets of the events")?;
        let cached: Vec<CachedWallet> = wallets.iter().map(CachedWallet::from).collect();
        for chunk in cached.chunks(cache::WRITE_CHUNK) {
            if let Err(error) = self.cache.refresh_balances(chunk).await {
                tracing::warn!(%error, wallets = cached.len(), "cannot refresh the cache from the outbox");
                break;
            }
        }
        Ok(())
    }

    /// Produces `rows` to one partition in order, in large LZ4-compressed requests: the broker
    /// pays per request and per byte, and events are read by other systems, so throughput
    /// matters more here than the few milliseconds a large request can wait on Nagle.
    async fn publish(
        &self,
        partition: &PartitionClient,
        rows: &[&OutboxRow],
    ) -> anyhow::Result<()> {
        let mut request: Vec<Record> = Vec::new();
        let mut bytes = 0;
        for row in rows {
            let record = Record {
                key: Some(row.wallet.id.to_string().into_bytes()),
                value: Some(row.payload.clone().into_bytes()),
                headers: Default::default(),
                timestamp: Utc::now(),
            };
            let size = record.approximate_size();
            if bytes + size > RELAY_REQUEST_BYTES_MAX && !request.is_empty() {
                self.produce(partition, std::mem::take(&mut request))
                    .await?;
                bytes = 0;
            }
            bytes += size;
            request.push(record);
        }
        self.produce(partition, request).await
    }

    async fn produce(
        &self,
        partition: &PartitionClient,
        records: Vec<Record>,
    ) -> anyhow::Result<()> {
        tokio::time::timeout(
            self.kafka.request_timeout(),
            partition.produce(records, Compression::Lz4),
        )
        .await
        .context("publishing events timed out")??;
        Ok(())
    }
}

/// The part of an event the cache refresh needs: the wallet's version after it.
#[derive(serde::Deserialize)]
struct VersionOf {
    version: Option<i64>,
}

/// Each wallet the events changed, with its version after the last of them. An event
/// without a version (an operation on a wallet that does not exist) changed nothing; one
/// that cannot be read counts as the newest possible version, so its wallet is read again.
fn newest_versions(rows: &[OutboxRow]) -> HashMap<ScopedWalletId, i64> {
    let mut newest: HashMap<ScopedWalletId, i64> = HashMap::new();
    for row in rows {
        let version = match serde_json::from_str::<VersionOf>(&row.payload) {
            Ok(VersionOf {
                version: Some(version),
            }) => version,
            Ok(VersionOf { version: None }) => continue,
            Err(_) => i64::MAX,
        };
        let entry = newest.entry(row.wallet.clone()).or_insert(version);
        *entry = (*entry).max(version);
    }
    newest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wallet(tenant: &str, wallet: u128) -> ScopedWalletId {
        ScopedWalletId {
            tenant: tenant.to_owned(),
            id: crate::ledger::types::WalletId(uuid::Uuid::from_u128(wallet)),
        }
    }

    fn row(wallet: ScopedWalletId, payload: &str) -> OutboxRow {
        OutboxRow {
            row: 1,
            wallet,
            payload: payload.to_owned(),
        }
    }

    /// Proves each wallet is refreshed at its last event's version, a wallet that does not
    /// exist not at all, one whose event cannot be read always, and another tenant's wallet
    /// with the same id at its own version.
    #[test]
    fn the_newest_version_of_each_wallet_is_refreshed() {
        let rows = [
            row(wallet("acme", 1), r#"{"walletId":"x","version":7}"#),
            row(
                wallet("acme", 1),
                r#"{"version":9,"type":"OperationProcessed"}"#,
            ),
            row(wallet("acme", 1), r#"{"version":8}"#),
            row(wallet("globex", 1), r#"{"version":2}"#),
            row(wallet("acme", 2), r#"{"type":"OperationFailed"}"#),
            row(wallet("acme", 3), "not json"),
        ];
        let newest = newest_versions(&rows);
        assert_eq!(newest.len(), 3);
        assert_eq!(newest[&wallet("acme", 1)], 9);
        assert_eq!(newest[&wallet("globex", 1)], 2);
        assert_eq!(newest[&wallet("acme", 3)], i64::MAX);
    }
}
