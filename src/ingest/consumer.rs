//! One partition's consumer: fetch from the stored position, cut batches by size or time,
//! apply each in one transaction, then refresh the cache. Runs until cancelled.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rskafka::client::partition::PartitionClient;
use rskafka::record::RecordAndOffset;
use tokio_util::sync::CancellationToken;

use super::codec;
use super::reader::PartitionReader;
use crate::cache::{Cache, CachedWallet, Marker, MarkerState};
use crate::clock;
use crate::config::WorkerConfig;
use crate::ledger::database;
use crate::ledger::money::{format_decimal, Currency};
use crate::ledger::store::{self, Batch, BatchReport, DeadLetter, StoreError};
use crate::ledger::types::{OperationId, Outcome, WalletId};

pub struct PartitionConsumer {
    pub topic: String,
    pub partition: Arc<PartitionClient>,
    pub pool: deadpool_postgres::Pool,
    pub cache: Cache,
    pub config: WorkerConfig,
    pub request_timeout: Duration,
}

/// How often a batch is tried against an error that is not transient before its records are
/// applied one by one.
const REJECTED_ATTEMPTS_MAX: u32 = 3;

enum Attempt {
    Applied(BatchReport),
    Cancelled,
    Rejected(StoreError),
}

/// How long an idle partition waits before retrying cache writes that failed.
const STALE_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// Cache entries written per Redis round trip.
const CACHE_WRITE_CHUNK: usize = 500;
/// Statuses kept for Redis while it is unreachable; beyond this they are dropped.
const STALE_OUTCOMES_MAX: usize = 100_000;

/// Cache entries a failed refresh left behind, retried after the next batch.
#[derive(Default)]
struct StaleCache {
    wallets: HashMap<WalletId, CachedWallet>,
    outcomes: HashMap<OperationId, Marker>,
}

impl PartitionConsumer {
    fn id(&self) -> i32 {
        self.partition.partition()
    }

