//! The audit's rules: pure functions from what the database holds about one wallet, one
//! operation or one partition to the violations found there.

use bigdecimal::{BigDecimal, Zero};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ledger::types::{OperationStatus, OperationType};

/// One thing that is wrong, with what was expected and what was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Violation {
    /// What is wrong: a wallet, an operation, an entry or a partition, by its id.
    pub subject: String,
    pub check: &'static str,
    pub expected: String,
    pub found: String,
}

/// A wallet row with the aggregate of its journal.
#[derive(Debug, Clone)]
pub struct WalletJournal {
    pub id: String,
    pub balance: BigDecimal,
    pub version: i64,
    pub entries: i64,
    pub entries_sum: BigDecimal,
    pub lowest_version: i64,
    pub highest_version: i64,
    pub held: BigDecimal,
    pub overdraft_limit: BigDecimal,
    /// What the wallet's open holds still reserve, summed.
    pub open_holds_remaining: BigDecimal,
}

impl Violation {
    /// A violation finder for one subject: `check`, `expected`, `found` in turn.
    fn of(subject: String) -> impl Fn(&'static str, String, String) -> Violation {
        move |check, expected, found| Violation {
            subject: subject.clone(),
            check,
            expected,
            found,
        }
    }
}

pub fn check_wallet(wallet: &WalletJournal) -> Vec<Violation> {
    let violation = Violation::of(format!("wallet {}", wallet.id));
    let mut found = Vec::new();
    if wallet.balance != wallet.entries_sum {
        found.push(violation(
            "balance equals the sum of its entries",
            wallet.entries_sum.normalized().to_string(),
            wallet.balance.normalized().to_string(),
        ));
    }
    let gapless = wallet.entries == wallet.version
        && wallet.highest_version == wallet.version
        && (wallet.entries == 0 || wallet.lowest_version == 1);
    if !gapless {
        found.push(violation(
            "entry versions run 1, 2, 3, ... up to the wallet's version",
            format!(
                "versions 1..={} ({} entries)",
                wallet.version, wallet.version
            ),
            format!(
                "versions {}..={} ({} entries)",
                wallet.lowest_version, wallet.highest_version, wallet.entries
            ),
        ));
    }
    let floor = -wallet.overdraft_limit.clone();
    if &wallet.balance - &wallet.held < floor {
        found.push(violation(
            "balance less what is held is not below its floor",
            format!("at least {}", floor.normalized()),
            (&wallet.balance - &wallet.held).normalized().to_string(),
        ));
    }
    if wallet.held != wallet.open_holds_remaining {
        found.push(violation(
            "held equals what its open holds still reserve",
            wallet.open_holds_remaining.normalized().to_string(),
            wallet.held.normalized().to_string(),
        ));
    }
    found
}

/// An operation row with the aggregate of the entries it wrote.
#[derive(Debug, Clone)]
pub struct OperationJournal {
    pub id: String,
    /// As stored; an unknown type is itself a violation.
    pub kind: String,
    pub status: String,
    /// What it moved; 0 for one that named no amount.
    pub amount: BigDecimal,
    /// Whether it names a second wallet (`toWalletId`).
    pub has_target: bool,
    pub entries: i64,
    pub entries_sum: BigDecimal,
    /// The sum of the entries' absolute deltas: what moved at all.
    pub entries_moved: BigDecimal,
}

/// The entries a decided operation must have written: how many, their sum and how much moved.
fn expected_entries(
    kind: OperationType,
    status: OperationStatus,
    amount: &BigDecimal,
    has_target: bool,
) -> Option<(i64, BigDecimal, BigDecimal)> {
    match status {
        OperationStatus::Processed => {
            let effect = kind.effect();
            let source = effect.source.signed(amount);
            let moved = source.abs();
            Some(match effect.credits_target && has_target {
                true => (2, source + amount, moved + amount),
                false => (1, source, moved),
            })
        }
        // A failed operation writes a zero entry on a wallet that exists, none otherwise.
        OperationStatus::Failed | OperationStatus::Pending => None,
    }
}

