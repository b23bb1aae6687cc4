//! `wallet work`: joins the group of workers, owns a fair share of the partitions and runs
//! one consumer per owned partition until shutdown.

use std::collections::HashMap;
use std::time::Duration;

use rskafka::client::Client;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::broker;
use super::consumer::PartitionConsumer;
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

pub async fn run(
    config: Config,
    pool: deadpool_postgres::Pool,
    cache: Cache,
    health: WorkerHealth,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let interval = Duration::from_millis(config.worker.rebalance_interval_ms);
    let topic = config.kafka.operations_topic.clone();
    let Some((client, partitions)) = connect_broker(&config, &shutdown, interval).await else {
        return Ok(());
    };
    let mut running: HashMap<i32, Running> = HashMap::new();
    let mut relay: Option<Running> = None;
    let mut failures = 0u32;
    while !shutdown.is_cancelled() {
        let lease_client = match database::connect(&config.database).await {
            Ok(lease_client) => lease_client,
            Err(error) => {
                failures += 1;
                tracing::warn!(error = %format!("{error:#}"), "cannot open the lease connection; retrying");
                pause(&shutdown, interval * failures.min(5)).await;
                continue;
            }
        };
        let result = async {
            let mut lease = PartitionLease::join(
                lease_client,
                partitions,
                config.database.connect_timeout(),
                config.worker.lease_lapse(),
            )
            .await?;
            loop {
                let stopped: Vec<i32> = running
                    .iter()
                    .filter(|(_, consumer)| consumer.task.is_finished())
                    .map(|(partition, _)| *partition)
                    .collect();
                for partition in stopped {
                    running.remove(&partition);
                    lease.release(partition).await?;
                    tracing::error!(
                        partition,
                        "partition consumer stopped unexpectedly; released it"
                    );
                }
                let rebalance = lease.rebalance().await?;
                for partition in rebalance.to_release {
                    if let Some(consumer) = running.remove(&partition) {
                        consumer.cancel.cancel();
                        let _ = consumer.task.await;
                    }
                    lease.release(partition).await?;
                    tracing::info!(partition, "released partition");
                }
                for partition in rebalance.acquired {
                    let consumer = PartitionConsumer {
                        topic: topic.clone(),
                        partition: broker::partition(&client, &config.kafka, &topic, partition)
                            .await?,
                        pool: pool.clone(),
                        cache: cache.clone(),
                        config: config.worker.clone(),
                        request_timeout: config.kafka.request_timeout(),
                        health: health.clone(),
                    };
                    let cancel = shutdown.child_token();
                    let task = tokio::spawn(consumer.run(cancel.clone()));
                    running.insert(partition, Running { cancel, task });
                    tracing::info!(partition, "acquired partition");
                }
                let relaying = relay
                    .as_ref()
                    .is_some_and(|running| !running.task.is_finished());
                if !relaying && lease.lead_relay().await? {
                    let outbox = OutboxRelay::connect(
                        &client,
                        &config.kafka,
                        &config.worker,
                        pool.clone(),
                        cache.clone(),
                    );
                    match outbox.await {
                        Ok(outbox) => {
                            let cancel = shutdown.child_token();
                            let task = tokio::spawn(outbox.run(cancel.clone()));
                            relay = Some(Running { cancel, task });
                            tracing::info!("relaying the outbox");
                        }
                        Err(error) => {
                            tracing::warn!(error = %format!("{error:#}"), "cannot start the outbox relay; retrying")
                        }
                    }
                }
                failures = 0;
                if pause(&shutdown, interval).await {
                    return anyhow::Ok(());
                }
            }
        };
        if let Err(error) = result.await {
            // The lease connection is gone, and with it every lock: stop all consumers so no
            // partition is consumed twice for long (fencing makes it harmless meanwhile).
            tracing::warn!(error = %format!("{error:#}"), "lost the partition lease; stopping consumers");
            stop_all(&mut running).await;
            stop(relay.take()).await;
            failures += 1;
            pause(&shutdown, interval).await;
        }
    }
    stop_all(&mut running).await;
    stop(relay.take()).await;
    Ok(())
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
                if pause(shutdown, interval * failures.min(5)).await {
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