    #[tracing::instrument(skip_all, fields(partition = self.id()))]
    pub async fn run(self, cancel: CancellationToken) {
        let mut stale = StaleCache::default();
        let mut failures = 0u32;
        while !cancel.is_cancelled() {
            match self.consume(&cancel, &mut stale).await {
                Ok(()) => return,
                Err(error) => {
                    failures += 1;
                    let delay = self.backoff(failures);
                    tracing::warn!(error = %format!("{error:#}"), retry_in_ms = delay.as_millis() as u64, "partition consumer failed; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    fn backoff(&self, failures: u32) -> Duration {
        let millis = 50u64.saturating_mul(1 << failures.min(10));
        Duration::from_millis(millis.min(self.config.retry_backoff_max_ms))
    }

    /// Consumes from the stored position until cancelled (Ok) or an error (Err; the caller
    /// restarts from the stored position, so nothing fetched but unapplied is lost).
    async fn consume(
        &self,
        cancel: &CancellationToken,
        stale: &mut StaleCache,
    ) -> anyhow::Result<()> {
        let mut position = {
            let client = self.pool.get().await?;
            store::next_offset(&client, &self.topic, self.id()).await?
        };
        tracing::info!(position, "consuming partition");
        let linger = Duration::from_millis(self.config.batch_linger_ms);
        let mut reader = self.reader(position);
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                next = reader.next_batch(self.config.batch_records_max, linger, STALE_RETRY_INTERVAL) => next?,
            };
            let Some(records) = next else {
                self.record_lag(&reader, position);
                if !stale.wallets.is_empty() || !stale.outcomes.is_empty() {
                    self.flush_stale(stale).await;
                }
                continue;
            };
            let batch = self.batch(position, records);
            let started = Instant::now();
            match self.apply(&batch, cancel).await {
                Ok(Some(report)) => {
                    let applied = started.elapsed();
                    let applied_ms = applied.as_millis() as u64;
                    let duplicates = report.duplicates;
                    let records = batch.next_offset - batch.from_offset;
                    metrics::histogram!("wallet_batch_operations").record(records as f64);
                    metrics::histogram!("wallet_batch_apply_duration_seconds")
                        .record(applied.as_secs_f64());
                    position = batch.next_offset;
                    self.record_lag(&reader, position);
                    self.refresh_cache(report, &batch, stale).await;
                    tracing::debug!(
                        records,
                        duplicates,
                        applied_ms,
                        cached_ms = started.elapsed().as_millis() as u64 - applied_ms,
                        "batch applied"
                    );
                }
                Ok(None) => return Ok(()),
                Err(StoreError::Fenced { stored, .. }) => {
                    tracing::warn!(stored, "position moved by another worker; resuming from it");
                    position = stored;
                    reader = self.reader(position);
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Records not yet applied: what an operator watches to see whether workers keep up.
    fn record_lag(&self, reader: &PartitionReader, position: i64) {
        let lag = super::lag::lag(reader.high_watermark(), position);
        metrics::gauge!("wallet_consumer_lag", "partition" => self.id().to_string())
            .set(lag as f64);
    }

    fn reader(&self, position: i64) -> PartitionReader {
        PartitionReader::start(
            self.partition.clone(),
            position,
            self.config.clone(),
            self.request_timeout,
        )
    }

    fn batch(&self, from_offset: i64, records: Vec<RecordAndOffset>) -> Batch {
        let next_offset = records
            .last()
            .map_or(from_offset, |record| record.offset + 1);
        let mut batch = Batch {
            topic: self.topic.clone(),
            partition: self.id(),
            from_offset,
            next_offset,
            ..Batch::default()
        };
        for RecordAndOffset { record, offset } in records {
            let decoded = match record.value.as_deref() {
                Some(value) => codec::decode(value).map_err(|error| error.to_string()),
                None => Err("record has no value".to_owned()),
            };
            match decoded {
                Ok(operation) => batch.operations.push((offset, operation)),
                Err(reason) => batch.dead_letters.push(DeadLetter {
                    offset,
                    reason,
                    payload: record.value,
                }),
            }
        }
        batch
    }

    /// Applies the batch. When it keeps failing with an error no retry can fix, its records
    /// are applied one at a time and the one that still fails becomes a dead letter, so one
    /// bad record never stops the partition. Returns None when cancelled before a commit.
    #[tracing::instrument(skip_all, fields(from = batch.from_offset, records = batch.next_offset - batch.from_offset))]
    async fn apply(
        &self,
        batch: &Batch,
        cancel: &CancellationToken,
    ) -> Result<Option<BatchReport>, StoreError> {
        let error = match self.apply_retrying(batch, cancel).await? {
            Attempt::Applied(report) => return Ok(Some(report)),
            Attempt::Cancelled => return Ok(None),
            Attempt::Rejected(error) => error,
        };
        tracing::error!(%error, "batch rejected; applying its records one at a time");
        let mut applied = BatchReport::default();
        for single in batch.split() {
            let report = match self.apply_retrying(&single, cancel).await? {
                Attempt::Applied(report) => report,
                Attempt::Cancelled => return Ok(None),
                Attempt::Rejected(error) => {
                    tracing::error!(%error, offset = single.from_offset, "record rejected; keeping it as a dead letter");
                    match self
                        .apply_retrying(&single.rejected(&error.to_string()), cancel)
                        .await?
                    {
                        Attempt::Applied(report) => report,
                        Attempt::Cancelled => return Ok(None),
                        Attempt::Rejected(error) => return Err(error),
                    }
                }
            };
            applied.merge(report);
        }
        Ok(Some(applied))
    }

    /// One batch transaction, retried with backoff: forever while the error is transient (the
    /// database is away), a few times otherwise.
    async fn apply_retrying(
        &self,
        batch: &Batch,
        cancel: &CancellationToken,
    ) -> Result<Attempt, StoreError> {
        let mut failures = 0u32;
        loop {
            let attempt = async {
                let mut client = database::client(&self.pool).await?;
                store::apply_batch(&mut client, batch, clock::now()).await
            };
            let result = tokio::select! {
                _ = cancel.cancelled() => return Ok(Attempt::Cancelled),
                result = attempt => result,
            };
            let error = match result {
                Ok(report) => return Ok(Attempt::Applied(report)),
                Err(error @ StoreError::Fenced { .. }) => return Err(error),
                Err(error) => error,
            };
            failures += 1;
            if !error.is_transient() && failures >= REJECTED_ATTEMPTS_MAX {
                return Ok(Attempt::Rejected(error));
            }
            let delay = self.backoff(failures);
            tracing::warn!(%error, transient = error.is_transient(), retry_in_ms = delay.as_millis() as u64, "batch not applied; retrying");
            tokio::select! {
                _ = cancel.cancelled() => return Ok(Attempt::Cancelled),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn refresh_cache(&self, report: BatchReport, batch: &Batch, stale: &mut StaleCache) {
        let processed_at = report.processed_at;
        let accepted: HashMap<OperationId, (&str, chrono::DateTime<chrono::Utc>)> = batch
            .operations
            .iter()
            .map(|(_, operation)| {
                (
                    operation.id,
                    (operation.fingerprint.as_str(), operation.accepted_at),
                )
            })
            .collect();
        let currencies: HashMap<WalletId, Currency> = report
            .wallets
            .iter()
            .map(|wallet| (wallet.id, wallet.currency))
            .collect();
        for wallet in &report.wallets {
            stale.wallets.insert(wallet.id, CachedWallet::from(wallet));
        }
        for (id, wallet_id, outcome) in report.decided {
            let (fingerprint, accepted_at) = accepted[&id];
            let currency = currencies.get(&wallet_id).copied();
            let marker = final_marker(
                wallet_id,
                fingerprint,
                accepted_at,
                &outcome,
                currency,
                processed_at,
            );
            stale.outcomes.insert(id, marker);
        }
        if stale.outcomes.len() > STALE_OUTCOMES_MAX {
            // Statuses that never reach Redis are read from PostgreSQL instead; balances are
            // one entry per wallet and always kept.
            tracing::warn!(
                dropped = stale.outcomes.len(),
                "too many statuses waiting for Redis; dropping them"
            );
            stale.outcomes.clear();
        }
        self.flush_stale(stale).await;
    }

    /// Writes what the cache is missing, in bounded round trips; what fails stays for the
    /// next attempt (after the next batch, or the next idle fetch).
    async fn flush_stale(&self, stale: &mut StaleCache) {
        let wallets: Vec<CachedWallet> = stale.wallets.values().cloned().collect();
        for chunk in wallets.chunks(CACHE_WRITE_CHUNK) {
            if let Err(error) = self.cache.store_balances(chunk).await {
                tracing::warn!(%error, pending = stale.wallets.len(), "cache refresh failed; will retry");
                return;
            }
            for wallet in chunk {
                stale.wallets.remove(&wallet.wallet_id);
            }
        }
        let outcomes: Vec<(OperationId, Marker)> = stale
            .outcomes
            .iter()
            .map(|(id, marker)| (*id, marker.clone()))
            .collect();
        for chunk in outcomes.chunks(CACHE_WRITE_CHUNK) {
            if let Err(error) = self.cache.store_outcomes(chunk).await {
                tracing::warn!(%error, pending = stale.outcomes.len(), "status refresh failed; will retry");
                return;
            }
            for (id, _) in chunk {
                stale.outcomes.remove(id);
            }
        }
    }
}

fn final_marker(
    wallet_id: WalletId,
    fingerprint: &str,
    accepted_at: chrono::DateTime<chrono::Utc>,
    outcome: &Outcome,
    currency: Option<Currency>,
    processed_at: chrono::DateTime<chrono::Utc>,
) -> Marker {
    let (state, reason, balance_after) = match outcome {
        Outcome::Processed { balance_after } => (MarkerState::Processed, None, Some(balance_after)),
        Outcome::Failed {
            reason,
            balance_after,
        } => (
            MarkerState::Failed,
            Some(reason.as_str().to_owned()),
            balance_after.as_ref(),
        ),
    };
    Marker {
        state,
        wallet_id,
        fingerprint: fingerprint.to_owned(),
        accepted_at,
        reason,
        balance_after: balance_after.map(|balance| match currency {
            Some(currency) => currency.format(balance),
            None => format_decimal(balance),
        }),
        processed_at: Some(processed_at),
    }
}
