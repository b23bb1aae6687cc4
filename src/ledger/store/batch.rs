//! The pure batch policy: what a batch of records is, how a rejected one is split record by
//! record and kept as dead letters, how repeated ids are told apart, and what a committed
//! batch reports. No I/O happens here.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::Wallet;
use crate::ledger::money::Currency;
use crate::ledger::types::{Operation, Outcome, ScopedId, ScopedWalletId};

/// A record that could not become an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub offset: i64,
    pub reason: String,
    pub payload: Option<Vec<u8>>,
    /// The readable operation the database refused, whose status then answers FAILED. None
    /// for undecodable records and for reused ids, whose id names another operation.
    pub operation: Option<Operation>,
}

/// Consecutive records of one partition, from `from_offset` up to (excluding) `next_offset`.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub topic: String,
    pub partition: i32,
    pub from_offset: i64,
    pub next_offset: i64,
    pub operations: Vec<(i64, Operation)>,
    pub dead_letters: Vec<DeadLetter>,
}

/// One record of a batch at its offset: an operation or a dead letter.
type Record<'a> = (i64, Option<&'a Operation>, Option<&'a DeadLetter>);

impl Batch {
    /// One batch per record, in offset order, together covering exactly this batch's range.
    pub fn split(&self) -> Vec<Batch> {
        let records = self.records();
        self.cut(&records, &(1..records.len()).collect::<Vec<_>>())
    }

    /// The batch in two parts of (nearly) equal record counts, the earlier records first,
    /// together covering exactly this batch's range: what is retried when the whole batch
    /// could not finish within the statement timeout. None for a batch of one record or
    /// none, which cannot be made smaller.
    pub fn halves(&self) -> Option<[Batch; 2]> {
        let records = self.records();
        if records.len() < 2 {
            return None;
        }
        let mut parts = self.cut(&records, &[records.len() / 2]);
        let second = parts.pop()?;
        let first = parts.pop()?;
        Some([first, second])
    }

    /// Every record of the batch in offset order, each an operation or a dead letter.
    fn records(&self) -> Vec<Record<'_>> {
        let mut records: Vec<Record<'_>> = self
            .operations
            .iter()
            .map(|(offset, operation)| (*offset, Some(operation), None))
            .chain(
                self.dead_letters
                    .iter()
                    .map(|letter| (letter.offset, None, Some(letter))),
            )
            .collect();
        records.sort_by_key(|(offset, _, _)| *offset);
        records
    }

    /// The batch cut before each of the record positions `starts` (ascending, each within
    /// the records): consecutive parts, each ending right after its last record, the last
    /// one at this batch's end, so the parts tile the range and each commits its own offset.
    fn cut(&self, records: &[Record<'_>], starts: &[usize]) -> Vec<Batch> {
        let bounds = std::iter::once(0)
            .chain(starts.iter().copied())
            .zip(starts.iter().copied().chain(std::iter::once(records.len())));
        let mut from_offset = self.from_offset;
        let mut parts = Vec::with_capacity(starts.len() + 1);
        for (start, end) in bounds {
            let part = &records[start..end];
            let Some((last, _, _)) = part.last() else {
                continue;
            };
            parts.push(Batch {
                topic: self.topic.clone(),
                partition: self.partition,
                from_offset,
                next_offset: last + 1,
                operations: part
                    .iter()
                    .filter_map(|(offset, operation, _)| {
                        operation.map(|operation| (*offset, operation.clone()))
                    })
                    .collect(),
                dead_letters: part
                    .iter()
                    .filter_map(|(_, _, letter)| letter.cloned())
                    .collect(),
            });
            from_offset = last + 1;
        }
        if let Some(last) = parts.last_mut() {
            last.next_offset = self.next_offset;
        }
        parts
    }

    /// The same range with every record kept as a dead letter that names `error`.
    pub fn rejected(&self, error: &str) -> Batch {
        let letters = self
            .operations
            .iter()
            .map(|(offset, operation)| DeadLetter {
                offset: *offset,
                reason: format!("REJECTED: operation {}: {error}", operation.id),
                payload: None,
                operation: Some(operation.clone()),
            })
            .chain(self.dead_letters.iter().map(|letter| DeadLetter {
                reason: format!("REJECTED: {error}"),
                ..letter.clone()
            }))
            .collect();
        Batch {
            operations: Vec::new(),
            dead_letters: letters,
            ..self.clone()
        }
    }
}

