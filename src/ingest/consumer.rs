//! One partition's consumer: fetch from the stored position, cut batches by size or time,
//! apply each in one transaction, then refresh the cache. Runs until cancelled.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rskafka::client::partition::PartitionClient;
use rskafka::record::RecordAndOffset;
use tokio_util::sync::CancellationToken;

use super::codec;
use super::health::WorkerHealth;
use super::outcomes::OutcomeWriter;
use super::owed::{OwedStatuses, OWED_MAX};
use super::reader::{OutOfRange, PartitionReader};
use super::resume::{self, Refusal};
use crate::cache::{self, BalanceSweep, Cache, CachedWallet, Marker};
use crate::clock;
use crate::config::WorkerConfig;
use crate::ledger::database;
use crate::ledger::store::{self, Batch, BatchReport, DeadLetter, Remedy, RetryReason, StoreError};
use crate::ledger::types::{Operation, ScopedId, ScopedWalletId};

pub struct PartitionConsumer {
    pub topic: String,
    pub partition: Arc<PartitionClient>,
    pub pool: deadpool_postgres::Pool,
    pub cache: Cache,
    pub config: WorkerConfig,
    pub request_timeout: Duration,
    pub health: WorkerHealth,
}

enum Attempt {
    Applied(BatchReport),
    Cancelled,
    Rejected(StoreError),
    /// The batch could not finish within the statement timeout: these halves replace it.
    TooSlow([Batch; 2]),
}

/// What a part the database refuses for a record's data is taken to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Blame {
    /// A record to find: the part's records are applied one at a time, and a single one
    /// refused is kept as a dead letter.
    Find,
    /// Its records kept as dead letters already: a refusal is not theirs, and an error.
    Kept,
}

/// How long an idle partition waits before retrying cache writes that failed.
const STALE_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// The first retry of a failed batch or consumer waits twice this.
const RETRY_STEP: Duration = Duration::from_millis(50);
/// SCAN rounds (of about `cache::WRITE_CHUNK` keys each) that one flush of the stale cache
/// takes the walk dropping every cached balance: with millions of keys in Redis, walking them
/// all at once would stall the partition when its backlog is largest.
const SWEEP_ROUNDS: usize = 20;

/// Balances a failed refresh left behind, retried after the next batch.
///
/// A balance is written only while it is surely the newest: right after its commit. Once it
/// is late (a retry after a failed write, a write after this worker was paused or lost the
/// partition), another worker may have written newer ones and Redis may have lost those
/// (restart, flush): writing the old one would make reads go back in version. A late entry
/// is dropped from Redis instead, and the next read fills it from PostgreSQL. While Redis
/// stays down the wallets to drop pile up; beyond `forget_max` of them the list is given up
/// for "every cached balance": all are dropped once Redis is back, by a walk through Redis
/// that goes `SWEEP_ROUNDS` SCAN rounds further each time the list would be flushed.
struct StaleCache {
    wallets: HashMap<ScopedWalletId, CachedWallet>,
    forget: HashSet<ScopedWalletId>,
    forget_max: usize,
    /// The walk dropping every cached balance, while one is to be made.
    sweep: Option<BalanceSweep>,
}

/// Reading the partition from the broker failed. rskafka keeps the metadata it read while a
/// restarting broker had no leader and answers `LeaderNotAvailable` from it for as long as
/// the client lives, so after `FETCH_FAILURES_MAX` such failures in a row the consumer ends,
/// and the worker reads the partition again through a new client.
#[derive(Debug, thiserror::Error)]
#[error("reading the partition from the broker")]
struct FetchFailed;

const FETCH_FAILURES_MAX: u32 = 3;

impl PartitionConsumer {
    fn id(&self) -> i32 {
        self.partition.partition()
    }

    #[tracing::instrument(skip_all, fields(partition = self.id()))]
    pub async fn run(self, cancel: CancellationToken) {
        self.consume_until_cancelled(&cancel).await;
        // Whatever this partition waited for is no longer this worker's concern.
        self.health.recovered(self.id());
    }

    async fn consume_until_cancelled(&self, cancel: &CancellationToken) {
        let outcomes = OutcomeWriter::start(self.cache.clone());
        self.consume_with(cancel, &outcomes).await;
        outcomes.finish(self.request_timeout).await;
    }

