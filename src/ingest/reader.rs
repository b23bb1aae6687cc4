//! Reading a partition ahead of the batch being applied: a task fetches into a bounded
//! channel (the bound is the backpressure), and batches are cut from what it delivered, so
//! fetching and lingering overlap with the database work instead of adding to it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rskafka::client::error::{Error as RskafkaError, ProtocolError};
use rskafka::client::partition::PartitionClient;
use rskafka::record::RecordAndOffset;
use tokio::sync::mpsc::{self, error::TryRecvError};
use tokio::task::JoinHandle;

use crate::config::WorkerConfig;

/// Fetched chunks waiting for the batcher; beyond this the reader waits.
const CHUNKS_AHEAD_MAX: usize = 16;

/// Records from one fetch, with when they arrived.
struct Chunk {
    records: Vec<RecordAndOffset>,
    at: Instant,
}

pub struct PartitionReader {
    receiver: mpsc::Receiver<anyhow::Result<Chunk>>,
    task: JoinHandle<()>,
    leftover: Option<Chunk>,
    high_watermark: Arc<AtomicI64>,
}

impl PartitionReader {
    /// Starts reading `partition` at `position`.
    pub fn start(
        partition: Arc<PartitionClient>,
        position: i64,
        config: WorkerConfig,
        request_timeout: Duration,
    ) -> Self {
        let (sender, receiver) = mpsc::channel(CHUNKS_AHEAD_MAX);
        let high_watermark = Arc::new(AtomicI64::new(position));
        let task = tokio::spawn(read(
            partition,
            position,
            config,
            request_timeout,
            sender,
            high_watermark.clone(),
        ));
        PartitionReader {
            receiver,
            task,
            leftover: None,
            high_watermark,
        }
    }

    /// The offset after the partition's last record, as of the latest fetch.
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Relaxed)
    }

    /// The next batch: at most `records_max` records, cut once `linger` has passed since the
    /// first of them arrived. None when nothing arrived within `idle`.
    ///
    /// # Errors
    /// When a fetch failed; records not yet returned are then dropped, to be read again from
    /// the stored position.
    pub async fn next_batch(
        &mut self,
        records_max: usize,
        linger: Duration,
        idle: Duration,
    ) -> anyhow::Result<Option<Vec<RecordAndOffset>>> {
        let first = match self.leftover.take() {
            Some(chunk) => chunk,
            None => match tokio::time::timeout(idle, self.receiver.recv()).await {
                Err(_) => return Ok(None),
                Ok(None) => anyhow::bail!("the partition reader stopped"),
                Ok(Some(chunk)) => chunk?,
            },
        };
        let deadline = first.at + linger;
        let mut records = Vec::new();
        self.take(first, &mut records, records_max);
        while records.len() < records_max && self.leftover.is_none() {
            let next = match self.receiver.try_recv() {
                Ok(chunk) => chunk,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    match tokio::time::timeout_at(deadline.into(), self.receiver.recv()).await {
                        Ok(Some(chunk)) => chunk,
                        Ok(None) | Err(_) => break,
                    }
                }
            };
            self.take(next?, &mut records, records_max);
        }
        Ok(Some(records))
    }

    /// Moves as much of `chunk` into `records` as fits; the rest waits for the next batch.
    fn take(&mut self, mut chunk: Chunk, records: &mut Vec<RecordAndOffset>, records_max: usize) {
        let room = records_max.saturating_sub(records.len());
        if chunk.records.len() > room {
            let rest = chunk.records.split_off(room);
            self.leftover = Some(Chunk {
                records: rest,
                at: chunk.at,
            });
        }
        records.append(&mut chunk.records);
    }
}

impl Drop for PartitionReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read(
    partition: Arc<PartitionClient>,
    position: i64,
    config: WorkerConfig,
    request_timeout: Duration,
    sender: mpsc::Sender<anyhow::Result<Chunk>>,
    high_watermark: Arc<AtomicI64>,
) {
    let mut next = position;
    // The broker may hold a fetch for its whole wait before the request's own deadline starts.
    let wait = Duration::from_millis(u64::try_from(config.fetch_wait_ms).unwrap_or(0));
    let deadline = request_timeout + wait;
    loop {
        // Kafka answers as soon as a record is there, so the wait only bounds how often an
        // idle partition is asked.
        let fetch = partition.fetch_records(next, 1..config.fetch_bytes_max, config.fetch_wait_ms);
        let fetched = match tokio::time::timeout(deadline, fetch).await {
            Ok(Ok((records, watermark))) => {
                high_watermark.store(watermark, Ordering::Relaxed);
                records
            }
            Ok(Err(error)) => {
                let _ = sender.send(Err(fetch_error(next, error))).await;
                return;
            }
            Err(_) => {
                let _ = sender
                    .send(Err(anyhow::anyhow!("fetch timed out after {deadline:?}")))
                    .await;
                return;
            }
        };
        let records: Vec<RecordAndOffset> = fetched
            .into_iter()
            .filter(|record| record.offset >= next)
            .collect();
        let Some(last) = records.last() else {
            continue;
        };
        next = last.offset + 1;
        if sender
            .send(Ok(Chunk {
                records,
                at: Instant::now(),
            }))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// The broker answered OFFSET_OUT_OF_RANGE: the position being read lies outside the
/// partition (records deleted, the topic recreated or truncated). The consumer checks its
/// stored position against the broker again and never skips ahead by itself.
#[derive(Debug, thiserror::Error)]
#[error("the broker has no offset {position} in the partition")]
pub struct OutOfRange {
    pub position: i64,
}

fn fetch_error(position: i64, error: RskafkaError) -> anyhow::Error {
    match error {
        RskafkaError::ServerError {
            protocol_error: ProtocolError::OffsetOutOfRange,
            ..
        } => OutOfRange { position }.into(),
        other => other.into(),
    }
}
