//! The checker: what the clients logged against the ledger in PostgreSQL (exactly once, own
//! content, conservation, journals, order, tenancy), and the cache, the API and the events
//! topic against the ledger.

use std::collections::{BTreeMap, HashMap, HashSet};

use uuid::Uuid;

use super::cluster::{Tenant, TENANTS};
use super::ledger::{DeadLetter, Entry, Ledger, OperationKey, StoredOperation};
use super::nemesis::Nemesis;
use super::workload::{ClientLog, Kind, Sent};
use super::{amount, INITIAL_CENTS, WALLETS};

/// Violations by kind, with the first few examples of each.
#[derive(Default)]
pub struct Violations {
    pub counts: BTreeMap<&'static str, usize>,
    pub examples: Vec<String>,
}

impl Violations {
    pub fn add(&mut self, kind: &'static str, detail: String) {
        *self.counts.entry(kind).or_default() += 1;
        if self.examples.len() < 40 {
            self.examples.push(format!("{kind}: {detail}"));
        }
    }

    pub fn merge(&mut self, other: Violations) {
        for (kind, count) in other.counts {
            *self.counts.entry(kind).or_default() += count;
        }
        for example in other.examples {
            if self.examples.len() < 40 {
                self.examples.push(example);
            }
        }
    }

    pub fn total(&self) -> usize {
        self.counts.values().sum()
    }

    /// A worker paused inside a transaction kept its locks beyond the lease lapse.
    pub fn nemesis(&mut self, nemesis: &Nemesis) {
        if nemesis.stuck_transactions > 0 {
            self.add(
                "stalled",
                format!(
                    "{} paused workers kept their transaction's locks beyond the lease lapse",
                    nemesis.stuck_transactions
                ),
            );
        }
    }
}

#[derive(Default)]
pub struct Counts {
    pub sent: usize,
    pub acked: usize,
    pub processed: usize,
    pub failed: usize,
    pub unacked_applied: usize,
    /// Operation ids both tenants had acknowledged, each applied for each.
    pub shared_ids: usize,
    /// Ids whose key was reused with accepted other content after Redis lost the marker.
    pub excused: usize,
    /// Holds stored, by state.
    pub holds: BTreeMap<String, usize>,
}

/// What is checked, and against what.
pub struct Check<'a> {
    pub ledger: &'a Ledger,
    pub logs: &'a [ClientLog],
    pub tenants: &'a [Tenant],
    pub redis_url: String,
    pub broker: String,
}

pub fn key_of(sent: &Sent) -> OperationKey {
    (TENANTS[sent.tenant].to_owned(), sent.id)
}

