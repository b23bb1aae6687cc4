//! The final statuses a consumer owes Redis for operations PostgreSQL held before their batch
//! came: an id reused once Redis lost the first request's marker, or a fenced batch that may
//! have committed. Their records left markers that are not the stored truth (the reusing
//! request's `Pending`, so the first request's retries are refused as a reused key), and only
//! the stored decisions, written over them, set that right. Reading those decisions can fail
//! (a pool timeout, PostgreSQL restarting): what could not be read is kept here and read
//! again after later batches and idle fetches. Writing a final status late is never wrong.

use std::collections::HashMap;

use crate::cache::Marker;
use crate::ledger::store::Decisions;
use crate::ledger::types::{Operation, ScopedId};

/// Operations whose stored statuses are owed, at most; beyond this the newest are given up,
/// and their ids answer as the last marker written until it expires (`redis.marker_ttl_s`).
pub const OWED_MAX: usize = 10_000;

pub struct OwedStatuses {
    operations: HashMap<ScopedId, Operation>,
    max: usize,
}

impl OwedStatuses {
    pub fn new(max: usize) -> Self {
        OwedStatuses {
            operations: HashMap::new(),
            max,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    /// Owes the stored statuses of `operations`, while fewer than `max` are owed.
    pub fn owe<'a>(&mut self, operations: impl IntoIterator<Item = &'a Operation>) {
        let mut given_up = 0usize;
        for operation in operations {
            let id = operation.scoped_id();
            if self.operations.len() >= self.max && !self.operations.contains_key(&id) {
                given_up += 1;
                continue;
            }
            self.operations.insert(id, operation.clone());
        }
        if given_up > 0 {
            tracing::warn!(
                given_up,
                max = self.max,
                "too many stored statuses waiting to be read; their ids answer as their last marker until it expires"
            );
        }
    }

    /// The ids whose statuses are owed.
    pub fn ids(&self) -> Vec<ScopedId> {
        self.operations.keys().cloned().collect()
    }

    /// The markers `decisions` (read for [`ids`](Self::ids)) give, which settle every owed
    /// status: an id PostgreSQL holds nothing for was not stored, and its marker is right.
    pub fn settle(&mut self, decisions: &Decisions) -> Vec<(ScopedId, Marker)> {
        let markers = stored_markers(&self.operations, decisions);
        self.operations.clear();
        markers
    }
}

/// The final status of every one of `operations` that PostgreSQL holds decided or kept as a
/// dead letter; a decision wins over a dead letter of the same id (the id of a refused record
/// is free for a retry).
fn stored_markers(
    operations: &HashMap<ScopedId, Operation>,
    decisions: &Decisions,
) -> Vec<(ScopedId, Marker)> {
    let mut markers: HashMap<ScopedId, Marker> = HashMap::new();
    for (id, recorded_at) in &decisions.rejected {
        if let Some(operation) = operations.get(id) {
            markers.insert(id.clone(), Marker::rejected(operation, *recorded_at));
        }
    }
    for (id, record, currency) in &decisions.decided {
        if let Some(marker) = Marker::stored(record, *currency) {
            markers.insert(id.clone(), marker);
        }
    }
    markers.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::metadata::Metadata;
    use crate::ledger::types::{OperationId, OperationKind, WalletId};
    use uuid::Uuid;

    fn operation(n: u128) -> Operation {
        Operation {
            tenant: "acme".to_owned(),
            id: OperationId(Uuid::from_u128(n)),
            wallet_id: WalletId(Uuid::from_u128(100)),
            kind: OperationKind::Deposit,
            amount: None,
            accepted_at: chrono::Utc::now(),
            fingerprint: format!("request {n}"),
            metadata: Metadata::default(),
        }
    }

    /// Proves owed statuses stay owed until a read settles them, and that at most `max`
    /// operations are owed: a later one beyond it is given up, the same one again is not.
    #[test]
    fn owed_until_settled_and_bounded() {
        let mut owed = OwedStatuses::new(2);
        assert!(owed.is_empty());
        let (first, second, third) = (operation(1), operation(2), operation(3));
        owed.owe([&first, &second]);
        owed.owe([&first, &third]);
        let mut ids = owed.ids();
        ids.sort_by_key(|id| id.id.0);
        assert_eq!(ids, vec![first.scoped_id(), second.scoped_id()]);
        let recorded_at = chrono::Utc::now();
        let decisions = Decisions {
            decided: Vec::new(),
            rejected: vec![(second.scoped_id(), recorded_at)],
        };
        let markers = owed.settle(&decisions);
        assert!(owed.is_empty());
        assert_eq!(markers.len(), 1);
        assert_eq!(markers[0].0, second.scoped_id());
        assert_eq!(markers[0].1.fingerprint, "request 2");
    }
}
