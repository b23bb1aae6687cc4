//! `wallet work`: joins the group of workers, owns a fair share of the partitions and runs
//! one consumer per owned partition until shutdown.

use std::collections::HashMap;
use std::time::Duration;

use rskafka::client::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::broker;
use super::consumer::PartitionConsumer;
use super::expiry::HoldExpiry;
use super::health::WorkerHealth;
use super::lease::PartitionLease;
use super::relay::OutboxRelay;
use crate::cache::Cache;
use crate::config::Config;
use crate::ledger::database;

struct Running {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// What this worker's consumers and relay share, and the tasks it runs.
struct Worker {
    config: Config,
    pool: deadpool_postgres::Pool,
    cache: Cache,
    health: WorkerHealth,
    shutdown: CancellationToken,
    client: Client,
    running: HashMap<i32, Running>,
    relay: Option<Running>,
    /// The partitions `running` consumes, for the hold expiry scan.
    owned: watch::Sender<Vec<i32>>,
    expiry: Option<Running>,
}

pub async fn run(
    config: Config,
    pool: deadpool_postgres::Pool,
    cache: Cache,
    health: WorkerHealth,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let interval = Duration::from_millis(config.worker.rebalance_interval_ms);
    let Some((client, partitions)) = connect_broker(&config, &shutdown, interval).await else {
        return Ok(());
    };
    let mut worker = Worker {
        config,
        pool,
        cache,
        health,
        shutdown,
        client,
        running: HashMap::new(),
        relay: None,
        owned: watch::Sender::new(Vec::new()),
        expiry: None,
    };
    let mut failures = 0u32;
    while !worker.shutdown.is_cancelled() {
        let lease_client = match database::connect(&worker.config.database).await {
            Ok(lease_client) => lease_client,
            Err(error) => {
                failures += 1;
                tracing::warn!(error = %format!("{error:#}"), "cannot open the lease connection; retrying");
                pause(&worker.shutdown, retry_pause(interval, failures)).await;
                continue;
            }
        };
        let held = worker
            .hold_lease(lease_client, partitions, interval, &mut failures)
            .await;
        if let Err(error) = held {
            // The lease connection is gone, and with it every lock: stop all consumers so no
            // partition is consumed twice for long (fencing makes it harmless meanwhile).
            tracing::warn!(error = %format!("{error:#}"), "lost the partition lease; stopping consumers");
            worker.stop_everything().await;
            failures += 1;
            pause(&worker.shutdown, interval).await;
        }
    }
    worker.stop_everything().await;
    Ok(())
}

impl Worker {
    /// Joins the group on `lease_client` and rebalances every `interval` until shutdown (Ok)
    /// or until the lease connection fails (Err).
    async fn hold_lease(
        &mut self,
        lease_client: tokio_postgres::Client,
        partitions: i32,
        interval: Duration,
        failures: &mut u32,
    ) -> anyhow::Result<()> {
        let mut lease = PartitionLease::join(
            lease_client,
            partitions,
            self.config.database.connect_timeout(),
            self.config.worker.lease_lapse(),
        )
        .await?;
        loop {
            self.release_stopped(&mut lease).await?;
            self.rebalance(&mut lease).await?;
            self.publish_owned();
            self.ensure_relay(&mut lease).await?;
            self.ensure_expiry(partitions);
            *failures = 0;
            if pause(&self.shutdown, interval).await {
                return Ok(());
            }
        }
    }

    /// Releases the partitions whose consumer ended on its own, so another worker takes them.
    async fn release_stopped(&mut self, lease: &mut PartitionLease) -> anyhow::Result<()> {
        let stopped: Vec<i32> = self
            .running
            .iter()
            .filter(|(_, consumer)| consumer.task.is_finished())
            .map(|(partition, _)| *partition)
            .collect();
        let any_stopped = !stopped.is_empty();
        for partition in stopped {
            self.running.remove(&partition);
            lease.release(partition).await?;
            tracing::warn!(partition, "partition consumer stopped; released it");
        }
        if any_stopped {
            // A consumer ends on its own when the broker keeps refusing its reads.
            self.reconnect_broker().await;
        }
        Ok(())
    }

    /// Stops and releases what this worker must give up, then starts a consumer for each
    /// partition it acquired.
    async fn rebalance(&mut self, lease: &mut PartitionLease) -> anyhow::Result<()> {
        let rebalance = lease.rebalance().await?;
        for partition in rebalance.to_release {
            if let Some(consumer) = self.running.remove(&partition) {
                consumer.cancel.cancel();
                let _ = consumer.task.await;
            }
            lease.release(partition).await?;
            tracing::info!(partition, "released partition");
        }
        let topic = self.config.kafka.operations_topic.clone();
        for partition in rebalance.acquired {
            let opened = broker::partition(&self.client, &self.config.kafka, &topic, partition);
            let partition_client = match opened.await {
                Ok(partition_client) => partition_client,
                Err(error) => {
                    tracing::warn!(partition, error = %format!("{error:#}"), "cannot open the partition; released it");
                    lease.release(partition).await?;
                    self.reconnect_broker().await;
                    continue;
                }
            };
            let consumer = PartitionConsumer {
                topic: topic.clone(),
                partition: partition_client,
                pool: self.pool.clone(),
                cache: self.cache.clone(),
                config: self.config.worker.clone(),
                request_timeout: self.config.kafka.request_timeout(),
                health: self.health.clone(),
            };
            let cancel = self.shutdown.child_token();
            let task = tokio::spawn(consumer.run(cancel.clone()));
            self.running.insert(partition, Running { cancel, task });
            tracing::info!(partition, "acquired partition");
        }
        Ok(())
    }

