//! Waiting for workers' decisions without polling: a worker publishes the marker keys of the
//! operations it decided on one Redis channel, right after writing their final markers; each
//! API process holds one subscription to it and wakes the requests waiting for those keys.
//!
//! A waiter registers before its operation is produced and then reads its markers once, so a
//! decision that lands before the notification could reach it is still seen. While the
//! subscription is down (Redis restarted, connection lost) notifications are lost: every
//! waiter reads its markers again when the subscription is back (and when Redis answers again
//! after an outage, during which its reads failed at once), and once more at its deadline, so
//! it never waits past the deadline for a notification that will not come.
//! A notification ends the wait for its key even when no final marker is there to read (Redis
//! refused to store it, as when out of memory, but published): the worker committed the
//! decision, so PostgreSQL has it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::markers::key;
use super::{Cache, CacheError, Marker, MarkerState};
use crate::ledger::types::ScopedId;

/// The channel workers publish decided marker keys on, one message per write of final
/// markers, the keys separated by newlines (a key never contains one).
pub(super) const DECIDED_CHANNEL: &str = "wallet:decided";

/// Reconnect delays of the subscription: doubling from the first to the last.
const RESUBSCRIBE_DELAY_FIRST: Duration = Duration::from_millis(50);
const RESUBSCRIBE_DELAY_LAST: Duration = Duration::from_secs(2);

/// The process's one subscription and the requests waiting on it.
#[derive(Clone)]
pub struct Decisions {
    shared: Arc<Shared>,
    cache: Cache,
}

/// Marker key → the requests waiting for it, each by its waiter id.
type Waiters = HashMap<String, Vec<(u64, Arc<Waiter>)>>;

/// A request waiting for decisions: woken by each notification of one of its keys, which it
/// keeps, as the key's final marker may be missing.
#[derive(Default)]
struct Waiter {
    notify: Notify,
    announced: Mutex<HashSet<String>>,
}

impl Waiter {
    fn announced(&self) -> MutexGuard<'_, HashSet<String>> {
        // A panic while holding the lock leaves the set as consistent as any of its states.
        self.announced
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn announce(&self, key: &str) {
        self.announced().insert(key.to_owned());
        self.notify.notify_one();
    }
}

struct Shared {
    waiters: Mutex<Waiters>,
    next_waiter: AtomicU64,
    /// Counts the subscriptions made so far; waiters read their markers again on a change.
    subscriptions: watch::Sender<u64>,
    /// Cancelled when the server shuts down: every wait ends then.
    draining: CancellationToken,
}

impl Shared {
    fn waiters(&self) -> MutexGuard<'_, Waiters> {
        // A panic while holding the lock leaves the map as consistent as any of its states.
        self.waiters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn deliver(&self, payload: &str) {
        let waiters = self.waiters();
        if waiters.is_empty() {
            return;
        }
        for key in payload.lines() {
            for (_, waiter) in waiters.get(key).into_iter().flatten() {
                waiter.announce(key);
            }
        }
    }
}

impl Decisions {
    /// Starts the subscription in the background; it reconnects by itself for as long as the
    /// process runs.
    pub fn start(cache: Cache) -> Decisions {
        let (subscriptions, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            waiters: Mutex::new(HashMap::new()),
            next_waiter: AtomicU64::new(0),
            subscriptions,
            draining: CancellationToken::new(),
        });
        tokio::spawn(listen(shared.clone(), cache.clone()));
        Decisions { shared, cache }
    }

    /// Ends every wait, now and from now on, with the decisions known so far: the server is
    /// shutting down, and an answer still waiting at its shutdown deadline would be cut off,
    /// leaving its client unsure whether the operation was accepted.
    pub fn drain(&self) {
        self.shared.draining.cancel();
    }

    /// Registers interest in the decisions of `ids`. Register before producing: a decision is
    /// published only once.
    pub fn watch(&self, ids: &[ScopedId]) -> Watch {
        let id = self.shared.next_waiter.fetch_add(1, Ordering::Relaxed);
        let waiter = Arc::new(Waiter::default());
        let keys: Vec<String> = ids.iter().map(key).collect();
        let mut waiters = self.shared.waiters();
        for key in &keys {
            waiters
                .entry(key.clone())
                .or_default()
                .push((id, waiter.clone()));
        }
        metrics::gauge!("wallet_decision_waiters").increment(1.0);
        Watch {
            id,
            keys,
            waiter,
            subscriptions: self.shared.subscriptions.subscribe(),
            recoveries: self.cache.recoveries(),
            decisions: self.clone(),
        }
    }
}

