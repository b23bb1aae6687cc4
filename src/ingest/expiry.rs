//! Expiring holds. For the partitions this worker owns, the open holds whose `expiresAt` has
//! passed are released by an EXPIRE produced into their wallet's partition, where a consumer
//! applies it in the wallet's order like any other operation. It is produced only
//! `worker.hold_expiry_grace_ms` after `expiresAt`: a CAPTURE or VOID accepted just before
//! then may still be on its way to the broker (for up to `kafka.request_timeout_ms`), and must
//! be applied before the EXPIRE, or it would fail `HOLD_CLOSED` although accepted in time. An EXPIRE's id is derived from
//! its hold, so one produced again (after a crash or a restart, or by a worker that just lost
//! the partition) is a duplicate the consumer drops: a hold expires exactly once. The id is
//! reserved ([`OperationId::reserved`]): a client that submitted an operation under it first
//! would make the EXPIRE a reused id, kept as a dead letter, and the hold would never expire.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::health::WorkerHealth;
use super::layout::LayoutError;
use super::producer::OperationProducer;
use crate::clock;
use crate::config::{KafkaConfig, WorkerConfig};
use crate::ledger::database;
use crate::ledger::metadata::Metadata;
use crate::ledger::store::{self, DueHold, ScannedPartitions};
use crate::ledger::types::{Operation, OperationId, OperationKind, ScopedId};

/// Namespace of EXPIRE ids: one per hold, whoever produces it and however often.
const EXPIRY_NAMESPACE: Uuid = Uuid::from_u128(0x9d3e_41b7_5c08_4a2f_b6e1_07c4_f2a9_53d8);

/// The EXPIRE that releases `hold`, accepted at `at`.
pub fn expiry(hold: &DueHold, at: DateTime<Utc>) -> Operation {
    let kind = OperationKind::Expire { hold: hold.id.id };
    // Tenants never contain ':', so no two (tenant, hold) pairs share a name.
    let name = format!("{}:{}", hold.id.tenant, hold.id.id);
    Operation {
        tenant: hold.id.tenant.clone(),
        id: OperationId::reserved(&EXPIRY_NAMESPACE, name.as_bytes()),
        wallet_id: hold.wallet_id,
        kind,
        amount: None,
        accepted_at: at,
        fingerprint: kind.fingerprint(hold.wallet_id, None, &Metadata::default()),
        metadata: Metadata::default(),
    }
}

pub struct HoldExpiry {
    pub pool: deadpool_postgres::Pool,
    pub kafka: KafkaConfig,
    /// The partitions this worker consumes, as the worker last published them.
    pub owned: watch::Receiver<Vec<i32>>,
    /// How many partitions the operations topic has.
    pub partitions: i32,
    pub config: WorkerConfig,
    pub health: WorkerHealth,
}

