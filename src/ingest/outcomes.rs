//! Writes the final status of each decided operation to the cache behind its consumer, so a
//! batch never waits for the statuses of the one before it: a decision is final, so writing
//! it late is never wrong, only later. Balances are not written here; their consumer writes
//! them right after the commit, while they are surely the newest.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::cache::{self, Cache, Marker};
use crate::ledger::types::ScopedId;

/// Batches of statuses queued for the writer; beyond this the consumer waits for it.
const QUEUED_BATCHES_MAX: usize = 4;
/// Statuses kept for Redis while it is unreachable; beyond this they are dropped, and read
/// from PostgreSQL instead.
const WAITING_MAX: usize = 100_000;
/// How long the writer waits before retrying writes that failed.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// The consumer's handle on its writer task.
pub struct OutcomeWriter {
    sender: mpsc::Sender<Vec<(ScopedId, Marker)>>,
    task: JoinHandle<()>,
}

impl OutcomeWriter {
    pub fn start(cache: Cache) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUED_BATCHES_MAX);
        let task = tokio::spawn(write_until_closed(cache, receiver));
        OutcomeWriter { sender, task }
    }

    /// Queues one batch's statuses, waiting while the writer is `QUEUED_BATCHES_MAX` behind.
    pub async fn send(&self, outcomes: Vec<(ScopedId, Marker)>) {
        if outcomes.is_empty() {
            return;
        }
        if self.sender.send(outcomes).await.is_err() {
            tracing::warn!("the status writer has stopped; statuses are read from PostgreSQL");
        }
    }

    /// Writes what is queued (one attempt, at most `deadline`) and stops the task.
    pub async fn finish(self, deadline: Duration) {
        drop(self.sender);
        let mut task = self.task;
        if tokio::time::timeout(deadline, &mut task).await.is_err() {
            task.abort();
        }
    }
}

async fn write_until_closed(cache: Cache, mut receiver: mpsc::Receiver<Vec<(ScopedId, Marker)>>) {
    let mut waiting: HashMap<ScopedId, Marker> = HashMap::new();
    let mut open = true;
    while open || !waiting.is_empty() {
        if waiting.is_empty() {
            match receiver.recv().await {
                Some(outcomes) => waiting.extend(outcomes),
                None => return,
            }
        }
        while let Ok(outcomes) = receiver.try_recv() {
            waiting.extend(outcomes);
        }
        if waiting.len() > WAITING_MAX {
            tracing::warn!(
                dropped = waiting.len(),
                "too many statuses waiting for Redis; dropping them"
            );
            waiting.clear();
        }
        if write(&cache, &mut waiting).await {
            continue;
        }
        if !open {
            return;
        }
        // Keep taking the consumer's statuses while Redis is away, so it never waits on it.
        let retry = tokio::time::sleep(RETRY_INTERVAL);
        tokio::pin!(retry);
        loop {
            tokio::select! {
                _ = &mut retry => break,
                received = receiver.recv() => match received {
                    Some(outcomes) => waiting.extend(outcomes),
                    None => {
                        open = false;
                        break;
                    }
                },
            }
        }
    }
}

/// Writes `waiting` in bounded round trips, removing what was written; false when Redis
/// refused one.
async fn write(cache: &Cache, waiting: &mut HashMap<ScopedId, Marker>) -> bool {
    let outcomes: Vec<(ScopedId, Marker)> = waiting
        .iter()
        .map(|(id, marker)| (id.clone(), marker.clone()))
        .collect();
    for chunk in outcomes.chunks(cache::WRITE_CHUNK) {
        if let Err(error) = cache.store_outcomes(chunk).await {
            tracing::warn!(%error, pending = waiting.len(), "status refresh failed; will retry");
            return false;
        }
        for (id, _) in chunk {
            waiting.remove(id);
        }
    }
    true
}
