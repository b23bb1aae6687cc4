//! Partition ownership between `wallet work` processes, through PostgreSQL advisory locks
//! held on one dedicated connection: when a process dies its connection closes and its
//! partitions are free for the others. The lease only spreads work; correctness comes from the
//! offset check in every batch transaction.

use std::collections::BTreeSet;

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

/// Advisory lock classes (the first key of the two-key form): one for "a worker is alive",
/// one for "this partition is owned".
const MEMBER_CLASS: i32 = 0x5741_4c4d;
const PARTITION_CLASS: i32 = 0x5741_4c50;
/// The lock whose holder runs the outbox relay.
const RELAY_CLASS: i32 = 0x5741_4c52;

pub struct PartitionLease {
    client: Client,
    partitions: i32,
    owned: BTreeSet<i32>,
    relay: bool,
    /// Bounds every call: a half-open connection must not hang the worker.
    deadline: Duration,
}

/// What to change after a rebalance round.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rebalance {
    pub acquired: Vec<i32>,
    pub to_release: Vec<i32>,
}

impl PartitionLease {
    /// Joins the group of live workers on `client`, which must be used for nothing else.
    pub async fn join(client: Client, partitions: i32, deadline: Duration) -> anyhow::Result<Self> {
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
                return Ok(PartitionLease {
                    client,
                    partitions,
                    owned: BTreeSet::new(),
                    relay: false,
                    deadline,
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