pub fn check_operation(operation: &OperationJournal) -> Vec<Violation> {
    let violation = Violation::of(format!("operation {}", operation.id));
    let (Some(kind), Some(status)) = (
        OperationType::parse(&operation.kind),
        OperationStatus::parse(&operation.status),
    ) else {
        return vec![violation(
            "type and status are known",
            "a known type, PROCESSED or FAILED".to_owned(),
            format!("{} {}", operation.kind, operation.status),
        )];
    };
    let describe = |count: i64, sum: &BigDecimal, moved: &BigDecimal| {
        format!(
            "{count} entries, sum {}, moved {}",
            sum.normalized(),
            moved.normalized()
        )
    };
    let found = describe(
        operation.entries,
        &operation.entries_sum,
        &operation.entries_moved,
    );
    match expected_entries(kind, status, &operation.amount, operation.has_target) {
        Some((count, sum, moved))
            if count != operation.entries
                || sum != operation.entries_sum
                || moved != operation.entries_moved =>
        {
            vec![violation(
                "a processed operation's entries move exactly its amount",
                describe(count, &sum, &moved),
                found,
            )]
        }
        None if status == OperationStatus::Pending => vec![violation(
            "a stored operation is decided",
            "PROCESSED or FAILED".to_owned(),
            operation.status.clone(),
        )],
        None if !operation.entries_moved.is_zero() => vec![violation(
            "a failed operation moved nothing",
            "moved 0".to_owned(),
            found,
        )],
        Some(_) | None => Vec::new(),
    }
}

/// A journal entry, with the entry before it in its wallet's versions.
#[derive(Debug, Clone)]
pub struct EntryLink {
    pub wallet: String,
    pub version: i64,
    pub delta: BigDecimal,
    pub balance_after: BigDecimal,
    pub recorded_at: DateTime<Utc>,
    pub previous: Option<PreviousEntry>,
    /// Whether the entry's wallet is its operation's own or the one it credits (an entry
    /// without an operation counts as on it: that is a violation of its own).
    pub on_its_operations_wallets: bool,
}

#[derive(Debug, Clone)]
pub struct PreviousEntry {
    pub version: i64,
    pub balance_after: BigDecimal,
    pub recorded_at: DateTime<Utc>,
}

/// An entry lies on a wallet its operation names, and continues the entry before it: its
/// balance is that one's plus its delta (a wallet starts at 0), recorded no earlier. Across
/// a version gap nothing is compared: the wallet's own check reports the gap.
pub fn check_entry(entry: &EntryLink) -> Vec<Violation> {
    let violation = Violation::of(format!("entry {}/{}", entry.wallet, entry.version));
    let mut found = Vec::new();
    if !entry.on_its_operations_wallets {
        found.push(violation(
            "an entry is on its operation's wallet or the one it credits",
            "one of the operation's wallets".to_owned(),
            "another wallet".to_owned(),
        ));
    }
    let before = match &entry.previous {
        _ if entry.version == 1 => Some((BigDecimal::zero(), None)),
        Some(previous) if previous.version == entry.version - 1 => {
            Some((previous.balance_after.clone(), Some(previous.recorded_at)))
        }
        Some(_) | None => None,
    };
    let Some((balance_before, recorded_before)) = before else {
        return found;
    };
    let expected = balance_before + &entry.delta;
    if expected != entry.balance_after {
        found.push(violation(
            "an entry's balance is the one before it plus its delta",
            expected.normalized().to_string(),
            entry.balance_after.normalized().to_string(),
        ));
    }
    if let Some(before) = recorded_before.filter(|before| entry.recorded_at < *before) {
        found.push(violation(
            "entry times follow versions",
            format!("at or after {before}"),
            entry.recorded_at.to_string(),
        ));
    }
    found
}