/// What a committed batch changed, for the cache and the logs.
#[derive(Debug, Clone)]
pub struct BatchReport {
    pub wallets: Vec<Wallet>,
    /// The currency of every wallet the batch locked, changed or not, to show amounts in.
    pub currencies: HashMap<ScopedWalletId, Currency>,
    /// Each operation this batch applied (the record that was applied, not a later duplicate
    /// of its id) and what became of it.
    pub decided: Vec<(Operation, Outcome)>,
    /// Operations the database refused, kept as dead letters: they are FAILED.
    pub rejected: Vec<Operation>,
    /// The ids of records stored by an earlier batch (a retried produce, or an id reused
    /// once Redis lost its marker): this batch decided nothing for them, so their final
    /// statuses are those PostgreSQL holds.
    pub stored_before: Vec<ScopedId>,
    pub duplicates: usize,
    pub processed_at: DateTime<Utc>,
}

impl Default for BatchReport {
    fn default() -> Self {
        BatchReport {
            wallets: Vec::new(),
            currencies: HashMap::new(),
            decided: Vec::new(),
            rejected: Vec::new(),
            stored_before: Vec::new(),
            duplicates: 0,
            processed_at: DateTime::<Utc>::MIN_UTC,
        }
    }
}

impl BatchReport {
    /// Adds a later report of the same partition to this one.
    pub fn merge(&mut self, later: BatchReport) {
        self.wallets.extend(later.wallets);
        self.currencies.extend(later.currencies);
        self.decided.extend(later.decided);
        self.rejected.extend(later.rejected);
        self.stored_before.extend(later.stored_before);
        self.duplicates += later.duplicates;
        self.processed_at = self.processed_at.max(later.processed_at);
    }
}