impl Check<'_> {
    pub async fn all(&self, violations: &mut Violations) -> Counts {
        let sent = self.sent_by_key(violations);
        let mut counts = self.check_sent(&sent, violations);
        for hold in self.ledger.holds.values() {
            *counts.holds.entry(hold.state.clone()).or_default() += 1;
        }
        self.check_operations(&sent, violations);
        self.check_journals(violations);
        self.check_holds(&sent, violations);
        self.check_order(violations);
        self.check_cache(violations).await;
        self.check_statuses(violations).await;
        self.check_events(violations).await;
        counts
    }

    fn sent_by_key(&self, violations: &mut Violations) -> HashMap<OperationKey, &Sent> {
        let mut by_key = HashMap::new();
        for sent in self.logs.iter().flat_map(|log| &log.sent) {
            if by_key.insert(key_of(sent), sent).is_some() {
                violations.add("test bug", format!("operation id {} sent twice", sent.id));
            }
        }
        by_key
    }

    /// Every acknowledged operation was decided once, with its own content, in its tenant.
    fn check_sent(
        &self,
        sent: &HashMap<OperationKey, &Sent>,
        violations: &mut Violations,
    ) -> Counts {
        let mut counts = Counts::default();
        let mut acked_ids: [HashSet<Uuid>; 2] = Default::default();
        for (key, sent) in sent {
            counts.sent += 1;
            counts.excused += usize::from(sent.excused);
            let stored = self.ledger.operations.get(key);
            if sent.acked {
                counts.acked += 1;
                acked_ids[sent.tenant].insert(sent.id);
                match stored.map(|stored| stored.status.as_str()) {
                    Some("PROCESSED") => counts.processed += 1,
                    Some("FAILED") => counts.failed += 1,
                    Some(other) => violations.add("status", format!("{}: {other}", sent.id)),
                    None => violations.add(
                        "lost",
                        format!(
                            "acknowledged {} {:?} not applied",
                            sent.id, sent.content.kind
                        ),
                    ),
                }
            } else if stored.is_some() {
                counts.unacked_applied += 1;
            }
            if let Some(stored) = stored {
                self.check_content(sent, stored, violations);
            }
        }
        counts.shared_ids = acked_ids[0].intersection(&acked_ids[1]).count();
        counts
    }

    /// The stored operation is what was acknowledged (or, unacknowledged, one of the
    /// contents sent with its id), on a wallet of its tenant.
    fn check_content(&self, sent: &Sent, stored: &StoredOperation, violations: &mut Violations) {
        let is = |content: &super::workload::Content| {
            // A HOLD's hold is itself; a VOID's amount is what it released.
            let hold = match content.kind {
                Kind::Hold => Some(sent.id),
                _ => content.hold,
            };
            stored.wallet == content.source
                && stored.kind == content.kind.as_str()
                && (stored.cents == content.cents || !content.kind.names_amount())
                && stored.target == content.target
                && stored.hold == hold
        };
        let same = if sent.acked {
            is(&sent.content)
        } else {
            sent.tried.iter().any(is)
        };
        if !same && !sent.excused {
            violations.add(
                "content",
                format!("{} stored differently from what was acknowledged", sent.id),
            );
        }
        let own = &self.tenants[sent.tenant].wallets;
        if !own.contains(&stored.wallet)
            || stored.target.is_some_and(|target| !own.contains(&target))
        {
            violations.add(
                "cross-tenant",
                format!(
                    "{} of {} touches another tenant's wallet",
                    sent.id, TENANTS[sent.tenant]
                ),
            );
        }
    }

    /// No operation nobody sent; each one's entries are what its kind and status say; money
    /// is conserved; no dead letters but the excused ones.
    fn check_operations(&self, sent: &HashMap<OperationKey, &Sent>, violations: &mut Violations) {
        let funding: HashSet<OperationKey> = self
            .tenants
            .iter()
            .flat_map(|tenant| {
                tenant
                    .funding
                    .iter()
                    .map(|id| (tenant.name.to_owned(), *id))
            })
            .collect();
        let entries = self.ledger.entries_by_operation();
        let (mut deposits, mut withdrawals) = (0i64, 0i64);
        for (key, stored) in &self.ledger.operations {
            if !sent.contains_key(key) && !funding.contains(key) {
                violations.add(
                    "phantom",
                    format!("{key:?} applied but never sent by a client"),
                );
            }
            let mut found: Vec<(Uuid, i64)> = entries
                .get(key)
                .map(|entries| entries.iter().map(|(w, _, d)| (*w, *d)).collect())
                .unwrap_or_default();
            found.sort();
            let mut expected = expected_entries(key, stored, violations);
            match (stored.status.as_str(), stored.kind.as_str(), stored.target) {
                ("PROCESSED", "DEPOSIT", _) => deposits += stored.cents,
                ("PROCESSED", "WITHDRAW", _) | ("PROCESSED", "CAPTURE", None) => {
                    withdrawals += stored.cents
                }
                _ => {}
            }
            expected.sort();
            if found != expected {
                violations.add(
                    "entries",
                    format!(
                        "{key:?} ({} {}) has entries {found:?}, expected {expected:?}",
                        stored.status, stored.kind
                    ),
                );
            }
        }
        let total: i64 = self
            .ledger
            .wallets
            .values()
            .map(|(balance, _)| balance)
            .sum();
        if total != deposits - withdrawals {
            violations.add(
                "conservation",
                format!(
                    "balances sum to {} but processed deposits − withdrawals are {} (initial {})",
                    amount(total),
                    amount(deposits - withdrawals),
                    amount(INITIAL_CENTS * WALLETS as i64)
                ),
            );
        }
        for dead in &self.ledger.dead_letters {
            // A record reusing an id with other content is a dead letter by design; whether a
            // client was wrongly told 202 for it is judged where the client logged its answer.
            let allowed = match dead {
                DeadLetter::Reused(key) => sent.get(key).is_some_and(|sent| sent.tried.len() > 1),
                DeadLetter::Refused(key) => key
                    .as_ref()
                    .and_then(|key| sent.get(key))
                    .is_some_and(|sent| sent.excused),
            };
            if !allowed {
                violations.add("dead letter", format!("{dead:?} became a dead letter"));
            }
        }
    }

    /// Each wallet's journal is gapless, never negative, and sums to its balance.
    fn check_journals(&self, violations: &mut Violations) {
        let ledger = self.ledger;
        if ledger.wallets.len() != WALLETS {
            violations.add(
                "wallets",
                format!("{} wallets stored, {WALLETS} created", ledger.wallets.len()),
            );
        }
        let mut journals: HashMap<Uuid, Vec<&Entry>> = HashMap::new();
        for entry in &ledger.entries {
            journals.entry(entry.wallet).or_default().push(entry);
        }
        for (wallet, (balance, version)) in &ledger.wallets {
            let journal = journals.remove(wallet).unwrap_or_default();
            let mut running = 0i64;
            for (index, entry) in journal.iter().enumerate() {
                if entry.version != index as i64 + 1 {
                    violations.add(
                        "version gap",
                        format!("{wallet}: entry {index} has version {}", entry.version),
                    );
                    break;
                }
                running += entry.delta;
                if entry.balance_after != running || running < 0 {
                    violations.add(
                        "journal",
                        format!(
                            "{wallet} v{}: balance_after {} but running sum {running}",
                            entry.version, entry.balance_after
                        ),
                    );
                    break;
                }
            }
            if running != *balance || journal.len() as i64 != *version {
                violations.add(
                    "balance",
                    format!(
                        "{wallet}: balance {balance} v{version}, entries sum to {running} over {} versions",
                        journal.len()
                    ),
                );
            }
        }
    }

    /// What each wallet holds is what its open holds still reserve, never more than its
    /// balance; no hold is captured beyond its amount; every processed settlement closed its
    /// hold, and a settlement found no hold only when its HOLD was not applied (a settlement
    /// is sent after its HOLD was acknowledged, so it is applied after it).
    fn check_holds(&self, sent: &HashMap<OperationKey, &Sent>, violations: &mut Violations) {
        let ledger = self.ledger;
        let mut reserved: HashMap<Uuid, i64> = HashMap::new();
        for (key, hold) in &ledger.holds {
            if hold.state == "OPEN" {
                *reserved.entry(hold.wallet).or_default() += hold.cents - hold.captured;
            }
            if !(0..=hold.cents).contains(&hold.captured) {
                violations.add(
                    "hold",
                    format!("{key:?} captured {} of {}", hold.captured, hold.cents),
                );
            }
        }
        for (wallet, (balance, _)) in &ledger.wallets {
            let held = ledger.held.get(wallet).copied().unwrap_or(0);
            let expected = reserved.get(wallet).copied().unwrap_or(0);
            if held != expected || held > *balance {
                violations.add(
                    "held",
                    format!("{wallet}: holds {held} of balance {balance}; its open holds reserve {expected}"),
                );
            }
        }
        for (key, stored) in &ledger.operations {
            let hold = stored
                .hold
                .and_then(|hold| ledger.holds.get(&(key.0.clone(), hold)))
                .filter(|hold| hold.wallet == stored.wallet);
            let closed = match stored.kind.as_str() {
                "CAPTURE" => "CAPTURED",
                "VOID" => "VOIDED",
                _ => continue,
            };
            let wrong = match (stored.status.as_str(), hold) {
                ("PROCESSED", Some(hold)) => hold.state != closed,
                ("PROCESSED", None) => true,
                (_, Some(_)) => !sent.get(key).is_some_and(|sent| sent.excused),
                (_, None) => false,
            };
            if wrong {
                violations.add(
                    "settlement",
                    format!(
                        "{key:?} ({} {}) and its hold disagree",
                        stored.status, stored.kind
                    ),
                );
            }
        }
    }

    /// Per-client order: operations a client had acknowledged one after the other on the
    /// same wallet were applied in that order, in the journal and on the topic.
    fn check_order(&self, violations: &mut Violations) {
        let entries = self.ledger.entries_by_operation();
        let version_on = |key: &OperationKey, wallet: Uuid| {
            entries
                .get(key)
                .and_then(|entries| entries.iter().find(|(w, _, _)| *w == wallet))
                .map(|(_, version, _)| *version)
        };
        for log in self.logs {
            let mut last: HashMap<Uuid, (Uuid, i64, i64)> = HashMap::new();
            for sent in log.sent.iter().filter(|sent| sent.acked) {
                let key = key_of(sent);
                let source = sent.content.source;
                let (Some(version), Some(stored)) =
                    (version_on(&key, source), self.ledger.operations.get(&key))
                else {
                    continue;
                };
                if let Some((before, before_version, before_offset)) = last.get(&source) {
                    if *before_version >= version || *before_offset >= stored.offset {
                        violations.add(
                            "order",
                            format!(
                                "wallet {source}: {before} (v{before_version}, offset {before_offset}) was acknowledged before {} (v{version}, offset {})",
                                sent.id, stored.offset
                            ),
                        );
                    }
                }
                last.insert(source, (sent.id, version, stored.offset));
            }
        }
    }
}