    async fn consume_with(&self, cancel: &CancellationToken, outcomes: &OutcomeWriter) {
        let mut stale = StaleCache::new(self.config.balance_drops_max);
        let mut owed = OwedStatuses::new(OWED_MAX);
        let mut failures = 0u32;
        let mut fetch_failures = 0u32;
        while !cancel.is_cancelled() {
            match self.consume(cancel, &mut stale, &mut owed, outcomes).await {
                Ok(()) => return,
                Err(error) => {
                    failures += 1;
                    let delay = self.backoff(failures);
                    fetch_failures = match error.downcast_ref::<FetchFailed>() {
                        Some(_) => fetch_failures + 1,
                        None => 0,
                    };
                    if let Some(refusal) = error.downcast_ref::<Refusal>() {
                        self.refuse(refusal, delay);
                    } else if fetch_failures >= FETCH_FAILURES_MAX {
                        tracing::warn!(error = %format!("{error:#}"), "the broker keeps refusing reads; handing the partition back for a new broker client");
                        return;
                    } else {
                        tracing::warn!(error = %format!("{error:#}"), retry_in_ms = delay.as_millis() as u64, "partition consumer failed; retrying");
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Keeps the partition, applying nothing, until an operator moves its stored position;
    /// it is checked again after `delay`.
    fn refuse(&self, refusal: &Refusal, delay: Duration) {
        let held = refusal.held();
        tracing::error!(
            topic = %self.topic,
            partition = self.id(),
            stored_position = refusal.position(),
            log_start = held.log_start,
            end = held.end,
            error = %refusal,
            recheck_in_ms = delay.as_millis() as u64,
            "refusing to apply the partition from its stored position; see `wallet reposition`"
        );
        self.health.refused(self.id(), refusal.to_string());
        self.record_refused(true);
    }

    fn record_refused(&self, refused: bool) {
        metrics::gauge!("wallet_partition_refused", "partition" => self.id().to_string())
            .set(if refused { 1.0 } else { 0.0 });
    }

    /// The partition's stored position, once it is checked against the broker: a refused one
    /// is an error carrying the [`Refusal`].
    async fn resume_position(&self) -> anyhow::Result<i64> {
        let client = database::client(&self.pool)
            .await
            .map_err(|error| self.waiting_on(&error))?;
        let position = store::next_offset(&client, &self.topic, self.id())
            .await
            .map_err(|error| self.waiting_on(&error))?;
        let held = resume::held(&self.partition, self.request_timeout)
            .await
            .context(FetchFailed)?;
        let checked = resume::check(
            &self.partition,
            held,
            &client,
            &self.topic,
            position,
            self.request_timeout,
        )
        .await?;
        checked?;
        // The partition starts: whatever kept it from starting is over, and a batch that
        // fails again reports itself.
        self.health.recovered(self.id());
        self.record_refused(false);
        Ok(position)
    }

    /// `error`, which stops the partition until the consumer starts again, described with
    /// its SQLSTATE; the partition is reported retrying meanwhile, as one whose batch fails
    /// is, so readiness names the cause.
    fn waiting_on(&self, error: &StoreError) -> anyhow::Error {
        let reason = match error.remedy() {
            Remedy::Retry(retry) => retry.as_str(),
            Remedy::Reject => "rejected",
        };
        self.health
            .retrying(self.id(), format!("{reason}: {}", error.summary()));
        anyhow::anyhow!("{}", error.describe())
    }

    fn backoff(&self, failures: u32) -> Duration {
        let max = Duration::from_millis(self.config.retry_backoff_max_ms);
        super::backoff(failures, RETRY_STEP, max)
    }

    /// Consumes from the stored position until cancelled (Ok) or an error (Err; the caller
    /// restarts from the stored position, so nothing fetched but unapplied is lost).
    async fn consume(
        &self,
        cancel: &CancellationToken,
        stale: &mut StaleCache,
        owed: &mut OwedStatuses,
        outcomes: &OutcomeWriter,
    ) -> anyhow::Result<()> {
        let mut position = self.resume_position().await?;
        tracing::info!(position, "consuming partition");
        let linger = Duration::from_millis(self.config.batch_linger_ms);
        let mut reader = self.reader(position);
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                next = reader.next_batch(self.config.batch_records_max, linger, STALE_RETRY_INTERVAL) => next.map_err(|error| match error.is::<OutOfRange>() {
                    // Not the broker's fault: the position is checked again before any read.
                    true => error,
                    false => error.context(FetchFailed),
                })?,
            };
            let Some(records) = next else {
                self.record_lag(&reader, position);
                if !stale.is_empty() {
                    self.flush_stale(stale).await;
                }
                if !owed.is_empty() {
                    self.send_owed(owed, outcomes).await;
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
                    self.refresh_cache(&report, stale).await;
                    outcomes.send(final_markers(&report)).await;
                    owed.owe(stored_before(&batch, &report));
                    if !owed.is_empty() {
                        self.send_owed(owed, outcomes).await;
                    }
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
                    self.finalise_fenced(&batch, stored, stale, owed, outcomes)
                        .await;
                    position = stored;
                    reader = self.reader(position);
                }
                Err(error) => return Err(self.waiting_on(&error)),
            }
        }
    }

    /// Sends the final status of each of a fenced batch's operations that PostgreSQL holds
    /// decided (`stored` is where the partition's position was found), and drops their wallets' balances from the cache, so the next reads fill
    /// them from PostgreSQL. The batch may have committed (all of it, or some of its parts)
    /// while its answer was lost: nothing else would then write its statuses, and a retried
    /// request or a `Prefer: wait` would answer PENDING from the marker until its TTL. Final
    /// statuses are the stored truth, so writing them is right whoever decided them; the
    /// balances are not written, as this worker cannot tell whether they are the newest.
    async fn finalise_fenced(
        &self,
        batch: &Batch,
        stored: i64,
        stale: &mut StaleCache,
        owed: &mut OwedStatuses,
        outcomes: &OutcomeWriter,
    ) {
        match stored >= batch.next_offset {
            true => tracing::warn!(stored, next_offset = batch.next_offset, "batch found committed already (the answer to its commit was lost, or another worker applied it); finalising its operations from PostgreSQL"),
            false => tracing::warn!(stored, "position moved by another worker; resuming from it"),
        }
        stale.forget_balances();
        owed.owe(batch.operations.iter().map(|(_, operation)| operation));
        if !self.send_owed(owed, outcomes).await {
            return;
        }
        stale.suspect(
            batch
                .operations
                .iter()
                .flat_map(|(_, operation)| operation.wallets()),
        );
        self.flush_stale(stale).await;
    }

    /// Sends the final status PostgreSQL holds for each operation whose status is `owed`;
    /// false when they could not be read: they stay owed, for after the next batch or idle
    /// fetch.
    async fn send_owed(&self, owed: &mut OwedStatuses, outcomes: &OutcomeWriter) -> bool {
        let ids = owed.ids();
        let read = async {
            let client = database::client(&self.pool).await?;
            store::decisions(&client, &ids).await
        };
        match read.await {
            Ok(decisions) => {
                outcomes.send(owed.settle(&decisions)).await;
                true
            }
            Err(error) => {
                tracing::warn!(error = %error.describe(), owed = ids.len(), "cannot read the stored decisions; will retry");
                false
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
                    operation: None,
                }),
            }
        }
        batch
    }

    /// Applies the batch, in parts when it must be. A batch that cannot finish within the
    /// statement timeout (too big for the database's pace) is applied in halves, and those
    /// in halves again, down to single records, so the partition keeps moving. When the
    /// database refuses a record's own data, the part's records are applied one at a time and
    /// the one refused becomes a dead letter (its status FAILED), so one bad record never
    /// stops the partition. Every other error is waited out. The parts commit one after
    /// another in offset order, each with its own position. Returns None when cancelled
    /// before the last part committed.
    #[tracing::instrument(skip_all, fields(from = batch.from_offset, records = batch.next_offset - batch.from_offset))]
    async fn apply(
        &self,
        batch: &Batch,
        cancel: &CancellationToken,
    ) -> Result<Option<BatchReport>, StoreError> {
        // The parts still to apply, the earliest last.
        let mut pending = vec![(Cow::Borrowed(batch), Blame::Find)];
        let mut applied = BatchReport::default();
        while let Some((part, blame)) = pending.pop() {
            match self.apply_retrying(&part, cancel).await? {
                Attempt::Applied(report) => applied.merge(report),
                Attempt::Cancelled => return Ok(None),
                Attempt::TooSlow([first, second]) => {
                    pending.push((Cow::Owned(second), blame));
                    pending.push((Cow::Owned(first), blame));
                }
                Attempt::Rejected(error) => pending.extend(self.blamed(&part, blame, error)?),
            }
        }
        Ok(Some(applied))
    }

    /// The parts that replace one the database refused for a record's data, the earliest
    /// last: its records one at a time, or the one record kept as a dead letter.
    fn blamed<'a>(
        &self,
        part: &Batch,
        blame: Blame,
        error: StoreError,
    ) -> Result<Vec<(Cow<'a, Batch>, Blame)>, StoreError> {
        match blame {
            Blame::Kept => Err(error),
            Blame::Find => {
                let cause = error.describe();
                let singles = part.split();
                if singles.len() > 1 {
                    tracing::error!(partition = self.id(), from_offset = part.from_offset, next_offset = part.next_offset, error = %cause, "batch rejected; applying its records one at a time");
                    return Ok(singles
                        .into_iter()
                        .rev()
                        .map(|single| (Cow::Owned(single), Blame::Find))
                        .collect());
                }
                tracing::error!(partition = self.id(), offset = part.from_offset, error = %cause, "record rejected; keeping it as a dead letter");
                Ok(vec![(Cow::Owned(part.rejected(&cause)), Blame::Kept)])
            }
        }
    }