/// Keeps the first record of each id that is not stored yet, in offset order. A repeat with
/// the same content is a duplicate (a retried produce); one with other content is a reused
/// idempotency key, kept as a dead letter without blaming the operation the id belongs to.
/// Returns the fresh operations, the dead letters and the number of duplicates.
pub fn dedupe(
    operations: &[(i64, Operation)],
    mut seen: HashMap<ScopedId, String>,
) -> (Vec<(i64, Operation)>, Vec<DeadLetter>, usize) {
    let mut fresh = Vec::with_capacity(operations.len());
    let mut dead_letters = Vec::new();
    let mut duplicates = 0;
    for (offset, operation) in operations {
        let id = operation.scoped_id();
        match seen.get(&id) {
            Some(fingerprint) if *fingerprint == operation.fingerprint => duplicates += 1,
            Some(_) => dead_letters.push(DeadLetter {
                offset: *offset,
                reason: format!(
                    "IDEMPOTENCY_KEY_REUSED: operation {} of tenant {} already exists with other content",
                    operation.id, operation.tenant
                ),
                payload: None,
                operation: None,
            }),
            None => {
                seen.insert(id, operation.fingerprint.clone());
                fresh.push((*offset, operation.clone()));
            }
        }
    }
    (fresh, dead_letters, duplicates)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::metadata::Metadata;
    use crate::ledger::money::Amount;
    use crate::ledger::types::{OperationId, OperationKind, WalletId};
    use uuid::Uuid;

    fn operation(n: u128) -> Operation {
        Operation {
            tenant: "default".to_owned(),
            id: OperationId(Uuid::from_u128(n)),
            wallet_id: WalletId(Uuid::from_u128(1)),
            kind: OperationKind::Deposit,
            amount: Some(Amount::parse("1").unwrap()),
            accepted_at: Utc::now(),
            fingerprint: "f".to_owned(),
            metadata: Metadata::default(),
        }
    }

    /// Proves splitting keeps every record once and the sub-batches tile the whole range.
    #[test]
    fn split_tiles_the_range_record_by_record() {
        let batch = Batch {
            topic: "t".to_owned(),
            partition: 0,
            from_offset: 10,
            next_offset: 16,
            operations: vec![(10, operation(1)), (13, operation(2))],
            dead_letters: vec![DeadLetter {
                offset: 12,
                reason: "bad".to_owned(),
                payload: None,
                operation: None,
            }],
        };
        let singles = batch.split();
        let ranges: Vec<(i64, i64)> = singles
            .iter()
            .map(|single| (single.from_offset, single.next_offset))
            .collect();
        assert_eq!(ranges, vec![(10, 11), (11, 13), (13, 16)]);
        assert_eq!(singles[1].dead_letters.len(), 1);
        assert_eq!(singles[2].operations[0].1.id, operation(2).id);
        let rejected = singles[2].rejected("boom");
        assert!(rejected.operations.is_empty());
        assert_eq!(rejected.dead_letters[0].offset, 13);
        assert!(rejected.dead_letters[0].reason.contains("boom"));
        assert_eq!((rejected.from_offset, rejected.next_offset), (13, 16));
    }

    /// A batch from `from_offset` whose records sit at the given gaps after each other, each
    /// an operation or (when its flag is set) a dead letter, ending `tail` past the last one.
    fn batch_of(from_offset: i64, records: &[(i64, bool)], tail: i64) -> Batch {
        let mut batch = Batch {
            topic: "t".to_owned(),
            partition: 1,
            from_offset,
            ..Batch::default()
        };
        let mut offset = from_offset;
        for (n, (gap, letter)) in records.iter().enumerate() {
            offset += gap;
            match letter {
                true => batch.dead_letters.push(DeadLetter {
                    offset,
                    reason: "bad".to_owned(),
                    payload: None,
                    operation: None,
                }),
                false => batch.operations.push((offset, operation(n as u128))),
            }
            offset += 1;
        }
        batch.next_offset = offset + tail;
        batch
    }

    /// The offsets of a batch's records in order, and whether each is a dead letter.
    fn offsets(batch: &Batch) -> Vec<(i64, bool)> {
        batch
            .records()
            .iter()
            .map(|(offset, _, letter)| (*offset, letter.is_some()))
            .collect()
    }

    /// Each part's range and records.
    type Layout = Vec<(i64, i64, Vec<(i64, bool)>)>;

    fn layout(parts: &[Batch]) -> Layout {
        parts
            .iter()
            .map(|part| (part.from_offset, part.next_offset, offsets(part)))
            .collect()
    }

    /// Halves a batch again and again down to single records, earlier parts first.
    fn halved_to_singles(batch: Batch) -> Vec<Batch> {
        match batch.halves() {
            Some([first, second]) => {
                let mut singles = halved_to_singles(first);
                singles.extend(halved_to_singles(second));
                singles
            }
            None => vec![batch],
        }
    }

    proptest::proptest! {
        /// Proves the halves of a batch tile its range, the first ending where the second
        /// begins, keep every record once and in offset order, the earlier ones first, and
        /// differ in size by one record at most; and that halving down to single records
        /// gives the same parts as splitting record by record.
        #[test]
        fn halves_tile_the_range_in_order(
            from_offset in 0i64..1_000,
            records in proptest::collection::vec((0i64..3, proptest::bool::ANY), 0..40),
            tail in 0i64..3,
        ) {
            let batch = batch_of(from_offset, &records, tail);
            let Some([first, second]) = batch.halves() else {
                proptest::prop_assert!(records.len() < 2);
                return Ok(());
            };
            proptest::prop_assert_eq!(first.from_offset, batch.from_offset);
            proptest::prop_assert_eq!(first.next_offset, second.from_offset);
            proptest::prop_assert_eq!(second.next_offset, batch.next_offset);
            let (early, late) = (offsets(&first), offsets(&second));
            proptest::prop_assert!(!early.is_empty() && !late.is_empty());
            proptest::prop_assert!(early.len().abs_diff(late.len()) <= 1);
            proptest::prop_assert!(early.iter().all(|(offset, _)| *offset < first.next_offset));
            proptest::prop_assert!(late.iter().all(|(offset, _)| *offset >= second.from_offset));
            let rejoined: Vec<(i64, bool)> = early.into_iter().chain(late).collect();
            proptest::prop_assert_eq!(rejoined, offsets(&batch));
            proptest::prop_assert_eq!(
                layout(&halved_to_singles(batch.clone())),
                layout(&batch.split())
            );
        }
    }

    fn with(n: u128, tenant: &str, fingerprint: &str) -> Operation {
        Operation {
            tenant: tenant.to_owned(),
            fingerprint: fingerprint.to_owned(),
            ..operation(n)
        }
    }

    /// Proves the first record of an id is the one applied, a later repeat with other content
    /// is a dead letter that names no operation, and the same id of another tenant is that
    /// tenant's own operation.
    #[test]
    fn dedupe_keeps_the_first_record_per_tenant_and_id() {
        let records = vec![
            (0, with(1, "acme", "first")),
            (1, with(1, "acme", "second")),
            (2, with(1, "acme", "first")),
            (3, with(1, "globex", "second")),
            (4, with(2, "acme", "stored")),
            (5, with(3, "acme", "other")),
        ];
        let stored = HashMap::from([
            (with(2, "acme", "").scoped_id(), "stored".to_owned()),
            (with(3, "acme", "").scoped_id(), "theirs".to_owned()),
        ]);
        let (fresh, dead_letters, duplicates) = dedupe(&records, stored);
        let kept: Vec<(i64, &str, &str)> = fresh
            .iter()
            .map(|(offset, operation)| {
                (
                    *offset,
                    operation.tenant.as_str(),
                    operation.fingerprint.as_str(),
                )
            })
            .collect();
        assert_eq!(kept, vec![(0, "acme", "first"), (3, "globex", "second")]);
        assert_eq!(duplicates, 2);
        let offsets: Vec<i64> = dead_letters.iter().map(|letter| letter.offset).collect();
        assert_eq!(offsets, vec![1, 5]);
        assert!(dead_letters.iter().all(|letter| letter.operation.is_none()
            && letter.reason.starts_with("IDEMPOTENCY_KEY_REUSED")));
    }

    /// Proves a rejected range keeps every record as a dead letter: a readable operation
    /// names itself (so its status answers FAILED), an undecodable record keeps its payload.
    #[test]
    fn rejected_keeps_every_record_as_a_dead_letter() {
        let batch = Batch {
            topic: "t".to_owned(),
            partition: 3,
            from_offset: 4,
            next_offset: 7,
            operations: vec![(5, operation(1))],
            dead_letters: vec![DeadLetter {
                offset: 4,
                reason: "not json".to_owned(),
                payload: Some(b"garbage".to_vec()),
                operation: None,
            }],
        };
        let rejected = batch.rejected("22003 numeric field overflow");
        assert!(rejected.operations.is_empty());
        assert_eq!(
            (
                rejected.partition,
                rejected.from_offset,
                rejected.next_offset
            ),
            (3, 4, 7)
        );
        let by_offset: HashMap<i64, &DeadLetter> = rejected
            .dead_letters
            .iter()
            .map(|letter| (letter.offset, letter))
            .collect();
        let refused = by_offset[&5];
        assert_eq!(
            refused.operation.as_ref().map(|op| op.id),
            Some(operation(1).id)
        );
        assert!(refused.reason.starts_with("REJECTED: operation"));
        let undecodable = by_offset[&4];
        assert_eq!(undecodable.payload.as_deref(), Some(&b"garbage"[..]));
        assert_eq!(undecodable.reason, "REJECTED: 22003 numeric field overflow");
    }

    /// Proves merging the reports of a split batch adds up what each part changed and keeps
    /// the latest processing time, so the cache hears of every part.
    #[test]
    fn merged_reports_add_up_their_parts() {
        let earlier = Utc::now();
        let later = earlier + chrono::Duration::milliseconds(5);
        let mut merged = BatchReport::default();
        assert_eq!(merged.processed_at, DateTime::<Utc>::MIN_UTC);
        for (n, processed_at) in [(1, later), (2, earlier)] {
            merged.merge(BatchReport {
                decided: vec![(
                    operation(n),
                    Outcome::Processed {
                        balance_after: bigdecimal::BigDecimal::from(1),
                        amount: bigdecimal::BigDecimal::from(1),
                    },
                )],
                rejected: vec![operation(n + 10)],
                duplicates: 1,
                processed_at,
                ..BatchReport::default()
            });
        }
        let decided: Vec<OperationId> = merged.decided.iter().map(|(op, _)| op.id).collect();
        assert_eq!(decided, vec![operation(1).id, operation(2).id]);
        assert_eq!(merged.rejected.len(), 2);
        assert_eq!(merged.duplicates, 2);
        assert_eq!(merged.processed_at, later);
    }
}