/// The entries an operation must have, by its kind and status.
fn expected_entries(
    key: &OperationKey,
    stored: &StoredOperation,
    violations: &mut Violations,
) -> Vec<(Uuid, i64)> {
    match (stored.status.as_str(), stored.kind.as_str()) {
        ("PROCESSED", "DEPOSIT") => vec![(stored.wallet, stored.cents)],
        ("PROCESSED", "WITHDRAW") => vec![(stored.wallet, -stored.cents)],
        ("PROCESSED", "TRANSFER") => match stored.target {
            Some(target) => vec![(stored.wallet, -stored.cents), (target, stored.cents)],
            None => vec![],
        },
        ("PROCESSED", "HOLD" | "VOID") => vec![(stored.wallet, 0)],
        ("PROCESSED", "CAPTURE") => match stored.target {
            Some(target) => vec![(stored.wallet, -stored.cents), (target, stored.cents)],
            None => vec![(stored.wallet, -stored.cents)],
        },
        ("FAILED", kind) => {
            let expected = match kind {
                "CAPTURE" | "VOID" => "HOLD_NOT_FOUND",
                _ => "INSUFFICIENT_FUNDS",
            };
            if stored.reason.as_deref() != Some(expected) {
                violations.add(
                    "failure reason",
                    format!("{key:?} failed with {:?}", stored.reason),
                );
            }
            vec![(stored.wallet, 0)]
        }
        (status, kind) => {
            violations.add("status", format!("{key:?}: {status} {kind}"));
            vec![]
        }
    }
}
