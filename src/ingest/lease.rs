//! Partition ownership between `wallet work` processes, through PostgreSQL advisory locks
//! held on one dedicated connection: when a process dies its connection closes and its
//! partitions are free for the others. A process that is alive but silent (stopped, frozen,
//! hung) loses them too: the server ends the session once it has been idle for the lease's
//! lapse, and a heartbeat keeps a live process's session busy well within it. The lease only
//! spreads work; correctness comes from the offset check in every batch transaction, which is
//! what stops a frozen owner that wakes up after its partitions moved on.

use std::collections::BTreeSet;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

/// Advisory lock classes (the first key of the two-key form): one for "a worker is alive",
/// one for "this partition is owned".
const MEMBER_CLASS: i32 = 0x5741_4c4d;
const PARTITION_CLASS: i32 = 0x5741_4c50;
/// The lock whose holder runs the outbox relay.
const RELAY_CLASS: i32 = 0x5741_4c52;

pub struct PartitionLease {
    client: Arc<Client>,
    partitions: i32,
    owned: BTreeSet<i32>,
    relay: bool,
    /// Bounds every call: a half-open connection must not hang the worker.
    deadline: Duration,
    heartbeat: JoinHandle<()>,
}

/// What to change after a rebalance round.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rebalance {
    pub acquired: Vec<i32>,
    pub to_release: Vec<i32>,
}

impl PartitionLease {
    /// Joins the group of live workers on `client`, which must be used for nothing else. The
    /// server ends the session, releasing every lock this worker holds, once it has heard
    /// nothing from this process for `lapse`.
    pub async fn join(
        client: Client,
        partitions: i32,
        deadline: Duration,
        lapse: Duration,
    ) -> anyhow::Result<Self> {
        expire_after(&client, deadline, lapse).await?;
        let client = Arc::new(client);
        // Member ids are random; on the rare collision with a live worker, draw again.
        loop {
            let member = rand::random::<i32>();
            let joined: bool = bounded(
                deadline,
                client.query_one(
                    "SELECT pg_try_advisory_lock($1, $2)",
                    &[&MEMBER_CLASS, &member],
                ),
            )
            .await
            .context("registering as a worker")?
            .get(0);
            if joined {
                let heartbeat = tokio::spawn(heartbeat(client.clone(), deadline, lapse / 4));
                return Ok(PartitionLease {
                    client,
                    partitions,
                    owned: BTreeSet::new(),
                    relay: false,
                    deadline,
                    heartbeat,
                });
            }
        }
    }

    /// Takes free partitions up to this worker's fair share and names the partitions above it,
    /// which the caller stops and then hands back with [`release`](Self::release).
    pub async fn rebalance(&mut self) -> anyhow::Result<Rebalance> {
        let members: i64 = bounded(
            self.deadline,
            self.client.query_one(
                "SELECT count(*) FROM pg_locks
                 WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid = $1::int4::oid
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[&MEMBER_CLASS],
            ),
        )
        .await
        .context("counting live workers")?
        .get(0);
        let share = fair_share(self.partitions, members);
        let mut rebalance = Rebalance::default();
        if self.owned.len() > share {
            rebalance.to_release = self
                .owned
                .iter()
                .rev()
                .take(self.owned.len() - share)
                .copied()
                .collect();
            return Ok(rebalance);
        }
        let start = rand::random_range(0..self.partitions.max(1));
        for step in 0..self.partitions {
            if self.owned.len() >= share {
                break;
            }
            let partition = (start + step) % self.partitions;
            if self.owned.contains(&partition) {
                continue;
            }
            let lock = "SELECT pg_try_advisory_lock($1, $2)";
            let keys: [&(dyn ToSql + Sync); 2] = [&PARTITION_CLASS, &partition];
            let locked: bool = bounded(self.deadline, self.client.query_one(lock, &keys))
                .await
                .context("locking a partition")?
                .get(0);
            if locked {
                self.owned.insert(partition);
                rebalance.acquired.push(partition);
            }
        }
        Ok(rebalance)
    }