impl HoldExpiry {
    /// Connects a producer, then scans every `worker.hold_expiry_scan_ms` until cancelled;
    /// a failed connection or scan is logged and the next interval tries again.
    pub async fn run(self, cancel: CancellationToken) {
        let interval = Duration::from_millis(self.config.hold_expiry_scan_ms);
        let mut producer = None;
        let mut produced = HashSet::new();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            if producer.is_none() {
                match OperationProducer::connect(&self.kafka, &self.pool).await {
                    Ok(connected) => {
                        tracing::info!("scanning for expired holds");
                        self.health.expiry_resumed();
                        producer = Some(connected);
                    }
                    Err(error) => {
                        self.unconnected(&error);
                        continue;
                    }
                }
            }
            if let Some(connected) = &producer {
                if let Err(error) = self.scan(connected, &mut produced).await {
                    // rskafka keeps what it read from a restarting broker for as long as the
                    // client lives, so the next scan starts from a new one.
                    tracing::warn!(error = %format!("{error:#}"), "hold expiry scan failed; retrying");
                    producer = None;
                }
            }
        }
    }

    /// A hold records the partition its HOLD was applied in. After a move to a topic with
    /// fewer partitions (README, "Partitions") no worker owns the partitions beyond the new
    /// count, so the owner of partition 0 scans those holds too; their EXPIRE goes to their
    /// wallet's partition of the new topic like any other.
    fn orphans_from(&self, owned: &[i32]) -> Option<i32> {
        owned.contains(&0).then_some(self.partitions)
    }

    /// Logs why the producer did not connect. A refused partition count lasts until an
    /// operator acts, so it degrades the worker and is logged once; anything else is retried.
    fn unconnected(&self, error: &anyhow::Error) {
        let cause = format!("{error:#}");
        if error.downcast_ref::<LayoutError>().is_none() {
            tracing::warn!(error = %cause, "cannot connect the hold expiry producer; retrying");
        } else if self.health.expiry_stopped(cause.clone()) {
            tracing::error!(error = %cause, "holds do not expire until the operations topic's partition count is dealt with");
        }
    }

    /// Produces an EXPIRE for each due hold of the owned partitions, at most
    /// `worker.hold_expiry_batch_max` per scan. `produced` remembers the holds whose EXPIRE the
    /// broker acknowledged and that are still due (not yet applied), so a lagging partition is
    /// not sent the same EXPIRE every scan; the consumer would drop the repeats anyway.
    async fn scan(
        &self,
        producer: &OperationProducer,
        produced: &mut HashSet<ScopedId>,
    ) -> anyhow::Result<()> {
        let partitions = self.owned.borrow().clone();
        if partitions.is_empty() {
            produced.clear();
            return Ok(());
        }
        let now = clock::now();
        let limit = i64::try_from(self.config.hold_expiry_batch_max).unwrap_or(i64::MAX);
        let due = {
            let client = database::client(&self.pool).await?;
            let expired_before = now - self.config.hold_expiry_grace();
            let scanned = ScannedPartitions {
                owned: &partitions,
                beyond: self.orphans_from(&partitions),
            };
            store::due_holds(&client, &scanned, expired_before, limit).await?
        };
        let still_due: HashSet<&ScopedId> = due.iter().map(|hold| &hold.id).collect();
        produced.retain(|id| still_due.contains(id));
        let pending: Vec<&DueHold> = due
            .iter()
            .filter(|hold| !produced.contains(&hold.id))
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let expiries: Vec<Operation> = pending.iter().map(|hold| expiry(hold, now)).collect();
        let results = producer.produce_all(&expiries).await;
        let mut failed = 0usize;
        let mut last_error = None;
        for (hold, result) in pending.iter().zip(results) {
            match result {
                Ok(_) => {
                    produced.insert(hold.id.clone());
                }
                Err(error) => {
                    failed += 1;
                    last_error = Some(error);
                }
            }
        }
        let oldest_due_ms = pending
            .iter()
            .map(|hold| (now - hold.expires_at).num_milliseconds())
            .max();
        tracing::debug!(
            expiries = expiries.len(),
            failed,
            oldest_due_ms,
            "produced hold expiries"
        );
        match last_error {
            None => Ok(()),
            Some(error) => Err(anyhow::anyhow!(
                "{failed} of {} hold expiries were not produced: {error}",
                expiries.len()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves an EXPIRE is the same operation (id and fingerprint) whenever and by whomever
    /// it is made, so the consumer keeps one, and that two tenants' holds of the same id
    /// expire by different operations.
    #[test]
    fn an_expiry_is_the_same_operation_every_time() {
        let due = |tenant: &str| DueHold {
            id: ScopedId {
                tenant: tenant.to_owned(),
                id: OperationId(Uuid::from_u128(7)),
            },
            wallet_id: crate::ledger::types::WalletId(Uuid::from_u128(1)),
            expires_at: Utc::now(),
        };
        let first = expiry(&due("acme"), Utc::now());
        let later = expiry(&due("acme"), Utc::now() + chrono::Duration::seconds(5));
        assert_eq!(
            (first.id, &first.fingerprint),
            (later.id, &later.fingerprint)
        );
        assert_eq!(first.kind.hold(), Some(OperationId(Uuid::from_u128(7))));
        assert_ne!(expiry(&due("globex"), Utc::now()).id, first.id);
    }
}
