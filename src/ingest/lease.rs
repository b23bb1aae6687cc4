//! Partition ownership between `wallet work` processes, through PostgreSQL advisory locks
//! held on one dedicated connection: when a process dies its connection closes and its
//! partitions are free for the others. The lease only spreads work; correctness comes from the
//! offset check in every batch transaction.

use std::collections::BTreeSet;

use anyhow::Context;
use tokio_postgres::Client;

/// Advisory lock classes (the first key of the two-key form): one for "a worker is alive",
/// one for "this partition is owned".
const MEMBER_CLASS: i32 = 0x5741_4c4d;
const PARTITION_CLASS: i32 = 0x5741_4c50;

pub struct PartitionLease {
    client: Client,
    partitions: i32,
    owned: BTreeSet<i32>,
}

/// What to change after a rebalance round.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rebalance {
    pub acquired: Vec<i32>,
    pub to_release: Vec<i32>,
}

impl PartitionLease {
    /// Joins the group of live workers on `client`, which must be used for nothing else.
    pub async fn join(client: Client, partitions: i32) -> anyhow::Result<Self> {
        let member = rand::random::<i32>();
        client
            .execute("SELECT pg_advisory_lock($1, $2)", &[&MEMBER_CLASS, &member])
            .await
            .context("registering as a worker")?;
        Ok(PartitionLease {
            client,
            partitions,
            owned: BTreeSet::new(),
        })
    }

    pub fn owned(&self) -> &BTreeSet<i32> {
        &self.owned
    }

    /// Takes free partitions up to this worker's fair share and names the partitions above it,
    /// which the caller stops and then hands back with [`release`](Self::release).
    pub async fn rebalance(&mut self) -> anyhow::Result<Rebalance> {
        let members: i64 = self
            .client
            .query_one(
                "SELECT count(*) FROM pg_locks
                 WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid = $1::int4::oid
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[&MEMBER_CLASS],
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
        let start = rand::random_range(0..self.partitions);
        for step in 0..self.partitions {
            if self.owned.len() >= share {
                break;
            }
            let partition = (start + step) % self.partitions;
            if self.owned.contains(&partition) {
                continue;
            }
            let locked: bool = self
                .client
                .query_one(
                    "SELECT pg_try_advisory_lock($1, $2)",
                    &[&PARTITION_CLASS, &partition],
                )
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

    /// Gives a partition back; call only after its consumer has stopped.
    pub async fn release(&mut self, partition: i32) -> anyhow::Result<()> {
        self.client
            .execute(
                "SELECT pg_advisory_unlock($1, $2)",
                &[&PARTITION_CLASS, &partition],
            )
            .await
            .context("releasing a partition")?;
        self.owned.remove(&partition);
        Ok(())
    }
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