/// Interest in the decisions of some operations; dropping it (a finished or abandoned
/// request) removes it.
pub struct Watch {
    id: u64,
    keys: Vec<String>,
    waiter: Arc<Waiter>,
    subscriptions: watch::Receiver<u64>,
    /// Redis answers again after an outage, during which reading the markers failed.
    recoveries: watch::Receiver<u64>,
    decisions: Decisions,
}

impl Watch {
    /// Waits until every operation is decided or `deadline` passes, and returns the final
    /// marker of each decided one, in the order they were watched: None for one undecided,
    /// and for one announced decided whose final marker Redis does not hold (PostgreSQL has
    /// its decision). Returns at most one Redis exchange (`redis.timeout_ms`) after the
    /// deadline.
    pub async fn decided_by(mut self, deadline: Instant) -> Vec<Option<Marker>> {
        let mut decided = vec![None; self.keys.len()];
        loop {
            self.read_markers(&mut decided).await;
            let draining = &self.decisions.shared.draining;
            if self.all_decided(&decided) || Instant::now() >= deadline || draining.is_cancelled() {
                return decided;
            }
            tokio::select! {
                () = draining.cancelled() => {}
                () = self.waiter.notify.notified() => {}
                // The subscription is new: notifications may have been lost before it.
                Ok(()) = self.subscriptions.changed() => {}
                Ok(()) = self.recoveries.changed() => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Whether each operation has its final marker in `decided` or was announced decided.
    fn all_decided(&self, decided: &[Option<Marker>]) -> bool {
        let announced = self.waiter.announced();
        decided
            .iter()
            .zip(&self.keys)
            .all(|(marker, key)| marker.is_some() || announced.contains(key))
    }

    /// Fills in the operations decided since the last look.
    async fn read_markers(&self, decided: &mut [Option<Marker>]) {
        let undecided: Vec<usize> = (0..decided.len())
            .filter(|&index| decided[index].is_none())
            .collect();
        let keys: Vec<&str> = undecided
            .iter()
            .map(|&index| self.keys[index].as_str())
            .collect();
        match self.decisions.cache.final_markers(&keys).await {
            Ok(markers) => {
                for (index, marker) in undecided.into_iter().zip(markers) {
                    decided[index] = marker;
                }
            }
            Err(error) => tracing::debug!(%error, "cannot read the awaited markers"),
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut waiters = self.decisions.shared.waiters();
        for key in &self.keys {
            if let Some(list) = waiters.get_mut(key) {
                list.retain(|(id, _)| *id != self.id);
                if list.is_empty() {
                    waiters.remove(key);
                }
            }
        }
        metrics::gauge!("wallet_decision_waiters").decrement(1.0);
    }
}

impl Cache {
    /// The final marker under each of `keys`, None where there is none yet.
    async fn final_markers(&self, keys: &[&str]) -> Result<Vec<Option<Marker>>, CacheError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = keys.iter().map(|key| (*key).to_owned()).collect();
        let stored: Vec<Option<String>> = self
            .with_connection(|mut connection| async move {
                Ok(redis::cmd("MGET")
                    .arg(keys)
                    .query_async(&mut connection)
                    .await?)
            })
            .await?;
        stored
            .into_iter()
            .map(|text| {
                let marker = text.map(|text| serde_json::from_str::<Marker>(&text));
                Ok(marker.transpose()?.filter(is_final))
            })
            .collect()
    }

    async fn subscribe(&self) -> Result<redis::aio::PubSub, CacheError> {
        let attempt = async {
            let mut subscription = self.client.get_async_pubsub().await?;
            subscription.subscribe(DECIDED_CHANNEL).await?;
            Ok(subscription)
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .map_err(|_| CacheError::Timeout(self.timeout))?
    }
}

fn is_final(marker: &Marker) -> bool {
    match marker.state {
        MarkerState::Processed | MarkerState::Failed => true,
        MarkerState::Accepting | MarkerState::Uncertain | MarkerState::Pending => false,
    }
}

/// Holds the subscription, and makes it again with growing delays whenever it ends.
async fn listen(shared: Arc<Shared>, cache: Cache) {
    let mut delay = RESUBSCRIBE_DELAY_FIRST;
    loop {
        match cache.subscribe().await {
            Ok(subscription) => {
                delay = RESUBSCRIBE_DELAY_FIRST;
                shared.subscriptions.send_modify(|count| *count += 1);
                tracing::debug!("subscribed to decisions");
                let mut messages = subscription.into_on_message();
                while let Some(message) = messages.next().await {
                    match message.get_payload::<String>() {
                        Ok(payload) => shared.deliver(&payload),
                        Err(error) => tracing::warn!(%error, "unreadable decision message"),
                    }
                }
                tracing::warn!("the decisions subscription ended; subscribing again");
            }
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "cannot subscribe to decisions; retrying");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RESUBSCRIBE_DELAY_LAST);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared {
            waiters: Mutex::new(HashMap::new()),
            next_waiter: AtomicU64::new(0),
            subscriptions: watch::channel(0).0,
            draining: CancellationToken::new(),
        }
    }

    /// Proves a drained process ends a wait at once, with nothing decided, rather than at its
    /// deadline.
    #[tokio::test]
    async fn a_drained_process_ends_its_waits() {
        let config = crate::config::RedisConfig {
            url: "redis://127.0.0.1:1".to_owned(),
            ..Default::default()
        };
        let decisions = Decisions::start(Cache::new(&config).expect("a valid URL"));
        let id = ScopedId {
            tenant: "acme".to_owned(),
            id: crate::ledger::types::OperationId(uuid::Uuid::from_u128(1)),
        };
        let waiting = decisions.watch(std::slice::from_ref(&id));
        decisions.drain();
        let deadline = Instant::now() + Duration::from_secs(60);
        let decided = tokio::time::timeout(Duration::from_secs(10), waiting.decided_by(deadline))
            .await
            .expect("the wait ends before its deadline");
        assert_eq!(decided, vec![None]);
    }

    /// Proves a finished or abandoned request leaves nothing behind in the map of waiters,
    /// and a second request on the same id is kept when the first leaves.
    #[tokio::test]
    async fn a_dropped_watch_removes_itself() {
        let config = crate::config::RedisConfig {
            url: "redis://127.0.0.1:1".to_owned(),
            ..Default::default()
        };
        let decisions = Decisions::start(Cache::new(&config).expect("a valid URL"));
        let id = |n| ScopedId {
            tenant: "acme".to_owned(),
            id: crate::ledger::types::OperationId(uuid::Uuid::from_u128(n)),
        };
        let first = decisions.watch(&[id(1), id(2)]);
        let second = decisions.watch(&[id(2)]);
        assert_eq!(decisions.shared.waiters().len(), 2);
        drop(first);
        let waiters: Vec<usize> = decisions.shared.waiters().values().map(Vec::len).collect();
        assert_eq!(waiters, vec![1], "only the second watch of op 2 remains");
        drop(second);
        assert!(decisions.shared.waiters().is_empty());
    }

    /// Proves a message wakes exactly the waiters of the keys it names, each knowing which
    /// of its keys were announced.
    #[tokio::test]
    async fn a_message_wakes_the_waiters_of_its_keys() {
        let shared = shared();
        let (first, second) = (Arc::new(Waiter::default()), Arc::new(Waiter::default()));
        shared
            .waiters()
            .insert("op:a:1".to_owned(), vec![(1, first.clone())]);
        shared
            .waiters()
            .insert("op:a:2".to_owned(), vec![(2, second.clone())]);
        shared.deliver("op:a:3\nop:a:1");
        let woken = tokio::time::timeout(Duration::from_millis(100), first.notify.notified()).await;
        assert!(woken.is_ok(), "the waiter of op:a:1 was not woken");
        assert!(first.announced().contains("op:a:1"));
        let woken = tokio::time::timeout(Duration::from_millis(50), second.notify.notified()).await;
        assert!(woken.is_err(), "the waiter of op:a:2 was woken");
        assert!(second.announced().is_empty());
    }
}