    /// Starts the outbox relay when no relay runs here and this worker leads the group.
    async fn ensure_relay(&mut self, lease: &mut PartitionLease) -> anyhow::Result<()> {
        let relaying = self
            .relay
            .as_ref()
            .is_some_and(|running| !running.task.is_finished());
        if relaying || !lease.lead_relay().await? {
            return Ok(());
        }
        let outbox = OutboxRelay::connect(
            &self.client,
            &self.config.kafka,
            &self.config.worker,
            self.pool.clone(),
            self.cache.clone(),
        );
        match outbox.await {
            Ok(outbox) => {
                let cancel = self.shutdown.child_token();
                let task = tokio::spawn(outbox.run(cancel.clone()));
                self.relay = Some(Running { cancel, task });
                tracing::info!("relaying the outbox");
            }
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "cannot start the outbox relay; retrying");
                self.reconnect_broker().await;
            }
        }
        Ok(())
    }

    /// Tells the hold expiry scan which partitions this worker consumes now.
    fn publish_owned(&self) {
        let mut owned: Vec<i32> = self.running.keys().copied().collect();
        owned.sort_unstable();
        self.owned.send_if_modified(|current| {
            let changed = *current != owned;
            *current = owned;
            changed
        });
    }

    /// Starts the hold expiry scan when none runs here; it looks at the partitions this
    /// worker consumes, so every worker runs one. It connects to the broker itself, so a
    /// broker that is down never holds up this loop, which keeps the lease.
    fn ensure_expiry(&mut self, partitions: i32) {
        let scanning = self
            .expiry
            .as_ref()
            .is_some_and(|running| !running.task.is_finished());
        if scanning {
            return;
        }
        let expiry = HoldExpiry {
            pool: self.pool.clone(),
            kafka: self.config.kafka.clone(),
            owned: self.owned.subscribe(),
            partitions,
            config: self.config.worker.clone(),
            health: self.health.clone(),
        };
        let cancel = self.shutdown.child_token();
        let task = tokio::spawn(expiry.run(cancel.clone()));
        self.expiry = Some(Running { cancel, task });
    }

    /// Replaces the broker client after it failed to open a partition: rskafka keeps the
    /// metadata it read while a restarting broker had no leaders, and answers
    /// LeaderNotAvailable from it for as long as the client lives.
    async fn reconnect_broker(&mut self) {
        match broker::connect(&self.config.kafka).await {
            Ok(client) => self.client = client,
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "cannot reconnect to the broker; retrying later")
            }
        }
    }

    async fn stop_everything(&mut self) {
        stop(self.expiry.take()).await;
        stop_all(&mut self.running).await;
        self.publish_owned();
        stop(self.relay.take()).await;
    }
}

/// The wait before retrying to reach the broker or PostgreSQL: one rebalance interval after
/// the first failure, growing to five.
fn retry_pause(interval: Duration, failures: u32) -> Duration {
    super::backoff(failures, interval / 2, interval * 5)
}

/// Connects to the broker and reads the topic's partition count, retrying until it works so
/// a worker may start before the broker. None when shut down first.
async fn connect_broker(
    config: &Config,
    shutdown: &CancellationToken,
    interval: Duration,
) -> Option<(Client, i32)> {
    let mut failures = 0u32;
    loop {
        let attempt = async {
            let client = broker::connect(&config.kafka).await?;
            let partitions =
                broker::partition_count(&client, &config.kafka, &config.kafka.operations_topic)
                    .await?;
            anyhow::Ok((client, partitions))
        };
        match attempt.await {
            Ok(connected) => return Some(connected),
            Err(error) => {
                failures += 1;
                tracing::warn!(error = %format!("{error:#}"), "cannot reach the broker; retrying");
                if pause(shutdown, retry_pause(interval, failures)).await {
                    return None;
                }
            }
        }
    }
}

/// Waits `duration`; returns true when shutdown was requested meanwhile.
async fn pause(shutdown: &CancellationToken, duration: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(duration) => false,
    }
}

async fn stop(task: Option<Running>) {
    if let Some(running) = task {
        running.cancel.cancel();
        let _ = running.task.await;
    }
}

async fn stop_all(running: &mut HashMap<i32, Running>) {
    for (_, consumer) in running.drain() {
        stop(Some(consumer)).await;
    }
}