    /// Becomes the outbox relay when no live worker is; true while this worker is it.
    pub async fn lead_relay(&mut self) -> anyhow::Result<bool> {
        if self.relay {
            return Ok(true);
        }
        let keys: [&(dyn ToSql + Sync); 2] = [&RELAY_CLASS, &0i32];
        self.relay = bounded(
            self.deadline,
            self.client
                .query_one("SELECT pg_try_advisory_lock($1, $2)", &keys),
        )
        .await
        .context("taking the relay lock")?
        .get(0);
        Ok(self.relay)
    }

    /// Gives a partition back; call only after its consumer has stopped.
    pub async fn release(&mut self, partition: i32) -> anyhow::Result<()> {
        let unlock = "SELECT pg_advisory_unlock($1, $2)";
        let keys: [&(dyn ToSql + Sync); 2] = [&PARTITION_CLASS, &partition];
        bounded(self.deadline, self.client.execute(unlock, &keys))
            .await
            .context("releasing a partition")?;
        self.owned.remove(&partition);
        Ok(())
    }
}

impl Drop for PartitionLease {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

/// Asks the server to end the lease session after `lapse` without a statement
/// (`idle_session_timeout`, PostgreSQL 14 and later). Older servers keep the session, so a
/// frozen worker keeps its partitions until it resumes or dies; that is logged, not fatal.
/// Who holds each partition's lease now: the holder's backend pid and client address, by
/// partition, read from the server's lock table.
pub async fn owners(client: &Client) -> anyhow::Result<std::collections::BTreeMap<i32, String>> {
    let rows = client
        .query(
            "SELECT l.objid::bigint, l.pid, coalesce(host(a.client_addr), 'local socket')
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
               AND l.classid::bigint = $1",
            &[&i64::from(PARTITION_CLASS)],
        )
        .await
        .context("reading partition leases")?;
    Ok(rows
        .iter()
        .filter_map(|row| {
            let partition = i32::try_from(row.get::<_, i64>(0)).ok()?;
            let pid: i32 = row.get(1);
            let address: String = row.get(2);
            Some((partition, format!("pid {pid} at {address}")))
        })
        .collect())
}

async fn expire_after(client: &Client, deadline: Duration, lapse: Duration) -> anyhow::Result<()> {
    let lapse_ms = lapse.as_millis().max(1).to_string();
    let params: [&(dyn ToSql + Sync); 1] = [&lapse_ms];
    let set = client.query_one(
        "SELECT set_config('idle_session_timeout', $1, false)",
        &params,
    );
    match tokio::time::timeout(deadline, set).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) if error.code() == Some(&SqlState::UNDEFINED_OBJECT) => {
            tracing::warn!(
                "PostgreSQL has no idle_session_timeout (before 14): a frozen worker keeps its partitions until it resumes"
            );
            Ok(())
        }
        Ok(Err(error)) => Err(error).context("setting the lease lapse"),
        Err(_) => anyhow::bail!("the lease connection did not answer within {deadline:?}"),
    }
}

/// Keeps the lease session from lapsing while this process runs, until the session fails
/// (the worker's next lease call then finds out and stops its consumers).
async fn heartbeat(client: Arc<Client>, deadline: Duration, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        if let Err(error) = bounded(deadline, client.simple_query("SELECT 1")).await {
            tracing::warn!(error = %format!("{error:#}"), "lease heartbeat failed");
            return;
        }
    }
}

async fn bounded<T>(
    deadline: Duration,
    call: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(deadline, call)
        .await
        .map_err(|_| anyhow::anyhow!("the lease connection did not answer within {deadline:?}"))?
        .map_err(anyhow::Error::from)
}

/// Partitions per worker, rounded up so every partition has an owner.
fn fair_share(partitions: i32, members: i64) -> usize {
    let members = members.max(1) as usize;
    (partitions as usize).div_ceil(members)
}

#[cfg(test)]
mod tests {
    use super::fair_share;

    #[test]
    fn shares_cover_every_partition() {
        assert_eq!(fair_share(8, 1), 8);
        assert_eq!(fair_share(8, 2), 4);
        assert_eq!(fair_share(8, 3), 3);
        assert_eq!(fair_share(8, 0), 8);
        assert_eq!(fair_share(2, 5), 1);
    }
}