/// A stored consumer position against its partition's end offset on the broker.
pub fn check_position(
    topic: &str,
    partition: i32,
    position: i64,
    end_offset: Option<i64>,
) -> Vec<Violation> {
    let subject = format!("partition {topic}/{partition}");
    match end_offset {
        Some(end) if position <= end => Vec::new(),
        Some(end) => vec![Violation {
            subject,
            check: "stored position is at most the partition's end offset",
            expected: format!("at most {end}"),
            found: position.to_string(),
        }],
        None => vec![Violation {
            subject,
            check: "stored position names a partition the broker has",
            expected: "a partition of the topic".to_owned(),
            found: "no such partition on the broker".to_owned(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn decimal(text: &str) -> BigDecimal {
        BigDecimal::from_str(text).expect("a decimal")
    }

    fn wallet(
        balance: &str,
        version: i64,
        entries: i64,
        sum: &str,
        range: (i64, i64),
    ) -> WalletJournal {
        WalletJournal {
            id: "w".to_owned(),
            balance: decimal(balance),
            version,
            entries,
            entries_sum: decimal(sum),
            lowest_version: range.0,
            highest_version: range.1,
            held: BigDecimal::zero(),
            overdraft_limit: BigDecimal::zero(),
            open_holds_remaining: BigDecimal::zero(),
        }
    }

    fn operation(
        kind: &str,
        status: &str,
        amount: &str,
        entries: i64,
        sum: &str,
        moved: &str,
    ) -> OperationJournal {
        OperationJournal {
            id: "o".to_owned(),
            kind: kind.to_owned(),
            status: status.to_owned(),
            amount: decimal(amount),
            has_target: kind == "TRANSFER",
            entries,
            entries_sum: decimal(sum),
            entries_moved: decimal(moved),
        }
    }

    #[test]
    fn a_consistent_wallet_passes() {
        assert!(check_wallet(&wallet("12.50", 3, 3, "12.5", (1, 3))).is_empty());
        assert!(check_wallet(&wallet("0", 0, 0, "0", (0, 0))).is_empty());
    }

    #[test]
    fn each_wallet_fault_is_named() {
        let checks = |w: WalletJournal| -> Vec<&'static str> {
            check_wallet(&w).into_iter().map(|v| v.check).collect()
        };
        assert_eq!(
            checks(wallet("13", 3, 3, "12.5", (1, 3))),
            vec!["balance equals the sum of its entries"]
        );
        assert_eq!(checks(wallet("12.5", 3, 3, "12.5", (1, 12))).len(), 1);
        assert_eq!(checks(wallet("12.5", 3, 2, "12.5", (1, 3))).len(), 1);
        assert_eq!(checks(wallet("12.5", 3, 3, "12.5", (2, 3))).len(), 1);
        assert_eq!(
            checks(wallet("-1", 1, 1, "-1", (1, 1))),
            vec!["balance less what is held is not below its floor"]
        );
        let overdrawn = WalletJournal {
            overdraft_limit: decimal("5"),
            ..wallet("-1", 1, 1, "-1", (1, 1))
        };
        assert!(checks(overdrawn).is_empty(), "a limit lowers the floor");
        let holding = WalletJournal {
            held: decimal("3"),
            open_holds_remaining: decimal("3"),
            ..wallet("2", 1, 1, "2", (1, 1))
        };
        assert_eq!(
            checks(holding),
            vec!["balance less what is held is not below its floor"]
        );
        let drifted = WalletJournal {
            held: decimal("1"),
            open_holds_remaining: decimal("2"),
            ..wallet("5", 1, 1, "5", (1, 1))
        };
        assert_eq!(
            checks(drifted),
            vec!["held equals what its open holds still reserve"]
        );
    }

    #[test]
    fn operations_move_exactly_their_amount() {
        assert!(check_operation(&operation("DEPOSIT", "PROCESSED", "5", 1, "5", "5")).is_empty());
        assert!(check_operation(&operation("WITHDRAW", "PROCESSED", "5", 1, "-5", "5")).is_empty());
        assert!(check_operation(&operation("TRANSFER", "PROCESSED", "5", 2, "0", "10")).is_empty());
        assert!(check_operation(&operation("TRANSFER", "FAILED", "5", 1, "0", "0")).is_empty());
        assert!(check_operation(&operation("DEPOSIT", "FAILED", "5", 0, "0", "0")).is_empty());
        assert!(check_operation(&operation("HOLD", "PROCESSED", "5", 1, "0", "0")).is_empty());
        assert!(check_operation(&operation("CAPTURE", "PROCESSED", "5", 1, "-5", "5")).is_empty());
        assert!(check_operation(&operation("VOID", "PROCESSED", "5", 1, "0", "0")).is_empty());
        let settled = OperationJournal {
            has_target: true,
            ..operation("CAPTURE", "PROCESSED", "5", 2, "0", "10")
        };
        assert!(check_operation(&settled).is_empty());
        for broken in [
            operation("DEPOSIT", "PROCESSED", "5", 0, "0", "0"),
            operation("DEPOSIT", "PROCESSED", "5", 1, "6", "6"),
            operation("TRANSFER", "PROCESSED", "5", 2, "1", "11"),
            operation("WITHDRAW", "FAILED", "5", 1, "-5", "5"),
            operation("REFUND", "PROCESSED", "5", 1, "5", "5"),
            operation("HOLD", "PROCESSED", "5", 1, "-5", "5"),
            operation("CAPTURE", "PROCESSED", "5", 2, "0", "10"),
        ] {
            assert_eq!(check_operation(&broken).len(), 1, "{broken:?}");
        }
    }

    fn entry(version: i64, delta: &str, after: &str, previous: Option<(i64, &str)>) -> EntryLink {
        let at = DateTime::<Utc>::from_timestamp(1_000_000, 0).expect("a time");
        EntryLink {
            wallet: "w".to_owned(),
            version,
            delta: decimal(delta),
            balance_after: decimal(after),
            recorded_at: at,
            previous: previous.map(|(version, after)| PreviousEntry {
                version,
                balance_after: decimal(after),
                recorded_at: at,
            }),
            on_its_operations_wallets: true,
        }
    }

    #[test]
    fn entries_continue_the_one_before() {
        let checks = |link: EntryLink| -> Vec<&'static str> {
            check_entry(&link).into_iter().map(|v| v.check).collect()
        };
        assert!(checks(entry(1, "10", "10.00", None)).is_empty());
        assert!(checks(entry(2, "-2.5", "7.5", Some((1, "10")))).is_empty());
        assert!(checks(entry(2, "0", "-3", Some((1, "-3")))).is_empty());
        assert!(
            checks(entry(7, "1", "99", Some((3, "10")))).is_empty(),
            "a gap is the wallet's violation"
        );
        assert!(checks(entry(4, "1", "99", None)).is_empty());
        let chain = vec!["an entry's balance is the one before it plus its delta"];
        assert_eq!(checks(entry(1, "10", "11", None)), chain);
        assert_eq!(checks(entry(2, "1", "10", Some((1, "10")))), chain);
        let mut early = entry(2, "1", "11", Some((1, "10")));
        early.recorded_at -= chrono::Duration::microseconds(1);
        assert_eq!(checks(early), vec!["entry times follow versions"]);
        let elsewhere = EntryLink {
            on_its_operations_wallets: false,
            ..entry(1, "10", "10", None)
        };
        assert_eq!(
            checks(elsewhere),
            vec!["an entry is on its operation's wallet or the one it credits"]
        );
    }

    #[test]
    fn positions_beyond_the_broker_are_reported() {
        assert!(check_position("t", 0, 10, Some(10)).is_empty());
        assert_eq!(check_position("t", 0, 11, Some(10)).len(), 1);
        assert_eq!(check_position("t", 9, 0, None).len(), 1);
    }
}