    /// One batch transaction, retried with capped backoff for as long as the cause is outside
    /// the records (see [`StoreError::remedy`]), each retry logged and counted, and the worker
    /// reported degraded meanwhile.
    async fn apply_retrying(
        &self,
        batch: &Batch,
        cancel: &CancellationToken,
    ) -> Result<Attempt, StoreError> {
        let mut failures = 0u32;
        loop {
            let attempt = async {
                let mut client = database::client(&self.pool).await?;
                store::apply_batch(&mut client, batch, clock::now).await
            };
            let result = tokio::select! {
                _ = cancel.cancelled() => return Ok(Attempt::Cancelled),
                result = attempt => result,
            };
            let error = match result {
                Ok(report) => {
                    self.health.recovered(self.id());
                    return Ok(Attempt::Applied(report));
                }
                Err(error @ StoreError::Fenced { .. }) => return Err(error),
                Err(error) => error,
            };
            let retry = match error.remedy() {
                Remedy::Reject => return Ok(Attempt::Rejected(error)),
                Remedy::Retry(retry) => retry,
            };
            let reason = retry.as_str();
            let cause = error.describe();
            metrics::counter!("wallet_batch_retries_total", "reason" => reason).increment(1);
            // The same batch would meet the same timeout again; a single record is waited
            // out, as it is not the record's fault.
            if retry == RetryReason::StatementTimeout {
                if let Some(halves) = batch.halves() {
                    tracing::warn!(partition = self.id(), from_offset = batch.from_offset, next_offset = batch.next_offset, error = %cause, "batch did not finish within the statement timeout; applying it in halves");
                    return Ok(Attempt::TooSlow(halves));
                }
            }
            failures += 1;
            let delay = self.backoff(failures);
            self.health
                .retrying(self.id(), format!("{reason}: {}", error.summary()));
            tracing::warn!(
                partition = self.id(),
                from_offset = batch.from_offset,
                next_offset = batch.next_offset,
                reason,
                error = %cause,
                failures,
                retry_in_ms = delay.as_millis() as u64,
                "batch not applied; retrying"
            );
            tokio::select! {
                _ = cancel.cancelled() => return Ok(Attempt::Cancelled),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn refresh_cache(&self, report: &BatchReport, stale: &mut StaleCache) {
        let late = is_late(report.processed_at, clock::now(), self.config.lease_lapse());
        for wallet in &report.wallets {
            let id = wallet.scoped_id();
            if late {
                stale.wallets.remove(&id);
                stale.suspect([id]);
            } else {
                stale.forget.remove(&id);
                stale.wallets.insert(id, CachedWallet::from(wallet));
            }
        }
        self.flush_stale(stale).await;
    }

    /// Writes what the cache is missing, in bounded round trips; what fails stays for the
    /// next attempt (after the next batch, or the next idle fetch).
    async fn flush_stale(&self, stale: &mut StaleCache) {
        let wallets: Vec<CachedWallet> = stale.wallets.values().cloned().collect();
        for chunk in wallets.chunks(cache::WRITE_CHUNK) {
            if let Err(error) = self.cache.refresh_balances(chunk).await {
                tracing::warn!(%error, pending = stale.wallets.len(), "cache refresh failed; will drop the entries instead");
                stale.forget_balances();
                return;
            }
            for wallet in chunk {
                stale.wallets.remove(&wallet.scoped_id());
            }
        }
        if let Some(sweep) = &mut stale.sweep {
            match self.cache.sweep_balances(sweep, SWEEP_ROUNDS).await {
                Ok(Some(entries)) => {
                    tracing::info!(
                        entries,
                        "dropped every cached balance, having lost count of those to drop"
                    );
                    stale.sweep = None;
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, "cache invalidation of every balance failed; will retry");
                    return;
                }
            }
        }
        let forget: Vec<ScopedWalletId> = stale.forget.iter().cloned().collect();
        for chunk in forget.chunks(cache::WRITE_CHUNK) {
            if let Err(error) = self.cache.forget_balances(chunk).await {
                tracing::warn!(%error, pending = stale.forget.len(), "cache invalidation failed; will retry");
                return;
            }
            for id in chunk {
                stale.forget.remove(id);
            }
        }
    }
}

impl StaleCache {
    fn new(forget_max: usize) -> Self {
        StaleCache {
            wallets: HashMap::new(),
            forget: HashSet::new(),
            forget_max,
            sweep: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.wallets.is_empty() && self.forget.is_empty() && self.sweep.is_none()
    }

    /// Turns every balance waiting to be written into one waiting to be dropped: it is late.
    fn forget_balances(&mut self) {
        let late: Vec<ScopedWalletId> = self.wallets.drain().map(|(id, _)| id).collect();
        self.suspect(late);
    }

    /// Remembers to drop the cached balances of `wallets`; once more than `forget_max` are
    /// waiting, every cached balance is dropped instead, by a walk from the start: one under
    /// way may have passed their entries already.
    fn suspect(&mut self, wallets: impl IntoIterator<Item = ScopedWalletId>) {
        self.forget.extend(wallets);
        if self.forget.len() > self.forget_max {
            tracing::warn!(
                wallets = self.forget.len(),
                max = self.forget_max,
                "too many cached balances to drop one by one; every cached balance will be dropped once Redis answers"
            );
            self.forget = HashSet::new();
            self.sweep = Some(BalanceSweep::default());
        }
    }
}

/// Whether a balance committed by a batch that started at `processed_at` is too late to be
/// written at `now`: later than half the lease lapse, which a worker that kept its partition
/// never is, and one that lost it to another worker always is.
fn is_late(
    processed_at: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
    lease_lapse: Duration,
) -> bool {
    (now - processed_at)
        .to_std()
        .is_ok_and(|age| age > lease_lapse / 2)
}

/// The final status of every operation the batch decided, each with the fingerprint and
/// acceptance time of the record that was applied, so a retry of that request is recognised
/// whatever duplicates of its id the batch also held.
fn final_markers(report: &BatchReport) -> Vec<(ScopedId, Marker)> {
    let decided = report.decided.iter().map(|(operation, outcome)| {
        let currency = report.currencies.get(&operation.wallet()).copied();
        let marker = Marker::decided(operation, outcome, currency, report.processed_at);
        (operation.scoped_id(), marker)
    });
    let rejected = report.rejected.iter().map(|operation| {
        let marker = Marker::rejected(operation, report.processed_at);
        (operation.scoped_id(), marker)
    });
    decided.chain(rejected).collect()
}

/// The operations of `batch` that PostgreSQL held before it came, by the batch's report.
fn stored_before<'a>(batch: &'a Batch, report: &BatchReport) -> Vec<&'a Operation> {
    let stored: HashSet<&ScopedId> = report.stored_before.iter().collect();
    batch
        .operations
        .iter()
        .map(|(_, operation)| operation)
        .filter(|operation| stored.contains(&operation.scoped_id()))
        .collect()
}

#[cfg(test)]
#[path = "consumer_tests.rs"]
mod tests;
